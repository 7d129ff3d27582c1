//! BEP 27: a private torrent never speaks of itself in the DHT. A
//! `lodestone node` is the only DHT node; lodestone downloads a private
//! torrent (made by mktorrent) from a lodestone seeder named with --peer,
//! with the DHT on, and the node is asked nothing about any swarm.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_success, dht_bind, lodestone, stderr};
use lodestone_tests::netns::{BLOCK_LODESTONE, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::workdir::WorkDir;

/// A `lodestone node` on `bind` serving metrics on `metrics`; killed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample `name{labels}` in the node's metrics.
fn metric(metrics: SocketAddr, sample: &str) -> u64 {
    let mut stream = TcpStream::connect(metrics).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
}

lodestone_tests::isolated_test! {
    fn a_private_torrent_never_reaches_the_dht() {
        let work = WorkDir::new("private").expect("work dir");
        let content = work.subdir("seed").expect("seed dir").join("secret");
        std::fs::create_dir_all(&content).expect("content dir");
        for (i, size) in [700_000usize, 1_300_001].iter().enumerate() {
            let bytes: Vec<u8> = (0..*size).map(|j| (j * 7 + i) as u8).collect();
            std::fs::write(content.join(format!("part-{i}.bin")), bytes).expect("content");
        }
        let torrent = work.path().join("secret.torrent");
        let made = Command::new("mktorrent")
            .args(["-p", "-l", "16", "-o"])
            .arg(&torrent)
            .arg(&content)
            .output()
            .expect("mktorrent runs (tests/setup installs it)");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let torrent_s = torrent.to_string_lossy().into_owned();

        let node_addr = SocketAddr::from((addr(BLOCK_LODESTONE, 50), 6881));
        let metrics = SocketAddr::from((addr(BLOCK_LODESTONE, 50), 9469));
        let node = Node(
            Command::new(env!("CARGO_BIN_EXE_lodestone"))
                .args(["node", "--no-bootstrap", "--stats-interval", "0", "--bind", &node_addr.to_string()])
                .args(["--metrics", &metrics.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("node runs"),
        );

        // The seeder has the files and no DHT; the leecher uses the DHT.
        let seed_dir = content.parent().expect("parent").to_string_lossy().into_owned();
        let mut seeder_cmd = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        seeder_cmd.args(["download", "--json", &torrent_s, "-o", &seed_dir, "--no-dht", "--port", "7001", "--seed-ratio", "1000"]);
        let mut seeder = Proc::spawn("seeder", seeder_cmd).expect("seeder starts");
        loop {
            let event = seeder.next_event(Duration::from_secs(30)).expect("seeder reaches seeding");
            if event["phase"] == "seeding" {
                break;
            }
        }
        let out = work.subdir("leech").expect("leech dir").to_string_lossy().into_owned();
        let bootstrap = node_addr.to_string();
        let output = lodestone(&[
            "download", &torrent_s, "-o", &out, "--no-seed", "--bootstrap", &bootstrap, &dht_bind(1),
            "--peer", "127.0.0.1:7001",
        ]);
        assert_success(&output, "private download");
        for i in 0..2 {
            let name = format!("secret/part-{i}.bin");
            let got = std::fs::read(work.path().join("leech").join(&name)).expect("downloaded file");
            let want = std::fs::read(content.join(format!("part-{i}.bin"))).expect("content");
            assert!(got == want, "{name} differs");
        }
        // The DHT was joined (bootstrap) but never asked about a swarm.
        assert!(metric(metrics, "lodestone_dht_queries_total{method=\"find_node\"}") > 0, "{}", stderr(&output));
        assert_eq!(metric(metrics, "lodestone_dht_queries_total{method=\"get_peers\"}"), 0);
        assert_eq!(metric(metrics, "lodestone_dht_queries_total{method=\"announce_peer\"}"), 0);
        drop(node);
    }
}
