//! BitTorrent message stream encryption (MSE, also called PE), as Vuze
//! specified it and libtorrent, Transmission and qBittorrent deploy it.
//!
//! # Protocol
//!
//! ```text
//! 1 A→B  Ya, PadA
//! 2 B→A  Yb, PadB
//! 3 A→B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!        RC4(VC, crypto_provide, len(PadC), PadC, len(IA)), RC4(IA)
//! 4 B→A  RC4(VC, crypto_select, len(PadD), PadD), payload…
//! ```
//!
//! `Y` are 768-bit Diffie–Hellman public keys (generator 2, the fixed
//! prime), `S` the shared secret, `SKEY` the infohash, `HASH` SHA-1. Each
//! direction has its own RC4 keystream (`HASH('keyA', S, SKEY)` from the
//! initiator, `keyB` from the responder) with the first 1024 bytes thrown
//! away. `VC` is eight zero bytes; `crypto_provide`/`crypto_select` pick
//! RC4 (0x02) or plaintext (0x01) for what follows; `IA` is the initiator's
//! first payload (its BitTorrent handshake).
//!
//! # Bounds
//!
//! Every padding is at most [`MAX_PAD`] bytes, and each side finds the
//! other's synchronisation marker (the `req1` hash, the encrypted `VC`)
//! within that window or fails with [`MseError::NoSync`]; length fields are
//! checked before anything waits for the bytes they announce. Nothing is
//! allocated ahead of input.
//!
//! # Shape
//!
//! [`Initiator`] and [`Responder`] are sans-IO state machines: bytes in
//! ([`Initiator::handle_input`]), bytes out ([`Initiator::poll_transmit`]),
//! and an [`Outcome`] at the end. Randomness comes in as an [`Entropy`], so
//! tests and fuzzers are deterministic. [`io`] drives them over a tokio
//! stream and [`Rc4Stream`] carries the connection afterwards.

mod crypto;
mod dh;
mod initiator;
pub mod io;
mod responder;
mod stream;
mod types;

pub use crypto::{Cipher, req2};
pub use dh::KEY_LEN;
pub use initiator::{Initiator, MAX_INITIAL_PAYLOAD};
pub use responder::Responder;
pub use stream::Rc4Stream;
pub use types::{Crypto, Entropy, MAX_PAD, Method, Methods, MseError, Outcome};

/// The call shape both handshake sides share, so that a driver, a test or
/// a fuzzer can run either.
pub trait Side {
    /// Takes bytes received; the outcome once the handshake is complete.
    fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, MseError>;
    /// Bytes to send now, if any.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// Whether a peer hanging up now may be libtorrent 2.0 misreading a
    /// shared secret that begins with a zero byte (only an initiator can
    /// tell: see [`Initiator::secret_starts_with_zero`]).
    fn secret_starts_with_zero(&self) -> bool {
        false
    }
}

impl Side for Initiator {
    fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, MseError> {
        Initiator::handle_input(self, bytes)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Initiator::poll_transmit(self)
    }
    fn secret_starts_with_zero(&self) -> bool {
        Initiator::secret_starts_with_zero(self)
    }
}

impl<L: FnMut(&[u8; 20]) -> Option<lodestone_core::InfoHash>> Side for Responder<L> {
    fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<Outcome>, MseError> {
        Responder::handle_input(self, bytes)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        Responder::poll_transmit(self)
    }
}

#[cfg(test)]
mod tests;
