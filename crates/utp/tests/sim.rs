//! uTP on virtual time: sans-IO sockets joined by simulated links with
//! latency, jitter (hence reordering), loss and a bandwidth-limited queue.
//! No socket is opened; one event queue orders every delivery.
//!
//! Replay a seed with `LODESTONE_SIM_SEED=<n> cargo test -p lodestone-utp --test sim`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_utp::{CloseReason, Config, Event, Socket, StreamId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Loop iterations before a simulation counts as livelocked.
const MAX_STEPS: usize = 20_000_000;

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("LODESTONE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("LODESTONE_SIM_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

/// One direction of a path: a FIFO drained at `bytes_per_sec` with room for
/// `queue_bytes`, then `latency` plus up to `jitter` of propagation, and a
/// random loss rate.
#[derive(Debug, Clone)]
struct Link {
    bytes_per_sec: f64,
    queue_bytes: usize,
    latency: Duration,
    jitter: Duration,
    loss: f64,
    /// When the queue finishes sending what it holds.
    busy_until: Option<Instant>,
}

impl Link {
    fn new(bytes_per_sec: f64, queue_bytes: usize, latency: Duration) -> Self {
        Link {
            bytes_per_sec,
            queue_bytes,
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            busy_until: None,
        }
    }

    /// Queueing delay a packet entering now would see.
    fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// When a packet of `len` bytes entering now arrives, or `None` if
    /// dropped (random loss or a full queue).
    fn admit(&mut self, now: Instant, len: usize, rng: &mut StdRng) -> Option<Instant> {
        let queued = self.queue_delay(now).as_secs_f64() * self.bytes_per_sec;
        if queued + len as f64 > self.queue_bytes as f64 {
            return None;
        }
        let start = self.busy_until.map_or(now, |t| t.max(now));
        let done = start + Duration::from_secs_f64(len as f64 / self.bytes_per_sec);
        self.busy_until = Some(done);
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return None;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(rng.random_range(0..self.jitter.as_micros() as u64))
        };
        Some(done + self.latency + jitter)
    }
}

/// A datagram in the air.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    /// To uTP socket `to`.
    Utp {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A data packet of the loss-based flow reaches its receiver.
    RenoData,
    /// Its ack reaches the sender.
    RenoAck,
    /// A loss of it reaches the sender (as duplicate acks would).
    RenoLoss { sent: Instant },
}

/// The event queue: `(time, seq)` orders deliveries; `seq` breaks ties.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, d)));
    }

    fn next_time(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    fn pop(&mut self) -> Option<(Instant, Delivery)> {
        self.heap.pop().map(|Reverse((t, _, d))| (t, d))
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 6881))
}

/// Two uTP sockets, 0 → 1 over `forward`, 1 → 0 over `back`.
struct Pair {
    sockets: [Socket; 2],
    links: [Link; 2],
    rng: StdRng,
}

impl Pair {
    /// Moves every queued datagram of both sockets onto its link.
    fn drain(&mut self, now: Instant, q: &mut Queue) {
        for from in 0..2 {
            while let Some((to_addr, bytes)) = self.sockets[from].poll_transmit(now) {
                let to = if to_addr == addr(0) { 0 } else { 1 };
                if let Some(at) = self.links[from].admit(now, bytes.len() + 28, &mut self.rng) {
                    q.push(
                        at,
                        Delivery::Utp {
                            to,
                            from: addr(from),
                            bytes: bytes.to_vec(),
                        },
                    );
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.sockets.iter().filter_map(Socket::poll_timeout).min()
    }
}

/// The sending application: writes `data` as fast as the socket takes it,
/// then closes.
struct Writer {
    data: Vec<u8>,
    at: usize,
    closed: bool,
}

impl Writer {
    fn pump(&mut self, socket: &mut Socket, id: StreamId) {
        while self.at < self.data.len() {
            let n = socket
                .write(id, &self.data[self.at..])
                .expect("stream open");
            if n == 0 {
                return;
            }
            self.at += n;
        }
        if !self.closed {
            self.closed = true;
            socket.close(id);
        }
    }
}

/// Reads everything; closes at the end of the stream.
fn read_all(socket: &mut Socket, id: StreamId, into: &mut Vec<u8>) -> bool {
    loop {
        match socket.read(id, 16384, |part| into.extend_from_slice(part)) {
            Ok(Some(0)) => {
                socket.close(id);
                return true;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Transfers `len` bytes from socket 0 to socket 1 and returns what arrived
/// and how each side's connection closed.
fn transfer(seed: u64, len: usize, forward: Link, back: Link) -> (Vec<u8>, Vec<CloseReason>) {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let mut pair = Pair {
        sockets: [
            Socket::new(Config::default(), seed, t0),
            Socket::new(Config::default(), seed + 1, t0 + Duration::from_secs(3)),
        ],
        links: [forward, back],
        rng,
    };
    let mut q = Queue::default();
    pair.sockets[0].connect(t0, addr(1)).expect("room");
    let mut writer = Writer {
        data,
        at: 0,
        closed: false,
    };
    let mut received = Vec::new();
    let mut closes = Vec::new();
    let mut now = t0;
    pair.drain(now, &mut q);
    for _ in 0..MAX_STEPS {
        if closes.len() == 2 {
            return (received, closes);
        }
        let next = match (q.next_time(), pair.next_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a
                .or(b)
                .expect("something is always pending until both close"),
        };
        now = now.max(next);
        if q.next_time() == Some(next) {
            if let Some((_, Delivery::Utp { to, from, bytes })) = q.pop() {
                pair.sockets[to].handle_datagram(now, from, &bytes);
            }
        } else {
            for s in &mut pair.sockets {
                s.handle_timeout(now);
            }
        }
        for side in 0..2 {
            while let Some(ev) = pair.sockets[side].poll_event() {
                match ev {
                    Event::Connected(id) | Event::Writable(id) if side == 0 => {
                        writer.pump(&mut pair.sockets[0], id)
                    }
                    Event::Readable(id) | Event::Incoming(id, _) if side == 1 => {
                        read_all(&mut pair.sockets[1], id, &mut received);
                    }
                    Event::Closed(_, reason) => closes.push(reason),
                    _ => {}
                }
            }
        }
        pair.drain(now, &mut q);
    }
    panic!("seed {seed}: no completion in {MAX_STEPS} steps");
}

#[test]
fn transfer_survives_loss_and_reordering() {
    for seed in seeds(&[1, 2, 3]) {
        let lossy = || {
            let mut l = Link::new(20e6, 1 << 20, Duration::from_millis(20));
            l.jitter = Duration::from_millis(10);
            l.loss = 0.05;
            l
        };
        let len = 4 << 20;
        let t0 = std::time::Instant::now();
        let (got, closes) = transfer(seed, len, lossy(), lossy());
        let mut rng = StdRng::seed_from_u64(seed);
        let want: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert!(
            got == want,
            "seed {seed}: {} of {len} bytes, differing",
            got.len()
        );
        assert!(
            closes
                .iter()
                .all(|r| matches!(r, CloseReason::Done | CloseReason::Reset)),
            "seed {seed}: {closes:?}"
        );
        eprintln!(
            "seed {seed}: {len} bytes exact in {:?} of CPU",
            t0.elapsed()
        );
    }
}

#[test]
fn transfer_on_a_clean_path_closes_cleanly() {
    let link = || Link::new(50e6, 1 << 20, Duration::from_millis(5));
    let (got, closes) = transfer(7, 1 << 20, link(), link());
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(closes, vec![CloseReason::Done, CloseReason::Done]);
}

/// A loss-based flow (Reno-like AIMD on packets): slow start, then one
/// packet more per window of acks, halving at most once per window on loss.
struct Reno {
    cwnd: f64,
    ssthresh: f64,
    inflight: usize,
    last_cut: Option<Instant>,
}

/// Packet size of the loss-based flow on the wire.
const RENO_PACKET: usize = 1448;

/// Throughput through a shared bottleneck, measured between `from` and
/// `to` (virtual time since start).
struct Shares {
    utp: usize,
    reno: usize,
    /// Mean bottleneck queueing delay over the measurement, sampled per event.
    mean_queue: Duration,
}

/// A bottleneck: its rate in bytes per second, and the propagation delay
/// each way. Its buffer holds 400 ms.
struct Path {
    rate: f64,
    latency: Duration,
}

/// 10 Mbit/s and 20 ms each way.
const HOME: Path = Path {
    rate: 1.25e6,
    latency: Duration::from_millis(20),
};

/// A uTP flow with endless data over the bottleneck of `path`; from
/// `reno_starts` on, a loss-based flow shares the same queue. Counts what
/// each delivered between `from` and `to`.
fn bottleneck(
    seed: u64,
    path: Path,
    reno_starts: Option<Duration>,
    from: Duration,
    to: Duration,
) -> Shares {
    let t0 = Instant::now();
    let Path { rate, latency } = path;
    let mut pair = Pair {
        sockets: [
            Socket::new(Config::default(), seed, t0),
            Socket::new(Config::default(), seed + 1, t0),
        ],
        links: [
            Link::new(rate, (rate * 0.4) as usize, latency),
            // A little jitter on the return path, so seeds differ.
            Link {
                jitter: Duration::from_millis(2),
                ..Link::new(100e6, 1 << 20, latency)
            },
        ],
        rng: StdRng::seed_from_u64(seed),
    };
    let mut q = Queue::default();
    pair.sockets[0].connect(t0, addr(1)).expect("room");
    let mut reno = Reno {
        cwnd: 2.0,
        ssthresh: f64::INFINITY,
        inflight: 0,
        last_cut: None,
    };
    let chunk = vec![0x55u8; 64 << 10];
    let mut shares = Shares {
        utp: 0,
        reno: 0,
        mean_queue: Duration::ZERO,
    };
    let (mut queue_sum, mut queue_samples) = (0f64, 0u32);
    let read_max = 64 << 10;
    let mut now = t0;
    pair.drain(now, &mut q);
    for _ in 0..MAX_STEPS {
        let measuring = now >= t0 + from;

        if now >= t0 + to {
            shares.mean_queue =
                Duration::from_secs_f64(queue_sum / f64::from(queue_samples.max(1)));
            return shares;
        }
        if reno_starts.is_some_and(|s| now >= t0 + s) {
            while reno.inflight < reno.cwnd as usize {
                reno.inflight += 1;
                match pair.links[0].admit(now, RENO_PACKET, &mut pair.rng) {
                    Some(at) => q.push(at, Delivery::RenoData),
                    None => {
                        // Detected about a round trip later, by duplicate acks.
                        let rtt = pair.links[0].queue_delay(now) + latency * 2;
                        q.push(now + rtt, Delivery::RenoLoss { sent: now });
                    }
                }
            }
        }
        let next = [q.next_time(), pair.next_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("the flows never stop");
        now = now.max(next);
        if q.next_time() == Some(next) {
            match q.pop().map(|(_, d)| d) {
                Some(Delivery::Utp { to, from, bytes }) => {
                    pair.sockets[to].handle_datagram(now, from, &bytes)
                }
                Some(Delivery::RenoData) => {
                    if measuring {
                        shares.reno += RENO_PACKET;
                    }
                    q.push(now + latency, Delivery::RenoAck);
                }
                Some(Delivery::RenoAck) => {
                    reno.inflight -= 1;
                    reno.cwnd += if reno.cwnd < reno.ssthresh {
                        1.0
                    } else {
                        1.0 / reno.cwnd
                    };
                }
                Some(Delivery::RenoLoss { sent }) => {
                    reno.inflight -= 1;
                    if reno.last_cut.is_none_or(|c| sent > c) {
                        reno.cwnd = (reno.cwnd / 2.0).max(2.0);
                        reno.ssthresh = reno.cwnd;
                        reno.last_cut = Some(now);
                    }
                }
                None => {}
            }
        } else {
            for s in &mut pair.sockets {
                s.handle_timeout(now);
            }
        }
        if measuring {
            queue_sum += pair.links[0].queue_delay(now).as_secs_f64();
            queue_samples += 1;
        }
        while let Some(ev) = pair.sockets[0].poll_event() {
            if let Event::Connected(id) | Event::Writable(id) = ev {
                while pair.sockets[0].write(id, &chunk).expect("open") > 0 {}
            }
        }
        while let Some(ev) = pair.sockets[1].poll_event() {
            if let Event::Readable(id) | Event::Incoming(id, _) = ev {
                while let Ok(Some(n @ 1..)) = pair.sockets[1].read(id, read_max, |_| {}) {
                    if measuring {
                        shares.utp += n;
                    }
                }
            }
        }
        pair.drain(now, &mut q);
    }
    panic!("seed {seed}: livelock in the bottleneck simulation");
}

/// Alone on the bottleneck, LEDBAT fills it and holds the queue near its
/// 100 ms target: the yielding below is not a flow that can't send.
#[test]
fn ledbat_alone_fills_the_bottleneck_near_its_target_delay() {
    let s = bottleneck(
        11,
        HOME,
        None,
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
    let capacity = 1.25e6 * 20.0;
    let used = s.utp as f64 / capacity;
    eprintln!(
        "alone: {:.0} % of capacity, mean queue {:?}",
        used * 100.0,
        s.mean_queue
    );
    assert!(used > 0.7, "LEDBAT alone used {:.0} %", used * 100.0);
    assert!(
        s.mean_queue < Duration::from_millis(200),
        "LEDBAT alone queued {:?}",
        s.mean_queue
    );
}

/// With a loss-based flow filling the 400 ms buffer, the queueing delay
/// passes the 100 ms target and LEDBAT yields: below 10 % of the bottleneck
/// (its floor is one packet per round trip, about 0.3 % here).
#[test]
fn ledbat_yields_to_a_loss_based_flow() {
    for seed in seeds(&[21, 22]) {
        let s = bottleneck(
            seed,
            HOME,
            Some(Duration::from_secs(5)),
            Duration::from_secs(20),
            Duration::from_secs(50),
        );
        let share = s.utp as f64 / (s.utp + s.reno) as f64;
        eprintln!(
            "seed {seed}: uTP share {:.1} %, mean queue {:?}",
            share * 100.0,
            s.mean_queue
        );
        assert!(
            s.mean_queue > Duration::from_millis(100),
            "seed {seed}: the loss-based flow never pushed the queue past the target ({:?})",
            s.mean_queue
        );
        assert!(
            share < 0.1,
            "seed {seed}: LEDBAT kept {:.1} %",
            share * 100.0
        );
    }
}

/// A long, fast path: 160 Mbit/s and 50 ms of round trip, 1 MB in flight
/// to fill it. A window capped at 64 KiB whatever the distance would fill
/// 6 % of it; the cap grows with the round trip, and what limits the
/// connection is the 1 MiB receive window it is offered (68 % here).
#[test]
fn one_connection_fills_a_long_fast_path() {
    let rate = 20e6;
    let s = bottleneck(
        31,
        Path {
            rate,
            latency: Duration::from_millis(25),
        },
        None,
        Duration::from_secs(5),
        Duration::from_secs(15),
    );
    let used = s.utp as f64 / (rate * 10.0);
    eprintln!(
        "long path: {:.0} % of capacity, mean queue {:?}",
        used * 100.0,
        s.mean_queue
    );
    assert!(used > 0.5, "one connection used {:.0} %", used * 100.0);
}
