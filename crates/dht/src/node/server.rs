//! The bootstrap-node side of [`Node`], on when [`Config::server`] is set.
//!
//! * **Pool**: nodes that answered us from the address we queried enter a
//!   large [`Pool`]; `find_node` and `get_peers` are answered from it with
//!   `reply_nodes` contacts (16, as the public routers send) nearest the
//!   target.
//! * **Stateless verification**: the pool is fed by pings whose transaction
//!   id is a keyed cookie — a tag, a coarse epoch and a truncated SHA-1 of a
//!   secret, the epoch and the destination address. An answer proves the
//!   address answered a ping we sent within the last few minutes, and costs
//!   no per-ping state, so a million pings in flight cost nothing.
//! * **When to verify**: nodes learned from answers to our lookups are pinged
//!   at once; a node that merely queried us is pinged `verify_delay` later
//!   (default 90 s, as mldht does), so a node behind a NAT is not admitted
//!   through the pinhole its own query opened. Nodes that answer the node's
//!   ordinary queries (bootstrap, table upkeep, the immediate ping of an
//!   unknown querier the routing table has room for) enter the pool at once:
//!   that is what lets a private swarm form through a freshly started node.
//! * **Upkeep**: every tick a slice of the pool is swept; entries not
//!   confirmed for `stale_after` are pinged again, those silent for
//!   `expire_after` are removed. While the pool has room, a random
//!   `find_node` lookup every `crawl_interval` discovers more nodes.
//! * **Limits**: every datagram passes the node's [`crate::ratelimit::RateLimiter`] first; answers
//!   pass its byte budget. Read-only (BEP 43) nodes and nodes whose id does
//!   not match their public IP (BEP 42) never enter the pool.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{NodeAddr, NodeId};
use rand::RngExt;
use sha1::{Digest, Sha1};

use super::{Node, Purpose, query_transmit};
use crate::krpc::{Query, TransactionId};
use crate::pool::{Pool, PoolConfig};
use crate::ratelimit::RateLimitConfig;
use crate::secure_id;

/// Knobs of a bootstrap node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Pool bounds.
    pub pool: PoolConfig,
    /// Abuse limits.
    pub limits: RateLimitConfig,
    /// Contacts per `find_node`/`get_peers` answer and family (16 × 26 bytes
    /// = 416 for IPv4; halved for IPv6 when both families are asked for, to
    /// stay under 1024 bytes).
    pub reply_nodes: usize,
    /// Delay before pinging a node that only queried us.
    pub verify_delay: Duration,
    /// Most nodes waiting for a verification ping.
    pub verify_queue: usize,
    /// Verification pings per second.
    pub verify_rate: f64,
    /// Pool entries examined per family and tick.
    pub sweep_per_tick: usize,
    /// Period of discovery lookups while the pool has room.
    pub crawl_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            pool: PoolConfig::default(),
            limits: RateLimitConfig::default(),
            reply_nodes: 16,
            verify_delay: Duration::from_secs(90),
            verify_queue: 1 << 16,
            verify_rate: 1000.0,
            sweep_per_tick: 2000,
            crawl_interval: Duration::from_secs(10),
        }
    }
}

/// Period of the server's housekeeping.
const TICK: Duration = Duration::from_millis(250);
/// Cookie epochs are this long; an answer is accepted for 2–3 epochs.
const EPOCH: Duration = Duration::from_secs(60);
const COOKIE_TAG: u8 = b'c';
const COOKIE_LEN: usize = 7;

/// Server state held by the node.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) config: ServerConfig,
    pub(super) pool: Pool,
    /// Nodes to ping as soon as the budget allows.
    ready: VecDeque<NodeAddr>,
    /// Queriers to ping once their delay has passed (FIFO = due order).
    delayed: VecDeque<(Instant, NodeAddr)>,
    queued: HashSet<SocketAddr>,
    secret: [u8; 16],
    epoch_start: Instant,
    pub(super) next_tick: Instant,
    last_tick: Instant,
    credit: f64,
    next_crawl: Instant,
    scratch: Vec<NodeAddr>,
}

impl Server {
    pub(super) fn new(config: ServerConfig, secret: [u8; 16], now: Instant) -> Self {
        Self {
            pool: Pool::new(config.pool.clone(), now),
            config,
            ready: VecDeque::new(),
            delayed: VecDeque::new(),
            queued: HashSet::new(),
            secret,
            epoch_start: now,
            next_tick: now,
            last_tick: now,
            credit: 0.0,
            next_crawl: now,
            scratch: Vec::new(),
        }
    }

    fn epoch(&self, now: Instant) -> u8 {
        (now.saturating_duration_since(self.epoch_start).as_secs() / EPOCH.as_secs()) as u8
    }

    fn mac(&self, to: &SocketAddr, epoch: u8) -> [u8; COOKIE_LEN] {
        let mut h = Sha1::new();
        h.update(self.secret);
        h.update([epoch]);
        match to {
            SocketAddr::V4(a) => h.update(a.ip().octets()),
            SocketAddr::V6(a) => h.update(a.ip().octets()),
        }
        h.update(to.port().to_be_bytes());
        let digest = h.finalize();
        let mut out = [0u8; COOKIE_LEN];
        out[0] = COOKIE_TAG;
        out[1] = epoch;
        out[2..].copy_from_slice(&digest[..COOKIE_LEN - 2]);
        out
    }

    fn cookie(&self, to: &SocketAddr, now: Instant) -> Option<TransactionId> {
        TransactionId::new(&self.mac(to, self.epoch(now)))
    }

    /// Whether `tid` is one of our cookies (valid or not).
    pub(super) fn is_cookie(tid: &TransactionId) -> bool {
        let t = tid.as_slice();
        t.len() == COOKIE_LEN && t[0] == COOKIE_TAG
    }

    fn cookie_valid(&self, tid: &TransactionId, from: &SocketAddr, now: Instant) -> bool {
        let t = tid.as_slice();
        Self::is_cookie(tid)
            && self.epoch(now).wrapping_sub(t[1]) <= 2
            && self.mac(from, t[1])[..] == *t
    }

    /// Queues `node` for a ping (`due` None: as soon as possible).
    fn enqueue(&mut self, node: NodeAddr, due: Option<Instant>, now: Instant) {
        let half = self.config.verify_queue / 2;
        let full = match due {
            None => self.ready.len() >= half,
            Some(_) => self.delayed.len() >= half,
        };
        if full || self.queued.contains(&node.addr) || self.pool.is_fresh(&node, now) {
            return;
        }
        self.queued.insert(node.addr);
        match due {
            None => self.ready.push_back(node),
            Some(due) => self.delayed.push_back((due, node)),
        }
    }

    /// Nodes waiting for a verification ping.
    pub(super) fn queued(&self) -> usize {
        self.queued.len()
    }
}

/// Whether a node may enter the pool.
pub(super) fn admissible(own: &NodeId, node: &NodeAddr, read_only: bool, enforce: bool) -> bool {
    !read_only
        && node.id != *own
        && lodestone_core::compact::is_contactable(&node.addr)
        && (!enforce || secure_id::verify(&node.id, &node.addr.ip()))
}

impl Node {
    /// A node answered one of our ordinary queries: it is good at once.
    pub(super) fn server_confirmed(&mut self, node: NodeAddr, read_only: bool, now: Instant) {
        let (own, enforce) = (self.id, self.config.enforce_node_id);
        if let Some(s) = &mut self.server
            && admissible(&own, &node, read_only, enforce)
        {
            s.pool.insert(node, now, now);
        }
    }

    /// An answer whose transaction id looks like a cookie. Returns whether it
    /// was one of ours.
    pub(super) fn server_cookie_reply(
        &mut self,
        now: Instant,
        node: NodeAddr,
        tid: &TransactionId,
        read_only: bool,
    ) -> bool {
        let (own, enforce) = (self.id, self.config.enforce_node_id);
        let Some(s) = &mut self.server else {
            return false;
        };
        if !s.cookie_valid(tid, &node.addr, now) {
            return false;
        }
        self.stats.responses_in += 1;
        if admissible(&own, &node, read_only, enforce) {
            s.pool.insert(node, now, now);
        }
        true
    }

    /// Someone queried us: verify it later if it is not in the pool.
    pub(super) fn server_queried(&mut self, node: NodeAddr, read_only: bool, now: Instant) {
        let (own, enforce) = (self.id, self.config.enforce_node_id);
        if let Some(s) = &mut self.server
            && admissible(&own, &node, read_only, enforce)
        {
            let due = now + s.config.verify_delay;
            s.enqueue(node, Some(due), now);
        }
    }

    /// Contacts learned from an answer to our lookup: verify them soon.
    pub(super) fn server_learned(&mut self, nodes: &[NodeAddr], now: Instant) {
        let (own, enforce) = (self.id, self.config.enforce_node_id);
        if let Some(s) = &mut self.server {
            for node in nodes {
                if admissible(&own, node, false, enforce) {
                    s.enqueue(*node, None, now);
                }
            }
        }
    }

    /// Fills `out` from the pool; false when the pool has nothing of `family`
    /// (or this is not a server), so the caller falls back to the table.
    pub(super) fn server_closest(
        &self,
        target: &NodeId,
        family: Family,
        n: usize,
        querier: &NodeId,
        out: &mut Vec<NodeAddr>,
    ) -> bool {
        let Some(s) = &self.server else {
            return false;
        };
        s.pool.closest_into(target, family, n, querier, out);
        !out.is_empty()
    }

    /// Housekeeping: sweep a slice of the pool, send the verification pings
    /// the budget allows, start a discovery lookup when due.
    pub(super) fn server_tick(&mut self, now: Instant) {
        let own = self.id;
        let Some(s) = &mut self.server else {
            return;
        };
        if now < s.next_tick {
            return;
        }
        let elapsed = now.saturating_duration_since(s.last_tick).as_secs_f64();
        s.last_tick = now;
        s.next_tick = now + TICK;
        s.credit = (s.credit + elapsed * s.config.verify_rate).min(s.config.verify_rate.max(1.0));
        let mut recheck = std::mem::take(&mut s.scratch);
        recheck.clear();
        for family in [Family::V4, Family::V6] {
            s.pool
                .sweep(family, s.config.sweep_per_tick, now, &mut recheck);
        }
        for node in recheck.drain(..) {
            s.enqueue(node, None, now);
        }
        s.scratch = recheck;
        let mut pings = Vec::new();
        while s.credit >= 1.0 {
            let node = if let Some(node) = s.ready.pop_front() {
                node
            } else if s.delayed.front().is_some_and(|(due, _)| *due <= now) {
                match s.delayed.pop_front() {
                    Some((_, node)) => node,
                    None => break,
                }
            } else {
                break;
            };
            s.queued.remove(&node.addr);
            // Confirmed meanwhile (it answered another query of ours).
            if s.pool.is_fresh(&node, now) {
                continue;
            }
            if let Some(tid) = s.cookie(&node.addr, now) {
                s.credit -= 1.0;
                pings.push((node.addr, tid));
            }
        }
        let crawl = now >= s.next_crawl
            && s.pool.len(Family::V4) + s.pool.len(Family::V6) < s.config.pool.capacity;
        if crawl {
            s.next_crawl = now + s.config.crawl_interval;
        }
        for (to, tid) in pings {
            self.stats.queries_out += 1;
            let transmit = query_transmit(own, &self.config, to, tid, Query::Ping);
            self.transmits.push_back(transmit);
        }
        if crawl && self.tables.iter().any(|t| !t.is_empty()) {
            let target = NodeId(self.rng.random());
            self.start_lookup(
                now,
                target,
                Purpose::Maintenance { bootstrap: false },
                false,
            );
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
