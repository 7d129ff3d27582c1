//! Real sockets on 127.0.0.1, in process: three drivers, announce → get_peers,
//! and the state file carrying the node id across a restart.

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
