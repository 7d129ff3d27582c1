//! The verified-node pool of a bootstrap node.
//!
//! A routing table keeps a few hundred contacts, shaped around our own id; a
//! bootstrap node wants to hand every newcomer good contacts close to
//! *whatever* target it asks for. The pool keeps up to `capacity` nodes per
//! family that answered us from the address we queried, ordered by id in a
//! `BTreeMap`, so the contacts nearest a target are found by walking a few
//! entries either side of it (numeric neighbours share the longest prefix
//! with the target, which is what XOR closeness rewards).
//!
//! Bounds: `capacity` entries per family; at most `per_ip` ids per public
//! IPv4 address or IPv6 /64, the least a host is given (one host cannot fill
//! the pool with made-up ids, nor with the addresses of its /64); when full, a new node
//! may only replace its id-successor if that one has not been confirmed for
//! `stale_after`, so the pool stays spread over the keyspace and favours
//! nodes that keep answering.
//!
//! Every addition and removal is journalled (bounded) so the state can be
//! persisted incrementally; see [`Pool::take_journal`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::time::{Duration, Instant};

use lodestone_core::compact::{self, Family};
use lodestone_core::{NodeAddr, NodeId, host_of};

use crate::secure_id::is_local;

/// Bounds of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most nodes kept per address family.
    pub capacity: usize,
    /// Most ids per public IPv4 address or IPv6 /64 (local addresses are
    /// exempt).
    pub per_ip: u16,
    /// A node not confirmed for this long may be replaced or re-verified.
    pub stale_after: Duration,
    /// A node not confirmed for this long is removed.
    pub expire_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            capacity: 1_000_000,
            per_ip: 4,
            stale_after: Duration::from_secs(30 * 60),
            expire_after: Duration::from_secs(2 * 60 * 60),
        }
    }
}

/// One change to the pool, for incremental persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A node entered (or moved to a new address).
    Added(NodeAddr),
    /// The node with this id left the pool of this family.
    Removed(NodeId, Family),
}

/// The journal handed to the persister.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    /// The journal overflowed: rewrite everything from [`Pool::nodes`].
    pub rewrite: bool,
    /// Changes since the last [`Pool::take_journal`], oldest first.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: SocketAddr,
    /// Seconds since the pool's epoch of the last confirmation.
    confirmed: u32,
}

#[derive(Debug, Default)]
struct FamilyPool {
    by_id: BTreeMap<NodeId, Entry>,
    /// Ids per host ([`host_of`]).
    per_ip: HashMap<IpAddr, u16>,
    /// Where the maintenance sweep continues.
    cursor: Option<NodeId>,
    /// Changed since the snapshot was taken.
    dirty: bool,
    snapshot: Snapshot,
}

/// Pools smaller than this are served straight from the tree (it fits in
/// cache); larger ones from the [`Snapshot`].
const SNAPSHOT_MIN: usize = 4096;
/// Bits of id prefix in the snapshot's radix index.
const RADIX_BITS: u32 = 16;
/// Most snapshot neighbours ranked for one answer (`2 × (n + 2)` for `n`
/// up to 30 contacts, more than fit in a datagram).
const MAX_CANDIDATES: usize = 64;
/// The low bits of a ranked candidate that hold its offset in the window.
const OFFSET_MASK: u64 = MAX_CANDIDATES as u64 - 1;
const _: () = assert!(MAX_CANDIDATES.is_power_of_two());
/// Bytes per cache line: [`Pool::warm`] reads one byte of each.
const CACHE_LINE: usize = 64;

/// A flat copy of a large pool: the compact node infos (BEP 5's 26 bytes,
/// BEP 32's 38), sorted by id, end to end in one buffer, with a radix index
/// from the top [`RADIX_BITS`] of an id to its position. A lookup is one
/// index read, a short binary search over the records of one bucket, and
/// one contiguous window of about 1 KB, where a B-tree walk takes a cache
/// miss per level (about 6 µs per query at 200 000 entries). So its cost
/// does not grow with the pool, and the pool costs a third of the memory it
/// would as `NodeAddr`s. Rebuilt at most once per second when the pool
/// changed, so it may lag the tree by that much.
#[derive(Debug, Default)]
struct Snapshot {
    /// Bytes per record: [`Family::node_len`].
    stride: usize,
    /// The records, ascending by id.
    records: Vec<u8>,
    /// `index[p]`: first position whose id prefix is ≥ `p`; one extra entry.
    index: Vec<u32>,
    taken: Option<Instant>,
}

impl Snapshot {
    fn rebuild(&mut self, by_id: &BTreeMap<NodeId, Entry>, family: Family, now: Instant) {
        self.taken = Some(now);
        self.stride = family.node_len();
        self.records.clear();
        self.index.clear();
        if by_id.len() < SNAPSHOT_MIN {
            self.records.shrink_to_fit();
            self.index.shrink_to_fit();
            return;
        }
        self.records.reserve(by_id.len() * self.stride);
        for (id, e) in by_id {
            compact::write_node(
                &NodeAddr {
                    id: *id,
                    addr: e.addr,
                },
                &mut self.records,
            );
        }
        let slots = 1usize << RADIX_BITS;
        self.index.reserve(slots + 1);
        let mut pos = 0usize;
        for prefix in 0..slots {
            while pos < self.len() && radix(self.id(pos)) < prefix {
                pos += 1;
            }
            self.index.push(pos as u32);
        }
        self.index.push(self.len() as u32);
    }

    fn len(&self) -> usize {
        self.records.len() / self.stride.max(1)
    }

    fn record(&self, i: usize) -> &[u8] {
        &self.records[i * self.stride..(i + 1) * self.stride]
    }

    /// The id bytes of record `i`.
    fn id(&self, i: usize) -> &[u8; 20] {
        self.record(i)
            .first_chunk()
            // Invariant: a record is 26 or 38 bytes, the id its first 20.
            .unwrap_or(&[0; 20])
    }

    /// The node of record `i`.
    fn node(&self, i: usize) -> Option<NodeAddr> {
        let peer = &self.record(i)[20..];
        let addr = match *peer {
            [a, b, c, d, p, q] => SocketAddr::from(([a, b, c, d], u16::from_be_bytes([p, q]))),
            _ => compact::decode_peer(peer)?,
        };
        Some(NodeAddr {
            id: NodeId(*self.id(i)),
            addr,
        })
    }

    /// Position of the first record with id ≥ `target`.
    fn lower_bound(&self, target: &NodeId) -> usize {
        let p = radix(&target.0);
        let (lo, hi) = (self.index[p] as usize, self.index[p + 1] as usize);
        // A bucket holds about len / 65 536 records (15 at a million): a
        // forward scan reads them in address order, which the prefetcher
        // follows, where a binary search waits for each probe's cache miss
        // in turn. Keys compare as integers; whole ids only on a tie.
        let k = key(&target.0);
        (lo..hi)
            .find(|&i| {
                let id = self.id(i);
                let ik = key(id);
                ik > k || (ik == k && id >= &target.0)
            })
            .unwrap_or(hi)
    }
}

/// The top 64 bits of an id: they order a pool as well as all 160 bits
/// unless two ids share them, which the full comparison then settles.
fn key(id: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_be_bytes(b)
}

/// The XOR distance of two ids, for the rare tie in their top 64 bits.
fn distance(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn radix(id: &[u8; 20]) -> usize {
    (usize::from(id[0]) << 8) | usize::from(id[1])
}

/// What [`Pool::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolInsert {
    /// A new entry.
    Added,
    /// A known entry confirmed again.
    Refreshed,
    /// Refused: full of fresh nodes, or too many ids on that IP.
    Refused,
}

/// Verified nodes by family, ordered by id.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    epoch: Instant,
    families: [FamilyPool; 2],
    journal: Journal,
}

fn index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Pool {
    /// An empty pool; `now` is the epoch of its coarse clock.
    pub fn new(config: PoolConfig, now: Instant) -> Self {
        Self {
            config,
            epoch: now,
            families: Default::default(),
            journal: Journal::default(),
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn record(&mut self, change: Change) {
        let family = match change {
            Change::Added(node) => Family::of(&node.addr),
            Change::Removed(_, family) => family,
        };
        self.families[index(family)].dirty = true;
        // Twice the capacity: past that, rewriting everything is cheaper.
        if self.journal.changes.len() >= self.config.capacity.saturating_mul(2).max(1024) {
            self.journal.changes.clear();
            self.journal.rewrite = true;
        }
        if !self.journal.rewrite {
            self.journal.changes.push(change);
        }
    }

    /// Entries of `family`.
    pub fn len(&self, family: Family) -> usize {
        self.families[index(family)].by_id.len()
    }

    /// Whether both families are empty.
    pub fn is_empty(&self) -> bool {
        self.families.iter().all(|f| f.by_id.is_empty())
    }

    /// Whether `node` is in the pool at that address and was confirmed
    /// within `stale_after`.
    pub fn is_fresh(&self, node: &NodeAddr, now: Instant) -> bool {
        let stale = self.config.stale_after.as_secs() as u32;
        self.families[index(Family::of(&node.addr))]
            .by_id
            .get(&node.id)
            .is_some_and(|e| {
                e.addr == node.addr && self.secs(now).saturating_sub(e.confirmed) < stale
            })
    }

    /// Records that `node` answered us from its address at `now`. `confirmed`
    /// may lie in the past (entries loaded from disk count as due for
    /// re-verification).
    pub fn insert(&mut self, node: NodeAddr, now: Instant, confirmed: Instant) -> PoolInsert {
        let confirmed = self.secs(confirmed);
        let now_s = self.secs(now);
        let stale = self.config.stale_after.as_secs() as u32;
        let (capacity, per_ip) = (self.config.capacity, self.config.per_ip);
        let family = Family::of(&node.addr);
        let pool = &mut self.families[index(family)];
        let ip = node.addr.ip();
        if let Some(entry) = pool.by_id.get_mut(&node.id) {
            entry.confirmed = entry.confirmed.max(confirmed);
            if entry.addr == node.addr {
                return PoolInsert::Refreshed;
            }
            // The id moved: account the new address like a newcomer, unless
            // it stayed within its host (an IPv6 address of the same /64).
            let old = entry.addr;
            let same_host = host_of(old.ip()) == host_of(ip);
            if !same_host
                && !is_local(&ip)
                && pool.per_ip.get(&host_of(ip)).copied().unwrap_or(0) >= per_ip
            {
                return PoolInsert::Refused;
            }
            entry.addr = node.addr;
            release(&mut pool.per_ip, &old.ip());
            claim(&mut pool.per_ip, ip);
            self.record(Change::Added(node));
            return PoolInsert::Added;
        }
        if !is_local(&ip) && pool.per_ip.get(&host_of(ip)).copied().unwrap_or(0) >= per_ip {
            return PoolInsert::Refused;
        }
        if pool.by_id.len() >= capacity {
            // Replace the id-successor (wrapping) if it went stale.
            let successor = pool
                .by_id
                .range((Bound::Excluded(node.id), Bound::Unbounded))
                .next()
                .or_else(|| pool.by_id.iter().next())
                .map(|(id, e)| (*id, *e));
            match successor {
                Some((id, e)) if now_s.saturating_sub(e.confirmed) >= stale => {
                    pool.by_id.remove(&id);
                    release(&mut pool.per_ip, &e.addr.ip());
                    self.record(Change::Removed(id, family));
                }
                _ => return PoolInsert::Refused,
            }
        }
        let pool = &mut self.families[index(family)];
        pool.by_id.insert(
            node.id,
            Entry {
                addr: node.addr,
                confirmed,
            },
        );
        claim(&mut pool.per_ip, ip);
        self.record(Change::Added(node));
        PoolInsert::Added
    }

    /// Removes `id` from the pool of `family`.
    pub fn remove(&mut self, id: &NodeId, family: Family) {
        let pool = &mut self.families[index(family)];
        if let Some(e) = pool.by_id.remove(id) {
            release(&mut pool.per_ip, &e.addr.ip());
            self.record(Change::Removed(*id, family));
        }
    }

    /// The `n` nodes of `family` closest to `target` (nearest first),
    /// skipping `exclude` (the querier itself), into `out` (cleared first).
    pub fn closest_into(
        &self,
        target: &NodeId,
        family: Family,
        n: usize,
        exclude: &NodeId,
        out: &mut Vec<NodeAddr>,
    ) {
        out.clear();
        let pool = &self.families[index(family)];
        // Numeric neighbours on both sides: the XOR-nearest `n` lie among
        // them except when the target sits near a boundary of a large
        // power-of-two subtree, where this still returns close contacts —
        // good enough for a starting point, and half the walk of 2n a side.
        let side = n + 2;
        let snapshot = &pool.snapshot;
        if snapshot.records.is_empty() {
            let map = &pool.by_id;
            let node = |(id, e): (&NodeId, &Entry)| NodeAddr {
                id: *id,
                addr: e.addr,
            };
            out.extend(
                map.range((Bound::Included(*target), Bound::Unbounded))
                    .take(side)
                    .map(node),
            );
            out.extend(map.range(..*target).rev().take(side).map(node));
            out.retain(|n| n.id != *exclude);
            // The top 64 bits of the XOR distance order the candidates; the
            // whole distance only breaks their (rare) ties.
            let k = key(&target.0);
            out.sort_unstable_by(|a, b| {
                (key(&a.id.0) ^ k)
                    .cmp(&(key(&b.id.0) ^ k))
                    .then_with(|| distance(&a.id.0, &target.0).cmp(&distance(&b.id.0, &target.0)))
            });
            out.truncate(n);
            return;
        }
        let at = snapshot.lower_bound(target);
        let from = at.saturating_sub(side);
        let to = (at + side).min(snapshot.len()).min(from + MAX_CANDIDATES);
        // Rank the window by the 64-bit distance (reading it in order, which
        // the prefetcher follows), then decode only the chosen records.
        let k = key(&target.0);
        // Each candidate as one 64-bit integer, its distance with the low
        // bits replaced by its offset in the window, so the sort compares
        // single machine words.
        let mut ranked = [0u64; MAX_CANDIDATES];
        for (slot, i) in ranked.iter_mut().zip(from..to) {
            *slot = ((key(snapshot.id(i)) ^ k) & !OFFSET_MASK) | (i - from) as u64;
        }
        let ranked = &mut ranked[..to - from];
        ranked.sort_unstable();
        let position = |r: &u64| from + (r & OFFSET_MASK) as usize;
        if ranked
            .windows(2)
            .any(|w| w[0] & !OFFSET_MASK == w[1] & !OFFSET_MASK)
        {
            // Two distances agree above the offset bits: the whole distance
            // decides.
            ranked.sort_unstable_by_key(|r| distance(snapshot.id(position(r)), &target.0));
        }
        for r in ranked.iter() {
            if out.len() == n {
                break;
            }
            let i = position(r);
            if snapshot.id(i) != &exclude.0
                && let Some(node) = snapshot.node(i)
            {
                out.push(node);
            }
        }
    }

    /// Loads what [`Pool::closest_into`] will read to answer each of
    /// `targets` with `n` contacts: first every target's index entry, then
    /// the records around each. Answering one query at a time waits for its
    /// cache misses one after another; here the loads do not depend on one
    /// another, so the CPU overlaps them. Plain reads rather than prefetch
    /// instructions: safe, portable, and just as parallel.
    pub fn warm(&self, targets: &[(NodeId, Family)], n: usize) {
        let snapshot = |family: Family| {
            let s = &self.families[index(family)].snapshot;
            (!s.records.is_empty()).then_some(s)
        };
        let mut touched = 0u64;
        for (target, family) in targets {
            if let Some(s) = snapshot(*family) {
                touched ^= u64::from(s.index[radix(&target.0)]);
            }
        }
        let side = n + 2;
        for (target, family) in targets {
            let Some(s) = snapshot(*family) else {
                continue;
            };
            let p = radix(&target.0);
            let (lo, hi) = (s.index[p] as usize, s.index[p + 1] as usize);
            let from = lo.saturating_sub(side) * s.stride;
            let to = (hi + side).min(s.len()) * s.stride;
            for byte in s.records[from..to].iter().step_by(CACHE_LINE) {
                touched ^= u64::from(*byte);
            }
        }
        // Keeps the loads: nothing else reads what they fetched.
        std::hint::black_box(touched);
    }

    /// Continues the maintenance sweep over at most `budget` entries of
    /// `family`: expired ones are removed, stale ones are appended to
    /// `recheck` for a verification ping.
    pub fn sweep(
        &mut self,
        family: Family,
        budget: usize,
        now: Instant,
        recheck: &mut Vec<NodeAddr>,
    ) {
        let now_s = self.secs(now);
        let stale = self.config.stale_after.as_secs() as u32;
        let expire = self.config.expire_after.as_secs() as u32;
        let pool = &mut self.families[index(family)];
        let start = match pool.cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut expired = Vec::new();
        let mut seen = 0;
        let mut last = None;
        for (id, e) in pool.by_id.range((start, Bound::Unbounded)).take(budget) {
            seen += 1;
            last = Some(*id);
            let age = now_s.saturating_sub(e.confirmed);
            if age >= expire {
                expired.push(*id);
            } else if age >= stale {
                recheck.push(NodeAddr {
                    id: *id,
                    addr: e.addr,
                });
            }
        }
        // Reached the end: the next sweep starts over from the lowest id.
        pool.cursor = if seen < budget { None } else { last };
        for id in expired {
            self.remove(&id, family);
        }
        self.refresh_snapshot(family, now);
    }

    /// Rebuilds the lookup snapshot of `family` if the pool changed and the
    /// last one is at least a second old (or the pool is small, where the
    /// snapshot is dropped and the tree serves directly).
    pub fn refresh_snapshot(&mut self, family: Family, now: Instant) {
        let pool = &mut self.families[index(family)];
        let due = pool
            .snapshot
            .taken
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        let small = pool.by_id.len() < SNAPSHOT_MIN;
        if pool.dirty && (due || small) {
            pool.dirty = false;
            pool.snapshot.rebuild(&pool.by_id, family, now);
        }
    }

    /// Every node, both families (for a full rewrite of the saved pool).
    pub fn nodes(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        self.families.iter().flat_map(|f| {
            f.by_id.iter().map(|(id, e)| NodeAddr {
                id: *id,
                addr: e.addr,
            })
        })
    }

    /// Takes the changes since the last call.
    pub fn take_journal(&mut self) -> Journal {
        std::mem::take(&mut self.journal)
    }

    /// Bytes of memory per entry, roughly (B-tree node, per-IP counter).
    pub const APPROX_ENTRY_BYTES: usize = 100;
}

fn claim(per_ip: &mut HashMap<IpAddr, u16>, ip: IpAddr) {
    if !is_local(&ip) {
        *per_ip.entry(host_of(ip)).or_default() += 1;
    }
}

fn release(per_ip: &mut HashMap<IpAddr, u16>, ip: &IpAddr) {
    let host = host_of(*ip);
    if let Some(count) = per_ip.get_mut(&host) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_ip.remove(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, ip: &str, port: u16) -> NodeAddr {
        let mut bytes = [0u8; 20];
        bytes[0] = id;
        NodeAddr {
            id: NodeId(bytes),
            addr: SocketAddr::new(ip.parse().unwrap(), port),
        }
    }

    fn config(capacity: usize) -> PoolConfig {
        PoolConfig {
            capacity,
            per_ip: 2,
            stale_after: Duration::from_secs(100),
            expire_after: Duration::from_secs(1000),
        }
    }

    #[test]
    fn closest_are_nearest_first_and_skip_the_querier() {
        let now = Instant::now();
        let mut pool = Pool::new(config(100), now);
        for i in 0..50u8 {
            pool.insert(node(i * 4, "10.0.0.1", 1000 + u16::from(i)), now, now);
        }
        let mut out = Vec::new();
        let querier = node(40, "10.0.0.1", 1).id;
        pool.closest_into(
            &node(41, "10.0.0.1", 1).id,
            Family::V4,
            3,
            &querier,
            &mut out,
        );
        let ids: Vec<u8> = out.iter().map(|n| n.id.0[0]).collect();
        // 41^44 = 5, 41^32 = 9, 41^36 = 13; 40 is the querier.
        assert_eq!(ids, vec![44, 32, 36]);
        pool.closest_into(&querier, Family::V6, 3, &querier, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn one_ipv6_slash_64_counts_as_one_host() {
        let now = Instant::now();
        let mut pool = Pool::new(config(100), now);
        for i in 1..=50u8 {
            pool.insert(node(i, &format!("2001:db8::{i:x}"), 6881), now, now);
        }
        assert_eq!(pool.len(Family::V6), 2, "one /64 took more than its share");
        // Another /64 is another host; an id moving within its /64 keeps
        // the count right.
        let other = node(60, "2001:db8:0:1::1", 6881);
        assert_eq!(pool.insert(other, now, now), PoolInsert::Added);
        let moved = node(60, "2001:db8:0:1::2", 6881);
        assert_eq!(pool.insert(moved, now, now), PoolInsert::Added);
        assert_eq!(
            pool.insert(node(61, "2001:db8:0:1::3", 6881), now, now),
            PoolInsert::Added
        );
        assert_eq!(
            pool.insert(node(62, "2001:db8:0:1::4", 6881), now, now),
            PoolInsert::Refused
        );
        // With its /64 full, an id may still move within it (privacy
        // addresses rotate).
        assert_eq!(
            pool.insert(node(61, "2001:db8:0:1::5", 6881), now, now),
            PoolInsert::Added
        );
    }

    #[test]
    fn bounded_by_capacity_and_per_ip_and_replaces_only_stale() {
        let now = Instant::now();
        let mut pool = Pool::new(config(3), now);
        assert_eq!(
            pool.insert(node(1, "1.1.1.1", 1), now, now),
            PoolInsert::Added
        );
        assert_eq!(
            pool.insert(node(2, "1.1.1.1", 2), now, now),
            PoolInsert::Added
        );
        // A third id on one public IP is refused; local IPs are exempt.
        assert_eq!(
            pool.insert(node(3, "1.1.1.1", 3), now, now),
            PoolInsert::Refused
        );
        assert_eq!(
            pool.insert(node(3, "10.0.0.1", 3), now, now),
            PoolInsert::Added
        );
        assert_eq!(
            pool.insert(node(1, "1.1.1.1", 1), now, now),
            PoolInsert::Refreshed
        );
        // Full of fresh nodes: refused.
        assert_eq!(
            pool.insert(node(9, "2.2.2.2", 1), now, now),
            PoolInsert::Refused
        );
        // Later, node 1 (the successor of 9, wrapping around) is stale.
        let later = now + Duration::from_secs(150);
        pool.insert(node(2, "1.1.1.1", 2), later, later);
        pool.insert(node(3, "10.0.0.1", 3), later, later);
        assert_eq!(
            pool.insert(node(9, "2.2.2.2", 1), later, later),
            PoolInsert::Added
        );
        assert_eq!(pool.len(Family::V4), 3);
        assert!(!pool.is_fresh(&node(1, "1.1.1.1", 1), later));
        assert!(pool.is_fresh(&node(9, "2.2.2.2", 1), later));
        // The per-IP count followed the eviction: 1.1.1.1 has room for one more.
        pool.remove(&node(9, "2.2.2.2", 1).id, Family::V4);
        assert_eq!(
            pool.insert(node(0, "1.1.1.1", 5), later, later),
            PoolInsert::Added
        );
        assert_eq!(
            pool.insert(node(4, "1.1.1.1", 6), later, later),
            PoolInsert::Refused
        );
        let journal = pool.take_journal();
        assert!(!journal.rewrite);
        assert!(
            journal
                .changes
                .contains(&Change::Removed(node(1, "1.1.1.1", 1).id, Family::V4))
        );
        assert!(pool.take_journal().changes.is_empty());
    }

    #[test]
    fn sweep_rechecks_stale_and_expires_old_in_bounded_steps() {
        let now = Instant::now();
        let mut pool = Pool::new(config(100), now);
        for i in 0..10u8 {
            pool.insert(node(i, "10.0.0.1", 1), now, now);
        }
        let mut recheck = Vec::new();
        pool.sweep(Family::V4, 4, now + Duration::from_secs(10), &mut recheck);
        assert!(recheck.is_empty());
        pool.sweep(Family::V4, 4, now + Duration::from_secs(200), &mut recheck);
        assert_eq!(recheck.len(), 4);
        assert_eq!(recheck[0].id.0[0], 4); // continued after the cursor
        recheck.clear();
        let mut rounds = 0;
        while !pool.is_empty() {
            pool.sweep(Family::V4, 4, now + Duration::from_secs(2000), &mut recheck);
            rounds += 1;
            assert!(rounds < 10);
        }
        assert!(recheck.is_empty());
    }

    #[test]
    fn a_large_pool_answers_from_its_snapshot_like_from_the_tree() {
        // Random top 64 bits; then every id in runs of 4 sharing them (the
        // whole distance must break those ties); then runs of 4 that differ
        // only in the lowest of those bits, which the ranking's integers
        // give to the window offset.
        for (run, differ_low) in [(1, false), (4, false), (4, true)] {
            large_pool_matches_the_definition(run, differ_low);
        }
    }

    fn large_pool_matches_the_definition(run: u32, differ_low: bool) {
        let now = Instant::now();
        let mut pool = Pool::new(config(100_000), now);
        let mut x: u64 = 1;
        let mut ids = Vec::new();
        for i in 0..(SNAPSHOT_MIN as u32 * 3) {
            if i % run == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&x.to_be_bytes());
            if differ_low {
                id[7] ^= (i % run) as u8;
            }
            id[8..12].copy_from_slice(&i.to_be_bytes());
            ids.push(NodeId(id));
            let addr = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1));
            pool.insert(
                NodeAddr {
                    id: NodeId(id),
                    addr,
                },
                now,
                now,
            );
        }
        let nobody = NodeId([0xff; 20]);
        pool.refresh_snapshot(Family::V4, now);
        assert!(!pool.families[0].snapshot.records.is_empty());
        ids.sort();
        let mut got = Vec::new();
        for target in ids.iter().step_by(97).chain([&NodeId([0; 20]), &nobody]) {
            // The querier is the target itself: it must not be in its answer.
            pool.closest_into(target, Family::V4, 16, target, &mut got);
            // The definition: 18 numeric neighbours a side, XOR-sorted.
            let at = ids.partition_point(|id| id < target);
            let mut want: Vec<NodeId> =
                ids[at.saturating_sub(18)..(at + 18).min(ids.len())].to_vec();
            want.retain(|id| id != target);
            want.sort_by_key(|id| id.distance(target));
            want.truncate(16);
            let got_ids: Vec<NodeId> = got.iter().map(|n| n.id).collect();
            assert_eq!(got_ids, want);
        }
    }
}
