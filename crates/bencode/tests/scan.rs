//! Behaviour of the scanner on valid, malformed and hostile input.

use lodestone_bencode::{Error, Kind, Limits, OwnedValue, encode, parse, parse_prefix};
use proptest::prelude::*;

fn ok(input: &[u8]) -> OwnedValue {
    OwnedValue::from(
        parse(input, &Limits::default())
            .expect("valid bencode")
            .root(),
    )
}

fn err(input: &[u8]) -> Error {
    parse(input, &Limits::default()).expect_err("invalid bencode")
}

#[test]
fn scalars() {
    assert_eq!(ok(b"i42e"), OwnedValue::Int(42));
    assert_eq!(ok(b"i-7e"), OwnedValue::Int(-7));
    assert_eq!(ok(b"i0e"), OwnedValue::Int(0));
    assert_eq!(ok(b"i-9223372036854775808e"), OwnedValue::Int(i64::MIN));
    assert_eq!(ok(b"4:spam"), OwnedValue::Bytes(b"spam".to_vec()));
    assert_eq!(ok(b"0:"), OwnedValue::Bytes(vec![]));
}

#[test]
fn malformed_numbers_are_refused() {
    for bad in [
        &b"i03e"[..],
        b"i-0e",
        b"ie",
        b"i-e",
        b"i9223372036854775808e",
        b"03:abc",
        b"i1x",
    ] {
        assert!(
            parse(bad, &Limits::default()).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn trailing_bytes_are_refused_but_reported_by_prefix() {
    assert_eq!(
        err(b"i5eGARBAGE"),
        Error::Trailing {
            offset: 3,
            count: 7
        }
    );
    let (doc, end) = parse_prefix(b"d8:msg_typei1e5:piecei0eeRAWDATA", &Limits::default()).unwrap();
    assert_eq!(end, 25);
    assert_eq!(doc.root().as_dict().unwrap().get_int(b"piece"), Some(0));
}

#[test]
fn raw_span_of_nested_value_is_exact() {
    let input = b"d8:announce3:foo4:infod6:lengthi5e4:name1:xee";
    let doc = parse(input, &Limits::default()).unwrap();
    let info = doc.root().as_dict().unwrap().get(b"info").unwrap();
    assert_eq!(info.raw(), b"d6:lengthi5e4:name1:xe");
    assert_eq!(info.kind(), Kind::Dict);
}

#[test]
fn truncation_and_garbage() {
    assert!(matches!(err(b"l"), Error::Truncated { .. }));
    assert!(matches!(err(b"5:abc"), Error::Truncated { .. }));
    assert!(matches!(err(b"d3:fooe"), Error::Unexpected { .. }));
    assert!(matches!(err(b"di1ei2ee"), Error::KeyNotString { .. }));
    assert!(matches!(err(b"x"), Error::Unexpected { .. }));
    assert!(matches!(err(b""), Error::Truncated { .. }));
}

#[test]
fn a_closed_container_hands_back_to_the_one_enclosing_it() {
    // After the inner dictionary and list close, the outer dictionary
    // expects a key again, and the list goes on taking values.
    let doc = parse(b"d1:ald1:bi1eei7ee1:ci2ee", &Limits::default()).unwrap();
    let root = doc.root().as_dict().unwrap();
    assert_eq!(root.get(b"c").unwrap().as_int(), Some(2));
    let list = root.get(b"a").unwrap().as_list().unwrap();
    assert_eq!(list.count(), 2);
    assert!(matches!(
        err(b"d1:ald1:bi1eei7eei2ee"),
        Error::KeyNotString { .. }
    ));
    assert!(matches!(
        err(b"d1:ald1:bi1eee1:ce"),
        Error::Unexpected { .. }
    ));
    // Exactly at the depth limit is fine; one deeper is not.
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert!(parse(b"lld1:alleeee", &limits).is_err());
    assert!(parse(b"ld1:aleee", &limits).is_ok());
}

#[test]
fn limits_are_enforced_before_allocation() {
    let limits = Limits {
        max_depth: 3,
        max_input: 100,
        max_items: 4,
        max_string: 10,
    };
    assert_eq!(
        parse(b"llllee", &limits).unwrap_err(),
        Error::TooDeep { limit: 3 }
    );
    assert_eq!(
        parse(b"li1ei2ei3ei4ee", &limits).unwrap_err(),
        Error::TooManyItems { limit: 4 }
    );
    assert!(matches!(
        parse(b"99999999999:x", &limits).unwrap_err(),
        Error::StringTooLong { .. }
    ));
    assert!(matches!(
        parse(&[b'l'; 101], &limits).unwrap_err(),
        Error::TooLarge { .. }
    ));
}

#[test]
fn a_mebibyte_of_nesting_is_refused_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let input = vec![b'l'; 1 << 20];
            parse(&input, &Limits::METAINFO).unwrap_err()
        })
        .unwrap();
    assert_eq!(
        handle.join().unwrap(),
        Error::TooDeep {
            limit: Limits::METAINFO.max_depth
        }
    );
}

#[test]
fn duplicate_keys_resolve_to_the_first() {
    let doc = parse(b"d1:ai1e1:ai2ee", &Limits::default()).unwrap();
    assert_eq!(doc.root().as_dict().unwrap().get_int(b"a"), Some(1));
}

#[test]
fn typed_decoding_goes_through_the_scan() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Ping {
        #[serde(with = "serde_bytes")]
        id: Vec<u8>,
    }
    let ping: Ping = lodestone_bencode::from_bytes(b"d2:id3:abce", &Limits::KRPC).unwrap();
    assert_eq!(ping.id, b"abc");
    assert!(lodestone_bencode::from_bytes::<Ping>(b"d2:id3:abceX", &Limits::KRPC).is_err());
}

fn arb_value() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(OwnedValue::Int),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(OwnedValue::Bytes),
        // Lengths of two, three and four digits.
        proptest::collection::vec(any::<u8>(), 99..1001).prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(OwnedValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6),
                inner,
                0..6
            )
            .prop_map(OwnedValue::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_scan_round_trips(value in arb_value()) {
        let bytes = encode(&value);
        let doc = parse(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(doc.root().raw(), &bytes[..]);
        prop_assert_eq!(OwnedValue::from(doc.root()), value);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(doc) = parse(&bytes, &Limits::default()) {
            // Anything accepted re-encodes; canonical input re-encodes to itself.
            let again = encode(&OwnedValue::from(doc.root()));
            prop_assert!(parse(&again, &Limits::default()).is_ok());
        }
    }

    #[test]
    fn matches_serde_bencode_on_canonical_input(value in arb_value()) {
        let bytes = encode(&value);
        let theirs: serde_bencode::value::Value = serde_bencode::from_bytes(&bytes).unwrap();
        prop_assert_eq!(serde_bencode::to_bytes(&theirs).unwrap(), bytes);
    }
}
