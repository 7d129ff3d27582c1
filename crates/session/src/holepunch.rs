//! The session's side of holepunching (BEP 55): when a failed dial asks a
//! peer for a rendezvous, which dials a relay's `connect` may cause, and
//! which connections holepunching made.
//!
//! Pure: the torrent task passes the address book and acts on the answers.
//! What a relay's `connect` can make us do is bounded four times: the
//! per-connection meter in the download (a few per peer, then one per
//! 15 s, and only addresses as wide as the relay's own), the PEX dial
//! budget of the address book (shared with PEX, so a hostile relay aims our
//! dials no faster than a PEX flood), the address book's own refusals
//! (banned, unusable, already dialing or connected, or backing off when we
//! did not ask for the rendezvous), and addresses of our own, refused
//! here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_download::Rendezvous;

use crate::address_book::AddressBook;

/// Holepunching state of one torrent.
#[derive(Debug, Default)]
pub(crate) struct Holepunch {
    /// Addresses being dialed because a relay told us to, and whether a
    /// connection with them was counted already (the other side's dial
    /// may arrive first, as an incoming connection).
    punching: HashMap<SocketAddr, bool>,
    /// Addresses we asked a rendezvous for, and when, that we have not
    /// connected to since (at most [`MAX_ASKED`]): their dial may reach us
    /// before the relay's `connect` does, and that connection is
    /// holepunching's too; and the relay's `connect` for them may skip
    /// their backoff, for [`ASK_LASTS`].
    asked: HashMap<SocketAddr, Instant>,
    /// Connections holepunching made, ever.
    connected: u64,
}

/// Rendezvous remembered at once; a new one replaces the oldest, as a
/// relay that never answered must not keep the next ones out.
const MAX_ASKED: usize = 256;

/// How long a rendezvous we asked for stays ours: a relay passes it on
/// within a round trip or two.
const ASK_LASTS: Duration = Duration::from_secs(30);

impl Holepunch {
    /// A dial to `addr` failed on every transport it tried. The rendezvous
    /// to ask for, through the peer that told us of the address: one per
    /// failed dial, so one per round of the address book's backoff, and
    /// none after a holepunched dial failed (the relay already tried).
    /// Call [`Holepunch::asking`] if it is sent.
    pub(crate) fn dial_failed(
        &mut self,
        addr: SocketAddr,
        book: &AddressBook,
    ) -> Option<Rendezvous> {
        if self.punching.remove(&addr).is_some() {
            tracing::debug!(%addr, "holepunched dial ended without a connection");
            return None;
        }
        let via = book.reporter(addr)?;
        Some(Rendezvous { via, target: addr })
    }

    /// A rendezvous with `target` is asked for at `now`.
    pub(crate) fn asking(&mut self, now: Instant, target: SocketAddr) {
        if self.asked.len() >= MAX_ASKED {
            self.asked
                .retain(|_, at| now.saturating_duration_since(*at) < ASK_LASTS);
        }
        if self.asked.len() >= MAX_ASKED
            && let Some(oldest) = self
                .asked
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(a, _)| *a)
        {
            self.asked.remove(&oldest);
        }
        self.asked.insert(target, now);
    }

    /// A dial to `addr` made a connection; whether holepunching made it.
    pub(crate) fn dial_worked(&mut self, addr: SocketAddr) -> bool {
        self.asked.remove(&addr);
        let Some(counted) = self.punching.remove(&addr) else {
            return false;
        };
        if !counted {
            self.count(addr, "our dial");
        }
        true
    }

    /// `addr` connected to us: if we are punching towards it, its own dial
    /// of the simultaneous open won, and holepunching made the connection;
    /// so did it if we asked a rendezvous for it and the relay's `connect`
    /// reached it before ours reached us.
    pub(crate) fn incoming(&mut self, addr: SocketAddr) {
        let asked = self.asked.remove(&addr).is_some();
        match self.punching.get_mut(&addr) {
            Some(counted) if !*counted => {
                *counted = true;
                self.count(addr, "their dial");
            }
            None if asked => self.count(addr, "their dial, before the relay's connect reached us"),
            _ => {}
        }
    }

    fn count(&mut self, addr: SocketAddr, by: &str) {
        self.connected += 1;
        tracing::info!(%addr, by, "connected by holepunching");
    }

    /// A relay asks us to dial `addr` over uTP now. Whether to: not one of
    /// `ours` (the port we listen on, at an address of ours), and admitted
    /// by the address book, which then holds it busy. An address we did not
    /// ask a rendezvous for keeps its backoff there.
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        ours: (u16, &[IpAddr]),
        book: &mut AddressBook,
    ) -> bool {
        let asked = self
            .asked
            .remove(&addr)
            .is_some_and(|at| now.saturating_duration_since(at) < ASK_LASTS);
        if is_ours(addr, ours) || !book.holepunch(now, addr, asked) {
            tracing::debug!(%addr, "holepunch connect refused");
            return false;
        }
        self.punching.insert(addr, false);
        true
    }

    /// Connections holepunching made so far.
    pub(crate) fn connected(&self) -> u64 {
        self.connected
    }
}

/// Whether `addr` is where we listen: our port, at an address we bound
/// (any loopback address when we bound a wildcard).
fn is_ours(addr: SocketAddr, (port, bound): (u16, &[IpAddr])) -> bool {
    let ip = addr.ip().to_canonical();
    addr.port() == port
        && bound
            .iter()
            .any(|b| *b == ip || (b.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::address_book::{AddressBookConfig, Outcome, PeerSource};

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    const OURS: (u16, &[IpAddr]) = (7100, &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);

    /// A book where `target` (10.0.0.3), learned by PEX from `relay`
    /// (10.0.0.2), was dialed and failed; no holepunching yet.
    fn after_a_failed_pex_dial(t0: Instant) -> (AddressBook, Holepunch, SocketAddr, SocketAddr) {
        let mut book = AddressBook::new(AddressBookConfig::default());
        let (target, relay) = (addr(3, 6881), addr(2, 6881));
        book.add_pex(target, relay);
        assert_eq!(book.next_dial(t0), Some(target));
        book.ended(t0, target, Outcome::Failed);
        (book, Holepunch::default(), target, relay)
    }

    #[test]
    fn a_failed_dial_to_a_pex_address_asks_its_reporter_once() {
        let t0 = Instant::now();
        let (mut book, mut h, target, relay) = after_a_failed_pex_dial(t0);
        assert_eq!(
            h.dial_failed(target, &book),
            Some(Rendezvous { via: relay, target })
        );
        h.asking(t0, target);
        // The relay's connect: we dial, and that dial's failure asks for
        // no second rendezvous.
        assert!(h.connect(t0, target, OURS, &mut book));
        book.ended(t0, target, Outcome::Failed);
        assert_eq!(h.dial_failed(target, &book), None);
        // Nobody to ask for an address not learned by PEX.
        book.add(addr(4, 6881), PeerSource::Dht);
        assert_eq!(h.dial_failed(addr(4, 6881), &book), None);
    }

    /// A relay that was never asked sends `connect` for an address backing
    /// off: refused until its wait is over, or a relay could have us dial
    /// one target twice a second for ever.
    #[test]
    fn an_unasked_connect_keeps_the_backoff() {
        let t0 = Instant::now();
        let (mut book, mut h, target, _relay) = after_a_failed_pex_dial(t0);
        let soon = t0 + Duration::from_millis(1);
        assert!(!h.connect(soon, target, OURS, &mut book));
        assert!(h.connect(t0 + Duration::from_secs(3), target, OURS, &mut book));
    }

    /// Rendezvous no relay answered fill the memory of what we asked; a
    /// fresh one still skips the backoff, where it was not remembered and
    /// its `connect` was refused for good.
    #[test]
    fn unanswered_rendezvous_do_not_crowd_out_a_fresh_one() {
        let t0 = Instant::now();
        let (mut book, mut h, target, _relay) = after_a_failed_pex_dial(t0);
        for i in 0..MAX_ASKED as u16 {
            h.asking(t0, SocketAddr::from(([198, 51, 100, 1], i + 1)));
        }
        let later = t0 + Duration::from_millis(1);
        assert!(h.dial_failed(target, &book).is_some());
        h.asking(later, target);
        assert!(h.connect(later, target, OURS, &mut book));
        // One asked too long ago no longer skips it.
        let (mut book, mut h, target, _relay) = after_a_failed_pex_dial(t0);
        h.asking(t0, target);
        let stale = t0 + ASK_LASTS + Duration::from_millis(1);
        assert_eq!(book.next_dial(stale), Some(target));
        book.ended(stale, target, Outcome::Failed);
        assert!(!h.connect(stale, target, OURS, &mut book));
    }

    #[test]
    fn a_holepunched_connection_is_counted() {
        let t0 = Instant::now();
        let mut book = AddressBook::new(AddressBookConfig::default());
        let mut h = Holepunch::default();
        assert!(h.connect(t0, addr(3, 6881), OURS, &mut book));
        assert!(h.dial_worked(addr(3, 6881)));
        assert!(!h.dial_worked(addr(4, 6881)), "an ordinary dial");
        assert_eq!(h.connected(), 1);
        // Their dial arrives first, then ours works too: one connection
        // counted; and a failed dial after their success asks for nothing.
        assert!(h.connect(t0, addr(5, 6881), OURS, &mut book));
        h.incoming(addr(5, 6881));
        assert!(h.dial_worked(addr(5, 6881)));
        assert!(h.connect(t0, addr(6, 6881), OURS, &mut book));
        h.incoming(addr(6, 6881));
        h.incoming(addr(7, 6881));
        assert_eq!(h.dial_failed(addr(6, 6881), &book), None);
        assert_eq!(h.connected(), 3);
    }

    /// The relay's `connect` reaches the target first, and its dial
    /// reaches us before our `connect` does: still holepunching's work.
    #[test]
    fn their_dial_before_our_connect_counts_after_a_rendezvous() {
        let t0 = Instant::now();
        let (book, mut h, target, _relay) = after_a_failed_pex_dial(t0);
        assert!(h.dial_failed(target, &book).is_some());
        h.asking(t0, target);
        h.incoming(target);
        assert_eq!(h.connected(), 1);
        // Counted once: a second connection from it is not holepunching's.
        h.incoming(target);
        assert_eq!(h.connected(), 1);
        // Without a rendezvous, an incoming connection is just that.
        h.incoming(addr(4, 6881));
        assert_eq!(h.connected(), 1);
    }

    #[test]
    fn connects_to_ourselves_banned_busy_or_over_budget_are_refused() {
        let t0 = Instant::now();
        let config = AddressBookConfig {
            pex_dial_burst: 3,
            pex_dials_per_sec: 0.0,
            ..AddressBookConfig::default()
        };
        let mut book = AddressBook::new(config);
        let mut h = Holepunch::default();
        let me = SocketAddr::from(([127, 0, 0, 1], 7100));
        assert!(!h.connect(t0, me, OURS, &mut book));
        let bound: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))];
        assert!(!h.connect(t0, addr(9, 7100), (7100, bound), &mut book));
        assert!(
            h.connect(t0, addr(9, 7100), OURS, &mut book),
            "not ours when bound elsewhere"
        );
        book.ban(addr(5, 6881));
        assert!(!h.connect(t0, addr(5, 6881), OURS, &mut book));
        assert!(
            !h.connect(t0, addr(9, 7100), OURS, &mut book),
            "busy already"
        );
        assert!(!h.connect(t0, SocketAddr::from(([0, 0, 0, 0], 1)), OURS, &mut book));
        assert!(h.connect(t0, addr(6, 6881), OURS, &mut book));
        assert!(h.connect(t0, addr(7, 6881), OURS, &mut book));
        assert!(
            !h.connect(t0, addr(8, 6881), OURS, &mut book),
            "the PEX budget is spent"
        );
    }
}
