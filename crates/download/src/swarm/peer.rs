//! The task that drives one peer connection: a pump around its
//! [`PeerSession`].
//!
//! The protocol lives in the sans-IO session; this task only moves bytes,
//! time and storage reads. One `select!` loop flushes writes, takes
//! commands, reads messages, collects storage reads and wakes at the
//! session's timeout, so reading does not wait on writing (two clients
//! uploading to each other with full socket buffers cannot deadlock); only
//! a backlog no honest exchange reaches ([`READ_PAUSE_BACKLOG`]) pauses
//! reading, so a peer that never reads cannot make us buffer without end.
//! Every message already buffered is handed to the session before the
//! shared state is locked once for the whole batch, for the session's
//! [`PeerSession::update`]; its messages then go out in one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use lodestone_core::{PeerId, host_of};
use lodestone_wire::pex::PexReport;
use lodestone_wire::{
    BlockRequest, ConnectionReader, ConnectionWriter, Decoder, Established, ListenReport,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::read_buffers::ReadBuffers;
use super::session::{
    CloseReason, Greeting, PeerCmd, PeerError, PeerEvent, PeerSession, ReadRequest,
};
use super::shared::{PeerEntry, Shared};
use crate::picker::PeerKey;
use crate::storage::{Storage, StorageError};

/// Messages handled per batch before the state is synced (bounds latency).
const MAX_BATCH: usize = 512;

/// Bytes queued to the peer above which we stop reading its messages.
/// Requests, metadata requests and rejects all make us write; a peer that
/// sends them without reading our answers would otherwise grow this buffer
/// without limit. Above the session's upload buffer plus one storage read,
/// so an honest peer downloading at full speed is never paused by it.
const READ_PAUSE_BACKLOG: usize = 2 << 20;

/// A storage read's blocks, each a slice of the one buffer they were read
/// into, and that whole buffer, to be used again once they are sent.
type ReadJob = JoinHandle<Result<(Vec<(BlockRequest, Bytes)>, Bytes), StorageError>>;

/// Removes the peer from the shared state however its task ends (error,
/// return, or abort at shutdown), so its requests go back to the picker.
struct Registration {
    shared: Arc<Shared>,
    key: PeerKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.peers.remove(&self.key).is_some_and(|e| e.interested) {
            // It may have held an upload slot, which another can have now.
            self.shared.rechoke.notify_one();
        }
        st.torrent.peer_gone(self.key);
        st.dispatch();
    }
}

/// Whether a new connection to a peer already connected replaces the one
/// we hold (`incoming`: the peer dialed the new one), or is closed.
///
/// "Already connected" means the same peer id from the same host (an IPv4
/// address, an IPv6 /64). A peer id proves nothing, and anyone who
/// connected to an honest peer has its id: matched across hosts, a copy
/// closed the honest peer's connection. Across hosts both are kept here;
/// a peer that matches ids across hosts (libtorrent does) may close one
/// itself, and the session then backs that address off.
///
/// Both sides must close the same one, or both connections go. The rule is
/// libtorrent's: a connection dialed by the peer with the greater id
/// replaces the one held; one dialed by the lesser is closed. When each
/// side dialed the other at once (the usual way to meet twice), the two
/// connections were dialed by different sides, so both ends keep the one
/// the greater id dialed, whatever order they saw them in. When one side
/// dialed both (a second port of the peer's), the ends agree only if
/// they saw the two in the same order; otherwise both close, and the
/// address book's backoff makes the next try later.
pub(crate) fn keeps_new_connection(ours: PeerId, theirs: PeerId, incoming: bool) -> bool {
    if incoming {
        theirs > ours
    } else {
        ours > theirs
    }
}

/// How a connection's task ended.
#[derive(Debug)]
pub(crate) struct PeerEnd {
    /// Why it ended, if not by our own or the peer's orderly close.
    pub(crate) result: Result<(), PeerError>,
    /// Piece data crossed it, either way ([`PeerSession::exchanged`]).
    pub(crate) exchanged: bool,
}

impl From<PeerError> for PeerEnd {
    /// An end before any piece data could cross.
    fn from(e: PeerError) -> Self {
        Self {
            result: Err(e),
            exchanged: false,
        }
    }
}

/// Runs a handshaken connection until it ends. One handed over from the
/// metadata phase may have sent our first message already
/// ([`Established::greeted`], then [`Greeting::HandedOver`]) and carries
/// what the peer sent meanwhile (its bitfield, `have`s, extension
/// handshake), handled first.
pub(crate) async fn run(shared: Arc<Shared>, key: PeerKey, established: Established) -> PeerEnd {
    let Established {
        conn,
        theirs,
        addr,
        early,
        greeted,
        incoming,
        pex,
    } = established;
    if theirs.peer_id == shared.handshake.peer_id {
        return PeerError::Ourselves.into();
    }
    let now = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut session = {
        let mut st = shared.lock();
        let ours = shared.handshake.peer_id;
        let host = host_of(addr.ip());
        let same_peer = |p: &&PeerEntry| p.id == theirs.peer_id && p.host == host;
        if let Some(other) = st.peers.values().find(same_peer) {
            if !keeps_new_connection(ours, theirs.peer_id, incoming) {
                return PeerError::Duplicate.into();
            }
            let _ = other.tx.send(PeerCmd::Close(CloseReason::Duplicate));
        }
        st.peers.insert(
            key,
            PeerEntry {
                id: theirs.peer_id,
                host,
                tx,
                connected_at: now,
                interested: false,
                choking_us: true,
                download_rate: 0.0,
                upload_rate: 0.0,
                exchanged: false,
            },
        );
        let config = shared.session.clone();
        let greeting = if greeted {
            Greeting::HandedOver
        } else {
            Greeting::Fresh
        };
        let peer = (theirs.reserved, addr);
        let mut session = PeerSession::new(now, config, key, peer, greeting, &mut st.torrent);
        session.carry_pex_inbox(pex);
        session
    };
    let _registration = Registration {
        shared: shared.clone(),
        key,
    };
    let (mut reader, mut writer) = conn.into_split();
    reader.set_decoder(Decoder::new().with_piece_count(shared.layout.piece_count()));
    if !incoming {
        session.dialed_at(addr);
    }
    for message in early {
        session.handle_message(now, message);
    }
    update(&shared, &mut session);
    let result = pump(&shared, &mut session, &mut reader, &mut writer, &mut rx).await;
    PeerEnd {
        result,
        exchanged: session.exchanged(),
    }
}

/// Moves the session's outputs to the socket and storage and its inputs
/// from them, until the session closes or the connection fails.
async fn pump(
    shared: &Shared,
    session: &mut PeerSession,
    reader: &mut ConnectionReader,
    writer: &mut ConnectionWriter,
    rx: &mut mpsc::UnboundedReceiver<PeerCmd>,
) -> Result<(), PeerError> {
    let mut read_job: Option<ReadJob> = None;
    let mut read_buffers = ReadBuffers::default();
    loop {
        while let Some(message) = session.poll_transmit() {
            writer.feed(&message);
        }
        // What is still unsent, including what a cancelled flush already
        // wrote: the session reads more upload data once it drops.
        session.handle_sent(Instant::now(), writer.buffered());
        while let Some(event) = session.poll_event() {
            match event {
                PeerEvent::Read(batch) => {
                    read_job = Some(start_read(shared.storage.clone(), batch, &mut read_buffers));
                }
                PeerEvent::Pex(peers) => {
                    if let Some(pex) = &shared.pex {
                        // A full queue drops the hint: PEX is best effort.
                        let _ = pex.try_send(PexReport {
                            from: session.addr(),
                            peers,
                        });
                    }
                }
                PeerEvent::Listening(listen) => {
                    if let Some(book) = &shared.listening {
                        // Best effort, like PEX: a full queue drops it.
                        let _ = book.try_send(ListenReport {
                            conn: session.addr(),
                            listen,
                        });
                    }
                }
                PeerEvent::DhtPort(port) => {
                    if let Some(nodes) = &shared.dht_nodes {
                        // Best effort, like PEX: a full queue drops it.
                        let _ = nodes.try_send(SocketAddr::new(session.addr().ip(), port));
                    }
                }
                PeerEvent::HolepunchConnect(addr) => {
                    if let Some(holepunch) = &shared.holepunch {
                        // Best effort, like PEX: a full queue drops it.
                        let _ = holepunch.try_send(addr);
                    }
                }
                PeerEvent::Closed(e) => return Err(e),
            }
        }
        if read_job.is_none() && session.uploads_queued() == 0 {
            // Nothing left to serve: a connection not uploading holds no
            // read buffers.
            read_buffers.clear();
        }
        let deadline = session.poll_timeout();
        let flushing = writer.needs_flush();
        tokio::select! {
            biased;
            r = writer.flush(), if flushing => r?,
            cmd = rx.recv() => {
                // Our sender lives in the registry until our own
                // Registration drops, so the channel cannot close first.
                let Some(cmd) = cmd else { return Ok(()) };
                let now = Instant::now();
                session.handle_command(now, cmd);
                for _ in 0..MAX_BATCH {
                    let Ok(cmd) = rx.try_recv() else { break };
                    session.handle_command(now, cmd);
                }
                update(shared, session);
            }
            msg = reader.recv(), if writer.buffered() < READ_PAUSE_BACKLOG => {
                let now = Instant::now();
                session.handle_message(now, msg?);
                for _ in 0..MAX_BATCH {
                    if writer.buffered() >= READ_PAUSE_BACKLOG || session.is_closed() {
                        break;
                    }
                    let Some(msg) = reader.try_recv()? else { break };
                    session.handle_message(now, msg);
                }
                update(shared, session);
            }
            done = join(&mut read_job) => {
                read_job = None;
                let blocks = match done {
                    Ok(Ok((blocks, whole))) => {
                        read_buffers.keep(whole);
                        Ok(blocks)
                    }
                    Ok(Err(e)) => Err(e),
                    // A panicked read task is a bug, already reported; its
                    // requests are simply not served.
                    Err(_) => Ok(Vec::new()),
                };
                session.handle_read(Instant::now(), blocks);
                update(shared, session);
            }
            _ = sleep_until(deadline) => {
                session.handle_timeout(Instant::now());
                update(shared, session);
            }
        }
    }
}

/// Runs the session's update under the lock, publishes what the choker and
/// progress need, and carries out the torrent's actions.
fn update(shared: &Shared, session: &mut PeerSession) {
    let now = Instant::now();
    let mut st = shared.lock();
    session.update(now, &mut st.torrent);
    if let Some(e) = st.peers.get_mut(&session.key()) {
        let interested = session.peer_interested();
        if e.interested != interested {
            e.interested = interested;
            // Notifications coalesce: a peer flipping its interest costs at
            // most one choker run per batch of its messages. Not metered:
            // an honest peer trading pieces with us may flip once a piece.
            shared.rechoke.notify_one();
        }
        e.choking_us = session.choking_us();
        (e.download_rate, e.upload_rate) = session.rates();
        e.exchanged = session.exchanged();
    }
    st.dispatch();
}

/// Reads a batch of requested blocks on a blocking thread, into one buffer
/// from `buffers` that the blocks are then sliced from.
fn start_read(
    storage: Arc<Storage>,
    batch: Vec<ReadRequest>,
    buffers: &mut ReadBuffers,
) -> ReadJob {
    let total = batch.iter().map(|p| p.request.length as usize).sum();
    let mut buf = buffers.take(total);
    tokio::task::spawn_blocking(move || {
        let mut at = 0;
        for p in &batch {
            let len = p.request.length as usize;
            storage.read(p.offset, &mut buf[at..at + len])?;
            at += len;
        }
        let buf = buf.freeze();
        let mut at = 0;
        let blocks = batch
            .iter()
            .map(|p| {
                let len = p.request.length as usize;
                at += len;
                (p.request, buf.slice(at - len..at))
            })
            .collect();
        Ok((blocks, buf))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_dialed_by_the_greater_id_is_kept() {
        let (low, high) = (PeerId::new([1; 20]), PeerId::new([2; 20]));
        // Ours the greater: a connection we dialed replaces, one it dialed
        // is closed; and the other way round.
        assert!(keeps_new_connection(high, low, false));
        assert!(!keeps_new_connection(high, low, true));
        assert!(!keeps_new_connection(low, high, false));
        assert!(keeps_new_connection(low, high, true));
    }

    #[test]
    fn both_sides_keep_the_same_connection() {
        let ids = [PeerId::new([1; 20]), PeerId::new([2; 20])];
        for (ours, theirs) in [(ids[0], ids[1]), (ids[1], ids[0])] {
            // Each dialed the other at once: our dial is their incoming.
            // Each side holds its first and judges the other as new.
            let we_keep_theirs = keeps_new_connection(ours, theirs, true);
            let they_keep_ours = keeps_new_connection(theirs, ours, true);
            assert_ne!(we_keep_theirs, they_keep_ours, "exactly one survives");
            // The same connection judged from both ends.
            for incoming in [false, true] {
                assert_eq!(
                    keeps_new_connection(ours, theirs, incoming),
                    keeps_new_connection(theirs, ours, !incoming)
                );
            }
        }
    }
}
