//! Two sessions on 127.0.0.1: one seeds two torrents on one listen port,
//! the other downloads both from magnet links in one process, under one
//! download cap, each peer connected once.

#![allow(clippy::unwrap_used)]

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lodestone_core::{InfoHash, Magnet, Metainfo, PeerId};
use lodestone_download::swarm::Phase;
use lodestone_session::{AddOptions, Session, TorrentHandle, TorrentPhase, TorrentSource};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::net::{TcpListener, TcpStream};

/// Pseudo-random bytes, the same for the same seed.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut data = vec![0; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// A two-file torrent named `name`, written under `dir`.
fn torrent(name: &str, seed: u64, dir: &Path) -> Arc<Metainfo> {
    let a = bytes(seed, 3 << 20);
    let b = bytes(seed + 1, 1_000_003);
    let files: Vec<(Vec<String>, &[u8])> =
        vec![(vec!["a.bin".into()], &a), (vec!["b.bin".into()], &b)];
    let metainfo = Metainfo::create(name, 64 * 1024, &files).unwrap();
    for (path, data) in &files {
        let file = dir.join(name).join(&path[0]);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, data).unwrap();
    }
    Arc::new(metainfo)
}

/// A TCP relay to `to` that counts the connections it is asked for.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

/// Waits (at most a minute) until the torrent is seeding.
async fn until_seeding(handle: &TorrentHandle) {
    let mut status = handle.status();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(
            |s| matches!(&s.phase, TorrentPhase::Download(p) if p.phase == Phase::Seeding),
        ),
    )
    .await
    .expect("seeding in time")
    .expect("torrent task alive");
}

fn assert_same_files(a: &Path, b: &Path, metainfo: &Metainfo) {
    for f in &metainfo.info.files {
        let path = f.relative_path();
        assert!(
            std::fs::read(a.join(&path)).unwrap() == std::fs::read(b.join(&path)).unwrap(),
            "{} differs",
            path.display()
        );
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lodestone-session-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_magnets_in_one_session_share_one_port_and_one_cap() {
    let seed_dir = temp_dir("seed");
    let leech_dir = temp_dir("leech");
    let torrents = [
        torrent("first", 11, &seed_dir),
        torrent("second", 23, &seed_dir),
    ];

    let seeder = Session::start(common::local_config()).await.unwrap();
    let port = seeder.listen_addrs()[0];
    let mut seeding = Vec::new();
    for t in &torrents {
        let handle = seeder
            .add(
                TorrentSource::Metainfo(t.clone()),
                AddOptions::new(&seed_dir),
            )
            .unwrap();
        until_seeding(&handle).await;
        seeding.push(handle);
    }
    // Another torrent's handshake is refused on the shared port.
    let stranger = Handshake::new(
        Reserved::LODESTONE,
        InfoHash::new([7; 20]),
        PeerId::new([7; 20]),
    );
    assert!(
        Connection::connect(port, Duration::from_secs(5), stranger)
            .await
            .is_err()
    );

    let (relay, connections) = counting_relay(port).await;
    let cap = 2 << 20;
    let mut config = common::local_config();
    config.download_limit = NonZeroU64::new(cap);
    let leecher = Session::start(config).await.unwrap();
    let started = Instant::now();
    let mut downloads = Vec::new();
    for t in &torrents {
        let mut magnet = Magnet::new(t.info_hash);
        magnet.peers.push(relay);
        let mut options = AddOptions::new(&leech_dir);
        options.no_seed = true;
        downloads.push(leecher.add(TorrentSource::Magnet(magnet), options).unwrap());
    }
    let mut downloaded = 0;
    for d in downloads {
        let summary = tokio::time::timeout(Duration::from_secs(60), d.wait())
            .await
            .expect("download in time")
            .unwrap();
        assert!(summary.complete);
        downloaded += summary.downloaded;
    }
    let rate = downloaded as f64 / started.elapsed().as_secs_f64();
    for t in &torrents {
        assert_same_files(&seed_dir, &leech_dir, t);
    }
    // One connection per torrent: the metadata and the pieces shared it.
    assert_eq!(connections.load(Ordering::SeqCst), torrents.len());
    // The cap holds over the sum, within 10 % (its quarter-second burst is
    // small against the 8 MiB transferred).
    let cap = cap as f64;
    assert!(rate <= cap * 1.1, "{rate:.0} B/s over the cap of {cap}");
    assert!(
        rate >= cap * 0.9,
        "{rate:.0} B/s well under the cap of {cap}"
    );

    for s in seeding {
        s.remove();
        s.wait().await.unwrap();
    }
    leecher.shutdown().await;
    seeder.shutdown().await;
    let _ = std::fs::remove_dir_all(seed_dir);
    let _ = std::fs::remove_dir_all(leech_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_torrent_drops_its_peers_and_resumes_to_completion() {
    let seed_dir = temp_dir("pause-seed");
    let leech_dir = temp_dir("pause-leech");
    let t = torrent("paused", 41, &seed_dir);
    let seeder = Session::start(common::local_config()).await.unwrap();
    let seeding = seeder
        .add(
            TorrentSource::Metainfo(t.clone()),
            AddOptions::new(&seed_dir),
        )
        .unwrap();
    until_seeding(&seeding).await;
    let (relay, connections) = counting_relay(seeder.listen_addrs()[0]).await;

    // Slow enough that it is still downloading when paused.
    let mut config = common::local_config();
    config.download_limit = NonZeroU64::new(1 << 20);
    let leecher = Session::start(config).await.unwrap();
    let mut options = AddOptions::new(&leech_dir);
    options.no_seed = true;
    options.peers.push(relay);
    let handle = leecher
        .add(TorrentSource::Metainfo(t.clone()), options)
        .unwrap();
    let mut status = handle.status();
    let downloading = |s: &lodestone_session::TorrentStatus| matches!(&s.phase, TorrentPhase::Download(p) if p.verified_bytes > 0 && p.peers_connected == 1);
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(downloading))
        .await
        .expect("downloading in time")
        .unwrap();

    handle.pause();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.phase == TorrentPhase::Paused),
    )
    .await
    .expect("paused in time")
    .unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    handle.resume();
    let summary = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("download in time")
        .unwrap();
    assert!(summary.complete);
    assert_same_files(&seed_dir, &leech_dir, &t);
    // The pause closed the connection; the resume made a second one.
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    seeding.remove();
    seeding.wait().await.unwrap();
    leecher.shutdown().await;
    seeder.shutdown().await;
    let _ = std::fs::remove_dir_all(seed_dir);
    let _ = std::fs::remove_dir_all(leech_dir);
}
