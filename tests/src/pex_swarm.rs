//! libtorrent seeders that know each other, with the DHT off
//! (`tests/py/pex_swarm.py`): a downloader that reaches the first one
//! learns of the rest by peer exchange (BEP 11) only.
//!
//! [`PexSwarm::start`] writes deterministic single-file content, seeds it
//! from one libtorrent session per address, connects the first seeder to
//! the others, and returns once it holds those connections. Call it inside
//! an isolated test only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::process::Proc;
use crate::swarm::FileInfo;
use crate::tools::{python_with_libtorrent, script};
use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// The `ready` event of `pex_swarm.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct PexReady {
    /// Seeder addresses, the first one (connected to the rest) first.
    pub seeders: Vec<SocketAddr>,
    /// Lowercase hex v1 infohash.
    pub info_hash: String,
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Directory holding the content (the torrent's save path).
    pub content_dir: PathBuf,
    /// The one file and its hash.
    pub files: Vec<FileInfo>,
}

/// The running seeders; they stop when this is dropped.
#[derive(Debug)]
pub struct PexSwarm {
    proc: Proc,
    ready: PexReady,
    // Dropped after `proc`: the seeders serve its files until they stop.
    _dir: WorkDir,
}

impl PexSwarm {
    /// Seeders on `ips` (port 6881), plus one on `[::1]` only when
    /// `ipv6_seeder`, sharing `size` bytes of content.
    pub fn start(ips: &[Ipv4Addr], ipv6_seeder: bool, size: u64) -> Result<PexSwarm> {
        let dir = WorkDir::new("pex-swarm")?;
        let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        let mut command = Command::new(python_with_libtorrent()?);
        command
            .arg(script("pex_swarm.py"))
            .arg("--workdir")
            .arg(dir.path())
            .args(["--seeder-ips", &ips.join(",")])
            .args(["--file-size", &size.to_string()])
            .args(["--timeout", "120"]);
        if ipv6_seeder {
            command.arg("--ipv6-seeder");
        }
        let mut proc = Proc::spawn("pex-swarm", command)?;
        let event = proc.wait_event("ready", Duration::from_secs(150))?;
        let ready = serde_json::from_value(event).map_err(|e| HarnessError::Protocol {
            what: "pex_swarm.py ready event".to_owned(),
            detail: e.to_string(),
        })?;
        Ok(PexSwarm {
            proc,
            ready,
            _dir: dir,
        })
    }

    /// What the swarm said when it was ready.
    pub fn ready(&self) -> &PexReady {
        &self.ready
    }

    /// Sends `command` and waits for the `event` answering it.
    pub fn ask(&mut self, command: &Value, event: &str) -> Result<Value> {
        self.proc.send(command)?;
        self.proc.wait_event(event, Duration::from_secs(20))
    }
}
