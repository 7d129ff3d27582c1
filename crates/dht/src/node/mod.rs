//! The sans-IO DHT node.
//!
//! [`Node`] is fed the current time, datagrams and commands, and drained of
//! datagrams to send ([`Node::poll_transmit`]), events ([`Node::poll_event`])
//! and its next deadline ([`Node::poll_timeout`]). It never reads a clock, a
//! socket or a global RNG, so a simulation can run thousands of them on
//! virtual time, and the same seed replays the same run.
//!
//! Timing choices (see [`Config`]): α = 4 queries in flight per lookup and
//! family; a lookup query is *slow* after 1.5 s, which widens the search and
//! sends it once more under the same transaction id (a lost datagram is the
//! usual cause), and failed after 10 s, which counts against the node in the
//! routing table. Real DHT
//! round trips are mostly well under a second, so 1.5 s rarely fires for a
//! live node, and a failure at 10 s still leaves room for congested links.

mod lookup;
mod rpc;
mod serve;
mod server;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, NodeAddr, NodeId, may_name};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::ip_vote::IpVotes;
use crate::krpc::{Body, DecodeError, ErrorCode, Message, Query, Response, TransactionId, Want};
use crate::pool::{Journal, Pool};
use crate::ratelimit::{RateLimitConfig, RateLimiter};
use crate::routing::{RoutingConfig, RoutingTable};
use crate::secure_id;
use crate::store::{PeerStore, StoreConfig};
use crate::token::Tokens;

use lookup::{Lookup, Purpose};
pub use lookup::{LookupId, LookupStats};
use rpc::{Pending, Transactions, Why};
use server::Server;
pub use server::ServerConfig;

/// Largest datagram we send (BEP 32: fits any IPv6 path unfragmented).
pub const MAX_DATAGRAM: usize = 1024;

/// Knobs of a node. [`Config::default`] suits a client; [`Config::server`] a
/// long-lived bootstrap node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Routing-table rules (K, failures, per-IP restriction).
    pub routing: RoutingConfig,
    /// Peer-store bounds.
    pub store: StoreConfig,
    /// Queries in flight per lookup and family.
    pub alpha: usize,
    /// After this a query is slow: the lookup stops waiting for it.
    pub short_timeout: Duration,
    /// After this a query has failed.
    pub query_timeout: Duration,
    /// Most candidates a lookup remembers per family.
    pub max_candidates: usize,
    /// Most queries in flight in total.
    pub max_outstanding: usize,
    /// Most verification pings in flight (to unknown queriers, stale entries).
    pub max_pings: usize,
    /// BEP 43: answer no queries and ask others to keep us out of their tables.
    pub read_only: bool,
    /// BEP 42: refuse table entries (and storage targets) whose id does not
    /// match their public IP.
    pub enforce_node_id: bool,
    /// Distinct voters needed before we believe an external IP.
    pub ip_votes: usize,
    /// Write-token secret lifetime.
    pub token_rotation: Duration,
    /// Buckets idle this long are refreshed with a lookup.
    pub refresh_interval: Duration,
    /// Period of housekeeping (refresh, pings, expiry, re-bootstrap).
    pub maintenance_interval: Duration,
    /// Our `v` key.
    pub version: Option<[u8; 4]>,
    /// Ask for IPv6 contacts (`want n6`) while bootstrapping.
    pub want_ipv6: bool,
    /// Bootstrap-node behaviour (verified pool, its abuse limits); `None`
    /// for a client, which gets [`RateLimitConfig::client`]'s limits.
    pub server: Option<ServerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            routing: RoutingConfig::default(),
            store: StoreConfig::default(),
            alpha: 4,
            short_timeout: Duration::from_millis(1500),
            query_timeout: Duration::from_secs(10),
            max_candidates: 64,
            max_outstanding: 4096,
            max_pings: 64,
            read_only: false,
            enforce_node_id: true,
            ip_votes: 3,
            token_rotation: Duration::from_secs(5 * 60),
            refresh_interval: Duration::from_secs(15 * 60),
            maintenance_interval: Duration::from_secs(5),
            version: Some(*b"LD\x00\x01"),
            want_ipv6: false,
            server: None,
        }
    }
}

impl Config {
    /// A bootstrap node: a verified pool answering `find_node`, abuse
    /// limits, a large peer store and more pings in flight.
    pub fn server() -> Self {
        Self {
            store: StoreConfig {
                max_swarms: 200_000,
                ..StoreConfig::default()
            },
            max_pings: 512,
            max_outstanding: 16_384,
            server: Some(ServerConfig::default()),
            ..Self::default()
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Payload (at most [`MAX_DATAGRAM`] bytes for our answers).
    pub bytes: Vec<u8>,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// New peers for a `get_peers` or `announce` lookup (each reported once).
    PeersFound {
        /// The lookup.
        lookup: LookupId,
        /// The peers.
        peers: Vec<SocketAddr>,
    },
    /// A lookup started by a command ended.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// What it took and found.
        stats: LookupStats,
    },
    /// `announce_peer` went out at the end of an announce lookup.
    Announced {
        /// The lookup.
        lookup: LookupId,
        /// The swarm.
        info_hash: InfoHash,
        /// To how many nodes (those that gave a token).
        nodes: usize,
    },
    /// A bootstrap lookup ended; `nodes` entries are in the tables.
    Bootstrapped {
        /// Table entries, all families.
        nodes: usize,
    },
    /// Enough nodes agreed on our external address.
    ExternalIp {
        /// The address.
        ip: IpAddr,
    },
    /// Our id changed (to a BEP 42 id for the external IP): persist it.
    IdChanged {
        /// The new id.
        id: NodeId,
    },
}

/// Counters for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Queries received and answered.
    pub queries_in: u64,
    /// Queries sent.
    pub queries_out: u64,
    /// Answers received that matched a query.
    pub responses_in: u64,
    /// Queries that got no answer in time.
    pub timeouts: u64,
    /// Datagrams dropped: not KRPC, malformed answers, unmatched answers.
    pub dropped: u64,
    /// Error answers sent (203, 204).
    pub errors_out: u64,
    /// Queries answered, by method: ping, find_node, get_peers, announce_peer.
    pub queries_by_method: [u64; 4],
    /// Answers sent (responses and errors).
    pub replies_out: u64,
    /// Datagrams refused by the rate limits, and answers not sent for the byte cap.
    pub rate_limited: u64,
}

const V4: usize = 0;
const V6: usize = 1;

fn family_index(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => V4,
        SocketAddr::V6(_) => V6,
    }
}

/// The sans-IO Mainline DHT node.
#[derive(Debug)]
pub struct Node {
    config: Config,
    id: NodeId,
    rng: StdRng,
    tables: [RoutingTable; 2],
    rpc: Transactions,
    lookups: BTreeMap<LookupId, Lookup>,
    next_lookup: u64,
    tokens: Tokens,
    store: PeerStore,
    /// Ballots for our external address, by the voter's family.
    votes: [IpVotes; 2],
    /// The external address believed, by family.
    external: [Option<IpAddr>; 2],
    bootstrap_addrs: Vec<SocketAddr>,
    bootstrapping: Option<LookupId>,
    next_maintenance: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: NodeStats,
    scratch: Response,
    /// A burst's decoded datagrams, kept for their allocation.
    burst: Vec<(SocketAddr, Result<Message, DecodeError>)>,
    /// The lookup targets of a burst's queries, kept likewise.
    burst_targets: Vec<(NodeId, Family)>,
    server: Option<Server>,
    /// Abuse limits: the server's, or [`RateLimitConfig::client`]'s.
    limits: RateLimiter,
}

/// Mixed into the seed for a client's rate-limit salt, so that drawing it
/// leaves the node's own random draws as they were.
const CLIENT_SALT_MIX: u64 = 0x5a17_c0de_d1ce_f00d;

impl Node {
    /// A node with `node_id` (a random one when `None`), all randomness drawn
    /// from `rng_seed`.
    pub fn new(config: Config, node_id: Option<NodeId>, rng_seed: u64, now: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let id = node_id.unwrap_or_else(|| NodeId(rng.random()));
        let tables = [
            RoutingTable::new(id, config.routing.clone(), now),
            RoutingTable::new(id, config.routing.clone(), now),
        ];
        let rpc = Transactions::new(
            config.short_timeout,
            config.query_timeout,
            config.max_outstanding,
        );
        let tokens = Tokens::new(&mut rng, now, config.token_rotation);
        let (server, limits) = match config.server.clone() {
            Some(c) => {
                let (secret, salt) = (rng.random(), rng.random());
                let limits = RateLimiter::new(c.limits.clone(), salt, now);
                (Some(Server::new(c, secret, now)), limits)
            }
            None => {
                let salt = StdRng::seed_from_u64(rng_seed ^ CLIENT_SALT_MIX).random();
                (None, RateLimiter::new(RateLimitConfig::client(), salt, now))
            }
        };
        Self {
            server,
            limits,
            store: PeerStore::new(config.store.clone()),
            votes: [IpVotes::new(config.ip_votes), IpVotes::new(config.ip_votes)],
            next_maintenance: now + config.maintenance_interval,
            config,
            id,
            rng,
            tables,
            rpc,
            lookups: BTreeMap::new(),
            next_lookup: 0,
            tokens,
            external: [None; 2],
            bootstrap_addrs: Vec::new(),
            bootstrapping: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: NodeStats::default(),
            scratch: Response::default(),
            burst: Vec::new(),
            burst_targets: Vec::new(),
        }
    }

    /// Our node id (persist it across runs).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Our external IP, once enough nodes agreed on it: the one our BEP 42
    /// id follows, IPv4 when known, else IPv6.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.external[V4].or(self.external[V6])
    }

    /// The routing table of `family`.
    pub fn table(&self, family: Family) -> &RoutingTable {
        &self.tables[match family {
            Family::V4 => V4,
            Family::V6 => V6,
        }]
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Lookups still running.
    pub fn active_lookups(&self) -> usize {
        self.lookups.len()
    }

    /// Queries waiting for an answer.
    pub fn queries_in_flight(&self) -> usize {
        self.rpc.len()
    }

    /// Peers stored for others: (swarms, peers).
    pub fn stored(&self) -> (usize, usize) {
        (self.store.swarm_count(), self.store.peer_count())
    }

    /// The verified pool of a server node.
    pub fn pool(&self) -> Option<&Pool> {
        self.server.as_ref().map(|s| &s.pool)
    }

    /// Pool changes since the last call, for incremental persistence.
    pub fn take_pool_journal(&mut self) -> Journal {
        self.server
            .as_mut()
            .map(|s| s.pool.take_journal())
            .unwrap_or_default()
    }

    /// Puts remembered nodes back into the pool. They are served at once
    /// and count as due for re-verification, so the first sweeps ping them.
    /// They pass the checks a live node does (a contactable address, not our
    /// own id, and a BEP 42 id when enforced), since the log may be damaged
    /// or may predate the node's configuration.
    pub fn load_pool(&mut self, nodes: &[NodeAddr], now: Instant) {
        let (own, enforce) = (self.id, self.config.enforce_node_id);
        if let Some(s) = &mut self.server {
            let due = now.checked_sub(s.config.pool.stale_after).unwrap_or(now);
            for node in nodes {
                if server::admissible(&own, node, false, enforce) {
                    s.pool.insert(*node, now, due);
                }
            }
            // Loading is not a change worth writing back.
            s.pool.take_journal();
            for family in [Family::V4, Family::V6] {
                s.pool.refresh_snapshot(family, now);
            }
        }
    }

    /// Nodes waiting for a verification ping (server only).
    pub fn verify_queued(&self) -> usize {
        self.server.as_ref().map_or(0, Server::queued)
    }

    /// Memory held by the rate limiter, in bytes.
    pub fn limiter_memory(&self) -> usize {
        self.limits.memory()
    }

    /// Good contacts of both tables, for persisting.
    pub fn good_nodes(&self, now: Instant) -> Vec<NodeAddr> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.entries()
                    .filter(move |e| t.state(e, now) == crate::routing::NodeState::Good)
                    .map(|e| e.node)
            })
            .collect()
    }

    // ---- outputs ----

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether [`poll_event`](Self::poll_event) has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_maintenance;
        if let Some(d) = self.rpc.next_deadline() {
            next = next.min(d);
        }
        if let Some(s) = &self.server {
            next = next.min(s.next_tick);
        }
        Some(next)
    }

    // ---- commands ----

    /// Joins the DHT through `addrs` (routers or remembered nodes): a
    /// `find_node` lookup for our own id seeded with them and with whatever
    /// the tables hold. They are remembered for re-bootstrapping when the
    /// tables empty.
    pub fn bootstrap(&mut self, now: Instant, addrs: &[SocketAddr]) {
        for addr in addrs {
            if !self.bootstrap_addrs.contains(addr) {
                self.bootstrap_addrs.push(*addr);
            }
        }
        let lookup =
            self.start_lookup(now, self.id, Purpose::Maintenance { bootstrap: true }, true);
        self.bootstrapping = Some(lookup);
    }

    /// Looks for peers of `info_hash`; they arrive as [`Event::PeersFound`].
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> LookupId {
        self.start_lookup(
            now,
            info_hash.as_node_id(),
            Purpose::GetPeers(info_hash),
            false,
        )
    }

    /// Looks for peers of `info_hash` and announces us on `port` (`None`:
    /// the port our DHT datagrams come from, BEP 5 `implied_port`; so is
    /// `Some(0)`).
    pub fn announce(&mut self, now: Instant, info_hash: InfoHash, port: Option<u16>) -> LookupId {
        // Port 0 reaches nobody; the port our datagrams come from is the
        // only sensible reading of it.
        let port = port.filter(|&p| p != 0);
        self.start_lookup(
            now,
            info_hash.as_node_id(),
            Purpose::Announce(info_hash, port),
            false,
        )
    }

    /// Looks for the nodes closest to `target`.
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> LookupId {
        self.start_lookup(now, target, Purpose::FindNode, false)
    }

    /// Stops a lookup; no more events come for it.
    pub fn cancel(&mut self, lookup: LookupId) {
        self.lookups.remove(&lookup);
    }

    /// Pings `addr`; it enters the table if it answers (BEP 5 PORT message,
    /// remembered contacts).
    pub fn add_node(&mut self, now: Instant, addr: SocketAddr) {
        self.send_query(now, addr, None, Query::Ping, Why::Ping);
    }

    fn start_lookup(
        &mut self,
        now: Instant,
        target: NodeId,
        purpose: Purpose,
        use_routers: bool,
    ) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let k = self.config.routing.bucket_size;
        let mut families = Vec::with_capacity(2);
        for (family, index) in [(Family::V4, V4), (Family::V6, V6)] {
            let has_routers = self
                .bootstrap_addrs
                .iter()
                .any(|a| family_index(a) == index);
            if !self.tables[index].is_empty() || has_routers {
                families.push(family);
            }
        }
        let mut lookup = Lookup::new(target, purpose, &families, now, self.config.max_candidates);
        for table in &self.tables {
            lookup.add_candidates(&table.closest(&target, k * 2), 0, &self.id, None);
        }
        self.lookups.insert(id, lookup);
        // Routers are asked when the tables cannot seed a full window.
        let sparse = self.tables.iter().map(RoutingTable::len).sum::<usize>() < k;
        if use_routers || sparse {
            for addr in self.bootstrap_addrs.clone() {
                let query = self.lookup_query(target, purpose, true);
                let why = Why::Lookup {
                    lookup: id,
                    seed: true,
                };
                if self.send_query(now, addr, None, query, why)
                    && let Some(l) = self.lookups.get_mut(&id)
                {
                    l.add_seed(Family::of(&addr));
                    l.queries += 1;
                }
            }
        }
        self.drive(now, id);
        id
    }

    fn lookup_query(&self, target: NodeId, purpose: Purpose, both: bool) -> Query {
        lookup_query(&self.config, target, purpose, both)
    }

    fn query_transmit(&self, to: SocketAddr, tid: TransactionId, query: Query) -> Transmit {
        query_transmit(self.id, &self.config, to, tid, query)
    }
}

fn lookup_query(config: &Config, target: NodeId, purpose: Purpose, both: bool) -> Query {
    let want = (both && config.want_ipv6).then_some(Want { n4: true, n6: true });
    match purpose {
        Purpose::GetPeers(info_hash) | Purpose::Announce(info_hash, _) => {
            Query::GetPeers { info_hash, want }
        }
        Purpose::FindNode | Purpose::Maintenance { .. } => Query::FindNode { target, want },
    }
}

fn query_transmit(
    own: NodeId,
    config: &Config,
    to: SocketAddr,
    tid: TransactionId,
    query: Query,
) -> Transmit {
    let msg = Message {
        tid,
        body: Body::Query { id: own, query },
        ip: None,
        read_only: config.read_only,
        version: config.version,
    };
    Transmit {
        to,
        bytes: msg.to_bytes(),
    }
}

impl Node {
    // ---- inputs ----

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some(decoded) = self.admit(now, from, bytes) {
            self.handle_decoded(now, from, decoded);
        }
    }

    /// Handles a burst of received datagrams, with the same effect as
    /// [`Node::handle_datagram`] on each in turn. A bootstrap node first
    /// decodes them all and starts loading the pool records their answers
    /// will read: at a million entries those loads miss the cache, and one
    /// after another they were most of a lookup's cost, where a burst's
    /// loads overlap.
    pub fn handle_datagrams<'d>(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'d [u8])>,
    ) {
        let mut burst = std::mem::take(&mut self.burst);
        burst.clear();
        for (from, bytes) in datagrams {
            if let Some(decoded) = self.admit(now, from, bytes) {
                burst.push((from, decoded));
            }
        }
        if let Some(s) = &self.server {
            let mut targets = std::mem::take(&mut self.burst_targets);
            targets.clear();
            targets.extend(burst.iter().filter_map(|(from, decoded)| {
                let family = Family::of(from);
                match &decoded.as_ref().ok()?.body {
                    Body::Query {
                        query: Query::FindNode { target, .. },
                        ..
                    } => Some((*target, family)),
                    Body::Query {
                        query: Query::GetPeers { info_hash, .. },
                        ..
                    } => Some((info_hash.as_node_id(), family)),
                    _ => None,
                }
            }));
            s.pool.warm(&targets, s.config.reply_nodes);
            self.burst_targets = targets;
        }
        for (from, decoded) in burst.drain(..) {
            self.handle_decoded(now, from, decoded);
        }
        self.burst = burst;
    }

    /// Applies the rate limit, then decodes: `None` when the datagram is
    /// dropped unread.
    fn admit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Result<Message, DecodeError>> {
        if from.port() == 0 {
            self.stats.dropped += 1;
            return None;
        }
        // A bootstrap node limits before decoding, to spend nothing on a
        // flood. A client decodes first (the decoder is bounded) and limits
        // only what it would answer: replies to its own lookups, which come
        // in bursts from the routers, must never get a router banned.
        let decoded = self.server.is_none().then(|| Message::decode(bytes));
        let a_reply = matches!(&decoded, Some(Ok(msg)) if !matches!(msg.body, Body::Query { .. }));
        if !a_reply && self.limits.admit(&from.ip(), now).is_err() {
            self.stats.rate_limited += 1;
            return None;
        }
        Some(decoded.unwrap_or_else(|| Message::decode(bytes)))
    }

    /// Handles an admitted datagram; one that did not decode gets the error
    /// answer KRPC asks for, if any.
    fn handle_decoded(
        &mut self,
        now: Instant,
        from: SocketAddr,
        decoded: Result<Message, DecodeError>,
    ) {
        let msg = match decoded {
            Ok(msg) => msg,
            Err(err) => {
                self.stats.dropped += 1;
                if let Some((tid, code, text)) = err.reply()
                    && !self.config.read_only
                {
                    self.send_error(now, from, tid, code, text);
                }
                return;
            }
        };
        // Our own id coming back is a reflection or a spoof: never useful.
        let own = match &msg.body {
            Body::Query { id, .. } => *id == self.id,
            Body::Response(r) => r.id == self.id,
            Body::Error(_) => false,
        };
        if own {
            self.stats.dropped += 1;
            return;
        }
        match msg.body {
            Body::Query { id, query } => {
                self.on_query(now, from, msg.tid, id, query, msg.read_only)
            }
            Body::Response(response) => {
                self.on_response(now, from, msg.tid, response, msg.ip, msg.read_only)
            }
            Body::Error(_) => self.on_error(now, from, &msg.tid),
        }
    }

    /// Handles every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut touched = Vec::new();
        while let Some(p) = self.rpc.poll_slow(now) {
            if let Why::Lookup { lookup, seed } = p.why
                && let Some(l) = self.lookups.get_mut(&lookup)
            {
                if l.on_timeout(&p.to, seed, false) {
                    // Same transaction id: whichever copy is answered counts once.
                    l.queries += 1;
                    let query = lookup_query(&self.config, l.target, l.purpose, false);
                    self.stats.queries_out += 1;
                    let transmit = query_transmit(self.id, &self.config, p.to, p.tid, query);
                    self.transmits.push_back(transmit);
                }
                touched.push(lookup);
            }
        }
        while let Some(p) = self.rpc.poll_expired(now) {
            self.stats.timeouts += 1;
            if let Some(id) = p.id {
                self.tables[family_index(&p.to)].failed(&id, &p.to);
            }
            if let Why::Lookup { lookup, seed } = p.why
                && let Some(l) = self.lookups.get_mut(&lookup)
            {
                l.on_timeout(&p.to, seed, true);
                touched.push(lookup);
            }
        }
        touched.dedup();
        for lookup in touched {
            self.drive(now, lookup);
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.maintenance_interval;
            self.maintain(now);
        }
        self.server_tick(now);
    }

    fn maintain(&mut self, now: Instant) {
        self.tokens.maybe_rotate(now, &mut self.rng);
        self.store.expire(now);
        let tables_empty = self.tables.iter().all(RoutingTable::is_empty);
        if tables_empty && !self.bootstrap_addrs.is_empty() && self.bootstrapping.is_none() {
            self.bootstrap(now, &[]);
            return;
        }
        for index in [V4, V6] {
            if self.tables[index].is_empty() {
                continue;
            }
            let targets = self.tables[index].refresh_targets(
                now,
                self.config.refresh_interval,
                &mut self.rng,
            );
            for target in targets {
                self.start_lookup(
                    now,
                    target,
                    Purpose::Maintenance { bootstrap: false },
                    false,
                );
            }
            for node in self.tables[index].stale_entries(now) {
                if self.rpc.pings() < self.config.max_pings {
                    self.send_query(now, node.addr, Some(node.id), Query::Ping, Why::Ping);
                }
            }
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: TransactionId,
        response: Response,
        ip: Option<SocketAddr>,
        read_only: bool,
    ) {
        let node = NodeAddr {
            id: response.id,
            addr: from,
        };
        if Server::is_cookie(&tid) && self.server_cookie_reply(now, node, &tid, read_only) {
            return;
        }
        let Some(pending) = self.rpc.take(&tid, &from) else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.responses_in += 1;
        if pending.id.is_none_or(|e| e == node.id) {
            self.server_confirmed(node, read_only, now);
        }
        let id_ok = !self.config.enforce_node_id || secure_id::verify(&node.id, &from.ip());
        if id_ok && node.id != self.id {
            let table = &mut self.tables[family_index(&from)];
            if let Some(expected) = pending.id.filter(|e| *e != node.id) {
                // The contact we knew answers with another id: forget the old one.
                table.remove(&expected);
            }
            table.insert(node, now);
        }
        if let Some(ip) = ip {
            self.vote_ip(now, ip.ip(), from.ip());
        }
        if let Why::Lookup { lookup, seed } = pending.why {
            self.on_lookup_response(now, lookup, seed, &pending, node, response, id_ok);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_lookup_response(
        &mut self,
        now: Instant,
        id: LookupId,
        seed: bool,
        pending: &Pending,
        node: NodeAddr,
        mut response: Response,
        id_ok: bool,
    ) {
        // A node names only addresses as wide as its own: a public one
        // naming loopback or a private network would aim our queries and
        // our download's dials at our own machine and neighbours.
        let from = node.addr.ip();
        response.nodes.retain(|n| may_name(from, n.addr.ip()));
        response.nodes6.retain(|n| may_name(from, n.addr.ip()));
        response.values.retain(|peer| may_name(from, peer.ip()));
        let own = self.id;
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let trusted = id_ok && node.id != own && pending.id.is_none_or(|e| e == node.id);
        let depth = lookup.on_response(node, seed, response.token, trusted);
        // An answer that does not count does not steer the search either:
        // an impostor's contacts would be made up to look close. Routers
        // (seeds) are not struck out: their lists are all a bootstrap has.
        if trusted {
            let via = (!seed).then_some(node.addr);
            lookup.add_candidates(&response.nodes, depth, &own, via);
            lookup.add_candidates(&response.nodes6, depth, &own, via);
        }
        let is_peer_lookup = matches!(lookup.purpose, Purpose::GetPeers(_) | Purpose::Announce(..));
        if is_peer_lookup && !response.values.is_empty() {
            let peers = lookup.new_peers(&response.values);
            if !peers.is_empty() {
                self.events
                    .push_back(Event::PeersFound { lookup: id, peers });
            }
        }
        self.server_learned(&response.nodes, now);
        self.server_learned(&response.nodes6, now);
        self.drive(now, id);
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, tid: &TransactionId) {
        let Some(pending) = self.rpc.take(tid, &from) else {
            self.stats.dropped += 1;
            return;
        };
        if let Why::Lookup { lookup, seed } = pending.why
            && let Some(l) = self.lookups.get_mut(&lookup)
        {
            l.on_error(&from, seed);
            self.drive(now, lookup);
        }
    }

    /// Counts `voter`'s report of our address. A dual-stack node has an
    /// address in each family but one id; it follows the IPv4 address, so
    /// that the two families' answers do not take turns remaking it.
    fn vote_ip(&mut self, now: Instant, reported: IpAddr, voter: IpAddr) {
        // A voter sees us from its own family; another is a lie.
        if reported.is_ipv4() != voter.is_ipv4() {
            return;
        }
        let family = family_index(&SocketAddr::new(voter, 0));
        let Some(ip) = self.votes[family].vote(reported, voter) else {
            return;
        };
        self.external[family] = Some(ip);
        self.events.push_back(Event::ExternalIp { ip });
        if self.external_ip() == Some(ip) && !secure_id::verify(&self.id, &ip) {
            self.id = secure_id::generate(&ip, &mut self.rng);
            for table in &mut self.tables {
                *table = table.rebuilt(self.id, now);
            }
            self.events.push_back(Event::IdChanged { id: self.id });
        }
    }

    /// Sends queries the lookup's rules allow, and finishes it when done.
    fn drive(&mut self, now: Instant, id: LookupId) {
        let alpha = self.config.alpha;
        let k = self.config.routing.bucket_size;
        loop {
            let Some(lookup) = self.lookups.get_mut(&id) else {
                return;
            };
            let Some(node) = lookup.next_query(alpha, k) else {
                break;
            };
            let (target, purpose) = (lookup.target, lookup.purpose);
            let query = self.lookup_query(target, purpose, false);
            let why = Why::Lookup {
                lookup: id,
                seed: false,
            };
            let sent = self.send_query(now, node.addr, Some(node.id), query, why);
            if let Some(lookup) = self.lookups.get_mut(&id) {
                if sent {
                    lookup.queries += 1;
                } else {
                    lookup.on_error(&node.addr, false);
                }
            }
        }
        if self.lookups.get(&id).is_some_and(|l| l.is_done(k)) {
            self.finish(now, id);
        }
    }

    fn finish(&mut self, now: Instant, id: LookupId) {
        let Some(lookup) = self.lookups.remove(&id) else {
            return;
        };
        let k = self.config.routing.bucket_size;
        match lookup.purpose {
            Purpose::Maintenance { bootstrap } => {
                if bootstrap && self.bootstrapping == Some(id) {
                    self.bootstrapping = None;
                    let nodes = self.tables.iter().map(RoutingTable::len).sum();
                    self.events.push_back(Event::Bootstrapped { nodes });
                }
                return;
            }
            Purpose::Announce(info_hash, port) => {
                let mut nodes = 0;
                for (node, token) in lookup.results(k) {
                    let Some(token) = token else { continue };
                    let query = Query::AnnouncePeer {
                        info_hash,
                        port: port.unwrap_or(0),
                        implied_port: port.is_none(),
                        token,
                    };
                    if self.send_query(now, node.addr, Some(node.id), query, Why::Announce) {
                        nodes += 1;
                    }
                }
                self.events.push_back(Event::Announced {
                    lookup: id,
                    info_hash,
                    nodes,
                });
            }
            Purpose::GetPeers(_) | Purpose::FindNode => {}
        }
        self.events.push_back(Event::LookupDone {
            lookup: id,
            stats: lookup.stats(now, k),
        });
    }

    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        query: Query,
        why: Why,
    ) -> bool {
        let Some(tid) = self.rpc.start(now, to, id, why, &mut self.rng) else {
            return false;
        };
        self.stats.queries_out += 1;
        let transmit = self.query_transmit(to, tid, query);
        self.transmits.push_back(transmit);
        true
    }

    /// An error answer, within the reply-byte budget like any answer.
    fn send_error(
        &mut self,
        now: Instant,
        to: SocketAddr,
        tid: TransactionId,
        code: ErrorCode,
        text: &str,
    ) {
        let msg = Message {
            tid,
            body: Body::Error(crate::krpc::ErrorBody {
                code: code.code(),
                message: text.to_owned(),
            }),
            ip: Some(to),
            read_only: false,
            version: self.config.version,
        };
        let bytes = msg.to_bytes();
        if !self.limits.admit_reply(bytes.len(), now) {
            self.stats.rate_limited += 1;
            return;
        }
        self.stats.errors_out += 1;
        self.stats.replies_out += 1;
        self.transmits.push_back(Transmit { to, bytes });
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
