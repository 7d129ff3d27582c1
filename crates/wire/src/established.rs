//! A connection past the BitTorrent handshake, as it moves between the
//! parts of a client: from the dialer or the listener to the metadata fetch,
//! and from the metadata fetch to the download, so that each peer is
//! connected once from the handshake to the close.

use std::net::SocketAddr;

use crate::connection::Connection;
use crate::handshake::Handshake;
use crate::message::Message;
use crate::pex::PexInbox;

/// Most messages a peer may send before its connection changes hands.
/// A peer that announces its pieces with `have` one by one while we still
/// fetch the metadata sends about one per piece; past this bound it is
/// flooding, and the connection is closed instead of kept.
pub const MAX_EARLY_MESSAGES: usize = 4096;

/// A handshaken connection and what happened on it so far.
#[derive(Debug)]
pub struct Established {
    /// The connection, its read buffer and write queue intact.
    pub conn: Connection,
    /// The peer's handshake (its id and reserved bits).
    pub theirs: Handshake,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Whether the peer dialed us.
    pub incoming: bool,
    /// Messages the peer sent before the connection changed hands that the
    /// next owner must see (its bitfield, `have`s, its extension handshake),
    /// oldest first; at most [`MAX_EARLY_MESSAGES`].
    pub early: Vec<Message>,
    /// Whether our opening messages went out already: then the next owner
    /// must not send a `bitfield` (BEP 3 allows it only first) and announces
    /// its pieces with `have` instead.
    pub greeted: bool,
    /// What the peer's ut_pex messages gave so far: the next owner goes on
    /// counting its caps, so a hand-over does not grant a second allowance.
    pub pex: PexInbox,
}

impl Established {
    /// A connection fresh from the handshake.
    pub fn new(conn: Connection, theirs: Handshake, addr: SocketAddr, incoming: bool) -> Self {
        Self {
            conn,
            theirs,
            addr,
            incoming,
            early: Vec::new(),
            greeted: false,
            pex: PexInbox::default(),
        }
    }
}

/// How a connection handed to a phase ended, reported back to its owner
/// (the session's address book) so that it can count the slot free and
/// decide when, or whether, to dial the address again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExit {
    /// The peer's address.
    pub addr: SocketAddr,
    /// What the end says about the address.
    pub kind: ExitKind,
}

/// What a connection's end says about dialing its address again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It ended through no fault of the peer's after something of use
    /// crossed it (piece data either way, or metadata): a peer worth
    /// having, so its address may be dialed again soon.
    OfUse,
    /// It ended, or was refused, before anything of use crossed it: a peer
    /// that shakes hands and hangs up at once (a full one, say), or one
    /// neither side had a use for. Dialing it again soon would likely end
    /// the same way.
    Fruitless,
    /// The peer is connected through another connection, which is kept:
    /// dialing this address again soon would only meet it once more. (The
    /// session's address book files it like [`ExitKind::Fruitless`]; it is
    /// told apart for the tests.)
    Duplicate,
    /// The peer broke the protocol or sent bad data: never dial it again.
    Misbehaved,
}

impl ExitKind {
    /// The end of a connection nobody is to blame for: [`ExitKind::OfUse`]
    /// if it was `of_use`, else [`ExitKind::Fruitless`].
    pub fn blameless(of_use: bool) -> Self {
        if of_use { Self::OfUse } else { Self::Fruitless }
    }

    /// This kind, or [`ExitKind::Misbehaved`] if the peer misbehaved.
    pub fn or_misbehaved(self, misbehaved: bool) -> Self {
        if misbehaved { Self::Misbehaved } else { self }
    }
}

impl PeerExit {
    /// The end of the connection to `addr`.
    pub fn new(addr: SocketAddr, kind: ExitKind) -> Self {
        Self { addr, kind }
    }

    /// Whether the peer misbehaved.
    pub fn misbehaved(&self) -> bool {
        self.kind == ExitKind::Misbehaved
    }
}
