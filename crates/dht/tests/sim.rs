//! A deterministic simulated DHT: thousands of sans-IO nodes on synthetic
//! 10.x.y.z addresses, one event queue on virtual time, seeded latency, loss,
//! churn and hostile nodes. No socket is opened and nothing is sent.
//!
//! Replay a seed with `LODESTONE_SIM_SEED=<n> cargo test -p lodestone-dht --test sim`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, NodeAddr, NodeId};
use lodestone_dht::krpc::{Body, Message, Query, Response, Token, TransactionId};
use lodestone_dht::node::MAX_DATAGRAM;
use lodestone_dht::{Config, Event, LookupId, LookupStats, Node};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const K: usize = 8;

/// How a hostile node misbehaves when queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Answers random bytes.
    Garbage,
    /// Answers with a transaction id it made up.
    WrongTid,
    /// Answers with far more nodes than any honest node sends.
    Oversized,
    /// Answers from another node's address.
    WrongSource,
    /// Answers correctly but lists made-up, unreachable contacts near the target.
    Liar,
    /// Answers `find_node` and `get_peers` (with a token) under its own id,
    /// listing [`SYBIL_FAKES`] freshly made-up contacts far closer to the
    /// target than any real node: most at addresses where nobody answers,
    /// some at Sybil addresses, which answer with yet more of them.
    Sybil,
}

/// The hostile mix of the general simulations.
const MIXED: [Hostile; 5] = [
    Hostile::Garbage,
    Hostile::WrongTid,
    Hostile::Oversized,
    Hostile::WrongSource,
    Hostile::Liar,
];

/// Made-up contacts per Sybil answer: as many as fit, with the rest of the
/// answer, in one [`MAX_DATAGRAM`] (26 bytes each).
const SYBIL_FAKES: usize = 32;

/// `n` made-up contacts whose ids differ from `near` in the last two bytes
/// only, each at an address drawn by `addr`.
fn made_up(
    rng: &mut StdRng,
    near: NodeId,
    n: usize,
    addr: impl Fn(&mut StdRng) -> SocketAddr,
) -> Vec<NodeAddr> {
    (0..n)
        .map(|j| {
            let mut fid = near.0;
            fid[19] ^= rng.random::<u8>() | 1;
            fid[18] ^= j as u8;
            NodeAddr {
                id: NodeId(fid),
                addr: addr(rng),
            }
        })
        .collect()
}

/// An address in 10.255/16, where no simulated node lives: nobody answers.
fn nowhere(rng: &mut StdRng) -> SocketAddr {
    SocketAddr::from(([10, 255, rng.random(), rng.random()], 1))
}

enum Role {
    Honest(Box<Node>),
    Hostile(Hostile, NodeId),
}

struct SimNode {
    addr: SocketAddr,
    role: Role,
    alive: bool,
    /// One-way latency of this node's link.
    latency: Duration,
    /// The wake-up currently queued, if any.
    timer: Option<Duration>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Packet {
        from: SocketAddr,
        to: usize,
        bytes: Vec<u8>,
    },
    Wake(usize),
}

/// FNV-1a, so the trace hash does not depend on the std hasher's seed.
struct Trace(u64);

impl Trace {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

struct Sim {
    seed: u64,
    base: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, Delivery)>>,
    seq: u64,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: StdRng,
    loss: f64,
    trace: Trace,
    steps: u64,
    max_steps: u64,
    events: Vec<(usize, Event)>,
    /// Every made-up id a hostile node has handed out.
    fakes: HashSet<NodeId>,
    /// Made-up contacts handed to each querier, duplicates included.
    fakes_to: HashMap<SocketAddr, u64>,
}

fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
}

impl Sim {
    /// `honest` nodes then `hostile` ones, whose misbehaviours cycle through `behaviours`.
    fn new(seed: u64, honest: usize, hostile: usize, behaviours: &[Hostile]) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = Instant::now();
        let mut nodes = Vec::new();
        for i in 0..honest + hostile {
            let addr = sim_addr(i + 1);
            // Most links are fast; one in twenty is slower than the short timeout.
            let latency = if rng.random_bool(0.05) {
                Duration::from_millis(rng.random_range(800..2500))
            } else {
                Duration::from_millis(rng.random_range(5..120))
            };
            let role = if i < honest {
                let node_seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                Role::Honest(Box::new(Node::new(
                    Config::default(),
                    None,
                    node_seed,
                    base,
                )))
            } else {
                Role::Hostile(behaviours[i % behaviours.len()], NodeId(rng.random()))
            };
            nodes.push(SimNode {
                addr,
                role,
                alive: true,
                latency,
                timer: None,
            });
        }
        let by_addr = nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        Sim {
            seed,
            base,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            by_addr,
            rng,
            loss: 0.05,
            trace: Trace(0xcbf2_9ce4_8422_2325),
            steps: 0,
            max_steps: 50_000_000,
            events: Vec::new(),
            fakes: HashSet::new(),
            fakes_to: HashMap::new(),
        }
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn push(&mut self, at: Duration, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, delivery)));
    }

    fn send(&mut self, from: SocketAddr, from_index: usize, to: SocketAddr, bytes: Vec<u8>) {
        let Some(&to_index) = self.by_addr.get(&to) else {
            return; // an address nobody has: lost
        };
        if self.rng.random_bool(self.loss) {
            return;
        }
        let jitter = Duration::from_micros(self.rng.random_range(0..10_000));
        let at = self.now + self.nodes[from_index].latency + self.nodes[to_index].latency + jitter;
        self.push(
            at,
            Delivery::Packet {
                from,
                to: to_index,
                bytes,
            },
        );
    }

    /// Drains a node's outputs after an input and re-arms its timer.
    fn flush(&mut self, i: usize) {
        let from = self.nodes[i].addr;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let deadline = {
            let Role::Honest(node) = &mut self.nodes[i].role else {
                return;
            };
            while let Some(t) = node.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            node.poll_timeout()
        };
        for t in out {
            self.send(from, i, t.to, t.bytes);
        }
        for e in events {
            self.trace.add(&(i as u64).to_le_bytes());
            self.trace.add(format!("{:?}{e:?}", self.now).as_bytes());
            self.events.push((i, e));
        }
        if let Some(deadline) = deadline {
            let at = deadline.saturating_duration_since(self.base).max(self.now);
            if self.nodes[i].timer.is_none_or(|t| at < t || t < self.now) {
                self.nodes[i].timer = Some(at);
                self.push(at, Delivery::Wake(i));
            }
        }
    }

    fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.instant();
        let Role::Honest(node) = &mut self.nodes[i].role else {
            panic!("seed {}: node {i} is not honest", self.seed);
        };
        let r = f(node, now);
        self.flush(i);
        r
    }

    fn hostile_answer(
        &mut self,
        i: usize,
        kind: Hostile,
        id: NodeId,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let Ok(msg) = Message::decode(bytes) else {
            return;
        };
        let Body::Query { query, .. } = msg.body else {
            return;
        };
        let target = match &query {
            Query::FindNode { target, .. } => *target,
            Query::GetPeers { info_hash, .. } => info_hash.as_node_id(),
            _ => id,
        };
        let mut response = Response {
            id,
            ..Response::default()
        };
        let mut tid = msg.tid;
        let mut source = self.nodes[i].addr;
        match kind {
            Hostile::Garbage => {
                let len = self.rng.random_range(0..200);
                let junk: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                self.send(source, i, from, junk);
                return;
            }
            Hostile::WrongTid => {
                tid = TransactionId::new(&self.rng.random::<[u8; 2]>()).expect("2 bytes fit");
            }
            Hostile::Oversized => response.nodes = made_up(&mut self.rng, target, 200, nowhere),
            Hostile::WrongSource => {
                let other = self.rng.random_range(0..self.nodes.len());
                source = self.nodes[other].addr;
            }
            Hostile::Liar => response.nodes = made_up(&mut self.rng, target, K, nowhere),
            Hostile::Sybil => {
                if matches!(query, Query::FindNode { .. } | Query::GetPeers { .. }) {
                    response.nodes = self.sybil_fakes(target);
                }
                if matches!(query, Query::GetPeers { .. }) {
                    response.token = Token::new(b"sybil");
                }
            }
        }
        if !response.nodes.is_empty() {
            *self.fakes_to.entry(from).or_default() += response.nodes.len() as u64;
            self.fakes.extend(response.nodes.iter().map(|n| n.id));
        }
        let reply = Message {
            tid,
            body: Body::Response(response),
            ip: Some(from),
            read_only: false,
            version: None,
        };
        let bytes = reply.to_bytes();
        assert!(
            kind == Hostile::Oversized || bytes.len() <= MAX_DATAGRAM,
            "a {kind:?} answer of {} bytes would not fit a datagram",
            bytes.len()
        );
        self.send(source, i, from, bytes);
    }

    /// A fresh batch of fakes for `target`: ids within 2^32 of it (closer
    /// than any of a few thousand random ids, about 2^150 away), a quarter
    /// of them at Sybil addresses.
    fn sybil_fakes(&mut self, target: NodeId) -> Vec<NodeAddr> {
        let sybils: Vec<SocketAddr> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.role, Role::Hostile(Hostile::Sybil, _)))
            .map(|n| n.addr)
            .collect();
        let mut near = target.0;
        near[16] ^= self.rng.random::<u8>();
        near[17] ^= self.rng.random::<u8>();
        made_up(&mut self.rng, NodeId(near), SYBIL_FAKES, |rng| {
            if rng.random_bool(0.25) {
                sybils[rng.random_range(0..sybils.len())]
            } else {
                nowhere(rng)
            }
        })
    }

    /// Runs the event queue until virtual time `until`.
    fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, delivery))) = self.queue.pop() else {
                break;
            };
            self.steps += 1;
            assert!(
                self.steps < self.max_steps,
                "seed {}: livelock? {} steps by {:?}",
                self.seed,
                self.steps,
                self.now
            );
            self.now = at;
            match delivery {
                Delivery::Wake(i) => {
                    if self.nodes[i].timer != Some(at) || !self.nodes[i].alive {
                        continue;
                    }
                    self.nodes[i].timer = None;
                    self.with_node(i, |n, now| n.handle_timeout(now));
                }
                Delivery::Packet { from, to, bytes } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    self.trace.add(&bytes);
                    match self.nodes[to].role {
                        Role::Honest(_) => {
                            self.with_node(to, |n, now| n.handle_datagram(now, from, &bytes))
                        }
                        Role::Hostile(kind, id) => self.hostile_answer(to, kind, id, from, &bytes),
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn id_of(&self, i: usize) -> NodeId {
        match &self.nodes[i].role {
            Role::Honest(node) => node.id(),
            Role::Hostile(_, id) => *id,
        }
    }

    fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| matches!(self.nodes[i].role, Role::Honest(_)))
    }

    /// The ids that answer queries correctly right now: honest or lying, alive.
    fn responsive(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| match &n.role {
                Role::Honest(node) => Some(node.id()),
                Role::Hostile(Hostile::Liar | Hostile::Sybil, id) => Some(*id),
                Role::Hostile(..) => None,
            })
            .collect()
    }

    /// Starts every node (joining over `spread`) through the first `routers`.
    fn bootstrap(&mut self, routers: usize, spread: Duration) {
        let router_addrs: Vec<SocketAddr> = (0..routers).map(|i| self.nodes[i].addr).collect();
        let count = self.nodes.len();
        for i in 0..count {
            let at = spread * i as u32 / count as u32;
            self.run_until(at);
            match self.nodes[i].role {
                Role::Honest(_) => {
                    let others: Vec<SocketAddr> = router_addrs
                        .iter()
                        .copied()
                        .filter(|a| *a != self.nodes[i].addr)
                        .collect();
                    self.with_node(i, |n, now| n.bootstrap(now, &others));
                }
                Role::Hostile(kind, id) => {
                    // Say hello to a router so it pings back, and spray some junk.
                    let hello = Message {
                        tid: TransactionId::new(b"hi").expect("fits"),
                        body: Body::Query {
                            id,
                            query: Query::FindNode {
                                target: id,
                                want: None,
                            },
                        },
                        ip: None,
                        read_only: false,
                        version: None,
                    };
                    let from = self.nodes[i].addr;
                    self.send(from, i, router_addrs[0], hello.to_bytes());
                    if kind == Hostile::Sybil {
                        // A Sybil also greets the nodes around its id (an
                        // attacker finds them by crawling), so they verify
                        // it and keep it in their deepest buckets: that is
                        // where lookups passing near it learn of it.
                        let mut near: Vec<usize> = self.honest().collect();
                        near.sort_by_key(|&j| self.id_of(j).distance(&id));
                        for j in near.into_iter().take(2 * K) {
                            let to = self.nodes[j].addr;
                            self.send(from, i, to, hello.to_bytes());
                        }
                    }
                    for _ in 0..5 {
                        let victim = self.rng.random_range(0..count);
                        let to = self.nodes[victim].addr;
                        let junk: Vec<u8> = (0..40).map(|_| self.rng.random()).collect();
                        self.send(from, i, to, junk);
                        let spoof = Message {
                            tid: TransactionId::new(&self.rng.random::<[u8; 2]>()).expect("fits"),
                            body: Body::Response(Response {
                                id,
                                ..Response::default()
                            }),
                            ip: None,
                            read_only: false,
                            version: None,
                        };
                        self.send(from, i, to, spoof.to_bytes());
                    }
                }
            }
        }
    }

    /// Kills `fraction` of the nodes (never the first `keep`).
    fn churn(&mut self, fraction: f64, keep: usize) {
        for i in keep..self.nodes.len() {
            if self.rng.random_bool(fraction) {
                self.nodes[i].alive = false;
            }
        }
    }

    fn random_live_honest(&mut self) -> usize {
        let candidates: Vec<usize> = self.honest().filter(|&i| self.nodes[i].alive).collect();
        candidates[self.rng.random_range(0..candidates.len())]
    }

    fn lookup_result(&self, node: usize, lookup: LookupId) -> Option<LookupStats> {
        self.events.iter().find_map(|(i, e)| match e {
            Event::LookupDone { lookup: l, stats } if *i == node && *l == lookup => {
                Some(stats.clone())
            }
            _ => None,
        })
    }

    fn peers_found(&self, node: usize, lookup: LookupId) -> HashSet<SocketAddr> {
        self.events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::PeersFound { lookup: l, peers } if *i == node && *l == lookup => Some(peers),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }
}

/// What one announce → get_peers round saw.
struct Round {
    /// `announce_peer` went to at least one node.
    announced: bool,
    /// The announce lookup, if it ended.
    announce: Option<LookupStats>,
    /// The get_peers lookup, if it ended.
    get_peers: Option<LookupStats>,
    /// The get_peers lookup reported the announced peer.
    found: bool,
    /// Made-up contacts handed to the announcer, then to the seeker, during
    /// their lookups.
    fakes_seen: [u64; 2],
}

impl Sim {
    /// A random live honest node announces `info_hash` on `port`, then
    /// another looks it up; each lookup gets `wait` of virtual time.
    fn announce_round(&mut self, info_hash: InfoHash, port: u16, wait: Duration) -> Round {
        let announcer = self.random_live_honest();
        let fakes_before = self.fakes_to(announcer);
        let announce = self.with_node(announcer, |n, now| n.announce(now, info_hash, Some(port)));
        self.run_until(self.now + wait);
        let announce_fakes = self.fakes_to(announcer) - fakes_before;
        let announced = self.events.iter().any(|(i, e)| {
            *i == announcer
                && matches!(e, Event::Announced { lookup: l, nodes, .. } if *l == announce && *nodes > 0)
        });
        let seeker = self.random_live_honest();
        let fakes_before = self.fakes_to(seeker);
        let lookup = self.with_node(seeker, |n, now| n.get_peers(now, info_hash));
        self.run_until(self.now + wait);
        let get_peers_fakes = self.fakes_to(seeker) - fakes_before;
        let expected = SocketAddr::new(self.nodes[announcer].addr.ip(), port);
        Round {
            announced,
            announce: self.lookup_result(announcer, announce),
            get_peers: self.lookup_result(seeker, lookup),
            found: self.peers_found(seeker, lookup).contains(&expected),
            fakes_seen: [announce_fakes, get_peers_fakes],
        }
    }

    fn fakes_to(&self, node: usize) -> u64 {
        self.fakes_to
            .get(&self.nodes[node].addr)
            .copied()
            .unwrap_or(0)
    }
}

fn seed() -> u64 {
    std::env::var("LODESTONE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Prints the seed if the test panics, so the run can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation failed with seed {0}; replay with LODESTONE_SIM_SEED={0}",
                self.0
            );
        }
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

fn print_table(title: &str, stats: &[LookupStats]) {
    let mut rounds: Vec<f64> = stats.iter().map(|s| f64::from(s.rounds)).collect();
    let mut queries: Vec<f64> = stats.iter().map(|s| f64::from(s.queries)).collect();
    let mut time: Vec<f64> = stats.iter().map(|s| s.elapsed.as_secs_f64()).collect();
    println!("{title} ({} lookups)", stats.len());
    println!("  {:<18} {:>8} {:>8}", "", "median", "p90");
    for (name, v) in [
        ("rounds", &mut rounds),
        ("queries", &mut queries),
        ("virtual time (s)", &mut time),
    ] {
        println!(
            "  {:<18} {:>8.2} {:>8.2}",
            name,
            percentile(v, 0.5),
            percentile(v, 0.9)
        );
    }
}

/// 2,000 honest nodes, 40 hostile ones, 5% loss, slow links, then 20% churn:
/// lookups must find the true closest live nodes, and announce → get_peers
/// must work.
#[test]
fn two_thousand_nodes_with_loss_churn_and_hostiles() {
    let seed = seed();
    let _guard = SeedGuard(seed);
    let mut sim = Sim::new(seed, 2_000, 40, &MIXED);
    sim.bootstrap(4, Duration::from_secs(20));
    sim.run_until(Duration::from_secs(60));
    sim.churn(0.2, 4);
    sim.run_until(Duration::from_secs(90));

    // find_node towards random targets against ground truth.
    let mut stats = Vec::new();
    let mut overlaps = Vec::new();
    let mut exact_first = 0;
    let lookups = 40;
    for _ in 0..lookups {
        let origin = sim.random_live_honest();
        let target = NodeId(sim.rng.random());
        let lookup = sim.with_node(origin, |n, now| n.find_node(now, target));
        let start = sim.now;
        sim.run_until(start + Duration::from_secs(30));
        let result = sim
            .lookup_result(origin, lookup)
            .unwrap_or_else(|| panic!("seed {seed}: lookup from node {origin} did not finish"));
        let mut truth = sim.responsive();
        truth.sort_by_key(|id| id.distance(&target));
        let origin_id = sim.id_of(origin);
        truth.retain(|id| *id != origin_id);
        truth.truncate(K);
        let found: HashSet<NodeId> = result.closest.iter().map(|n| n.id).collect();
        overlaps.push(truth.iter().filter(|id| found.contains(id)).count());
        if result.closest.first().map(|n| n.id) == truth.first().copied() {
            exact_first += 1;
        }
        stats.push(result);
    }
    print_table("find_node, 2,000 nodes, 5% loss, 20% churn", &stats);
    let mean = overlaps.iter().sum::<usize>() as f64 / overlaps.len() as f64;
    println!(
        "  true k-closest found: mean {mean:.2} of {K}; exact closest in {exact_first}/{lookups}"
    );
    // A true closest node may be lost to 5% loss each way (one retry) or sit
    // on one of the 5% of links slower than the short timeout, and the lookup
    // does not wait for stragglers: about 7 of 8, and the very closest in
    // about nine lookups of ten, is what a correct lookup achieves here.
    assert!(
        mean >= 6.5,
        "seed {seed}: mean overlap {mean:.2} < 6.5 of 8: {overlaps:?}"
    );
    assert!(
        exact_first * 10 >= lookups * 8,
        "seed {seed}: exact closest only in {exact_first}/{lookups}"
    );

    // announce, then get_peers from another node.
    let mut announce_stats = Vec::new();
    let swarms = 10;
    let mut found = 0;
    for s in 0..swarms {
        let info_hash = InfoHash(sim.rng.random());
        let round = sim.announce_round(info_hash, 40_000 + s as u16, Duration::from_secs(30));
        assert!(round.announced, "seed {seed}: announce {s} reached no node");
        found += usize::from(round.found);
        announce_stats.extend(round.get_peers);
    }
    print_table("get_peers after announce", &announce_stats);
    println!(
        "  announced peer found in {found}/{swarms} swarms; {} simulation steps",
        sim.steps
    );
    assert_eq!(found, swarms, "seed {seed}: announce → get_peers failed");
}

fn run_small(seed: u64) -> (u64, u64) {
    let mut sim = Sim::new(seed, 300, 10, &MIXED);
    sim.bootstrap(3, Duration::from_secs(5));
    sim.run_until(Duration::from_secs(20));
    sim.churn(0.2, 3);
    for _ in 0..5 {
        let origin = sim.random_live_honest();
        let target = InfoHash(sim.rng.random());
        sim.with_node(origin, |n, now| n.announce(now, target, None));
    }
    sim.run_until(Duration::from_secs(60));
    (sim.trace.0, sim.steps)
}

/// The same seed gives the same trace; another seed a different one.
#[test]
fn same_seed_same_trace() {
    let seed = seed();
    let _guard = SeedGuard(seed);
    let first = run_small(seed);
    let second = run_small(seed);
    assert_eq!(first, second, "seed {seed}: runs diverged");
    assert_ne!(first.0, run_small(seed + 1).0);
}

/// Sybils flood every lookup that reaches them with made-up
/// contacts closer to the target than any real node (over 10,000 of them in
/// the run). Announce → get_peers between honest nodes must still work, each
/// lookup must end in bounded time, and no made-up contact may enter a result
/// or an honest routing table.
#[test]
fn sybil_flood_of_fake_closest_contacts() {
    let seed = seed();
    let _guard = SeedGuard(seed);
    let mut sim = Sim::new(seed, 800, 30, &[Hostile::Sybil]);
    sim.bootstrap(4, Duration::from_secs(20));
    sim.run_until(Duration::from_secs(60));

    let sybils: Vec<NodeId> = (0..sim.nodes.len())
        .filter(|&i| matches!(sim.nodes[i].role, Role::Hostile(..)))
        .map(|i| sim.id_of(i))
        .collect();
    let swarms = 16;
    let wait = Duration::from_secs(30);
    let mut rounds = Vec::new();
    for s in 0..swarms {
        let mut info_hash: [u8; 20] = sim.rng.random();
        if s % 2 == 0 {
            // A swarm under attack: a Sybil shares its first 40 bits, so it
            // is closer than any honest node and every lookup reaches it.
            info_hash[..5].copy_from_slice(&sybils[s % sybils.len()].0[..5]);
        }
        let port = 40_000 + s as u16;
        rounds.push(sim.announce_round(InfoHash(info_hash), port, wait));
    }
    let stats: Vec<LookupStats> = rounds
        .iter()
        .flat_map(|r| r.announce.iter().chain(&r.get_peers))
        .cloned()
        .collect();
    let lookups = 2 * rounds.len();
    let found = rounds.iter().filter(|r| r.found).count();
    let flooded = rounds
        .iter()
        .flat_map(|r| r.fakes_seen)
        .filter(|&f| f > 0)
        .count();

    let (mut entries, mut fake_entries, mut sybil_entries) = (0, 0, 0);
    for i in sim.honest() {
        let Role::Honest(node) = &sim.nodes[i].role else {
            unreachable!("honest() yields honest nodes")
        };
        for e in node.table(Family::V4).entries() {
            entries += 1;
            match sim.by_addr.get(&e.node.addr) {
                _ if sim.fakes.contains(&e.node.id) => fake_entries += 1,
                None => fake_entries += 1,
                Some(&j) if matches!(sim.nodes[j].role, Role::Hostile(..)) => sybil_entries += 1,
                Some(_) => {}
            }
        }
    }

    print_table("announce and get_peers under a Sybil flood", &stats);
    let mut queries: Vec<f64> = stats.iter().map(|s| f64::from(s.queries)).collect();
    let mut time: Vec<f64> = stats.iter().map(|s| s.elapsed.as_secs_f64()).collect();
    println!(
        "  {} fakes handed out ({} distinct); {flooded}/{lookups} lookups flooded; \
         peer found in {found}/{swarms}; {}/{lookups} lookups ended, median {} queries, {:.2} s; \
         honest tables: {entries} entries, {sybil_entries} Sybils, {fake_entries} fakes",
        sim.fakes_to.values().sum::<u64>(),
        sim.fakes.len(),
        stats.len(),
        percentile(&mut queries, 0.5),
        percentile(&mut time, 0.5),
    );

    // The flood is real: enough fakes, and reaching the lookups under test.
    assert!(
        sim.fakes.len() >= 10_000,
        "seed {seed}: only {} fakes handed out",
        sim.fakes.len()
    );
    assert!(
        flooded * 4 >= lookups,
        "seed {seed}: only {flooded}/{lookups} lookups met a Sybil"
    );
    // Nothing made up is ever trusted: a contact enters a table or a result
    // only by answering from its address under its id.
    assert_eq!(fake_entries, 0, "seed {seed}: fakes in honest tables");
    for s in &stats {
        assert!(
            s.closest.iter().all(|n| !sim.fakes.contains(&n.id)),
            "seed {seed}: a fake in a lookup result: {:?}",
            s.closest
        );
    }
    // Bounded time: without Sybils these lookups take about 2 s (p90 3 s).
    // A fake never answers, so it holds one of the alpha = 4 slots for a
    // short timeout (1.5 s); a lookup that stops trusting a source whose
    // contacts fail pays a few of those per Sybil met, and ends within two
    // hard query timeouts (10 s). One that queries every fake it is handed
    // takes 30 s or more here.
    let bound = Duration::from_secs(20);
    for (s, r) in rounds.iter().enumerate() {
        for (what, l) in [("announce", &r.announce), ("get_peers", &r.get_peers)] {
            let elapsed = l.as_ref().map(|l| l.elapsed);
            assert!(
                elapsed.is_some_and(|e| e <= bound),
                "seed {seed}: round {s}: {what} took {elapsed:?} (bound {bound:?}), {} fakes seen",
                r.fakes_seen[usize::from(what == "get_peers")]
            );
        }
        assert!(
            r.announced,
            "seed {seed}: round {s}: announce reached no node"
        );
    }
    // The announcer and the seeker each lose some slots to fakes and may
    // settle on slightly different closest nodes; one miss in 16 is allowed.
    assert!(
        found + 1 >= swarms,
        "seed {seed}: announced peer found in only {found}/{swarms} swarms"
    );
}
