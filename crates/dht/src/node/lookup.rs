//! Iterative lookups: the candidate set of one search and its rules.
//!
//! Candidates are kept sorted by XOR distance to the target. The *window* is
//! the first `k` candidates that have neither failed nor gone slow. Queries go
//! to fresh candidates inside the window while fewer than `alpha` are in
//! flight; a query that outlives the short timeout turns *slow*, leaves the
//! window and frees its slot, so one unresponsive node widens the search
//! instead of stalling it (a late answer still counts). The search ends when
//! every candidate of the window has answered.
//!
//! A lookup runs one traversal per address family, since IPv4 and IPv6 nodes
//! live in separate tables.
//!
//! Sybil defence: a hostile node can answer with contacts made up to sit
//! closer to the target than any real node, which never answer. Three rules
//! keep such a flood from stalling the search or pushing out the real
//! answers: a full candidate set only ever gives up contacts not yet asked
//! (never a node that answered and holds a token); once most of the
//! contacts a node named have failed (at least [`MAX_STRIKES`]), the rest
//! of them (those no other node also named) are dropped and the node is not
//! believed again in this lookup; and contacts from an answer we do not
//! trust are not taken at all (the node's caller checks that).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{Distance, InfoHash, NodeAddr, NodeId};

use crate::krpc::Token;

/// Contacts named by one node that may fail (time out, or answer under
/// another id) before the rest of its contacts are dropped, if they also
/// outnumber those that answered: an honest node's list may hold a node or
/// two that just left, a Sybil's is mostly made up.
const MAX_STRIKES: u8 = 2;

/// How the contacts one node named have fared in this lookup.
#[derive(Debug, Default, Clone, Copy)]
struct Record {
    answered: u8,
    failed: u8,
}

impl Record {
    fn struck_out(self) -> bool {
        self.failed >= MAX_STRIKES && self.failed > self.answered
    }
}

/// Names one lookup started by a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// `find_node` asked for by the user.
    FindNode,
    /// `get_peers`, reporting peers.
    GetPeers(InfoHash),
    /// `get_peers`, then `announce_peer` to the closest nodes that gave a token.
    Announce(InfoHash, Option<u16>),
    /// Internal `find_node`: bootstrap (towards our own id) or bucket refresh.
    Maintenance { bootstrap: bool },
}

/// Summary of a finished lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupStats {
    /// Hops to the deepest answering node of the result: 1 when the
    /// starting nodes were the answer.
    pub rounds: u32,
    /// Queries sent.
    pub queries: u32,
    /// Answers received.
    pub responses: u32,
    /// Time from start to end.
    pub elapsed: Duration,
    /// The closest nodes that answered, nearest first (at most k per family).
    pub closest: Vec<NodeAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight,
    Slow,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    node: NodeAddr,
    distance: Distance,
    state: State,
    depth: u32,
    token: Option<Token>,
    retried: bool,
    /// The node whose answer named this contact; `None` for contacts from
    /// our own table and for routers.
    via: Option<SocketAddr>,
}

/// The candidates of one address family.
#[derive(Debug)]
pub(crate) struct Traversal {
    family: Family,
    candidates: Vec<Candidate>,
    /// Queries to addresses whose id we do not know (bootstrap routers).
    pending_seeds: u32,
}

impl Traversal {
    fn counts(state: State) -> bool {
        !matches!(state, State::Failed | State::Slow)
    }

    /// The next candidate to query, marked in flight, if the rules allow one.
    fn next_query(&mut self, alpha: usize, k: usize) -> Option<NodeAddr> {
        let in_flight = self
            .candidates
            .iter()
            .filter(|c| c.state == State::InFlight)
            .count();
        if in_flight >= alpha {
            return None;
        }
        let c = self
            .candidates
            .iter_mut()
            .filter(|c| Self::counts(c.state))
            .take(k)
            .find(|c| c.state == State::Fresh)?;
        c.state = State::InFlight;
        Some(c.node)
    }

    fn is_done(&self, k: usize) -> bool {
        if self.pending_seeds > 0 {
            return false;
        }
        let mut window = self
            .candidates
            .iter()
            .filter(|c| Self::counts(c.state))
            .take(k)
            .peekable();
        if window.peek().is_none() {
            // Nothing usable yet: wait for slow answers, else give up.
            return !self.candidates.iter().any(|c| c.state == State::Slow);
        }
        window.all(|c| c.state == State::Responded)
    }

    fn find(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.node.addr == *addr)
    }
}

/// One running lookup.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) target: NodeId,
    pub(crate) purpose: Purpose,
    pub(crate) traversals: Vec<Traversal>,
    started: Instant,
    pub(crate) queries: u32,
    pub(crate) responses: u32,
    peers_seen: HashSet<SocketAddr>,
    max_candidates: usize,
    /// How the contacts each node named have fared.
    records: HashMap<SocketAddr, Record>,
}

impl Lookup {
    pub(crate) fn new(
        target: NodeId,
        purpose: Purpose,
        families: &[Family],
        now: Instant,
        max_candidates: usize,
    ) -> Self {
        Self {
            target,
            purpose,
            traversals: families
                .iter()
                .map(|&family| Traversal {
                    family,
                    candidates: Vec::new(),
                    pending_seeds: 0,
                })
                .collect(),
            started: now,
            queries: 0,
            responses: 0,
            peers_seen: HashSet::new(),
            max_candidates,
            records: HashMap::new(),
        }
    }

    fn traversal(&mut self, family: Family) -> Option<&mut Traversal> {
        self.traversals.iter_mut().find(|t| t.family == family)
    }

    /// Adds contacts learned at `depth` from the answer of `via` (`None`:
    /// from our table); duplicates (by id or address), our own id and other
    /// families are skipped, and so is everything a struck-out node names.
    /// Past `max_candidates`, the farthest contact not yet asked makes room.
    pub(crate) fn add_candidates(
        &mut self,
        nodes: &[NodeAddr],
        depth: u32,
        own: &NodeId,
        via: Option<SocketAddr>,
    ) {
        if via.is_some_and(|v| self.struck_out(&v)) {
            return;
        }
        let target = self.target;
        let max = self.max_candidates;
        for node in nodes {
            if node.id == *own || !lodestone_core::compact::is_contactable(&node.addr) {
                continue;
            }
            let Some(t) = self.traversal(Family::of(&node.addr)) else {
                continue;
            };
            if let Some(known) = t
                .candidates
                .iter_mut()
                .find(|c| c.node.id == node.id || c.node.addr == node.addr)
            {
                // Named by a second node: no longer one node's word, so it
                // no longer falls with the first one.
                if known.via.is_some() && known.via != via {
                    known.via = None;
                }
                continue;
            }
            let distance = node.id.distance(&target);
            let at = t.candidates.partition_point(|c| c.distance < distance);
            if at >= max {
                continue;
            }
            t.candidates.insert(
                at,
                Candidate {
                    node: *node,
                    distance,
                    state: State::Fresh,
                    depth,
                    token: None,
                    retried: false,
                    via,
                },
            );
            if t.candidates.len() > max
                && let Some(farthest) = t.candidates.iter().rposition(|c| c.state == State::Fresh)
            {
                t.candidates.remove(farthest);
            }
        }
    }

    fn struck_out(&self, node: &SocketAddr) -> bool {
        self.records.get(node).is_some_and(|r| r.struck_out())
    }

    /// Records how a contact that `via` named fared; once `via` is struck
    /// out, its contacts not yet asked are dropped.
    fn judge(&mut self, family: Family, via: SocketAddr, answered: bool) {
        let record = self.records.entry(via).or_default();
        let was_out = record.struck_out();
        if answered {
            record.answered = record.answered.saturating_add(1);
        } else {
            record.failed = record.failed.saturating_add(1);
        }
        if was_out || !record.struck_out() {
            return;
        }
        if let Some(t) = self.traversal(family) {
            t.candidates
                .retain(|c| c.via != Some(via) || c.state != State::Fresh);
        }
    }

    /// Counts a query to an address of unknown id (a bootstrap router).
    pub(crate) fn add_seed(&mut self, family: Family) {
        if let Some(t) = self.traversal(family) {
            t.pending_seeds += 1;
        }
    }

    /// The next node to query in any traversal.
    pub(crate) fn next_query(&mut self, alpha: usize, k: usize) -> Option<NodeAddr> {
        self.traversals
            .iter_mut()
            .find_map(|t| t.next_query(alpha, k))
    }

    /// Records an answer from `node`. `trusted` is false when the answer may
    /// not count towards the result (BEP 42 mismatch, id other than expected).
    /// Returns the depth for the contacts this answer carries.
    pub(crate) fn on_response(
        &mut self,
        node: NodeAddr,
        seed: bool,
        token: Option<Token>,
        trusted: bool,
    ) -> u32 {
        self.responses += 1;
        let target = self.target;
        let Some(t) = self.traversal(Family::of(&node.addr)) else {
            return 1;
        };
        if seed {
            t.pending_seeds = t.pending_seeds.saturating_sub(1);
        }
        match t.find(&node.addr) {
            Some(c) => {
                let ok = trusted && c.node.id == node.id;
                // A late answer after a timeout counts for its source too.
                let first_word = c.state == State::InFlight || c.state == State::Slow;
                c.state = if ok { State::Responded } else { State::Failed };
                c.token = token.filter(|_| ok);
                let depth = c.depth + 1;
                if let Some(via) = c.via.filter(|_| first_word) {
                    self.judge(Family::of(&node.addr), via, ok);
                }
                depth
            }
            None if trusted => {
                // A router that answered: it is a result like any other.
                let distance = node.id.distance(&target);
                let at = t.candidates.partition_point(|c| c.distance < distance);
                t.candidates.insert(
                    at,
                    Candidate {
                        node,
                        distance,
                        state: State::Responded,
                        depth: 0,
                        token,
                        retried: false,
                        via: None,
                    },
                );
                1
            }
            None => 1,
        }
    }

    /// Marks the query to `addr` slow (short timeout) or failed. Returns
    /// true when the query should be sent once more: a datagram lost on the
    /// way is the likeliest reason for a short timeout, and the closest nodes
    /// are the ones a lookup can least afford to miss. A seed (a bootstrap
    /// address) is asked once more too: with a single bootstrap node, one
    /// lost datagram used to end the lookup empty.
    pub(crate) fn on_timeout(&mut self, addr: &SocketAddr, seed: bool, hard: bool) -> bool {
        let Some(t) = self.traversal(Family::of(addr)) else {
            return false;
        };
        if seed {
            if hard {
                t.pending_seeds = t.pending_seeds.saturating_sub(1);
            }
            // A query's short timeout fires once: one more copy at most.
            return !hard;
        }
        let Some(c) = t.find(addr) else {
            return false;
        };
        if !matches!(c.state, State::InFlight | State::Slow) {
            return false;
        }
        let first_timeout = c.state == State::InFlight && !c.retried;
        c.state = if hard { State::Failed } else { State::Slow };
        let retry = !hard && !c.retried;
        c.retried |= retry;
        if first_timeout && let Some(via) = c.via {
            self.judge(Family::of(addr), via, false);
        }
        retry
    }

    /// Marks `addr` failed (it answered with an error).
    pub(crate) fn on_error(&mut self, addr: &SocketAddr, seed: bool) {
        if let Some(t) = self.traversal(Family::of(addr)) {
            if seed {
                t.pending_seeds = t.pending_seeds.saturating_sub(1);
            } else if let Some(c) = t.find(addr) {
                c.state = State::Failed;
            }
        }
    }

    /// Peers not reported before.
    pub(crate) fn new_peers(&mut self, values: &[SocketAddr]) -> Vec<SocketAddr> {
        values
            .iter()
            .filter(|p| lodestone_core::compact::is_contactable(p) && self.peers_seen.insert(**p))
            .copied()
            .collect()
    }

    /// Whether every traversal has finished.
    pub(crate) fn is_done(&self, k: usize) -> bool {
        self.traversals.iter().all(|t| t.is_done(k))
    }

    /// The closest answering nodes (with their tokens), at most `k` per family.
    pub(crate) fn results(&self, k: usize) -> Vec<(NodeAddr, Option<Token>)> {
        self.traversals
            .iter()
            .flat_map(|t| {
                t.candidates
                    .iter()
                    .filter(|c| c.state == State::Responded)
                    .take(k)
                    .map(|c| (c.node, c.token))
            })
            .collect()
    }

    /// The summary reported when the lookup ends.
    pub(crate) fn stats(&self, now: Instant, k: usize) -> LookupStats {
        let rounds = self
            .traversals
            .iter()
            .flat_map(|t| {
                t.candidates
                    .iter()
                    .filter(|c| c.state == State::Responded)
                    .take(k)
                    .map(|c| c.depth + 1)
            })
            .max()
            .unwrap_or(0);
        let mut closest: Vec<NodeAddr> = self.results(k).into_iter().map(|(n, _)| n).collect();
        closest.sort_by_key(|n| n.id.distance(&self.target));
        LookupStats {
            rounds,
            queries: self.queries,
            responses: self.responses,
            elapsed: now.saturating_duration_since(self.started),
            closest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeAddr {
        NodeAddr {
            id: NodeId([b; 20]),
            addr: SocketAddr::from(([10, 0, 0, b], 1000)),
        }
    }

    /// Nodes that answer and keep naming others, each a little closer,
    /// that answer too (BEP 42 fixes only an id's top bits, so one address
    /// range can supply such a chain): the set fills with nodes already
    /// asked, which it never gives up, so the next link finds no room and
    /// the lookup ends.
    #[test]
    fn a_chain_of_ever_closer_answering_nodes_ends_once_the_set_is_full() {
        let now = Instant::now();
        let own = NodeId([0xff; 20]);
        let max_candidates = 64;
        let mut l = Lookup::new(
            NodeId([0; 20]),
            Purpose::FindNode,
            &[Family::V4],
            now,
            max_candidates,
        );
        // Link `i` of the chain is closer to the target than link `i - 1`.
        let link = |i: u32| {
            let mut id = [0x40; 20];
            id[..4].copy_from_slice(&(u32::MAX - i).to_be_bytes());
            let [_, a, b, c] = i.to_be_bytes();
            NodeAddr {
                id: NodeId(id),
                addr: SocketAddr::from(([10, a, b, c], 6881)),
            }
        };
        l.add_candidates(&[link(0)], 0, &own, None);
        let mut asked = 0;
        while let Some(node) = l.next_query(3, 8) {
            asked += 1;
            assert!(
                asked <= max_candidates,
                "the lookup goes on past a full set"
            );
            let depth = l.on_response(node, false, None, true);
            let i = u32::MAX - u32::from_be_bytes(node.id.0[..4].try_into().unwrap());
            l.add_candidates(&[link(i + 1)], depth, &own, Some(node.addr));
        }
        assert_eq!(asked, max_candidates);
        assert!(l.is_done(8));
    }

    #[test]
    fn window_alpha_slow_widening_and_termination() {
        let now = Instant::now();
        let own = NodeId([0xff; 20]);
        let mut l = Lookup::new(NodeId([0; 20]), Purpose::FindNode, &[Family::V4], now, 100);
        l.add_candidates(&(1..=4).map(node).collect::<Vec<_>>(), 0, &own, None);
        // k = 2, alpha = 1: one query at a time among the two closest.
        assert_eq!(l.next_query(1, 2), Some(node(1)));
        assert_eq!(l.next_query(1, 2), None);
        // Node 1 turns slow: the window widens to node 3... after node 2.
        l.on_timeout(&node(1).addr, false, false);
        assert_eq!(l.next_query(1, 2), Some(node(2)));
        l.on_response(node(2), false, None, true);
        assert_eq!(l.next_query(1, 2), Some(node(3)));
        assert!(!l.is_done(2));
        l.on_response(node(3), false, None, true);
        // Window = {2, 3}, both answered: done even though node 1 is slow.
        assert!(l.is_done(2));
        // A late answer from node 1 re-enters the window; node 3 falls out.
        l.on_response(node(1), false, None, true);
        assert!(l.is_done(2));
        let results: Vec<_> = l.results(2).into_iter().map(|(n, _)| n).collect();
        assert_eq!(results, vec![node(1), node(2)]);
        assert_eq!(l.stats(now, 2).rounds, 1);
    }

    fn at(b: u8, port: u16) -> NodeAddr {
        NodeAddr {
            id: NodeId([b; 20]),
            addr: SocketAddr::from(([10, 0, 1, b], port)),
        }
    }

    #[test]
    fn a_source_whose_contacts_mostly_fail_is_struck_out() {
        let now = Instant::now();
        let own = NodeId([0xff; 20]);
        let mut l = Lookup::new(NodeId([0; 20]), Purpose::FindNode, &[Family::V4], now, 100);
        let (liar, honest) = (node(200), node(201));
        // The liar names 1..=4; the honest node also names 4.
        l.add_candidates(
            &(1..=4).map(node).collect::<Vec<_>>(),
            1,
            &own,
            Some(liar.addr),
        );
        l.add_candidates(&[node(4)], 1, &own, Some(honest.addr));
        assert_eq!(l.next_query(2, 8), Some(node(1)));
        assert_eq!(l.next_query(2, 8), Some(node(2)));
        l.on_timeout(&node(1).addr, false, false);
        assert!(!l.struck_out(&liar.addr), "one failure is tolerated");
        l.on_timeout(&node(2).addr, false, false);
        assert!(l.struck_out(&liar.addr));
        // Node 3 was the liar's word alone; node 4 was vouched for twice.
        assert_eq!(l.next_query(4, 8), Some(node(4)));
        assert_eq!(l.next_query(4, 8), None);
        // Whatever the liar says later is not taken.
        l.add_candidates(&[node(5)], 1, &own, Some(liar.addr));
        assert_eq!(l.next_query(4, 8), None);
    }

    #[test]
    fn answers_outweigh_a_few_failures() {
        let now = Instant::now();
        let own = NodeId([0xff; 20]);
        let mut l = Lookup::new(NodeId([0; 20]), Purpose::FindNode, &[Family::V4], now, 100);
        let source = node(200).addr;
        l.add_candidates(
            &(1..=6).map(node).collect::<Vec<_>>(),
            1,
            &own,
            Some(source),
        );
        for b in 1..=4 {
            assert_eq!(l.next_query(4, 8), Some(node(b)));
        }
        l.on_response(node(1), false, None, true);
        l.on_response(node(2), false, None, true);
        l.on_timeout(&node(3).addr, false, false);
        l.on_timeout(&node(4).addr, false, false);
        assert!(!l.struck_out(&source), "2 failed, 2 answered");
        assert_eq!(l.next_query(4, 8), Some(node(5)));
    }

    #[test]
    fn a_full_set_gives_up_only_contacts_not_yet_asked() {
        let now = Instant::now();
        let own = NodeId([0xff; 20]);
        let mut l = Lookup::new(NodeId([0; 20]), Purpose::FindNode, &[Family::V4], now, 3);
        l.add_candidates(&[at(50, 1), at(60, 1), at(70, 1)], 0, &own, None);
        for _ in 0..3 {
            let n = l.next_query(3, 3).unwrap();
            l.on_response(n, false, Token::new(b"t"), true);
        }
        // Closer contacts than all three arrive: the answered nodes stay.
        l.add_candidates(&(1..=5).map(node).collect::<Vec<_>>(), 1, &own, None);
        let results: Vec<_> = l.results(8).into_iter().map(|(n, _)| n).collect();
        assert_eq!(results, vec![at(50, 1), at(60, 1), at(70, 1)]);
        assert!(l.results(8).iter().all(|(_, t)| t.is_some()));
    }

    #[test]
    fn wrong_id_counts_as_failure() {
        let now = Instant::now();
        let mut l = Lookup::new(NodeId([0; 20]), Purpose::FindNode, &[Family::V4], now, 100);
        l.add_candidates(&[node(1)], 0, &NodeId([0xff; 20]), None);
        assert_eq!(l.next_query(3, 8), Some(node(1)));
        let impostor = NodeAddr {
            id: NodeId([9; 20]),
            ..node(1)
        };
        l.on_response(impostor, false, None, true);
        assert!(l.is_done(8));
        assert!(l.results(8).is_empty());
    }
}
