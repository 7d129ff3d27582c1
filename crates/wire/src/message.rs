//! Peer wire messages: BEP 3, the BEP 6 fast extension, BEP 10 `extended`.
//!
//! The enum is open-world: an id we do not know decodes to
//! [`Message::Unknown`], which the caller skips. Whether a message is allowed
//! in the current state (fast messages without the fast bit, a bitfield after
//! the first message) is the connection owner's decision, not the codec's.

use bytes::Bytes;

/// Message ids (the byte after the length prefix).
pub mod id {
    /// `choke`
    pub const CHOKE: u8 = 0;
    /// `unchoke`
    pub const UNCHOKE: u8 = 1;
    /// `interested`
    pub const INTERESTED: u8 = 2;
    /// `not interested`
    pub const NOT_INTERESTED: u8 = 3;
    /// `have`
    pub const HAVE: u8 = 4;
    /// `bitfield`
    pub const BITFIELD: u8 = 5;
    /// `request`
    pub const REQUEST: u8 = 6;
    /// `piece`
    pub const PIECE: u8 = 7;
    /// `cancel`
    pub const CANCEL: u8 = 8;
    /// `port` (BEP 5)
    pub const PORT: u8 = 9;
    /// `suggest piece` (BEP 6)
    pub const SUGGEST: u8 = 13;
    /// `have all` (BEP 6)
    pub const HAVE_ALL: u8 = 14;
    /// `have none` (BEP 6)
    pub const HAVE_NONE: u8 = 15;
    /// `reject request` (BEP 6)
    pub const REJECT: u8 = 16;
    /// `allowed fast` (BEP 6)
    pub const ALLOWED_FAST: u8 = 17;
    /// `extended` (BEP 10)
    pub const EXTENDED: u8 = 20;
}

/// The block a `request`, `cancel` or `reject request` names.
///
/// The values are the peer's: whether they lie inside the torrent is checked
/// by whoever knows the piece sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRequest {
    /// Piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// Length in bytes (16 KiB in practice).
    pub length: u32,
}

/// The payload of a `piece` message: one block of data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// The data; a zero-copy view into the receive buffer.
    pub data: Bytes,
}

impl Block {
    /// The request this block answers. `None` only if the data is longer
    /// than 4 GiB, which a decoded block never is.
    pub fn request(&self) -> Option<BlockRequest> {
        Some(BlockRequest {
            index: self.index,
            begin: self.begin,
            length: u32::try_from(self.data.len()).ok()?,
        })
    }
}

/// One peer wire message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A zero-length message that keeps the connection open.
    KeepAlive,
    /// We will not answer your requests.
    Choke,
    /// We will answer your requests.
    Unchoke,
    /// We want something you have.
    Interested,
    /// We want nothing you have.
    NotInterested,
    /// We now have this piece.
    Have(u32),
    /// Which pieces we have, high bit of the first byte = piece 0. The length
    /// is not checked against the piece count here (the codec does not know it).
    Bitfield(Bytes),
    /// Please send this block.
    Request(BlockRequest),
    /// A block of data.
    Piece(Block),
    /// Forget this earlier request.
    Cancel(BlockRequest),
    /// Our DHT node listens on this UDP port (BEP 5).
    Port(u16),
    /// You might like this piece (BEP 6).
    Suggest(u32),
    /// We have every piece (BEP 6); replaces the bitfield.
    HaveAll,
    /// We have no piece (BEP 6); replaces the bitfield.
    HaveNone,
    /// This request will not be served (BEP 6).
    Reject(BlockRequest),
    /// You may request this piece even while choked (BEP 6).
    AllowedFast(u32),
    /// A BEP 10 extension message. `id` 0 is the extension handshake
    /// ([`crate::ExtendedHandshake`]); other ids are the ones *the receiver*
    /// assigned in its handshake's `m` dictionary.
    Extended {
        /// Extended message id.
        id: u8,
        /// Everything after the extended id.
        payload: Bytes,
    },
    /// A message with an id we do not implement; its payload was skipped.
    /// Encoding one writes `len` zero bytes of payload (useful in tests).
    Unknown {
        /// The message id.
        id: u8,
        /// Payload length, excluding the id byte.
        len: u32,
    },
}

impl Message {
    /// The message id, or `None` for a keep-alive.
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => id::CHOKE,
            Message::Unchoke => id::UNCHOKE,
            Message::Interested => id::INTERESTED,
            Message::NotInterested => id::NOT_INTERESTED,
            Message::Have(_) => id::HAVE,
            Message::Bitfield(_) => id::BITFIELD,
            Message::Request(_) => id::REQUEST,
            Message::Piece(_) => id::PIECE,
            Message::Cancel(_) => id::CANCEL,
            Message::Port(_) => id::PORT,
            Message::Suggest(_) => id::SUGGEST,
            Message::HaveAll => id::HAVE_ALL,
            Message::HaveNone => id::HAVE_NONE,
            Message::Reject(_) => id::REJECT,
            Message::AllowedFast(_) => id::ALLOWED_FAST,
            Message::Extended { .. } => id::EXTENDED,
            Message::Unknown { id, .. } => *id,
        })
    }

    /// Whether this is one of the BEP 6 messages, which a peer may send only
    /// when both sides set the fast bit.
    pub fn is_fast_extension(&self) -> bool {
        matches!(
            self,
            Message::Suggest(_)
                | Message::HaveAll
                | Message::HaveNone
                | Message::Reject(_)
                | Message::AllowedFast(_)
        )
    }
}
