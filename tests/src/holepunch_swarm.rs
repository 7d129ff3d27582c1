//! An unreachable uTP-only libtorrent seeder and a reachable libtorrent
//! relay with no data (`tests/py/holepunch_swarm.py`), and the stateful
//! firewall that makes the seeder unreachable: the holepunch (BEP 55)
//! scene.
//!
//! [`Firewall::install`] loads an nftables ruleset into the test's network
//! namespace that drops every new inbound packet to one address and lets
//! established and related ones through (conntrack), as a NAT does: the
//! host behind it can dial out, and a peer it sent to can answer, but
//! nobody can reach it first. [`HolepunchSwarm::start`] then starts the
//! seeder behind it and the relay, and returns once the seeder has dialed
//! the relay. Call both inside an isolated test only.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::driver::Driver;
use crate::swarm::FileInfo;
use crate::tools::require;
use crate::{HarnessError, Result};

/// The nftables table the firewall lives in.
const TABLE: &str = "holepunch";

/// A NAT-like stateful firewall in front of one address of the namespace.
#[derive(Debug)]
pub struct Firewall {
    nft: PathBuf,
}

impl Firewall {
    /// Drops new inbound UDP and TCP to `protected` from anyone; replies to
    /// what `protected` sent pass. Counts what it drops.
    pub fn install(protected: Ipv4Addr) -> Result<Firewall> {
        let nft = require("nft")?;
        let ruleset = format!(
            "table inet {TABLE} {{\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority filter; policy accept;\n\
             \x20   ip daddr {protected} ct state established,related accept\n\
             \x20   ip daddr {protected} meta l4proto {{ tcp, udp }} counter drop\n\
             \x20 }}\n\
             }}\n"
        );
        let mut child = Command::new(&nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(HarnessError::io("starting nft"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .map_err(HarnessError::io("writing the nft ruleset"))?;
        }
        let status = child.wait().map_err(HarnessError::io("running nft"))?;
        if !status.success() {
            return Err(HarnessError::Protocol {
                what: "nft -f".to_owned(),
                detail: format!("loading the firewall failed: {status}"),
            });
        }
        Ok(Firewall { nft })
    }

    /// Packets dropped so far: new connections someone tried to open.
    pub fn dropped(&self) -> Result<u64> {
        let out = Command::new(&self.nft)
            .args(["list", "table", "inet", TABLE])
            .output()
            .map_err(HarnessError::io("nft list"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| HarnessError::Protocol {
                what: "nft list".to_owned(),
                detail: format!("no drop counter in {text}"),
            })
    }
}

/// The `ready` event of `holepunch_swarm.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct HolepunchReady {
    /// The seeder, behind the firewall, uTP only.
    pub seeder: SocketAddr,
    /// The relay, reachable, connected to the seeder, holding no data.
    pub relay: SocketAddr,
    /// Lowercase hex v1 infohash.
    pub info_hash: String,
    /// The .torrent file.
    pub torrent: PathBuf,
    /// The one file and its hash.
    pub files: Vec<FileInfo>,
}

/// The running seeder and relay; they stop when this is dropped.
pub type HolepunchSwarm = Driver<HolepunchReady>;

impl Driver<HolepunchReady> {
    /// The seeder on `seeder` and the relay on `relay` (port 6881), sharing
    /// `size` bytes of content.
    pub fn start(seeder: Ipv4Addr, relay: Ipv4Addr, size: u64) -> Result<HolepunchSwarm> {
        let args = [
            "--seeder-ip".to_owned(),
            seeder.to_string(),
            "--relay-ip".to_owned(),
            relay.to_string(),
            "--file-size".to_owned(),
            size.to_string(),
            "--timeout".to_owned(),
            "60".to_owned(),
        ];
        Driver::spawn("holepunch_swarm", &args, Duration::from_secs(90))
    }
}
