//! One torrent's task: its address book, its dials, and the phase its
//! connections serve, from the first handshake to the last block.
//!
//! Every connection the torrent has, dialed from its [`AddressBook`] or
//! routed to it by the listener, goes to the current phase: the
//! ut_metadata fetch while the info dictionary is missing, the download
//! after. When the metadata verifies, the fetch hands its live
//! connections, with what each peer said so far, to the download: a peer
//! is connected once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lodestone_core::{ErrorChain, InfoHash, Metainfo};
use lodestone_download::swarm::{
    Download, DownloadConfig, DownloadError, DownloadHandle, DownloadProgress, Phase, Stuck,
    Summary,
};
use lodestone_metadata::{FetchError, FetchOptions, Fetched, Progress};
use lodestone_wire::pex::PexReport;
use lodestone_wire::{Established, ExitKind, Handshake, ListenReport, Message, PeerExit, Reserved};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::address_book::{AddressBook, AddressBookConfig, Outcome, PeerSource, Wrapping};
use crate::connection_cap::ConnectionShare;
use crate::fetch_inbox::FetchInbox;
use crate::holepunch::Holepunch;
use crate::peer_ids::PeerIds;
use crate::session::Shared;
use crate::stall::StallReason;
use crate::trackers::{Identity, Trackers, Transfer};
use crate::{dialer, discovery};

/// How often the status is published.
const STATUS_PERIOD: Duration = Duration::from_millis(250);

/// Connections queued between the dialer or listener and a phase.
const HANDOFF_QUEUE: usize = 64;

/// ut_pex reports queued from the phases to the address book; past it a
/// report is dropped (PEX is a hint, and each report is capped already).
const PEX_QUEUE: usize = 64;

/// Tracker replies (each at most 200 peers) queued for the address book;
/// a tier waits while it is full.
const TRACKER_REPLIES_QUEUE: usize = 8;

/// DHT nodes named by `port` messages queued from the download to the
/// DHT; past it one is dropped (each peer names one, and the DHT finds
/// nodes on its own too).
const DHT_NODES_QUEUE: usize = 64;

/// Listen addresses of peers that dialed us, queued from the phases to the
/// address book; past it one is dropped (that peer is then not redialed
/// after it leaves, as before its report).
const LISTENING_QUEUE: usize = 64;

/// Holepunch relays' `connect`s waiting for the torrent task; more are
/// dropped (holepunching is best effort).
const HOLEPUNCH_QUEUE: usize = 16;

/// Picks the files to download once the metainfo is known: `None` for
/// all, or the indices; an `Err` explains a selection that fits no file.
pub type FileFilter = Box<dyn FnOnce(&Metainfo) -> Result<Option<BTreeSet<usize>>, String> + Send>;

/// What to add to a session.
#[derive(Debug, Clone)]
pub enum TorrentSource {
    /// A magnet link: the metainfo comes from peers.
    Magnet(lodestone_core::Magnet),
    /// A torrent whose metainfo we have.
    Metainfo(Arc<Metainfo>),
}

impl TorrentSource {
    /// The swarm's infohash.
    pub fn info_hash(&self) -> InfoHash {
        match self {
            TorrentSource::Magnet(m) => m.info_hash,
            TorrentSource::Metainfo(m) => m.info_hash,
        }
    }
}

/// How to run one torrent.
pub struct AddOptions {
    /// Directory the files go under.
    pub output_dir: PathBuf,
    /// Which files; `None` downloads all.
    pub select: Option<FileFilter>,
    /// Stop seeding once uploaded / wanted bytes reaches this.
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long.
    pub seed_time: Option<Duration>,
    /// Stop once complete, without seeding.
    pub no_seed: bool,
    /// Give up fetching the metadata after this long.
    pub metadata_timeout: Duration,
    /// End once the metadata is verified, downloading nothing (the
    /// metainfo is then in the last [`TorrentStatus`]).
    pub metadata_only: bool,
    /// Peers to try first, as a magnet's `x.pe` (for a torrent added from
    /// a metainfo kept from an earlier run of that magnet).
    pub peers: Vec<SocketAddr>,
    /// Where the resume record is kept (verified pieces and file stamps):
    /// read at start so verified data is not hashed again, written while
    /// running and at the end. `None` keeps none and checks the files.
    pub resume_file: Option<PathBuf>,
    /// Hash every piece on disk again, ignoring the resume record.
    pub recheck: bool,
    /// Refuse to start downloading when the output directory's file system
    /// has less free space than the selected files still need
    /// ([`lodestone_download::space`]).
    pub check_space: bool,
    /// Give up when the download verifies nothing for this long, saying
    /// why ([`TorrentError::Stalled`]); `None` waits forever.
    pub stall_timeout: Option<Duration>,
}

impl AddOptions {
    /// Defaults: every file, seed until removed, 5 minutes for metadata,
    /// free space checked.
    pub fn new(output_dir: impl Into<PathBuf>) -> Self {
        Self {
            output_dir: output_dir.into(),
            select: None,
            seed_ratio: None,
            seed_time: None,
            no_seed: false,
            metadata_timeout: Duration::from_secs(300),
            metadata_only: false,
            peers: Vec::new(),
            resume_file: None,
            recheck: false,
            check_space: true,
            stall_timeout: None,
        }
    }
}

/// Where a torrent is.
#[derive(Debug, Clone, PartialEq)]
pub enum TorrentPhase {
    /// Fetching the info dictionary from peers.
    Metadata(Progress),
    /// Downloading or seeding.
    Download(DownloadProgress),
    /// Paused: no connection, no dial, nothing accepted.
    Paused,
}

/// What the torrent's owner asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Run (the initial state; after a pause, resume).
    Run,
    /// Close every connection and wait, keeping what is verified.
    Pause,
    /// End for good.
    Remove,
}

/// A snapshot of a torrent, published a few times a second.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentStatus {
    /// The phase and its own progress.
    pub phase: TorrentPhase,
    /// The metainfo, once known.
    pub metainfo: Option<Arc<Metainfo>>,
    /// Distinct peer addresses known now.
    pub peers_known: usize,
    /// Dials that failed before the handshake completed.
    pub dial_failures: u64,
    /// Connections made by holepunching (BEP 55).
    pub holepunched: u64,
    /// Nodes in the DHT's routing tables, when this torrent uses the DHT.
    pub dht_nodes: Option<usize>,
    /// The torrent wants peers and has addresses to dial, but holds no
    /// connection and dials no one: other torrents hold every connection
    /// the session allows (`SessionConfig::max_connections`). It dials
    /// again when one of theirs ends, or when, after some seconds, the
    /// download with the most connections closes one for it (or for a
    /// torrent that has waited longer).
    pub held_back: bool,
}

impl TorrentStatus {
    /// Why data is not flowing, if it is not, with the address book's
    /// knowledge added to the download's.
    pub fn stuck(&self) -> Option<Stuck> {
        let TorrentPhase::Download(p) = &self.phase else {
            return None;
        };
        match p.stuck {
            Some(Stuck::NotConnected) if self.peers_known == 0 => Some(Stuck::NoPeersKnown),
            other => other,
        }
    }
}

/// Whether a torrent at `stage` wants peers: fetching its metadata, or
/// downloading (not checking, seeding or paused).
fn peers_wanted(stage: &Stage) -> bool {
    match stage {
        Stage::Paused(_) => false,
        Stage::Metadata { .. } => true,
        Stage::Download { handle, .. } => handle.progress().borrow().phase == Phase::Downloading,
    }
}

/// Where a download stood when it last verified something, for telling a
/// stall from slow progress and saying why it stalled.
#[derive(Debug, Clone, Copy)]
struct LastProgress {
    /// Bytes verified then.
    verified: u64,
    /// When.
    at: Instant,
    /// Dials failed by then, as the address book counts them.
    dial_failures: u64,
}

impl LastProgress {
    fn new(verified: u64, dial_failures: u64) -> Self {
        Self {
            verified,
            at: Instant::now(),
            dial_failures,
        }
    }
}

/// Why a torrent stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    /// The metadata could not be fetched.
    #[error("metadata")]
    Metadata(#[from] FetchError),
    /// The metadata fetch timed out while the torrent held no connection
    /// because other torrents held every one the session allows
    /// (`SessionConfig::max_connections`).
    #[error(
        "metadata: other torrents held every connection the session allows \
         (--max-connections)"
    )]
    MetadataHeldBack(#[source] FetchError),
    /// The file selection fits nothing in the torrent (the user's input).
    #[error("{0}")]
    Selection(String),
    /// The download failed.
    #[error("download")]
    Download(#[from] DownloadError),
    /// Nothing was verified for the stall timeout.
    #[error("no progress: {0}")]
    Stalled(StallReason),
    /// Stopped (removed, or the user interrupted) before the metadata
    /// arrived: nothing was downloaded.
    #[error("stopped before the metadata arrived")]
    StoppedBeforeMetadata,
    /// The torrent's task panicked (a bug).
    #[error("torrent task failed: {0}")]
    Crashed(String),
}

/// The two phases a connection can be handed to.
enum Stage {
    Metadata {
        inbox: FetchInbox<Established>,
        progress: watch::Receiver<Progress>,
        task: tokio::task::JoinHandle<Result<Fetched, FetchError>>,
    },
    Download {
        conns: mpsc::Sender<Established>,
        handle: DownloadHandle,
        /// The download's snapshots, forwarded as they come so that a
        /// follower sees every phase, not only what a tick samples.
        progress: watch::Receiver<DownloadProgress>,
    },
    /// Paused; what the last phase ended with, to report if removed now.
    Paused(Option<Result<Summary, TorrentError>>),
}

/// The torrent's task state.
pub(crate) struct Torrent {
    shared: Arc<Shared>,
    info_hash: InfoHash,
    handshake: Handshake,
    book: AddressBook,
    /// What the book holds, counted against the session's cap.
    connections: ConnectionShare,
    metainfo: Option<Arc<Metainfo>>,
    dials: JoinSet<(SocketAddr, Option<(Established, Wrapping)>)>,
    exits_tx: mpsc::UnboundedSender<PeerExit>,
    wanted: watch::Sender<bool>,
    status: watch::Sender<TorrentStatus>,
    /// Where the download stood when progress was last seen.
    last_progress: LastProgress,
    /// Whether this torrent uses the DHT (not private, a DHT running).
    uses_dht: bool,
    /// The DHT's node count when last asked (each status tick).
    dht_nodes: Option<usize>,
    /// The files selected, once resolved (`None`: all).
    files: Option<BTreeSet<usize>>,
    /// Where the phases send peers learned by ut_pex; `None` for a private
    /// torrent (BEP 27), which neither offers nor takes PEX.
    pex: Option<mpsc::Sender<PexReport>>,
    /// The announces to the torrent's trackers, if it has any and the
    /// session uses trackers.
    trackers: Option<Trackers>,
    /// Where the phases send the listen addresses of peers that dialed us.
    listening_tx: mpsc::Sender<ListenReport>,
    /// Where the download sends DHT nodes that peers name in `port`
    /// messages (BEP 5) after the hand-over.
    dht_nodes_tx: mpsc::Sender<SocketAddr>,
    /// Where the download sends the addresses holepunch relays ask us to
    /// dial; `None` without uTP (the other side's dial could not be
    /// accepted), which leaves ut_holepunch out.
    holepunch_tx: Option<mpsc::Sender<SocketAddr>>,
    holepunch: Holepunch,
    /// The peer each connection reached, to tell two addresses of one peer.
    peer_ids: PeerIds,
}

/// Files a connection's end with the torrent. A connection's listen report
/// is queued before its exit, but the two queues are read in any order:
/// filed first, it keeps the connection's backoff and ban.
fn file_exit(
    t: &mut Torrent,
    stage: &mut Stage,
    listening: &mut mpsc::Receiver<ListenReport>,
    exit: PeerExit,
) {
    while let Ok(r) = listening.try_recv() {
        t.book.listening(r.conn, r.listen);
    }
    t.on_exit(stage, exit);
}

/// Runs a torrent to its end; `incoming` carries connections the listener
/// routed to it, `control` pauses, resumes or removes it.
pub(crate) async fn run(
    shared: Arc<Shared>,
    source: TorrentSource,
    mut options: AddOptions,
    mut incoming: mpsc::Receiver<Established>,
    mut control: watch::Receiver<Control>,
    status: watch::Sender<TorrentStatus>,
) -> Result<Summary, TorrentError> {
    let info_hash = source.info_hash();
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let (found_tx, mut found) = mpsc::channel(256);
    let (pex_tx, mut pex_rx) = mpsc::channel(PEX_QUEUE);
    let (dht_nodes_tx, mut dht_nodes_rx) = mpsc::channel(DHT_NODES_QUEUE);
    let (listening_tx, mut listening_rx) = mpsc::channel(LISTENING_QUEUE);
    let (holepunch_tx, mut holepunch_rx) = mpsc::channel(HOLEPUNCH_QUEUE);
    let (wanted, wanted_rx) = watch::channel(true);
    let mut book = AddressBook::new(AddressBookConfig::default());
    let tiers = tracker_tiers(&source);
    let (metainfo, direct) = match source {
        TorrentSource::Magnet(m) => (None, m.peers),
        TorrentSource::Metainfo(m) => (Some(m), Vec::new()),
    };
    for addr in direct.iter().chain(&options.peers) {
        book.add(*addr, PeerSource::Magnet);
    }
    // BEP 27: a private torrent takes peers from its trackers and the
    // magnet only, and never speaks of itself in the DHT.
    let private = metainfo.as_ref().is_some_and(|m| m.info.private);
    let mut discovery = match (&shared.dht, private) {
        (Some(dht), false) => Some(discovery::spawn(
            dht.clone(),
            info_hash,
            shared.listen_port,
            wanted_rx,
            found_tx,
        )),
        _ => None,
    };
    let (tracker_tx, mut from_trackers) = mpsc::channel(TRACKER_REPLIES_QUEUE);
    let trackers = match &shared.trackers {
        Some(client) if !tiers.is_empty() => {
            let me = Identity {
                info_hash,
                peer_id: shared.peer_id,
                port: shared.listen_port,
                key: rand::random(),
            };
            Some(Trackers::spawn(client, tiers, me, tracker_tx))
        }
        _ => None,
    };
    let holepunch_tx = shared.utp.is_some().then_some(holepunch_tx);
    let mut t = Torrent {
        handshake: Handshake::new(Reserved::LODESTONE, info_hash, shared.peer_id),
        connections: shared.connections.share(),
        shared,
        info_hash,
        book,
        metainfo,
        dials: JoinSet::new(),
        exits_tx,
        wanted,
        status,
        last_progress: LastProgress::new(0, 0),
        uses_dht: discovery.is_some(),
        dht_nodes: None,
        files: None,
        pex: (!private).then_some(pex_tx),
        listening_tx,
        dht_nodes_tx,
        holepunch_tx,
        holepunch: Holepunch::default(),
        peer_ids: PeerIds::default(),
        trackers,
    };
    let mut stage = match t.metainfo.clone() {
        Some(m) => t.start_download(m, &mut options, Vec::new())?,
        None => t.start_metadata(&options),
    };
    let mut tick = tokio::time::interval(STATUS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let freed = t.connections.freed();
    let turnover = t.connections.turnover_requests();
    let result = loop {
        // Listening before looking for a place: one given back while we
        // look wakes us.
        let place_freed = freed.notified();
        // With no room to dial, a due address must not wake us in a loop.
        let next_due = if t.dial_more(&stage) {
            t.book
                .poll_timeout(Instant::now().into_std())
                .map(Instant::from_std)
        } else {
            None
        };
        tokio::select! {
            changed = control.changed() => {
                let asked = if changed.is_err() { Control::Remove } else { *control.borrow_and_update() };
                match (asked, &stage) {
                    (Control::Remove, _) => break t.stop(&mut stage).await,
                    (Control::Pause, Stage::Paused(_))
                    | (Control::Run, Stage::Metadata { .. } | Stage::Download { .. }) => {}
                    (Control::Pause, _) => {
                        let last = t.stop(&mut stage).await;
                        stage = Stage::Paused(Some(last));
                        if let Some(trackers) = &t.trackers {
                            trackers.pause();
                        }
                    }
                    (Control::Run, Stage::Paused(_)) => {
                        stage = match t.metainfo.clone() {
                            Some(m) => t.start_download(m, &mut options, Vec::new())?,
                            None => t.start_metadata(&options),
                        };
                        if let Some(trackers) = &t.trackers {
                            trackers.resume();
                        }
                    }
                }
                t.publish(&stage);
            }
            Some(addr) = found.recv() => {
                t.book.add(addr, PeerSource::Dht);
            }
            Some(r) = listening_rx.recv() => t.book.listening(r.conn, r.listen),
            Some(node) = dht_nodes_rx.recv() => {
                t.learn_dht_ports(vec![node]).await;
            }
            Some(report) = pex_rx.recv() => {
                // A magnet found private turns PEX off in the book: reports
                // already queued are refused there.
                for peer in report.peers {
                    t.book.add_pex(peer.addr, report.from);
                }
            }
            Some(peers) = from_trackers.recv() => {
                for addr in peers {
                    t.book.add(addr, PeerSource::Tracker);
                }
            }
            Some(addr) = holepunch_rx.recv() => t.holepunch_connect(addr),
            Some(conn) = incoming.recv() => t.visitor(&mut stage, conn),
            // Places were given back, or the line moved.
            () = place_freed, if t.connections.is_waiting() => {}
            asked = turnover.asked() => t.turn_over(&stage, asked),
            Some(dialed) = t.dials.join_next() => {
                if let Ok((addr, conn)) = dialed {
                    match conn {
                        Some((conn, wrapping)) => {
                            t.holepunch.dial_worked(addr);
                            t.book.worked(addr, wrapping);
                            t.hand(&mut stage, conn);
                        }
                        None => {
                            // Asked before `ended`, which may forget the
                            // address and its reporter.
                            let rendezvous = t.holepunch.dial_failed(addr, &t.book);
                            t.book.ended(Instant::now().into_std(), addr, Outcome::Failed);
                            if let (Some(r), Stage::Download { handle, .. }) = (rendezvous, &stage) {
                                tracing::debug!(target = %r.target, via = %r.via, "asking for a holepunch rendezvous");
                                t.holepunch.asking(Instant::now().into_std(), r.target);
                                handle.rendezvous(r);
                            }
                        }
                    }
                }
            }
            Some(exit) = exits.recv() => file_exit(&mut t, &mut stage, &mut listening_rx, exit),
            () = sleep_until(next_due) => {}
            end = phase_end(&mut stage) => {
                let fetched = match end {
                    PhaseEnd::Progressed => {
                        t.publish(&stage);
                        continue;
                    }
                    PhaseEnd::Metadata(Ok(Ok(f))) => f,
                    // Timed out with no place to dial from: the cap, not
                    // the peers, kept it from the metadata.
                    PhaseEnd::Metadata(Ok(Err(e @ FetchError::TimedOut(_))))
                        if t.connections.is_shut_out() =>
                    {
                        break Err(TorrentError::MetadataHeldBack(e));
                    }
                    PhaseEnd::Metadata(Ok(Err(e))) => break Err(e.into()),
                    PhaseEnd::Metadata(Err(e)) => break Err(TorrentError::Crashed(e.to_string())),
                    PhaseEnd::Download(result) => break result,
                };
                if fetched.metainfo.info.private {
                    // A magnet turned out private: leave the DHT alone now.
                    if let Some(task) = discovery.take() {
                        task.abort();
                    }
                    t.uses_dht = false;
                    // Nor does it take peers from other peers.
                    t.pex = None;
                    t.book.forget_pex();
                }
                // The places it held were put to use.
                t.connections.connection_of_use();
                let mut conns = fetched.conns;
                // The fetch reported its ends before it returned: filed
                // first, each counts once, and the hand-over below releases
                // only the connections nobody reported.
                while let Ok(exit) = exits.try_recv() {
                    file_exit(&mut t, &mut stage, &mut listening_rx, exit);
                }
                if let Stage::Metadata { inbox, .. } = &mut stage {
                    let rest = inbox.hand_over(conns.iter().map(|c| c.addr));
                    t.release(&rest.missing);
                    conns.extend(rest.late);
                }
                let metainfo = Arc::new(fetched.metainfo);
                t.metainfo = Some(metainfo.clone());
                if options.metadata_only {
                    // The download would replay the peers' early messages,
                    // `port` among them; without it they are read here.
                    t.learn_dht_ports(dht_ports(&conns)).await;
                    t.publish(&stage);
                    break Ok(Summary::default());
                }
                stage = t.start_download(metainfo, &mut options, conns)?;
                t.publish(&stage);
            }
            _ = tick.tick() => {
                if t.connections.ask_for_turnover(Instant::now().into_std()) {
                    tracing::debug!(info_hash = %t.info_hash, "shut out by the connection cap: asked another torrent for a place");
                }
                t.dht_nodes = t.dht_nodes().await;
                t.publish(&stage);
                if let Some(limit) = options.stall_timeout
                    && let Some(reason) = t.stalled(&stage, limit)
                {
                    let _ = t.stop(&mut stage).await;
                    break Err(TorrentError::Stalled(reason));
                }
            }
        }
    };
    if let Some(task) = discovery {
        task.abort();
    }
    t.dials.abort_all();
    // Its phase stopped and its dials aborted, it holds no place, though
    // the trackers' goodbyes may take a while yet.
    t.connections.leave();
    // The last word, so that a follower sees the final phase even when
    // the torrent ended between two ticks.
    t.publish(&stage);
    if let Some(trackers) = t.trackers.take() {
        // No more peers: a tier waiting to hand some over goes on to leave.
        drop(from_trackers);
        trackers.stop().await;
    }
    result
}

/// Connections the torrent could close for another that the session's cap
/// shuts out: the download's but one. A metadata fetch keeps its few, and
/// dials in flight are no connections yet.
fn closable(stage: &Stage) -> usize {
    match stage {
        Stage::Download { progress, .. } => progress.borrow().peers_connected.saturating_sub(1),
        Stage::Metadata { .. } | Stage::Paused(_) => 0,
    }
}

/// The torrent's trackers in BEP 12 tiers: a metainfo's `announce-list`
/// (or `announce`), a magnet's `tr=` each a tier of its own.
fn tracker_tiers(source: &TorrentSource) -> Vec<lodestone_tracker::tier::Tier> {
    let mut rng = rand::rng();
    match source {
        TorrentSource::Magnet(m) => {
            lodestone_tracker::tier::tiers_of(None, &[], &m.trackers, &mut rng)
        }
        TorrentSource::Metainfo(m) => lodestone_tracker::tier::tiers_of(
            m.announce.as_deref(),
            &m.announce_list,
            &[],
            &mut rng,
        ),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the current phase did: moved on, or ended.
enum PhaseEnd {
    /// The download published a snapshot.
    Progressed,
    Metadata(Result<Result<Fetched, FetchError>, tokio::task::JoinError>),
    Download(Result<Summary, TorrentError>),
}

/// Waits for the current phase to move on or end.
async fn phase_end(stage: &mut Stage) -> PhaseEnd {
    match stage {
        Stage::Metadata { task, .. } => PhaseEnd::Metadata(task.await),
        Stage::Download {
            handle, progress, ..
        } => tokio::select! {
            biased;
            changed = progress.changed() => match changed {
                Ok(()) => PhaseEnd::Progressed,
                // The download's task is gone: its end is ready.
                Err(_) => PhaseEnd::Download(handle.join().await.map_err(Into::into)),
            },
            result = handle.join() => PhaseEnd::Download(result.map_err(Into::into)),
        },
        Stage::Paused(_) => std::future::pending().await,
    }
}

impl Torrent {
    fn start_metadata(&self, options: &AddOptions) -> Stage {
        let (inbox, conns_rx) = FetchInbox::new(HANDOFF_QUEUE, self.exits_tx.clone());
        let (progress_tx, progress) = watch::channel(Progress::default());
        let fetch = FetchOptions {
            timeout: options.metadata_timeout,
            max_connections: self.shared.config.max_peers_per_torrent,
            max_connections_per_ip: self.shared.config.max_peers_per_ip,
            listen_port: Some(self.shared.listen_port),
            pex: self.pex.clone(),
            listening: Some(self.listening_tx.clone()),
            ..FetchOptions::default()
        };
        let (info_hash, exits) = (self.info_hash, self.exits_tx.clone());
        let task = tokio::spawn(async move {
            lodestone_metadata::fetch_metainfo(info_hash, conns_rx, exits, fetch, &progress_tx)
                .await
        });
        Stage::Metadata {
            inbox,
            progress,
            task,
        }
    }

    fn start_download(
        &mut self,
        metainfo: Arc<Metainfo>,
        options: &mut AddOptions,
        handed: Vec<Established>,
    ) -> Result<Stage, TorrentError> {
        // Resolved once: a resume after a pause keeps the selection.
        if let Some(select) = options.select.take() {
            self.files = select(&metainfo).map_err(TorrentError::Selection)?;
        }
        let cfg = &self.shared.config;
        let mut config = DownloadConfig::new(&options.output_dir, self.shared.peer_id);
        config.files = self.files.clone();
        config.listen_port = Some(self.shared.listen_port);
        config.max_connections = cfg.max_peers_per_torrent;
        config.max_connections_per_ip = cfg.max_peers_per_ip;
        config.download_limit = self.shared.download_limit.clone();
        config.upload_limit = self.shared.upload_limit.clone();
        config.hash_pool = Some(self.shared.hash_pool.clone());
        config.hash_threads = cfg.hash_threads;
        config.seed_ratio = options.seed_ratio;
        config.seed_time = options.seed_time;
        config.no_seed = options.no_seed;
        config.resume_file = options.resume_file.clone();
        config.recheck = options.recheck;
        config.check_space = options.check_space;
        config.pex = self.pex.clone();
        config.listening = Some(self.listening_tx.clone());
        config.dht_nodes = self.uses_dht.then(|| self.dht_nodes_tx.clone());
        config.holepunch = self.holepunch_tx.clone();
        let (conns, conns_rx) = mpsc::channel(HANDOFF_QUEUE.max(handed.len()));
        for conn in handed {
            // Room was made for every one of them above.
            let _ = conns.try_send(conn);
        }
        let handle = Download::start(metainfo, config, conns_rx, self.exits_tx.clone());
        let progress = handle.progress();
        Ok(Stage::Download {
            conns,
            handle,
            progress,
        })
    }

    /// Dials addresses from the book while there is room, in the torrent
    /// and in the session, and peers are wanted. Returns whether there is
    /// room left (then the book has nothing due).
    fn dial_more(&mut self, stage: &Stage) -> bool {
        let wanted = peers_wanted(stage);
        self.wanted
            .send_if_modified(|w| std::mem::replace(w, wanted) != wanted);
        // Reported on every pass, dialing or not: connections that ended
        // make room for the session's other torrents.
        self.connections.report(self.book.stats().busy);
        self.connections.offer(closable(stage));
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let now = Instant::now().into_std();
        loop {
            if !wanted
                || self.dials.len() >= cfg.max_dials_per_torrent
                || self.book.stats().busy >= cfg.max_peers_per_torrent
            {
                self.connections.stop_waiting();
                return false;
            }
            // Nothing due: no place taken to give straight back, and no
            // wait that would hold others back.
            if !self.book.has_due(now) {
                self.connections.stop_waiting();
                return true;
            }
            if !self.connections.take_place_or_wait() {
                return false;
            }
            let Some(addr) = self.book.next_dial(now) else {
                self.connections.give_back_unused();
                return true;
            };
            self.spawn_dial(addr, cfg.transport.tcp());
        }
    }

    /// Dials `addr` (over TCP too if `tcp`, over uTP if it is on); the
    /// outcome comes back through `dials`.
    fn spawn_dial(&mut self, addr: SocketAddr, tcp: bool) {
        let cfg = &self.shared.config;
        let (timeout, ours) = (cfg.connect_timeout, self.handshake);
        let (policy, known) = (cfg.encryption, self.book.wrapping(addr));
        let utp = self.shared.utp.clone();
        self.dials.spawn(async move {
            match dialer::dial(addr, timeout, ours, policy, known, tcp, utp.as_ref()).await {
                Ok(conn) => (addr, Some(conn)),
                Err(e) => {
                    tracing::debug!(%addr, "dial failed: {}", ErrorChain(&e));
                    (addr, None)
                }
            }
        });
    }

    /// A holepunch relay asks us to dial `addr`: over uTP only, now, if
    /// [`Holepunch::connect`] agrees; the other side dials us at the same
    /// time, which opens its NAT or firewall to our packets.
    fn holepunch_connect(&mut self, addr: SocketAddr) {
        // Filed, dialed and ended under one name.
        let addr = crate::address_book::canonical(addr);
        let cfg = &self.shared.config;
        let bound: Vec<std::net::IpAddr> = [
            cfg.listen_ipv4.map(Into::into),
            cfg.listen_ipv6.map(Into::into),
        ]
        .into_iter()
        .flatten()
        .collect();
        let ours = (self.shared.listen_port, &bound[..]);
        let now = Instant::now().into_std();
        if !self.connections.take_place() {
            return;
        }
        if self.holepunch.connect(now, addr, ours, &mut self.book) {
            self.spawn_dial(addr, false);
        } else {
            self.connections.give_back_unused();
        }
    }

    /// The session asks for `connections` of ours to be closed, for a
    /// torrent its cap shuts out: the download picks them. A phase that
    /// offered none (see [`closable`]) has none to give.
    fn turn_over(&self, stage: &Stage, connections: usize) {
        if let Stage::Download { handle, .. } = stage {
            tracing::debug!(info_hash = %self.info_hash, connections, "closing connections for a torrent the cap shuts out");
            for _ in 0..connections {
                handle.close_one_peer();
            }
        }
    }

    /// A peer connected to us for this torrent: handed to the phase if the
    /// caps and the book let it in.
    fn visitor(&mut self, stage: &mut Stage, conn: Established) {
        let addr = conn.addr;
        // Those the torrent would not keep are refused before they take a
        // place: past the cap, a place may cost another torrent a
        // connection.
        if matches!(stage, Stage::Paused(_))
            || self.book.is_banned(addr)
            || conn.theirs.peer_id == self.shared.peer_id
        {
            tracing::debug!(peer = %addr, "refused: paused, banned, or our own id");
            return;
        }
        if !self
            .connections
            .take_place_for_incoming(Instant::now().into_std())
        {
            tracing::debug!(peer = %addr, "refused: the session holds its most connections");
            return;
        }
        let filed = self.book.incoming(addr);
        debug_assert!(filed, "the book refuses only the banned");
        self.holepunch.incoming(addr);
        self.hand(stage, conn);
    }

    /// Gives a handshaken connection to the current phase.
    fn hand(&mut self, stage: &mut Stage, conn: Established) {
        let (addr, peer, dialed) = (conn.addr, conn.theirs.peer_id, !conn.incoming);
        let now = Instant::now().into_std();
        if peer == self.shared.peer_id {
            // Ourselves, through some address of ours: never dialed again.
            // (A visitor with our id is refused before it gets here: anyone
            // can claim it, and shunning each of its ports would fill the
            // list of bans.)
            self.book.ended(now, addr, Outcome::Ourselves);
            return;
        }
        let sent = match stage {
            Stage::Metadata { inbox, .. } => inbox.offer(addr, conn),
            Stage::Download { conns, .. } => conns.try_send(conn).is_ok(),
            Stage::Paused(_) => false,
        };
        if sent {
            if let Some(alias) = self.peer_ids.connected(now, addr, peer, dialed) {
                // The peer left from another address of its lately (one of
                // two connections closed): that one stands for this.
                self.book.alias(addr, alias);
            }
        } else {
            // Paused, or the phase's queue is full: our doing, not the
            // peer's.
            self.book.ended(now, addr, Outcome::Unused);
        }
    }

    fn on_exit(&mut self, stage: &mut Stage, exit: PeerExit) {
        if let Stage::Metadata { inbox, .. } = stage {
            inbox.exited(exit.addr);
        }
        let outcome = match exit.kind {
            ExitKind::OfUse => Outcome::OfUse,
            ExitKind::Fruitless | ExitKind::Duplicate => Outcome::Fruitless,
            ExitKind::Misbehaved => Outcome::Misbehaved,
        };
        if outcome == Outcome::OfUse {
            self.connections.connection_of_use();
        }
        // Its peer closed one of two (see `PeerIds::has_twin_elsewhere`).
        let filed = match outcome {
            Outcome::OfUse if self.peer_ids.has_twin_elsewhere(exit.addr) => Outcome::Fruitless,
            _ => outcome,
        };
        let now = Instant::now().into_std();
        self.book.ended(now, exit.addr, filed);
        self.peer_left(now, exit.addr, outcome == Outcome::Misbehaved);
    }

    /// The connection at `addr` ended, and the book knows: if another
    /// address of the same peer is connected, this one is not dialed while
    /// that connection lasts.
    fn peer_left(&mut self, now: std::time::Instant, addr: SocketAddr, misbehaved: bool) {
        if let Some(kept) = self.peer_ids.ended(now, addr, misbehaved) {
            self.book.alias(kept, addr);
        }
    }

    /// Connections the fetch had that neither came back nor reported their
    /// end count as ended, unused (how they went is not known), so their
    /// addresses are not busy forever.
    fn release(&mut self, missing: &[SocketAddr]) {
        let now = Instant::now().into_std();
        for &addr in missing {
            self.book.ended(now, addr, Outcome::Unused);
            self.peer_left(now, addr, false);
        }
    }

    /// BEP 5: a peer's `port` message names its DHT node; ask the DHT to
    /// ping it (and add it if it answers).
    async fn learn_dht_ports(&self, nodes: Vec<SocketAddr>) {
        let (Some(dht), true) = (&self.shared.dht, self.uses_dht) else {
            return;
        };
        for node in nodes {
            let _ = dht.add_node(node).await;
        }
    }

    fn publish(&self, stage: &Stage) {
        let stats = self.book.stats();
        let phase = match stage {
            Stage::Metadata { progress, .. } => {
                let mut p = *progress.borrow();
                p.peers_known = stats.known;
                p.connecting = self.dials.len();
                p.connect_failures = stats.failures as usize;
                TorrentPhase::Metadata(p)
            }
            Stage::Download { handle, .. } => {
                TorrentPhase::Download(handle.progress().borrow().clone())
            }
            Stage::Paused(_) => TorrentPhase::Paused,
        };
        let wants_peers = peers_wanted(stage);
        if let Some(trackers) = &self.trackers {
            match &phase {
                TorrentPhase::Download(p) => {
                    let left = p.wanted_bytes.saturating_sub(p.verified_bytes);
                    trackers.update(Transfer {
                        uploaded: p.uploaded,
                        downloaded: p.downloaded,
                        left: Some(left),
                        // Completed by this session's download, not found
                        // complete on disk.
                        completed: left == 0 && p.downloaded > 0,
                    });
                }
                TorrentPhase::Metadata(_) => trackers.update(Transfer::default()),
                TorrentPhase::Paused => {}
            }
        }
        self.status.send_replace(TorrentStatus {
            phase,
            metainfo: self.metainfo.clone(),
            peers_known: stats.known,
            dial_failures: stats.failures,
            holepunched: self.holepunch.connected(),
            dht_nodes: self.dht_nodes,
            // Only while peers are wanted: a torrent that has just become
            // a seeder leaves the line at its next pass, after this.
            held_back: wants_peers && self.connections.is_shut_out(),
        });
    }

    /// Why the download has verified nothing for `limit`, if it has not.
    /// The metadata phase has its own timeout, and seeding cannot stall.
    fn stalled(&mut self, stage: &Stage, limit: Duration) -> Option<StallReason> {
        let Stage::Download { handle, .. } = stage else {
            // The clock starts with the download: a long metadata phase (it
            // has its own timeout) or a pause is no stall.
            self.last_progress = LastProgress::new(0, self.book.stats().failures);
            return None;
        };
        let (verified, phase) = {
            let p = handle.progress();
            let p = p.borrow();
            (p.verified_bytes, p.phase)
        };
        let dial_failures = self.book.stats().failures;
        if verified != self.last_progress.verified
            || !matches!(phase, Phase::Checking | Phase::Downloading)
        {
            self.last_progress = LastProgress::new(verified, dial_failures);
            return None;
        }
        if self.last_progress.at.elapsed() < limit {
            return None;
        }
        let status = self.status.borrow().clone();
        let dht_nodes = self.dht_nodes;
        let bootstrap = self
            .shared
            .config
            .dht
            .as_ref()
            .map_or_else(Vec::new, |d| d.bootstrap.clone());
        Some(StallReason::diagnose(
            status.peers_known,
            dht_nodes,
            &bootstrap,
            status.stuck(),
            // Shut out now, and no dial of its own failed meanwhile: the
            // cap, not the peers, is what kept it from connecting.
            status.held_back && dial_failures == self.last_progress.dial_failures,
        ))
    }

    /// The DHT's routing-table size, if this torrent uses the DHT.
    async fn dht_nodes(&self) -> Option<usize> {
        match (&self.shared.dht, self.uses_dht) {
            (Some(dht), true) => dht.stats().await.ok().map(|s| s.ipv4_nodes + s.ipv6_nodes),
            _ => None,
        }
    }

    /// Stops the current phase and reports how far it got.
    async fn stop(&mut self, stage: &mut Stage) -> Result<Summary, TorrentError> {
        // Stopping may take a while (pieces still being written): others
        // must not wait behind us meanwhile.
        self.connections.stop_waiting();
        match stage {
            Stage::Paused(last) => last
                .take()
                .unwrap_or(Err(TorrentError::StoppedBeforeMetadata)),
            Stage::Metadata { task, .. } => {
                task.abort();
                Err(TorrentError::StoppedBeforeMetadata)
            }
            Stage::Download { handle, .. } => {
                handle.shutdown();
                Ok(handle.join().await?)
            }
        }
    }
}

/// The DHT nodes that peers named in a `port` message while the
/// connection was in the metadata phase: one per peer (its last word), so
/// a peer repeating the message cannot make us ping many ports of its IP.
fn dht_ports(conns: &[Established]) -> Vec<SocketAddr> {
    conns
        .iter()
        .filter_map(|conn| {
            conn.early.iter().rev().find_map(|message| match message {
                Message::Port(port) if *port != 0 => Some(SocketAddr::new(conn.addr.ip(), *port)),
                _ => None,
            })
        })
        .collect()
}
