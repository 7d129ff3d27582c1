//! `lodestone node` run as an operator would: a real process, real sockets,
//! real clients, each test inside its own loopback-only network namespace.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lodestone_core::{InfoHash, NodeId};
use lodestone_dht::krpc::{Body, Message, Query, Response, TransactionId};
use lodestone_tests::netns::{BLOCK_LIBTORRENT, BLOCK_LODESTONE, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::tools::python_with_libtorrent;
use lodestone_tests::workdir::WorkDir;

/// A running `lodestone node`; killed on drop.
struct NodeProc {
    child: Option<Child>,
    id: NodeId,
    addr: SocketAddr,
}

impl NodeProc {
    fn start(bind: SocketAddr, extra: &[&str]) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lodestone"))
            .args(["node", "--bind", &bind.to_string(), "--stats-interval", "5"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lodestone runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for line in lines.map_while(Result::ok) {
                eprintln!("[node stdout] {line}");
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the node prints its id line");
        eprintln!("[node] {line}");
        // "lodestone node <id> listening on <addr>..."
        let id = line
            .split_whitespace()
            .nth(2)
            .and_then(|hex| NodeId::from_hex(hex).ok())
            .unwrap_or_else(|| panic!("no id in {line:?}"));
        NodeProc {
            child: Some(child),
            id,
            addr: bind,
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(status) => {
                let status = status.expect("wait");
                assert!(status.success(), "node exited with {status}");
            }
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("node ignored SIGTERM");
            }
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn socket(ip_index: u8) -> UdpSocket {
    let s = UdpSocket::bind((addr(BLOCK_LODESTONE, ip_index), 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn encode(tid: &[u8], id: NodeId, query: Query) -> Vec<u8> {
    Message {
        tid: TransactionId::new(tid).expect("short tid"),
        body: Body::Query { id, query },
        ip: None,
        read_only: false,
        version: None,
    }
    .to_bytes()
}

/// The next message from the node that is not a query of its own (it
/// pings queriers to verify them).
fn next_reply(s: &UdpSocket) -> Message {
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = s.recv_from(&mut buf).expect("a reply within 5 s");
        let msg = Message::decode(&buf[..n]).expect("the node sends valid KRPC");
        if !matches!(msg.body, Body::Query { .. }) {
            return msg;
        }
    }
}

fn assert_answers_ping(s: &UdpSocket, node: &NodeProc, tid: &[u8]) {
    s.send_to(&encode(tid, NodeId([0x42; 20]), Query::Ping), node.addr)
        .expect("send");
    let reply = next_reply(s);
    assert_eq!(reply.tid.as_slice(), tid);
    match reply.body {
        Body::Response(r) => assert_eq!(r.id, node.id),
        other => panic!("ping answered with {other:?}"),
    }
}

fn find_node(s: &UdpSocket, node: &NodeProc, querier: NodeId, target: NodeId) -> Response {
    s.send_to(
        &encode(b"fn", querier, Query::FindNode { target, want: None }),
        node.addr,
    )
    .expect("send");
    match next_reply(s).body {
        Body::Response(r) => r,
        other => panic!("find_node answered with {other:?}"),
    }
}

/// A fake DHT node: queries `node`, answers its verification ping, and
/// returns once the node serves it (asked through `probe`).
fn verified_fake(node: &NodeProc, probe: &UdpSocket, ip_index: u8, id: NodeId) {
    let s = socket(ip_index);
    s.send_to(
        &encode(
            b"hi",
            id,
            Query::FindNode {
                target: id,
                want: None,
            },
        ),
        node.addr,
    )
    .expect("send");
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "the node never pinged {ip_index}"
        );
        let (n, from) = s.recv_from(&mut buf).expect("a ping within 5 s");
        if answer_ping(&s, id, &buf[..n], from) {
            break;
        }
    }
    // Alive as a real node is: a restarted node re-verifies what it
    // loaded, and a silent fake would be dropped while the test looks.
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            match s.recv_from(&mut buf) {
                Ok((n, from)) => {
                    answer_ping(&s, id, &buf[..n], from);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });
    // The node has several shards, each with its own socket: the answer may
    // still wait in another shard's socket when the probe's query is served.
    // An id is the closest contact to itself, so it is served once pooled.
    let deadline = Instant::now() + Duration::from_secs(10);
    while find_node(probe, node, NodeId([0x42; 20]), id)
        .nodes
        .first()
        .map(|n| n.id)
        != Some(id)
    {
        assert!(
            Instant::now() < deadline,
            "the node never pooled {ip_index}"
        );
    }
}

/// Answers `datagram` if it is a ping; says whether it was.
fn answer_ping(s: &UdpSocket, id: NodeId, datagram: &[u8], from: SocketAddr) -> bool {
    let msg = Message::decode(datagram).expect("valid KRPC");
    let Body::Query {
        query: Query::Ping, ..
    } = msg.body
    else {
        return false;
    };
    let reply = Message {
        tid: msg.tid,
        body: Body::Response(Response {
            id,
            ..Response::default()
        }),
        ip: None,
        read_only: false,
        version: None,
    };
    s.send_to(&reply.to_bytes(), from).expect("send");
    true
}

fn fake_id(i: u8) -> NodeId {
    let mut id = [i; 20];
    id[0] = i.wrapping_mul(37);
    NodeId(id)
}

lodestone_tests::isolated_test! {
    /// Hostile datagrams get the BEP 5 error or silence, and the node keeps
    /// answering.
    fn hostile_input_gets_errors_or_silence() {
        let node = NodeProc::start(
            SocketAddr::from((addr(BLOCK_LODESTONE, 1), 6881)),
            &["--no-bootstrap"],
        );
        let s = socket(2);
        let id = b"abcdefghij0123456789";
        let deep = {
            let mut v = vec![b'l'; 20_000];
            v.extend(vec![b'e'; 20_000]);
            v
        };
        let mut big = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:xx1:y1:q1:z".to_vec();
        // A string length far past the end of the datagram.
        big.extend(format!("{}:", 999_999_999).as_bytes());
        big.extend(vec![b'x'; 60_000]);
        big.push(b'e');
        let garbage: Vec<u8> = (0..65_507u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let mut wrong_token = b"d1:ad2:id20:".to_vec();
        wrong_token.extend(id);
        wrong_token.extend(b"9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:badtokene1:q13:announce_peer1:t2:tk1:y1:qe");
        // (datagram, expected error code or None for silence)
        let cases: Vec<(&str, Vec<u8>, Option<i64>)> = vec![
            ("truncated", b"d1:ad2:id20:abcdefghij01".to_vec(), None),
            ("not a dict", b"i42e".to_vec(), None),
            ("empty", Vec::new(), None),
            ("64 KiB garbage", garbage, None),
            ("deep nesting", deep, None),
            ("oversized bencode", big, None),
            ("unknown method", b"d1:ad2:id20:abcdefghij0123456789e1:q6:vote_x1:t2:um1:y1:qe".to_vec(), Some(204)),
            ("a is a list", b"d1:ali1ee1:q4:ping1:t2:al1:y1:qe".to_vec(), Some(203)),
            ("id is an int", b"d1:ad2:idi5ee1:q4:ping1:t2:ii1:y1:qe".to_vec(), Some(203)),
            ("short id", b"d1:ad2:id3:abce1:q4:ping1:t2:si1:y1:qe".to_vec(), Some(203)),
            ("missing target", b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:mt1:y1:qe".to_vec(), Some(203)),
            ("missing info_hash", b"d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:mi1:y1:qe".to_vec(), Some(203)),
            ("bad token", wrong_token, Some(203)),
            ("unknown y", b"d1:t2:uy1:y1:ze".to_vec(), None),
            ("stray response", b"d1:rd2:id20:abcdefghij0123456789e1:t2:sr1:y1:re".to_vec(), None),
            ("our own id", encode(b"oi", node.id, Query::Ping), None),
        ];
        for (i, (name, bytes, expected)) in cases.into_iter().enumerate() {
            s.send_to(&bytes, node.addr).unwrap_or_else(|e| panic!("{name}: send: {e}"));
            // Loopback keeps order: an error, if any, arrives before the ping's answer.
            let tid = [b'p', i as u8];
            s.send_to(&encode(&tid, NodeId([0x42; 20]), Query::Ping), node.addr).expect("send");
            let first = next_reply(&s);
            match (expected, &first.body) {
                (Some(code), Body::Error(e)) => {
                    assert_eq!(e.code, code, "{name}: {e:?}");
                    let second = next_reply(&s);
                    assert_eq!(second.tid.as_slice(), tid, "{name}");
                }
                (None, Body::Response(r)) => {
                    assert_eq!(first.tid.as_slice(), tid, "{name}: answered");
                    assert_eq!(r.id, node.id);
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
        // A real announce still works after all that.
        s.send_to(
            &encode(b"gp", NodeId([0x42; 20]), Query::GetPeers { info_hash: InfoHash([9; 20]), want: None }),
            node.addr,
        )
        .expect("send");
        let token = match next_reply(&s).body {
            Body::Response(r) => r.token.expect("get_peers gives a token"),
            other => panic!("{other:?}"),
        };
        s.send_to(
            &encode(
                b"ap",
                NodeId([0x42; 20]),
                Query::AnnouncePeer { info_hash: InfoHash([9; 20]), port: 4000, implied_port: false, token },
            ),
            node.addr,
        )
        .expect("send");
        assert!(matches!(next_reply(&s).body, Body::Response(_)));
        assert_answers_ping(&s, &node, b"zz");
    }

    /// Killed with SIGTERM and started again on the same state directory,
    /// the node has the same id and answers from its pool at once, before
    /// anyone has talked to it.
    fn restart_keeps_id_and_pool() {
        let dir = WorkDir::new("node-restart").expect("workdir");
        let state = dir.path().join("state");
        let state_arg = state.to_string_lossy().into_owned();
        let bind = SocketAddr::from((addr(BLOCK_LODESTONE, 1), 6881));
        let args = ["--no-bootstrap", "--state", &state_arg, "--verify-delay", "0"];
        let node = NodeProc::start(bind, &args);
        let fakes: Vec<NodeId> = (10..40).map(fake_id).collect();
        let probe = socket(2);
        for (i, id) in (10..40).zip(&fakes) {
            verified_fake(&node, &probe, i, *id);
        }
        let before = find_node(&probe, &node, NodeId([0x42; 20]), fakes[3]);
        assert_eq!(before.nodes.len(), 16, "{:?}", before.nodes);
        assert_eq!(before.nodes[0].id, fakes[3]);
        let id = node.id;
        node.terminate();
        assert!(state.join("dht.state").exists());
        assert!(state.join("pool.log").exists());

        let node = NodeProc::start(bind, &args);
        assert_eq!(node.id, id, "same id after restart");
        let after = find_node(&probe, &node, NodeId([0x43; 20]), fakes[3]);
        assert_eq!(after.nodes, before.nodes, "the pool came back");
        node.terminate();
    }

    /// Libtorrent sessions whose only contact is our node find each other,
    /// a seeder's announce goes through the DHT so formed, and a libtorrent
    /// downloader bootstrapped only through our node fetches the content.
    fn libtorrent_swarm_forms_through_our_node() {
        use lodestone_tests::clients::{DownloaderConfig, LibtorrentDownloader, Source};
        use lodestone_tests::content::verify_files;
        use lodestone_tests::swarm::FileInfo;

        let node = NodeProc::start(
            SocketAddr::from((addr(BLOCK_LODESTONE, 1), 6881)),
            &["--no-bootstrap"],
        );
        let dir = WorkDir::new("node-swarm").expect("workdir");
        let harness_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py");
        let dht_ips: Vec<String> = (1..=4).map(|i| addr(1, i).to_string()).collect();
        let mut command = Command::new(python_with_libtorrent().expect("python3 with libtorrent"));
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/node_swarm.py"))
            .env("LODESTONE_HARNESS_PY", &harness_py)
            .arg("--workdir")
            .arg(dir.path())
            .args(["--node", &node.addr.to_string()])
            .args(["--dht-ips", &dht_ips.join(",")])
            .args(["--seeder-ip", &addr(2, 1).to_string()])
            // Four other libtorrent sessions besides our node: they met.
            .args(["--want", "4"])
            .args(["--timeout", "60"]);
        let mut swarm = Proc::spawn("node-swarm", command).expect("node_swarm.py");
        let meshed = swarm.wait_event("meshed", Duration::from_secs(75)).expect("meshed");
        eprintln!("libtorrent sessions met through our node: {meshed}");
        let ready = swarm.wait_event("ready", Duration::from_secs(75)).expect("ready");
        let info_hash = ready["info_hash"].as_str().expect("info_hash").to_owned();
        let files: Vec<FileInfo> = serde_json::from_value(ready["files"].clone()).expect("files");

        let mut downloader = LibtorrentDownloader::start(DownloaderConfig {
            ip: addr(BLOCK_LIBTORRENT, 1),
            port: 6881,
            source: Source::Magnet(format!("magnet:?xt=urn:btih:{info_hash}&dn=content")),
            bootstrap: vec![node.addr],
            no_dht: false,
            utp: false,
            utp_only: false,
        })
        .expect("downloader");
        downloader.wait_metadata(Duration::from_secs(60)).expect("metadata");
        downloader.wait_finished(Duration::from_secs(60)).expect("finished");
        verify_files(downloader.save_path(), &files).expect("content intact");
        node.terminate();
    }
}
