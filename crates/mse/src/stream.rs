//! [`Rc4Stream`]: a byte stream that RC4-encrypts what is written and
//! decrypts what is read, for connections whose handshake selected RC4.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rc4::StreamCipher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::crypto::Cipher;

/// Most encrypted bytes held before a write waits for the inner stream:
/// enough for a batch of blocks in one system call.
const MAX_PENDING: usize = 256 * 1024;

/// A stream that encrypts on write and decrypts on read.
///
/// Writes are encrypted into an internal buffer and pushed to the inner
/// stream as it accepts them, so a caller must `flush` to be sure the last
/// bytes left (as with any buffered writer).
pub struct Rc4Stream<S> {
    inner: S,
    cipher: Cipher,
    /// Encrypted bytes not yet taken by `inner`, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> Rc4Stream<S> {
    /// Wraps `inner` with the keystreams of a finished handshake.
    pub fn new(inner: S, cipher: Cipher) -> Self {
        Self {
            inner,
            cipher,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Rc4Stream<S> {
    /// Writes pending ciphertext until none is left or `inner` would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Drops the ciphertext `inner` has taken once it is at least
    /// [`MAX_PENDING`]. `pending` is emptied only when everything in it was
    /// sent, and a peer that reads slowly but steadily keeps some of it
    /// always unsent: without this, every byte uploaded to it stayed here.
    /// Waiting for a full `MAX_PENDING` first moves at most one byte per
    /// byte sent, and holds `pending` under twice `MAX_PENDING`.
    fn forget_sent(&mut self) {
        if self.sent >= MAX_PENDING {
            self.pending.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Encrypts as much of `bufs` as fits the pending buffer; returns the
    /// plaintext bytes taken.
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() - self.sent >= MAX_PENDING {
            ready!(self.poll_drain(cx))?;
        }
        self.forget_sent();
        let mut taken = 0;
        for buf in bufs {
            let room = MAX_PENDING.saturating_sub(self.pending.len() - self.sent);
            if room == 0 {
                break;
            }
            let part = &buf[..buf.len().min(room)];
            let start = self.pending.len();
            self.pending.extend_from_slice(part);
            self.cipher
                .encrypt
                .apply_keystream(&mut self.pending[start..]);
            taken += part.len();
        }
        // Start sending now; what `inner` does not take yet waits for the
        // next write or flush (the waker is registered either way).
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rc4Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.cipher
            .decrypt
            .apply_keystream(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rc4Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_accept(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_accept(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_core::InfoHash;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_encrypted_and_come_out_plain() {
        let secret = [5u8; crate::dh::KEY_LEN];
        let skey = InfoHash::new([3; 20]);
        let (a, b) = tokio::io::duplex(1024);
        let mut a = Rc4Stream::new(a, Cipher::initiator(&secret, &skey));
        let mut b = Rc4Stream::new(b, Cipher::responder(&secret, &skey));
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = message.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.expect("write");
            a.flush().await.expect("flush");
            a
        });
        let mut got = vec![0u8; message.len()];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(got, message);
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn a_reader_that_never_catches_up_does_not_grow_the_buffer() {
        let secret = [5u8; crate::dh::KEY_LEN];
        let skey = InfoHash::new([3; 20]);
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut a = Rc4Stream::new(a, Cipher::initiator(&secret, &skey));
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while b.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        // Writes without a flush, as the peer task does between batches:
        // the reader drains the pipe, but never all that is pending.
        let chunk = vec![0u8; 64 * 1024];
        let mut most = 0;
        for _ in 0..128 {
            a.write_all(&chunk).await.expect("write");
            most = most.max(a.pending.len());
        }
        assert!(most <= 2 * MAX_PENDING, "held {most} bytes after 8 MiB");
        a.shutdown().await.expect("shutdown");
        drop(a);
        reader.await.expect("reader");
    }
}
