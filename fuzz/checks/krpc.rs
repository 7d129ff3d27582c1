//! Properties of the KRPC codec (`lodestone_dht::krpc`) on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `krpc` and by the stable
//! replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics;
//! * an accepted datagram encodes to bytes that decode to the same
//!   [`Message`], and that encoding is canonical (encoding the re-decoded
//!   message gives the same bytes);
//! * a refused datagram that deserves an error answer (203, 204) yields an
//!   answer that itself encodes and decodes to the same error.

use lodestone_dht::krpc::{Body, ErrorBody, Message};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let message = match Message::decode(data) {
        Ok(message) => message,
        Err(err) => {
            if let Some((tid, code, text)) = err.reply() {
                let answer = Message {
                    tid,
                    body: Body::Error(ErrorBody {
                        code: code.code(),
                        message: text.to_owned(),
                    }),
                    ip: None,
                    read_only: false,
                    version: None,
                };
                round_trip(&answer);
            }
            return;
        }
    };
    round_trip(&message);
}

fn round_trip(message: &Message) {
    let encoded = message.to_bytes();
    let again = Message::decode(&encoded)
        .unwrap_or_else(|e| panic!("our encoding of {message:?} does not decode: {e}"));
    assert_eq!(&again, message, "encode → decode changed the message");
    assert_eq!(again.to_bytes(), encoded, "encoding is not canonical");
}
