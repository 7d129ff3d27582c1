//! The transport seam: how a connection to a peer is made before the
//! BitTorrent handshake: over TCP, uTP (BEP 29, on the DHT's UDP port) or
//! both at once, in plaintext or under MSE/PE encryption as the
//! [`Encryption`] policy and what worked before for the address say, so
//! that everything after the handshake stays the same.
//!
//! The transport policy for [`Transport::Both`]: both transports are dialed
//! at once, the first to connect carries the handshakes, and the other
//! waits as a spare that takes over if they fail; it is dropped (a TCP
//! close, a uTP FIN) once they succeed. A peer speaking only one of them
//! therefore costs no timeout, a peer speaking both gets the faster path
//! (on a LAN usually TCP; behind a UDP-only NAT, uTP), and no peer gets
//! two handshakes of one dial at once, of which it might keep the one we
//! drop (unless the first transport's handshakes hang; see
//! `Attempt::carry`).
//! The price, a second connection to peers that speak both, is paid once
//! per peer and is cheaper than making every TCP-only peer wait out a uTP
//! fallback timer. MSE runs over uTP as over TCP (see [`dial`] for when
//! the other wrapping is tried).

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lodestone_mse::Methods;
use lodestone_mse::io::StreamError;
use lodestone_utp::net::UtpHandle;
use lodestone_wire::{Connection, ConnectionError, Established, Handshake, Preamble};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::address_book::Wrapping;
use crate::encryption::{self, Encryption, RawStream};
use crate::port_probe;

/// Which transports the session speaks to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP only.
    Tcp,
    /// uTP only (BEP 29).
    Utp,
    /// Both: dial both at once, the first to connect carries the
    /// handshakes; accept both.
    #[default]
    Both,
}

impl Transport {
    /// TCP is used.
    pub fn tcp(self) -> bool {
        self != Transport::Utp
    }

    /// uTP is used.
    pub fn utp(self) -> bool {
        self != Transport::Tcp
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The connection could not be made.
    #[error("cannot connect")]
    Connect(#[source] io::Error),
    /// Connecting or a handshake took longer than allowed.
    #[error("timed out")]
    Timeout,
    /// No transport is on.
    #[error("no transport enabled")]
    NoTransport,
    /// The encryption handshake failed.
    #[error("encryption handshake failed")]
    Encryption(#[from] StreamError),
    /// The BitTorrent handshake failed.
    #[error("BitTorrent handshake failed")]
    Handshake(#[from] ConnectionError),
}

/// The handshakes to try, in order, under `policy` for an address where
/// `known` worked before.
///
/// Under [`Encryption::Prefer`] an unknown address is tried encrypted
/// first. A peer that requires encryption closes on a plaintext handshake
/// as fast as a plaintext-only peer closes on an encrypted one, so either
/// order costs one extra connection for one kind of peer; on a loopback
/// swarm of six (plaintext-only, forced, either) both orders reached every
/// seeder within 40 ms, plaintext first a few ms sooner (the encrypted
/// handshake's Diffie–Hellman and extra round trip). Encrypted first wins
/// where it matters: a network that drops plaintext BitTorrent makes a
/// plaintext attempt wait out the whole timeout instead of failing fast,
/// and the infohash never crosses it in the clear. libtorrent and
/// Transmission choose the same.
fn attempts(policy: Encryption, known: Option<Wrapping>) -> &'static [Wrapping] {
    match (policy, known) {
        (Encryption::Off, _) => &[Wrapping::Plain],
        (Encryption::Require, _) => &[Wrapping::Mse],
        (Encryption::Prefer, Some(Wrapping::Plain)) => &[Wrapping::Plain, Wrapping::Mse],
        (Encryption::Prefer, _) => &[Wrapping::Mse, Wrapping::Plain],
    }
}

/// Connects to `addr` and exchanges handshakes, each attempt within
/// `timeout`, falling back to the other wrapping when `policy` allows.
/// `tcp` and `utp` say which transports may be used; every attempt races
/// both. Returns the connection and the wrapping that worked.
///
/// The other wrapping is tried only if the peer was reached: a host that
/// refused or never answered on any transport would do the same again, and
/// a silent one would hold the dial for a second timeout.
pub async fn dial(
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
    policy: Encryption,
    known: Option<Wrapping>,
    tcp: bool,
    utp: Option<&UtpHandle>,
) -> Result<(Established, Wrapping), DialError> {
    let mut last = DialError::Timeout;
    let wrappings = attempts(policy, known);
    for (i, &wrapping) in wrappings.iter().enumerate() {
        let attempt = Attempt {
            addr,
            timeout,
            ours,
            methods: policy.methods(),
            wrapping,
        };
        let reached = AtomicBool::new(false);
        let fallback_follows = i + 1 < wrappings.len();
        let over = attempt.over(tcp, utp, fallback_follows, &reached);
        match tokio::time::timeout(timeout, over).await {
            Ok(Ok(conn)) => return Ok((conn, wrapping)),
            Ok(Err(e)) => last = e,
            Err(_) => last = DialError::Timeout,
        }
        if !reached.load(Ordering::Relaxed) {
            return Err(last);
        }
        tracing::debug!(%addr, ?wrapping, "handshake failed: {}", lodestone_core::ErrorChain(&last));
    }
    Err(last)
}

/// `connect`, noting in `reached` when it succeeds: an attempt on which
/// some transport connected reached the peer, so its handshakes began.
async fn noting<S>(
    reached: &AtomicBool,
    connect: impl Future<Output = io::Result<S>>,
) -> io::Result<S> {
    let stream = connect.await?;
    reached.store(true, Ordering::Relaxed);
    Ok(stream)
}

/// New connections an attempt makes, at most, after a peer hung up on a
/// shared secret that begins with a zero byte (see [`Attempt::run`]): each
/// meets the case again 1 time in 256.
const ZERO_LED_SECRET_RETRIES: u32 = 3;

/// One attempt: where, with which handshakes, within what time.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    addr: SocketAddr,
    timeout: Duration,
    ours: Handshake,
    methods: Methods,
    wrapping: Wrapping,
}

impl Attempt {
    /// The attempt over the transports it may use, noting in `reached`
    /// whether any connected; with both, they race to connect (see the module
    /// docs).
    async fn over(
        self,
        tcp: bool,
        utp: Option<&UtpHandle>,
        fallback_follows: bool,
        reached: &AtomicBool,
    ) -> Result<Established, DialError> {
        let over_tcp = || self.run(|| noting(reached, TcpStream::connect(self.addr)));
        match (tcp, utp) {
            (true, None) => over_tcp().await,
            (false, Some(utp)) => self.run(|| noting(reached, utp.connect(self.addr))).await,
            (true, Some(utp)) => {
                // A refused TCP leg fails at once, but a refused uTP SYN
                // would be waited out for seconds: the ICMP "port
                // unreachable" reaches an unconnected UDP socket only
                // through the error queue `IP_RECVERR` turns on, and a
                // queued error makes epoll say EPOLLERR, which mio reads as
                // "write side closed" and tokio never clears. Every later
                // wait for send room on the DHT's shared socket would then
                // return at once, and a full send buffer would spin a core;
                // so the queue stays off. Once TCP is refused, the host is
                // up and answers, and a probe from a socket of its own
                // hears the uTP port's refusal instead. It races the uTP
                // connect only, never the handshakes after it: a firewall
                // that rejects the probe's new port but passes our DHT
                // port must not cut off a uTP connection already made.
                let tcp_refused = Notify::new();
                let mut tcp = pin!(async {
                    let result = noting(reached, TcpStream::connect(self.addr)).await;
                    if result
                        .as_ref()
                        .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
                    {
                        tcp_refused.notify_one();
                    }
                    result
                });
                let mut utp_connect = pin!(noting(reached, async {
                    let refusal = async {
                        tcp_refused.notified().await;
                        port_probe::refusal(self.addr).await
                    };
                    tokio::select! {
                        stream = utp.connect(self.addr) => stream,
                        refused = refusal => Err(refused),
                    }
                }));
                // The transports race to connect, and the first to connect
                // carries the handshakes while the other's connect goes on
                // as a spare. Were both handshakes sent, the peer could keep
                // the connection we drop and hang up on the one we keep.
                let again_tcp = || TcpStream::connect(self.addr);
                let again_utp = || utp.connect(self.addr);
                tokio::select! {
                    first = &mut tcp => {
                        self.carry(first, again_tcp, utp_connect, again_utp, fallback_follows).await
                    }
                    first = &mut utp_connect => {
                        self.carry(first, again_utp, tcp, again_tcp, fallback_follows).await
                    }
                }
            }
            (false, None) => Err(DialError::NoTransport),
        }
    }

    /// The handshakes over `first`, the transport that connected first
    /// (`again` connects it anew for a retry), while `spare`, the other's
    /// connect, goes on; if they fail, or `first` did not connect, the
    /// handshakes run over the spare (`again_spare`). A uTP-only libtorrent
    /// accepts TCP connections and resets them, so a failure on one
    /// transport says nothing of the other. But a host that took one
    /// transport and turned our handshake down most likely wants the other
    /// wrapping: when one is tried next (over both transports again), a
    /// spare that has not connected yet is not waited for. One that has
    /// connected runs the same wrapping after the first, a few round trips
    /// more for a peer that turns it down on both.
    async fn carry<S1, S2, C1, C2>(
        self,
        first: io::Result<S1>,
        again: impl Fn() -> C1,
        mut spare: Pin<&mut impl Future<Output = io::Result<S2>>>,
        again_spare: impl Fn() -> C2,
        fallback_follows: bool,
    ) -> Result<Established, DialError>
    where
        S1: RawStream,
        S2: RawStream,
        C1: Future<Output = io::Result<S1>>,
        C2: Future<Output = io::Result<S2>>,
    {
        let Ok(stream) = first else {
            let stream = spare.await.map_err(DialError::Connect)?;
            return self.run_on(stream, again_spare).await;
        };
        let mut handshakes = pin!(self.run_on(stream, again));
        let mut connected = None;
        let mut grace = pin!(tokio::time::sleep(self.timeout / 3));
        let failed = loop {
            tokio::select! {
                result = &mut handshakes => match result {
                    Ok(conn) => return Ok(conn),
                    Err(e) => break e,
                },
                result = &mut spare, if connected.is_none() => connected = Some(result),
                // Handshakes that hang (a middlebox that takes TCP and
                // says nothing) would hold the spare until the timeout:
                // past a third of it, the spare's run alongside.
                () = &mut grace, if matches!(connected, Some(Ok(_))) => match connected.take() {
                    Some(Ok(spare)) => {
                        let mut on_spare = pin!(self.run_on(spare, again_spare));
                        return tokio::select! {
                            result = &mut handshakes => match result {
                                Ok(conn) => Ok(conn),
                                Err(_) => on_spare.await,
                            },
                            result = &mut on_spare => match result {
                                Ok(conn) => Ok(conn),
                                Err(_) => handshakes.await,
                            },
                        };
                    }
                    other => connected = other,
                },
            }
        };
        let connected = match connected {
            Some(result) => result,
            None if fallback_follows => return Err(failed),
            None => spare.await,
        };
        match connected {
            Ok(stream) => self.run_on(stream, again_spare).await,
            Err(_) => Err(failed),
        }
    }

    /// [`Attempt::run`] on `stream`, already connected; a retry connects
    /// again with `connect`.
    async fn run_on<S: RawStream, C: Future<Output = io::Result<S>>>(
        self,
        stream: S,
        connect: impl Fn() -> C,
    ) -> Result<Established, DialError> {
        let first = std::sync::Mutex::new(Some(stream));
        let connect = &connect;
        self.run(|| {
            let ready = first.lock().ok().and_then(|mut s| s.take());
            async move {
                match ready {
                    Some(stream) => Ok(stream),
                    None => connect().await,
                }
            }
        })
        .await
    }

    /// [`Attempt::run_once`], again on a new connection (up to
    /// [`ZERO_LED_SECRET_RETRIES`] times) while the peer hangs up on a
    /// shared secret that begins with a zero byte. libtorrent 2.0 does, 1
    /// handshake in 256, and fresh keys get past it where the other
    /// wrapping might not be allowed. The peer cannot steer our secret to
    /// such a value, so it cannot make us loop.
    async fn run<S: RawStream, C: Future<Output = io::Result<S>>>(
        self,
        connect: impl Fn() -> C,
    ) -> Result<Established, DialError> {
        let mut retries = 0;
        loop {
            match self.run_once(connect()).await {
                Err(DialError::Encryption(StreamError::ClosedOnZeroLedSecret))
                    if retries < ZERO_LED_SECRET_RETRIES =>
                {
                    retries += 1;
                    tracing::debug!(addr = %self.addr, "encryption handshake hit libtorrent's quirk: again");
                }
                result => return result,
            }
        }
    }

    /// Connects with `connect`, then runs the encryption handshake the
    /// wrapping asks for and the BitTorrent one.
    async fn run_once<S: RawStream>(
        self,
        connect: impl Future<Output = io::Result<S>>,
    ) -> Result<Established, DialError> {
        let stream = connect.await.map_err(DialError::Connect)?;
        let (stream, preamble) = match self.wrapping {
            Wrapping::Plain => (stream.into_plain(self.addr), Preamble::default()),
            Wrapping::Mse => {
                encryption::initiate(stream, self.addr, self.ours, self.methods).await?
            }
        };
        let (conn, theirs) =
            Connection::initiate_after(stream, self.timeout, self.ours, preamble).await?;
        Ok(Established::new(conn, theirs, self.addr, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_order_their_attempts() {
        use Wrapping::{Mse, Plain};
        assert_eq!(attempts(Encryption::Off, Some(Mse)), [Plain]);
        assert_eq!(attempts(Encryption::Require, Some(Plain)), [Mse]);
        assert_eq!(attempts(Encryption::Prefer, None), [Mse, Plain]);
        assert_eq!(attempts(Encryption::Prefer, Some(Mse)), [Mse, Plain]);
        assert_eq!(attempts(Encryption::Prefer, Some(Plain)), [Plain, Mse]);
    }

    /// A uTP endpoint on its own loopback socket, as the session runs one
    /// on the DHT's.
    async fn utp_endpoint() -> UtpHandle {
        utp_endpoint_at(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .0
    }

    /// A uTP endpoint bound to `addr`, and the connections it accepts.
    async fn utp_endpoint_at(
        addr: SocketAddr,
    ) -> (
        UtpHandle,
        tokio::sync::mpsc::Receiver<lodestone_utp::net::UtpStream>,
    ) {
        use lodestone_utp::net::{self, Senders};
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind(addr).await.expect("bind"));
        let (inbox, engine) = net::inbox(lodestone_utp::Config::default());
        tokio::spawn(net::recv_loop(socket.clone(), inbox));
        let senders = Senders {
            v4: Some(socket),
            v6: None,
        };
        net::spawn(engine, senders)
    }

    #[tokio::test]
    async fn handshakes_hanging_on_the_first_transport_go_on_over_the_spare() {
        use crate::encryption::RawStream;
        use lodestone_core::{InfoHash, PeerId};
        use lodestone_wire::Reserved;
        let utp = utp_endpoint().await;
        // The peer's TCP takes the connection and never answers (as a
        // middlebox can); its uTP answers the handshake.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("an address");
        let (_peer_utp, mut incoming) = utp_endpoint_at(addr).await;
        let theirs = Handshake::new(Reserved::LODESTONE, InfoHash([1; 20]), PeerId([3; 20]));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = tcp.accept().await {
                held.push(stream);
            }
        });
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(stream) = incoming.recv().await {
                let plain = stream.into_plain(addr);
                if let Ok(conn) = Connection::accept(plain, Duration::from_secs(5), theirs).await {
                    held.push(conn);
                }
            }
        });
        let ours = Handshake::new(Reserved::LODESTONE, InfoHash([1; 20]), PeerId([2; 20]));
        // Plaintext only: no fallback, so without the spare taking over
        // the dial would end on the timeout.
        let timeout = Duration::from_secs(3);
        let (conn, _) = dial(addr, timeout, ours, Encryption::Off, None, true, Some(&utp))
            .await
            .expect("the spare carries the dial");
        assert_eq!(conn.theirs.peer_id, theirs.peer_id);
    }

    /// A loopback port where nothing answers, for as long as it lives: a
    /// TCP listener whose accept queue is full, so that the kernel drops
    /// every new SYN, and a UDP socket that never reads.
    struct SilentPort {
        addr: SocketAddr,
        _listener: socket2::Socket,
        _queued: Vec<std::net::TcpStream>,
        _udp: std::net::UdpSocket,
    }

    impl SilentPort {
        fn new() -> Self {
            use socket2::{Domain, Socket, Type};
            let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            listener.bind(&any.into()).expect("bind");
            listener.listen(0).expect("listen");
            let addr = listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .expect("an address");
            let patience = Duration::from_millis(300);
            let mut queued = Vec::new();
            while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, patience) {
                queued.push(stream);
                assert!(queued.len() < 64, "the accept queue never filled");
            }
            Self {
                addr,
                _listener: listener,
                _queued: queued,
                _udp: std::net::UdpSocket::bind(addr).expect("the UDP port too"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_host_costs_one_timeout_not_one_per_wrapping() {
        use lodestone_core::{InfoHash, PeerId};
        use lodestone_wire::Reserved;
        let utp = utp_endpoint().await;
        let silent = SilentPort::new();
        let addr = silent.addr;
        let ours = Handshake::new(Reserved::LODESTONE, InfoHash([1; 20]), PeerId([2; 20]));
        let timeout = Duration::from_secs(5);
        let started = tokio::time::Instant::now();
        // Encrypted first, then plaintext: two wrappings to try.
        let result = dial(
            addr,
            timeout,
            ours,
            Encryption::Prefer,
            None,
            true,
            Some(&utp),
        )
        .await;
        assert!(
            matches!(result, Err(DialError::Timeout)),
            "{:?}",
            result.map(|(_, w)| w)
        );
        // On virtual time: one connect timeout, where the plaintext
        // fallback used to wait out a second.
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test]
    async fn a_host_that_refuses_both_transports_fails_the_dial_as_refused() {
        use lodestone_core::{InfoHash, PeerId};
        use lodestone_wire::Reserved;
        let utp = utp_endpoint().await;
        // Nothing listens here on TCP or UDP.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port");
        let ours = Handshake::new(Reserved::LODESTONE, InfoHash([1; 20]), PeerId([2; 20]));
        // Far longer than the uTP leg's SYN retries: without the probe the
        // dial ends on the uTP leg's timeout, not on a refusal.
        let timeout = Duration::from_secs(60);
        let result = dial(addr, timeout, ours, Encryption::Off, None, true, Some(&utp)).await;
        match result {
            Err(DialError::Connect(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|(_, w)| w)),
        }
    }
}
