use proptest::prelude::*;

use super::*;

#[test]
fn bep10_example() {
    // As published, the example's `6:µT_PEX` miscounts the two-byte `µ`;
    // this is the example with the name spelt `ut_pex`, as clients send it.
    let payload = b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e";
    let hs = ExtendedHandshake::decode(payload).unwrap();
    assert_eq!(hs.extension_id("LT_metadata"), Some(1));
    assert_eq!(hs.extension_id(UT_PEX), Some(2));
    assert_eq!(hs.extension_id(UT_METADATA), None);
    assert_eq!(hs.p, Some(6881));
    assert_eq!(hs.v.as_deref(), Some("\u{b5}Torrent 1.2"));
    assert_eq!(hs.metadata_size, None);
    // The example is canonical, so it re-encodes to the same bytes.
    assert_eq!(hs.encode(), payload);
}

#[test]
fn the_listen_address_is_p_on_the_connections_ip() {
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let with_p = |p| ExtendedHandshake {
        p,
        ..ExtendedHandshake::default()
    };
    assert_eq!(
        with_p(Some(6881)).listen_addr(ip),
        Some(SocketAddr::new(ip, 6881))
    );
    assert_eq!(with_p(Some(0)).listen_addr(ip), None, "nobody listens on 0");
    assert_eq!(with_p(None).listen_addr(ip), None);
}

#[test]
fn encodes_canonically() {
    let hs = ExtendedHandshake {
        m: [
            ("ut_pex".to_owned(), 2),
            ("ut_metadata".to_owned(), 1),
            ("lt_donthave".to_owned(), 7),
        ]
        .into_iter()
        .collect(),
        p: Some(51413),
        v: Some("lodestone 0.1".to_owned()),
        yourip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
        ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ipv6: Some(Ipv6Addr::LOCALHOST),
        reqq: Some(500),
        metadata_size: Some(31235),
    };
    let bytes = hs.encode();
    let expected: &[u8] = b"d4:ipv44:\x0a\x00\x00\x01\
        4:ipv616:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\
        1:md11:lt_donthavei7e11:ut_metadatai1e6:ut_pexi2ee\
        13:metadata_sizei31235e1:pi51413e4:reqqi500e1:v13:lodestone 0.16:yourip4:\x7f\x00\x00\x02e";
    assert_eq!(bytes, expected);
    assert_eq!(ExtendedHandshake::decode(&bytes), Ok(hs.clone()));
    let Message::Extended { id: 0, payload } = hs.to_message() else {
        panic!("extension handshake must be extended id 0");
    };
    assert_eq!(&payload[..], expected);
}

#[test]
fn empty_and_unknown_keys() {
    assert_eq!(
        ExtendedHandshake::decode(b"de"),
        Ok(ExtendedHandshake::default())
    );
    assert_eq!(ExtendedHandshake::default().encode(), b"de");
    let hs = ExtendedHandshake::decode(b"d1:ai1e1:md11:ut_metadatai3ee3:zzzli1eee").unwrap();
    assert_eq!(hs.extension_id(UT_METADATA), Some(3));
}

#[test]
fn odd_values_read_as_absent() {
    let payload = b"d1:md1:ai0e1:bi300e1:c1:x2:\xff\xffi4e6:ut_pexi-1e\
        e13:metadata_sizei-5e1:pi70000e4:reqqi-1e6:yourip3:abce";
    let hs = ExtendedHandshake::decode(payload).unwrap();
    assert_eq!(hs.m.len(), 1, "{hs:?}");
    assert_eq!(hs.m.get("a"), Some(&0));
    assert_eq!(hs.extension_id("a"), None);
    assert_eq!(hs.p, None);
    assert_eq!(hs.reqq, None);
    assert_eq!(hs.metadata_size, None);
    assert_eq!(hs.yourip, None);
}

#[test]
fn refusals() {
    assert_eq!(
        ExtendedHandshake::decode(b"li1ee"),
        Err(ExtensionError::NotADict)
    );
    assert!(matches!(
        ExtendedHandshake::decode(b"d1:m"),
        Err(ExtensionError::Bencode(_))
    ));
    assert!(matches!(
        ExtendedHandshake::decode(b"dee"),
        Err(ExtensionError::Bencode(_))
    ));
    let mut many = b"d1:md".to_vec();
    for i in 0..=MAX_EXTENSIONS {
        let name = format!("x{i:04}");
        many.extend_from_slice(format!("{}:{}i1e", name.len(), name).as_bytes());
    }
    many.extend_from_slice(b"ee");
    assert_eq!(
        ExtendedHandshake::decode(&many),
        Err(ExtensionError::TooManyExtensions {
            count: MAX_EXTENSIONS + 1,
            max: MAX_EXTENSIONS
        })
    );
}

fn arb_handshake() -> impl Strategy<Value = ExtendedHandshake> {
    (
        proptest::collection::btree_map("[a-z_]{1,12}", any::<u8>(), 0..10),
        proptest::option::of(1u16..),
        proptest::option::of(".{0,20}"),
        proptest::option::of(any::<IpAddr>()),
        proptest::option::of(any::<Ipv4Addr>()),
        proptest::option::of(any::<Ipv6Addr>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(0u64..=i64::MAX as u64),
    )
        .prop_map(
            |(m, p, v, yourip, ipv4, ipv6, reqq, metadata_size)| ExtendedHandshake {
                m,
                p,
                v,
                yourip,
                ipv4,
                ipv6,
                reqq,
                metadata_size,
            },
        )
}

proptest! {
    #[test]
    fn round_trip(hs in arb_handshake()) {
        let bytes = hs.encode();
        // The encoding must pass our own strict scanner, hence be canonical.
        prop_assert!(lodestone_bencode::parse(&bytes, &Limits::PEER_MESSAGE).is_ok());
        prop_assert_eq!(ExtendedHandshake::decode(&bytes), Ok(hs));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ExtendedHandshake::decode(&bytes);
    }
}
