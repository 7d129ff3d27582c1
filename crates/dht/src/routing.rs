//! The Kademlia routing table of one address family.
//!
//! Layout: bucket `i` (for `i` below the last) holds the nodes whose id shares
//! exactly `i` leading bits with ours; the last bucket holds everything that
//! shares at least as many. Only the last bucket ever splits (it is the one
//! covering our own id), so the table has at most 160 buckets and, in a
//! network of `n` nodes, about `k · log2(n)` entries.
//!
//! That layout makes [`RoutingTable::closest`] cheap: from the bucket a target
//! falls in, the buckets group into bands whose distances to the target never
//! overlap, so only the bands needed for `n` results are collected and sorted.
//!
//! The table decides nothing about trust: the node inserts a contact only after
//! it answered a query of ours from the address we sent it to.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::{NodeAddr, NodeId, host_of};
use rand::{Rng, RngExt};

use crate::secure_id::is_local;

/// Knobs of a routing table.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// K: entries per bucket (and replacement-cache size).
    pub bucket_size: usize,
    /// Consecutive failed queries after which a node is removed.
    pub max_failures: u8,
    /// A node that has not answered for this long is questionable.
    pub questionable_after: Duration,
    /// At most one entry per public IPv4 address or IPv6 /64 (local
    /// addresses are exempt), as libtorrent restricts its table.
    pub restrict_ips: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            bucket_size: 8,
            max_failures: 2,
            questionable_after: Duration::from_secs(15 * 60),
            restrict_ips: true,
        }
    }
}

/// One contact with its liveness record.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Id and address.
    pub node: NodeAddr,
    /// When it last answered one of our queries.
    pub last_reply: Instant,
    /// Failed queries since the last answer.
    pub failures: u8,
}

/// How much we trust an entry right now (BEP 5 vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Answered recently and has not failed since.
    Good,
    /// Silent for a while, or failed once: worth a ping.
    Questionable,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A new entry in a bucket.
    Added,
    /// An existing entry refreshed.
    Refreshed,
    /// The bucket is full of live nodes: kept as a replacement candidate.
    Replacement,
    /// Refused: our own id, a known id at another address, or a second node on one public IP.
    Rejected,
}

#[derive(Debug, Clone)]
struct Bucket {
    entries: Vec<Entry>,
    replacements: Vec<Entry>,
    last_changed: Instant,
}

/// A routing table for one address family.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: NodeId,
    config: RoutingConfig,
    buckets: Vec<Bucket>,
}

/// Common leading bits of two ids; 160 when equal.
fn common_prefix(a: &NodeId, b: &NodeId) -> usize {
    a.distance(b).leading_zeros().unwrap_or(160)
}

impl RoutingTable {
    /// An empty table (one bucket covering the whole space) around `own`.
    pub fn new(own: NodeId, config: RoutingConfig, now: Instant) -> Self {
        Self {
            own,
            config,
            buckets: vec![Bucket {
                entries: Vec::new(),
                replacements: Vec::new(),
                last_changed: now,
            }],
        }
    }

    /// Our own id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// The configuration in force.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// Number of live entries (replacements excluded).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.entries.is_empty())
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        common_prefix(&self.own, id).min(self.buckets.len() - 1)
    }

    /// All entries, bucket by bucket.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The entry for `id`, if present.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.buckets[self.bucket_of(id)]
            .entries
            .iter()
            .find(|e| e.node.id == *id)
    }

    /// The state of an entry at `now`.
    pub fn state(&self, entry: &Entry, now: Instant) -> NodeState {
        if entry.failures == 0
            && now.saturating_duration_since(entry.last_reply) < self.config.questionable_after
        {
            NodeState::Good
        } else {
            NodeState::Questionable
        }
    }

    fn ip_taken(&self, ip: IpAddr, id: &NodeId) -> bool {
        let host = host_of(ip);
        self.config.restrict_ips
            && !is_local(&ip)
            && self
                .buckets
                .iter()
                .flat_map(|b| b.entries.iter().chain(&b.replacements))
                .any(|e| host_of(e.node.addr.ip()) == host && e.node.id != *id)
    }

    /// Whether inserting `node` would add it or refresh it now: the node uses
    /// this to decide whether an unknown querier is worth a verifying ping.
    pub fn wants(&self, node: &NodeAddr) -> bool {
        if node.id == self.own || self.ip_taken(node.addr.ip(), &node.id) {
            return false;
        }
        let index = self.bucket_of(&node.id);
        let bucket = &self.buckets[index];
        if bucket.entries.iter().any(|e| e.node.id == node.id) {
            return false;
        }
        bucket.entries.len() < self.config.bucket_size
            || (index == self.buckets.len() - 1 && index < 159)
    }

    /// Records that `node` answered a query of ours at `now`.
    pub fn insert(&mut self, node: NodeAddr, now: Instant) -> Insert {
        if node.id == self.own {
            return Insert::Rejected;
        }
        // Bounded: each split moves the target one bucket deeper, at most 160.
        loop {
            let index = self.bucket_of(&node.id);
            let k = self.config.bucket_size;
            let last = self.buckets.len() - 1;
            let bucket = &mut self.buckets[index];
            if let Some(entry) = bucket.entries.iter_mut().find(|e| e.node.id == node.id) {
                if entry.node.addr != node.addr {
                    return Insert::Rejected;
                }
                entry.last_reply = now;
                entry.failures = 0;
                bucket.last_changed = now;
                return Insert::Refreshed;
            }
            if self.ip_taken(node.addr.ip(), &node.id) {
                return Insert::Rejected;
            }
            let bucket = &mut self.buckets[index];
            let entry = Entry {
                node,
                last_reply: now,
                failures: 0,
            };
            if bucket.entries.len() < k {
                bucket.replacements.retain(|e| e.node.id != node.id);
                bucket.entries.push(entry);
                bucket.last_changed = now;
                return Insert::Added;
            }
            if index == last && last < 159 {
                self.split_last(now);
                continue;
            }
            // Full of nodes that still answer: remember it for when one fails.
            if let Some(r) = bucket
                .replacements
                .iter_mut()
                .find(|e| e.node.id == node.id)
            {
                *r = entry;
            } else {
                if bucket.replacements.len() >= k {
                    bucket.replacements.remove(0);
                }
                bucket.replacements.push(entry);
            }
            return Insert::Replacement;
        }
    }

    fn split_last(&mut self, now: Instant) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let deeper = |e: &Entry| common_prefix(&own, &e.node.id) > depth;
        let last = &mut self.buckets[depth];
        let (moved, kept): (Vec<Entry>, Vec<Entry>) = last.entries.drain(..).partition(deeper);
        let (moved_r, kept_r): (Vec<Entry>, Vec<Entry>) =
            last.replacements.drain(..).partition(deeper);
        last.entries = kept;
        last.replacements = kept_r;
        self.buckets.push(Bucket {
            entries: moved,
            replacements: moved_r,
            last_changed: now,
        });
    }

    /// Records that a query to `id` at `addr` got no answer. After
    /// `max_failures` in a row the entry is dropped and the freshest
    /// replacement takes its place. Returns whether the entry was removed.
    pub fn failed(&mut self, id: &NodeId, addr: &SocketAddr) -> bool {
        let max = self.config.max_failures;
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        bucket.replacements.retain(|e| e.node.id != *id);
        let Some(pos) = bucket
            .entries
            .iter()
            .position(|e| e.node.id == *id && e.node.addr == *addr)
        else {
            return false;
        };
        let entry = &mut bucket.entries[pos];
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < max {
            return false;
        }
        bucket.entries.swap_remove(pos);
        if let Some(replacement) = bucket.replacements.pop() {
            bucket.entries.push(replacement);
        }
        true
    }

    /// Removes `id` outright (for example after it changed its id or address).
    pub fn remove(&mut self, id: &NodeId) {
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        bucket.entries.retain(|e| e.node.id != *id);
        bucket.replacements.retain(|e| e.node.id != *id);
    }

    /// The `n` entries closest to `target`, nearest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<NodeAddr> {
        let mut out = Vec::with_capacity(n);
        self.closest_into(target, n, &mut out);
        out
    }

    /// Like [`closest`](Self::closest) but reuses `out` (cleared first), for
    /// the serving hot path.
    pub fn closest_into(&self, target: &NodeId, n: usize, out: &mut Vec<NodeAddr>) {
        out.clear();
        if n == 0 {
            return;
        }
        let start = self.bucket_of(target);
        // Band 1: the target's own bucket (shares most bits with the target).
        // Band 2: every deeper bucket; their distances all have top bit `start`.
        // Then each shallower bucket alone, nearest first.
        let mut sorted_upto = 0;
        let mut take_band = |out: &mut Vec<NodeAddr>, range: std::ops::Range<usize>| {
            for bucket in &self.buckets[range] {
                out.extend(bucket.entries.iter().map(|e| e.node));
            }
            out[sorted_upto..].sort_unstable_by_key(|node| node.id.distance(target));
            sorted_upto = out.len();
            out.len() >= n
        };
        if !take_band(out, start..start + 1) && !take_band(out, start + 1..self.buckets.len()) {
            for i in (0..start).rev() {
                if take_band(out, i..i + 1) {
                    break;
                }
            }
        }
        out.truncate(n);
    }

    /// Buckets not changed for `interval`, each with a random target inside
    /// it; the bucket counts as changed from now on, so a refresh is launched
    /// once per interval.
    pub fn refresh_targets(
        &mut self,
        now: Instant,
        interval: Duration,
        rng: &mut impl Rng,
    ) -> Vec<NodeId> {
        let mut targets = Vec::new();
        for index in 0..self.buckets.len() {
            if now.saturating_duration_since(self.buckets[index].last_changed) >= interval {
                self.buckets[index].last_changed = now;
                targets.push(self.random_id_in(index, rng));
            }
        }
        targets
    }

    /// A random id that lands in bucket `index`.
    pub fn random_id_in(&self, index: usize, rng: &mut impl Rng) -> NodeId {
        let mut id: [u8; 20] = rng.random();
        let own = self.own.0;
        let last = index == self.buckets.len() - 1;
        // Copy our first `index` bits; for an inner bucket flip bit `index`.
        for bit in 0..=index.min(159) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let own_bit = own[byte] & mask;
            let want = if bit == index && !last {
                own_bit ^ mask
            } else if bit == index {
                id[byte] & mask
            } else {
                own_bit
            };
            id[byte] = (id[byte] & !mask) | want;
        }
        NodeId(id)
    }

    /// For each bucket, the entry that has been silent longest if it is
    /// questionable: the node pings these to keep the table fresh.
    pub fn stale_entries(&self, now: Instant) -> Vec<NodeAddr> {
        self.buckets
            .iter()
            .filter_map(|b| {
                b.entries
                    .iter()
                    .filter(|e| self.state(e, now) == NodeState::Questionable)
                    .min_by_key(|e| e.last_reply)
                    .map(|e| e.node)
            })
            .collect()
    }

    /// A table around `new_id` holding the same contacts (after our id changed).
    pub fn rebuilt(&self, new_id: NodeId, now: Instant) -> RoutingTable {
        let mut table = RoutingTable::new(new_id, self.config.clone(), now);
        for entry in self.entries() {
            table.insert(entry.node, entry.last_reply);
        }
        table
    }

    /// Checks the structural invariants; used by tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (i, bucket) in self.buckets.iter().enumerate() {
            if bucket.entries.len() > self.config.bucket_size {
                return Err(format!("bucket {i} holds {}", bucket.entries.len()));
            }
            if bucket.replacements.len() > self.config.bucket_size {
                return Err(format!("bucket {i} caches {}", bucket.replacements.len()));
            }
            for e in &bucket.entries {
                if e.node.id == self.own {
                    return Err("own id in table".into());
                }
                if !seen.insert(e.node.id) {
                    return Err(format!("duplicate {}", e.node.id));
                }
                if self.bucket_of(&e.node.id) != i {
                    return Err(format!("{} in bucket {i}", e.node.id));
                }
            }
        }
        if self.buckets.is_empty() || self.buckets.len() > 160 {
            return Err(format!("{} buckets", self.buckets.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
