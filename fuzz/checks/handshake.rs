//! Properties of the BitTorrent handshake decoder (`lodestone_wire::handshake`)
//! on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `handshake` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics, whatever the length;
//! * the one-step decoder and the two-step one (prefix, then peer id) agree;
//! * an accepted handshake is exactly the first 68 bytes re-encoded, and a
//!   refused one is refused for the right reason (wrong header as soon as
//!   it is visible, otherwise too few bytes);
//! * every shorter prefix of the input is refused the same way or, from 48
//!   bytes on, gives the same `HandshakePrefix`.

use lodestone_wire::handshake::{
    HANDSHAKE_LEN, HANDSHAKE_PREFIX_LEN, Handshake, HandshakeError, HandshakePrefix, PROTOCOL,
};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let whole = Handshake::decode(data);
    let header_good = header_ok(data);
    match &whole {
        Ok(handshake) => {
            assert!(data.len() >= HANDSHAKE_LEN, "accepted a short handshake");
            assert_eq!(&handshake.to_bytes()[..], &data[..HANDSHAKE_LEN]);
            assert_eq!(
                handshake.check_info_hash(&handshake.info_hash),
                Ok(()),
                "own infohash refused"
            );
        }
        Err(HandshakeError::BadProtocol) => assert!(!header_good, "good header refused"),
        Err(HandshakeError::Truncated { len, need }) => {
            assert!(header_good, "bad header reported as truncated");
            assert_eq!(*len, data.len());
            assert!(*len < *need && *need <= HANDSHAKE_LEN);
        }
        Err(e @ HandshakeError::InfoHashMismatch { .. }) => panic!("decode checked infohash: {e}"),
    }
    let two_step =
        HandshakePrefix::decode(data).and_then(|p| p.complete(&data[HANDSHAKE_PREFIX_LEN..]));
    assert_eq!(two_step, whole, "one-step and two-step decoding disagree");

    let full_prefix = HandshakePrefix::decode(data).ok();
    for len in 0..data.len().min(HANDSHAKE_LEN) {
        match HandshakePrefix::decode(&data[..len]) {
            Ok(prefix) => {
                assert!(len >= HANDSHAKE_PREFIX_LEN);
                assert_eq!(Some(prefix), full_prefix, "prefix depends on what follows");
            }
            Err(HandshakeError::BadProtocol) => assert!(!header_ok(&data[..len])),
            Err(HandshakeError::Truncated { len: l, .. }) => {
                assert!(header_ok(&data[..len]) && l == len && len < HANDSHAKE_PREFIX_LEN)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

/// Whether the bytes present agree with the protocol header.
fn header_ok(bytes: &[u8]) -> bool {
    bytes.iter().zip(PROTOCOL.iter()).all(|(a, b)| a == b)
}
