//! Real sockets on 127.0.0.1, in process: three drivers, announce → get_peers,
//! a node of two shards,
//! and the state file carrying the node id across a restart.

// The helpers outside the test functions panic on failure like the tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lodestone_core::InfoHash;
use lodestone_dht::net::SavedState;
use lodestone_dht::{Dht, DhtConfig};

fn config(bootstrap: &[SocketAddr], state_file: Option<PathBuf>) -> DhtConfig {
    DhtConfig {
        bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        bootstrap: bootstrap.iter().map(SocketAddr::to_string).collect(),
        state_file,
        ..DhtConfig::default()
    }
}

fn temp_state(name: &str) -> PathBuf {
    let mut path = std::env::temp_dir();
    path.push(format!("lodestone-dht-{name}-{}.state", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
async fn announce_then_get_peers_over_loopback_and_state_survives_restart() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let a = Dht::spawn(config(&[], None)).await.unwrap();
        let router = a.local_addrs()[0];
        let state = temp_state("b");
        let b = Dht::spawn(config(&[router], Some(state.clone())))
            .await
            .unwrap();
        let c = Dht::spawn(config(&[router], None)).await.unwrap();

        let info_hash = InfoHash([0x42; 20]);
        let summary = b.announce(info_hash, Some(4242)).await.unwrap();
        assert!(summary.announced_to >= 1, "{summary:?}");

        let mut peers = c.get_peers(info_hash).await.unwrap();
        let mut found = Vec::new();
        while let Some(peer) = peers.recv().await {
            found.push(peer);
        }
        assert!(
            found.contains(&SocketAddr::from(([127, 0, 0, 1], 4242))),
            "{found:?}"
        );

        // Implied port: the announcer's DHT port is stored.
        c.announce(InfoHash([0x43; 20]), None).await.unwrap();
        let mut peers = b.get_peers(InfoHash([0x43; 20])).await.unwrap();
        let mut found = Vec::new();
        while let Some(peer) = peers.recv().await {
            found.push(peer);
        }
        assert_eq!(found, vec![c.local_addrs()[0]]);

        let stats = b.stats().await.unwrap();
        assert!(stats.ipv4_nodes >= 1, "{stats:?}");
        assert!(stats.traffic.responses_in >= 2);
        let id = stats.id;
        b.shutdown().await.unwrap();
        assert!(b.stats().await.is_err());

        let saved = SavedState::load(&state).unwrap();
        assert_eq!(saved.id, Some(id));
        assert!(!saved.nodes.is_empty());
        // Restarted without routers: the id comes back and the remembered
        // contacts are enough to find the swarm again.
        let b2 = Dht::spawn(config(&[], Some(state.clone()))).await.unwrap();
        assert_eq!(b2.stats().await.unwrap().id, id);
        let mut peers = b2.get_peers(info_hash).await.unwrap();
        let mut found = Vec::new();
        while let Some(peer) = peers.recv().await {
            found.push(peer);
        }
        assert!(
            found.contains(&SocketAddr::from(([127, 0, 0, 1], 4242))),
            "{found:?}"
        );
        b2.shutdown().await.unwrap();
        let _ = std::fs::remove_file(&state);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn spawn_refuses_two_sockets_of_one_family() {
    let mut cfg = config(&[], None);
    cfg.bind.push(SocketAddr::from(([127, 0, 0, 1], 0)));
    assert!(Dht::spawn(cfg).await.is_err());
}

/// Sends `bytes` to `server` and waits for its answer (loopback loses
/// nothing here; a lost answer fails the caller's timeout).
async fn exchange(
    socket: &tokio::net::UdpSocket,
    server: SocketAddr,
    bytes: &[u8],
) -> lodestone_dht::krpc::Message {
    use lodestone_dht::krpc::{Body, Message};
    let mut buf = [0u8; 1500];
    socket.send_to(bytes, server).await.unwrap();
    loop {
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let msg = Message::decode(&buf[..n]).unwrap();
        if from == server && matches!(msg.body, Body::Response(_)) {
            return msg;
        }
    }
}

/// Two shards on one address: queries from many source ports (which the
/// kernel spreads over both sockets) are all answered, by one node with one
/// peer store: a peer announced through one shard is found through every
/// one, with a token that any shard accepts.
#[tokio::test]
async fn shards_share_one_node() {
    use lodestone_core::NodeId;
    use lodestone_dht::Config;
    use lodestone_dht::krpc::{Body, Message, Query, TransactionId};

    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Dht::spawn(DhtConfig {
            bootstrap: Vec::new(),
            shards: 2,
            node: Config::server(),
            ..config(&[], None)
        })
        .await
        .unwrap();
        let server = node.local_addrs()[0];
        let info_hash = InfoHash([5; 20]);
        let ask = |i: u8, query: Query| {
            Message {
                tid: TransactionId::new(&[i]).unwrap(),
                body: Body::Query {
                    id: NodeId([i; 20]),
                    query,
                },
                ip: None,
                read_only: false,
                version: None,
            }
            .to_bytes()
        };
        let get_peers = Query::GetPeers {
            info_hash,
            want: None,
        };
        // Announce from one source, with the token its get_peers got.
        let announcer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let Body::Response(r) = exchange(&announcer, server, &ask(1, get_peers.clone()))
            .await
            .body
        else {
            unreachable!()
        };
        let announce = Query::AnnouncePeer {
            info_hash,
            port: 4321,
            implied_port: false,
            token: r.token.unwrap(),
        };
        exchange(&announcer, server, &ask(1, announce)).await;
        // Every other source port finds the peer.
        let mut ids = std::collections::BTreeSet::new();
        for i in 2..34u8 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let msg = exchange(&socket, server, &ask(i, get_peers.clone())).await;
            let Body::Response(r) = msg.body else {
                unreachable!()
            };
            assert_eq!(r.values, vec![SocketAddr::from(([127, 0, 0, 1], 4321))]);
            ids.insert(r.id);
        }
        assert_eq!(ids.len(), 1, "one node id behind every shard");
        let stats = node.stats().await.unwrap();
        assert_eq!(stats.traffic.queries_in, 34);
        node.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

/// A shared port: KRPC still works, every other datagram reaches the other
/// protocol's channel, and its sockets send from the DHT's port.
#[tokio::test]
async fn a_shared_port_hands_non_krpc_datagrams_over() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let a = Dht::spawn(config(&[], None)).await.unwrap();
        let router = a.local_addrs()[0];
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let other = lodestone_dht::OtherSink {
            deliver: std::sync::Arc::new(move |burst| {
                let owned: Vec<_> = burst.iter().map(|(from, d)| (*from, d.to_vec())).collect();
                tx.try_send(owned).is_ok()
            }),
            wants: |d| d.first() == Some(&0x41),
        };
        let (b, udp) = Dht::spawn_shared(config(&[router], None), other)
            .await
            .unwrap();
        let port = b.local_addrs()[0];

        // KRPC through the shared port.
        let summary = b.announce(InfoHash([0x44; 20]), Some(4343)).await.unwrap();
        assert!(summary.announced_to >= 1, "{summary:?}");

        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Unwanted: dropped, never queued.
        peer.send_to(b"junk", port).await.unwrap();
        let utp_like = [
            0x41u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
        ];
        peer.send_to(&utp_like, port).await.unwrap();
        let batch = rx.recv().await.unwrap();
        assert_eq!(batch, vec![(peer.local_addr().unwrap(), utp_like.to_vec())]);

        let socket = udp.for_addr(&peer.local_addr().unwrap()).unwrap();
        assert_eq!(socket.local_addr().unwrap(), port);
        socket
            .send_to(b"back", peer.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], port));
    })
    .await
    .unwrap();
}
