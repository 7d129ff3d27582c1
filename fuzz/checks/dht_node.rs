//! The whole sans-IO DHT node (`lodestone_dht::Node`) driven by a hostile
//! network.
//!
//! Included with `#[path]` by the cargo-fuzz target `dht_node` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The input is read with `arbitrary` as a node configuration and a list of
//! operations: raw datagrams from a handful of addresses, well-formed
//! queries, answers to the queries the node really sent (right or wrong
//! transaction id, right or wrong source, any id, node lists full of our own
//! id, port 0, 0.0.0.0 or one IP many times), virtual time passing, and
//! commands (bootstrap, lookups, cancel, add node). Invariants, checked after
//! every operation:
//!
//! * nothing panics, and every deadline loop ends within a bounded number of
//!   steps;
//! * after `handle_timeout(now)`, `poll_timeout()` lies after `now`;
//! * every datagram the node sends is valid KRPC of at most `MAX_DATAGRAM`
//!   bytes, and goes to a contactable address (no port 0, 0.0.0.0,
//!   broadcast or multicast, whatever the node lists said);
//! * the routing tables keep their structural invariants (bounded buckets,
//!   no duplicate, no own id) and hold no entry with port 0;
//! * at most `max_outstanding` queries are in flight, the peer store and
//!   a server's pool stay within their bounds;
//! * a lookup reports each peer once and ends once;
//! * when the input stops, every lookup started by a command ends within
//!   two minutes of virtual time.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::script;
use lodestone_core::compact::{Family, is_contactable};
use lodestone_core::{InfoHash, NodeAddr, NodeId};
use lodestone_dht::krpc::{Body, ErrorBody, Message, Query, Response, Token, TransactionId};
use lodestone_dht::node::MAX_DATAGRAM;
use lodestone_dht::{Config, Event, LookupId, Node, secure_id};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Operations read from one input, at most.
const MAX_OPS: usize = 64;
/// Deadline-handling steps allowed for one wait, and for the final drain.
const MAX_STEPS: usize = 20_000;
/// How long lookups get to end once the input stops.
const DRAIN: Duration = Duration::from_secs(120);

/// Checks every invariant on the scenario read from `data`; panics on a
/// violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut h = Harness::new(setup);
    for op in script::ops::<Op>(&mut u, MAX_OPS) {
        h.apply(op);
    }
    h.drain();
}

/// Which kind of node is attacked.
#[derive(Debug, Arbitrary)]
enum Setup {
    /// A client with BEP 42 enforcement (the default).
    Client,
    /// A client that accepts any id from any IP.
    Lenient,
    /// A bootstrap node (verified pool, rate limits).
    Server,
    /// A BEP 43 read-only client.
    ReadOnly,
}

impl Setup {
    fn config(&self) -> Config {
        let mut config = match self {
            Setup::Server => Config::server(),
            _ => Config::default(),
        };
        match self {
            Setup::Lenient => config.enforce_node_id = false,
            Setup::ReadOnly => config.read_only = true,
            Setup::Server => {
                if let Some(server) = &mut config.server {
                    // The default limiter allocates 64 Ki slots: fine for a
                    // server, too slow to build once per fuzz input.
                    server.limits.slots = 64;
                    server.pool.capacity = 256;
                }
            }
            Setup::Client => {}
        }
        config
    }
}

/// A source address a datagram can really come from.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Src(u8);

/// Any address a hostile node may name in a node list or peer list.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Named(u8);

fn source(from: Src) -> SocketAddr {
    const SOURCES: [SocketAddr; 12] = [
        v4([10, 0, 0, 1], 6881),
        v4([10, 0, 0, 2], 6881),
        v4([10, 0, 0, 3], 6881),
        v4([10, 0, 0, 4], 6881),
        v4([10, 0, 0, 5], 6881),
        v4([10, 0, 0, 6], 6881),
        v4([10, 0, 0, 1], 6882),
        v4([124, 31, 75, 21], 6881),
        v4([1, 2, 3, 4], 6881),
        v4([1, 2, 3, 4], 7000),
        v6([0xfd00, 0, 0, 0, 0, 0, 0, 1], 6881),
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 6881),
    ];
    SOURCES[usize::from(from.0) % SOURCES.len()]
}

fn named(n: Named) -> SocketAddr {
    const ODD: [SocketAddr; 6] = [
        v4([0, 0, 0, 0], 6881),
        v4([10, 0, 0, 7], 0),
        v4([255, 255, 255, 255], 6881),
        v4([127, 0, 0, 1], 6881),
        v4([224, 0, 0, 1], 6881),
        v6([0, 0, 0, 0, 0, 0, 0, 0], 6881),
    ];
    let i = usize::from(n.0);
    if i % 4 == 3 {
        ODD[(i / 4) % ODD.len()]
    } else {
        source(Src(n.0 / 4))
    }
}

const fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), port)
}

const fn v6(s: [u16; 8], port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(
            s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
        )),
        port,
    )
}

/// How a hostile node picks a node id.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Id {
    /// The attacked node's own id.
    Own,
    /// The id last claimed for this address, if any (an honest answer).
    Known,
    /// The target of the query answered (our own id for unsolicited
    /// messages) with one bit flipped: about as close as an id can be.
    NearTarget(u8),
    /// A BEP 42 id that matches the address's IP.
    Secure,
    /// Twenty copies of a byte.
    Fixed(u8),
}

/// Which transaction id an answer carries.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Tid {
    /// The one the node sent.
    Echo,
    /// The node's, with one byte changed.
    Altered(u8),
}

/// An answer to one of the node's queries.
#[derive(Debug, Arbitrary)]
struct Answer {
    /// Which query (index into those the node sent, most recent first).
    query: u8,
    /// `None`: from the address queried; `Some`: from another one.
    from: Option<Src>,
    tid: Tid,
    id: Id,
    /// An error answer instead of a response.
    error: Option<u8>,
    nodes: Vec<(Id, Named)>,
    values: Vec<Named>,
    token: Option<u8>,
    ip: Option<Named>,
    read_only: bool,
}

/// What a hostile querier asks.
#[derive(Debug, Arbitrary)]
enum Ask {
    Ping,
    FindNode(Id),
    GetPeers(u8),
    Announce {
        info_hash: u8,
        port: u16,
        implied_port: bool,
        /// Replay the token the node gave this IP, or make one up.
        valid_token: bool,
    },
}

/// One step of the scenario.
#[derive(Debug, Arbitrary)]
enum Op {
    /// Arbitrary bytes from a source address.
    Raw {
        from: Src,
        bytes: Vec<u8>,
    },
    /// A well-formed query.
    Query {
        from: Src,
        id: Id,
        tid: Vec<u8>,
        ask: Ask,
        read_only: bool,
    },
    /// An answer to something the node sent.
    Answer(Answer),
    /// Time passes and the deadlines that fall due are handled.
    Wait {
        millis: u16,
    },
    /// A long silence (a suspended laptop); handled in one call.
    Sleep {
        minutes: u8,
    },
    /// A command from the application; only sane addresses.
    Bootstrap(Vec<Src>),
    GetPeers(u8),
    Announce(u8, Option<u16>),
    FindNode(u8),
    Cancel(u8),
    AddNode(Src),
}

/// A query the node sent.
struct Sent {
    to: SocketAddr,
    tid: TransactionId,
    target: NodeId,
}

struct Harness {
    node: Node,
    config: Config,
    base: Instant,
    now: Instant,
    rng: StdRng,
    /// Most recent last.
    sent: Vec<Sent>,
    /// The id last claimed for each address.
    known: HashMap<SocketAddr, NodeId>,
    /// Tokens the node handed out, by IP.
    tokens: HashMap<IpAddr, Token>,
    /// Lookups started by commands and not cancelled.
    commanded: HashSet<LookupId>,
    ended: HashSet<LookupId>,
    peers_seen: HashSet<(LookupId, SocketAddr)>,
}

impl Harness {
    fn new(setup: Setup) -> Self {
        let config = setup.config();
        let base = Instant::now();
        let node = Node::new(config.clone(), Some(NodeId([0x55; 20])), 7, base);
        Self {
            node,
            config,
            base,
            now: base,
            rng: StdRng::seed_from_u64(42),
            sent: Vec::new(),
            known: HashMap::new(),
            tokens: HashMap::new(),
            commanded: HashSet::new(),
            ended: HashSet::new(),
            peers_seen: HashSet::new(),
        }
    }

    fn resolve(&mut self, id: Id, addr: SocketAddr, target: NodeId) -> NodeId {
        match id {
            Id::Own => self.node.id(),
            Id::Known => self.known.get(&addr).copied().unwrap_or(NodeId([0x99; 20])),
            Id::NearTarget(bit) => {
                let mut bytes = target.0;
                let bit = usize::from(bit) % 160;
                bytes[bit / 8] ^= 0x80 >> (bit % 8);
                NodeId(bytes)
            }
            Id::Secure => secure_id::generate(&addr.ip(), &mut self.rng),
            Id::Fixed(b) => NodeId([b; 20]),
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Raw { from, bytes } => self.node.handle_datagram(now, source(from), &bytes),
            Op::Query {
                from,
                id,
                tid,
                ask,
                read_only,
            } => {
                let from = source(from);
                let own = self.node.id();
                let id = self.resolve(id, from, own);
                let query = match ask {
                    Ask::Ping => Query::Ping,
                    Ask::FindNode(target) => Query::FindNode {
                        target: self.resolve(target, from, own),
                        want: None,
                    },
                    Ask::GetPeers(ih) => Query::GetPeers {
                        info_hash: info_hash(ih),
                        want: None,
                    },
                    Ask::Announce {
                        info_hash: ih,
                        port,
                        implied_port,
                        valid_token,
                    } => Query::AnnouncePeer {
                        info_hash: info_hash(ih),
                        port: port.max(1),
                        implied_port,
                        token: match self.tokens.get(&from.ip()) {
                            Some(token) if valid_token => *token,
                            _ => Token::truncated(b"made up"),
                        },
                    },
                };
                let message = Message {
                    tid: TransactionId::truncated(&tid),
                    body: Body::Query { id, query },
                    ip: None,
                    read_only,
                    version: None,
                };
                self.node.handle_datagram(now, from, &message.to_bytes());
            }
            Op::Answer(answer) => self.answer(answer),
            Op::Wait { millis } => self.advance(Duration::from_millis(u64::from(millis))),
            Op::Sleep { minutes } => {
                self.now += Duration::from_secs(60 * u64::from(minutes.min(90)));
                self.timeout();
            }
            Op::Bootstrap(addrs) => {
                let addrs: Vec<_> = addrs.into_iter().take(4).map(source).collect();
                self.node.bootstrap(now, &addrs);
            }
            Op::GetPeers(ih) => {
                let id = self.node.get_peers(now, info_hash(ih));
                self.commanded.insert(id);
            }
            Op::Announce(ih, port) => {
                let id = self.node.announce(now, info_hash(ih), port);
                self.commanded.insert(id);
            }
            Op::FindNode(b) => {
                let id = self.node.find_node(now, NodeId([b; 20]));
                self.commanded.insert(id);
            }
            Op::Cancel(i) => {
                let id = LookupId(u64::from(i) % 16);
                self.node.cancel(id);
                self.commanded.remove(&id);
            }
            Op::AddNode(from) => self.node.add_node(now, source(from)),
        }
        self.observe();
    }

    fn answer(&mut self, answer: Answer) {
        if self.sent.is_empty() {
            return;
        }
        let index = self.sent.len() - 1 - usize::from(answer.query) % self.sent.len();
        let (to, mut tid, target) = {
            let s = &self.sent[index];
            (s.to, s.tid, s.target)
        };
        let from = answer.from.map_or(to, source);
        if let Tid::Altered(b) = answer.tid {
            let mut bytes = tid.as_slice().to_vec();
            match bytes.first_mut() {
                Some(first) => *first ^= b.max(1),
                None => bytes.push(b),
            }
            tid = TransactionId::truncated(&bytes);
        }
        let body = match answer.error {
            Some(code) => Body::Error(ErrorBody {
                code: 200 + i64::from(code % 8),
                message: "hostile".to_owned(),
            }),
            None => {
                let id = self.resolve(answer.id, from, target);
                self.known.insert(from, id);
                let mut response = Response {
                    id,
                    ..Response::default()
                };
                for (id, addr) in answer.nodes.into_iter().take(24) {
                    let addr = named(addr);
                    let id = self.resolve(id, addr, target);
                    self.known.insert(addr, id);
                    let node = NodeAddr { id, addr };
                    match Family::of(&addr) {
                        Family::V4 => response.nodes.push(node),
                        Family::V6 => response.nodes6.push(node),
                    }
                }
                response.values = answer.values.into_iter().take(64).map(named).collect();
                response.token = answer.token.map(|t| Token::truncated(&[t; 8]));
                Body::Response(response)
            }
        };
        let message = Message {
            tid,
            body,
            ip: answer.ip.map(named),
            read_only: answer.read_only,
            version: None,
        };
        self.node
            .handle_datagram(self.now, from, &message.to_bytes());
    }

    /// Moves the clock forward by `by`, handling each deadline on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..MAX_STEPS {
            match self.node.poll_timeout() {
                Some(deadline) if deadline <= end => {
                    self.now = self.now.max(deadline);
                    self.timeout();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("more than {MAX_STEPS} deadlines in {by:?}: a timer livelock");
    }

    fn timeout(&mut self) {
        self.node.handle_timeout(self.now);
        let next = self.node.poll_timeout();
        assert!(
            next.is_some_and(|t| t > self.now),
            "poll_timeout {:?} is not after now ({:?}) right after handle_timeout",
            next.map(|t| t.saturating_duration_since(self.base)),
            self.now - self.base
        );
        self.observe();
    }

    /// Drains outputs and checks the invariants.
    fn observe(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            assert!(
                transmit.bytes.len() <= MAX_DATAGRAM,
                "sent {} bytes to {}",
                transmit.bytes.len(),
                transmit.to
            );
            assert!(
                is_contactable(&transmit.to),
                "sent a datagram to {}",
                transmit.to
            );
            let message = Message::decode(&transmit.bytes)
                .unwrap_or_else(|e| panic!("sent invalid KRPC to {}: {e}", transmit.to));
            match message.body {
                Body::Query { query, .. } => {
                    let target = match query {
                        Query::FindNode { target, .. } => target,
                        Query::GetPeers { info_hash, .. }
                        | Query::AnnouncePeer { info_hash, .. } => info_hash.as_node_id(),
                        Query::Ping => self.node.id(),
                    };
                    if self.sent.len() == 256 {
                        self.sent.remove(0);
                    }
                    self.sent.push(Sent {
                        to: transmit.to,
                        tid: message.tid,
                        target,
                    });
                }
                Body::Response(r) => {
                    if let Some(token) = r.token {
                        self.tokens.insert(transmit.to.ip(), token);
                    }
                }
                Body::Error(_) => {}
            }
        }
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::PeersFound { lookup, peers } => {
                    assert!(!peers.is_empty(), "empty PeersFound");
                    assert!(!self.ended.contains(&lookup), "peers after the end");
                    for peer in peers {
                        assert!(
                            self.peers_seen.insert((lookup, peer)),
                            "peer {peer} reported twice"
                        );
                    }
                }
                Event::LookupDone { lookup, .. } => {
                    assert!(self.ended.insert(lookup), "lookup {lookup:?} ended twice");
                }
                _ => {}
            }
        }
        for family in [Family::V4, Family::V6] {
            let table = self.node.table(family);
            if let Err(e) = table.check_invariants() {
                panic!("{family:?} table: {e}");
            }
            assert!(table.entries().all(|e| e.node.addr.port() != 0));
            assert!(table.entries().all(|e| Family::of(&e.node.addr) == family));
        }
        assert!(self.node.queries_in_flight() <= self.config.max_outstanding);
        let (swarms, peers) = self.node.stored();
        let store = &self.config.store;
        assert!(swarms <= store.max_swarms && peers <= swarms * store.max_peers_per_swarm);
        if let (Some(pool), Some(server)) = (self.node.pool(), &self.config.server) {
            for family in [Family::V4, Family::V6] {
                assert!(
                    pool.len(family) <= server.pool.capacity,
                    "pool over capacity"
                );
            }
        }
    }

    /// Lets virtual time run with no more input: every lookup a command
    /// started must end.
    fn drain(&mut self) {
        self.advance(DRAIN);
        let hung: Vec<_> = self
            .commanded
            .iter()
            .filter(|id| !self.ended.contains(id))
            .collect();
        assert!(
            hung.is_empty(),
            "lookups {hung:?} still running {DRAIN:?} after the last input"
        );
    }
}

fn info_hash(b: u8) -> InfoHash {
    InfoHash::new([b; 20])
}
