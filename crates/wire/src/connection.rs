//! A peer connection over a byte stream (TCP, or any [`ByteStream`]):
//! handshake, buffered decoding, batched writes.
//!
//! This is plain async IO around the sans-IO [`Decoder`] and [`encode`]; it
//! makes no protocol decisions. Reads go straight into a [`BytesMut`] that
//! the decoder splits messages off (piece data is not copied again); writes
//! are encoded into one buffer and flushed with as few syscalls as the
//! kernel allows, so a pipeline of requests is one `write`.
//!
//! Both [`ConnectionReader::recv`] and [`ConnectionWriter::flush`] are
//! cancel-safe: dropping the future (in `select!`, or under
//! `tokio::time::timeout`) loses no bytes, and calling again resumes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use lodestone_core::InfoHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{Decoder, MessageError, PIECE_HEADER_LEN, encode, encode_piece_header};
use crate::handshake::{
    HANDSHAKE_LEN, HANDSHAKE_PREFIX_LEN, Handshake, HandshakeError, HandshakePrefix,
};
use crate::message::Message;
use crate::read_pool;
use crate::transport::{ByteStream, ReadStream, WriteStream};

/// Free space the reader keeps in its buffer before each read: exactly two
/// `piece` frames of a 16 KiB block, the size every client requests. A
/// connection holds one such buffer while bytes arrive or a frame is half
/// read, and parks it with the thread's spares while it waits in `recv`
/// with nothing buffered ([`read_pool`]). About 32 KiB is a syscall per 32 µs at 1 GB/s
/// (256 KiB cost 23 MiB with 48 peers, for no measurable gain in CPU per
/// byte, and four frames measured the same as two).
///
/// Why whole frames: when a frame does not fit in what is left, the part
/// already read moves to the buffer's front. With 32 KiB, a full read held
/// one frame and most of the next, so about 40 % of all bytes were moved
/// once more. Sized to two frames, a full read of a stream of blocks ends
/// on a frame boundary and nothing moves: 3–5 % less CPU per GiB.
pub(crate) const READ_CHUNK: usize = 2 * (16 * 1024 + PIECE_HEADER_LEN);

/// A protocol violation by the peer: drop it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A bad handshake.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A bad message frame.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// An incoming peer asked for a torrent we do not serve.
    #[error("peer asked for unknown torrent {0}")]
    UnknownInfoHash(InfoHash),
}

/// Why a connection operation failed, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed (local or network trouble, or a reset by the peer).
    #[error("peer connection i/o")]
    Io(#[from] io::Error),
    /// Connecting or handshaking took longer than allowed.
    #[error("peer connection timed out")]
    Timeout,
    /// The peer closed the connection (possibly in the middle of a message).
    #[error("peer closed the connection")]
    Closed,
    /// The peer broke the protocol.
    #[error("peer broke the protocol")]
    Protocol(#[from] ProtocolError),
}

impl From<HandshakeError> for ConnectionError {
    fn from(e: HandshakeError) -> Self {
        ConnectionError::Protocol(e.into())
    }
}

impl From<MessageError> for ConnectionError {
    fn from(e: MessageError) -> Self {
        ConnectionError::Protocol(e.into())
    }
}

/// What happened on a stream before the BitTorrent handshake (an
/// encryption handshake, say) that the handshake must take into account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preamble {
    /// The peer's bytes read past the preamble: the start of its stream.
    pub received: Vec<u8>,
    /// Whether our handshake went out inside the preamble already.
    pub handshake_sent: bool,
}

/// A handshaken peer connection. Use [`Connection::into_split`] to read and
/// write from separate tasks or `select!` arms.
#[derive(Debug)]
pub struct Connection {
    reader: ConnectionReader,
    writer: ConnectionWriter,
}

impl Connection {
    /// Connects to `addr`, sends `ours` and reads the peer's handshake, all
    /// within `timeout`. Fails with [`HandshakeError::InfoHashMismatch`] if
    /// the peer answers for another torrent.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        ours: Handshake,
    ) -> Result<(Self, Handshake), ConnectionError> {
        with_timeout(timeout, async {
            let stream = TcpStream::connect(addr).await?;
            Self::initiate_inner(stream, ours, Preamble::default()).await
        })
        .await
    }

    /// Like [`Connection::connect`] over a stream already connected: a
    /// socket configured by the caller, or another transport.
    pub async fn initiate(
        stream: impl Into<ByteStream>,
        timeout: Duration,
        ours: Handshake,
    ) -> Result<(Self, Handshake), ConnectionError> {
        with_timeout(
            timeout,
            Self::initiate_inner(stream, ours, Preamble::default()),
        )
        .await
    }

    /// Like [`Connection::initiate`] after a preamble on the stream (an
    /// encryption handshake) that may have sent our handshake already and
    /// received bytes past its end.
    pub async fn initiate_after(
        stream: impl Into<ByteStream>,
        timeout: Duration,
        ours: Handshake,
        preamble: Preamble,
    ) -> Result<(Self, Handshake), ConnectionError> {
        with_timeout(timeout, Self::initiate_inner(stream, ours, preamble)).await
    }

    async fn initiate_inner(
        stream: impl Into<ByteStream>,
        ours: Handshake,
        preamble: Preamble,
    ) -> Result<(Self, Handshake), ConnectionError> {
        let mut conn = Self::new(stream.into())?;
        conn.reader.buf.extend_from_slice(&preamble.received);
        if !preamble.handshake_sent {
            conn.writer.write_raw(&ours.to_bytes()).await?;
        }
        let prefix = conn.reader.read_prefix().await?;
        prefix.check_info_hash(&ours.info_hash)?;
        let theirs = conn.reader.read_peer_id(prefix).await?;
        Ok((conn, theirs))
    }

    /// Answers an incoming connection for one torrent: reads the peer's
    /// handshake, refuses another infohash, replies with `ours`.
    pub async fn accept(
        stream: impl Into<ByteStream>,
        timeout: Duration,
        ours: Handshake,
    ) -> Result<(Self, Handshake), ConnectionError> {
        Self::accept_with(stream, timeout, |prefix| {
            (prefix.info_hash == ours.info_hash).then_some(ours)
        })
        .await
    }

    /// Answers an incoming connection for any of several torrents: once the
    /// first 48 bytes reveal the infohash, `route` returns the handshake to
    /// answer with, or `None` to refuse ([`ProtocolError::UnknownInfoHash`]).
    /// Our handshake is sent before the peer's id arrives, as some clients
    /// wait for it.
    pub async fn accept_with(
        stream: impl Into<ByteStream>,
        timeout: Duration,
        route: impl FnOnce(&HandshakePrefix) -> Option<Handshake>,
    ) -> Result<(Self, Handshake), ConnectionError> {
        Self::accept_after(stream, timeout, &[], route).await
    }

    /// Like [`Connection::accept_with`] when `received`, the start of the
    /// peer's stream, was read already (while telling an encrypted
    /// connection from a plaintext one, or by an encryption handshake).
    pub async fn accept_after(
        stream: impl Into<ByteStream>,
        timeout: Duration,
        received: &[u8],
        route: impl FnOnce(&HandshakePrefix) -> Option<Handshake>,
    ) -> Result<(Self, Handshake), ConnectionError> {
        with_timeout(timeout, async {
            let mut conn = Self::new(stream.into())?;
            conn.reader.buf.extend_from_slice(received);
            let prefix = conn.reader.read_prefix().await?;
            let ours = route(&prefix).ok_or(ProtocolError::UnknownInfoHash(prefix.info_hash))?;
            conn.writer.write_raw(&ours.to_bytes()).await?;
            let theirs = conn.reader.read_peer_id(prefix).await?;
            Ok((conn, theirs))
        })
        .await
    }

    fn new(stream: ByteStream) -> io::Result<Self> {
        let (read, write, peer) = stream.into_split()?;
        Ok(Self {
            reader: ConnectionReader {
                stream: read,
                peer,
                buf: read_pool::take(),
                parked: false,
                decoder: Decoder::new(),
            },
            writer: ConnectionWriter::new(write),
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.peer_addr()
    }

    /// Replaces the decoder, e.g. to bound `bitfield` by the piece count.
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.reader.set_decoder(decoder);
    }

    /// Receives the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Message, ConnectionError> {
        self.reader.recv().await
    }

    /// Sends one message now.
    pub async fn send(&mut self, message: &Message) -> Result<(), ConnectionError> {
        self.writer.send(message).await
    }

    /// Queues a message for the next [`Connection::flush`].
    pub fn feed(&mut self, message: &Message) {
        self.writer.feed(message);
    }

    /// Writes everything queued. Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        self.writer.flush().await
    }

    /// Sends several messages with as few writes as possible.
    pub async fn send_batch<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m Message>,
    ) -> Result<(), ConnectionError> {
        self.writer.send_batch(messages).await
    }

    /// Splits into halves that can be used concurrently.
    pub fn into_split(self) -> (ConnectionReader, ConnectionWriter) {
        (self.reader, self.writer)
    }

    /// Joins halves split by [`Connection::into_split`] again, so that a
    /// connection can change hands (metadata phase to download phase)
    /// without losing bytes already read or queued.
    pub fn unsplit(reader: ConnectionReader, writer: ConnectionWriter) -> Self {
        Self { reader, writer }
    }
}

async fn with_timeout<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, ConnectionError>>,
) -> Result<T, ConnectionError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ConnectionError::Timeout))
}

/// The receiving half of a [`Connection`].
#[derive(Debug)]
pub struct ConnectionReader {
    stream: ReadStream,
    peer: SocketAddr,
    buf: BytesMut,
    /// `buf` is parked with the thread's spares (see [`read_pool`]) while
    /// the reader waits with nothing buffered.
    parked: bool,
    decoder: Decoder,
}

impl ConnectionReader {
    /// Receives the next message.
    ///
    /// Cancel-safe: bytes already read stay in the buffer, so wrapping this
    /// in `tokio::time::timeout` or `select!` loses nothing.
    pub async fn recv(&mut self) -> Result<Message, ConnectionError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buf)? {
                return Ok(message);
            }
            // The decoder has checked any visible length prefix against its
            // limits, so this reservation is bounded.
            let frame = Decoder::frame_len(&self.buf).unwrap_or(0);
            self.fill(frame).await?;
        }
    }

    /// Returns a message already buffered, without reading the socket.
    ///
    /// Lets a peer task handle everything that arrived in one read (say, a
    /// run of requests) before flushing its answers in one write.
    pub fn try_recv(&mut self) -> Result<Option<Message>, ConnectionError> {
        Ok(self.decoder.decode(&mut self.buf)?)
    }

    /// Replaces the decoder, e.g. to bound `bitfield` by the piece count.
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    /// The decoder in use.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    /// Reads once, making room for at least `want` buffered bytes.
    async fn fill(&mut self, want: usize) -> Result<(), ConnectionError> {
        if std::future::poll_fn(|cx| self.poll_fill(cx, want)).await? == 0 {
            return Err(ConnectionError::Closed);
        }
        Ok(())
    }

    /// One attempt at [`Self::fill`]'s read. A reader about to wait with
    /// nothing buffered parks its buffer with the thread's spares, and
    /// takes one back when it is woken, so a quiet connection holds no
    /// read buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.parked {
            self.buf = read_pool::take();
            self.parked = false;
        }
        let held = self.buf.len();
        let needed = want.saturating_sub(held);
        if self.buf.capacity() - held < needed.max(READ_CHUNK / 4) {
            // Room for the rest of the frame in a buffer of READ_CHUNK in
            // all, not READ_CHUNK on top of what is held: asking for more
            // than the buffer's size makes `BytesMut` double it rather than
            // move the held bytes to its front, and every connection's
            // buffer grew to 64 KiB.
            self.buf
                .reserve(needed.max(READ_CHUNK.saturating_sub(held)));
        }
        let read = pin!(self.stream.read_buf(&mut self.buf)).poll(cx);
        if read.is_pending() && self.buf.is_empty() {
            read_pool::park(std::mem::take(&mut self.buf));
            self.parked = true;
        }
        read
    }

    /// Reads until the first 48 handshake bytes are buffered; refuses a
    /// wrong protocol header as soon as it shows.
    async fn read_prefix(&mut self) -> Result<HandshakePrefix, ConnectionError> {
        loop {
            match HandshakePrefix::decode(&self.buf) {
                Err(HandshakeError::Truncated { .. }) => self.fill(HANDSHAKE_PREFIX_LEN).await?,
                other => return Ok(other?),
            }
        }
    }

    /// Reads the peer id after a prefix and consumes the whole handshake;
    /// bytes after it stay buffered for [`ConnectionReader::recv`].
    async fn read_peer_id(
        &mut self,
        prefix: HandshakePrefix,
    ) -> Result<Handshake, ConnectionError> {
        while self.buf.len() < HANDSHAKE_LEN {
            self.fill(HANDSHAKE_LEN).await?;
        }
        let handshake = prefix.complete(&self.buf[HANDSHAKE_PREFIX_LEN..])?;
        let _ = self.buf.split_to(HANDSHAKE_LEN);
        Ok(handshake)
    }
}

/// Blocks at least this long are written from their own buffer with a
/// vectored write instead of being copied into the send buffer.
const ZERO_COPY_MIN: usize = 1024;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// The sending half of a [`Connection`].
///
/// Messages are encoded into one buffer; `piece` data is not copied but
/// queued as its own [`Bytes`] segment, and [`ConnectionWriter::flush`]
/// hands all segments to the kernel in vectored writes.
#[derive(Debug)]
pub struct ConnectionWriter {
    stream: WriteStream,
    /// Encoded messages not yet moved to `queue`.
    buf: BytesMut,
    /// Segments to write, in order: runs of `buf` and block payloads.
    queue: VecDeque<Bytes>,
    /// Bytes went to the stream since its last completed flush: a buffering
    /// stream (an encrypting one) may still hold some of them.
    unflushed: bool,
}

impl ConnectionWriter {
    fn new(stream: WriteStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            queue: VecDeque::new(),
            unflushed: false,
        }
    }

    /// Whether [`ConnectionWriter::flush`] has work: bytes queued here, or
    /// written to the stream and not yet flushed through it. A flush
    /// cancelled while the stream flushed leaves only the second kind.
    pub fn needs_flush(&self) -> bool {
        self.unflushed || !self.buf.is_empty() || !self.queue.is_empty()
    }

    /// Queues a message for the next [`ConnectionWriter::flush`].
    pub fn feed(&mut self, message: &Message) {
        match message {
            Message::Piece(block) if block.data.len() >= ZERO_COPY_MIN => {
                encode_piece_header(block.index, block.begin, block.data.len(), &mut self.buf);
                self.queue.push_back(self.buf.split().freeze());
                self.queue.push_back(block.data.clone());
            }
            _ => encode(message, &mut self.buf),
        }
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.queue.iter().map(Bytes::len).sum::<usize>()
    }

    /// Writes everything queued.
    ///
    /// Cancel-safe: written bytes are removed as they go, so a second call
    /// continues where the first stopped.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.buf.is_empty() {
            self.queue.push_back(self.buf.split().freeze());
        }
        while !self.queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_IOVECS)
                .map(|segment| IoSlice::new(segment))
                .collect();
            let mut written = self.stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            self.unflushed = true;
            while let Some(front) = self.queue.front_mut() {
                if written < front.len() {
                    front.advance(written);
                    break;
                }
                written -= front.len();
                self.queue.pop_front();
            }
        }
        // A no-op on TCP; a buffering stream (an encrypting one) sends its
        // last bytes here.
        self.stream.flush().await?;
        self.unflushed = false;
        Ok(())
    }

    /// Sends one message now.
    pub async fn send(&mut self, message: &Message) -> Result<(), ConnectionError> {
        self.feed(message);
        self.flush().await
    }

    /// Sends several messages with as few writes as possible.
    pub async fn send_batch<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m Message>,
    ) -> Result<(), ConnectionError> {
        for message in messages {
            self.feed(message);
        }
        self.flush().await
    }

    /// Flushes, then closes our direction of the stream.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.buf.extend_from_slice(bytes);
        self.flush().await
    }
}

#[cfg(test)]
mod tests;
