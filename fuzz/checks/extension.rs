//! Properties of the BEP 10 extension handshake codec
//! (`lodestone_wire::ExtendedHandshake`) on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `extension` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics;
//! * an accepted handshake encodes to bytes that decode to the same value,
//!   and that encoding is canonical;
//! * `extension_id` agrees with the `m` dictionary (0 means disabled).

use lodestone_wire::{ExtendedHandshake, Message};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(handshake) = ExtendedHandshake::decode(data) else {
        return;
    };
    let encoded = handshake.encode();
    let again = ExtendedHandshake::decode(&encoded)
        .unwrap_or_else(|e| panic!("our encoding of {handshake:?} does not decode: {e}"));
    assert_eq!(again, handshake, "encode → decode changed the handshake");
    assert_eq!(again.encode(), encoded, "encoding is not canonical");
    for (name, &id) in &handshake.m {
        assert_eq!(handshake.extension_id(name), (id != 0).then_some(id));
    }
    let Message::Extended { id: 0, payload } = handshake.to_message() else {
        panic!("to_message is not an extended handshake");
    };
    assert_eq!(payload.as_ref(), &encoded[..]);
}
