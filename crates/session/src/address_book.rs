//! One torrent's peer addresses: where each came from, whether it may be
//! dialed now, and which to forget when the book is full.
//!
//! Sans-IO: the owner passes `now` and reports what happened to each dial;
//! the book never reads a clock. It is shared by the metadata and download
//! phases, so an address is dialed once whatever phase the torrent is in.
//!
//! **Bounded against floods.** The book holds at most `capacity` entries.
//! When full, a newcomer replaces an idle entry of the source that holds the
//! most entries (its own source included), so a flood of made-up addresses
//! from one source (a hostile PEX peer, a tracker, Sybil DHT nodes) can
//! take over only its own share and never evicts what the other sources
//! found. Dialing prefers sources we trust more (the magnet's own `x.pe`,
//! peers that connected to us) and, within a source, addresses never tried
//! before those waiting for a redial, then the oldest entry, so a burst of
//! new addresses cannot jump the queue either.
//!
//! **Connections that reached us** come from the peer's ephemeral port,
//! where nothing listens, so their address is kept only while connected.
//! What the peer says in its extension handshake's `p` (BEP 10) is where
//! it listens: that address stands for the connection while it lasts, so
//! we do not dial a peer already connected to us, and it is dialed when the
//! connection ends, as any other. Both phases report `p`, the metadata
//! fetch and the download: the second report of a connection changes
//! nothing while the first one's link lasts, and one that comes after its
//! end files the address as any late report does.
//!
//! **PEX** (BEP 11) is the least trusted source: any connected peer can
//! name any address. Its addresses are dialed at most at a fixed rate
//! ([`AddressBookConfig::pex_dials_per_sec`] after a burst of
//! [`AddressBookConfig::pex_dial_burst`]), however many arrive and however
//! fast they fail, so a flood cannot aim our dials at an address space of
//! its choosing faster than that; and among them, those that more distinct
//! peers (counted by IP, or IPv6 /64) reported are dialed first.
//!
//! **Nobody aims our dials.** A PEX peer may name only addresses as wide as
//! its own ([`lodestone_core::may_name`]): a public peer naming `127.0.0.1`
//! or `192.168.1.1` is ignored. What sources other than the magnet and
//! connections to us file is held to a few ports per IP address and a few
//! dozen entries per IPv6 /64 ([`host_quota`]), so a list of one victim's
//! ports is no port scan. A host at its quota takes a new address only in
//! place of an idle one a less trusted source filed, so junk a PEX peer
//! names on a seeder's IP cannot keep the tracker's word for it out. An
//! IPv4-mapped IPv6 address is filed as its IPv4, so it cannot reach a
//! banned IP under another name.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::compact::is_contactable;
use lodestone_core::{host_of, may_name};

mod host_quota;

use host_quota::HostQuota;

/// Where an address came from, in the order we prefer to dial them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerSource {
    /// The magnet link's `x.pe`, or given by the user.
    Magnet,
    /// The peer connected to us.
    Incoming,
    /// A tracker of the torrent: one party the torrent names, trusted more
    /// than whoever answers in the DHT.
    Tracker,
    /// A DHT `get_peers` lookup.
    Dht,
    /// A connected peer's ut_pex message.
    Pex,
}

impl PeerSource {
    const ALL: [PeerSource; 5] = [
        PeerSource::Magnet,
        PeerSource::Incoming,
        PeerSource::Tracker,
        PeerSource::Dht,
        PeerSource::Pex,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// How a connection to an address was wrapped before the BitTorrent
/// handshake; the book remembers what worked so that the next dial starts
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapping {
    /// A plaintext BitTorrent handshake.
    Plain,
    /// An MSE/PE encryption handshake first.
    Mse,
}

/// Tunables of an [`AddressBook`].
#[derive(Debug, Clone)]
pub struct AddressBookConfig {
    /// Most addresses held.
    pub capacity: usize,
    /// Wait before the first redial of an address whose connection failed
    /// or ended; it doubles with every further end without use (failed
    /// dial or fruitless connection).
    pub first_retry: Duration,
    /// The longest wait between redials.
    pub max_retry: Duration,
    /// Failed dials in a row after which an address is forgotten; an
    /// address that answers is kept.
    pub max_failures: u32,
    /// PEX-learned addresses dialed at once before the rate applies.
    pub pex_dial_burst: u32,
    /// PEX-learned addresses dialed per second, at most, in the long run.
    pub pex_dials_per_sec: f64,
}

impl Default for AddressBookConfig {
    /// 2,000 addresses; redials after 2 s, 4 s, … up to 5 minutes; forgotten
    /// after 8 failed dials in a row (about five minutes of trying a dead
    /// address), never while it answers; PEX dials
    /// 20 at once, then 2 a second (one honest message of 50 peers is all
    /// dialed within 15 s).
    fn default() -> Self {
        Self {
            capacity: 2_000,
            first_retry: Duration::from_secs(2),
            max_retry: Duration::from_secs(300),
            max_failures: 8,
            pex_dial_burst: 20,
            pex_dials_per_sec: 2.0,
        }
    }
}

/// Where an address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// May be dialed from `due` on; `None`: never tried, dialable now.
    Idle { due: Option<Instant> },
    /// Being dialed, or connected: not offered again until it ends.
    Busy,
}

#[derive(Debug, Clone)]
struct Entry {
    source: PeerSource,
    status: Status,
    /// Ends in a row without use (failed dials, fruitless connections):
    /// what the backoff doubles on.
    without_use: u32,
    /// Failed dials in a row: what forgets the address. An address that
    /// answers is kept, however little use it was.
    failed_dials: u32,
    /// Insertion order, for fairness and deterministic ties.
    seq: u64,
    /// Distinct peers that reported it by PEX (at most [`MAX_REPORTERS`]).
    reporters: Vec<SocketAddr>,
    /// The wrapping that last worked with this address.
    wrapping: Option<Wrapping>,
    /// Whether anyone says a peer listens here: false for the address of a
    /// connection that reached us, until a source other than PEX or the
    /// peer's own `p` names it. Such an entry is forgotten when its
    /// connection ends.
    dialable: bool,
    /// For a connection that reached us: where its peer says it listens
    /// (the first report while its link lasts); for one we dialed: another
    /// address of the same peer (see [`AddressBook::alias`]). It stands for
    /// this one.
    listen: Option<SocketAddr>,
    /// For a listen address or an alias: the connection of its peer that
    /// keeps it busy, not counted as a connection of its own.
    stands_for: Option<SocketAddr>,
    /// It stands as an alias ([`AddressBook::alias`]): a ban of the
    /// connection's peer does not reach it.
    alias: bool,
    /// It counts against its host's quota ([`host_quota`]).
    on_host: bool,
    /// Dials and connections under this address that have not ended: TCP
    /// and uTP share port numbers, so a peer may reach us twice from one
    /// address (or while we dial it), and the end of one must not file the
    /// entry as ended while the other lasts. A dial counts from when it is
    /// handed out, so that its failure ends only itself.
    connections: u8,
    /// Banned or shunned while a dial or connection under it lasted: it is
    /// forgotten when the last ends, whether or not the ban list had room
    /// for it (see [`AddressBook::forget_unless_connected`]).
    doomed: bool,
}

/// Most distinct PEX reporters counted per address.
const MAX_REPORTERS: usize = 8;

/// `addr` with an IPv4-mapped IPv6 address as its IPv4, the form the book
/// files and bans under.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether two reporters are one: the same IP (or IPv6 /64: one party may
/// hold all of it), or on loopback the same address.
fn same_reporter(a: SocketAddr, b: SocketAddr) -> bool {
    if a.ip().is_loopback() || b.ip().is_loopback() {
        return a == b;
    }
    host_of(a.ip()) == host_of(b.ip())
}

/// An idle entry's place in its source's queue: never tried before
/// waiting for a redial, then earlier due, more reporters, older.
type QueueKey = (Option<Instant>, Reverse<u8>, u64, SocketAddr);

impl Entry {
    fn key(&self, addr: SocketAddr) -> Option<QueueKey> {
        match self.status {
            Status::Idle { due } => {
                Some((due, Reverse(self.reporters.len() as u8), self.seq, addr))
            }
            Status::Busy => None,
        }
    }
}

/// What happened to a connection the book handed out or was told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connection never got past the handshake.
    Failed,
    /// The connection was of use (piece data or metadata crossed it), then
    /// ended: the next failure starts the backoff afresh.
    OfUse,
    /// The connection ended before it was of use: the peer hung up, or we
    /// closed it, before anything of use crossed it, or it led to a peer
    /// connected already through another address. Backed off like a failed
    /// dial, so a peer that shakes hands and hangs up at once (a full one,
    /// say) or one with two addresses is not dialed every few seconds; but
    /// not counted as a failed dial, and it ends a run of failed dials: the
    /// address answered, and may have room later, so it is not forgotten.
    Fruitless,
    /// The torrent let a fresh connection go before its phase took it
    /// (paused, or the phase's queue was full), or the connection was lost
    /// in the metadata phase's hand-over with its end unknown: the address
    /// is filed again with its backoff as it was. (A phase that refuses a
    /// connection at its own cap reports it fruitless: dialed again soon,
    /// it would likely be refused again.)
    Unused,
    /// The peer broke the protocol or sent bad data: never again.
    Misbehaved,
    /// The address led to ourselves: that address is never dialed again,
    /// but not its IP, which honest peers may share with us behind one NAT.
    Ourselves,
}

/// Counts for displays and for explaining a stalled torrent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookStats {
    /// Addresses held.
    pub known: usize,
    /// Addresses being dialed or connected: connections, each counted
    /// once (the listen address of a peer connected to us is not dialed
    /// either, but it is the same connection). A second connection under
    /// one address, which a phase closes as a duplicate, is not counted.
    pub busy: usize,
    /// Dials that failed before the handshake completed, ever.
    pub failures: u64,
    /// Addresses refused because they are banned, ever.
    pub banned: usize,
}

/// A bounded set of peer addresses with backoff, bans and source quotas.
#[derive(Debug)]
pub struct AddressBook {
    config: AddressBookConfig,
    entries: HashMap<SocketAddr, Entry>,
    /// Idle entries per source, the next to dial first.
    queues: [BTreeSet<QueueKey>; PeerSource::ALL.len()],
    /// Per source, addresses in insertion order (stale ones skipped lazily).
    by_source: [VecDeque<(u64, SocketAddr)>; PeerSource::ALL.len()],
    counts: [usize; PeerSource::ALL.len()],
    /// Dials PEX-learned addresses may still make now (a token bucket that
    /// starts full), and when it was last topped up (`None` before the
    /// first look for an address to dial).
    pex_tokens: f64,
    pex_refilled: Option<Instant>,
    /// Banned addresses; on loopback the address, elsewhere the whole host
    /// (an IPv4 address, or an IPv6 /64, which one party may hold whole and
    /// step through to come back or to fill this list).
    banned_addrs: BTreeSet<SocketAddr>,
    banned_hosts: BTreeSet<IpAddr>,
    next_seq: u64,
    failures: u64,
    pex_dials: u64,
    /// Entries busy only because they stand for a connection from their
    /// peer ([`Entry::stands_for`]).
    standing: usize,
    /// PEX is off for good ([`AddressBook::forget_pex`]).
    pex_off: bool,
    /// Entries counted per host ([`Entry::on_host`]).
    quota: HostQuota,
}

/// Most bans remembered; past it the ban list stops growing (the
/// addresses still leave the book, when their connections end if any
/// last, which is what matters most).
const MAX_BANS: usize = 4_096;

impl AddressBook {
    /// An empty book.
    pub fn new(config: AddressBookConfig) -> Self {
        Self {
            pex_tokens: f64::from(config.pex_dial_burst),
            pex_refilled: None,
            config,
            entries: HashMap::new(),
            queues: Default::default(),
            by_source: Default::default(),
            counts: [0; PeerSource::ALL.len()],
            banned_addrs: BTreeSet::new(),
            banned_hosts: BTreeSet::new(),
            next_seq: 0,
            failures: 0,
            pex_dials: 0,
            standing: 0,
            pex_off: false,
            quota: HostQuota::default(),
        }
    }

    /// Whether `addr` is banned.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        self.banned_addrs.contains(&addr) || self.banned_hosts.contains(&host_of(addr.ip()))
    }

    /// Records an address `source` told us of, dialable at once. Returns
    /// whether it is new. Banned and unusable addresses (port 0,
    /// unspecified, broadcast or multicast IPs) are ignored, and so is a
    /// new address of a host at its quota (see the module docs), unless
    /// the magnet names it; a full book makes room as the module docs say.
    pub fn add(&mut self, addr: SocketAddr, source: PeerSource) -> bool {
        self.add_reported(canonical(addr), source, None, source != PeerSource::Magnet)
    }

    /// Records an address a connected peer, `reporter`, told us of by PEX.
    /// Returns whether it is new. Each distinct reporter moves it up among
    /// the PEX-learned addresses. An address narrower than the reporter's
    /// own (see the module docs) is ignored.
    pub fn add_pex(&mut self, addr: SocketAddr, reporter: SocketAddr) -> bool {
        !self.pex_off
            && may_name(reporter.ip(), addr.ip())
            && self.add_reported(canonical(addr), PeerSource::Pex, Some(reporter), true)
    }

    /// Files `addr`; `capped`: a new entry counts against its host's quota,
    /// and past it takes the place of a less trusted one or is refused. A
    /// reported address comes here [`canonical`]; a connection's, as the
    /// connection knows it.
    fn add_reported(
        &mut self,
        addr: SocketAddr,
        source: PeerSource,
        reporter: Option<SocketAddr>,
        capped: bool,
    ) -> bool {
        if !is_contactable(&addr) || self.is_banned(addr) {
            return false;
        }
        if let Some(entry) = self.entries.get_mut(&addr) {
            let (old, old_key) = (entry.source, entry.key(addr));
            // Anyone may name any address by PEX, the ephemeral port of a
            // connection included.
            entry.dialable |= source != PeerSource::Pex;
            if let Some(r) = reporter
                && entry.reporters.len() < MAX_REPORTERS
                && !entry.reporters.iter().any(|&known| same_reporter(known, r))
            {
                entry.reporters.push(r);
            }
            // A more trusted source vouching for it moves it up the queue.
            let vouched = source < entry.source;
            if vouched {
                entry.source = source;
                self.counts[old.index()] -= 1;
                self.counts[source.index()] += 1;
                self.by_source[source.index()].push_back((entry.seq, addr));
            }
            if let Some(key) = old_key {
                self.queues[old.index()].remove(&key);
                self.queues[entry.source.index()].insert(entry.key(addr).unwrap_or(key));
            }
            if vouched {
                // Its list grows here as on a new entry, so it is kept in
                // bounds here too (a tracker that only repeats what the
                // DHT found would otherwise lengthen it without end).
                self.compact(source);
            }
            return false;
        }
        if capped && !self.make_room_on_host(addr.ip(), source) {
            return false;
        }
        if self.entries.len() >= self.config.capacity.max(1) && !self.evict_for(source) {
            return false;
        }
        if capped {
            self.quota.add(addr.ip());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            source,
            status: Status::Idle { due: None },
            without_use: 0,
            failed_dials: 0,
            seq,
            reporters: reporter.into_iter().collect(),
            wrapping: None,
            dialable: true,
            listen: None,
            stands_for: None,
            alias: false,
            on_host: capped,
            connections: 0,
            doomed: false,
        };
        if let Some(key) = entry.key(addr) {
            self.queues[source.index()].insert(key);
        }
        self.entries.insert(addr, entry);
        self.by_source[source.index()].push_back((seq, addr));
        self.counts[source.index()] += 1;
        self.compact(source);
        true
    }

    /// Drops the stale items of a source's insertion list once they
    /// outnumber the live ones, so the list stays within a constant factor
    /// of the capacity however entries come and go.
    fn compact(&mut self, source: PeerSource) {
        let list = &mut self.by_source[source.index()];
        if list.len() <= 2 * self.config.capacity + 16 {
            return;
        }
        let entries = &self.entries;
        list.retain(|(seq, addr)| {
            entries
                .get(addr)
                .is_some_and(|e| e.seq == *seq && e.source == source)
        });
    }

    /// Records a connection that reached us: it is busy until it ends.
    /// Returns false (refuse it) if the address is banned. Unless the
    /// address was known already, it is not dialed after the connection
    /// ends: see [`AddressBook::listening`].
    pub fn incoming(&mut self, addr: SocketAddr) -> bool {
        if self.is_banned(addr) {
            return false;
        }
        let known = self.entries.get(&addr).is_some_and(|e| e.dialable);
        // A connection is no one's word: its peer is there.
        self.add_reported(addr, PeerSource::Incoming, None, false);
        if let Some(entry) = self.entries.get_mut(&addr) {
            entry.dialable = known;
        }
        // A listen address that now has a connection of its own (uTP dials
        // from where it listens) is busy with that one.
        self.stop_standing(addr);
        self.make_busy(addr);
        self.connected(addr);
        true
    }

    /// One more dial or connection under `addr` has begun.
    fn connected(&mut self, addr: SocketAddr) {
        if let Some(entry) = self.entries.get_mut(&addr) {
            entry.connections = entry.connections.saturating_add(1);
        }
    }

    /// The peer of `conn`, a connection that reached us, listens at
    /// `listen` (its extension handshake's `p`). That address is not
    /// dialed while the connection lasts and is dialable after, like any
    /// other; one being dialed or connected already is left to that. Only
    /// a connection's first report counts, unless the link it made (or an
    /// alias made) has gone stale: a later report then takes its place.
    pub fn listening(&mut self, conn: SocketAddr, listen: SocketAddr) {
        // The word of a banned peer (see `forget_unless_connected`).
        if self.entries.get(&conn).is_some_and(|e| e.doomed) {
            return;
        }
        // A link that no longer stands for `conn` (its address reached us
        // on a connection of its own, was banned, or was busy when linked)
        // would leave the peer's listen address to be dialed, only to meet
        // the duplicate rule.
        let linked = self
            .entries
            .get(&conn)
            .and_then(|e| e.listen)
            .is_some_and(|l| l == conn || self.standing_for(l, conn).is_some());
        match self.entries.get_mut(&conn) {
            // A busy entry standing for a connection is no connection.
            Some(entry) if entry.status == Status::Busy && entry.stands_for.is_none() => {
                if linked {
                    return;
                }
                entry.listen = Some(listen);
                if listen == conn {
                    entry.dialable = true;
                    return;
                }
            }
            // The report and the connection's end come by different
            // queues: if the end came first (or the report is stale), the
            // address is filed like any other, dialable at once.
            _ => {
                self.add(listen, PeerSource::Incoming);
                return;
            }
        }
        if self
            .entries
            .get(&listen)
            .is_some_and(|e| e.status == Status::Busy)
        {
            return;
        }
        self.add(listen, PeerSource::Incoming);
        self.make_busy(listen);
        if let Some(entry) = self.entries.get_mut(&listen) {
            entry.stands_for = Some(conn);
            self.standing += 1;
        }
    }

    /// `other` is another address of the peer connected at `conn`, a
    /// connection we dialed (the two met under one peer id): `other` is not
    /// dialed while `conn` lasts, then waits its turn as it would have,
    /// with its own source and backoff. Nothing happens unless `other` is
    /// a known, idle, dialable address and `conn` a connection with no
    /// address standing for it yet. A ban of `conn`'s peer does not reach
    /// `other`: a peer id proves nothing, and a liar could name an honest
    /// peer's.
    pub fn alias(&mut self, conn: SocketAddr, other: SocketAddr) {
        // A `listen` that no longer stands for `conn` (it reached us on a
        // connection of its own, was banned, or was busy when linked) is
        // stale and may be replaced.
        let conn_free = self.entries.get(&conn).is_some_and(|e| {
            e.status == Status::Busy
                && e.stands_for.is_none()
                && e.listen
                    .is_none_or(|l| self.standing_for(l, conn).is_none())
        });
        let other_idle = self
            .entries
            .get(&other)
            .is_some_and(|e| e.dialable && e.status != Status::Busy);
        if other == conn || !conn_free || !other_idle {
            return;
        }
        self.make_busy(other);
        if let Some(entry) = self.entries.get_mut(&other) {
            entry.stands_for = Some(conn);
            entry.alias = true;
            self.standing += 1;
        }
        if let Some(entry) = self.entries.get_mut(&conn) {
            entry.listen = Some(other);
        }
    }

    /// The entry at `addr`, if it stands for the connection at `conn`.
    fn standing_for(&self, addr: SocketAddr, conn: SocketAddr) -> Option<&Entry> {
        self.entries
            .get(&addr)
            .filter(|e| e.stands_for == Some(conn))
    }

    /// The entry at `addr` no longer stands for a connection.
    fn stop_standing(&mut self, addr: SocketAddr) {
        if let Some(entry) = self.entries.get_mut(&addr)
            && entry.stands_for.take().is_some()
        {
            entry.alias = false;
            self.standing -= 1;
        }
    }

    /// Takes an entry out of its queue: dialed or connected.
    fn make_busy(&mut self, addr: SocketAddr) {
        if let Some(entry) = self.entries.get_mut(&addr) {
            if let Some(key) = entry.key(addr) {
                self.queues[entry.source.index()].remove(&key);
            }
            entry.status = Status::Busy;
        }
    }

    /// Takes the next address to dial at `now`, marking it busy: the most
    /// trusted source with one due, within the PEX dial budget.
    pub fn next_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        self.refill_pex(now);
        let source = PeerSource::ALL.into_iter().find(|&s| {
            let due = self.queues[s.index()]
                .first()
                .is_some_and(|&(due, ..)| due.is_none_or(|d| d <= now));
            due && (s != PeerSource::Pex || self.pex_tokens >= 1.0)
        })?;
        let (.., addr) = self.queues[source.index()].pop_first()?;
        if source == PeerSource::Pex {
            self.pex_tokens -= 1.0;
            self.pex_dials += 1;
        }
        self.make_busy(addr);
        self.connected(addr);
        Some(addr)
    }

    /// A holepunch relay (BEP 55) asks us to dial `addr` now; `asked`: we
    /// asked for this rendezvous. Its word counts as PEX does, and the dial
    /// comes out of the same budget, so a hostile relay cannot aim our
    /// dials faster than a PEX flood could. Refused (false) for a banned or
    /// unusable address, an IPv4-mapped one (the caller passes it as its
    /// IPv4), one being dialed or connected, one waiting out its backoff
    /// that we did not ask for (or a relay could dial it as often as it
    /// liked), or with the budget spent; otherwise the address is busy
    /// until [`AddressBook::ended`].
    pub fn holepunch(&mut self, now: Instant, addr: SocketAddr, asked: bool) -> bool {
        self.refill_pex(now);
        if self.pex_tokens < 1.0 || self.pex_off || canonical(addr) != addr {
            return false;
        }
        self.add_reported(addr, PeerSource::Pex, None, true);
        let dialable = |status: Status| match status {
            Status::Busy => false,
            Status::Idle { due } => asked || due.is_none_or(|d| d <= now),
        };
        if !self.entries.get(&addr).is_some_and(|e| dialable(e.status)) {
            return false;
        }
        self.make_busy(addr);
        self.connected(addr);
        self.pex_tokens -= 1.0;
        self.pex_dials += 1;
        true
    }

    /// The first peer that told us of `addr` by PEX: whom to ask for a
    /// rendezvous (BEP 55) when we cannot reach it.
    pub fn reporter(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.entries.get(&addr)?.reporters.first().copied()
    }

    /// Tops up the PEX dial budget for the time since the last call.
    fn refill_pex(&mut self, now: Instant) {
        let last = self.pex_refilled.replace(now).unwrap_or(now);
        let earned =
            now.saturating_duration_since(last).as_secs_f64() * self.config.pex_dials_per_sec;
        self.pex_tokens = (self.pex_tokens + earned).min(f64::from(self.config.pex_dial_burst));
    }

    /// Whether [`Self::next_dial`] would give an address at `now`: one is
    /// due, within the PEX dial budget.
    pub fn has_due(&mut self, now: Instant) -> bool {
        self.refill_pex(now);
        self.poll_timeout(now).is_some_and(|due| due <= now)
    }

    /// When the next address becomes dialable (`now` if one is), if ever.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        PeerSource::ALL
            .into_iter()
            .filter_map(|s| {
                let &(due, ..) = self.queues[s.index()].first()?;
                let due = due.unwrap_or(now);
                if s != PeerSource::Pex || self.pex_tokens >= 1.0 {
                    return Some(due);
                }
                // The budget's next whole dial (never sooner than a
                // millisecond, so a zero rate cannot spin).
                let missing = (1.0 - self.pex_tokens) / self.config.pex_dials_per_sec;
                let wait = Duration::try_from_secs_f64(missing)
                    .unwrap_or(Duration::MAX)
                    .max(Duration::from_millis(1));
                Some(due.max(now.checked_add(wait)?))
            })
            .min()
    }

    /// Dials of PEX-learned addresses so far.
    pub fn pex_dials(&self) -> u64 {
        self.pex_dials
    }

    /// Turns PEX off for good (a magnet turned out to be a private torrent,
    /// which must not use it): idle addresses learned only by PEX are
    /// forgotten now, busy ones when they end, and PEX adds nothing more.
    pub fn forget_pex(&mut self) {
        self.pex_off = true;
        let queue = std::mem::take(&mut self.queues[PeerSource::Pex.index()]);
        for (.., addr) in queue {
            if let Some(entry) = self.entries.remove(&addr) {
                self.forget(addr, &entry);
            }
        }
    }

    /// A connection handed out by [`AddressBook::next_dial`] or recorded by
    /// [`AddressBook::incoming`] ended (or never began).
    pub fn ended(&mut self, now: Instant, addr: SocketAddr, outcome: Outcome) {
        let blamed = matches!(outcome, Outcome::Misbehaved | Outcome::Ourselves);
        if let Some(entry) = self.entries.get_mut(&addr) {
            entry.connections = entry.connections.saturating_sub(1);
            // Another connection under this address lasts: it ends later.
            if entry.connections > 0 && !blamed {
                return;
            }
        }
        self.stop_standing(addr);
        // A connection's entry lasts as long as it does (a ban keeps it:
        // see `forget_unless_connected`).
        if let Some(listen) = self.entries.get_mut(&addr).and_then(|e| e.listen.take()) {
            self.release(now, listen, addr, outcome);
        }
        match outcome {
            Outcome::Misbehaved => return self.ban(addr),
            Outcome::Ourselves => return self.shun(addr),
            _ => {}
        }
        let MapEntry::Occupied(mut slot) = self.entries.entry(addr) else {
            return;
        };
        let entry = slot.get_mut();
        match outcome {
            Outcome::Failed => {
                entry.without_use = entry.without_use.saturating_add(1);
                entry.failed_dials += 1;
                self.failures += 1;
            }
            // It answered: kept, however little use it was.
            Outcome::Fruitless => {
                entry.without_use = entry.without_use.saturating_add(1);
                entry.failed_dials = 0;
            }
            Outcome::Unused => {}
            // It was of use: the next failure starts the backoff afresh.
            Outcome::OfUse => {
                entry.without_use = 0;
                entry.failed_dials = 0;
            }
            // Banned or shunned above.
            Outcome::Misbehaved | Outcome::Ourselves => {}
        }
        let pex_off = self.pex_off && entry.source == PeerSource::Pex;
        let unreachable = entry.failed_dials >= self.config.max_failures;
        if !entry.dialable || pex_off || unreachable {
            let entry = slot.remove();
            self.forget(addr, &entry);
            return;
        }
        self.requeue(now, addr);
    }

    /// The connection `conn` ended with `outcome`: the listen address of
    /// its peer, if it still stands for it, waits its turn again (with its
    /// own backoff: we have not reached it), or is banned with it.
    fn release(&mut self, now: Instant, listen: SocketAddr, conn: SocketAddr, outcome: Outcome) {
        let Some(entry) = self.standing_for(listen, conn) else {
            return;
        };
        let (alias, from_pex) = (entry.alias, entry.source == PeerSource::Pex);
        self.stop_standing(listen);
        if outcome == Outcome::Misbehaved && !alias {
            self.ban(listen);
        } else if self.pex_off && from_pex {
            // Standing, it was busy when PEX was turned off (a magnet
            // found private): forgotten now, as it would have been then.
            if let Some(entry) = self.entries.remove(&listen) {
                self.forget(listen, &entry);
            }
        } else {
            self.requeue(now, listen);
        }
    }

    /// Files an entry as idle, due after the backoff its ends without use
    /// earned; one banned while it was busy is forgotten instead.
    fn requeue(&mut self, now: Instant, addr: SocketAddr) {
        let Some(entry) = self.entries.get_mut(&addr) else {
            return;
        };
        if entry.doomed {
            if let Some(entry) = self.entries.remove(&addr) {
                self.forget(addr, &entry);
            }
            return;
        }
        if let Some(key) = entry.key(addr) {
            self.queues[entry.source.index()].remove(&key);
        }
        let exponent = entry.without_use.saturating_sub(1).min(16);
        let wait = self
            .config
            .first_retry
            .saturating_mul(1 << exponent)
            .min(self.config.max_retry);
        entry.status = Status::Idle {
            due: Some(now + wait),
        };
        if let Some(key) = entry.key(addr) {
            self.queues[entry.source.index()].insert(key);
        }
    }

    /// Never dial `addr` again. On loopback only that address is banned
    /// (local swarms share one IP); elsewhere its whole host: its IPv4
    /// address, or its IPv6 /64.
    pub fn ban(&mut self, addr: SocketAddr) {
        let ip = addr.ip().to_canonical();
        if ip.is_loopback() {
            return self.shun(addr);
        }
        let host = host_of(ip);
        if self.banned_addrs.len() + self.banned_hosts.len() < MAX_BANS {
            self.banned_hosts.insert(host);
        }
        let doomed: Vec<SocketAddr> = self
            .entries
            .keys()
            .filter(|a| host_of(a.ip().to_canonical()) == host)
            .copied()
            .collect();
        for a in doomed {
            self.forget_unless_connected(a);
        }
    }

    /// Never dial `addr` again, that address alone.
    fn shun(&mut self, addr: SocketAddr) {
        if self.banned_addrs.len() + self.banned_hosts.len() < MAX_BANS {
            self.banned_addrs.insert(canonical(addr));
        }
        self.forget_unless_connected(addr);
    }

    /// Forgets the entry of a banned address now, or, while a dial or a
    /// connection under it lasts, when the last ends (see
    /// [`Self::requeue`]): until then it counts among the busy, whose
    /// places the session's cap must not hand out again.
    fn forget_unless_connected(&mut self, addr: SocketAddr) {
        let MapEntry::Occupied(mut slot) = self.entries.entry(addr) else {
            return;
        };
        if slot.get().connections > 0 {
            slot.get_mut().doomed = true;
            return;
        }
        let entry = slot.remove();
        self.forget(addr, &entry);
    }

    /// The wrapping that last worked with `addr`, if any did.
    pub fn wrapping(&self, addr: SocketAddr) -> Option<Wrapping> {
        self.entries.get(&addr).and_then(|e| e.wrapping)
    }

    /// Records that `wrapping` worked with `addr`.
    pub fn worked(&mut self, addr: SocketAddr, wrapping: Wrapping) {
        if let Some(entry) = self.entries.get_mut(&addr) {
            entry.wrapping = Some(wrapping);
        }
    }

    /// Counts for displays.
    pub fn stats(&self) -> BookStats {
        BookStats {
            known: self.entries.len(),
            // Every idle entry waits in its source's queue; the rest are
            // busy. Derived, so no update can forget it.
            busy: self.entries.len()
                - self.queues.iter().map(BTreeSet::len).sum::<usize>()
                - self.standing,
            failures: self.failures,
            banned: self.banned_addrs.len() + self.banned_hosts.len(),
        }
    }

    /// Addresses held from `source`.
    pub fn count(&self, source: PeerSource) -> usize {
        self.counts[source.index()]
    }

    /// Removes an entry's traces (its map slot is already gone).
    fn forget(&mut self, addr: SocketAddr, entry: &Entry) {
        if let Some(key) = entry.key(addr) {
            self.queues[entry.source.index()].remove(&key);
        }
        if entry.stands_for.is_some() {
            self.standing -= 1;
        }
        self.counts[entry.source.index()] -= 1;
        if entry.on_host {
            self.quota.remove(addr.ip());
        }
    }

    /// Makes room under the quota of `ip` for an entry from `source`, if it
    /// is full, by forgetting one idle entry under the full cap that a less
    /// trusted source filed: the least trusted, then the oldest. Returns
    /// false when the quota stays full.
    fn make_room_on_host(&mut self, ip: IpAddr, source: PeerSource) -> bool {
        let Some(crowd) = self.quota.crowding(ip) else {
            return true;
        };
        // Nothing is less trusted than PEX: no search.
        if source == PeerSource::Pex {
            return false;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(a, e)| {
                e.on_host && e.source > source && e.status != Status::Busy && crowd.includes(a.ip())
            })
            .max_by_key(|(_, e)| (e.source, Reverse(e.seq)))
            .map(|(a, _)| *a);
        let Some(victim) = victim else {
            return false;
        };
        if let Some(entry) = self.entries.remove(&victim) {
            self.forget(victim, &entry);
        }
        true
    }

    /// Makes room for one entry from `newcomer` by dropping the oldest idle
    /// entry of the largest source. Returns false when nothing can go
    /// (every entry of that source is busy).
    fn evict_for(&mut self, newcomer: PeerSource) -> bool {
        // Counting the newcomer in makes a flooding source evict its own.
        let largest = PeerSource::ALL
            .into_iter()
            .max_by_key(|&s| (self.counts[s.index()] + usize::from(s == newcomer), s))
            .unwrap_or(newcomer);
        let list = &mut self.by_source[largest.index()];
        let mut skipped = Vec::new();
        let mut victim = None;
        while let Some((seq, addr)) = list.pop_front() {
            match self.entries.get(&addr) {
                // Stale: the entry went away or was re-filed elsewhere.
                Some(e) if e.seq == seq && e.source == largest => {
                    if e.status == Status::Busy {
                        skipped.push((seq, addr));
                    } else {
                        victim = Some(addr);
                        break;
                    }
                }
                _ => {}
            }
        }
        // Busy entries keep their place at the front.
        for item in skipped.into_iter().rev() {
            list.push_front(item);
        }
        let Some(addr) = victim else {
            return false;
        };
        if let Some(entry) = self.entries.remove(&addr) {
            self.forget(addr, &entry);
        }
        true
    }
}

#[cfg(test)]
mod tests;
