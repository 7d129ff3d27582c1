//! `lodestone metadata` against real seeders it did not write, in a
//! loopback-only network namespace: libtorrent found through a private
//! libtorrent DHT, aria2 and transmission given by `x.pe`.

mod common;

use std::path::Path;

use common::{assert_success, dht_bind, lodestone, stderr};
use lodestone_core::Metainfo;
use lodestone_tests::clients::{aria2_seeder, transmission_seeder};
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_TRANSMISSION, addr};
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;

/// Fetches `magnet` into `dir/out.torrent` and checks it against the
/// torrent the seeders were made from: same infohash, same files.
fn fetch_and_compare(magnet: &str, extra: &[&str], original: &Path, dir: &Path) {
    let out = dir.join("out.torrent");
    let out_arg = out.to_string_lossy().into_owned();
    let mut args = vec!["metadata", magnet, "-o", &out_arg, "--timeout", "60"];
    args.extend_from_slice(extra);
    let output = lodestone(&args);
    assert_success(&output, "metadata");
    let ours = Metainfo::from_torrent_bytes(&std::fs::read(&out).expect("torrent written"))
        .expect("valid torrent");
    let theirs = Metainfo::from_torrent_bytes(&std::fs::read(original).expect("original"))
        .expect("original parses");
    assert_eq!(ours.info_hash, theirs.info_hash);
    assert_eq!(ours.raw_info(), theirs.raw_info());
    assert_eq!(ours.info.files, theirs.info.files);
    assert!(
        stderr(&output).contains("verified in"),
        "{}",
        stderr(&output)
    );
}

lodestone_tests::isolated_test! {
    /// Magnet without x.pe: the DHT finds the libtorrent seeders; the info
    /// dict of 700 files spans several 16 KiB metadata pieces.
    fn from_libtorrent_through_the_dht() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 8,
            seeders: 3,
            file_sizes: vec![1_000; 1_500],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();
        let dir = WorkDir::new("metadata-dht").expect("work dir");
        let bootstrap = info.dht_nodes[3].to_string();
        let original = Metainfo::from_torrent_bytes(&std::fs::read(&info.torrent).expect("torrent")).expect("parses");
        assert!(original.raw_info().len() > 2 * 16384, "the info dict must span several pieces");
        fetch_and_compare(&info.magnet(), &["--bootstrap", &bootstrap, &dht_bind(1)], &info.torrent, dir.path());
    }

    /// aria2 and transmission seeders, each named by x.pe, no DHT at all.
    fn from_aria2_and_transmission_by_x_pe() {
        let swarm = Swarm::start(SwarmConfig {
            seeders: 0,
            file_sizes: vec![200_000, 30_000],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();
        let aria2 = aria2_seeder(&info.torrent, &info.content_dir, addr(BLOCK_ARIA2, 1), 6881, &[]).expect("aria2 seeding");
        let transmission = transmission_seeder(&info.torrent, &info.content_dir, addr(BLOCK_TRANSMISSION, 1), 6881)
            .expect("transmission seeding");
        for (name, seeder) in [("aria2", aria2.addr()), ("transmission", transmission.addr())] {
            let dir = WorkDir::new(name).expect("work dir");
            let magnet = format!("{}&x.pe={seeder}", info.magnet());
            fetch_and_compare(&magnet, &["--no-dht"], &info.torrent, dir.path());
        }
    }
}
