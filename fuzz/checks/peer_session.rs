//! The sans-IO peer protocol (`lodestone_download::swarm::session`) driven
//! by a hostile peer.
//!
//! Included with `#[path]` by the cargo-fuzz target `peer_session` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The input is read with `arbitrary` as what we hold at the start (nothing,
//! half, everything), whether the connection is fresh or handed over from
//! the metadata phase, whether the peer has the fast extension, and a script: any wire message with any fields, raw
//! bytes through the real decoder, answers to our requests (true, corrupted
//! or mislabelled blocks, rejects), the torrent's commands (have, choke,
//! unchoke, cancel, close), storage reads completing or failing, hash
//! verdicts, the transport's backlog, and time passing. Every step runs
//! the session's `update` and drains its outputs, as the tokio pump does.
//! Invariants:
//!
//! * nothing panics;
//! * queues stay bounded: requests outstanding, the peer's queued
//!   requests, and the messages one step produces;
//! * every request we send names a block of the torrent, goes out only
//!   while the peer unchokes us and is never outstanding twice;
//! * every block we send was requested by the peer and holds the true bytes;
//! * at most one storage read is outstanding;
//! * after `handle_timeout(now)`, `poll_timeout()` is after `now`;
//! * once closed, the session says nothing more and wants no timeout.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::script;
use lodestone_core::Metainfo;
use lodestone_download::swarm::session::{
    CloseReason, Greeting, MAX_OUTSTANDING, MAX_UPLOADS_QUEUED, PeerCmd, PeerEvent, PeerSession,
    SessionConfig,
};
use lodestone_download::swarm::torrent::{Action, Torrent};
use lodestone_download::{Bitfield, Layout, PeerKey};
use lodestone_wire::{Block, BlockRequest, Decoder, Message, Reserved, encode};

const MAX_OPS: usize = 256;

/// Messages one step may produce: a choke rejecting every queued request,
/// a full pipeline of requests, and a few more.
const MAX_STEP_OUTPUT: usize = MAX_UPLOADS_QUEUED + MAX_OUTSTANDING + 8;

/// 32 KiB pieces, the last one short: 100,000 bytes in 4 pieces.
const PIECE_LEN: u32 = 32 * 1024;
const TOTAL: usize = 100_000;

const KEY: PeerKey = PeerKey(1);

struct Fixture {
    data: Bytes,
    config: SessionConfig,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let data: Vec<u8> = (0..TOTAL).map(|i| (i * 31 + i / 977) as u8).collect();
        let metainfo = Metainfo::create("fuzz", PIECE_LEN, &[(vec!["f".into()], &data)])
            .expect("a valid torrent");
        let layout = Layout::from_info(&metainfo.info).expect("a valid layout");
        Fixture {
            data: Bytes::from(data),
            config: SessionConfig {
                metainfo: Arc::new(metainfo),
                layout: Arc::new(layout),
                reserved: Reserved::LODESTONE,
                listen_port: Some(6881),
                stall_timeout: Duration::from_secs(10),
                pex: true,
                holepunch: true,
            },
        }
    })
}

/// A request's fields, small enough to often land inside the torrent.
#[derive(Debug, Arbitrary)]
struct Req {
    index: u8,
    begin: u32,
    length: u32,
}

impl Req {
    fn get(&self) -> BlockRequest {
        BlockRequest {
            index: u32::from(self.index % 6),
            begin: self.begin % (PIECE_LEN + 2),
            length: self.length % (20 * 1024),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Wire {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u8),
    Bitfield(Vec<u8>),
    Request(Req),
    Cancel(Req),
    Reject(Req),
    Piece(Req),
    Port(u16),
    Suggest(u32),
    HaveAll,
    HaveNone,
    AllowedFast(u32),
    Extended(u8, Vec<u8>),
    /// ut_metadata request for a piece, under our id.
    MetadataRequest(u8),
    Unknown(u8, u8),
}

impl Wire {
    fn message(&self) -> Message {
        match self {
            Wire::KeepAlive => Message::KeepAlive,
            Wire::Choke => Message::Choke,
            Wire::Unchoke => Message::Unchoke,
            Wire::Interested => Message::Interested,
            Wire::NotInterested => Message::NotInterested,
            Wire::Have(i) => Message::Have(u32::from(*i % 6)),
            Wire::Bitfield(b) => Message::Bitfield(Bytes::copy_from_slice(b)),
            Wire::Request(r) => Message::Request(r.get()),
            Wire::Cancel(r) => Message::Cancel(r.get()),
            Wire::Reject(r) => Message::Reject(r.get()),
            Wire::Piece(r) => {
                let r = r.get();
                Message::Piece(Block {
                    index: r.index,
                    begin: r.begin,
                    data: Bytes::from(vec![7; r.length as usize]),
                })
            }
            Wire::Port(p) => Message::Port(*p),
            Wire::Suggest(i) => Message::Suggest(*i),
            Wire::HaveAll => Message::HaveAll,
            Wire::HaveNone => Message::HaveNone,
            Wire::AllowedFast(i) => Message::AllowedFast(*i),
            Wire::Extended(id, payload) => Message::Extended {
                id: *id,
                payload: Bytes::copy_from_slice(payload),
            },
            Wire::MetadataRequest(piece) => Message::Extended {
                id: lodestone_wire::OUR_UT_METADATA_ID,
                payload: Bytes::from(format!("d8:msg_typei0e5:piecei{piece}ee").into_bytes()),
            },
            Wire::Unknown(id, len) => Message::Unknown {
                id: 21 + *id % 200,
                len: u32::from(*len),
            },
        }
    }
}

/// How the peer answers one of our outstanding requests.
#[derive(Debug, Arbitrary)]
enum Answer {
    True,
    /// One byte flipped.
    Corrupt(u16),
    /// Rejected (needs the fast extension, else it is a protocol error).
    Reject,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Message(Wire),
    /// Raw bytes through the wire decoder (bounded by the piece count).
    Raw(Vec<u8>),
    /// Answers our `n`-th outstanding request.
    Answer(u8, Answer),
    Command(Cmd),
    /// The outstanding storage read completes (`true`) or fails.
    ReadDone(bool),
    /// The transport reports this backlog.
    Sent(u32),
    /// The oldest piece waiting for its hash gets its verdict.
    Verdict,
    Wait(u16),
    WaitLong(u8),
}

#[derive(Debug, Arbitrary)]
enum Cmd {
    Have(u8),
    Choke(bool),
    Cancel(u8),
    Wake,
    Close,
}

struct Harness {
    session: PeerSession,
    torrent: Torrent,
    now: Instant,
    /// The peer chokes us (as far as what it sent says).
    choked: bool,
    /// Our requests not yet answered, oldest first.
    outstanding: VecDeque<BlockRequest>,
    /// Every request the peer made of us.
    asked: BTreeSet<BlockRequest>,
    read: Option<Vec<lodestone_download::swarm::session::ReadRequest>>,
    verify: VecDeque<(lodestone_download::PieceIndex, Vec<u8>)>,
    closed: bool,
    /// The peer's handshake has the fast extension bit.
    fast: bool,
    /// A `port` message was reported.
    dht_port_seen: bool,
    /// A listen port was reported already.
    listen_seen: bool,
}

/// Checks every invariant on the scenario read from `data`; panics on a
/// violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(start) = u8::arbitrary(&mut u) else {
        return;
    };
    let Ok(fast) = bool::arbitrary(&mut u) else {
        return;
    };
    let mut h = Harness::new(start, fast);
    for op in script::ops::<Op>(&mut u, MAX_OPS) {
        h.apply(op);
    }
}

impl Harness {
    fn new(start: u8, fast: bool) -> Self {
        let f = fixture();
        let layout = &f.config.layout;
        let n = layout.piece_count();
        let mut have = Bitfield::new(n);
        for p in 0..n {
            if start % 3 == 2 || (start % 3 == 1 && p % 2 == 0) {
                have.set(p);
            }
        }
        let now = Instant::now();
        let mut torrent = Torrent::new(
            layout.clone(),
            Bitfield::full(n),
            have.clone(),
            have,
            u64::from(start),
            4,
            now,
        );
        let mut theirs = Reserved::LODESTONE;
        theirs.set_fast(fast);
        let addr = SocketAddr::from(([10, 0, 0, 1], 6881));
        // The greeting depends on what the metadata phase already sent.
        let greeting = if start & 4 == 0 {
            Greeting::Fresh
        } else {
            Greeting::HandedOver
        };
        let session = PeerSession::new(
            now,
            f.config.clone(),
            KEY,
            (theirs, addr),
            greeting,
            &mut torrent,
        );
        let mut h = Harness {
            session,
            torrent,
            now,
            choked: true,
            outstanding: VecDeque::new(),
            asked: BTreeSet::new(),
            read: None,
            verify: VecDeque::new(),
            closed: false,
            dht_port_seen: false,
            listen_seen: false,
            fast,
        };
        h.drain();
        h
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Message(w) => self.message(w.message()),
            Op::Raw(bytes) => {
                let decoder = Decoder::new().with_piece_count(self.layout().piece_count());
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(m)) = decoder.decode(&mut buf) {
                    self.message(m);
                }
            }
            Op::Answer(n, how) => {
                if self.outstanding.is_empty() {
                    return;
                }
                let i = usize::from(n) % self.outstanding.len();
                let Some(r) = self.outstanding.remove(i) else {
                    return;
                };
                let m = match how {
                    Answer::Reject => Message::Reject(r),
                    Answer::True | Answer::Corrupt(_) => {
                        let mut data = self.truth(r).to_vec();
                        if let Answer::Corrupt(at) = how {
                            let at = usize::from(at) % data.len();
                            data[at] ^= 1;
                        }
                        Message::Piece(Block {
                            index: r.index,
                            begin: r.begin,
                            data: Bytes::from(data),
                        })
                    }
                };
                self.message(m);
            }
            Op::Command(c) => {
                let cmd = match c {
                    Cmd::Have(p) => match self.layout().piece(u32::from(p) % 4) {
                        Some(p) => PeerCmd::Have(p),
                        None => return,
                    },
                    Cmd::Choke(choke) => PeerCmd::Choke(choke),
                    Cmd::Cancel(n) => {
                        let Some(r) = self.outstanding.get(usize::from(n)).copied() else {
                            return;
                        };
                        let layout = self.layout();
                        match layout.block_at(r.index, r.begin, r.length) {
                            Some(b) => PeerCmd::Cancel(b),
                            None => return,
                        }
                    }
                    Cmd::Wake => PeerCmd::Wake,
                    Cmd::Close => PeerCmd::Close(CloseReason::Done),
                };
                self.session.handle_command(now, cmd);
            }
            Op::ReadDone(ok) => {
                let Some(batch) = self.read.take() else {
                    return;
                };
                let result = if ok {
                    let f = fixture();
                    Ok(batch
                        .iter()
                        .map(|r| {
                            let at = r.offset as usize;
                            let len = r.request.length as usize;
                            (r.request, f.data.slice(at..at + len))
                        })
                        .collect())
                } else {
                    Err(lodestone_download::StorageError::NotStored { offset: 0 })
                };
                self.session.handle_read(now, result);
            }
            Op::Sent(unsent) => self.session.handle_sent(now, unsent as usize),
            Op::Verdict => {
                let Some((piece, data)) = self.verify.pop_front() else {
                    return;
                };
                let at = piece.get() as usize * PIECE_LEN as usize;
                if data[..] == fixture().data[at..at + data.len()] {
                    self.torrent.piece_verified(piece, data, true);
                } else if self.torrent.piece_failed(piece, data).contains(&KEY) {
                    self.session
                        .handle_command(now, PeerCmd::Close(CloseReason::Banned));
                }
            }
            Op::Wait(ms) => self.wait(Duration::from_millis(u64::from(ms))),
            Op::WaitLong(s) => self.wait(Duration::from_secs(u64::from(s))),
        }
        self.session.update(self.now, &mut self.torrent);
        self.drain();
    }

    fn layout(&self) -> Arc<Layout> {
        fixture().config.layout.clone()
    }

    fn truth(&self, r: BlockRequest) -> Bytes {
        let at = r.index as usize * PIECE_LEN as usize + r.begin as usize;
        fixture().data.slice(at..at + r.length as usize)
    }

    fn message(&mut self, m: Message) {
        match &m {
            Message::Choke => {
                self.choked = true;
                // Without the fast extension a choke voids our requests.
                if !self.fast {
                    self.outstanding.clear();
                }
            }
            Message::Unchoke => self.choked = false,
            Message::Request(r) => {
                self.asked.insert(*r);
            }
            Message::Reject(r) => self.outstanding.retain(|x| x != r),
            Message::Piece(b) => {
                if let Some(r) = b.request() {
                    self.outstanding.retain(|&x| x != r);
                }
            }
            _ => {}
        }
        self.session.handle_message(self.now, m);
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
        if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
            self.session.handle_timeout(self.now);
            if let Some(t) = self.session.poll_timeout() {
                assert!(t > self.now, "timeout {t:?} not after now {:?}", self.now);
            }
        }
    }

    /// Drains every output, checking it, as a host would.
    fn drain(&mut self) {
        let mut produced = 0;
        while let Some(m) = self.session.poll_transmit() {
            assert!(!self.closed, "a closed session sent {m:?}");
            produced += 1;
            self.sent(m);
        }
        assert!(
            produced <= MAX_STEP_OUTPUT,
            "{produced} messages in one step"
        );
        while let Some(e) = self.session.poll_event() {
            assert!(!self.closed, "a closed session produced {e:?}");
            match e {
                PeerEvent::Read(batch) => {
                    assert!(
                        self.read.is_none(),
                        "a second read while one is outstanding"
                    );
                    assert!(!batch.is_empty(), "an empty read");
                    self.read = Some(batch);
                }
                // Within the inbox's cap: the session bounds what it passes on.
                PeerEvent::Pex(peers) => assert!(peers.len() <= lodestone_wire::pex::MAX_PEX_ADDED),
                // Reported once per connection.
                PeerEvent::DhtPort(_) => {
                    assert!(!self.dht_port_seen, "a second port reported");
                    self.dht_port_seen = true;
                }
                // Reported once per connection, on the peer's own IP.
                PeerEvent::Listening(listen) => {
                    assert!(!self.listen_seen, "a second listen port reported");
                    assert_eq!(listen.ip(), self.session.addr().ip());
                    self.listen_seen = true;
                }
                // One peer and no relay here: a connect asks us to dial,
                // within the session's meter (checked in the download
                // crate's tests).
                PeerEvent::HolepunchConnect(_) => {}
                PeerEvent::Closed(_) => {
                    self.closed = true;
                    self.torrent.peer_gone(KEY);
                }
            }
        }
        while let Some(a) = self.torrent.poll_action() {
            match a {
                Action::Verify { piece, data } => self.verify.push_back((piece, data)),
                Action::Have(p) => self.session.handle_command(self.now, PeerCmd::Have(p)),
                Action::Cancel { peer, .. } => assert_ne!(peer, KEY, "cancel sent to the sender"),
                Action::Wake => {}
                // The only peer cannot be the target of its own rendezvous.
                Action::Holepunch { peer, .. } => assert_ne!(peer, KEY, "relayed to the sender"),
            }
        }
        if self.closed {
            assert!(self.session.poll_timeout().is_none());
        }
        assert!(self.session.outstanding() <= MAX_OUTSTANDING);
        assert!(self.session.uploads_queued() <= MAX_UPLOADS_QUEUED);
        assert!(self.outstanding.len() <= MAX_OUTSTANDING);
    }

    fn sent(&mut self, m: Message) {
        // Every message must encode (the pump writes it as is).
        let mut out = BytesMut::new();
        encode(&m, &mut out);
        match m {
            Message::Request(r) => {
                assert!(!self.choked, "request {r:?} while choked");
                assert!(
                    self.layout().block_at(r.index, r.begin, r.length).is_some(),
                    "request {r:?} outside the torrent"
                );
                assert!(!self.outstanding.contains(&r), "request {r:?} twice");
                self.outstanding.push_back(r);
            }
            Message::Cancel(r) => self.outstanding.retain(|&x| x != r),
            Message::Piece(b) => {
                let r = b.request().expect("a block is shorter than 4 GiB");
                assert!(self.asked.contains(&r), "block {r:?} nobody asked for");
                assert_eq!(b.data, self.truth(r), "wrong bytes for {r:?}");
            }
            _ => {}
        }
    }
}
