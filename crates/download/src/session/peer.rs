//! The task driving one peer connection.
//!
//! One `select!` loop reads messages, flushes writes and takes commands, so
//! reading never waits on writing: two clients uploading to each other with
//! full socket buffers cannot deadlock. After each batch of messages the
//! request pipeline is topped up and our interest updated, and everything
//! queued goes out in one write.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lodestone_wire::{
    Block, BlockRequest, Connection, ConnectionError, ConnectionReader, ConnectionWriter, Decoder,
    Handshake, Message,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Command, PeerEntry, Shared};
use crate::bitfield::Bitfield;
use crate::layout::{BLOCK_SIZE, BlockIndex};
use crate::picker::{BlockOutcome, PeerKey};
use crate::rate::RateEstimator;

/// Why the peer was dropped (for the log).
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("peer sent a bad bitfield: {0}")]
    Bitfield(#[from] crate::bitfield::BitfieldError),
    #[error("peer sent nothing for {0:?} with requests outstanding")]
    Snubbed(Duration),
    #[error("both sides are seeds")]
    BothSeeds,
}

/// Per-connection state that only this task touches.
struct Conn {
    shared: Arc<Shared>,
    key: PeerKey,
    reader: ConnectionReader,
    writer: ConnectionWriter,
    fast: bool,
    in_flight: HashSet<BlockIndex>,
    peer_choking: bool,
    am_choking: bool,
    am_interested: bool,
    last_data: Instant,
}

/// Registers the peer, runs it until it fails or the session ends, and
/// unregisters it.
pub(super) async fn run(
    shared: Arc<Shared>,
    addr: SocketAddr,
    conn: Connection,
    theirs: Handshake,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let key = {
        let mut st = shared.lock();
        let key = PeerKey(st.next_key);
        st.next_key = st.next_key.wrapping_add(1);
        st.picker.peer_connected(key);
        st.peers.insert(
            key,
            PeerEntry {
                addr,
                tx,
                peer_interested: false,
                down: RateEstimator::standard(now.into_std()),
                up: RateEstimator::standard(now.into_std()),
                connected_at: now,
            },
        );
        key
    };
    let (mut reader, writer) = conn.into_split();
    reader.set_decoder(Decoder::new().with_piece_count(shared.layout.piece_count()));
    let mut c = Conn {
        shared: shared.clone(),
        key,
        reader,
        writer,
        fast: theirs.reserved.supports_fast(),
        in_flight: HashSet::new(),
        peer_choking: true,
        am_choking: true,
        am_interested: false,
        last_data: now,
    };
    let result = c.drive(rx).await;
    tracing::debug!(%addr, "peer gone: {result:?}");
    let mut st = shared.lock();
    st.picker.peer_gone(key);
    if let Some(p) = st.peers.remove(&key) {
        st.addrs.remove(&p.addr);
    }
}

impl Conn {
    async fn drive(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), PeerError> {
        self.send_have_state();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.top_up();
            tokio::select! {
                message = self.reader.recv() => {
                    self.handle(message?)?;
                    // Handle whatever else arrived in the same read before
                    // answering, so answers go out in one write.
                    while let Some(message) = self.reader.try_recv()? {
                        self.handle(message)?;
                    }
                }
                flushed = self.writer.flush(), if self.writer.buffered() > 0 => flushed?,
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return Ok(()),
                },
                _ = tick.tick() => self.tick()?,
            }
        }
    }

    /// Our first message: what we have.
    fn send_have_state(&mut self) {
        let have = self.shared.lock().picker.have().clone();
        let message = if self.fast && have.count_ones() == 0 {
            Message::HaveNone
        } else if self.fast && have.is_full() {
            Message::HaveAll
        } else if have.count_ones() > 0 {
            Message::Bitfield(Bytes::copy_from_slice(have.as_wire()))
        } else {
            return;
        };
        self.writer.feed(&message);
    }

    fn tick(&mut self) -> Result<(), PeerError> {
        let silent = self.last_data.elapsed();
        if !self.in_flight.is_empty() && silent > self.shared.config.snub_timeout {
            return Err(PeerError::Snubbed(silent));
        }
        let st = self.shared.lock();
        if st.picker.is_complete() && st.picker.peer_is_seed(self.key) {
            return Err(PeerError::BothSeeds);
        }
        Ok(())
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Have(piece) => self.writer.feed(&Message::Have(piece.get())),
            Command::Cancel(block) => {
                if self.in_flight.remove(&block) {
                    let request = self.request_of(block);
                    self.writer.feed(&Message::Cancel(request));
                }
            }
            Command::Choke(choke) => {
                if choke != self.am_choking {
                    self.am_choking = choke;
                    self.writer.feed(if choke {
                        &Message::Choke
                    } else {
                        &Message::Unchoke
                    });
                }
            }
        }
    }

    fn request_of(&self, block: BlockIndex) -> BlockRequest {
        BlockRequest {
            index: block.piece().get(),
            begin: block.begin(),
            length: self.shared.layout.block_len(block),
        }
    }

    /// Updates our interest and fills the request pipeline.
    fn top_up(&mut self) {
        let mut st = self.shared.lock();
        let interested = st.picker.is_interesting(self.key);
        if interested != self.am_interested {
            self.am_interested = interested;
            self.writer.feed(if interested {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
        if self.peer_choking || !interested || st.hashing >= self.shared.config.max_hashing {
            return;
        }
        let config = &self.shared.config;
        let now = Instant::now().into_std();
        let rate = st
            .peers
            .get_mut(&self.key)
            .map_or(0.0, |p| p.down.rate(now));
        // About half a second of this peer's rate.
        let target = ((rate * 0.5) as usize / BLOCK_SIZE as usize)
            .clamp(config.min_in_flight, config.max_in_flight);
        if self.in_flight.len() * 2 > target {
            // Refill in batches: fewer picks and fewer, larger writes.
            return;
        }
        let blocks = st
            .picker
            .next_requests(self.key, target - self.in_flight.len());
        drop(st);
        for block in blocks {
            self.in_flight.insert(block);
            let request = self.request_of(block);
            self.writer.feed(&Message::Request(request));
        }
    }

    fn handle(&mut self, message: Message) -> Result<(), PeerError> {
        let layout = &self.shared.layout;
        match message {
            Message::Bitfield(bits) => {
                let bits = Bitfield::from_wire(&bits, layout.piece_count())?;
                self.shared.lock().picker.peer_bitfield(self.key, bits);
            }
            Message::HaveAll => self.shared.lock().picker.peer_have_all(self.key),
            Message::Have(index) => {
                if let Some(piece) = layout.piece(index) {
                    self.shared.lock().picker.peer_have(self.key, piece);
                }
            }
            Message::Choke => {
                self.peer_choking = true;
                // With BEP 6 the peer rejects each request explicitly;
                // without it, a choke drops them all.
                if !self.fast {
                    self.in_flight.clear();
                    self.shared.lock().picker.peer_choked(self.key);
                }
            }
            Message::Unchoke => self.peer_choking = false,
            Message::Reject(r) => {
                if let Some(block) = layout.block_at(r.index, r.begin, r.length)
                    && self.in_flight.remove(&block)
                {
                    self.shared.lock().picker.request_failed(self.key, block);
                }
            }
            Message::Interested | Message::NotInterested => {
                let interested = matches!(message, Message::Interested);
                if let Some(p) = self.shared.lock().peers.get_mut(&self.key) {
                    p.peer_interested = interested;
                }
                self.shared.choke_wake.notify_one();
            }
            Message::Piece(block) => self.block(block),
            Message::Request(r) => self.serve(r),
            Message::KeepAlive
            | Message::HaveNone
            | Message::Cancel(_)
            | Message::Port(_)
            | Message::Suggest(_)
            | Message::AllowedFast(_)
            | Message::Extended { .. }
            | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    /// A block arrived: copy it into its piece, hand full pieces to the pool.
    fn block(&mut self, block: Block) {
        let len = block.data.len() as u64;
        let Some(index) = u32::try_from(block.data.len())
            .ok()
            .and_then(|n| self.shared.layout.block_at(block.index, block.begin, n))
        else {
            return;
        };
        self.in_flight.remove(&index);
        self.last_data = Instant::now();
        let now = self.last_data.into_std();
        let layout = &self.shared.layout;
        let mut st = self.shared.lock();
        st.downloaded += len;
        st.total_down.record(now, len);
        if let Some(p) = st.peers.get_mut(&self.key) {
            p.down.record(now, len);
        }
        let BlockOutcome::Accepted {
            cancel,
            piece_complete,
        } = st.picker.block_received(self.key, index)
        else {
            return;
        };
        for other in cancel {
            if let Some(p) = st.peers.get(&other) {
                let _ = p.tx.send(Command::Cancel(index));
            }
        }
        let piece = index.piece();
        let piece_len = layout.piece_len(piece) as usize;
        let st = &mut *st;
        let buffer = st.assembling.entry(piece).or_insert_with(|| {
            let mut buf = st.spare.pop().unwrap_or_default();
            buf.resize(piece_len, 0);
            buf
        });
        let begin = index.begin() as usize;
        buffer[begin..begin + block.data.len()].copy_from_slice(&block.data);
        if piece_complete && let Some(data) = st.assembling.remove(&piece) {
            st.hashing += 1;
            self.shared.pool.submit(piece, data);
        }
    }

    /// Answers a request if we unchoked the peer and have the piece.
    ///
    /// The read is a blocking `pread` on the async thread: a 16 KiB read
    /// from the page cache takes microseconds, cheaper than a hop to the
    /// blocking pool; a cold disk would stall this worker (see the report).
    fn serve(&mut self, r: BlockRequest) {
        if self.am_choking {
            if self.fast {
                self.writer.feed(&Message::Reject(r));
            }
            return;
        }
        let layout = &self.shared.layout;
        let storage = &self.shared.storage;
        let offset = layout.request_offset(r.index, r.begin, r.length);
        let stored = layout
            .piece(r.index)
            .is_some_and(|p| self.shared.lock().picker.have().get(p.get()) && storage.is_stored(p));
        let mut data = vec![0; r.length as usize];
        match offset {
            Some(offset) if stored && storage.read(offset, &mut data).is_ok() => {
                let now = Instant::now().into_std();
                let mut st = self.shared.lock();
                st.uploaded += u64::from(r.length);
                if let Some(p) = st.peers.get_mut(&self.key) {
                    p.up.record(now, u64::from(r.length));
                }
                drop(st);
                self.writer.feed(&Message::Piece(Block {
                    index: r.index,
                    begin: r.begin,
                    data: Bytes::from(data),
                }));
            }
            _ if self.fast => self.writer.feed(&Message::Reject(r)),
            _ => {}
        }
    }
}
