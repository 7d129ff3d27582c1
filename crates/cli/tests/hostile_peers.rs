//! `lodestone download` under attack from the peers that connect to it,
//! in a loopback-only network namespace: while it downloads from
//! libtorrent seeders, dozens of fake leechers from a handful of addresses
//! flood it with block and ut_metadata requests (for pieces it has and
//! pieces it lacks) and never read a byte of the answers. Each must be
//! refused or dropped, the download must finish exactly, and lodestone's
//! peak memory must stay small.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use common::dht_bind;
use lodestone_core::{InfoHash, PeerId};
use lodestone_tests::content::verify_files;
use lodestone_tests::process::Proc;
use lodestone_tests::swarm::{Swarm, SwarmConfig};
use lodestone_tests::workdir::WorkDir;
use lodestone_wire::{BlockRequest, ExtendedHandshake, Handshake, Message, Reserved, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const MIB: u64 = 1 << 20;

/// Where lodestone listens for peers.
const LISTEN_PORT: u16 = 7881;

/// Addresses the fake leechers connect from, and connections per address:
/// two more than lodestone's per-IP limit of 8.
const LEECHER_IPS: u8 = 5;
const PER_IP: u8 = 10;

/// Bytes of requests each leecher writes without reading.
const FLOOD_BYTES: usize = 8 << 20;

/// Peak resident memory lodestone may reach. Downloading a torrent this
/// size takes about 20 MiB; a leecher whose answers piled up unread would
/// add megabytes each.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

/// How one fake leecher fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// No handshake came back: lodestone turned the connection away.
    Refused,
    /// Handshaken, then disconnected by lodestone during or after the flood.
    Dropped,
    /// Still connected a minute after its flood.
    Tolerated,
}

/// A leecher's handshake (extension protocol and fast extension on), with
/// a peer id made from `tag`.
fn handshake(info_hash: InfoHash, tag: u16) -> Vec<u8> {
    let mut id = *b"-XX0001-hostile-\0\0\0\0";
    id[18..].copy_from_slice(&tag.to_be_bytes());
    Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new(id))
        .to_bytes()
        .to_vec()
}

/// An extended handshake offering ut_metadata as 3, `interested`, then
/// block requests for every piece in turn interleaved with ut_metadata
/// requests, up to [`FLOOD_BYTES`].
fn flood(pieces: u32) -> Vec<u8> {
    let mut hello = ExtendedHandshake::default();
    hello.m.insert("ut_metadata".into(), 3);
    let mut out = BytesMut::new();
    encode(&hello.to_message(), &mut out);
    encode(&Message::Interested, &mut out);
    let mut piece = 0u32;
    while out.len() < FLOOD_BYTES {
        let request = BlockRequest {
            index: piece,
            begin: 0,
            length: 16_384,
        };
        encode(&Message::Request(request), &mut out);
        let metadata = lodestone_metadata::Message::Request { piece: piece % 4 };
        // Our ut_metadata id, which lodestone's extended handshake names.
        let id = 1;
        encode(
            &Message::Extended {
                id,
                payload: metadata.to_vec().into(),
            },
            &mut out,
        );
        piece = (piece + 1) % pieces;
    }
    out.to_vec()
}

/// Connects from `from`, handshakes, floods, never reads an answer; then
/// waits to see whether lodestone hangs up.
async fn leech(from: Ipv4Addr, to: SocketAddr, hello: Vec<u8>, flood: &[u8]) -> Fate {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from.into(), 0)).expect("bind");
    let mut stream = socket.connect(to).await.expect("lodestone listens");
    stream.write_all(&hello).await.expect("handshake sent");
    let mut theirs = [0u8; 68];
    if stream.read_exact(&mut theirs).await.is_err() {
        return Fate::Refused;
    }
    if stream.write_all(flood).await.is_err() {
        return Fate::Dropped;
    }
    // Everything fitted in the socket buffers: now read until lodestone
    // hangs up (it reads on and trips over the flood), or give up.
    let mut sink = vec![0u8; 64 * 1024];
    let hung_up = tokio::time::timeout(Duration::from_secs(60), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    if hung_up.is_ok() {
        Fate::Dropped
    } else {
        Fate::Tolerated
    }
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Waits for lodestone's `phase` event naming `phase`.
fn wait_phase(proc: &mut Proc, phase: &str) {
    loop {
        let event = proc
            .wait_event("phase", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("waiting for phase {phase}: {e}"));
        if event["phase"] == phase {
            return;
        }
    }
}

lodestone_tests::isolated_test! {
    /// 50 flooding leechers from 5 addresses while lodestone downloads
    /// 32 MiB from three libtorrent seeders found through the DHT. Without
    /// the abuse meter and the read pause, all 40 admitted leechers stay
    /// connected and lodestone peaks above 90 MiB; with them, every one is
    /// dropped and the peak is about 18 MiB.
    async fn flooding_leechers_are_dropped_and_memory_stays_bounded() {
        let swarm = Swarm::start(SwarmConfig {
            dht_nodes: 8,
            seeders: 3,
            file_sizes: vec![24 * MIB, 8 * MIB],
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info();
        let out = WorkDir::new("hostile-leechers").expect("work dir");
        let (magnet, bootstrap, bind) = (info.magnet(), info.dht_nodes[1].to_string(), dht_bind(1));
        let port = LISTEN_PORT.to_string();
        let out_s = out.path().to_string_lossy().into_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lodestone"));
        command.args([
            "download", "--json", &magnet, "--bootstrap", &bootstrap, &bind, "-o", &out_s,
            "--port", &port, "--seed-ratio", "1000",
        ]);
        let mut lodestone = Proc::spawn("lodestone", command).expect("lodestone starts");
        wait_phase(&mut lodestone, "downloading");

        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, LISTEN_PORT));
        let flood = std::sync::Arc::new(flood(info.piece_count));
        let info_hash = InfoHash::from_hex(&info.info_hash).expect("hex infohash");
        let mut leechers = tokio::task::JoinSet::new();
        for ip in 1..=LEECHER_IPS {
            for n in 0..PER_IP {
                let from = Ipv4Addr::new(127, 0, 20, ip);
                let (hello, flood) = (handshake(info_hash, u16::from(ip) << 8 | u16::from(n)), flood.clone());
                leechers.spawn(async move { (from, leech(from, to, hello, &flood).await) });
            }
        }
        let mut fates = std::collections::BTreeMap::<(Ipv4Addr, Fate), u32>::new();
        while let Some(done) = leechers.join_next().await {
            *fates.entry(done.expect("leecher task")).or_default() += 1;
        }
        wait_phase(&mut lodestone, "seeding");
        let peak = peak_rss_kib(lodestone.pid());
        eprintln!("leecher fates (address, fate) → count: {fates:?}; lodestone peak RSS {peak} KiB");

        let count = |fate: Fate| fates.iter().filter(|((_, f), _)| *f == fate).map(|(_, n)| n).sum::<u32>();
        assert_eq!(count(Fate::Tolerated), 0, "every flooding leecher is dropped: {fates:?}");
        assert!(count(Fate::Dropped) >= u32::from(LEECHER_IPS), "control: leechers got in: {fates:?}");
        assert!(peak < MAX_PEAK_RSS_KIB, "peak RSS {peak} KiB ≥ {MAX_PEAK_RSS_KIB} KiB");

        let status = Command::new("kill").args(["-INT", &lodestone.pid().to_string()]).status().expect("kill runs");
        assert!(status.success());
        let done = lodestone.wait_event("done", Duration::from_secs(30)).expect("lodestone stops on SIGINT");
        assert_eq!(done["complete"], true, "{done}");
        verify_files(out.path(), &info.files).expect("every file matches its checksum");
    }
}
