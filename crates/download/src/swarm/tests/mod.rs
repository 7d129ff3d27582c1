//! Whole downloads against in-process fake seeders on 127.0.0.1.

mod duplicates;
mod fruitless;
mod leechers;
mod resume_record;
mod seed_ratio;
mod seeder;
mod turnover;
mod unchoke;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lodestone_core::{Metainfo, PeerId};
use lodestone_wire::{Connection, ExitKind, Handshake, Reserved};
use tokio::sync::mpsc;

use super::*;
use crate::storage::TempDir;
use seeder::{Behavior, Seeder};

/// A deterministic multi-file torrent: files of the given sizes, in one
/// stream of pseudo-random bytes.
fn torrent(piece_length: u32, sizes: &[usize]) -> (Arc<Metainfo>, Bytes) {
    let total: usize = sizes.iter().sum();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..total)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut at = 0;
    let files: Vec<(Vec<String>, &[u8])> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let file = (
                vec![format!("dir{}", i % 2), format!("f{i}.bin")],
                &data[at..at + n],
            );
            at += n;
            file
        })
        .collect();
    let metainfo = Metainfo::create("t", piece_length, &files).unwrap();
    (Arc::new(metainfo), Bytes::from(data))
}

fn peer_id(tag: u8) -> PeerId {
    PeerId::new([tag; 20])
}

fn config(dir: &Path) -> DownloadConfig {
    let mut c = DownloadConfig::new(dir, peer_id(b'L'));
    c.no_seed = true;
    c.rng_seed = Some(7);
    c
}

/// The session's part for one download in these tests: dialing and
/// accepting, handing every handshaken connection to the download. It must
/// outlive the download's use of new peers.
struct Net {
    conns: mpsc::Sender<Established>,
    exits: mpsc::UnboundedReceiver<PeerExit>,
    handshake: Handshake,
}

/// Starts a download and the [`Net`] that feeds it.
fn start(metainfo: &Arc<Metainfo>, config: DownloadConfig) -> (DownloadHandle, Net) {
    let handshake = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, config.peer_id);
    let (conns, conns_rx) = mpsc::channel(16);
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let handle = Download::start(metainfo.clone(), config, conns_rx, exits_tx);
    let net = Net {
        conns,
        exits,
        handshake,
    };
    (handle, net)
}

impl Net {
    /// The next connection end the download reports; fails the test with
    /// `what` if none comes within 30 s.
    async fn next_exit(&mut self, what: &str) -> PeerExit {
        tokio::time::timeout(Duration::from_secs(30), self.exits.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .expect("the download holds the exits' sender")
    }

    /// Connects to `addr` in the background; a failure is dropped, as the
    /// session's dialer would count it against the address.
    fn dial(&self, addr: SocketAddr) {
        let (conns, ours) = (self.conns.clone(), self.handshake);
        tokio::spawn(async move {
            if let Ok((conn, theirs)) =
                Connection::connect(addr, Duration::from_secs(1), ours).await
            {
                let _ = conns
                    .send(Established::new(conn, theirs, addr, false))
                    .await;
            }
        });
    }

    /// Dials every seeder.
    fn dial_all(&self, seeders: &[&Seeder]) {
        for s in seeders {
            self.dial(s.addr);
        }
    }

    /// Accepts connections for this torrent on a new 127.0.0.1 port.
    async fn listen(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, ours) = (self.conns.clone(), self.handshake);
        tokio::spawn(async move {
            while let Ok((stream, from)) = listener.accept().await {
                let conns = conns.clone();
                tokio::spawn(async move {
                    let accepted = Connection::accept(stream, Duration::from_secs(5), ours).await;
                    if let Ok((conn, theirs)) = accepted {
                        let _ = conns.send(Established::new(conn, theirs, from, true)).await;
                    }
                });
            }
        });
        addr
    }
}

/// Downloads from `seeders` alone until complete or a minute passes.
async fn download_from(
    metainfo: &Arc<Metainfo>,
    config: DownloadConfig,
    seeders: &[&Seeder],
) -> Summary {
    let (handle, net) = start(metainfo, config);
    net.dial_all(seeders);
    finish(handle).await
}

/// Waits (at most a minute) until a progress snapshot satisfies `pred`.
async fn until(handle: &DownloadHandle, pred: impl FnMut(&DownloadProgress) -> bool) {
    let mut progress = handle.progress();
    tokio::time::timeout(Duration::from_secs(60), progress.wait_for(pred))
        .await
        .expect("progress timed out")
        .expect("download task gone");
}

async fn finish(handle: DownloadHandle) -> Summary {
    tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("download timed out")
        .expect("download failed")
}

/// Every selected file is on disk with exactly its bytes; no other exists.
fn assert_files(dir: &Path, metainfo: &Metainfo, data: &[u8], selected: impl Fn(usize) -> bool) {
    for (i, f) in metainfo.info.files.iter().enumerate() {
        let path = dir.join(f.relative_path());
        if selected(i) {
            let on_disk = std::fs::read(&path).unwrap();
            let range = f.range();
            assert!(
                on_disk == data[range.start as usize..range.end as usize],
                "file {i} differs"
            );
        } else {
            assert!(!path.exists(), "unselected file {i} was created");
        }
    }
}

const SIZES: [usize; 5] = [100_000, 1, 250_000, 65_536, 333_333];

/// Writes the files `present` selects into `dir` and starts a download
/// there that listens on 127.0.0.1, knows no peers and seeds until shut
/// down. Returns once the files on disk are checked, with its address and
/// the [`Net`] that accepts for it, which must outlive it. (The re-check
/// runs in the background, so wait for its last verdict.)
async fn seeding(
    metainfo: &Arc<Metainfo>,
    data: &[u8],
    dir: &Path,
    present: impl Fn(usize) -> bool,
) -> (DownloadHandle, SocketAddr, Net) {
    for (i, f) in metainfo.info.files.iter().enumerate() {
        if present(i) {
            let path = dir.join(f.relative_path());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let r = f.range();
            std::fs::write(path, &data[r.start as usize..r.end as usize]).unwrap();
        }
    }
    let mut c = config(dir);
    c.no_seed = false;
    c.peer_id = peer_id(b'A');
    let (seed, net) = start(metainfo, c);
    let addr = net.listen().await;
    until(&seed, |p| {
        p.phase != Phase::Checking && p.pieces_checking == 0
    })
    .await;
    (seed, addr, net)
}

/// Downloads the whole torrent from the download seeding at `seed` alone,
/// into a fresh directory; asserts it completes with exact files.
async fn leech_from(seed: SocketAddr, metainfo: &Arc<Metainfo>, data: &[u8]) -> Summary {
    let dir = TempDir::new("swarm-leech");
    let mut c = config(&dir.0);
    c.peer_id = peer_id(b'B');
    let (handle, net) = start(metainfo, c);
    net.dial(seed);
    let summary = finish(handle).await;
    assert!(summary.complete);
    assert_files(&dir.0, metainfo, data, |_| true);
    summary
}

#[tokio::test]
async fn downloads_multi_file_from_three_seeders() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-multi");
    let mut seeders = Vec::new();
    for _ in 0..3 {
        seeders.push(seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await);
    }
    let (handle, net) = start(&metainfo, config(&dir.0));
    net.dial_all(&seeders.iter().collect::<Vec<_>>());
    let progress = handle.progress();
    let summary = finish(handle).await;
    assert!(summary.complete);
    assert_eq!(summary.pieces_verified, metainfo.info.piece_count());
    assert_eq!(summary.hash_failures, 0);
    assert_eq!(progress.borrow().phase, Phase::Finished);
    assert_eq!(progress.borrow().verified_bytes, data.len() as u64);
    assert_files(&dir.0, &metainfo, &data, |_| true);
    let served: u64 = seeders.iter().map(Seeder::requests).sum();
    assert!(served >= u64::from(metainfo.info.piece_count()));
}

#[tokio::test]
async fn corrupting_seeder_is_banned_and_the_result_is_exact() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-corrupt");
    let all: Vec<u32> = (0..metainfo.info.piece_count()).collect();
    let liar = seeder::spawn(&metainfo, data.clone(), Behavior::Corrupt(all)).await;
    let honest = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    // The liar is alone until it is banned: every block of the first
    // piece it fails is its own. With the honest seeder there too, the
    // download could finish, and let the honest seeder go, before the
    // piece that convicts the liar was checked (1 run in 100 here).
    let (handle, mut net) = start(&metainfo, config(&dir.0));
    net.dial(liar.addr);
    let banned = net.next_exit("the liar was not dropped").await;
    assert_eq!(banned, PeerExit::new(liar.addr, ExitKind::Misbehaved));
    // Handed over again after the ban: refused, as misbehaved.
    net.dial(liar.addr);
    let refused = net.next_exit("the liar was not refused").await;
    assert_eq!(refused, banned);
    net.dial(honest.addr);
    let summary = finish(handle).await;
    assert!(summary.complete);
    assert_eq!(summary.peers_banned, 1);
    assert!(summary.hash_failures >= 1);
    assert_files(&dir.0, &metainfo, &data, |_| true);
}

/// A liar that sent one bad block of a piece and left before the piece
/// was whole: the piece fails with two senders, passes from the honest
/// seeder, and then the departed liar is convicted by its address.
#[tokio::test]
async fn a_liar_that_left_is_convicted_once_its_piece_passes() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-liar-left");
    let liar = seeder::spawn(&metainfo, data.clone(), Behavior::CorruptOneThenLeave).await;
    let honest = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    let (handle, mut net) = start(&metainfo, config(&dir.0));
    net.dial(liar.addr);
    let left = net.next_exit("the liar did not leave").await;
    assert_eq!(left.addr, liar.addr);
    assert_ne!(left.kind, ExitKind::Misbehaved);
    net.dial(honest.addr);
    let convicted = net.next_exit("the departed liar was not convicted").await;
    assert_eq!(convicted, PeerExit::new(liar.addr, ExitKind::Misbehaved));
    let summary = finish(handle).await;
    assert!(summary.complete);
    assert_eq!((summary.peers_banned, summary.hash_failures), (1, 1));
    assert_files(&dir.0, &metainfo, &data, |_| true);
}

#[tokio::test]
async fn resume_does_not_fetch_verified_pieces_again() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let pieces = metainfo.info.piece_count();
    let half = pieces / 2;
    let dir = TempDir::new("swarm-resume");

    // First run: the only seeder has the first half; stop once we have it.
    let partial = seeder::spawn(&metainfo, data.clone(), Behavior::Prefix(half)).await;
    let (handle, net) = start(&metainfo, config(&dir.0));
    net.dial(partial.addr);
    until(&handle, |p| {
        p.pieces_done == half && p.stuck == Some(Stuck::NobodyHasMissing)
    })
    .await;
    handle.shutdown();
    let first = finish(handle).await;
    assert!(!first.complete);
    assert_eq!(first.pieces_verified, half);

    // Second run: a full seeder is asked for exactly the missing blocks.
    let full = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    let second = download_from(&metainfo, config(&dir.0), &[&full]).await;
    assert!(second.complete);
    assert_eq!(second.pieces_resumed, half);
    assert_eq!(second.pieces_verified, pieces - half);
    let layout = crate::layout::Layout::from_info(&metainfo.info).unwrap();
    let missing_blocks: u64 = layout
        .pieces()
        .skip(half as usize)
        .map(|p| u64::from(layout.block_count(p)))
        .sum();
    assert_eq!(full.requests(), missing_blocks);
    assert_files(&dir.0, &metainfo, &data, |_| true);
}

#[tokio::test]
async fn selecting_two_of_seven_files_writes_only_those() {
    let sizes = [40_000, 70_000, 5_000, 100_000, 33_000, 1_000, 90_000];
    let (metainfo, data) = torrent(16 * 1024, &sizes);
    let dir = TempDir::new("swarm-select");
    let s = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    let mut c = config(&dir.0);
    c.files = Some(BTreeSet::from([1, 4]));
    let summary = download_from(&metainfo, c, &[&s]).await;
    assert!(summary.complete);
    assert!(summary.pieces_verified < metainfo.info.piece_count());
    assert_files(&dir.0, &metainfo, &data, |i| i == 1 || i == 4);
}

#[tokio::test]
async fn hostile_peers_are_dropped_and_the_download_completes() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-hostile");
    let mut bad = Vec::new();
    for b in [
        Behavior::ShortBitfield,
        Behavior::BitfieldFlood,
        Behavior::HugeLength,
        Behavior::Silent,
        Behavior::NoHandshake,
        Behavior::WrongInfoHash,
    ] {
        bad.push(seeder::spawn(&metainfo, data.clone(), b).await);
    }
    let honest = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    let mut all: Vec<&Seeder> = bad.iter().collect();
    all.push(&honest);
    let summary = download_from(&metainfo, config(&dir.0), &all).await;
    assert!(summary.complete);
    assert_eq!(summary.hash_failures, 0);
    assert!(bad.iter().all(|s| s.requests() == 0));
    assert_files(&dir.0, &metainfo, &data, |_| true);
}

#[tokio::test]
async fn a_second_download_fetches_from_a_seeding_one() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let seed_dir = TempDir::new("swarm-seed");
    let (seed, seed_addr, _keep) = seeding(&metainfo, &data, &seed_dir.0, |_| true).await;
    assert_eq!(seed.progress().borrow().phase, Phase::Seeding);

    let leech = leech_from(seed_addr, &metainfo, &data).await;
    assert_eq!(leech.pieces_verified, metainfo.info.piece_count());

    seed.shutdown();
    let seeded = finish(seed).await;
    assert!(seeded.complete);
    assert_eq!(seeded.pieces_resumed, metainfo.info.piece_count());
    assert!(seeded.uploaded >= data.len() as u64);
}

#[tokio::test]
async fn a_stalling_peer_is_dropped_and_its_requests_reassigned() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-stall");
    let staller = seeder::spawn(&metainfo, data.clone(), Behavior::StallAfter(20)).await;
    let mut c = config(&dir.0);
    c.stall_timeout = Duration::from_millis(300);
    let (handle, net) = start(&metainfo, c);
    net.dial(staller.addr);
    // It answered 20 requests, then sat on the rest until we hung up.
    until(&handle, |p| p.downloaded > 0 && p.peers_connected == 0).await;
    assert!(staller.requests() > 20);
    let honest = seeder::spawn(&metainfo, data.clone(), Behavior::Honest).await;
    net.dial(honest.addr);
    let summary = finish(handle).await;
    assert!(summary.complete);
    let layout = crate::layout::Layout::from_info(&metainfo.info).unwrap();
    let blocks: u64 = layout
        .pieces()
        .map(|p| u64::from(layout.block_count(p)))
        .sum();
    assert_eq!(
        honest.requests(),
        blocks - 20,
        "the stalled requests were reassigned"
    );
    assert_files(&dir.0, &metainfo, &data, |_| true);
}

#[tokio::test]
async fn serves_the_info_dictionary_over_ut_metadata() {
    use lodestone_wire::{ExtendedHandshake, Message};
    let (metainfo, data) = torrent(16 * 1024, &SIZES);
    let dir = TempDir::new("swarm-metadata");
    let (seed, addr, _keep) = seeding(&metainfo, &data, &dir.0, |_| true).await;

    let ours = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, peer_id(b'M'));
    let (mut conn, _) = Connection::connect(addr, Duration::from_secs(5), ours)
        .await
        .unwrap();
    let mut hello = ExtendedHandshake::default();
    hello.m.insert("ut_metadata".into(), 3);
    conn.send(&hello.to_message()).await.unwrap();
    let raw = metainfo.raw_info();
    let pieces = raw.len().div_ceil(16 * 1024) as u32;
    let mut their_id = None;
    let mut got = Vec::new();
    while got.len() < raw.len() {
        match conn.recv().await.unwrap() {
            Message::Extended { id: 0, payload } => {
                let theirs = ExtendedHandshake::decode(&payload).unwrap();
                assert_eq!(theirs.metadata_size, Some(raw.len() as u64));
                let id = theirs.extension_id("ut_metadata").unwrap();
                their_id = Some(id);
                for piece in 0..pieces {
                    let req = lodestone_metadata::Message::Request { piece };
                    conn.feed(&Message::Extended {
                        id,
                        payload: req.to_vec().into(),
                    });
                }
                conn.flush().await.unwrap();
            }
            Message::Extended { id: 3, payload } => {
                assert!(their_id.is_some());
                let msg = lodestone_metadata::Message::decode(&payload).unwrap();
                let lodestone_metadata::Message::Data { piece, data, .. } = msg else {
                    panic!("expected data, got {msg:?}");
                };
                assert_eq!(piece as usize * 16 * 1024, got.len());
                got.extend_from_slice(data);
            }
            _ => {}
        }
    }
    assert_eq!(got, raw);
    seed.shutdown();
    assert!(finish(seed).await.complete);
}
