//! The task that drives one peer connection.
//!
//! One `select!` loop flushes writes, takes commands, reads messages and
//! collects disk reads, so reading does not wait on writing (two clients
//! uploading to each other with full socket buffers cannot deadlock); only
//! a backlog no honest exchange reaches ([`READ_PAUSE_BACKLOG`]) pauses
//! reading, so a peer that never reads cannot make us buffer without end.
//! Every
//! message already buffered is handled before the shared state is locked
//! once for the whole batch: blocks are accepted and copied, our interest is
//! updated, and the pipeline is topped up; the requests then go out in one
//! write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_metadata::RequestBudget;
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::{
    Block, BlockRequest, ConnectionError, ConnectionReader, ConnectionWriter, Decoder, Established,
    ExtendedHandshake, Handshake, Message, OUR_UT_METADATA_ID, our_extensions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::abuse::AbuseMeter;
use super::pipeline::{ENDGAME_DEPTH, Pipeline};
use super::shared::{CloseReason, PeerCmd, PeerEntry, Shared, State};
use super::uploads::{Admission, MAX_QUEUED, Uploads};
use crate::bitfield::{Bitfield, BitfieldError};
use crate::layout::{BlockIndex, Layout};
use crate::picker::{BlockOutcome, PeerKey};
use crate::rate::RateEstimator;
use crate::storage::StorageError;

/// Repeated bitfields accepted from one peer before it counts as abuse.
const MAX_REANNOUNCE: u8 = 4;

/// Messages handled per batch before the state is synced (bounds latency).
const MAX_BATCH: usize = 512;

/// Blocks received that we had not (or no longer) requested, tolerated
/// per second: late blocks after a cancel or a choke are normal.
const MAX_UNSOLICITED: u32 = 1024;

/// Requests we refuse (choked, a piece we never offered, past the `reqq` we
/// advertised), tolerated per second: requests crossing our choke on the
/// wire are normal, a stream of them is not.
const MAX_REFUSED_REQUESTS: u32 = 1024;

/// Upload data queued in the writer before we stop reading more from disk.
const UPLOAD_BUFFER: usize = 1 << 20;

/// Bytes queued to the peer above which we stop reading its messages.
/// Requests, metadata requests and rejects all make us write; a peer that
/// sends them without reading our answers would otherwise grow this buffer
/// without limit. Above [`UPLOAD_BUFFER`] plus one disk batch, so an honest
/// peer downloading at full speed is never paused by it.
const READ_PAUSE_BACKLOG: usize = 2 << 20;

/// A connection on which nothing arrives for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// We send a keep-alive after this long without sending anything.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
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
    /// We connected to ourselves, or to a peer already connected.
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
    /// Whether the peer should not be dialled again this session.
    pub(crate) fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            PeerError::Misbehaved(_)
                | PeerError::Bitfield(_)
                | PeerError::Duplicate
                | PeerError::Closed(CloseReason::Banned)
                | PeerError::Connection(ConnectionError::Protocol(_))
        )
    }
}

type ReadJob = JoinHandle<Result<Vec<(BlockRequest, Bytes)>, StorageError>>;

/// Removes the peer from the shared state however its task ends (error,
/// return, or abort at shutdown), so its requests go back to the picker.
struct Registration {
    shared: Arc<Shared>,
    key: PeerKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.peers.remove(&self.key);
        st.picker.peer_gone(self.key);
        st.blame.forget(self.key);
        st.broadcast(PeerCmd::Wake, None);
    }
}

struct Peer {
    shared: Arc<Shared>,
    layout: Arc<Layout>,
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
    /// What we can serve (mirrors the shared `servable`, updated by `Have`).
    servable: Bitfield,
    am_interested: bool,
    choking_us: bool,
    choking_them: bool,
    their_metadata_id: Option<u8>,
    metadata_budget: RequestBudget,
    unsolicited: AbuseMeter,
    refused_requests: AbuseMeter,
    up_rate: RateEstimator,
    last_message: Instant,
    last_sent: Instant,
    /// Blocks of the current batch, accepted under one lock.
    blocks: Vec<Block>,
    /// Rejected requests of the current batch, returned to the picker.
    rejected: Vec<BlockIndex>,
    /// No new requests before this (download limit).
    request_hold: Option<Instant>,
    /// No new disk reads before this (upload limit).
    upload_hold: Option<Instant>,
}

/// Runs a handshaken connection until it ends, first handling what the peer
/// said before the connection reached the download.
pub(crate) async fn run(
    shared: Arc<Shared>,
    key: PeerKey,
    established: Established,
) -> Result<(), PeerError> {
    let Established {
        conn,
        theirs,
        addr,
        early,
        greeted,
        ..
    } = established;
    let ours = shared.handshake;
    if theirs.peer_id == ours.peer_id {
        return Err(PeerError::Duplicate);
    }
    let now = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let servable = {
        let mut st = shared.lock();
        if st.peers.values().any(|p| p.id == theirs.peer_id) {
            return Err(PeerError::Duplicate);
        }
        st.peers.insert(
            key,
            PeerEntry {
                id: theirs.peer_id,
                tx,
                connected_at: now,
                interested: false,
                choking_us: true,
                download_rate: 0.0,
                upload_rate: 0.0,
            },
        );
        st.picker.peer_connected(key);
        st.servable.clone()
    };
    let _registration = Registration {
        shared: shared.clone(),
        key,
    };
    let layout = shared.layout.clone();
    let pieces = layout.piece_count();
    let (mut reader, mut writer) = conn.into_split();
    reader.set_decoder(Decoder::new().with_piece_count(pieces));

    let mut peer = Peer {
        fast: ours.reserved.supports_fast() && theirs.reserved.supports_fast(),
        shared,
        layout,
        key,
        pipeline: Pipeline::new(now),
        uploads: Uploads::default(),
        theirs: Bitfield::new(pieces),
        announced: false,
        reannounced: 0,
        servable,
        am_interested: false,
        choking_us: true,
        choking_them: true,
        their_metadata_id: None,
        metadata_budget: RequestBudget::default(),
        unsolicited: AbuseMeter::new(MAX_UNSOLICITED),
        refused_requests: AbuseMeter::new(MAX_REFUSED_REQUESTS),
        up_rate: RateEstimator::standard(now),
        last_message: now,
        last_sent: now,
        blocks: Vec::new(),
        rejected: Vec::new(),
        request_hold: None,
        upload_hold: None,
    };
    peer.greet(&mut writer, &theirs, addr, greeted);
    for msg in early {
        peer.on_message(msg, &mut writer)?;
    }
    peer.sync(&mut writer)?;
    peer.drive(&mut reader, &mut writer, &mut rx).await
}

impl Peer {
    /// Our bitfield (or its fast-extension shorthand) and extension
    /// handshake. On a connection greeted already (in the metadata phase)
    /// a bitfield may no longer be sent: our pieces go out as `have`s, and
    /// the extension handshake is sent again, now with `metadata_size`.
    fn greet(
        &mut self,
        w: &mut ConnectionWriter,
        theirs: &Handshake,
        addr: SocketAddr,
        greeted: bool,
    ) {
        let have = &self.servable;
        if greeted {
            for piece in have.iter_ones() {
                w.feed(&Message::Have(piece));
            }
        } else if self.fast && have.is_full() {
            w.feed(&Message::HaveAll);
        } else if self.fast && have.count_ones() == 0 {
            w.feed(&Message::HaveNone);
        } else if have.count_ones() > 0 {
            w.feed(&Message::Bitfield(Bytes::copy_from_slice(have.as_wire())));
        }
        let ours = self.shared.handshake;
        if ours.reserved.supports_extensions() && theirs.reserved.supports_extensions() {
            let handshake = ExtendedHandshake {
                m: our_extensions(),
                p: self.shared.listen_port,
                v: Some(concat!("lodestone ", env!("CARGO_PKG_VERSION")).to_owned()),
                yourip: Some(addr.ip()),
                reqq: Some(MAX_QUEUED as u32),
                metadata_size: Some(self.shared.metainfo.raw_info().len() as u64),
                ..ExtendedHandshake::default()
            };
            w.feed(&handshake.to_message());
        }
    }

    async fn drive(
        &mut self,
        reader: &mut ConnectionReader,
        writer: &mut ConnectionWriter,
        rx: &mut mpsc::UnboundedReceiver<PeerCmd>,
    ) -> Result<(), PeerError> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut read_job: Option<ReadJob> = None;
        loop {
            let now = Instant::now();
            if read_job.is_none() && self.may_read(now, writer) {
                read_job = Some(self.start_read());
            }
            let hold = self.next_hold();
            let flushing = writer.buffered() > 0;
            tokio::select! {
                biased;
                r = writer.flush(), if flushing => {
                    r?;
                    self.last_sent = Instant::now();
                }
                cmd = rx.recv() => {
                    // Our sender lives in the registry until our own
                    // Registration drops, so the channel cannot close first.
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.on_command(cmd, writer)?;
                    for _ in 0..MAX_BATCH {
                        let Ok(cmd) = rx.try_recv() else { break };
                        self.on_command(cmd, writer)?;
                    }
                    self.sync(writer)?;
                }
                msg = reader.recv(), if writer.buffered() < READ_PAUSE_BACKLOG => {
                    self.last_message = Instant::now();
                    self.on_message(msg?, writer)?;
                    for _ in 0..MAX_BATCH {
                        if writer.buffered() >= READ_PAUSE_BACKLOG {
                            break;
                        }
                        let Some(msg) = reader.try_recv()? else { break };
                        self.on_message(msg, writer)?;
                    }
                    self.sync(writer)?;
                }
                done = join(&mut read_job) => {
                    read_job = None;
                    self.on_read(done, writer)?;
                }
                _ = sleep_until(hold) => {
                    self.request_hold = self.request_hold.filter(|&t| t > Instant::now());
                    self.upload_hold = self.upload_hold.filter(|&t| t > Instant::now());
                    self.sync(writer)?;
                }
                _ = tick.tick() => {
                    self.on_tick(writer)?;
                    self.sync(writer)?;
                }
            }
        }
    }

    fn on_message(&mut self, msg: Message, w: &mut ConnectionWriter) -> Result<(), PeerError> {
        match msg {
            Message::Piece(block) => self.blocks.push(block),
            Message::Request(r) => self.on_request(r, w)?,
            Message::Have(i) => {
                let piece = self.layout.piece(i).ok_or(PeerError::Misbehaved(
                    "have for a piece that does not exist",
                ))?;
                self.announced = true;
                if self.theirs.set(i) {
                    self.shared.lock().picker.peer_have(self.key, piece);
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
                    Message::Bitfield(bits) => {
                        Bitfield::from_wire(&bits, self.layout.piece_count())?
                    }
                    Message::HaveAll if self.fast => Bitfield::full(self.layout.piece_count()),
                    _ => return Ok(()),
                };
                let added: Vec<u32> = update.iter_ones().filter(|&i| self.theirs.set(i)).collect();
                let mut st = self.shared.lock();
                for piece in added.into_iter().filter_map(|i| self.layout.piece(i)) {
                    st.picker.peer_have(self.key, piece);
                }
            }
            Message::Bitfield(bits) => {
                self.announced = true;
                let bits = Bitfield::from_wire(&bits, self.layout.piece_count())?;
                self.theirs = bits.clone();
                self.shared.lock().picker.peer_bitfield(self.key, bits);
            }
            Message::HaveAll | Message::HaveNone if !self.fast => {
                return Err(PeerError::Misbehaved(
                    "fast message without the fast extension",
                ));
            }
            Message::HaveAll => {
                self.announced = true;
                self.theirs = Bitfield::full(self.layout.piece_count());
                self.shared.lock().picker.peer_have_all(self.key);
            }
            Message::HaveNone => self.announced = true,
            Message::KeepAlive | Message::Port(_) => {}
            // Advice we do not act on; harmless even without the fast bit.
            Message::Suggest(_) | Message::AllowedFast(_) => {}
            Message::Choke => {
                self.choking_us = true;
                // Without the fast extension a choke silently drops our
                // requests; with it, each is answered by a reject.
                if !self.fast {
                    self.pipeline.take_all();
                    let mut st = self.shared.lock();
                    st.picker.peer_choked(self.key);
                    st.broadcast(PeerCmd::Wake, Some(self.key));
                }
                self.set_entry(|e| e.choking_us = true);
            }
            Message::Unchoke => {
                self.choking_us = false;
                self.set_entry(|e| e.choking_us = false);
            }
            Message::Interested => self.set_entry(|e| e.interested = true),
            Message::NotInterested => self.set_entry(|e| e.interested = false),
            Message::Cancel(r) => {
                if self.uploads.cancel(r) && self.fast {
                    w.feed(&Message::Reject(r));
                }
            }
            Message::Reject(_) if !self.fast => {
                return Err(PeerError::Misbehaved("reject without the fast extension"));
            }
            Message::Reject(r) => {
                // A reject for something we no longer wait for is a race
                // with our cancel: ignore it.
                if let Some(b) = self.layout.block_at(r.index, r.begin, r.length)
                    && self.pipeline.remove(b)
                {
                    self.rejected.push(b);
                }
            }
            Message::Extended { id: 0, payload } => {
                // A malformed extension handshake costs the extensions,
                // not the peer.
                if let Ok(h) = ExtendedHandshake::decode(&payload) {
                    self.their_metadata_id = h.extension_id(UT_METADATA);
                    if let Some(reqq) = h.reqq {
                        self.pipeline.set_peer_cap(reqq);
                    }
                }
            }
            Message::Extended {
                id: OUR_UT_METADATA_ID,
                payload,
            } => self.on_metadata(&payload, w)?,
            Message::Extended { .. } | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    fn set_entry(&self, f: impl FnOnce(&mut PeerEntry)) {
        if let Some(e) = self.shared.lock().peers.get_mut(&self.key) {
            f(e);
        }
    }

    fn on_request(&mut self, r: BlockRequest, w: &mut ConnectionWriter) -> Result<(), PeerError> {
        let serving = !self.choking_them;
        let servable = &self.servable;
        match self
            .uploads
            .admit(&self.layout, r, |i| serving && servable.get(i))
        {
            Admission::Queued => {}
            Admission::Refused => {
                if !self.refused_requests.record() {
                    return Err(PeerError::Misbehaved("too many refused requests"));
                }
                if self.fast {
                    w.feed(&Message::Reject(r));
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
    fn on_metadata(&mut self, payload: &[u8], w: &mut ConnectionWriter) -> Result<(), PeerError> {
        let Some(their_id) = self.their_metadata_id else {
            return Ok(());
        };
        let Ok(lodestone_metadata::Message::Request { piece }) =
            lodestone_metadata::Message::decode(payload)
        else {
            return Ok(());
        };
        let raw = self.shared.metainfo.raw_info();
        let reply = lodestone_metadata::respond(Some(raw), &mut self.metadata_budget, piece);
        if matches!(reply, lodestone_metadata::Message::Reject { .. })
            && !self.refused_requests.record()
        {
            return Err(PeerError::Misbehaved("too many refused metadata requests"));
        }
        w.feed(&Message::Extended {
            id: their_id,
            payload: Bytes::from(reply.to_vec()),
        });
        Ok(())
    }

    fn on_command(&mut self, cmd: PeerCmd, w: &mut ConnectionWriter) -> Result<(), PeerError> {
        match cmd {
            PeerCmd::Have(piece) => {
                self.servable.set(piece.get());
                w.feed(&Message::Have(piece.get()));
            }
            PeerCmd::Cancel(b) => {
                if self.pipeline.remove(b) {
                    w.feed(&Message::Cancel(self.request_for(b)));
                }
            }
            PeerCmd::Choke(true) if !self.choking_them => {
                self.choking_them = true;
                w.feed(&Message::Choke);
                for r in self.uploads.clear() {
                    if self.fast {
                        w.feed(&Message::Reject(r));
                    }
                }
            }
            PeerCmd::Choke(false) if self.choking_them => {
                self.choking_them = false;
                w.feed(&Message::Unchoke);
            }
            PeerCmd::Choke(_) | PeerCmd::Wake => {}
            PeerCmd::Close(reason) => return Err(PeerError::Closed(reason)),
        }
        Ok(())
    }

    fn request_for(&self, b: BlockIndex) -> BlockRequest {
        BlockRequest {
            index: b.piece().get(),
            begin: b.begin(),
            length: self.layout.block_len(b),
        }
    }

    /// Accepts the batch's blocks, updates interest and tops up requests,
    /// all under one lock; queues the resulting messages.
    fn sync(&mut self, w: &mut ConnectionWriter) -> Result<(), PeerError> {
        let shared = self.shared.clone();
        let now = Instant::now();
        let mut st = shared.lock();
        if !self.blocks.is_empty() {
            self.accept_blocks(&mut st, now)?;
        }
        for b in self.rejected.drain(..) {
            st.picker.request_failed(self.key, b);
        }
        let interesting = st.picker.is_interesting(self.key);
        if interesting != self.am_interested {
            self.am_interested = interesting;
            w.feed(if interesting {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
        if st.picker.is_complete() && self.theirs.is_full() {
            // Two seeds have nothing to say to each other.
            return Err(PeerError::Closed(CloseReason::Done));
        }
        let may_request = !self.choking_us
            && self.am_interested
            && self.request_hold.is_none()
            && st.assembly.hashing() < shared.hash_backlog;
        if !may_request {
            return Ok(());
        }
        let mut room = self.pipeline.room();
        if st.picker.in_endgame() {
            // Every request now duplicates one outstanding elsewhere, most
            // likely near the front of that peer's queue and about to
            // arrive: only a peer with nothing left to do takes a few.
            room = if self.pipeline.outstanding() == 0 {
                ENDGAME_DEPTH
            } else {
                0
            };
        }
        if room == 0 {
            return Ok(());
        }
        let requests = st.picker.next_requests(self.key, room);
        if let Some(limit) = &st.download_limit
            && !requests.is_empty()
        {
            let bytes = requests
                .iter()
                .map(|&b| u64::from(self.layout.block_len(b)));
            let wait = limit.acquire(now, bytes.sum());
            if !wait.is_zero() {
                self.request_hold = Some(now + wait);
            }
        }
        drop(st);
        self.pipeline.requested(&requests, room, now);
        for &b in &requests {
            w.feed(&Message::Request(self.request_for(b)));
        }
        Ok(())
    }

    fn accept_blocks(&mut self, st: &mut State, now: Instant) -> Result<(), PeerError> {
        let mut blocks = std::mem::take(&mut self.blocks);
        for block in blocks.drain(..) {
            let len = block.data.len();
            let b = u32::try_from(len)
                .ok()
                .and_then(|l| self.layout.block_at(block.index, block.begin, l))
                .ok_or(PeerError::Misbehaved("block outside the torrent"))?;
            self.pipeline.record_bytes(now, len as u64);
            if !self.pipeline.received(b, now) && !self.unsolicited.record() {
                return Err(PeerError::Misbehaved("too many unrequested blocks"));
            }
            st.counters.downloaded += len as u64;
            st.counters.down_rate.record(now, len as u64);
            match st.picker.block_received(self.key, b) {
                BlockOutcome::Accepted {
                    cancel,
                    piece_complete,
                } => {
                    st.assembly.put(&self.layout, b, &block.data, self.key);
                    for other in cancel {
                        if let Some(p) = st.peers.get(&other) {
                            let _ = p.tx.send(PeerCmd::Cancel(b));
                        }
                    }
                    if piece_complete
                        && let Some(data) = st.assembly.take(b.piece())
                        && let Some(pool) = &st.pool
                    {
                        pool.submit(b.piece(), data);
                    }
                }
                BlockOutcome::Unwanted => st.counters.wasted += len as u64,
            }
        }
        self.blocks = blocks;
        Ok(())
    }

    fn on_tick(&mut self, w: &mut ConnectionWriter) -> Result<(), PeerError> {
        let now = Instant::now();
        if self.pipeline.stalled(now, self.shared.stall_timeout) {
            return Err(PeerError::Stalled);
        }
        if now.saturating_duration_since(self.last_message) > IDLE_TIMEOUT {
            return Err(PeerError::Idle);
        }
        if now.saturating_duration_since(self.last_sent) > KEEPALIVE {
            w.feed(&Message::KeepAlive);
        }
        self.unsolicited.decay();
        self.refused_requests.decay();
        let (down, up) = (self.pipeline.rate(now), self.up_rate.rate(now));
        self.set_entry(|e| {
            e.download_rate = down;
            e.upload_rate = up;
        });
        Ok(())
    }

    fn may_read(&self, now: Instant, w: &ConnectionWriter) -> bool {
        !self.choking_them
            && !self.uploads.is_empty()
            && w.buffered() < UPLOAD_BUFFER
            && self.upload_hold.is_none_or(|t| t <= now)
    }

    fn next_hold(&self) -> Option<Instant> {
        match (self.request_hold, self.upload_hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads the next batch of queued requests on a blocking thread, into
    /// one buffer that the blocks are then sliced from.
    fn start_read(&mut self) -> ReadJob {
        let batch = self.uploads.next_batch();
        let storage = self.shared.storage.clone();
        tokio::task::spawn_blocking(move || {
            let total = batch.iter().map(|p| p.request.length as usize).sum();
            let mut buf = vec![0u8; total];
            let mut at = 0;
            for p in &batch {
                let len = p.request.length as usize;
                storage.read(p.offset, &mut buf[at..at + len])?;
                at += len;
            }
            let buf = Bytes::from(buf);
            let mut at = 0;
            Ok(batch
                .iter()
                .map(|p| {
                    let len = p.request.length as usize;
                    at += len;
                    (p.request, buf.slice(at - len..at))
                })
                .collect())
        })
    }

    fn on_read(
        &mut self,
        done: Result<Result<Vec<(BlockRequest, Bytes)>, StorageError>, tokio::task::JoinError>,
        w: &mut ConnectionWriter,
    ) -> Result<(), PeerError> {
        let blocks = match done {
            Ok(result) => result?,
            // The blocking task panicked: a bug, already reported; the
            // requests are simply not served.
            Err(_) => return Ok(()),
        };
        let now = Instant::now();
        let mut bytes = 0u64;
        for (r, data) in blocks {
            if self.choking_them {
                if self.fast {
                    w.feed(&Message::Reject(r));
                }
                continue;
            }
            bytes += data.len() as u64;
            w.feed(&Message::Piece(Block {
                index: r.index,
                begin: r.begin,
                data,
            }));
        }
        self.up_rate.record(now, bytes);
        let mut st = self.shared.lock();
        st.counters.uploaded += bytes;
        st.counters.up_rate.record(now, bytes);
        if let Some(limit) = &st.upload_limit {
            let wait = limit.acquire(now, bytes);
            if !wait.is_zero() {
                self.upload_hold = Some(now + wait);
            }
        }
        Ok(())
    }
}

/// Waits for the read job if there is one; never completes otherwise.
async fn join<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match job {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
