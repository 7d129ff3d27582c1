//! Resume while a download runs: the start from the record (trusted pieces
//! at once, the rest re-checked in the background) and keeping the record
//! up to date: at intervals, soon after each completed file, and at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DownloadError;
use crate::bitfield::Bitfield;
use crate::layout::PieceIndex;
use crate::resume::{ResumeRecord, plan};
use crate::space;
use crate::storage::Storage;
use crate::verify::{PieceHash, Recheck};

/// Longest time between two saves of the record while pieces arrive.
const SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// The resume side of one download.
pub(super) struct ResumeKeeper {
    storage: Arc<Storage>,
    info_hash: InfoHash,
    record: Option<PathBuf>,
    recheck: Option<Recheck>,
    verdicts: mpsc::UnboundedReceiver<(PieceIndex, bool)>,
    /// Pieces whose re-check has not answered yet.
    pending: Bitfield,
    /// What the last save recorded: verified pieces and complete files.
    saved_pieces: u32,
    saved_files: usize,
    last_save: Instant,
    saving: Option<JoinHandle<()>>,
}

/// How the download starts.
pub(super) struct Start {
    /// Pieces the record vouches for.
    pub trusted: Bitfield,
    /// Pieces being hashed again in the background; withhold them from the
    /// picker until their verdict arrives.
    pub to_check: Vec<PieceIndex>,
}

impl ResumeKeeper {
    /// Loads the record (a damaged one is logged and ignored), decides what
    /// to trust and what to re-check, refuses a download its disk has no
    /// room for (when `check_space`), prepares the files, and starts the
    /// re-check on `threads` threads. The disk work runs on a blocking
    /// thread; no piece is hashed before this returns.
    pub(super) async fn start(
        storage: Arc<Storage>,
        hashes: Arc<[PieceHash]>,
        info_hash: InfoHash,
        record: Option<PathBuf>,
        recheck: bool,
        check_space: bool,
        threads: usize,
    ) -> Result<(Self, Start), DownloadError> {
        let plan = {
            let (storage, path) = (storage.clone(), record.clone());
            tokio::task::spawn_blocking(move || {
                let loaded = path.as_deref().map(ResumeRecord::load).transpose();
                let loaded = loaded.unwrap_or_else(|e| {
                    tracing::warn!("ignoring the resume record: {e}");
                    None
                });
                let plan = plan(&storage, info_hash, loaded.flatten().as_ref(), recheck)?;
                if check_space {
                    space::ensure_room(&storage, plan.unverified_bytes(&storage))?;
                }
                storage.prepare()?;
                Ok::<_, DownloadError>(plan)
            })
            .await
            .map_err(|e| DownloadError::Crashed(e.to_string()))??
        };
        tracing::info!(
            trusted = plan.trusted.count_ones(),
            to_check = plan.to_check.len(),
            "resume: pieces trusted from the record, pieces to hash again"
        );
        let mut pending = Bitfield::new(storage.layout().piece_count());
        for p in &plan.to_check {
            pending.set(p.get());
        }
        let (tx, verdicts) = mpsc::unbounded_channel();
        let recheck = Recheck::spawn(storage.clone(), hashes, plan.to_check.clone(), threads, tx)?;
        let keeper = Self {
            saved_pieces: plan.trusted.count_ones(),
            saved_files: 0,
            storage,
            info_hash,
            record,
            recheck: Some(recheck),
            verdicts,
            pending,
            last_save: Instant::now(),
            saving: None,
        };
        Ok((
            keeper,
            Start {
                trusted: plan.trusted,
                to_check: plan.to_check,
            },
        ))
    }

    /// The next re-check verdict `(piece, good)`; pending forever once all
    /// are in (for use in `select!`).
    pub(super) async fn next_verdict(&mut self) -> (PieceIndex, bool) {
        match self.verdicts.recv().await {
            Some((piece, good)) => {
                self.pending.clear(piece.get());
                (piece, good)
            }
            None => std::future::pending().await,
        }
    }

    /// Saves the record if it is due: a file was completed since the last
    /// save, or pieces were verified and [`SAVE_INTERVAL`] has passed.
    /// `verified` is the set of verified, stored pieces; cheap when nothing
    /// changed.
    pub(super) fn tick(&mut self, verified: &Bitfield) {
        if self.record.is_none() || self.saving.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        let pieces = verified.count_ones();
        if pieces == self.saved_pieces {
            return;
        }
        let files = self.complete_files(verified);
        if files > self.saved_files || self.last_save.elapsed() >= SAVE_INTERVAL {
            self.saved_pieces = pieces;
            self.saved_files = files;
            self.last_save = Instant::now();
            let save = self.saver(verified.clone());
            self.saving = Some(tokio::task::spawn_blocking(save));
        }
    }

    /// Stops the re-check and writes the final record.
    pub(super) async fn finish(&mut self, verified: Bitfield) {
        let recheck = self.recheck.take();
        // Joining the threads waits for the piece each is hashing.
        let _ = tokio::task::spawn_blocking(move || drop(recheck)).await;
        if let Some(saving) = self.saving.take() {
            let _ = saving.await;
        }
        if self.record.is_some() {
            let _ = tokio::task::spawn_blocking(self.saver(verified)).await;
        }
    }

    fn complete_files(&self, verified: &Bitfield) -> usize {
        let layout = self.storage.layout();
        layout
            .files()
            .filter(|&f| self.storage.is_selected(f))
            .filter(|&f| layout.file_pieces(f).all(|p| verified.get(p)))
            .count()
    }

    /// The blocking work of one save. Files with pieces still waiting for
    /// their re-check are recorded as unknown, so that the next run checks
    /// them again instead of taking their unverified pieces as missing.
    fn saver(&self, verified: Bitfield) -> impl FnOnce() + Send + 'static {
        let (storage, info_hash, path) =
            (self.storage.clone(), self.info_hash, self.record.clone());
        let pending = self.pending.clone();
        move || {
            let Some(path) = path else { return };
            let result = ResumeRecord::capture(&storage, info_hash, verified)
                .map_err(|e| e.to_string())
                .and_then(|mut record| {
                    let layout = storage.layout();
                    for piece in pending.iter_ones().filter_map(|p| layout.piece(p)) {
                        for f in layout.piece_files(piece) {
                            record.files[f.get()] = None;
                        }
                    }
                    record.save(&path).map_err(|e| e.to_string())
                });
            match result {
                Ok(()) => tracing::debug!("resume record saved to {}", path.display()),
                Err(e) => tracing::warn!("cannot save the resume record: {e}"),
            }
        }
    }
}
