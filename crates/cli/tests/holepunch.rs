//! Holepunching (BEP 55) end to end against libtorrent 2.0.8
//! (`tests/py/holepunch_swarm.py`), DHT off, in a namespace whose nftables
//! firewall makes one uTP-only libtorrent seeder S unreachable the way a
//! NAT does: new inbound packets to it are dropped, replies to what it sent
//! pass.
//!
//! * lodestone, told only of the relay R (a libtorrent peer S dialed, with
//!   no data of its own), learns S by R's PEX, fails to dial it, asks R for
//!   a rendezvous; R sends `connect` to both, S and lodestone dial each
//!   other over uTP at once, and the whole file comes from S. Nothing else
//!   could connect them: S has no ut_pex (it cannot learn of lodestone and
//!   dial it by itself), the firewall drops lodestone's direct dials (its
//!   counter shows it did), and R has no data.

use std::process::Command;
use std::time::Duration;

use lodestone_tests::content::verify_files;
use lodestone_tests::holepunch_swarm::{Firewall, HolepunchSwarm};
use lodestone_tests::netns::{BLOCK_RELAY, BLOCK_SWARM_SEEDERS, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::workdir::WorkDir;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// lodestone's listen port (TCP, and uTP on the same number).
const LODESTONE_PORT: u16 = 7100;

lodestone_tests::isolated_test! {
    fn an_unreachable_seeder_is_reached_by_holepunching_through_a_relay() {
        let seeder_ip = addr(BLOCK_SWARM_SEEDERS, 1);
        let firewall = Firewall::install(seeder_ip).expect("firewall");
        let size = 4 * MIB;
        let mut swarm =
            HolepunchSwarm::start(seeder_ip, addr(BLOCK_RELAY, 1), size).expect("swarm ready");
        let ready = swarm.ready().clone();
        let out = WorkDir::new("holepunch-download").expect("work dir");
        // uTP only: BEP 55 punches uTP, and the relay must see our uTP
        // socket as our address (it tells S the connection's address).
        let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        command
            .args(["download", "--json", "--no-dht", "--no-seed", "--transport", "utp"])
            .arg(&ready.torrent)
            .arg("-o")
            .arg(out.path())
            .args(["--port", &LODESTONE_PORT.to_string()])
            .arg(format!("--peer={}", ready.relay));
        let mut proc = Proc::spawn("lodestone", command).expect("lodestone starts");
        let done = proc.wait_event("done", Duration::from_secs(90)).expect("download finishes");
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &ready.files).expect("files match");

        // The relay has no data: every block came from S, whom nobody
        // could dial.
        let stats = swarm.ask(&json!({"cmd": "stats"}), "stats").expect("stats");
        let blocks: u64 = stats["uploaded"]
            .as_object()
            .expect("a map")
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        println!("S uploaded {blocks} blocks: {stats}");
        assert!(blocks * 16 * 1024 >= size, "S sent {blocks} blocks of a {size}-byte file");
        // And lodestone says how: the connection was holepunched (its own
        // dial, or S's arriving first, after the relay's `connect`).
        let holepunched = proc
            .history()
            .iter()
            .filter_map(|e| e["peers_holepunched"].as_u64())
            .max()
            .unwrap_or(0);
        assert!(holepunched >= 1, "no connection counted as holepunched");
        let dropped = firewall.dropped().expect("drop counter");
        assert!(dropped > 0, "nobody tried to dial S directly: the test proves nothing");
        println!("the firewall dropped {dropped} packets of direct dials");
    }
}
