//! Properties of the HTTP tracker reply parsers on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `tracker_http` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! Neither parser panics. An accepted announce reply holds at most
//! `MAX_PEERS` distinct contactable peers, and written back in the compact
//! form (`peers`, `peers6`) it parses to the same interval and peers.

use std::net::SocketAddr;

use lodestone_core::InfoHash;
use lodestone_tracker::http::{parse_announce, parse_scrape};

/// Checks the parsers on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let _ = parse_scrape(data, &InfoHash([0x61; 20]));
    let Ok(reply) = parse_announce(data) else {
        return;
    };
    assert!(reply.peers.len() <= lodestone_tracker::MAX_PEERS);
    for (i, peer) in reply.peers.iter().enumerate() {
        assert!(lodestone_core::compact::is_contactable(peer), "{peer}");
        assert!(!reply.peers[..i].contains(peer), "{peer} twice");
    }
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) =
        reply.peers.iter().partition(|p| p.is_ipv4());
    let compact = |peers: &[SocketAddr]| {
        let mut out = Vec::new();
        for p in peers {
            lodestone_core::compact::write_peer(p, &mut out);
        }
        out
    };
    let (c4, c6) = (compact(&v4), compact(&v6));
    let mut again = format!(
        "d8:intervali{}e5:peers{}:",
        reply.interval.as_secs(),
        c4.len()
    )
    .into_bytes();
    again.extend_from_slice(&c4);
    again.extend_from_slice(format!("6:peers6{}:", c6.len()).as_bytes());
    again.extend_from_slice(&c6);
    again.push(b'e');
    let parsed = parse_announce(&again).unwrap_or_else(|e| panic!("written back, it fails: {e}"));
    assert_eq!(parsed.interval, reply.interval);
    let mut want = v4;
    want.extend(v6);
    assert_eq!(parsed.peers, want);
}
