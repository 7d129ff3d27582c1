//! `lodestone download` against real clients it did not write, each test in
//! its own loopback-only network namespace.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assert_success, dht_bind, lodestone, stderr};
use lodestone_tests::clients::{aria2_seeder, transmission_seeder};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_TRANSMISSION, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig, SwarmInfo};
use lodestone_tests::workdir::WorkDir;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// `lodestone download --json` as a supervised process whose events we read.
fn download_process(name: &str, args: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
    command.arg("download").arg("--json").args(args);
    Proc::spawn(name, command).expect("lodestone starts")
}

/// The `done` event of a download, once it ends.
fn wait_done(proc: &mut Proc, timeout: Duration) -> Value {
    proc.wait_event("done", timeout).expect("download finishes")
}

fn out_arg(dir: &WorkDir) -> String {
    dir.path().to_string_lossy().into_owned()
}

/// Every regular file under `root`, as paths relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

fn multi_file_swarm(seeders: u8, file_sizes: Vec<u64>) -> Swarm {
    Swarm::start(SwarmConfig {
        dht_nodes: 8,
        seeders,
        file_sizes,
        ..SwarmConfig::default()
    })
    .expect("swarm ready")
}

fn magnet_args<'a>(
    info: &'a SwarmInfo,
    magnet: &'a str,
    bootstrap: &'a str,
    out: &'a str,
    bind: &'a str,
) -> Vec<&'a str> {
    let _ = info;
    vec![
        magnet,
        "--bootstrap",
        bootstrap,
        bind,
        "-o",
        out,
        "--no-seed",
    ]
}

/// Downloads the swarm's torrent from one seeder given as x.pe, no DHT.
fn download_by_x_pe(info: &SwarmInfo, seeder: std::net::SocketAddr, name: &str) {
    let out = WorkDir::new(name).expect("work dir");
    let magnet = format!("{}&x.pe={seeder}", info.magnet());
    let out_s = out_arg(&out);
    let mut proc = download_process(name, &[&magnet, "--no-dht", "-o", &out_s, "--no-seed"]);
    let done = wait_done(&mut proc, Duration::from_secs(60));
    assert_eq!(done["complete"], true, "{done}");
    verify_files(out.path(), &info.files).unwrap_or_else(|e| panic!("{name}: {e}"));
}

lodestone_tests::isolated_test! {
    /// Three libtorrent seeders found only through a private libtorrent DHT.
    fn from_three_libtorrent_seeders_through_the_dht() {
        let swarm = multi_file_swarm(3, vec![12 * MIB, 20 * MIB, 5_000, 3 * MIB + 7]);
        let info = swarm.info();
        let out = WorkDir::new("download-dht").expect("work dir");
        let (magnet, bootstrap, out_s, bind) = (info.magnet(), info.dht_nodes[4].to_string(), out_arg(&out), dht_bind(1));
        let output = lodestone(&["download", &magnet, "--bootstrap", &bootstrap, &bind, "-o", &out_s, "--no-seed"]);
        assert_success(&output, "download");
        verify_files(out.path(), &info.files).expect("every file matches its checksum");
        assert!(stderr(&output).contains("downloaded"), "{}", stderr(&output));
    }

    /// An aria2 seeder named by x.pe.
    fn from_aria2() {
        let swarm = multi_file_swarm(0, vec![6 * MIB, 2 * MIB + 3]);
        let info = swarm.info();
        let aria2 = aria2_seeder(&info.torrent, &info.content_dir, addr(BLOCK_ARIA2, 1), 6881, &[]).expect("aria2 seeding");
        download_by_x_pe(info, aria2.addr(), "aria2");
    }

    /// A transmission seeder named by x.pe.
    fn from_transmission() {
        let swarm = multi_file_swarm(0, vec![6 * MIB, 2 * MIB + 3]);
        let info = swarm.info();
        let transmission = transmission_seeder(&info.torrent, &info.content_dir, addr(BLOCK_TRANSMISSION, 1), 6881)
            .expect("transmission seeding");
        download_by_x_pe(info, transmission.addr(), "transmission");
    }

    /// Two files out of seven: exactly those land on disk, verified.
    fn selected_files_only() {
        let sizes = vec![300_000, 1_000_000, 17, 2_000_000, 40_000, 700_000, 1_500_000];
        let swarm = multi_file_swarm(2, sizes);
        let info = swarm.info();
        let out = WorkDir::new("select").expect("work dir");
        let (magnet, bootstrap, out_s, bind) = (info.magnet(), info.dht_nodes[0].to_string(), out_arg(&out), dht_bind(2));
        let mut args = magnet_args(info, &magnet, &bootstrap, &out_s, &bind);
        args.extend(["--select", "1,5"]);
        let mut proc = download_process("lodestone", &args);
        let done = wait_done(&mut proc, Duration::from_secs(60));
        assert_eq!(done["complete"], true, "{done}");
        // Indices are the torrent's, whose file order is libtorrent's own.
        let torrent = lodestone_core::Metainfo::from_torrent_bytes(&std::fs::read(&info.torrent).expect("torrent"))
            .expect("torrent parses");
        let wanted: Vec<_> = [1, 5]
            .map(|index| torrent.info.files[index].relative_path())
            .iter()
            .map(|path| info.files.iter().find(|f| &f.path == path).expect("file in swarm").clone())
            .collect();
        verify_files(out.path(), &wanted).expect("selected files intact");
        let mut expected: Vec<String> = wanted.iter().map(|f| f.path.to_string_lossy().into_owned()).collect();
        expected.sort();
        assert_eq!(files_under(out.path()), expected);
    }

    /// kill -9 in the middle, then the same command: verified pieces are not
    /// fetched again and the result is exact.
    fn resume_after_kill() {
        let swarm = multi_file_swarm(2, vec![16 * MIB, 8 * MIB]);
        let info = swarm.info();
        let out = WorkDir::new("resume").expect("work dir");
        let (magnet, bootstrap, out_s, bind) = (info.magnet(), info.dht_nodes[1].to_string(), out_arg(&out), dht_bind(3));
        let mut args = magnet_args(info, &magnet, &bootstrap, &out_s, &bind);
        args.extend(["--max-download-rate", "4M"]);
        let mut slow = download_process("lodestone-slow", &args);
        loop {
            let event = slow.next_event(Duration::from_secs(60)).expect("progress events");
            if event["event"] == "progress" && event["verified_bytes"].as_u64().unwrap_or(0) >= 6 * MIB {
                break;
            }
        }
        let killed = Command::new("kill").args(["-9", &slow.pid().to_string()]).status().expect("kill runs");
        assert!(killed.success());
        drop(slow);

        let args = magnet_args(info, &magnet, &bootstrap, &out_s, &bind);
        let mut again = download_process("lodestone-resume", &args);
        let done = wait_done(&mut again, Duration::from_secs(60));
        assert_eq!(done["complete"], true, "{done}");
        let resumed = done["pieces_resumed"].as_u64().expect("count");
        let fetched = done["pieces_verified"].as_u64().expect("count");
        assert!(resumed > 0, "nothing was resumed: {done}");
        assert_eq!(resumed + fetched, u64::from(info.piece_count), "{done}");
        verify_files(out.path(), &info.files).expect("content intact after resume");
    }

    /// aria2c, with only the DHT to go on, gets metadata and every piece from
    /// lodestone seeding the files it already has.
    fn aria2_downloads_from_lodestone() {
        let swarm = multi_file_swarm(0, vec![3 * MIB, 1_000_000]);
        let info = swarm.info();
        let seed_dir = info.content_dir.to_string_lossy().into_owned();
        let torrent = info.torrent.to_string_lossy().into_owned();
        let bootstrap = info.dht_nodes[2].to_string();
        let bind = dht_bind(4);
        let mut seeder = download_process(
            "lodestone-seeder",
            &[&torrent, "--bootstrap", &bootstrap, &bind, "-o", &seed_dir, "--seed-ratio", "1000"],
        );
        seeder.wait_event("phase", Duration::from_secs(30)).expect("lodestone starts");
        loop {
            let event = seeder.next_event(Duration::from_secs(30)).expect("lodestone reaches seeding");
            if event["phase"] == "seeding" {
                break;
            }
        }
        let out = WorkDir::new("aria2-leech").expect("work dir");
        let aria2_ip = addr(BLOCK_ARIA2, 2);
        let status = Command::new("aria2c")
            .args([
                "--enable-dht=true",
                &format!("--dht-entry-point={bootstrap}"),
                &format!("--interface={aria2_ip}"),
                "--listen-port=6881",
                "--dht-listen-port=6881",
                &format!("--dht-file-path={}/dht.dat", out_arg(&out)),
                "--enable-dht6=false",
                "--disable-ipv6=true",
                "--bt-enable-lpd=false",
                "--seed-time=0",
                "--no-conf=true",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--stop=90",
                &format!("--dir={}", out_arg(&out)),
                &info.magnet(),
            ])
            .status()
            .expect("aria2c runs");
        assert!(status.success(), "aria2c failed: {status}");
        verify_files(out.path(), &info.files).expect("aria2 got the exact content from lodestone");
    }
}
