//! Outstanding queries, keyed by our 2-byte transaction id.
//!
//! An answer is matched only if its transaction id is one we issued AND it
//! comes from the address we sent the query to: otherwise anyone could answer
//! on another node's behalf. Each id is drawn at random, as libtorrent draws
//! its own: counting up from one id a node saw would tell it the ids of our
//! next queries, and it could then forge their answers from the addresses
//! it had just handed us, with the source address as the only check left.
//!
//! Every query has two deadlines, a short one that lets a lookup widen and
//! a hard one after which it failed. Both are constant offsets from the
//! send time, so two FIFO queues hold them in deadline order; stale entries
//! (answered queries) are pruned from the fronts so the earliest deadline
//! reported is always a live one.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::NodeId;
use rand::{Rng, RngExt};

use super::lookup::LookupId;
use crate::krpc::TransactionId;

/// Why a query was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Part of a lookup; `seed` when sent to an address of unknown id.
    Lookup { lookup: LookupId, seed: bool },
    /// Liveness check of a table entry or verification of a new contact.
    Ping,
    /// `announce_peer` at the end of an announce lookup.
    Announce,
}

/// One query in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) to: SocketAddr,
    pub(crate) id: Option<NodeId>,
    pub(crate) sent: Instant,
    pub(crate) why: Why,
    /// Our transaction id, for a retransmission under the same id.
    pub(crate) tid: TransactionId,
    slow: bool,
}

/// The table of outstanding queries.
#[derive(Debug)]
pub(crate) struct Transactions {
    pending: HashMap<u16, Pending>,
    short_queue: VecDeque<(Instant, u16)>,
    hard_queue: VecDeque<(Instant, u16)>,
    short: Duration,
    hard: Duration,
    capacity: usize,
    pings: usize,
}

impl Transactions {
    pub(crate) fn new(short: Duration, hard: Duration, capacity: usize) -> Self {
        Self {
            pending: HashMap::new(),
            short_queue: VecDeque::new(),
            hard_queue: VecDeque::new(),
            short,
            hard,
            capacity: capacity.min(u16::MAX as usize),
            pings: 0,
        }
    }

    /// Number of queries in flight.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Number of [`Why::Ping`] queries in flight.
    pub(crate) fn pings(&self) -> usize {
        self.pings
    }

    /// Registers a query under an id drawn from `rng`; `None` when too many
    /// are in flight.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        why: Why,
        rng: &mut impl Rng,
    ) -> Option<TransactionId> {
        if self.pending.len() >= self.capacity {
            return None;
        }
        // Below capacity (< 65535), so a free id exists and this ends; the
        // step past a taken id is predictable only in that rare case.
        let mut tid: u16 = rng.random();
        while self.pending.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        let wire_tid = TransactionId::new(&tid.to_be_bytes())?;
        self.pending.insert(
            tid,
            Pending {
                to,
                id,
                sent: now,
                why,
                tid: wire_tid,
                slow: false,
            },
        );
        if why == Why::Ping {
            self.pings += 1;
        }
        self.short_queue.push_back((now, tid));
        self.hard_queue.push_back((now, tid));
        Some(wire_tid)
    }

    fn remove(&mut self, tid: u16) -> Option<Pending> {
        let p = self.pending.remove(&tid)?;
        if p.why == Why::Ping {
            self.pings -= 1;
        }
        Some(p)
    }

    /// Takes the query an answer with `tid` from `from` belongs to.
    pub(crate) fn take(&mut self, tid: &TransactionId, from: &SocketAddr) -> Option<Pending> {
        let tid = u16::from_be_bytes(tid.as_slice().try_into().ok()?);
        if self.pending.get(&tid)?.to != *from {
            return None;
        }
        let p = self.remove(tid);
        self.prune();
        p
    }

    /// The next query whose short timeout passed at `now`; it is marked slow
    /// and stays outstanding.
    pub(crate) fn poll_slow(&mut self, now: Instant) -> Option<Pending> {
        self.prune();
        let &(sent, tid) = self.short_queue.front()?;
        if sent + self.short > now {
            return None;
        }
        self.short_queue.pop_front();
        let p = self.pending.get_mut(&tid)?;
        p.slow = true;
        let p = *p;
        self.prune();
        Some(p)
    }

    /// The next query whose hard timeout passed at `now`; it is removed.
    pub(crate) fn poll_expired(&mut self, now: Instant) -> Option<Pending> {
        self.prune();
        let &(sent, tid) = self.hard_queue.front()?;
        if sent + self.hard > now {
            return None;
        }
        self.hard_queue.pop_front();
        let p = self.remove(tid);
        self.prune();
        p
    }

    fn live(&self, sent: Instant, tid: u16, want_fast: bool) -> bool {
        self.pending
            .get(&tid)
            .is_some_and(|p| p.sent == sent && (!want_fast || !p.slow))
    }

    fn prune(&mut self) {
        while let Some(&(sent, tid)) = self.short_queue.front() {
            if self.live(sent, tid, true) {
                break;
            }
            self.short_queue.pop_front();
        }
        while let Some(&(sent, tid)) = self.hard_queue.front() {
            if self.live(sent, tid, false) {
                break;
            }
            self.hard_queue.pop_front();
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let short = self.short_queue.front().map(|(t, _)| *t + self.short);
        let hard = self.hard_queue.front().map(|(t, _)| *t + self.hard);
        match (short, hard) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn answers_match_tid_and_address_and_deadlines_are_exact() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let h = Duration::from_secs(10);
        let mut rpc = Transactions::new(s, h, 100);
        let rng = &mut StdRng::seed_from_u64(1);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let t1 = rpc.start(now, a, None, Why::Ping, rng).unwrap();
        let t2 = rpc.start(now + s / 2, b, None, Why::Ping, rng).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(rpc.next_deadline(), Some(now + s));
        // Wrong source address or unknown tid: no match.
        assert!(rpc.take(&t1, &b).is_none());
        assert!(rpc.take(&TransactionId::new(b"zzz").unwrap(), &a).is_none());
        assert!(rpc.take(&t1, &a).is_some());
        assert!(rpc.take(&t1, &a).is_none());
        // The answered query's deadlines are gone.
        assert_eq!(rpc.next_deadline(), Some(now + s / 2 + s));
        assert!(rpc.poll_slow(now + s).is_none());
        assert_eq!(rpc.poll_slow(now + s * 2).unwrap().to, b);
        assert_eq!(rpc.next_deadline(), Some(now + s / 2 + h));
        assert!(rpc.poll_expired(now + h).is_none());
        assert_eq!(rpc.poll_expired(now + h * 2).unwrap().to, b);
        assert_eq!(rpc.next_deadline(), None);
        assert_eq!(rpc.len(), 0);
        assert_eq!(rpc.pings(), 0);
    }

    #[test]
    fn capacity_is_enforced() {
        let now = Instant::now();
        let mut rpc = Transactions::new(Duration::from_secs(1), Duration::from_secs(2), 2);
        let rng = &mut StdRng::seed_from_u64(2);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert!(rpc.start(now, a, None, Why::Announce, rng).is_some());
        assert!(rpc.start(now, a, None, Why::Announce, rng).is_some());
        assert!(rpc.start(now, a, None, Why::Announce, rng).is_none());
    }

    /// A node that saw one of our ids guesses the next 16 and forges their
    /// answers; with ids counted up it would hit every time.
    #[test]
    fn one_id_seen_does_not_give_away_the_next() {
        let now = Instant::now();
        let mut rpc = Transactions::new(Duration::from_secs(1), Duration::from_secs(2), 100);
        let rng = &mut StdRng::seed_from_u64(3);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let as_number = |tid: TransactionId| u16::from_be_bytes(tid.as_slice().try_into().unwrap());
        let mut seen = as_number(rpc.start(now, a, None, Why::Ping, rng).unwrap());
        let mut guessed = 0;
        for _ in 0..200 {
            let next = as_number(rpc.start(now, a, None, Why::Ping, rng).unwrap());
            guessed += usize::from((1..=16).contains(&next.wrapping_sub(seen)));
            rpc.take(&TransactionId::new(&next.to_be_bytes()).unwrap(), &a);
            seen = next;
        }
        assert!(guessed <= 1, "{guessed} of 200 next ids guessed");
    }
}
