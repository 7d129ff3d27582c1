//! The byte streams a [`crate::Connection`] runs over.
//!
//! TCP is the common case and keeps tokio's lock-free owned halves; any
//! other stream (a uTP connection, an encrypting wrapper, an in-memory pipe
//! in a test) is boxed and split with [`tokio::io::split`]. The enum keeps
//! the TCP path free of dynamic dispatch.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Any ordered, reliable byte stream a peer connection can run over.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerStream for T {}

/// A connected byte stream and the peer it reaches.
pub enum ByteStream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// Another transport or wrapping, with the peer's address.
    Other(Box<dyn PeerStream>, SocketAddr),
}

impl From<TcpStream> for ByteStream {
    fn from(stream: TcpStream) -> Self {
        ByteStream::Tcp(stream)
    }
}

impl ByteStream {
    /// Splits into halves for concurrent reading and writing, with the
    /// peer's address.
    pub(crate) fn into_split(self) -> io::Result<(ReadStream, WriteStream, SocketAddr)> {
        match self {
            ByteStream::Tcp(stream) => {
                // Requests are small and latency-bound; we batch writes ourselves.
                stream.set_nodelay(true)?;
                let addr = stream.peer_addr()?;
                let (read, write) = stream.into_split();
                Ok((ReadStream::Tcp(read), WriteStream::Tcp(write), addr))
            }
            ByteStream::Other(stream, addr) => {
                let (read, write) = tokio::io::split(stream);
                Ok((ReadStream::Other(read), WriteStream::Other(write), addr))
            }
        }
    }
}

/// The reading half of a [`ByteStream`].
pub(crate) enum ReadStream {
    Tcp(OwnedReadHalf),
    Other(ReadHalf<Box<dyn PeerStream>>),
}

/// The writing half of a [`ByteStream`].
pub(crate) enum WriteStream {
    Tcp(OwnedWriteHalf),
    Other(WriteHalf<Box<dyn PeerStream>>),
}

impl std::fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadStream::Tcp(_) => "ReadStream::Tcp",
            ReadStream::Other(_) => "ReadStream::Other",
        })
    }
}

impl std::fmt::Debug for WriteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteStream::Tcp(_) => "WriteStream::Tcp",
            WriteStream::Other(_) => "WriteStream::Other",
        })
    }
}

impl AsyncRead for ReadStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadStream::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteStream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteStream::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteStream::Tcp(s) => s.is_write_vectored(),
            WriteStream::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteStream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteStream::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
