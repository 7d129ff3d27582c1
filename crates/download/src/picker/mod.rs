//! Which blocks to request from which peer.
//!
//! A pure state machine: the session reports what peers have and what
//! happened to requests; [`Picker::next_requests`] answers with blocks. Policy:
//!
//! 1. finish pieces already started (fewer half-done pieces, earlier hashes);
//! 2. otherwise start the rarest piece the peer has (counting peers'
//!    bitfields; seeds are counted apart since they do not change the
//!    order), ties broken by the injected RNG;
//! 3. endgame: once every block still missing is requested, a block may be
//!    requested from one more peer ([`MAX_ENDGAME_EXTRA`]); when it arrives
//!    the other requester is returned so the session can cancel.
//!
//! Outside endgame a block is never outstanding at two peers. Requests end
//! with the block arriving, or with [`Picker::request_failed`] (reject,
//! timeout), [`Picker::peer_choked`] or [`Picker::peer_gone`], which make the
//! block requestable again.
//!
//! Costs: a `have` is O(1); starting a piece is O(distinct availabilities);
//! a pick walks the started pieces and then the rarest bucket from a random
//! point until it finds a piece the peer has (immediately for seeds).

mod rarity;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::RngExt;
use rand::rngs::StdRng;

use crate::bitfield::Bitfield;
use crate::layout::{BlockIndex, Layout, PieceIndex};
use rarity::RarityQueue;

/// In endgame, the most peers a block is requested from beyond its first
/// requester. Without a cap every idle peer asked for the same few blocks
/// and, the cancels arriving a round trip late, most of them were sent
/// anyway: the swarm simulation (`tests/swarm_sim.rs`, 40 idle seeds)
/// received over three times the torrent's size in duplicates.
pub const MAX_ENDGAME_EXTRA: usize = 1;

/// A connected peer, numbered by the session (unique while connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Requested(PeerKey),
    Received(PeerKey),
}

#[derive(Debug, Clone)]
struct Partial {
    slots: Vec<Slot>,
    missing: u32,
    received: u32,
    /// Endgame duplicates: `(block, peer)` beyond the first requester.
    extra: Vec<(u32, PeerKey)>,
    /// It failed its hash with blocks from several peers: fetched again
    /// from one peer at a time, so a liar among them either sends the
    /// whole piece (and is banned as its sole sender) or lets it pass (and
    /// is convicted by comparison); shared again, it could hide the liar
    /// forever.
    exclusive: bool,
}

impl Partial {
    /// Whether `peer` may take blocks of this piece: anyone, unless it is
    /// exclusive and another peer has requests for it outstanding. Only
    /// outstanding requests hold it, so a holder that chokes us or leaves
    /// (its requests released) cannot stall the piece.
    fn open_to(&self, peer: PeerKey) -> bool {
        !self.exclusive
            || self.slots.iter().all(|slot| match *slot {
                Slot::Requested(q) => q == peer,
                Slot::Missing | Slot::Received(_) => true,
            })
    }
}

#[derive(Debug, Clone)]
struct Peer {
    has: Bitfield,
    /// Counted in `Picker::seeds` instead of per piece.
    seed: bool,
    /// Pieces the peer has that we want and lack (non-seeds only).
    interesting: u32,
}

/// What to do with a block that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Keep the data. Send `cancel` to these peers, who were also asked for
    /// it (endgame). If `piece_complete`, every block of the piece is in:
    /// hash it and report [`Picker::piece_verified`] or [`Picker::piece_failed`].
    Accepted {
        /// Other peers with an outstanding request for the block.
        cancel: Vec<PeerKey>,
        /// The piece has all its blocks now.
        piece_complete: bool,
    },
    /// We already have the block or never wanted it: drop the data.
    Unwanted,
}

/// The piece picker of one torrent.
#[derive(Debug)]
pub struct Picker {
    layout: Arc<Layout>,
    have: Bitfield,
    wanted: Bitfield,
    /// Wanted pieces not yet verified.
    remaining: u32,
    /// Per piece: non-seed peers that have it.
    availability: Vec<u32>,
    seeds: u32,
    queue: RarityQueue,
    partial: BTreeMap<PieceIndex, Partial>,
    /// Missing (unrequested) blocks over all partial pieces.
    missing_in_partial: u64,
    peers: BTreeMap<PeerKey, Peer>,
    rng: StdRng,
    /// Most pieces started and not yet verified; see [`Picker::set_open_limit`].
    open_limit: usize,
    /// A peer went without requests only because of `open_limit`: the
    /// next piece to close should wake the sessions.
    held_by_limit: bool,
}

impl Picker {
    /// A picker for the pieces in `wanted` (those touching selected files),
    /// of which `have` are verified already (resume).
    pub fn new(layout: Arc<Layout>, wanted: Bitfield, have: Bitfield, rng: StdRng) -> Self {
        let n = layout.piece_count();
        debug_assert_eq!(wanted.len(), n);
        debug_assert_eq!(have.len(), n);
        let todo: Vec<u32> = wanted.iter_ones().filter(|&p| !have.get(p)).collect();
        Self {
            remaining: todo.len() as u32,
            queue: RarityQueue::new(n, todo),
            availability: vec![0; n as usize],
            layout,
            have,
            wanted,
            seeds: 0,
            partial: BTreeMap::new(),
            missing_in_partial: 0,
            peers: BTreeMap::new(),
            rng,
            open_limit: usize::MAX,
            held_by_limit: false,
        }
    }

    /// Caps the pieces started and not yet verified at `pieces` (at least
    /// one). Each holds a piece buffer from its first block to its
    /// verdict, so this bounds the memory of a download by a budget, not
    /// by the number of peers or their pipelines. A peer that has none of
    /// the open pieces may still start one, so pieces no connected peer
    /// can finish never stall the rest.
    pub fn set_open_limit(&mut self, pieces: usize) {
        self.open_limit = pieces.max(1);
    }

    /// Whether a peer went without requests because of the open limit
    /// since the last call: if so, a piece just closed and the sessions
    /// should ask again.
    pub fn take_held_by_limit(&mut self) -> bool {
        std::mem::take(&mut self.held_by_limit)
    }

    /// Verified pieces: what we advertise (subject to storage) and serve.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Wanted pieces not yet verified.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Whether every missing block is already requested somewhere, so
    /// duplicate requests are allowed.
    pub fn in_endgame(&self) -> bool {
        self.queue.len() == 0 && self.missing_in_partial == 0 && self.remaining > 0
    }

    /// How many peers have the piece (seeds included).
    pub fn availability(&self, piece: PieceIndex) -> u32 {
        self.availability[piece.get() as usize] + self.seeds
    }

    /// Whether the peer has a piece we want and lack: we should be interested.
    pub fn is_interesting(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| {
            if p.seed {
                self.remaining > 0
            } else {
                p.interesting > 0
            }
        })
    }

    /// Whether the peer announced the piece.
    pub fn peer_has(&self, peer: PeerKey, piece: PieceIndex) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.has.get(piece.get()))
    }

    /// Whether the peer has every piece.
    pub fn peer_is_seed(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.has.is_full())
    }

    /// A peer connected; it has nothing until it says otherwise.
    pub fn peer_connected(&mut self, peer: PeerKey) {
        if self.peers.contains_key(&peer) {
            self.peer_gone(peer);
        }
        self.peers.insert(
            peer,
            Peer {
                has: Bitfield::new(self.layout.piece_count()),
                seed: false,
                interesting: 0,
            },
        );
    }

    /// The peer's `bitfield` (its length checked by [`Bitfield::from_wire`]).
    /// Replaces whatever it announced before.
    pub fn peer_bitfield(&mut self, peer: PeerKey, has: Bitfield) {
        if has.len() != self.layout.piece_count() {
            return;
        }
        self.forget_pieces(peer);
        let Some(info) = self.peers.get_mut(&peer) else {
            return;
        };
        if has.is_full() {
            info.seed = true;
            info.has = has;
            self.seeds += 1;
            return;
        }
        let mut interesting = 0;
        for p in has.iter_ones() {
            let k = self.availability[p as usize];
            self.queue.increment(p, k);
            self.availability[p as usize] = k + 1;
            if self.wanted.get(p) && !self.have.get(p) {
                interesting += 1;
            }
        }
        info.has = has;
        info.interesting = interesting;
    }

    /// The peer has every piece (BEP 6 `have all`).
    pub fn peer_have_all(&mut self, peer: PeerKey) {
        self.peer_bitfield(peer, Bitfield::full(self.layout.piece_count()));
    }

    /// The peer sent `have`.
    pub fn peer_have(&mut self, peer: PeerKey, piece: PieceIndex) {
        let p = piece.get();
        let Some(info) = self.peers.get_mut(&peer) else {
            return;
        };
        if info.seed || !info.has.set(p) {
            return;
        }
        if self.wanted.get(p) && !self.have.get(p) {
            info.interesting += 1;
        }
        let k = self.availability[p as usize];
        self.queue.increment(p, k);
        self.availability[p as usize] = k + 1;
    }

    /// The peer choked us: its outstanding requests will not be answered.
    pub fn peer_choked(&mut self, peer: PeerKey) {
        self.release_requests(peer);
        self.close_untouched();
    }

    /// The peer disconnected.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        self.release_requests(peer);
        self.forget_pieces(peer);
        self.peers.remove(&peer);
        self.close_untouched();
    }

    /// Started pieces of which nothing is requested or received any more
    /// go back to the queue: they hold no buffer and must not count
    /// against the open limit.
    fn close_untouched(&mut self) {
        let untouched: Vec<PieceIndex> = self
            .partial
            .iter()
            .filter(|(_, partial)| {
                partial.received == 0 && partial.missing as usize == partial.slots.len()
            })
            .map(|(&piece, _)| piece)
            .collect();
        for piece in untouched {
            if let Some(partial) = self.partial.remove(&piece) {
                self.missing_in_partial -= u64::from(partial.missing);
                let p = piece.get();
                self.queue.insert(p, self.availability[p as usize]);
            }
        }
    }

    /// Undoes the peer's contribution to availability.
    fn forget_pieces(&mut self, peer: PeerKey) {
        let Some(info) = self.peers.get_mut(&peer) else {
            return;
        };
        if info.seed {
            self.seeds -= 1;
        } else {
            for p in info.has.iter_ones() {
                let k = self.availability[p as usize];
                self.queue.decrement(p, k);
                self.availability[p as usize] = k - 1;
            }
        }
        info.seed = false;
        info.interesting = 0;
        info.has = Bitfield::new(self.layout.piece_count());
    }

    /// Every outstanding request to the peer becomes requestable again.
    fn release_requests(&mut self, peer: PeerKey) {
        for partial in self.partial.values_mut() {
            partial.extra.retain(|&(_, q)| q != peer);
            for b in 0..partial.slots.len() {
                if partial.slots[b] == Slot::Requested(peer) {
                    self.missing_in_partial += u64::from(partial.release(b as u32));
                }
            }
        }
    }

    /// A request to the peer ended without data (rejected, timed out, or we
    /// gave up on it): the block may be requested again.
    pub fn request_failed(&mut self, peer: PeerKey, block: BlockIndex) {
        let Some(partial) = self.partial.get_mut(&block.piece()) else {
            return;
        };
        let b = block.index_in_piece();
        partial.extra.retain(|&(x, q)| !(x == b && q == peer));
        if partial.slots[b as usize] == Slot::Requested(peer) {
            self.missing_in_partial += u64::from(partial.release(b));
        }
    }

    /// Up to `max` blocks to request from the peer now, none of which it
    /// lacks. Outside endgame none is outstanding anywhere else; they count
    /// as requested from the peer until they arrive or are released.
    pub fn next_requests(&mut self, peer: PeerKey, max: usize) -> Vec<BlockIndex> {
        let mut out = Vec::new();
        if max == 0 || !self.is_interesting(peer) {
            return out;
        }
        let Some(info) = self.peers.get(&peer) else {
            return out;
        };
        // 1. Blocks of started pieces.
        if self.missing_in_partial > 0 {
            for (&piece, partial) in self.partial.iter_mut() {
                if partial.missing == 0 || !info.has.get(piece.get()) || !partial.open_to(peer) {
                    continue;
                }
                self.missing_in_partial -=
                    u64::from(partial.take(&self.layout, piece, peer, max, &mut out));
                if out.len() == max {
                    return out;
                }
            }
        }
        // 2. Start the rarest pieces the peer has, within the open limit.
        while out.len() < max {
            if self.partial.len() >= self.open_limit
                && (!out.is_empty() || self.has_open_piece(peer))
            {
                self.held_by_limit = true;
                break;
            }
            let Some(piece) = self.rarest_for(peer) else {
                break;
            };
            let p = piece.get();
            self.queue.remove(p, self.availability[p as usize]);
            let blocks = self.layout.block_count(piece);
            let mut partial = Partial {
                slots: vec![Slot::Missing; blocks as usize],
                missing: blocks,
                received: 0,
                extra: Vec::new(),
                exclusive: false,
            };
            let taken = partial.take(&self.layout, piece, peer, max, &mut out);
            self.missing_in_partial += u64::from(blocks - taken);
            self.partial.insert(piece, partial);
        }
        // 3. Endgame: duplicate outstanding requests.
        if out.is_empty() && self.in_endgame() {
            self.endgame_requests(peer, max, &mut out);
        }
        out
    }

    /// Whether the peer has one of the started pieces.
    fn has_open_piece(&self, peer: PeerKey) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|info| self.partial.keys().any(|p| info.has.get(p.get())))
    }

    /// The rarest queued piece the peer has; scans each bucket from a
    /// random point so equally rare pieces are picked uniformly.
    fn rarest_for(&mut self, peer: PeerKey) -> Option<PieceIndex> {
        let info = self.peers.get(&peer)?;
        // Pieces in bucket 0 are held by seeds only.
        let first = if info.seed { 0 } else { 1 };
        for k in first..self.queue.bucket_count() {
            let bucket = self.queue.bucket(k);
            if bucket.is_empty() {
                continue;
            }
            let r = self.rng.random_range(0..bucket.len());
            let (head, tail) = bucket.split_at(r);
            if let Some(&p) = tail.iter().chain(head).find(|&&p| info.has.get(p)) {
                return self.layout.piece(p);
            }
        }
        None
    }

    fn endgame_requests(&mut self, peer: PeerKey, max: usize, out: &mut Vec<BlockIndex>) {
        let Some(info) = self.peers.get(&peer) else {
            return;
        };
        for (&piece, partial) in self.partial.iter_mut() {
            if !info.has.get(piece.get()) || !partial.open_to(peer) {
                continue;
            }
            for b in 0..partial.slots.len() as u32 {
                let Slot::Requested(first) = partial.slots[b as usize] else {
                    continue;
                };
                if first == peer
                    || partial.extra.contains(&(b, peer))
                    || partial.extra.iter().filter(|&&(x, _)| x == b).count() >= MAX_ENDGAME_EXTRA
                {
                    continue;
                }
                partial.extra.push((b, peer));
                if let Some(block) = self.layout.block(piece, b) {
                    out.push(block);
                }
                if out.len() == max {
                    return;
                }
            }
        }
    }

    /// A block arrived from the peer.
    pub fn block_received(&mut self, peer: PeerKey, block: BlockIndex) -> BlockOutcome {
        let Some(partial) = self.partial.get_mut(&block.piece()) else {
            return BlockOutcome::Unwanted;
        };
        let b = block.index_in_piece();
        let mut cancel = Vec::new();
        match partial.slots[b as usize] {
            Slot::Received(_) => return BlockOutcome::Unwanted,
            Slot::Missing => {
                partial.missing -= 1;
                self.missing_in_partial -= 1;
            }
            Slot::Requested(first) => {
                if first != peer {
                    cancel.push(first);
                }
            }
        }
        partial.extra.retain(|&(x, q)| {
            let same = x == b;
            if same && q != peer {
                cancel.push(q);
            }
            !same
        });
        partial.slots[b as usize] = Slot::Received(peer);
        partial.received += 1;
        BlockOutcome::Accepted {
            cancel,
            piece_complete: partial.received as usize == partial.slots.len(),
        }
    }

    /// The completed piece hashed correctly. Returns whether it was news
    /// (so the session sends `have` once).
    pub fn piece_verified(&mut self, piece: PieceIndex) -> bool {
        let p = piece.get();
        if let Some(partial) = self.partial.remove(&piece) {
            self.missing_in_partial -= u64::from(partial.missing);
        }
        self.queue.remove(p, self.availability[p as usize]);
        if !self.have.set(p) {
            return false;
        }
        if self.wanted.get(p) {
            self.remaining -= 1;
            for info in self.peers.values_mut() {
                if !info.seed && info.has.get(p) {
                    info.interesting -= 1;
                }
            }
        }
        true
    }

    /// Keeps a wanted, unstarted piece out of requests while its bytes on
    /// disk are being hashed (resume re-check); it still counts as
    /// remaining. [`Self::piece_verified`] or [`Self::release`] ends it.
    pub fn withhold(&mut self, piece: PieceIndex) {
        let p = piece.get();
        if !self.partial.contains_key(&piece) {
            self.queue.remove(p, self.availability[p as usize]);
        }
    }

    /// The withheld piece failed its re-check: it can be requested again.
    pub fn release(&mut self, piece: PieceIndex) {
        let p = piece.get();
        if self.wanted.get(p) && !self.have.get(p) && !self.partial.contains_key(&piece) {
            self.queue.insert(p, self.availability[p as usize]);
        }
    }

    /// The completed piece failed its hash: every block is requestable
    /// again. Returns who sent each block, in block order (every block is
    /// in when a piece is hashed), so the liar can be found later.
    pub fn piece_failed(&mut self, piece: PieceIndex) -> Vec<PeerKey> {
        let Some(partial) = self.partial.get_mut(&piece) else {
            return Vec::new();
        };
        let mut senders = Vec::with_capacity(partial.slots.len());
        for slot in &mut partial.slots {
            if let Slot::Received(q) = *slot {
                senders.push(q);
            }
            *slot = Slot::Missing;
        }
        partial.extra.clear();
        partial.exclusive = senders.iter().any(|&q| q != senders[0]);
        let blocks = partial.slots.len() as u32;
        self.missing_in_partial += u64::from(blocks - partial.missing);
        partial.missing = blocks;
        partial.received = 0;
        senders
    }
}

impl Partial {
    /// Requests up to `max - out.len()` missing blocks from the peer;
    /// returns how many.
    fn take(
        &mut self,
        layout: &Layout,
        piece: PieceIndex,
        peer: PeerKey,
        max: usize,
        out: &mut Vec<BlockIndex>,
    ) -> u32 {
        let mut taken = 0;
        for (b, slot) in self.slots.iter_mut().enumerate() {
            if out.len() == max {
                break;
            }
            if *slot == Slot::Missing
                && let Some(block) = layout.block(piece, b as u32)
            {
                *slot = Slot::Requested(peer);
                out.push(block);
                taken += 1;
            }
        }
        self.missing -= taken;
        taken
    }

    /// The first requester of block `b` is gone: hand the block to an
    /// endgame duplicate, or mark it missing. Returns 1 if it became missing.
    fn release(&mut self, b: u32) -> u32 {
        if let Some(i) = self.extra.iter().position(|&(x, _)| x == b) {
            let (_, q) = self.extra.swap_remove(i);
            self.slots[b as usize] = Slot::Requested(q);
            0
        } else {
            self.slots[b as usize] = Slot::Missing;
            self.missing += 1;
            1
        }
    }
}

#[cfg(test)]
mod tests;
