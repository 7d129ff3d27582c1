//! The session's cap on connections, in a session allowed one: three
//! magnets whose peers accept TCP and never answer take turns at the one
//! connection (uncapped, all are dialed at once; without turns, the torrent
//! with the most peers dials them all first), a visitor that comes while
//! the one connection is taken is turned away, and a torrent kept waiting
//! says so in its status and, when it gives up, in its reason. In a session
//! allowed two, a torrent shut out by a seed holding both gets one of them,
//! by dialing or, if it dials nobody, when a peer connects to it; a peer
//! connecting to a paused torrent meanwhile costs nobody a connection.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lodestone_core::{InfoHash, Magnet, Metainfo, PeerId};
use lodestone_download::swarm::Phase;
use lodestone_session::{
    AddOptions, Encryption, Session, SessionConfig, StallReason, TorrentError, TorrentHandle,
    TorrentPhase, TorrentSource, TorrentStatus, Transport,
};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Connections open at some peer of a test, now and at most at once.
#[derive(Default)]
struct Open {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// What one torrent's peers saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    /// Notified at each connection.
    changed: Notify,
}

/// A peer at a port of its own that takes connections and says nothing;
/// after `hold` (if any) it closes, counting the connection as closed first,
/// so that the dial it ends cannot overlap the next in the count.
async fn silent_peer(open: Arc<Open>, seen: Arc<Seen>, hold: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let now = open.now.fetch_add(1, Ordering::SeqCst) + 1;
            open.most.fetch_max(now, Ordering::SeqCst);
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            seen.changed.notify_one();
            let open = open.clone();
            tokio::spawn(async move {
                match hold {
                    Some(hold) => tokio::time::sleep(hold).await,
                    None => {
                        let mut sink = [0u8; 1024];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                }
                open.now.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
            });
        }
    });
    addr
}

/// Waits until `seen`'s peers took a connection.
async fn dialed(seen: &Seen) {
    while seen.accepted.load(Ordering::SeqCst) == 0 {
        seen.changed.notified().await;
    }
}

/// A magnet (infohash all `n`) of one silent peer, whose connections
/// `seen` counts.
async fn magnet_of_a_silent_peer(n: u8, seen: Arc<Seen>) -> Magnet {
    let mut magnet = Magnet::new(InfoHash::new([n; 20]));
    magnet
        .peers
        .push(silent_peer(Arc::default(), seen, None).await);
    magnet
}

/// Adds the magnet of a silent peer and waits for its dial, which holds
/// the session's one place from then on: the peer never answers, and the
/// sessions these tests start wait 600 s for a handshake.
async fn holding_the_one_place(session: &Session, dir: &Path, n: u8) -> TorrentHandle {
    let seen = Arc::new(Seen::default());
    let magnet = magnet_of_a_silent_peer(n, seen.clone()).await;
    let torrent = session
        .add(TorrentSource::Magnet(magnet), AddOptions::new(dir))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), dialed(&seen))
        .await
        .expect("the magnet dials its peer");
    torrent
}

/// Removes the torrents, shuts the session down and deletes `dir`.
async fn end(session: Session, torrents: Vec<TorrentHandle>, dir: &Path) {
    for torrent in torrents {
        torrent.remove();
        let _ = torrent.wait().await;
    }
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A session on 127.0.0.1 allowed one connection, dialing plaintext over
/// TCP only (one attempt per dial) and giving up after `connect_timeout`.
fn one_connection(connect_timeout: Duration) -> SessionConfig {
    let mut config = common::local_config();
    config.trackers = false;
    config.transport = Transport::Tcp;
    config.encryption = Encryption::Off;
    config.connect_timeout = connect_timeout;
    config.max_connections = 1;
    config
}

/// A session allowed one connection that waits 600 s for a handshake, and
/// a scratch directory named for the test.
async fn one_place(test: &str) -> (Session, PathBuf) {
    let session = Session::start(one_connection(Duration::from_secs(600)))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("lodestone-cap-{test}-{}", std::process::id()));
    (session, dir)
}

// One thread: a torrent that gives its place back and looks again in the
// same pass would always beat the ones it woke, were there no line.
#[tokio::test(flavor = "current_thread")]
async fn torrents_take_turns_within_the_sessions_connections() {
    let dir = std::env::temp_dir().join(format!("lodestone-cap-{}", std::process::id()));
    let session = Session::start(one_connection(Duration::from_secs(30)))
        .await
        .unwrap();
    // The first torrent has ten peers to dial, the others one each; every
    // peer hangs up half a second after it is dialed. The first holds the
    // one place when the others come.
    let open = Arc::new(Open::default());
    let mut torrents = Vec::new();
    let mut seen = Vec::new();
    for (n, peers) in [(1u8, 10), (2, 1), (3, 1)] {
        let torrent_seen = Arc::new(Seen::default());
        let mut magnet = Magnet::new(InfoHash::new([n; 20]));
        for _ in 0..peers {
            let hold = Some(Duration::from_millis(500));
            magnet
                .peers
                .push(silent_peer(open.clone(), torrent_seen.clone(), hold).await);
        }
        torrents.push(
            session
                .add(TorrentSource::Magnet(magnet), AddOptions::new(&dir))
                .unwrap(),
        );
        if n == 1 {
            tokio::time::timeout(Duration::from_secs(30), dialed(&torrent_seen))
                .await
                .expect("the first torrent dials");
        }
        seen.push(torrent_seen);
    }

    tokio::time::timeout(Duration::from_secs(60), async {
        dialed(&seen[1]).await;
        dialed(&seen[2]).await;
    })
    .await
    .expect("the torrents with one peer get a turn");
    // Left to itself, the first would have dialed all ten before them.
    let first = seen[0].accepted.load(Ordering::SeqCst);
    assert!(first <= 2, "the first torrent dialed {first} peers first");
    let most = open.most.load(Ordering::SeqCst);
    assert_eq!(most, 1, "{most} connections open at once");

    end(session, torrents, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_past_the_cap_is_turned_away() {
    let (session, dir) = one_place("visit").await;
    let torrent = holding_the_one_place(&session, &dir, 3).await;

    turned_away(&session, InfoHash::new([3; 20]), PeerId::new([9; 20])).await;

    end(session, vec![torrent], &dir).await;
}

/// Connects to `session` for `info_hash` as a peer with id `peer_id` that
/// shakes hands, and waits for the session to close the connection.
async fn turned_away(session: &Session, info_hash: InfoHash, peer_id: PeerId) {
    let stream = TcpStream::connect(session.listen_addrs()[0]).await.unwrap();
    let visitor = Handshake::new(Reserved::LODESTONE, info_hash, peer_id);
    let (mut conn, _) = Connection::initiate(stream, Duration::from_secs(5), visitor)
        .await
        .unwrap();
    // Kept, it would be greeted and then hear nothing more.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while conn.recv().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the visitor was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_waiting_for_the_one_connection_says_it_is_held_back() {
    let (session, dir) = one_place("held").await;
    let second_seen = Arc::new(Seen::default());
    let mut torrents = vec![holding_the_one_place(&session, &dir, 4).await];
    let magnet = magnet_of_a_silent_peer(5, second_seen.clone()).await;
    torrents.push(
        session
            .add(TorrentSource::Magnet(magnet), AddOptions::new(&dir))
            .unwrap(),
    );
    let mut second = torrents[1].status();
    tokio::time::timeout(Duration::from_secs(30), second.wait_for(|s| s.held_back))
        .await
        .expect("the second torrent says it waits")
        .unwrap();
    assert_eq!(second_seen.accepted.load(Ordering::SeqCst), 0);
    assert!(
        !torrents[0].status().borrow().held_back,
        "the first holds the place"
    );

    // The place freed, the second dials and no longer waits.
    let first = torrents.remove(0);
    first.remove();
    let _ = first.wait().await;
    tokio::time::timeout(Duration::from_secs(30), dialed(&second_seen))
        .await
        .expect("the second torrent dials once the place is free");
    tokio::time::timeout(Duration::from_secs(30), second.wait_for(|s| !s.held_back))
        .await
        .expect("the second torrent no longer waits")
        .unwrap();

    end(session, torrents, &dir).await;
}

/// A download of 256 KiB whose peers are `peers`, that gives up after a
/// second without progress.
fn stalling_download(session: &Session, dir: &Path, peers: Vec<SocketAddr>) -> TorrentHandle {
    let data = vec![7u8; 256 * 1024];
    let metainfo = Metainfo::create("t", 64 * 1024, &[(vec!["a.bin".into()], &data)]).unwrap();
    let mut options = AddOptions::new(dir);
    options.peers = peers;
    options.stall_timeout = Some(Duration::from_secs(1));
    session
        .add(TorrentSource::Metainfo(Arc::new(metainfo)), options)
        .unwrap()
}

/// Waits for `torrent` to give up and returns why.
async fn stall_reason(torrent: TorrentHandle) -> StallReason {
    match tokio::time::timeout(Duration::from_secs(30), torrent.wait()).await {
        Ok(Err(TorrentError::Stalled(reason))) => reason,
        other => panic!("expected a stall, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_the_cap_shuts_out_gives_up_for_that_reason() {
    let (session, dir) = one_place("stall").await;
    let holder = holding_the_one_place(&session, &dir, 6).await;

    let peer = silent_peer(Arc::default(), Arc::default(), None).await;
    let download = stalling_download(&session, &dir.join("shut-out"), vec![peer]);
    assert_eq!(stall_reason(download).await, StallReason::ConnectionCap);

    // A second magnet shut out the same way times out saying why.
    let shut_out = magnet_of_a_silent_peer(7, Arc::default()).await;
    let mut options = AddOptions::new(dir.join("magnet"));
    options.metadata_timeout = Duration::from_secs(1);
    let shut_out = session
        .add(TorrentSource::Magnet(shut_out), options)
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), shut_out.wait()).await {
        Ok(Err(TorrentError::MetadataHeldBack(_))) => {}
        other => panic!("expected the metadata to time out held back, got {other:?}"),
    }

    end(session, vec![holder], &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_holding_the_place_itself_stalls_as_unaccepted() {
    let (session, dir) = one_place("own").await;
    // Its dial to the first silent peer holds the one place; the second
    // waits for it, behind no other torrent.
    let mut peers = Vec::new();
    for _ in 0..2 {
        peers.push(silent_peer(Arc::default(), Arc::default(), None).await);
    }
    let download = stalling_download(&session, &dir, peers);
    assert_eq!(stall_reason(download).await, StallReason::NoneAccepted);

    end(session, Vec::new(), &dir).await;
}

/// Connections the torrent's download holds, if it is downloading or
/// seeding.
fn peers_connected(status: &TorrentStatus) -> Option<usize> {
    match &status.phase {
        TorrentPhase::Download(p) => Some(p.peers_connected),
        _ => None,
    }
}

/// Connects to `session` for `info_hash` as a peer that shakes hands and
/// then only listens, and waits until the torrent counts it.
async fn idle_leecher(session: &Session, torrent: &TorrentHandle, n: u8) -> Connection {
    let info_hash = torrent.info_hash();
    let stream = TcpStream::connect(session.listen_addrs()[0]).await.unwrap();
    let ours = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([n; 20]));
    let (conn, _) = Connection::initiate(stream, Duration::from_secs(5), ours)
        .await
        .unwrap();
    let mut status = torrent.status();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| peers_connected(s) == Some(usize::from(n))),
    )
    .await
    .expect("the seed takes the leecher")
    .unwrap();
    conn
}

/// Adds a torrent of 128 KiB of `fill` bytes, named `name`, whose data is
/// in `dir` already, and waits until it seeds.
async fn seeding(session: &Session, dir: &Path, name: &str, fill: u8) -> TorrentHandle {
    let data = vec![fill; 128 * 1024];
    let files = [(vec!["a.bin".to_string()], &data[..])];
    let metainfo = Metainfo::create(name, 64 * 1024, &files).unwrap();
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("a.bin"), &data).unwrap();
    let seed = session
        .add(
            TorrentSource::Metainfo(Arc::new(metainfo)),
            AddOptions::new(dir),
        )
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        seed.status().wait_for(
            |s| matches!(&s.phase, TorrentPhase::Download(p) if p.phase == Phase::Seeding),
        ),
    )
    .await
    .expect("seeding in time")
    .unwrap();
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torrent_shut_out_gets_a_place_from_one_holding_several() {
    let mut config = one_connection(Duration::from_secs(600));
    config.max_connections = 2;
    let session = Session::start(config).await.unwrap();
    let dir = std::env::temp_dir().join(format!("lodestone-cap-turnover-{}", std::process::id()));
    let seed = seeding(&session, &dir, "seeded", 5).await;
    let mut seed_status = seed.status();
    // The seed holds both places, one after the other.
    let older = idle_leecher(&session, &seed, 1).await;
    let mut newer = idle_leecher(&session, &seed, 2).await;

    let seen = Arc::new(Seen::default());
    let magnet = magnet_of_a_silent_peer(8, seen.clone()).await;
    let shut_out = session
        .add(
            TorrentSource::Magnet(magnet),
            AddOptions::new(dir.join("magnet")),
        )
        .unwrap();
    let mut shut_out_status = shut_out.status();
    tokio::time::timeout(
        Duration::from_secs(30),
        shut_out_status.wait_for(|s| s.held_back),
    )
    .await
    .expect("the magnet is shut out")
    .unwrap();
    let shut_out_at = Instant::now();

    // Both leechers are idle alike, so the newer goes, and the magnet dials
    // in its place.
    tokio::time::timeout(Duration::from_secs(30), async {
        while newer.recv().await.is_ok() {}
    })
    .await
    .expect("the seed closes its newer connection");
    // The magnet waits 5 s before it asks (less a status tick, which may
    // have seen it shut out before we did).
    let waited = shut_out_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "asked after {waited:?} shut out"
    );
    tokio::time::timeout(Duration::from_secs(30), dialed(&seen))
        .await
        .expect("the magnet dials in the freed place");
    tokio::time::timeout(
        Duration::from_secs(30),
        seed_status.wait_for(|s| peers_connected(s) == Some(1)),
    )
    .await
    .expect("the seed counts one connection")
    .unwrap();
    // The older stays: a download never closes its last connection for
    // another torrent (see its own turnover tests).
    drop(older);

    end(session, vec![seed, shut_out], &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_holding_no_place_takes_a_visitor_from_one_holding_several() {
    let mut config = one_connection(Duration::from_secs(600));
    config.max_connections = 2;
    let ours = config.peer_id;
    let session = Session::start(config).await.unwrap();
    let dir = std::env::temp_dir().join(format!("lodestone-cap-visit-{}", std::process::id()));
    let busy = seeding(&session, &dir, "busy", 5).await;
    let idle = seeding(&session, &dir, "idle", 6).await;
    let _older = idle_leecher(&session, &busy, 1).await;
    let mut newer = idle_leecher(&session, &busy, 2).await;

    // A paused torrent keeps nobody: its visitor is turned away before it
    // can cost the busy seed its connection (or spend the visitors' pace).
    let paused = seeding(&session, &dir, "paused", 7).await;
    paused.pause();
    tokio::time::timeout(
        Duration::from_secs(30),
        paused
            .status()
            .wait_for(|s| s.phase == TorrentPhase::Paused),
    )
    .await
    .expect("paused in time")
    .unwrap();
    turned_away(&session, paused.info_hash(), PeerId::new([9; 20])).await;
    // Nor is a visitor that claims our own peer id, which anyone can.
    turned_away(&session, idle.info_hash(), ours).await;
    // Let in, either would have had the busy seed close a connection.
    // (Bounded wait for nothing to happen: there is no event to wait for.)
    let kept = tokio::time::timeout(Duration::from_secs(1), async {
        while newer.recv().await.is_ok() {}
    })
    .await;
    assert!(kept.is_err(), "the busy seed closed a connection");

    // The idle seed dials nobody, so no turn of the line would ever give
    // it a place: its visitor takes the busy seed's newer connection's.
    let _visitor = idle_leecher(&session, &idle, 1).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while newer.recv().await.is_ok() {}
    })
    .await
    .expect("the busy seed closes its newer connection");
    tokio::time::timeout(
        Duration::from_secs(30),
        busy.status().wait_for(|s| peers_connected(s) == Some(1)),
    )
    .await
    .expect("the busy seed counts one connection")
    .unwrap();

    end(session, vec![busy, idle, paused], &dir).await;
}
