//! The tokio driver: one task around a [`Socket`], fed datagrams by whoever
//! owns the UDP port (the DHT's demultiplexer, or [`recv_loop`] on a socket
//! of our own), sending from that port's sockets; and [`UtpStream`], an
//! `AsyncRead + AsyncWrite` over one connection.
//!
//! The socket sits behind a mutex shared by the task and the streams: a
//! stream reads and writes the state machine directly (never across an
//! `.await`) and rings the task, which packetises, sends, runs timers and
//! turns events into wake-ups.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::gso::Batcher;
use crate::{CloseReason, Config, Event, Socket, StreamId};

/// A burst of received datagrams, each with its sender, copied into one
/// buffer that the driver hands back for the next burst (see [`Inbox`]).
#[derive(Debug, Default)]
struct Datagrams {
    bytes: Vec<u8>,
    /// Each datagram's sender and where it ends in `bytes`.
    ends: Vec<(SocketAddr, usize)>,
}

impl Datagrams {
    /// Replaces what it holds with a copy of `burst`, in the room it has.
    fn refill(&mut self, burst: &[(SocketAddr, &[u8])]) {
        self.bytes.clear();
        self.ends.clear();
        self.bytes
            .reserve(burst.iter().map(|(_, datagram)| datagram.len()).sum());
        self.ends.reserve(burst.len());
        for (from, datagram) in burst {
            self.bytes.extend_from_slice(datagram);
            self.ends.push((*from, self.bytes.len()));
        }
    }

    /// How many datagrams it holds.
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each datagram with its sender, in the order received.
    fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        self.ends
            .iter()
            .zip(starts)
            .map(|(&(from, end), start)| (from, &self.bytes[start..end]))
    }
}

/// Datagrams to send, each with its destination.
type Transmits = Vec<(SocketAddr, Bytes)>;

/// Longest datagram taken from a socket of uTP's own; longer ones are cut
/// there, as the DHT's demultiplexer cuts them (a uTP packet is one MTU).
/// It bounds what a flood of large datagrams can queue.
pub const MAX_DATAGRAM: usize = 4096;

/// Bytes of burst buffers kept idle for reuse, at most, and how many
/// buffers whatever their size. A `Vec` per datagram, freed once handled,
/// kept the heap growing and shrinking (page faults were 3 % of a uTP
/// download's CPU samples, 6 % with a fresh buffer per burst). The budget
/// counts bytes, not buffers, because a burst off the DHT's port carries
/// up to 64 data packets, about 90 KiB: when no buffer above 64 KiB was
/// kept, every large burst was allocated afresh, and page faults and the
/// allocator's trimming took 4.5 % of the samples again (1.3 % with the
/// byte budget).
const SPARE_BYTES: usize = 1 << 20;
const SPARE_BURSTS: usize = 16;

/// Most received datagrams waiting for the driver, however they were
/// batched: at 30 MB/s a few tens of milliseconds of the driver being busy
/// elsewhere, and at most 4 MiB ([`MAX_DATAGRAM`] each) however a flood
/// sizes its datagrams.
/// Counting bursts instead cost throughput: under steady traffic most
/// bursts hold one datagram, so a queue of 16 bursts dropped packets at
/// every hiccup and LEDBAT took each drop as congestion.
pub const INBOX_DATAGRAMS: usize = 1024;

/// The receiving end's sender: hands bursts of received datagrams to the
/// driver, refusing (dropping, as UDP may) what does not fit in
/// [`INBOX_DATAGRAMS`]. It never waits, so a demultiplexer can call it.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Datagrams>,
    queued: Arc<AtomicUsize>,
    spares: Spares,
}

impl Inbox {
    /// Queues a copy of `burst` for the driver; false when it was dropped.
    pub fn offer(&self, burst: &[(SocketAddr, &[u8])]) -> bool {
        let n = burst.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > INBOX_DATAGRAMS {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        let mut copy = self.spares.take();
        copy.refill(burst);
        if let Err(e) = self.tx.try_send(copy) {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.spares.give_back(e.into_inner());
            return false;
        }
        true
    }
}

/// Burst buffers the driver is done with, for the sender to fill again.
#[derive(Debug, Clone, Default)]
struct Spares(Arc<Mutex<SparePool>>);

/// The idle buffers and the bytes they hold, kept within [`SPARE_BYTES`].
#[derive(Debug, Default)]
struct SparePool {
    bursts: Vec<Datagrams>,
    bytes: usize,
}

impl Spares {
    fn take(&self) -> Datagrams {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let burst = pool.bursts.pop().unwrap_or_default();
        pool.bytes -= burst.bytes.capacity();
        burst
    }

    fn give_back(&self, burst: Datagrams) {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let size = burst.bytes.capacity();
        if pool.bursts.len() < SPARE_BURSTS && pool.bytes + size <= SPARE_BYTES {
            pool.bytes += size;
            pool.bursts.push(burst);
        }
    }
}

/// The driver's end of an [`Inbox`].
#[derive(Debug)]
pub struct InboxReceiver {
    rx: mpsc::Receiver<Datagrams>,
    queued: Arc<AtomicUsize>,
    spares: Spares,
}

impl InboxReceiver {
    async fn recv(&mut self) -> Option<Datagrams> {
        let burst = self.rx.recv().await?;
        self.queued.fetch_sub(burst.len(), Ordering::AcqRel);
        Some(burst)
    }

    fn try_recv(&mut self) -> Option<Datagrams> {
        let burst = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(burst.len(), Ordering::AcqRel);
        Some(burst)
    }

    /// Feeds `burst` to `socket` and hands its buffer back to the sender.
    fn feed(&self, socket: &mut Socket, now: Instant, burst: Datagrams) {
        for (from, bytes) in burst.iter() {
            socket.handle_datagram(now, from, bytes);
        }
        self.spares.give_back(burst);
    }
}

/// A new inbox: give the sender to whoever reads the UDP port, the
/// receiver to [`spawn`].
pub fn inbox() -> (Inbox, InboxReceiver) {
    // Every burst holds a datagram at least, so the count bounds the
    // channel first.
    let (tx, rx) = mpsc::channel(INBOX_DATAGRAMS);
    let queued = Arc::new(AtomicUsize::new(0));
    let spares = Spares::default();
    (
        Inbox {
            tx,
            queued: queued.clone(),
            spares: spares.clone(),
        },
        InboxReceiver { rx, queued, spares },
    )
}

/// Incoming connections waiting to be taken; more are reset.
const INCOMING_QUEUE: usize = 64;

/// The sockets datagrams leave from: at most one per family.
#[derive(Debug, Clone, Default)]
pub struct Senders {
    /// The IPv4 socket.
    pub v4: Option<Arc<UdpSocket>>,
    /// The IPv6 socket.
    pub v6: Option<Arc<UdpSocket>>,
}

impl Senders {
    fn for_addr(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        match addr {
            SocketAddr::V4(_) => self.v4.as_deref(),
            SocketAddr::V6(_) => self.v6.as_deref(),
        }
    }
}

/// What a stream waits for.
#[derive(Debug, Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    connected: Option<oneshot::Sender<io::Result<()>>>,
    closed: Option<CloseReason>,
}

/// The state machine and who waits on it.
#[derive(Debug)]
struct Shared {
    socket: Socket,
    waiters: HashMap<StreamId, Waiters>,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    /// Rings the driver task: something to send or a new deadline.
    wake: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while locked is a bug that already surfaced; the state is
        // still the best there is.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to the running driver: dial from it; clone it freely.
#[derive(Debug, Clone)]
pub struct UtpHandle {
    inner: Arc<Inner>,
}

/// Starts the driver task on the current runtime. Datagrams arrive on
/// `datagrams`; incoming connections come out of the returned receiver.
/// The task ends when `datagrams` closes.
pub fn spawn(
    config: Config,
    datagrams: InboxReceiver,
    senders: Senders,
) -> (UtpHandle, mpsc::Receiver<UtpStream>) {
    let inner = Arc::new(Inner {
        shared: Mutex::new(Shared {
            socket: Socket::new(config, rand::random(), Instant::now()),
            waiters: HashMap::new(),
        }),
        wake: Notify::new(),
    });
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
    tokio::spawn(run(inner.clone(), datagrams, senders, incoming_tx));
    (UtpHandle { inner }, incoming_rx)
}

/// Reads `socket` until the driver is gone, handing every datagram to
/// `sink`: the receiving side for a uTP port of its own (without a DHT to
/// share).
pub async fn recv_loop(socket: Arc<UdpSocket>, sink: Inbox) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if !crate::looks_like_utp(&buf[..n]) {
                    continue;
                }
                if !sink.offer(&[(from, &buf[..n])]) && sink.tx.is_closed() {
                    return;
                }
            }
            // ICMP errors surface here; they concern one peer only.
            Err(e) => tracing::trace!("uTP receive error: {e}"),
        }
    }
}

/// Further bursts the driver handles under one lock after the one it woke
/// for.
const MORE_BATCHES: usize = 8;

async fn run(
    inner: Arc<Inner>,
    mut datagrams: InboxReceiver,
    senders: Senders,
    incoming: mpsc::Sender<UtpStream>,
) {
    let mut out = Vec::new();
    let mut batcher = Batcher::new(senders.v4.as_deref().or(senders.v6.as_deref()));
    loop {
        let deadline = inner.lock().socket.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = datagrams.recv() => {
                let Some(batch) = batch else { return };
                let now = Instant::now();
                let mut shared = inner.lock();
                datagrams.feed(&mut shared.socket, now, batch);
                // Take some more of what already arrived, under the same
                // lock; bounded, so a flood cannot keep the streams (which
                // lock it too) waiting, nor hold back what we send.
                for _ in 0..MORE_BATCHES {
                    let Some(more) = datagrams.try_recv() else { break };
                    datagrams.feed(&mut shared.socket, now, more);
                }
            }
            () = sleep => {}
            () = inner.wake.notified() => {}
        }
        // Due timers run whatever woke us: a sleep is only polled to fire
        // once the runtime's timer turns, which a busy stream ringing the
        // driver can put off indefinitely.
        {
            let now = Instant::now();
            let mut shared = inner.lock();
            if shared.socket.poll_timeout().is_some_and(|t| t <= now) {
                shared.socket.handle_timeout(now);
            }
        }
        drain(&inner, &incoming, &mut out);
        batcher.send(&out, |to| senders.for_addr(to)).await;
        out.clear();
    }
}

/// Moves the socket's datagrams into `out` and its events to the streams.
fn drain(inner: &Arc<Inner>, incoming: &mpsc::Sender<UtpStream>, out: &mut Transmits) {
    let now = Instant::now();
    let mut refused = Vec::new();
    let mut shared = inner.lock();
    let Shared { socket, waiters } = &mut *shared;
    while let Some(t) = socket.poll_transmit(now) {
        out.push(t);
    }
    while let Some(event) = socket.poll_event() {
        match event {
            Event::Incoming(id, addr) => {
                waiters.insert(id, Waiters::default());
                let stream = UtpStream {
                    inner: inner.clone(),
                    id,
                    addr,
                };
                if let Err(e) = incoming.try_send(stream) {
                    // Nobody takes it: its drop closes it, once the lock is
                    // released (dropping locks).
                    refused.push(e.into_inner());
                }
            }
            Event::Connected(id) => {
                if let Some(tx) = waiters.get_mut(&id).and_then(|w| w.connected.take()) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::Readable(id) => {
                if let Some(w) = waiters.get_mut(&id).and_then(|w| w.read.take()) {
                    w.wake();
                }
            }
            Event::Writable(id) => {
                if let Some(w) = waiters.get_mut(&id).and_then(|w| w.write.take()) {
                    w.wake();
                }
            }
            Event::Closed(id, reason) => {
                if let Some(w) = waiters.get_mut(&id) {
                    w.closed = Some(reason);
                    if let Some(tx) = w.connected.take() {
                        let _ = tx.send(Err(closed_error(reason)));
                    }
                    for waker in [w.read.take(), w.write.take()].into_iter().flatten() {
                        waker.wake();
                    }
                }
            }
        }
    }
    // Streams dropped and their connections gone: forget them.
    waiters.retain(|id, _| socket.peer_addr(*id).is_some());
    drop(shared);
    drop(refused);
}

fn closed_error(reason: CloseReason) -> io::Error {
    match reason {
        CloseReason::Done => io::Error::new(io::ErrorKind::BrokenPipe, "uTP connection closed"),
        CloseReason::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "uTP reset by peer"),
        CloseReason::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "uTP peer stopped answering")
        }
    }
}

impl UtpHandle {
    /// Opens a connection to `addr`; fails when the peer doesn't answer the
    /// SYN (after about 7 s) or refuses. Callers bound it with their own
    /// timeout.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut shared = self.inner.lock();
            let id = shared
                .socket
                .connect(Instant::now(), addr)
                .map_err(|e| io::Error::other(e.to_string()))?;
            shared.waiters.insert(
                id,
                Waiters {
                    connected: Some(tx),
                    ..Waiters::default()
                },
            );
            id
        };
        self.inner.wake.notify_one();
        // Dropped before the answer: the stream's drop abandons the dial.
        let stream = UtpStream {
            inner: self.inner.clone(),
            id,
            addr,
        };
        match rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(closed_error(CloseReason::Reset)),
        }
    }
}

/// One uTP connection as a byte stream. Dropping it closes the connection
/// gracefully (a FIN after everything written).
#[derive(Debug)]
pub struct UtpStream {
    inner: Arc<Inner>,
    id: StreamId,
    addr: SocketAddr,
}

impl UtpStream {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = self.inner.lock();
        let Shared { socket, waiters } = &mut *shared;
        // Straight into the unfilled part: clearing it first (as
        // `initialize_unfilled` does) zeroed a whole 32 KiB read buffer for
        // every packet or two read, 1.5 % of a uTP download's CPU.
        match socket.read(self.id, buf.remaining(), |part| buf.put_slice(part)) {
            Ok(Some(_)) => {
                if socket.needs_flush() {
                    // A window update is due.
                    self.inner.wake.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Ok(None) => {
                let w = waiters.entry(self.id).or_default();
                if let Some(reason) = w.closed.filter(|r| *r != CloseReason::Done) {
                    return Poll::Ready(Err(closed_error(reason)));
                }
                w.read = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(_) => match waiters.get(&self.id).and_then(|w| w.closed) {
                Some(CloseReason::Done) | None => Poll::Ready(Ok(())),
                Some(reason) => Poll::Ready(Err(closed_error(reason))),
            },
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.inner.lock();
        let Shared { socket, waiters } = &mut *shared;
        if let Some(reason) = waiters.get(&self.id).and_then(|w| w.closed) {
            return Poll::Ready(Err(closed_error(reason)));
        }
        match socket.write(self.id, buf) {
            Ok(0) if !buf.is_empty() => {
                waiters.entry(self.id).or_default().write = Some(cx.waker().clone());
                self.inner.wake.notify_one();
                Poll::Pending
            }
            Ok(n) => {
                self.inner.wake.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(closed_error(CloseReason::Reset))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.lock().socket.close(self.id);
        self.inner.wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        self.inner.lock().socket.close(self.id);
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(n: usize) -> Vec<(SocketAddr, &'static [u8])> {
        let from: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        vec![(from, &[0u8; 20][..]); n]
    }

    #[test]
    fn a_burst_gives_back_each_datagram_with_its_sender() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let b: SocketAddr = "[::1]:2".parse().expect("an address");
        let mut burst = Datagrams::default();
        burst.refill(&[(a, b"one"), (b, b""), (a, b"three")]);
        assert_eq!(burst.len(), 3);
        let got: Vec<_> = burst.iter().collect();
        assert_eq!(
            got,
            vec![(a, &b"one"[..]), (b, &b""[..]), (a, &b"three"[..])]
        );
        burst.refill(&[]);
        assert_eq!(burst.len(), 0, "an empty burst holds nothing");
    }

    /// A burst as large as the DHT's port hands over comes back for reuse,
    /// and the idle buffers never hold more than their byte budget.
    #[test]
    fn spare_buffers_are_reused_within_their_byte_budget() {
        let spares = Spares::default();
        let packet = [0u8; 1452];
        let from: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let large: Vec<_> = (0..64).map(|_| (from, &packet[..])).collect();
        let mut burst = spares.take();
        burst.refill(&large);
        let capacity = burst.bytes.capacity();
        assert!(
            capacity > 64 << 10,
            "a burst of 64 packets needs {capacity} bytes"
        );
        spares.give_back(burst);
        assert_eq!(
            spares.take().bytes.capacity(),
            capacity,
            "the large buffer is reused"
        );

        for _ in 0..2 * SPARE_BURSTS {
            let mut burst = Datagrams::default();
            burst.refill(&large);
            spares.give_back(burst);
        }
        let pool = spares.0.lock().expect("not poisoned");
        let held: usize = pool.bursts.iter().map(|b| b.bytes.capacity()).sum();
        assert_eq!(held, pool.bytes);
        assert!(held <= SPARE_BYTES, "{held} bytes held idle");
        assert!(!pool.bursts.is_empty());
    }

    /// The bound counts datagrams: bursts of one fill it as bursts of many
    /// do, and what the driver takes makes room again.
    #[tokio::test]
    async fn the_inbox_holds_a_bounded_number_of_datagrams() {
        let (inbox, mut driver) = inbox();
        for _ in 0..INBOX_DATAGRAMS - 10 {
            assert!(inbox.offer(&burst(1)));
        }
        assert!(!inbox.offer(&burst(11)), "past the bound: dropped");
        assert!(inbox.offer(&burst(10)));
        assert!(!inbox.offer(&burst(1)));
        assert_eq!(driver.recv().await.map(|b| b.len()), Some(1));
        assert!(inbox.offer(&burst(1)), "room again");
        assert!(!inbox.offer(&burst(1)));
        drop(driver);
        assert!(!inbox.offer(&burst(0)), "the driver is gone");
    }
}
