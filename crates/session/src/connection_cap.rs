//! The session-wide cap on connections. Each torrent caps its own
//! connections and connection attempts ([`SessionConfig::max_peers_per_torrent`]),
//! but a session of many torrents multiplies them: twenty torrents at 50
//! each would want 1,000 sockets, past the 1,024 file descriptors a process
//! gets by default, and the listener and the storage would then fail to
//! open files. The session adds up what its torrents hold and stops them
//! dialing or accepting past [`SessionConfig::max_connections`].
//!
//! Each torrent reports what its address book holds (connections and dials
//! in flight) on every pass of its loop, so the total lags a torrent's last
//! change by at most one pass and a torrent checks it before each dial.
//! A torrent held back by the others tries again on its next pass (at the
//! latest on its status tick).
//!
//! [`SessionConfig::max_peers_per_torrent`]: crate::SessionConfig::max_peers_per_torrent
//! [`SessionConfig::max_connections`]: crate::SessionConfig::max_connections

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What every torrent of a session holds together, against one limit.
#[derive(Debug)]
pub(crate) struct SessionConnections {
    held: AtomicUsize,
    limit: usize,
}

impl SessionConnections {
    /// A count of nothing held, against `limit`.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// A torrent's share of the count, holding nothing yet.
    pub(crate) fn share(self: &Arc<Self>) -> ConnectionShare {
        ConnectionShare {
            session: self.clone(),
            held: 0,
        }
    }

    /// What every torrent holds together, as last reported.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One torrent's part of [`SessionConnections`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionShare {
    session: Arc<SessionConnections>,
    held: usize,
}

impl ConnectionShare {
    /// The torrent now holds `held` connections and attempts. Returns
    /// whether the session has room for one more.
    pub(crate) fn has_room(&mut self, held: usize) -> bool {
        let count = &self.session.held;
        if held > self.held {
            count.fetch_add(held - self.held, Ordering::Relaxed);
        } else {
            count.fetch_sub(self.held - held, Ordering::Relaxed);
        }
        self.held = held;
        self.session.held() < self.session.limit
    }
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.session.held.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrents_share_one_limit() {
        let session = SessionConnections::new(5);
        let (mut a, mut b) = (session.share(), session.share());
        assert!(a.has_room(3));
        assert!(b.has_room(1), "4 of 5 held");
        assert!(!b.has_room(2), "5 of 5 held: no room for a sixth");
        assert!(!a.has_room(3));
        assert!(a.has_room(2), "a gave one back");
        assert_eq!(session.held(), 4);
    }

    #[test]
    fn a_torrent_that_ends_gives_its_share_back() {
        let session = SessionConnections::new(2);
        let mut a = session.share();
        assert!(!a.has_room(2));
        drop(a);
        assert_eq!(session.held(), 0);
        assert!(session.share().has_room(0));
    }
}
