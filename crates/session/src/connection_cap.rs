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
//! **Turns.** A torrent refused a place for a dial waits in line, ordered
//! by what it holds (fewest first) and then by how long it has waited; one
//! that gives a place back goes behind those waiting that hold as many.
//! A torrent takes a place only while more are free than there are
//! waiting torrents ahead of it, so a freed place goes to the torrent
//! holding the fewest, the first in line among equals, and places freed
//! together are taken at once. Otherwise the
//! torrents that started first would keep every place (a freed one went
//! back to its torrent on the same pass, before a torrent held back looked
//! again), and a magnet held back for long fails its metadata timeout.
//! Places given back, and a torrent leaving the line, wake the waiting
//! torrents; one that misses it looks again on its next status tick.
//! Incoming connections and holepunch dials take a free place too, but a
//! refusal does not put their torrent in line: it may not want to dial.
//!
//! **Turnover.** Turns hand out only places that free up on their own, and
//! a busy session's downloads may hold theirs for hours. So a torrent that
//! holds no place at all and has waited [`TURNOVER_AFTER`] for one, while
//! none is free, asks the torrent that offers the most connections to close
//! one ([`ConnectionShare::ask_for_turnover`]); the place it frees goes, by
//! the turns above, to a torrent holding none: the one that asked, or one
//! that has waited longer. A torrent offers its download's connections but
//! one ([`ConnectionShare::offer`]), and the download never closes its last
//! for turnover, so nobody is left without a peer; dials and metadata
//! fetches are never cut short. Each ask doubles the wait before the next
//! (10 s, 20 s, … up to [`TURNOVER_MAX_INTERVAL`]) until a connection of
//! the torrent's proves of use (piece data or metadata crossed it), which
//! sets the wait back to [`TURNOVER_AFTER`]; so a torrent whose addresses
//! are all dead, or whose peers shake hands and hang up, does not make
//! another drop and redial a peer every few seconds.
//!
//! **Visitors of a torrent outside the line.** A torrent that dials
//! nobody (a seed, or a download with nothing due) is not in line, so no
//! turn gives it a place, and a peer it refuses may not come back for many
//! minutes. So while every place is held, a peer connecting to a torrent
//! that holds none and is not in line takes one past the cap if another
//! torrent offers a connection to close, which that torrent is asked to
//! close at once ([`ConnectionShare::take_place_for_incoming`]). Each place
//! so taken is backed by an offered connection; the count stays past the
//! cap until the asked torrent closes one (or, if it has none left to
//! close, until one of the session's connections ends), by at most one
//! place per torrent that held none. A visitor costs another torrent a
//! connection, and anyone may connect to any of our torrents, so these
//! asks have one pace for the whole session that only slows (10 s, 20 s,
//! … up to [`TURNOVER_MAX_INTERVAL`]): a peer that connects, takes a block
//! and leaves cannot bring it back, as a connection of use does for dial
//! asks, nor get one ask per torrent. Honest visitors that stay hold their
//! place, and the torrent no longer needs one past the cap.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What every torrent of a session holds together, against one limit.
#[derive(Debug)]
pub(crate) struct SessionConnections {
    limit: usize,
    state: Mutex<State>,
    /// Told whenever places are given back or a torrent leaves the line;
    /// shared so that a torrent can start listening before it looks for a
    /// place.
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
    /// Every share, by id: what it offers to close for a shut-out torrent.
    offers: HashMap<u64, Offer>,
    /// The session's asks for connections for visitors (see the module
    /// docs).
    visitor_asks: AskPace,
}

/// How long a torrent holding no place waits for one before it asks
/// another torrent to close a connection for it, and between two asks
/// while its connections prove of use.
const TURNOVER_AFTER: Duration = Duration::from_secs(5);

/// The longest wait between two asks of a torrent whose places come to
/// nothing of use: five minutes, by then its addresses have backed off as
/// far as they go, and more asks would only churn another's peers.
const TURNOVER_MAX_INTERVAL: Duration = Duration::from_secs(300);

/// What one torrent offers to close for a shut-out torrent.
#[derive(Debug)]
struct Offer {
    /// Connections the torrent could close (see [`ConnectionShare::offer`]),
    /// less those it was asked for since it last offered.
    offered: usize,
    /// Where asks for them go.
    requests: Arc<TurnoverRequests>,
}

/// Connections a torrent is asked to close, for torrents the cap shuts
/// out: counted here, waited for in the torrent's loop.
#[derive(Debug, Default)]
pub(crate) struct TurnoverRequests {
    /// Connections asked for and not yet taken by the torrent.
    asked: AtomicUsize,
    /// Wakes the torrent's loop when asked.
    notify: Notify,
}

impl TurnoverRequests {
    /// Asks for one more connection to be closed.
    fn ask(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
        // A permit is kept if the torrent is not waiting right now.
        self.notify.notify_one();
    }

    /// Waits until the torrent is asked to close connections, and takes
    /// how many. Cancel-safe: the count is taken in the poll that returns.
    pub(crate) async fn asked(&self) -> usize {
        loop {
            let asked = self.asked.swap(0, Ordering::Relaxed);
            if asked > 0 {
                return asked;
            }
            self.notify.notified().await;
        }
    }
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
        let requests = Arc::new(TurnoverRequests::default());
        let id = {
            let mut state = self.lock();
            state.next_share += 1;
            let id = state.next_share;
            let offer = Offer {
                offered: 0,
                requests: requests.clone(),
            };
            state.offers.insert(id, offer);
            id
        };
        ConnectionShare {
            session: self.clone(),
            id,
            held: 0,
            waiting: false,
            offered: 0,
            requests,
            shut_out_since: None,
            dial_asks: AskPace::default(),
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
    /// What it last offered to close (see [`Self::offer`]).
    offered: usize,
    /// Where the session's asks to close connections arrive.
    requests: Arc<TurnoverRequests>,
    /// Since when it has been shut out, as its status ticks saw it.
    shut_out_since: Option<Instant>,
    /// Its asks for connections for its dials ([`Self::ask_for_turnover`]).
    dial_asks: AskPace,
}

/// When a torrent may next ask another to close a connection for it.
#[derive(Debug)]
struct AskPace {
    /// When it last asked.
    last: Option<Instant>,
    /// How long after `last` it may ask again.
    interval: Duration,
}

impl Default for AskPace {
    /// Free to ask now; after the first ask, twice [`TURNOVER_AFTER`].
    fn default() -> Self {
        Self {
            last: None,
            interval: TURNOVER_AFTER,
        }
    }
}

impl AskPace {
    /// Whether the interval has passed since the last ask.
    fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval)
    }

    /// It asked at `now`: the next ask waits twice as long.
    fn asked(&mut self, now: Instant) {
        self.interval = (self.interval * 2).min(TURNOVER_MAX_INTERVAL);
        self.last = Some(now);
    }
}

impl ConnectionShare {
    /// The torrent now holds `held` connections and attempts, as its
    /// address book counts them; places it no longer holds go back to the
    /// session, and the torrent, if in line, behind those holding as many.
    pub(crate) fn report(&mut self, held: usize) {
        if held == self.held {
            return;
        }
        let freed = held < self.held;
        {
            let mut state = self.session.lock();
            state.held = state.held + held - self.held;
            let ticket = (freed && self.waiting).then(|| state.ticket());
            if let Some(turn) = state.waiting.get_mut(&self.id) {
                turn.held = held;
                turn.ticket = ticket.unwrap_or(turn.ticket);
            }
        }
        self.held = held;
        if freed {
            self.session.freed.notify_waiters();
        }
    }

    /// Takes one place for a dial, if more are free than there are waiting
    /// torrents ahead of this one (see the module docs). Refused, the
    /// torrent waits in line: [`Self::freed`] tells it when places are
    /// given back. The next [`Self::report`] takes the place into the
    /// book's count; one the torrent does not use after all goes back
    /// with [`Self::give_back_unused`].
    pub(crate) fn take_place_or_wait(&mut self) -> bool {
        self.take(true)
    }

    /// Gives back the place just taken, which the torrent did not use after
    /// all (its book refused the address, or had none due). It wakes
    /// nobody: a place held this briefly is no place freed, and a relay
    /// that sends holepunch requests we refuse would otherwise wake every
    /// waiting torrent each time.
    pub(crate) fn give_back_unused(&mut self) {
        self.session.lock().held -= 1;
        self.held -= 1;
    }

    /// Takes one place for a holepunch dial, on the terms of
    /// [`Self::take_place_or_wait`], without joining the line when
    /// refused.
    pub(crate) fn take_place(&mut self) -> bool {
        self.take(false)
    }

    /// Takes one place for an incoming connection, on the terms of
    /// [`Self::take_place`]. When that is refused because every place is
    /// held, a torrent that holds none and is not in line (the turns serve
    /// one that is) takes one past the cap, if the session's visitor asks
    /// are due and another torrent offers a connection, which it is asked
    /// to close (see the module docs).
    pub(crate) fn take_place_for_incoming(&mut self, now: Instant) -> bool {
        if self.take(false) {
            return true;
        }
        if self.held > 0 || self.waiting {
            return false;
        }
        let mut state = self.session.lock();
        // A place is free, kept for a torrent in line holding none: it is
        // theirs, and nobody need close.
        if state.held < self.session.limit
            || !state.visitor_asks.due(now)
            || !ask_the_most_offering(&mut state, self.id)
        {
            return false;
        }
        state.held += 1;
        state.visitor_asks.asked(now);
        drop(state);
        self.held += 1;
        true
    }

    fn take(&mut self, or_wait: bool) -> bool {
        let mut state = self.session.lock();
        let mine = match state.waiting.get(&self.id) {
            Some(&turn) => turn,
            None => Turn {
                held: self.held,
                ticket: u64::MAX,
            },
        };
        let free = self.session.limit.saturating_sub(state.held);
        let ahead = state
            .waiting
            .iter()
            .filter(|&(&id, &turn)| id != self.id && turn < mine)
            .count();
        if free <= ahead {
            if or_wait && !self.waiting {
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
    /// full by its own limits): it leaves the line, and those behind it
    /// look again.
    pub(crate) fn stop_waiting(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.session.lock().waiting.remove(&self.id);
            self.session.freed.notify_waiters();
        }
    }

    /// Whether the torrent waits for a place.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Whether the cap alone keeps the torrent from connecting: it waits
    /// for a place and holds none, neither a connection nor a dial. (One
    /// that waits while holding places waits for more, which is no stall.)
    pub(crate) fn is_shut_out(&self) -> bool {
        self.waiting && self.held == 0
    }

    /// What tells the waiting torrents that places were given back or the
    /// line moved. Take its `notified()` before looking for a place, so
    /// that a change meanwhile is not missed.
    pub(crate) fn freed(&self) -> Arc<Notify> {
        self.session.freed.clone()
    }

    /// The torrent could close `connections` of those it holds for a
    /// torrent the cap shuts out: its download's connections but one (none
    /// while it fetches metadata or is paused; its dials never count).
    /// Written through only when it changes, so an ask lowers the offer
    /// until the torrent's count moves.
    pub(crate) fn offer(&mut self, connections: usize) {
        if connections == self.offered {
            return;
        }
        self.offered = connections;
        if let Some(offer) = self.session.lock().offers.get_mut(&self.id) {
            offer.offered = connections;
        }
    }

    /// A connection of the torrent's was of use: it ended after piece data
    /// or metadata crossed it, or the metadata fetch it served succeeded.
    /// The places turnover gives the torrent are put to use, so its dial
    /// asks go back to every [`TURNOVER_AFTER`] (not the visitor asks: see
    /// the module docs). (One still open holds a place, so the torrent does
    /// not ask meanwhile.)
    pub(crate) fn connection_of_use(&mut self) {
        self.dial_asks.interval = TURNOVER_AFTER;
    }

    /// Where the session's requests to close connections arrive.
    pub(crate) fn turnover_requests(&self) -> Arc<TurnoverRequests> {
        self.requests.clone()
    }

    /// Called on each status tick. A torrent shut out for
    /// [`TURNOVER_AFTER`], at least its ask interval after its last ask,
    /// while no place is free, asks the torrent offering the most
    /// connections to close one; returns whether it asked someone.
    pub(crate) fn ask_for_turnover(&mut self, now: Instant) -> bool {
        if !self.is_shut_out() {
            self.shut_out_since = None;
            return false;
        }
        let since = *self.shut_out_since.get_or_insert(now);
        if now.saturating_duration_since(since) < TURNOVER_AFTER || !self.dial_asks.due(now) {
            return false;
        }
        let mut state = self.session.lock();
        // A place is free (one given back since the torrent last looked):
        // it takes that one on its next pass, and nobody need close.
        if state.held < self.session.limit || !ask_the_most_offering(&mut state, self.id) {
            return false;
        }
        drop(state);
        // Longer until a place is put to use (`connection_of_use`).
        self.dial_asks.asked(now);
        true
    }

    /// The torrent ended: it leaves the line and gives back every place.
    pub(crate) fn leave(&mut self) {
        self.stop_waiting();
        self.offer(0);
        self.report(0);
    }
}

/// Asks the torrent offering the most connections, other than `asker`, to
/// close one; returns whether one offered any.
fn ask_the_most_offering(state: &mut State, asker: u64) -> bool {
    let Some(offer) = state
        .offers
        .iter_mut()
        .filter(|(id, offer)| **id != asker && offer.offered > 0)
        // The most offered; among equals, the torrent that came first.
        .max_by_key(|(id, offer)| (offer.offered, std::cmp::Reverse(**id)))
        .map(|(_, offer)| offer)
    else {
        return false;
    };
    // Lowered until the torrent offers anew, so that two askers do not
    // count on one connection.
    offer.offered -= 1;
    offer.requests.ask();
    true
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.leave();
        self.session.lock().offers.remove(&self.id);
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
        assert!(a.take_place_or_wait(), "3 of 5 held");
        assert!(b.take_place_or_wait());
        assert!(b.take_place_or_wait(), "5 of 5 held");
        assert!(!b.take_place_or_wait(), "no room for a sixth");
        a.report(2);
        assert!(b.take_place_or_wait(), "a gave one back");
        assert_eq!(session.held(), 5);
    }

    #[test]
    fn a_freed_place_goes_to_the_waiting_torrent_holding_the_fewest() {
        let session = SessionConnections::new(4);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        a.report(3);
        assert!(b.take_place_or_wait());
        assert!(!b.take_place_or_wait() && !c.take_place_or_wait(), "full");
        a.report(2);
        assert!(!a.take_place_or_wait(), "b and c wait, holding fewer");
        assert!(!b.take_place_or_wait(), "c holds fewer");
        assert!(c.take_place_or_wait());
        assert!(!c.is_waiting() && b.is_waiting() && a.is_waiting());
    }

    #[test]
    fn among_equals_the_longest_waiting_goes_first() {
        let session = SessionConnections::new(1);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        assert!(a.take_place_or_wait());
        assert!(!b.take_place_or_wait() && !c.take_place_or_wait());
        assert!(!a.take_place_or_wait(), "a waits too, behind b and c");
        // a's connection ends: it goes behind b and c.
        a.report(0);
        assert!(!a.take_place_or_wait() && !c.take_place_or_wait());
        assert!(b.take_place_or_wait());
        b.report(0);
        assert!(!b.take_place_or_wait() && !a.take_place_or_wait());
        assert!(c.take_place_or_wait());
    }

    #[test]
    fn no_place_stays_free_while_a_torrent_wants_one() {
        // Two torrents hold the limit between them and both wait for more.
        let session = SessionConnections::new(10);
        let (mut a, mut b) = (session.share(), session.share());
        let _idle = [session.share(), session.share(), session.share()];
        a.report(5);
        b.report(5);
        assert!(!a.take_place_or_wait() && !b.take_place_or_wait());
        a.report(4);
        assert!(!b.take_place_or_wait(), "a holds fewer");
        assert!(a.take_place_or_wait());
        assert_eq!(session.held(), 10);
    }

    #[test]
    fn places_freed_together_are_taken_at_once() {
        let session = SessionConnections::new(4);
        let (mut x, mut a, mut b) = (session.share(), session.share(), session.share());
        x.report(4);
        assert!(!a.take_place_or_wait() && !b.take_place_or_wait());
        x.leave();
        // First in line, a takes all but the place kept for b.
        for _ in 0..3 {
            assert!(a.take_place_or_wait());
        }
        assert!(!a.take_place_or_wait(), "the last place is b's");
        assert!(b.take_place_or_wait());
        assert_eq!(session.held(), 4);
    }

    #[test]
    fn a_place_given_back_unused_wakes_nobody() {
        let session = SessionConnections::new(1);
        let mut a = session.share();
        let freed = session.freed.clone();
        let woken = freed.notified();
        tokio::pin!(woken);
        assert!(!woken.as_mut().enable(), "nothing told yet");
        assert!(a.take_place());
        a.give_back_unused();
        assert_eq!(session.held(), 0);
        assert!(!woken.as_mut().enable(), "no wake-up");
        a.report(1);
        a.report(0);
        assert!(
            woken.as_mut().enable(),
            "a place given back by report wakes"
        );
        assert!(a.take_place(), "the place is free again");
    }

    #[test]
    fn an_incoming_connection_refused_does_not_join_the_line() {
        let session = SessionConnections::new(1);
        let (mut a, mut b) = (session.share(), session.share());
        assert!(a.take_place());
        assert!(!b.take_place_for_incoming(Instant::now()), "a offers none");
        assert!(!b.is_waiting());
        a.report(0);
        assert!(a.take_place(), "nobody waits");
    }

    #[test]
    fn a_visitor_of_a_torrent_holding_none_gets_a_place_another_gives_up() {
        // a holds the limit and offers one; b, a seed, dials nobody.
        let session = SessionConnections::new(2);
        let (mut a, mut b) = (session.share(), session.share());
        a.report(2);
        a.offer(1);
        let t0 = Instant::now();
        assert!(b.take_place_for_incoming(t0));
        assert_eq!(asked(&a), 1, "a is asked to close one");
        assert_eq!(session.held(), 3, "past the cap until a closes it");
        assert!(!b.is_waiting(), "a seed does not join the line");
        // a closed one, and offers anew as its count moved.
        a.report(1);
        a.offer(0);
        // Holding one, b takes more only as places free.
        assert!(!b.take_place_for_incoming(t0));
        assert_eq!(session.held(), 2);
        // b's connection came to nothing and a took the place back: b's
        // next visitor is let in after the doubled wait, 10 s.
        b.report(0);
        a.report(2);
        a.offer(1);
        assert!(!b.take_place_for_incoming(t0 + TURNOVER_AFTER));
        assert!(b.take_place_for_incoming(t0 + TURNOVER_AFTER * 2));
        assert_eq!(asked(&a), 2);
        // A visitor that took a block and left does not bring the pace
        // back, as a connection of use does for dials: the next waits 20 s.
        b.connection_of_use();
        b.report(0);
        a.report(2);
        a.offer(0);
        a.offer(1);
        assert!(!b.take_place_for_incoming(t0 + TURNOVER_AFTER * 3));
        assert!(b.take_place_for_incoming(t0 + TURNOVER_AFTER * 6));
    }

    #[test]
    fn visitors_of_all_torrents_share_one_pace() {
        let session = SessionConnections::new(2);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        a.report(2);
        a.offer(1);
        let t0 = Instant::now();
        assert!(b.take_place_for_incoming(t0));
        a.report(1);
        a.offer(0);
        a.offer(1);
        // Another seed holding none: one peer visiting each cannot cost a
        // connection per torrent.
        assert!(!c.take_place_for_incoming(t0 + TURNOVER_AFTER));
        assert!(c.take_place_for_incoming(t0 + TURNOVER_AFTER * 2));
        assert_eq!(asked(&a), 2);
    }

    #[test]
    fn a_visitor_goes_past_the_cap_only_for_a_torrent_the_line_cannot_serve() {
        let session = SessionConnections::new(2);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        a.report(2);
        a.offer(1);
        let t0 = Instant::now();
        // b waits in line for a dial: turns and turnover serve it.
        assert!(!b.take_place_or_wait());
        assert!(!b.take_place_for_incoming(t0));
        // A place frees and is kept for b: c's visitor may not take it,
        // nor have a close one for it.
        a.report(1);
        assert!(!c.take_place_for_incoming(t0));
        assert_eq!((asked(&a), session.held()), (0, 1));
        assert!(b.take_place_or_wait());
    }

    #[test]
    fn a_visitor_is_refused_when_nobody_offers_a_connection() {
        let session = SessionConnections::new(1);
        let (mut a, mut b) = (session.share(), session.share());
        a.report(1);
        // A metadata fetch, or a download with one connection, offers none.
        a.offer(0);
        assert!(!b.take_place_for_incoming(Instant::now()));
        assert_eq!((asked(&a), session.held()), (0, 1));
    }

    #[test]
    fn a_torrent_that_ends_gives_its_places_back_and_leaves_the_line() {
        let session = SessionConnections::new(2);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        assert!(a.take_place_or_wait() && a.take_place_or_wait());
        assert!(!c.take_place_or_wait() && !b.take_place_or_wait());
        drop(a);
        assert_eq!(session.held(), 0);
        drop(c);
        assert!(b.take_place_or_wait(), "c, ahead of b, left");
        drop(b);
        assert!(session.lock().waiting.is_empty());
    }

    /// Connections `share` has been asked for and not yet taken.
    fn asked(share: &ConnectionShare) -> usize {
        share.requests.asked.load(Ordering::Relaxed)
    }

    #[test]
    fn a_torrent_shut_out_asks_the_one_offering_the_most_to_close_a_connection() {
        let session = SessionConnections::new(5);
        let (mut a, mut b, mut c) = (session.share(), session.share(), session.share());
        a.report(2);
        a.offer(1);
        b.report(3);
        b.offer(2);
        assert!(!c.take_place_or_wait() && c.is_shut_out());
        let t0 = Instant::now();
        assert!(!c.ask_for_turnover(t0), "it has only just been shut out");
        assert!(!c.ask_for_turnover(t0 + TURNOVER_AFTER / 2));
        assert!(c.ask_for_turnover(t0 + TURNOVER_AFTER));
        assert_eq!((asked(&a), asked(&b)), (0, 1), "b offers the most");
        assert!(
            !c.ask_for_turnover(t0 + TURNOVER_AFTER * 2),
            "the next ask waits twice as long"
        );
        // b's offer is down to 1, as many as a's, and a came first.
        assert!(c.ask_for_turnover(t0 + TURNOVER_AFTER * 3));
        assert_eq!((asked(&a), asked(&b)), (1, 1));
        // b's connection closed: its place goes to c, who stops asking.
        b.report(2);
        assert!(c.take_place_or_wait());
        assert!(!c.ask_for_turnover(t0 + TURNOVER_AFTER * 20));
        assert_eq!((asked(&a), asked(&b)), (1, 1));
    }

    /// A session allowed `limit`, all held by `a`, which offers `offered`
    /// of them, and `b`, shut out.
    fn b_shut_out_by_a(
        limit: usize,
        offered: usize,
    ) -> (Arc<SessionConnections>, ConnectionShare, ConnectionShare) {
        let session = SessionConnections::new(limit);
        let (mut a, mut b) = (session.share(), session.share());
        a.report(limit);
        a.offer(offered);
        assert!(!b.take_place_or_wait() && b.is_shut_out());
        (session, a, b)
    }

    #[test]
    fn nobody_is_asked_for_what_nobody_offers() {
        // Dials, or a metadata fetch's connections: nothing offered.
        let (session, mut a, mut b) = b_shut_out_by_a(2, 0);
        let t0 = Instant::now();
        assert!(!b.ask_for_turnover(t0));
        assert!(!b.ask_for_turnover(t0 + TURNOVER_AFTER));
        // Offered, then taken back before b asked.
        a.offer(1);
        a.offer(0);
        assert!(!b.ask_for_turnover(t0 + TURNOVER_AFTER * 2));
        a.offer(1);
        assert!(b.ask_for_turnover(t0 + TURNOVER_AFTER * 2));
        assert!(
            !b.ask_for_turnover(t0 + TURNOVER_AFTER * 3),
            "the one offered is spoken for"
        );
        drop(a);
        assert_eq!(session.lock().offers.len(), 1, "a left");
    }

    #[tokio::test]
    async fn a_request_waits_for_the_torrent_and_is_taken_whole() {
        let (_session, a, mut b) = b_shut_out_by_a(1, 3);
        let t0 = Instant::now();
        b.ask_for_turnover(t0);
        b.ask_for_turnover(t0 + TURNOVER_AFTER);
        let requests = a.turnover_requests();
        assert_eq!(requests.asked().await, 1);
        // No connection came of it: 10 s, then 20 s to the next asks.
        b.ask_for_turnover(t0 + TURNOVER_AFTER * 3);
        b.ask_for_turnover(t0 + TURNOVER_AFTER * 7);
        assert_eq!(requests.asked().await, 2, "both, in one take");
        assert_eq!(asked(&a), 0);
    }

    #[test]
    fn asks_slow_down_while_the_places_given_are_not_used() {
        let (_session, mut a, mut b) = b_shut_out_by_a(2, 1);
        let t0 = Instant::now();
        let asks_at = |b: &mut ConnectionShare, a: &mut ConnectionShare, secs: &[u64]| {
            secs.iter()
                .copied()
                .filter(|&s| {
                    // a offers anew, as its loop would once a peer left.
                    a.offer(0);
                    a.offer(1);
                    b.ask_for_turnover(t0 + Duration::from_secs(s))
                })
                .collect::<Vec<_>>()
        };
        // No place given becomes a connection (b stays shut out): the waits
        // double from 10 s and stop at 5 minutes.
        let tried = [
            0, 5, 14, 15, 34, 35, 74, 75, 155, 314, 315, 614, 615, 914, 915,
        ];
        assert_eq!(
            asks_at(&mut b, &mut a, &tried),
            vec![5, 15, 35, 75, 155, 315, 615, 915]
        );
        // A connection of b's carried piece data: 5 s again.
        b.connection_of_use();
        assert_eq!(asks_at(&mut b, &mut a, &[919, 920]), vec![920]);
    }

    #[test]
    fn nobody_is_asked_while_a_place_is_free() {
        let (_session, mut a, mut b) = b_shut_out_by_a(3, 2);
        a.report(2);
        // b has not looked again yet: the place freed is its own to take.
        let t0 = Instant::now();
        assert!(!b.ask_for_turnover(t0));
        assert!(!b.ask_for_turnover(t0 + TURNOVER_AFTER));
        assert_eq!(asked(&a), 0);
    }
}
