//! Properties of the BEP 11 peer exchange parser
//! (`lodestone_wire::pex::PexMessage`, `PexInbox`) on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `ut_pex` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics, and an accepted message holds at most
//!   `MAX_PEX_ADDED` added and `MAX_PEX_DROPPED` dropped addresses, every
//!   one dialable;
//! * an accepted message encodes to bytes that decode to the same value,
//!   and that encoding is canonical;
//! * the inbox agrees with the decoder and takes nothing from a second
//!   message within the interval.

use std::time::{Duration, Instant};

use lodestone_core::compact::is_contactable;
use lodestone_wire::Message;
use lodestone_wire::pex::{MAX_PEX_ADDED, MAX_PEX_DROPPED, PexInbox, PexMessage};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let decoded = PexMessage::decode(data);
    let mut inbox = PexInbox::default();
    let now = Instant::now();
    let taken = inbox.receive(now, data);
    assert_eq!(
        taken.as_ref().map(Vec::len).map_err(Clone::clone),
        decoded
            .as_ref()
            .map(|m| m.added.len())
            .map_err(Clone::clone),
        "the inbox disagrees with the decoder"
    );
    if taken.is_ok() {
        let again = inbox.receive(now + Duration::from_secs(1), data);
        assert!(
            again.is_ok_and(|p| p.is_empty()),
            "a message within the interval was taken"
        );
    }
    let Ok(message) = decoded else { return };
    assert!(message.added.len() <= MAX_PEX_ADDED);
    assert!(message.dropped.len() <= MAX_PEX_DROPPED);
    assert!(message.added.iter().all(|p| is_contactable(&p.addr)));
    assert!(message.dropped.iter().all(is_contactable));
    let encoded = message.encode();
    let round = PexMessage::decode(&encoded)
        .unwrap_or_else(|e| panic!("our encoding of {message:?} does not decode: {e}"));
    // Encoding groups by family: compare as IPv4-then-IPv6, as decode orders.
    let by_family = |m: &PexMessage| {
        let mut added = m.added.clone();
        added.sort_by_key(|p| p.addr.is_ipv6());
        let mut dropped = m.dropped.clone();
        dropped.sort_by_key(|a| a.is_ipv6());
        (added, dropped)
    };
    assert_eq!(
        by_family(&round),
        by_family(&message),
        "encode → decode changed it"
    );
    assert_eq!(round.encode(), encoded, "encoding is not canonical");
    let Message::Extended { id: 7, payload } = message.to_message(7) else {
        panic!("to_message is not an extended message under the given id");
    };
    assert_eq!(payload.as_ref(), &encoded[..]);
}
