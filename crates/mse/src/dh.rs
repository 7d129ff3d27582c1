//! The 768-bit Diffie–Hellman exchange of MSE: the fixed prime every client
//! uses, generator 2, and keys written as 96 big-endian bytes.

use std::sync::OnceLock;

use num_bigint::BigUint;

/// Bytes of a public key or shared secret on the wire (768 bits).
pub const KEY_LEN: usize = 96;

/// The prime of the MSE specification (the 768-bit MODP group of RFC 2409).
const PRIME_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

fn prime() -> &'static BigUint {
    static PRIME: OnceLock<BigUint> = OnceLock::new();
    PRIME.get_or_init(|| {
        // The constant above is valid hex: parsing cannot fail.
        #[allow(clippy::unwrap_used)]
        BigUint::parse_bytes(PRIME_HEX, 16).unwrap()
    })
}

/// Writes `n` (< the prime) as exactly [`KEY_LEN`] big-endian bytes.
fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // n < prime < 2^768, so it has at most KEY_LEN bytes.
    out[KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// Our side of the exchange: a private exponent and its public key.
pub(crate) struct KeyPair {
    private: BigUint,
    /// `2^private mod prime`, as sent.
    pub(crate) public: [u8; KEY_LEN],
}

impl KeyPair {
    /// A key pair from a private exponent (160 random bits are what the
    /// specification asks for).
    pub(crate) fn new(private: &[u8]) -> Self {
        let private = BigUint::from_bytes_be(private);
        let public = to_key_bytes(&BigUint::from(2u8).modpow(&private, prime()));
        Self { private, public }
    }

    /// The shared secret S from the peer's public key, or `None` for a key
    /// outside 2..p-2 (which would give a guessable secret).
    pub(crate) fn shared_secret(&self, theirs: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
        let y = BigUint::from_bytes_be(theirs);
        let p = prime();
        if y <= BigUint::from(1u8) || y >= p - 1u8 {
            return None;
        }
        Some(to_key_bytes(&y.modpow(&self.private, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_secret() {
        let a = KeyPair::new(&[7; 20]);
        let b = KeyPair::new(&[9; 20]);
        let s1 = a.shared_secret(&b.public).expect("valid key");
        let s2 = b.shared_secret(&a.public).expect("valid key");
        assert_eq!(s1, s2);
        assert_ne!(s1, [0; KEY_LEN]);
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let a = KeyPair::new(&[7; 20]);
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        assert!(a.shared_secret(&[0; KEY_LEN]).is_none());
        assert!(a.shared_secret(&one).is_none());
        assert!(a.shared_secret(&[0xff; KEY_LEN]).is_none());
    }
}
