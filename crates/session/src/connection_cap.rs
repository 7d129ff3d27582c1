//! The session-wide cap on connections. Each torrent caps its own
//! connections and connection attempts ([`SessionConfig::max_peers_per_torrent`]),
//! but a session of many torrents multiplies them: twenty torrents at 50
//! each would want 1,000 sockets, past the 1,024 file descriptors a Linux
//! process gets by default, and the listener and the storage would then
//! fail to open files. The session adds up what its torrents hold and
//! stops them dialing or accepting past [`SessionConfig::max_connections`].
//!
//! **Taking a place.** A torrent takes a place before each dial and each
//! incoming connection it keeps, under one lock with the limit, and on
//! every pass of its loop reports what its address book holds (connections
//! and dials in flight), which gives back the places of connections that
//! ended. The count is of the book's entries, so it leaves some sockets
//! out (handshakes still in the listener, the uTP port probe): keep the
//! descriptor limit some way above the cap.
//!
//! **Turns.** A torrent refused a place waits, and a freed place goes to
//! the waiting torrent that holds the fewest, the one waiting longest
//! among equals; a torrent that gives a place back goes behind those
//! already waiting. Otherwise the torrents that started first would keep
//! every place (a freed one went back to its torrent on the same pass,
//! before a torrent held back looked again), and a magnet held back for
//! long fails its metadata timeout. A freed place wakes the waiting
//! torrents at once; one that missed the wake-up looks again on its next
//! status tick.
//!
//! [`SessionConfig::max_peers_per_torrent`]: crate::SessionConfig::max_peers_per_torrent
//! [`SessionConfig::max_connections`]: crate::SessionConfig::max_connections

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// What every torrent of a session holds together, against one limit.
#[derive(Debug)]
pub(crate) struct SessionConnections {
    limit: usize,
    state: Mutex<State>,
    /// Told whenever a place is given back; shared so that a torrent can
    /// start listening before it looks for a place.
    freed: Arc<Notify>,
}

/// The count and the line, under one lock.
#[derive(Debug, Default)]
struct State {
    held: usize,
    /// Waiting torrents by share: what each holds, and its place in line.
    waiting: BTreeMap<u64, Turn>,
    next_ticket: u64,
    next_share: u64,
}

/// Who goes first among waiting torrents: fewest held, then longest
/// waiting (the lowest ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Turn {
    held: usize,
    ticket: u64,
}

impl State {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

impl SessionConnections {
    /// A count of nothing held, against `limit`.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            state: Mutex::new(State::default()),
            freed: Arc::new(Notify::new()),
        })
    }

    /// A torrent's share of the count, holding nothing yet.
    pub(crate) fn share(self: &Arc<Self>) -> ConnectionShare {
        let id = {
            let mut state = self.lock();
            state.next_share += 1;
            state.next_share
        };
        ConnectionShare {
            session: self.clone(),
            id,
            held: 0,
            waiting: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic while
        // holding the lock leaves nothing half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What every torrent holds together.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().held
    }
}

/// One torrent's part of [`SessionConnections`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionShare {
    session: Arc<SessionConnections>,
    id: u64,
    held: usize,
    /// Whether this torrent is in the line (mirrors the state's entry).
    waiting: bool,
}

impl ConnectionShare {
    /// The torrent now holds `held` connections and attempts, as its
    /// address book counts them; places it no longer holds go back to the
    /// session, and the torrent behind those already waiting.
    pub(crate) fn report(&mut self, held: usize) {
        if held == self.held {
            return;
        }
        let freed = held < self.held;
        {
            let mut state = self.session.lock();
            state.held = state.held + held - self.held;
            let ticket = state.ticket();
            if let Some(turn) = state.waiting.get_mut(&self.id) {
                turn.held = held;
                if freed {
                    turn.ticket = ticket;
                }
            }
        }
        self.held = held;
        if freed {
            self.session.freed.notify_waiters();
        }
    }

    /// Takes one place for a dial or an incoming connection, if the
    /// session has room and no waiting torrent goes first (see the module
    /// docs). Refused, the torrent waits: [`Self::freed`] tells it when a
    /// place is given back. The next [`Self::report`] takes the place into
    /// the book's count, or gives it back if the book did not take the
    /// address.
    pub(crate) fn take_place(&mut self) -> bool {
        let mut state = self.session.lock();
        let mine = match state.waiting.get(&self.id) {
            Some(&turn) => turn,
            None => Turn {
                held: self.held,
                ticket: u64::MAX,
            },
        };
        let full = state.held >= self.session.limit;
        let behind = state
            .waiting
            .iter()
            .any(|(&id, &turn)| id != self.id && turn < mine);
        if full || behind {
            if !self.waiting {
                let ticket = state.ticket();
                state.waiting.insert(
                    self.id,
                    Turn {
                        held: self.held,
                        ticket,
                    },
                );
                self.waiting = true;
            }
            return false;
        }
        state.held += 1;
        state.waiting.remove(&self.id);
        self.held += 1;
        self.waiting = false;
        true
    }

    /// The torrent wants no place now (nothing due, paused, seeding, or
    /// full by its own limits): it leaves the line.
    pub(crate) fn stop_waiting(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.session.lock().waiting.remove(&self.id);
        }
    }

    /// Whether the torrent waits for a place.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// What tells the waiting torrents that a place was given back. Take
    /// its `notified()` before looking for a place, so that a place given
    /// back meanwhile is not missed.
    pub(crate) fn freed(&self) -> Arc<Notify> {
        self.session.freed.clone()
    }

    /// The torrent ended: it leaves the line and gives back every place.
    pub(crate) fn leave(&mut self) {
        self.stop_waiting();
        self.report(0);
    }
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.leave();
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
    fn a_freed_place_goes_to_the_waiting_torrent_holding_the_fewest() {
        let session = SessionConnections::new(4);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        a.report(3);
        assert!(b.take_place());
        assert!(!b.take_place() && !c.take_place(), "full");
        a.report(2);
        assert!(!a.take_place(), "b and c wait, holding fewer");
        assert!(!b.take_place(), "c holds fewer");
        assert!(c.take_place());
        assert!(!c.is_waiting() && b.is_waiting() && a.is_waiting());
    }

    #[test]
    fn among_equals_the_longest_waiting_goes_first() {
        let session = SessionConnections::new(1);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        assert!(a.take_place());
        assert!(!b.take_place() && !c.take_place());
        assert!(!a.take_place(), "a waits too, behind b and c");
        // a's connection ends: it goes behind b and c.
        a.report(0);
        assert!(!a.take_place() && !c.take_place());
        assert!(b.take_place());
        b.report(0);
        assert!(!b.take_place() && !a.take_place());
        assert!(c.take_place());
    }

    #[test]
    fn no_place_stays_free_while_a_torrent_wants_one() {
        // Two torrents hold the limit between them and both wait for more.
        let session = SessionConnections::new(10);
        let (mut a, mut b) = (session.share(), session.share());
        let _idle = [session.share(), session.share(), session.share()];
        a.report(5);
        b.report(5);
        assert!(!a.take_place() && !b.take_place());
        a.report(4);
        assert!(!b.take_place(), "a holds fewer");
        assert!(a.take_place());
        assert_eq!(session.held(), 10);
    }

    #[test]
    fn a_torrent_that_ends_gives_its_places_back_and_leaves_the_line() {
        let session = SessionConnections::new(2);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        assert!(a.take_place() && a.take_place());
        assert!(!c.take_place() && !b.take_place());
        drop(a);
        assert_eq!(session.held(), 0);
        drop(c);
        assert!(b.take_place(), "c, ahead of b, left");
        drop(b);
        assert!(session.lock().waiting.is_empty());
    }
}
