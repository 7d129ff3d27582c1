//! The socket side shared by the driver task and the extra receive shards.
//!
//! A sharded node binds one socket per family and shard on the same address
//! with `SO_REUSEPORT`; the kernel spreads incoming datagrams over them by a
//! hash of the source address. Every shard serves from the same [`Node`]
//! behind a mutex, so every answer is drawn from the whole pool, a write
//! token from one shard is good on another, and an answer to a query we
//! sent (which the kernel may hand to any shard) reaches the state that
//! waits for it. The lock is taken once per burst of datagrams, never across
//! a system call: receiving and sending, most of a query's cost, run in
//! parallel on the shards.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use super::{OtherSink, mmsg};

use crate::node::{Node, Transmit};

/// Datagrams handled per burst before the loop looks at its other inputs
/// (timer, commands, the other socket) again.
pub(super) const BATCH: usize = mmsg::MAX_BATCH;

/// The node every shard serves from.
pub(super) type SharedNode = Arc<Mutex<Node>>;

/// Locks the node. A panic while it was held is a bug that already
/// surfaced; the state it left is still the best there is to serve from.
pub(super) fn lock(node: &SharedNode) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One shard's sockets: at most one per family, shared (for sending) with
/// the protocol that gets the non-KRPC datagrams.
#[derive(Debug, Clone)]
pub struct Sockets {
    /// The IPv4 socket, if bound.
    pub v4: Option<Arc<UdpSocket>>,
    /// The IPv6 socket, if bound.
    pub v6: Option<Arc<UdpSocket>>,
}

impl Sockets {
    /// The socket that reaches `addr`.
    pub fn for_addr(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        match addr {
            SocketAddr::V4(_) => self.v4.as_deref(),
            SocketAddr::V6(_) => self.v6.as_deref(),
        }
    }

    /// Sends every datagram of `out` (emptied), as many per system call as
    /// the kernel takes; on a full send buffer it waits for room rather than
    /// silently drop a datagram. Public for the node benchmark's floor
    /// responder, which must send exactly as the node does.
    pub async fn send_all(&self, out: &mut Vec<Transmit>) {
        let mut rest = &out[..];
        while let Some(first) = rest.first() {
            let family = first.to.is_ipv4();
            let run = rest
                .iter()
                .position(|t| t.to.is_ipv4() != family)
                .unwrap_or(rest.len());
            let Some(socket) = self.for_addr(&first.to) else {
                rest = &rest[run..];
                continue;
            };
            match socket.try_io(Interest::WRITABLE, || mmsg::send(socket, &rest[..run])) {
                Ok(sent) => rest = &rest[sent.max(1)..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable().await {
                        tracing::trace!("DHT socket not writable: {e}");
                        rest = &rest[1..];
                    }
                }
                Err(e) => {
                    // One destination refused (e.g. unreachable): skip it.
                    tracing::trace!("DHT send to {} failed: {e}", first.to);
                    rest = &rest[1..];
                }
            }
        }
        out.clear();
    }
}

/// Waits until `socket` has something to read, or forever when there is
/// no socket. Cancel-safe, so it can sit in a `select!`.
pub(super) async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Datagrams read off a socket in one burst (one `recvmmsg` where there is
/// one), each in its own slot of one buffer, so the node's lock is taken
/// once for all of them.
#[derive(Debug)]
pub(super) struct Burst {
    buf: Vec<u8>,
    /// Sender and length of the datagram in each filled slot, in order.
    datagrams: Vec<(SocketAddr, usize)>,
    /// Where datagrams that are not KRPC go, if another protocol shares the
    /// port.
    other: Option<OtherSink>,
}

impl Burst {
    /// An empty burst forwarding non-KRPC datagrams to `other`.
    pub(super) fn new(other: Option<OtherSink>) -> Self {
        Self {
            buf: vec![0u8; BATCH * mmsg::SLOT],
            datagrams: Vec::with_capacity(BATCH),
            other,
        }
    }
}

impl Burst {
    /// Reads what is queued on `socket` (at most [`BATCH`] datagrams) after
    /// it was reported readable; none when the readiness was stale.
    pub(super) fn fill(&mut self, socket: &UdpSocket) {
        self.datagrams.clear();
        let (buf, datagrams) = (&mut self.buf, &mut self.datagrams);
        match socket.try_io(Interest::READABLE, || mmsg::recv(socket, buf, datagrams)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // ICMP errors surface here on some systems; they concern one peer only.
            Err(e) => tracing::trace!("DHT receive error: {e}"),
        }
    }

    /// Each datagram with its sender, in the order received.
    fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.buf
            .chunks(mmsg::SLOT)
            .zip(&self.datagrams)
            .map(|(slot, &(from, len))| (from, &slot[..len]))
    }

    /// Whether `datagram` is for the node: with another protocol on the
    /// port, only bencoded dictionaries (first byte `d`, as every KRPC
    /// message) are.
    fn is_krpc(&self, datagram: &[u8]) -> bool {
        self.other.is_none() || datagram.first() == Some(&b'd')
    }

    /// Feeds the burst's KRPC datagrams to `node` and moves its datagrams
    /// to send into `out`.
    pub(super) fn handle(&self, node: &mut Node, out: &mut Vec<Transmit>) {
        let krpc = self.datagrams().filter(|&(_, d)| self.is_krpc(d));
        node.handle_datagrams(Instant::now(), krpc);
        out.extend(std::iter::from_fn(|| node.poll_transmit()));
    }

    /// Hands the datagrams the other protocol on the port wants to it as
    /// one batch (dropped if it refuses them). Called after [`Self::handle`]
    /// with the node's lock released, so the other protocol's work (uTP
    /// feeds its state machine here) never holds up the node.
    pub(super) fn hand_over(&self) {
        let Some(other) = &self.other else { return };
        let others: Vec<_> = self
            .datagrams()
            .filter(|&(_, d)| !self.is_krpc(d) && (other.wants)(d))
            .collect();
        if !others.is_empty() && !(other.deliver)(&others) {
            tracing::trace!("non-KRPC datagrams dropped: their consumer lags or left");
        }
    }
}

/// An extra receive shard: its own sockets, serving the shared node.
pub(super) struct Shard {
    pub(super) node: SharedNode,
    /// Where non-KRPC datagrams go.
    pub(super) other: Option<OtherSink>,
    /// Wakes the driver task when the node has events for it or an earlier
    /// deadline than the one it sleeps until.
    pub(super) driver: Arc<Notify>,
    /// Becomes true when the DHT shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

impl Shard {
    /// Serves `sockets` until the DHT stops.
    pub(super) async fn run(mut self, sockets: Sockets) {
        let (mut b4, mut b6) = (
            Burst::new(self.other.clone()),
            Burst::new(self.other.clone()),
        );
        let mut out = Vec::new();
        loop {
            tokio::select! {
                r = readable(sockets.v4.as_deref()) => {
                    if let (Ok(()), Some(s)) = (r, &sockets.v4) {
                        b4.fill(s);
                        self.serve(&b4, &mut out);
                        b4.hand_over();
                    }
                }
                r = readable(sockets.v6.as_deref()) => {
                    if let (Ok(()), Some(s)) = (r, &sockets.v6) {
                        b6.fill(s);
                        self.serve(&b6, &mut out);
                        b6.hand_over();
                    }
                }
                _ = self.stop.changed() => return,
            }
            sockets.send_all(&mut out).await;
        }
    }

    fn serve(&self, burst: &Burst, out: &mut Vec<Transmit>) {
        let mut node = lock(&self.node);
        let deadline = node.poll_timeout();
        burst.handle(&mut node, out);
        if node.has_events() || node.poll_timeout() < deadline {
            self.driver.notify_one();
        }
    }
}
