//! The [`Session`]: one DHT, one set of listen sockets, session-wide rate
//! limits, one pool of hashing threads and one peer id, shared by any
//! number of torrents.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use lodestone_core::{InfoHash, PeerId};
use lodestone_dht::{Dht, DhtConfig};
use lodestone_download::rate::SharedBucket;
use lodestone_download::swarm::Summary;
use lodestone_download::verify::HashPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connection_cap::SessionConnections;
use crate::dialer::Transport;
use crate::encryption::Encryption;
use crate::listener::{self, Acceptor, Route, RouteGuard, Router};
use crate::torrent::{
    self, AddOptions, Control, TorrentError, TorrentPhase, TorrentSource, TorrentStatus,
};
use lodestone_utp::net::{Senders, UtpHandle, UtpStream};

/// Connections waiting for a torrent's task, from the listener.
const INCOMING_QUEUE: usize = 32;

/// Deadline of one HTTP tracker exchange.
const TRACKER_HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// [`SessionConfig::max_connections`] unless set: libtorrent's and
/// Transmission's global default too, four torrents at their fullest.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 200;

/// How to run a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our peer id, the same on every connection of the session.
    pub peer_id: PeerId,
    /// The DHT to run, or `None` for none (peers from magnets only).
    pub dht: Option<DhtConfig>,
    /// TCP port to listen on; the next free one is used if it is taken, 0
    /// lets the OS choose.
    pub listen_port: u16,
    /// IPv4 address to listen on, `None` for no IPv4.
    pub listen_ipv4: Option<Ipv4Addr>,
    /// IPv6 address to listen on, `None` for no IPv6.
    pub listen_ipv6: Option<Ipv6Addr>,
    /// Cap on the sum of every torrent's download rate, bytes per second.
    pub download_limit: Option<NonZeroU64>,
    /// Cap on the sum of every torrent's upload rate, bytes per second.
    pub upload_limit: Option<NonZeroU64>,
    /// Most connections per torrent, in either phase.
    pub max_peers_per_torrent: usize,
    /// Most connections per torrent from one IP, in either phase: one host
    /// cannot take every slot from the others.
    pub max_peers_per_ip: usize,
    /// Most connection attempts at once per torrent. Peers from the DHT
    /// and PEX are often gone, and a silent one holds its attempt for the
    /// whole connect timeout: this many in flight bound how many dead
    /// addresses a second we can get past (32 over 5 s: about 6).
    pub max_dials_per_torrent: usize,
    /// Most connections and connection attempts of every torrent together:
    /// past it no torrent dials or accepts (see `connection_cap`), so that
    /// many torrents in one session do not run the process out of file
    /// descriptors (1,024 by default).
    pub max_connections: usize,
    /// Time allowed to connect and exchange handshakes.
    pub connect_timeout: Duration,
    /// Threads hashing and writing pieces for every torrent together.
    pub hash_threads: usize,
    /// Announce to the trackers a torrent names (magnet `tr=`, metainfo
    /// `announce`/`announce-list`) and take peers from them.
    pub trackers: bool,
    /// Timing of UDP tracker exchanges (BEP 15 retries).
    pub tracker_udp: lodestone_tracker::udp::UdpConfig,
    /// Whether peer connections are encrypted (MSE/PE), both ways.
    pub encryption: Encryption,
    /// Transports to peers. uTP runs on the DHT's UDP port, which is bound
    /// on the TCP listen port's number when the DHT asked for any port, so
    /// that peers reach both at the port we announce.
    pub transport: Transport,
}

impl SessionConfig {
    /// Defaults: a fresh peer id, the DHT on the public routers, port 6881
    /// on every IPv4 and IPv6 address, no limits, 50 peers per torrent (8
    /// per IP) dialed 32 at a time with 5 s to connect, 200 connections in all,
    /// one hashing thread per core,
    /// trackers used, encryption preferred.
    pub fn new() -> Self {
        Self {
            peer_id: new_peer_id(),
            dht: Some(DhtConfig::default()),
            listen_port: 6881,
            listen_ipv4: Some(Ipv4Addr::UNSPECIFIED),
            listen_ipv6: Some(Ipv6Addr::UNSPECIFIED),
            download_limit: None,
            upload_limit: None,
            max_peers_per_torrent: 50,
            max_peers_per_ip: 8,
            max_dials_per_torrent: 32,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            connect_timeout: Duration::from_secs(5),
            hash_threads: std::thread::available_parallelism().map_or(2, usize::from),
            trackers: true,
            tracker_udp: lodestone_tracker::udp::UdpConfig::default(),
            encryption: Encryption::Prefer,
            transport: Transport::Both,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What runs on the UDP port: the DHT and uTP, each if enabled.
struct Udp {
    dht: Option<Dht>,
    /// The uTP driver and its incoming connections.
    utp: Option<(UtpHandle, mpsc::Receiver<UtpStream>)>,
    /// The task reading uTP's own socket when no DHT shares the port.
    /// uTP's driver runs until whatever feeds it is gone, so aborting this
    /// task at shutdown is what stops the driver too.
    utp_receiver: Option<JoinHandle<()>>,
}

/// `SO_RCVBUF`/`SO_SNDBUF` asked for on the UDP port when uTP shares it
/// (the kernel caps it at `net.core.rmem_max`, 4 MiB here). The default,
/// about 208 KiB, is 7 ms of uTP at 30 MB/s: the kernel dropped packets
/// whenever the process was busy that long, and LEDBAT took each drop as
/// congestion.
const UTP_SOCKET_BUFFER: usize = 4 << 20;

/// Starts the DHT and uTP on one UDP port: the DHT's, demultiplexed, or
/// without a DHT a socket of uTP's own on the TCP port's number.
async fn start_udp(config: &SessionConfig, tcp_port: u16) -> Result<Udp, SessionError> {
    if !config.transport.utp() {
        let dht = match &config.dht {
            Some(dht) => Some(Dht::spawn(dht.clone()).await.map_err(SessionError::Dht)?),
            None => None,
        };
        return Ok(Udp {
            dht,
            utp: None,
            utp_receiver: None,
        });
    }
    let (tx, engine) = lodestone_utp::net::inbox(lodestone_utp::Config::default());
    let (dht, senders, utp_receiver) = match &config.dht {
        Some(dht) => {
            let mut dht = dht.clone();
            dht.socket_buffer = dht.socket_buffer.max(Some(UTP_SOCKET_BUFFER));
            let sink = lodestone_dht::OtherSink {
                deliver: Arc::new(move |burst| tx.offer(burst)),
                wants: lodestone_utp::looks_like_utp,
            };
            let (dht, udp) = spawn_dht_on(&dht, tcp_port, sink).await?;
            let senders = Senders {
                v4: udp.v4,
                v6: udp.v6,
            };
            (Some(dht), senders, None)
        }
        None => {
            let ip = config.listen_ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let socket = tokio::net::UdpSocket::bind((ip, tcp_port))
                .await
                .map_err(SessionError::Listen)?;
            // Best effort, as for the DHT's sockets.
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(UTP_SOCKET_BUFFER);
            let _ = socket2::SockRef::from(&socket).set_send_buffer_size(UTP_SOCKET_BUFFER);
            let socket = Arc::new(socket);
            let receiver = tokio::spawn(lodestone_utp::net::recv_loop(socket.clone(), tx));
            let senders = Senders {
                v4: Some(socket),
                v6: None,
            };
            (None, senders, Some(receiver))
        }
    };
    Ok(Udp {
        dht,
        utp: Some(lodestone_utp::net::spawn(engine, senders)),
        utp_receiver,
    })
}

/// Spawns the DHT sharing its port with uTP: where it asked for any port,
/// on `port` first (so uTP answers where TCP does), else anywhere.
async fn spawn_dht_on(
    config: &DhtConfig,
    port: u16,
    sink: lodestone_dht::OtherSink,
) -> Result<(Dht, lodestone_dht::SharedUdp), SessionError> {
    if config.bind.iter().all(|a| a.port() == 0) && port != 0 {
        let mut on_port = config.clone();
        for addr in &mut on_port.bind {
            addr.set_port(port);
        }
        match Dht::spawn_shared(on_port, sink.clone()).await {
            Ok(started) => return Ok(started),
            Err(e) => tracing::info!("uTP not on the TCP port {port}: {e}"),
        }
    }
    Dht::spawn_shared(config.clone(), sink)
        .await
        .map_err(SessionError::Dht)
}

/// A fresh peer id: our client prefix in the Azureus style, then random
/// bytes.
pub fn new_peer_id() -> PeerId {
    let mut id = *b"-LS0001-............";
    let random: [u8; 12] = rand::random();
    id[8..].copy_from_slice(&random);
    PeerId(id)
}

/// Why a session could not start or take a torrent.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No listen socket could be bound (local failure).
    #[error("cannot listen for peers")]
    Listen(#[source] io::Error),
    /// The DHT could not start (local failure, or a bad bootstrap list).
    #[error("cannot start the DHT")]
    Dht(#[source] io::Error),
    /// The torrent is in the session already.
    #[error("torrent {0} is added already")]
    Duplicate(InfoHash),
}

/// What every torrent task of a session reads.
pub(crate) struct Shared {
    pub(crate) config: SessionConfig,
    pub(crate) peer_id: PeerId,
    pub(crate) dht: Option<Dht>,
    /// The client every torrent's tracker announces share, if trackers
    /// are used.
    pub(crate) trackers: Option<lodestone_tracker::Client>,
    /// The uTP driver, when uTP is on.
    pub(crate) utp: Option<UtpHandle>,
    pub(crate) listen_port: u16,
    pub(crate) download_limit: Option<SharedBucket>,
    pub(crate) upload_limit: Option<SharedBucket>,
    /// The one pool that hashes and writes every torrent's pieces.
    pub(crate) hash_pool: HashPool,
    /// What every torrent holds, against `config.max_connections`.
    pub(crate) connections: Arc<SessionConnections>,
}

/// The engine: add torrents to it, follow them through their handles.
pub struct Session {
    shared: Arc<Shared>,
    router: Router,
    listen_addrs: Vec<SocketAddr>,
    /// The tasks that take peers in, and uTP's receiver if it has a socket
    /// of its own: aborted at shutdown.
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    /// Binds the listen sockets, starts the DHT and the acceptors.
    pub async fn start(config: SessionConfig) -> Result<Session, SessionError> {
        let listeners =
            listener::listen(config.listen_port, config.listen_ipv4, config.listen_ipv6)
                .await
                .map_err(SessionError::Listen)?;
        let listen_addrs = listeners
            .iter()
            .map(tokio::net::TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()
            .map_err(SessionError::Listen)?;
        let listen_port = listen_addrs.first().map_or(0, SocketAddr::port);
        let Udp {
            dht,
            utp,
            utp_receiver,
        } = start_udp(&config, listen_port).await?;
        let (utp, utp_incoming) = match utp {
            Some((handle, incoming)) => (Some(handle), Some(incoming)),
            None => (None, None),
        };
        let trackers = config
            .trackers
            .then(|| lodestone_tracker::Client::new(TRACKER_HTTP_TIMEOUT, config.tracker_udp));
        let now = Instant::now();
        let shared = Arc::new(Shared {
            peer_id: config.peer_id,
            dht,
            trackers,
            utp,
            listen_port,
            download_limit: config.download_limit.map(|r| SharedBucket::new(now, r)),
            upload_limit: config.upload_limit.map(|r| SharedBucket::new(now, r)),
            hash_pool: HashPool::new(config.hash_threads),
            connections: SessionConnections::new(config.max_connections),
            config,
        });
        let router = Router::default();
        let timeout = shared.config.connect_timeout;
        let mut tasks: Vec<_> = listeners
            .into_iter()
            .filter(|_| shared.config.transport.tcp())
            .map(|l| Acceptor::new(router.clone(), timeout, shared.config.encryption).spawn_tcp(l))
            .collect();
        if let Some(incoming) = utp_incoming {
            let acceptor = Acceptor::new(router.clone(), timeout, shared.config.encryption);
            tasks.push(acceptor.spawn_utp(incoming));
        }
        tasks.extend(utp_receiver);
        Ok(Session {
            shared,
            router,
            listen_addrs,
            tasks,
        })
    }

    /// Starts a torrent on the current runtime.
    pub fn add(
        &self,
        source: TorrentSource,
        options: AddOptions,
    ) -> Result<TorrentHandle, SessionError> {
        let info_hash = source.info_hash();
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        match self.router.entry(info_hash) {
            Entry::Occupied(_) => return Err(SessionError::Duplicate(info_hash)),
            Entry::Vacant(slot) => {
                slot.insert(Route {
                    handshake: lodestone_wire::Handshake::new(
                        lodestone_wire::Reserved::LODESTONE,
                        info_hash,
                        self.shared.peer_id,
                    ),
                    conns: incoming_tx,
                    req2: lodestone_mse::req2(&info_hash),
                });
            }
        }
        let initial = TorrentStatus {
            phase: match &source {
                TorrentSource::Magnet(_) => TorrentPhase::Metadata(Default::default()),
                TorrentSource::Metainfo(_) => TorrentPhase::Download(Default::default()),
            },
            metainfo: match &source {
                TorrentSource::Metainfo(m) => Some(m.clone()),
                TorrentSource::Magnet(_) => None,
            },
            peers_known: 0,
            dial_failures: 0,
            holepunched: 0,
            dht_nodes: None,
            held_back: false,
        };
        let (status_tx, status) = watch::channel(initial);
        let (control, control_rx) = watch::channel(Control::Run);
        let shared = self.shared.clone();
        let route = RouteGuard {
            router: self.router.clone(),
            info_hash,
        };
        let task = tokio::spawn(async move {
            let _route = route;
            torrent::run(shared, source, options, incoming, control_rx, status_tx).await
        });
        Ok(TorrentHandle {
            info_hash,
            status,
            control,
            task,
        })
    }

    /// The addresses the listen sockets are bound to.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The session's DHT, if it runs one.
    pub fn dht(&self) -> Option<&Dht> {
        self.shared.dht.as_ref()
    }

    /// Stops accepting, stops the DHT (saving its state) and uTP: no task of
    /// the session outlives it. Torrents should be removed and waited for
    /// first.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(dht) = &self.shared.dht
            && let Err(e) = dht.shutdown().await
        {
            tracing::warn!("saving the DHT state failed: {e}");
        }
    }
}

/// A torrent running in a [`Session`].
#[derive(Debug)]
pub struct TorrentHandle {
    info_hash: InfoHash,
    status: watch::Receiver<TorrentStatus>,
    control: watch::Sender<Control>,
    task: JoinHandle<Result<Summary, TorrentError>>,
}

impl TorrentHandle {
    /// The swarm.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Status snapshots, a few a second and on every phase change.
    pub fn status(&self) -> watch::Receiver<TorrentStatus> {
        self.status.clone()
    }

    /// Asks the torrent to stop: connections close, pieces received are
    /// hashed and written, files stay. [`Self::wait`] then returns.
    pub fn remove(&self) {
        self.control.send_replace(Control::Remove);
    }

    /// Pauses the torrent: connections close (pieces received are hashed
    /// and written), nothing is dialed or accepted, its trackers are told
    /// `stopped` and not announced to, and the status says
    /// [`TorrentPhase::Paused`] until [`Self::resume`].
    pub fn pause(&self) {
        self.control.send_if_modified(|c| {
            let changed = *c == Control::Run;
            if changed {
                *c = Control::Pause;
            }
            changed
        });
    }

    /// Resumes a paused torrent where it stopped (from its resume record,
    /// if it keeps one), telling its trackers `started` again.
    pub fn resume(&self) {
        self.control.send_if_modified(|c| {
            let changed = *c == Control::Pause;
            if changed {
                *c = Control::Run;
            }
            changed
        });
    }

    /// Waits until the torrent ends (complete and the seeding policy met,
    /// failed, or removed).
    pub async fn wait(mut self) -> Result<Summary, TorrentError> {
        self.join().await
    }

    /// [`Self::wait`] without giving the handle up, for a `select!` loop
    /// that must still be able to [`Self::remove`] the torrent. Once it has
    /// returned, the handle is spent: it may not be awaited again.
    pub async fn join(&mut self) -> Result<Summary, TorrentError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(TorrentError::Crashed(e.to_string())),
        }
    }
}
