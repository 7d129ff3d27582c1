//! End-to-end smoke tests of the harness itself: real clients only, no
//! lodestone code. If these fail, every e2e test built on the harness would
//! fail for reasons that are not lodestone's.

use std::time::Duration;

use lodestone_tests::clients::{
    DownloaderConfig, LibtorrentDownloader, Source, announce_peer, aria2_seeder,
    transmission_seeder,
};
use lodestone_tests::content::verify_files;
use lodestone_tests::netns::{BLOCK_ARIA2, BLOCK_LIBTORRENT, BLOCK_TRANSMISSION, addr};
use lodestone_tests::swarm::{Swarm, SwarmConfig};

lodestone_tests::isolated_test! {
    /// Six libtorrent DHT nodes and two seeders come up; a separate
    /// libtorrent session finds the content through the DHT alone (magnet
    /// without x.pe) and downloads it intact.
    fn libtorrent_downloads_through_private_dht() {
        let swarm = Swarm::start(SwarmConfig::default()).expect("swarm ready");
        let info = swarm.info();
        eprintln!(
            "swarm ready: DHT meshed after {:.3} s, seeders found after {:.3} s",
            info.dht_ready_s, info.ready_s
        );
        assert_eq!(info.dht_nodes.len(), 6);
        assert_eq!(info.seeders.len(), 2);

        // Bootstrap through one node only, so the lookup has to walk the DHT.
        let mut downloader = LibtorrentDownloader::start(DownloaderConfig {
            ip: addr(BLOCK_LIBTORRENT, 1),
            port: 6881,
            source: Source::Magnet(info.magnet()),
            bootstrap: vec![info.dht_nodes[2]],
            no_dht: false,
            utp: false,
            utp_only: false,
        })
        .expect("downloader");
        downloader.wait_metadata(Duration::from_secs(60)).expect("metadata");
        let finished = downloader.wait_finished(Duration::from_secs(60)).expect("finished");
        assert_eq!(finished.total_length, info.total_length);
        verify_files(downloader.save_path(), &info.files).expect("content intact");
        let peers = downloader.peers();
        assert!(
            info.seeders.iter().any(|s| peers.contains(s)),
            "no seeder among connected peers {peers:?}"
        );
    }

    /// aria2c and transmission-cli seed the swarm's torrent from its files;
    /// transmission is announced on its behalf and found by a DHT lookup; a
    /// libtorrent session downloads from each of them directly.
    fn aria2_and_transmission_seed() {
        let mut swarm = Swarm::start(SwarmConfig {
            seeders: 0,
            file_sizes: vec![200_000],
            single_file: true,
            ..SwarmConfig::default()
        })
        .expect("swarm ready");
        let info = swarm.info().clone();

        let aria2 = aria2_seeder(&info.torrent, &info.content_dir, addr(BLOCK_ARIA2, 1), 6881, &info.dht_nodes)
            .expect("aria2 seeding");
        let transmission =
            transmission_seeder(&info.torrent, &info.content_dir, addr(BLOCK_TRANSMISSION, 1), 6881)
                .expect("transmission seeding");
        let std::net::SocketAddr::V4(t_addr) = transmission.addr() else {
            unreachable!("transmission_seeder binds IPv4")
        };
        let acked = announce_peer(&info.dht_nodes, t_addr, &info.info_hash).expect("announce");
        assert!(!acked.is_empty());
        let found = swarm.get_peers(&info.info_hash, &[transmission.addr()]).expect("lookup");
        assert!(found.contains(&transmission.addr()), "lookup found {found:?}");

        for (i, seeder) in [&aria2, &transmission].into_iter().enumerate() {
            let magnet = format!("{}&x.pe={}", info.magnet(), seeder.addr());
            let ip = addr(BLOCK_LIBTORRENT, 10 + i as u8);
            let mut downloader =
                LibtorrentDownloader::start(DownloaderConfig::from_named_peers(ip, magnet))
                    .expect("downloader");
            downloader.wait_finished(Duration::from_secs(60)).expect("finished");
            verify_files(downloader.save_path(), &info.files).expect("content intact");
            downloader.wait_peer(seeder.addr(), Duration::from_secs(5)).expect("peer seen");
        }
    }
}
