//! Message stream encryption (MSE/PE) at the transport seam: the policy,
//! and the encrypted handshakes that run before the BitTorrent one on
//! outgoing and incoming connections.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use lodestone_core::InfoHash;
use lodestone_mse::io::StreamError;
use lodestone_mse::{Crypto, Entropy, Methods, Rc4Stream};
use lodestone_utp::net::UtpStream;
use lodestone_wire::handshake::PROTOCOL;
use lodestone_wire::{ByteStream, Handshake, Preamble};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// Whether peer connections are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Encrypt when the peer can, else plaintext: outgoing connections try
    /// MSE first and fall back to plaintext (an address remembers what
    /// worked); incoming ones may be either, and RC4 is chosen when offered.
    #[default]
    Prefer,
    /// Only RC4-encrypted connections, both ways: not one plaintext byte of
    /// the BitTorrent protocol is sent.
    Require,
    /// Only plaintext connections: MSE is neither sent nor answered.
    Off,
}

impl Encryption {
    /// The methods we offer or accept in an MSE handshake.
    pub(crate) fn methods(self) -> Methods {
        match self {
            Encryption::Require => Methods::RC4,
            Encryption::Prefer | Encryption::Off => Methods::BOTH,
        }
    }
}

impl FromStr for Encryption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "off" => Ok(Encryption::Off),
            _ => Err(format!(
                "unknown encryption policy {s:?}: prefer, require or off"
            )),
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        })
    }
}

/// A freshly connected transport (TCP or uTP) that the handshakes run
/// over before the BitTorrent protocol takes it.
pub(crate) trait RawStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream to run the BitTorrent protocol over in plaintext.
    fn into_plain(self, addr: SocketAddr) -> ByteStream;

    /// Tunes the transport for small, latency-bound requests once the
    /// handshake is done.
    fn tune(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RawStream for TcpStream {
    fn into_plain(self, _: SocketAddr) -> ByteStream {
        ByteStream::Tcp(self)
    }

    fn tune(&self) -> std::io::Result<()> {
        self.set_nodelay(true)
    }
}

impl RawStream for UtpStream {
    fn into_plain(self, addr: SocketAddr) -> ByteStream {
        ByteStream::Other(Box::new(self), addr)
    }
}

/// The stream to run the BitTorrent protocol over after an MSE handshake:
/// the transport itself for plaintext, an RC4 wrapper otherwise.
fn wrap<S: RawStream>(stream: S, addr: SocketAddr, crypto: Crypto) -> ByteStream {
    match crypto {
        Crypto::Plaintext => stream.into_plain(addr),
        Crypto::Rc4(cipher) => ByteStream::Other(Box::new(Rc4Stream::new(stream, *cipher)), addr),
    }
}

/// Runs the initiator's MSE handshake on a fresh connection, with our
/// BitTorrent handshake as its initial payload.
pub(crate) async fn initiate<S: RawStream>(
    mut stream: S,
    addr: SocketAddr,
    ours: Handshake,
    methods: Methods,
) -> Result<(ByteStream, Preamble), StreamError> {
    let outcome = lodestone_mse::io::initiate(
        &mut stream,
        ours.info_hash,
        methods,
        &ours.to_bytes(),
        &Entropy::random(),
    )
    .await?;
    stream.tune()?;
    let preamble = Preamble {
        received: outcome.received,
        handshake_sent: true,
    };
    Ok((wrap(stream, addr, outcome.crypto), preamble))
}

/// What the first bytes of an incoming connection are.
pub(crate) enum Opening {
    /// A plaintext BitTorrent handshake, of which these bytes were read.
    Plaintext(Vec<u8>),
    /// Anything else: an MSE handshake, of which these bytes were read.
    Encrypted(Vec<u8>),
}

/// Reads just enough of an incoming connection to tell a plaintext
/// handshake (`\x13BitTorrent protocol`) from an encrypted one: at most
/// 20 bytes, fewer when a byte already differs. `None` if the peer closed.
pub(crate) async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<Opening>> {
    let mut read = Vec::with_capacity(PROTOCOL.len());
    let mut buf = [0u8; 20];
    while read.len() < PROTOCOL.len() {
        let want = PROTOCOL.len() - read.len();
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        read.extend_from_slice(&buf[..n]);
        if read.iter().zip(PROTOCOL.iter()).any(|(a, b)| a != b) {
            return Ok(Some(Opening::Encrypted(read)));
        }
    }
    Ok(Some(Opening::Plaintext(read)))
}

/// Answers an incoming MSE handshake whose first bytes are `already`,
/// finding the torrent with `lookup` (from `HASH('req2', infohash)`).
/// Returns the torrent, the stream to continue on and the peer's bytes
/// past the handshake (its BitTorrent handshake first).
pub(crate) async fn respond<S: RawStream>(
    mut stream: S,
    addr: SocketAddr,
    already: &[u8],
    methods: Methods,
    lookup: impl FnMut(&[u8; 20]) -> Option<InfoHash>,
) -> Result<(InfoHash, ByteStream, Vec<u8>), StreamError> {
    let outcome =
        lodestone_mse::io::respond(&mut stream, already, methods, lookup, &Entropy::random())
            .await?;
    stream.tune()?;
    let info_hash = outcome.info_hash;
    Ok((
        info_hash,
        wrap(stream, addr, outcome.crypto),
        outcome.received,
    ))
}
