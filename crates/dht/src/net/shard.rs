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

use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use crate::node::{Node, Transmit};

/// Datagrams handled per burst before the loop looks at its other inputs
/// (timer, commands, the other socket) again.
pub(super) const BATCH: usize = 64;

/// Largest datagram read; bigger ones are truncated by the OS and then
/// refused by the decoder.
const RECV_BUFFER: usize = 65_536;

/// The node every shard serves from.
pub(super) type SharedNode = Arc<Mutex<Node>>;

/// Locks the node. A panic while it was held is a bug that already
/// surfaced; the state it left is still the best there is to serve from.
pub(super) fn lock(node: &SharedNode) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One shard's sockets: at most one per family.
#[derive(Debug)]
pub(super) struct Sockets {
    pub(super) v4: Option<UdpSocket>,
    pub(super) v6: Option<UdpSocket>,
}

impl Sockets {
    /// The socket that reaches `addr`.
    pub(super) fn for_addr(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        match addr {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends every datagram of `out` (emptied): try first (no await, the
    /// common case), and on a full send buffer wait for room rather than
    /// silently drop the datagram.
    pub(super) async fn send_all(&self, out: &mut Vec<Transmit>) {
        for t in out.drain(..) {
            let Some(socket) = self.for_addr(&t.to) else {
                continue;
            };
            let sent = match socket.try_send_to(&t.bytes, t.to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket.send_to(&t.bytes, t.to).await.map(drop)
                }
                other => other.map(drop),
            };
            if let Err(e) = sent {
                tracing::trace!("DHT send to {} failed: {e}", t.to);
            }
        }
    }
}

/// Receives on `socket`, or never when there is none.
pub(super) async fn recv(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Datagrams read off a socket in one burst, copied end to end into one
/// buffer so the node's lock is taken once for all of them.
#[derive(Debug)]
pub(super) struct Burst {
    buf: Vec<u8>,
    bytes: Vec<u8>,
    datagrams: Vec<(SocketAddr, usize, usize)>,
}

impl Default for Burst {
    fn default() -> Self {
        Self {
            buf: vec![0u8; RECV_BUFFER],
            bytes: Vec::with_capacity(BATCH * 256),
            datagrams: Vec::with_capacity(BATCH),
        }
    }
}

impl Burst {
    /// The buffer to hand to the first (awaited) receive.
    pub(super) fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Keeps the datagram `first` returned (now in [`Burst::buf`]) and reads
    /// whatever else is already queued on `socket`, up to [`BATCH`].
    pub(super) fn fill(&mut self, first: io::Result<(usize, SocketAddr)>, socket: &UdpSocket) {
        self.bytes.clear();
        self.datagrams.clear();
        let mut result = first;
        for read in 1..=BATCH {
            match result {
                Ok((len, from)) => {
                    let start = self.bytes.len();
                    self.bytes.extend_from_slice(&self.buf[..len]);
                    self.datagrams.push((from, start, len));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface here on some systems; they concern one peer only.
                Err(e) => tracing::trace!("DHT receive error: {e}"),
            }
            // Read no datagram past the batch: it would be dropped.
            if read == BATCH {
                return;
            }
            result = socket.try_recv_from(&mut self.buf);
        }
    }

    /// Feeds the burst to `node` and moves its datagrams to send into `out`.
    pub(super) fn handle(&self, node: &mut Node, out: &mut Vec<Transmit>) {
        let now = Instant::now();
        for &(from, start, len) in &self.datagrams {
            node.handle_datagram(now, from, &self.bytes[start..start + len]);
        }
        out.extend(std::iter::from_fn(|| node.poll_transmit()));
    }
}

/// An extra receive shard: its own sockets, serving the shared node.
pub(super) struct Shard {
    pub(super) node: SharedNode,
    /// Wakes the driver task when the node has events for it or an earlier
    /// deadline than the one it sleeps until.
    pub(super) driver: Arc<Notify>,
    /// Becomes true when the DHT shuts down.
    pub(super) stop: watch::Receiver<bool>,
}

impl Shard {
    /// Serves `sockets` until the DHT stops.
    pub(super) async fn run(mut self, sockets: Sockets) {
        let (mut b4, mut b6) = (Burst::default(), Burst::default());
        let mut out = Vec::new();
        loop {
            tokio::select! {
                r = recv(sockets.v4.as_ref(), b4.buf()) => {
                    if let Some(s) = &sockets.v4 {
                        b4.fill(r, s);
                    }
                    self.serve(&b4, &mut out);
                }
                r = recv(sockets.v6.as_ref(), b6.buf()) => {
                    if let Some(s) = &sockets.v6 {
                        b6.fill(r, s);
                    }
                    self.serve(&b6, &mut out);
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
