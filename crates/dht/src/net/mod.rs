//! The tokio driver: one task owns the UDP sockets and the [`Node`]; a
//! cloneable [`Dht`] handle talks to it over a channel.
//!
//! The task `select!`s on the sockets, the node's timer and the command
//! channel, and after every input drains all of the node's outputs. It holds
//! no protocol logic: everything it knows about the DHT it learns from
//! [`Node`]'s events.

mod driver;
pub mod mmsg;
mod pool_log;
mod shard;
mod state;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lodestone_core::{InfoHash, NodeId};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::node::{Config, LookupStats, Node, NodeStats};
pub use pool_log::{PoolLog, Replayed, replay as replay_pool_log};
pub use state::SavedState;

/// Public routers used when nothing else is configured. Never used by tests,
/// which always pass explicit loopback bootstrap addresses.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "dht.libtorrent.org:25401",
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];

/// Capacity of each `get_peers` stream; peers beyond it are dropped while
/// the receiver lags (the lookup itself is not slowed down).
pub const PEER_CHANNEL: usize = 1024;

/// How to run a DHT.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Addresses to bind, at most one IPv4 and one IPv6.
    pub bind: Vec<SocketAddr>,
    /// `host:port` routers; every A/AAAA record is used.
    pub bootstrap: Vec<String>,
    /// Where the node id and good contacts are kept between runs.
    pub state_file: Option<PathBuf>,
    /// Where a server keeps its verified pool (an append-only log).
    pub pool_file: Option<PathBuf>,
    /// How often the state and pool files are brought up to date while
    /// running (they are always written on shutdown).
    pub save_interval: Option<Duration>,
    /// `SO_RCVBUF`/`SO_SNDBUF` to ask for (the kernel may cap it); `None`
    /// keeps the system default.
    pub socket_buffer: Option<usize>,
    /// Receive shards: with more than one, every shard binds its own socket
    /// per family on the same address (`SO_REUSEPORT`, so the kernel spreads
    /// datagrams over them) and serves it from its own thread, all sharing
    /// the one node. 0 counts as 1.
    pub shards: usize,
    /// The node's protocol settings.
    pub node: Config,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 6881))],
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect(),
            state_file: None,
            pool_file: None,
            save_interval: None,
            socket_buffer: None,
            shards: 1,
            node: Config::default(),
        }
    }
}

/// What an announce achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSummary {
    /// Nodes that were sent `announce_peer`.
    pub announced_to: usize,
    /// Peers found on the way.
    pub peers: Vec<SocketAddr>,
    /// The lookup's statistics.
    pub lookup: LookupStats,
}

/// A snapshot of the DHT for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtStats {
    /// Our node id.
    pub id: NodeId,
    /// Entries in the IPv4 table.
    pub ipv4_nodes: usize,
    /// Entries in the IPv6 table.
    pub ipv6_nodes: usize,
    /// Traffic counters.
    pub traffic: NodeStats,
    /// Lookups running.
    pub active_lookups: usize,
    /// Swarms and peers stored for others.
    pub stored: (usize, usize),
    /// Our external IP, once known.
    pub external_ip: Option<IpAddr>,
    /// Verified pool entries (IPv4, IPv6); zero for a client.
    pub pool: (usize, usize),
    /// Nodes waiting for a verification ping.
    pub verify_queued: usize,
}

/// A non-blocking UDP socket on `addr`; IPv6 sockets are IPv6-only so that
/// `0.0.0.0:P` and `[::]:P` can both be bound. `shared`: other sockets of
/// this process will bind the same address (`SO_REUSEPORT`).
fn bind(addr: SocketAddr, buffer: Option<usize>, shared: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if shared {
        socket.set_reuse_port(true)?;
    }
    if let Some(size) = buffer {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(size);
        let _ = socket.set_send_buffer_size(size);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds one socket per address of `bind` for each of `shards` shards: the
/// first set where asked (port 0: any), the others on the very addresses
/// the first got. Sockets are returned unregistered, to be handed to the
/// runtime of the thread that serves them.
fn bind_shards(
    bind_addrs: &[SocketAddr],
    buffer: Option<usize>,
    shards: usize,
) -> io::Result<Vec<[Option<std::net::UdpSocket>; 2]>> {
    let shared = shards > 1;
    let mut first: [Option<std::net::UdpSocket>; 2] = [None, None];
    for addr in bind_addrs {
        let slot = &mut first[usize::from(addr.is_ipv6())];
        if slot.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("more than one bind address of the family of {addr}"),
            ));
        }
        *slot = Some(bind(*addr, buffer, shared)?);
    }
    if first.iter().all(Option::is_none) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no bind address",
        ));
    }
    let bound: Vec<SocketAddr> = first
        .iter()
        .flatten()
        .map(std::net::UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    let mut all = vec![first];
    for _ in 1..shards {
        let mut set: [Option<std::net::UdpSocket>; 2] = [None, None];
        for addr in &bound {
            set[usize::from(addr.is_ipv6())] = Some(bind(*addr, buffer, true)?);
        }
        all.push(set);
    }
    Ok(all)
}

/// Registers a shard's sockets with the current runtime.
fn register([v4, v6]: [Option<std::net::UdpSocket>; 2]) -> io::Result<shard::Sockets> {
    let reg = |s: Option<std::net::UdpSocket>| s.map(UdpSocket::from_std).transpose();
    Ok(shard::Sockets {
        v4: reg(v4)?.map(Arc::new),
        v6: reg(v6)?.map(Arc::new),
    })
}

/// A burst of datagrams that are not KRPC, each with its sender. They
/// borrow the DHT's receive buffer: the sink copies what it keeps, in one
/// piece if it likes (a copy per datagram cost uTP a `malloc` and a `free`
/// per packet).
pub type OtherDatagrams<'a> = [(SocketAddr, &'a [u8])];

/// Where the DHT hands the datagrams of the protocol sharing its port, and
/// which of them that protocol wants: the rest are dropped before they are
/// copied, so junk on the port costs neither copies nor queue space.
#[derive(Clone)]
pub struct OtherSink {
    /// Takes a burst, or refuses it (the protocol lags: the burst is
    /// dropped, as UDP may be). The DHT's receive loop calls it, outside
    /// the node's lock: it may take a lock of its own for a moment, but
    /// must not wait for I/O or for room in a queue.
    pub deliver: Arc<dyn Fn(&OtherDatagrams<'_>) -> bool + Send + Sync>,
    /// The protocol's test of a datagram (not called for KRPC ones).
    pub wants: fn(&[u8]) -> bool,
}

impl std::fmt::Debug for OtherSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtherSink").finish_non_exhaustive()
    }
}

/// The DHT's sockets, for another protocol to send from the same port
/// (BEP 29 runs uTP on the DHT's port): those of its first shard.
pub type SharedUdp = shard::Sockets;

/// The thread of an extra shard: its own single-threaded runtime, so the
/// shards receive and send in parallel with the driver's runtime.
fn serve_shard(shard: shard::Shard, sockets: [Option<std::net::UdpSocket>; 2]) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!("DHT shard not started: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        match register(sockets) {
            Ok(sockets) => shard.run(sockets).await,
            Err(e) => tracing::warn!("DHT shard not started: {e}"),
        }
    });
}

/// Requests from handles to the task.
#[derive(Debug)]
enum Command {
    /// A lookup streaming peers; with a port it also announces us.
    GetPeers(InfoHash, Option<u16>, mpsc::Sender<SocketAddr>),
    Announce(InfoHash, Option<u16>, oneshot::Sender<AnnounceSummary>),
    AddNode(SocketAddr),
    Stats(oneshot::Sender<DhtStats>),
    Shutdown(oneshot::Sender<io::Result<()>>),
}

/// A running DHT; clone it freely. The task stops (saving its state) on
/// [`Dht::shutdown`] or when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Dht {
    commands: mpsc::Sender<Command>,
    local: Vec<SocketAddr>,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the DHT task has stopped")
}

impl Dht {
    /// Binds the sockets, loads the state file and starts the task, which
    /// resolves the routers and bootstraps (remembered contacts first).
    pub async fn spawn(config: DhtConfig) -> io::Result<Dht> {
        Ok(Self::spawn_inner(config, None).await?.0)
    }

    /// [`Dht::spawn`] sharing the port with another protocol: datagrams that
    /// are not bencoded dictionaries and that `other` wants go to it in
    /// batches (dropped when it lags, as UDP may), and the returned sockets
    /// send from the port.
    pub async fn spawn_shared(config: DhtConfig, other: OtherSink) -> io::Result<(Dht, SharedUdp)> {
        Self::spawn_inner(config, Some(other)).await
    }

    async fn spawn_inner(
        config: DhtConfig,
        other: Option<OtherSink>,
    ) -> io::Result<(Dht, SharedUdp)> {
        let mut shard_sockets =
            bind_shards(&config.bind, config.socket_buffer, config.shards.max(1))?.into_iter();
        let sockets = register(shard_sockets.next().unwrap_or_default())?;
        let local = sockets
            .v4
            .iter()
            .chain(sockets.v6.iter())
            .map(|s| s.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let saved = match &config.state_file {
            Some(path) => SavedState::load(path).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable DHT state {}: {e}", path.display());
                SavedState::default()
            }),
            None => SavedState::default(),
        };
        let mut node_config = config.node.clone();
        node_config.want_ipv6 |= sockets.v6.is_some();
        let seed = rand::random();
        let now = std::time::Instant::now();
        let pool_capacity = node_config.server.as_ref().map_or(0, |s| s.pool.capacity);
        let mut node = Node::new(node_config, saved.id, seed, now);
        let pool_log = match &config.pool_file {
            Some(path) => match PoolLog::load(path, pool_capacity) {
                Ok((log, nodes)) => {
                    node.load_pool(&nodes, now);
                    Some(log)
                }
                Err(e) => {
                    // Not silently replaced: the operator should look at it.
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot load the pool {}: {e}", path.display()),
                    ));
                }
            },
            None => None,
        };
        let (tx, rx) = mpsc::channel(64);
        let node = Arc::new(Mutex::new(node));
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        for (i, sockets) in shard_sockets.enumerate() {
            let shard = shard::Shard {
                node: node.clone(),
                other: other.clone(),
                driver: wake.clone(),
                stop: stopped.clone(),
            };
            std::thread::Builder::new()
                .name(format!("dht-shard-{}", i + 1))
                .spawn(move || serve_shard(shard, sockets))?;
        }
        let shared = sockets.clone();
        let driver = driver::Driver::new(
            node,
            sockets,
            other,
            driver::Persist {
                state_file: config.state_file.clone(),
                pool_log,
                interval: config.save_interval,
            },
            wake,
            stop,
        );
        tokio::spawn(driver.run(rx, saved.nodes, config.bootstrap));
        Ok((
            Dht {
                commands: tx,
                local,
            },
            shared,
        ))
    }

    /// The bound addresses (with the ports the OS chose).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Streams peers of `info_hash` as they are found, each once; the
    /// channel closes when the lookup ends. Dropping the receiver cancels it.
    pub async fn get_peers(&self, info_hash: InfoHash) -> io::Result<mpsc::Receiver<SocketAddr>> {
        self.lookup(info_hash, None).await
    }

    /// [`Dht::get_peers`] that also announces us on `announce` (0: the
    /// DHT's own port, BEP 5 `implied_port`) to the closest nodes when the
    /// lookup ends: finding peers and being found cost one lookup.
    pub async fn lookup(
        &self,
        info_hash: InfoHash,
        announce: Option<u16>,
    ) -> io::Result<mpsc::Receiver<SocketAddr>> {
        let (tx, rx) = mpsc::channel(PEER_CHANNEL);
        self.commands
            .send(Command::GetPeers(info_hash, announce, tx))
            .await
            .map_err(|_| gone())?;
        Ok(rx)
    }

    /// Announces us for `info_hash` on `port` (`None`: the DHT's own UDP
    /// port, BEP 5 `implied_port`, for clients that accept uTP there).
    pub async fn announce(
        &self,
        info_hash: InfoHash,
        port: Option<u16>,
    ) -> io::Result<AnnounceSummary> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Announce(info_hash, port, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Pings `addr` and adds it to the table if it answers (BEP 5 PORT message).
    pub async fn add_node(&self, addr: SocketAddr) -> io::Result<()> {
        self.commands
            .send(Command::AddNode(addr))
            .await
            .map_err(|_| gone())
    }

    /// Current statistics.
    pub async fn stats(&self) -> io::Result<DhtStats> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Stops the task after saving the state file; the result is the save's.
    pub async fn shutdown(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}
