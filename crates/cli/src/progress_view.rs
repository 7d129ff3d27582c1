//! What the user sees while a download runs: a progress bar on a terminal,
//! a plain status line every few seconds otherwise, or JSON lines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressStyle};
use lodestone_core::Metainfo;
use lodestone_download::swarm::{DownloadProgress, Phase, Stuck, Summary};
use lodestone_session::TorrentStatus;
use serde_json::json;

use crate::output::outln;

/// The live display: the phase, the verified size and a bar that takes the
/// rest of the terminal's width, then a line of details cut to the width.
/// Nothing of fixed width can push a line past the edge of the terminal.
const LIVE_TEMPLATE: &str = "{prefix} [{wide_bar}] {percent:>3}%\n{wide_msg}";

/// How often a plain status line or JSON progress event is written.
const PLAIN_INTERVAL: Duration = Duration::from_secs(3);
const JSON_INTERVAL: Duration = Duration::from_secs(1);

/// The form of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// A live bar on the terminal (stderr).
    Live,
    /// A status line every few seconds on stderr.
    Plain,
    /// One JSON object per line on stdout.
    Json,
}

impl ViewMode {
    /// `--json` wins; otherwise live when stderr is a terminal and one
    /// torrent runs (several live bars would overwrite each other).
    pub fn choose(json: bool, torrents: usize) -> Self {
        if json {
            ViewMode::Json
        } else if std::io::stderr().is_terminal() && torrents == 1 {
            ViewMode::Live
        } else {
            ViewMode::Plain
        }
    }

    /// Writes a JSON event (only in JSON mode).
    pub fn event(self, kind: &str, mut fields: serde_json::Value) {
        if self == ViewMode::Json {
            fields["event"] = json!(kind);
            outln!("{fields}");
        }
    }
}

/// Follows one download until it ends.
pub struct ProgressView {
    mode: ViewMode,
    bar: Option<ProgressBar>,
    total: u64,
    /// The latest snapshot, for the summary (the whole torrent until the
    /// first one arrives).
    last: DownloadProgress,
    last_line: Option<Instant>,
    phase: Option<Phase>,
}

impl ProgressView {
    /// Prepares the display for `metainfo`.
    pub fn new(mode: ViewMode, metainfo: &Metainfo) -> Self {
        let total = metainfo.info.total_length;
        let bar = (mode == ViewMode::Live).then(|| {
            // Until the first snapshot: nothing verified of the whole torrent.
            let bar = ProgressBar::new(total);
            bar.set_prefix(bar_prefix(&DownloadProgress {
                wanted_bytes: total,
                ..DownloadProgress::default()
            }));
            bar.set_style(
                ProgressStyle::with_template(LIVE_TEMPLATE)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            mode,
            bar,
            total,
            last: DownloadProgress {
                wanted_bytes: total,
                ..DownloadProgress::default()
            },
            last_line: None,
            phase: None,
        }
    }

    /// Shows a snapshot; `status` adds what the session knows (the
    /// addresses, the connections holepunching made).
    pub fn show(&mut self, p: &DownloadProgress, status: &TorrentStatus) {
        let (peers_known, why) = (status.peers_known, why_stuck(status));
        let phase_changed = self.phase != Some(p.phase);
        self.phase = Some(p.phase);
        self.last = p.clone();
        match self.mode {
            ViewMode::Live => {
                if let Some(bar) = &self.bar {
                    bar.set_length(p.wanted_bytes);
                    bar.set_position(p.verified_bytes);
                    bar.set_prefix(bar_prefix(p));
                    bar.set_message(details(p, peers_known, why));
                }
            }
            ViewMode::Plain => {
                if phase_changed || self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL) {
                    self.last_line = Some(Instant::now());
                    eprintln!(
                        "{}: {} of {} verified, {}",
                        shown_phase(p),
                        BinaryBytes(p.verified_bytes),
                        BinaryBytes(p.wanted_bytes),
                        details(p, peers_known, why),
                    );
                }
            }
            ViewMode::Json => {
                if phase_changed {
                    self.mode
                        .event("phase", json!({ "phase": phase_name(p.phase) }));
                }
                if phase_changed || self.last_line.is_none_or(|t| t.elapsed() >= JSON_INTERVAL) {
                    self.last_line = Some(Instant::now());
                    self.mode.event(
                        "progress",
                        json!({
                            "phase": phase_name(p.phase),
                            "verified_bytes": p.verified_bytes,
                            "wanted_bytes": p.wanted_bytes,
                            "downloaded": p.downloaded,
                            "uploaded": p.uploaded,
                            "download_rate": p.download_rate,
                            "upload_rate": p.upload_rate,
                            "peers_connected": p.peers_connected,
                            "peers_known": peers_known,
                            "peers_holepunched": status.holepunched,
                            "stuck": why,
                            "held_back": status.held_back,
                        }),
                    );
                }
            }
        }
    }

    /// Clears the live bar and prints the final summary.
    pub fn finish(&self, summary: &Summary, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        match self.mode {
            ViewMode::Json => self.mode.event(
                "done",
                json!({
                    "complete": summary.complete,
                    "total_size": self.total,
                    "pieces_resumed": summary.pieces_resumed,
                    "pieces_rechecked": summary.pieces_rechecked,
                    "pieces_verified": summary.pieces_verified,
                    "hash_failures": summary.hash_failures,
                    "peers_banned": summary.peers_banned,
                    "downloaded": summary.downloaded,
                    "wasted": summary.wasted,
                    "uploaded": summary.uploaded,
                    "download_seconds": summary.download_time.as_secs_f64(),
                    "elapsed_seconds": elapsed.as_secs_f64(),
                }),
            ),
            _ => eprintln!(
                "{}",
                summary_line(
                    summary,
                    self.last.verified_bytes,
                    self.last.wanted_bytes,
                    elapsed
                )
            ),
        }
    }
}

/// What the bar starts with: `downloading 1.20 MiB/3.34 MiB`.
fn bar_prefix(p: &DownloadProgress) -> String {
    format!(
        "{:<11} {}/{}",
        shown_phase(p),
        BinaryBytes(p.verified_bytes),
        BinaryBytes(p.wanted_bytes)
    )
}

/// The phase in the user's words: a download that ended short of its
/// wanted bytes (stopped, or failed) is `stopped`, not `finished`. JSON
/// events keep the phase's own name.
fn shown_phase(p: &DownloadProgress) -> &'static str {
    match p.phase {
        Phase::Finished if p.verified_bytes < p.wanted_bytes => "stopped",
        phase => phase_name(phase),
    }
}

/// Rates, peers, the time left and why nothing moves: `down 1.50 MiB/s,
/// up 0 B/s, peers 3/10, eta 2 minutes`. The time left is shown only while
/// data arrives: at 0 B/s there is no estimate to give.
fn details(p: &DownloadProgress, peers_known: usize, why: Option<&str>) -> String {
    let mut line = format!(
        "down {}/s, up {}/s, peers {}/{}",
        BinaryBytes(p.download_rate as u64),
        BinaryBytes(p.upload_rate as u64),
        p.peers_connected,
        peers_known
    );
    if let Some(left) = time_left(p) {
        line.push_str(&format!(", eta {}", HumanDuration(left)));
    }
    if let Some(why) = why {
        line.push(' ');
        line.push_str(why);
    }
    line
}

/// The time the missing bytes take at the current rate, while downloading
/// at a rate of at least one byte per second.
fn time_left(p: &DownloadProgress) -> Option<Duration> {
    let missing = p.wanted_bytes.saturating_sub(p.verified_bytes);
    if p.phase != Phase::Downloading || missing == 0 || p.download_rate < 1.0 {
        return None;
    }
    Duration::try_from_secs_f64(missing as f64 / p.download_rate).ok()
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Checking => "checking",
        Phase::Downloading => "downloading",
        Phase::Seeding => "seeding",
        Phase::Finished => "finished",
    }
}

/// Why nothing moves, in the user's words: the session's cap when it is
/// what keeps an unconnected torrent from dialing, else the download's
/// own reason.
fn why_stuck(status: &TorrentStatus) -> Option<&'static str> {
    match status.stuck() {
        Some(Stuck::NotConnected) if status.held_back => Some(HELD_BACK),
        stuck => stuck.map(explain),
    }
}

/// What a torrent waiting for a place under the session's cap shows.
pub const HELD_BACK: &str = "(waiting for a free place under --max-connections)";

fn explain(stuck: Stuck) -> &'static str {
    match stuck {
        Stuck::NoPeersKnown => "(no peers found yet)",
        Stuck::NotConnected => "(peers found, but none accepts a connection)",
        Stuck::NobodyHasMissing => "(connected peers lack the missing pieces)",
        Stuck::AllChoking => "(every peer with data is choking us)",
    }
}

/// Human summary of the end of a download: `verified` of `wanted` bytes
/// are on disk; a stopped download says how far it got, not how big it is.
fn summary_line(summary: &Summary, verified: u64, wanted: u64, elapsed: Duration) -> String {
    let seconds = summary.download_time.as_secs_f64().max(1e-3);
    let outcome = if summary.complete {
        format!("downloaded {}", BinaryBytes(wanted))
    } else {
        format!(
            "stopped at {} of {}",
            BinaryBytes(verified),
            BinaryBytes(wanted)
        )
    };
    format!(
        "{outcome} in {:.2} s ({}/s average); {} pieces resumed, {} downloaded, {} failed the hash, {} peers banned; uploaded {}; total time {:.2} s",
        seconds,
        BinaryBytes((summary.downloaded as f64 / seconds) as u64),
        summary.pieces_resumed,
        summary.pieces_verified,
        summary.hash_failures,
        summary.peers_banned,
        BinaryBytes(summary.uploaded),
        elapsed.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestone_session::TorrentPhase;

    const SIZE: u64 = 3_500_000;

    fn downloading(verified_bytes: u64, download_rate: f64) -> DownloadProgress {
        DownloadProgress {
            phase: Phase::Downloading,
            verified_bytes,
            wanted_bytes: SIZE,
            download_rate,
            ..DownloadProgress::default()
        }
    }

    #[test]
    fn an_interrupted_download_says_how_far_it_got() {
        let stopped = Summary::default();
        let line = summary_line(&stopped, 0, SIZE, Duration::from_secs(1));
        assert!(line.starts_with("stopped at 0 B of 3.34 MiB in "), "{line}");
        let done = Summary {
            complete: true,
            ..Summary::default()
        };
        let line = summary_line(&done, SIZE, SIZE, Duration::from_secs(1));
        assert!(line.starts_with("downloaded 3.34 MiB in "), "{line}");
    }

    #[test]
    fn a_download_that_ended_short_is_shown_stopped_not_finished() {
        let mut ended = downloading(SIZE / 2, 0.0);
        ended.phase = Phase::Finished;
        assert_eq!(shown_phase(&ended), "stopped");
        assert!(bar_prefix(&ended).starts_with("stopped "));
        ended.verified_bytes = SIZE;
        assert_eq!(shown_phase(&ended), "finished");
        assert_eq!(shown_phase(&downloading(0, 0.0)), "downloading");
    }

    #[test]
    fn an_unconnected_torrent_held_back_by_the_cap_says_so() {
        let mut progress = downloading(0, 0.0);
        progress.stuck = Some(Stuck::NotConnected);
        let mut status = TorrentStatus {
            phase: TorrentPhase::Download(progress),
            metainfo: None,
            peers_known: 4,
            dial_failures: 0,
            holepunched: 0,
            dht_nodes: None,
            held_back: true,
        };
        assert_eq!(why_stuck(&status), Some(HELD_BACK));
        status.held_back = false;
        assert_eq!(why_stuck(&status), Some(explain(Stuck::NotConnected)));
    }

    #[test]
    fn no_time_left_is_guessed_at_zero_bytes_per_second() {
        assert!(!details(&downloading(0, 0.0), 0, None).contains("eta"));
        assert!(!details(&downloading(0, 0.4), 0, None).contains("eta"));
        let line = details(&downloading(SIZE / 2, 17_500.0), 0, None);
        assert!(line.contains(", eta 2 minutes"), "{line}");
        let mut seeding = downloading(SIZE, 17_500.0);
        seeding.phase = Phase::Seeding;
        assert!(!details(&seeding, 0, None).contains("eta"));
    }
}
