//! Each client's way through the two races: magnet → metainfo, magnet → files.
//!
//! Every client gets the same magnet (infohash and name only: no trackers,
//! no `x.pe`), the same single bootstrap node (one of the libtorrent DHT
//! nodes), DHT as its only peer source (no trackers, LSD, UPnP or NAT-PMP),
//! no rate or connection caps, and its own loopback address; the seeders
//! speak TCP only, except in the uTP race (uTP only). The
//! time is the client's own signal that it is done:
//!
//! * lodestone, rqbit, aria2c: the process exits (`lodestone metadata`,
//!   `rqbit download --list`, `aria2c --bt-metadata-only`; for downloads
//!   `lodestone download --no-seed`, `rqbit download -e`, `aria2c
//!   --seed-time=0`), timed from spawn; for rqbit the earlier timestamp
//!   of its log line saying so counts (it exits after a session shutdown);
//! * libtorrent: `tests/py/downloader.py` reports `metadata_received_alert`
//!   and `torrent_finished_alert`, timed from the script's start *after* the
//!   interpreter has imported libtorrent (so the python start-up is not
//!   charged to libtorrent).
//!
//! Every result is checked: the metainfo's infohash, or every file's SHA-1.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use lodestone_benches::clock::Utc;

use lodestone_benches::options::Client;
use lodestone_tests::clients::lt_forced_encryption;
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_LIBTORRENT, BLOCK_LODESTONE, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::SwarmInfo;
use lodestone_tests::tools::{SYSTEM_PYTHON, script};
use lodestone_tests::torrent::TorrentFacts;
use lodestone_tests::workdir::KEEP_ENV;
use serde::Serialize;

use crate::launch::{Ended, Launched, TIME, TIME_FORMAT, Usage};

/// rqbit has no block in the harness's address plan; this one is free.
pub const BLOCK_RQBIT: u8 = 6;

/// The port every client listens on (each on its own IP).
pub const PORT: u16 = 6881;

/// Which race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Race {
    /// Magnet → metainfo.
    Metadata,
    /// Magnet → verified files.
    Download,
}

/// One client's attempt in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Who.
    pub client: Client,
    /// Round, from 0.
    pub round: usize,
    /// Seconds to the client's done signal, when it succeeded.
    pub seconds: Option<f64>,
    /// Peak resident set size in KiB (GNU time; for libtorrent the python
    /// process, interpreter included).
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU seconds of the whole process life (GNU time; for
    /// libtorrent the python process, start-up and shut-down included).
    pub cpu_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// lodestone's binary and which subcommands it has so far.
#[derive(Debug, Clone)]
pub struct Lodestone {
    /// The binary.
    pub bin: PathBuf,
    /// `--help` of `metadata`, `download` and `node`, when they exist.
    pub metadata: Option<String>,
    /// See `metadata`.
    pub download: Option<String>,
    /// See `metadata`.
    pub node: Option<String>,
}

impl Lodestone {
    /// Probes the binary's subcommands.
    pub fn probe(bin: &Path) -> Result<Lodestone, String> {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: run `cargo build --release -p lodestone-cli`",
                bin.display()
            ));
        }
        let help = |sub: &str| {
            let out = Command::new(bin).args([sub, "--help"]).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        Ok(Lodestone {
            bin: bin.to_owned(),
            metadata: help("metadata"),
            download: help("download"),
            node: help("node"),
        })
    }
}

/// What is installed.
#[derive(Debug, Clone)]
pub struct Tools {
    /// lodestone, or why not.
    pub lodestone: Result<Lodestone, String>,
    /// rqbit, or why not.
    pub rqbit: Result<PathBuf, String>,
    /// aria2c, or why not.
    pub aria2c: Result<PathBuf, String>,
    /// python3 with libtorrent, or why not.
    pub libtorrent: Result<PathBuf, String>,
}

/// The rqbit named on the command line, else `rqbit` on `PATH` (where
/// `cargo install --root DIR` puts it when `DIR/bin` is on `PATH`), else
/// cargo's default install directory.
fn find_rqbit(named: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = named {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!("{} not found", path.display()))
        };
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let cargo = home.join(".cargo/bin/rqbit");
    lodestone_tests::tools::require("rqbit").or_else(|_| {
        if cargo.is_file() {
            Ok(cargo)
        } else {
            Err(
                "rqbit not found on PATH nor in ~/.cargo/bin (`cargo install rqbit --locked`)"
                    .to_owned(),
            )
        }
    })
}

impl Tools {
    /// Looks everything up.
    pub fn find(lodestone: &Path, rqbit: Option<&Path>) -> Tools {
        Tools {
            lodestone: Lodestone::probe(lodestone),
            rqbit: find_rqbit(rqbit),
            aria2c: lodestone_tests::tools::require("aria2c").map_err(|e| e.to_string()),
            libtorrent: lodestone_tests::tools::python_with_libtorrent()
                .map(Path::to_path_buf)
                .map_err(|e| e.to_string()),
        }
    }

    /// The client executables found, whose peak RSS the benchmark reports.
    pub fn executables(&self) -> Vec<&Path> {
        [
            self.lodestone.as_ref().ok().map(|l| l.bin.as_path()),
            self.rqbit.as_deref().ok(),
            self.aria2c.as_deref().ok(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Why `client` cannot run `race`, if it cannot.
    pub fn missing(&self, client: Client, race: Race) -> Option<String> {
        match client {
            Client::Lodestone => match &self.lodestone {
                Err(e) => Some(e.clone()),
                Ok(l) => match race {
                    Race::Metadata => l
                        .metadata
                        .is_none()
                        .then(|| "lodestone: metadata command not available yet".to_owned()),
                    Race::Download => l
                        .download
                        .is_none()
                        .then(|| "lodestone: download command not available yet".to_owned()),
                },
            },
            Client::Rqbit => self.rqbit.as_ref().err().cloned(),
            Client::Aria2c => self.aria2c.as_ref().err().cloned(),
            Client::Libtorrent => self.libtorrent.as_ref().err().cloned(),
        }
    }
}

/// Everything a run needs to know about the swarm.
#[derive(Debug)]
pub struct Arena<'a> {
    /// The swarm's ready line.
    pub swarm: &'a SwarmInfo,
    /// The one DHT node every client bootstraps from.
    pub bootstrap: SocketAddr,
    /// Scratch directory for runs.
    pub scratch: &'a Path,
    /// Installed clients.
    pub tools: &'a Tools,
    /// The seeders require RC4 encryption: every client is told to encrypt.
    pub encrypted: bool,
    /// The seeders speak uTP only: every client is told to dial uTP only.
    pub utp_only: bool,
}

impl<'a> Arena<'a> {
    /// Plaintext and TCP, over `swarm` with clients bootstrapping from
    /// `bootstrap`.
    pub fn new(
        swarm: &'a SwarmInfo,
        bootstrap: SocketAddr,
        scratch: &'a Path,
        tools: &'a Tools,
    ) -> Self {
        Arena {
            swarm,
            bootstrap,
            scratch,
            tools,
            encrypted: false,
            utp_only: false,
        }
    }
}

/// The address a client uses in a round of a race: one per process, so
/// no run inherits another's sockets or TIME_WAIT state.
pub fn client_ip(client: Client, race: Race, round: usize) -> Ipv4Addr {
    let block = match client {
        Client::Lodestone => BLOCK_LODESTONE,
        Client::Libtorrent => BLOCK_LIBTORRENT,
        Client::Aria2c => BLOCK_ARIA2,
        Client::Rqbit => BLOCK_RQBIT,
    };
    // Options cap rounds at 100, so the index stays within 1..=202.
    let index = 1 + 2 * round.min(100) + usize::from(race == Race::Download);
    addr(block, index as u8)
}

/// What each client was given, for the report.
pub fn settings(client: Client) -> &'static str {
    match client {
        Client::Lodestone => {
            "lodestone metadata|download MAGNET --bootstrap NODE --state-dir RUN/state --dht-bind IP:6881 \
             [-o OUT] [--no-seed] \
             [--encryption require] [--transport utp]: defaults otherwise (TCP and uTP, MSE \
             offered first)"
        }
        Client::Rqbit => {
            "rqbit --dht-bootstrap-addrs NODE --disable-trackers --disable-lsd \
             --disable-upnp-port-forward [--experimental-enable-utp-listen] [--listen-ip IP --listen-port 6881] \
             download (--list | -e --disable-http-api) -o DIR MAGNET"
        }
        Client::Libtorrent => {
            "tests/py/downloader.py: libtorrent 2.0 session, add_dht_node(NODE), no public routers, \
             LSD/UPnP/NAT-PMP off, uTP off (in the utp race: uTP only, TCP off), DHT rate limits \
             raised, plaintext allowed, default connection limits"
        }
        Client::Aria2c => {
            "aria2c --enable-dht --dht-entry-point=NODE --bt-enable-lpd=false --enable-dht6=false \
             --interface=IP --file-allocation=none --seed-time=0 [--bt-metadata-only \
             --bt-save-metadata] MAGNET"
        }
    }
}

/// Runs `client` in `race` for `round`, with a hard `timeout`.
pub fn run(arena: &Arena<'_>, client: Client, race: Race, round: usize, timeout: Duration) -> Run {
    let dir = arena.scratch.join(format!(
        "{}-{}-{round}",
        match race {
            Race::Metadata => "metadata",
            Race::Download => "download",
        },
        client.name()
    ));
    // A run starts from nothing: files left by a kept earlier run would be
    // resumed, not downloaded.
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = std::fs::create_dir_all(&dir)
        .map_err(|e| (format!("creating {}: {e}", dir.display()), Usage::default()))
        .and_then(|()| match client {
            Client::Libtorrent => libtorrent(arena, race, round, &dir, timeout),
            _ => command_line(arena, client, race, round, &dir, timeout),
        });
    // Downloads are big and the scratch dir may be RAM: free it at once,
    // unless asked to keep it for debugging.
    if std::env::var_os(KEEP_ENV).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match outcome {
        Ok((seconds, usage)) => Run {
            client,
            round,
            seconds: Some(seconds),
            peak_rss_kib: usage.peak_rss_kib,
            cpu_s: usage.cpu_s,
            error: None,
        },
        Err((error, usage)) => Run {
            client,
            round,
            seconds: None,
            peak_rss_kib: usage.peak_rss_kib,
            cpu_s: usage.cpu_s,
            error: Some(error),
        },
    }
}

type Outcome = Result<(f64, Usage), (String, Usage)>;

fn command_line(
    arena: &Arena<'_>,
    client: Client,
    race: Race,
    round: usize,
    dir: &Path,
    timeout: Duration,
) -> Outcome {
    let ip = client_ip(client, race, round);
    let magnet = arena.swarm.magnet();
    let boot = arena.bootstrap.to_string();
    let d = dir.display().to_string();
    let (program, args): (PathBuf, Vec<String>) = match client {
        Client::Lodestone => {
            let Ok(l) = &arena.tools.lodestone else {
                return Err(("lodestone missing".to_owned(), Usage::default()));
            };
            let help = match race {
                Race::Metadata => l.metadata.as_deref(),
                Race::Download => l.download.as_deref(),
            }
            .unwrap_or_default();
            let mut args = match race {
                Race::Metadata => vec!["metadata".to_owned(), magnet],
                Race::Download => vec!["download".to_owned(), magnet],
            };
            args.extend(["--bootstrap".to_owned(), boot]);
            // A state directory of the run's own: the default one keeps the
            // metadata fetched by earlier runs (it would be read, not
            // fetched), resume records and a warm DHT table.
            if help.contains("--state-dir") {
                args.extend(["--state-dir".to_owned(), format!("{d}/state")]);
            }
            if help.contains("--dht-bind") {
                args.extend(["--dht-bind".to_owned(), format!("{ip}:{PORT}")]);
            }
            if arena.encrypted {
                args.extend(["--encryption".to_owned(), "require".to_owned()]);
            }
            if arena.utp_only {
                args.extend(["--transport".to_owned(), "utp".to_owned()]);
            }
            match race {
                Race::Metadata => args.extend(["-o".to_owned(), format!("{d}/out.torrent")]),
                Race::Download => {
                    args.extend(["-o".to_owned(), d.clone()]);
                    if help.contains("--no-seed") {
                        args.push("--no-seed".to_owned());
                    }
                }
            }
            (l.bin.clone(), args)
        }
        Client::Rqbit => {
            let Ok(bin) = &arena.tools.rqbit else {
                return Err(("rqbit missing".to_owned(), Usage::default()));
            };
            let mut args: Vec<String> = vec![
                "--dht-bootstrap-addrs".into(),
                boot,
                "--disable-trackers".into(),
                "--disable-lsd".into(),
                "--disable-upnp-port-forward".into(),
            ];
            if arena.utp_only {
                args.push("--experimental-enable-utp-listen".into());
            }
            match race {
                Race::Metadata => args.extend(["download".into(), "--list".into()]),
                Race::Download => args.extend([
                    "--listen-ip".into(),
                    ip.to_string(),
                    "--listen-port".into(),
                    PORT.to_string(),
                    "download".into(),
                    "-e".into(),
                    "--disable-http-api".into(),
                ]),
            }
            args.extend(["-o".into(), d.clone(), magnet]);
            (bin.clone(), args)
        }
        Client::Aria2c => {
            let Ok(bin) = &arena.tools.aria2c else {
                return Err(("aria2c missing".to_owned(), Usage::default()));
            };
            let mut args: Vec<String> = vec![
                format!("--dir={d}"),
                format!("--interface={ip}"),
                format!("--bt-external-ip={ip}"),
                format!("--listen-port={PORT}"),
                format!("--dht-listen-port={PORT}"),
                format!("--dht-file-path={d}/dht.dat"),
                "--enable-dht=true".into(),
                format!("--dht-entry-point={boot}"),
                "--enable-dht6=false".into(),
                "--disable-ipv6=true".into(),
                "--bt-enable-lpd=false".into(),
                "--file-allocation=none".into(),
                "--seed-time=0".into(),
                "--summary-interval=0".into(),
                "--console-log-level=notice".into(),
                "--enable-color=false".into(),
                "--no-conf=true".into(),
            ];
            if arena.encrypted {
                args.extend([
                    "--bt-require-crypto=true".into(),
                    "--bt-min-crypto-level=arc4".into(),
                ]);
            }
            if race == Race::Metadata {
                args.extend([
                    "--bt-metadata-only=true".into(),
                    "--bt-save-metadata=true".into(),
                ]);
            }
            args.push(magnet);
            (bin.clone(), args)
        }
        Client::Libtorrent => unreachable!("libtorrent runs through downloader.py"),
    };

    let mut launched = Launched::spawn(client.name(), &program, &args, dir, true)
        .map_err(|e| (e, Usage::default()))?;
    let ended = launched.wait(timeout).map_err(|e| (e, Usage::default()))?;
    let rss = launched.usage();
    let seconds = match ended {
        Ended::Exited(status, after) if status.success() => after.as_secs_f64(),
        Ended::Exited(status, _) => {
            return Err((
                format!("exited with {status}: {}", launched.log_tail(5)),
                rss,
            ));
        }
        Ended::TimedOut => {
            return Err((
                format!("no result after {timeout:?}: {}", launched.log_tail(5)),
                rss,
            ));
        }
    };
    let checked = match race {
        Race::Metadata => check_metadata(arena, client, dir, &launched),
        Race::Download => {
            verify_files(dir, &arena.swarm.files).map_err(|e| format!("verification: {e}"))
        }
    };
    checked.map_err(|e| (e, rss))?;
    // rqbit says it is done in its log (the first file of the metainfo it
    // fetched; "torrent finished downloading") some milliseconds before it
    // has shut its session down and exits: its log line counts.
    let seconds = match (client, race) {
        (Client::Rqbit, Race::Metadata) => logged_at(&launched, " File "),
        (Client::Rqbit, Race::Download) => logged_at(&launched, "torrent finished downloading"),
        _ => None,
    }
    .map_or(seconds, |logged| logged.min(seconds));
    Ok((seconds, rss))
}

/// Seconds from the spawn to the timestamp of the first log line holding
/// `needle` (rqbit: `2024-05-01T12:34:56.789012Z  INFO target: message`).
fn logged_at(run: &Launched, needle: &str) -> Option<f64> {
    let log = run.log();
    let line = log.lines().map(strip_ansi).find(|l| l.contains(needle))?;
    let at = Utc::parse_rfc3339(line.split_whitespace().next()?)?;
    let spawned = run.started_wall().duration_since(UNIX_EPOCH).ok()?;
    Some(at.checked_sub(spawned)?.as_secs_f64())
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the final byte of the sequence (bounded by the line).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn check_metadata(
    arena: &Arena<'_>,
    client: Client,
    dir: &Path,
    run: &Launched,
) -> Result<(), String> {
    let torrent = match client {
        Client::Lodestone => dir.join("out.torrent"),
        Client::Aria2c => dir.join(format!("{}.torrent", arena.swarm.info_hash)),
        // `--list` prints the files from the metainfo it fetched.
        _ => {
            let log = run.log();
            return if log.contains("File ") {
                Ok(())
            } else {
                Err("exited 0 without listing any file".to_owned())
            };
        }
    };
    let facts = TorrentFacts::read(&torrent).map_err(|e| e.to_string())?;
    let got = hex::encode(facts.info_hash);
    if got == arena.swarm.info_hash {
        Ok(())
    } else {
        Err(format!(
            "wrote metainfo of {got}, wanted {}",
            arena.swarm.info_hash
        ))
    }
}

/// The libtorrent downloader script under GNU time (for its peak RSS).
fn libtorrent(
    arena: &Arena<'_>,
    race: Race,
    round: usize,
    dir: &Path,
    timeout: Duration,
) -> Outcome {
    let ip = client_ip(Client::Libtorrent, race, round);
    let rss_file = dir.join("libtorrent.rss");
    let save = dir.join("download");
    // Under GNU time for the peak RSS, when it is installed.
    let mut command = if Path::new(TIME).is_file() {
        let mut c = Command::new(TIME);
        c.arg("-f")
            .arg(TIME_FORMAT)
            .arg("-o")
            .arg(&rss_file)
            .arg(SYSTEM_PYTHON);
        c
    } else {
        Command::new(SYSTEM_PYTHON)
    };
    command
        .arg(script("downloader.py"))
        .args(["--ip", &ip.to_string()])
        .args(["--port", &PORT.to_string()])
        .args(["--bootstrap", &arena.bootstrap.to_string()])
        .arg("--save-path")
        .arg(&save)
        .args(["--magnet", &arena.swarm.magnet()]);
    if arena.utp_only {
        command.arg("--utp-only");
    }
    if arena.encrypted {
        command.args([
            "--settings",
            &serde_json::json!(lt_forced_encryption()).to_string(),
        ]);
    }
    let result = (|| {
        let mut proc =
            Proc::spawn(format!("libtorrent {ip}"), command).map_err(|e| e.to_string())?;
        proc.wait_event("started", Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let event = match race {
            Race::Metadata => proc.wait_event("metadata", timeout),
            Race::Download => proc.wait_event("finished", timeout),
        }
        .map_err(|e| e.to_string())?;
        let t = event["t"].as_f64().ok_or("event without a time")?;
        // Dropping closes stdin: the script exits and GNU time reports.
        drop(proc);
        if race == Race::Download {
            verify_files(&save, &arena.swarm.files).map_err(|e| format!("verification: {e}"))?;
        }
        Ok::<f64, String>(t)
    })();
    let usage = Usage::read(&rss_file);
    result.map(|t| (t, usage)).map_err(|e| (e, usage))
}
