//! Simulated swarms on virtual time: honest and hostile peers answer the
//! fetch's requests through an event queue; no sockets, no sleeping.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;

use super::*;
use crate::message::PIECE_SIZE;

/// How a simulated peer answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Honest,
    /// Flips a byte in every piece it sends.
    Corrupt,
    Reject,
    /// Never answers.
    Silent,
    /// Disconnects after answering this many requests.
    GoneAfter(u32),
    /// Sends pieces one byte short.
    Truncate,
    /// Says `total_size` is one more than the truth.
    WrongTotal,
}

#[derive(Debug, Clone, Copy)]
struct SimPeer {
    kind: Kind,
    /// `metadata_size` in its handshake; `None` means the true size.
    announce: Option<Option<u64>>,
    latency: Duration,
    /// When its handshake completes.
    ready_at: Duration,
}

impl SimPeer {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            announce: None,
            latency: Duration::from_millis(20),
            ready_at: Duration::ZERO,
        }
    }
    fn announcing(mut self, size: Option<u64>) -> Self {
        self.announce = Some(size);
        self
    }
    fn latency_ms(mut self, ms: u64) -> Self {
        self.latency = Duration::from_millis(ms);
        self
    }
    fn ready_ms(mut self, ms: u64) -> Self {
        self.ready_at = Duration::from_millis(ms);
        self
    }
}

enum Event {
    Ready(u32),
    Deliver(u32, Vec<u8>),
    Gone(u32),
}

struct Sim {
    fetch: Fetch<u32>,
    metadata: Vec<u8>,
    peers: Vec<SimPeer>,
    connected: Vec<bool>,
    answered: Vec<u32>,
    requests: Vec<Vec<u32>>,
    dropped: Vec<(u32, DropReason)>,
    start: Instant,
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: Vec<Option<Event>>,
}

fn metadata(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn info_hash_of(bytes: &[u8]) -> InfoHash {
    InfoHash::new(Sha1::digest(bytes).into())
}

impl Sim {
    fn new(metadata: Vec<u8>, peers: Vec<SimPeer>, config: FetchConfig) -> Self {
        let start = Instant::now();
        let n = peers.len();
        let mut sim = Self {
            fetch: Fetch::new(info_hash_of(&metadata), config),
            metadata,
            peers,
            connected: vec![true; n],
            answered: vec![0; n],
            requests: vec![Vec::new(); n],
            dropped: Vec::new(),
            start,
            now: start,
            queue: BinaryHeap::new(),
            events: Vec::new(),
        };
        for id in 0..n {
            let at = start + sim.peers[id].ready_at;
            sim.schedule(at, Event::Ready(id as u32));
        }
        sim
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.queue.push(Reverse((at, self.events.len() as u64)));
        self.events.push(Some(event));
    }

    fn answer(&mut self, id: u32, piece: u32) {
        let peer = self.peers[id as usize];
        self.requests[id as usize].push(piece);
        let at = self.now + peer.latency;
        // A peer that announced a wrong size serves the truth cut or padded
        // to that size: consistent with itself, failing the hash.
        let size = match peer.announce {
            Some(Some(claimed)) => claimed as u32,
            _ => self.metadata.len() as u32,
        };
        let mut served = self.metadata.clone();
        served.resize(size as usize, 0);
        let Some(len) = piece_len(size, piece) else {
            // Asked for a piece beyond what it has: honest peers reject.
            self.schedule(at, Event::Deliver(id, Message::Reject { piece }.to_vec()));
            return;
        };
        let range = || {
            let start = (piece * PIECE_SIZE) as usize;
            start..start + len as usize
        };
        let data_msg = |data: &[u8], total: u64| {
            Message::Data {
                piece,
                total_size: Some(total),
                data,
            }
            .to_vec()
        };
        let reply = match peer.kind {
            Kind::Honest => data_msg(&served[range()], u64::from(size)),
            Kind::Corrupt => {
                let mut data = served[range()].to_vec();
                data[0] ^= 0xff;
                data_msg(&data, u64::from(size))
            }
            Kind::Reject => Message::Reject { piece }.to_vec(),
            Kind::Silent => return,
            Kind::GoneAfter(n) => {
                if self.answered[id as usize] >= n {
                    self.schedule(at, Event::Gone(id));
                    return;
                }
                data_msg(&served[range()], u64::from(size))
            }
            Kind::Truncate => {
                let r = range();
                data_msg(&served[r.start..r.end - 1], u64::from(size))
            }
            Kind::WrongTotal => data_msg(&served[range()], u64::from(size) + 1),
        };
        self.answered[id as usize] += 1;
        self.schedule(at, Event::Deliver(id, reply));
    }

    /// Runs until the metadata is verified, nothing can happen any more, or
    /// the step bound is hit (a livelock fails the test instead of hanging).
    fn run(&mut self, max_steps: usize) -> Option<Vec<u8>> {
        for _ in 0..max_steps {
            while let Some(action) = self.fetch.poll_action() {
                match action {
                    Action::Send {
                        peer,
                        message: Message::Request { piece },
                    } => {
                        assert!(self.connected[peer as usize], "request to a dropped peer");
                        self.answer(peer, piece);
                    }
                    Action::Send { message, .. } => panic!("fetch sent {message:?}"),
                    Action::Drop { peer, reason } => {
                        self.connected[peer as usize] = false;
                        self.dropped.push((peer, reason));
                    }
                }
            }
            if let Some(bytes) = self.fetch.take_verified() {
                return Some(bytes);
            }
            let timer = self.fetch.poll_timeout();
            let next = self.queue.peek().map(|Reverse((at, _))| *at);
            match (timer, next) {
                (None, None) => return None,
                (Some(t), n) if n.is_none_or(|n| t < n) => {
                    assert!(t >= self.now, "timeout in the past");
                    self.now = t;
                    self.fetch.handle_timeout(t);
                }
                _ => {
                    let Some(Reverse((at, seq))) = self.queue.pop() else {
                        unreachable!()
                    };
                    self.now = at;
                    let event = self.events[seq as usize].take().unwrap();
                    self.apply(event);
                }
            }
        }
        panic!("no result after {max_steps} steps: livelock");
    }

    fn apply(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Ready(id) => {
                let announce = self.peers[id as usize]
                    .announce
                    .unwrap_or(Some(self.metadata.len() as u64));
                self.fetch.peer_ready(now, id, announce);
            }
            Event::Deliver(id, bytes) => {
                if self.connected[id as usize] {
                    let msg = Message::decode(&bytes).unwrap();
                    self.fetch.message(now, id, &msg);
                }
            }
            Event::Gone(id) => {
                if self.connected[id as usize] {
                    self.connected[id as usize] = false;
                    self.fetch.peer_gone(now, id);
                }
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn dropped_for(&self, id: u32) -> Option<DropReason> {
        self.dropped.iter().find(|(p, _)| *p == id).map(|(_, r)| *r)
    }
}

fn assert_verified(out: &Option<Vec<u8>>, len: usize) {
    match out {
        Some(bytes) => assert!(*bytes == metadata(len), "wrong bytes verified"),
        None => panic!("fetch ended without metadata"),
    }
}

fn fetch_with(len: usize, peers: Vec<SimPeer>) -> (Sim, Option<Vec<u8>>) {
    let mut sim = Sim::new(metadata(len), peers, FetchConfig::default());
    let out = sim.run(100_000);
    (sim, out)
}

#[test]
fn one_piece_from_the_first_peer_in_one_round_trip() {
    let info = metadata(5_000);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(5_000));
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Send {
            peer: 1,
            message: Message::Request { piece: 0 }
        })
    );
    assert_eq!(fetch.poll_action(), None);
    assert_eq!(
        fetch.poll_timeout(),
        Some(now + FetchConfig::default().request_timeout)
    );
    let msg = Message::Data {
        piece: 0,
        total_size: Some(5_000),
        data: &info,
    };
    fetch.message(now, 1, &msg);
    assert!(fetch.is_finished());
    assert_eq!(fetch.take_verified(), Some(info));
    assert_eq!(fetch.take_verified(), None);
    assert_eq!(fetch.poll_timeout(), None);
}

#[test]
fn pieces_are_spread_over_every_peer() {
    let len = 10 * PIECE_SIZE as usize + 123;
    let peers = vec![SimPeer::new(Kind::Honest); 3];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    for id in 0..3 {
        assert!(
            sim.requests[id].len() >= 3,
            "peer {id}: {:?}",
            sim.requests[id]
        );
    }
    // All requests go out in the first round trip: done after one latency.
    assert_eq!(sim.elapsed(), Duration::from_millis(20));
    assert!(sim.dropped.is_empty());
}

#[test]
fn pipeline_fills_one_peer_up_to_its_limit() {
    let info = metadata(40 * PIECE_SIZE as usize);
    let config = FetchConfig {
        requests_per_peer: 4,
        ..FetchConfig::default()
    };
    let mut fetch = Fetch::new(info_hash_of(&info), config);
    fetch.peer_ready(Instant::now(), 7u32, Some(info.len() as u64));
    let mut sent = Vec::new();
    while let Some(Action::Send {
        message: Message::Request { piece },
        ..
    }) = fetch.poll_action()
    {
        sent.push(piece);
    }
    assert_eq!(sent, vec![0, 1, 2, 3]);
}

#[test]
fn oversized_and_empty_announcements_are_dropped_unallocated() {
    let info = metadata(100);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(4 << 30));
    fetch.peer_ready(now, 2u32, Some(0));
    fetch.peer_ready(now, 3u32, Some(u64::MAX));
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 1,
            reason: DropReason::MetadataTooLarge {
                size: 4 << 30,
                limit: 32 << 20
            }
        })
    );
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 2,
            reason: DropReason::MetadataEmpty
        })
    );
    assert!(matches!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 3,
            reason: DropReason::MetadataTooLarge { .. }
        })
    ));
    assert_eq!(fetch.poll_action(), None);
    assert_eq!(fetch.stats().metadata_size, None);
    assert_eq!(fetch.stats().peers, 0);
}

#[test]
fn huge_size_peer_does_not_disturb_honest_ones() {
    let len = 3 * PIECE_SIZE as usize;
    let peers = vec![
        SimPeer::new(Kind::Honest).announcing(Some(4 << 30)),
        SimPeer::new(Kind::Honest),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert!(matches!(
        sim.dropped_for(0),
        Some(DropReason::MetadataTooLarge { .. })
    ));
    assert!(sim.requests[0].is_empty());
}

#[test]
fn lone_liar_is_dropped_then_honest_peer_completes() {
    let len = 900;
    let peers = vec![
        SimPeer::new(Kind::Corrupt),
        SimPeer::new(Kind::Honest).ready_ms(100),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert_eq!(sim.dropped_for(0), Some(DropReason::HashMismatch));
    assert_eq!(sim.fetch.stats().hash_failures, 1);
}

#[test]
fn banned_liar_is_refused_when_it_comes_back() {
    let info = metadata(10);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(10));
    fetch.poll_action();
    let bad = Message::Data {
        piece: 0,
        total_size: Some(10),
        data: &[0; 10],
    };
    fetch.message(now, 1, &bad);
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 1,
            reason: DropReason::HashMismatch
        })
    );
    fetch.peer_ready(now, 1, Some(10));
    assert_eq!(
        fetch.poll_action(),
        Some(Action::Drop {
            peer: 1,
            reason: DropReason::HashMismatch
        })
    );
    assert_eq!(fetch.poll_action(), None);
}

#[test]
fn liar_among_honest_peers_never_costs_an_honest_peer() {
    let len = 8 * PIECE_SIZE as usize;
    // The liar answers fastest, so its pieces win.
    let peers = vec![
        SimPeer::new(Kind::Honest),
        SimPeer::new(Kind::Corrupt).latency_ms(5),
        SimPeer::new(Kind::Honest),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert_eq!(sim.fetch.stats().hash_failures, 1);
    assert_eq!(sim.dropped_for(0), None);
    assert_eq!(sim.dropped_for(2), None);
}

#[test]
fn liar_tried_alone_first_is_convicted() {
    // The liar is ready first (so first in line for the single-source
    // attempt) but slower; the honest peer takes piece 1, then piece 0 over,
    // yet the liar's piece 0 arrives first: the first attempt mixes sources.
    let len = 2 * PIECE_SIZE as usize;
    let peers = vec![
        SimPeer::new(Kind::Corrupt).latency_ms(10),
        SimPeer::new(Kind::Honest).latency_ms(5),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert_eq!(sim.fetch.stats().hash_failures, 2);
    assert_eq!(sim.dropped_for(0), Some(DropReason::HashMismatch));
    assert_eq!(sim.dropped_for(1), None);
    // Alone, each peer was only asked for what it had not sent before.
    assert_eq!(sim.requests[0], vec![0, 1, 1]);
    assert_eq!(sim.requests[1], vec![1, 0, 0]);
}

#[test]
fn rejecting_peer_is_dropped_and_its_piece_goes_elsewhere() {
    let len = 2 * PIECE_SIZE as usize;
    let peers = vec![SimPeer::new(Kind::Reject), SimPeer::new(Kind::Honest)];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert_eq!(sim.dropped_for(0), Some(DropReason::Rejected));
}

#[test]
fn lone_rejecting_peer_ends_quietly() {
    for len in [100, 10 * PIECE_SIZE as usize] {
        let (sim, out) = fetch_with(len, vec![SimPeer::new(Kind::Reject)]);
        assert_eq!(out, None);
        assert_eq!(sim.dropped_for(0), Some(DropReason::Rejected));
        // The pipeline went out before the first reject came back.
        assert!(sim.requests[0].len() <= 16, "{:?}", sim.requests[0]);
    }
}

#[test]
fn silent_peer_times_out_and_others_take_over() {
    let len = 6 * PIECE_SIZE as usize;
    let peers = vec![SimPeer::new(Kind::Silent), SimPeer::new(Kind::Honest)];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    // The honest peer took the silent one's pieces over as soon as it was
    // idle, without waiting for the 5 s deadline.
    assert!(
        sim.elapsed() < Duration::from_millis(200),
        "{:?}",
        sim.elapsed()
    );
}

#[test]
fn lone_silent_peer_is_dropped_after_its_timeouts() {
    let (sim, out) = fetch_with(100, vec![SimPeer::new(Kind::Silent)]);
    assert_eq!(out, None);
    assert_eq!(sim.dropped_for(0), Some(DropReason::TimedOut));
    assert_eq!(sim.elapsed(), Duration::from_secs(10));
}

#[test]
fn disconnect_mid_way_is_recovered() {
    let len = 20 * PIECE_SIZE as usize;
    let peers = vec![
        SimPeer::new(Kind::GoneAfter(3)),
        SimPeer::new(Kind::Honest).latency_ms(50),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert!(sim.dropped.is_empty());
    assert_eq!(sim.fetch.stats().hash_failures, 0);
}

#[test]
fn short_piece_and_wrong_total_size_are_dropped() {
    let len = 2 * PIECE_SIZE as usize + 5;
    let peers = vec![
        SimPeer::new(Kind::Truncate),
        SimPeer::new(Kind::WrongTotal),
        SimPeer::new(Kind::Honest).latency_ms(30),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert!(matches!(
        sim.dropped_for(0),
        Some(DropReason::WrongPieceLength { .. })
    ));
    assert_eq!(
        sim.dropped_for(1),
        Some(DropReason::WrongTotalSize {
            announced: len as u64 + 1,
            expected: len as u32
        })
    );
}

#[test]
fn unsolicited_data_is_ignored() {
    let info = metadata(3 * PIECE_SIZE as usize);
    let config = FetchConfig {
        requests_per_peer: 1,
        ..FetchConfig::default()
    };
    let mut fetch = Fetch::new(info_hash_of(&info), config);
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(info.len() as u64));
    while fetch.poll_action().is_some() {}
    // Piece 2 was never asked of peer 1; piece 0 was.
    let unasked = Message::Data {
        piece: 2,
        total_size: Some(info.len() as u64),
        data: &info[2 * PIECE_SIZE as usize..],
    };
    assert!(!fetch.message(now, 1, &unasked), "unasked is of no use");
    assert!(!fetch.message(now, 9, &unasked));
    assert_eq!(fetch.stats().pieces_have, 0);
    assert_eq!(fetch.poll_action(), None);
}

#[test]
fn first_peer_with_a_bogus_size_is_outvoted() {
    let len = 2 * PIECE_SIZE as usize;
    let peers = vec![
        SimPeer::new(Kind::Silent).announcing(Some(5 * u64::from(PIECE_SIZE))),
        SimPeer::new(Kind::Honest).ready_ms(5),
        SimPeer::new(Kind::Honest).ready_ms(6),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    // Outvoted at 6 ms, not waiting for the silent peer's 5 s timeout.
    assert_eq!(sim.elapsed(), Duration::from_millis(26));
}

#[test]
fn peer_with_another_size_sits_out_the_attempt() {
    let info = metadata(3 * PIECE_SIZE as usize);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(info.len() as u64));
    fetch.peer_ready(now, 2u32, Some(info.len() as u64 + 1));
    let mut asked = Vec::new();
    while let Some(action) = fetch.poll_action() {
        if let Action::Send { peer, .. } = action {
            asked.push(peer);
        }
    }
    // A tie keeps the first peer's size; peer 2 is neither asked nor dropped.
    assert_eq!(asked, vec![1, 1, 1]);
    assert_eq!(fetch.stats().peers, 2);
    // Once peer 1 is gone, peer 2's size gets its chance.
    fetch.peer_gone(now, 1);
    assert!(matches!(
        fetch.poll_action(),
        Some(Action::Send { peer: 2, .. })
    ));
    assert_eq!(fetch.stats().metadata_size, Some(info.len() as u32 + 1));
}

#[test]
fn repeated_handshake_with_another_size_drops_the_peer() {
    let info = metadata(2 * PIECE_SIZE as usize);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let now = Instant::now();
    let size = info.len() as u64;
    fetch.peer_ready(now, 1u32, Some(size));
    fetch.peer_ready(now, 2u32, Some(size));
    while fetch.poll_action().is_some() {}
    // Again without a size: nothing changes.
    fetch.peer_ready(now, 2, None);
    assert!(fetch.poll_action().is_none());
    // Peer 2 now claims another size: dropped, its requests go to peer 1.
    fetch.peer_ready(now, 2, Some(5));
    let actions: Vec<_> = std::iter::from_fn(|| fetch.poll_action()).collect();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Drop {
            peer: 2,
            reason: DropReason::SizeChanged { now: 5, .. }
        }
    )));
    let msg = |piece: u32| Message::Data {
        piece,
        total_size: Some(size),
        data: &info[(piece * PIECE_SIZE) as usize..((piece + 1) * PIECE_SIZE) as usize],
    };
    assert!(fetch.message(now, 1, &msg(0)), "an answer is of use");
    while fetch.poll_action().is_some() {}
    assert!(fetch.message(now, 1, &msg(1)));
    assert!(fetch.take_verified().is_some());
}

#[test]
fn size_flips_cannot_keep_an_honest_answer_out() {
    let info = metadata(100);
    let mut fetch = Fetch::new(info_hash_of(&info), FetchConfig::default());
    let start = Instant::now();
    fetch.peer_ready(start, 1u32, Some(100)); // honest
    fetch.peer_ready(start, 2u32, Some(5_000)); // a silent liar
    fetch.peer_ready(start, 3u32, Some(5_000)); // a liar that flips
    let answer = Message::Data {
        piece: 0,
        total_size: Some(100),
        data: &info,
    };
    // The flipper switches sizes every 4 s while it is connected; a drop
    // closes its connection.
    let mut flipper = true;
    for cycle in 0..75u32 {
        let now = start + Duration::from_secs(4) * cycle;
        fetch.handle_timeout(now);
        // The honest peer answers the last cycle's request.
        fetch.message(now, 1, &answer);
        if fetch.take_verified().is_some() {
            return;
        }
        if flipper {
            fetch.peer_ready(now, 3, Some(100));
            fetch.peer_ready(now, 3, Some(5_000));
        }
        while let Some(action) = fetch.poll_action() {
            if matches!(action, Action::Drop { peer: 3, .. }) {
                flipper = false;
            }
        }
    }
    panic!("300 s of size flips kept a one-piece fetch from its honest peer");
}

#[test]
fn peers_without_a_size_help_once_the_size_is_known() {
    let len = 6 * PIECE_SIZE as usize;
    let peers = vec![
        SimPeer::new(Kind::Honest).announcing(None),
        SimPeer::new(Kind::Honest).ready_ms(1),
    ];
    let (sim, out) = fetch_with(len, peers);
    assert_verified(&out, len);
    assert!(!sim.requests[0].is_empty());
}

#[test]
fn late_answer_after_timeout_is_still_used() {
    let info = metadata(100);
    let config = FetchConfig::default();
    let timeout = config.request_timeout;
    let mut fetch = Fetch::new(info_hash_of(&info), config);
    let now = Instant::now();
    fetch.peer_ready(now, 1u32, Some(100));
    while fetch.poll_action().is_some() {}
    fetch.handle_timeout(now + timeout);
    // Snubbed but not yet dropped: asked again, one request.
    assert!(matches!(
        fetch.poll_action(),
        Some(Action::Send { peer: 1, .. })
    ));
    let msg = Message::Data {
        piece: 0,
        total_size: Some(100),
        data: &info,
    };
    fetch.message(now + timeout, 1, &msg);
    assert_eq!(fetch.take_verified(), Some(info));
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Honest),
        1 => Just(Kind::Corrupt),
        1 => Just(Kind::Reject),
        1 => Just(Kind::Silent),
        1 => (0u32..5).prop_map(Kind::GoneAfter),
        1 => Just(Kind::Truncate),
        1 => Just(Kind::WrongTotal),
    ]
}

fn any_peer() -> impl Strategy<Value = SimPeer> {
    (
        any_kind(),
        prop_oneof![
            6 => Just(None),
            1 => Just(Some(None)),
            1 => Just(Some(Some(4 << 30))),
            1 => (1u64..200_000).prop_map(|s| Some(Some(s))),
        ],
        1u64..300,
        0u64..500,
    )
        .prop_map(|(kind, announce, latency, ready)| SimPeer {
            kind,
            announce,
            latency: Duration::from_millis(latency),
            ready_at: Duration::from_millis(ready),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the hostile peers do, one honest peer that announces the
    /// true size is enough, and no honest peer is ever dropped.
    #[test]
    fn honest_peer_always_wins(
        len in 1usize..(6 * PIECE_SIZE as usize),
        honest_latency in 1u64..300,
        honest_ready in 0u64..500,
        hostile in proptest::collection::vec(any_peer(), 0..6),
        honest_at in 0usize..6,
    ) {
        let mut peers = hostile;
        let honest = SimPeer::new(Kind::Honest)
            .latency_ms(honest_latency)
            .ready_ms(honest_ready);
        let at = honest_at.min(peers.len());
        peers.insert(at, honest);
        let mut sim = Sim::new(metadata(len), peers.clone(), FetchConfig::default());
        let out = sim.run(100_000);
        prop_assert!(out == Some(metadata(len)), "no metadata: {:?}", sim.dropped);
        for (id, peer) in peers.iter().enumerate() {
            let announced_truth = peer.announce.is_none_or(|a| a == Some(len as u64));
            if peer.kind == Kind::Honest && announced_truth {
                prop_assert_eq!(sim.dropped_for(id as u32), None);
            }
        }
    }

    /// Hostile swarms alone end (in nothing) without looping.
    #[test]
    fn hostile_swarm_terminates(
        len in 1usize..(4 * PIECE_SIZE as usize),
        peers in proptest::collection::vec(any_peer(), 0..6),
    ) {
        let peers: Vec<_> = peers
            .into_iter()
            .map(|p| match p.kind {
                Kind::Honest | Kind::GoneAfter(_) => SimPeer { kind: Kind::Corrupt, ..p },
                _ => p,
            })
            .collect();
        let mut sim = Sim::new(metadata(len), peers, FetchConfig::default());
        prop_assert!(sim.run(100_000).is_none());
    }

    /// Arbitrary inputs in arbitrary order never panic, never exceed a
    /// peer's pipeline, and never yield bytes that fail the hash.
    #[test]
    fn arbitrary_inputs_keep_invariants(
        ops in proptest::collection::vec(
            (0u8..5, 0u32..4, 0u32..8, proptest::option::of(0u64..100_000), 0usize..20_000, 0u64..20_000),
            0..200,
        ),
    ) {
        let info = metadata(3 * PIECE_SIZE as usize);
        let config = FetchConfig { requests_per_peer: 2, ..FetchConfig::default() };
        let mut fetch = Fetch::new(info_hash_of(&info), config);
        let start = Instant::now();
        let mut now = start;
        let junk = vec![7u8; 20_000];
        for (op, peer, piece, size, len, step) in ops {
            now += Duration::from_millis(step);
            match op {
                0 => fetch.peer_ready(now, peer, size),
                1 => fetch.peer_gone(now, peer),
                2 => fetch.handle_timeout(now),
                3 => {
                    let msg = Message::Data { piece, total_size: size, data: &junk[..len] };
                    fetch.message(now, peer, &msg);
                }
                _ => {
                    fetch.message(now, peer, &Message::Reject { piece });
                }
            }
            while let Some(action) = fetch.poll_action() {
                if let Action::Send { message: Message::Request { piece }, .. } = action {
                    prop_assert!(piece < piece_count(info.len() as u32).max(piece_count(100_000)));
                }
            }
            for p in &fetch.peers {
                prop_assert!(p.asked.len() <= 2);
            }
            if let Some(bytes) = fetch.take_verified() {
                prop_assert!(bytes == info);
            }
        }
    }
}
