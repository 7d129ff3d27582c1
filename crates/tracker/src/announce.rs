//! What an announce says and what a tracker answers, whatever the
//! transport.

use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::{InfoHash, PeerId};

/// Most peers taken from one reply: more is a flood, not help (the
/// address book holds 2,000 addresses for every source together).
pub const MAX_PEERS: usize = 200;

/// Peers we ask for (`numwant`).
pub const NUMWANT: u32 = 50;

/// Why we announce now (BEP 3 `event`, BEP 15 event codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A periodic announce.
    None,
    /// The first announce of the torrent.
    Started,
    /// The download just completed (not sent when it was complete at start).
    Completed,
    /// We are leaving the swarm.
    Stopped,
}

impl Event {
    /// The HTTP `event` value; `None` sends no parameter.
    pub fn http_name(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// The BEP 15 event code.
    pub fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// One announce: who we are, which swarm, and how far we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The swarm.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our listen port.
    pub port: u16,
    /// Bytes sent to peers this session.
    pub uploaded: u64,
    /// Bytes received from peers this session.
    pub downloaded: u64,
    /// Bytes still wanted.
    pub left: u64,
    /// Why we announce.
    pub event: Event,
    /// Peers wanted (0 for `stopped`).
    pub numwant: u32,
    /// A random number fixed for the session, so a tracker can tell us
    /// apart from another client behind the same address.
    pub key: u32,
}

/// A tracker's answer to an announce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceReply {
    /// Seconds the tracker asks us to wait before the next announce.
    pub interval: Duration,
    /// The least wait the tracker tolerates, if it says.
    pub min_interval: Option<Duration>,
    /// Peers, IPv4 and IPv6, at most [`MAX_PEERS`].
    pub peers: Vec<SocketAddr>,
    /// Seeders in the swarm, if said.
    pub seeders: Option<u32>,
    /// Leechers in the swarm, if said.
    pub leechers: Option<u32>,
    /// A message the tracker wants shown (HTTP `warning message`).
    pub warning: Option<String>,
}

/// A tracker's counts for one swarm (scrape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Seeders (`complete`).
    pub complete: u32,
    /// Leechers (`incomplete`).
    pub incomplete: u32,
    /// Completed downloads the tracker counted (`downloaded`).
    pub downloaded: u32,
}

/// Adds `addr` to `peers` unless it cannot be dialed or the cap is
/// reached; returns whether there is room for more.
pub(crate) fn push_peer(peers: &mut Vec<SocketAddr>, addr: SocketAddr) -> bool {
    if peers.len() >= MAX_PEERS {
        return false;
    }
    if lodestone_core::compact::is_contactable(&addr) && !peers.contains(&addr) {
        peers.push(addr);
    }
    peers.len() < MAX_PEERS
}
