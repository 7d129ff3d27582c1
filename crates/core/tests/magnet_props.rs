//! Property: printing a magnet link and parsing it back gives the same link.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use lodestone_core::{FileSelection, InfoHash, Magnet};
use proptest::prelude::*;

fn peer() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| { SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port) }),
    ]
}

fn selection() -> impl Strategy<Value = FileSelection> {
    (any::<u32>(), 0u32..1000).prop_map(|(first, span)| FileSelection {
        first,
        last: first.saturating_add(span),
    })
}

fn magnet() -> impl Strategy<Value = Magnet> {
    (
        any::<[u8; 20]>(),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::option::of(".*"),
        proptest::collection::vec(".*", 0..4),
        proptest::collection::vec(peer(), 0..4),
        proptest::option::of(proptest::collection::vec(selection(), 1..5)),
    )
        .prop_map(|(hash, v2, name, trackers, peers, so)| Magnet {
            info_hash: InfoHash::new(hash),
            info_hash_v2: v2,
            display_name: name,
            trackers,
            peers,
            select_only: so,
        })
}

proptest! {
    #[test]
    fn print_then_parse_is_identity(m in magnet()) {
        let text = m.to_string();
        let back = Magnet::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, m);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        let _ = Magnet::parse(&text);
        let _ = Magnet::parse(&format!("magnet:?{text}"));
    }
}
