//! The peers announced to us, per infohash, bounded and expiring.
//!
//! Bounds: at most `max_peers_per_swarm` per infohash, of which at most
//! [`PEERS_PER_IP`] share an IP (one more from that IP replaces its own
//! oldest, so a host announcing many ports cannot push the honest peers
//! out), and at most `max_swarms` infohashes (new ones are refused when
//! full: established swarms are worth more than a flood of fresh
//! infohashes). A newcomer to a full swarm replaces the oldest entry of the
//! network ([`network_of`]) with the most entries there, its own when no
//! other has more: a network takes places only from networks with more
//! entries than its own, and only until they are level, however many
//! addresses it announces from. A party owning one /24 or /48 can take a
//! swarm's free places, but once the swarm is full it pushes out only its
//! own entries, and each newcomer of another network takes one of its
//! places; pushing every honest peer out takes as many networks as there
//! are places (an IPv6 /40 holds 256 /48s).
//!
//! One IP is in at most [`SWARMS_PER_IP`] swarms and one network in at most
//! a [`NETWORK_SHARE`]th of `max_swarms`, so the flood of made-up infohashes
//! that would keep every honest new swarm out cannot come from one host, nor
//! from one party's range of them: one IP announcing 4,096 made-up infohashes
//! filled the store before the first bound, and 128 addresses of one /24
//! would have before the second. It still takes only 16 networks, which
//! IPv6 hands out cheaply (one /44 holds 16 /48s); a wider net would lock
//! out whole ISPs. The price is paid by neighbours: once eight busy hosts
//! of a /24 or /48 reach its cap, the others there join no new swarm here
//! until entries expire. Entries expire `ttl` after their last announce.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::counts::count_down;
use lodestone_core::{InfoHash, host_of, network_of};
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

/// One network (an IPv4 /24 or IPv6 /48, see [`network_of`]) may be stored
/// in at most `max_swarms / NETWORK_SHARE` swarms (and never fewer than
/// [`SWARMS_PER_IP`]): a rack of seedboxes fits many times over, and keeping
/// honest new swarms out takes that many networks.
pub const NETWORK_SHARE: usize = 16;

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

/// What a swarm's membership is counted under: the host and the network of
/// each of its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Member {
    Host(IpAddr),
    Network(IpAddr),
}

impl Member {
    /// The keys an entry at `ip` counts under.
    fn of(ip: IpAddr) -> [Member; 2] {
        [Member::Host(host_of(ip)), Member::Network(network_of(ip))]
    }

    fn includes(self, ip: IpAddr) -> bool {
        match self {
            Member::Host(host) => host_of(ip) == host,
            Member::Network(network) => network_of(ip) == network,
        }
    }
}

/// Announced peers by infohash.
#[derive(Debug, Default)]
pub struct PeerStore {
    config: StoreConfig,
    swarms: HashMap<InfoHash, Vec<Peer>>,
    /// Swarms each host and each network has an entry in.
    swarms_of: HashMap<Member, usize>,
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
    /// refused because the store is full of other swarms, or its IP or its
    /// network is in as many others as it may be, or a swarm has no places
    /// (`max_peers_per_swarm` of 0).
    pub fn announce(&mut self, info_hash: InfoHash, addr: SocketAddr, now: Instant) -> bool {
        if self.config.max_peers_per_swarm == 0 {
            return false;
        }
        let ip = addr.ip();
        let members = Member::of(ip);
        let [host, _] = members;
        let present = members.map(|member| {
            self.swarms.get(&info_hash).map_or(0, |peers| {
                peers
                    .iter()
                    .filter(|p| member.includes(p.addr.ip()))
                    .count()
            })
        });
        let joins = present.map(|n| n == 0);
        let refused = members
            .iter()
            .zip(joins)
            .any(|(&member, joins)| joins && self.at_cap(member));
        if refused && !ip.is_loopback() {
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
        let [same_host, same_network] = present;
        let replaced = if let Some(p) = peers.iter_mut().find(|p| p.addr == addr) {
            p.announced = now;
            return true;
        } else if same_host >= PEERS_PER_IP {
            oldest_of(peers, host)
        } else if peers.len() < self.config.max_peers_per_swarm {
            peers.push(new);
            None
        } else {
            // A full swarm has entries (it has places), so one is given up.
            let Some(slot) = place_in_full_swarm(peers, ip, same_network) else {
                return false;
            };
            Some(slot)
        };
        if let Some(slot) = replaced {
            let gone = std::mem::replace(&mut peers[slot], new).addr.ip();
            let peers = &*peers;
            for member in Member::of(gone) {
                if !peers.iter().any(|p| member.includes(p.addr.ip())) {
                    count_down(&mut self.swarms_of, member);
                }
            }
        }
        for (member, joins) in members.into_iter().zip(joins) {
            if joins {
                *self.swarms_of.entry(member).or_default() += 1;
            }
        }
        true
    }

    /// Whether `member` is in as many swarms as it may be.
    fn at_cap(&self, member: Member) -> bool {
        let cap = match member {
            Member::Host(_) => SWARMS_PER_IP,
            Member::Network(_) => (self.config.max_swarms / NETWORK_SHARE).max(SWARMS_PER_IP),
        };
        self.swarms_of.get(&member).is_some_and(|&n| n >= cap)
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
                    gone.extend(Member::of(p.addr.ip()));
                }
                live
            });
            // A host or network several of whose entries went leaves once.
            gone.sort_unstable();
            gone.dedup();
            for &member in &gone {
                if !peers.iter().any(|p| member.includes(p.addr.ip())) {
                    count_down(swarms_of, member);
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

/// The slot of `member`'s oldest entry in `peers`.
fn oldest_of(peers: &[Peer], member: Member) -> Option<usize> {
    (0..peers.len())
        .filter(|&i| member.includes(peers[i].addr.ip()))
        .min_by_key(|&i| peers[i].announced)
}

/// The slot a newcomer at `ip` takes in a full swarm where its network has
/// `own` entries: the oldest of its own network's when no other network has
/// more, else the oldest of the busiest network's (ties to the oldest entry).
fn place_in_full_swarm(peers: &[Peer], ip: IpAddr, own: usize) -> Option<usize> {
    let mut per_network: HashMap<IpAddr, usize> = HashMap::new();
    for p in peers {
        *per_network.entry(network_of(p.addr.ip())).or_default() += 1;
    }
    let busiest = per_network.values().copied().max().unwrap_or(0);
    if own > 0 && own >= busiest {
        return oldest_of(peers, Member::Network(network_of(ip)));
    }
    (0..peers.len())
        .filter(|&i| per_network.get(&network_of(peers[i].addr.ip())) == Some(&busiest))
        .min_by_key(|&i| peers[i].announced)
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
        let mut store = bounded(2, 10, 60);
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
        let mut store = bounded(2, 10, 60);
        let swarm = ih(1);
        let honest = SocketAddr::from(([198, 51, 100, 1], 6881));
        store.announce(swarm, honest, now);
        for port in 1..=20u16 {
            let later = now + Duration::from_millis(1000 + u64::from(port));
            store.announce(swarm, SocketAddr::from(([203, 0, 113, 7], port)), later);
        }
        assert_eq!(store.peer_count(), 1 + PEERS_PER_IP);
        let at = now + Duration::from_secs(2);
        let sample = store.sample(&swarm, Family::V4, 50, at, &mut rng);
        assert!(sample.contains(&honest), "pushed out by one host's ports");
        // Its newest ports are the ones kept; its /64 is one host too.
        let six = |i: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 6881));
        for i in 1..=10u16 {
            store.announce(swarm, six(i), at);
        }
        assert_eq!(store.peer_count(), 1 + 2 * PEERS_PER_IP);
        let sample = store.sample(&swarm, Family::V4, 50, at, &mut rng);
        for port in 17..=20u16 {
            assert!(sample.contains(&SocketAddr::from(([203, 0, 113, 7], port))));
        }
    }

    /// A store of `max_swarms` swarms of `max_peers` whose entries live
    /// `ttl_secs`.
    fn bounded(max_swarms: usize, max_peers: usize, ttl_secs: u64) -> PeerStore {
        PeerStore::new(StoreConfig {
            max_swarms,
            max_peers_per_swarm: max_peers,
            ttl: Duration::from_secs(ttl_secs),
        })
    }

    /// The `i`th of as many made-up infohashes as a test needs.
    fn ih(i: u32) -> InfoHash {
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        InfoHash(bytes)
    }

    /// The store counts each host and network once per swarm it has an
    /// entry in, and nothing else.
    fn assert_counts_are_of_the_entries(store: &PeerStore) {
        let mut recount: HashMap<Member, usize> = HashMap::new();
        for peers in store.swarms.values() {
            let mut members: Vec<Member> =
                peers.iter().flat_map(|p| Member::of(p.addr.ip())).collect();
            members.sort_unstable();
            members.dedup();
            for member in members {
                *recount.entry(member).or_default() += 1;
            }
        }
        assert_eq!(recount, store.swarms_of);
    }

    #[test]
    fn a_full_swarm_churns_the_busiest_network_not_the_honest_peers() {
        let mut rng = StdRng::seed_from_u64(3);
        let start = Instant::now();
        let mut store = bounded(2, 10, 600);
        let swarm = ih(1);
        // Six honest peers, each in a network of its own, announced first.
        let honest: Vec<SocketAddr> = (1..=6u8)
            .map(|n| SocketAddr::from(([198, 51, n, 1], 6881)))
            .collect();
        for &peer in &honest {
            assert!(store.announce(swarm, peer, start));
        }
        // Then a flood from every address of two /24s and from 2^16 /64s
        // of one IPv6 /48, each announced once and newer than the honest.
        let flood = (1..=254u8)
            .flat_map(|n| [([203, 0, 113, n], 6881), ([192, 0, 2, n], 6881)])
            .map(SocketAddr::from)
            .chain(
                (0..=u16::MAX).map(|n| SocketAddr::from(([0x2001, 0xdb8, 7, n, 0, 0, 0, 1], 6881))),
            );
        for (i, peer) in flood.enumerate() {
            let at = start + Duration::from_millis(1 + i as u64);
            assert!(store.announce(swarm, peer, at));
        }
        let later = start + Duration::from_secs(300);
        let v4 = store
            .sample(&swarm, Family::V4, 50, later, &mut rng)
            .to_vec();
        for peer in &honest {
            assert!(v4.contains(peer), "{peer} was pushed out by the flood");
        }
        assert_eq!(store.peer_count(), 10);
        // A newcomer of a seventh network takes the place of the busiest
        // network's oldest entry: a flooder's, not an honest one's.
        let newcomer = SocketAddr::from(([198, 51, 7, 1], 6881));
        assert!(store.announce(swarm, newcomer, later));
        let v4 = store
            .sample(&swarm, Family::V4, 50, later, &mut rng)
            .to_vec();
        assert!(v4.contains(&newcomer));
        assert!(honest.iter().all(|peer| v4.contains(peer)));
        // Many networks of one entry each do push the oldest out: taking
        // every place takes as many networks as there are places.
        for n in 1..=10u8 {
            store.announce(swarm, SocketAddr::from(([100, 100, n, 1], 6881)), later);
        }
        let v4 = store
            .sample(&swarm, Family::V4, 50, later, &mut rng)
            .to_vec();
        assert!(!v4.contains(&honest[0]));
        assert_counts_are_of_the_entries(&store);
    }

    #[test]
    fn one_network_is_stored_in_a_bounded_number_of_swarms() {
        let now = Instant::now();
        let max_swarms = 4096;
        let mut store = bounded(max_swarms, 2, 60);
        // Every address of one /24, each in as many swarms as it may be.
        let mut next = 0;
        for n in 1..=254u8 {
            let flooder = SocketAddr::from(([203, 0, 113, n], 6881));
            for _ in 0..SWARMS_PER_IP {
                store.announce(ih(next), flooder, now);
                next += 1;
            }
        }
        assert_eq!(store.swarm_count(), max_swarms / NETWORK_SHARE);
        assert_counts_are_of_the_entries(&store);
        assert!(store.announce(ih(next), "198.51.100.1:6881".parse().unwrap(), now));
        // The flooders still refresh and join where they are stored.
        assert!(store.announce(ih(0), "203.0.113.200:6881".parse().unwrap(), now));
        // Once its entries expire, the network may be stored anew.
        let later = now + Duration::from_secs(61);
        store.expire(later);
        assert_eq!(store.swarm_count(), 0);
        assert!(store.swarms_of.is_empty());
        assert!(store.announce(ih(next + 1), "203.0.113.9:6881".parse().unwrap(), later));
    }

    #[test]
    fn a_newcomer_level_with_the_busiest_network_replaces_its_own() {
        let start = Instant::now();
        let mut store = bounded(2, 6, 600);
        let swarm = ih(1);
        let at = |ms| start + Duration::from_millis(ms);
        // B's two entries are the oldest; A's two came after, then two
        // networks of one each.
        let b = |n| SocketAddr::from(([192, 0, 2, n], 6881));
        let a = |n| SocketAddr::from(([203, 0, 113, n], 6881));
        for (i, peer) in [b(1), b(2), a(1), a(2)].into_iter().enumerate() {
            store.announce(swarm, peer, at(i as u64));
        }
        store.announce(swarm, "198.51.100.1:6881".parse().unwrap(), at(10));
        store.announce(swarm, "198.51.101.1:6881".parse().unwrap(), at(11));
        assert!(store.announce(swarm, a(3), at(20)));
        let mut rng = StdRng::seed_from_u64(4);
        let kept = store
            .sample(&swarm, Family::V4, 10, at(30), &mut rng)
            .to_vec();
        assert!(kept.contains(&b(1)) && kept.contains(&b(2)), "{kept:?}");
        assert!(!kept.contains(&a(1)) && kept.contains(&a(3)), "{kept:?}");
        assert_counts_are_of_the_entries(&store);
    }

    #[test]
    fn a_small_store_still_gives_one_host_its_swarms() {
        let now = Instant::now();
        // A 16th of 64 swarms is 4: the network's cap is raised to one
        // host's, so one address of a /24 may still be in 32 swarms.
        let mut store = bounded(64, 2, 60);
        let first = SocketAddr::from(([203, 0, 113, 1], 6881));
        for i in 0..SWARMS_PER_IP as u32 {
            assert!(store.announce(ih(i), first, now));
        }
        let neighbour = SocketAddr::from(([203, 0, 113, 2], 6881));
        assert!(!store.announce(ih(100), neighbour, now));
        assert!(store.announce(ih(0), neighbour, now));
    }

    #[test]
    fn a_swarm_of_no_places_stores_and_counts_nothing() {
        let mut store = bounded(2, 0, 60);
        assert!(!store.announce(
            InfoHash([1; 20]),
            "198.51.100.1:6881".parse().unwrap(),
            Instant::now()
        ));
        assert_eq!(store.swarm_count(), 0);
        assert!(store.swarms_of.is_empty());
    }

    #[test]
    fn one_ip_is_stored_in_a_bounded_number_of_swarms() {
        let now = Instant::now();
        let mut store = bounded(4096, 2, 60);
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
        store.announce(ih(0), "192.0.2.3:6881".parse().unwrap(), later);
        assert!(store.announce(ih(40_000), flooder, later));
        // Once its entries expire, it may be stored anew.
        let much_later = now + Duration::from_secs(61);
        store.expire(much_later);
        assert!(store.announce(ih(50_000), flooder, much_later));
        assert!(
            store
                .swarms_of
                .iter()
                .all(|(member, &n)| matches!(member, Member::Network(_)) || n <= SWARMS_PER_IP)
        );
        assert_eq!(store.swarms_of.get(&Member::Host(flooder.ip())), Some(&1));
        assert_counts_are_of_the_entries(&store);
        // Local swarms share loopback, past every cap.
        let local = SocketAddr::from(([127, 0, 0, 1], 6881));
        for i in 0..2 * (4096 / NETWORK_SHARE) as u32 {
            assert!(store.announce(ih(60_000 + i), local, much_later));
        }
    }
}
