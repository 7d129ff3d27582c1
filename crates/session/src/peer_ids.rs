//! Which peer each of a torrent's connections reached, by peer id, so that
//! two addresses of one peer are known as one.
//!
//! A peer with two addresses (IPv4 and IPv6, say) is met twice, and one of
//! the two connections is closed: by us (the download's duplicate rule),
//! or by the peer before our check runs, which looks like any other end.
//! Either way the closed address would be dialed again a few seconds
//! later, meet the peer once more, and one connection would replace the
//! other for as long as both addresses lived. Told which live connection
//! the closed address is an alias of, the address book keeps that address
//! busy, standing for the connection, and files it again only when the
//! connection ends (see [`crate::address_book::AddressBook::listening`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::PeerId;

/// How long after a connection ends a new one to the same peer from
/// another address makes the two aliases: a redial's backoff and a dial.
const REMEMBERED: Duration = Duration::from_secs(30);

/// Ended connections remembered at most, so a torrent whose peers come and
/// go quickly holds a bounded table.
const MAX_GONE: usize = 256;

/// A torrent's connections by peer id.
#[derive(Debug, Default)]
pub(crate) struct PeerIds {
    /// Live connections: the peer's id, and whether we dialed it.
    live: HashMap<SocketAddr, (PeerId, bool)>,
    /// Connections ended lately: where each peer was, and when it left.
    gone: HashMap<PeerId, (SocketAddr, Instant)>,
}

impl PeerIds {
    /// A connection at `addr` to `peer` was handed to the torrent (`dialed`
    /// by us, or it came in). Returns the address of a connection to the
    /// same peer that ended lately, which should stand for this one: only
    /// for a connection we dialed, since one that came in has its peer's
    /// listen address to stand for it.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        peer: PeerId,
        dialed: bool,
    ) -> Option<SocketAddr> {
        self.live.insert(addr, (peer, dialed));
        let (was, left) = self.gone.get(&peer).copied()?;
        if !dialed || was == addr || now.saturating_duration_since(left) > REMEMBERED {
            return None;
        }
        self.gone.remove(&peer);
        Some(was)
    }

    /// The connection at `addr` ended. If we had dialed it (so `addr` is
    /// where the peer listens), returns a live connection we dialed to the
    /// same peer, for `addr` to stand for; otherwise remembers where the
    /// peer was, for [`Self::connected`]. One that came in, from a port of
    /// the moment, is only forgotten.
    pub(crate) fn ended(&mut self, now: Instant, addr: SocketAddr) -> Option<SocketAddr> {
        let (peer, dialed) = self.live.remove(&addr)?;
        if !dialed {
            return None;
        }
        if let Some((&other, _)) = self
            .live
            .iter()
            .find(|(_, (id, dialed))| *id == peer && *dialed)
        {
            return Some(other);
        }
        if self.gone.len() >= MAX_GONE {
            self.gone
                .retain(|_, &mut (_, left)| now.saturating_duration_since(left) <= REMEMBERED);
        }
        if self.gone.len() < MAX_GONE {
            self.gone.insert(peer, (addr, now));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 6881))
    }

    #[test]
    fn a_second_address_that_lost_stands_for_the_connection_kept() {
        let mut ids = PeerIds::default();
        let (t0, peer) = (Instant::now(), PeerId::new([7; 20]));
        assert_eq!(ids.connected(t0, addr(1), peer, true), None);
        assert_eq!(ids.connected(t0, addr(2), peer, true), None);
        // One of the two closes, whichever: the other stands.
        assert_eq!(ids.ended(t0, addr(1)), Some(addr(2)));
        assert_eq!(ids.ended(t0, addr(2)), None, "none left");
    }

    #[test]
    fn a_peer_that_closed_first_is_linked_when_its_other_address_connects() {
        let mut ids = PeerIds::default();
        let (t0, peer) = (Instant::now(), PeerId::new([7; 20]));
        ids.connected(t0, addr(1), peer, true);
        // The peer hung up on the old one before the new one reached us.
        assert_eq!(ids.ended(t0, addr(1)), None);
        let soon = t0 + Duration::from_secs(3);
        assert_eq!(ids.connected(soon, addr(2), peer, true), Some(addr(1)));
        // Linked once: the same address again is no alias of itself.
        ids.ended(soon, addr(2));
        assert_eq!(ids.connected(soon, addr(2), peer, true), None);
    }

    #[test]
    fn only_a_recent_end_and_a_dialed_connection_are_linked() {
        let mut ids = PeerIds::default();
        let (t0, peer) = (Instant::now(), PeerId::new([7; 20]));
        ids.connected(t0, addr(1), peer, true);
        ids.ended(t0, addr(1));
        let late = t0 + REMEMBERED + Duration::from_secs(1);
        assert_eq!(ids.connected(late, addr(2), peer, true), None, "too late");
        ids.ended(late, addr(2));
        assert_eq!(
            ids.connected(late, addr(3), peer, false),
            None,
            "it came in: its listen address stands for it"
        );
        // A live connection that came in is no connection to stand for,
        // and its own address is no listen address.
        ids.connected(late, addr(4), peer, true);
        assert_eq!(ids.ended(late, addr(4)), None);
        assert_eq!(ids.ended(late, addr(3)), None);
        assert_eq!(ids.gone[&peer].0, addr(4));
    }

    #[test]
    fn the_ended_table_is_bounded() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        for n in 0..(MAX_GONE as u32 + 10) {
            let mut id = [0; 20];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let a = SocketAddr::from(([10, 0, 0, 1], 1000 + n as u16));
            ids.connected(t0, a, PeerId::new(id), true);
            ids.ended(t0, a);
        }
        assert_eq!(ids.gone.len(), MAX_GONE);
        assert!(ids.live.is_empty());
    }
}
