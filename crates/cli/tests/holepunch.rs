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
//!   counter shows it did), and R has no data;
//! * lodestone is the relay: S dials it, a libtorrent downloader that knows
//!   only lodestone hears of S by lodestone's PEX (flag 0x08), fails to
//!   dial it and asks lodestone for a rendezvous; lodestone sends `connect`
//!   to both and S uploads to the downloader.

use std::process::Command;
use std::time::Duration;

use lodestone_tests::content::verify_files;
use lodestone_tests::holepunch_swarm::{Firewall, HolepunchReady, HolepunchSwarm};
use lodestone_tests::netns::{BLOCK_LIBTORRENT, BLOCK_RELAY, BLOCK_SWARM_SEEDERS, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::workdir::WorkDir;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// lodestone's listen port (TCP, and uTP on the same number).
const LODESTONE_PORT: u16 = 7100;

/// `lodestone download --json` of the swarm's torrent over uTP only, DHT
/// off: BEP 55 punches uTP, and a relay tells the other side the address
/// of our connection, which must be our uTP socket.
fn lodestone(ready: &HolepunchReady, out: &WorkDir, extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command
        .args([
            "download",
            "--json",
            "--no-dht",
            "--no-seed",
            "--transport",
            "utp",
        ])
        .arg(&ready.torrent)
        .arg("-o")
        .arg(out.path())
        .args(["--port", &LODESTONE_PORT.to_string()])
        .args(extra)
        // Holepunching is a dance of three clients: if it fails, the
        // output shows what lodestone was told and what it relayed.
        .env(
            "RUST_LOG",
            "warn,lodestone_download::swarm::session=debug,lodestone_session=debug",
        );
    Proc::spawn("lodestone", command).expect("lodestone starts")
}

lodestone_tests::isolated_test! {
    fn an_unreachable_seeder_is_reached_by_holepunching_through_a_relay() {
        let seeder_ip = addr(BLOCK_SWARM_SEEDERS, 1);
        let firewall = Firewall::install(seeder_ip).expect("firewall");
        let size = 4 * MIB;
        let mut swarm =
            HolepunchSwarm::start(seeder_ip, addr(BLOCK_RELAY, 1), size).expect("swarm ready");
        let ready = swarm.ready().clone();
        let out = WorkDir::new("holepunch-download").expect("work dir");
        let mut proc = lodestone(&ready, &out, &[&format!("--peer={}", ready.relay)]);
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

lodestone_tests::isolated_test! {
    fn lodestone_relays_a_libtorrent_initiator_to_an_unreachable_seeder() {
        let seeder_ip = addr(BLOCK_SWARM_SEEDERS, 1);
        let _firewall = Firewall::install(seeder_ip).expect("firewall");
        let mut swarm =
            HolepunchSwarm::start(seeder_ip, addr(BLOCK_RELAY, 1), 8 * MIB).expect("swarm ready");
        let ready = swarm.ready().clone();
        let out = WorkDir::new("holepunch-relay").expect("work dir");
        // lodestone knows nobody; S dials it. Slow, so that it is still
        // downloading, hence connected to S, when asked to relay (two
        // seeds close their connection).
        let mut proc = lodestone(&ready, &out, &["--max-download-rate", "200K"]);
        proc.wait_event("progress", Duration::from_secs(20)).expect("lodestone runs");
        let lodestone = format!("127.0.0.1:{LODESTONE_PORT}");
        swarm
            .ask(&json!({"cmd": "seeder_connect", "addr": lodestone}), "seeder_connecting")
            .expect("S dials lodestone");

        // A libtorrent downloader that knows only lodestone hears of S by
        // lodestone's PEX (flagged as holepunching), cannot dial it, and
        // asks lodestone, the one peer it knows, for a rendezvous; S has no
        // PEX and cannot learn of it otherwise.
        let initiator = addr(BLOCK_LIBTORRENT, 1);
        swarm
            .ask(
                &json!({"cmd": "add_initiator", "ip": initiator.to_string(), "connect": lodestone}),
                "initiator_added",
            )
            .expect("initiator added");
        let seeder = json!(ready.seeder.to_string());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let peers = swarm
                .ask(&json!({"cmd": "initiator_peers"}), "initiator_peers")
                .expect("initiator's peers");
            let connected = peers["peers"].as_array().expect("a list");
            assert!(
                connected.iter().all(|p| p == &seeder || p == &json!(lodestone)),
                "the initiator met a peer it could only know from elsewhere: {peers}"
            );
            // Connected past the handshake, and S sent it data.
            let stats = swarm.ask(&json!({"cmd": "stats"}), "stats").expect("stats");
            let to_initiator = stats["uploaded"][format!("{initiator}:6881")].as_u64();
            if connected.contains(&seeder) && to_initiator.is_some_and(|b| b > 0) {
                println!("the initiator reached S through lodestone: {peers} {stats}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never connected to S: {peers} {stats}");
            std::thread::sleep(Duration::from_millis(250)); // polling a peer list, not synchronising
        }
        // lodestone was still downloading, so still connected to S: the
        // relay worked while it had a reason to hold the connection.
        let last = proc.history().iter().rev().find(|e| e["event"] == "progress").cloned();
        assert!(last.is_some_and(|p| p["phase"] == "downloading"), "lodestone finished too soon");
    }
}
