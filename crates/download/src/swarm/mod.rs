//! The networked half of a download: peers, requests, uploads, seeding.
//!
//! [`Download::start`] takes what the resume record vouches for, starts
//! hashing the rest of what is on disk in the background, and runs one
//! coordinator task and one task per peer connection:
//!
//! - the **coordinator** (`coordinator`) runs the handshaken connections
//!   it is given (dialed or accepted by the session, or handed over by the
//!   metadata fetch with what the peer said so far) within its connection
//!   limits, reports every connection's end, takes hash verdicts from the
//!   [`crate::verify::HashPool`], announces new
//!   pieces, bans peers whose data fails, runs the choker, closes the
//!   connection it would miss least when the session needs a place, publishes
//!   [`DownloadProgress`] and applies the seeding policy;
//! - the **peer protocol** is a sans-IO state machine per connection,
//!   [`session::PeerSession`]: it handles messages, commands and timeouts
//!   on time passed in, and answers with messages to send, storage reads
//!   and its end. It accepts blocks into the shared [`torrent::Torrent`]
//!   (picker, piece buffers, counters, blame), tops up its request pipeline
//!   (`pipeline`, sized to the peer's rate) and queues the peer's
//!   requests (`uploads`);
//! - a **peer task** (`peer`) is the pump around one session: it moves
//!   messages between the socket and the session, runs storage reads on
//!   blocking threads and sleeps until the session's timeout.
//!
//! The torrent and the peer registry sit behind one `std::sync::Mutex`,
//! taken once per batch of received messages, never across an `.await`.
//! Hashing and disk IO run on plain threads. Because the session and the
//! torrent are pure, `tests/swarm_sim.rs` drives dozens of them on virtual
//! time without sockets.

mod abuse;
mod assembly;
mod blame;
mod coordinator;
mod fifo_map;
mod peer;
mod pipeline;
mod progress;
mod read_buffers;
mod relay;
mod resume_keeper;
pub mod session;
mod shared;
pub mod torrent;
mod uploads;

use crate::rate::SharedBucket;
use crate::verify::HashPool;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lodestone_core::{Metainfo, PeerId};
use lodestone_wire::pex::PexReport;
use lodestone_wire::{Established, ListenReport, PeerExit};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::layout::LayoutError;
use crate::storage::StorageError;

pub use progress::{DownloadProgress, Phase, Stuck, Summary};

/// How to run one download.
#[derive(Debug)]
pub struct DownloadConfig {
    /// Directory the torrent's files are written under (their paths include
    /// the torrent name).
    pub output_dir: PathBuf,
    /// Indices of the files to download; `None` means all.
    pub files: Option<BTreeSet<usize>>,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Most connections at once, incoming included.
    pub max_connections: usize,
    /// Most connections with one IP address, checked when one more arrives:
    /// a single host cannot take every slot by connecting many times.
    /// Loopback is not exempt.
    pub max_connections_per_ip: usize,
    /// A peer with requests outstanding that sends no block for this long
    /// is dropped and its requests go to others.
    pub stall_timeout: Duration,
    /// Our TCP listen port, advertised in the extension handshake (`p`).
    pub listen_port: Option<u16>,
    /// Download limit; share one bucket between downloads to cap their sum.
    pub download_limit: Option<SharedBucket>,
    /// Upload limit; share one bucket between downloads to cap their sum.
    pub upload_limit: Option<SharedBucket>,
    /// Stop seeding once the share ratio reaches this: uploaded /
    /// downloaded, or uploaded / wanted bytes when less than 1 % of them was
    /// downloaded (see [`crate::ratio`]).
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long.
    pub seed_time: Option<Duration>,
    /// Stop as soon as the download is complete. Without it and without a
    /// ratio or time, seeding lasts until [`DownloadHandle::shutdown`].
    pub no_seed: bool,
    /// Threads hashing and writing pieces, and re-checking files at start.
    pub hash_threads: usize,
    /// The pool that hashes and writes pieces; share one between downloads
    /// (a session does). `None` starts one of `hash_threads` for this
    /// download alone.
    pub hash_pool: Option<HashPool>,
    /// Seed of the picker's and choker's RNG; `None` picks one at random.
    pub rng_seed: Option<u64>,
    /// The file keeping this torrent's resume record (see
    /// [`crate::resume`]): read at start, written while running and at the
    /// end. `None`: no record, so whatever is on disk is hashed again.
    pub resume_file: Option<PathBuf>,
    /// Ignore the resume record and hash everything on disk again.
    pub recheck: bool,
    /// Refuse to start when the output directory's file system has less
    /// free space than the selected files still need
    /// ([`crate::space`]), rather than stop when the disk fills.
    pub check_space: bool,
    /// Where peers learned by ut_pex (BEP 11) go; `None`, or a private
    /// torrent, leaves ut_pex out: neither offered nor answered.
    pub pex: Option<mpsc::Sender<PexReport>>,
    /// Where the listen addresses of peers that dialed us go, so that they
    /// are dialed there once they leave; `None` drops them.
    pub listening: Option<mpsc::Sender<ListenReport>>,
    /// Where the DHT nodes that peers name in `port` messages (BEP 5) go;
    /// `None`, or a private torrent, ignores them.
    pub dht_nodes: Option<mpsc::Sender<std::net::SocketAddr>>,
    /// Where the addresses a holepunch relay (BEP 55) tells us to dial over
    /// uTP go. `None` (no uTP to accept the other side's dial), no `pex`,
    /// or a private torrent leaves ut_holepunch out: neither offered nor
    /// answered.
    pub holepunch: Option<mpsc::Sender<std::net::SocketAddr>>,
}

impl DownloadConfig {
    /// Defaults: every file, 50 connections (8 per IP), 10 s stall timeout, no limits, free space
    /// checked, seed until shut down.
    pub fn new(output_dir: impl Into<PathBuf>, peer_id: PeerId) -> Self {
        Self {
            output_dir: output_dir.into(),
            files: None,
            peer_id,
            max_connections: 50,
            max_connections_per_ip: 8,
            stall_timeout: Duration::from_secs(10),
            listen_port: None,
            download_limit: None,
            upload_limit: None,
            seed_ratio: None,
            seed_time: None,
            no_seed: false,
            hash_threads: 2,
            hash_pool: None,
            rng_seed: None,
            resume_file: None,
            recheck: false,
            check_space: true,
            pex: None,
            listening: None,
            dht_nodes: None,
            holepunch: None,
        }
    }
}

/// Why a download stopped before its end, by whose fault.
#[derive(Debug, Error)]
pub enum DownloadError {
    /// The metainfo's piece hashes do not fit its files (malformed input).
    #[error("inconsistent metainfo")]
    Layout(#[from] LayoutError),
    /// The files could not be created, read or written (local failure).
    #[error("storage")]
    Storage(#[from] StorageError),
    /// A task of ours panicked (a bug).
    #[error("download task failed: {0}")]
    Crashed(String),
}

/// Starts downloads.
#[derive(Debug)]
pub struct Download;

impl Download {
    /// Starts downloading (then seeding) the torrent on the current tokio
    /// runtime. Handshaken connections arrive on `conns` (the channel may
    /// close at any time); the end of each one the download took or refused
    /// is reported on `exits`, so that whoever dials knows the slot is free
    /// and how it ended ([`lodestone_wire::ExitKind`]).
    pub fn start(
        metainfo: Arc<Metainfo>,
        config: DownloadConfig,
        conns: mpsc::Receiver<Established>,
        exits: mpsc::UnboundedSender<PeerExit>,
    ) -> DownloadHandle {
        let (progress_tx, progress) = watch::channel(DownloadProgress::default());
        let (stop, stop_rx) = watch::channel(false);
        let (rendezvous, rendezvous_rx) = mpsc::channel(RENDEZVOUS_QUEUE);
        let (close_one, close_one_rx) = mpsc::channel(CLOSE_ONE_QUEUE);
        let inputs = coordinator::Inputs {
            conns,
            rendezvous: rendezvous_rx,
            close_one: close_one_rx,
        };
        let task = tokio::spawn(coordinator::run(
            metainfo,
            config,
            inputs,
            exits,
            progress_tx,
            stop_rx,
        ));
        DownloadHandle {
            progress,
            stop,
            rendezvous,
            close_one,
            task,
        }
    }
}

/// Rendezvous requests waiting for the coordinator; more are dropped
/// (holepunching is best effort).
const RENDEZVOUS_QUEUE: usize = 64;

/// Requests to close a connection waiting for the coordinator; more are
/// dropped (whoever asked asks again if it still needs a place).
const CLOSE_ONE_QUEUE: usize = 16;

/// A rendezvous to ask for (BEP 55): the connected peer `via` is asked to
/// introduce us to the peer at `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendezvous {
    /// The relay: a connected peer's address.
    pub via: std::net::SocketAddr,
    /// The peer we could not reach.
    pub target: std::net::SocketAddr,
}

/// A running download.
#[derive(Debug)]
pub struct DownloadHandle {
    progress: watch::Receiver<DownloadProgress>,
    stop: watch::Sender<bool>,
    rendezvous: mpsc::Sender<Rendezvous>,
    close_one: mpsc::Sender<()>,
    task: JoinHandle<Result<Summary, DownloadError>>,
}

impl DownloadHandle {
    /// Progress snapshots, updated a few times a second and on phase changes.
    pub fn progress(&self) -> watch::Receiver<DownloadProgress> {
        self.progress.clone()
    }

    /// Asks the download to stop: connections close, pieces already
    /// received are hashed and written, files stay. [`Self::wait`] then
    /// returns a summary with `complete` telling whether it had finished.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Asks the connected peer `via` to introduce us to `target`, if it
    /// speaks ut_holepunch; a full queue drops the request.
    pub fn rendezvous(&self, request: Rendezvous) {
        let _ = self.rendezvous.try_send(request);
    }

    /// Asks the download to close the connection it would miss least (see
    /// [`session::CloseReason::Turnover`]), to free a place under a cap shared with
    /// other torrents. A full queue drops the request.
    pub fn close_one_peer(&self) {
        let _ = self.close_one.try_send(());
    }

    /// [`Self::wait`] without giving the handle up, for a `select!` loop
    /// that must still be able to shut the download down. Once it has
    /// returned, the handle is spent: neither it nor [`Self::wait`] may be
    /// awaited again.
    pub async fn join(&mut self) -> Result<Summary, DownloadError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(DownloadError::Crashed(e.to_string())),
        }
    }

    /// Waits until every wanted piece is verified and the seeding policy is
    /// satisfied, or until [`Self::shutdown`].
    pub async fn wait(mut self) -> Result<Summary, DownloadError> {
        self.join().await
    }
}

#[cfg(test)]
mod tests;
