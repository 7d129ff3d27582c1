//! A UDP load generator for DHT nodes: valid KRPC queries from many sockets.
//!
//! A bootstrap node is hit by a crowd: many addresses, each with a few
//! queries in flight. [`run`] imitates that with one socket per source
//! address in `sources` (all in 127.0.0.0/8 for the benchmarks), connected to
//! the node, each sending a rotating mix of `ping`, `find_node` and
//! `get_peers` with random ids and targets, and matching replies by
//! transaction id.
//!
//! Two shapes of load, chosen by [`LoadConfig::rate`]:
//! * **closed loop** (`None`): each socket keeps `window` queries in flight
//!   and sends the next as soon as one is answered or lost. Throughput is
//!   then what the node can sustain; latency includes its queueing.
//! * **open loop** (`Some(q/s)`): queries leave on a fixed schedule whatever
//!   the node does, so latency is measured at a known, moderate load.
//!
//! Everything is bounded: sending stops at `duration` or `max_queries`, and
//! a query unanswered after `reply_timeout` counts as lost, so a run ends at
//! most `reply_timeout` after `duration`. Replies are parsed with the bounded
//! bencode scanner; the generator never trusts the node's bytes.
//!
//! The queries are built directly with the bencode writer, not with
//! lodestone's KRPC encoder, so a bug there cannot bend the measurement of
//! lodestone's own node.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use lodestone_bencode::{Limits, Writer, parse};
use lodestone_dht::net::mmsg;
use nix::sys::socket::{MsgFlags, MultiHeaders, sendmmsg};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::stats::percentile_sorted;

/// What load to generate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The node under test.
    pub target: SocketAddr,
    /// One socket (ephemeral port) per address.
    pub sources: Vec<IpAddr>,
    /// Closed loop: queries in flight per socket. Ignored in open loop.
    pub window: usize,
    /// Open loop: total queries per second over all sockets.
    pub rate: Option<f64>,
    /// How long to keep sending.
    pub duration: Duration,
    /// Stop sending after this many queries in total.
    pub max_queries: u64,
    /// A query unanswered for this long is lost.
    pub reply_timeout: Duration,
    /// Seeds node ids, targets and infohashes.
    pub seed: u64,
}

/// Reply latencies in microseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Slowest answer.
    pub max: u32,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// `closed loop, window N` or `open loop, R q/s`.
    pub mode: String,
    /// Sockets (= source addresses) used.
    pub sockets: usize,
    /// Queries sent.
    pub sent: u64,
    /// Queries answered with `y = r`.
    pub answered: u64,
    /// Queries answered with `y = e` (a bootstrap node should send none).
    pub errors: u64,
    /// Queries unanswered after the reply timeout.
    pub lost: u64,
    /// Datagrams from the node that matched no outstanding query, or did
    /// not parse.
    pub unmatched: u64,
    /// Queries the node sent to us (it may ping new contacts); ignored.
    pub incoming_queries: u64,
    /// Local send failures (e.g. a full socket buffer).
    pub send_failures: u64,
    /// Seconds from the start to the last send or answer.
    pub active_s: f64,
    /// `answered / active_s`.
    pub answered_per_s: f64,
    /// Latency of answered queries; `None` when nothing was answered.
    pub latency_us: Option<Latency>,
}

/// Per-socket counters, merged into a [`LoadReport`].
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    errors: u64,
    lost: u64,
    unmatched: u64,
    incoming_queries: u64,
    send_failures: u64,
    latencies_us: Vec<u32>,
    last_event: Option<Instant>,
}

/// What one socket's worker is told to do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    window: usize,
    interval: Option<Duration>,
    quota: u64,
    start: Instant,
    deadline: Instant,
    reply_timeout: Duration,
    seed: u64,
}

/// The three query kinds, rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ping`.
    Ping,
    /// `find_node` with a random target.
    FindNode,
    /// `get_peers` with a random infohash.
    GetPeers,
}

impl Kind {
    /// The `n`-th kind of the rotation.
    pub fn nth(n: u64) -> Kind {
        match n % 3 {
            0 => Kind::Ping,
            1 => Kind::FindNode,
            _ => Kind::GetPeers,
        }
    }
}

/// Encodes a KRPC query with a 4-byte transaction id.
pub fn encode_query(out: &mut Vec<u8>, kind: Kind, tid: u32, id: &[u8; 20], target: &[u8; 20]) {
    out.clear();
    // Keys in ascending byte order, as the writer requires: a < q < t < y,
    // and id < info_hash < target inside `a`.
    Writer::new(out).dict(|d| {
        d.key(b"a").dict(|a| {
            a.bytes(b"id", id);
            match kind {
                Kind::Ping => {}
                Kind::GetPeers => a.bytes(b"info_hash", target),
                Kind::FindNode => a.bytes(b"target", target),
            }
        });
        let method: &[u8] = match kind {
            Kind::Ping => b"ping",
            Kind::FindNode => b"find_node",
            Kind::GetPeers => b"get_peers",
        };
        d.bytes(b"q", method);
        d.bytes(b"t", &tid.to_be_bytes());
        d.bytes(b"y", b"q");
    });
}

/// How the node answered, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `y = r` for our transaction `tid`.
    Answer(u32),
    /// `y = e` for our transaction `tid`.
    Error(u32),
    /// The node asks us something.
    Query,
    /// Anything else.
    Unusable,
}

/// Classifies a datagram from the node.
pub fn classify(datagram: &[u8]) -> Reply {
    let Ok(doc) = parse(datagram, &Limits::KRPC) else {
        return Reply::Unusable;
    };
    let root = doc.root();
    let Some(dict) = root.as_dict() else {
        return Reply::Unusable;
    };
    let tid = dict
        .get_bytes(b"t")
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map(u32::from_be_bytes);
    match (dict.get_bytes(b"y"), tid) {
        (Some(b"r"), Some(tid)) => Reply::Answer(tid),
        (Some(b"e"), Some(tid)) => Reply::Error(tid),
        (Some(b"q"), _) => Reply::Query,
        _ => Reply::Unusable,
    }
}

/// Runs the load and reports. Binding fails only on a local problem (an
/// address not on an interface); the node's behaviour never fails a run.
pub async fn run(config: &LoadConfig) -> std::io::Result<LoadReport> {
    let sockets = config.sources.len().max(1);
    let mut bound = Vec::with_capacity(sockets);
    for ip in &config.sources {
        let socket = UdpSocket::bind(SocketAddr::new(*ip, 0)).await?;
        // Only the target's datagrams get in, and sends skip the route
        // lookup.
        socket.connect(config.target).await?;
        bound.push(socket);
    }
    let start = Instant::now();
    let deadline = start + config.duration;
    let interval = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(sockets as f64 / rate));
    let quota = config.max_queries / sockets as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, socket) in bound.into_iter().enumerate() {
        let plan = Plan {
            window: config.window.max(1),
            interval,
            quota,
            start,
            deadline,
            reply_timeout: config.reply_timeout,
            seed: config.seed.wrapping_add(i as u64),
        };
        tasks.spawn(worker(socket, plan));
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        // A panicking worker is a bug in this file; surface it.
        let tally = joined.map_err(std::io::Error::other)?;
        total.sent += tally.sent;
        total.answered += tally.answered;
        total.errors += tally.errors;
        total.lost += tally.lost;
        total.unmatched += tally.unmatched;
        total.incoming_queries += tally.incoming_queries;
        total.send_failures += tally.send_failures;
        total.latencies_us.extend(tally.latencies_us);
        total.last_event = total.last_event.max(tally.last_event);
    }
    let active_s = total
        .last_event
        .map_or(0.0, |last| last.duration_since(start).as_secs_f64());
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    let latency_us = (!lat.is_empty()).then(|| Latency {
        p50: percentile_sorted(lat, 50.0).unwrap_or_default(),
        p90: percentile_sorted(lat, 90.0).unwrap_or_default(),
        p99: percentile_sorted(lat, 99.0).unwrap_or_default(),
        max: lat.last().copied().unwrap_or_default(),
    });
    Ok(LoadReport {
        mode: match interval {
            Some(_) => format!("open loop, {:.0} q/s", config.rate.unwrap_or_default()),
            None => format!("closed loop, window {}", config.window.max(1)),
        },
        sockets,
        sent: total.sent,
        answered: total.answered,
        errors: total.errors,
        lost: total.lost,
        unmatched: total.unmatched,
        incoming_queries: total.incoming_queries,
        send_failures: total.send_failures,
        active_s,
        answered_per_s: total.answered as f64 / active_s.max(1e-9),
        latency_us,
    })
}

/// Receive slots per socket: more than a closed loop's window, so one call
/// takes everything a socket has queued.
const RECV_SLOTS: usize = 16;

/// One socket's loop: send by plan, match replies, expire the lost.
///
/// The socket is connected to the target, and queries leave and answers
/// arrive in batches (`sendmmsg`, and the node's own `recvmmsg` helper
/// [`mmsg::recv`]): on loopback the generator shares the machine's
/// per-datagram kernel costs with the node, and with a call per datagram it
/// was the first to run out of CPU, so the benchmark measured the generator
/// rather than the node.
async fn worker(socket: UdpSocket, plan: Plan) -> Tally {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let id: [u8; 20] = rng.random();
    let mut tally = Tally::default();
    // Transaction ids increase, so the first entry is always the oldest.
    let mut outstanding: BTreeMap<u32, Instant> = BTreeMap::new();
    let mut next_tid: u32 = 0;
    let mut next_send = plan.start;
    let mut queries: Vec<Vec<u8>> = Vec::new();
    let mut slots = vec![0u8; RECV_SLOTS * mmsg::SLOT];
    let mut received = Vec::with_capacity(RECV_SLOTS);
    // One timer, moved only when the wake-up time changes: registering a
    // new one on every turn of the loop cost the generator more than
    // parsing the answers.
    let sleep = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(sleep);

    loop {
        let now = Instant::now();
        while let Some((&tid, &sent)) = outstanding.first_key_value() {
            if now.duration_since(sent) < plan.reply_timeout {
                break;
            }
            outstanding.remove(&tid);
            tally.lost += 1;
        }
        let may_send = now < plan.deadline && tally.sent < plan.quota;
        if !may_send && outstanding.is_empty() {
            break;
        }
        if may_send {
            // Open loop: catch up with the schedule, at most a small burst
            // per wake-up. Closed loop: refill the window.
            let budget = match plan.interval {
                Some(_) => 8,
                None => plan.window.saturating_sub(outstanding.len()),
            };
            let first_tid = next_tid;
            let mut batch = 0;
            while batch < budget && tally.sent + (batch as u64) < plan.quota {
                if let Some(step) = plan.interval {
                    if next_send > now {
                        break;
                    }
                    next_send += step;
                }
                if queries.len() == batch {
                    queries.push(Vec::with_capacity(128));
                }
                let target: [u8; 20] = rng.random();
                let kind = Kind::nth(u64::from(next_tid));
                encode_query(&mut queries[batch], kind, next_tid, &id, &target);
                next_tid = next_tid.wrapping_add(1);
                batch += 1;
            }
            send_all(
                &socket,
                &queries[..batch],
                first_tid,
                &mut outstanding,
                &mut tally,
            )
            .await;
        }
        let mut wake = outstanding
            .first_key_value()
            .map_or(plan.deadline, |(_, sent)| *sent + plan.reply_timeout);
        if may_send {
            wake = wake.min(plan.deadline);
            if plan.interval.is_some() {
                wake = wake.min(next_send);
            }
        }
        if sleep.deadline() != wake {
            sleep.as_mut().reset(wake);
        }
        tokio::select! {
            Ok(()) = socket.readable() => {
                // Drain what is queued, bounded so sending is never starved.
                for _ in 0..4 {
                    received.clear();
                    let drained = socket
                        .try_io(Interest::READABLE, || mmsg::recv(&socket, &mut slots, &mut received));
                    if drained.is_err() {
                        break;
                    }
                    // A cut datagram has length 0, which no reply has.
                    for (slot, &(_, len)) in slots.chunks(mmsg::SLOT).zip(&received) {
                        on_answer(&slot[..len], &mut outstanding, &mut tally);
                    }
                    if received.len() < RECV_SLOTS {
                        break;
                    }
                }
            }
            () = &mut sleep => {}
        }
    }
    tally
}

/// Sends `queries`, numbered from `first_tid`, and records each one that
/// left as outstanding; the rest count as send failures.
async fn send_all(
    socket: &UdpSocket,
    queries: &[Vec<u8>],
    first_tid: u32,
    outstanding: &mut BTreeMap<u32, Instant>,
    tally: &mut Tally,
) {
    let mut done = 0;
    while done < queries.len() {
        let rest = &queries[done..];
        let sent = socket
            .async_io(Interest::WRITABLE, || send_batch(socket, rest))
            .await
            // The first datagram failed; it counts and the rest are tried.
            .unwrap_or(0);
        let now = Instant::now();
        for _ in 0..sent {
            outstanding.insert(first_tid.wrapping_add(done as u32), now);
            done += 1;
        }
        if sent == 0 {
            tally.send_failures += 1;
            done += 1;
        }
        tally.last_event = Some(now);
    }
    tally.sent += queries.len() as u64;
}

/// One `sendmmsg` on a connected socket: how many of `queries` left.
fn send_batch(socket: &UdpSocket, queries: &[Vec<u8>]) -> std::io::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> = queries.iter().map(|q| [IoSlice::new(q)]).collect();
    let mut headers = MultiHeaders::<()>::preallocate(slices.len(), None);
    let to: Vec<Option<()>> = vec![None; slices.len()];
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        to,
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

/// Counts one datagram from the target (the socket is connected to it).
fn on_answer(datagram: &[u8], outstanding: &mut BTreeMap<u32, Instant>, tally: &mut Tally) {
    match classify(datagram) {
        Reply::Answer(tid) => match outstanding.remove(&tid) {
            Some(sent) => {
                tally.answered += 1;
                let now = Instant::now();
                tally.last_event = Some(now);
                let us = now.duration_since(sent).as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            None => tally.unmatched += 1,
        },
        Reply::Error(tid) => match outstanding.remove(&tid) {
            Some(_) => tally.errors += 1,
            None => tally.unmatched += 1,
        },
        Reply::Query => tally.incoming_queries += 1,
        Reply::Unusable => tally.unmatched += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn queries_are_canonical_krpc() {
        let mut out = Vec::new();
        encode_query(
            &mut out,
            Kind::FindNode,
            0x01020304,
            &[b'i'; 20],
            &[b'x'; 20],
        );
        let mut want = b"d1:ad2:id20:".to_vec();
        want.extend_from_slice(&[b'i'; 20]);
        want.extend_from_slice(b"6:target20:");
        want.extend_from_slice(&[b'x'; 20]);
        want.extend_from_slice(b"e1:q9:find_node1:t4:\x01\x02\x03\x041:y1:qe");
        assert_eq!(out, want);
        encode_query(&mut out, Kind::Ping, 7, &[0; 20], &[0; 20]);
        assert!(out.starts_with(b"d1:ad2:id20:"));
        assert!(out.ends_with(b"e1:q4:ping1:t4:\0\0\0\x071:y1:qe"));
        encode_query(&mut out, Kind::GetPeers, 7, &[0; 20], &[0; 20]);
        assert!(out.windows(9).any(|w| w == b"info_hash"));
        // The scanner accepts it (it rejects unsorted keys).
        assert!(parse(&out, &Limits::KRPC).is_ok());
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            classify(b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaae1:t4:\0\0\0\x091:y1:re"),
            Reply::Answer(9)
        );
        assert_eq!(
            classify(b"d1:eli201e1:xe1:t4:\0\0\0\x021:y1:ee"),
            Reply::Error(2)
        );
        assert_eq!(
            classify(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xy1:y1:qe"),
            Reply::Query
        );
        // A 2-byte tid is not one of ours; garbage is not a reply.
        assert_eq!(classify(b"d1:rde1:t2:xy1:y1:re"), Reply::Unusable);
        assert_eq!(classify(b"not bencode"), Reply::Unusable);
        assert_eq!(classify(b"li1ee"), Reply::Unusable);
    }

    /// An in-process responder on 127.0.0.1 that answers every query but
    /// every `drop_every`-th, echoing the transaction id.
    async fn responder(drop_every: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n_seen = 0u64;
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                n_seen += 1;
                if drop_every > 0 && n_seen.is_multiple_of(drop_every) {
                    continue;
                }
                let doc = parse(&buf[..n], &Limits::KRPC).unwrap();
                let tid = doc
                    .root()
                    .as_dict()
                    .unwrap()
                    .get_bytes(b"t")
                    .unwrap()
                    .to_vec();
                let mut reply = Vec::new();
                Writer::new(&mut reply).dict(|d| {
                    d.key(b"r").dict(|r| r.bytes(b"id", &[1; 20]));
                    d.bytes(b"t", &tid);
                    d.bytes(b"y", b"r");
                });
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, handle)
    }

    fn config(target: SocketAddr, rate: Option<f64>, max_queries: u64) -> LoadConfig {
        LoadConfig {
            target,
            sources: vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 4],
            window: 4,
            rate,
            duration: Duration::from_secs(10),
            max_queries,
            reply_timeout: Duration::from_millis(300),
            seed: 1,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closed_loop_counts_every_query_once() {
        let (target, server) = responder(0).await;
        let report = run(&config(target, None, 400)).await.unwrap();
        server.abort();
        assert_eq!(report.sent, 400);
        assert_eq!(report.answered, 400);
        assert_eq!(report.lost + report.errors + report.unmatched, 0);
        let lat = report.latency_us.unwrap();
        assert!(lat.p50 <= lat.p99 && lat.p99 <= lat.max);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_queries_are_lost_not_hung() {
        let (target, server) = responder(5).await;
        let report = run(&config(target, Some(2000.0), 200)).await.unwrap();
        server.abort();
        assert_eq!(report.sent, 200);
        assert_eq!(report.answered + report.lost, 200);
        assert_eq!(report.lost, 40);
        assert!(report.mode.starts_with("open loop"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silent_target_ends_after_the_reply_timeout() {
        // Bound but never read: every query is lost.
        let silent = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut cfg = config(silent.local_addr().unwrap(), None, 40);
        cfg.duration = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let report = run(&cfg).await.unwrap();
        assert_eq!((report.answered, report.lost), (0, report.sent));
        assert!(report.latency_us.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
