use std::net::{Ipv4Addr, SocketAddr};

use super::*;

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), port))
}

fn peer(addr: SocketAddr, flags: u8) -> PexPeer {
    PexPeer {
        addr,
        flags: PexFlags(flags),
    }
}

#[test]
fn round_trip_both_families_with_flags() {
    let m = PexMessage {
        added: vec![
            peer(v4(1, 6881), PexFlags::SEED),
            peer("[2001:db8::1]:51413".parse().unwrap(), PexFlags::UTP),
        ],
        dropped: vec![v4(2, 80), "[2001:db8::2]:1".parse().unwrap()],
    };
    assert_eq!(PexMessage::decode(&m.encode()).unwrap(), m);
}

#[test]
fn golden_bytes() {
    let m = PexMessage {
        added: vec![peer(v4(1, 0x1ae1), 0x12)],
        dropped: vec![],
    };
    assert_eq!(
        m.encode(),
        b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x126:added60:8:added6.f0:7:dropped0:8:dropped60:e"
    );
}

#[test]
fn missing_lists_and_flags_read_as_empty() {
    let m = PexMessage::decode(b"d5:added6:\x0a\x00\x00\x01\x00\x50e").unwrap();
    assert_eq!(m.added, vec![peer(v4(1, 80), 0)]);
    assert!(m.dropped.is_empty());
    assert_eq!(PexMessage::decode(b"de").unwrap(), PexMessage::default());
}

#[test]
fn malformed_messages_are_typed_errors() {
    assert_eq!(
        PexMessage::decode(b"d5:added5:abcdee"),
        Err(PexError::BadLength {
            key: "added",
            len: 5
        })
    );
    assert_eq!(
        PexMessage::decode(b"d8:dropped617:aaaaaaaaaaaaaaaaae"),
        Err(PexError::BadLength {
            key: "dropped6",
            len: 17
        })
    );
    assert_eq!(PexMessage::decode(b"le"), Err(PexError::NotADict));
    assert!(matches!(
        PexMessage::decode(b"d5:added"),
        Err(PexError::Bencode(_))
    ));
}

#[test]
fn lists_past_the_cap_are_cut_and_undialable_addresses_dropped() {
    let mut added = Vec::new();
    for i in 0..5_000u32 {
        added.extend_from_slice(&i.to_be_bytes());
        added.extend_from_slice(&6881u16.to_be_bytes());
    }
    // Port 0 and 0.0.0.0 are in the first entries: dropped after the cut.
    let mut payload = b"d5:added".to_vec();
    payload.extend_from_slice(format!("{}:", added.len()).as_bytes());
    payload.extend_from_slice(&added);
    payload.extend_from_slice(b"7:dropped6:\x00\x00\x00\x00\x1a\xe1e");
    let m = PexMessage::decode(&payload).unwrap();
    assert_eq!(m.added.len(), MAX_PEX_ADDED - 1, "0.0.0.0 is not dialable");
    assert!(m.dropped.is_empty());
}

#[test]
fn inbox_ignores_messages_sent_too_often_and_caps_the_total() {
    let full = PexMessage {
        added: (0..50).map(|i| peer(v4(i, 1000), 0)).collect(),
        dropped: vec![],
    }
    .encode();
    let t0 = Instant::now();
    let mut inbox = PexInbox::default();
    assert_eq!(inbox.receive(t0, &full).unwrap().len(), 50);
    assert!(
        inbox
            .receive(t0 + Duration::from_secs(10), &full)
            .unwrap()
            .is_empty()
    );
    assert_eq!(inbox.ignored(), 1);
    let mut taken = 50;
    for minute in 1..20 {
        taken += inbox
            .receive(t0 + MIN_PEX_INTERVAL * minute, &full)
            .unwrap()
            .len();
    }
    assert_eq!(taken, MAX_PEX_PER_PEER);
}

#[test]
fn outbox_sends_the_full_set_first_then_differences_at_its_pace() {
    let t0 = Instant::now();
    let mut out = PexOutbox::new(t0);
    let holepunch = PexFlags(PexFlags::HOLEPUNCH);
    let mut connected: BTreeMap<SocketAddr, PexFlags> =
        (0..70).map(|i| (v4(i, 1000), holepunch)).collect();
    assert_eq!(out.poll(t0, &connected), None, "not before the first delay");
    let first = out.poll(out.due(), &connected).unwrap();
    assert_eq!(first.added.len(), MAX_PEX_ADDED);
    assert!(
        first.added.iter().all(|p| p.flags == holepunch),
        "flags passed on"
    );
    assert!(first.dropped.is_empty());
    let t1 = out.due();
    assert_eq!(t1 - (t0 + PEX_FIRST_DELAY), PEX_INTERVAL);
    assert_eq!(out.poll(t1 - Duration::from_secs(1), &connected), None);
    connected.remove(&v4(0, 1000));
    let second = out.poll(t1, &connected).unwrap();
    assert_eq!(second.added.len(), 20);
    assert_eq!(second.dropped, vec![v4(0, 1000)]);
    assert_eq!(
        out.poll(out.due(), &connected),
        None,
        "nothing new: no message"
    );
}
