//! A private DHT of libtorrent sessions with seeders (`tests/py/swarm.py`).
//!
//! [`Swarm::start`] writes deterministic content, makes a v1 torrent for it,
//! starts `dht_nodes` libtorrent sessions on `127.0.1.x` wired to each other
//! and `seeders` seeding sessions on `127.0.2.x`, and returns once a DHT
//! lookup finds every seeder. [`Swarm::start_on_ipv6_loopback`] builds the
//! same on `[::1]` alone. Call either inside an isolated test only.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::clients::LtSettings;
use crate::netns::{BLOCK_SWARM_DHT, BLOCK_SWARM_SEEDERS, addr};
use crate::process::Proc;
use crate::tools::{python_with_libtorrent, script};
use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// What swarm to build.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// libtorrent DHT nodes (at least 1), on `127.0.1.1..`, wired to each other.
    pub dht_nodes: u8,
    /// libtorrent seeders (also DHT participants), on `127.0.2.1..`.
    pub seeders: u8,
    /// Size of each content file in bytes.
    pub file_sizes: Vec<u64>,
    /// With exactly one file: make a single-file torrent.
    pub single_file: bool,
    /// Torrent name (top-level directory or file name).
    pub name: String,
    /// Piece length; `None` lets libtorrent choose.
    pub piece_length: Option<u32>,
    /// PRNG seed for the content.
    pub seed: u64,
    /// Port every swarm process listens on (TCP and UDP), each on its own IP.
    pub port: u16,
    /// Let libtorrent use uTP as well as TCP.
    pub utp: bool,
    /// The first this many seeders speak uTP only (no TCP at all).
    pub utp_only_seeders: u8,
    /// Deadline for the whole swarm to become ready.
    pub ready_timeout: Duration,
    /// Extra libtorrent settings per seeder, cycled (e.g.
    /// [`crate::clients::lt_forced_encryption`]); empty for none.
    pub seeder_settings: Vec<LtSettings>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            dht_nodes: 6,
            seeders: 2,
            file_sizes: vec![100_000, 300_000, 5_000],
            single_file: false,
            name: "content".to_owned(),
            piece_length: None,
            seed: 1,
            port: 6881,
            utp: false,
            utp_only_seeders: 0,
            ready_timeout: Duration::from_secs(60),
            seeder_settings: Vec::new(),
        }
    }
}

/// One content file as seeded.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the content directory, starting with the torrent name.
    pub path: PathBuf,
    /// Length in bytes.
    pub length: u64,
    /// Lowercase hex SHA-1 of the whole file.
    pub sha1: String,
}

/// The `ready` event of `swarm.py`: everything a test needs to point a client at the swarm.
#[derive(Debug, Clone, Deserialize)]
pub struct SwarmInfo {
    /// DHT node addresses, to use as bootstrap nodes.
    pub dht_nodes: Vec<SocketAddr>,
    /// Seeder peer addresses (TCP).
    pub seeders: Vec<SocketAddr>,
    /// Lowercase hex v1 infohash.
    pub info_hash: String,
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Directory holding the content (the torrent's save path).
    pub content_dir: PathBuf,
    /// Torrent name.
    pub name: String,
    /// Piece length in bytes.
    pub piece_length: u32,
    /// Number of pieces.
    pub piece_count: u32,
    /// Sum of file lengths.
    pub total_length: u64,
    /// The files and their hashes.
    pub files: Vec<FileInfo>,
    /// Seconds until every DHT node knew the others.
    pub dht_ready_s: f64,
    /// Seconds until a lookup found every seeder (content creation included).
    pub ready_s: f64,
}

impl SwarmInfo {
    /// `magnet:?xt=urn:btih:<hash>&dn=<name>`: no trackers, no `x.pe`, so
    /// peers can only come from the DHT.
    pub fn magnet(&self) -> String {
        format!("magnet:?xt=urn:btih:{}&dn={}", self.info_hash, self.name)
    }

    /// The bootstrap nodes as one comma-separated `ip:port` list.
    pub fn bootstrap_list(&self) -> String {
        join(&self.dht_nodes)
    }
}

/// Comma-separated socket addresses.
pub fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A running swarm; its processes stop when it is dropped.
#[derive(Debug)]
pub struct Swarm {
    info: SwarmInfo,
    proc: Proc,
    // Dropped after `proc`, so the files outlive the seeders.
    _dir: WorkDir,
}

impl Swarm {
    /// Starts the swarm and waits until it is ready (see the module docs).
    pub fn start(config: SwarmConfig) -> Result<Swarm> {
        let ips = |block, count| (1..=count).map(|i| addr(block, i).into()).collect();
        let dht = ips(BLOCK_SWARM_DHT, config.dht_nodes);
        let seeders = ips(BLOCK_SWARM_SEEDERS, config.seeders);
        Self::start_on(config, dht, seeders)
    }

    /// Like [`Swarm::start`], but IPv6 only: every session listens on
    /// `[::1]` alone (TCP and the DHT's UDP), on consecutive ports from
    /// `config.port`, DHT nodes first.
    pub fn start_on_ipv6_loopback(config: SwarmConfig) -> Result<Swarm> {
        let v6 = |count| vec![IpAddr::V6(Ipv6Addr::LOCALHOST); usize::from(count)];
        let (dht, seeders) = (v6(config.dht_nodes), v6(config.seeders));
        Self::start_on(config, dht, seeders)
    }

    fn start_on(config: SwarmConfig, dht: Vec<IpAddr>, seeders: Vec<IpAddr>) -> Result<Swarm> {
        let python = python_with_libtorrent()?;
        let dir = WorkDir::new("swarm")?;
        let list = |ips: Vec<IpAddr>| {
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut command = Command::new(python);
        command
            .arg(script("swarm.py"))
            .arg("--workdir")
            .arg(dir.path())
            .args(["--dht-ips", &list(dht)])
            .args(["--seeder-ips", &list(seeders)])
            .args(["--port", &config.port.to_string()])
            .args(["--file-sizes", &join_numbers(&config.file_sizes)])
            .args(["--name", &config.name])
            .args([
                "--piece-length",
                &config.piece_length.unwrap_or(0).to_string(),
            ])
            .args(["--seed", &config.seed.to_string()])
            .args(["--timeout", &config.ready_timeout.as_secs_f64().to_string()]);
        if !config.seeder_settings.is_empty() {
            command.args([
                "--seeder-settings",
                &json!(config.seeder_settings).to_string(),
            ]);
        }
        if config.single_file {
            command.arg("--single-file");
        }
        if config.utp {
            command.arg("--utp");
        }
        command.args(["--utp-only-seeders", &config.utp_only_seeders.to_string()]);
        // The script enforces ready_timeout itself; the margin covers startup.
        let within = config.ready_timeout + Duration::from_secs(10);
        let (proc, ready) = Proc::spawn_retrying_crash("swarm", command, "ready", within)?;
        let info = serde_json::from_value(ready).map_err(|e| HarnessError::Protocol {
            what: "swarm".to_owned(),
            detail: format!("bad ready event: {e}"),
        })?;
        Ok(Swarm {
            info,
            proc,
            _dir: dir,
        })
    }

    /// What the swarm serves and where.
    pub fn info(&self) -> &SwarmInfo {
        &self.info
    }

    /// Runs DHT get_peers lookups for `info_hash` (hex) from a swarm node
    /// until they have found every peer of `want` (or for up to 20 s), and
    /// returns every peer found: one lookup's first answer may come from a
    /// node that has not heard every announce yet.
    pub fn get_peers(&mut self, info_hash: &str, want: &[SocketAddr]) -> Result<Vec<SocketAddr>> {
        let want: Vec<String> = want.iter().map(ToString::to_string).collect();
        self.proc
            .send(&json!({"cmd": "get_peers", "info_hash": info_hash, "want": want}))?;
        let event = self.proc.wait_event("peers", Duration::from_secs(30))?;
        serde_json::from_value(event["peers"].clone()).map_err(|e| HarnessError::Protocol {
            what: "swarm".to_owned(),
            detail: format!("bad peers event: {e}"),
        })
    }

    /// Payload bytes each seeder has uploaded so far.
    pub fn uploads(&mut self) -> Result<std::collections::HashMap<SocketAddr, u64>> {
        self.proc.send(&json!({"cmd": "uploads"}))?;
        let event = self.proc.wait_event("uploads", Duration::from_secs(10))?;
        serde_json::from_value(event["uploads"].clone()).map_err(|e| HarnessError::Protocol {
            what: "swarm".to_owned(),
            detail: format!("bad uploads event: {e}"),
        })
    }

    /// Adds a DHT node (e.g. a lodestone node) to every swarm session.
    pub fn add_dht_node(&mut self, node: SocketAddr) -> Result<()> {
        self.proc
            .send(&json!({"cmd": "add_node", "addr": node.to_string()}))?;
        self.proc
            .wait_event("node_added", Duration::from_secs(10))
            .map(drop)
    }
}

fn join_numbers(numbers: &[u64]) -> String {
    numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
