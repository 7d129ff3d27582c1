//! The async driver: runs the metadata phase of handshaken connections and
//! feeds the [`Fetch`] state machine until the metadata is verified, then
//! hands the connections on.
//!
//! The driver does not dial: whoever owns the address book (the session)
//! connects, handshakes, and sends each [`Established`] connection here;
//! every connection that ends before the hand-over is reported back as a
//! [`PeerExit`], so the owner can count its slot free and decide whether to
//! dial the address again. When the metadata verifies, the live connections
//! come back in [`Fetched`], untouched beyond what the metadata phase said
//! and read: the download continues on the same TCP connections.
//!
//! One task per connection does the IO (greeting, reading, batched writes);
//! one loop owns the state machine, the connection slots and the timer. They
//! talk over channels, so every decision is made in one place, in the order
//! events happened.

mod peer;
mod progress;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::{InfoHash, Metainfo, MetainfoError, host_of};
use lodestone_wire::pex::PexReport;
use lodestone_wire::{Established, ExitKind, ListenReport, PeerExit};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fetch::{Action, Fetch, FetchConfig};
use crate::message::Message;
use crate::serve::{RequestBudget, respond};
use peer::{Command, ConnId, Greeting, PeerEvent, PeerTask};
pub use progress::Progress;

/// Events buffered from connection tasks before they wait for the loop.
const EVENT_QUEUE: usize = 256;

/// How long the hand-over waits for a connection task to give its
/// connection back. A task answers as soon as it is not writing; one whose
/// peer stopped reading may be stuck in a write, and is closed instead.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(2);

/// How [`fetch_metainfo`] runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The state machine's tunables.
    pub fetch: FetchConfig,
    /// Connections held at once; one arriving when this many are held is
    /// closed and reported as a [`PeerExit`] that was fruitless.
    pub max_connections: usize,
    /// Connections held at once from one IP; past it one is closed the
    /// same way, so that one host cannot take every slot from the honest
    /// peers (the download holds to the same bound).
    pub max_connections_per_ip: usize,
    /// A connection held this long without offering ut_metadata (no
    /// extension handshake yet, or one without it) gives its slot to a new
    /// connection when every slot is taken: silent or metadata-less peers
    /// must not keep a seeder out until the fetch times out.
    pub useless_after: Duration,
    /// Limit for the whole fetch.
    pub timeout: Duration,
    /// `v` in our extension handshake.
    pub client_name: Option<String>,
    /// `p` in our extension handshake: where we accept connections.
    pub listen_port: Option<u16>,
    /// Where peers learned by ut_pex (BEP 11) go; `None` leaves ut_pex out
    /// of our extension handshake.
    pub pex: Option<mpsc::Sender<PexReport>>,
    /// Where the listen addresses of peers that dialed us go (from their
    /// extension handshake's `p`), so that one that leaves before the
    /// download is dialed there: at most once per connection, and dropped
    /// if the queue is full (it is a hint); `None` drops them all.
    pub listening: Option<mpsc::Sender<ListenReport>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            fetch: FetchConfig::default(),
            max_connections: 64,
            max_connections_per_ip: 8,
            useless_after: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            client_name: Some(concat!("lodestone ", env!("CARGO_PKG_VERSION")).to_owned()),
            listen_port: None,
            pex: None,
            listening: None,
        }
    }
}

/// The outcome of a successful fetch.
#[derive(Debug)]
pub struct Fetched {
    /// The verified torrent.
    pub metainfo: Metainfo,
    /// Every connection still open, for the download: those the fetch held
    /// (greeted, with the messages the download must see in
    /// [`Established::early`]) and those still waiting in the channel
    /// (untouched). A connection whose task ended during the hand-over is
    /// missing here and reported as a [`PeerExit`] instead.
    pub conns: Vec<Established>,
}

/// Why [`fetch_metainfo`] gave up. Every connection it held has been closed
/// and reported as a [`PeerExit`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The time limit passed.
    #[error("timed out fetching metadata: {0}")]
    TimedOut(Progress),
    /// The connection channel closed and every connection ended.
    #[error("ran out of peers fetching metadata: {0}")]
    PeersExhausted(Progress),
    /// Bytes that hash to the infohash but are no valid info dictionary:
    /// the torrent itself is broken, no peer can fix it.
    #[error("metadata matches the infohash but is invalid")]
    InvalidMetadata(#[from] MetainfoError),
}

/// Fetches and verifies the info dictionary of `info_hash` over the
/// handshaken connections that arrive on `conns` (dialed or accepted by the
/// caller, with lodestone's reserved bits), publishing [`Progress`] on
/// `progress` as it goes.
///
/// Each connection ends up in exactly one place: returned in
/// [`Fetched::conns`], or reported on `exits` once closed (when it ends,
/// misbehaves, arrives past [`FetchOptions::max_connections`], or when the
/// fetch fails or is dropped). Peers without the extension protocol or
/// ut_metadata are kept idle: the download can still use them.
pub async fn fetch_metainfo(
    info_hash: InfoHash,
    conns: mpsc::Receiver<Established>,
    exits: mpsc::UnboundedSender<PeerExit>,
    options: FetchOptions,
    progress: &watch::Sender<Progress>,
) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + options.timeout;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let mut driver = Driver {
        fetch: Fetch::new(info_hash, options.fetch.clone()),
        info_hash,
        greeting: Greeting {
            client_name: options.client_name.clone(),
            listen_port: options.listen_port,
            pex: options.pex.clone(),
            listening: options.listening.clone(),
        },
        options,
        incoming: Some(conns),
        exits,
        events_tx,
        events,
        conns: BTreeMap::new(),
        next_id: 0,
        tasks: JoinSet::new(),
        progress: Progress::default(),
        closed_misbehaving: 0,
    };
    let metainfo = driver.run(deadline, progress).await?;
    let conns = driver.hand_over(deadline).await;
    Ok(Fetched { metainfo, conns })
    // Dropping the driver reports what is left and aborts every task.
}

/// The loop's view of one connection.
struct Conn {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    ready: bool,
    /// The `metadata_size` it announced first. Kept here, where a
    /// handshake that turns ut_metadata off does not forget it, so that
    /// announcing another size later is caught however it is staged.
    size: Option<u64>,
    /// When it was taken on, for [`FetchOptions::useless_after`].
    since: Instant,
    budget: RequestBudget,
    /// It sent a metadata piece: of use, so its end is no reason to wait
    /// long before dialing it again.
    of_use: bool,
}

impl Conn {
    /// It offered ut_metadata with a size: a peer that has the metadata.
    fn offers_metadata(&self) -> bool {
        self.ready && self.size.is_some()
    }
}

struct Driver {
    fetch: Fetch<ConnId>,
    info_hash: InfoHash,
    options: FetchOptions,
    greeting: Greeting,
    /// `None` once the caller closed the channel.
    incoming: Option<mpsc::Receiver<Established>>,
    exits: mpsc::UnboundedSender<PeerExit>,
    events_tx: mpsc::Sender<(ConnId, PeerEvent)>,
    events: mpsc::Receiver<(ConnId, PeerEvent)>,
    /// Live connections, in arrival order. Leaving this map is what reports
    /// a connection's exit, so it happens once.
    conns: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    tasks: JoinSet<()>,
    progress: Progress,
    /// Connections closed for breaking the protocol outside the fetch's
    /// view (undecodable ut_metadata, floods).
    closed_misbehaving: u32,
}

impl Driver {
    async fn run(
        &mut self,
        deadline: Instant,
        progress: &watch::Sender<Progress>,
    ) -> Result<Metainfo, FetchError> {
        loop {
            let timer = self.fetch.poll_timeout().map(Instant::from_std);
            tokio::select! {
                conn = recv_conn(&mut self.incoming) => match conn {
                    Some(conn) => self.admit(conn),
                    None => self.incoming = None,
                },
                Some((id, event)) = self.events.recv() => self.on_event(id, event),
                () = sleep_until(timer) => {
                    self.fetch.handle_timeout(Instant::now().into_std());
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(FetchError::TimedOut(self.progress));
                }
            }
            self.apply_actions();
            while self.tasks.try_join_next().is_some() {}
            self.publish(progress);
            if let Some(raw) = self.fetch.take_verified() {
                let metainfo = Metainfo::from_info_bytes(raw)?;
                debug_assert_eq!(metainfo.info_hash, self.info_hash);
                return Ok(metainfo);
            }
            if self.incoming.is_none() && self.conns.is_empty() {
                return Err(FetchError::PeersExhausted(self.progress));
            }
        }
    }

    /// Takes on a new connection, or closes it if every slot for its IP is
    /// taken, or every slot is and none holds a useless connection to give
    /// up ([`FetchOptions::useless_after`]).
    fn admit(&mut self, established: Established) {
        // By host, as the listener counts: an IPv6 /64 is one.
        let host = host_of(established.addr.ip());
        let same_ip = self
            .conns
            .values()
            .filter(|c| host_of(c.addr.ip()) == host)
            .count();
        let full = self.conns.len() >= self.options.max_connections.max(1);
        if same_ip >= self.options.max_connections_per_ip.max(1)
            || (full && !self.give_up_a_useless_one())
        {
            self.report_exit(established.addr, ExitKind::Fruitless);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (commands, rx) = mpsc::unbounded_channel();
        self.conns.insert(
            id,
            Conn {
                addr: established.addr,
                commands,
                ready: false,
                size: None,
                since: Instant::now(),
                budget: RequestBudget::default(),
                of_use: false,
            },
        );
        self.progress.ever_connected += 1;
        self.tasks.spawn(PeerTask::run(
            id,
            established,
            self.greeting.clone(),
            self.events_tx.clone(),
            rx,
        ));
    }

    fn on_event(&mut self, id: ConnId, event: PeerEvent) {
        let now = Instant::now().into_std();
        // Events from connections the loop already let go are stale.
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match event {
            PeerEvent::Handshake {
                ut_metadata: true,
                metadata_size,
            } => {
                if metadata_size.is_some_and(|size| conn.size.is_some_and(|first| first != size)) {
                    // Another size than before, though the fetch may have
                    // forgotten the peer in between (see `SizeChanged`).
                    self.closed_misbehaving += 1;
                    return self.close(id, true);
                }
                conn.size = conn.size.or(metadata_size);
                if !conn.ready {
                    conn.ready = true;
                    self.progress.ever_ut_metadata += 1;
                }
                self.fetch.peer_ready(now, id, metadata_size);
            }
            PeerEvent::Handshake {
                ut_metadata: false, ..
            } => {
                // A later handshake may switch ut_metadata off; the peer
                // stays connected for the download.
                conn.ready = false;
                self.fetch.peer_gone(now, id);
            }
            PeerEvent::Metadata(payload) => match Message::decode(&payload) {
                Ok(Message::Request { piece }) => {
                    // We have nothing to serve until the fetch is done.
                    let answer = respond(None, &mut conn.budget, piece).to_vec();
                    let _ = conn.commands.send(Command::Send(answer.into()));
                }
                Ok(message) => conn.of_use |= self.fetch.message(now, id, &message),
                Err(_) => {
                    self.closed_misbehaving += 1;
                    self.close(id, true);
                }
            },
            PeerEvent::Closed { misbehaved } => {
                if misbehaved {
                    self.closed_misbehaving += 1;
                }
                self.close(id, misbehaved);
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
                Action::Drop { peer, reason } => {
                    tracing::debug!(%reason, "metadata fetch drops a peer");
                    self.close(peer, reason.misbehaved());
                }
            }
        }
    }

    /// Closes the oldest connection that has not offered the metadata
    /// (ut_metadata with a `metadata_size`) for
    /// [`FetchOptions::useless_after`]; whether there was one.
    fn give_up_a_useless_one(&mut self) -> bool {
        let now = Instant::now();
        let useless = self
            .conns
            .iter()
            .filter(|(_, c)| !c.offers_metadata() && !c.of_use)
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= self.options.useless_after)
            .min_by_key(|(_, c)| c.since)
            .map(|(&id, c)| (id, c.addr));
        let Some((id, addr)) = useless else {
            return false;
        };
        tracing::debug!(%addr, "metadata slot given to a newcomer");
        self.close(id, false);
        true
    }

    /// Lets connection `id` go (dropping its command sender ends its task)
    /// and reports its exit.
    fn close(&mut self, id: ConnId, misbehaved: bool) {
        if let Some(conn) = self.conns.remove(&id) {
            self.fetch.peer_gone(Instant::now().into_std(), id);
            let kind = ExitKind::blameless(conn.of_use).or_misbehaved(misbehaved);
            self.report_exit(conn.addr, kind);
        }
    }

    fn report_exit(&self, addr: SocketAddr, kind: ExitKind) {
        // A caller that stopped listening does not need to know.
        let _ = self.exits.send(PeerExit::new(addr, kind));
    }

    /// Asks every connection task for its connection back, then adds the
    /// connections still waiting in the channel.
    async fn hand_over(&mut self, deadline: Instant) -> Vec<Established> {
        let mut replies = Vec::with_capacity(self.conns.len());
        for (&id, conn) in &self.conns {
            let (reply, rx) = oneshot::channel();
            // A task that ended already dropped its receiver; its reply
            // channel then closes at once.
            let _ = conn.commands.send(Command::HandOver(reply));
            replies.push((id, rx));
        }
        let limit = deadline.min(Instant::now() + HAND_OVER_LIMIT);
        let mut handed = Vec::with_capacity(replies.len());
        for (id, mut rx) in replies {
            let reply = loop {
                tokio::select! {
                    reply = &mut rx => break reply.ok(),
                    // Keeps tasks from blocking on a full event queue.
                    Some((id, event)) = self.events.recv() => self.on_late_event(id, event),
                    () = tokio::time::sleep_until(limit) => break None,
                }
            };
            if let Some(established) = reply {
                self.conns.remove(&id);
                handed.push(established);
            }
        }
        while let Ok((id, event)) = self.events.try_recv() {
            self.on_late_event(id, event);
        }
        // Any other connection not handed over stays in the map, and
        // dropping the driver closes and reports it.
        if let Some(incoming) = &mut self.incoming {
            incoming.close();
            while let Ok(established) = incoming.try_recv() {
                handed.push(established);
            }
        }
        handed
    }

    /// An event that arrives during the hand-over: only an end matters,
    /// as a task that ended on its own says how before it stops listening
    /// for the hand-over request.
    fn on_late_event(&mut self, id: ConnId, event: PeerEvent) {
        if let PeerEvent::Closed { misbehaved } = event {
            self.close(id, misbehaved);
        }
    }

    fn publish(&mut self, progress: &watch::Sender<Progress>) {
        let stats = self.fetch.stats();
        let p = &mut self.progress;
        p.connected = self.conns.len();
        p.with_ut_metadata = stats.peers;
        p.metadata_size = stats.metadata_size;
        p.pieces_total = stats.pieces_total;
        p.pieces_have = stats.pieces_have;
        p.pieces_received = stats.pieces_received;
        p.hash_failures = stats.hash_failures;
        p.peers_dropped = stats.peers_dropped + self.closed_misbehaving;
        let snapshot = *p;
        progress.send_if_modified(|current| {
            let changed = *current != snapshot;
            *current = snapshot;
            changed
        });
    }
}

impl Drop for Driver {
    /// Closes and reports every connection not handed over: on failure, and
    /// when the caller drops the fetch before it ends.
    fn drop(&mut self) {
        for conn in std::mem::take(&mut self.conns).into_values() {
            self.report_exit(conn.addr, ExitKind::blameless(conn.of_use));
        }
        if let Some(mut incoming) = self.incoming.take() {
            incoming.close();
            while let Ok(established) = incoming.try_recv() {
                self.report_exit(established.addr, ExitKind::Fruitless);
            }
        }
        // Dropping `tasks` aborts every connection task.
    }
}

async fn recv_conn(incoming: &mut Option<mpsc::Receiver<Established>>) -> Option<Established> {
    match incoming {
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
