//! The sans-IO state machine that assembles one torrent's info dictionary
//! from ut_metadata peers.
//!
//! # Call shape
//!
//! The driver reports peers whose extension handshake offered ut_metadata
//! ([`Fetch::peer_ready`]), the ut_metadata messages they send
//! ([`Fetch::message`]), disconnections ([`Fetch::peer_gone`]) and timer
//! expiry ([`Fetch::handle_timeout`]). After each input it drains
//! [`Fetch::poll_action`] (requests to send, peers to drop), sleeps until
//! [`Fetch::poll_timeout`], and checks [`Fetch::take_verified`]. Time is an
//! argument; nothing here reads a clock.
//!
//! # Strategy
//!
//! * **Attempts.** Pieces are assembled for one metadata size at a time (an
//!   *attempt*). Peers that announced another size are left idle until the
//!   attempt has nobody left to ask; then the size most peers agree on wins.
//! * **Speed.** The first ready peer is asked at once, and each peer gets up
//!   to [`FetchConfig::requests_per_peer`] requests in flight, handed out
//!   round-robin so every peer that offers ut_metadata carries a share. Most
//!   info dictionaries are one piece, fetched in one round trip. A peer that
//!   runs dry takes requests over from a snubbed or more heavily loaded peer
//!   (both answers are welcome, the first wins), so a slow peer never holds
//!   up the end.
//! * **Bounds.** `metadata_size` is checked against
//!   [`FetchConfig::max_metadata_size`] before anything is kept, and memory
//!   grows only with the piece bytes actually received.
//! * **Hostile peers.** Every piece must be the one asked for, of exactly the
//!   right length. A peer that misses its deadline is snubbed (one request at
//!   a time) and dropped after [`FetchConfig::max_timeouts`] expiries; one
//!   that rejects is not asked for that piece again while anyone else can be,
//!   and is dropped after [`FetchConfig::max_rejects`] rejects. When the assembled bytes fail the
//!   SHA-1 check and a single peer supplied them, that peer is dropped. When
//!   several did, blame cannot be assigned, so the fetch switches to
//!   single-source attempts: one peer at a time supplies everything (reusing
//!   what it already sent), and a failure then convicts exactly that peer.
//!   Honest peers are never dropped for a liar's bytes.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use lodestone_core::InfoHash;
use sha1::{Digest, Sha1};

use crate::message::{Message, piece_count, piece_len};

/// Tunables of a [`Fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Largest `metadata_size` accepted from a peer. Peers announcing more
    /// (or zero) are dropped before anything is allocated for them.
    pub max_metadata_size: u32,
    /// How long a peer may stay silent while it owes us answers.
    pub request_timeout: Duration,
    /// Requests kept in flight per peer: enough to fetch 128 KiB in one
    /// round trip. Deeper is slower with libtorrent, which answers at once
    /// only while its send buffer holds under 160 KiB and otherwise queues
    /// the request for its once-a-second tick (measured against 2.0.8 with
    /// 1.8 MB of metadata: 8 deep about 30 ms, 16 deep 225 ms, 32 deep 3 s).
    pub requests_per_peer: u32,
    /// Rejects after which a peer is dropped (fewer when the metadata has
    /// fewer pieces: a peer that rejected every piece has nothing to give).
    pub max_rejects: u32,
    /// Deadline expiries after which a peer is dropped.
    pub max_timeouts: u32,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_metadata_size: 32 << 20,
            request_timeout: Duration::from_secs(5),
            requests_per_peer: 8,
            max_rejects: 3,
            max_timeouts: 2,
        }
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send `message` to `peer` as an extended message with the id the peer
    /// gave ut_metadata in its handshake.
    Send {
        /// Recipient.
        peer: P,
        /// The message; fetching only ever sends requests.
        message: Message<'static>,
    },
    /// Disconnect `peer`: it misbehaved or is useless. The fetch has already
    /// forgotten it; a later [`Fetch::peer_gone`] for it is harmless.
    Drop {
        /// The peer.
        peer: P,
        /// Why, for logs and bans.
        reason: DropReason,
    },
}

/// Why a peer was dropped. All are the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// It announced a `metadata_size` above the configured cap.
    #[error("announced metadata_size {size} exceeds the limit of {limit}")]
    MetadataTooLarge {
        /// What it announced.
        size: u64,
        /// The cap in force.
        limit: u32,
    },
    /// It announced a `metadata_size` of zero.
    #[error("announced metadata_size 0")]
    MetadataEmpty,
    /// A `data` message's `total_size` contradicts the size being assembled.
    #[error("data message says total_size {announced}, expected {expected}")]
    WrongTotalSize {
        /// What the message said.
        announced: u64,
        /// The size being assembled.
        expected: u32,
    },
    /// A piece of the wrong length.
    #[error("piece {piece} has {len} bytes, expected {expected}")]
    WrongPieceLength {
        /// Piece index.
        piece: u32,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        expected: u32,
    },
    /// A repeated extension handshake announced another `metadata_size`:
    /// one torrent's info dictionary has one size. (Switching sizes back and
    /// forth made every attempt start over, so a liar could keep an honest
    /// peer's answers out until the fetch timed out.)
    #[error("announced metadata_size {now} after {before}")]
    SizeChanged {
        /// What it announced first.
        before: u32,
        /// What it announced now.
        now: u64,
    },
    /// The metadata it supplied (alone) does not hash to the infohash.
    #[error("metadata it sent does not match the infohash")]
    HashMismatch,
    /// It rejected too many requests.
    #[error("rejected too many metadata requests")]
    Rejected,
    /// It let too many deadlines pass.
    #[error("did not answer metadata requests in time")]
    TimedOut,
}

impl DropReason {
    /// Whether the peer broke the protocol or sent bad data, so that it is
    /// not worth connecting to again; `false` when it was merely of no use
    /// for the metadata (slow, or without it), which another phase or a
    /// later connection may still find useful.
    pub fn misbehaved(&self) -> bool {
        match self {
            DropReason::MetadataTooLarge { .. }
            | DropReason::MetadataEmpty
            | DropReason::WrongTotalSize { .. }
            | DropReason::WrongPieceLength { .. }
            | DropReason::SizeChanged { .. }
            | DropReason::HashMismatch => true,
            DropReason::Rejected | DropReason::TimedOut => false,
        }
    }
}

/// Counters for progress reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Peers currently known to offer ut_metadata.
    pub peers: usize,
    /// Size being assembled, once an attempt has started.
    pub metadata_size: Option<u32>,
    /// Pieces in the current attempt.
    pub pieces_total: u32,
    /// Pieces of the current attempt already held.
    pub pieces_have: u32,
    /// Pieces accepted since the start, over all attempts.
    pub pieces_received: u64,
    /// Assembled metadata that failed the SHA-1 check.
    pub hash_failures: u32,
    /// Peers dropped so far.
    pub peers_dropped: u32,
}

/// Identity a driver gives its peers: a socket address, a connection number.
pub trait PeerKey: Copy + Eq + fmt::Debug {}
impl<T: Copy + Eq + fmt::Debug> PeerKey for T {}

struct Peer<P> {
    key: P,
    /// Validated `metadata_size` it announced, if any.
    size: Option<u32>,
    /// Pieces requested in this attempt and not yet answered.
    asked: Vec<u32>,
    /// When it must next answer, while `asked` is not empty.
    deadline: Option<Instant>,
    /// Requests that expired: a late answer is still welcome.
    late: BTreeSet<u32>,
    /// Pieces it rejected in this attempt: not asked again.
    rejected: BTreeSet<u32>,
    rejects: u32,
    timeouts: u32,
    /// Missed a deadline and has not delivered since: one request at a time.
    snubbed: bool,
    /// Already had its single-source attempt.
    tried_alone: bool,
}

impl<P> Peer<P> {
    fn new(key: P, size: Option<u32>) -> Self {
        Self {
            key,
            size,
            asked: Vec::new(),
            deadline: None,
            late: BTreeSet::new(),
            rejected: BTreeSet::new(),
            rejects: 0,
            timeouts: 0,
            snubbed: false,
            tried_alone: false,
        }
    }

    fn reset_attempt(&mut self) {
        self.asked.clear();
        self.deadline = None;
        self.late.clear();
        self.rejected.clear();
    }

    /// Takes `piece` off its books; whether it was owed an answer for it.
    fn answered(&mut self, piece: u32, now: Instant, timeout: Duration) -> bool {
        if let Some(i) = self.asked.iter().position(|&p| p == piece) {
            self.asked.swap_remove(i);
            // Progress: the remaining requests get a fresh window, so a
            // peer draining a deep pipeline slowly is not punished.
            self.deadline = (!self.asked.is_empty()).then(|| now + timeout);
            true
        } else {
            self.late.remove(&piece)
        }
    }
}

enum Slot<P> {
    Missing,
    Requested(P),
    Have { from: P, bytes: Vec<u8> },
}

struct Attempt<P> {
    size: u32,
    slots: Vec<Slot<P>>,
    /// Indices of `Missing` slots, lowest first.
    missing: BTreeSet<u32>,
    have: u32,
    /// In single-source mode, the only peer asked.
    source: Option<P>,
}

impl<P: PeerKey> Attempt<P> {
    fn new(size: u32, source: Option<P>) -> Self {
        let count = piece_count(size);
        Self {
            size,
            slots: (0..count).map(|_| Slot::Missing).collect(),
            missing: (0..count).collect(),
            have: 0,
            source,
        }
    }

    fn release(&mut self, peer: P, piece: u32) {
        if let Some(slot) = self.slots.get_mut(piece as usize)
            && matches!(slot, Slot::Requested(p) if *p == peer)
        {
            *slot = Slot::Missing;
            self.missing.insert(piece);
        }
    }

    fn accepts(&self, peer: &Peer<P>) -> bool {
        match self.source {
            Some(source) => source == peer.key,
            None => peer.size.is_none_or(|s| s == self.size),
        }
    }
}

/// Pieces of a failed parallel attempt, kept so that a single-source attempt
/// can reuse what its peer already sent.
struct Stash<P> {
    size: u32,
    pieces: Vec<(u32, P, Vec<u8>)>,
}

/// Fetches the info dictionary of one infohash from many peers.
pub struct Fetch<P> {
    info_hash: InfoHash,
    config: FetchConfig,
    peers: Vec<Peer<P>>,
    attempt: Option<Attempt<P>>,
    /// After an unattributable hash failure: one peer at a time.
    single_source: bool,
    stash: Option<Stash<P>>,
    /// Peers convicted of sending bad metadata; refused if they come back.
    banned: Vec<P>,
    actions: VecDeque<Action<P>>,
    verified: Option<Vec<u8>>,
    finished: bool,
    stats: FetchStats,
}

impl<P: PeerKey> Fetch<P> {
    /// A fetch of the metadata whose SHA-1 is `info_hash`.
    pub fn new(info_hash: InfoHash, config: FetchConfig) -> Self {
        Self {
            info_hash,
            config,
            peers: Vec::new(),
            attempt: None,
            single_source: false,
            stash: None,
            banned: Vec::new(),
            actions: VecDeque::new(),
            verified: None,
            finished: false,
            stats: FetchStats::default(),
        }
    }

    /// The infohash being fetched.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// `peer` completed its extension handshake offering ut_metadata, with
    /// the `metadata_size` it announced (if any). A second call for a known
    /// peer (BEP 10 allows repeated handshakes) may announce the size it
    /// lacked before; announcing another size drops it
    /// ([`DropReason::SizeChanged`]), and one without a size changes nothing.
    pub fn peer_ready(&mut self, now: Instant, peer: P, metadata_size: Option<u64>) {
        if self.finished {
            return;
        }
        let known = self.peers.iter().find(|p| p.key == peer).map(|p| p.size);
        match (known, metadata_size) {
            (Some(Some(before)), Some(size)) if size != u64::from(before) => {
                let reason = DropReason::SizeChanged { before, now: size };
                return self.drop_peer(now, peer, reason);
            }
            (Some(_), None) => return,
            _ => {}
        }
        if self.banned.contains(&peer) {
            self.drop_peer(now, peer, DropReason::HashMismatch);
            return;
        }
        let size = match metadata_size {
            None => None,
            Some(0) => return self.drop_peer(now, peer, DropReason::MetadataEmpty),
            Some(size) => match u32::try_from(size) {
                Ok(size) if size <= self.config.max_metadata_size => Some(size),
                _ => {
                    let limit = self.config.max_metadata_size;
                    return self.drop_peer(now, peer, DropReason::MetadataTooLarge { size, limit });
                }
            },
        };
        match self.peers.iter().position(|p| p.key == peer) {
            Some(i) if self.peers[i].size == size => {}
            Some(i) => {
                self.release_all(i);
                self.peers[i].size = size;
            }
            None => self.peers.push(Peer::new(peer, size)),
        }
        self.progress(now, true);
    }

    /// `peer`'s connection closed; its outstanding requests go to others.
    pub fn peer_gone(&mut self, now: Instant, peer: P) {
        if let Some(i) = self.peers.iter().position(|p| p.key == peer) {
            self.forget(i);
            self.progress(now, false);
        }
    }

    /// A ut_metadata message from `peer`. Requests are not the fetch's
    /// business (see [`crate::serve`]) and are ignored here, as are unknown
    /// types and answers nobody asked for. Returns whether it was a piece
    /// we asked `peer` for: the peer was of use.
    pub fn message(&mut self, now: Instant, peer: P, message: &Message<'_>) -> bool {
        if self.finished {
            return false;
        }
        let Some(i) = self.peers.iter().position(|p| p.key == peer) else {
            return false;
        };
        match *message {
            Message::Data {
                piece,
                total_size,
                data,
            } => return self.on_data(now, i, piece, total_size, data),
            Message::Reject { piece } => self.on_reject(now, i, piece),
            Message::Request { .. } | Message::Unknown { .. } => {}
        }
        false
    }

    /// Releases the requests of every peer whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let mut i = 0;
        while i < self.peers.len() {
            let peer = &mut self.peers[i];
            if peer.deadline.is_some_and(|d| d <= now) {
                peer.deadline = None;
                peer.snubbed = true;
                peer.timeouts += 1;
                let expired = std::mem::take(&mut peer.asked);
                peer.late.extend(expired.iter().copied());
                let key = peer.key;
                if let Some(attempt) = &mut self.attempt {
                    for piece in expired {
                        attempt.release(key, piece);
                    }
                }
                if self.peers[i].timeouts >= self.config.max_timeouts {
                    self.forget(i);
                    self.push_drop(key, DropReason::TimedOut);
                    continue;
                }
            }
            i += 1;
        }
        self.progress(now, false);
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// When [`Fetch::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.peers.iter().filter_map(|p| p.deadline).min()
    }

    /// The verified info dictionary bytes, once (SHA-1 equals the infohash).
    pub fn take_verified(&mut self) -> Option<Vec<u8>> {
        self.verified.take()
    }

    /// Whether the metadata has been assembled and verified.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Progress counters.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            peers: self.peers.len(),
            metadata_size: self.attempt.as_ref().map(|a| a.size),
            pieces_total: self.attempt.as_ref().map_or(0, |a| piece_count(a.size)),
            pieces_have: self.attempt.as_ref().map_or(0, |a| a.have),
            ..self.stats
        }
    }

    /// Whether `data` answered a request of ours (what follows may still
    /// find it wrong and drop the peer).
    fn on_data(
        &mut self,
        now: Instant,
        i: usize,
        piece: u32,
        total: Option<u64>,
        data: &[u8],
    ) -> bool {
        let answered = self.attempt.is_some()
            && self.peers[i].answered(piece, now, self.config.request_timeout);
        if answered {
            self.take_piece(now, i, piece, total, data);
        }
        // Otherwise unsolicited, a duplicate, or from an abandoned attempt.
        answered
    }

    /// A piece that answered our request, checked and stored.
    fn take_piece(&mut self, now: Instant, i: usize, piece: u32, total: Option<u64>, data: &[u8]) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        let peer = &mut self.peers[i];
        let key = peer.key;
        // Whatever happens next, this peer no longer holds the piece.
        attempt.release(key, piece);
        let expected = attempt.size;
        if let Some(announced) = total
            && announced != u64::from(expected)
        {
            return self.drop_peer(
                now,
                key,
                DropReason::WrongTotalSize {
                    announced,
                    expected,
                },
            );
        }
        // `answered` only matches pieces we asked for, all within range.
        let want = piece_len(expected, piece).unwrap_or(0);
        if data.len() != want as usize {
            let reason = DropReason::WrongPieceLength {
                piece,
                len: data.len(),
                expected: want,
            };
            return self.drop_peer(now, key, reason);
        }
        peer.snubbed = false;
        let Some(slot) = attempt.slots.get_mut(piece as usize) else {
            return;
        };
        match slot {
            Slot::Have { .. } => return,
            Slot::Requested(other) => {
                // Its request is moot; free the pipeline slot it holds.
                let other = *other;
                if let Some(o) = self.peers.iter_mut().find(|p| p.key == other) {
                    o.asked.retain(|&p| p != piece);
                    if o.asked.is_empty() {
                        o.deadline = None;
                    }
                }
            }
            Slot::Missing => {
                attempt.missing.remove(&piece);
            }
        }
        *slot = Slot::Have {
            from: key,
            bytes: data.to_vec(),
        };
        attempt.have += 1;
        self.stats.pieces_received += 1;
        if attempt.have == piece_count(attempt.size) {
            self.verify(now);
        } else {
            self.progress(now, false);
        }
    }

    fn on_reject(&mut self, now: Instant, i: usize, piece: u32) {
        let peer = &mut self.peers[i];
        if !peer.answered(piece, now, self.config.request_timeout) {
            return;
        }
        peer.rejected.insert(piece);
        peer.rejects += 1;
        let key = peer.key;
        let mut limit = self.config.max_rejects;
        if let Some(attempt) = &mut self.attempt {
            attempt.release(key, piece);
            limit = limit.min(piece_count(attempt.size));
        }
        if self.peers[i].rejects >= limit {
            return self.drop_peer(now, key, DropReason::Rejected);
        }
        self.progress(now, false);
    }

    /// All pieces are in: hash them, and either finish or assign blame.
    fn verify(&mut self, now: Instant) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let mut bytes = Vec::with_capacity(attempt.size as usize);
        let mut pieces = Vec::with_capacity(attempt.slots.len());
        for (index, slot) in attempt.slots.into_iter().enumerate() {
            if let Slot::Have { from, bytes: piece } = slot {
                bytes.extend_from_slice(&piece);
                pieces.push((index as u32, from, piece));
            }
        }
        if Sha1::digest(&bytes).as_slice() == self.info_hash.as_bytes() {
            self.finished = true;
            self.verified = Some(bytes);
            self.peers.clear();
            return;
        }
        self.stats.hash_failures += 1;
        let mut contributors: Vec<P> = Vec::new();
        for (_, from, _) in &pieces {
            if !contributors.contains(from) {
                contributors.push(*from);
            }
        }
        for peer in &mut self.peers {
            peer.reset_attempt();
        }
        if let [liar] = contributors[..] {
            self.banned.push(liar);
            self.drop_peer(now, liar, DropReason::HashMismatch);
        } else {
            self.single_source = true;
            self.stash = Some(Stash {
                size: attempt.size,
                pieces,
            });
            self.progress(now, false);
        }
    }

    /// Starts a new attempt if the current one cannot make progress (or, on
    /// `recount`, if more peers now agree on another size), then hands out
    /// requests.
    fn progress(&mut self, now: Instant, recount: bool) {
        if self.finished {
            return;
        }
        let next = match &self.attempt {
            Some(a) if self.peers.iter().any(|p| a.accepts(p)) => {
                if recount && a.source.is_none() {
                    // A first peer with a bogus size must not hold the
                    // others hostage: switch when more peers disagree.
                    let votes = |size| self.peers.iter().filter(|p| p.size == Some(size)).count();
                    self.majority_size()
                        .filter(|&s| s != a.size && votes(s) > votes(a.size))
                        .map(|s| Attempt::new(s, None))
                } else {
                    None
                }
            }
            // Nobody left to ask: try what the remaining peers offer, but
            // keep the pieces if they offer nothing new.
            _ if self.single_source => self.single_source_attempt(),
            _ => self.majority_size().map(|s| Attempt::new(s, None)),
        };
        if let Some(next) = next {
            for peer in &mut self.peers {
                peer.reset_attempt();
            }
            self.attempt = Some(next);
        }
        self.schedule(now);
    }

    /// The announced size most peers agree on; ties go to the peer that was
    /// ready first, so the first peer is asked without waiting for others.
    fn majority_size(&self) -> Option<u32> {
        let mut best: Option<(u32, usize)> = None;
        for peer in &self.peers {
            let Some(size) = peer.size else { continue };
            let votes = self.peers.iter().filter(|p| p.size == Some(size)).count();
            if best.is_none_or(|(_, b)| votes > b) {
                best = Some((size, votes));
            }
        }
        best.map(|(size, _)| size)
    }

    fn single_source_attempt(&mut self) -> Option<Attempt<P>> {
        let stash_size = self.stash.as_ref().map(|s| s.size);
        let peer = self
            .peers
            .iter_mut()
            .find(|p| !p.tried_alone && p.size.or(stash_size).is_some())?;
        peer.tried_alone = true;
        let key = peer.key;
        let size = peer.size.or(stash_size)?;
        let mut attempt = Attempt::new(size, Some(key));
        if let Some(stash) = &mut self.stash
            && stash.size == size
        {
            for (piece, from, bytes) in &stash.pieces {
                if *from == key
                    && let Some(slot) = attempt.slots.get_mut(*piece as usize)
                {
                    *slot = Slot::Have {
                        from: key,
                        bytes: bytes.clone(),
                    };
                    attempt.missing.remove(piece);
                    attempt.have += 1;
                }
            }
        }
        Some(attempt)
    }

    /// Hands out missing pieces round-robin, one per peer per round, until
    /// every accepted peer's pipeline is full or nothing is missing.
    fn schedule(&mut self, now: Instant) {
        self.hand_out(now, false);
        let idle = self.peers.iter().all(|p| p.asked.is_empty());
        if idle {
            // Every piece left was rejected by, or timed out at, every peer
            // that could take it. Ask again rather than stall: each further
            // reject or expiry counts toward the peer's limit, so this ends
            // in data or in dropped peers.
            self.hand_out(now, true);
        }
    }

    fn hand_out(&mut self, now: Instant, retry: bool) {
        // Snubbed peers only get what the others leave.
        for snubbed in [false, true] {
            loop {
                let mut progressed = false;
                for i in 0..self.peers.len() {
                    if self.peers[i].snubbed == snubbed && self.assign_one(i, now, retry) {
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Gives peer `i` one more request if it has room: a missing piece, or
    /// else one taken over from a snubbed or more heavily loaded peer (whose
    /// answer stays welcome, so whichever arrives first wins). Never a piece
    /// it was already asked for, so nothing moves back and forth.
    fn assign_one(&mut self, i: usize, now: Instant, retry: bool) -> bool {
        let Some(attempt) = &mut self.attempt else {
            return false;
        };
        let peer = &self.peers[i];
        let cap = if peer.snubbed {
            1
        } else {
            self.config.requests_per_peer.max(1) as usize
        };
        if peer.asked.len() >= cap || !attempt.accepts(peer) {
            return false;
        }
        let usable = |p: &u32| retry || !(peer.late.contains(p) || peer.rejected.contains(p));
        let piece = if let Some(piece) = attempt.missing.iter().copied().find(usable) {
            attempt.missing.remove(&piece);
            piece
        } else if peer.snubbed || retry {
            // Taking over in the retry pass could bounce a piece between
            // idle peers forever; snubbed peers are the ones taken from.
            return false;
        } else {
            let load = peer.asked.len();
            let victim = self
                .peers
                .iter()
                .enumerate()
                .filter(|(j, other)| {
                    *j != i && (other.snubbed || other.asked.len() > load + 1 || load == 0)
                })
                .filter_map(|(j, other)| {
                    let piece = other.asked.iter().rev().copied().find(usable)?;
                    Some((other.snubbed, other.asked.len(), j, piece))
                })
                .max_by_key(|&(snubbed, load, _, _)| (snubbed, load));
            let Some((_, _, j, piece)) = victim else {
                return false;
            };
            let other = &mut self.peers[j];
            other.asked.retain(|&p| p != piece);
            other.late.insert(piece);
            if other.asked.is_empty() {
                other.deadline = None;
            }
            piece
        };
        let peer = &mut self.peers[i];
        attempt.slots[piece as usize] = Slot::Requested(peer.key);
        peer.late.remove(&piece);
        peer.asked.push(piece);
        peer.deadline
            .get_or_insert(now + self.config.request_timeout);
        self.actions.push_back(Action::Send {
            peer: peer.key,
            message: Message::Request { piece },
        });
        true
    }

    fn release_all(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        let asked = std::mem::take(&mut peer.asked);
        peer.deadline = None;
        let key = peer.key;
        if let Some(attempt) = &mut self.attempt {
            for piece in asked {
                attempt.release(key, piece);
            }
        }
    }

    fn forget(&mut self, i: usize) {
        self.release_all(i);
        self.peers.remove(i);
    }

    fn push_drop(&mut self, peer: P, reason: DropReason) {
        self.stats.peers_dropped += 1;
        self.actions.push_back(Action::Drop { peer, reason });
    }

    fn drop_peer(&mut self, now: Instant, peer: P, reason: DropReason) {
        if let Some(i) = self.peers.iter().position(|p| p.key == peer) {
            self.forget(i);
        }
        self.push_drop(peer, reason);
        self.progress(now, false);
    }
}

#[cfg(test)]
mod tests;
