//! One peer connection's protocol, as a sans-IO state machine.
//!
//! A [`PeerSession`] never reads a clock, a socket or a disk. Its host feeds
//! it inputs and carries out its outputs, with the same call shape as
//! `lodestone_dht::Node`:
//!
//! - inputs: [`PeerSession::handle_message`] (a decoded message from the
//!   peer), [`PeerSession::handle_command`] (a decision of the torrent:
//!   `have`, choke/unchoke, cancel, close), [`PeerSession::handle_read`]
//!   (blocks read from storage), [`PeerSession::handle_sent`] (the
//!   transport's backlog) and [`PeerSession::handle_timeout`];
//! - [`PeerSession::update`] applies what arrived to the shared
//!   [`Torrent`] (blocks, `have`s, rejects) and tops up the requests;
//! - outputs: [`PeerSession::poll_transmit`] (messages to send),
//!   [`PeerSession::poll_event`] (blocks to read and serve, or the end of
//!   the connection with its reason) and [`PeerSession::poll_timeout`] (when
//!   to call `handle_timeout`; `None` once closed).
//!
//! Why `update` is separate: the torrent is shared by every connection, so
//! the tokio host keeps it behind one mutex. Handling a message needs only
//! the session; everything that needs the torrent is queued in arrival
//! order and applied by one `update` per batch of messages, so the lock is
//! taken once per batch, not once per block. A host must call `update`
//! after `handle_message`, `handle_command` and `handle_read` before it
//! drains the outputs; several inputs may share one `update`.
//!
//! The policies are the pure helpers next to it: the picker and endgame
//! ([`crate::picker`]), the request pipeline (`pipeline`), the
//! upload queue (`uploads`), the abuse meters (`abuse`).
//! Choking and hash-failure blame are torrent-wide: their decisions arrive
//! as commands.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_core::{Metainfo, may_name};
use lodestone_metadata::RequestBudget;
use lodestone_wire::extension::{UT_HOLEPUNCH, UT_METADATA, UT_PEX};
use lodestone_wire::holepunch::{HolepunchKind, HolepunchMessage, HolepunchMeter};
use lodestone_wire::pex::{PexInbox, PexOutbox, PexPeer};
use lodestone_wire::{
    Block, BlockRequest, ConnectionError, ExtendedHandshake, Message, OUR_UT_HOLEPUNCH_ID,
    OUR_UT_METADATA_ID, OUR_UT_PEX_ID, Reserved, encoded_len, our_extensions,
};

use super::abuse::AbuseMeter;
use super::pipeline::{ENDGAME_DEPTH, MAX_DEPTH, Pipeline};
use super::torrent::{Action, Torrent};
use super::uploads::{Admission, MAX_QUEUED, Uploads};
use crate::bitfield::{Bitfield, BitfieldError};
use crate::layout::{BlockIndex, Layout, PieceIndex};
use crate::picker::{BlockOutcome, PeerKey};
use crate::rate::RateEstimator;
use crate::storage::StorageError;

pub use super::uploads::ReadRequest;

/// Most requests we keep outstanding at one peer.
pub const MAX_OUTSTANDING: usize = MAX_DEPTH;

/// Most requests of the peer's we keep queued (what we advertise as `reqq`).
pub const MAX_UPLOADS_QUEUED: usize = MAX_QUEUED;

/// Repeated bitfields accepted from one peer before it counts as abuse.
const MAX_REANNOUNCE: u8 = 4;

/// Blocks received that we had not (or no longer) requested, tolerated
/// per second: late blocks after a cancel or a choke are normal.
const MAX_UNSOLICITED: u32 = 1024;

/// Requests we refuse (choked, a piece we never offered, past the `reqq` we
/// advertised), tolerated per second: requests crossing our choke on the
/// wire are normal, a stream of them is not.
const MAX_REFUSED_REQUESTS: u32 = 1024;

/// Bytes queued to the transport above which we stop reading upload data
/// from storage.
pub(crate) const UPLOAD_BUFFER: usize = 1 << 20;

/// A connection on which nothing arrives for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// A connection on which neither side has wanted anything of the other for
/// this long is closed while the torrent is short of connection slots
/// ([`Torrent::is_crowded`]), as libtorrent does near its limits:
/// keep-alives alone must not hold a slot a useful peer could have.
const NO_INTEREST_TIMEOUT: Duration = Duration::from_secs(600);

/// We send a keep-alive after this long without sending anything.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Period of the housekeeping tick: stall and idle checks, keep-alives,
/// abuse-meter decay, rate snapshots.
const TICK: Duration = Duration::from_secs(1);

/// What the torrent tells a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCmd {
    /// We verified this piece and can serve it: announce it.
    Have(PieceIndex),
    /// The block arrived from elsewhere (endgame): cancel our request.
    Cancel(BlockIndex),
    /// Choke (`true`) or unchoke the peer: the choker's decision.
    Choke(bool),
    /// Blocks became requestable (a peer left, a piece failed): the host
    /// runs [`PeerSession::update`], which tops up.
    Wake,
    /// Disconnect.
    Close(CloseReason),
    /// Send this ut_holepunch message (BEP 55), if the peer speaks it: a
    /// rendezvous we ask of it, or a relay's `connect` for it. Boxed: it is
    /// rare, and its 40 bytes inline made every command about three times
    /// as large, each slot of every peer's command channel with it.
    Holepunch(Box<HolepunchMessage>),
}

// Each peer's command channel allocates its slots 32 at a time: a larger
// command costs every connection that much more memory.
const _: () = assert!(std::mem::size_of::<PeerCmd>() <= 16);

/// Why we hang up on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its data failed the hash check.
    Banned,
    /// We have everything and so does it, or the session ends.
    Done,
    /// The session's cap on connections keeps another torrent from
    /// connecting at all, and this was the connection we would miss least.
    Turnover,
    /// The peer connected again, and the new connection is the one kept:
    /// the one dialed by the side with the greater peer id, as libtorrent
    /// decides too, so that both sides close the same connection.
    Duplicate,
}

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Connecting, the socket, or the peer's framing failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The peer broke the protocol.
    #[error("peer misbehaved: {0}")]
    Misbehaved(&'static str),
    /// The peer's bitfield does not fit the torrent.
    #[error(transparent)]
    Bitfield(#[from] BitfieldError),
    /// Requests outstanding, no block for the stall timeout.
    #[error("peer stalled")]
    Stalled,
    /// Nothing at all arrived for a long time.
    #[error("peer idle")]
    Idle,
    /// Neither side wanted anything of the other for a long time.
    #[error("no interest either way")]
    NoInterest,
    /// We connected to ourselves (through some address of ours).
    #[error("connected to ourselves")]
    Ourselves,
    /// The peer is connected already, through another connection that is
    /// kept: no fault of its own (both sides dialed at once, or it has
    /// two addresses).
    #[error("duplicate connection")]
    Duplicate,
    /// We hung up.
    #[error("closed by us: {0:?}")]
    Closed(CloseReason),
    /// Reading a block to upload failed (local failure).
    #[error("reading a block to upload")]
    Storage(#[from] StorageError),
}

impl PeerError {
    /// Whether the connection ended because the peer is connected through
    /// another one, which is kept.
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            PeerError::Duplicate | PeerError::Closed(CloseReason::Duplicate)
        )
    }

    /// Whether the peer should not be dialled again this session.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            PeerError::Misbehaved(_)
                | PeerError::Bitfield(_)
                | PeerError::Ourselves
                | PeerError::Closed(CloseReason::Banned)
                | PeerError::Connection(ConnectionError::Protocol(_))
        )
    }
}

/// What a session asks of its host besides sending messages.
#[derive(Debug)]
pub enum PeerEvent {
    /// Read these blocks from storage and hand them to
    /// [`PeerSession::handle_read`]. At most one read is outstanding.
    Read(Vec<ReadRequest>),
    /// The peer told us of these peers by ut_pex (BEP 11), within the
    /// caps of [`PexInbox`]: hand them to whoever keeps the addresses.
    Pex(Vec<PexPeer>),
    /// The peer's `port` message (BEP 5): its DHT node listens on this UDP
    /// port of its IP. Only the first is reported, so a peer repeating the
    /// message cannot make the DHT ping many ports of its IP.
    DhtPort(u16),
    /// The peer dialed us and listens at this address (its extension
    /// handshake's `p`, BEP 10), not at the port it came from: tell whoever
    /// keeps addresses. Reported once, and never for a peer we dialed.
    Listening(SocketAddr),
    /// The peer, as a holepunch relay (BEP 55), asks us to dial this
    /// address over uTP now; within the [`HolepunchMeter`]'s bound. Whether
    /// the address is plausible is the dialer's call.
    HolepunchConnect(std::net::SocketAddr),
    /// The connection is over: close it. Nothing else comes out afterwards.
    Closed(PeerError),
}

/// What every session of one torrent knows and nobody changes.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The torrent, whose info dict we serve over ut_metadata.
    pub metainfo: Arc<Metainfo>,
    /// Its pieces and blocks.
    pub layout: Arc<Layout>,
    /// The reserved bits of our handshake.
    pub reserved: Reserved,
    /// Our listen port, advertised in the extension handshake.
    pub listen_port: Option<u16>,
    /// A peer with requests outstanding that sends no block for this long
    /// is dropped and its requests go to others.
    pub stall_timeout: Duration,
    /// Whether to exchange peers (BEP 11): never for a private torrent.
    pub pex: bool,
    /// Whether to holepunch (BEP 55): relay rendezvous, act on `connect`,
    /// ask for rendezvous. Only with `pex`, and where incoming uTP is
    /// accepted.
    pub holepunch: bool,
}

/// How a session opens the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// A fresh connection: our bitfield (or its fast-extension shorthand)
    /// as the first message, then our extension handshake.
    Fresh,
    /// A connection handed over from the metadata phase, which already sent
    /// the first message: a `bitfield` now would break BEP 3, so what we hold
    /// goes out as `have`s, and the extension handshake is sent again
    /// (BEP 10 allows updates), now with the metadata size.
    HandedOver,
}

/// Work for the torrent, queued by `handle_*` in arrival order and applied
/// by [`PeerSession::update`].
#[derive(Debug)]
enum Op {
    Bitfield(Bitfield),
    HaveAll,
    Have(PieceIndex),
    /// The peer choked us without the fast extension: our requests are void.
    Choked,
    Rejected(BlockIndex),
    Block(BlockIndex, Bytes),
    /// A block never asked of the peer was dropped: its length.
    Dropped(u64),
    /// The peer told us where it listens: others may hear of it by PEX.
    Listening(SocketAddr),
    /// The peer's extension handshake offered ut_holepunch, or not.
    Holepunch(bool),
    /// The peer asks us to relay a rendezvous with the peer at the address.
    Rendezvous(SocketAddr),
}

/// The protocol state of one connection. See the module docs.
#[derive(Debug)]
pub struct PeerSession {
    config: SessionConfig,
    key: PeerKey,
    fast: bool,
    pipeline: Pipeline,
    uploads: Uploads,
    /// What the peer has, as it told us.
    theirs: Bitfield,
    /// It sent a bitfield, have all/none or a have: a later bitfield only adds pieces.
    announced: bool,
    /// Bitfields (or have-all) received after the first.
    reannounced: u8,
    /// A `port` message was reported already.
    dht_port_seen: bool,
    /// What we can serve (mirrors the torrent's, updated by `Have`).
    servable: Bitfield,
    am_interested: bool,
    choking_us: bool,
    choking_them: bool,
    peer_interested: bool,
    their_metadata_id: Option<u8>,
    metadata_budget: RequestBudget,
    /// The id the peer receives ut_pex under, once it offered it.
    their_pex_id: Option<u8>,
    pex_inbox: PexInbox,
    /// What we told the peer by ut_pex; `None` until it offers ut_pex.
    pex_outbox: Option<PexOutbox>,
    /// The id the peer receives ut_holepunch under, once it offered it.
    their_holepunch_id: Option<u8>,
    /// How often the peer may make us relay or dial.
    holepunch_meter: HolepunchMeter,
    /// Where the peer listens: where we dialed it, or its address with its
    /// extension handshake's `p`. The one address of it we pass on by PEX.
    listen_addr: Option<SocketAddr>,
    /// The peer's address.
    addr: SocketAddr,
    unsolicited: AbuseMeter,
    refused_requests: AbuseMeter,
    up_rate: RateEstimator,
    /// Download and upload rates at the last tick.
    rates: (f64, f64),
    last_message: Instant,
    last_sent: Instant,
    /// Since when neither side has been interested, if so now.
    no_interest_since: Option<Instant>,
    next_tick: Instant,
    /// No new requests before this (download limit).
    request_hold: Option<Instant>,
    /// No new storage reads before this (upload limit).
    upload_hold: Option<Instant>,
    ops: Vec<Op>,
    /// Piece bytes sent since the last update.
    uploaded: u64,
    /// A requested or accepted block arrived, or we queued one to send: the
    /// connection was of use, so its end is no reason to wait long before
    /// dialing it again.
    exchanged: bool,
    /// Bytes handed to the transport and not yet written, as last reported
    /// plus what was queued since.
    unsent: usize,
    reading: bool,
    closed: bool,
    transmit: VecDeque<Message>,
    events: VecDeque<PeerEvent>,
}

impl PeerSession {
    /// A session on a handshaken connection with the peer `key` at `addr`,
    /// whose handshake carried `theirs`. Registers the peer with the
    /// torrent's picker (the host calls [`Torrent::peer_gone`] when the
    /// session ends) and queues our [`Greeting`].
    pub fn new(
        now: Instant,
        config: SessionConfig,
        key: PeerKey,
        (theirs, addr): (Reserved, SocketAddr),
        greeting: Greeting,
        torrent: &mut Torrent,
    ) -> Self {
        torrent.peer_connected(key);
        torrent.relay.connected(key, addr);
        let pieces = config.layout.piece_count();
        let mut session = Self {
            fast: config.reserved.supports_fast() && theirs.supports_fast(),
            key,
            pipeline: Pipeline::new(now),
            uploads: Uploads::default(),
            theirs: Bitfield::new(pieces),
            announced: false,
            reannounced: 0,
            dht_port_seen: false,
            servable: torrent.servable.clone(),
            am_interested: false,
            choking_us: true,
            choking_them: true,
            peer_interested: false,
            their_metadata_id: None,
            metadata_budget: RequestBudget::default(),
            their_pex_id: None,
            pex_inbox: PexInbox::default(),
            pex_outbox: None,
            their_holepunch_id: None,
            holepunch_meter: HolepunchMeter::default(),
            listen_addr: None,
            addr,
            unsolicited: AbuseMeter::new(MAX_UNSOLICITED),
            refused_requests: AbuseMeter::new(MAX_REFUSED_REQUESTS),
            up_rate: RateEstimator::standard(now),
            rates: (0.0, 0.0),
            last_message: now,
            last_sent: now,
            no_interest_since: None,
            next_tick: now + TICK,
            request_hold: None,
            upload_hold: None,
            ops: Vec::new(),
            uploaded: 0,
            exchanged: false,
            unsent: 0,
            reading: false,
            closed: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            config,
        };
        session.greet(now, theirs, addr, greeting);
        session
    }

    /// What we hold, and our extension handshake.
    fn greet(&mut self, now: Instant, theirs: Reserved, addr: SocketAddr, greeting: Greeting) {
        let have = &self.servable;
        let announce = match greeting {
            Greeting::HandedOver => have.iter_ones().map(Message::Have).collect(),
            Greeting::Fresh if self.fast && have.is_full() => vec![Message::HaveAll],
            Greeting::Fresh if self.fast && have.count_ones() == 0 => vec![Message::HaveNone],
            Greeting::Fresh if have.count_ones() > 0 => {
                vec![Message::Bitfield(Bytes::copy_from_slice(have.as_wire()))]
            }
            Greeting::Fresh => Vec::new(),
        };
        for m in announce {
            self.send(now, m);
        }
        if self.config.reserved.supports_extensions() && theirs.supports_extensions() {
            let handshake = ExtendedHandshake {
                m: our_extensions(self.config.pex, self.config.holepunch),
                p: self.config.listen_port,
                v: Some(concat!("lodestone ", env!("CARGO_PKG_VERSION")).to_owned()),
                yourip: Some(addr.ip()),
                reqq: Some(MAX_QUEUED as u32),
                metadata_size: Some(self.config.metainfo.raw_info().len() as u64),
                ..ExtendedHandshake::default()
            };
            self.send(now, handshake.to_message());
        }
    }

    /// The connection comes from the metadata phase, whose reading of the
    /// peer's ut_pex messages was `inbox`: its caps (one message per
    /// interval, a total per connection) go on from there.
    pub fn carry_pex_inbox(&mut self, inbox: PexInbox) {
        self.pex_inbox = inbox;
    }

    /// We dialed the peer at `addr`, so it listens there: other peers may
    /// hear of it by PEX. (A peer we dialed does not send its port: libtorrent
    /// sends `p` only on connections it made.) Follow with [`Self::update`].
    pub fn dialed_at(&mut self, addr: SocketAddr) {
        if self.listen_addr.is_none() {
            self.listen_addr = Some(addr);
            if self.config.pex {
                self.ops.push(Op::Listening(addr));
            }
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer's key.
    pub fn key(&self) -> PeerKey {
        self.key
    }

    /// Whether the peer told us it wants our pieces.
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }

    /// Whether the peer chokes us.
    pub fn choking_us(&self) -> bool {
        self.choking_us
    }

    /// Whether we choke the peer.
    pub fn choking_them(&self) -> bool {
        self.choking_them
    }

    /// Download and upload rates with this peer, bytes per second, as of the
    /// last tick.
    pub fn rates(&self) -> (f64, f64) {
        self.rates
    }

    /// Requests outstanding at the peer (at most [`MAX_OUTSTANDING`]).
    pub fn outstanding(&self) -> usize {
        self.pipeline.outstanding()
    }

    /// The peer's requests queued with us (at most [`MAX_UPLOADS_QUEUED`]).
    pub fn uploads_queued(&self) -> usize {
        self.uploads.len()
    }

    /// Whether piece data crossed the connection, either way: a block we
    /// requested or used arrived, or we queued one to send. The host
    /// reports a connection that ends without it as fruitless.
    pub fn exchanged(&self) -> bool {
        self.exchanged
    }

    /// Whether the session has ended (a [`PeerEvent::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] has work: the next tick or the end of a
    /// rate-limit hold. `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let holds = [self.request_hold, self.upload_hold].into_iter().flatten();
        Some(holds.fold(self.next_tick, Instant::min))
    }

    fn send(&mut self, now: Instant, message: Message) {
        self.unsent = self.unsent.saturating_add(encoded_len(&message));
        self.last_sent = now;
        self.transmit.push_back(message);
    }

    fn close(&mut self, error: PeerError) {
        if !self.closed {
            self.closed = true;
            self.ops.clear();
            self.events.push_back(PeerEvent::Closed(error));
        }
    }

    /// A message from the peer. Follow with [`Self::update`].
    pub fn handle_message(&mut self, now: Instant, message: Message) {
        if self.closed {
            return;
        }
        self.last_message = now;
        if let Err(e) = self.on_message(now, message) {
            self.close(e);
        }
    }

    fn on_message(&mut self, now: Instant, msg: Message) -> Result<(), PeerError> {
        let pieces = self.config.layout.piece_count();
        match msg {
            Message::Piece(block) => self.on_block(now, block)?,
            Message::Request(r) => self.on_request(now, r)?,
            Message::Have(i) => {
                let piece = self.config.layout.piece(i).ok_or(PeerError::Misbehaved(
                    "have for a piece that does not exist",
                ))?;
                self.announced = true;
                if self.theirs.set(i) {
                    self.ops.push(Op::Have(piece));
                }
            }
            Message::Bitfield(_) | Message::HaveAll | Message::HaveNone if self.announced => {
                // aria2 sends its bitfield again once it has the metadata.
                // Each repeat costs a pass over every piece, so only a few
                // are taken; pieces can only be added, as `have` would.
                self.reannounced += 1;
                if self.reannounced > MAX_REANNOUNCE {
                    return Err(PeerError::Misbehaved("bitfield repeated too often"));
                }
                let update = match msg {
                    Message::Bitfield(bits) => Bitfield::from_wire(&bits, pieces)?,
                    Message::HaveAll if self.fast => Bitfield::full(pieces),
                    _ => return Ok(()),
                };
                for i in update.iter_ones() {
                    if self.theirs.set(i)
                        && let Some(piece) = self.config.layout.piece(i)
                    {
                        self.ops.push(Op::Have(piece));
                    }
                }
            }
            Message::Bitfield(bits) => {
                self.announced = true;
                let bits = Bitfield::from_wire(&bits, pieces)?;
                self.theirs = bits.clone();
                self.ops.push(Op::Bitfield(bits));
            }
            Message::HaveAll | Message::HaveNone if !self.fast => {
                return Err(PeerError::Misbehaved(
                    "fast message without the fast extension",
                ));
            }
            Message::HaveAll => {
                self.announced = true;
                self.theirs = Bitfield::full(pieces);
                self.ops.push(Op::HaveAll);
            }
            Message::HaveNone => self.announced = true,
            // Port 0 names no node.
            Message::Port(port) if port != 0 => {
                if !std::mem::replace(&mut self.dht_port_seen, true) {
                    self.events.push_back(PeerEvent::DhtPort(port));
                }
            }
            Message::Port(_) | Message::KeepAlive => {}
            // Advice we do not act on; harmless even without the fast bit.
            Message::Suggest(_) | Message::AllowedFast(_) => {}
            Message::Choke => {
                self.choking_us = true;
                // Without the fast extension a choke silently drops our
                // requests; with it, each is answered by a reject.
                if !self.fast {
                    self.pipeline.take_all();
                    self.ops.push(Op::Choked);
                }
            }
            Message::Unchoke => self.choking_us = false,
            Message::Interested => self.peer_interested = true,
            Message::NotInterested => self.peer_interested = false,
            Message::Cancel(r) => {
                if self.uploads.cancel(r) && self.fast {
                    self.send(now, Message::Reject(r));
                }
            }
            Message::Reject(_) if !self.fast => {
                return Err(PeerError::Misbehaved("reject without the fast extension"));
            }
            Message::Reject(r) => {
                // A reject for something we no longer wait for is a race
                // with our cancel: ignore it.
                if let Some(b) = self.config.layout.block_at(r.index, r.begin, r.length)
                    && self.pipeline.remove(b)
                {
                    self.ops.push(Op::Rejected(b));
                }
            }
            Message::Extended { id: 0, payload } => {
                // A malformed extension handshake costs the extensions,
                // not the peer.
                if let Ok(h) = ExtendedHandshake::decode(&payload) {
                    self.on_extension_handshake(now, &h);
                }
            }
            Message::Extended {
                id: OUR_UT_METADATA_ID,
                payload,
            } => self.on_metadata(now, &payload)?,
            Message::Extended {
                id: OUR_UT_PEX_ID,
                payload,
            } if self.config.pex => self.on_pex(now, &payload),
            Message::Extended {
                id: OUR_UT_HOLEPUNCH_ID,
                payload,
            } if self.config.holepunch => self.on_holepunch(now, &payload),
            Message::Extended { .. } | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    /// Learns the peer's extension ids, queue depth and listen port (BEP
    /// 10 allows the handshake to be repeated; each one updates).
    fn on_extension_handshake(&mut self, now: Instant, h: &ExtendedHandshake) {
        self.their_metadata_id = h.extension_id(UT_METADATA);
        if let Some(reqq) = h.reqq {
            self.pipeline.set_peer_cap(reqq);
        }
        if self.config.pex {
            self.their_pex_id = h.extension_id(UT_PEX);
            if self.config.holepunch {
                self.their_holepunch_id = h.extension_id(UT_HOLEPUNCH);
                self.ops
                    .push(Op::Holepunch(self.their_holepunch_id.is_some()));
            }
            if self.their_pex_id.is_some() && self.pex_outbox.is_none() {
                self.pex_outbox = Some(PexOutbox::new(now));
            }
        }
        // Where a peer that dialed us listens, only its `p` says: without
        // it the peer is neither redialed nor passed on by PEX. A peer we
        // dialed is known already ([`Self::dialed_at`]).
        if let Some(listen) = h.listen_addr(self.addr.ip())
            && self.listen_addr.is_none()
        {
            self.listen_addr = Some(listen);
            self.events.push_back(PeerEvent::Listening(listen));
            if self.config.pex {
                self.ops.push(Op::Listening(listen));
            }
        }
    }

    /// A ut_pex message: its peers go to the host, within the inbox's caps.
    /// A malformed one costs its addresses, not the peer (as a bad
    /// extension handshake does).
    fn on_pex(&mut self, now: Instant, payload: &[u8]) {
        if let Ok(peers) = self.pex_inbox.receive(now, payload)
            && !peers.is_empty()
        {
            self.events.push_back(PeerEvent::Pex(peers));
        }
    }

    /// A ut_holepunch message (BEP 55). Ignored silently when the peer did
    /// not offer the extension (we could not answer), when malformed (it
    /// costs the message, not the peer), and past the meter's bound, so a
    /// peer can make us neither an amplifier nor a dialer at its pace.
    fn on_holepunch(&mut self, now: Instant, payload: &[u8]) {
        if self.their_holepunch_id.is_none() {
            return;
        }
        let Ok(message) = HolepunchMessage::decode(payload) else {
            return;
        };
        tracing::debug!(peer = %self.addr, ?message, "ut_holepunch received");
        match message.kind {
            HolepunchKind::Error(code) => {
                tracing::debug!(peer = %self.addr, target = %message.addr, ?code, "holepunch refused");
            }
            _ if !self.holepunch_meter.allow(now) => {
                tracing::debug!(peer = %self.addr, "holepunch request over the bound, ignored");
            }
            HolepunchKind::Rendezvous => self.ops.push(Op::Rendezvous(message.addr)),
            // As with PEX: a relay names only addresses as wide as its own.
            HolepunchKind::Connect if !may_name(self.addr.ip(), message.addr.ip()) => {
                tracing::debug!(peer = %self.addr, target = %message.addr, "holepunch connect into our own network, ignored");
            }
            HolepunchKind::Connect => self
                .events
                .push_back(PeerEvent::HolepunchConnect(message.addr)),
        }
    }

    /// As a relay: introduce the peer to `target` if the torrent can,
    /// or tell it why not.
    fn relay(&mut self, now: Instant, target: SocketAddr, t: &mut Torrent) {
        let Some(id) = self.their_holepunch_id else {
            return;
        };
        let answer = match t.relay.introduce(self.key, target) {
            Ok(intro) => {
                t.push(Action::Holepunch {
                    peer: intro.target,
                    message: HolepunchMessage::connect(intro.initiator),
                });
                tracing::debug!(peer = %self.addr, %target, "holepunch relayed");
                HolepunchMessage::connect(target)
            }
            Err(code) => HolepunchMessage::error(target, code),
        };
        self.send(now, answer.to_message(id));
    }

    /// Our own ut_pex message, when due: the listen addresses of the
    /// torrent's other peers.
    fn send_pex(&mut self, now: Instant, t: &Torrent) {
        let (Some(id), Some(outbox)) = (self.their_pex_id, &mut self.pex_outbox) else {
            return;
        };
        if now < outbox.due() {
            return;
        }
        let connected = t.pex_peers(self.key);
        if let Some(message) = outbox.poll(now, &connected) {
            tracing::debug!(
                peer = %self.addr,
                added = message.added.len(),
                dropped = message.dropped.len(),
                "ut_pex sent"
            );
            self.send(now, message.to_message(id));
        }
    }

    fn on_block(&mut self, now: Instant, block: Block) -> Result<(), PeerError> {
        let len = block.data.len();
        let b = u32::try_from(len)
            .ok()
            .and_then(|l| self.config.layout.block_at(block.index, block.begin, l))
            .ok_or(PeerError::Misbehaved("block outside the torrent"))?;
        if self.pipeline.received(b, now) {
            self.exchanged = true;
        } else {
            if !self.unsolicited.record() {
                return Err(PeerError::Misbehaved("too many unrequested blocks"));
            }
            if !self.pipeline.late(b) {
                // Never asked of this peer: dropped. Taken, it would go
                // into an open piece another peer is filling and cancel
                // that peer's request; a peer could spoil every piece we
                // lack, and blame could not single it out among the
                // piece's senders.
                self.ops.push(Op::Dropped(len as u64));
                return Ok(());
            }
        }
        // Counted only now, so junk earns no rate with the choker.
        self.pipeline.record_bytes(now, len as u64);
        self.ops.push(Op::Block(b, block.data));
        Ok(())
    }

    fn on_request(&mut self, now: Instant, r: BlockRequest) -> Result<(), PeerError> {
        let serving = !self.choking_them;
        let servable = &self.servable;
        match self
            .uploads
            .admit(&self.config.layout, r, |i| serving && servable.get(i))
        {
            Admission::Queued => {}
            Admission::Refused => {
                if !self.refused_requests.record() {
                    return Err(PeerError::Misbehaved("too many refused requests"));
                }
                if self.fast {
                    self.send(now, Message::Reject(r));
                }
            }
            Admission::Invalid => {
                return Err(PeerError::Misbehaved("request outside the torrent"));
            }
        }
        Ok(())
    }

    /// Answers a ut_metadata request with the info dictionary we hold. We
    /// always hold it, so a reject means the peer asked for a piece that
    /// does not exist or asked too often: that counts as a refused request.
    fn on_metadata(&mut self, now: Instant, payload: &[u8]) -> Result<(), PeerError> {
        let Some(their_id) = self.their_metadata_id else {
            return Ok(());
        };
        let Ok(lodestone_metadata::Message::Request { piece }) =
            lodestone_metadata::Message::decode(payload)
        else {
            return Ok(());
        };
        let raw = self.config.metainfo.raw_info();
        let reply = lodestone_metadata::respond(Some(raw), &mut self.metadata_budget, piece);
        if matches!(reply, lodestone_metadata::Message::Reject { .. })
            && !self.refused_requests.record()
        {
            return Err(PeerError::Misbehaved("too many refused metadata requests"));
        }
        let payload = Bytes::from(reply.to_vec());
        self.send(
            now,
            Message::Extended {
                id: their_id,
                payload,
            },
        );
        Ok(())
    }

    /// A decision of the torrent. Follow with [`Self::update`].
    pub fn handle_command(&mut self, now: Instant, cmd: PeerCmd) {
        if self.closed {
            return;
        }
        match cmd {
            PeerCmd::Have(piece) => {
                self.servable.set(piece.get());
                self.send(now, Message::Have(piece.get()));
            }
            PeerCmd::Cancel(b) => {
                if self.pipeline.remove(b) {
                    let r = self.request_for(b);
                    self.send(now, Message::Cancel(r));
                }
            }
            PeerCmd::Choke(true) if !self.choking_them => {
                self.choking_them = true;
                self.send(now, Message::Choke);
                for r in self.uploads.clear() {
                    if self.fast {
                        self.send(now, Message::Reject(r));
                    }
                }
            }
            PeerCmd::Choke(false) if self.choking_them => {
                self.choking_them = false;
                self.send(now, Message::Unchoke);
            }
            PeerCmd::Choke(_) | PeerCmd::Wake => {}
            PeerCmd::Close(reason) => self.close(PeerError::Closed(reason)),
            PeerCmd::Holepunch(message) => {
                if let Some(id) = self.their_holepunch_id {
                    self.send(now, message.to_message(id));
                }
            }
        }
    }

    /// The blocks of the last [`PeerEvent::Read`], or why they could not be
    /// read. Follow with [`Self::update`].
    pub fn handle_read(
        &mut self,
        now: Instant,
        blocks: Result<Vec<(BlockRequest, Bytes)>, StorageError>,
    ) {
        self.reading = false;
        if self.closed {
            return;
        }
        let blocks = match blocks {
            Ok(blocks) => blocks,
            Err(e) => return self.close(e.into()),
        };
        let mut bytes = 0u64;
        for (r, data) in blocks {
            if self.choking_them {
                // We choked the peer while the blocks were being read.
                if self.fast {
                    self.send(now, Message::Reject(r));
                }
                continue;
            }
            bytes += data.len() as u64;
            self.send(
                now,
                Message::Piece(Block {
                    index: r.index,
                    begin: r.begin,
                    data,
                }),
            );
        }
        self.up_rate.record(now, bytes);
        self.uploaded += bytes;
        self.exchanged |= bytes > 0;
    }

    /// The transport now holds `unsent` bytes not yet written (zero after
    /// a complete flush). May start a storage read; no `update` needed.
    pub fn handle_sent(&mut self, now: Instant, unsent: usize) {
        self.unsent = unsent;
        self.maybe_read(now);
    }

    /// Time passed; call at [`Self::poll_timeout`], then [`Self::update`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            if self.pipeline.stalled(now, self.config.stall_timeout) {
                return self.close(PeerError::Stalled);
            }
            if now.saturating_duration_since(self.last_message) > IDLE_TIMEOUT {
                return self.close(PeerError::Idle);
            }
            if now.saturating_duration_since(self.last_sent) > KEEPALIVE {
                self.send(now, Message::KeepAlive);
            }
            self.unsolicited.decay();
            self.refused_requests.decay();
            self.rates = (self.pipeline.rate(now), self.up_rate.rate(now));
        }
        self.request_hold = self.request_hold.filter(|&t| t > now);
        self.upload_hold = self.upload_hold.filter(|&t| t > now);
        self.maybe_read(now);
    }

    /// Applies the queued work to the torrent, updates our interest and
    /// tops up the requests. Call under the torrent's lock, once per batch
    /// of inputs.
    pub fn update(&mut self, now: Instant, torrent: &mut Torrent) {
        if self.closed {
            return;
        }
        let mut ops = std::mem::take(&mut self.ops);
        for op in ops.drain(..) {
            self.apply(now, op, torrent);
        }
        self.ops = ops;
        if self.uploaded > 0 {
            let bytes = std::mem::take(&mut self.uploaded);
            let counters = &mut torrent.counters;
            counters.uploaded += bytes;
            counters.up_rate.record(now, bytes);
            if let Some(limit) = &torrent.upload_limit {
                let wait = limit.acquire(now, bytes);
                if !wait.is_zero() {
                    self.upload_hold = Some(now + wait);
                }
            }
        }
        self.send_pex(now, torrent);
        self.top_up(now, torrent);
        self.maybe_read(now);
        self.watch_interest(now, torrent.is_crowded());
    }

    /// Closes the connection once neither side has been interested for
    /// [`NO_INTEREST_TIMEOUT`] and the torrent is short of slots. Run at
    /// every update, so interest shown between two ticks (a piece
    /// announced, fetched and verified within a second) counts.
    fn watch_interest(&mut self, now: Instant, crowded: bool) {
        if self.am_interested || self.peer_interested {
            self.no_interest_since = None;
            return;
        }
        let since = *self.no_interest_since.get_or_insert(now);
        if crowded && now.saturating_duration_since(since) > NO_INTEREST_TIMEOUT {
            self.close(PeerError::NoInterest);
        }
    }

    fn apply(&mut self, now: Instant, op: Op, t: &mut Torrent) {
        let key = self.key;
        match op {
            Op::Bitfield(bits) => t.picker.peer_bitfield(key, bits),
            Op::HaveAll => t.picker.peer_have_all(key),
            Op::Have(piece) => t.picker.peer_have(key, piece),
            Op::Choked => {
                t.picker.peer_choked(key);
                t.push(Action::Wake);
            }
            Op::Rejected(b) => t.picker.request_failed(key, b),
            Op::Listening(addr) => t.peer_listening(key, addr),
            Op::Holepunch(supports) => t.relay.supports(key, supports),
            Op::Rendezvous(target) => self.relay(now, target, t),
            Op::Dropped(len) => {
                t.counters.downloaded += len;
                t.counters.wasted += len;
            }
            Op::Block(b, data) => {
                let len = data.len() as u64;
                t.counters.downloaded += len;
                t.counters.down_rate.record(now, len);
                match t.picker.block_received(key, b) {
                    BlockOutcome::Accepted {
                        cancel,
                        piece_complete,
                    } => {
                        // Also one in flight when a choke cleared our
                        // requests: it counted as unrequested, but is used.
                        self.exchanged = true;
                        t.assembly.put(&self.config.layout, b, &data);
                        for peer in cancel {
                            t.push(Action::Cancel { peer, block: b });
                        }
                        if piece_complete && let Some(data) = t.assembly.take(b.piece()) {
                            t.push(Action::Verify {
                                piece: b.piece(),
                                data,
                            });
                        }
                    }
                    BlockOutcome::Unwanted => t.counters.wasted += len,
                }
            }
        }
    }

    /// Updates our interest and sends new requests if we may.
    fn top_up(&mut self, now: Instant, t: &mut Torrent) {
        let interesting = t.picker.is_interesting(self.key);
        if interesting != self.am_interested {
            self.am_interested = interesting;
            let m = if interesting {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(now, m);
        }
        if t.picker.is_complete() && self.theirs.is_full() {
            // Two seeds have nothing to say to each other.
            return self.close(PeerError::Closed(CloseReason::Done));
        }
        let may_request = !self.choking_us
            && self.am_interested
            && self.request_hold.is_none()
            && !t.hash_backlog_full();
        if !may_request {
            return;
        }
        let mut room = self.pipeline.room();
        if t.picker.in_endgame() {
            // Every request now duplicates one outstanding elsewhere, most
            // likely near the front of that peer's queue and about to
            // arrive: only a peer with nothing left to do takes a few.
            room = if self.pipeline.outstanding() == 0 {
                ENDGAME_DEPTH
            } else {
                0
            };
        }
        if let Some(limit) = &t.download_limit {
            // Ask only for what the bucket can pay for now: requests paid in
            // advance would arrive as one burst of a pipeline's depth, and
            // several torrents sharing the bucket would overshoot together.
            let block = u64::from(crate::layout::BLOCK_SIZE);
            let affordable = limit.affordable(now, block);
            if affordable == 0 {
                self.request_hold = Some(now + limit.wait_for(now, block));
                return;
            }
            room = room.min(usize::try_from(affordable).unwrap_or(usize::MAX));
        }
        if room == 0 {
            return;
        }
        let requests = t.picker.next_requests(self.key, room);
        if let Some(limit) = &t.download_limit
            && !requests.is_empty()
        {
            let layout = &self.config.layout;
            let bytes = requests.iter().map(|&b| u64::from(layout.block_len(b)));
            let wait = limit.acquire(now, bytes.sum());
            if !wait.is_zero() {
                self.request_hold = Some(now + wait);
            }
        }
        self.pipeline.requested(&requests, room, now);
        for &b in &requests {
            let r = self.request_for(b);
            self.send(now, Message::Request(r));
        }
    }

    /// Starts a storage read of queued requests if we serve the peer, the
    /// transport has room and the upload limit allows.
    fn maybe_read(&mut self, now: Instant) {
        if !self.closed
            && !self.reading
            && !self.choking_them
            && !self.uploads.is_empty()
            && self.unsent < UPLOAD_BUFFER
            && self.upload_hold.is_none_or(|t| t <= now)
        {
            self.reading = true;
            let batch = self.uploads.next_batch();
            self.events.push_back(PeerEvent::Read(batch));
        }
    }

    fn request_for(&self, b: BlockIndex) -> BlockRequest {
        BlockRequest {
            index: b.piece().get(),
            begin: b.begin(),
            length: self.config.layout.block_len(b),
        }
    }
}

#[cfg(test)]
mod tests {
    mod holepunch;
    use super::*;
    use crate::layout::BLOCK_SIZE;

    const KEY: PeerKey = PeerKey(1);

    /// A torrent of four two-block pieces we lack, and a fresh session on it.
    fn setup(theirs: Reserved) -> (Torrent, PeerSession, Instant) {
        let (t, mut s, now) = start(theirs, &[], Greeting::Fresh);
        drain(&mut s);
        (t, s, now)
    }

    /// A torrent of four two-block pieces of which we hold `held`, and a
    /// session on it, its greeting not drained.
    fn start(
        theirs: Reserved,
        held: &[u32],
        greeting: Greeting,
    ) -> (Torrent, PeerSession, Instant) {
        let data = vec![5u8; 8 * BLOCK_SIZE as usize];
        let metainfo = Metainfo::create("t", 2 * BLOCK_SIZE, &[(vec!["f".into()], &data)])
            .expect("a valid torrent");
        let layout = Arc::new(Layout::from_info(&metainfo.info).expect("a valid layout"));
        let n = layout.piece_count();
        let now = Instant::now();
        let mut have = Bitfield::new(n);
        held.iter().for_each(|&p| {
            have.set(p);
        });
        let mut torrent = Torrent::new(
            layout.clone(),
            Bitfield::full(n),
            have.clone(),
            have,
            1,
            4,
            now,
        );
        let config = SessionConfig {
            metainfo: Arc::new(metainfo),
            layout,
            reserved: Reserved::LODESTONE,
            listen_port: None,
            stall_timeout: Duration::from_secs(10),
            pex: true,
            holepunch: true,
        };
        let addr = SocketAddr::from(([10, 0, 0, 1], 6881));
        let session = PeerSession::new(now, config, KEY, (theirs, addr), greeting, &mut torrent);
        (torrent, session, now)
    }

    #[test]
    fn greetings_fresh_and_handed_over() {
        let first = |held: &[u32], greeting| {
            let (_, mut s, _) = start(Reserved::LODESTONE, held, greeting);
            let out = drain(&mut s);
            assert!(matches!(out.last(), Some(Message::Extended { id: 0, .. })));
            out[..out.len() - 1].to_vec()
        };
        assert_eq!(first(&[], Greeting::Fresh), vec![Message::HaveNone]);
        assert_eq!(
            first(&[0, 1, 2, 3], Greeting::Fresh),
            vec![Message::HaveAll]
        );
        assert_eq!(
            first(&[1, 3], Greeting::Fresh),
            vec![Message::Bitfield(Bytes::from_static(&[0x50]))]
        );
        // The metadata phase sent the first message: only `have`s now.
        assert_eq!(first(&[], Greeting::HandedOver), vec![]);
        assert_eq!(
            first(&[1, 3], Greeting::HandedOver),
            vec![Message::Have(1), Message::Have(3)]
        );
    }

    fn drain(s: &mut PeerSession) -> Vec<Message> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn requests(out: &[Message]) -> usize {
        out.iter()
            .filter(|m| matches!(m, Message::Request(_)))
            .count()
    }

    #[test]
    fn messages_received_before_the_first_update_count_like_any_other() {
        // A connection handed over after the metadata phase arrives with
        // the peer's announcement and unchoke already read.
        let (mut t, mut s, now) = setup(Reserved::LODESTONE);
        s.handle_message(now, Message::HaveAll);
        s.handle_message(now, Message::Unchoke);
        s.update(now, &mut t);
        let out = drain(&mut s);
        assert_eq!(out[0], Message::Interested);
        assert_eq!(requests(&out), 8, "every block of the torrent");
        assert_eq!(s.outstanding(), 8);
    }

    /// The block at `begin` in piece `index`, as the peer sends it.
    fn block(index: u32, begin: u32) -> Message {
        Message::Piece(Block {
            index,
            begin,
            data: Bytes::from(vec![5u8; BLOCK_SIZE as usize]),
        })
    }

    #[test]
    fn a_block_neither_asked_for_nor_used_is_of_no_use() {
        let (mut t, mut s, now) = setup(Reserved::LODESTONE);
        s.handle_message(now, Message::HaveAll);
        s.update(now, &mut t);
        // Choked: nothing asked for, and no piece open to take it.
        s.handle_message(now, block(0, 0));
        s.update(now, &mut t);
        assert!(!s.exchanged());
        s.handle_message(now, Message::Unchoke);
        s.update(now, &mut t);
        assert_eq!(requests(&drain(&mut s)), 8);
        s.handle_message(now, block(0, 0));
        assert!(s.exchanged());
    }

    /// A session without the fast extension, unchoked by a peer with
    /// every piece: it has asked for all 8 blocks.
    fn unchoked_without_fast() -> (Torrent, PeerSession, Instant) {
        let mut plain = Reserved::LODESTONE;
        plain.set_fast(false);
        let (mut t, mut s, now) = setup(plain);
        s.handle_message(now, Message::Bitfield(Bytes::from_static(&[0xf0])));
        s.handle_message(now, Message::Unchoke);
        s.update(now, &mut t);
        assert_eq!(requests(&drain(&mut s)), 8);
        (t, s, now)
    }

    #[test]
    fn a_block_in_flight_past_a_choke_is_of_use_once_used() {
        // Without the fast extension a choke drops our requests, and the
        // blocks already on their way arrive unrequested.
        let (mut t, mut s, now) = unchoked_without_fast();
        // Another peer delivers the second half of piece 0, so the piece
        // stays open when the choke gives our requests back.
        let elsewhere = SocketAddr::from(([10, 0, 0, 2], 6881));
        let peer = (Reserved::LODESTONE, elsewhere);
        let mut other = PeerSession::new(
            now,
            s.config.clone(),
            PeerKey(2),
            peer,
            Greeting::Fresh,
            &mut t,
        );
        other.handle_message(now, Message::HaveAll);
        other.handle_message(now, Message::Unchoke);
        other.update(now, &mut t);
        // Every block is asked for already: the endgame asks again.
        let second_half = BlockRequest {
            index: 0,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        };
        assert!(drain(&mut other).contains(&Message::Request(second_half)));
        other.handle_message(now, block(0, BLOCK_SIZE));
        other.update(now, &mut t);
        s.handle_message(now, Message::Choke);
        s.update(now, &mut t);
        s.handle_message(now, block(0, 0));
        assert!(!s.exchanged());
        s.update(now, &mut t);
        assert!(s.exchanged(), "the torrent took the block");
    }

    #[test]
    fn a_block_never_asked_of_this_peer_is_dropped() {
        let (mut t, mut honest, now) = unchoked_without_fast();
        while t.poll_action().is_some() {}
        // Another peer, asked for nothing, sends a block of a piece the
        // honest one is fetching, and many more of the same.
        let elsewhere = SocketAddr::from(([10, 0, 0, 2], 6881));
        let peer = (Reserved::LODESTONE, elsewhere);
        let mut junk = PeerSession::new(
            now,
            honest.config.clone(),
            PeerKey(2),
            peer,
            Greeting::Fresh,
            &mut t,
        );
        for _ in 0..256 {
            junk.handle_message(now, block(0, 0));
        }
        junk.update(now, &mut t);
        assert!(
            !junk.exchanged(),
            "the torrent took a block never asked for"
        );
        assert!(!junk.is_closed(), "within the tolerance for late blocks");
        assert_eq!(t.counters().wasted, 256 * u64::from(BLOCK_SIZE));
        assert_eq!(t.poll_action(), None, "the honest peer's request stands");
        // Nor does junk earn a rate with the choker.
        junk.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(junk.rates().0, 0.0);
        // The honest peer's block is still taken.
        honest.handle_message(now, block(0, 0));
        honest.update(now, &mut t);
        assert!(honest.exchanged());
    }

    #[test]
    fn a_peer_that_only_keeps_alive_is_let_go_after_ten_minutes_when_slots_are_short() {
        let (mut t, mut s, start) = setup(Reserved::LODESTONE);
        t.set_crowded(true);
        // It has nothing we lack, and wants nothing of ours.
        s.handle_message(start, Message::HaveNone);
        let mut now = start;
        while now - start < Duration::from_secs(3600) && !s.is_closed() {
            now += Duration::from_secs(50);
            s.handle_message(now, Message::KeepAlive);
            s.handle_timeout(now);
            s.update(now, &mut t);
        }
        assert!(now - start > NO_INTEREST_TIMEOUT, "let go early");
        // Counted from the first update that saw no interest, a step in.
        assert!(now - start <= NO_INTEREST_TIMEOUT + Duration::from_secs(100));
        assert!(
            std::iter::from_fn(|| s.poll_event())
                .any(|e| matches!(e, PeerEvent::Closed(PeerError::NoInterest)))
        );
    }

    #[test]
    fn interest_either_way_or_free_slots_keep_a_connection() {
        // Slots to spare: an uninterested peer costs nobody anything.
        let (mut t, mut s, start) = setup(Reserved::LODESTONE);
        s.handle_message(start, Message::HaveNone);
        let mut now = start;
        for _ in 0..72 {
            now += Duration::from_secs(50);
            s.handle_message(now, Message::KeepAlive);
            s.handle_timeout(now);
            s.update(now, &mut t);
        }
        assert!(!s.is_closed(), "let go with slots to spare");
        // Short of slots, interest keeps it: the peer's, or a blip of ours
        // between two ticks (a piece announced and taken within a second).
        t.set_crowded(true);
        s.handle_message(now, Message::Interested);
        s.update(now, &mut t);
        for _ in 0..72 {
            now += Duration::from_secs(50);
            s.handle_message(now, Message::KeepAlive);
            s.handle_timeout(now);
            s.update(now, &mut t);
        }
        assert!(!s.is_closed(), "an interested peer was let go");
        s.handle_message(now, Message::NotInterested);
        // Every 550 s the peer announces a piece we lack, and we have it
        // before the next tick: 1,650 s with no interest seen at a tick.
        // (Three pieces of four: with all four both sides would be seeds.)
        for i in 0..33 {
            now += Duration::from_secs(50);
            if i % 11 == 0 {
                s.handle_message(now, Message::Have(i / 11));
                s.update(now, &mut t);
                assert!(s.am_interested, "a piece we lack");
                let piece = s.config.layout.piece(i / 11).expect("in the torrent");
                t.found_on_disk(piece, true);
            }
            s.handle_message(now, Message::KeepAlive);
            s.handle_timeout(now);
            s.update(now, &mut t);
            assert!(!s.am_interested, "the piece is had");
        }
        assert!(!s.is_closed(), "let go while trading");
    }

    #[test]
    fn timeouts_tick_until_the_stall_closes_the_session() {
        let (mut t, mut s, start) = setup(Reserved::LODESTONE);
        s.handle_message(start, Message::HaveAll);
        s.handle_message(start, Message::Unchoke);
        s.update(start, &mut t);
        drain(&mut s);
        let mut now = start;
        while let Some(at) = s.poll_timeout() {
            assert!(at > now, "the timeout moves on");
            now = at;
            s.handle_timeout(now);
            s.update(now, &mut t);
            assert!(now - start < Duration::from_secs(12), "no stall detected");
        }
        assert!(now - start > Duration::from_secs(10));
        assert!(matches!(
            s.poll_event(),
            Some(PeerEvent::Closed(PeerError::Stalled))
        ));
        assert!(s.poll_event().is_none());
        t.peer_gone(KEY);
        assert_eq!(t.poll_action(), Some(Action::Wake));
    }

    #[test]
    fn a_choke_without_the_fast_extension_returns_the_requests() {
        let (mut t, mut s, now) = unchoked_without_fast();
        s.handle_message(now, Message::Choke);
        s.update(now, &mut t);
        assert_eq!(s.outstanding(), 0);
        assert_eq!(t.poll_action(), Some(Action::Wake));
        // Unchoked again, the same blocks are asked for again.
        s.handle_message(now, Message::Unchoke);
        s.update(now, &mut t);
        assert_eq!(requests(&drain(&mut s)), 8);
    }

    #[test]
    fn a_flood_of_refused_requests_closes_the_session() {
        let (mut t, mut s, now) = setup(Reserved::LODESTONE);
        let r = BlockRequest {
            index: 0,
            begin: 0,
            length: BLOCK_SIZE,
        };
        for _ in 0..=MAX_REFUSED_REQUESTS {
            s.handle_message(now, Message::Request(r));
        }
        s.update(now, &mut t);
        let out = drain(&mut s);
        assert_eq!(out.len(), MAX_REFUSED_REQUESTS as usize, "one reject each");
        assert!(matches!(
            s.poll_event(),
            Some(PeerEvent::Closed(PeerError::Misbehaved(_)))
        ));
        assert!(s.poll_timeout().is_none());
    }

    /// The peer's extension handshake, offering ut_pex under id 9 and
    /// listening on `port`.
    fn pex_handshake(port: u16) -> Message {
        ExtendedHandshake {
            m: [(UT_PEX.to_owned(), 9)].into(),
            p: Some(port),
            ..ExtendedHandshake::default()
        }
        .to_message()
    }

    fn pex_payload(added: &[SocketAddr]) -> Bytes {
        let added = added
            .iter()
            .map(|&addr| PexPeer {
                addr,
                flags: Default::default(),
            })
            .collect();
        Bytes::from(
            lodestone_wire::pex::PexMessage {
                added,
                dropped: vec![],
            }
            .encode(),
        )
    }

    #[test]
    fn only_the_first_port_message_names_a_dht_node() {
        let (_t, mut s, now) = setup(Reserved::LODESTONE);
        s.handle_message(now, Message::Port(0));
        assert!(s.poll_event().is_none(), "port 0 names no node");
        s.handle_message(now, Message::Port(6881));
        assert!(matches!(s.poll_event(), Some(PeerEvent::DhtPort(6881))));
        s.handle_message(now, Message::Port(7000));
        assert!(s.poll_event().is_none());
    }

    #[test]
    fn a_peer_that_dialed_us_has_its_listen_port_reported_once() {
        let (_t, mut s, now) = setup(Reserved::LODESTONE);
        let ip = s.addr().ip();
        s.handle_message(now, pex_handshake(0));
        assert!(s.poll_event().is_none(), "port 0 is no listen port");
        s.handle_message(now, pex_handshake(7001));
        assert!(
            matches!(s.poll_event(), Some(PeerEvent::Listening(a)) if a == SocketAddr::new(ip, 7001))
        );
        s.handle_message(now, pex_handshake(7002));
        assert!(s.poll_event().is_none());

        // A peer we dialed listens where we found it.
        let (_t, mut dialed, now) = setup(Reserved::LODESTONE);
        dialed.dialed_at(dialed.addr());
        dialed.handle_message(now, pex_handshake(7001));
        assert!(dialed.poll_event().is_none());
    }

    #[test]
    fn pex_in_becomes_an_event_and_pex_out_lists_the_other_peers() {
        use lodestone_wire::pex::{MIN_PEX_INTERVAL, PEX_FIRST_DELAY, PexMessage};
        let (mut t, mut s, now) = setup(Reserved::LODESTONE);
        let other = SocketAddr::from(([10, 0, 0, 2], 40000));
        let mut s2 = PeerSession::new(
            now,
            s.config.clone(),
            PeerKey(2),
            (Reserved::LODESTONE, other),
            Greeting::Fresh,
            &mut t,
        );
        for (session, port) in [(&mut s, 7001), (&mut s2, 7002)] {
            session.handle_message(now, pex_handshake(port));
            assert!(matches!(
                session.poll_event(),
                Some(PeerEvent::Listening(_))
            ));
        }
        s.update(now, &mut t);
        s2.update(now, &mut t);
        drain(&mut s);

        // Theirs: passed on as an event, and a second message within the
        // interval is ignored.
        let learned = SocketAddr::from(([10, 9, 9, 9], 1234));
        let pex = |payload| Message::Extended {
            id: OUR_UT_PEX_ID,
            payload,
        };
        s.handle_message(now, pex(pex_payload(&[learned])));
        let Some(PeerEvent::Pex(peers)) = s.poll_event() else {
            panic!("no PEX event");
        };
        assert_eq!(peers.iter().map(|p| p.addr).collect::<Vec<_>>(), [learned]);
        s.handle_message(now + MIN_PEX_INTERVAL / 2, pex(pex_payload(&[other])));
        assert!(s.poll_event().is_none());
        // So is one within the interval of a message the metadata phase
        // took before handing the connection over.
        let mut carried = PexInbox::default();
        assert!(
            !carried
                .receive(now, &pex_payload(&[learned]))
                .unwrap()
                .is_empty()
        );
        s2.carry_pex_inbox(carried);
        s2.handle_message(now + MIN_PEX_INTERVAL / 2, pex(pex_payload(&[learned])));
        assert!(s2.poll_event().is_none());

        // Ours: after the first delay, the other peer's listen address
        // (never the recipient's own), under the id the peer chose.
        let later = now + PEX_FIRST_DELAY;
        s.handle_timeout(later);
        s.update(later, &mut t);
        let sent: Vec<_> = drain(&mut s)
            .into_iter()
            .filter_map(|m| match m {
                Message::Extended { id: 9, payload } => Some(PexMessage::decode(&payload).unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1);
        let listed: Vec<_> = sent[0].added.iter().map(|p| p.addr).collect();
        assert_eq!(listed, [SocketAddr::from(([10, 0, 0, 2], 7002))]);
    }

    #[test]
    fn a_private_torrent_neither_offers_nor_takes_pex() {
        let (mut t, mut s, now) = start(Reserved::LODESTONE, &[], Greeting::Fresh);
        // Rebuild the session with PEX off, as for a private torrent.
        let mut config = s.config.clone();
        config.pex = false;
        s = PeerSession::new(
            now,
            config,
            PeerKey(3),
            (Reserved::LODESTONE, s.addr),
            Greeting::Fresh,
            &mut t,
        );
        let ours = drain(&mut s)
            .into_iter()
            .find_map(|m| match m {
                Message::Extended { id: 0, payload } => ExtendedHandshake::decode(&payload).ok(),
                _ => None,
            })
            .expect("our extension handshake");
        assert_eq!(ours.extension_id(UT_PEX), None);
        s.handle_message(now, pex_handshake(7001));
        // Where it listens is reported even without PEX: the address book
        // is the torrent's own.
        assert!(matches!(s.poll_event(), Some(PeerEvent::Listening(_))));
        s.handle_message(
            now,
            Message::Extended {
                id: OUR_UT_PEX_ID,
                payload: pex_payload(&[SocketAddr::from(([10, 9, 9, 9], 1))]),
            },
        );
        assert!(s.poll_event().is_none());
        let later = now + Duration::from_secs(120);
        s.handle_timeout(later);
        s.update(later, &mut t);
        assert!(
            !drain(&mut s)
                .iter()
                .any(|m| matches!(m, Message::Extended { id: 9, .. }))
        );
    }
}
