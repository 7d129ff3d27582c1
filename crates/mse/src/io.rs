//! Async drivers: run a handshake state machine over a byte stream.
//!
//! Reads are at most [`READ_CHUNK`] bytes, so a peer cannot make the
//! handshake buffer more than the state machine's own bounds plus one read.

use std::io;

use lodestone_core::InfoHash;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::{Entropy, Methods, MseError, Outcome};
use crate::{Initiator, Responder, Side};

/// Bytes read at once during the handshake.
pub const READ_CHUNK: usize = 4096;

/// Why a handshake over a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The socket failed.
    #[error("i/o during the encryption handshake")]
    Io(#[from] io::Error),
    /// The peer closed the connection before the handshake ended (a peer
    /// that does not speak MSE often does this).
    #[error("peer closed the connection during the encryption handshake")]
    Closed,
    /// The peer closed the connection after the key exchange, and the
    /// shared secret begins with a zero byte. libtorrent 2.0 (through
    /// 2.0.11), as the responder, hashes such a secret wrongly when it
    /// looks up the torrent (without the zero, with a stale byte after it),
    /// so it finds none and hangs up; a new connection with fresh keys
    /// gets past it 255 times in 256. As the initiator it hashes right.
    #[error(
        "peer closed the connection during the encryption handshake \
         (the shared secret began with a zero byte, which libtorrent 2.0 misreads)"
    )]
    ClosedOnZeroLedSecret,
    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] MseError),
}

/// Feeds `machine` from `stream` and sends its output until it finishes.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut machine: impl Side,
    first: &[u8],
) -> Result<Outcome, StreamError> {
    let mut outcome = machine.handle_input(first)?;
    let mut buf = [0u8; READ_CHUNK];
    loop {
        if let Some(bytes) = machine.poll_transmit() {
            stream.write_all(&bytes).await?;
            stream.flush().await?;
        }
        if let Some(outcome) = outcome {
            return Ok(outcome);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(if machine.secret_starts_with_zero() {
                StreamError::ClosedOnZeroLedSecret
            } else {
                StreamError::Closed
            });
        }
        outcome = machine.handle_input(&buf[..n])?;
    }
}

/// Runs the initiator's side over `stream` (see [`Initiator::new`]).
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    info_hash: InfoHash,
    provide: Methods,
    initial_payload: &[u8],
    entropy: &Entropy,
) -> Result<Outcome, StreamError> {
    let machine = Initiator::new(info_hash, provide, initial_payload, entropy);
    run(stream, machine, &[]).await
}

/// Runs the responder's side over `stream`, starting with `already`, bytes
/// the caller read while telling MSE from a plaintext handshake.
pub async fn respond<S, L>(
    stream: &mut S,
    already: &[u8],
    allowed: Methods,
    lookup: L,
    entropy: &Entropy,
) -> Result<Outcome, StreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    L: FnMut(&[u8; 20]) -> Option<InfoHash>,
{
    run(stream, Responder::new(allowed, lookup, entropy), already).await
}
