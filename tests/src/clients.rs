//! Other BitTorrent clients as seeders and downloaders.
//!
//! Each handle owns its process (killed on drop) and its scratch directory.
//! Seeders are ready when [`wait_seeding`] sees a full bitfield from them;
//! the libtorrent downloader reports JSON events (`tests/py/downloader.py`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::process::Proc;
use crate::swarm::join;
use crate::tools::{SYSTEM_PYTHON, python_with_libtorrent, require, script};
use crate::torrent::{TorrentFacts, wait_seeding};
use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// How long a seeder may take to hash-check small test content and listen.
pub const SEEDER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A seeding client process (aria2c, transmission-cli, or any other
/// program) under `supervise.py`.
#[derive(Debug)]
pub struct Seeder {
    addr: SocketAddr,
    facts: TorrentFacts,
    proc: Proc,
    /// The supervised program's own pid (not python's).
    pid: u32,
    _dir: WorkDir,
}

/// When [`Seeder::launch`] counts a seeder as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A plaintext handshake shows it has every piece.
    Seeding,
    /// It accepts TCP connections: for a seeder that ignores plaintext
    /// handshakes, which the probe behind [`Ready::Seeding`] speaks.
    Listening,
}

impl Seeder {
    /// The peer address it accepts connections on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The torrent it seeds.
    pub fn torrent(&self) -> &TorrentFacts {
        &self.facts
    }

    /// The supervised process (for its event history).
    pub fn process(&self) -> &Proc {
        &self.proc
    }

    /// The seeding program's pid, for reading its CPU and memory.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts `program` with `args` under `supervise.py`, as a seeder of
    /// `torrent` at `addr`, owning `dir`, and returns once it is `ready`.
    pub fn launch(
        name: &str,
        torrent: &Path,
        addr: SocketAddr,
        dir: WorkDir,
        program: PathBuf,
        args: Vec<String>,
        ready: Ready,
    ) -> Result<Seeder> {
        let facts = TorrentFacts::read(torrent)?;
        let mut command = Command::new(SYSTEM_PYTHON);
        command.arg(script("supervise.py")).arg(program).args(args);
        let mut proc = Proc::spawn(format!("{name} {addr}"), command)?;
        let started = proc.wait_event("started", Duration::from_secs(10))?;
        let pid = started["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or_else(|| HarnessError::Protocol {
                what: proc.name().to_owned(),
                detail: format!("no pid in {started}"),
            })?;
        match ready {
            Ready::Seeding => wait_seeding(
                addr,
                facts.info_hash,
                facts.piece_count,
                SEEDER_READY_TIMEOUT,
            )?,
            Ready::Listening => wait_listening(addr, SEEDER_READY_TIMEOUT)?,
        }
        Ok(Seeder {
            addr,
            facts,
            proc,
            pid,
            _dir: dir,
        })
    }
}

/// Waits until `addr` accepts TCP connections.
fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if std::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("{addr} listening"),
                waited: timeout,
            });
        }
        // Polling a remote process's state: the retry interval is not synchronisation.
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts aria2c seeding `torrent` from `content_dir` (its save path) on
/// `ip:port` (TCP; its DHT uses UDP `port` too). `dht_nodes` empty means no DHT.
pub fn aria2_seeder(
    torrent: &Path,
    content_dir: &Path,
    ip: Ipv4Addr,
    port: u16,
    dht_nodes: &[SocketAddr],
) -> Result<Seeder> {
    let program = require("aria2c")?;
    let dir = WorkDir::new("aria2")?;
    let mut args = vec![
        format!("--dir={}", content_dir.display()),
        format!("--interface={ip}"),
        format!("--bt-external-ip={ip}"),
        format!("--listen-port={port}"),
        format!("--dht-listen-port={port}"),
        format!("--dht-file-path={}", dir.path().join("dht.dat").display()),
        "--check-integrity=true".to_owned(),
        "--seed-ratio=0.0".to_owned(),
        "--bt-enable-lpd=false".to_owned(),
        "--enable-dht6=false".to_owned(),
        "--disable-ipv6=true".to_owned(),
        "--bt-tracker-connect-timeout=1".to_owned(),
        "--summary-interval=0".to_owned(),
        "--console-log-level=warn".to_owned(),
        "--enable-color=false".to_owned(),
        "--no-conf=true".to_owned(),
        "--allow-overwrite=false".to_owned(),
    ];
    if dht_nodes.is_empty() {
        args.push("--enable-dht=false".to_owned());
    } else {
        args.push("--enable-dht=true".to_owned());
        args.extend(
            dht_nodes
                .iter()
                .map(|node| format!("--dht-entry-point={node}")),
        );
    }
    args.push(torrent.display().to_string());
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    Seeder::launch("aria2c", torrent, addr, dir, program, args, Ready::Seeding)
}

/// Starts transmission-cli seeding `torrent` from `content_dir` on `ip:port`.
///
/// Transmission 3.00 drops DHT packets from loopback addresses, so its DHT
/// is off and uTP too (its uTP upload stalls on loopback). To make it
/// findable through the DHT, [`announce_peer`] it on its behalf, or hand its
/// address over as `x.pe`.
pub fn transmission_seeder(
    torrent: &Path,
    content_dir: &Path,
    ip: Ipv4Addr,
    port: u16,
) -> Result<Seeder> {
    transmission_seeder_with(torrent, content_dir, ip, port, false)
}

/// [`transmission_seeder`], refusing unencrypted peers when
/// `require_encryption` (`-er`; otherwise encryption is tolerated, `-et`).
pub fn transmission_seeder_with(
    torrent: &Path,
    content_dir: &Path,
    ip: Ipv4Addr,
    port: u16,
    require_encryption: bool,
) -> Result<Seeder> {
    let program = require("transmission-cli")?;
    let dir = WorkDir::new("transmission")?;
    let config = dir.subdir("config")?;
    let settings = serde_json::json!({
        "bind-address-ipv4": ip.to_string(),
        "bind-address-ipv6": "::1",
        "peer-port": port,
        "peer-port-random-on-start": false,
        "port-forwarding-enabled": false,
        "dht-enabled": false,
        "lpd-enabled": false,
        "utp-enabled": false,
        "pex-enabled": true,
        // 0 prefers plaintext, 2 requires encryption.
        "encryption": if require_encryption { 2 } else { 0 },
        "blocklist-enabled": false,
        "ratio-limit-enabled": false,
        "idle-seeding-limit-enabled": false,
        "speed-limit-up-enabled": false,
        "speed-limit-down-enabled": false,
        "download-dir": content_dir.display().to_string(),
        "incomplete-dir-enabled": false,
        "message-level": 1,
    });
    std::fs::write(config.join("settings.json"), settings.to_string())
        .map_err(HarnessError::io("writing transmission settings.json"))?;
    let args = vec![
        "-g".to_owned(),
        config.display().to_string(),
        "-w".to_owned(),
        content_dir.display().to_string(),
        "-p".to_owned(),
        port.to_string(),
        "-M".to_owned(),
        "-B".to_owned(),
        "-U".to_owned(),
        if require_encryption { "-er" } else { "-et" }.to_owned(),
        // No `-v`: transmission-cli 3.00 starts the torrent, then asks for a
        // verify, which stops it for a moment, and it exits (code 0) when its
        // 200 ms status check lands in that moment: a seeder gone within a
        // second, in one CI run. A new torrent's files are checked anyway.
        torrent.display().to_string(),
    ];
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let ready = if require_encryption {
        Ready::Listening
    } else {
        Ready::Seeding
    };
    Seeder::launch("transmission-cli", torrent, addr, dir, program, args, ready)
}

/// Announces `peer` for `info_hash` (hex) to each of `dht_nodes` with KRPC
/// get_peers + announce_peer sent from the peer's own IP
/// (`tests/py/announce.py`). Returns the nodes that acknowledged.
pub fn announce_peer(
    dht_nodes: &[SocketAddr],
    peer: SocketAddrV4,
    info_hash: &str,
) -> Result<Vec<SocketAddr>> {
    let python = python_with_libtorrent()?;
    let mut command = Command::new(python);
    command
        .arg(script("announce.py"))
        .args(["--from-ip", &peer.ip().to_string()])
        .args(["--port", &peer.port().to_string()])
        .args(["--info-hash", info_hash])
        .args(["--nodes", &join(dht_nodes)]);
    let mut proc = Proc::spawn(format!("announce {peer}"), command)?;
    let event = proc.wait_event("announced", Duration::from_secs(30))?;
    serde_json::from_value(event["nodes"].clone()).map_err(|e| HarnessError::Protocol {
        what: "announce.py".to_owned(),
        detail: format!("bad announced event: {e}"),
    })
}

/// What a libtorrent downloader fetches.
#[derive(Debug, Clone)]
pub enum Source {
    /// A magnet link (metadata comes from peers).
    Magnet(String),
    /// A .torrent file.
    Torrent(PathBuf),
}

/// Extra libtorrent settings by name (`settings_pack` keys).
pub type LtSettings = std::collections::BTreeMap<String, i64>;

/// libtorrent settings that require RC4 encryption both ways
/// (`pe_forced`, RC4 only).
pub fn lt_forced_encryption() -> LtSettings {
    lt_encryption(0, 2)
}

/// libtorrent settings that refuse encryption both ways (`pe_disabled`).
pub fn lt_no_encryption() -> LtSettings {
    lt_encryption(2, 1)
}

fn lt_encryption(policy: i64, level: i64) -> LtSettings {
    [
        ("in_enc_policy", policy),
        ("out_enc_policy", policy),
        ("allowed_enc_level", level),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Settings for [`LibtorrentDownloader::start`].
#[derive(Debug, Clone)]
pub struct DownloaderConfig {
    /// Address of its TCP listener and DHT socket.
    pub ip: Ipv4Addr,
    /// Port for both.
    pub port: u16,
    /// What to download.
    pub source: Source,
    /// DHT nodes to join through (`add_dht_node`).
    pub bootstrap: Vec<SocketAddr>,
    /// Turn the DHT off: peers only from the magnet's `x.pe`.
    pub no_dht: bool,
    /// Allow uTP.
    pub utp: bool,
    /// uTP only: no TCP at all, either way.
    pub utp_only: bool,
}

impl DownloaderConfig {
    /// A magnet fetched over TCP from the peers its `x.pe` names alone (no
    /// DHT), by a downloader on `ip`, port 6881.
    pub fn from_named_peers(ip: Ipv4Addr, magnet: String) -> Self {
        DownloaderConfig {
            ip,
            port: 6881,
            source: Source::Magnet(magnet),
            bootstrap: Vec::new(),
            no_dht: true,
            utp: false,
            utp_only: false,
        }
    }
}

/// Timestamps reported by `downloader.py`, in seconds since it started.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct Finished {
    /// When the download completed.
    pub t: f64,
    /// Bytes wanted (the torrent's total length).
    pub total_length: u64,
}

/// A libtorrent session downloading one torrent; keeps seeding until dropped.
#[derive(Debug)]
pub struct LibtorrentDownloader {
    proc: Proc,
    save_path: PathBuf,
    _dir: WorkDir,
}

impl LibtorrentDownloader {
    /// Starts the download; returns once libtorrent has added the torrent.
    pub fn start(config: DownloaderConfig) -> Result<LibtorrentDownloader> {
        Self::start_with(config, &LtSettings::new())
    }

    /// [`LibtorrentDownloader::start`] with extra libtorrent settings.
    pub fn start_with(
        config: DownloaderConfig,
        settings: &LtSettings,
    ) -> Result<LibtorrentDownloader> {
        let python = python_with_libtorrent()?;
        let dir = WorkDir::new("libtorrent-dl")?;
        let save_path = dir.subdir("download")?;
        let mut command = Command::new(python);
        command
            .arg(script("downloader.py"))
            .args(["--ip", &config.ip.to_string()])
            .args(["--port", &config.port.to_string()])
            .args(["--bootstrap", &join(&config.bootstrap)])
            .arg("--save-path")
            .arg(&save_path);
        match &config.source {
            Source::Magnet(magnet) => command.args(["--magnet", magnet]),
            Source::Torrent(path) => command.arg("--torrent").arg(path),
        };
        if config.no_dht {
            command.arg("--no-dht");
        }
        if config.utp {
            command.arg("--utp");
        }
        command.args(["--settings", &serde_json::json!(settings).to_string()]);
        if config.utp_only {
            command.arg("--utp-only");
        }
        let mut proc = Proc::spawn(format!("libtorrent {}", config.ip), command)?;
        proc.wait_event("started", Duration::from_secs(30))?;
        Ok(LibtorrentDownloader {
            proc,
            save_path,
            _dir: dir,
        })
    }

    /// Where the files land (the torrent name is the first path component).
    pub fn save_path(&self) -> &Path {
        &self.save_path
    }

    /// Waits for the info dictionary (magnet sources); returns its time.
    pub fn wait_metadata(&mut self, timeout: Duration) -> Result<f64> {
        let event = self.proc.wait_event("metadata", timeout)?;
        Ok(event["t"].as_f64().unwrap_or_default())
    }

    /// Waits for the download to complete.
    pub fn wait_finished(&mut self, timeout: Duration) -> Result<Finished> {
        let event = self.proc.wait_event("finished", timeout)?;
        serde_json::from_value(event).map_err(|e| HarnessError::Protocol {
            what: self.proc.name().to_owned(),
            detail: format!("bad finished event: {e}"),
        })
    }

    /// Waits until libtorrent is connected to `peer`.
    pub fn wait_peer(&mut self, peer: SocketAddr, timeout: Duration) -> Result<()> {
        if self.peers().contains(&peer) {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            self.proc.wait_event("peer", left)?;
            if self.peers().contains(&peer) {
                return Ok(());
            }
        }
    }

    /// Every peer it has been connected to so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.proc
            .history()
            .iter()
            .filter(|e| e["event"] == "peer")
            .filter_map(|e| e["addr"].as_str()?.parse().ok())
            .collect()
    }
}
