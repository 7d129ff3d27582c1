//! One connection during the metadata phase: greets the peer, passes its
//! ut_metadata messages to the loop, says where a peer that dialed us
//! listens, keeps what the download will need, and gives the connection
//! back intact when the loop asks.

use std::net::SocketAddr;

use bytes::Bytes;
use lodestone_core::ErrorChain;
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::pex::{PexInbox, PexReport};
use lodestone_wire::{
    Connection, ConnectionError, ConnectionReader, ConnectionWriter, Established,
    ExtendedHandshake, Handshake, ListenReport, MAX_EARLY_MESSAGES, Message, OUR_UT_METADATA_ID,
    OUR_UT_PEX_ID, Reserved, encoded_len, our_extensions,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

/// Most bytes of early messages kept per connection. One `bitfield` of the
/// largest torrent the codec accepts (256 KiB) fits several times over;
/// past it the peer is flooding (say, with repeated 32 KiB extension
/// handshakes), and [`MAX_EARLY_MESSAGES`] alone would let it pin 128 MiB.
pub(super) const MAX_EARLY_BYTES: usize = 1 << 20;

/// A connection's number in the loop: addresses are not unique keys (an
/// incoming and an outgoing connection may share one).
pub(super) type ConnId = u64;

/// What a connection task reports to the loop.
pub(super) enum PeerEvent {
    /// An extension handshake arrived (BEP 10 allows several).
    Handshake {
        /// Whether it offers ut_metadata.
        ut_metadata: bool,
        /// Its `metadata_size`, as claimed.
        metadata_size: Option<u64>,
    },
    /// A ut_metadata payload sent under our id.
    Metadata(Bytes),
    /// The connection ended on its own.
    Closed {
        /// Whether the peer broke the protocol or flooded us.
        misbehaved: bool,
    },
}

/// What the loop tells a connection task. Dropping the sender closes the
/// connection.
pub(super) enum Command {
    /// Send this ut_metadata payload.
    Send(Bytes),
    /// Stop and give the connection back for the next phase.
    HandOver(oneshot::Sender<Established>),
}

/// The settings every connection task shares.
#[derive(Clone)]
pub(super) struct Greeting {
    /// `v` in our extension handshake.
    pub client_name: Option<String>,
    /// `p` in our extension handshake.
    pub listen_port: Option<u16>,
    /// Where peers learned by ut_pex go; `None` turns ut_pex off.
    pub pex: Option<mpsc::Sender<PexReport>>,
    /// Where the listen addresses of peers that dialed us go.
    pub listening: Option<mpsc::Sender<ListenReport>>,
}

/// Why a connection task stopped, for the log and the `misbehaved` flag.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("peer sent a malformed extension handshake")]
    BadExtensionHandshake,
    #[error("peer announced its pieces twice")]
    AnnouncedTwice,
    #[error("peer sent more than {MAX_EARLY_MESSAGES} messages or {MAX_EARLY_BYTES} bytes")]
    Flood,
    #[error("the loop let the connection go")]
    Released,
    #[error("the connection changed hands")]
    HandedOver,
}

impl End {
    fn misbehaved(&self) -> bool {
        match self {
            End::Connection(e) => matches!(e, ConnectionError::Protocol(_)),
            End::BadExtensionHandshake | End::AnnouncedTwice | End::Flood => true,
            End::Released | End::HandedOver => false,
        }
    }
}

/// The state of one connection task.
pub(super) struct PeerTask {
    id: ConnId,
    theirs: Handshake,
    addr: SocketAddr,
    incoming: bool,
    early: Vec<Message>,
    early_bytes: usize,
    /// Whether a `bitfield`, `have_all` or `have_none` was kept already.
    announced: bool,
    /// Whether we sent the peer anything yet (see [`Established::greeted`]).
    greeted: bool,
    /// The id the peer receives ut_metadata under, once it offered it.
    their_id: Option<u8>,
    events: mpsc::Sender<(ConnId, PeerEvent)>,
    /// Where ut_pex reports go, if ut_pex is on.
    pex: Option<mpsc::Sender<PexReport>>,
    pex_inbox: PexInbox,
    /// Where a peer that dialed us listens goes, once; `None` once sent,
    /// for a peer we dialed, or when nobody keeps addresses.
    listening: Option<mpsc::Sender<ListenReport>>,
}

impl PeerTask {
    /// Runs the connection until it ends, the loop drops it or asks for it
    /// back.
    pub(super) async fn run(
        id: ConnId,
        established: Established,
        greeting: Greeting,
        events: mpsc::Sender<(ConnId, PeerEvent)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let Established {
            conn,
            theirs,
            addr,
            incoming,
            early,
            greeted,
            pex: pex_inbox,
        } = established;
        let early_bytes = early.iter().map(encoded_len).sum();
        let announced = early.iter().any(is_announcement);
        let mut task = PeerTask {
            id,
            theirs,
            addr,
            incoming,
            early,
            early_bytes,
            announced,
            greeted,
            their_id: None,
            events,
            pex: greeting.pex.clone(),
            pex_inbox,
            listening: greeting.listening.clone().filter(|_| incoming),
        };
        let (reader, writer) = conn.into_split();
        let end = task.talk(reader, writer, &greeting, &mut commands).await;
        let end = match end {
            End::HandedOver | End::Released => return,
            end => end,
        };
        tracing::debug!(peer = %task.addr, end = %ErrorChain(&end), "metadata peer closed");
        let misbehaved = end.misbehaved();
        // The loop may be gone already; then nobody needs to know.
        let _ = task
            .events
            .send((task.id, PeerEvent::Closed { misbehaved }))
            .await;
        // Only now may a hand-over request fail: the loop then finds this
        // event and reports how the connection ended.
        drop(commands);
    }

    async fn talk(
        &mut self,
        mut reader: ConnectionReader,
        mut writer: ConnectionWriter,
        greeting: &Greeting,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> End {
        if !self.greeted
            && let Err(e) = self.greet(&mut writer, greeting).await
        {
            return e.into();
        }
        // A previous owner may have read the peer's extension handshake.
        let earlier = self.early.iter().rev().find_map(|message| match message {
            Message::Extended { id: 0, payload } => Some(payload.clone()),
            _ => None,
        });
        if let Some(payload) = earlier
            && let Err(end) = self.on_extension_handshake(&payload).await
        {
            return end;
        }
        loop {
            tokio::select! {
                message = reader.recv() => {
                    let result = match message {
                        Ok(message) => self.on_message(message).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                command = commands.recv() => {
                    // Everything queued goes out in one write.
                    let mut next = command;
                    loop {
                        match next {
                            Some(Command::Send(payload)) => self.feed_metadata(&mut writer, payload),
                            Some(Command::HandOver(reply)) => {
                                // Reunited, the halves keep every byte
                                // already read or still queued.
                                self.hand_over(Connection::unsplit(reader, writer), reply);
                                return End::HandedOver;
                            }
                            None => return End::Released,
                        }
                        next = match commands.try_recv() {
                            Ok(command) => Some(command),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => None,
                        };
                    }
                    if let Err(e) = writer.flush().await {
                        return e.into();
                    }
                }
            }
        }
    }

    /// Our opening messages: `have_none` where the fast extension asks for
    /// an announcement (BEP 6 wants exactly one right after the handshake,
    /// and we hold no piece yet), then our extension handshake.
    async fn greet(
        &mut self,
        writer: &mut ConnectionWriter,
        greeting: &Greeting,
    ) -> Result<(), ConnectionError> {
        // The session handshakes with lodestone's reserved bits.
        let ours = Reserved::LODESTONE;
        let mut sent = false;
        if ours.supports_fast() && self.theirs.reserved.supports_fast() {
            writer.feed(&Message::HaveNone);
            sent = true;
        }
        if ours.supports_extensions() && self.theirs.reserved.supports_extensions() {
            let handshake = ExtendedHandshake {
                // The metadata phase does not act on ut_holepunch: offered once
                // the download takes the connection over.
                m: our_extensions(greeting.pex.is_some(), false),
                v: greeting.client_name.clone(),
                p: greeting.listen_port,
                yourip: Some(self.addr.ip()),
                ..ExtendedHandshake::default()
            };
            writer.feed(&handshake.to_message());
            sent = true;
        }
        // A peer with neither extension was sent nothing: the next owner
        // may still open with a bitfield.
        self.greeted = sent;
        writer.flush().await
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        match message {
            Message::Extended { id: 0, payload } => {
                self.on_extension_handshake(&payload).await?;
                self.keep(Message::Extended { id: 0, payload })
            }
            Message::Extended {
                id: OUR_UT_METADATA_ID,
                payload,
            } => self.report(PeerEvent::Metadata(payload)).await,
            Message::Extended {
                id: OUR_UT_PEX_ID,
                payload,
            } => {
                self.on_pex(&payload);
                Ok(())
            }
            // An id we never assigned: nobody can read it.
            Message::Extended { .. } => Ok(()),
            // Nothing the download needs: we choke everyone and requested
            // nothing in this phase, so requests, cancels, blocks and
            // rejects refer to nothing.
            Message::KeepAlive
            | Message::Request(_)
            | Message::Cancel(_)
            | Message::Piece(_)
            | Message::Reject(_)
            | Message::Unknown { .. } => Ok(()),
            message => {
                if is_announcement(&message) {
                    if self.announced {
                        return Err(End::AnnouncedTwice);
                    }
                    self.announced = true;
                }
                self.keep(message)
            }
        }
    }

    /// Learns the peer's ut_metadata id from its extension handshake and
    /// tells the loop; passes on where a peer that dialed us listens, so
    /// that it is redialed there even if it leaves before the download
    /// (which reports it again, to no effect).
    async fn on_extension_handshake(&mut self, payload: &[u8]) -> Result<(), End> {
        let handshake =
            ExtendedHandshake::decode(payload).map_err(|_| End::BadExtensionHandshake)?;
        if let Some(listen) = handshake.listen_addr(self.addr.ip())
            && let Some(book) = self.listening.take()
        {
            // A full queue drops it: the owner is busy, and it is a hint.
            let _ = book.try_send(ListenReport {
                conn: self.addr,
                listen,
            });
        }
        self.their_id = handshake.extension_id(UT_METADATA);
        self.report(PeerEvent::Handshake {
            ut_metadata: self.their_id.is_some(),
            metadata_size: handshake.metadata_size,
        })
        .await
    }

    /// Passes the peers of a ut_pex message on, within the inbox's caps.
    /// A malformed one costs its addresses, not the peer; a full queue
    /// drops them (the owner is busy, and PEX is only a hint).
    fn on_pex(&mut self, payload: &[u8]) {
        let Some(pex) = &self.pex else { return };
        match self.pex_inbox.receive(std::time::Instant::now(), payload) {
            Ok(peers) if !peers.is_empty() => {
                let _ = pex.try_send(PexReport {
                    from: self.addr,
                    peers,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(peer = %self.addr, "bad ut_pex message: {e}"),
        }
    }

    /// Keeps a message for the download, within the flood bounds.
    fn keep(&mut self, message: Message) -> Result<(), End> {
        self.early_bytes += encoded_len(&message);
        if self.early.len() >= MAX_EARLY_MESSAGES || self.early_bytes > MAX_EARLY_BYTES {
            return Err(End::Flood);
        }
        self.early.push(message);
        Ok(())
    }

    async fn report(&self, event: PeerEvent) -> Result<(), End> {
        self.events
            .send((self.id, event))
            .await
            .map_err(|_| End::Released)
    }

    /// Queues a ut_metadata payload for the next flush.
    fn feed_metadata(&self, writer: &mut ConnectionWriter, payload: Bytes) {
        // Without its id the peer cannot read ut_metadata from us.
        if let Some(id) = self.their_id {
            writer.feed(&Message::Extended { id, payload });
        }
    }

    /// Gives the connection back, with the messages kept for the download.
    fn hand_over(&mut self, conn: Connection, reply: oneshot::Sender<Established>) {
        // If the loop stopped waiting, the connection just closes.
        let _ = reply.send(Established {
            conn,
            theirs: self.theirs,
            addr: self.addr,
            incoming: self.incoming,
            early: std::mem::take(&mut self.early),
            greeted: self.greeted,
            pex: std::mem::take(&mut self.pex_inbox),
        });
    }
}

/// Whether `message` is one of the announcements BEP 3 and BEP 6 allow once,
/// first: `bitfield`, `have_all`, `have_none`.
fn is_announcement(message: &Message) -> bool {
    matches!(
        message,
        Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
    )
}
