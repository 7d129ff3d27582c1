//! The session's cap on connections holds across torrents: two magnets,
//! each naming three peers that accept TCP and never answer, in a session
//! allowed one connection in all. Uncapped, all six are dialed at once.
//! And a visitor that comes while the one connection is taken is turned
//! away.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lodestone_core::{InfoHash, Magnet, PeerId};
use lodestone_session::{AddOptions, Encryption, Session, SessionConfig, TorrentSource, Transport};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Connections the silent peers saw: open now, most open at once, ended.
#[derive(Default)]
struct Seen {
    open: AtomicUsize,
    most_open: AtomicUsize,
    ended: AtomicUsize,
    /// Notified when one opens or ends.
    changed: Notify,
}

/// A peer at a port of its own that takes connections and says nothing
/// until the dialer gives up and closes.
async fn silent_peer(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_open.fetch_max(open, Ordering::SeqCst);
            seen.changed.notify_one();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                seen.open.fetch_sub(1, Ordering::SeqCst);
                seen.ended.fetch_add(1, Ordering::SeqCst);
                seen.changed.notify_one();
            });
        }
    });
    addr
}

/// A session on 127.0.0.1 allowed one connection, dialing plaintext over
/// TCP only (one attempt per dial) and giving up after `connect_timeout`.
fn one_connection(connect_timeout: Duration) -> SessionConfig {
    let mut config = SessionConfig::new();
    config.dht = None;
    config.trackers = false;
    config.listen_port = 0;
    config.listen_ipv4 = Some(Ipv4Addr::LOCALHOST);
    config.listen_ipv6 = None;
    config.transport = Transport::Tcp;
    config.encryption = Encryption::Off;
    config.connect_timeout = connect_timeout;
    config.max_connections = 1;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torrents_together_hold_at_most_the_sessions_connections() {
    let dir = std::env::temp_dir().join(format!("lodestone-cap-{}", std::process::id()));
    let session = Session::start(one_connection(Duration::from_secs(1)))
        .await
        .unwrap();

    let seen = Arc::new(Seen::default());
    let mut torrents = Vec::new();
    for n in 1..=2u8 {
        let mut magnet = Magnet::new(InfoHash::new([n; 20]));
        for _ in 0..3 {
            magnet.peers.push(silent_peer(seen.clone()).await);
        }
        let options = AddOptions::new(&dir);
        torrents.push(session.add(TorrentSource::Magnet(magnet), options).unwrap());
    }

    // Six dials, one after another, each ended by the dialer's timeout.
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.ended.load(Ordering::SeqCst) < 6 {
            seen.changed.notified().await;
        }
    })
    .await
    .expect("the dials go on, one at a time");
    // One more may show while the peer reads the last one's close.
    let most = seen.most_open.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} connections open at once");

    for torrent in torrents {
        torrent.remove();
        let _ = torrent.wait().await;
    }
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_past_the_cap_is_turned_away() {
    let dir = std::env::temp_dir().join(format!("lodestone-cap-visit-{}", std::process::id()));
    // The dial to the silent peer holds the one connection all along.
    let session = Session::start(one_connection(Duration::from_secs(600)))
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    let info_hash = InfoHash::new([3; 20]);
    let mut magnet = Magnet::new(info_hash);
    magnet.peers.push(silent_peer(seen.clone()).await);
    let torrent = session
        .add(TorrentSource::Magnet(magnet), AddOptions::new(&dir))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.open.load(Ordering::SeqCst) == 0 {
            seen.changed.notified().await;
        }
    })
    .await
    .expect("the torrent dials its one peer");

    let stream = TcpStream::connect(session.listen_addrs()[0]).await.unwrap();
    let visitor = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([9; 20]));
    let (mut conn, _) = Connection::initiate(stream, Duration::from_secs(5), visitor)
        .await
        .unwrap();
    // Kept, it would be greeted and then hear nothing more.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while conn.recv().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the visitor was kept past the cap");

    torrent.remove();
    let _ = torrent.wait().await;
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
