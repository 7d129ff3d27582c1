use std::net::SocketAddr;
use std::time::Duration;

use lodestone_core::{InfoHash, PeerId};

use super::*;
use crate::announce::Event;

fn announce() -> Announce {
    Announce {
        info_hash: InfoHash([0xab; 20]),
        peer_id: PeerId(*b"-LS0001-abc def~/\x00\xff\x10"),
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: Event::Started,
        numwant: 50,
        key: 0xdead_beef,
    }
}

#[test]
fn announce_url_encodes_binary_ids_and_keeps_a_passkey() {
    let base = Url::parse("http://t.example:8080/announce?passkey=xyz").expect("url");
    let url = announce_url(&base, &announce());
    let q = url.query().expect("query");
    assert!(q.starts_with("passkey=xyz&info_hash=%AB%AB"), "{q}");
    assert!(q.contains("peer_id=-LS0001-abc%20def~%2F%00%FF%10"), "{q}");
    assert!(q.contains("&port=6881&uploaded=1&downloaded=2&left=3&compact=1&numwant=50&key=deadbeef&event=started"), "{q}");
    let mut periodic = announce();
    periodic.event = Event::None;
    assert!(!announce_url(&base, &periodic).as_str().contains("event="));
}

#[test]
fn scrape_url_follows_the_announce_convention() {
    let ih = InfoHash([1; 20]);
    let url = |s: &str| scrape_url(&Url::parse(s).expect("url"), &ih).map(|u| u.to_string());
    assert_eq!(
        url("http://t/x/announce.php?k=1").as_deref(),
        Some(
            "http://t/x/scrape.php?k=1&info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01"
        )
    );
    assert_eq!(
        url("http://t/announcer"),
        Some(format!("http://t/scraper?info_hash={}", "%01".repeat(20)))
    );
    assert_eq!(url("http://t/a/b"), None);
}

#[test]
fn compact_reply_with_both_families() {
    let mut body =
        b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e5:peers12:".to_vec();
    body.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
    body.extend_from_slice(b"6:peers618:");
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0, 81]);
    body.push(b'e');
    let reply = parse_announce(&body).expect("reply");
    assert_eq!(reply.interval, Duration::from_secs(1800));
    assert_eq!(reply.min_interval, Some(Duration::from_secs(60)));
    assert_eq!((reply.seeders, reply.leechers), (Some(5), Some(7)));
    let want: Vec<SocketAddr> = ["127.0.0.1:6881", "10.0.0.2:80", "[::1]:81"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(reply.peers, want);
}

#[test]
fn dictionary_peers_are_read_too() {
    let body = b"d8:intervali60e5:peersld2:ip9:127.0.0.24:porti7000eed2:ip3:bad4:porti1eed2:ip3:::14:porti99999eeee";
    let reply = parse_announce(body).expect("reply");
    assert_eq!(
        reply.peers,
        ["127.0.0.2:7000".parse::<SocketAddr>().expect("addr")]
    );
}

#[test]
fn a_full_list_of_dictionary_peers_with_ids_fits_the_limits() {
    let mut body = b"d8:intervali60e5:peersl".to_vec();
    for i in 0..crate::announce::MAX_PEERS {
        body.extend_from_slice(b"d2:ip9:127.0.0.27:peer id20:");
        body.extend_from_slice(&[b'p'; 20]);
        body.extend_from_slice(format!("4:porti{}ee", 1000 + i).as_bytes());
    }
    body.extend_from_slice(b"ee");
    let reply = parse_announce(&body).expect("reply");
    assert_eq!(reply.peers.len(), crate::announce::MAX_PEERS);
}

#[test]
fn failures_and_garbage_are_typed_errors() {
    assert!(matches!(
        parse_announce(b"d14:failure reason8:not heree"),
        Err(TrackerError::Refused(m)) if m == "not here"
    ));
    for bad in [
        &b""[..],
        b"garbage",
        b"le",
        b"d5:peers0:e",
        b"d8:intervali60e5:peers5:12345e",
        b"d8:intervali60e5:peersi3ee",
        b"d8:intervali60e6:peers6i3ee",
        b"d8:intervali60e5:peers0:eTRAILING",
    ] {
        assert!(
            matches!(parse_announce(bad), Err(TrackerError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn peers_are_capped_and_unusable_ones_dropped() {
    let mut list = Vec::new();
    for i in 0..1000u32 {
        list.extend_from_slice(&(0x0a00_0000 + i).to_be_bytes());
        list.extend_from_slice(&[0x1a, 0xe1]);
    }
    list.extend_from_slice(&[0, 0, 0, 0, 1, 1]);
    let mut body = format!("d8:intervali60e5:peers{}:", list.len()).into_bytes();
    body.extend_from_slice(&list);
    body.push(b'e');
    let reply = parse_announce(&body).expect("reply");
    assert_eq!(reply.peers.len(), MAX_PEERS);
    let zero = b"d8:intervali60e5:peers12:\0\0\0\0\x01\x01\x0a\0\0\x01\0\0e";
    assert!(parse_announce(zero).expect("reply").peers.is_empty());
}

#[test]
fn oversized_replies_are_refused_before_scanning() {
    let body = vec![b'x'; MAX_REPLY as usize + 1];
    assert!(matches!(
        parse_announce(&body),
        Err(TrackerError::Malformed(_))
    ));
}

#[test]
fn scrape_reply_for_our_swarm() {
    let ih = InfoHash([7; 20]);
    let mut body = b"d5:filesd20:".to_vec();
    body.extend_from_slice(&[7; 20]);
    body.extend_from_slice(b"d8:completei2e10:downloadedi9e10:incompletei4eeee");
    let stats = parse_scrape(&body, &ih).expect("scrape");
    assert_eq!(
        stats,
        ScrapeStats {
            complete: 2,
            incomplete: 4,
            downloaded: 9
        }
    );
    assert_eq!(
        parse_scrape(b"d5:filesdee", &ih).expect("empty"),
        ScrapeStats::default()
    );
    assert!(parse_scrape(b"de", &ih).is_err());
}
