//! The tokio driver: one task around a [`Socket`], fed datagrams by whoever
//! owns the UDP port (the DHT's demultiplexer, or [`recv_loop`] on a socket
//! of our own), sending from that port's sockets; and [`UtpStream`], an
//! `AsyncRead + AsyncWrite` over one connection.
//!
//! The socket sits behind a mutex shared by the receiving side, the task
//! and the streams: each reads or writes the state machine directly (never
//! across an `.await`) and rings the task, which packetises, sends, runs
//! timers and turns events into wake-ups. Received datagrams go straight
//! into the state machine from the receiver's buffer, with no copy and no
//! queue between them: the connections' own buffers bound what they keep.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::gso::Batcher;
use crate::{CloseReason, Config, Event, Socket, StreamId};

/// The runtime's clock, so that a paused one (tests on virtual time) is
/// the engine's clock too and its timers, slept on the runtime, agree.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Datagrams to send, each with its destination.
type Transmits = Vec<(SocketAddr, Bytes)>;

/// Longest datagram taken from a socket of uTP's own; longer ones are cut
/// there, as the DHT's demultiplexer cuts them (a uTP packet is one MTU).
pub const MAX_DATAGRAM: usize = 4096;

/// The receiving end's handle: feeds bursts of received datagrams into the
/// state machine and rings the driver. It never waits on anything but the
/// state machine's lock, so a demultiplexer can call it.
///
/// Bursts used to be copied into a bounded queue for the driver to feed.
/// That copy, its buffer pool and the hop through a channel cost a tenth of
/// a uTP download's CPU per GiB, and the queue dropped packets whenever the
/// driver fell behind, which LEDBAT took as congestion.
#[derive(Debug, Clone)]
pub struct Inbox {
    feeder: Arc<Feeder>,
}

/// Shared by an [`Inbox`] and its clones: when the last one goes, the
/// driver stops.
#[derive(Debug)]
struct Feeder {
    inner: Arc<Inner>,
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.inner.receiving.store(false, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

impl Inbox {
    /// Hands `burst` to the state machine; always true (nothing is queued
    /// that could overflow), as the DHT's demultiplexer asks.
    pub fn offer(&self, burst: &[(SocketAddr, &[u8])]) -> bool {
        let inner = &self.feeder.inner;
        let now = now();
        {
            let mut shared = inner.lock();
            for &(from, datagram) in burst {
                shared.socket.handle_datagram(now, from, datagram);
            }
        }
        inner.wake.notify_one();
        true
    }
}

/// The state machine an [`Inbox`] feeds, until [`spawn`] drives it.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A new state machine configured by `config`: give the inbox to whoever
/// reads the UDP port, the engine to [`spawn`].
pub fn inbox(config: Config) -> (Inbox, Engine) {
    let inner = Arc::new(Inner {
        shared: Mutex::new(Shared {
            socket: Socket::new(config, rand::random(), now()),
            waiters: BTreeMap::new(),
        }),
        wake: Notify::new(),
        receiving: AtomicBool::new(true),
    });
    let feeder = Arc::new(Feeder {
        inner: inner.clone(),
    });
    (Inbox { feeder }, Engine { inner })
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
    /// By stream id, ordered like the socket's connections (no hashing).
    waiters: BTreeMap<StreamId, Waiters>,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    /// Rings the driver task: something to send or a new deadline.
    wake: Notify,
    /// False once every [`Inbox`] is gone: the driver stops.
    receiving: AtomicBool,
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

/// Starts the driver task on the current runtime for the engine that an
/// [`Inbox`] feeds; incoming connections come out of the returned receiver.
/// The task ends when every inbox is gone.
pub fn spawn(engine: Engine, senders: Senders) -> (UtpHandle, mpsc::Receiver<UtpStream>) {
    let Engine { inner } = engine;
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
    tokio::spawn(run(inner.clone(), senders, incoming_tx));
    (UtpHandle { inner }, incoming_rx)
}

/// Reads `socket` for ever, handing every datagram to `sink`: the receiving
/// side for a uTP port of its own (without a DHT to share). Abort its task
/// to stop uTP: the sink goes with it, and so does the driver.
pub async fn recv_loop(socket: Arc<UdpSocket>, sink: Inbox) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if !crate::looks_like_utp(&buf[..n]) {
                    continue;
                }
                sink.offer(&[(from, &buf[..n])]);
            }
            // ICMP errors surface here; they concern one peer only.
            Err(e) => tracing::trace!("uTP receive error: {e}"),
        }
    }
}

async fn run(inner: Arc<Inner>, senders: Senders, incoming: mpsc::Sender<UtpStream>) {
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
            () = sleep => {}
            () = inner.wake.notified() => {}
        }
        if !inner.receiving.load(Ordering::Acquire) {
            return;
        }
        // Due timers run whatever woke us: a sleep is only polled to fire
        // once the runtime's timer turns, which a busy stream ringing the
        // driver can put off indefinitely.
        {
            let now = now();
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
    let now = now();
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
                .connect(now(), addr)
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
        self.inner.lock().socket.release(self.id);
        self.inner.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clones of an inbox keep the driver running; the last one's drop
    /// stops it, which closes the incoming-stream channel.
    #[tokio::test]
    async fn the_driver_stops_once_every_inbox_is_gone() {
        let (inbox, engine) = inbox(Config::default());
        let (_handle, mut incoming) = spawn(engine, Senders::default());
        let clone = inbox.clone();
        drop(inbox);
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            incoming.try_recv().err(),
            Some(mpsc::error::TryRecvError::Empty),
            "a clone is left: still running"
        );
        drop(clone);
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), incoming.recv());
        assert!(stopped.await.expect("the driver stops").is_none());
    }
}
