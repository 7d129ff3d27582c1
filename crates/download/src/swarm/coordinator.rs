//! The task that runs a download: resume, connections, verdicts, choking,
//! progress, seeding policy, shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lodestone_core::{ErrorChain, FileEntry, Metainfo};
use lodestone_wire::{Connection, Handshake, Reserved};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::assembly::Assembly;
use super::blame::Blame;
use super::peer::{self, PeerError};
use super::progress::{DownloadProgress, Phase, Stuck, Summary};
use super::shared::{CloseReason, Counters, PeerCmd, Shared, State};
use super::{DownloadConfig, DownloadError};
use crate::bitfield::Bitfield;
use crate::choke::{Choker, ChokerConfig, PeerStats};
use crate::layout::{Layout, PieceIndex};
use crate::picker::{PeerKey, Picker};
use crate::rate::TokenBucket;
use crate::storage::Storage;
use crate::verify::{CheckOutcome, Checked, HashPool, PieceHash, resume_scan};

/// How often progress is published and the choker consulted.
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// Completed pieces waiting for the hash pool, in bytes, before requests
/// pause: bounds memory when hashing or the disk is slower than the network.
const HASH_BACKLOG_BYTES: u64 = 4 << 20;

/// A failed address is not retried sooner than this (times its failures).
const RETRY_AFTER: Duration = Duration::from_secs(15);

type PeerResult = (PeerKey, SocketAddr, Result<(), PeerError>);

#[derive(Debug)]
struct AddrInfo {
    failures: u32,
    last_attempt: Option<Instant>,
    /// Never dial again (misbehaved, or ourselves).
    refused: bool,
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
    connect_timeout: Duration,
    dial_permits: Arc<Semaphore>,
    pending: VecDeque<SocketAddr>,
    addrs: HashMap<SocketAddr, AddrInfo>,
    active: HashSet<SocketAddr>,
    banned_addrs: HashSet<SocketAddr>,
    banned_ips: HashSet<IpAddr>,
    key_addrs: HashMap<PeerKey, SocketAddr>,
    next_key: u32,
    tasks: JoinSet<PeerResult>,
    choker: Choker,
    wanted: Bitfield,
    wanted_bytes: u64,
    verified_bytes: u64,
    summary: Summary,
    progress: watch::Sender<DownloadProgress>,
}

/// Runs the download described by the arguments to its end.
pub(super) async fn run(
    metainfo: Arc<Metainfo>,
    mut config: DownloadConfig,
    mut peers: mpsc::Receiver<SocketAddr>,
    progress: watch::Sender<DownloadProgress>,
    mut stop: watch::Receiver<bool>,
) -> Result<Summary, DownloadError> {
    let started = Instant::now();
    let info = &metainfo.info;
    let layout = Arc::new(Layout::from_info(info)?);
    let paths = info.files.iter().map(FileEntry::relative_path).collect();
    let selected: Vec<bool> = (0..info.files.len())
        .map(|i| config.files.as_ref().is_none_or(|s| s.contains(&i)))
        .collect();
    let storage = Arc::new(Storage::new(
        config.output_dir.clone(),
        layout.clone(),
        paths,
        &selected,
    )?);
    let hashes: Arc<[PieceHash]> = info.piece_hashes.clone().into();
    let threads = config.hash_threads.max(1);

    let have = {
        let (storage, hashes) = (storage.clone(), hashes.clone());
        tokio::task::spawn_blocking(move || {
            let have = resume_scan(&storage, &hashes, threads)?;
            storage.prepare()?;
            Ok::<_, DownloadError>(have)
        })
        .await
        .map_err(|e| DownloadError::Crashed(e.to_string()))??
    };

    let (checked_tx, mut checked) = mpsc::unbounded_channel();
    let pool = HashPool::new(threads, storage.clone(), hashes, checked_tx)?;
    let wanted = storage.wanted_pieces();
    let mut servable = Bitfield::new(layout.piece_count());
    for p in have.iter_ones() {
        if layout.piece(p).is_some_and(|p| storage.is_stored(p)) {
            servable.set(p);
        }
    }
    let seed = config.rng_seed.unwrap_or_else(rand::random);
    let picker = Picker::new(
        layout.clone(),
        wanted.clone(),
        have.clone(),
        StdRng::seed_from_u64(seed),
    );
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
    let listener = config.listen.take();
    let listen_port = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let hash_backlog = (HASH_BACKLOG_BYTES / u64::from(layout.piece_length())).max(4) as usize;
    let state = State {
        picker,
        assembly: Assembly::default(),
        pool: Some(pool),
        peers: HashMap::new(),
        servable,
        counters: Counters::new(now),
        blame: Blame::default(),
        download_limit: config
            .download_limit
            .map(|r| TokenBucket::new(now, r, r.get() / 4)),
        upload_limit: config
            .upload_limit
            .map(|r| TokenBucket::new(now, r, r.get() / 4)),
    };
    let shared = Arc::new(Shared {
        handshake: Handshake::new(Reserved::LODESTONE, metainfo.info_hash, config.peer_id),
        metainfo: metainfo.clone(),
        layout: layout.clone(),
        storage,
        stall_timeout: config.stall_timeout,
        listen_port,
        hash_backlog,
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
        connect_timeout: config.connect_timeout,
        dial_permits: Arc::new(Semaphore::new(config.max_connecting.max(1))),
        pending: VecDeque::new(),
        addrs: HashMap::new(),
        active: HashSet::new(),
        banned_addrs: HashSet::new(),
        banned_ips: HashSet::new(),
        key_addrs: HashMap::new(),
        next_key: 0,
        tasks: JoinSet::new(),
        choker: Choker::new(
            ChokerConfig::default(),
            StdRng::seed_from_u64(seed ^ 0x00c0_ffee),
        ),
        wanted_bytes: piece_bytes(&wanted),
        verified_bytes: piece_bytes(&resumed),
        wanted,
        summary: Summary {
            pieces_resumed: resumed.count_ones(),
            ..Summary::default()
        },
        progress,
    };

    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers_open = true;
    let result = loop {
        c.check_complete();
        if c.policy_met() {
            break Ok(());
        }
        c.dial();
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
            addr = peers.recv(), if peers_open => match addr {
                Some(addr) => c.offer(addr),
                None => peers_open = false,
            },
            accepted = accept(listener.as_ref()) => {
                if let Ok((stream, addr)) = accepted {
                    c.adopt(stream, addr);
                }
            }
            Some(done) = c.tasks.join_next() => {
                if let Ok(done) = done {
                    c.on_peer_exit(done);
                }
            }
            _ = tick.tick() => c.housekeeping(),
        }
    };
    c.finish(&mut checked).await;
    result.map(|()| c.summary.clone())
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Coordinator {
    fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned_addrs.contains(&addr) || self.banned_ips.contains(&addr.ip())
    }

    /// An address someone found: queue it unless known to be useless.
    fn offer(&mut self, addr: SocketAddr) {
        if self.is_banned(addr) || self.active.contains(&addr) || self.pending.contains(&addr) {
            return;
        }
        let now = Instant::now();
        let info = self.addrs.entry(addr).or_insert(AddrInfo {
            failures: 0,
            last_attempt: None,
            refused: false,
        });
        let backoff = RETRY_AFTER * info.failures;
        if info.refused
            || info
                .last_attempt
                .is_some_and(|t| now.saturating_duration_since(t) < backoff)
        {
            return;
        }
        self.pending.push_back(addr);
    }

    fn next_key(&mut self) -> PeerKey {
        self.next_key = self.next_key.wrapping_add(1);
        PeerKey(self.next_key)
    }

    /// Starts connection attempts while there is room.
    fn dial(&mut self) {
        if self.phase != Phase::Downloading {
            return;
        }
        while self.tasks.len() < self.max_connections {
            let Some(addr) = self.pending.pop_front() else {
                return;
            };
            if let Some(info) = self.addrs.get_mut(&addr) {
                info.last_attempt = Some(Instant::now());
            }
            let key = self.next_key();
            self.active.insert(addr);
            self.key_addrs.insert(key, addr);
            let shared = self.shared.clone();
            let permits = self.dial_permits.clone();
            let timeout = self.connect_timeout;
            self.tasks.spawn(async move {
                let connected = {
                    // The semaphore is never closed.
                    let _permit = permits.acquire_owned().await;
                    Connection::connect(addr, timeout, shared.handshake).await
                };
                let result = match connected {
                    Ok((conn, theirs)) => peer::run(shared, key, conn, theirs, addr).await,
                    Err(e) => Err(e.into()),
                };
                (key, addr, result)
            });
        }
    }

    /// An incoming connection: handshake it for our infohash only.
    fn adopt(&mut self, stream: TcpStream, addr: SocketAddr) {
        let same_ip = self.active.iter().filter(|a| a.ip() == addr.ip()).count();
        if self.is_banned(addr)
            || self.tasks.len() >= self.max_connections
            || same_ip >= self.max_connections_per_ip
        {
            tracing::debug!(%addr, same_ip, "incoming connection refused");
            return;
        }
        let key = self.next_key();
        self.active.insert(addr);
        self.key_addrs.insert(key, addr);
        let shared = self.shared.clone();
        let timeout = self.connect_timeout;
        self.tasks.spawn(async move {
            let result = match Connection::accept(stream, timeout, shared.handshake).await {
                Ok((conn, theirs)) => peer::run(shared, key, conn, theirs, addr).await,
                Err(e) => Err(e.into()),
            };
            (key, addr, result)
        });
    }

    fn on_peer_exit(&mut self, (_key, addr, result): PeerResult) {
        self.active.remove(&addr);
        if let Err(e) = &result {
            tracing::debug!(%addr, "peer connection ended: {}", ErrorChain(e));
            if let Some(info) = self.addrs.get_mut(&addr) {
                info.failures += 1;
                info.refused |= e.is_peer_fault();
            }
        }
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
        let backlog_was_full = st.assembly.hashing() >= shared.hash_backlog;
        let contributors = st.assembly.finished(piece, buffer);
        match outcome {
            CheckOutcome::Verified => self.on_verified(&mut st, piece),
            CheckOutcome::HashMismatch => {
                tracing::warn!(%piece, ?contributors, "piece failed its hash check");
                self.summary.hash_failures += 1;
                st.picker.piece_failed(piece);
                for k in st.blame.piece_failed(&contributors) {
                    self.ban(&mut st, k);
                }
                st.broadcast(PeerCmd::Wake, None);
            }
            CheckOutcome::WriteFailed(e) => return Err(e.into()),
        }
        if backlog_was_full && st.assembly.hashing() < shared.hash_backlog {
            st.broadcast(PeerCmd::Wake, None);
        }
        Ok(())
    }

    fn on_verified(&mut self, st: &mut State, piece: PieceIndex) {
        if !st.picker.piece_verified(piece) {
            return;
        }
        self.summary.pieces_verified += 1;
        if self.wanted.get(piece.get()) {
            self.verified_bytes += u64::from(self.shared.layout.piece_len(piece));
        }
        if self.shared.storage.is_stored(piece) {
            st.servable.set(piece.get());
            st.broadcast(PeerCmd::Have(piece), None);
        }
    }

    fn ban(&mut self, st: &mut State, key: PeerKey) {
        let Some(&addr) = self.key_addrs.get(&key) else {
            return;
        };
        if self.is_banned(addr) {
            // Its other pieces in flight failed too.
            return;
        }
        tracing::warn!(%addr, "banning peer: its data failed the hash check");
        self.summary.peers_banned += 1;
        // Loopback peers share an IP (tests, local swarms): ban the address.
        if addr.ip().is_loopback() {
            self.banned_addrs.insert(addr);
        } else {
            self.banned_ips.insert(addr.ip());
        }
        if let Some(p) = st.peers.get(&key) {
            let _ = p.tx.send(PeerCmd::Close(CloseReason::Banned));
        }
    }

    fn check_complete(&mut self) {
        if self.phase != Phase::Downloading || !self.shared.lock().picker.is_complete() {
            return;
        }
        let now = Instant::now();
        self.summary.complete = true;
        self.summary.download_time = now - self.started;
        self.seeding_since = Some(now);
        self.phase = Phase::Seeding;
        self.pending.clear();
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
            let counters = &self.shared.lock().counters;
            (counters.uploaded, counters.downloaded)
        };
        let by_time = self.seed_time.is_some_and(|t| since.elapsed() >= t);
        // Seeding means every wanted byte is held.
        let ratio = crate::ratio::share_ratio(uploaded, downloaded, self.wanted_bytes);
        let by_ratio = self.seed_ratio.is_some_and(|r| ratio >= r);
        by_time || by_ratio
    }

    fn housekeeping(&mut self) {
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
        let changes = self.choker.tick(now, &stats, st.picker.is_complete());
        for (keys, choke) in [(changes.choke, true), (changes.unchoke, false)] {
            for k in keys {
                if let Some(p) = st.peers.get(&k) {
                    let _ = p.tx.send(PeerCmd::Choke(choke));
                }
            }
        }
        drop(st);
        self.publish();
    }

    fn publish(&self) {
        let snapshot = self.snapshot();
        self.progress.send_replace(snapshot);
    }

    fn snapshot(&self) -> DownloadProgress {
        let now = Instant::now();
        let mut st = self.shared.lock();
        let pieces_wanted = self.wanted.count_ones();
        let download_rate = st.counters.down_rate.rate(now);
        let stuck = (self.phase == Phase::Downloading)
            .then(|| self.stuck(&st))
            .flatten();
        DownloadProgress {
            phase: self.phase,
            verified_bytes: self.verified_bytes,
            wanted_bytes: self.wanted_bytes,
            pieces_done: pieces_wanted - st.picker.remaining(),
            pieces_wanted,
            downloaded: st.counters.downloaded,
            uploaded: st.counters.uploaded,
            download_rate,
            upload_rate: st.counters.up_rate.rate(now),
            peers_connected: st.peers.len(),
            peers_known: self.addrs.len(),
            stuck,
        }
    }

    fn stuck(&self, st: &State) -> Option<Stuck> {
        if st.peers.is_empty() {
            return Some(if self.addrs.is_empty() {
                Stuck::NoPeersKnown
            } else {
                Stuck::NotConnected
            });
        }
        let mut useful = st
            .peers
            .iter()
            .filter(|(k, _)| st.picker.is_interesting(**k))
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
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let pool = self.shared.lock().pool.take();
        // Dropping the pool joins its threads once the queued pieces are
        // hashed and written: blocking work.
        let _ = tokio::task::spawn_blocking(move || drop(pool)).await;
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
            self.summary.downloaded = st.counters.downloaded;
            self.summary.wasted = st.counters.wasted;
            self.summary.uploaded = st.counters.uploaded;
        }
        self.phase = Phase::Finished;
        self.publish();
    }
}
