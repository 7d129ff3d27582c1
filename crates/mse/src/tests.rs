//! Initiator and responder against each other in memory, and against
//! hostile bytes.

use lodestone_core::InfoHash;
use proptest::prelude::*;
use rc4::StreamCipher;

use crate::crypto::{self, Cipher};
use crate::dh::{KEY_LEN, KeyPair};
use crate::*;

const TORRENT: InfoHash = InfoHash::new([0xab; 20]);
const OTHER: InfoHash = InfoHash::new([0xcd; 20]);
const IA: &[u8] = b"\x13BitTorrent protocol: the initial payload";

fn entropy(key: u8, pad: usize) -> Entropy {
    Entropy {
        private_key: [key; 20],
        pad: (0..pad).map(|i| (i * 7 + usize::from(key)) as u8).collect(),
    }
}

/// The lookup of a responder serving `TORRENT` and `OTHER`.
fn lookup(req2: &[u8; 20]) -> Option<InfoHash> {
    [TORRENT, OTHER]
        .into_iter()
        .find(|ih| crypto::req2(ih) == *req2)
}

/// Feeds `bytes` to `feed` in chunks of the given sizes (cycled) until an
/// outcome, which then receives the rest, or an error.
fn feed_chunked(
    bytes: &[u8],
    chunks: &[usize],
    mut feed: impl FnMut(&[u8]) -> Result<Option<Outcome>, MseError>,
) -> Result<Option<Outcome>, MseError> {
    let mut at = 0;
    for size in chunks.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size.max(&1)).min(bytes.len());
        if let Some(mut outcome) = feed(&bytes[at..end])? {
            // What follows goes through the stream, as `Rc4Stream` would
            // carry it.
            let mut rest = bytes[end..].to_vec();
            if let Crypto::Rc4(cipher) = &mut outcome.crypto {
                cipher.decrypt.apply_keystream(&mut rest);
            }
            outcome.received.extend(rest);
            return Ok(Some(outcome));
        }
        at = end;
    }
    Ok(None)
}

/// Runs a whole handshake; the responder's input arrives in `chunks`.
/// `extra` follows the initiator's handshake bytes (as a peer pipelining
/// its first messages would send it).
fn handshake(
    provide: Methods,
    allowed: Methods,
    chunks: &[usize],
    extra: &[u8],
) -> Result<(Outcome, Outcome), MseError> {
    let mut a = Initiator::new(TORRENT, provide, IA, &entropy(1, 33));
    let mut b = Responder::new(allowed, lookup, &entropy(2, 500));
    let step1 = a.poll_transmit().expect("Ya, PadA");
    assert_eq!(step1.len(), KEY_LEN + 33);
    assert!(feed_chunked(&step1, chunks, |c| b.handle_input(c))?.is_none());
    let step2 = b.poll_transmit().expect("Yb, PadB");
    assert!(a.handle_input(&step2)?.is_none());
    let mut step3 = a.poll_transmit().expect("request");
    step3.extend_from_slice(extra);
    let responder = feed_chunked(&step3, chunks, |c| b.handle_input(c))?.expect("responder done");
    let step4 = b.poll_transmit().expect("answer");
    let initiator = a.handle_input(&step4)?.expect("initiator done");
    Ok((initiator, responder))
}

#[test]
fn rc4_round_trip() {
    let (mut a, mut b) = handshake(Methods::BOTH, Methods::BOTH, &[4096], b"").expect("handshake");
    assert_eq!(b.info_hash, TORRENT);
    assert_eq!(b.received, IA);
    assert!(a.received.is_empty());
    let (Crypto::Rc4(ca), Crypto::Rc4(cb)) = (&mut a.crypto, &mut b.crypto) else {
        panic!("RC4 not selected");
    };
    for message in [&b"interested"[..], b"piece data"] {
        let mut wire = message.to_vec();
        ca.encrypt.apply_keystream(&mut wire);
        assert_ne!(wire, message);
        cb.decrypt.apply_keystream(&mut wire);
        assert_eq!(wire, message);
        let mut back = message.to_vec();
        cb.encrypt.apply_keystream(&mut back);
        ca.decrypt.apply_keystream(&mut back);
        assert_eq!(back, message);
    }
}

#[test]
fn plaintext_round_trip() {
    let (a, b) =
        handshake(Methods::PLAINTEXT, Methods::BOTH, &[7], b"then plain").expect("handshake");
    assert_eq!(a.crypto.method(), Method::Plaintext);
    assert_eq!(b.crypto.method(), Method::Plaintext);
    // The initial payload was encrypted; what followed it is plain.
    assert_eq!(b.received, [IA, b"then plain"].concat());
}

#[test]
fn responder_allowing_plaintext_only_selects_it() {
    let (a, _) = handshake(Methods::BOTH, Methods::PLAINTEXT, &[100], b"").expect("handshake");
    assert_eq!(a.crypto.method(), Method::Plaintext);
}

#[test]
fn bytes_after_the_handshake_are_decrypted() {
    let (mut a, b) = handshake(Methods::RC4, Methods::BOTH, &[1, 2, 3], b"").expect("handshake");
    assert_eq!(b.received, IA);
    let Crypto::Rc4(cipher) = &mut a.crypto else {
        panic!("RC4 not selected")
    };
    let mut sent = b"bitfield".to_vec();
    cipher.encrypt.apply_keystream(&mut sent);
    // The same entropy gives the same keys, so `sent` is what the second
    // run's initiator would send: pipelined right behind the handshake, in the same read.
    let (_, b) = handshake(Methods::RC4, Methods::BOTH, &[5000], &sent).expect("handshake");
    assert_eq!(b.received, [IA, b"bitfield"].concat());
}

#[test]
fn no_common_method_is_refused() {
    assert_eq!(
        handshake(Methods::PLAINTEXT, Methods::RC4, &[4096], b"").err(),
        Some(MseError::NoCommonMethod {
            offered: 1,
            allowed: 2
        })
    );
}

#[test]
fn unknown_infohash_is_refused() {
    let mut a = Initiator::new(InfoHash::new([9; 20]), Methods::BOTH, IA, &entropy(1, 0));
    let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
    assert!(
        b.handle_input(&a.poll_transmit().expect("Ya"))
            .expect("ok")
            .is_none()
    );
    a.handle_input(&b.poll_transmit().expect("Yb")).expect("ok");
    let err = b.handle_input(&a.poll_transmit().expect("request")).err();
    assert_eq!(err, Some(MseError::UnknownInfoHash));
    // A failed machine stays failed.
    assert_eq!(b.handle_input(b"more").err(), Some(MseError::Finished));
}

/// The type of [`lookup`].
type Lookup = fn(&[u8; 20]) -> Option<InfoHash>;

/// Step 3 as a hostile initiator could write it, after a real step 1.
struct Crafted {
    responder: Responder<Lookup>,
    secret: [u8; KEY_LEN],
}

impl Crafted {
    fn new() -> Self {
        let ours = KeyPair::new(&[1; 20]);
        let mut responder: Responder<Lookup> =
            Responder::new(Methods::BOTH, lookup, &entropy(2, 10));
        assert!(responder.handle_input(&ours.public).expect("ok").is_none());
        let step2 = responder.poll_transmit().expect("Yb");
        let yb: [u8; KEY_LEN] = step2[..KEY_LEN].try_into().expect("key");
        let secret = ours.shared_secret(&yb).expect("valid key");
        Self { responder, secret }
    }

    /// The hashes, then `tail` encrypted with keyA.
    fn request(&self, tail: &[u8]) -> Vec<u8> {
        let mut out = crypto::req1(&self.secret).to_vec();
        out.extend_from_slice(&crypto::xor(
            &crypto::req2(&TORRENT),
            &crypto::req3(&self.secret),
        ));
        let mut tail = tail.to_vec();
        Cipher::initiator(&self.secret, &TORRENT)
            .encrypt
            .apply_keystream(&mut tail);
        out.extend_from_slice(&tail);
        out
    }
}

#[test]
fn bad_vc_is_refused() {
    let mut c = Crafted::new();
    let request = c.request(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
    assert_eq!(
        c.responder.handle_input(&request).err(),
        Some(MseError::BadVc)
    );
}

#[test]
fn too_long_pad_c_is_refused() {
    let mut c = Crafted::new();
    let request = c.request(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x02, 0x01]);
    assert_eq!(
        c.responder.handle_input(&request).err(),
        Some(MseError::PadTooLong(513))
    );
}

#[test]
fn too_long_pad_a_is_refused() {
    let mut c = Crafted::new();
    let mut request = vec![0x55; MAX_PAD + 1];
    request.extend(c.request(&[0; 16]));
    assert_eq!(
        c.responder.handle_input(&request).err(),
        Some(MseError::NoSync)
    );
}

#[test]
fn longest_pad_a_is_accepted() {
    let mut c = Crafted::new();
    let mut request = vec![0x55; MAX_PAD];
    request.extend(c.request(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]));
    let outcome = c
        .responder
        .handle_input(&request)
        .expect("ok")
        .expect("done");
    assert_eq!(outcome.crypto.method(), Method::Rc4);
    assert!(outcome.received.is_empty());
}

#[test]
fn too_long_pad_b_is_refused() {
    let mut a = Initiator::new(TORRENT, Methods::BOTH, IA, &entropy(1, 0));
    let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, MAX_PAD));
    b.handle_input(&a.poll_transmit().expect("Ya")).expect("ok");
    let mut step2 = b.poll_transmit().expect("Yb");
    step2.push(0);
    assert_eq!(a.handle_input(&step2).expect("waiting for VC"), None);
    // VC would come only after 513 bytes of PadB.
    assert_eq!(a.handle_input(&[0; 8]).err(), Some(MseError::NoSync));
}

/// A private key whose secret with the responder's (`[2; 20]`) begins with
/// a zero byte, as 1 key in 256 does: the case libtorrent 2.0 misreads.
const ZERO_LED_KEY: [u8; 20] = {
    let mut key = [1; 20];
    key[19] = 5;
    key
};

#[test]
fn the_initiator_says_when_its_secret_starts_with_zero() {
    for (key, zero_led) in [(ZERO_LED_KEY, true), ([1; 20], false)] {
        let mut a = Initiator::new(
            TORRENT,
            Methods::BOTH,
            IA,
            &Entropy {
                private_key: key,
                pad: Vec::new(),
            },
        );
        let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
        b.handle_input(&a.poll_transmit().expect("Ya")).expect("ok");
        assert!(!a.secret_starts_with_zero(), "not known before Yb");
        a.handle_input(&b.poll_transmit().expect("Yb")).expect("ok");
        assert_eq!(a.secret_starts_with_zero(), zero_led);
    }
}

#[test]
fn degenerate_key_is_refused() {
    let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
    assert_eq!(
        b.handle_input(&[0; KEY_LEN]).err(),
        Some(MseError::BadPublicKey)
    );
}

#[test]
fn garbage_and_truncation_end_in_errors_or_waiting() {
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 256) as u8 | 1).collect();
    let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
    assert_eq!(b.handle_input(&garbage).err(), Some(MseError::NoSync));
    let mut a = Initiator::new(TORRENT, Methods::BOTH, IA, &entropy(1, 0));
    assert_eq!(a.handle_input(&garbage).err(), Some(MseError::NoSync));
    // Truncated: every prefix of a real step 2 just waits.
    let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
    let mut a = Initiator::new(TORRENT, Methods::BOTH, IA, &entropy(1, 0));
    b.handle_input(&a.poll_transmit().expect("Ya")).expect("ok");
    let step2 = b.poll_transmit().expect("Yb");
    for len in 0..step2.len() {
        let mut fresh = Initiator::new(TORRENT, Methods::BOTH, IA, &entropy(1, 0));
        assert_eq!(fresh.handle_input(&step2[..len]), Ok(None));
    }
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        self.info_hash == other.info_hash
            && self.crypto.method() == other.crypto.method()
            && self.received == other.received
    }
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_outcome(
        chunks in proptest::collection::vec(1usize..200, 1..20),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let whole = handshake(Methods::BOTH, Methods::BOTH, &[100_000], &extra).expect("handshake");
        let chunked = handshake(Methods::BOTH, Methods::BOTH, &chunks, &extra).expect("handshake");
        prop_assert!(whole.1 == chunked.1);
        prop_assert!(whole.0 == chunked.0);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        chunks in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
        let _ = feed_chunked(&bytes, &chunks, |c| b.handle_input(c));
        let mut a = Initiator::new(TORRENT, Methods::BOTH, IA, &entropy(1, 0));
        let _ = feed_chunked(&bytes, &chunks, |c| a.handle_input(c));
    }
}

/// Runs `io::initiate` with our private key `private` against a peer that
/// answers `Ya` with a responder's `Yb` (key `[2; 20]`) and hangs up.
fn initiate_against_a_peer_that_hangs_up(private: [u8; 20]) -> io::StreamError {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let peer = async move {
            let mut ya = [0u8; KEY_LEN];
            theirs.read_exact(&mut ya).await.expect("Ya");
            let mut b = Responder::new(Methods::BOTH, lookup, &entropy(2, 0));
            b.handle_input(&ya).expect("ok");
            let yb = b.poll_transmit().expect("Yb");
            theirs.write_all(&yb).await.expect("Yb sent");
            // Reads step 3, then drops the stream: a hang-up.
            let _ = theirs.read(&mut [0u8; 4096]).await;
        };
        let entropy = Entropy {
            private_key: private,
            pad: Vec::new(),
        };
        let ours = io::initiate(&mut ours, TORRENT, Methods::BOTH, IA, &entropy);
        let (result, ()) = tokio::join!(ours, peer);
        result.expect_err("the peer hung up")
    })
}

#[test]
fn a_hang_up_after_a_zero_led_secret_is_told_apart() {
    assert!(matches!(
        initiate_against_a_peer_that_hangs_up(ZERO_LED_KEY),
        io::StreamError::ClosedOnZeroLedSecret
    ));
    assert!(matches!(
        initiate_against_a_peer_that_hangs_up([1; 20]),
        io::StreamError::Closed
    ));
}
