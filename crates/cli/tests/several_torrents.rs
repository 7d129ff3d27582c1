//! `lodestone download A B`: several torrents in one process. One lodestone
//! seeds two torrents (made by mktorrent) on one port; another downloads
//! both from magnet links in one run under one `--max-download-rate`,
//! which caps their sum.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_success, lodestone, stderr};
use lodestone_core::Metainfo;
use lodestone_tests::process::Proc;
use lodestone_tests::workdir::WorkDir;

const MIB: usize = 1 << 20;

/// Writes `size` pseudo-random bytes as `dir/name/data.bin` and makes a
/// torrent of `dir/name`; returns the torrent's path.
fn make_torrent(dir: &Path, name: &str, size: usize, seed: u8) -> String {
    let content = dir.join(name);
    std::fs::create_dir_all(&content).expect("content dir");
    let bytes: Vec<u8> = (0..size).map(|i| ((i * 131) as u8) ^ seed).collect();
    std::fs::write(content.join("data.bin"), bytes).expect("content");
    let torrent = dir.join(format!("{name}.torrent"));
    let made = Command::new("mktorrent")
        .args(["-l", "16", "-o"])
        .arg(&torrent)
        .arg(&content)
        .output()
        .expect("mktorrent runs (tests/setup installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    torrent.to_string_lossy().into_owned()
}

lodestone_tests::isolated_test! {
    fn two_magnets_in_one_process_share_the_rate_cap() {
        let work = WorkDir::new("several").expect("work dir");
        let seed_dir = work.subdir("seed").expect("seed dir");
        let torrents = [
            make_torrent(&seed_dir, "first", 5 * MIB, 1),
            make_torrent(&seed_dir, "second", 3 * MIB, 2),
        ];
        let seed_s = seed_dir.to_string_lossy().into_owned();
        let mut seeder_cmd = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        seeder_cmd.args(["download", "--json", &torrents[0], &torrents[1], "-o", &seed_s, "--no-dht"]);
        seeder_cmd.args(["--port", "7001", "--seed-ratio", "1000"]);
        let mut seeder = Proc::spawn("seeder", seeder_cmd).expect("seeder starts");
        let mut seeding = 0;
        while seeding < 2 {
            let event = seeder.next_event(Duration::from_secs(30)).expect("seeder reaches seeding");
            if event["phase"] == "seeding" {
                seeding += 1;
            }
        }

        let magnets: Vec<String> = torrents
            .iter()
            .map(|t| {
                let metainfo = Metainfo::from_torrent_bytes(&std::fs::read(t).expect("torrent")).expect("parses");
                format!("magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:7001", metainfo.info_hash)
            })
            .collect();
        let out = work.subdir("leech").expect("leech dir");
        let out_s = out.to_string_lossy().into_owned();
        let cap = 2 * MIB;
        let cap_s = cap.to_string();
        let started = Instant::now();
        let output = lodestone(&[
            "download", &magnets[0], &magnets[1], "-o", &out_s, "--no-dht", "--no-seed",
            "--max-download-rate", &cap_s, "--port", "7002",
        ]);
        let elapsed = started.elapsed().as_secs_f64();
        assert_success(&output, "two downloads");
        for name in ["first", "second"] {
            let got = std::fs::read(out.join(name).join("data.bin")).expect("downloaded");
            let want = std::fs::read(seed_dir.join(name).join("data.bin")).expect("content");
            assert!(got == want, "{name} differs");
        }
        // 8 MiB under a 2 MiB/s cap on their sum: not faster than the cap
        // allows (plus its quarter-second burst), and not held far below it.
        let rate = (8 * MIB) as f64 / elapsed;
        assert!(rate <= cap as f64 * 1.1, "{rate:.0} B/s over the cap: {}", stderr(&output));
        assert!(rate >= cap as f64 * 0.9, "{rate:.0} B/s well under the cap: {}", stderr(&output));
    }
}
