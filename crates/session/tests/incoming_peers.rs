//! A peer that dialed us, on 127.0.0.1: once it leaves, the torrent dials
//! it back where its extension handshake's `p` says it listens, not at the
//! ephemeral port its connection came from; in the download, and during a
//! magnet's metadata fetch.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use lodestone_core::{Magnet, Metainfo, PeerId};
use lodestone_session::{AddOptions, Session, TorrentSource};
use lodestone_wire::{Connection, ExtendedHandshake, Handshake, Reserved};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dialed_the_download_is_redialed_where_it_listens() {
    redialed_where_it_listens(TorrentSource::Metainfo(torrent()), "download").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dialed_the_metadata_fetch_is_redialed_where_it_listens() {
    // Nobody can give the metadata, so the torrent stays in its fetch.
    let magnet = Magnet::new(torrent().info_hash);
    redialed_where_it_listens(TorrentSource::Magnet(magnet), "metadata").await;
}

/// A torrent of which nothing is on disk: it downloads, so it wants peers.
fn torrent() -> Arc<Metainfo> {
    let data = vec![7u8; 256 * 1024];
    Arc::new(Metainfo::create("t", 64 * 1024, &[(vec!["a.bin".into()], &data)]).unwrap())
}

/// A visitor dials the torrent added from `source`, says where it listens,
/// and leaves: the torrent must dial it there.
async fn redialed_where_it_listens(source: TorrentSource, name: &str) {
    let dir =
        std::env::temp_dir().join(format!("lodestone-incoming-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let info_hash = source.info_hash();
    let session = Session::start(common::local_config()).await.unwrap();
    let mut options = AddOptions::new(&dir);
    options.no_seed = true;
    let handle = session.add(source, options).unwrap();

    // The visitor listens here, dials the torrent from an ephemeral port,
    // says where it listens, and leaves.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen_port = listener.local_addr().unwrap().port();
    let visitor = Handshake::new(Reserved::LODESTONE, info_hash, PeerId::new([9; 20]));
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
