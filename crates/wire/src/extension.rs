//! The BEP 10 extension handshake: `extended` message id 0, a bencoded dict.
//!
//! Decoding is lenient the way BEP 10 asks: unknown keys are ignored, and so
//! is a known key whose value has the wrong type or range (it reads as
//! absent), because one odd field from a real client should not cost us the
//! peer. What is refused: bencode our scanner rejects, a top level that is
//! not a dictionary, and an `m` dictionary with more than [`MAX_EXTENSIONS`]
//! entries. `metadata_size` is passed on as the peer's claim; bounding it
//! before allocating is the metadata fetcher's job.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use lodestone_bencode::{Dict, Limits, Writer, parse};

pub use crate::holepunch::UT_HOLEPUNCH;
use crate::message::Message;

/// The `m` name of the metadata exchange extension (BEP 9).
pub const UT_METADATA: &str = "ut_metadata";

/// The `m` name of the peer exchange extension (BEP 11).
pub const UT_PEX: &str = "ut_pex";

/// The id under which we ask peers to send us ut_metadata messages. One
/// value for the whole client: a connection keeps its extension handshake
/// when it moves from the metadata phase to the download phase.
pub const OUR_UT_METADATA_ID: u8 = 1;

/// The id under which we ask peers to send us ut_pex messages.
pub const OUR_UT_PEX_ID: u8 = 2;

/// The id under which we ask peers to send us ut_holepunch messages.
pub const OUR_UT_HOLEPUNCH_ID: u8 = 3;

/// The `m` dictionary of our extension handshake: every extension we
/// receive, by name, under the id we chose for it. The one registry that
/// every phase of a connection advertises from. `pex` is false for a
/// private torrent (BEP 27): ut_pex is then not offered at all.
/// `holepunch` offers ut_holepunch (BEP 55): only where the phase acts on
/// it and we accept uTP, and never without `pex`, so that a private
/// torrent stays among the peers its tracker names.
pub fn our_extensions(pex: bool, holepunch: bool) -> BTreeMap<String, u8> {
    let mut m = BTreeMap::from([(UT_METADATA.to_owned(), OUR_UT_METADATA_ID)]);
    if pex {
        m.insert(UT_PEX.to_owned(), OUR_UT_PEX_ID);
        if holepunch {
            m.insert(UT_HOLEPUNCH.to_owned(), OUR_UT_HOLEPUNCH_ID);
        }
    }
    m
}

/// Most entries accepted in an `m` dictionary; real clients send fewer than 20.
pub const MAX_EXTENSIONS: usize = 128;

/// Why an extension handshake was refused. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// Not bencode, or bencode beyond [`Limits::PEER_MESSAGE`].
    #[error("extension handshake is not valid bencode")]
    Bencode(#[from] lodestone_bencode::Error),
    /// The top-level value is not a dictionary.
    #[error("extension handshake is not a dictionary")]
    NotADict,
    /// The `m` dictionary is implausibly large.
    #[error("extension handshake lists {count} extensions, more than {max}")]
    TooManyExtensions {
        /// Entries in `m`.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The contents of a BEP 10 extension handshake. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// `m`: extension name → the id *the sender* wants to receive it under.
    /// 0 means "disabled"; entries with a non-UTF-8 name or an id outside
    /// 0..=255 are dropped on decode.
    pub m: BTreeMap<String, u8>,
    /// `p`: the sender's TCP listen port.
    pub p: Option<u16>,
    /// `v`: client name and version (invalid UTF-8 replaced).
    pub v: Option<String>,
    /// `yourip`: the address the sender sees us as.
    pub yourip: Option<IpAddr>,
    /// `ipv4`: the sender's IPv4 address, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// `ipv6`: the sender's IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// `reqq`: how many outstanding requests the sender queues.
    pub reqq: Option<u32>,
    /// `metadata_size` (BEP 9): the size of the info dict, as claimed.
    pub metadata_size: Option<u64>,
}

/// A peer that dialed us says where it listens: not at `conn`, the
/// ephemeral port its connection came from, but at `listen`. Whichever
/// phase holds the connection sends it to the owner of the address book, so
/// that the peer is redialed there once it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenReport {
    /// The connection's remote address.
    pub conn: SocketAddr,
    /// Its IP with the port of its extension handshake's `p` (BEP 10).
    pub listen: SocketAddr,
}

impl ExtendedHandshake {
    /// The id to send extension `name` under to the peer that sent this
    /// handshake; `None` if it does not support it (absent or 0).
    pub fn extension_id(&self, name: &str) -> Option<u8> {
        self.m.get(name).copied().filter(|&id| id != 0)
    }

    /// Where the sender, connected from `ip`, accepts connections: `p` on
    /// that IP; `None` without a `p` or with port 0, which nobody listens
    /// on. Only a peer that dialed us needs to say it (libtorrent sends `p`
    /// only on connections it made); a peer we dialed listens where we
    /// reached it.
    pub fn listen_addr(&self, ip: IpAddr) -> Option<SocketAddr> {
        let port = self.p.filter(|&p| p != 0)?;
        Some(SocketAddr::new(ip, port))
    }

    /// Decodes the payload of an `extended` message with id 0.
    pub fn decode(payload: &[u8]) -> Result<Self, ExtensionError> {
        let doc = parse(payload, &Limits::PEER_MESSAGE)?;
        let dict = doc.root().as_dict().ok_or(ExtensionError::NotADict)?;
        Ok(Self {
            m: match dict.get_dict(b"m") {
                Some(m) => decode_m(m)?,
                None => BTreeMap::new(),
            },
            p: dict
                .get_int(b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            v: dict
                .get_bytes(b"v")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            yourip: dict.get_bytes(b"yourip").and_then(ip_from_bytes),
            ipv4: dict
                .get_bytes(b"ipv4")
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(Ipv4Addr::from),
            ipv6: dict
                .get_bytes(b"ipv6")
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from),
            reqq: dict.get_int(b"reqq").and_then(|q| u32::try_from(q).ok()),
            metadata_size: dict
                .get_int(b"metadata_size")
                .and_then(|s| u64::try_from(s).ok()),
        })
    }

    /// Canonical bencode: keys (and `m`'s keys) in ascending byte order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Writer::new(&mut out).dict(|d| {
            if let Some(ip) = self.ipv4 {
                d.bytes(b"ipv4", &ip.octets());
            }
            if let Some(ip) = self.ipv6 {
                d.bytes(b"ipv6", &ip.octets());
            }
            if !self.m.is_empty() {
                // BTreeMap<String, _> iterates in byte order of the names.
                d.key(b"m").dict(|m| {
                    for (name, &id) in &self.m {
                        m.int(name.as_bytes(), i64::from(id));
                    }
                });
            }
            if let Some(size) = self.metadata_size {
                // Sizes above i64::MAX cannot be bencoded; saturate.
                d.int(b"metadata_size", i64::try_from(size).unwrap_or(i64::MAX));
            }
            if let Some(port) = self.p {
                d.int(b"p", i64::from(port));
            }
            if let Some(reqq) = self.reqq {
                d.int(b"reqq", i64::from(reqq));
            }
            if let Some(v) = &self.v {
                d.bytes(b"v", v.as_bytes());
            }
            match self.yourip {
                Some(IpAddr::V4(ip)) => d.bytes(b"yourip", &ip.octets()),
                Some(IpAddr::V6(ip)) => d.bytes(b"yourip", &ip.octets()),
                None => {}
            }
        });
        out
    }

    /// This handshake as an `extended` message (extended id 0).
    pub fn to_message(&self) -> Message {
        Message::Extended {
            id: 0,
            payload: Bytes::from(self.encode()),
        }
    }
}

fn decode_m(m: Dict<'_>) -> Result<BTreeMap<String, u8>, ExtensionError> {
    let count = m.len();
    if count > MAX_EXTENSIONS {
        return Err(ExtensionError::TooManyExtensions {
            count,
            max: MAX_EXTENSIONS,
        });
    }
    let mut out = BTreeMap::new();
    for (name, id) in m.iter() {
        let (Ok(name), Some(id)) = (
            std::str::from_utf8(name),
            id.as_int().and_then(|i| u8::try_from(i).ok()),
        ) else {
            continue;
        };
        // A duplicated name keeps its first id, as dictionary lookups do.
        out.entry(name.to_owned()).or_insert(id);
    }
    Ok(out)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
