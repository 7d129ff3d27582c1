//! A peer that dialed us, on 127.0.0.1: once it leaves, the torrent dials
//! it back where its extension handshake's `p` says it listens, not at the
//! ephemeral port its connection came from.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use lodestone_core::{Metainfo, PeerId};
use lodestone_session::{AddOptions, Session, SessionConfig, TorrentSource};
use lodestone_wire::{Connection, ExtendedHandshake, Handshake, Reserved};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dialed_us_is_redialed_where_it_listens() {
    let dir = std::env::temp_dir().join(format!("lodestone-incoming-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Nothing of it on disk: the torrent downloads, so it wants peers.
    let data = vec![7u8; 256 * 1024];
    let metainfo = std::sync::Arc::new(
        Metainfo::create("t", 64 * 1024, &[(vec!["a.bin".into()], &data)]).unwrap(),
    );
    let mut config = SessionConfig::new();
    config.dht = None;
    config.listen_port = 0;
    config.listen_ipv4 = Some(Ipv4Addr::LOCALHOST);
    config.listen_ipv6 = None;
    let session = Session::start(config).await.unwrap();
    let mut options = AddOptions::new(&dir);
    options.no_seed = true;
    let handle = session
        .add(TorrentSource::Metainfo(metainfo.clone()), options)
        .unwrap();

    // The visitor listens here, dials the torrent from an ephemeral port,
    // says where it listens, and leaves.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen_port = listener.local_addr().unwrap().port();
    let visitor = Handshake::new(
        Reserved::LODESTONE,
        metainfo.info_hash,
        PeerId::new([9; 20]),
    );
    let stream = TcpStream::connect(session.listen_addrs()[0]).await.unwrap();
    let came_from = stream.local_addr().unwrap();
    let (mut conn, _) = Connection::initiate(stream, Duration::from_secs(5), visitor)
        .await
        .unwrap();
    assert_ne!(came_from.port(), listen_port);
    let hello = ExtendedHandshake {
        p: Some(listen_port),
        ..ExtendedHandshake::default()
    };
    conn.feed(&hello.to_message());
    conn.flush().await.unwrap();
    drop(conn);

    let (_redial, from) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the torrent dials the visitor back where it listens")
        .unwrap();
    assert_eq!(from.ip(), came_from.ip());

    handle.remove();
    let _ = handle.wait().await;
    session.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
