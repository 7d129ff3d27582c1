//! One peer reachable at two addresses of one host (two ports of
//! 127.0.0.1, one peer id): the download dials both, keeps one connection
//! by the duplicate
//! rule, and does not dial the other address while that connection lasts,
//! whichever id is the greater; once it ends, the other address is dialed
//! again.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lodestone_core::{Metainfo, PeerId};
use lodestone_session::{AddOptions, Encryption, Session, TorrentSource, Transport};
use lodestone_wire::{Connection, Handshake, Reserved};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the two-address peer saw, with the address it was reached at.
#[derive(Debug)]
enum Seen {
    /// A handshake completed; sending on the hang-up ends the connection.
    Connected(SocketAddr, oneshot::Sender<()>),
    /// The other side closed the connection.
    Closed(SocketAddr),
}

/// Ours, between the two peer ids the tests give the peer.
const OURS: PeerId = PeerId::new([b'M'; 20]);

/// A torrent of which nothing is on disk: it downloads, so it wants peers.
fn torrent() -> Arc<Metainfo> {
    let data = vec![7u8; 256 * 1024];
    Arc::new(Metainfo::create("t", 64 * 1024, &[(vec!["a.bin".into()], &data)]).unwrap())
}

/// One peer with id `id` listening at two ports of 127.0.0.1: it shakes
/// hands, then says nothing, and reports each connection and its end.
async fn peer_at_two_addresses(
    torrent: &Metainfo,
    id: PeerId,
) -> ([SocketAddr; 2], mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ours = Handshake::new(Reserved::LODESTONE, torrent.info_hash, id);
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let at = listener.local_addr().unwrap();
        addrs.push(at);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok((mut conn, _)) =
                    Connection::accept(stream, Duration::from_secs(5), ours).await
                else {
                    continue;
                };
                let (hang_up, mut told) = oneshot::channel();
                let _ = tx.send(Seen::Connected(at, hang_up));
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = &mut told => {}
                        _ = async { while conn.recv().await.is_ok() {} } => {
                            let _ = tx.send(Seen::Closed(at));
                        }
                    }
                });
            }
        });
    }
    ([addrs[0], addrs[1]], rx)
}

/// The peer's next report.
async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the peer saw something")
        .unwrap()
}

async fn one_connection_kept_and_the_other_address_left_alone(theirs: PeerId, name: &str) {
    let dir = std::env::temp_dir().join(format!("lodestone-two-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = common::local_config();
    config.peer_id = OURS;
    config.trackers = false;
    config.transport = Transport::Tcp;
    config.encryption = Encryption::Off;
    let session = Session::start(config).await.unwrap();
    let torrent = torrent();
    let (addrs, mut seen) = peer_at_two_addresses(&torrent, theirs).await;
    let mut options = AddOptions::new(&dir);
    options.no_seed = true;
    options.peers = addrs.to_vec();
    let handle = session
        .add(TorrentSource::Metainfo(torrent.clone()), options)
        .unwrap();

    // Both addresses are dialed; one connection is closed as a duplicate.
    // The peer may see that close before it reports the other connection.
    let mut open = Vec::new();
    let mut closed = None;
    while open.len() < 2 || closed.is_none() {
        match next(&mut seen).await {
            Seen::Connected(at, hang_up) => open.push((at, hang_up)),
            Seen::Closed(at) => {
                assert!(closed.is_none(), "both connections were closed");
                closed = Some(at);
            }
        }
    }
    let closed = closed.unwrap();
    open.retain(|(at, _)| *at != closed);
    let [(kept, hang_up)] = <[_; 1]>::try_from(open).unwrap();
    assert_ne!(kept, closed);

    // Standing for the kept connection, the closed address is not dialed
    // while it lasts: not after the 2 s (then 4 s) a duplicate's address
    // backs off, which is when it would be dialed otherwise.
    let quiet = tokio::time::timeout(Duration::from_secs(7), seen.recv()).await;
    assert!(
        quiet.is_err(),
        "the peer saw something while connected: {quiet:?}"
    );

    // The peer hangs up: the other address is dialed again.
    hang_up.send(()).unwrap();
    loop {
        if let Seen::Connected(at, _) = next(&mut seen).await
            && at == closed
        {
            break;
        }
    }
    handle.remove();
    let _ = handle.wait().await;
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_lesser_id_at_two_addresses_keeps_one_connection() {
    one_connection_kept_and_the_other_address_left_alone(PeerId::new([b'A'; 20]), "lesser").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_greater_id_at_two_addresses_keeps_one_connection() {
    one_connection_kept_and_the_other_address_left_alone(PeerId::new([b'Z'; 20]), "greater").await;
}
