//! The peers announced to us, per infohash, bounded and expiring.
//!
//! Bounds: at most `max_peers_per_swarm` per infohash (a new announce then
//! replaces the oldest entry), of which at most [`PEERS_PER_IP`] share an IP
//! (one more from that IP replaces its own oldest, so a host announcing
//! many ports cannot push the honest peers out) and at most `max_swarms` infohashes (new ones
//! are refused when full: established swarms are worth more than a flood of
//! fresh infohashes). Entries expire `ttl` after their last announce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, host_of};
use rand::Rng;
use rand::seq::IndexedRandom;

/// Entries of one swarm that may share an IP (an IPv6 /64, see
/// [`host_of`]): a few clients behind one NAT, not a host announcing every
/// port or address it has.
pub const PEERS_PER_IP: usize = 4;

/// Bounds of the peer store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most infohashes stored.
    pub max_swarms: usize,
    /// Most peers per infohash.
    pub max_peers_per_swarm: usize,
    /// Lifetime of an announce.
    pub ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_swarms: 4096,
            max_peers_per_swarm: 256,
            ttl: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    announced: Instant,
}

/// Announced peers by infohash.
#[derive(Debug, Default)]
pub struct PeerStore {
    config: StoreConfig,
    swarms: HashMap<InfoHash, Vec<Peer>>,
    // Reused by `sample` so that serving get_peers does not allocate per query.
    scratch: Vec<SocketAddr>,
}

impl PeerStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            swarms: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Records that `addr` announced `info_hash` at `now`. Returns false when
    /// refused because the store is full of other swarms.
    pub fn announce(&mut self, info_hash: InfoHash, addr: SocketAddr, now: Instant) -> bool {
        if !self.swarms.contains_key(&info_hash) && self.swarms.len() >= self.config.max_swarms {
            return false;
        }
        let peers = self.swarms.entry(info_hash).or_default();
        let new = Peer {
            addr,
            announced: now,
        };
        let host = host_of(addr.ip());
        let same_ip = peers
            .iter()
            .filter(|p| host_of(p.addr.ip()) == host)
            .count();
        if let Some(p) = peers.iter_mut().find(|p| p.addr == addr) {
            p.announced = now;
        } else if same_ip >= PEERS_PER_IP {
            let own = peers.iter_mut().filter(|p| host_of(p.addr.ip()) == host);
            if let Some(oldest) = own.min_by_key(|p| p.announced) {
                *oldest = new;
            }
        } else if peers.len() < self.config.max_peers_per_swarm {
            peers.push(new);
        } else if let Some(oldest) = peers.iter_mut().min_by_key(|p| p.announced) {
            *oldest = new;
        }
        true
    }

    /// Up to `max` live peers of `family` for `info_hash`, a random sample
    /// when there are more.
    pub fn sample(
        &mut self,
        info_hash: &InfoHash,
        family: Family,
        max: usize,
        now: Instant,
        rng: &mut impl Rng,
    ) -> &[SocketAddr] {
        self.scratch.clear();
        if let Some(peers) = self.swarms.get(info_hash) {
            let ttl = self.config.ttl;
            self.scratch.extend(
                peers
                    .iter()
                    .filter(|p| Family::of(&p.addr) == family)
                    .filter(|p| now.saturating_duration_since(p.announced) < ttl)
                    .map(|p| p.addr),
            );
        }
        if self.scratch.len() > max {
            let picked: Vec<SocketAddr> = self.scratch.sample(rng, max).copied().collect();
            self.scratch = picked;
        }
        &self.scratch
    }

    /// Drops expired peers and empty swarms.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.config.ttl;
        self.swarms.retain(|_, peers| {
            peers.retain(|p| now.saturating_duration_since(p.announced) < ttl);
            !peers.is_empty()
        });
    }

    /// Number of swarms stored.
    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    /// Number of peers stored across swarms.
    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn bounded_sampled_and_expiring() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut store = PeerStore::new(StoreConfig {
            max_swarms: 2,
            max_peers_per_swarm: 10,
            ttl: Duration::from_secs(60),
        });
        let ih = |b| InfoHash([b; 20]);
        for i in 1..=20u8 {
            assert!(store.announce(ih(1), SocketAddr::from(([10, 0, 0, i], 6881)), now));
        }
        assert_eq!(store.peer_count(), 10);
        assert!(store.announce(ih(2), "[::1]:5".parse().unwrap(), now));
        assert!(!store.announce(ih(3), "10.0.0.1:5".parse().unwrap(), now));
        assert_eq!(store.sample(&ih(1), Family::V4, 4, now, &mut rng).len(), 4);
        assert_eq!(store.sample(&ih(1), Family::V6, 4, now, &mut rng).len(), 0);
        assert_eq!(store.sample(&ih(2), Family::V6, 4, now, &mut rng).len(), 1);
        let later = now + Duration::from_secs(61);
        assert!(
            store
                .sample(&ih(1), Family::V4, 4, later, &mut rng)
                .is_empty()
        );
        store.expire(later);
        assert_eq!(store.swarm_count(), 0);
    }

    #[test]
    fn one_ip_announcing_many_ports_keeps_its_own_few() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut store = PeerStore::new(StoreConfig {
            max_swarms: 2,
            max_peers_per_swarm: 10,
            ttl: Duration::from_secs(60),
        });
        let ih = InfoHash([1; 20]);
        let honest = SocketAddr::from(([198, 51, 100, 1], 6881));
        store.announce(ih, honest, now);
        for port in 1..=20u16 {
            let later = now + Duration::from_millis(1000 + u64::from(port));
            store.announce(ih, SocketAddr::from(([203, 0, 113, 7], port)), later);
        }
        assert_eq!(store.peer_count(), 1 + PEERS_PER_IP);
        let at = now + Duration::from_secs(2);
        let sample = store.sample(&ih, Family::V4, 50, at, &mut rng);
        assert!(sample.contains(&honest), "pushed out by one host's ports");
        // Its newest ports are the ones kept; its /64 is one host too.
        let six = |i: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 6881));
        for i in 1..=10u16 {
            store.announce(ih, six(i), at);
        }
        assert_eq!(store.peer_count(), 1 + 2 * PEERS_PER_IP);
        let sample = store.sample(&ih, Family::V4, 50, at, &mut rng);
        for port in 17..=20u16 {
            assert!(sample.contains(&SocketAddr::from(([203, 0, 113, 7], port))));
        }
    }
}
