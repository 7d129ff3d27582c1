//! Properties of the bencode scanner and encoder on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `bencode` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`, so both check exactly the
//! same thing. A violated property panics.
//!
//! For every input, under the KRPC and peer-message limits:
//! * `parse` and `parse_prefix` agree (same error, or `Trailing` exactly where
//!   the prefix ends);
//! * an accepted document spans the whole input, and every value's span lies
//!   inside its parent's and rescans on its own as the same kind;
//! * scan → `OwnedValue` → encode → scan gives the same `OwnedValue`, and the
//!   encoding fits the limits the input was accepted under;
//! * the encoding equals the input exactly when the input is canonical
//!   (every dictionary's keys strictly ascending: the scanner already refuses
//!   every other non-canonical form).

use lodestone_bencode::{Error, Kind, Limits, OwnedValue, Value, encode, parse, parse_prefix};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    check_with(data, &Limits::KRPC);
    check_with(data, &Limits::PEER_MESSAGE);
}

fn check_with(data: &[u8], limits: &Limits) {
    let whole = parse(data, limits);
    match (parse_prefix(data, limits), &whole) {
        (Ok((_, end)), Ok(_)) => assert_eq!(end, data.len(), "parse accepted a prefix"),
        (Ok((_, end)), Err(e)) => assert_eq!(
            e,
            &Error::Trailing {
                offset: end,
                count: data.len() - end
            },
            "parse refused what parse_prefix accepted"
        ),
        (Err(prefix), Err(e)) => assert_eq!(&prefix, e, "parse and parse_prefix disagree"),
        (Err(prefix), Ok(_)) => panic!("parse accepted what parse_prefix refused: {prefix}"),
    }
    let Ok(doc) = whole else { return };
    let root = doc.root();
    assert_eq!(root.span(), 0..data.len(), "root span");
    assert_eq!(root.raw(), data, "root raw bytes");

    let canonical = walk(root, limits);

    let owned = OwnedValue::from(root);
    let encoded = encode(&owned);
    let rescanned = parse(&encoded, limits)
        .unwrap_or_else(|e| panic!("encoder output refused under the same limits: {e}"));
    assert_eq!(
        OwnedValue::from(rescanned.root()),
        owned,
        "round trip changed the value"
    );
    assert_eq!(
        canonical,
        encoded == data,
        "canonical input must encode to itself, and only canonical input does"
    );
}

/// Checks spans and kinds of every value below `root` (iteratively: depth is
/// bounded by the limits, but the walk should not depend on that) and returns
/// whether every dictionary has strictly ascending keys.
fn walk(root: Value<'_>, limits: &Limits) -> bool {
    let mut canonical = true;
    let mut stack = vec![root];
    while let Some(value) = stack.pop() {
        let span = value.span();
        let alone = parse(value.raw(), limits)
            .unwrap_or_else(|e| panic!("value at {span:?} does not rescan alone: {e}"));
        assert_eq!(
            alone.root().kind(),
            value.kind(),
            "kind of value at {span:?}"
        );
        let inside = |child: &Value<'_>| {
            let c = child.span();
            assert!(
                span.start < c.start && c.end < span.end,
                "child span {c:?} not strictly inside {span:?}"
            );
        };
        match value.kind() {
            Kind::Int => assert!(value.as_int().is_some(), "int without value"),
            Kind::Bytes => assert!(value.as_bytes().is_some(), "bytes without value"),
            Kind::List => {
                for child in value.as_list().expect("a list value lists") {
                    inside(&child);
                    stack.push(child);
                }
            }
            Kind::Dict => {
                let dict = value.as_dict().expect("a dict value is a dict");
                let mut previous: Option<&[u8]> = None;
                for (key, child) in dict.iter() {
                    inside(&child);
                    canonical &= previous.is_none_or(|p| p < key);
                    previous = Some(key);
                    stack.push(child);
                }
            }
        }
    }
    canonical
}
