use std::path::Path;

use lodestone_core::Metainfo;
use tokio::net::TcpListener;

use super::*;
use crate::storage::TempDir;
use crate::verify::resume_scan;

/// A three-file torrent with a padding-free layout and pseudo-random content.
fn torrent() -> (Metainfo, Vec<Vec<u8>>) {
    let mut x = 0x1234_5678u32;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    let contents = vec![bytes(1_000_000), bytes(37), bytes(2_300_000)];
    let files: Vec<(Vec<String>, &[u8])> = vec![
        (vec!["a.bin".into()], &contents[0]),
        (vec!["sub".into(), "b.txt".into()], &contents[1]),
        (vec!["sub".into(), "c.bin".into()], &contents[2]),
    ];
    (Metainfo::create("t", 64 * 1024, &files).unwrap(), contents)
}

fn storage(m: &Metainfo, dir: &Path) -> Arc<Storage> {
    let layout = Arc::new(Layout::from_info(&m.info).unwrap());
    Arc::new(Storage::for_info(dir.to_path_buf(), layout, &m.info, None).unwrap())
}

fn hashes(m: &Metainfo) -> Arc<[PieceHash]> {
    m.info.piece_hashes.clone().into()
}

fn config(id: u8, seed: bool) -> SessionConfig {
    let mut c = SessionConfig::new(PeerId::new([id; 20]));
    c.seed = seed;
    c.hash_threads = 2;
    c.snub_timeout = Duration::from_secs(5);
    c
}

/// Starts a seeding session with all the data, listening on loopback.
async fn seeder(m: &Metainfo, contents: &[Vec<u8>], dir: &Path, id: u8) -> SocketAddr {
    let st = storage(m, dir);
    st.prepare().unwrap();
    let mut offset = 0;
    for c in contents {
        st.write(offset, c).unwrap();
        offset += c.len() as u64;
    }
    let have = resume_scan(&st, &hashes(m), 2).unwrap();
    assert!(have.is_full());
    let session = Session::new(m.info_hash, st, hashes(m), have, config(id, true)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (in_tx, in_rx) = mpsc::channel(8);
    let ours = session.shared.handshake();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok(pair) = Connection::accept(stream, Duration::from_secs(5), ours).await
                && in_tx.send(pair).await.is_err()
            {
                return;
            }
        }
    });
    let (_addr_tx, addr_rx) = mpsc::channel(1);
    let (progress, _) = watch::channel(Progress::default());
    tokio::spawn(async move {
        // Keep the address sender alive so the seeder never runs out of peers.
        let _keep = _addr_tx;
        session.run(addr_rx, in_rx, progress).await
    });
    addr
}

async fn leech(m: &Metainfo, dir: &Path, seeders: &[SocketAddr]) -> Progress {
    let st = storage(m, dir);
    let have = resume_scan(&st, &hashes(m), 2).unwrap();
    st.prepare().unwrap();
    let session = Session::new(m.info_hash, st, hashes(m), have, config(200, false)).unwrap();
    let (addr_tx, addr_rx) = mpsc::channel(8);
    for &a in seeders {
        addr_tx.send(a).await.unwrap();
    }
    let (_in_tx, in_rx) = mpsc::channel(1);
    let (progress, _) = watch::channel(Progress::default());
    tokio::time::timeout(
        Duration::from_secs(60),
        session.run(addr_rx, in_rx, progress),
    )
    .await
    .expect("download timed out")
    .unwrap()
}

fn assert_files(dir: &Path, contents: &[Vec<u8>]) {
    assert_eq!(std::fs::read(dir.join("t/a.bin")).unwrap(), contents[0]);
    assert_eq!(std::fs::read(dir.join("t/sub/b.txt")).unwrap(), contents[1]);
    assert_eq!(std::fs::read(dir.join("t/sub/c.bin")).unwrap(), contents[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_one_seeder() {
    let (m, contents) = torrent();
    let (a, b) = (TempDir::new("seed-a"), TempDir::new("leech-a"));
    let s = seeder(&m, &contents, &a.0, 1).await;
    let done = leech(&m, &b.0, &[s]).await;
    assert_eq!(done.remaining, 0);
    assert_eq!(done.have, m.info.piece_count());
    assert_files(&b.0, &contents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_three_seeders_and_resumes() {
    let (m, contents) = torrent();
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("seed3-{i}")))
        .collect();
    let mut addrs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        addrs.push(seeder(&m, &contents, &d.0, i as u8 + 1).await);
    }
    let leecher = TempDir::new("leech3");
    let done = leech(&m, &leecher.0, &addrs).await;
    assert_eq!(done.remaining, 0);
    assert_files(&leecher.0, &contents);
    // Damage one piece and resume: only that piece is fetched again.
    let path = leecher.0.join("t/sub/c.bin");
    let mut c = std::fs::read(&path).unwrap();
    c[100_000] ^= 1;
    std::fs::write(&path, &c).unwrap();
    let again = leech(&m, &leecher.0, &addrs).await;
    assert_eq!(again.remaining, 0);
    // One piece, possibly from all three seeders at once (endgame).
    assert!(again.downloaded <= 3 * 64 * 1024, "{}", again.downloaded);
    assert!(again.downloaded >= 64 * 1024, "{}", again.downloaded);
    assert_files(&leecher.0, &contents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peers_end_the_session() {
    let (m, _) = torrent();
    let dir = TempDir::new("nopeers");
    let st = storage(&m, &dir.0);
    st.prepare().unwrap();
    let have = Bitfield::new(m.info.piece_count());
    let session = Session::new(m.info_hash, st, hashes(&m), have, config(9, false)).unwrap();
    // A listener that is closed at once: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr_tx, addr_rx) = mpsc::channel(1);
    addr_tx.send(closed).await.unwrap();
    drop(addr_tx);
    let (_in_tx, in_rx) = mpsc::channel(1);
    drop(_in_tx);
    let (progress, _) = watch::channel(Progress::default());
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        session.run(addr_rx, in_rx, progress),
    )
    .await
    .expect("session did not give up");
    assert!(matches!(r, Err(SessionError::OutOfPeers { .. })), "{r:?}");
}
