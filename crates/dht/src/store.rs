//! The peers announced to us, per infohash, bounded and expiring.
//!
//! Bounds: at most `max_peers_per_swarm` per infohash (a new announce then
//! replaces the oldest entry), of which at most [`PEERS_PER_IP`] share an IP
//! (one more from that IP replaces its own oldest, so a host announcing
//! many ports cannot push the honest peers out) and at most `max_swarms` infohashes (new ones
//! are refused when full: established swarms are worth more than a flood of
//! fresh infohashes). One IP is in at most [`SWARMS_PER_IP`] swarms, so
//! that flood cannot come from one host: one IP announcing 4,096 made-up
//! infohashes filled the store, and every honest new swarm was refused for
//! as long as it kept announcing. Entries expire `ttl` after their last
//! announce.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::counts::count_down;
use lodestone_core::{InfoHash, host_of};
use rand::Rng;
use rand::seq::IndexedRandom;

/// Entries of one swarm that may share an IP (an IPv6 /64, see
/// [`host_of`]): a few clients behind one NAT, not a host announcing every
/// port or address it has.
pub const PEERS_PER_IP: usize = 4;

/// Swarms one IP (an IPv6 /64) may be stored in. An honest host's torrents
/// are spread over the whole DHT, eight closest nodes each, so one node
/// holds few of them: a seedbox announcing a thousand torrents to a DHT of
/// millions lands in this node's store about once in a hundred. Loopback
/// is exempt: a local swarm's every peer shares it.
pub const SWARMS_PER_IP: usize = 32;

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
    /// Swarms each host has an entry in.
    swarms_of: HashMap<IpAddr, usize>,
    // Reused by `sample` so that serving get_peers does not allocate per query.
    scratch: Vec<SocketAddr>,
}

impl PeerStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            swarms: HashMap::new(),
            swarms_of: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Records that `addr` announced `info_hash` at `now`. Returns false when
    /// refused because the store is full of other swarms, or its IP is in
    /// [`SWARMS_PER_IP`] others.
    pub fn announce(&mut self, info_hash: InfoHash, addr: SocketAddr, now: Instant) -> bool {
        let host = host_of(addr.ip());
        let same_ip = self.swarms.get(&info_hash).map_or(0, |peers| {
            peers
                .iter()
                .filter(|p| host_of(p.addr.ip()) == host)
                .count()
        });
        let crowded = self
            .swarms_of
            .get(&host)
            .is_some_and(|&n| n >= SWARMS_PER_IP);
        if same_ip == 0 && crowded && !host.is_loopback() {
            return false;
        }
        if !self.swarms.contains_key(&info_hash) && self.swarms.len() >= self.config.max_swarms {
            return false;
        }
        let peers = self.swarms.entry(info_hash).or_default();
        let new = Peer {
            addr,
            announced: now,
        };
        let mut pushed_out = None;
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
            pushed_out = Some(host_of(oldest.addr.ip()));
            *oldest = new;
        }
        if same_ip == 0 {
            *self.swarms_of.entry(host).or_default() += 1;
        }
        if let Some(gone) = pushed_out
            && !peers.iter().any(|p| host_of(p.addr.ip()) == gone)
        {
            leave_swarm(&mut self.swarms_of, gone);
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
        let swarms_of = &mut self.swarms_of;
        let mut gone = Vec::new();
        self.swarms.retain(|_, peers| {
            gone.clear();
            peers.retain(|p| {
                let live = now.saturating_duration_since(p.announced) < ttl;
                if !live {
                    gone.push(host_of(p.addr.ip()));
                }
                live
            });
            // A host several of whose entries went leaves once.
            gone.sort_unstable();
            gone.dedup();
            for host in &gone {
                if !peers.iter().any(|p| host_of(p.addr.ip()) == *host) {
                    leave_swarm(swarms_of, *host);
                }
            }
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

/// `host` has no entry left in one more swarm.
fn leave_swarm(swarms_of: &mut HashMap<IpAddr, usize>, host: IpAddr) {
    count_down(swarms_of, host);
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

    #[test]
    fn one_ip_is_stored_in_a_bounded_number_of_swarms() {
        let now = Instant::now();
        let mut store = PeerStore::new(StoreConfig {
            max_swarms: 4096,
            max_peers_per_swarm: 2,
            ttl: Duration::from_secs(60),
        });
        let ih = |i: u32| {
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            InfoHash(bytes)
        };
        let flooder = SocketAddr::from(([203, 0, 113, 7], 6881));
        let refused = (0..4096)
            .filter(|&i| !store.announce(ih(i), flooder, now))
            .count();
        assert_eq!(
            (refused, store.swarm_count()),
            (4096 - SWARMS_PER_IP, SWARMS_PER_IP)
        );
        // Its /64 is one host; honest newcomers are still taken.
        let six = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 6881));
        let six_too = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 6881));
        for i in 0..SWARMS_PER_IP as u32 {
            assert!(store.announce(ih(10_000 + i), six, now));
        }
        assert!(!store.announce(ih(20_000), six_too, now));
        assert!(store.announce(ih(30_000), "198.51.100.1:6881".parse().unwrap(), now));
        // Re-announcing where it is stored is no new swarm.
        assert!(store.announce(ih(0), flooder, now));
        // Pushed out of a full swarm, it may join another.
        let later = now + Duration::from_secs(1);
        store.announce(ih(0), "198.51.100.2:6881".parse().unwrap(), later);
        store.announce(ih(0), "198.51.100.3:6881".parse().unwrap(), later);
        assert!(store.announce(ih(40_000), flooder, later));
        // Once its entries expire, it may be stored anew.
        let much_later = now + Duration::from_secs(61);
        store.expire(much_later);
        assert!(store.announce(ih(50_000), flooder, much_later));
        assert!(store.swarms_of.values().all(|&n| n <= SWARMS_PER_IP));
        assert_eq!(store.swarms_of.get(&flooder.ip()), Some(&1));
        // Local swarms share loopback.
        let local = SocketAddr::from(([127, 0, 0, 1], 6881));
        for i in 0..2 * SWARMS_PER_IP as u32 {
            assert!(store.announce(ih(60_000 + i), local, much_later));
        }
    }
}
