//! The task that runs a download: resume, connections, verdicts, choking,
//! progress, seeding policy, shutdown.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lodestone_core::{ErrorChain, Metainfo, host_of};
use lodestone_wire::{Established, ExitKind, Handshake, PeerExit, Reserved};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::fifo_map::FifoMap;
use super::peer::{self, PeerEnd};
use super::progress::{DownloadProgress, Phase, Stuck, Summary};
use super::resume_keeper::ResumeKeeper;
use super::session::{PeerError, SessionConfig};
use super::shared::{CloseReason, PeerCmd, Shared, State};
use super::torrent::Torrent;
use super::{DownloadConfig, DownloadError, Rendezvous};
use crate::bitfield::Bitfield;
use crate::choke::{Choker, ChokerConfig, PeerStats};
use crate::layout::{Layout, PieceIndex};
use crate::picker::PeerKey;
use crate::storage::Storage;
use crate::verify::{CheckOutcome, Checked, HashPool, PieceHash, PieceHasher};

/// How often progress is published and the choker's rounds come due (a
/// change that may move an upload slot consults it at once).
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// Connections short of the limit at which the torrent counts as crowded
/// (libtorrent's margin for letting go of peers of no use to either side).
const CROWDED_MARGIN: usize = 5;

/// Completed pieces waiting for the hash pool, in bytes, before requests
/// pause: bounds memory when hashing or the disk is slower than the network.
const HASH_BACKLOG_BYTES: u64 = 4 << 20;

/// Addresses banned for bad data that a download remembers at once; past
/// it the oldest ban is forgotten (the session's address book keeps its
/// own bounded list).
const MAX_BANNED: usize = 4096;

/// Departed keys whose addresses are kept for blame. A key is needed only
/// until the pieces it sent are verified or their failure records
/// (`Blame`, 64 pieces) are dropped; if 4,096 connections end first, a
/// liar among them goes unconvicted for that piece, as when `Blame` drops
/// its oldest record.
const MAX_DEPARTED: usize = 4096;

type PeerResult = (PeerKey, SocketAddr, PeerEnd);

/// What the coordinator is handed while it runs, besides its stop signal.
pub(super) struct Inputs {
    /// Handshaken connections to run.
    pub(super) conns: mpsc::Receiver<Established>,
    /// Holepunch rendezvous to ask for.
    pub(super) rendezvous: mpsc::Receiver<Rendezvous>,
    /// Requests to close the connection we would miss least.
    pub(super) close_one: mpsc::Receiver<()>,
}

struct Coordinator {
    shared: Arc<Shared>,
    started: Instant,
    phase: Phase,
    no_seed: bool,
    seed_ratio: Option<f64>,
    seed_time: Option<Duration>,
    seeding_since: Option<Instant>,
    max_connections: usize,
    max_connections_per_ip: usize,
    active: HashSet<SocketAddr>,
    /// Peers told to close for turnover, not yet gone: not picked twice.
    turning_over: HashSet<PeerKey>,
    /// Peers whose data failed the hash check; their connections are
    /// closing and the session's address book will not dial them again.
    /// The most recent [`MAX_BANNED`]: a liar rotating addresses cannot
    /// grow it without end.
    banned: FifoMap<SocketAddr, ()>,
    exits: mpsc::UnboundedSender<PeerExit>,
    /// The address of each running connection's key.
    key_addrs: HashMap<PeerKey, SocketAddr>,
    /// The addresses of the last [`MAX_DEPARTED`] keys to end: a piece one
    /// helped with may fail its hash after it left, and the blame must
    /// reach its address then. Older ones have had their pieces verified
    /// or failed long since.
    departed: FifoMap<PeerKey, SocketAddr>,
    next_key: u32,
    tasks: JoinSet<PeerResult>,
    choker: Choker,
    wanted: Bitfield,
    wanted_bytes: u64,
    verified_bytes: u64,
    /// Re-check verdicts still to come.
    checking: u32,
    summary: Summary,
    progress: watch::Sender<DownloadProgress>,
}

/// Runs the download described by the arguments to its end.
pub(super) async fn run(
    metainfo: Arc<Metainfo>,
    mut config: DownloadConfig,
    inputs: Inputs,
    exits: mpsc::UnboundedSender<PeerExit>,
    progress: watch::Sender<DownloadProgress>,
    mut stop: watch::Receiver<bool>,
) -> Result<Summary, DownloadError> {
    let Inputs {
        mut conns,
        mut rendezvous,
        mut close_one,
    } = inputs;
    let started = Instant::now();
    let info = &metainfo.info;
    let layout = Arc::new(Layout::from_info(info)?);
    let storage = Arc::new(Storage::for_files(
        config.output_dir.clone(),
        layout.clone(),
        info,
        |i| config.files.as_ref().is_none_or(|s| s.contains(&i)),
    )?);
    let hashes: Arc<[PieceHash]> = info.piece_hashes.clone().into();
    let threads = config.hash_threads.max(1);

    let (mut resume, start) = ResumeKeeper::start(
        storage.clone(),
        hashes.clone(),
        metainfo.info_hash,
        config.resume_file.take(),
        config.recheck,
        config.check_space,
        threads,
    )
    .await?;
    let have = start.trusted;

    let (checked_tx, mut checked) = mpsc::unbounded_channel();
    let pool = config
        .hash_pool
        .take()
        .unwrap_or_else(|| HashPool::new(threads))
        .attach(storage.clone(), hashes, checked_tx)?;
    let wanted = storage.wanted_pieces();
    let mut servable = Bitfield::new(layout.piece_count());
    for p in have.iter_ones() {
        if layout.piece(p).is_some_and(|p| storage.is_stored(p)) {
            servable.set(p);
        }
    }
    let seed = config.rng_seed.unwrap_or_else(rand::random);
    let piece_bytes = |bits: &Bitfield| -> u64 {
        bits.iter_ones()
            .filter_map(|p| layout.piece(p))
            .map(|p| u64::from(layout.piece_len(p)))
            .sum()
    };
    let mut resumed = wanted.clone();
    for p in wanted.iter_ones().filter(|&p| !have.get(p)) {
        resumed.clear(p);
    }
    let now = Instant::now();
    let hash_backlog = (HASH_BACKLOG_BYTES / u64::from(layout.piece_length())).max(4) as usize;
    let mut torrent = Torrent::new(
        layout.clone(),
        wanted.clone(),
        have.clone(),
        servable,
        seed,
        hash_backlog,
        now,
    );
    torrent.set_open_limit(super::torrent::open_piece_limit(layout.piece_length()));
    start.to_check.iter().for_each(|&p| torrent.withhold(p));
    torrent.set_limits(config.download_limit.clone(), config.upload_limit.clone());
    let state = State {
        torrent,
        pool: Some(pool),
        peers: HashMap::new(),
    };
    let handshake = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, config.peer_id);
    let shared = Arc::new(Shared {
        session: SessionConfig {
            metainfo: metainfo.clone(),
            layout: layout.clone(),
            reserved: handshake.reserved,
            listen_port: config.listen_port,
            stall_timeout: config.stall_timeout,
            pex: config.pex.is_some() && !metainfo.info.private,
            holepunch: config.pex.is_some() && config.holepunch.is_some() && !metainfo.info.private,
        },
        pex: config.pex.clone().filter(|_| !metainfo.info.private),
        holepunch: config.holepunch.clone().filter(|_| !metainfo.info.private),
        dht_nodes: config.dht_nodes.clone().filter(|_| !metainfo.info.private),
        listening: config.listening.clone(),
        handshake,
        layout: layout.clone(),
        storage,
        rechoke: Notify::new(),
        state: Mutex::new(state),
    });
    let mut c = Coordinator {
        shared,
        started,
        phase: Phase::Downloading,
        no_seed: config.no_seed,
        seed_ratio: config.seed_ratio,
        seed_time: config.seed_time,
        seeding_since: None,
        max_connections: config.max_connections.max(1),
        max_connections_per_ip: config.max_connections_per_ip.max(1),
        active: HashSet::new(),
        turning_over: HashSet::new(),
        banned: FifoMap::new(MAX_BANNED),
        exits,
        key_addrs: HashMap::new(),
        departed: FifoMap::new(MAX_DEPARTED),
        next_key: 0,
        tasks: JoinSet::new(),
        choker: Choker::new(
            ChokerConfig::default(),
            StdRng::seed_from_u64(seed ^ 0x00c0_ffee),
        ),
        wanted_bytes: piece_bytes(&wanted),
        verified_bytes: piece_bytes(&resumed),
        checking: start.to_check.len() as u32,
        wanted,
        summary: Summary {
            pieces_resumed: resumed.count_ones(),
            pieces_rechecked: start.to_check.len() as u32,
            ..Summary::default()
        },
        progress,
    };

    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conns_open = true;
    let result = loop {
        c.check_complete();
        if c.policy_met() {
            break Ok(());
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                // A dropped handle counts as a stop: nobody can wait for us.
                if changed.is_err() || *stop.borrow() {
                    break Ok(());
                }
            }
            Some(verdict) = checked.recv() => {
                let mut result = c.on_checked(verdict);
                while result.is_ok()
                    && let Ok(verdict) = checked.try_recv()
                {
                    result = c.on_checked(verdict);
                }
                if let Err(e) = result {
                    break Err(e);
                }
            }
            conn = conns.recv(), if conns_open => match conn {
                Some(conn) => c.adopt(conn),
                None => conns_open = false,
            },
            Some(done) = c.tasks.join_next() => {
                if let Ok(done) = done {
                    c.on_peer_exit(done);
                }
            }
            (piece, good) = resume.next_verdict() => c.on_rechecked(piece, good),
            Some(Rendezvous { via, target }) = rendezvous.recv() => {
                let mut st = c.shared.lock();
                let asked = st.torrent.rendezvous_via(via, target);
                tracing::debug!(%via, %target, asked, "holepunch rendezvous");
                st.dispatch();
            }
            Some(()) = close_one.recv() => c.close_least_useful(),
            () = c.shared.rechoke.notified() => c.rechoke(),
            _ = tick.tick() => {
                c.housekeeping();
                resume.tick(&c.shared.lock().torrent.servable);
            }
        }
    };
    // Connections queued for us and never adopted end here too: whoever
    // handed them over holds their addresses busy until told.
    conns.close();
    while let Ok(conn) = conns.try_recv() {
        let _ = c.exits.send(PeerExit::new(conn.addr, ExitKind::Fruitless));
    }
    c.finish(&mut checked).await;
    let verified = c.shared.lock().torrent.servable.clone();
    resume.finish(verified).await;
    result.map(|()| c.summary.clone())
}

impl Coordinator {
    fn next_key(&mut self) -> PeerKey {
        self.next_key = self.next_key.wrapping_add(1);
        PeerKey(self.next_key)
    }

    /// A handshaken connection from the session (dialed, accepted, or
    /// handed over by the metadata fetch): run it unless a limit says no.
    fn adopt(&mut self, conn: Established) {
        let addr = conn.addr;
        // By host, as the listener counts: an IPv6 /64 is one.
        let host = host_of(addr.ip());
        let same_ip = self
            .active
            .iter()
            .filter(|a| host_of(a.ip()) == host)
            .count();
        if self.banned.contains_key(&addr)
            || self.active.contains(&addr)
            || self.tasks.len() >= self.max_connections
            || same_ip >= self.max_connections_per_ip
        {
            tracing::debug!(%addr, same_ip, "connection refused");
            let kind = ExitKind::Fruitless.or_misbehaved(self.banned.contains_key(&addr));
            let _ = self.exits.send(PeerExit::new(addr, kind));
            return;
        }
        let key = self.next_key();
        self.active.insert(addr);
        self.key_addrs.insert(key, addr);
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            let end = peer::run(shared, key, conn).await;
            (key, addr, end)
        });
        self.note_crowding();
    }

    /// Tells the sessions whether few connection slots are left: then one
    /// of use to neither side makes room ([`Torrent::is_crowded`]).
    fn note_crowding(&self) {
        let crowded = self.tasks.len() + CROWDED_MARGIN >= self.max_connections;
        self.shared.lock().torrent.set_crowded(crowded);
    }

    fn on_peer_exit(&mut self, (key, addr, end): PeerResult) {
        self.note_crowding();
        if let Some(addr) = self.key_addrs.remove(&key) {
            self.departed.insert(key, addr);
        }
        self.active.remove(&addr);
        self.turning_over.remove(&key);
        if let Err(e) = &end.result {
            tracing::debug!(%addr, "peer connection ended: {}", ErrorChain(e));
        }
        let kind = match &end.result {
            _ if self.banned.contains_key(&addr) => ExitKind::Misbehaved,
            Err(e) if e.is_peer_fault() => ExitKind::Misbehaved,
            Err(e) if e.is_duplicate() => ExitKind::Duplicate,
            // Of no use lately, whatever crossed it before: backed off, not
            // redialed at once only to be let go again.
            Err(PeerError::NoInterest) => ExitKind::Fruitless,
            _ => ExitKind::blameless(end.exchanged),
        };
        let _ = self.exits.send(PeerExit::new(addr, kind));
    }

    /// A hash verdict from the pool.
    fn on_checked(&mut self, verdict: Checked) -> Result<(), DownloadError> {
        let Checked {
            piece,
            outcome,
            buffer,
        } = verdict;
        let shared = self.shared.clone();
        let mut st = shared.lock();
        match outcome {
            CheckOutcome::Verified => {
                let stored = shared.storage.is_stored(piece);
                let verified = st.torrent.piece_verified(piece, buffer, stored);
                for k in verified.banned {
                    self.ban(&mut st, k);
                }
                if verified.news {
                    self.on_verified(piece, false);
                }
            }
            CheckOutcome::HashMismatch => {
                self.summary.hash_failures += 1;
                for k in st.torrent.piece_failed(piece, buffer) {
                    self.ban(&mut st, k);
                }
            }
            CheckOutcome::WriteFailed(e) => return Err(e.into()),
        }
        st.dispatch();
        Ok(())
    }

    /// A re-check verdict on a piece found on disk at start.
    fn on_rechecked(&mut self, piece: PieceIndex, good: bool) {
        self.checking = self.checking.saturating_sub(1);
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if good {
            let stored = shared.storage.is_stored(piece);
            if st.torrent.found_on_disk(piece, stored) {
                self.on_verified(piece, true);
            }
        } else {
            st.torrent.recheck_failed(piece);
        }
        st.dispatch();
    }

    /// A piece is verified on disk: downloaded now, or `resumed` from disk.
    fn on_verified(&mut self, piece: PieceIndex, resumed: bool) {
        if resumed {
            self.summary.pieces_resumed += 1;
        } else {
            self.summary.pieces_verified += 1;
        }
        if self.wanted.get(piece.get()) {
            self.verified_bytes += u64::from(self.shared.layout.piece_len(piece));
        }
    }

    fn ban(&mut self, st: &mut State, key: PeerKey) {
        let Some(&addr) = self.key_addrs.get(&key).or(self.departed.get(&key)) else {
            return;
        };
        if !self.banned.insert(addr, ()) {
            // Its other pieces in flight failed too.
            return;
        }
        tracing::warn!(%addr, "banning peer: its data failed the hash check");
        self.summary.peers_banned += 1;
        if let Some(p) = st.peers.get(&key) {
            // Its exit will carry the ban to the session.
            let _ = p.tx.send(PeerCmd::Close(CloseReason::Banned));
        } else {
            let _ = self.exits.send(PeerExit::new(addr, ExitKind::Misbehaved));
        }
    }

    /// The session needs a place for a torrent its cap shuts out: closes
    /// the connection we would miss least ([`least_useful`]).
    fn close_least_useful(&mut self) {
        let st = self.shared.lock();
        let candidates = st
            .peers
            .iter()
            // Not one already closing: told to by an earlier ask, or banned.
            .filter(|(key, _)| {
                !self.turning_over.contains(key)
                    && !self
                        .key_addrs
                        .get(key)
                        .is_some_and(|addr| self.banned.contains_key(addr))
            })
            .map(|(&key, e)| Usefulness {
                key,
                serves_us: !e.choking_us && st.torrent.picker.is_interesting(key),
                download_rate: e.download_rate,
                wants_ours: e.interested,
                upload_rate: e.upload_rate,
                connected_at: e.connected_at,
            });
        let Some(key) = least_useful(candidates) else {
            return;
        };
        // Found in `peers` under this lock, so it is there.
        if let Some(p) = st.peers.get(&key) {
            tracing::debug!(addr = ?self.key_addrs.get(&key), "closing a connection for another torrent");
            let _ = p.tx.send(PeerCmd::Close(CloseReason::Turnover));
            self.turning_over.insert(key);
        }
    }

    fn check_complete(&mut self) {
        if self.phase != Phase::Downloading || !self.shared.lock().torrent.picker.is_complete() {
            return;
        }
        let now = Instant::now();
        self.summary.complete = true;
        self.summary.download_time = now - self.started;
        self.seeding_since = Some(now);
        self.phase = Phase::Seeding;
        self.publish();
    }

    /// Whether the download is complete and the seeding policy satisfied.
    fn policy_met(&self) -> bool {
        let Some(since) = self.seeding_since else {
            return false;
        };
        if self.no_seed {
            return true;
        }
        let (uploaded, downloaded) = {
            let counters = &self.shared.lock().torrent.counters;
            (counters.uploaded, counters.downloaded)
        };
        let by_time = self.seed_time.is_some_and(|t| since.elapsed() >= t);
        // Seeding means every wanted byte is held.
        let ratio = crate::ratio::share_ratio(uploaded, downloaded, self.wanted_bytes);
        let by_ratio = self.seed_ratio.is_some_and(|r| ratio >= r);
        by_time || by_ratio
    }

    fn housekeeping(&mut self) {
        self.rechoke();
        self.publish();
    }

    /// Runs the choker: its rate-based and optimistic rounds when they are
    /// due, and otherwise only filling the slots of peers that left or lost
    /// interest, which is cheap enough to do whenever a slot may change
    /// hands ([`Shared::rechoke`]).
    fn rechoke(&mut self) {
        let now = Instant::now();
        let shared = self.shared.clone();
        let st = shared.lock();
        let stats: Vec<PeerStats> = st
            .peers
            .iter()
            .map(|(&peer, e)| PeerStats {
                peer,
                interested: e.interested,
                download_rate: e.download_rate,
                upload_rate: e.upload_rate,
                connected_at: e.connected_at,
            })
            .collect();
        let changes = self
            .choker
            .tick(now, &stats, st.torrent.picker.is_complete());
        for (keys, choke) in [(changes.choke, true), (changes.unchoke, false)] {
            for k in keys {
                if let Some(p) = st.peers.get(&k) {
                    let _ = p.tx.send(PeerCmd::Choke(choke));
                }
            }
        }
    }

    fn publish(&self) {
        let snapshot = self.snapshot();
        self.progress.send_replace(snapshot);
    }

    fn snapshot(&self) -> DownloadProgress {
        let now = Instant::now();
        let mut st = self.shared.lock();
        let pieces_wanted = self.wanted.count_ones();
        let download_rate = st.torrent.counters.down_rate.rate(now);
        let stuck = (self.phase == Phase::Downloading)
            .then(|| self.stuck(&st))
            .flatten();
        DownloadProgress {
            phase: self.phase,
            verified_bytes: self.verified_bytes,
            wanted_bytes: self.wanted_bytes,
            pieces_done: pieces_wanted - st.torrent.picker.remaining(),
            pieces_wanted,
            pieces_checking: self.checking,
            downloaded: st.torrent.counters.downloaded,
            uploaded: st.torrent.counters.uploaded,
            download_rate,
            upload_rate: st.torrent.counters.up_rate.rate(now),
            peers_connected: st.peers.len(),
            stuck,
        }
    }

    fn stuck(&self, st: &State) -> Option<Stuck> {
        if st.peers.is_empty() {
            return Some(Stuck::NotConnected);
        }
        let mut useful = st
            .peers
            .iter()
            .filter(|(k, _)| st.torrent.picker.is_interesting(**k))
            .peekable();
        if useful.peek().is_none() {
            return Some(Stuck::NobodyHasMissing);
        }
        useful
            .all(|(_, e)| e.choking_us)
            .then_some(Stuck::AllChoking)
    }

    /// Stops every peer, lets the hash pool finish and write what it holds,
    /// and records the final numbers.
    async fn finish(&mut self, checked: &mut mpsc::UnboundedReceiver<Checked>) {
        // Aborted tasks return no end: whether each connection was of use
        // is read before they go.
        let of_use: HashSet<SocketAddr> = {
            let st = self.shared.lock();
            st.peers
                .iter()
                .filter(|(_, p)| p.exchanged)
                .filter_map(|(key, _)| self.key_addrs.get(key).copied())
                .collect()
        };
        self.tasks.abort_all();
        // A task that ended before the abort still says how; aborted ones
        // say nothing and are reported below.
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(end) = joined {
                self.on_peer_exit(end);
            }
        }
        // Every connection we held ends here: whoever dialed it must know.
        for addr in std::mem::take(&mut self.active) {
            let kind = ExitKind::blameless(of_use.contains(&addr))
                .or_misbehaved(self.banned.contains_key(&addr));
            let _ = self.exits.send(PeerExit::new(addr, kind));
        }
        let pool = self.shared.lock().pool.take();
        // The pool's threads finish our queued pieces: wait for them, on a
        // blocking thread.
        // hashed and written: blocking work.
        let _ = tokio::task::spawn_blocking(move || pool.map(PieceHasher::finish)).await;
        while let Ok(verdict) = checked.try_recv() {
            let _ = self.on_checked(verdict);
        }
        self.check_complete();
        let now = Instant::now();
        if !self.summary.complete {
            self.summary.download_time = now - self.started;
        }
        self.summary.elapsed = now - self.started;
        {
            let st = self.shared.lock();
            self.summary.downloaded = st.torrent.counters.downloaded;
            self.summary.wasted = st.torrent.counters.wasted;
            self.summary.uploaded = st.torrent.counters.uploaded;
        }
        self.phase = Phase::Finished;
        self.publish();
    }
}

/// What a connection is worth to us, for turnover.
#[derive(Debug, Clone, Copy)]
struct Usefulness {
    /// The peer.
    key: PeerKey,
    /// It has pieces we lack and lets us ask for them.
    serves_us: bool,
    /// Bytes per second it sends us.
    download_rate: f64,
    /// It wants pieces of ours.
    wants_ours: bool,
    /// Bytes per second we send it.
    upload_rate: f64,
    /// When its connection was adopted.
    connected_at: Instant,
}

/// The connection we would miss least among `peers` (those not already
/// closing): one that cannot serve us before one that can, then the
/// slowest to us, then one that wants nothing of ours, then the slowest
/// from us, and among equals the newest, which has had the least time to
/// prove itself and whose loss costs the least history (rates, choker
/// slots). `None` if fewer than two: the last is never closed, even if
/// the session's count of what we offer is a moment behind.
fn least_useful(peers: impl Iterator<Item = Usefulness>) -> Option<PeerKey> {
    let peers: Vec<Usefulness> = peers.collect();
    if peers.len() < 2 {
        return None;
    }
    peers
        .into_iter()
        .min_by(|a, b| {
            a.serves_us
                .cmp(&b.serves_us)
                .then(a.download_rate.total_cmp(&b.download_rate))
                .then(a.wants_ours.cmp(&b.wants_ours))
                .then(a.upload_rate.total_cmp(&b.upload_rate))
                .then(b.connected_at.cmp(&a.connected_at))
        })
        .map(|p| p.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(
        key: u32,
        serves_us: bool,
        download_rate: f64,
        wants_ours: bool,
        upload_rate: f64,
    ) -> Usefulness {
        Usefulness {
            key: PeerKey(key),
            serves_us,
            download_rate,
            wants_ours,
            upload_rate,
            connected_at: Instant::now(),
        }
    }

    #[test]
    fn turnover_closes_the_connection_we_would_miss_least() {
        let fast = peer(1, true, 5e6, false, 0.0);
        let slow = peer(2, true, 1e3, false, 0.0);
        let choking = peer(3, false, 0.0, true, 0.0);
        let leecher = peer(4, false, 0.0, true, 2e6);
        let idle = peer(5, false, 0.0, false, 0.0);
        let least = |peers: &[Usefulness]| least_useful(peers.iter().copied()).map(|k| k.0);
        assert_eq!(least(&[fast, slow, choking, leecher, idle]), Some(5));
        assert_eq!(
            least(&[fast, slow, choking, leecher]),
            Some(3),
            "a leecher we feed counts"
        );
        assert_eq!(
            least(&[fast, slow, leecher]),
            Some(4),
            "anyone serving us beats a leecher"
        );
        assert_eq!(least(&[fast, slow]), Some(2));
        assert_eq!(least(&[slow]), None, "the last is kept");
        assert_eq!(least(&[]), None);
    }

    #[test]
    fn among_equals_turnover_closes_the_newest_connection() {
        let old = peer(1, false, 0.0, false, 0.0);
        let new = Usefulness {
            key: PeerKey(2),
            connected_at: old.connected_at + Duration::from_secs(1),
            ..old
        };
        assert_eq!(least_useful([old, new].into_iter()), Some(PeerKey(2)));
        assert_eq!(least_useful([new, old].into_iter()), Some(PeerKey(2)));
    }
}
