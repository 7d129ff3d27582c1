//! `lodestone dht` against a private DHT of libtorrent nodes, in a
//! loopback-only network namespace.

mod common;

use std::net::SocketAddr;

use common::{assert_success, dht_bind, lodestone, stdout};
use lodestone_tests::netns::{BLOCK_LODESTONE, addr};
use lodestone_tests::swarm::{Swarm, SwarmConfig};

lodestone_tests::isolated_test! {
    /// Bootstrapped from one libtorrent node, get-peers walks the DHT to
    /// the seeders that libtorrent announced.
    fn get_peers_finds_libtorrent_seeders() {
        let swarm = Swarm::start(SwarmConfig { dht_nodes: 8, seeders: 3, ..SwarmConfig::default() })
            .expect("swarm ready");
        let info = swarm.info();
        let bootstrap = info.dht_nodes[5].to_string();
        let output = lodestone(&[
            "dht", "get-peers", &info.info_hash, "--bootstrap", &bootstrap, &dht_bind(1), "--timeout", "20",
        ]);
        assert_success(&output, "dht get-peers");
        let found: Vec<SocketAddr> = stdout(&output)
            .lines()
            .map(|line| line.parse().expect("each line is ip:port"))
            .collect();
        for seeder in &info.seeders {
            assert!(found.contains(seeder), "seeder {seeder} not in {found:?}");
        }
    }

    /// A peer announced by lodestone is found by libtorrent's own lookup.
    fn libtorrent_finds_a_peer_lodestone_announced() {
        let mut swarm = Swarm::start(SwarmConfig { dht_nodes: 8, ..SwarmConfig::default() })
            .expect("swarm ready");
        let info_hash = "0123456789abcdef0123456789abcdef01234567";
        let bootstrap = swarm.info().dht_nodes[0].to_string();
        let output = lodestone(&[
            "dht", "announce", info_hash, "--port", "7777", "--bootstrap", &bootstrap, &dht_bind(2),
        ]);
        assert_success(&output, "dht announce");
        let announced = SocketAddr::from((addr(BLOCK_LODESTONE, 2), 7777));
        let peers = swarm.get_peers(info_hash, &[announced]).expect("libtorrent lookup");
        assert!(peers.contains(&announced), "{announced} not in {peers:?}");
    }

    /// With no DHT node answering, get-peers exits 1 and says so.
    fn get_peers_without_nodes_says_why() {
        let output = lodestone(&[
            "dht", "get-peers", "0123456789abcdef0123456789abcdef01234567",
            "--bootstrap", "127.0.0.1:9", &dht_bind(3), "--timeout", "3",
        ]);
        assert_eq!(output.status.code(), Some(1));
        assert!(common::stderr(&output).contains("no DHT node answered"), "{}", common::stderr(&output));
    }
}
