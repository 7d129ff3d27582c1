//! The session's TCP listen sockets (IPv4 and IPv6 on one port), incoming
//! uTP connections, and the routing of both to torrents by infohash.
//!
//! An acceptor tells a plaintext handshake from an MSE/PE encrypted one
//! by its first bytes (the encrypted one finds its torrent by trying each
//! infohash of the [`Router`] against the hash the peer sent), then reads
//! the first 48 bytes of the peer's handshake, looks the infohash up in
//! the [`Router`] (a concurrent map the session writes when
//! torrents are added or removed), answers with that torrent's handshake
//! and hands the connection to the torrent's task. Unknown infohashes are
//! refused before we say anything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use lodestone_core::{ErrorChain, InfoHash};
use lodestone_mse::io::StreamError;
use lodestone_utp::net::UtpStream;
use lodestone_wire::{ByteStream, Connection, ConnectionError, Established, Handshake};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::encryption::{self, Encryption, Opening, RawStream};
use crate::pending_handshakes::PendingHandshakes;

/// Ports tried after the one asked for before letting the OS choose.
const PORT_ATTEMPTS: u16 = 10;

/// Where incoming connections for one torrent go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Our handshake for that torrent.
    pub(crate) handshake: Handshake,
    /// The torrent task's inbox.
    pub(crate) conns: mpsc::Sender<Established>,
    /// `HASH('req2', infohash)`, what an encrypted handshake names the
    /// torrent by: kept so an incoming connection costs no SHA-1 per torrent.
    pub(crate) req2: [u8; 20],
}

/// Infohash → torrent, read by every acceptor, written by the session.
pub(crate) type Router = Arc<DashMap<InfoHash, Route>>;

/// A torrent's place in the [`Router`], given up when this is dropped:
/// when its task returns, and when it panics, so a crashed torrent neither
/// answers handshakes it cannot take nor keeps its info hash from being
/// added again.
pub(crate) struct RouteGuard {
    pub(crate) router: Router,
    pub(crate) info_hash: InfoHash,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.router.remove(&self.info_hash);
    }
}

/// Binds TCP on `ip` at `port`, else one of the next ports, else any.
async fn bind_near(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    if port != 0 {
        for candidate in (0..PORT_ATTEMPTS).filter_map(|i| port.checked_add(i)) {
            if let Ok(listener) = bind(SocketAddr::new(ip, candidate)) {
                return Ok(listener);
            }
        }
    }
    bind(SocketAddr::new(ip, 0))
}

/// A listener; IPv6 sockets are IPv6-only so both families share a port.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds the listen sockets: IPv4 on `port` (or the next free one), then
/// IPv6 on the same port if the machine has IPv6 (best effort: a host
/// without it still works). `ipv4`/`ipv6` choose the addresses.
pub(crate) async fn listen(
    port: u16,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    let mut port = port;
    if let Some(ip) = ipv4 {
        let l = bind_near(IpAddr::V4(ip), port).await?;
        port = l.local_addr()?.port();
        listeners.push(l);
    }
    if let Some(ip) = ipv6 {
        match bind_near(IpAddr::V6(ip), port).await {
            Ok(l) => listeners.push(l),
            Err(e) if listeners.is_empty() => return Err(e),
            Err(e) => tracing::info!("not listening on IPv6: {e}"),
        }
    }
    Ok(listeners)
}

/// What every acceptor shares: where connections go, how many handshakes
/// may be pending, within what time, under which encryption policy.
pub(crate) struct Acceptor {
    router: Router,
    pending: PendingHandshakes,
    timeout: Duration,
    encryption: Encryption,
}

impl Acceptor {
    /// An acceptor with its own bound of pending handshakes.
    pub(crate) fn new(router: Router, timeout: Duration, encryption: Encryption) -> Self {
        Self {
            router,
            pending: PendingHandshakes::default(),
            timeout,
            encryption,
        }
    }

    /// Handshakes an incoming connection on its own task and hands it to
    /// its torrent.
    fn take<S: RawStream>(&self, stream: S, addr: SocketAddr) {
        let (router, timeout, encryption) = (self.router.clone(), self.timeout, self.encryption);
        spawn_handshake(addr, &self.pending, timeout, async move {
            accept(stream, addr, &router, timeout, encryption).await
        });
    }

    /// Accepts on `listener` until aborted.
    pub(crate) fn spawn_tcp(self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, addr)) => self.take(stream, addr),
                    Err(e) => {
                        // Out of descriptors or similar: wait rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }

    /// Accepts incoming uTP connections from the uTP driver until it stops.
    pub(crate) fn spawn_utp(self, mut incoming: mpsc::Receiver<UtpStream>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(stream) = incoming.recv().await {
                let addr = stream.peer_addr();
                self.take(stream, addr);
            }
        })
    }
}

/// Why an incoming connection was not handed to a torrent.
#[derive(Debug, thiserror::Error)]
enum AcceptError {
    #[error("handshakes took too long")]
    Timeout,
    #[error("closed before its first bytes")]
    Closed,
    #[error("reading its first bytes")]
    Io(#[from] io::Error),
    #[error("a {0} handshake, which our encryption policy refuses")]
    Refused(&'static str),
    #[error(transparent)]
    Encryption(#[from] StreamError),
    #[error(transparent)]
    Handshake(#[from] ConnectionError),
    #[error("the torrent went away")]
    Gone,
}

/// Handshakes an incoming connection, plaintext or encrypted as its first
/// bytes show and `encryption` allows, and finds its torrent's inbox.
async fn accept<S: RawStream>(
    mut stream: S,
    addr: SocketAddr,
    router: &Router,
    timeout: Duration,
    encryption: Encryption,
) -> Result<(Established, mpsc::Sender<Established>), AcceptError> {
    let opening = encryption::sniff(&mut stream)
        .await?
        .ok_or(AcceptError::Closed)?;
    let (stream, received, encrypted_for) = match (opening, encryption) {
        (Opening::Plaintext(_), Encryption::Require) => {
            return Err(AcceptError::Refused("plaintext"));
        }
        (Opening::Encrypted(_), Encryption::Off) => return Err(AcceptError::Refused("encrypted")),
        (Opening::Plaintext(read), _) => (stream.into_plain(addr), read, None),
        (Opening::Encrypted(read), _) => {
            let lookup = |req2: &[u8; 20]| {
                router
                    .iter()
                    .find(|route| route.req2 == *req2)
                    .map(|route| *route.key())
            };
            let (info_hash, stream, received) =
                encryption::respond(stream, addr, &read, encryption.methods(), lookup).await?;
            (stream, received, Some(info_hash))
        }
    };
    answer(stream, addr, router, timeout, &received, encrypted_for).await
}

/// Reads the peer's BitTorrent handshake (after `received`, its first
/// bytes already read), answers for the torrent it names, and finds that
/// torrent's inbox. After MSE the handshake must name `encrypted_for`,
/// the torrent the encrypted handshake hid.
async fn answer(
    stream: ByteStream,
    addr: SocketAddr,
    router: &Router,
    timeout: Duration,
    received: &[u8],
    encrypted_for: Option<InfoHash>,
) -> Result<(Established, mpsc::Sender<Established>), AcceptError> {
    let mut inbox = None;
    let (conn, theirs) = Connection::accept_after(stream, timeout, received, |prefix| {
        // Under encryption the handshake must name the torrent it hid.
        if encrypted_for.is_some_and(|ih| ih != prefix.info_hash) {
            return None;
        }
        let route = router.get(&prefix.info_hash)?;
        inbox = Some(route.conns.clone());
        Some(route.handshake)
    })
    .await?;
    let inbox = inbox.ok_or(AcceptError::Gone)?;
    Ok((Established::new(conn, theirs, addr, true), inbox))
}

/// Runs `handshakes` for an incoming connection on its own task within
/// `timeout` and hands the connection to its torrent; refuses the
/// connection at once when the listener, or its IP, has all the `pending`
/// handshakes it may.
fn spawn_handshake<F>(
    addr: SocketAddr,
    pending: &PendingHandshakes,
    timeout: Duration,
    handshakes: F,
) where
    F: Future<Output = Result<(Established, mpsc::Sender<Established>), AcceptError>>
        + Send
        + 'static,
{
    let Some(slot) = pending.admit(addr.ip()) else {
        tracing::debug!(%addr, "too many handshakes pending: connection closed");
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        match tokio::time::timeout(timeout, handshakes)
            .await
            .unwrap_or(Err(AcceptError::Timeout))
        {
            // A full inbox means the torrent is swamped: drop it.
            Ok((conn, inbox)) => {
                let _ = inbox.try_send(conn);
            }
            Err(e) => tracing::debug!(%addr, "incoming handshake failed: {}", ErrorChain(&e)),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use lodestone_core::PeerId;
    use lodestone_wire::Reserved;

    use super::*;

    /// A torrent task that panics gives up its route as one that returns.
    #[test]
    fn a_crashed_torrent_leaves_the_router() {
        let router = Router::default();
        let info_hash = InfoHash([3; 20]);
        let route = Route {
            handshake: Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([1; 20])),
            conns: mpsc::channel(1).0,
            req2: [0; 20],
        };
        router.insert(info_hash, route);
        let guard = RouteGuard {
            router: router.clone(),
            info_hash,
        };
        let crashed = catch_unwind(AssertUnwindSafe(move || {
            let _route = guard;
            panic!("the torrent task crashed");
        }));
        assert!(crashed.is_err());
        assert!(router.is_empty());
    }
}
