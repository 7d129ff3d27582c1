//! A peer that shakes hands and hangs up at once (a full one, say) is
//! redialed later each time, not every two seconds: a connection that ends
//! before anything of use (piece data or metadata) crossed it backs its
//! address off like a failed dial, without counting as one. The torrent
//! here is a magnet, so this runs through the metadata phase.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::{InfoHash, Magnet, PeerId};
use lodestone_session::{AddOptions, Encryption, Session, TorrentSource, Transport};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A peer of `info_hash` that completes each handshake, then hangs up; it
/// sends the time of every handshake.
async fn hanging_up_peer(info_hash: InfoHash) -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let ours = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([b'H'; 20]));
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok((conn, _)) = Connection::accept(stream, Duration::from_secs(5), ours).await {
                let _ = tx.send(Instant::now());
                drop(conn);
            }
        }
    });
    (addr, rx)
}

/// The time of the peer's next handshake.
async fn next(handshakes: &mut mpsc::UnboundedReceiver<Instant>) -> Instant {
    tokio::time::timeout(Duration::from_secs(30), handshakes.recv())
        .await
        .expect("the peer is dialed again")
        .unwrap()
}

#[tokio::test]
async fn a_peer_that_hangs_up_at_once_is_redialed_ever_later() {
    let mut config = common::local_config();
    config.trackers = false;
    config.transport = Transport::Tcp;
    config.encryption = Encryption::Off;
    let session = Session::start(config).await.unwrap();
    let info_hash = InfoHash::new([7; 20]);
    let (peer, mut handshakes) = hanging_up_peer(info_hash).await;
    let mut magnet = Magnet::new(info_hash);
    magnet.peers.push(peer);
    let dir = std::env::temp_dir().join(format!("lodestone-fruitless-{}", std::process::id()));
    let torrent = session
        .add(TorrentSource::Magnet(magnet), AddOptions::new(&dir))
        .unwrap();
    let first = next(&mut handshakes).await;
    let second = next(&mut handshakes).await;
    let third = next(&mut handshakes).await;
    // The first redial waits 2 s, the next 4 s: each wait counts from the
    // end, which comes after the handshake the peer timed. Every two
    // seconds, the third would come about 2 s after the second.
    assert!(
        second - first >= Duration::from_secs(2),
        "{:?}",
        second - first
    );
    assert!(
        third - second >= Duration::from_secs(4),
        "{:?}",
        third - second
    );
    // Each dial shook hands on our side too: the waits are the fruitless
    // ends', not those of failed dials.
    assert_eq!(torrent.status().borrow().dial_failures, 0);
    torrent.remove();
    let _ = torrent.wait().await;
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
