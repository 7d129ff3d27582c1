//! KRPC messages (BEP 5) with the BEP 32 (`nodes6`, `want`), BEP 42 (`ip`)
//! and BEP 43 (`ro`) additions: typed values, a decoder and a canonical encoder.
//!
//! Decoding walks the tree of [`lodestone_bencode::parse`] directly instead of
//! going through serde: it is faster, allocates only for node and peer lists,
//! and lets the decoder say *how* a datagram was bad, which decides the
//! answer:
//!
//! * not a KRPC dictionary at all → drop silently (answering garbage would
//!   make us an amplifier);
//! * a query for a method we do not know → error 204;
//! * a query with missing or ill-typed arguments → error 203;
//! * a malformed response or error → drop.
//!
//! Every list from the wire is bounded ([`MAX_NODES`], [`MAX_VALUES`]) and
//! transaction ids and tokens are short inline byte strings, so decoding a
//! query allocates nothing beyond the scanner's tape.

use std::fmt;
use std::net::SocketAddr;

use lodestone_bencode::{Dict, Limits, Value, Writer, parse};
use lodestone_core::compact::{self, Family};
use lodestone_core::{InfoHash, NodeAddr, NodeId};

/// Longest transaction id accepted; longer ones make the datagram "not KRPC".
pub const MAX_TID_LEN: usize = 16;
/// Longest write token accepted.
pub const MAX_TOKEN_LEN: usize = 32;
/// Most peers accepted in one `values` list.
pub const MAX_VALUES: usize = 256;
/// Most nodes accepted in one `nodes` or `nodes6` string.
pub const MAX_NODES: usize = 64;
/// Longest error message kept from an error reply (longer ones are cut).
pub const MAX_ERROR_MESSAGE: usize = 256;

/// A byte string of at most `N` bytes stored inline, so ids and tokens from
/// the wire cost no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortBytes<const N: usize> {
    len: u8,
    // Bytes past `len` are always zero, which keeps the derived traits honest.
    buf: [u8; N],
}

impl<const N: usize> ShortBytes<N> {
    /// Copies `bytes` if they fit in `N` bytes.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > N || N > u8::MAX as usize {
            return None;
        }
        let mut buf = [0u8; N];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(Self {
            len: bytes.len() as u8,
            buf,
        })
    }

    /// Copies at most the first `N` bytes of `bytes` (and at most 255).
    pub fn truncated(bytes: &[u8]) -> Self {
        let len = bytes.len().min(N).min(u8::MAX as usize);
        let mut buf = [0u8; N];
        buf[..len].copy_from_slice(&bytes[..len]);
        Self {
            len: len as u8,
            buf,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl<const N: usize> fmt::Debug for ShortBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A transaction id: chosen by the querier, echoed verbatim by the answer.
pub type TransactionId = ShortBytes<MAX_TID_LEN>;
/// An opaque write token handed out by `get_peers` and required by `announce_peer`.
pub type Token = ShortBytes<MAX_TOKEN_LEN>;

/// The BEP 32 `want` list: which node lists the querier asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Want {
    /// `n4`: include `nodes`.
    pub n4: bool,
    /// `n6`: include `nodes6`.
    pub n6: bool,
}

/// A query with its method-specific arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `ping`.
    Ping,
    /// `find_node`: the contacts closest to `target`.
    FindNode {
        /// The id sought.
        target: NodeId,
        /// BEP 32 `want`, when given.
        want: Option<Want>,
    },
    /// `get_peers`: peers of a swarm, or the contacts closest to it, and a token.
    GetPeers {
        /// The swarm.
        info_hash: InfoHash,
        /// BEP 32 `want`, when given.
        want: Option<Want>,
    },
    /// `announce_peer`: store the sender as a peer of the swarm.
    AnnouncePeer {
        /// The swarm.
        info_hash: InfoHash,
        /// The TCP port; ignored when `implied_port` is set.
        port: u16,
        /// Use the UDP source port instead of `port`.
        implied_port: bool,
        /// The token from an earlier `get_peers` answer.
        token: Token,
    },
}

impl Query {
    /// The method name on the wire.
    pub fn method(&self) -> &'static [u8] {
        match self {
            Query::Ping => b"ping",
            Query::FindNode { .. } => b"find_node",
            Query::GetPeers { .. } => b"get_peers",
            Query::AnnouncePeer { .. } => b"announce_peer",
        }
    }
}

/// The return values of any answer. KRPC answers are not typed by method, so
/// one struct holds the union; absent lists are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The answering node's id.
    pub id: NodeId,
    /// IPv4 contacts (`nodes`).
    pub nodes: Vec<NodeAddr>,
    /// IPv6 contacts (`nodes6`).
    pub nodes6: Vec<NodeAddr>,
    /// Peers (`values`), either family.
    pub values: Vec<SocketAddr>,
    /// Write token of a `get_peers` answer.
    pub token: Option<Token>,
    /// Which node lists the message carries even when empty. BEP 5 answers
    /// to `find_node` and `get_peers` always have a `nodes` key (BEP 32: and
    /// `nodes6` when asked for), so a node with nothing to give sends an
    /// empty string rather than leaving the key out. Decoding sets it from
    /// the keys present; a non-empty list is always encoded.
    pub node_lists: Want,
}

/// The error codes of BEP 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 201
    Generic,
    /// 202
    Server,
    /// 203: malformed packet, invalid arguments or bad token.
    Protocol,
    /// 204
    MethodUnknown,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::Generic => 201,
            ErrorCode::Server => 202,
            ErrorCode::Protocol => 203,
            ErrorCode::MethodUnknown => 204,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Numeric code (201–204 in practice, any integer accepted).
    pub code: i64,
    /// Human-readable text, lossily decoded and cut to [`MAX_ERROR_MESSAGE`].
    pub message: String,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `y = q`.
    Query {
        /// The querier's id.
        id: NodeId,
        /// Method and arguments.
        query: Query,
    },
    /// `y = r`.
    Response(Response),
    /// `y = e`.
    Error(ErrorBody),
}

/// One KRPC datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id (`t`).
    pub tid: TransactionId,
    /// Query, response or error.
    pub body: Body,
    /// BEP 42 `ip`: the receiver's address as the sender sees it.
    pub ip: Option<SocketAddr>,
    /// BEP 43 `ro`: the sender is read-only and must not enter routing tables.
    pub read_only: bool,
    /// Client version (`v`), when exactly four bytes.
    pub version: Option<[u8; 4]>,
}

/// Why a datagram was not accepted, and therefore what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a KRPC message (bad bencode, not a dict, no usable `t` or `y`):
    /// the sender is malformed or hostile; drop without answering.
    #[error("not a KRPC message: {0}")]
    NotKrpc(&'static str),
    /// A well-formed query for a method we do not serve: answer 204.
    #[error("query for an unknown method")]
    UnknownMethod {
        /// Transaction id to echo.
        tid: TransactionId,
    },
    /// A query with missing or ill-typed arguments: answer 203.
    #[error("malformed query: {reason}")]
    MalformedQuery {
        /// Transaction id to echo.
        tid: TransactionId,
        /// What was wrong.
        reason: &'static str,
    },
    /// A malformed response: the remote misbehaves; drop.
    #[error("malformed response: {0}")]
    MalformedResponse(&'static str),
    /// A malformed error message: drop.
    #[error("malformed error message: {0}")]
    MalformedError(&'static str),
}

impl DecodeError {
    /// The error answer this datagram deserves, if any.
    pub fn reply(&self) -> Option<(TransactionId, ErrorCode, &'static str)> {
        match self {
            DecodeError::UnknownMethod { tid } => {
                Some((*tid, ErrorCode::MethodUnknown, "Method Unknown"))
            }
            DecodeError::MalformedQuery { tid, reason } => {
                Some((*tid, ErrorCode::Protocol, reason))
            }
            _ => None,
        }
    }
}

/// Declares the keys of one kind of KRPC dictionary and a reader that takes
/// their values in a single pass over its entries. Looking each key up on
/// its own walked the entries once per key, and decoding a query took a
/// fifth of a bootstrap node's own CPU per answer.
macro_rules! dict_keys {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $key:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Default)]
        struct $name<'a> {
            $($field: Option<Value<'a>>,)*
        }

        impl<'a> $name<'a> {
            fn of(dict: Dict<'a>) -> Self {
                let mut keys = Self::default();
                for (key, value) in dict.iter() {
                    let slot = match key {
                        $($key => &mut keys.$field,)*
                        _ => continue,
                    };
                    // The first of duplicated keys wins, as with `Dict::get`:
                    // a second one cannot smuggle in another value.
                    slot.get_or_insert(value);
                }
                keys
            }
        }
    };
}

dict_keys!(
    /// The top level of any KRPC message.
    MessageKeys {
        a: b"a",
        e: b"e",
        ip: b"ip",
        q: b"q",
        r: b"r",
        ro: b"ro",
        t: b"t",
        v: b"v",
        y: b"y",
    }
);

dict_keys!(
    /// A query's arguments (`a`).
    ArgumentKeys {
        id: b"id",
        implied_port: b"implied_port",
        info_hash: b"info_hash",
        port: b"port",
        target: b"target",
        token: b"token",
        want: b"want",
    }
);

dict_keys!(
    /// A response's values (`r`).
    ResponseKeys {
        id: b"id",
        nodes: b"nodes",
        nodes6: b"nodes6",
        token: b"token",
        values: b"values",
    }
);

/// The byte string under a key, if present and a string.
fn string<'a>(value: Option<Value<'a>>) -> Option<&'a [u8]> {
    value?.as_bytes()
}

impl Message {
    /// Decodes one datagram.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let doc = parse(bytes, &Limits::KRPC).map_err(|_| DecodeError::NotKrpc("bad bencode"))?;
        let root = doc
            .root()
            .as_dict()
            .ok_or(DecodeError::NotKrpc("not a dictionary"))?;
        let root = MessageKeys::of(root);
        let tid = string(root.t).ok_or(DecodeError::NotKrpc("missing t"))?;
        let tid = TransactionId::new(tid).ok_or(DecodeError::NotKrpc("t too long"))?;
        let kind = string(root.y).ok_or(DecodeError::NotKrpc("missing y"))?;
        let ip = string(root.ip).and_then(compact::decode_peer);
        let read_only = root.ro.and_then(|v| v.as_int()) == Some(1);
        let version = string(root.v).and_then(|v| <[u8; 4]>::try_from(v).ok());
        let body = match kind {
            b"q" => decode_query(&root, tid)?,
            b"r" => Body::Response(decode_response(&root)?),
            b"e" => Body::Error(decode_error(&root)?),
            _ => return Err(DecodeError::NotKrpc("unknown y")),
        };
        Ok(Message {
            tid,
            body,
            ip,
            read_only,
            version,
        })
    }

    /// Appends the canonical encoding (sorted keys) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.dict(|d| {
            if let Body::Query { id, query } = &self.body {
                encode_args(d.key(b"a"), id, query);
            }
            if let Body::Error(e) = &self.body {
                d.key(b"e").list(|l| {
                    l.int(e.code);
                    l.bytes(e.message.as_bytes());
                });
            }
            if let Some(ip) = &self.ip {
                write_compact_peer(d.key(b"ip"), ip);
            }
            if let Body::Query { query, .. } = &self.body {
                d.bytes(b"q", query.method());
            }
            if let Body::Response(r) = &self.body {
                encode_response(d.key(b"r"), r);
            }
            if self.read_only {
                d.int(b"ro", 1);
            }
            d.bytes(b"t", self.tid.as_slice());
            if let Some(v) = &self.version {
                d.bytes(b"v", v);
            }
            let y: &[u8] = match self.body {
                Body::Query { .. } => b"q",
                Body::Response(_) => b"r",
                Body::Error(_) => b"e",
            };
            d.bytes(b"y", y);
        });
    }

    /// The encoding in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out);
        out
    }
}

fn decode_query(root: &MessageKeys<'_>, tid: TransactionId) -> Result<Body, DecodeError> {
    let bad = |reason| DecodeError::MalformedQuery { tid, reason };
    let method = string(root.q).ok_or(bad("missing q"))?;
    if !matches!(
        method,
        b"ping" | b"find_node" | b"get_peers" | b"announce_peer"
    ) {
        return Err(DecodeError::UnknownMethod { tid });
    }
    let args = root
        .a
        .and_then(|a| a.as_dict())
        .map(ArgumentKeys::of)
        .ok_or(bad("missing a"))?;
    let id = string(args.id)
        .and_then(NodeId::from_slice)
        .ok_or(bad("id must be 20 bytes"))?;
    let want = || -> Result<Option<Want>, DecodeError> {
        let Some(value) = args.want else {
            return Ok(None);
        };
        let list = value.as_list().ok_or(bad("want must be a list"))?;
        let mut want = Want::default();
        // Unknown strings are ignored as BEP 32 asks; the scanner bounds the count.
        for item in list {
            match item.as_bytes() {
                Some(b"n4") => want.n4 = true,
                Some(b"n6") => want.n6 = true,
                _ => {}
            }
        }
        Ok(Some(want))
    };
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: string(args.target)
                .and_then(NodeId::from_slice)
                .ok_or(bad("target must be 20 bytes"))?,
            want: want()?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: info_hash_arg(&args).ok_or(bad("info_hash must be 20 bytes"))?,
            want: want()?,
        },
        _ => {
            let info_hash = info_hash_arg(&args).ok_or(bad("info_hash must be 20 bytes"))?;
            let implied_port = match args.implied_port {
                None => false,
                Some(v) => v.as_int().ok_or(bad("implied_port must be an integer"))? != 0,
            };
            let port = match args.port.and_then(|v| v.as_int()) {
                Some(p) => u16::try_from(p).map_err(|_| bad("port out of range"))?,
                None if implied_port => 0,
                None => return Err(bad("missing port")),
            };
            if port == 0 && !implied_port {
                return Err(bad("port out of range"));
            }
            let token = string(args.token)
                .ok_or(bad("missing token"))
                .and_then(|t| Token::new(t).ok_or(bad("token too long")))?;
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            }
        }
    };
    Ok(Body::Query { id, query })
}

fn info_hash_arg(args: &ArgumentKeys<'_>) -> Option<InfoHash> {
    string(args.info_hash).and_then(InfoHash::from_slice)
}

fn decode_nodes(bytes: &[u8], family: Family) -> Result<Vec<NodeAddr>, DecodeError> {
    if bytes.len() > MAX_NODES * family.node_len() {
        return Err(DecodeError::MalformedResponse("too many nodes"));
    }
    compact::decode_nodes(bytes, family)
        .map_err(|_| DecodeError::MalformedResponse("node list of a ragged length"))
}

fn decode_response(root: &MessageKeys<'_>) -> Result<Response, DecodeError> {
    let bad = DecodeError::MalformedResponse;
    let r = root
        .r
        .and_then(|r| r.as_dict())
        .map(ResponseKeys::of)
        .ok_or(bad("missing r"))?;
    let id = string(r.id)
        .and_then(NodeId::from_slice)
        .ok_or(bad("id must be 20 bytes"))?;
    let (nodes4, nodes6) = (r.nodes, r.nodes6);
    let node_lists = Want {
        n4: nodes4.is_some(),
        n6: nodes6.is_some(),
    };
    let nodes = match nodes4 {
        None => Vec::new(),
        Some(v) => decode_nodes(v.as_bytes().ok_or(bad("nodes not a string"))?, Family::V4)?,
    };
    let nodes6 = match nodes6 {
        None => Vec::new(),
        Some(v) => decode_nodes(v.as_bytes().ok_or(bad("nodes6 not a string"))?, Family::V6)?,
    };
    let mut values = Vec::new();
    if let Some(v) = r.values {
        let list = v.as_list().ok_or(bad("values not a list"))?;
        for item in list {
            if values.len() == MAX_VALUES {
                return Err(bad("too many values"));
            }
            // Entries of another size are skipped, not fatal: the rest may be useful.
            if let Some(peer) = item.as_bytes().and_then(compact::decode_peer) {
                values.push(peer);
            }
        }
    }
    let token = match r.token {
        None => None,
        Some(v) => Some(
            v.as_bytes()
                .and_then(Token::new)
                .ok_or(bad("token not a short string"))?,
        ),
    };
    Ok(Response {
        id,
        nodes,
        nodes6,
        values,
        token,
        node_lists,
    })
}

fn decode_error(root: &MessageKeys<'_>) -> Result<ErrorBody, DecodeError> {
    let bad = DecodeError::MalformedError;
    let mut list = root.e.and_then(|e| e.as_list()).ok_or(bad("missing e"))?;
    let code = list
        .next()
        .and_then(|v| v.as_int())
        .ok_or(bad("missing code"))?;
    let text = list.next().and_then(|v| v.as_bytes()).unwrap_or_default();
    // Cut after the lossy conversion (which can grow invalid bytes threefold)
    // and at a character boundary, so that what we keep re-encodes and
    // decodes to itself.
    let mut message =
        String::from_utf8_lossy(&text[..text.len().min(MAX_ERROR_MESSAGE)]).into_owned();
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    Ok(ErrorBody { code, message })
}

fn encode_args(w: &mut Writer<'_>, id: &NodeId, query: &Query) {
    w.dict(|d| {
        d.bytes(b"id", id.as_bytes());
        match query {
            Query::Ping => {}
            Query::FindNode { target, want } => {
                d.bytes(b"target", target.as_bytes());
                encode_want(d.key_if(want.is_some(), b"want"), want);
            }
            Query::GetPeers { info_hash, want } => {
                d.bytes(b"info_hash", info_hash.as_bytes());
                encode_want(d.key_if(want.is_some(), b"want"), want);
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if *implied_port {
                    d.int(b"implied_port", 1);
                }
                d.bytes(b"info_hash", info_hash.as_bytes());
                d.int(b"port", i64::from(*port));
                d.bytes(b"token", token.as_slice());
            }
        }
    });
}

/// `DictWriter::key` only when `cond`; lets optional keys share one call site.
trait KeyIf<'o> {
    fn key_if(&mut self, cond: bool, key: &[u8]) -> Option<&mut Writer<'o>>;
}

impl<'o> KeyIf<'o> for lodestone_bencode::DictWriter<'o> {
    fn key_if(&mut self, cond: bool, key: &[u8]) -> Option<&mut Writer<'o>> {
        cond.then(|| self.key(key))
    }
}

fn encode_want(w: Option<&mut Writer<'_>>, want: &Option<Want>) {
    if let (Some(w), Some(want)) = (w, want) {
        w.list(|l| {
            if want.n4 {
                l.bytes(b"n4");
            }
            if want.n6 {
                l.bytes(b"n6");
            }
        });
    }
}

fn encode_response(w: &mut Writer<'_>, r: &Response) {
    w.dict(|d| {
        d.bytes(b"id", r.id.as_bytes());
        if r.node_lists.n4 || !r.nodes.is_empty() {
            write_compact_nodes(d.key(b"nodes"), &r.nodes, Family::V4);
        }
        if r.node_lists.n6 || !r.nodes6.is_empty() {
            write_compact_nodes(d.key(b"nodes6"), &r.nodes6, Family::V6);
        }
        if let Some(token) = &r.token {
            d.bytes(b"token", token.as_slice());
        }
        if !r.values.is_empty() {
            d.key(b"values").list(|l| {
                for peer in &r.values {
                    write_compact_peer(l, peer);
                }
            });
        }
    });
}

/// Puts the compact form of `addr` (IP, then big-endian port) at the start
/// of `out`, which has room for an IPv6 one; returns its length.
fn put_compact_peer(out: &mut [u8], addr: &SocketAddr) -> usize {
    let ip_len = match addr {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            4
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            16
        }
    };
    out[ip_len..ip_len + 2].copy_from_slice(&addr.port().to_be_bytes());
    ip_len + 2
}

fn write_compact_peer(w: &mut Writer<'_>, addr: &SocketAddr) {
    let mut buf = [0u8; 18];
    let len = put_compact_peer(&mut buf, addr);
    w.bytes(&buf[..len]);
}

/// Nodes gathered on the stack before they go to the output in one write.
const NODES_PER_WRITE: usize = 16;

/// Writes the nodes of `family` (others are skipped) as one compact string.
fn write_compact_nodes(w: &mut Writer<'_>, nodes: &[NodeAddr], family: Family) {
    let of_family = || nodes.iter().filter(|n| Family::of(&n.addr) == family);
    w.bytes_header(of_family().count() * family.node_len());
    // Two small writes per node (id, then address) cost a bootstrap node
    // twice as many calls to `memcpy` as it answered contacts.
    let mut buf = [0u8; NODES_PER_WRITE * 38];
    let mut len = 0;
    for node in of_family() {
        if len + 38 > buf.len() {
            w.raw(&buf[..len]);
            len = 0;
        }
        buf[len..len + 20].copy_from_slice(node.id.as_bytes());
        len += 20;
        len += put_compact_peer(&mut buf[len..], &node.addr);
    }
    w.raw(&buf[..len]);
}

#[cfg(test)]
#[path = "krpc_tests.rs"]
mod tests;
