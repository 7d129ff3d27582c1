//! Which peer each of a torrent's connections reached, by peer id, so that
//! two addresses of one peer are known as one.
//!
//! A peer with two addresses on one host (two ports, say) is met twice,
//! and one of the two connections is closed: by us (the download's duplicate rule),
//! or by the peer before our check runs, which looks like any other end.
//! Either way the closed address would be dialed again a few seconds
//! later, meet the peer once more, and one connection would replace the
//! other for as long as both addresses lived. Told which live connection
//! the closed address is an alias of, the address book keeps that address
//! busy, standing for the connection, and files it again only when the
//! connection ends (see [`crate::address_book::AddressBook::alias`]). Peer
//! ids prove nothing, so the book never lets a ban cross such a link, and
//! two addresses are linked only on one host (an IPv4 address, an IPv6
//! /64), where the download's duplicate rule applies too: anyone can copy
//! an honest peer's id, and linked across hosts a copy kept the honest
//! peer's address from being dialed for as long as it stayed.
//!
//! Across hosts (a peer's IPv4 and IPv6 addresses, say) we keep both
//! connections, but the peer may not: libtorrent closes one of two under
//! our id from any hosts. The end of one whose twin on another host lasts
//! ([`PeerIds::has_twin_elsewhere`]) is filed as fruitless, not of use, so
//! its redials back off instead of displacing the twin every few seconds;
//! a copied id costs an honest peer at most that backoff.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::{PeerId, host_of};

/// How long after a connection ends a new one to the same peer from
/// another address makes the two aliases: a redial's backoff and a dial.
const REMEMBERED: Duration = Duration::from_secs(30);

/// Ended connections remembered at most, so a torrent whose peers come and
/// go quickly holds a bounded table.
const MAX_GONE: usize = 256;

/// A torrent's connections by peer id.
#[derive(Debug, Default)]
pub(crate) struct PeerIds {
    /// Live connections we dialed, by the address dialed (a listen
    /// address of the peer's), with the peer's id. One that came in is
    /// not kept: its address, a port of the moment, is linked to nothing.
    live: HashMap<SocketAddr, PeerId>,
    /// Connections ended lately: where each peer was on each host, and
    /// when it left.
    gone: HashMap<(PeerId, IpAddr), (SocketAddr, Instant)>,
}

impl PeerIds {
    /// A connection at `addr` to `peer` was handed to the torrent (`dialed`
    /// by us, or it came in). Returns the address of a connection to the
    /// same peer that ended lately, which should stand for this one: only
    /// for a connection we dialed. One that came in is left to its peer's
    /// own `p` report, which is lost when that address was busy with our
    /// dial at the time (a gap this table does not close).
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        peer: PeerId,
        dialed: bool,
    ) -> Option<SocketAddr> {
        if dialed {
            self.live.insert(addr, peer);
        }
        // Any connection to the peer settles where it was.
        let (was, left) = self.gone.remove(&(peer, host_of(addr.ip())))?;
        let recent = now.saturating_duration_since(left) <= REMEMBERED;
        (dialed && recent && was != addr && !self.live.contains_key(&was)).then_some(was)
    }

    /// Whether `addr`, a live connection we dialed, has a twin: a live
    /// connection we dialed to the same peer on another host.
    pub(crate) fn has_twin_elsewhere(&self, addr: SocketAddr) -> bool {
        let Some(peer) = self.live.get(&addr) else {
            return false;
        };
        self.live
            .iter()
            .any(|(&other, id)| id == peer && !same_host(other, addr))
    }

    /// The connection at `addr` ended. If we had dialed it (so `addr` is
    /// where the peer listens), returns a live connection we dialed to the
    /// same peer, for `addr` to stand for; otherwise remembers where the
    /// peer was, for [`Self::connected`]. One whose peer `misbehaved` is
    /// only forgotten; one that came in was never kept.
    pub(crate) fn ended(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        misbehaved: bool,
    ) -> Option<SocketAddr> {
        let peer = self.live.remove(&addr)?;
        if misbehaved {
            return None;
        }
        if let Some((&other, _)) = self
            .live
            .iter()
            .find(|&(&other, id)| *id == peer && same_host(other, addr))
        {
            return Some(other);
        }
        // Full: the oldest goes (an expired one is no better kept).
        let key = (peer, host_of(addr.ip()));
        if self.gone.len() >= MAX_GONE
            && !self.gone.contains_key(&key)
            && let Some(oldest) = self
                .gone
                .iter()
                .min_by_key(|(_, (_, left))| *left)
                .map(|(&key, _)| key)
        {
            self.gone.remove(&oldest);
        }
        self.gone.insert(key, (addr, now));
        None
    }
}

/// Whether two addresses are on one host, as the duplicate rule counts.
fn same_host(a: SocketAddr, b: SocketAddr) -> bool {
    host_of(a.ip()) == host_of(b.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses of one host: ports of 10.0.0.1.
    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 6880 + u16::from(n)))
    }

    #[test]
    fn a_twin_is_the_same_id_dialed_on_another_host() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        let elsewhere = SocketAddr::from(([10, 0, 0, 2], 6881));
        ids.connected(t0, addr(1), PEER, true);
        assert!(!ids.has_twin_elsewhere(addr(1)));
        ids.connected(t0, addr(2), PEER, true);
        assert!(!ids.has_twin_elsewhere(addr(1)), "the same host");
        ids.connected(t0, elsewhere, PEER, true);
        assert!(ids.has_twin_elsewhere(addr(1)));
        assert!(ids.has_twin_elsewhere(elsewhere));
        ids.ended(t0, elsewhere, false);
        assert!(!ids.has_twin_elsewhere(addr(1)));
    }

    /// A copy of a peer's id from another host links nothing, either way.
    #[test]
    fn another_host_under_the_same_id_is_no_alias() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        let elsewhere = SocketAddr::from(([10, 0, 0, 2], 6881));
        ids.connected(t0, addr(1), PEER, true);
        ids.connected(t0, elsewhere, PEER, true);
        assert_eq!(ids.ended(t0, addr(1), false), None);
        assert_eq!(ids.ended(t0, elsewhere, false), None);
        assert_eq!(ids.connected(t0, addr(2), PEER, true), Some(addr(1)));
        ids.ended(t0, addr(2), false);
        let far = SocketAddr::from(([10, 0, 0, 3], 6881));
        assert_eq!(ids.connected(t0, far, PEER, true), None);
    }

    const PEER: PeerId = PeerId::new([7; 20]);

    #[test]
    fn a_second_address_that_lost_stands_for_the_connection_kept() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        assert_eq!(ids.connected(t0, addr(1), PEER, true), None);
        assert_eq!(ids.connected(t0, addr(2), PEER, true), None);
        // One of the two closes, whichever: the other stands.
        assert_eq!(ids.ended(t0, addr(1), false), Some(addr(2)));
        assert_eq!(ids.ended(t0, addr(2), false), None, "none left");
    }

    #[test]
    fn a_peer_that_closed_first_is_linked_when_its_other_address_connects() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        ids.connected(t0, addr(1), PEER, true);
        // The peer hung up on the old one before the new one reached us.
        assert_eq!(ids.ended(t0, addr(1), false), None);
        let soon = t0 + Duration::from_secs(3);
        assert_eq!(ids.connected(soon, addr(2), PEER, true), Some(addr(1)));
        // Linked once: a third address finds nothing left to link.
        assert_eq!(ids.connected(soon, addr(3), PEER, true), None);
    }

    #[test]
    fn a_reconnected_address_is_no_alias() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        ids.connected(t0, addr(1), PEER, true);
        ids.ended(t0, addr(1), false);
        // The same address again settles it, even though it ends once more.
        assert_eq!(ids.connected(t0, addr(1), PEER, true), None);
        assert_eq!(ids.connected(t0, addr(2), PEER, true), None);
        // And one that is live again is no alias either.
        let mut ids = PeerIds::default();
        ids.connected(t0, addr(1), PEER, true);
        ids.ended(t0, addr(1), false);
        ids.live.insert(addr(1), PEER);
        assert_eq!(ids.connected(t0, addr(2), PEER, true), None);
    }

    #[test]
    fn only_a_recent_end_of_a_well_behaved_dialed_connection_links() {
        let t0 = Instant::now();
        // PEER's dialed connection at address 1 ended at t0.
        let left = |misbehaved| {
            let mut ids = PeerIds::default();
            ids.connected(t0, addr(1), PEER, true);
            ids.ended(t0, addr(1), misbehaved);
            ids
        };
        let late = t0 + REMEMBERED + Duration::from_secs(1);
        assert_eq!(
            left(false).connected(late, addr(2), PEER, true),
            None,
            "too late"
        );
        let misbehaved = left(true).connected(t0, addr(2), PEER, true);
        assert_eq!(misbehaved, None, "it misbehaved");
        let came_in = left(false).connected(t0, addr(2), PEER, false);
        assert_eq!(
            came_in, None,
            "it came in: its listen address stands for it"
        );
        assert_eq!(
            left(false).connected(t0, addr(2), PEER, true),
            Some(addr(1))
        );

        // An incoming connection's own address is no listen address, and
        // is no connection to stand for.
        let mut ids = PeerIds::default();
        ids.connected(t0, addr(1), PEER, false);
        ids.connected(t0, addr(2), PEER, true);
        assert_eq!(ids.ended(t0, addr(1), false), None);
        ids.connected(t0, addr(3), PEER, false);
        assert_eq!(ids.ended(t0, addr(2), false), None);
        assert_eq!(ids.gone[&(PEER, addr(2).ip())].0, addr(2));
    }

    #[test]
    fn the_ended_table_is_bounded_and_keeps_the_latest() {
        let mut ids = PeerIds::default();
        let t0 = Instant::now();
        let peer = |n: u32| {
            let mut id = [0; 20];
            id[..4].copy_from_slice(&n.to_be_bytes());
            PeerId::new(id)
        };
        let total = MAX_GONE as u32 + 10;
        let host = IpAddr::from([10, 0, 0, 1]);
        for n in 0..total {
            let a = SocketAddr::from(([10, 0, 0, 1], 1000 + n as u16));
            let at = t0 + Duration::from_millis(u64::from(n));
            ids.connected(at, a, peer(n), true);
            ids.ended(at, a, false);
        }
        assert_eq!(ids.gone.len(), MAX_GONE);
        assert!(
            ids.gone.contains_key(&(peer(total - 1), host)),
            "the latest is kept"
        );
        assert!(!ids.gone.contains_key(&(peer(0), host)), "the oldest went");
        assert!(ids.live.is_empty());
    }
}
