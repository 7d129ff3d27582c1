//! The async driver: connects to peers, speaks BEP 3/10 handshakes, and
//! feeds the [`Fetch`] state machine until the metadata is verified.
//!
//! One task per peer connection does the IO (connect, handshakes, reading,
//! batched writes); one loop owns the state machine, the connection slots
//! and the timer. They talk over channels, so every decision is made in one
//! place, in the order events happened.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use lodestone_core::{ErrorChain, InfoHash, Metainfo, MetainfoError, PeerId};
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::{Connection, ConnectionError, ExtendedHandshake, Handshake, Reserved};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fetch::{Action, Fetch, FetchConfig};
use crate::message::Message;
use crate::serve::{RequestBudget, respond};

/// The id under which we ask peers to send us ut_metadata messages.
pub const OUR_UT_METADATA_ID: u8 = 3;

/// Events buffered from connection tasks before they wait for the loop.
const EVENT_QUEUE: usize = 256;

/// Reconnections to an address whose connect or handshake failed.
const MAX_CONNECT_RETRIES: u32 = 3;

/// Wait before the first reconnection; it doubles with each failure.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// How [`fetch_metainfo`] runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The state machine's tunables.
    pub fetch: FetchConfig,
    /// Our peer id in handshakes.
    pub peer_id: PeerId,
    /// Connections open (or being opened) at once.
    pub max_connections: usize,
    /// Limit for TCP connect plus the BitTorrent handshake.
    pub connect_timeout: Duration,
    /// Limit for the whole fetch.
    pub timeout: Duration,
    /// Distinct addresses remembered; later ones are ignored, so a flood of
    /// addresses costs bounded memory.
    pub max_known_peers: usize,
    /// `v` in our extension handshake.
    pub client_name: Option<String>,
    /// `p` in our extension handshake: where we accept connections.
    pub listen_port: Option<u16>,
}

impl FetchOptions {
    /// Defaults with our `peer_id`.
    pub fn new(peer_id: PeerId) -> Self {
        Self {
            fetch: FetchConfig::default(),
            peer_id,
            max_connections: 64,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
            max_known_peers: 10_000,
            client_name: Some(concat!("lodestone ", env!("CARGO_PKG_VERSION")).to_owned()),
            listen_port: None,
        }
    }
}

/// What the fetch is doing, for progress displays and for saying which
/// stage came up empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Distinct peer addresses received.
    pub peers_known: usize,
    /// Connections being opened now.
    pub connecting: usize,
    /// Connections handshaken now.
    pub connected: usize,
    /// Connected peers offering ut_metadata now.
    pub with_ut_metadata: usize,
    /// Connections ever handshaken.
    pub ever_connected: usize,
    /// Peers that ever offered ut_metadata.
    pub ever_ut_metadata: usize,
    /// Connect or handshake attempts that failed.
    pub connect_failures: usize,
    /// Size being assembled, once known.
    pub metadata_size: Option<u32>,
    /// Pieces of the metadata.
    pub pieces_total: u32,
    /// Pieces held of the current attempt.
    pub pieces_have: u32,
    /// Pieces received over all attempts.
    pub pieces_received: u64,
    /// Assembled metadata that failed the SHA-1 check.
    pub hash_failures: u32,
    /// Peers dropped for misbehaving or being useless.
    pub peers_dropped: u32,
}

impl fmt::Display for Progress {
    /// Names the furthest stage reached and where it stopped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.peers_known == 0 {
            write!(f, "no peers found")
        } else if self.ever_connected == 0 {
            write!(
                f,
                "could not connect to any of {} peers ({} failed, {} still trying)",
                self.peers_known, self.connect_failures, self.connecting
            )
        } else if self.ever_ut_metadata == 0 {
            write!(
                f,
                "none of {} connected peers offers ut_metadata",
                self.ever_connected
            )
        } else {
            write!(
                f,
                "{} peers offered ut_metadata but the metadata is incomplete \
                 ({}/{} pieces, {} hash failures, {} peers dropped)",
                self.ever_ut_metadata,
                self.pieces_have,
                self.pieces_total,
                self.hash_failures,
                self.peers_dropped
            )
        }
    }
}

/// Why [`fetch_metainfo`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The time limit passed.
    #[error("timed out fetching metadata: {0}")]
    TimedOut(Progress),
    /// The address stream ended and every connection closed.
    #[error("ran out of peers fetching metadata: {0}")]
    PeersExhausted(Progress),
    /// Bytes that hash to the infohash but are no valid info dictionary:
    /// the torrent itself is broken, no peer can fix it.
    #[error("metadata matches the infohash but is invalid")]
    InvalidMetadata(#[from] MetainfoError),
}

/// Fetches and verifies the info dictionary of `info_hash` from the peers
/// whose addresses arrive on `peers` (from the DHT, `x.pe`, ...).
pub async fn fetch_metainfo(
    info_hash: InfoHash,
    peers: mpsc::Receiver<SocketAddr>,
    options: FetchOptions,
) -> Result<Metainfo, FetchError> {
    let (progress, _) = watch::channel(Progress::default());
    fetch_metainfo_with_progress(info_hash, peers, options, &progress).await
}

/// [`fetch_metainfo`], publishing [`Progress`] on `progress` as it goes.
pub async fn fetch_metainfo_with_progress(
    info_hash: InfoHash,
    peers: mpsc::Receiver<SocketAddr>,
    options: FetchOptions,
    progress: &watch::Sender<Progress>,
) -> Result<Metainfo, FetchError> {
    let deadline = Instant::now() + options.timeout;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let mut driver = Driver {
        fetch: Fetch::new(info_hash, options.fetch.clone()),
        info_hash,
        options,
        peers: Some(peers),
        events_tx,
        events,
        pending: VecDeque::new(),
        seen: HashSet::new(),
        retries: Vec::new(),
        failures: HashMap::new(),
        conns: HashMap::new(),
        tasks: JoinSet::new(),
        progress: Progress::default(),
        malformed: 0,
    };
    // Dropping the driver on return aborts every connection task.
    driver.run(deadline, progress).await
}

/// What a connection task reports.
enum PeerEvent {
    /// TCP and BitTorrent handshakes done.
    Connected,
    /// Its extension handshake offers ut_metadata.
    Ready { metadata_size: Option<u64> },
    /// A ut_metadata payload.
    Metadata(Bytes),
    /// The task ended; `connected` says whether it ever got that far.
    Closed { connected: bool },
}

/// What the loop tells a connection task.
enum Command {
    /// Send this ut_metadata payload.
    Send(Bytes),
}

struct Conn {
    commands: mpsc::UnboundedSender<Command>,
    connected: bool,
    ready: bool,
    budget: RequestBudget,
}

struct Driver {
    fetch: Fetch<SocketAddr>,
    info_hash: InfoHash,
    options: FetchOptions,
    peers: Option<mpsc::Receiver<SocketAddr>>,
    events_tx: mpsc::Sender<(SocketAddr, PeerEvent)>,
    events: mpsc::Receiver<(SocketAddr, PeerEvent)>,
    pending: VecDeque<SocketAddr>,
    seen: HashSet<SocketAddr>,
    /// Addresses whose connection failed, with when to try again; a failed
    /// connect or handshake is often passing (a peer still tearing down an
    /// earlier connection from our IP, a full backlog).
    retries: Vec<(Instant, SocketAddr)>,
    /// Failed connection attempts per address.
    failures: HashMap<SocketAddr, u32>,
    conns: HashMap<SocketAddr, Conn>,
    tasks: JoinSet<()>,
    progress: Progress,
    /// Peers closed for sending undecodable ut_metadata messages.
    malformed: u32,
}

impl Driver {
    async fn run(
        &mut self,
        deadline: Instant,
        progress: &watch::Sender<Progress>,
    ) -> Result<Metainfo, FetchError> {
        loop {
            let timer = self.fetch.poll_timeout().map(Instant::from_std);
            let retry_at = self.retries.iter().map(|(at, _)| *at).min();
            tokio::select! {
                () = sleep_until(retry_at) => self.due_retries(),
                addr = recv_addr(&mut self.peers) => match addr {
                    Some(addr) => self.add_peer(addr),
                    None => self.peers = None,
                },
                Some((addr, event)) = self.events.recv() => self.on_event(addr, event),
                () = sleep_until(timer) => {
                    self.fetch.handle_timeout(Instant::now().into_std());
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(FetchError::TimedOut(self.progress));
                }
            }
            self.apply_actions();
            if let Some(raw) = self.fetch.take_verified() {
                let metainfo = Metainfo::from_info_bytes(raw)?;
                debug_assert_eq!(metainfo.info_hash, self.info_hash);
                return Ok(metainfo);
            }
            while self.conns.len() < self.options.max_connections.max(1) {
                let Some(addr) = self.pending.pop_front() else {
                    break;
                };
                self.connect(addr);
            }
            while self.tasks.try_join_next().is_some() {}
            self.publish(progress);
            if self.peers.is_none()
                && self.conns.is_empty()
                && self.pending.is_empty()
                && self.retries.is_empty()
            {
                return Err(FetchError::PeersExhausted(self.progress));
            }
        }
    }

    fn add_peer(&mut self, addr: SocketAddr) {
        if self.seen.len() >= self.options.max_known_peers || !self.seen.insert(addr) {
            return;
        }
        self.pending.push_back(addr);
    }

    /// Moves the retries whose time has come back to the queue.
    fn due_retries(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(at, _)| *at <= now);
        self.retries = later;
        self.pending.extend(due.into_iter().map(|(_, addr)| addr));
    }

    fn connect(&mut self, addr: SocketAddr) {
        let (commands, rx) = mpsc::unbounded_channel();
        self.conns.insert(
            addr,
            Conn {
                commands,
                connected: false,
                ready: false,
                budget: RequestBudget::default(),
            },
        );
        let mut ours = ExtendedHandshake {
            v: self.options.client_name.clone(),
            p: self.options.listen_port,
            ..ExtendedHandshake::default()
        };
        ours.m.insert(UT_METADATA.to_owned(), OUR_UT_METADATA_ID);
        let mut reserved = Reserved::default();
        reserved.set_extensions(true);
        let task = PeerTask {
            addr,
            handshake: Handshake::new(reserved, self.info_hash, self.options.peer_id),
            extended: ours.to_message(),
            connect_timeout: self.options.connect_timeout,
            events: self.events_tx.clone(),
        };
        self.tasks.spawn(task.run(rx));
    }

    fn on_event(&mut self, addr: SocketAddr, event: PeerEvent) {
        let now = Instant::now().into_std();
        // Events from connections the loop already let go are stale.
        let Some(conn) = self.conns.get_mut(&addr) else {
            return;
        };
        match event {
            PeerEvent::Connected => {
                conn.connected = true;
                self.progress.ever_connected += 1;
            }
            PeerEvent::Ready { metadata_size } => {
                if !conn.ready {
                    conn.ready = true;
                    self.progress.ever_ut_metadata += 1;
                }
                self.fetch.peer_ready(now, addr, metadata_size);
            }
            PeerEvent::Metadata(payload) => match Message::decode(&payload) {
                Ok(Message::Request { piece }) => {
                    // We have nothing to serve until the fetch is done.
                    let answer = respond(None, &mut conn.budget, piece).to_vec();
                    let _ = conn.commands.send(Command::Send(answer.into()));
                }
                Ok(message) => self.fetch.message(now, addr, &message),
                Err(_) => {
                    // Malformed: the peer's fault; close it.
                    self.conns.remove(&addr);
                    self.malformed += 1;
                    self.fetch.peer_gone(now, addr);
                }
            },
            PeerEvent::Closed { connected } => {
                if !connected {
                    self.progress.connect_failures += 1;
                    let failures = self.failures.entry(addr).or_insert(0);
                    *failures += 1;
                    if *failures <= MAX_CONNECT_RETRIES {
                        let backoff = FIRST_RETRY * 2u32.pow(*failures - 1);
                        self.retries.push((Instant::now() + backoff, addr));
                    }
                }
                self.conns.remove(&addr);
                self.fetch.peer_gone(now, addr);
            }
        }
    }

    fn apply_actions(&mut self) {
        while let Some(action) = self.fetch.poll_action() {
            match action {
                Action::Send { peer, message } => {
                    if let Some(conn) = self.conns.get(&peer) {
                        let _ = conn.commands.send(Command::Send(message.to_vec().into()));
                    }
                }
                Action::Drop { peer, .. } => {
                    // Dropping the command sender ends the peer's task.
                    self.conns.remove(&peer);
                }
            }
        }
    }

    fn publish(&mut self, progress: &watch::Sender<Progress>) {
        let stats = self.fetch.stats();
        let p = &mut self.progress;
        p.peers_known = self.seen.len();
        p.connecting = self.conns.values().filter(|c| !c.connected).count();
        p.connected = self.conns.values().filter(|c| c.connected).count();
        p.with_ut_metadata = stats.peers;
        p.metadata_size = stats.metadata_size;
        p.pieces_total = stats.pieces_total;
        p.pieces_have = stats.pieces_have;
        p.pieces_received = stats.pieces_received;
        p.hash_failures = stats.hash_failures;
        p.peers_dropped = stats.peers_dropped + self.malformed;
        let snapshot = *p;
        progress.send_if_modified(|current| {
            let changed = *current != snapshot;
            *current = snapshot;
            changed
        });
    }
}

async fn recv_addr(peers: &mut Option<mpsc::Receiver<SocketAddr>>) -> Option<SocketAddr> {
    match peers {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One outgoing peer connection.
struct PeerTask {
    addr: SocketAddr,
    handshake: Handshake,
    extended: lodestone_wire::Message,
    connect_timeout: Duration,
    events: mpsc::Sender<(SocketAddr, PeerEvent)>,
}

/// Why a connection task stopped; only logged, the loop learns of the end
/// through [`PeerEvent::Closed`].
#[derive(Debug, thiserror::Error)]
enum PeerEnd {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("peer lacks the extension protocol")]
    NoExtensionProtocol,
    #[error("peer does not offer ut_metadata")]
    NoUtMetadata,
    #[error("the fetch let the peer go")]
    LoopGone,
}

impl PeerTask {
    async fn run(self, commands: mpsc::UnboundedReceiver<Command>) {
        let mut connected = false;
        let end = self.talk(commands, &mut connected).await;
        tracing::debug!(peer = %self.addr, end = %ErrorChain(&end), "metadata peer closed");
        let _ = self
            .events
            .send((self.addr, PeerEvent::Closed { connected }))
            .await;
    }

    async fn report(&self, event: PeerEvent) -> Result<(), PeerEnd> {
        self.events
            .send((self.addr, event))
            .await
            .map_err(|_| PeerEnd::LoopGone)
    }

    async fn talk(
        &self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        connected: &mut bool,
    ) -> PeerEnd {
        let result: Result<(), PeerEnd> = async {
            let (conn, theirs) =
                Connection::connect(self.addr, self.connect_timeout, self.handshake).await?;
            *connected = true;
            self.report(PeerEvent::Connected).await?;
            if !theirs.reserved.supports_extensions() {
                return Err(PeerEnd::NoExtensionProtocol);
            }
            let (mut reader, mut writer) = conn.into_split();
            writer.send(&self.extended).await?;
            let mut their_id = None;
            loop {
                tokio::select! {
                    message = reader.recv() => match message? {
                        lodestone_wire::Message::Extended { id: 0, payload } => {
                            // A malformed handshake is the peer's fault.
                            let hs = ExtendedHandshake::decode(&payload)
                                .map_err(|_| PeerEnd::NoUtMetadata)?;
                            their_id = Some(hs.extension_id(UT_METADATA).ok_or(PeerEnd::NoUtMetadata)?);
                            self.report(PeerEvent::Ready { metadata_size: hs.metadata_size }).await?;
                        }
                        lodestone_wire::Message::Extended { id: OUR_UT_METADATA_ID, payload } => {
                            self.report(PeerEvent::Metadata(payload)).await?;
                        }
                        _ => {}
                    },
                    command = commands.recv() => {
                        let Some(Command::Send(payload)) = command else {
                            return Ok(()); // the loop let go of this peer
                        };
                        let Some(id) = their_id else { continue };
                        writer.feed(&lodestone_wire::Message::Extended { id, payload });
                        // Everything queued goes out in one write.
                        while let Ok(Command::Send(payload)) = commands.try_recv() {
                            writer.feed(&lodestone_wire::Message::Extended { id, payload });
                        }
                        writer.flush().await?;
                    }
                }
            }
        }
        .await;
        match result {
            Ok(()) => PeerEnd::LoopGone,
            Err(end) => end,
        }
    }
}
