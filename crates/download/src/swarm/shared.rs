//! State shared by the coordinator and the peer tasks.
//!
//! One mutex guards everything that changes per block: the pure
//! [`Torrent`] (picker, piece buffers, counters) and the peer registry.
//! Critical sections are short and synchronous: a peer task takes the lock
//! once per batch of messages to run its session's update, then
//! [`State::dispatch`] carries out what the torrent asked for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lodestone_core::PeerId;
use lodestone_wire::pex::PexReport;
use lodestone_wire::{Handshake, ListenReport};
use tokio::sync::{Notify, mpsc};

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
    /// Where it connected from, as [`lodestone_core::host_of`] counts: a
    /// peer id is the same peer's only from the same host.
    pub(crate) host: IpAddr,
    pub(crate) tx: mpsc::UnboundedSender<PeerCmd>,
    pub(crate) connected_at: Instant,
    /// It told us it wants our pieces.
    pub(crate) interested: bool,
    /// It chokes us.
    pub(crate) choking_us: bool,
    /// Published by the peer task about once a second, for the choker.
    pub(crate) download_rate: f64,
    pub(crate) upload_rate: f64,
    /// [`PeerSession::exchanged`] as of the task's last update, for the
    /// exit of a connection still open when the download stops.
    ///
    /// [`PeerSession::exchanged`]: super::session::PeerSession::exchanged
    pub(crate) exchanged: bool,
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
    /// Tells every connected peer.
    pub(crate) fn broadcast(&self, cmd: PeerCmd) {
        for p in self.peers.values() {
            let _ = p.tx.send(cmd.clone());
        }
    }

    /// Carries out the torrent's actions: cancels go to their peer tasks
    /// and `have`s to the peers without the piece, complete pieces to the
    /// hash pool; wakes are merged into one.
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
                Action::Have(piece) => {
                    // A peer that has the piece (a seeder, say) learns
                    // nothing from our `have` and never asks us for it, so
                    // its task is not woken for it: from 48 seeders that
                    // was a wake-up per peer and piece, 98,304 for 512 MiB.
                    let picker = self.torrent.picker();
                    for (&k, p) in &self.peers {
                        if !picker.peer_has(k, piece) {
                            let _ = p.tx.send(PeerCmd::Have(piece));
                        }
                    }
                }
                Action::Holepunch { peer, message } => {
                    if let Some(p) = self.peers.get(&peer) {
                        let _ = p.tx.send(PeerCmd::Holepunch(Box::new(message)));
                    }
                }
            }
        }
        if wake {
            self.broadcast(PeerCmd::Wake);
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
    /// Where the listen addresses of peers that dialed us go.
    pub(crate) listening: Option<mpsc::Sender<ListenReport>>,
    /// Where DHT nodes named by peers' `port` messages go, if the torrent
    /// uses the DHT.
    pub(crate) dht_nodes: Option<mpsc::Sender<SocketAddr>>,
    /// Where addresses a holepunch relay asks us to dial go, if
    /// holepunching is on.
    pub(crate) holepunch: Option<mpsc::Sender<SocketAddr>>,
    /// Signalled when an upload slot may change hands between the choker's
    /// rounds (a peer became interested, lost interest, or left while
    /// interested), so the coordinator runs the choker at once instead of
    /// at its next housekeeping tick: a downloader kept choked for up to a
    /// tick (200 ms) after its `interested` lost a third of a 64 MiB
    /// upload's time.
    pub(crate) rechoke: Notify,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    /// The state. A poisoned lock means a task panicked mid-update (a bug,
    /// already reported by the panic); the state is still the best we have.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::bitfield::Bitfield;
    use crate::layout::BLOCK_SIZE;

    fn entry(tx: mpsc::UnboundedSender<PeerCmd>) -> PeerEntry {
        PeerEntry {
            exchanged: false,
            id: PeerId::new([7; 20]),
            host: IpAddr::from([10, 0, 0, 1]),
            tx,
            connected_at: Instant::now(),
            interested: false,
            choking_us: true,
            download_rate: 0.0,
            upload_rate: 0.0,
        }
    }

    #[test]
    fn a_have_goes_only_to_peers_without_the_piece() {
        let layout =
            Arc::new(Layout::new(BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 4, false)]).unwrap());
        let none = Bitfield::new(4);
        let torrent = Torrent::new(
            layout.clone(),
            Bitfield::full(4),
            none.clone(),
            none,
            1,
            4,
            Instant::now(),
        );
        let mut state = State {
            torrent,
            pool: None,
            peers: HashMap::new(),
        };
        let (seeder, leecher) = (PeerKey(1), PeerKey(2));
        let (seeder_tx, mut seeder_rx) = mpsc::unbounded_channel();
        let (leecher_tx, mut leecher_rx) = mpsc::unbounded_channel();
        state.peers.insert(seeder, entry(seeder_tx));
        state.peers.insert(leecher, entry(leecher_tx));
        state.torrent.picker.peer_connected(seeder);
        state.torrent.picker.peer_have_all(seeder);
        state.torrent.picker.peer_connected(leecher);
        let piece = layout.piece(2).unwrap();
        assert!(state.torrent.found_on_disk(piece, true));
        state.dispatch();
        let haves = |rx: &mut mpsc::UnboundedReceiver<PeerCmd>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|c| matches!(c, PeerCmd::Have(p) if *p == piece))
                .count()
        };
        assert_eq!(haves(&mut leecher_rx), 1);
        assert_eq!(
            haves(&mut seeder_rx),
            0,
            "the seeder's task is not woken for a have"
        );
    }
}
