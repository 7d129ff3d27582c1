//! Peer exchange (BEP 11, `ut_pex`): the message, and the per-connection
//! rules for what we take from a peer and what we tell it.
//!
//! A ut_pex message is a bencoded dictionary of compact address lists:
//! `added` / `added6` (peers the sender connected to since its last
//! message, with one flag byte each in `added.f` / `added6.f`) and
//! `dropped` / `dropped6` (peers it disconnected from).
//!
//! **Bounded.** Every address in a message is a stranger's claim, so three
//! caps apply, each enforced here and nowhere else:
//! - per message: at most [`MAX_PEX_ADDED`] added and [`MAX_PEX_DROPPED`]
//!   dropped addresses are read; the rest of a longer list is ignored, not
//!   allocated;
//! - per interval: a message arriving less than [`MIN_PEX_INTERVAL`] after
//!   the last one we took is ignored (BEP 11 asks for one a minute);
//! - in total: at most [`MAX_PEX_PER_PEER`] addresses are taken from one
//!   connection over its life.
//!
//! What is done with the addresses (a source quota in the address book, a
//! dial budget) is the session's business.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lodestone_bencode::{Dict, Limits, Writer, parse};
use lodestone_core::compact::{self, Family, is_contactable, write_peer};

use crate::message::Message;

/// Most added addresses read from one message (IPv4 and IPv6 together);
/// BEP 11 asks senders for at most 50.
pub const MAX_PEX_ADDED: usize = 50;

/// Most dropped addresses read from one message.
pub const MAX_PEX_DROPPED: usize = 50;

/// Least time between two messages we take from one peer. BEP 11 says one a
/// minute; a few seconds of slack cover timer jitter on the sender's side.
pub const MIN_PEX_INTERVAL: Duration = Duration::from_secs(50);

/// Most added addresses taken from one connection, ever: a long-lived
/// peer cannot feed us an address space a message at a time.
pub const MAX_PEX_PER_PEER: usize = 250;

/// How often we send our own message to a peer (BEP 11: once a minute).
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);

/// Wait before our first message to a peer, so it carries the peers that
/// connected together with it rather than an almost empty set.
pub const PEX_FIRST_DELAY: Duration = Duration::from_secs(3);

/// The flag byte BEP 11 attaches to each added peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PexFlags(pub u8);

impl PexFlags {
    /// The peer prefers encrypted connections.
    pub const ENCRYPTION: u8 = 0x01;
    /// The peer is a seed (or upload-only).
    pub const SEED: u8 = 0x02;
    /// The peer supports uTP.
    pub const UTP: u8 = 0x04;
    /// The peer supports ut_holepunch.
    pub const HOLEPUNCH: u8 = 0x08;
    /// The sender reached the peer by an outgoing connection.
    pub const REACHABLE: u8 = 0x10;

    /// Whether the sender says the peer is a seed.
    pub fn is_seed(self) -> bool {
        self.0 & Self::SEED != 0
    }
}

/// One added peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PexPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What the sender says of it.
    pub flags: PexFlags,
}

/// A decoded ut_pex message, within the per-message caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender connected to (IPv4 first, then IPv6).
    pub added: Vec<PexPeer>,
    /// Peers the sender disconnected from.
    pub dropped: Vec<SocketAddr>,
}

/// Peers one connection told us of, on their way from the phase that
/// holds the connection to the owner of the address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PexReport {
    /// The connection's peer: the reporter, for counting distinct
    /// reporters of an address.
    pub from: SocketAddr,
    /// What it added, within [`PexInbox`]'s caps.
    pub peers: Vec<PexPeer>,
}

/// Why a ut_pex message was refused. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    /// Not bencode, or beyond [`Limits::PEER_MESSAGE`].
    #[error("ut_pex message is not valid bencode")]
    Bencode(#[from] lodestone_bencode::Error),
    /// The top-level value is not a dictionary.
    #[error("ut_pex message is not a dictionary")]
    NotADict,
    /// An address list whose length is not a multiple of its entry size.
    #[error("ut_pex `{key}` of {len} bytes is not a list of compact addresses")]
    BadLength {
        /// The list's key.
        key: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

impl PexMessage {
    /// Decodes a ut_pex payload. Lists past the caps are cut, flags missing
    /// or short read as none (a lenient reading of an odd field), and
    /// addresses nobody can dial (port 0, unspecified, multicast) dropped.
    pub fn decode(payload: &[u8]) -> Result<Self, PexError> {
        let doc = parse(payload, &Limits::PEER_MESSAGE)?;
        let dict = doc.root().as_dict().ok_or(PexError::NotADict)?;
        let mut added = Vec::new();
        for (key, flags_key, family) in [
            ("added", &b"added.f"[..], Family::V4),
            ("added6", &b"added6.f"[..], Family::V6),
        ] {
            let room = MAX_PEX_ADDED - added.len();
            let addrs = compact_list(&dict, key, family, room)?;
            let flags = dict.get_bytes(flags_key).unwrap_or_default();
            added.extend(addrs.into_iter().enumerate().map(|(i, addr)| PexPeer {
                addr,
                flags: PexFlags(flags.get(i).copied().unwrap_or(0)),
            }));
        }
        let mut dropped = compact_list(&dict, "dropped", Family::V4, MAX_PEX_DROPPED)?;
        let room = MAX_PEX_DROPPED - dropped.len();
        dropped.extend(compact_list(&dict, "dropped6", Family::V6, room)?);
        added.retain(|p| is_contactable(&p.addr));
        dropped.retain(is_contactable);
        Ok(Self { added, dropped })
    }

    /// Canonical bencode, one list per family, flags beside the adds.
    pub fn encode(&self) -> Vec<u8> {
        let split = |family: Family| {
            let mut addrs = Vec::new();
            let mut flags = Vec::new();
            for p in self.added.iter().filter(|p| Family::of(&p.addr) == family) {
                write_peer(&p.addr, &mut addrs);
                flags.push(p.flags.0);
            }
            (addrs, flags)
        };
        let dropped = |family: Family| {
            let mut out = Vec::new();
            for a in self.dropped.iter().filter(|a| Family::of(a) == family) {
                write_peer(a, &mut out);
            }
            out
        };
        let (added4, flags4) = split(Family::V4);
        let (added6, flags6) = split(Family::V6);
        let mut out = Vec::new();
        // Keys in byte order; empty lists are still sent, as clients do.
        Writer::new(&mut out).dict(|d| {
            d.bytes(b"added", &added4);
            d.bytes(b"added.f", &flags4);
            d.bytes(b"added6", &added6);
            d.bytes(b"added6.f", &flags6);
            d.bytes(b"dropped", &dropped(Family::V4));
            d.bytes(b"dropped6", &dropped(Family::V6));
        });
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

/// Up to `room` addresses of the list at `key`; absent reads as empty.
fn compact_list(
    dict: &Dict<'_>,
    key: &'static str,
    family: Family,
    room: usize,
) -> Result<Vec<SocketAddr>, PexError> {
    let bytes = dict.get_bytes(key.as_bytes()).unwrap_or_default();
    let found = compact::peers(bytes, family).map_err(|_| PexError::BadLength {
        key,
        len: bytes.len(),
    })?;
    Ok(found.take(room).collect())
}

/// What we take from one peer's ut_pex messages: the per-interval and
/// per-connection caps of the module docs. Sans-IO: `now` is an argument.
#[derive(Debug, Clone, Default)]
pub struct PexInbox {
    last: Option<Instant>,
    taken: usize,
    ignored: u64,
}

impl PexInbox {
    /// A peer's ut_pex payload arrived at `now`. Returns the added peers to
    /// consider (possibly none: too soon, or the peer's total is used up);
    /// an error means the message was malformed.
    pub fn receive(&mut self, now: Instant, payload: &[u8]) -> Result<Vec<PexPeer>, PexError> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < MIN_PEX_INTERVAL)
        {
            self.ignored += 1;
            return Ok(Vec::new());
        }
        // A message counts against the interval even when malformed, and
        // nothing is parsed once the peer's share is used up.
        self.last = Some(now);
        let room = MAX_PEX_PER_PEER - self.taken;
        if room == 0 {
            return Ok(Vec::new());
        }
        let mut message = PexMessage::decode(payload)?;
        message.added.truncate(room);
        self.taken += message.added.len();
        Ok(message.added)
    }

    /// Messages ignored because they came too soon after the last one.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

/// What we have told one peer, to send it the difference every
/// [`PEX_INTERVAL`]. Sans-IO: the host passes `now` and the peers we are
/// connected to.
#[derive(Debug, Clone)]
pub struct PexOutbox {
    /// Addresses the peer has from us (added and not dropped since).
    told: BTreeSet<SocketAddr>,
    next: Instant,
}

impl PexOutbox {
    /// A peer that accepts ut_pex, met at `now`: the first message goes
    /// out after [`PEX_FIRST_DELAY`].
    pub fn new(now: Instant) -> Self {
        Self {
            told: BTreeSet::new(),
            next: now + PEX_FIRST_DELAY,
        }
    }

    /// When the next message is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// The message due at `now`, if one is and it says anything: the
    /// peers in `connected` (our connections' listen addresses with what we
    /// can vouch for, the recipient's own excluded by the caller) it has
    /// not heard of, and the ones it heard of that are gone, each list
    /// capped. What does not fit goes in a later message.
    pub fn poll(
        &mut self,
        now: Instant,
        connected: &BTreeMap<SocketAddr, PexFlags>,
    ) -> Option<PexMessage> {
        if now < self.next {
            return None;
        }
        self.next = now + PEX_INTERVAL;
        let added: Vec<PexPeer> = connected
            .iter()
            .filter(|(addr, _)| !self.told.contains(addr))
            .take(MAX_PEX_ADDED)
            .map(|(&addr, &flags)| PexPeer { addr, flags })
            .collect();
        let dropped: Vec<SocketAddr> = self
            .told
            .iter()
            .filter(|addr| !connected.contains_key(addr))
            .take(MAX_PEX_DROPPED)
            .copied()
            .collect();
        for p in &added {
            self.told.insert(p.addr);
        }
        for a in &dropped {
            self.told.remove(a);
        }
        (!added.is_empty() || !dropped.is_empty()).then_some(PexMessage { added, dropped })
    }
}

#[cfg(test)]
mod tests;
