//! BEP 15 packets: requests we write, and a bounded parser for the
//! tracker's replies.

use std::time::Duration;

use lodestone_core::{Family, InfoHash};

use crate::announce::{Announce, AnnounceReply, ScrapeStats, push_peer};
use crate::error::TrackerError;

/// The magic constant that opens a connect request.
const PROTOCOL_ID: u64 = 0x0417_2710_1980;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

/// Largest datagram read: a reply with [`crate::MAX_PEERS`] IPv6 peers
/// is under 4 KiB; the pump reads into a buffer of this size, so a larger
/// datagram is cut short, never buffered whole.
pub const MAX_DATAGRAM: usize = 8 << 10;

/// A connect request with transaction id `tid`.
pub fn connect_request(tid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out
}

/// An announce request on connection `conn`.
pub fn announce_request(conn: u64, tid: u32, a: &Announce) -> Vec<u8> {
    let mut out = Vec::with_capacity(98);
    out.extend_from_slice(&conn.to_be_bytes());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(a.info_hash.as_bytes());
    out.extend_from_slice(&a.peer_id.0);
    for n in [a.downloaded, a.left, a.uploaded] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&a.event.udp_code().to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // IP: the sender's
    out.extend_from_slice(&a.key.to_be_bytes());
    out.extend_from_slice(&a.numwant.to_be_bytes());
    out.extend_from_slice(&a.port.to_be_bytes());
    out
}

/// A scrape request for one swarm on connection `conn`.
pub fn scrape_request(conn: u64, tid: u32, info_hash: &InfoHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(&conn.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(info_hash.as_bytes());
    out
}

/// A reply, as far as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A connection id.
    Connect(u64),
    /// An announce reply.
    Announce(AnnounceReply),
    /// Counts for the first swarm asked about.
    Scrape(ScrapeStats),
    /// The tracker's error message.
    Error(String),
}

/// Parses a reply datagram. `family` is the tracker's address family,
/// which fixes the size of the peers it lists (BEP 15). Returns the
/// transaction id with the reply.
pub fn parse_reply(bytes: &[u8], family: Family) -> Result<(u32, Reply), TrackerError> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(action), Some(tid)) = (word(0), word(4)) else {
        return Err(TrackerError::Malformed("reply too short"));
    };
    let body = &bytes[8..];
    let reply = match action {
        ACTION_CONNECT => {
            let id: [u8; 8] = body
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(TrackerError::Malformed("connect reply too short"))?;
            Reply::Connect(u64::from_be_bytes(id))
        }
        ACTION_ANNOUNCE => {
            let (interval, leechers, seeders) = match (word(8), word(12), word(16)) {
                (Some(i), Some(l), Some(s)) => (i, l, s),
                _ => return Err(TrackerError::Malformed("announce reply too short")),
            };
            let found = lodestone_core::compact::peers(&bytes[20..], family)
                .map_err(|_| TrackerError::Malformed("compact peers of a partial length"))?;
            let mut peers = Vec::new();
            for addr in found {
                if !push_peer(&mut peers, addr) {
                    break;
                }
            }
            Reply::Announce(AnnounceReply {
                interval: Duration::from_secs(interval.into()),
                min_interval: None,
                peers,
                seeders: Some(seeders),
                leechers: Some(leechers),
                warning: None,
            })
        }
        ACTION_SCRAPE => match (word(8), word(12), word(16)) {
            (Some(complete), Some(downloaded), Some(incomplete)) => Reply::Scrape(ScrapeStats {
                complete,
                incomplete,
                downloaded,
            }),
            _ => return Err(TrackerError::Malformed("scrape reply too short")),
        },
        ACTION_ERROR => {
            Reply::Error(String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned())
        }
        _ => return Err(TrackerError::Malformed("unknown action")),
    };
    Ok((tid, reply))
}
