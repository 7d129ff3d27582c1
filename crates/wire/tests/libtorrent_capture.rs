//! Golden bytes: what a libtorrent 2.0.8 seeder sent on a loopback connection
//! after we sent a handshake with the extension, fast and DHT bits: its
//! handshake, its BEP 10 extension handshake, `have all` and `unchoke`, all
//! in one segment. Captured in a network namespace by
//! `libtorrent_seeder.py DIR 1 CAPTURE`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use lodestone_core::InfoHash;
use lodestone_wire::extension::UT_METADATA;
use lodestone_wire::handshake::HANDSHAKE_LEN;
use lodestone_wire::{Decoder, ExtendedHandshake, Handshake, Message, encode};

const CAPTURE: &[u8] = include_bytes!("fixtures/libtorrent-2.0.8-seeder-greeting.bin");
const INFO_HASH: &str = "012e90dde93dfa2fe1db22612c33bf218b473bf9";

#[test]
fn handshake() {
    let hs = Handshake::decode(CAPTURE).unwrap();
    hs.check_info_hash(&InfoHash::from_hex(INFO_HASH).unwrap())
        .unwrap();
    assert!(hs.reserved.supports_extensions());
    assert!(hs.reserved.supports_fast());
    assert!(hs.reserved.supports_dht());
    assert!(hs.peer_id.as_bytes().starts_with(b"-LT2080-"));
    assert_eq!(hs.to_bytes(), CAPTURE[..HANDSHAKE_LEN]);
}

#[test]
fn messages_and_extension_handshake() {
    let mut buf = BytesMut::from(&CAPTURE[HANDSHAKE_LEN..]);
    let decoder = Decoder::new();
    let mut messages = Vec::new();
    while let Some(m) = decoder.decode(&mut buf).unwrap() {
        messages.push(m);
    }
    assert!(buf.is_empty());
    let [
        Message::Extended { id: 0, payload },
        Message::HaveAll,
        Message::Unchoke,
    ] = &messages[..]
    else {
        panic!("unexpected greeting: {messages:?}");
    };

    let ext = ExtendedHandshake::decode(payload).unwrap();
    assert_eq!(ext.extension_id(UT_METADATA), Some(2));
    assert_eq!(ext.extension_id("ut_pex"), Some(1));
    assert_eq!(ext.extension_id("lt_donthave"), Some(7));
    assert_eq!(ext.m.len(), 6);
    assert_eq!(ext.metadata_size, Some(270));
    assert_eq!(ext.reqq, Some(2000));
    assert_eq!(ext.v.as_deref(), Some("libtorrent/2.0.8.0"));
    assert_eq!(ext.yourip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(ext.p, None);

    // Re-encoding the decoded messages reproduces the capture exactly.
    let mut out = BytesMut::new();
    for m in &messages {
        encode(m, &mut out);
    }
    assert_eq!(&out[..], &CAPTURE[HANDSHAKE_LEN..]);
}
