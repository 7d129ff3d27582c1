//! Write tokens: proof that an `announce_peer` comes from an address that
//! recently received our `get_peers` answer.
//!
//! A token is the first [`TOKEN_LEN`] bytes of SHA-1(requester IP ‖ secret).
//! The secret rotates every `rotation`; a token made with the previous secret
//! is still accepted, so tokens live between one and two rotation periods.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngExt};
use sha1::{Digest, Sha1};

use crate::krpc::Token;

/// Bytes of SHA-1 kept in a token: short replies, still unguessable.
pub const TOKEN_LEN: usize = 8;

/// The current and previous secrets.
#[derive(Debug, Clone)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Instant,
    rotation: Duration,
}

impl Tokens {
    /// Fresh secrets; rotation is due `rotation` after `now`.
    pub fn new(rng: &mut impl Rng, now: Instant, rotation: Duration) -> Self {
        Self {
            current: rng.random(),
            previous: rng.random(),
            rotated: now,
            rotation,
        }
    }

    fn make_with(secret: &[u8; 16], ip: &IpAddr) -> Token {
        let mut h = Sha1::new();
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(secret);
        let digest = h.finalize();
        Token::truncated(&digest[..TOKEN_LEN])
    }

    /// The token for `ip`.
    pub fn make(&self, ip: &IpAddr) -> Token {
        Self::make_with(&self.current, ip)
    }

    /// Whether `token` was made for `ip` with the current or previous secret.
    pub fn verify(&self, ip: &IpAddr, token: &Token) -> bool {
        *token == Self::make_with(&self.current, ip)
            || *token == Self::make_with(&self.previous, ip)
    }

    /// When the next rotation is due.
    pub fn next_rotation(&self) -> Instant {
        self.rotated + self.rotation
    }

    /// Rotates if due.
    pub fn maybe_rotate(&mut self, now: Instant, rng: &mut impl Rng) {
        if now >= self.next_rotation() {
            self.previous = self.current;
            self.current = rng.random();
            self.rotated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn tokens_survive_one_rotation_only() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let period = Duration::from_secs(300);
        let mut tokens = Tokens::new(&mut rng, now, period);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        let t = tokens.make(&ip);
        assert_eq!(t.as_slice().len(), TOKEN_LEN);
        assert!(tokens.verify(&ip, &t));
        assert!(!tokens.verify(&other, &t));
        tokens.maybe_rotate(now + Duration::from_secs(10), &mut rng);
        assert!(tokens.verify(&ip, &t));
        tokens.maybe_rotate(now + period, &mut rng);
        assert!(tokens.verify(&ip, &t));
        tokens.maybe_rotate(now + period * 2, &mut rng);
        assert!(!tokens.verify(&ip, &t));
    }
}
