//! The BitTorrent peer wire protocol: handshake, messages, framing, BEP 10
//! extension handshake, and a small async connection around a TCP stream.
//!
//! # Layers
//!
//! * [`handshake`]: the 68-byte handshake, decodable in two steps so an
//!   acceptor can route a connection by infohash before the peer id arrives.
//! * [`message`] and [`codec`]: every BEP 3 message, the BEP 6 fast
//!   messages and BEP 10 `extended`, with a sans-IO [`Decoder`] over a
//!   [`bytes::BytesMut`] and an [`encode`] function. Unknown ids decode to
//!   [`Message::Unknown`] and are skipped, not fatal.
//! * [`extension`]: the BEP 10 extension handshake dictionary.
//! * [`pex`]: the BEP 11 peer exchange message and its per-peer caps.
//! * [`holepunch`]: the BEP 55 holepunch message and its per-peer bound.
//! * [`established`]: a handshaken connection changing hands (dialer →
//!   metadata fetch → download) with the messages already received.
//! * [`transport`]: the byte streams a connection runs over (TCP, or any
//!   boxed stream: the seam for uTP and encryption).
//! * [`connection`]: plain async code over a [`ByteStream`] that
//!   reads into a buffer, decodes, batches writes, and splits into reader and
//!   writer halves. All decisions (what to request, whom to choke) belong to
//!   the caller.
//!
//! # Maximum message length
//!
//! The decoder refuses a length prefix above its limit as soon as the four
//! prefix bytes (plus the id byte, which selects the limit) are visible, so
//! hostile lengths never allocate. The default limit is 32 KiB
//! ([`codec::DEFAULT_MAX_LEN`]): the largest legitimate messages we receive
//! are a `piece` with a 16 KiB block (16 KiB + 13 bytes, and we never request
//! more) and a ut_metadata `data` message (a 16 KiB metadata piece plus a
//! bencoded header of some tens of bytes, which 16 KiB + 13 would refuse).
//! `bitfield` is the one message that grows with the torrent, so it has its
//! own limit: 256 KiB + 1 by default (2^21 pieces, libtorrent's cap), and
//! exactly `1 + ceil(pieces / 8)` once the caller knows the piece count
//! ([`Decoder::with_piece_count`]).
//!
//! # Speed
//!
//! Bytes are read from the socket straight into the connection's
//! `BytesMut`; `piece` payloads are split off it and frozen into
//! [`bytes::Bytes`] without a copy, so a block is copied once (kernel to
//! buffer) before it reaches storage. Writes are encoded into one buffer
//! and flushed together, so a pipeline of requests costs one syscall; blocks
//! we upload are not copied into that buffer but written from their own
//! [`bytes::Bytes`] by vectored writes.
//!
//! # Errors
//!
//! [`HandshakeError`] and [`MessageError`] are always the peer's fault;
//! [`ConnectionError`] separates them ([`ConnectionError::Protocol`]) from
//! local or network failures ([`ConnectionError::Io`]), timeouts and a clean
//! close by the peer.

pub mod codec;
pub mod connection;
pub mod established;
pub mod extension;
pub mod handshake;
pub mod holepunch;
pub mod message;
pub mod pex;
mod read_pool;
pub mod transport;

pub use codec::{Decoder, MessageError, encode, encode_piece_header, encoded_len};
pub use connection::{
    Connection, ConnectionError, ConnectionReader, ConnectionWriter, Preamble, ProtocolError,
};
pub use established::{Established, ExitKind, MAX_EARLY_MESSAGES, PeerExit};
pub use extension::{
    ExtendedHandshake, ExtensionError, ListenReport, OUR_UT_HOLEPUNCH_ID, OUR_UT_METADATA_ID,
    OUR_UT_PEX_ID, our_extensions,
};
pub use handshake::{Handshake, HandshakeError, HandshakePrefix, Reserved};
pub use message::{Block, BlockRequest, Message};
pub use transport::{ByteStream, PeerStream};
