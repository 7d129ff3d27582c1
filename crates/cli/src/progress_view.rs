//! What the user sees while a download runs: a progress bar on a terminal,
//! a plain status line every few seconds otherwise, or JSON lines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use lodestone_core::Metainfo;
use lodestone_download::swarm::{DownloadProgress, Phase, Stuck, Summary};
use serde_json::json;

use crate::output::outln;
use crate::units;

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

/// Shows one download's progress as it runs.
pub struct ProgressView {
    mode: ViewMode,
    bar: Option<ProgressBar>,
    total: u64,
    last_line: Option<Instant>,
    phase: Option<Phase>,
}

impl ProgressView {
    /// Prepares the display for `metainfo`.
    pub fn new(mode: ViewMode, metainfo: &Metainfo) -> Self {
        let bar = (mode == ViewMode::Live).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {prefix}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            mode,
            bar,
            total: metainfo.info.total_length,
            last_line: None,
            phase: None,
        }
    }

    /// Shows a snapshot; `peers_known` and `stuck` come from the session,
    /// which knows the addresses.
    pub fn show(&mut self, p: &DownloadProgress, peers_known: usize, stuck: Option<Stuck>) {
        let phase_changed = self.phase != Some(p.phase);
        self.phase = Some(p.phase);
        let peers = format!("peers {}/{}", p.peers_connected, peers_known);
        let why = stuck.map(explain).unwrap_or_default();
        match self.mode {
            ViewMode::Live => {
                if let Some(bar) = &self.bar {
                    bar.set_length(p.wanted_bytes);
                    bar.set_position(p.verified_bytes);
                    bar.set_message(phase_name(p.phase));
                    bar.set_prefix(format!(
                        "{peers} up {}/s {why}",
                        units::bytes(p.upload_rate as u64)
                    ));
                }
            }
            ViewMode::Plain => {
                if phase_changed || self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL) {
                    self.last_line = Some(Instant::now());
                    eprintln!(
                        "{}: {} of {} verified, down {}/s, up {}/s, {peers} {why}",
                        phase_name(p.phase),
                        units::bytes(p.verified_bytes),
                        units::bytes(p.wanted_bytes),
                        units::bytes(p.download_rate as u64),
                        units::bytes(p.upload_rate as u64),
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
                            "stuck": stuck.map(explain),
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
            _ => eprintln!("{}", summary_line(summary, self.total, elapsed)),
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Checking => "checking",
        Phase::Downloading => "downloading",
        Phase::Seeding => "seeding",
        Phase::Finished => "finished",
    }
}

/// Why nothing moves, in the user's words.
fn explain(stuck: Stuck) -> &'static str {
    match stuck {
        Stuck::NoPeersKnown => "(no peers found yet)",
        Stuck::NotConnected => "(peers found, but none accepts a connection)",
        Stuck::NobodyHasMissing => "(connected peers lack the missing pieces)",
        Stuck::AllChoking => "(every peer with data is choking us)",
    }
}

/// Human summary of the end of a download.
fn summary_line(summary: &Summary, total: u64, elapsed: Duration) -> String {
    let seconds = summary.download_time.as_secs_f64().max(1e-3);
    format!(
        "{} {} in {:.2} s ({}/s average); {} pieces resumed, {} downloaded, {} failed the hash, {} peers banned; uploaded {}; total time {:.2} s",
        if summary.complete {
            "downloaded"
        } else {
            "stopped at"
        },
        units::bytes(total),
        seconds,
        units::bytes((summary.downloaded as f64 / seconds) as u64),
        summary.pieces_resumed,
        summary.pieces_verified,
        summary.hash_failures,
        summary.peers_banned,
        units::bytes(summary.uploaded),
        elapsed.as_secs_f64(),
    )
}
