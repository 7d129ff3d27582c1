//! Properties of the MSE/PE handshake state machines
//! (`lodestone_mse::{Initiator, Responder}`) against a peer whose bytes the
//! fuzzer controls.
//!
//! Included with `#[path]` by the cargo-fuzz targets `mse_initiator` and
//! `mse_responder` and by the stable replay test `tests/tests/fuzz_replay.rs`
//! (each target uses one of the two checks).
#![allow(dead_code)]
//!
//! The peer is an honest one of the other side (its padding length and
//! methods chosen by the input) whose bytes the input then corrupts
//! (byte flips at chosen positions), cuts into chunks, and follows with
//! arbitrary bytes; or, with `raw`, nothing but arbitrary bytes. Flipping
//! an honest stream reaches the deep states that random bytes never would
//! (they would have to contain a SHA-1 of the shared secret).
//!
//! * no input panics the machine under test;
//! * what it sends is bounded by the protocol (a public key, at most 512
//!   bytes of padding, the fixed fields and the initial payload);
//! * with no flip, compatible methods and no raw bytes, it finishes with
//!   the method both sides chose, for the right torrent, and receives
//!   exactly what the peer sent after its handshake (for a responder, the
//!   initial payload first);
//! * once it fails or finishes, it takes no more input.

use arbitrary::{Arbitrary, Unstructured};
use lodestone_core::InfoHash;
use lodestone_mse::{
    Crypto, Entropy, Initiator, KEY_LEN, MAX_PAD, Methods, MseError, Outcome, Responder, Side, req2,
};
use rc4::StreamCipher;

const TORRENT: InfoHash = InfoHash::new([0x5a; 20]);
const IA: &[u8] = b"\x13BitTorrent protocol initial payload";

#[derive(Debug, Arbitrary)]
struct Script {
    /// The honest peer's padding length (cut to 512) and key.
    pad: u16,
    key: u8,
    /// Methods: the initiator's `crypto_provide` and the responder's.
    provide: u8,
    allowed: u8,
    /// Chunk sizes the peer's bytes arrive in (cycled).
    chunks: Vec<u8>,
    /// (position, xor) flips of the peer's bytes.
    flips: Vec<(u16, u8)>,
    /// Bytes after the peer's handshake.
    tail: Vec<u8>,
    /// Send only `tail`, no handshake at all.
    raw: bool,
}

fn entropy(key: u8, pad: u16) -> Entropy {
    Entropy {
        private_key: [key | 1; 20],
        pad: (0..usize::from(pad) % (MAX_PAD + 1))
            .map(|i| i as u8)
            .collect(),
    }
}

fn lookup(hash: &[u8; 20]) -> Option<InfoHash> {
    (*hash == req2(&TORRENT)).then_some(TORRENT)
}

/// Delivers the peer's bytes to the side under test as the script says,
/// collecting what that side sends.
struct Run<'s> {
    script: &'s Script,
    /// Bytes of the peer's stream so far (flip positions count in it).
    offset: usize,
    chunk: usize,
    sent: Vec<u8>,
}

impl Run<'_> {
    /// Delivers `bytes` (flipped, chunked) until `side` ends.
    fn deliver(
        &mut self,
        side: &mut dyn Side,
        bytes: &[u8],
    ) -> Option<Result<Option<Outcome>, MseError>> {
        let mut bytes = bytes.to_vec();
        for &(at, x) in &self.script.flips {
            if let Some(b) = usize::from(at)
                .checked_sub(self.offset)
                .and_then(|i| bytes.get_mut(i))
            {
                *b ^= x;
            }
        }
        self.offset += bytes.len();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let size = match self
                .script
                .chunks
                .get(self.chunk % self.script.chunks.len().max(1))
            {
                Some(&c) => usize::from(c).max(1),
                None => rest.len(),
            };
            self.chunk += 1;
            let (now, later) = rest.split_at(size.min(rest.len()));
            rest = later;
            let result = side.handle_input(now);
            self.sent.extend(side.poll_transmit().unwrap_or_default());
            match result {
                Ok(None) => {}
                Ok(Some(mut outcome)) => {
                    // The rest travels through the stream, decrypted there.
                    let mut after = rest.to_vec();
                    if let Crypto::Rc4(cipher) = &mut outcome.crypto {
                        cipher.decrypt.apply_keystream(&mut after);
                    }
                    outcome.received.extend(after);
                    return Some(Ok(Some(outcome)));
                }
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
}

/// Whether the script leaves the peer honest and its methods compatible.
fn honest(script: &Script) -> bool {
    let flipped = script.flips.iter().any(|&(_, x)| x != 0);
    !script.raw && !flipped
}

fn after_end(side: &mut dyn Side, end: &Result<Option<Outcome>, MseError>) {
    if end.is_err() || matches!(end, Ok(Some(_))) {
        assert_eq!(side.handle_input(b"x").err(), Some(MseError::Finished));
    }
}

/// The responder against an initiator the input controls; returns whether
/// the handshake finished.
pub fn check_responder(data: &[u8]) -> bool {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return false;
    };
    let provide = Methods::from_bits(u32::from(script.provide));
    let allowed = Methods::from_bits(u32::from(script.allowed));
    let mut responder = Responder::new(allowed, lookup, &entropy(2, 300));
    let mut peer = Initiator::new(TORRENT, provide, IA, &entropy(script.key, script.pad));
    let mut run = Run {
        script: &script,
        offset: 0,
        chunk: 0,
        sent: Vec::new(),
    };
    let end = if script.raw {
        run.deliver(&mut responder, &script.tail)
    } else {
        let step1 = peer.poll_transmit().unwrap_or_default();
        let mut end = run.deliver(&mut responder, &step1);
        if end.is_none() {
            // The honest initiator answers the responder's key, if it can.
            let answer = peer.handle_input(&run.sent.clone());
            if answer.is_ok() {
                let mut step3 = peer.poll_transmit().unwrap_or_default();
                step3.extend_from_slice(&script.tail);
                end = run.deliver(&mut responder, &step3);
            }
        }
        end
    };
    assert!(
        run.sent.len() <= KEY_LEN + MAX_PAD + 14,
        "responder sent {} bytes",
        run.sent.len()
    );
    let common = provide.bits() & allowed.bits() != 0;
    if honest(&script) && common {
        let Some(Ok(Some(outcome))) = &end else {
            panic!("honest initiator refused: {end:?}");
        };
        assert_eq!(outcome.info_hash, TORRENT);
        let expected = if provide.bits() & allowed.bits() & 2 != 0 {
            2
        } else {
            1
        };
        assert_eq!(outcome.crypto.method().bit(), expected);
        if outcome.crypto.method().bit() == 1 {
            assert_eq!(outcome.received, [IA, &script.tail].concat());
        } else {
            assert!(outcome.received.starts_with(IA));
            assert_eq!(outcome.received.len(), IA.len() + script.tail.len());
        }
    }
    if let Some(end) = &end {
        after_end(&mut responder, end);
    }
    matches!(end, Some(Ok(Some(_))))
}

/// The initiator against a responder the input controls; returns whether
/// the handshake finished.
pub fn check_initiator(data: &[u8]) -> bool {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return false;
    };
    let provide = Methods::from_bits(u32::from(script.provide));
    let allowed = Methods::from_bits(u32::from(script.allowed));
    let mut initiator = Initiator::new(TORRENT, provide, IA, &entropy(1, 100));
    let mut peer = Responder::new(allowed, lookup, &entropy(script.key, script.pad));
    let mut run = Run {
        script: &script,
        offset: 0,
        chunk: 0,
        sent: initiator.poll_transmit().unwrap_or_default(),
    };
    let end = if script.raw {
        run.deliver(&mut initiator, &script.tail)
    } else {
        let mut end = None;
        let step1 = run.sent.clone();
        // The honest responder answers Ya, then the request.
        if peer.handle_input(&step1).is_ok() {
            let step2 = peer.poll_transmit().unwrap_or_default();
            let before = run.sent.len();
            end = run.deliver(&mut initiator, &step2);
            let request = run.sent[before..].to_vec();
            if end.is_none() && peer.handle_input(&request).is_ok() {
                let mut step4 = peer.poll_transmit().unwrap_or_default();
                step4.extend_from_slice(&script.tail);
                end = run.deliver(&mut initiator, &step4);
            }
        }
        end
    };
    let most = KEY_LEN + MAX_PAD + 20 + 20 + 16 + IA.len();
    assert!(
        run.sent.len() <= most,
        "initiator sent {} bytes",
        run.sent.len()
    );
    let common = provide.bits() & allowed.bits() != 0;
    if honest(&script) && common {
        let Some(Ok(Some(outcome))) = &end else {
            panic!("honest responder refused: {end:?}");
        };
        let expected = if provide.bits() & allowed.bits() & 2 != 0 {
            2
        } else {
            1
        };
        assert_eq!(outcome.crypto.method().bit(), expected);
        assert_eq!(outcome.received.len(), script.tail.len());
    }
    if let Some(end) = &end {
        after_end(&mut initiator, end);
    }
    matches!(end, Some(Ok(Some(_))))
}
