//! ut_metadata messages (BEP 9): the payload of an extended message whose id
//! is the one the receiver assigned to `ut_metadata` in its handshake.
//!
//! A message is a bencoded dictionary `{msg_type, piece[, total_size]}`; a
//! `data` message is followed, outside the dictionary, by the piece bytes.

use lodestone_bencode::{Limits, Writer, parse_prefix};

/// Size of every metadata piece except the last, which may be shorter.
pub const PIECE_SIZE: u32 = 16 * 1024;

/// One ut_metadata message. `Data` borrows the piece bytes from the payload
/// it was decoded from (or from the metadata being served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Asks for piece `piece` of the metadata (`msg_type` 0).
    Request {
        /// Index of the 16 KiB piece.
        piece: u32,
    },
    /// Carries piece `piece` (`msg_type` 1).
    Data {
        /// Index of the 16 KiB piece.
        piece: u32,
        /// The sender's idea of the whole metadata size; BEP 9 says it is
        /// present, but nothing is lost by tolerating its absence.
        total_size: Option<u64>,
        /// The piece bytes that followed the dictionary.
        data: &'a [u8],
    },
    /// The sender will not send piece `piece` (`msg_type` 2).
    Reject {
        /// Index of the 16 KiB piece.
        piece: u32,
    },
    /// A `msg_type` this implementation does not know; BEP 9 says to ignore it.
    Unknown {
        /// The message type as sent.
        msg_type: i64,
    },
}

/// Why a ut_metadata payload was refused. Every variant is the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The payload does not start with well-formed, bounded bencode.
    #[error("ut_metadata message is not valid bencode")]
    Bencode(#[from] lodestone_bencode::Error),
    /// The bencoded value is not a dictionary.
    #[error("ut_metadata message is not a dictionary")]
    NotADict,
    /// A required key is missing or is not an integer.
    #[error("ut_metadata message lacks an integer `{0}`")]
    Missing(&'static str),
    /// An integer is out of the range the protocol allows.
    #[error("ut_metadata message has `{key}` = {value}, out of range")]
    OutOfRange {
        /// Which key.
        key: &'static str,
        /// The value given.
        value: i64,
    },
    /// A request or reject carries bytes after its dictionary.
    #[error("ut_metadata {kind} message carries {count} bytes after its dictionary")]
    Trailing {
        /// `request` or `reject`.
        kind: &'static str,
        /// How many bytes follow the dictionary.
        count: usize,
    },
}

const MSG_REQUEST: i64 = 0;
const MSG_DATA: i64 = 1;
const MSG_REJECT: i64 = 2;

impl<'a> Message<'a> {
    /// Decodes one ut_metadata payload (after the extended message id byte).
    pub fn decode(payload: &'a [u8]) -> Result<Self, MessageError> {
        let (doc, end) = parse_prefix(payload, &Limits::PEER_MESSAGE)?;
        let dict = doc.root().as_dict().ok_or(MessageError::NotADict)?;
        let msg_type = dict
            .get_int(b"msg_type")
            .ok_or(MessageError::Missing("msg_type"))?;
        let piece = || -> Result<u32, MessageError> {
            let value = dict
                .get_int(b"piece")
                .ok_or(MessageError::Missing("piece"))?;
            u32::try_from(value).map_err(|_| MessageError::OutOfRange {
                key: "piece",
                value,
            })
        };
        let rest = &payload[end..];
        let no_trailing = |kind| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(MessageError::Trailing {
                    kind,
                    count: rest.len(),
                })
            }
        };
        match msg_type {
            MSG_REQUEST => {
                no_trailing("request")?;
                Ok(Message::Request { piece: piece()? })
            }
            MSG_DATA => {
                let total_size = dict
                    .get_int(b"total_size")
                    .map(|value| {
                        u64::try_from(value).map_err(|_| MessageError::OutOfRange {
                            key: "total_size",
                            value,
                        })
                    })
                    .transpose()?;
                Ok(Message::Data {
                    piece: piece()?,
                    total_size,
                    data: rest,
                })
            }
            MSG_REJECT => {
                no_trailing("reject")?;
                Ok(Message::Reject { piece: piece()? })
            }
            msg_type => Ok(Message::Unknown { msg_type }),
        }
    }

    /// Appends the canonical encoding of this message (dictionary, then the
    /// piece bytes for `Data`) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match *self {
            Message::Request { piece } => w.dict(|d| {
                d.int(b"msg_type", MSG_REQUEST);
                d.int(b"piece", i64::from(piece));
            }),
            Message::Data {
                piece, total_size, ..
            } => w.dict(|d| {
                d.int(b"msg_type", MSG_DATA);
                d.int(b"piece", i64::from(piece));
                if let Some(total) = total_size {
                    // Sizes we send come from metadata we hold in memory, far
                    // below i64::MAX; saturate rather than wrap if not.
                    d.int(b"total_size", i64::try_from(total).unwrap_or(i64::MAX));
                }
            }),
            Message::Reject { piece } => w.dict(|d| {
                d.int(b"msg_type", MSG_REJECT);
                d.int(b"piece", i64::from(piece));
            }),
            Message::Unknown { msg_type } => w.dict(|d| d.int(b"msg_type", msg_type)),
        }
        if let Message::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
    }

    /// The canonical encoding in a new buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Number of 16 KiB pieces in metadata of `size` bytes.
pub fn piece_count(size: u32) -> u32 {
    size.div_ceil(PIECE_SIZE)
}

/// Byte length of piece `piece` of metadata of `size` bytes, or `None` when
/// the piece does not exist.
pub fn piece_len(size: u32, piece: u32) -> Option<u32> {
    let start = piece.checked_mul(PIECE_SIZE)?;
    (start < size).then(|| (size - start).min(PIECE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_encodings() {
        assert_eq!(
            Message::Request { piece: 0 }.to_vec(),
            b"d8:msg_typei0e5:piecei0ee"
        );
        assert_eq!(
            Message::Reject { piece: 7 }.to_vec(),
            b"d8:msg_typei2e5:piecei7ee"
        );
        assert_eq!(
            Message::Data {
                piece: 1,
                total_size: Some(34256),
                data: b"xyz"
            }
            .to_vec(),
            b"d8:msg_typei1e5:piecei1e10:total_sizei34256eexyz"
        );
    }

    #[test]
    fn decodes_bep_examples() {
        assert_eq!(
            Message::decode(b"d8:msg_typei0e5:piecei0ee"),
            Ok(Message::Request { piece: 0 })
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei1e5:piecei0e10:total_sizei34256eexxxxxxxx"),
            Ok(Message::Data {
                piece: 0,
                total_size: Some(34256),
                data: b"xxxxxxxx"
            })
        );
    }

    #[test]
    fn data_bytes_that_look_like_bencode_stay_data() {
        let msg = Message::decode(b"d8:msg_typei1e5:piecei2e10:total_sizei40000eed1:ai1ee");
        assert_eq!(
            msg,
            Ok(Message::Data {
                piece: 2,
                total_size: Some(40000),
                data: b"d1:ai1ee"
            })
        );
    }

    #[test]
    fn unknown_msg_type_is_a_value_not_an_error() {
        assert_eq!(
            Message::decode(b"d8:msg_typei9e3:zzz3:abce"),
            Ok(Message::Unknown { msg_type: 9 })
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei-1ee"),
            Ok(Message::Unknown { msg_type: -1 })
        );
    }

    #[test]
    fn data_without_total_size_is_tolerated() {
        assert_eq!(
            Message::decode(b"d8:msg_typei1e5:piecei0eeab"),
            Ok(Message::Data {
                piece: 0,
                total_size: None,
                data: b"ab"
            })
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(Message::decode(b"li0ee"), Err(MessageError::NotADict));
        assert_eq!(
            Message::decode(b"d5:piecei0ee"),
            Err(MessageError::Missing("msg_type"))
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei0ee"),
            Err(MessageError::Missing("piece"))
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei0e5:piece1:0e"),
            Err(MessageError::Missing("piece"))
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei0e5:piecei-1ee"),
            Err(MessageError::OutOfRange {
                key: "piece",
                value: -1
            })
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei2e5:piecei4294967296ee"),
            Err(MessageError::OutOfRange {
                key: "piece",
                value: 1 << 32
            })
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei1e5:piecei0e10:total_sizei-5eexx"),
            Err(MessageError::OutOfRange {
                key: "total_size",
                value: -5
            })
        );
        assert_eq!(
            Message::decode(b"d8:msg_typei0e5:piecei0eeX"),
            Err(MessageError::Trailing {
                kind: "request",
                count: 1
            })
        );
        assert!(matches!(
            Message::decode(b"d8:msg_typei0e5:piecei0e"),
            Err(MessageError::Bencode(_))
        ));
        assert!(matches!(
            Message::decode(b""),
            Err(MessageError::Bencode(_))
        ));
    }

    #[test]
    fn piece_geometry() {
        assert_eq!(piece_count(1), 1);
        assert_eq!(piece_count(PIECE_SIZE), 1);
        assert_eq!(piece_count(PIECE_SIZE + 1), 2);
        assert_eq!(piece_len(PIECE_SIZE + 1, 0), Some(PIECE_SIZE));
        assert_eq!(piece_len(PIECE_SIZE + 1, 1), Some(1));
        assert_eq!(piece_len(PIECE_SIZE + 1, 2), None);
        assert_eq!(piece_len(u32::MAX, u32::MAX), None);
        assert_eq!(
            piece_len(u32::MAX, piece_count(u32::MAX) - 1),
            Some(PIECE_SIZE - 1)
        );
    }

    fn any_message() -> impl Strategy<Value = (u8, u32, Option<u64>, Vec<u8>, i64)> {
        (
            0u8..4,
            any::<u32>(),
            proptest::option::of(0u64..=i64::MAX as u64),
            proptest::collection::vec(any::<u8>(), 0..64),
            3i64..,
        )
    }

    proptest! {
        #[test]
        fn round_trip((kind, piece, total_size, data, other) in any_message()) {
            let msg = match kind {
                0 => Message::Request { piece },
                1 => Message::Data { piece, total_size, data: &data },
                2 => Message::Reject { piece },
                _ => Message::Unknown { msg_type: other },
            };
            let bytes = msg.to_vec();
            prop_assert_eq!(Message::decode(&bytes), Ok(msg));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::decode(&bytes);
        }
    }
}
