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
use std::time::Duration;

use serde::Deserialize;

use crate::Result;
use crate::driver::Driver;
use crate::swarm::FileInfo;

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
pub type PexSwarm = Driver<PexReady>;

impl Driver<PexReady> {
    /// Seeders on `ips` (port 6881), plus one on `[::1]` only when
    /// `ipv6_seeder`, sharing `size` bytes of content.
    pub fn start(ips: &[Ipv4Addr], ipv6_seeder: bool, size: u64) -> Result<PexSwarm> {
        let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        let mut args = vec![
            "--seeder-ips".to_owned(),
            ips.join(","),
            "--file-size".to_owned(),
            size.to_string(),
            "--timeout".to_owned(),
            "120".to_owned(),
        ];
        if ipv6_seeder {
            args.push("--ipv6-seeder".to_owned());
        }
        Driver::spawn("pex_swarm", &args, Duration::from_secs(150))
    }
}
