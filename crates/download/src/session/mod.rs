//! One torrent's swarm: peer connections, requests, verification, seeding.
//!
//! The decisions live in the pure parts ([`crate::picker`], [`crate::choke`],
//! [`crate::rate`]); this module is the async plumbing around them:
//!
//! - one task per peer ([`peer`]) reads and writes its connection, asks the
//!   picker for blocks when its pipeline has room, copies arriving blocks
//!   into piece buffers and answers the peer's requests;
//! - the coordinator ([`Session::run`]) connects to addresses from a
//!   channel, adopts incoming connections, takes hash verdicts from the
//!   [`HashPool`] (which also writes good pieces), tells peers about new
//!   pieces and runs the choker.
//!
//! Shared state sits behind one `std::sync::Mutex`, held for short,
//! non-async sections only (a pick, a 16 KiB copy), never across an await.

mod peer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lodestone_core::{InfoHash, PeerId};
use lodestone_wire::{Connection, Handshake, Reserved};
use rand::SeedableRng;
use rand::rngs::StdRng;
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bitfield::Bitfield;
use crate::choke::{Choker, ChokerConfig, PeerStats};
use crate::layout::{BlockIndex, Layout, LayoutError, PieceIndex};
use crate::picker::{PeerKey, Picker};
use crate::rate::RateEstimator;
use crate::storage::{Storage, StorageError};
use crate::verify::{CheckOutcome, Checked, HashPool, PieceHash};

/// Tuning of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Most peers connected at once.
    pub max_peers: usize,
    /// Time allowed to connect and handshake.
    pub connect_timeout: Duration,
    /// A peer with requests outstanding that sends nothing for this long is
    /// dropped.
    pub snub_timeout: Duration,
    /// Fewest and most blocks in flight to one peer; in between, the
    /// pipeline holds about half a second of the peer's rate.
    pub min_in_flight: usize,
    /// See `min_in_flight`.
    pub max_in_flight: usize,
    /// Most completed pieces waiting to be hashed before requests pause
    /// (bounds memory when the disk or hashing is slower than the network).
    pub max_hashing: usize,
    /// Threads hashing and writing pieces.
    pub hash_threads: usize,
    /// Keep serving peers after the download completes.
    pub seed: bool,
    /// Seed of the picker's and choker's RNG.
    pub rng_seed: u64,
}

impl SessionConfig {
    /// Defaults suited to a fast local swarm and the public one alike.
    pub fn new(peer_id: PeerId) -> Self {
        Self {
            peer_id,
            max_peers: 50,
            connect_timeout: Duration::from_secs(10),
            snub_timeout: Duration::from_secs(30),
            min_in_flight: 32,
            max_in_flight: 256,
            max_hashing: 32,
            hash_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            seed: false,
            rng_seed: 0,
        }
    }
}

/// A snapshot for progress displays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Verified pieces.
    pub have: u32,
    /// Wanted pieces still missing.
    pub remaining: u32,
    /// Payload bytes received (including discarded duplicates).
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Connected peers.
    pub peers: usize,
    /// Download rate, bytes per second.
    pub download_rate: f64,
}

/// Why a session stopped.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The piece hashes do not fit the layout (malformed metainfo).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A verified piece could not be written (local failure).
    #[error("writing a verified piece failed: {0}")]
    Storage(#[from] StorageError),
    /// Every peer source is exhausted and nobody is connected.
    #[error("no more peers, {remaining} pieces missing")]
    OutOfPeers {
        /// Wanted pieces still missing.
        remaining: u32,
    },
}

/// What the coordinator tells a peer task.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// We verified this piece: announce it.
    Have(PieceIndex),
    /// The block arrived from elsewhere (endgame): cancel our request.
    Cancel(BlockIndex),
    /// Stop or start serving the peer.
    Choke(bool),
}

struct PeerEntry {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Command>,
    peer_interested: bool,
    down: RateEstimator,
    up: RateEstimator,
    connected_at: Instant,
}

struct State {
    picker: Picker,
    /// Piece buffers being filled, and spare ones to reuse.
    assembling: HashMap<PieceIndex, Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Pieces submitted to the hash pool and not yet back.
    hashing: usize,
    peers: BTreeMap<PeerKey, PeerEntry>,
    addrs: HashSet<SocketAddr>,
    next_key: u32,
    downloaded: u64,
    uploaded: u64,
    total_down: RateEstimator,
}

struct Shared {
    info_hash: InfoHash,
    layout: Arc<Layout>,
    storage: Arc<Storage>,
    config: SessionConfig,
    pool: HashPool,
    state: Mutex<State>,
    /// Wakes the coordinator to re-run the choker (a peer became interested).
    choke_wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a peer task panicked mid-update: a bug that
        // has already been reported; the state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handshake(&self) -> Handshake {
        let mut reserved = Reserved::default();
        reserved.set_fast(true);
        Handshake::new(reserved, self.info_hash, self.config.peer_id)
    }
}

/// A torrent being downloaded and/or seeded.
pub struct Session {
    shared: Arc<Shared>,
    results: mpsc::UnboundedReceiver<Checked>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.shared.info_hash)
    }
}

impl Session {
    /// Sets up a session over prepared storage. `have` are the pieces
    /// already verified (from [`crate::verify::resume_scan`]).
    pub fn new(
        info_hash: InfoHash,
        storage: Arc<Storage>,
        hashes: Arc<[PieceHash]>,
        have: Bitfield,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        let layout = storage.layout().clone();
        let (tx, results) = mpsc::unbounded_channel();
        let pool = HashPool::new(config.hash_threads, storage.clone(), hashes, tx)?;
        let have = if have.len() == layout.piece_count() {
            have
        } else {
            Bitfield::new(layout.piece_count())
        };
        let picker = Picker::new(
            layout.clone(),
            storage.wanted_pieces(),
            have,
            StdRng::seed_from_u64(config.rng_seed),
        );
        let now = Instant::now().into_std();
        let state = State {
            picker,
            assembling: HashMap::new(),
            spare: Vec::new(),
            hashing: 0,
            peers: BTreeMap::new(),
            addrs: HashSet::new(),
            next_key: 0,
            downloaded: 0,
            uploaded: 0,
            total_down: RateEstimator::standard(now),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                info_hash,
                layout,
                storage,
                config,
                pool,
                state: Mutex::new(state),
                choke_wake: Notify::new(),
            }),
            results,
        })
    }

    /// Runs until every wanted piece is verified (or forever when seeding).
    ///
    /// Connects to addresses from `addrs` (duplicates are skipped) and
    /// adopts already-handshaken incoming connections from `incoming`.
    /// Progress snapshots go to `progress` twice a second.
    pub async fn run(
        mut self,
        mut addrs: mpsc::Receiver<SocketAddr>,
        mut incoming: mpsc::Receiver<(Connection, Handshake)>,
        progress: watch::Sender<Progress>,
    ) -> Result<Progress, SessionError> {
        let shared = self.shared.clone();
        let mut tasks = JoinSet::new();
        let mut choker = Choker::new(
            ChokerConfig::default(),
            StdRng::seed_from_u64(shared.config.rng_seed ^ 0x5eed),
        );
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let (mut addrs_open, mut incoming_open) = (true, true);
        let result = loop {
            if !shared.config.seed && shared.lock().picker.is_complete() {
                break Ok(());
            }
            tokio::select! {
                addr = addrs.recv(), if addrs_open => match addr {
                    Some(addr) => self.connect(addr, &mut tasks),
                    None => addrs_open = false,
                },
                conn = incoming.recv(), if incoming_open => match conn {
                    Some((conn, theirs)) => {
                        if let Ok(addr) = conn.peer_addr() {
                            self.adopt(addr, conn, theirs, &mut tasks);
                        }
                    }
                    None => incoming_open = false,
                },
                checked = self.results.recv() => {
                    // The pool holds a sender while it lives, so `None` never comes.
                    if let Some(checked) = checked
                        && let Err(e) = self.verdict(checked)
                    {
                        break Err(e);
                    }
                }
                Some(_) = tasks.join_next() => {}
                _ = shared.choke_wake.notified() => self.choke(&mut choker),
                _ = ticker.tick() => {
                    self.choke(&mut choker);
                    let snapshot = self.progress();
                    let idle = !addrs_open && !incoming_open && tasks.is_empty();
                    let _ = progress.send(snapshot.clone());
                    if idle && !shared.config.seed {
                        break Err(SessionError::OutOfPeers { remaining: snapshot.remaining });
                    }
                }
            }
        };
        tasks.shutdown().await;
        let snapshot = self.progress();
        let _ = progress.send(snapshot.clone());
        result.map(|()| snapshot)
    }

    fn progress(&self) -> Progress {
        let mut st = self.shared.lock();
        let now = Instant::now().into_std();
        Progress {
            have: st.picker.have().count_ones(),
            remaining: st.picker.remaining(),
            downloaded: st.downloaded,
            uploaded: st.uploaded,
            peers: st.peers.len(),
            download_rate: st.total_down.rate(now),
        }
    }

    fn connect(&self, addr: SocketAddr, tasks: &mut JoinSet<()>) {
        {
            let mut st = self.shared.lock();
            if st.peers.len() >= self.shared.config.max_peers || !st.addrs.insert(addr) {
                return;
            }
        }
        let shared = self.shared.clone();
        tasks.spawn(async move {
            let ours = shared.handshake();
            match Connection::connect(addr, shared.config.connect_timeout, ours).await {
                Ok((conn, theirs)) => peer::run(shared, addr, conn, theirs).await,
                Err(e) => {
                    tracing::debug!(%addr, "connect failed: {e}");
                    shared.lock().addrs.remove(&addr);
                }
            }
        });
    }

    fn adopt(
        &self,
        addr: SocketAddr,
        conn: Connection,
        theirs: Handshake,
        tasks: &mut JoinSet<()>,
    ) {
        {
            let mut st = self.shared.lock();
            if st.peers.len() >= self.shared.config.max_peers || !st.addrs.insert(addr) {
                return;
            }
        }
        tasks.spawn(peer::run(self.shared.clone(), addr, conn, theirs));
    }

    /// A hash verdict: record it and tell the peers.
    fn verdict(&mut self, checked: Checked) -> Result<(), SessionError> {
        let mut st = self.shared.lock();
        st.hashing -= 1;
        let Checked {
            piece,
            outcome,
            buffer,
        } = checked;
        st.spare.push(buffer);
        match outcome {
            CheckOutcome::Verified => {
                if st.picker.piece_verified(piece) {
                    for p in st.peers.values() {
                        let _ = p.tx.send(Command::Have(piece));
                    }
                }
            }
            CheckOutcome::HashMismatch => {
                let senders = st.picker.piece_failed(piece);
                tracing::warn!(%piece, ?senders, "piece failed its hash check");
            }
            CheckOutcome::WriteFailed(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Runs the choker over the connected peers and sends its changes.
    fn choke(&self, choker: &mut Choker) {
        let mut st = self.shared.lock();
        let now = Instant::now().into_std();
        let seeding = st.picker.is_complete();
        let stats: Vec<PeerStats> = st
            .peers
            .iter_mut()
            .map(|(&peer, p)| PeerStats {
                peer,
                interested: p.peer_interested,
                download_rate: p.down.rate(now),
                upload_rate: p.up.rate(now),
                connected_at: p.connected_at.into_std(),
            })
            .collect();
        let changes = choker.tick(now, &stats, seeding);
        for (list, choke) in [(changes.choke, true), (changes.unchoke, false)] {
            for key in list {
                if let Some(p) = st.peers.get(&key) {
                    let _ = p.tx.send(Command::Choke(choke));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
