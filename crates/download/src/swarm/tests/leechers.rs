//! Hostile peers connecting to a seeding download: each is dropped or
//! refused, and the download goes on serving honest peers.

use lodestone_wire::{BlockRequest, ExitKind, Message};

use super::*;

/// A leecher handshaken with the download at `addr`, named by `tag`.
pub(super) async fn connect(metainfo: &Metainfo, addr: SocketAddr, tag: u8) -> Connection {
    let ours = Handshake::new(Reserved::LODESTONE, metainfo.info_hash, peer_id(tag));
    let (conn, _) = Connection::connect(addr, Duration::from_secs(5), ours)
        .await
        .unwrap();
    conn
}

/// Reads (and drops) messages until the other side hangs up; panics if it
/// has not within 30 s.
pub(super) async fn until_hung_up(conn: &mut Connection) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while conn.recv().await.is_ok() {}
    })
    .await
    .expect("the peer was not dropped");
}

/// The first block of `piece`.
fn block(metainfo: &Metainfo, piece: u32) -> BlockRequest {
    BlockRequest {
        index: piece,
        begin: 0,
        length: metainfo.info.piece_length.min(16 * 1024),
    }
}

#[tokio::test]
async fn a_request_flood_from_a_peer_that_never_reads_gets_it_dropped() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-flood");
    let (seed, addr, _keep) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let mut conn = connect(&metainfo, addr, b'F').await;
    conn.feed(&Message::Interested);
    let pieces = metainfo.info.piece_count();
    // 200,000 valid requests (3.4 MB) written before reading a byte: far
    // past the 256 we advertise. Writing may fail once we are dropped.
    for i in 0..200_000u32 {
        conn.feed(&Message::Request(block(&metainfo, i % pieces)));
    }
    let _ = conn.flush().await;
    until_hung_up(&mut conn).await;
    leech_from(addr, &metainfo, &data).await;
    seed.shutdown();
    finish(seed).await;
}

#[tokio::test]
async fn requests_for_pieces_we_lack_are_rejected_then_get_the_peer_dropped() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-lacking");
    // Only the first file: the last piece is certainly missing.
    let (seed, addr, _keep) = seeding(&metainfo, &data, &dir.0, |i| i == 0).await;
    let missing = metainfo.info.piece_count() - 1;
    let mut conn = connect(&metainfo, addr, b'F').await;
    conn.send(&Message::Request(block(&metainfo, missing)))
        .await
        .unwrap();
    // One is answered with a reject (both sides speak the fast extension).
    let rejected = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Message::Reject(r) = conn.recv().await.unwrap() {
                return r;
            }
        }
    })
    .await
    .expect("no reject");
    assert_eq!(rejected, block(&metainfo, missing));
    // Thousands get the peer dropped.
    for _ in 0..5_000 {
        conn.feed(&Message::Request(block(&metainfo, missing)));
    }
    let _ = conn.flush().await;
    until_hung_up(&mut conn).await;
    seed.shutdown();
    finish(seed).await;
}

/// A handshaken loopback connection from a leecher tagged `tag`, as the
/// download would be handed it, and the leecher's end.
async fn handshaken(
    metainfo: &Metainfo,
    net: &Net,
    tag: u8,
) -> (Connection, Connection, Handshake) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let handshake = net.handshake;
    let (accepted, theirs) = tokio::join!(
        async {
            let stream = listener.accept().await.unwrap().0;
            Connection::accept(stream, Duration::from_secs(5), handshake).await
        },
        connect(metainfo, at, tag),
    );
    let (ours, hs) = accepted.unwrap();
    (ours, theirs, hs)
}

/// Connections from one IPv6 /64 count as one host's, as the listener
/// counts them: each is a real loopback connection under an address of
/// 2001:db8::/64.
#[tokio::test]
async fn one_slash_64_gets_at_most_the_per_ip_connection_limit() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-per-64");
    let (seed, _addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let limit = DownloadConfig::new(&dir.0, peer_id(0)).max_connections_per_ip;
    let mut open = Vec::new();
    for i in 0..limit as u16 + 2 {
        let (conn, theirs, hs) = handshaken(&metainfo, &net, b'a' + i as u8).await;
        let from = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i + 1], 6881));
        net.conns
            .send(Established::new(conn, hs, from, true))
            .await
            .unwrap();
        open.push(theirs);
    }
    refused_past_the_limit(seed, &mut net, 2).await;
}

/// A connection queued for the download when it stops is reported ended:
/// it was dropped unreported, and the address book held its address busy
/// for good.
#[tokio::test]
async fn a_connection_queued_at_the_stop_is_reported() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-queued-at-stop");
    let (seed, _addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let (conn, _theirs, hs) = handshaken(&metainfo, &net, b'q').await;
    let from = SocketAddr::from(([10, 0, 0, 9], 6881));
    // Queued and stopped before the download's task runs again (this
    // runtime has one thread): the stop is seen first.
    net.conns
        .try_send(Established::new(conn, hs, from, true))
        .unwrap();
    seed.shutdown();
    let exit = net.next_exit("the queued connection was reported").await;
    assert_eq!((exit.addr, exit.kind), (from, ExitKind::Fruitless));
    finish(seed).await;
}

#[tokio::test]
async fn one_address_gets_at_most_the_per_ip_connection_limit() {
    let (metainfo, data) = torrent(32 * 1024, &SIZES);
    let dir = TempDir::new("swarm-per-ip");
    let (seed, addr, mut net) = seeding(&metainfo, &data, &dir.0, |_| true).await;
    let limit = DownloadConfig::new(&dir.0, peer_id(0)).max_connections_per_ip;
    let mut open = Vec::new();
    for tag in 0..limit as u8 + 4 {
        open.push(connect(&metainfo, addr, b'a' + tag).await);
    }
    refused_past_the_limit(seed, &mut net, 4).await;
}

/// The `past` connections beyond a limit come back as fruitless, and no
/// other does; then the download stops.
async fn refused_past_the_limit(seed: DownloadHandle, net: &mut Net, past: usize) {
    for _ in 0..past {
        let exit = net.next_exit("a connection past the limit was kept").await;
        assert_eq!(exit.kind, ExitKind::Fruitless);
    }
    assert!(net.exits.try_recv().is_err());
    seed.shutdown();
    finish(seed).await;
}
