//! Properties of the UDP tracker reply parser and exchange on arbitrary
//! bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `tracker_udp` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The parser never panics and takes at most `MAX_PEERS` peers. The input
//! is also fed as tracker datagrams (split on a `0xff 0xfe` separator) to
//! a UDP exchange, after the transaction id of the packet it sent is
//! written over bytes 4..8 so replies get past the id check: the exchange
//! never panics, and after every datagram it either still waits (a timer
//! is armed) or has its one result.

use std::time::{Duration, Instant};

use lodestone_core::{Family, InfoHash, PeerId};
use lodestone_tracker::udp::packet::{Reply, parse_reply};
use lodestone_tracker::udp::{UdpConfig, UdpRequest, UdpTracker};
use lodestone_tracker::{Announce, Event};

/// Checks the parser and the exchange on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    for family in [Family::V4, Family::V6] {
        if let Ok((_, Reply::Announce(a))) = parse_reply(data, family) {
            assert!(a.peers.len() <= lodestone_tracker::MAX_PEERS);
        }
    }
    let announce = Announce {
        info_hash: InfoHash([1; 20]),
        peer_id: PeerId([2; 20]),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: Event::Started,
        numwant: 50,
        key: 0,
    };
    let mut now = Instant::now();
    let mut tracker = UdpTracker::new(UdpConfig::default(), Family::V4, 7);
    tracker.start(now, UdpRequest::Announce(announce));
    let mut last_sent = tracker.poll_transmit().expect("a first packet");
    for datagram in data
        .split(|b| *b == 0xff)
        .filter(|d| d.first() == Some(&0xfe))
    {
        let mut datagram = datagram[1..].to_vec();
        if let (Some(slot), Some(tid)) = (datagram.get_mut(4..8), last_sent.get(12..16)) {
            slot.copy_from_slice(tid);
        }
        now += Duration::from_millis(10);
        tracker.handle_datagram(now, &datagram);
        while let Some(p) = tracker.poll_transmit() {
            last_sent = p;
        }
        let done = tracker.poll_event();
        assert!(
            done.is_some() != tracker.poll_timeout().is_some(),
            "neither waiting nor done, or both"
        );
        if done.is_some() {
            return;
        }
    }
}
