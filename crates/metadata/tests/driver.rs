//! The async driver against fake peers on 127.0.0.1: honest seeders serving
//! a multi-piece info dictionary, and hostile ones (wrong bytes, a 4 GiB
//! `metadata_size`, rejecting everything, never handshaking).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_bencode::Writer;
use lodestone_core::{InfoHash, PeerId};
use lodestone_metadata::driver::OUR_UT_METADATA_ID;
use lodestone_metadata::{
    FetchError, FetchOptions, Message, PIECE_SIZE, Progress, RequestBudget, fetch_metainfo,
    fetch_metainfo_with_progress, respond,
};
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::{Connection, ExtendedHandshake, Handshake, Reserved};
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The id our fake seeders ask ut_metadata messages to arrive under.
const SEEDER_UT_METADATA_ID: u8 = 7;

/// An info dictionary with enough files to span several metadata pieces.
fn info_dict(files: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Writer::new(&mut out).dict(|d| {
        d.key(b"files").list(|l| {
            for i in 0..files {
                l.dict(|f| {
                    f.int(b"length", 1000 + i as i64);
                    f.key(b"path").list(|p| {
                        p.bytes(format!("directory-{}", i % 17).as_bytes());
                        p.bytes(format!("a-fairly-long-file-name-number-{i:06}.bin").as_bytes());
                    });
                });
            }
        });
        d.bytes(b"name", b"many files");
        d.int(b"piece length", 1 << 18);
        let total: u64 = (0..files as u64).map(|i| 1000 + i).sum();
        let pieces = total.div_ceil(1 << 18) as usize;
        d.bytes(b"pieces", &vec![0xab; 20 * pieces]);
    });
    out
}

fn info_hash(info: &[u8]) -> InfoHash {
    InfoHash::new(Sha1::digest(info).into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    WrongBytes,
    HugeSize,
    RejectAll,
    /// Accepts TCP, never sends a handshake.
    Mute,
    /// BitTorrent handshake without the extension protocol bit.
    NoExtensions,
}

/// Starts a fake peer; returns its address.
async fn fake_peer(info: Vec<u8>, behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hash = info_hash(&info);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let info = info.clone();
            tokio::spawn(async move {
                let _ = serve_one(stream, info, hash, behaviour).await;
            });
        }
    });
    addr
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    info: Vec<u8>,
    hash: InfoHash,
    behaviour: Behaviour,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if behaviour == Behaviour::Mute {
        // Hold the socket open without a word until the client gives up.
        let mut buf = [0u8; 68];
        let mut stream = stream;
        loop {
            use tokio::io::AsyncReadExt;
            if stream.read(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
    let mut reserved = Reserved::default();
    reserved.set_extensions(behaviour != Behaviour::NoExtensions);
    let ours = Handshake::new(reserved, hash, PeerId::new([b's'; 20]));
    let (mut conn, theirs) = Connection::accept(stream, Duration::from_secs(5), ours).await?;
    assert!(
        theirs.reserved.supports_extensions(),
        "client must set the BEP 10 bit"
    );
    if behaviour == Behaviour::NoExtensions {
        // Stay connected, as a plain BitTorrent peer would.
        loop {
            conn.recv().await?;
        }
    }
    let mut hs = ExtendedHandshake {
        metadata_size: Some(match behaviour {
            Behaviour::HugeSize => 4 << 30,
            _ => info.len() as u64,
        }),
        ..ExtendedHandshake::default()
    };
    hs.m.insert(UT_METADATA.to_owned(), SEEDER_UT_METADATA_ID);
    conn.send(&hs.to_message()).await?;
    let mut budget = RequestBudget::default();
    let mut corrupted = info.clone();
    corrupted[info.len() / 2] ^= 0x55;
    let mut their_id = None;
    loop {
        let lodestone_wire::Message::Extended { id, payload } = conn.recv().await? else {
            continue;
        };
        if id == 0 {
            let theirs = ExtendedHandshake::decode(&payload)?;
            their_id = theirs.extension_id(UT_METADATA);
            assert_eq!(their_id, Some(OUR_UT_METADATA_ID));
            continue;
        }
        assert_eq!(
            id, SEEDER_UT_METADATA_ID,
            "client used the wrong extension id"
        );
        let Message::Request { piece } = Message::decode(&payload)? else {
            continue;
        };
        assert_ne!(
            behaviour,
            Behaviour::HugeSize,
            "asked a peer with an absurd size"
        );
        let answer = match behaviour {
            Behaviour::RejectAll => Message::Reject { piece },
            Behaviour::WrongBytes => respond(Some(&corrupted), &mut budget, piece),
            _ => respond(Some(&info), &mut budget, piece),
        };
        let id = their_id.ok_or("request before the client's handshake")?;
        conn.send(&lodestone_wire::Message::Extended {
            id,
            payload: answer.to_vec().into(),
        })
        .await?;
    }
}

fn options() -> FetchOptions {
    let mut options = FetchOptions::new(PeerId::new([b'c'; 20]));
    options.timeout = Duration::from_secs(20);
    options
}

async fn addresses(list: &[SocketAddr], close: bool) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel(64);
    for addr in list {
        tx.send(*addr).await.unwrap();
    }
    if !close {
        // Keep the stream open: more peers might come.
        std::mem::forget(tx);
    }
    rx
}

#[tokio::test]
async fn fetches_multi_piece_metadata_from_honest_seeders() {
    let info = info_dict(600);
    assert!(info.len() > 3 * PIECE_SIZE as usize, "{} bytes", info.len());
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(fake_peer(info.clone(), Behaviour::Honest).await);
    }
    let rx = addresses(&peers, false).await;
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let metainfo = fetch_metainfo_with_progress(info_hash(&info), rx, options(), &progress_tx)
        .await
        .unwrap();
    assert_eq!(metainfo.info_hash, info_hash(&info));
    assert_eq!(metainfo.raw_info(), &info[..]);
    assert_eq!(metainfo.info.files.len(), 600);
    let progress = *progress_rx.borrow();
    assert_eq!(progress.peers_known, 3);
    assert!(progress.ever_ut_metadata >= 1);
}

#[tokio::test]
async fn honest_seeders_win_over_hostile_peers() {
    let info = info_dict(600);
    let hash = info_hash(&info);
    let mut peers = Vec::new();
    // Hostile peers first, so they are connected and asked first.
    for behaviour in [
        Behaviour::WrongBytes,
        Behaviour::HugeSize,
        Behaviour::RejectAll,
        Behaviour::Mute,
        Behaviour::NoExtensions,
        Behaviour::WrongBytes,
        Behaviour::Honest,
        Behaviour::Honest,
    ] {
        peers.push(fake_peer(info.clone(), behaviour).await);
    }
    let metainfo = fetch_metainfo(hash, addresses(&peers, false).await, options())
        .await
        .unwrap();
    assert_eq!(metainfo.raw_info(), &info[..]);
}

#[tokio::test]
async fn only_hostile_peers_end_in_a_stage_report() {
    let info = info_dict(100);
    let mut peers = Vec::new();
    for behaviour in [
        Behaviour::WrongBytes,
        Behaviour::HugeSize,
        Behaviour::RejectAll,
    ] {
        peers.push(fake_peer(info.clone(), behaviour).await);
    }
    let err = fetch_metainfo(info_hash(&info), addresses(&peers, true).await, options())
        .await
        .unwrap_err();
    let FetchError::PeersExhausted(progress) = &err else {
        panic!("{err}");
    };
    assert_eq!(progress.ever_ut_metadata, 3);
    assert!(progress.peers_dropped >= 3, "{progress:?}");
    assert!(err.to_string().contains("offered ut_metadata"), "{err}");
}

#[tokio::test]
async fn no_peers_says_so() {
    let err = fetch_metainfo(
        InfoHash::new([1; 20]),
        addresses(&[], true).await,
        options(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no peers found"), "{err}");
}

#[tokio::test]
async fn unreachable_peers_say_so() {
    // A port that was just free: connecting is refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = fetch_metainfo(
        InfoHash::new([1; 20]),
        addresses(&[addr], true).await,
        options(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[tokio::test]
async fn peers_without_ut_metadata_say_so() {
    let info = info_dict(10);
    let peer = fake_peer(info.clone(), Behaviour::NoExtensions).await;
    let mut options = options();
    options.timeout = Duration::from_millis(300);
    let err = fetch_metainfo(info_hash(&info), addresses(&[peer], true).await, options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("offers ut_metadata"), "{err}");
}

#[tokio::test]
async fn mute_peer_times_out() {
    let info = info_dict(10);
    let peer = fake_peer(info.clone(), Behaviour::Mute).await;
    let mut options = options();
    options.timeout = Duration::from_secs(1);
    options.connect_timeout = Duration::from_millis(200);
    let err = fetch_metainfo(info_hash(&info), addresses(&[peer], false).await, options)
        .await
        .unwrap_err();
    let FetchError::TimedOut(progress) = &err else {
        panic!("{err}");
    };
    // A failed handshake is retried with backoff, so there may be several.
    assert!(progress.connect_failures >= 1, "{progress:?}");
    assert_eq!(progress.ever_connected, 0, "{progress:?}");
}
