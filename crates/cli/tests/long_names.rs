//! Names are written to disk as libtorrent writes them, those too long for
//! a file system (over 255 bytes) cut as it cuts them: a libtorrent
//! downloader fed by a lodestone seeder puts every file at the very path
//! lodestone seeds it from, so a directory one of them downloaded can be
//! seeded by the other.

use std::process::Command;
use std::time::Duration;

use lodestone_core::Metainfo;
use lodestone_tests::clients::{DownloaderConfig, LibtorrentDownloader};
use lodestone_tests::netns::{BLOCK_LIBTORRENT, BLOCK_LODESTONE, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::workdir::WorkDir;

/// `len` bytes that differ from file to file.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

lodestone_tests::isolated_test! {
    fn libtorrent_puts_long_names_where_lodestone_seeds_them() {
        // A directory of 300 bytes of CJK, a file of 304 bytes with an
        // extension, one of 305 whose 241st byte ends a character, and a
        // short one that is not written as it is named.
        let files = [
            (vec!["目录".repeat(50), format!("{}.bin", "f".repeat(300))], content(100_000, 1)),
            (vec![format!("a{}.jpg", "日".repeat(100))], content(5_000, 2)),
            // A C0 control and a right-to-left override, which both
            // libtorrent 2.0.8 and lodestone keep off the disk.
            (vec!["tab\there\u{202e}.txt".to_owned()], content(3_000, 3)),
        ];
        let refs: Vec<(Vec<String>, &[u8])> =
            files.iter().map(|(path, data)| (path.clone(), data.as_slice())).collect();
        let metainfo = Metainfo::create("t", 16_384, &refs).expect("torrent made");
        assert!(metainfo.info.files.iter().all(|f| f.disk_path() != f.relative_path()));

        let work = WorkDir::new("long-names").expect("work dir");
        let seed_dir = work.subdir("seed").expect("seed dir");
        for (file, (_, data)) in metainfo.info.files.iter().zip(&files) {
            let path = seed_dir.join(file.disk_path());
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, data).expect("content written");
        }
        let torrent = work.path().join("long.torrent");
        std::fs::write(&torrent, metainfo.to_torrent_bytes()).expect("torrent written");

        let ip = addr(BLOCK_LODESTONE, 1);
        let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        command
            .args(["download", "--json", "--no-dht", "--seed-ratio", "1000", "--bind"])
            .arg(ip.to_string())
            .arg(&torrent)
            .arg("-o")
            .arg(&seed_dir);
        let mut seeder = Proc::spawn("lodestone-seeder", command).expect("lodestone starts");
        loop {
            let event = seeder.next_event(Duration::from_secs(30)).expect("lodestone seeds");
            if event["phase"] == "seeding" {
                break;
            }
        }

        let magnet = format!("magnet:?xt=urn:btih:{}&x.pe={ip}:6881", metainfo.info_hash.to_hex());
        let config = DownloaderConfig::from_named_peers(addr(BLOCK_LIBTORRENT, 1), magnet);
        let mut downloader = LibtorrentDownloader::start(config).expect("downloader");
        downloader.wait_finished(Duration::from_secs(60)).expect("libtorrent finishes");
        for (file, (_, data)) in metainfo.info.files.iter().zip(&files) {
            let path = downloader.save_path().join(file.disk_path());
            let got = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("libtorrent wrote no {}: {e}", path.display()));
            assert!(got == *data, "{} differs", path.display());
        }
    }
}
