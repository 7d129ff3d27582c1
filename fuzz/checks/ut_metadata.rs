//! Properties of the ut_metadata (BEP 9) message codec
//! (`lodestone_metadata::message`) on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `ut_metadata` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics;
//! * an accepted message encodes to bytes that decode to the same message,
//!   and that encoding is canonical;
//! * a `data` message's bytes are exactly what followed its dictionary;
//!   requests and rejects carry nothing after it.

use lodestone_metadata::message::{Message, piece_count, piece_len};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        if let Message::Data { data: piece, .. } = message {
            assert!(
                data.ends_with(piece),
                "data bytes are not the payload's tail"
            );
        }
        let encoded = message.to_vec();
        let again = Message::decode(&encoded)
            .unwrap_or_else(|e| panic!("our encoding of {message:?} does not decode: {e}"));
        assert_eq!(again, message, "encode → decode changed the message");
        assert_eq!(again.to_vec(), encoded, "encoding is not canonical");
        if let Message::Data {
            piece,
            total_size: Some(total),
            ..
        } = message
        {
            check_geometry(piece, total);
        }
    }
}

/// The piece arithmetic a fetcher applies to a peer's claims never
/// overflows and agrees with itself.
fn check_geometry(piece: u32, total: u64) {
    let Ok(size) = u32::try_from(total) else {
        return;
    };
    let count = piece_count(size);
    match piece_len(size, piece) {
        Some(len) => {
            assert!(piece < count, "piece {piece} of {count} has a length");
            assert!(len > 0 && len <= 16 * 1024);
        }
        None => assert!(piece >= count, "piece {piece} of {count} has no length"),
    }
}
