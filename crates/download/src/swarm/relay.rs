//! Holepunching (BEP 55) across a torrent's connections: which peer is
//! where and which speak ut_holepunch, and the relay's decision on a
//! `rendezvous`. Pure: the sessions feed it and act on its answers.
//!
//! A peer is found by either of its addresses: the connection's remote
//! address (what libtorrent compares, and for a uTP connection made from
//! the peer's listen socket the same thing) or where it listens (its
//! extension handshake's `p`, or the address we dialed). The address we
//! hand the target is the initiator's listen address when we know it: a
//! TCP connection's remote port is ephemeral, and the target must dial the
//! initiator's uTP socket, which listens on the TCP listen port's number
//! (libtorrent's, and ours).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lodestone_core::compact::is_contactable;
use lodestone_wire::holepunch::HolepunchErrorCode;

use crate::picker::PeerKey;

#[derive(Debug, Clone, Copy)]
struct Peer {
    remote: SocketAddr,
    listen: Option<SocketAddr>,
    supports: bool,
}

impl Peer {
    fn is_at(&self, addr: SocketAddr) -> bool {
        self.remote == addr || self.listen == Some(addr)
    }
}

/// A relay's answer to a rendezvous it can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Introduction {
    /// The target's connection: send it `connect` to `initiator`.
    pub target: PeerKey,
    /// Where the target should dial the initiator.
    pub initiator: SocketAddr,
}

/// Where a torrent's connected peers are and whether they holepunch.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    peers: BTreeMap<PeerKey, Peer>,
}

impl Relay {
    /// A connection to `remote` started.
    pub fn connected(&mut self, key: PeerKey, remote: SocketAddr) {
        self.peers.insert(
            key,
            Peer {
                remote,
                listen: None,
                supports: false,
            },
        );
    }

    /// The peer listens at `addr`.
    pub fn listening(&mut self, key: PeerKey, addr: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.listen = Some(addr);
        }
    }

    /// The peer's latest extension handshake offered ut_holepunch, or not.
    pub fn supports(&mut self, key: PeerKey, supports: bool) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.supports = supports;
        }
    }

    /// Where the peer `key` listens, if it said.
    pub fn listen_addr(&self, key: PeerKey) -> Option<SocketAddr> {
        self.peers.get(&key).and_then(|p| p.listen)
    }

    /// Each peer that said where it listens: its key, that address, and
    /// whether it speaks ut_holepunch.
    pub fn listen_addrs(&self) -> impl Iterator<Item = (PeerKey, SocketAddr, bool)> + '_ {
        self.peers
            .iter()
            .filter_map(|(&k, p)| Some((k, p.listen?, p.supports)))
    }

    /// The connection ended.
    pub fn gone(&mut self, key: PeerKey) {
        self.peers.remove(&key);
    }

    /// The connected peer at `addr` that speaks ut_holepunch, if any: the
    /// one to ask for a rendezvous with a peer it told us of.
    pub fn relay_at(&self, addr: SocketAddr) -> Option<PeerKey> {
        self.peers
            .iter()
            .find(|(_, p)| p.supports && p.is_at(addr))
            .map(|(&k, _)| k)
    }

    /// The peer `from` asks us to introduce it to the peer at `target`.
    /// The error says why we cannot, in BEP 55's terms. `NoSelf` is
    /// answered, as libtorrent does, when the target is the initiator
    /// itself: our own addresses are not known here, and a rendezvous for
    /// one of them finds no connection (`NotConnected`).
    pub fn introduce(
        &self,
        from: PeerKey,
        target: SocketAddr,
    ) -> Result<Introduction, HolepunchErrorCode> {
        if !is_contactable(&target) {
            return Err(HolepunchErrorCode::NoSuchPeer);
        }
        let initiator = self
            .peers
            .get(&from)
            .ok_or(HolepunchErrorCode::NotConnected)?;
        if initiator.is_at(target) {
            return Err(HolepunchErrorCode::NoSelf);
        }
        let (&key, peer) = self
            .peers
            .iter()
            .find(|(_, p)| p.is_at(target))
            .ok_or(HolepunchErrorCode::NotConnected)?;
        if !peer.supports {
            return Err(HolepunchErrorCode::NoSupport);
        }
        Ok(Introduction {
            target: key,
            initiator: initiator.listen.unwrap_or(initiator.remote),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    /// Initiator 1 (over TCP from an ephemeral port, listening on 6881),
    /// target 2 (supports), a peer 3 without ut_holepunch.
    fn relay() -> Relay {
        let mut r = Relay::default();
        r.connected(PeerKey(1), addr(1, 50_000));
        r.listening(PeerKey(1), addr(1, 6881));
        r.supports(PeerKey(1), true);
        r.connected(PeerKey(2), addr(2, 6881));
        r.supports(PeerKey(2), true);
        r.connected(PeerKey(3), addr(3, 7000));
        r
    }

    #[test]
    fn a_rendezvous_with_a_supporting_peer_introduces_the_listen_address() {
        let r = relay();
        assert_eq!(
            r.introduce(PeerKey(1), addr(2, 6881)),
            Ok(Introduction {
                target: PeerKey(2),
                initiator: addr(1, 6881),
            })
        );
        // Without a known listen address, the connection's.
        assert_eq!(
            r.introduce(PeerKey(2), addr(1, 50_000))
                .map(|i| i.initiator),
            Ok(addr(2, 6881))
        );
    }

    #[test]
    fn each_refusal_has_its_code() {
        let r = relay();
        let from = PeerKey(1);
        assert_eq!(
            r.introduce(from, addr(9, 6881)),
            Err(HolepunchErrorCode::NotConnected)
        );
        assert_eq!(
            r.introduce(from, addr(3, 7000)),
            Err(HolepunchErrorCode::NoSupport)
        );
        assert_eq!(
            r.introduce(from, addr(1, 6881)),
            Err(HolepunchErrorCode::NoSelf)
        );
        assert_eq!(
            r.introduce(from, addr(2, 0)),
            Err(HolepunchErrorCode::NoSuchPeer)
        );
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 6881));
        assert_eq!(
            r.introduce(from, unspecified),
            Err(HolepunchErrorCode::NoSuchPeer)
        );
    }

    #[test]
    fn support_and_departures_are_followed() {
        let mut r = relay();
        r.supports(PeerKey(2), false);
        assert_eq!(
            r.introduce(PeerKey(1), addr(2, 6881)),
            Err(HolepunchErrorCode::NoSupport)
        );
        assert_eq!(r.relay_at(addr(2, 6881)), None);
        r.supports(PeerKey(2), true);
        assert_eq!(r.relay_at(addr(2, 6881)), Some(PeerKey(2)));
        assert_eq!(r.relay_at(addr(3, 7000)), None, "3 does not holepunch");
        r.gone(PeerKey(2));
        assert_eq!(
            r.introduce(PeerKey(1), addr(2, 6881)),
            Err(HolepunchErrorCode::NotConnected)
        );
    }
}
