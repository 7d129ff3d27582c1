//! A peer connected twice under one peer id from one host: one connection
//! is closed, by the rule both sides share, and nobody is blamed for it.
//! From another host the id is taken for a copy, and both are kept.

use lodestone_wire::ExitKind;

use super::leechers::{connect, until_hung_up};
use super::*;

/// A seeding download (id `A`) taken twice by a leecher whose id is all
/// `tag`: returns the first connection and the second.
async fn twice(tag: u8, test: &str) -> (DownloadHandle, Net, Connection, Connection, TempDir) {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new(test);
    let (seed, addr, net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let first = connect(&metainfo, addr, tag).await;
    until(&seed, |p| p.peers_connected == 1).await;
    let second = connect(&metainfo, addr, tag).await;
    (seed, net, first, second, dir)
}

/// `closed` hangs up and ends as a duplicate, nobody's fault; `kept`
/// stays open, and no other connection ends.
async fn one_closed_blameless(
    seed: DownloadHandle,
    mut net: Net,
    closed: &mut Connection,
    kept: &mut Connection,
) {
    until_hung_up(closed).await;
    let exit = net.next_exit("the closed connection is reported").await;
    assert_eq!(
        exit.kind,
        ExitKind::Duplicate,
        "a second connection is no misbehaviour"
    );
    until(&seed, |p| p.peers_connected == 1).await;
    assert!(still_open(kept).await, "the connection kept was closed too");
    assert!(net.exits.try_recv().is_err(), "a second connection ended");
    seed.shutdown();
    finish(seed).await;
}

/// Whether `conn` is open: reads what has arrived, without waiting.
async fn still_open(conn: &mut Connection) -> bool {
    loop {
        match tokio::time::timeout(Duration::ZERO, conn.recv()).await {
            Err(_) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
        }
    }
}

#[tokio::test]
async fn a_second_connection_dialed_by_the_greater_id_replaces_the_first() {
    // The leecher's id (all `Z`) is greater than the seed's (all `A`).
    let (seed, net, mut first, mut second, _dir) = twice(b'Z', "swarm-dup-greater").await;
    one_closed_blameless(seed, net, &mut first, &mut second).await;
}

#[tokio::test]
async fn a_second_connection_dialed_by_the_lesser_id_is_closed() {
    let (seed, net, mut first, mut second, _dir) = twice(b'0', "swarm-dup-lesser").await;
    one_closed_blameless(seed, net, &mut second, &mut first).await;
}

/// Whoever connected to an honest peer has its id. Here the copy comes
/// from 127.0.0.2 under an id that would win the duplicate rule: the
/// honest connection from 127.0.0.1 was closed for it.
#[tokio::test]
async fn a_copied_id_from_another_host_closes_nothing() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-dup-copy");
    let (seed, addr, net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let mut honest = connect(&metainfo, addr, b'Z').await;
    until(&seed, |p| p.peers_connected == 1).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let ours = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, peer_id(b'Z'));
    let (mut copy, _) = Connection::initiate(stream, Duration::from_secs(5), ours)
        .await
        .unwrap();
    until(&seed, |p| p.peers_connected == 2).await;
    assert!(
        still_open(&mut honest).await,
        "the honest connection was closed"
    );
    assert!(still_open(&mut copy).await);
    drop(net);
    seed.shutdown();
    finish(seed).await;
}
