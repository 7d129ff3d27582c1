//! The way in for connections while the metadata fetch runs, kept open
//! across the fetch's hand-over so that no handshaken connection is lost
//! between the two phases.
//!
//! Once the fetch has the metadata it stops taking connections and hands
//! its own back, and the torrent's task sees that a moment later. A dial
//! or an accept that completes in between used to find the fetch's channel
//! closed and be dropped; the peer then waited out the address book's
//! backoff (2 s by default) and cost one more connection. Such a late
//! connection is now kept here and joins the download with the others.

use std::collections::HashMap;
use std::net::SocketAddr;

use lodestone_core::counts::count_down;
use lodestone_wire::{ExitKind, PeerExit};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// The connections (`C`) on their way to the metadata fetch, and those
/// that arrived after it stopped taking them.
///
/// Every connection offered and taken ends up in one place: inside the
/// fetch (which hands it back or reports its end), in
/// [`Remainder::late`], or reported on `exits` when the inbox is dropped
/// before the hand-over (a pause, a removal, a failed fetch).
#[derive(Debug)]
pub(crate) struct FetchInbox<C> {
    sender: mpsc::Sender<C>,
    /// Addresses given to the fetch and not yet reported ended, with how
    /// many connections each (TCP and uTP share port numbers, so one
    /// address may bring two).
    inside: HashMap<SocketAddr, usize>,
    /// Connections that arrived after the fetch closed its channel; at
    /// most the channel's capacity, so a burst of accepts in that window
    /// holds no more than the fetch itself would have queued.
    late: Vec<(SocketAddr, C)>,
    exits: mpsc::UnboundedSender<PeerExit>,
}

/// What the inbox still held when the fetch handed over.
#[derive(Debug)]
pub(crate) struct Remainder<C> {
    /// Addresses given to the fetch that neither came back nor were
    /// reported ended: their connections are gone.
    pub(crate) missing: Vec<SocketAddr>,
    /// Connections that arrived after the fetch stopped taking them; they
    /// belong to the download.
    pub(crate) late: Vec<C>,
}

impl<C> FetchInbox<C> {
    /// An inbox whose channel queues up to `capacity` connections, with
    /// the receiving end for the fetch. `exits` is where connections
    /// dropped with the inbox are reported.
    pub(crate) fn new(
        capacity: usize,
        exits: mpsc::UnboundedSender<PeerExit>,
    ) -> (Self, mpsc::Receiver<C>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let inbox = FetchInbox {
            sender,
            inside: HashMap::new(),
            late: Vec::new(),
            exits,
        };
        (inbox, receiver)
    }

    /// Gives `conn`, from `addr`, to the fetch, or keeps it for the
    /// download if the fetch has stopped taking connections. Returns
    /// `false`, dropping `conn`, when there is no room for it either way.
    pub(crate) fn offer(&mut self, addr: SocketAddr, conn: C) -> bool {
        match self.sender.try_send(conn) {
            Ok(()) => {
                *self.inside.entry(addr).or_default() += 1;
                true
            }
            Err(TrySendError::Closed(conn)) if self.late.len() < self.sender.max_capacity() => {
                tracing::debug!(%addr, "connected during the metadata hand-over: kept for the download");
                self.late.push((addr, conn));
                true
            }
            Err(TrySendError::Closed(_) | TrySendError::Full(_)) => false,
        }
    }

    /// The fetch reported the connection from `addr` ended.
    pub(crate) fn exited(&mut self, addr: SocketAddr) {
        count_down(&mut self.inside, addr);
    }

    /// The fetch handed back the connections from `back`: what is left
    /// for the caller to settle.
    pub(crate) fn hand_over(&mut self, back: impl IntoIterator<Item = SocketAddr>) -> Remainder<C> {
        let mut inside = std::mem::take(&mut self.inside);
        for addr in back {
            count_down(&mut inside, addr);
        }
        Remainder {
            missing: inside
                .into_iter()
                .flat_map(|(addr, n)| std::iter::repeat_n(addr, n))
                .collect(),
            late: self.late.drain(..).map(|(_, conn)| conn).collect(),
        }
    }
}

impl<C> Drop for FetchInbox<C> {
    /// Reports the late connections, closed with it, so that the address
    /// book does not hold them busy forever. Those inside the fetch are
    /// the fetch's to report.
    fn drop(&mut self) {
        for (addr, _) in self.late.drain(..) {
            // Nothing crossed it. A torrent task that stopped listening
            // does not need to know.
            let _ = self.exits.send(PeerExit::new(addr, ExitKind::Fruitless));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn inbox(
        capacity: usize,
    ) -> (
        FetchInbox<u16>,
        mpsc::Receiver<u16>,
        mpsc::UnboundedReceiver<PeerExit>,
    ) {
        let (exits, exited) = mpsc::unbounded_channel();
        let (inbox, receiver) = FetchInbox::new(capacity, exits);
        (inbox, receiver, exited)
    }

    #[test]
    fn connections_go_to_the_fetch_while_it_takes_them() {
        let (mut inbox, mut fetch, _) = inbox(4);
        assert!(inbox.offer(addr(1), 1));
        assert!(inbox.offer(addr(2), 2));
        assert_eq!(fetch.try_recv().ok(), Some(1));
        assert_eq!(fetch.try_recv().ok(), Some(2));
        inbox.exited(addr(2));
        let rest = inbox.hand_over([]);
        assert_eq!(rest.missing, [addr(1)], "1 neither came back nor ended");
        assert!(rest.late.is_empty());
    }

    /// One address may bring two connections (TCP and uTP); each is
    /// accounted for on its own.
    #[test]
    fn two_connections_from_one_address_are_two() {
        let (mut inbox, _fetch, _) = inbox(4);
        assert!(inbox.offer(addr(1), 1));
        assert!(inbox.offer(addr(1), 2));
        inbox.exited(addr(1));
        assert_eq!(inbox.hand_over([]).missing, [addr(1)]);
        assert!(inbox.offer(addr(1), 3));
        assert!(inbox.offer(addr(1), 4));
        assert_eq!(inbox.hand_over([addr(1)]).missing, [addr(1)]);
    }

    #[test]
    fn a_connection_after_the_fetch_closed_joins_the_download() {
        let (mut inbox, mut fetch, mut exited) = inbox(4);
        assert!(inbox.offer(addr(1), 1));
        fetch.close();
        assert!(inbox.offer(addr(2), 2), "a late connection is kept");
        let rest = inbox.hand_over([addr(1)]);
        assert!(rest.missing.is_empty());
        assert_eq!(rest.late, [2]);
        drop(inbox);
        assert!(
            exited.try_recv().is_err(),
            "nothing was lost, so nothing to report"
        );
    }

    #[test]
    fn late_connections_are_bounded_by_the_queue() {
        let (mut inbox, mut fetch, _) = inbox(2);
        fetch.close();
        assert!(inbox.offer(addr(1), 1));
        assert!(inbox.offer(addr(2), 2));
        assert!(!inbox.offer(addr(3), 3), "past the queue's capacity");
        assert_eq!(inbox.hand_over([]).late, [1, 2]);
    }

    #[test]
    fn a_full_fetch_queue_refuses_the_connection() {
        let (mut inbox, _fetch, _) = inbox(1);
        assert!(inbox.offer(addr(1), 1));
        assert!(!inbox.offer(addr(2), 2));
    }

    #[test]
    fn late_connections_dropped_with_the_inbox_are_reported_fruitless() {
        let (mut inbox, mut fetch, mut exited) = inbox(4);
        fetch.close();
        assert!(inbox.offer(addr(7), 7));
        drop(inbox);
        let exit = exited.try_recv().expect("reported");
        assert_eq!(exit, PeerExit::new(addr(7), ExitKind::Fruitless));
        assert!(exited.try_recv().is_err());
    }
}
