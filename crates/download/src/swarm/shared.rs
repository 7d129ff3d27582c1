//! State shared by the coordinator and the peer tasks.
//!
//! One mutex guards everything that changes per block (picker, piece
//! buffers, counters, the peer registry). Critical sections are short and
//! synchronous: a batch of blocks is accepted, copied and topped up with new
//! requests under one lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lodestone_core::{Metainfo, PeerId};
use lodestone_wire::Handshake;
use tokio::sync::mpsc;

use super::assembly::Assembly;
use super::blame::Blame;
use crate::bitfield::Bitfield;
use crate::layout::{BlockIndex, Layout, PieceIndex};
use crate::picker::{PeerKey, Picker};
use crate::rate::{RateEstimator, SharedBucket};
use crate::storage::Storage;
use crate::verify::HashPool;

/// What the coordinator (or another peer task) tells a peer task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerCmd {
    /// We verified this piece and can serve it: announce it.
    Have(PieceIndex),
    /// The block arrived from elsewhere (endgame): cancel our request.
    Cancel(BlockIndex),
    /// Choke (`true`) or unchoke the peer: the choker's decision.
    Choke(bool),
    /// Blocks became requestable (a peer left, a piece failed): top up.
    Wake,
    /// Disconnect.
    Close(CloseReason),
}

/// Why we hang up on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Its data failed the hash check.
    Banned,
    /// We have everything and so does it, or the session ends.
    Done,
}

/// A connected peer, as the rest of the session sees it.
#[derive(Debug)]
pub(crate) struct PeerEntry {
    pub(crate) id: PeerId,
    pub(crate) tx: mpsc::UnboundedSender<PeerCmd>,
    pub(crate) connected_at: Instant,
    /// It told us it wants our pieces.
    pub(crate) interested: bool,
    /// It chokes us.
    pub(crate) choking_us: bool,
    /// Published by the peer task about once a second, for the choker.
    pub(crate) download_rate: f64,
    pub(crate) upload_rate: f64,
}

/// Session-wide byte counters.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) downloaded: u64,
    pub(crate) wasted: u64,
    pub(crate) uploaded: u64,
    pub(crate) down_rate: RateEstimator,
    pub(crate) up_rate: RateEstimator,
}

impl Counters {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            downloaded: 0,
            wasted: 0,
            uploaded: 0,
            down_rate: RateEstimator::standard(now),
            up_rate: RateEstimator::standard(now),
        }
    }
}

/// The mutable part.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) picker: Picker,
    pub(crate) assembly: Assembly,
    /// `None` once the session is closing.
    pub(crate) pool: Option<HashPool>,
    pub(crate) peers: HashMap<PeerKey, PeerEntry>,
    /// Verified pieces we can read back: what we announce and serve.
    pub(crate) servable: Bitfield,
    pub(crate) counters: Counters,
    pub(crate) blame: Blame,
    pub(crate) download_limit: Option<SharedBucket>,
    pub(crate) upload_limit: Option<SharedBucket>,
}

impl State {
    /// Tells every connected peer but `except`.
    pub(crate) fn broadcast(&self, cmd: PeerCmd, except: Option<PeerKey>) {
        for (&k, p) in &self.peers {
            if Some(k) != except {
                let _ = p.tx.send(cmd);
            }
        }
    }
}

/// Fixed facts about the session, and the state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metainfo: Arc<Metainfo>,
    pub(crate) layout: Arc<Layout>,
    pub(crate) storage: Arc<Storage>,
    /// The handshake we send.
    pub(crate) handshake: Handshake,
    pub(crate) stall_timeout: Duration,
    /// Our listen port, advertised in the extension handshake.
    pub(crate) listen_port: Option<u16>,
    /// Most pieces at the hash pool before peers stop requesting.
    pub(crate) hash_backlog: usize,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    /// The state. A poisoned lock means a task panicked mid-update (a bug,
    /// already reported by the panic); the state is still the best we have.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
