//! Follows one torrent of the session from its first status to its end:
//! the metadata status line while a magnet's info dictionary is fetched,
//! then the download's progress, then the summary and the exit status.
//! Ctrl-C or SIGTERM in either phase asks the torrent to stop and keeps
//! following it until what is in flight is written.

use std::time::Instant;

use anyhow::anyhow;
use indicatif::BinaryBytes;
use lodestone_core::Metainfo;
use lodestone_download::StorageError;
use lodestone_download::swarm::{DownloadError, DownloadProgress, Summary};
use lodestone_metadata::Progress;
use lodestone_session::{TorrentError, TorrentHandle, TorrentPhase, TorrentStatus};

use crate::failure::Failure;
use crate::progress_view::{HELD_BACK, ProgressView, ViewMode};
use crate::state_dir::StateDir;
use crate::status::StatusLine;
use crate::stop_signal::StopSignals;

/// Shows `handle`'s progress in `mode` until it ends. With `keep`, a
/// metainfo fetched from peers is kept there as soon as it is verified, so
/// the next run of the same magnet needs no peers for it.
pub async fn follow(
    mut handle: TorrentHandle,
    mode: ViewMode,
    keep: Option<StateDir>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut status = handle.status();
    let mut view = View::new(mode, keep);
    let mut interrupted = false;
    // One listener for the whole run: a stop that arrives while a line is
    // being drawn waits here instead of being missed.
    let mut stop = StopSignals::watch()
        .map_err(|e| Failure::Failed(anyhow!("cannot watch SIGINT and SIGTERM: {e}")))?;
    let result = loop {
        tokio::select! {
            result = handle.join() => break result,
            changed = status.changed() => {
                if changed.is_ok() {
                    let snapshot = status.borrow_and_update().clone();
                    view.show(&snapshot);
                }
            }
            () = stop.recv(), if !interrupted => {
                interrupted = true;
                eprintln!("stopping: finishing pieces in flight, data is kept");
                handle.remove();
            }
        }
    };
    view.show(&status.borrow().clone());
    view.end(result, started)
}

/// What is on screen now.
struct View {
    mode: ViewMode,
    metadata: Option<StatusLine>,
    download: Option<(ProgressView, std::sync::Arc<Metainfo>)>,
    /// Where to keep a fetched metainfo, until it is kept.
    keep: Option<StateDir>,
}

impl View {
    fn new(mode: ViewMode, keep: Option<StateDir>) -> Self {
        Self {
            mode,
            metadata: None,
            download: None,
            keep,
        }
    }

    fn show(&mut self, status: &TorrentStatus) {
        if let Some(metainfo) = &status.metainfo
            && let Some(state) = self.keep.take()
        {
            state.keep_metainfo(metainfo);
        }
        match &status.phase {
            TorrentPhase::Metadata(p) => {
                let mode = self.mode;
                let line = self.metadata.get_or_insert_with(|| {
                    mode.event("phase", serde_json::json!({ "phase": "metadata" }));
                    StatusLine::new(mode != ViewMode::Json)
                });
                line.set(describe(p, status));
            }
            TorrentPhase::Download(p) => {
                // The default snapshot is the download's before it has
                // looked at the disk: nothing to show yet.
                let Some(metainfo) = &status.metainfo else {
                    return;
                };
                if *p == DownloadProgress::default() {
                    return;
                }
                if let Some(line) = self.metadata.take() {
                    line.clear();
                }
                let (view, _) = self.download.get_or_insert_with(|| {
                    (ProgressView::new(self.mode, metainfo), metainfo.clone())
                });
                view.show(p, status);
            }
            // The CLI never pauses; a library user's display would say so.
            TorrentPhase::Paused => {}
        }
    }

    /// The final summary and the exit status.
    fn end(self, result: Result<Summary, TorrentError>, started: Instant) -> Result<(), Failure> {
        if let Some(line) = &self.metadata {
            line.clear();
        }
        match result {
            Ok(summary) => {
                let Some((view, metainfo)) = self.download else {
                    return Ok(());
                };
                view.finish(&summary, started.elapsed());
                if summary.complete {
                    Ok(())
                } else {
                    Err(Failure::Failed(anyhow!(
                        "download of {} stopped before it was complete; the data is kept: \
                         run the same command again to resume",
                        metainfo.info.name
                    )))
                }
            }
            Err(e @ TorrentError::Selection(_)) => Err(Failure::BadInput(anyhow!(e))),
            Err(TorrentError::Stalled(reason)) => {
                self.mode.event(
                    "stalled",
                    serde_json::json!({ "reason": reason.code(), "message": reason.to_string() }),
                );
                Err(Failure::Failed(anyhow!(
                    "gave up after --stall-timeout: {reason}; the data is kept"
                )))
            }
            Err(TorrentError::Download(DownloadError::Storage(e))) => {
                Err(Failure::Failed(storage_failure(e)))
            }
            Err(e) => Err(Failure::Failed(anyhow!(e))),
        }
    }
}

/// A storage failure with what the user can do about it. A disk without
/// room is said in sizes people read; a failed read or write (a full disk,
/// a file taken away) loses nothing verified, so the same command resumes
/// once the cause is mended.
fn storage_failure(e: StorageError) -> anyhow::Error {
    match e {
        StorageError::NoRoom { dir, needed, free } => anyhow!(
            "not enough free space for {}: the files still need {} and {} is free; \
             make room, choose another --output, or pass --no-space-check",
            dir.display(),
            BinaryBytes(needed),
            BinaryBytes(free)
        ),
        e @ StorageError::Io { .. } => anyhow!(
            "{:#}; the verified data is kept: once that is mended, run the same command \
             again to resume",
            anyhow::Error::from(e)
        ),
        e => anyhow!(e),
    }
}

/// One line saying how far a metadata fetch got, short enough to fit an
/// 80-column terminal beside the spinner, whole:
/// `metadata: peers 3/12, ut_metadata 2, pieces 1/4, DHT nodes 180`, or,
/// while the session's cap keeps it from connecting (with no peer, there
/// is nothing else to tell),
/// `metadata: peers 0/12 (waiting for a free place under --max-connections)`.
fn describe(p: &Progress, status: &TorrentStatus) -> String {
    let peers = format!("metadata: peers {}/{}", p.connected, p.peers_known);
    if status.held_back {
        return format!("{peers} {HELD_BACK}");
    }
    let mut line = format!(
        "{peers}, ut_metadata {}, pieces {}/{}",
        p.with_ut_metadata, p.pieces_have, p.pieces_total
    );
    if let Some(nodes) = status.dht_nodes {
        line.push_str(&format!(", DHT nodes {nodes}"));
    }
    line
}
