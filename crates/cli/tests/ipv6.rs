//! IPv6 end to end: a libtorrent seeder listening on `[::1]` only, found
//! through a private DHT of libtorrent nodes that listen on `[::1]` only
//! (BEP 32), is downloaded from by `lodestone download <magnet>` with the
//! DHT as its only peer source: no `x.pe`, no `--peer`, trackers off.
//! Once with lodestone's defaults (dual-stack), once bound to `[::1]` alone.
//! (`pex.rs` covers an IPv6 seeder handed over directly.)

use std::process::Command;
use std::time::Duration;

use lodestone_tests::content::verify_files;
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;

const MIB: u64 = 1 << 20;

/// lodestone's listen port (TCP, and UDP for uTP and the DHT): away from the
/// swarm's ports, which start at 6881 on `[::1]`.
const LODESTONE_PORT: &str = "7100";

/// Downloads the seeder's torrent from a magnet, `extra` added to the
/// command line, and checks the files and that the seeder uploaded them.
fn download_through_the_ipv6_dht(extra: &[&str]) {
    let mut swarm = Swarm::start_on_ipv6_loopback(SwarmConfig {
        dht_nodes: 3,
        seeders: 1,
        file_sizes: vec![6 * MIB, 300_000],
        ..SwarmConfig::default()
    })
    .expect("IPv6 swarm ready");
    let info = swarm.info().clone();
    let seeder = info.seeders[0];
    assert!(
        seeder.is_ipv6() && info.dht_nodes.iter().all(|n| n.is_ipv6()),
        "{info:?}"
    );
    let out = WorkDir::new("ipv6-dht").expect("work dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command
        .args(["download", "--json", "--no-seed", "--no-trackers"])
        .arg(info.magnet())
        .args(["--bootstrap", &info.dht_nodes[2].to_string()])
        .args(["--port", LODESTONE_PORT])
        .arg("-o")
        .arg(out.path())
        .args(extra);
    let mut proc = Proc::spawn("lodestone", command).expect("lodestone starts");
    let done = proc
        .wait_event("done", Duration::from_secs(90))
        .expect("download finishes");
    assert_eq!(done["complete"], true, "{done}");
    verify_files(out.path(), &info.files).expect("files match");
    let uploads = swarm.uploads().expect("seeder stats");
    assert!(
        uploads.get(&seeder).copied().unwrap_or(0) > 0,
        "{seeder} uploaded nothing: {uploads:?}"
    );
}

lodestone_tests::isolated_test! {
    /// lodestone's defaults (a dual-stack DHT, every address of both
    /// families for peers): the IPv4 side has nobody to talk to, so every
    /// peer has to come over IPv6.
    fn a_seeder_on_ipv6_loopback_is_found_through_an_ipv6_dht() {
        download_through_the_ipv6_dht(&[]);
    }

    /// lodestone on `[::1]` alone too: no IPv4 socket at all, for peers or
    /// for the DHT.
    fn an_ipv6_only_lodestone_finds_it_too() {
        download_through_the_ipv6_dht(&["--bind", "::1", "--dht-bind", "[::1]:0"]);
    }
}
