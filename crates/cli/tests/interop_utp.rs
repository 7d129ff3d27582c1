//! uTP (BEP 29) against libtorrent, each test in its own loopback-only
//! network namespace: libtorrent peers with TCP turned off entirely are
//! reachable only over uTP.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dht_bind;
use lodestone_tests::clients::{DownloaderConfig, LibtorrentDownloader, Source};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_LIBTORRENT, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;

const MIB: u64 = 1 << 20;

/// `lodestone download --json` as a supervised process whose events we read.
fn download_process(name: &str, args: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command.arg("download").arg("--json").args(args);
    Proc::spawn(name, command).expect("lodestone starts")
}

/// Downloads the swarm's magnet through its DHT over `transport` and checks
/// every file.
fn download(swarm: &Swarm, name: &str, transport: &str, bind: &str) {
    let info = swarm.info();
    let out = WorkDir::new(name).expect("work dir");
    let (magnet, bootstrap) = (info.magnet(), info.dht_nodes[3].to_string());
    let out_s = out.path().to_string_lossy().into_owned();
    let mut proc = download_process(
        name,
        &[
            &magnet,
            "--bootstrap",
            &bootstrap,
            bind,
            "-o",
            &out_s,
            "--no-seed",
            "--transport",
            transport,
        ],
    );
    let done = proc
        .wait_event("done", Duration::from_secs(90))
        .expect("download finishes");
    assert_eq!(done["complete"], true, "{done}");
    verify_files(out.path(), &info.files).unwrap_or_else(|e| panic!("{name}: {e}"));
}

lodestone_tests::isolated_test! {
    /// Two libtorrent seeders that accept uTP only: the magnet's metadata
    /// and every piece come over uTP.
    fn downloads_from_utp_only_libtorrent_seeders() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 6,
            seeders: 2,
            utp_only_seeders: 2,
            file_sizes: vec![6 * MIB, 2 * MIB + 5, 3_000],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        download(&swarm, "utp-only", "utp", &dht_bind(1));
    }

    /// One seeder speaks TCP only, the other uTP only; with both transports
    /// lodestone downloads from each of them.
    fn mixed_seeders_are_all_used() {
        let mut swarm = Swarm::start(SwarmConfig {
            dht_nodes: 6,
            seeders: 2,
            utp_only_seeders: 1,
            file_sizes: vec![16 * MIB],
            single_file: true,
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        download(&swarm, "mixed", "both", &dht_bind(2));
        let uploads = swarm.uploads().expect("upload counters");
        let seeders = swarm.info().seeders.clone();
        assert_eq!(uploads.len(), 2, "{uploads:?}");
        for seeder in seeders {
            let sent = uploads.get(&seeder).copied().unwrap_or(0);
            // The first seeder is uTP-only, the second TCP-only.
            assert!(sent > 0, "nothing came from {seeder}: {uploads:?}");
        }
    }

    /// A libtorrent downloader that speaks uTP only fetches the magnet from
    /// lodestone seeding the files it has.
    fn libtorrent_over_utp_downloads_from_lodestone() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 6,
            seeders: 0,
            file_sizes: vec![4 * MIB, 1_000_001],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();
        let seed_dir = info.content_dir.to_string_lossy().into_owned();
        let torrent = info.torrent.to_string_lossy().into_owned();
        let bootstrap = info.dht_nodes[2].to_string();
        let bind = dht_bind(3);
        let mut seeder = download_process(
            "lodestone-seeder",
            &[&torrent, "--bootstrap", &bootstrap, &bind, "-o", &seed_dir, "--seed-ratio", "1000", "--transport", "utp"],
        );
        loop {
            let event = seeder.next_event(Duration::from_secs(30)).expect("lodestone reaches seeding");
            if event["phase"] == "seeding" {
                break;
            }
        }
        let mut downloader = LibtorrentDownloader::start(DownloaderConfig {
            ip: addr(BLOCK_LIBTORRENT, 1),
            port: 6881,
            source: Source::Magnet(info.magnet()),
            bootstrap: info.dht_nodes.clone(),
            no_dht: false,
            utp: true,
            utp_only: true,
        })
        .expect("downloader");
        downloader.wait_metadata(Duration::from_secs(60)).expect("metadata over uTP");
        downloader.wait_finished(Duration::from_secs(60)).expect("finished over uTP");
        verify_files(downloader.save_path(), &info.files).expect("content intact");
    }
}
