//! The session-wide cap on connections. Each torrent caps its own
//! connections and connection attempts ([`SessionConfig::max_peers_per_torrent`]),
//! but a session of many torrents multiplies them: twenty torrents at 50
//! each would want 1,000 sockets, past the 1,024 file descriptors a Linux
//! process gets by default, and the listener and the storage would then
//! fail to open files. The session adds up what its torrents hold and
//! stops them dialing or accepting past [`SessionConfig::max_connections`].
//!
//! **Taking a place.** A torrent takes a place before each dial and each
//! incoming connection it keeps, atomically against the limit, and on
//! every pass of its loop reports what its address book holds (connections
//! and dials in flight), which gives back the places of connections that
//! ended. The count is of the book's entries, so it leaves some sockets
//! out (handshakes still in the listener, the uTP port probe): keep the
//! descriptor limit some way above the cap.
//!
//! **Fairness.** Torrents that started first would otherwise keep every
//! place: a freed one goes back to its torrent on the same pass, before a
//! torrent held back looks again, and a magnet held back for long fails
//! its metadata timeout. So while some torrent waits for a place, one that
//! holds its fair share (the limit divided among the torrents, and at
//! least one for a torrent that waits) or more takes none, and a freed
//! place wakes the waiting torrents at once. When every waiting torrent
//! holds its share already, a freed place may stay free until some
//! connection ends.
//!
//! [`SessionConfig::max_peers_per_torrent`]: crate::SessionConfig::max_peers_per_torrent
//! [`SessionConfig::max_connections`]: crate::SessionConfig::max_connections

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// What every torrent of a session holds together, against one limit.
#[derive(Debug)]
pub(crate) struct SessionConnections {
    held: AtomicUsize,
    /// Torrents with a share.
    shares: AtomicUsize,
    /// Torrents refused a place that still want one.
    waiting: AtomicUsize,
    limit: usize,
    /// Told whenever a place is given back.
    freed: Notify,
}

impl SessionConnections {
    /// A count of nothing held, against `limit`.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            shares: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        })
    }

    /// A torrent's share of the count, holding nothing yet.
    pub(crate) fn share(self: &Arc<Self>) -> ConnectionShare {
        self.shares.fetch_add(1, Ordering::Relaxed);
        ConnectionShare {
            session: self.clone(),
            held: 0,
            waiting: false,
        }
    }

    /// What every torrent holds together.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One torrent's part of [`SessionConnections`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionShare {
    session: Arc<SessionConnections>,
    held: usize,
    /// Whether this torrent counts among the waiting.
    waiting: bool,
}

impl ConnectionShare {
    /// The torrent now holds `held` connections and attempts, as its
    /// address book counts them; places it no longer holds go back to the
    /// session.
    pub(crate) fn report(&mut self, held: usize) {
        let count = &self.session.held;
        if held > self.held {
            count.fetch_add(held - self.held, Ordering::Relaxed);
        } else if held < self.held {
            count.fetch_sub(self.held - held, Ordering::Relaxed);
            // To the back of the line: the places go to torrents already
            // waiting, which this one's next pass would otherwise beat.
            self.stop_waiting();
            self.session.freed.notify_waiters();
        }
        self.held = held;
    }

    /// Takes one place for a dial or an incoming connection, if the
    /// session has room and no torrent waits that this one would take it
    /// from (see the module docs). Refused, the torrent waits: it is
    /// woken by [`Self::freed`] when a place is given back. The next
    /// [`Self::report`] takes the place into the book's count, or gives
    /// it back if the book did not take the address.
    pub(crate) fn take_place(&mut self) -> bool {
        let session = &self.session;
        let others_waiting = session.waiting.load(Ordering::Relaxed) > usize::from(self.waiting);
        let fair = session.limit / session.shares.load(Ordering::Relaxed).max(1);
        // With more torrents than places, the fair share is none, but a
        // torrent that waits is owed one.
        let bar = if self.waiting { fair.max(1) } else { fair };
        let taken = !(others_waiting && self.held >= bar)
            && session
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                    (h < session.limit).then_some(h + 1)
                })
                .is_ok();
        if taken {
            self.held += 1;
            self.stop_waiting();
        } else if !self.waiting {
            self.waiting = true;
            session.waiting.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The torrent wants no place now (paused, seeding, or full by its own
    /// limits): it waits no more.
    pub(crate) fn stop_waiting(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.session.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the torrent waits for a place.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Resolves when some torrent gives a place back.
    pub(crate) fn freed(&self) -> Notified<'_> {
        self.session.freed.notified()
    }
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.stop_waiting();
        self.report(0);
        self.session.shares.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrents_share_one_limit() {
        let session = SessionConnections::new(5);
        let (mut a, mut b) = (session.share(), session.share());
        a.report(2);
        assert!(a.take_place(), "3 of 5 held");
        assert!(b.take_place());
        assert!(b.take_place(), "5 of 5 held");
        assert!(!b.take_place(), "no room for a sixth");
        a.report(2);
        assert!(b.take_place(), "a gave one back");
        assert_eq!(session.held(), 5);
    }

    #[test]
    fn a_torrent_at_its_fair_share_leaves_freed_places_to_the_waiting() {
        let session = SessionConnections::new(4);
        let (mut a, mut b) = (session.share(), session.share());
        for _ in 0..4 {
            assert!(a.take_place());
        }
        assert!(!b.take_place());
        assert!(b.is_waiting());
        a.report(3);
        assert!(
            !a.take_place(),
            "3 is past a's fair share of 2 while b waits"
        );
        assert!(b.take_place());
        assert!(!b.is_waiting());
        // Nobody waits now: a place given back goes to whoever asks.
        a.report(2);
        assert!(a.take_place());
    }

    #[test]
    fn below_its_fair_share_a_torrent_takes_places_however_many_wait() {
        let session = SessionConnections::new(3);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        for _ in 0..3 {
            assert!(b.take_place(), "nobody waits yet");
        }
        assert!(!a.take_place() && !c.take_place());
        b.report(2);
        assert!(!b.take_place(), "past its share of 1 while others wait");
        assert!(a.take_place(), "a holds none of its share of 1");
        assert!(!a.is_waiting() && c.is_waiting());
        assert_eq!(session.held(), 3);
    }

    #[test]
    fn a_torrent_that_ends_gives_its_places_back() {
        let session = SessionConnections::new(2);
        let (mut a, mut b) = (session.share(), session.share());
        assert!(a.take_place() && a.take_place());
        assert!(!b.take_place());
        drop(a);
        assert_eq!(session.held(), 0);
        assert!(b.take_place());
        drop(b);
        assert_eq!(session.waiting.load(Ordering::Relaxed), 0);
        assert_eq!(session.shares.load(Ordering::Relaxed), 0);
    }
}
