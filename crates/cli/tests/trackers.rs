//! Trackers as a peer source, end to end.
//!
//! 1. Debian's `opentracker` (HTTP and UDP on one port) knows an aria2
//!    seeder; lodestone downloads, with the DHT off, a `.torrent` whose
//!    announce URL is HTTP and a magnet whose `tr=` is UDP. After each,
//!    opentracker's scrape counts one more completed download and no
//!    lodestone left in the swarm: it saw `completed` and `stopped`.
//!    `metadata --no-dht` fetches the info dict of a magnet whose only
//!    peer source is its `tr=`.
//! 2. Hostile trackers in this process (garbage, a body without end, a
//!    silent HTTP server, a silent and a babbling UDP one) cost lodestone
//!    bounded bytes and time: the magnet still downloads from the DHT, and
//!    a well-behaved recording tracker sees started, completed, stopped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_success, dht_bind, lodestone, stderr};
use lodestone_core::{InfoHash, Metainfo};
use lodestone_tests::clients::{Seeder, aria2_seeder};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_RELAY, addr};
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::torrent::TorrentFacts;
use lodestone_tests::workdir::WorkDir;
use lodestone_tracker::ScrapeStats;

const MIB: u64 = 1 << 20;

/// `opentracker` serving HTTP and UDP on `ip:port` for the whitelisted
/// infohash; killed on drop.
struct OpenTracker {
    child: Child,
    addr: SocketAddr,
}

impl OpenTracker {
    fn start(dir: &Path, addr: SocketAddr, info_hash: &str) -> OpenTracker {
        use std::os::unix::fs::PermissionsExt;
        // It chroots to `dir` and drops to `nobody`, who must read the list.
        std::fs::create_dir_all(dir).expect("tracker dir");
        std::fs::write(dir.join("whitelist"), format!("{info_hash}\n")).expect("whitelist");
        for (path, mode) in [(dir.to_owned(), 0o755), (dir.join("whitelist"), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let port = addr.port().to_string();
        let child = Command::new("opentracker")
            .args([
                "-i",
                &addr.ip().to_string(),
                "-p",
                &port,
                "-P",
                &port,
                "-w",
                "whitelist",
            ])
            .arg("-d")
            .arg(dir)
            .spawn()
            .expect("opentracker runs (tests/setup installs it)");
        let tracker = OpenTracker { child, addr };
        wait_for("opentracker to listen", || TcpStream::connect(addr).is_ok());
        tracker
    }

    /// What the tracker knows of the swarm, by HTTP scrape.
    fn scrape(&self, info_hash: &InfoHash) -> ScrapeStats {
        let url = url::Url::parse(&format!("http://{}/announce", self.addr)).expect("url");
        let scrape = lodestone_tracker::http::scrape_url(&url, info_hash).expect("scrape url");
        let body = http_get(
            self.addr,
            &format!("{}?{}", scrape.path(), scrape.query().unwrap_or("")),
        );
        lodestone_tracker::http::parse_scrape(&body, info_hash).expect("scrape reply")
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET target` over HTTP/1.0.
fn http_get(addr: SocketAddr, target: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {target} HTTP/1.0\r\n\r\n").expect("request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply");
    let at = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    reply.split_off(at + 4)
}

/// Polls `ready` (a condition another process makes true) for 30 s.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A URL as a magnet `tr=` value.
fn tr(url: &str) -> String {
    url.replace(':', "%3A").replace('/', "%2F")
}

fn assert_same_files(got: &Path, want: &Path) {
    for entry in std::fs::read_dir(want).expect("content") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        let same = std::fs::read(got.join(name)).expect("downloaded file")
            == std::fs::read(&path).expect("content");
        assert!(same, "{} differs", name.to_string_lossy());
    }
}

/// An aria2 seeder with no DHT, known only to an opentracker that the
/// torrent names by its HTTP announce URL.
struct TrackedSeeder {
    work: WorkDir,
    /// The shared directory, as seeded.
    content: PathBuf,
    torrent: PathBuf,
    info_hash: InfoHash,
    tracker: OpenTracker,
    _seeder: Seeder,
}

impl TrackedSeeder {
    fn start(name: &str) -> TrackedSeeder {
        let work = WorkDir::new(name).expect("work dir");
        let content = work.subdir("seed").expect("seed dir").join("shared");
        std::fs::create_dir_all(&content).expect("content dir");
        for (i, size) in [900_000usize, 1_500_003].iter().enumerate() {
            let bytes: Vec<u8> = (0..*size).map(|j| (j * 13 + i) as u8).collect();
            std::fs::write(content.join(format!("part-{i}.bin")), bytes).expect("content");
        }
        let tracker_addr = SocketAddr::from((addr(BLOCK_RELAY, 40), 6969));
        let torrent = work.path().join("shared.torrent");
        let made = Command::new("mktorrent")
            .args([
                "-l",
                "16",
                "-a",
                &format!("http://{tracker_addr}/announce"),
                "-o",
            ])
            .arg(&torrent)
            .arg(&content)
            .output()
            .expect("mktorrent runs (tests/setup installs it)");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let facts = TorrentFacts::read(&torrent).expect("torrent");
        let info_hash = InfoHash(facts.info_hash);
        let tracker = OpenTracker::start(
            &work.path().join("opentracker"),
            tracker_addr,
            &facts.info_hash_hex(),
        );

        // aria2 seeds with no DHT: the tracker is the only way to it.
        let seed_dir = content.parent().expect("parent");
        let seeder = aria2_seeder(&torrent, seed_dir, addr(BLOCK_ARIA2, 1), 6881, &[])
            .expect("aria2 seeding");
        wait_for("the seeder's announce", || {
            tracker.scrape(&info_hash).complete == 1
        });
        TrackedSeeder {
            work,
            content,
            torrent,
            info_hash,
            tracker,
            _seeder: seeder,
        }
    }

    /// A magnet link naming the swarm and, as its only peer source, the
    /// tracker over UDP.
    fn udp_magnet(&self) -> String {
        let udp = format!("udp://{}", self.tracker.addr);
        format!(
            "magnet:?xt=urn:btih:{}&tr={}",
            self.info_hash.to_hex(),
            tr(&udp)
        )
    }
}

lodestone_tests::isolated_test! {
    fn downloads_through_opentracker_over_http_and_udp() {
        let swarm = TrackedSeeder::start("trackers");
        let (work, tracker, info_hash) = (&swarm.work, &swarm.tracker, swarm.info_hash);
        let torrent_s = swarm.torrent.to_string_lossy().into_owned();
        let magnet = swarm.udp_magnet();
        for (round, (what, source, port)) in [("HTTP", torrent_s.as_str(), "7101"), ("UDP", magnet.as_str(), "7102")].into_iter().enumerate() {
            let out = work.subdir(&format!("leech-{round}")).expect("leech dir");
            let output = lodestone(&[
                "download", source, "-o", &out.to_string_lossy(), "--no-dht", "--no-seed", "--port", port, "-v",
            ]);
            assert_success(&output, what);
            assert_same_files(&out.join("shared"), &swarm.content);
            // The scrape after the first answer is logged.
            assert!(stderr(&output).contains("tracker scrape:"), "{what}: {}", stderr(&output));
            // `completed` counted once more; `stopped` took us out again.
            let seen = tracker.scrape(&info_hash);
            assert_eq!(seen, ScrapeStats { complete: 1, incomplete: 0, downloaded: round as u32 + 1 }, "{what}");
        }
    }
}

lodestone_tests::isolated_test! {
    /// `metadata --no-dht` with a magnet whose only peer source is its
    /// `tr=`: the tracker names the seeder, which gives the info dict.
    fn metadata_from_a_magnet_s_tracker_without_the_dht() {
        let swarm = TrackedSeeder::start("tracker-metadata");
        let out = swarm.work.path().join("fetched.torrent");
        let output = lodestone(&[
            "metadata", &swarm.udp_magnet(), "--no-dht", "-o", &out.to_string_lossy(), "--timeout", "60",
        ]);
        assert_success(&output, "metadata");
        let fetched = Metainfo::from_torrent_bytes(&std::fs::read(&out).expect("torrent written")).expect("valid torrent");
        let original = Metainfo::from_torrent_bytes(&std::fs::read(&swarm.torrent).expect("original")).expect("original parses");
        assert_eq!(fetched.info_hash, swarm.info_hash);
        assert_eq!(fetched.raw_info(), original.raw_info());
        // It left the swarm as it came: the seeder alone remains.
        let seen = swarm.tracker.scrape(&swarm.info_hash);
        assert_eq!((seen.complete, seen.incomplete), (1, 0), "{}", stderr(&output));
    }
}

/// Serves every HTTP connection on `ip` with `serve` in its own thread;
/// returns the tracker URL.
fn http_tracker(ip: Ipv4Addr, serve: impl Fn(TcpStream, String) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let serve = serve.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_ok() {
                    serve(stream, line);
                }
            });
        }
    });
    format!("http://{addr}/announce")
}

/// A UDP tracker that reads every datagram and answers `reply(datagram)`
/// if it gives anything.
fn udp_tracker(ip: Ipv4Addr, reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> String {
    let socket = UdpSocket::bind((ip, 0)).expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(answer) = reply(&buf[..n]) {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    format!("udp://{addr}")
}

lodestone_tests::isolated_test! {
    fn hostile_trackers_cost_bounded_bytes_and_time() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 8,
            seeders: 2,
            file_sizes: vec![3 * MIB, MIB + 7],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();

        let garbage = http_tracker(addr(BLOCK_RELAY, 41), |mut s, _| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nd8:intervali60e5:peers7:\xff\xff\xff");
        });
        let pushed = Arc::new(AtomicU64::new(0));
        let counter = pushed.clone();
        // A body with no length and no end: 64 MiB offered.
        let endless = http_tracker(addr(BLOCK_RELAY, 42), move |mut s, _| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'9'; 64 << 10];
            for _ in 0..1024 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        let silent_http = http_tracker(addr(BLOCK_RELAY, 43), |s, _| {
            // Holds the connection open and says nothing.
            let _ = std::io::copy(&mut &s, &mut std::io::sink());
        });
        let silent_udp = udp_tracker(addr(BLOCK_RELAY, 44), |_| None);
        let babbling_udp = udp_tracker(addr(BLOCK_RELAY, 45), |d| {
            // The right transaction id, then nonsense of the wrong length.
            let mut r = vec![0, 0, 0, 1];
            r.extend_from_slice(d.get(12..16).unwrap_or(&[0; 4]));
            r.extend_from_slice(&[7; 1001]);
            Some(r)
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let recording = http_tracker(addr(BLOCK_RELAY, 46), move |mut s, line| {
            if !line.contains("/announce?") {
                // The scrape: answered with nothing known.
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nd5:filesdee");
                return;
            }
            let event = line
                .split(['?', '&', ' '])
                .find_map(|p| p.strip_prefix("event="))
                .unwrap_or("none")
                .to_owned();
            seen.lock().expect("events").push(event);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nd8:intervali1800e5:peers0:e");
        });

        let mut magnet = info.magnet();
        for url in [&garbage, &endless, &silent_http, &silent_udp, &babbling_udp, &recording] {
            magnet.push_str(&format!("&tr={}", tr(url)));
        }
        let work = WorkDir::new("hostile-trackers").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let started = Instant::now();
        // GNU time reports the peak resident set as the process ends.
        let output = Command::new("/usr/bin/time")
            .args(["-f", "peak-rss-kib %M", env!("CARGO_BIN_EXE_lodestone")])
            .args(["download", &magnet, "-o", &out.to_string_lossy(), "--no-seed"])
            .args(["--bootstrap", &info.dht_nodes[0].to_string(), &dht_bind(1)])
            .output()
            .expect("/usr/bin/time runs lodestone (tests/setup installs time)");
        let took = started.elapsed();
        assert_success(&output, "download beside hostile trackers");
        verify_files(&out, &info.files).expect("files verified");
        // Bounded time: no tracker holds the download or the exit (the
        // silent ones were never answered, so nothing waits on them).
        assert!(took < Duration::from_secs(60), "took {took:?}: {}", stderr(&output));
        // Bounded bytes: the endless body is dropped past the 256 KiB cap
        // (plus what socket buffers hold).
        let bytes = pushed.load(Ordering::Relaxed);
        assert!(bytes < 16 * MIB, "{bytes} bytes of the endless reply were taken");
        let peak_kib: u64 = stderr(&output)
            .lines()
            .find_map(|l| l.strip_prefix("peak-rss-kib ")?.trim().parse().ok())
            .expect("peak RSS reported");
        eprintln!("hostile trackers: {bytes} bytes of the endless reply sent, {took:?}, peak RSS {peak_kib} KiB");
        assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
        let events = events.lock().expect("events").clone();
        assert_eq!(events, ["started", "completed", "stopped"], "{}", stderr(&output));
    }
}
