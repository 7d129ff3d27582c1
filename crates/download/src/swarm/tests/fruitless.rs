//! A connection's end says whether it was of use: one that ends before any
//! piece data crossed it is fruitless, so its address waits longer before
//! it is dialed again; one that carried a block ended well.

use lodestone_wire::{BlockRequest, ExitKind, Message, PeerExit};

use super::leechers::connect;
use super::*;

/// The next connection end the seeding download reports.
async fn next_exit(net: &mut Net) -> PeerExit {
    tokio::time::timeout(Duration::from_secs(30), net.exits.recv())
        .await
        .expect("the connection's end is reported")
        .unwrap()
}

#[tokio::test]
async fn a_peer_that_hangs_up_before_any_piece_data_was_fruitless() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-fruitless");
    let (seed, addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let conn = connect(&metainfo, addr, b'H').await;
    until(&seed, |p| p.peers_connected == 1).await;
    drop(conn);
    let exit = next_exit(&mut net).await;
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
    drop(conn);
    let exit = next_exit(&mut net).await;
    assert_eq!(exit.kind, ExitKind::Ended);
    seed.shutdown();
    finish(seed).await;
}
