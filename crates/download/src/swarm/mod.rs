//! The networked half of a download: peers, requests, uploads, seeding.
//!
//! [`Download::start`] checks what is already on disk (resume), then runs
//! one coordinator task and one task per peer connection:
//!
//! - the **coordinator** ([`coordinator`]) dials addresses from a channel
//!   (bounded concurrency, connect timeout), accepts incoming connections,
//!   takes hash verdicts from the [`crate::verify::HashPool`], announces new
//!   pieces, bans peers whose data fails, runs the choker, publishes
//!   [`DownloadProgress`] and applies the seeding policy;
//! - a **peer task** ([`peer`]) owns one connection: it reads in batches,
//!   hands blocks to the shared piece assembly, tops up its request
//!   pipeline ([`pipeline`], sized to the peer's rate), serves the peer's
//!   requests from disk ([`uploads`]) and answers ut_metadata requests.
//!
//! The shared state (picker, piece buffers, peer registry) sits behind one
//! `std::sync::Mutex` taken once per batch of received blocks, never across
//! an `.await`. Hashing and disk IO run on plain threads.

mod abuse;
mod assembly;
mod blame;
mod coordinator;
mod peer;
mod pipeline;
mod progress;
mod shared;
mod uploads;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lodestone_core::{Metainfo, PeerId};
use thiserror::Error;
use tokio::net::TcpListener;
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
    /// Most outgoing connection attempts at once.
    pub max_connecting: usize,
    /// Time allowed to connect and exchange handshakes.
    pub connect_timeout: Duration,
    /// A peer with requests outstanding that sends no block for this long
    /// is dropped and its requests go to others.
    pub stall_timeout: Duration,
    /// Where incoming peers connect; only this torrent's infohash is
    /// accepted.
    pub listen: Option<TcpListener>,
    /// Download limit, bytes per second.
    pub download_limit: Option<NonZeroU64>,
    /// Upload limit, bytes per second.
    pub upload_limit: Option<NonZeroU64>,
    /// Stop seeding once the share ratio reaches this: uploaded /
    /// downloaded, or uploaded / wanted bytes when less than 1 % of them was
    /// downloaded (see [`crate::ratio`]).
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long.
    pub seed_time: Option<Duration>,
    /// Stop as soon as the download is complete. Without it and without a
    /// ratio or time, seeding lasts until [`DownloadHandle::shutdown`].
    pub no_seed: bool,
    /// Threads hashing and writing pieces.
    pub hash_threads: usize,
    /// Seed of the picker's and choker's RNG; `None` picks one at random.
    pub rng_seed: Option<u64>,
}

impl DownloadConfig {
    /// Defaults: every file, 50 connections (8 per IP), 3 s connect timeout, 10 s
    /// stall timeout, no limits, seed until shut down.
    pub fn new(output_dir: impl Into<PathBuf>, peer_id: PeerId) -> Self {
        Self {
            output_dir: output_dir.into(),
            files: None,
            peer_id,
            max_connections: 50,
            max_connections_per_ip: 8,
            max_connecting: 16,
            connect_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(10),
            listen: None,
            download_limit: None,
            upload_limit: None,
            seed_ratio: None,
            seed_time: None,
            no_seed: false,
            hash_threads: 2,
            rng_seed: None,
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
    /// runtime. Peer addresses arrive on `peers`, from whoever finds them;
    /// the channel may close at any time.
    pub fn start(
        metainfo: Arc<Metainfo>,
        config: DownloadConfig,
        peers: mpsc::Receiver<SocketAddr>,
    ) -> DownloadHandle {
        let (progress_tx, progress) = watch::channel(DownloadProgress::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(coordinator::run(
            metainfo,
            config,
            peers,
            progress_tx,
            stop_rx,
        ));
        DownloadHandle {
            progress,
            stop,
            task,
        }
    }
}

/// A running download.
#[derive(Debug)]
pub struct DownloadHandle {
    progress: watch::Receiver<DownloadProgress>,
    stop: watch::Sender<bool>,
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

    /// Waits until every wanted piece is verified and the seeding policy is
    /// satisfied, or until [`Self::shutdown`].
    pub async fn wait(self) -> Result<Summary, DownloadError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(DownloadError::Crashed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
