//! The sans-IO ut_metadata fetch (`lodestone_metadata::Fetch`) against
//! hostile peers.
//!
//! Included with `#[path]` by the cargo-fuzz target `metadata_fetch` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The input is read with `arbitrary` as the size of the real metadata and a
//! script of peer behaviour: peers announce true, missing, zero, huge or
//! wrong sizes, answer the fetch's requests honestly or with corrupted,
//! short, mislabelled or rejected pieces, send pieces nobody asked for or
//! raw bytes, and leave; time passes. Invariants:
//!
//! * nothing panics;
//! * the fetch only ever sends requests, and never to a peer it dropped
//!   (until that peer announces itself again);
//! * after `handle_timeout(now)`, `poll_timeout()` is after `now` or none;
//! * whatever it hands out as verified hashes to the infohash;
//! * liveness: once the script ends, one fresh honest peer is enough to
//!   finish, within a bounded number of steps and of virtual time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::script;
use lodestone_core::InfoHash;
use lodestone_metadata::message::{Message, PIECE_SIZE, piece_len};
use lodestone_metadata::{Action, Fetch, FetchConfig};
use sha1::{Digest, Sha1};

const MAX_OPS: usize = 96;
/// The honest peer that arrives at the end.
const HONEST: u8 = 200;

/// Checks every invariant on the scenario read from `data`; panics on a
/// violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(size) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut h = Harness::new(size);
    for op in script::ops::<Op>(&mut u, MAX_OPS) {
        h.apply(op);
    }
    h.finish_with_honest_peer();
}

/// The `metadata_size` a peer announces.
#[derive(Debug, Arbitrary)]
enum Claim {
    Real,
    Absent,
    Zero,
    Huge(u64),
    Other(u16),
}

/// How a peer answers a request.
#[derive(Debug, Arbitrary)]
enum How {
    Honest,
    /// Flips a byte of the piece.
    Corrupt(u16),
    /// Cuts the piece short.
    Short(u16),
    /// Claims another total size.
    WrongTotal(u32),
    /// Sends another piece than the one asked.
    OtherPiece(u8),
    Reject,
    /// Ignores it.
    Silence,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Ready {
        peer: u8,
        claim: Claim,
    },
    Gone {
        peer: u8,
    },
    /// Answers one of the requests not answered yet.
    Answer {
        request: u8,
        how: How,
    },
    /// A data message nobody asked for.
    Unsolicited {
        peer: u8,
        piece: u8,
        how: How,
    },
    /// Raw bytes as a ut_metadata payload.
    Raw {
        peer: u8,
        bytes: Vec<u8>,
    },
    Wait {
        millis: u16,
    },
}

struct Harness {
    fetch: Fetch<u8>,
    metadata: Vec<u8>,
    info_hash: InfoHash,
    start: Instant,
    now: Instant,
    /// Requests sent and not answered by the script yet: (peer, piece).
    open: Vec<(u8, u32)>,
    /// Peers the fetch dropped and that have not announced themselves since.
    dropped: HashSet<u8>,
    verified: bool,
}

impl Harness {
    fn new(size: u8) -> Self {
        // Sizes around the 16 KiB piece boundaries matter most.
        let len = match size % 6 {
            0 => 1,
            1 => 700,
            2 => PIECE_SIZE as usize,
            3 => PIECE_SIZE as usize + 1,
            4 => 2 * PIECE_SIZE as usize + 333,
            _ => 5 * PIECE_SIZE as usize,
        };
        let metadata: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let info_hash = InfoHash::new(Sha1::digest(&metadata).into());
        let start = Instant::now();
        Self {
            fetch: Fetch::new(info_hash, FetchConfig::default()),
            metadata,
            info_hash,
            start,
            now: start,
            open: Vec::new(),
            dropped: HashSet::new(),
            verified: false,
        }
    }

    fn size(&self) -> u32 {
        // Invariant: at most 5 pieces, far below u32::MAX.
        self.metadata.len() as u32
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        // Eight hostile peers, never the honest one.
        let who = |peer: u8| peer % 8;
        match op {
            Op::Ready { peer, claim } => {
                let peer = who(peer);
                let size = match claim {
                    Claim::Real => Some(u64::from(self.size())),
                    Claim::Absent => None,
                    Claim::Zero => Some(0),
                    Claim::Huge(n) => Some(n | 1 << 40),
                    Claim::Other(n) => Some(u64::from(n) + 1),
                };
                self.dropped.remove(&peer);
                self.fetch.peer_ready(now, peer, size);
            }
            Op::Gone { peer } => {
                let peer = who(peer);
                self.open.retain(|&(p, _)| p != peer);
                self.fetch.peer_gone(now, peer);
            }
            Op::Answer { request, how } => {
                if !self.open.is_empty() {
                    let (peer, piece) = self.open.remove(usize::from(request) % self.open.len());
                    self.respond(peer, piece, how);
                }
            }
            Op::Unsolicited { peer, piece, how } => {
                self.respond(who(peer), u32::from(piece % 8), how)
            }
            Op::Raw { peer, bytes } => {
                if let Ok(message) = Message::decode(&bytes) {
                    self.fetch.message(now, who(peer), &message);
                }
            }
            Op::Wait { millis } => self.advance(Duration::from_millis(u64::from(millis) * 4)),
        }
        self.observe();
    }

    fn respond(&mut self, peer: u8, piece: u32, how: How) {
        let size = self.size();
        let total = Some(u64::from(size));
        let piece_bytes = |piece: u32| -> Vec<u8> {
            let Some(len) = piece_len(size, piece) else {
                return b"no such piece".to_vec();
            };
            let start = (piece * PIECE_SIZE) as usize;
            self.metadata[start..start + len as usize].to_vec()
        };
        let (piece, total, bytes) = match how {
            How::Honest => (piece, total, piece_bytes(piece)),
            How::Corrupt(at) => {
                let mut bytes = piece_bytes(piece);
                let len = bytes.len();
                bytes[usize::from(at) % len] ^= 0x20;
                (piece, total, bytes)
            }
            How::Short(by) => {
                let mut bytes = piece_bytes(piece);
                let len = bytes.len();
                bytes.truncate(len.saturating_sub(usize::from(by).max(1)));
                (piece, total, bytes)
            }
            How::WrongTotal(other) => (piece, Some(u64::from(other)), piece_bytes(piece)),
            How::OtherPiece(other) => {
                let other = u32::from(other % 8);
                (other, total, piece_bytes(other))
            }
            How::Reject => {
                self.fetch
                    .message(self.now, peer, &Message::Reject { piece });
                return;
            }
            How::Silence => return,
        };
        let message = Message::Data {
            piece,
            total_size: total,
            data: &bytes,
        };
        self.fetch.message(self.now, peer, &message);
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..10_000 {
            match self.fetch.poll_timeout() {
                Some(deadline) if deadline <= end => {
                    self.now = self.now.max(deadline);
                    self.timeout();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("more than 10000 deadlines in {by:?}: a timer livelock");
    }

    fn timeout(&mut self) {
        self.fetch.handle_timeout(self.now);
        if let Some(next) = self.fetch.poll_timeout() {
            assert!(
                next > self.now,
                "poll_timeout not after now right after handle_timeout"
            );
        }
        self.observe();
    }

    fn observe(&mut self) {
        while let Some(action) = self.fetch.poll_action() {
            match action {
                Action::Send { peer, message } => {
                    assert!(
                        !self.dropped.contains(&peer),
                        "request sent to dropped peer {peer}"
                    );
                    let Message::Request { piece } = message else {
                        panic!("the fetch sent {message:?}");
                    };
                    self.open.push((peer, piece));
                }
                Action::Drop { peer, .. } => {
                    self.dropped.insert(peer);
                    self.open.retain(|&(p, _)| p != peer);
                }
            }
        }
        if let Some(bytes) = self.fetch.take_verified() {
            assert!(!self.verified, "verified metadata handed out twice");
            let digest: [u8; 20] = Sha1::digest(&bytes).into();
            assert_eq!(&digest, self.info_hash.as_bytes(), "unverified metadata");
            assert_eq!(bytes, self.metadata);
            assert!(self.fetch.is_finished());
            self.verified = true;
        }
    }

    /// Every other peer leaves; a fresh honest one must be enough.
    fn finish_with_honest_peer(&mut self) {
        if self.verified {
            return;
        }
        for peer in 0..8 {
            // Drained after each input, as a driver does: a departure can
            // hand requests to a peer that leaves next.
            self.fetch.peer_gone(self.now, peer);
            self.observe();
        }
        self.open.clear();
        let size = u64::from(self.size());
        self.fetch.peer_ready(self.now, HONEST, Some(size));
        self.observe();
        let started = self.now;
        for _ in 0..1000 {
            if self.verified {
                let took = self.now - started;
                assert!(
                    took < Duration::from_secs(60),
                    "an honest peer took {took:?}"
                );
                return;
            }
            assert!(
                !self.dropped.contains(&HONEST),
                "the honest peer was dropped"
            );
            if self.open.is_empty() {
                // Nothing asked: let deadlines pass (late answers, retries).
                match self.fetch.poll_timeout() {
                    Some(t) => {
                        self.now = self.now.max(t);
                        self.timeout();
                    }
                    None => panic!(
                        "stalled with an honest peer ready: {:?} after {:?}",
                        self.fetch.stats(),
                        self.now - self.start
                    ),
                }
                continue;
            }
            let (peer, piece) = self.open.remove(0);
            assert_eq!(peer, HONEST);
            self.respond(peer, piece, How::Honest);
            self.observe();
        }
        panic!("no verified metadata after 1000 honest answers");
    }
}
