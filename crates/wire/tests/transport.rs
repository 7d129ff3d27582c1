//! The transport seam: a connection runs over any byte stream, not only
//! TCP (here an in-memory pipe, as uTP or an encrypting wrapper will be).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use lodestone_core::{InfoHash, PeerId};
use lodestone_wire::{Block, ByteStream, Connection, Handshake, Message, Reserved};

#[tokio::test]
async fn a_connection_runs_over_any_byte_stream() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let addr: SocketAddr = "192.0.2.7:6881".parse().unwrap();
    let info_hash = InfoHash::new([9; 20]);
    let ours = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([1; 20]));
    let theirs = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([2; 20]));
    let timeout = Duration::from_secs(5);
    let (dialed, accepted) = tokio::join!(
        Connection::initiate(ByteStream::Other(Box::new(near), addr), timeout, ours),
        Connection::accept(ByteStream::Other(Box::new(far), addr), timeout, theirs),
    );
    let (mut dialed, seen_by_dialer) = dialed.unwrap();
    let (mut accepted, seen_by_acceptor) = accepted.unwrap();
    assert_eq!(seen_by_dialer.peer_id, theirs.peer_id);
    assert_eq!(seen_by_acceptor.peer_id, ours.peer_id);
    assert_eq!(dialed.peer_addr().unwrap(), addr);

    // A block large enough to take the vectored, zero-copy write path.
    let block = Block {
        index: 3,
        begin: 16_384,
        data: Bytes::from(vec![0x5a; 16_384]),
    };
    dialed.feed(&Message::Interested);
    dialed.feed(&Message::Piece(block.clone()));
    dialed.flush().await.unwrap();
    assert_eq!(accepted.recv().await.unwrap(), Message::Interested);
    assert_eq!(accepted.recv().await.unwrap(), Message::Piece(block));
}
