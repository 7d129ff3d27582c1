//! Each peer sees one TCP connection from a `lodestone download` of a
//! magnet link: the metadata fetch and the piece download share it. Every
//! peer sits behind a relay that counts connections, so the count is taken
//! at the peer's side, for libtorrent, aria2 and transmission seeders and
//! for a hostile peer that is dropped and must not be dialed again.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use lodestone_core::{InfoHash, PeerId};
use lodestone_tests::clients::{aria2_seeder, transmission_seeder};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_RELAY, BLOCK_TRANSMISSION, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::relay::CountingRelay;
use lodestone_tests::scripted_peer::scripted_peer;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;
use lodestone_wire::{Handshake, Reserved};

const MIB: u64 = 1 << 20;

/// A peer that completes the handshake for `info_hash`, then sends a
/// bitfield of the wrong length: a protocol violation that must get it
/// dropped and banned.
fn hostile_peer(ip: Ipv4Addr, info_hash: InfoHash) -> SocketAddr {
    scripted_peer(ip, move |mut stream| {
        let ours = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([b'h'; 20]));
        // A 3-byte bitfield: wrong for any torrent of this size.
        let bitfield = [0, 0, 0, 4, 5, 0xff, 0xff, 0xff];
        let _ = stream.write_all(&ours.to_bytes());
        let _ = stream.write_all(&bitfield);
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    })
}

lodestone_tests::isolated_test! {
    fn each_peer_sees_one_connection() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 8,
            seeders: 2,
            file_sizes: vec![6 * MIB, 2 * MIB + 3],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();
        let aria2 = aria2_seeder(&info.torrent, &info.content_dir, addr(BLOCK_ARIA2, 1), 6881, &[])
            .expect("aria2 seeding");
        let transmission =
            transmission_seeder(&info.torrent, &info.content_dir, addr(BLOCK_TRANSMISSION, 1), 6881)
                .expect("transmission seeding");
        let info_hash = InfoHash::from_hex(&info.info_hash).expect("infohash");
        let hostile = hostile_peer(addr(BLOCK_RELAY, 9), info_hash);
        let peers = [
            ("libtorrent", info.seeders[0]),
            ("aria2", aria2.addr()),
            ("transmission", transmission.addr()),
            ("hostile", hostile),
        ];
        let relays: Vec<(&str, CountingRelay)> = peers
            .iter()
            .enumerate()
            .map(|(i, (name, to))| (*name, CountingRelay::start(addr(BLOCK_RELAY, i as u8 + 1), *to).expect("relay")))
            .collect();
        let mut magnet = info.magnet();
        for (_, relay) in &relays {
            magnet.push_str(&format!("&x.pe={}", relay.addr()));
        }
        let out = WorkDir::new("one-connection").expect("work dir");
        let out_s = out.path().to_string_lossy().into_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        command.args(["download", "--json", &magnet, "--no-dht", "-o", &out_s, "--no-seed"]);
        let mut proc = Proc::spawn("lodestone", command).expect("lodestone starts");
        let done = proc.wait_event("done", Duration::from_secs(90)).expect("download finishes");
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &info.files).expect("every file matches its checksum");
        for (name, relay) in &relays {
            let ours = relay.client_connections();
            assert_eq!(ours, 1, "{name} saw {} connections", relay.connections());
        }
    }
}
