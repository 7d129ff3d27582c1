//! A connection's end says whether it was of use: one that ends before any
//! piece data crossed it is fruitless, so its address waits longer before
//! it is dialed again; one that carried a block ended well. The same holds
//! for connections still open when the download stops.

use lodestone_wire::{BlockRequest, ExitKind, Message};
use tokio::net::TcpStream;

use super::leechers::connect;
use super::*;

/// Asks the seed at the other end of `conn` for the torrent's first block
/// and checks what arrives.
async fn first_block(conn: &mut Connection, data: &[u8]) {
    conn.send(&Message::Interested).await.unwrap();
    let wanted = BlockRequest {
        index: 0,
        begin: 0,
        length: 16 * 1024,
    };
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match conn.recv().await.unwrap() {
                Message::Unchoke => conn.send(&Message::Request(wanted)).await.unwrap(),
                Message::Piece(block) => return block,
                _ => {}
            }
        }
    })
    .await
    .expect("the block was served");
    assert_eq!(&got.data[..], &data[..16 * 1024]);
}

#[tokio::test]
async fn a_peer_that_hangs_up_before_any_piece_data_was_fruitless() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-fruitless");
    let (seed, addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let conn = connect(&metainfo, addr, b'H').await;
    until(&seed, |p| p.peers_connected == 1).await;
    drop(conn);
    let exit = net.next_exit("the connection's end is reported").await;
    assert_eq!(exit.kind, ExitKind::Fruitless);
    seed.shutdown();
    finish(seed).await;
}

#[tokio::test]
async fn a_peer_that_got_a_block_then_hung_up_ended_well() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-of-use");
    let (seed, addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let mut conn = connect(&metainfo, addr, b'U').await;
    first_block(&mut conn, &data).await;
    drop(conn);
    let exit = net.next_exit("the connection's end is reported").await;
    assert_eq!(exit.kind, ExitKind::OfUse);
    seed.shutdown();
    finish(seed).await;
}

#[tokio::test]
async fn connections_open_when_the_download_stops_end_as_they_were() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-stop-of-use");
    let (seed, addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let _idle = connect(&metainfo, addr, b'I').await;
    // The seed knows this one by the port it comes from.
    let stream = TcpStream::connect(addr).await.unwrap();
    let served_from = stream.local_addr().unwrap();
    let ours = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, peer_id(b'S'));
    let (mut served, _) = Connection::initiate(stream, Duration::from_secs(5), ours)
        .await
        .unwrap();
    // The seed publishes that the block crossed before it writes it.
    first_block(&mut served, &data).await;
    until(&seed, |p| p.peers_connected == 2).await;
    seed.shutdown();
    finish(seed).await;
    let mut exits = [
        net.next_exit("the connection's end is reported").await,
        net.next_exit("the connection's end is reported").await,
    ];
    exits.sort_by_key(|e| e.addr != served_from);
    assert_eq!(exits[0].addr, served_from);
    assert_eq!(exits[0].kind, ExitKind::OfUse);
    assert_eq!(exits[1].kind, ExitKind::Fruitless);
}
