//! Peer exchange (BEP 11) and IPv6 peers, end to end against libtorrent
//! (`tests/py/pex_swarm.py`), DHT off everywhere so PEX is the only way to
//! learn a peer:
//!
//! * lodestone, told of one libtorrent seeder, learns the other two from
//!   its PEX and downloads from all three; a libtorrent downloader that
//!   knows only lodestone learns a seeder from lodestone's PEX;
//! * a libtorrent seeder listening on `[::1]` only is downloaded from by a
//!   lodestone bound to `[::1]` only;
//! * a hostile peer flooding PEX with made-up addresses, far too often,
//!   gets no more dials to them than the address book's PEX budget, and
//!   the download completes from the honest seeder.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lodestone_core::{InfoHash, PeerId};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_LIBTORRENT, BLOCK_RELAY, BLOCK_SWARM_SEEDERS, addr};
use lodestone_tests::pex_swarm::{PexReady, PexSwarm};
use lodestone_tests::process::Proc;
use lodestone_tests::scripted_peer::scripted_peer;
use lodestone_tests::workdir::WorkDir;
use lodestone_wire::extension::UT_PEX;
use lodestone_wire::pex::{PexFlags, PexMessage, PexPeer};
use lodestone_wire::{ExtendedHandshake, Handshake, Message, Reserved, encode};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// lodestone's listen port: away from the seeders' 6881.
const LODESTONE_PORT: u16 = 7100;

/// The seeders of `pex_swarm.py`, started from `count` addresses of the
/// seeders' block.
fn pex_swarm(count: u8, ipv6_seeder: bool, size: u64) -> PexSwarm {
    let ips: Vec<_> = (1..=count).map(|i| addr(BLOCK_SWARM_SEEDERS, i)).collect();
    PexSwarm::start(&ips, ipv6_seeder, size).expect("seeders ready")
}

/// Blocks each seeder uploaded, by address.
fn uploaded(swarm: &mut PexSwarm) -> serde_json::Map<String, Value> {
    let stats = swarm.ask(&json!({"cmd": "stats"}), "stats").expect("stats");
    stats["uploaded"].as_object().expect("a map").clone()
}

/// `lodestone download` of the swarm's torrent, DHT off, knowing `peers`.
fn lodestone(ready: &PexReady, out: &WorkDir, peers: &[SocketAddr], extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command
        .args(["download", "--json", "--no-dht", "--no-seed"])
        .arg(&ready.torrent)
        .arg("-o")
        .arg(out.path())
        .args(["--port", &LODESTONE_PORT.to_string()])
        .args(extra);
    for peer in peers {
        command.arg(format!("--peer={peer}"));
    }
    Proc::spawn("lodestone", command).expect("lodestone starts")
}

lodestone_tests::isolated_test! {
    fn peers_are_learned_by_pex_both_ways() {
        let mut swarm = pex_swarm(3, false, 24 * MIB);
        let first = swarm.ready().seeders[0];
        let out = WorkDir::new("pex-download").expect("work dir");
        // Slow enough that the download is still running when the
        // libtorrent downloader below hears from us.
        let mut proc = lodestone(swarm.ready(), &out, &[first], &["--max-download-rate", "3M"]);
        proc.wait_event("progress", Duration::from_secs(20)).expect("lodestone runs");
        let downloader = addr(BLOCK_LIBTORRENT, 1);
        swarm
            .ask(
                &json!({"cmd": "add_downloader", "ip": downloader.to_string(),
                        "connect": format!("127.0.0.1:{LODESTONE_PORT}")}),
                "downloader_added",
            )
            .expect("downloader added");

        // The libtorrent downloader knew only lodestone, and the seeders
        // knew only each other: a connection between the downloader and a
        // seeder, from a PEX-learned address, came from lodestone's PEX.
        let deadline = Instant::now() + Duration::from_secs(30);
        let learned = loop {
            let peers = swarm
                .ask(&json!({"cmd": "downloader_peers"}), "downloader_peers")
                .expect("downloader's peers");
            let from_pex: Vec<String> = peers["peers"]
                .as_array()
                .expect("a list")
                .iter()
                .filter(|p| p["pex"] == true)
                .map(|p| p["addr"].as_str().unwrap_or_default().to_owned())
                .collect();
            // By IP: the first seeder, the only one that dials out, may
            // dial the downloader after hearing of it from lodestone, from
            // an ephemeral port, and libtorrent keeps the PEX source on
            // that peer too.
            let seeder_ip = |a: &String| {
                let ip = a.parse::<SocketAddr>().map(|a| a.ip()).ok();
                swarm.ready().seeders.iter().any(|s| Some(s.ip()) == ip)
            };
            if let Some(seeder) = from_pex.iter().find(|a| seeder_ip(a)) {
                break seeder.clone();
            }
            assert!(Instant::now() < deadline, "no seeder learned by PEX: {peers}");
            std::thread::sleep(Duration::from_millis(250)); // polling a peer list, not synchronising
        };
        println!("libtorrent learned {learned} by PEX");

        let done = proc.wait_event("done", Duration::from_secs(60)).expect("download finishes");
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &swarm.ready().files).expect("files match");
        // Told of one seeder, lodestone downloaded from all three.
        let uploaded = uploaded(&mut swarm);
        for seeder in &swarm.ready().seeders {
            let bytes = uploaded[&seeder.to_string()].as_u64().unwrap_or(0);
            assert!(bytes > 0, "{seeder} uploaded nothing: {uploaded:?}");
        }
    }
}

lodestone_tests::isolated_test! {
    fn a_seeder_on_ipv6_loopback_is_downloaded_from() {
        let mut swarm = pex_swarm(1, true, 4 * MIB);
        let v6 = *swarm.ready().seeders.last().expect("the IPv6 seeder");
        assert!(v6.is_ipv6());
        let out = WorkDir::new("pex-ipv6").expect("work dir");
        // IPv6 only, on both sides.
        let mut proc = lodestone(swarm.ready(), &out, &[v6], &["--bind", "::1"]);
        let done = proc.wait_event("done", Duration::from_secs(60)).expect("download finishes");
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &swarm.ready().files).expect("files match");
        let uploaded = uploaded(&mut swarm);
        assert!(uploaded[&v6.to_string()].as_u64().unwrap_or(0) > 0, "{uploaded:?}");
    }
}

/// Port of the made-up addresses: one listener on the wildcard address
/// receives every connection to `127.x.y.z:FLOOD_PORT` in the namespace.
const FLOOD_PORT: u16 = 7300;

/// Counts connections to made-up addresses and drops them at once.
fn flood_target() -> Arc<AtomicUsize> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, FLOOD_PORT)).expect("bind");
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    count
}

/// A peer that handshakes, offers ut_pex, then sends a PEX message of 50
/// made-up addresses every 20 ms (BEP 11 allows one a minute), thousands in
/// all, while never sending a piece.
fn pex_flooder(ip: Ipv4Addr, info_hash: InfoHash) -> SocketAddr {
    scripted_peer(ip, move |mut stream| {
        let ours = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([b'f'; 20]));
        let mut out = BytesMut::from(&ours.to_bytes()[..]);
        let hello = ExtendedHandshake {
            m: [(UT_PEX.to_owned(), 1)].into(),
            ..ExtendedHandshake::default()
        };
        encode(&hello.to_message(), &mut out);
        let mut drain = stream.try_clone().expect("clone");
        std::thread::spawn(move || std::io::copy(&mut drain, &mut std::io::sink()));
        if stream.write_all(&out).is_err() {
            return;
        }
        for round in 0u32..200 {
            let added = (0..50u32)
                .map(|i| PexPeer {
                    addr: SocketAddr::from((
                        Ipv4Addr::from(0x7f32_0000 + round * 50 + i),
                        FLOOD_PORT,
                    )),
                    flags: PexFlags(PexFlags::SEED),
                })
                .collect();
            let message = PexMessage {
                added,
                dropped: vec![],
            }
            .to_message(lodestone_wire::OUR_UT_PEX_ID);
            let mut bytes = BytesMut::new();
            encode(&message, &mut bytes);
            if stream.write_all(&bytes).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20)); // the flood's pace, not synchronisation
        }
        let _ = stream.write_all(&encode_keepalive());
    })
}

fn encode_keepalive() -> BytesMut {
    let mut out = BytesMut::new();
    encode(&Message::KeepAlive, &mut out);
    out
}

lodestone_tests::isolated_test! {
    fn a_pex_flood_costs_at_most_the_dial_budget() {
        let mut swarm = pex_swarm(1, false, 8 * MIB);
        let info_hash = InfoHash::from_hex(&swarm.ready().info_hash).expect("infohash");
        let dials = flood_target();
        let flooder = pex_flooder(addr(BLOCK_RELAY, 1), info_hash);
        let out = WorkDir::new("pex-flood").expect("work dir");
        let started = Instant::now();
        // Slow, so the flood has time to work. Plaintext only, so that each
        // dial is one connection the target counts: under `prefer` a dial
        // whose encrypted attempt is closed on makes a second, plaintext
        // connection to the same address.
        let mut proc = lodestone(
            swarm.ready(),
            &out,
            &[flooder, swarm.ready().seeders[0]],
            &["--max-download-rate", "2M", "--encryption", "off"],
        );
        let done = proc.wait_event("done", Duration::from_secs(90)).expect("download finishes");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &swarm.ready().files).expect("files match");
        let dialed = dials.load(Ordering::SeqCst) as f64;
        // The address book's defaults: a burst of 20, then 2 a second.
        let budget = 20.0 + 2.0 * elapsed;
        println!("{dialed} dials to made-up addresses in {elapsed:.1} s (budget {budget:.0})");
        assert!(dialed <= budget, "{dialed} dials in {elapsed:.1} s, budget {budget:.0}");
        assert!(dialed > 0.0, "the flood was never heard: the test would prove nothing");
        assert!(uploaded(&mut swarm)[&swarm.ready().seeders[0].to_string()].as_u64().unwrap_or(0) > 0);
    }
}
