//! The holepunch extension (BEP 55, `ut_holepunch`): the message, and the
//! per-connection bound on how often a peer may make us act on one.
//!
//! A peer that cannot accept connections (behind a NAT or a stateful
//! firewall) can still be reached over uTP if both sides send to each other
//! at about the same time. A third peer connected to both, the *relay*,
//! arranges that: the *initiator* sends it `rendezvous` naming the target's
//! address; the relay sends `connect` to both, each naming the other; both
//! dial over uTP at once. When the relay cannot help it answers `error`.
//!
//! The payload is binary and fixed-size: type (1 byte), address type (1
//! byte: 0 IPv4, 1 IPv6), address (4 or 16 bytes), port (2 bytes, big
//! endian), error code (4 bytes, big endian; 0 unless the type is `error`).
//! libtorrent (2.0.8 checked) leaves the error code out of `rendezvous` and
//! `connect`, so it is optional there and required in `error`; we always
//! send it, as BEP 55 says, and libtorrent reads past it.
//! [`HolepunchMessage::decode`] refuses anything else with a typed error;
//! an unknown error code is kept as a value (open-world), since it changes
//! nothing we do.
//!
//! **Bounded.** Every `rendezvous` makes a relay write two messages, and
//! every `connect` makes us dial; a hostile peer could use either to turn
//! us into an amplifier or to aim our dials. [`HolepunchMeter`] lets a
//! connection's peer make us act at most [`HOLEPUNCH_BURST`] times, then
//! once per [`HOLEPUNCH_REFILL`]; what is over is ignored silently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::Message;

/// The `m` name of the holepunch extension (BEP 55).
pub const UT_HOLEPUNCH: &str = "ut_holepunch";

/// What a holepunch message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolepunchKind {
    /// To a relay: send `connect` to us and to the peer at the address.
    Rendezvous,
    /// From a relay: dial the address over uTP now.
    Connect,
    /// From a relay: the rendezvous for the address cannot be done.
    Error(HolepunchErrorCode),
}

/// Why a relay could not act on a rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolepunchErrorCode {
    /// The target endpoint is invalid.
    NoSuchPeer,
    /// The relay is not connected to the target.
    NotConnected,
    /// The target does not support the holepunch extension.
    NoSupport,
    /// The target endpoint is the relay itself.
    NoSelf,
    /// A code BEP 55 does not define.
    Other(u32),
}

impl HolepunchErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::NoSuchPeer => 1,
            Self::NotConnected => 2,
            Self::NoSupport => 3,
            Self::NoSelf => 4,
            Self::Other(code) => code,
        }
    }

    /// The code read from the wire.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::NoSuchPeer,
            2 => Self::NotConnected,
            3 => Self::NoSupport,
            4 => Self::NoSelf,
            other => Self::Other(other),
        }
    }
}

/// A `ut_holepunch` message: what is asked, about which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HolepunchMessage {
    /// Rendezvous, connect or error.
    pub kind: HolepunchKind,
    /// The endpoint the message is about.
    pub addr: SocketAddr,
}

/// Why a holepunch payload was refused. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HolepunchError {
    /// The payload ends before its fields do.
    #[error("holepunch message of {len} bytes is too short")]
    Truncated {
        /// The payload's length.
        len: usize,
    },
    /// The payload goes on after its fields.
    #[error("holepunch message has {extra} bytes after its fields")]
    Trailing {
        /// Bytes past the error code.
        extra: usize,
    },
    /// A message type BEP 55 does not define.
    #[error("unknown holepunch message type {0}")]
    UnknownType(u8),
    /// An address type other than 0 (IPv4) and 1 (IPv6).
    #[error("unknown holepunch address type {0}")]
    UnknownAddrType(u8),
}

const TYPE_RENDEZVOUS: u8 = 0;
const TYPE_CONNECT: u8 = 1;
const TYPE_ERROR: u8 = 2;
const ADDR_V4: u8 = 0;
const ADDR_V6: u8 = 1;

/// The length of a payload with an IPv6 address: the longest there is.
pub const MAX_HOLEPUNCH_LEN: usize = 2 + 16 + 2 + 4;

impl HolepunchMessage {
    /// A `rendezvous` for `addr`.
    pub fn rendezvous(addr: SocketAddr) -> Self {
        Self {
            kind: HolepunchKind::Rendezvous,
            addr,
        }
    }

    /// A `connect` to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        Self {
            kind: HolepunchKind::Connect,
            addr,
        }
    }

    /// An `error` about `addr`.
    pub fn error(addr: SocketAddr, code: HolepunchErrorCode) -> Self {
        Self {
            kind: HolepunchKind::Error(code),
            addr,
        }
    }

    /// Decodes a `ut_holepunch` payload (the bytes after the extended id).
    pub fn decode(payload: &[u8]) -> Result<Self, HolepunchError> {
        let truncated = HolepunchError::Truncated { len: payload.len() };
        let [kind, addr_type, rest @ ..] = payload else {
            return Err(truncated);
        };
        let ip_len = match *addr_type {
            ADDR_V4 => 4,
            ADDR_V6 => 16,
            other => return Err(HolepunchError::UnknownAddrType(other)),
        };
        let endpoint = ip_len + 2;
        let with_code = endpoint + 4;
        // Only an error needs its code (see the module docs).
        let least = if *kind == TYPE_ERROR {
            with_code
        } else {
            endpoint
        };
        if rest.len() < least {
            return Err(truncated);
        }
        if rest.len() > with_code {
            return Err(HolepunchError::Trailing {
                extra: rest.len() - with_code,
            });
        }
        if rest.len() != endpoint && rest.len() != with_code {
            return Err(truncated);
        }
        let (ip, rest) = rest.split_at(ip_len);
        // Lengths checked above: `ip` is 4 bytes for IPv4, 16 for IPv6.
        let ip = if *addr_type == ADDR_V4 {
            let mut octets = [0; 4];
            octets.copy_from_slice(ip);
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            let mut octets = [0; 16];
            octets.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let code = match rest[2..] {
            [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        };
        let kind = match *kind {
            TYPE_RENDEZVOUS => HolepunchKind::Rendezvous,
            TYPE_CONNECT => HolepunchKind::Connect,
            TYPE_ERROR => HolepunchKind::Error(HolepunchErrorCode::from_code(code)),
            other => return Err(HolepunchError::UnknownType(other)),
        };
        Ok(Self {
            kind,
            addr: SocketAddr::new(ip, port),
        })
    }

    /// The payload bytes. An IPv4-mapped IPv6 address is sent as IPv4, the
    /// form a peer compares with its connections' addresses.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, code) = match self.kind {
            HolepunchKind::Rendezvous => (TYPE_RENDEZVOUS, 0),
            HolepunchKind::Connect => (TYPE_CONNECT, 0),
            HolepunchKind::Error(code) => (TYPE_ERROR, code.code()),
        };
        let mut out = Vec::with_capacity(MAX_HOLEPUNCH_LEN);
        out.push(kind);
        match self.addr.ip().to_canonical() {
            IpAddr::V4(ip) => {
                out.push(ADDR_V4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(ADDR_V6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out
    }

    /// This message as an `extended` message under the peer's id for it.
    pub fn to_message(&self, their_id: u8) -> Message {
        Message::Extended {
            id: their_id,
            payload: Bytes::from(self.encode()),
        }
    }
}

/// Holepunch requests a peer may make us act on at once.
pub const HOLEPUNCH_BURST: u32 = 4;

/// Time in which one more request is allowed after the burst.
pub const HOLEPUNCH_REFILL: Duration = Duration::from_secs(15);

/// How often one connection's peer may make us act on a holepunch message
/// (relay a rendezvous, or dial for a connect): a token bucket of
/// [`HOLEPUNCH_BURST`] refilled one per [`HOLEPUNCH_REFILL`]. Sans-IO:
/// `now` is an argument.
#[derive(Debug, Clone)]
pub struct HolepunchMeter {
    tokens: u32,
    refilled: Option<Instant>,
    refused: u64,
}

impl Default for HolepunchMeter {
    fn default() -> Self {
        Self {
            tokens: HOLEPUNCH_BURST,
            refilled: None,
            refused: 0,
        }
    }
}

impl HolepunchMeter {
    /// Whether a request arriving at `now` may be acted on; takes a token
    /// if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        let last = *self.refilled.get_or_insert(now);
        let earned = now.saturating_duration_since(last).as_nanos() / HOLEPUNCH_REFILL.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(HOLEPUNCH_BURST);
            // Only whole refills count: the remainder keeps accruing.
            self.refilled = Some(if self.tokens == HOLEPUNCH_BURST {
                now
            } else {
                last + HOLEPUNCH_REFILL * earned
            });
        }
        if self.tokens == 0 {
            self.refused += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests;
