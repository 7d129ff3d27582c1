//! Sans-IO framing: 4-byte big-endian length prefix, id byte, payload.
//!
//! [`Decoder::decode`] takes whatever bytes have arrived in a [`BytesMut`]
//! and returns one message, `Ok(None)` when more bytes are needed, or an
//! error that is always the peer's fault. Lengths are checked against the
//! limits as soon as the 4-byte prefix (and then the id byte) is visible, so
//! a hostile prefix never makes anyone wait for, or buffer, the body it
//! announces. Fixed-size messages must have exactly their size.
//!
//! `piece`, `bitfield` and `extended` payloads are split off the receive
//! buffer and frozen: the bytes read from the socket are never copied again.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::{Block, BlockRequest, Message, id};

/// Default limit on a message's length (the prefix value: id byte plus
/// payload), for every message except `bitfield`: 32 KiB.
///
/// The largest message a well-behaved peer sends us is either a `piece`
/// carrying a 16 KiB block (16 397 bytes: we only request 16 KiB) or a
/// ut_metadata `data` message carrying a 16 KiB metadata piece after its
/// bencoded header (about 16 450 bytes). Exactly 16 KiB + 13 would refuse
/// the latter, so the limit leaves room for any extension header while
/// bounding a connection's buffer at a trivial cost.
pub const DEFAULT_MAX_LEN: u32 = 32 * 1024;

/// Default limit on a `bitfield` message's length: one id byte plus one bit
/// per piece for 2^21 pieces (libtorrent's default cap on piece count),
/// 256 KiB + 1. Before the metadata is known nothing tighter is possible;
/// afterwards use [`Decoder::with_piece_count`].
pub const DEFAULT_MAX_BITFIELD_LEN: u32 = 1 + (1 << 21) / 8;

/// Why a message was refused. Every variant is the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The length prefix exceeds the limit; reported before the body is read.
    #[error("message length {len} exceeds the limit of {max} (id {id:?})")]
    TooLong {
        /// The message id, if it had arrived.
        id: Option<u8>,
        /// The length prefix.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A length that a message with this id cannot have.
    #[error("malformed length {len} for message id {id}")]
    BadLength {
        /// The message id.
        id: u8,
        /// The length prefix.
        len: u32,
    },
}

/// Splits a byte stream into [`Message`]s under length limits.
///
/// Stateless apart from its limits: all progress lives in the caller's
/// buffer, so any chunking of the same bytes gives the same messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    max_len: u32,
    max_bitfield_len: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with [`DEFAULT_MAX_LEN`] and [`DEFAULT_MAX_BITFIELD_LEN`].
    pub const fn new() -> Self {
        Self {
            max_len: DEFAULT_MAX_LEN,
            max_bitfield_len: DEFAULT_MAX_BITFIELD_LEN,
        }
    }

    /// Sets the limit for every message but `bitfield`.
    pub const fn with_max_len(mut self, max_len: u32) -> Self {
        self.max_len = max_len;
        self
    }

    /// Sets the limit for `bitfield` messages.
    pub const fn with_max_bitfield_len(mut self, max_len: u32) -> Self {
        self.max_bitfield_len = max_len;
        self
    }

    /// Bounds `bitfield` to exactly what a torrent of `pieces` pieces needs.
    pub const fn with_piece_count(self, pieces: u32) -> Self {
        self.with_max_bitfield_len(1 + pieces.div_ceil(8))
    }

    /// The limit for every message but `bitfield`.
    pub const fn max_len(&self) -> u32 {
        self.max_len
    }

    /// The limit for `bitfield` messages.
    pub const fn max_bitfield_len(&self) -> u32 {
        self.max_bitfield_len
    }

    /// Total bytes (prefix included) of the frame at the start of `buf`, once
    /// its prefix has arrived. Lets a reader reserve the whole frame at once.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let prefix = buf.first_chunk::<4>()?;
        Some(4 + u32::from_be_bytes(*prefix) as usize)
    }

    /// Decodes one message from the front of `buf`, consuming its bytes.
    ///
    /// `Ok(None)`: the message is incomplete and `buf` is untouched. On error
    /// `buf` is untouched too, but the stream cannot be resynchronised: drop
    /// the peer.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, MessageError> {
        let Some(prefix) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            buf.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        // Checked before looking at the id byte, so that the error does not
        // depend on whether the id has arrived yet.
        let max = self.max_len.max(self.max_bitfield_len);
        if len > max {
            return Err(MessageError::TooLong { id: None, len, max });
        }
        let Some(&msg_id) = buf.get(4) else {
            return Ok(None);
        };
        self.check_len(msg_id, len)?;
        let total = 4 + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(match msg_id {
            id::BITFIELD => Message::Bitfield(take_payload(buf, len)),
            id::PIECE => {
                let mut payload = take_payload(buf, len);
                let index = payload.get_u32();
                let begin = payload.get_u32();
                Message::Piece(Block {
                    index,
                    begin,
                    data: payload,
                })
            }
            id::EXTENDED => {
                let mut payload = take_payload(buf, len);
                let ext_id = payload.get_u8();
                Message::Extended {
                    id: ext_id,
                    payload,
                }
            }
            _ => {
                let message = decode_small(msg_id, len, &buf[5..total]);
                buf.advance(total);
                message
            }
        }))
    }

    /// Refuses a length that cannot be right for `msg_id`.
    fn check_len(&self, msg_id: u8, len: u32) -> Result<(), MessageError> {
        let bad = || MessageError::BadLength { id: msg_id, len };
        let too_long = |max| MessageError::TooLong {
            id: Some(msg_id),
            len,
            max,
        };
        let exact = match msg_id {
            id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => 1,
            id::HAVE_ALL | id::HAVE_NONE => 1,
            id::HAVE | id::SUGGEST | id::ALLOWED_FAST => 5,
            id::REQUEST | id::CANCEL | id::REJECT => 13,
            id::PORT => 3,
            id::BITFIELD if len > self.max_bitfield_len => {
                return Err(too_long(self.max_bitfield_len));
            }
            id::BITFIELD => return Ok(()),
            _ if len > self.max_len => return Err(too_long(self.max_len)),
            id::PIECE if len < 9 => return Err(bad()),
            id::EXTENDED if len < 2 => return Err(bad()),
            _ => return Ok(()),
        };
        if len == exact { Ok(()) } else { Err(bad()) }
    }
}

/// Splits the payload (after prefix and id) of a complete frame off `buf`
/// without copying it.
fn take_payload(buf: &mut BytesMut, len: u32) -> Bytes {
    buf.advance(5);
    buf.split_to(len as usize - 1).freeze()
}

/// Decodes a message whose payload is small and fixed (already length-checked)
/// or unknown and skipped.
fn decode_small(msg_id: u8, len: u32, mut payload: &[u8]) -> Message {
    match msg_id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::HAVE => Message::Have(payload.get_u32()),
        id::SUGGEST => Message::Suggest(payload.get_u32()),
        id::ALLOWED_FAST => Message::AllowedFast(payload.get_u32()),
        id::PORT => Message::Port(payload.get_u16()),
        id::REQUEST => Message::Request(block_request(&mut payload)),
        id::CANCEL => Message::Cancel(block_request(&mut payload)),
        id::REJECT => Message::Reject(block_request(&mut payload)),
        _ => Message::Unknown {
            id: msg_id,
            len: len - 1,
        },
    }
}

fn block_request(payload: &mut &[u8]) -> BlockRequest {
    BlockRequest {
        index: payload.get_u32(),
        begin: payload.get_u32(),
        length: payload.get_u32(),
    }
}

/// Bytes `message` takes on the wire, length prefix included.
pub fn encoded_len(message: &Message) -> usize {
    4 + match message {
        Message::KeepAlive => 0,
        Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested
        | Message::HaveAll
        | Message::HaveNone => 1,
        Message::Have(_) | Message::Suggest(_) | Message::AllowedFast(_) => 5,
        Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
        Message::Port(_) => 3,
        Message::Bitfield(bits) => 1 + bits.len(),
        Message::Piece(block) => 9 + block.data.len(),
        Message::Extended { payload, .. } => 2 + payload.len(),
        Message::Unknown { len, .. } => 1 + *len as usize,
    }
}

/// Bytes of a `piece` message before its block: length prefix, id, index,
/// begin.
pub const PIECE_HEADER_LEN: usize = 13;

/// Appends the first [`PIECE_HEADER_LEN`] bytes of a `piece` message
/// (length prefix, id, index, begin) for a block of `data_len` bytes, so
/// that a writer can send the block's data from where it already is,
/// without copying it.
pub fn encode_piece_header(index: u32, begin: u32, data_len: usize, out: &mut BytesMut) {
    out.reserve(PIECE_HEADER_LEN);
    // Invariant: blocks are at most a few KiB (see `encode`).
    out.put_u32(9 + data_len as u32);
    out.put_u8(id::PIECE);
    out.put_u32(index);
    out.put_u32(begin);
}

/// Appends `message` to `out`, length prefix included.
///
/// Payloads are ours (at most a block or a metadata piece), far below the
/// 4 GiB a length prefix can express.
pub fn encode(message: &Message, out: &mut BytesMut) {
    let total = encoded_len(message);
    out.reserve(total);
    if let Message::Piece(block) = message {
        encode_piece_header(block.index, block.begin, block.data.len(), out);
        out.put_slice(&block.data);
        return;
    }
    // Invariant: our payloads are small (see above), so this fits in u32.
    out.put_u32((total - 4) as u32);
    let Some(msg_id) = message.id() else {
        return;
    };
    out.put_u8(msg_id);
    match message {
        Message::KeepAlive
        | Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested
        | Message::HaveAll
        | Message::HaveNone => {}
        Message::Have(index) | Message::Suggest(index) | Message::AllowedFast(index) => {
            out.put_u32(*index);
        }
        Message::Request(r) | Message::Cancel(r) | Message::Reject(r) => {
            out.put_u32(r.index);
            out.put_u32(r.begin);
            out.put_u32(r.length);
        }
        Message::Port(port) => out.put_u16(*port),
        Message::Bitfield(bits) => out.put_slice(bits),
        Message::Piece(_) => {} // written above
        Message::Extended { id, payload } => {
            out.put_u8(*id);
            out.put_slice(payload);
        }
        Message::Unknown { len, .. } => out.put_bytes(0, *len as usize),
    }
}

#[cfg(test)]
mod tests;
