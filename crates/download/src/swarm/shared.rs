//! State shared by the coordinator and the peer tasks.
//!
//! One mutex guards everything that changes per block: the pure
//! [`Torrent`] (picker, piece buffers, counters) and the peer registry.
//! Critical sections are short and synchronous: a peer task takes the lock
//! once per batch of messages to run its session's update, then
//! [`State::dispatch`] carries out what the torrent asked for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lodestone_core::PeerId;
use lodestone_wire::Handshake;
use lodestone_wire::pex::PexReport;
use tokio::sync::mpsc;

use super::session::SessionConfig;
pub(crate) use super::session::{CloseReason, PeerCmd};
use super::torrent::{Action, Torrent};
use crate::layout::Layout;
use crate::picker::PeerKey;
use crate::storage::Storage;
use crate::verify::PieceHasher;

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

/// The mutable part.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) torrent: Torrent,
    /// `None` once the session is closing.
    pub(crate) pool: Option<PieceHasher>,
    pub(crate) peers: HashMap<PeerKey, PeerEntry>,
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

    /// Carries out the torrent's actions: cancels and `have`s go to the
    /// peer tasks, complete pieces to the hash pool; wakes are merged into
    /// one.
    pub(crate) fn dispatch(&mut self) {
        let mut wake = false;
        while let Some(action) = self.torrent.poll_action() {
            match action {
                Action::Cancel { peer, block } => {
                    if let Some(p) = self.peers.get(&peer) {
                        let _ = p.tx.send(PeerCmd::Cancel(block));
                    }
                }
                Action::Wake => wake = true,
                Action::Verify { piece, data } => {
                    if let Some(pool) = &self.pool {
                        pool.submit(piece, data);
                    }
                }
                Action::Have(piece) => self.broadcast(PeerCmd::Have(piece), None),
                Action::Holepunch { peer, message } => {
                    if let Some(p) = self.peers.get(&peer) {
                        let _ = p.tx.send(PeerCmd::Holepunch(message));
                    }
                }
            }
        }
        if wake {
            self.broadcast(PeerCmd::Wake, None);
        }
    }
}

/// Fixed facts about the session, and the state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) layout: Arc<Layout>,
    pub(crate) storage: Arc<Storage>,
    /// The handshake we send.
    pub(crate) handshake: Handshake,
    /// What every peer session is created with.
    pub(crate) session: SessionConfig,
    /// Where peers learned by ut_pex go, if ut_pex is on.
    pub(crate) pex: Option<mpsc::Sender<PexReport>>,
    /// Where DHT nodes named by peers' `port` messages go, if the torrent
    /// uses the DHT.
    pub(crate) dht_nodes: Option<mpsc::Sender<SocketAddr>>,
    /// Where addresses a holepunch relay asks us to dial go, if
    /// holepunching is on.
    pub(crate) holepunch: Option<mpsc::Sender<SocketAddr>>,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    /// The state. A poisoned lock means a task panicked mid-update (a bug,
    /// already reported by the panic); the state is still the best we have.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
