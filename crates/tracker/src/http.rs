//! HTTP(S) trackers (BEP 3, compact peers per BEP 23, `peers6` per BEP 7):
//! the announce and scrape URLs, and bounded parsers for their replies.
//!
//! A reply is a bencoded dictionary from a stranger. The body is capped
//! before it is buffered ([`MAX_REPLY`], by the HTTP client), then scanned
//! with tight bencode limits; peers are taken up to [`MAX_PEERS`], in the
//! compact form or the older list of dictionaries.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lodestone_bencode::{Dict, Limits};
use lodestone_core::{Family, InfoHash};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::announce::{Announce, AnnounceReply, MAX_PEERS, ScrapeStats, push_peer};
use crate::error::TrackerError;

/// Largest reply body read: 200 compact peers of each family take under
/// 5 KiB; anything near this cap is not a useful answer.
pub const MAX_REPLY: u64 = 256 << 10;

/// Bencode limits for a reply: flat dictionaries, a few hundred values.
/// Keys count as items too, so a non-compact peer `{ip, peer id, port}`
/// costs seven.
const REPLY_LIMITS: Limits = Limits {
    max_depth: 4,
    max_input: MAX_REPLY as usize,
    max_items: 8 * MAX_PEERS + 64,
    max_string: MAX_REPLY as usize,
};

/// RFC 3986 unreserved characters stay; every other byte of the binary
/// ids is percent-encoded.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_bytes(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, QUERY).to_string()
}

/// The announce URL for `a` on the tracker `base` (which may carry a query
/// of its own, e.g. a passkey).
pub fn announce_url(base: &Url, a: &Announce) -> Url {
    let mut query = format!(
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        encode_bytes(a.info_hash.as_bytes()),
        encode_bytes(&a.peer_id.0),
        a.port,
        a.uploaded,
        a.downloaded,
        a.left,
        a.numwant,
        a.key,
    );
    if let Some(event) = a.event.http_name() {
        query.push_str("&event=");
        query.push_str(event);
    }
    with_query(base, &query)
}

/// The scrape URL for `info_hash` on the tracker `announce`, if it has one:
/// by convention, the last path segment `announce…` becomes `scrape…`.
pub fn scrape_url(announce: &Url, info_hash: &InfoHash) -> Option<Url> {
    let path = announce.path();
    let (dir, last) = path.rsplit_once('/')?;
    let rest = last.strip_prefix("announce")?;
    let mut url = announce.clone();
    url.set_path(&format!("{dir}/scrape{rest}"));
    let query = format!("info_hash={}", encode_bytes(info_hash.as_bytes()));
    Some(with_query(&url, &query))
}

fn with_query(base: &Url, query: &str) -> Url {
    let mut url = base.clone();
    let joined = match base.query() {
        Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
        _ => query.to_owned(),
    };
    // Already percent-encoded: set as is.
    url.set_query(Some(&joined));
    url
}

/// Reads `body` as a bounded reply dictionary and hands it to `read`,
/// unless it is over the size cap, not a dictionary, or the tracker's
/// `failure reason`.
fn with_reply<T>(
    body: &[u8],
    read: impl FnOnce(&Dict<'_>) -> Result<T, TrackerError>,
) -> Result<T, TrackerError> {
    if body.len() as u64 > MAX_REPLY {
        return Err(TrackerError::Malformed("reply over the size cap"));
    }
    let doc = lodestone_bencode::parse(body, &REPLY_LIMITS)
        .map_err(|_| TrackerError::Malformed("reply is not bounded bencode"))?;
    let dict = doc
        .root()
        .as_dict()
        .ok_or(TrackerError::Malformed("reply is not a dictionary"))?;
    if let Some(reason) = dict.get_bytes(b"failure reason") {
        return Err(TrackerError::Refused(text(reason)));
    }
    read(&dict)
}

/// A tracker's message, cut to a displayable length.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned()
}

fn count(dict: &Dict<'_>, key: &[u8]) -> Option<u32> {
    dict.get_int(key).and_then(|v| u32::try_from(v).ok())
}

fn seconds(dict: &Dict<'_>, key: &[u8]) -> Option<Duration> {
    dict.get_int(key)
        .and_then(|v| u64::try_from(v).ok())
        .map(Duration::from_secs)
}

/// Parses an announce reply body.
pub fn parse_announce(body: &[u8]) -> Result<AnnounceReply, TrackerError> {
    with_reply(body, announce_reply)
}

fn announce_reply(dict: &Dict<'_>) -> Result<AnnounceReply, TrackerError> {
    let interval = seconds(dict, b"interval").ok_or(TrackerError::Malformed("no interval"))?;
    let mut peers = Vec::new();
    if let Some(v) = dict.get(b"peers") {
        if let Some(bytes) = v.as_bytes() {
            compact(&mut peers, bytes, Family::V4)?;
        } else {
            let list = v.as_list().ok_or(TrackerError::Malformed(
                "peers is neither a string nor a list",
            ))?;
            for peer in list.take(MAX_PEERS) {
                if let Some(addr) = peer.as_dict().and_then(|d| dict_peer(&d)) {
                    push_peer(&mut peers, addr);
                }
            }
        }
    }
    if let Some(v6) = dict.get(b"peers6") {
        let bytes = v6
            .as_bytes()
            .ok_or(TrackerError::Malformed("peers6 is not a string"))?;
        compact(&mut peers, bytes, Family::V6)?;
    }
    Ok(AnnounceReply {
        interval,
        min_interval: seconds(dict, b"min interval"),
        peers,
        seeders: count(dict, b"complete"),
        leechers: count(dict, b"incomplete"),
        warning: dict.get_bytes(b"warning message").map(text),
    })
}

/// Appends compact peers of `family`, up to the cap.
fn compact(peers: &mut Vec<SocketAddr>, bytes: &[u8], family: Family) -> Result<(), TrackerError> {
    let found = lodestone_core::compact::peers(bytes, family)
        .map_err(|_| TrackerError::Malformed("compact peers of a partial length"))?;
    for addr in found {
        if !push_peer(peers, addr) {
            break;
        }
    }
    Ok(())
}

/// A peer of the non-compact list: `ip` as text, `port` as an integer.
fn dict_peer(d: &Dict<'_>) -> Option<SocketAddr> {
    let ip: IpAddr = std::str::from_utf8(d.get_bytes(b"ip")?)
        .ok()?
        .parse()
        .ok()?;
    let port = u16::try_from(d.get_int(b"port")?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Parses a scrape reply body for `info_hash`.
pub fn parse_scrape(body: &[u8], info_hash: &InfoHash) -> Result<ScrapeStats, TrackerError> {
    with_reply(body, |dict| scrape_stats(dict, info_hash))
}

fn scrape_stats(dict: &Dict<'_>, info_hash: &InfoHash) -> Result<ScrapeStats, TrackerError> {
    let files = dict
        .get_dict(b"files")
        .ok_or(TrackerError::Malformed("no files dictionary"))?;
    let Some(stats) = files.get_dict(info_hash.as_bytes()) else {
        // A tracker that does not know the swarm may leave it out.
        return Ok(ScrapeStats::default());
    };
    Ok(ScrapeStats {
        complete: count(&stats, b"complete").unwrap_or(0),
        incomplete: count(&stats, b"incomplete").unwrap_or(0),
        downloaded: count(&stats, b"downloaded").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
