//! The torrent-wide state every peer session reads and updates: pure.
//!
//! [`Torrent`] holds what is shared between the connections of one torrent
//! (the [`Picker`], the pieces under assembly, byte counters, hash-failure
//! blame, rate limits). It does no IO: what must happen outside it (cancel a
//! request at another peer, wake the sessions, hash a complete piece, tell
//! every peer about a verified piece) is queued as an [`Action`] and drained
//! with [`Torrent::poll_action`] by whoever hosts it — the tokio swarm under
//! its mutex, or the deterministic simulation.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use lodestone_wire::holepunch::HolepunchMessage;
use lodestone_wire::pex::PexFlags;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::assembly::Assembly;
use super::blame::Blame;
use super::relay::Relay;
use crate::bitfield::Bitfield;
use crate::layout::{BlockIndex, Layout, PieceIndex};
use crate::picker::{PeerKey, Picker};
use crate::rate::{RateEstimator, SharedBucket};

/// Work the torrent hands to its host.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The block arrived from elsewhere (endgame): `peer` should cancel its
    /// request ([`super::session::PeerCmd::Cancel`]).
    Cancel {
        /// The peer whose request is now redundant.
        peer: PeerKey,
        /// The block.
        block: BlockIndex,
    },
    /// Blocks became requestable or requesting may resume: every session
    /// should run [`super::session::PeerSession::update`].
    Wake,
    /// Every block of the piece is in: hash it, then report
    /// [`Torrent::piece_verified`] or [`Torrent::piece_failed`].
    Verify {
        /// The piece.
        piece: PieceIndex,
        /// Its bytes, in a buffer to hand back with the verdict.
        data: Vec<u8>,
    },
    /// The piece is verified and stored: tell every peer
    /// ([`super::session::PeerCmd::Have`]).
    Have(PieceIndex),
    /// Send `peer` this ut_holepunch message
    /// ([`super::session::PeerCmd::Holepunch`]): our rendezvous request,
    /// or, as a relay, the `connect` to a rendezvous' target.
    Holepunch {
        /// The connection to send it on.
        peer: PeerKey,
        /// The message.
        message: HolepunchMessage,
    },
}

/// Piece buffers of pieces started and not yet verified, in bytes: the
/// download's memory for data, whatever the number of peers. 4 MiB in
/// flight keeps loopback at full speed and a 100 ms round trip busy at
/// 40 MB/s; pipelines share it, the fastest peers taking the most. (With
/// 8 MiB, 48 peers peaked at 23 MB of RSS instead of 16.)
const OPEN_PIECES_BYTES: u64 = 4 << 20;

/// Pieces open at once however large they are: enough for a few peers to
/// work on different pieces.
const MIN_OPEN_PIECES: u64 = 4;

/// The open-piece limit a download of `piece_length` pieces runs with
/// ([`Torrent::set_open_limit`]).
pub fn open_piece_limit(piece_length: u32) -> usize {
    (OPEN_PIECES_BYTES / u64::from(piece_length.max(1))).max(MIN_OPEN_PIECES) as usize
}

/// What a passing hash changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// The piece was not verified before (so `have` goes out once).
    pub news: bool,
    /// Peers whose blocks in an earlier, failed download of the piece
    /// differ from the good data: ban them.
    pub banned: Vec<PeerKey>,
}

/// Session-wide byte counters.
#[derive(Debug)]
pub struct Counters {
    /// Piece data received, wanted or not.
    pub downloaded: u64,
    /// Piece data received that we already had or never asked for (endgame
    /// duplicates, late blocks after a cancel, blocks never asked of their
    /// sender, which are dropped).
    pub wasted: u64,
    /// Piece data sent.
    pub uploaded: u64,
    pub(crate) down_rate: RateEstimator,
    pub(crate) up_rate: RateEstimator,
}

impl Counters {
    fn new(now: Instant) -> Self {
        Self {
            downloaded: 0,
            wasted: 0,
            uploaded: 0,
            down_rate: RateEstimator::standard(now),
            up_rate: RateEstimator::standard(now),
        }
    }
}

/// The shared state of one torrent's peer sessions.
#[derive(Debug)]
pub struct Torrent {
    pub(crate) picker: Picker,
    pub(crate) assembly: Assembly,
    /// Verified pieces we can read back: what we announce and serve.
    pub(crate) servable: Bitfield,
    pub(crate) counters: Counters,
    pub(crate) blame: Blame,
    pub(crate) download_limit: Option<SharedBucket>,
    pub(crate) upload_limit: Option<SharedBucket>,
    /// Most pieces at the hash pool before sessions stop requesting.
    pub(crate) hash_backlog: usize,
    /// Where peers are (what we pass on by PEX) and which holepunch
    /// (BEP 55).
    pub(crate) relay: Relay,
    actions: VecDeque<Action>,
    /// Few connection slots are left ([`Torrent::is_crowded`]).
    crowded: bool,
}

impl Torrent {
    /// A torrent wanting the pieces in `wanted`, of which `have` are
    /// verified and `servable` can be read back. `rng_seed` seeds the
    /// picker; at most `hash_backlog` complete pieces wait for their hash
    /// before requests pause.
    pub fn new(
        layout: Arc<Layout>,
        wanted: Bitfield,
        have: Bitfield,
        servable: Bitfield,
        rng_seed: u64,
        hash_backlog: usize,
        now: Instant,
    ) -> Self {
        let picker = Picker::new(layout, wanted, have, StdRng::seed_from_u64(rng_seed));
        Self {
            picker,
            assembly: Assembly::default(),
            servable,
            counters: Counters::new(now),
            blame: Blame::default(),
            download_limit: None,
            upload_limit: None,
            hash_backlog: hash_backlog.max(1),
            relay: Relay::default(),
            actions: VecDeque::new(),
            crowded: false,
        }
    }

    /// Whether the torrent's connections are within a few of its limit, so
    /// a connection of no use to either side should make room.
    pub fn is_crowded(&self) -> bool {
        self.crowded
    }

    /// Says whether few connection slots are left (the coordinator counts
    /// its connections against the limit).
    pub fn set_crowded(&mut self, crowded: bool) {
        self.crowded = crowded;
    }

    /// Caps the pieces under assembly or at the hash pool at `pieces`
    /// (see [`Picker::set_open_limit`]); spare buffers kept for reuse stay
    /// within the same count, so the piece buffers never exceed it.
    pub fn set_open_limit(&mut self, pieces: usize) {
        self.picker.set_open_limit(pieces);
        self.assembly.set_buffer_limit(pieces);
    }

    /// Limits download and upload to these token buckets (shared with
    /// other torrents when the limit is the session's).
    pub fn set_limits(&mut self, download: Option<SharedBucket>, upload: Option<SharedBucket>) {
        self.download_limit = download;
        self.upload_limit = upload;
    }

    /// The piece picker (read-only: sessions drive it).
    pub fn picker(&self) -> &Picker {
        &self.picker
    }

    /// Byte counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Verified pieces that can be served.
    pub fn servable(&self) -> &Bitfield {
        &self.servable
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// The next piece of work for the host.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Whether so many pieces wait for their hash that requests pause.
    pub(crate) fn hash_backlog_full(&self) -> bool {
        self.assembly.hashing() >= self.hash_backlog
    }

    /// A session starts; call before its first update.
    pub fn peer_connected(&mut self, peer: PeerKey) {
        self.picker.peer_connected(peer);
    }

    /// A connected peer listens at `addr`.
    pub(crate) fn peer_listening(&mut self, peer: PeerKey, addr: SocketAddr) {
        self.relay.listening(peer, addr);
    }

    /// Asks the connected peer at `via`, if it speaks ut_holepunch, to
    /// introduce us to the peer at `target` (BEP 55's initiator). Returns
    /// whether a rendezvous was queued.
    pub fn rendezvous_via(&mut self, via: SocketAddr, target: SocketAddr) -> bool {
        let Some(peer) = self.relay.relay_at(via) else {
            return false;
        };
        let message = HolepunchMessage::rendezvous(target);
        self.push(Action::Holepunch { peer, message });
        true
    }

    /// Where our connected peers listen, but for `to` and any peer sharing
    /// its address: what a ut_pex message to `to` may carry, each with the
    /// one flag we can vouch for, ut_holepunch (BEP 55), so that `to` knows
    /// whom to ask if it cannot reach the peer.
    pub(crate) fn pex_peers(&self, to: PeerKey) -> BTreeMap<SocketAddr, PexFlags> {
        let own = self.relay.listen_addr(to);
        self.relay
            .listen_addrs()
            .filter(|&(k, a, _)| k != to && Some(a) != own)
            .map(|(_, a, holepunches)| {
                let flags = if holepunches { PexFlags::HOLEPUNCH } else { 0 };
                (a, PexFlags(flags))
            })
            .collect()
    }

    /// A session ended: its requests go back to the picker, the others are
    /// woken to take them.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        self.picker.peer_gone(peer);
        self.relay.gone(peer);
        self.push(Action::Wake);
    }

    /// The piece hashed correctly; `stored` says whether it can be read
    /// back (a piece straddling an unselected file may not be). `buffer`
    /// is the one [`Action::Verify`] carried. Says whether it was news,
    /// and whom an earlier failure of the piece now convicts.
    pub fn piece_verified(&mut self, piece: PieceIndex, buffer: Vec<u8>, stored: bool) -> Verified {
        let was_full = self.hash_backlog_full();
        let banned = self.blame.piece_verified(piece, &buffer);
        self.assembly.finished(piece, buffer);
        let news = self.picker.piece_verified(piece);
        if news && stored {
            self.servable.set(piece.get());
            self.push(Action::Have(piece));
        }
        let held = self.picker.take_held_by_limit();
        if held || (was_full && !self.hash_backlog_full()) {
            self.push(Action::Wake);
        }
        Verified { news, banned }
    }

    /// Found on disk but not yet trusted: not requested until
    /// [`Torrent::found_on_disk`] or [`Torrent::recheck_failed`] says.
    pub fn withhold(&mut self, piece: PieceIndex) {
        self.picker.withhold(piece);
    }

    /// A withheld piece hashed correctly on disk; like
    /// [`Torrent::piece_verified`] without a buffer from the assembly.
    pub fn found_on_disk(&mut self, piece: PieceIndex, stored: bool) -> bool {
        let news = self.picker.piece_verified(piece);
        if news && stored {
            self.servable.set(piece.get());
            self.push(Action::Have(piece));
        }
        news
    }

    /// A withheld piece failed its hash on disk: fetch it.
    pub fn recheck_failed(&mut self, piece: PieceIndex) {
        self.picker.release(piece);
        self.push(Action::Wake);
    }

    /// The piece failed its hash: its blocks are requestable again. Returns
    /// the peers to ban (see `blame`).
    pub fn piece_failed(&mut self, piece: PieceIndex, buffer: Vec<u8>) -> Vec<PeerKey> {
        let senders = self.picker.piece_failed(piece);
        tracing::warn!(%piece, ?senders, "piece failed its hash check");
        let banned = self.blame.piece_failed(piece, &senders, &buffer);
        self.assembly.finished(piece, buffer);
        self.push(Action::Wake);
        banned
    }
}
