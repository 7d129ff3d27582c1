use std::time::{Duration, Instant};

use lodestone_core::{Family, InfoHash, PeerId};

use super::*;
use crate::announce::Event;

fn config() -> UdpConfig {
    UdpConfig {
        base_timeout: Duration::from_secs(15),
        max_attempts: 4,
        connection_lifetime: Duration::from_secs(60),
    }
}

fn announce() -> Announce {
    Announce {
        info_hash: InfoHash([3; 20]),
        peer_id: PeerId([4; 20]),
        port: 6881,
        uploaded: 10,
        downloaded: 20,
        left: 30,
        event: Event::Started,
        numwant: 50,
        key: 9,
    }
}

fn tid(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[12..16].try_into().expect("tid"))
}

fn connect_reply(tid: u32, id: u64) -> Vec<u8> {
    let mut r = 0u32.to_be_bytes().to_vec();
    r.extend_from_slice(&tid.to_be_bytes());
    r.extend_from_slice(&id.to_be_bytes());
    r
}

fn announce_reply(tid: u32, peers: &[[u8; 6]]) -> Vec<u8> {
    let mut r = 1u32.to_be_bytes().to_vec();
    r.extend_from_slice(&tid.to_be_bytes());
    for n in [1800u32, 3, 4] {
        r.extend_from_slice(&n.to_be_bytes());
    }
    for p in peers {
        r.extend_from_slice(p);
    }
    r
}

/// Connects and announces; returns the machine with a fresh connection id.
fn connected(t0: Instant) -> UdpTracker {
    let mut m = UdpTracker::new(config(), Family::V4, 1);
    m.start(t0, UdpRequest::Announce(announce()));
    let connect = m.poll_transmit().expect("connect");
    assert_eq!(connect.len(), 16);
    assert_eq!(&connect[..8], &0x0417_2710_1980u64.to_be_bytes());
    m.handle_datagram(t0, &connect_reply(tid(&connect), 77));
    let req = m.poll_transmit().expect("announce");
    assert_eq!(req.len(), 98);
    assert_eq!(&req[..8], &77u64.to_be_bytes());
    m.handle_datagram(
        t0,
        &announce_reply(
            u32::from_be_bytes(req[12..16].try_into().expect("tid")),
            &[[127, 0, 0, 1, 0, 80]],
        ),
    );
    match m.poll_event() {
        Some(Ok(UdpDone::Announced(r))) => {
            assert_eq!(r.interval, Duration::from_secs(1800));
            assert_eq!(r.peers, ["127.0.0.1:80".parse().expect("addr")]);
            assert_eq!((r.seeders, r.leechers), (Some(4), Some(3)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.poll_timeout(), None);
    m
}

#[test]
fn connect_then_announce() {
    connected(Instant::now());
}

#[test]
fn announce_packet_layout() {
    let req = packet::announce_request(5, 6, &announce());
    assert_eq!(&req[8..12], &1u32.to_be_bytes());
    assert_eq!(&req[16..36], &[3; 20]);
    assert_eq!(&req[36..56], &[4; 20]);
    assert_eq!(&req[56..64], &20u64.to_be_bytes());
    assert_eq!(&req[64..72], &30u64.to_be_bytes());
    assert_eq!(&req[72..80], &10u64.to_be_bytes());
    assert_eq!(&req[80..84], &2u32.to_be_bytes());
    assert_eq!(&req[92..96], &50u32.to_be_bytes());
    assert_eq!(&req[96..98], &6881u16.to_be_bytes());
}

#[test]
fn the_connection_id_is_reused_for_a_minute_only() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    m.start(
        t0 + Duration::from_secs(59),
        UdpRequest::Scrape(InfoHash([3; 20])),
    );
    let scrape = m.poll_transmit().expect("scrape");
    assert_eq!(scrape.len(), 36);
    assert_eq!(&scrape[..8], &77u64.to_be_bytes());
    m.start(
        t0 + Duration::from_secs(60),
        UdpRequest::Announce(announce()),
    );
    assert_eq!(m.poll_transmit().expect("connect").len(), 16);
}

#[test]
fn retries_double_then_give_up() {
    let t0 = Instant::now();
    let mut m = UdpTracker::new(config(), Family::V4, 2);
    m.start(t0, UdpRequest::Announce(announce()));
    let mut now = t0;
    let mut waits = Vec::new();
    let mut sent = 0;
    for _ in 0..100 {
        while m.poll_transmit().is_some() {
            sent += 1;
        }
        if let Some(result) = m.poll_event() {
            assert!(
                matches!(result, Err(TrackerError::Timeout(d)) if d == Duration::from_secs(225))
            );
            break;
        }
        let wake = m.poll_timeout().expect("timer");
        waits.push(wake - now);
        now = wake;
        m.handle_timeout(now);
    }
    assert_eq!(sent, 4);
    assert_eq!(waits, [15, 30, 60, 120].map(Duration::from_secs));
}

#[test]
fn an_id_that_expires_during_retries_is_asked_for_again_within_the_budget() {
    let t0 = Instant::now();
    let mut m = UdpTracker::new(config(), Family::V4, 3);
    m.start(t0, UdpRequest::Announce(announce()));
    let connect = m.poll_transmit().expect("connect");
    m.handle_datagram(t0, &connect_reply(tid(&connect), 5));
    assert_eq!(m.poll_transmit().expect("announce").len(), 98);
    // The tracker answers connects only: the request still ends.
    let mut now = t0;
    let mut connects = 0;
    for _ in 0..100 {
        while let Some(p) = m.poll_transmit() {
            if p.len() == 16 {
                connects += 1;
                m.handle_datagram(now, &connect_reply(tid(&p), 6));
            }
        }
        if let Some(result) = m.poll_event() {
            assert!(matches!(result, Err(TrackerError::Timeout(_))));
            break;
        }
        now = m.poll_timeout().expect("timer");
        m.handle_timeout(now);
    }
    assert!(connects >= 1);
    assert!(now - t0 <= Duration::from_secs(225));
}

#[test]
fn stray_and_garbage_datagrams_are_ignored() {
    let t0 = Instant::now();
    let mut m = UdpTracker::new(config(), Family::V4, 4);
    m.start(t0, UdpRequest::Announce(announce()));
    let connect = m.poll_transmit().expect("connect");
    let t = tid(&connect);
    for junk in [
        &b""[..],
        b"\0\0\0\0",
        &connect_reply(t.wrapping_add(1), 1),
        &announce_reply(t, &[]),
        &[0, 0, 0, 9, 0, 0, 0, 0],
    ] {
        m.handle_datagram(t0, junk);
        assert!(m.poll_event().is_none());
        assert!(m.poll_transmit().is_none());
    }
    m.handle_datagram(t0, &connect_reply(t, 1));
    assert!(m.poll_transmit().is_some());
}

#[test]
fn an_error_action_ends_the_request() {
    let t0 = Instant::now();
    let mut m = UdpTracker::new(config(), Family::V4, 5);
    m.start(t0, UdpRequest::Announce(announce()));
    let connect = m.poll_transmit().expect("connect");
    let mut err = 3u32.to_be_bytes().to_vec();
    err.extend_from_slice(&tid(&connect).to_be_bytes());
    err.extend_from_slice(b"not authorized");
    m.handle_datagram(t0, &err);
    assert!(matches!(m.poll_event(), Some(Err(TrackerError::Refused(s))) if s == "not authorized"));
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn reply_parser_bounds_and_families() {
    let mut r = announce_reply(1, &[]);
    r.extend_from_slice(&[0u8; 18 * 300]);
    let Ok((_, packet::Reply::Announce(a))) = packet::parse_reply(&r, Family::V6) else {
        panic!("v6 reply");
    };
    // All-zero addresses are not contactable.
    assert!(a.peers.is_empty());
    let mut r = announce_reply(1, &[]);
    for i in 0..300u16 {
        r.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
    }
    let Ok((_, packet::Reply::Announce(a))) = packet::parse_reply(&r, Family::V4) else {
        panic!("v4 reply");
    };
    assert_eq!(a.peers.len(), crate::MAX_PEERS);
    assert!(packet::parse_reply(&r[..r.len() - 1], Family::V4).is_err());
    assert!(packet::parse_reply(&[0, 0, 0, 2, 0, 0, 0, 1, 0], Family::V4).is_err());
}
