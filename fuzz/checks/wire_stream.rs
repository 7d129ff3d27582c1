//! Properties of peer wire framing (`lodestone_wire::Decoder`) on arbitrary
//! byte streams.
//!
//! Included with `#[path]` by the cargo-fuzz target `wire_stream` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The input is one direction of a connection as a client sent it (the seed
//! corpus holds real ones): when it starts with a BitTorrent handshake, the
//! 68 handshake bytes are skipped and the rest is framed. The chunking of the
//! stream is drawn from a hash of the input, so every input is also tried in
//! pieces of odd sizes. For a default decoder and one bounded to a piece
//! count (also drawn from the hash):
//!
//! * decoding never panics, and a refused or incomplete frame leaves the
//!   buffer untouched;
//! * the stream fed in chunks gives exactly the messages, and then the same
//!   error or the same leftover bytes, as the stream fed at once;
//! * each message took exactly `Decoder::frame_len` bytes, and encodes back
//!   to exactly those bytes (an unknown message, whose payload is skipped,
//!   to a frame of the same length and id), which decode to the same message.

use bytes::BytesMut;
use lodestone_wire::handshake::{HANDSHAKE_LEN, PROTOCOL};
use lodestone_wire::{Decoder, Message, MessageError, encode, encoded_len};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let stream = match data.strip_prefix(PROTOCOL) {
        Some(_) if data.len() >= HANDSHAKE_LEN => &data[HANDSHAKE_LEN..],
        _ => data,
    };
    let mut rng = SplitMix(fnv1a(data));
    let pieces = (rng.next() % 5000) as u32;
    for decoder in [Decoder::new(), Decoder::new().with_piece_count(pieces)] {
        let whole = frame_all(&decoder, stream);
        for (message, frame) in &whole.messages {
            check_message(&decoder, message, frame);
        }
        let chunked = frame_chunked(&decoder, stream, &mut rng);
        assert_eq!(
            chunked.messages.len(),
            whole.messages.len(),
            "chunking changed the message count"
        );
        for ((a, _), (b, _)) in chunked.messages.iter().zip(&whole.messages) {
            assert_eq!(a, b, "chunking changed a message");
        }
        assert_eq!(
            chunked.end, whole.end,
            "chunking changed how the stream ends"
        );
    }
}

/// What framing a stream produced.
struct Framed {
    /// Each message with the frame bytes it was decoded from.
    messages: Vec<(Message, Vec<u8>)>,
    /// The error that stopped decoding, or the bytes left over.
    end: Result<usize, MessageError>,
}

/// Decodes as many messages as `buf` holds; `Err` stops for good.
fn drain(
    decoder: &Decoder,
    buf: &mut BytesMut,
    out: &mut Vec<(Message, Vec<u8>)>,
) -> Result<(), MessageError> {
    loop {
        let before = buf.len();
        // Only the frame at the front is copied: streams can be long.
        let frame = Decoder::frame_len(buf).map(|n| buf[..n.min(before)].to_vec());
        match decoder.decode(buf) {
            Ok(Some(message)) => {
                let frame = frame.expect("a message was decoded without a length prefix");
                assert_eq!(before - buf.len(), frame.len(), "frame length");
                out.push((message, frame));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "incomplete frame consumed bytes");
                return Ok(());
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "refused frame consumed bytes");
                return Err(e);
            }
        }
    }
}

fn frame_all(decoder: &Decoder, stream: &[u8]) -> Framed {
    let mut buf = BytesMut::from(stream);
    let mut messages = Vec::new();
    let end = drain(decoder, &mut buf, &mut messages).map(|()| buf.len());
    Framed { messages, end }
}

fn frame_chunked(decoder: &Decoder, stream: &[u8], rng: &mut SplitMix) -> Framed {
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // Mostly tiny chunks (split prefixes and headers), sometimes big ones.
        let max = if rng.next().is_multiple_of(4) {
            4096
        } else {
            7
        };
        let take = (1 + rng.next() as usize % max).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if let Err(e) = drain(decoder, &mut buf, &mut messages) {
            return Framed {
                messages,
                end: Err(e),
            };
        }
    }
    Framed {
        messages,
        end: Ok(buf.len()),
    }
}

fn check_message(decoder: &Decoder, message: &Message, frame: &[u8]) {
    let mut encoded = BytesMut::new();
    encode(message, &mut encoded);
    assert_eq!(encoded.len(), encoded_len(message), "encoded_len");
    match message {
        Message::Unknown { .. } => {
            assert_eq!(encoded.len(), frame.len(), "unknown message length");
            assert_eq!(encoded[..5], frame[..5], "unknown message header");
        }
        _ => assert_eq!(
            &encoded[..],
            frame,
            "{message:?} does not re-encode to its frame"
        ),
    }
    let again = decoder
        .decode(&mut encoded)
        .unwrap_or_else(|e| panic!("our encoding of {message:?} is refused: {e}"));
    assert_eq!(
        again.as_ref(),
        Some(message),
        "encode → decode changed the message"
    );
    assert!(encoded.is_empty(), "encoding left bytes behind");
}

/// FNV-1a: a stable hash of the input to draw chunk sizes from.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64: a tiny deterministic generator, so the check needs no RNG crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
