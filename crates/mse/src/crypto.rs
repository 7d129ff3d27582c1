//! The hashes and RC4 keys MSE derives from the shared secret S and the
//! shared key SKEY (the infohash).

use lodestone_core::InfoHash;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use crate::dh::KEY_LEN;

/// RC4 keystream bytes both sides throw away before use: the first bytes
/// of RC4 leak key material.
const DISCARD: usize = 1024;

/// SHA-1 of the concatenated parts.
fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// `HASH('req1', S)`: the initiator's synchronisation marker.
pub(crate) fn req1(secret: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", secret])
}

/// `HASH('req2', SKEY)`: what a responder compares against each torrent it
/// serves to learn which one an encrypted connection is for.
pub fn req2(info_hash: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", info_hash.as_bytes()])
}

/// `HASH('req3', S)`, which hides `req2` on the wire.
pub(crate) fn req3(secret: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req3", secret])
}

/// `a xor b`.
pub(crate) fn xor(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// One direction's RC4 keystream after the discarded prefix.
///
/// The initiator encrypts with `keyA` and the responder with `keyB`.
pub(crate) fn cipher(name: &[u8; 4], secret: &[u8; KEY_LEN], skey: &InfoHash) -> Rc4 {
    let key = hash(&[name, secret, skey.as_bytes()]);
    // A 20-byte key is within RC4's 1..=256 bytes.
    #[allow(clippy::unwrap_used)]
    let mut rc4 = Rc4::new_from_slice(&key).unwrap();
    let mut skip = [0u8; DISCARD];
    rc4.apply_keystream(&mut skip);
    rc4
}

/// The two keystreams of one side of a connection.
pub struct Cipher {
    /// Applied to every byte we send.
    pub encrypt: Rc4,
    /// Applied to every byte we receive.
    pub decrypt: Rc4,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(rc4)")
    }
}

impl Cipher {
    /// The initiator's keystreams.
    pub(crate) fn initiator(secret: &[u8; KEY_LEN], skey: &InfoHash) -> Self {
        Self {
            encrypt: cipher(b"keyA", secret, skey),
            decrypt: cipher(b"keyB", secret, skey),
        }
    }

    /// The responder's keystreams.
    pub(crate) fn responder(secret: &[u8; KEY_LEN], skey: &InfoHash) -> Self {
        Self {
            encrypt: cipher(b"keyB", secret, skey),
            decrypt: cipher(b"keyA", secret, skey),
        }
    }
}
