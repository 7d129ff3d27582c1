//! The session's TCP listen sockets (IPv4 and IPv6 on one port), incoming
//! uTP connections, and the routing of both to torrents by infohash.
//!
//! An acceptor reads the first 48 bytes of the peer's handshake, looks the
//! infohash up in the [`Router`] (a concurrent map the session writes when
//! torrents are added or removed), answers with that torrent's handshake
//! and hands the connection to the torrent's task. Unknown infohashes are
//! refused before we say anything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use lodestone_core::{ErrorChain, InfoHash};
use lodestone_utp::net::UtpStream;
use lodestone_wire::{ByteStream, Connection, Established, Handshake};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Ports tried after the one asked for before letting the OS choose.
const PORT_ATTEMPTS: u16 = 10;

/// Incoming connections whose handshake may be pending at once per
/// listener; past it new connections are closed at once, so a crowd that
/// connects and says nothing costs a bounded number of tasks and sockets.
const MAX_PENDING_HANDSHAKES: usize = 128;

/// Where incoming connections for one torrent go.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Our handshake for that torrent.
    pub(crate) handshake: Handshake,
    /// The torrent task's inbox.
    pub(crate) conns: mpsc::Sender<Established>,
}

/// Infohash → torrent, read by every acceptor, written by the session.
pub(crate) type Router = Arc<DashMap<InfoHash, Route>>;

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

/// Accepts on `listener` until aborted, routing each connection.
pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    router: Router,
    handshake_timeout: Duration,
) -> JoinHandle<()> {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            route(stream.into(), addr, &pending, &router, handshake_timeout);
        }
    })
}

/// Accepts incoming uTP connections from the uTP driver until it stops,
/// routing each like a TCP one.
pub(crate) fn spawn_utp_acceptor(
    mut incoming: mpsc::Receiver<UtpStream>,
    router: Router,
    handshake_timeout: Duration,
) -> JoinHandle<()> {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            let addr = stream.peer_addr();
            let stream = ByteStream::Other(Box::new(stream), addr);
            route(stream, addr, &pending, &router, handshake_timeout);
        }
    })
}

/// Reads the handshake of an incoming connection on its own task, answers
/// for the torrent it names and hands the connection over; refuses it when
/// `pending` handshakes are already under way.
fn route(
    stream: ByteStream,
    addr: SocketAddr,
    pending: &Arc<tokio::sync::Semaphore>,
    router: &Router,
    handshake_timeout: Duration,
) {
    let Ok(permit) = pending.clone().try_acquire_owned() else {
        tracing::debug!(%addr, "too many handshakes pending: connection closed");
        return;
    };
    let router = router.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut inbox = None;
        let accepted = Connection::accept_with(stream, handshake_timeout, |prefix| {
            let route = router.get(&prefix.info_hash)?;
            inbox = Some(route.conns.clone());
            Some(route.handshake)
        })
        .await;
        match (accepted, inbox) {
            (Ok((conn, theirs)), Some(inbox)) => {
                // A full inbox means the torrent is swamped: drop it.
                let _ = inbox.try_send(Established::new(conn, theirs, addr, true));
            }
            (Err(e), _) => {
                tracing::debug!(%addr, "incoming handshake failed: {}", ErrorChain(&e));
            }
            (Ok(_), None) => {}
        }
    });
}
