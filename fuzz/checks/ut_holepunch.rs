//! Properties of the BEP 55 holepunch parser
//! (`lodestone_wire::holepunch::HolepunchMessage`, `HolepunchMeter`) on
//! arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `ut_holepunch` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! * decoding never panics, and accepts only payloads of exactly the length
//!   their address type gives, with the error code or (not for `error`,
//!   as libtorrent sends them) without;
//! * an accepted message encodes to bytes that decode to the same value;
//! * the meter, fed the input's bytes as arrival gaps, never allows more
//!   than its burst plus one per refill period.

use std::time::{Duration, Instant};

use lodestone_wire::holepunch::{
    HOLEPUNCH_BURST, HOLEPUNCH_REFILL, HolepunchMessage, HolepunchMeter, MAX_HOLEPUNCH_LEN,
};

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    if let Ok(message) = HolepunchMessage::decode(data) {
        let full = if data[1] == 0 {
            MAX_HOLEPUNCH_LEN - 12
        } else {
            MAX_HOLEPUNCH_LEN
        };
        let without_code = data.len() == full - 4 && data[0] != 2;
        assert!(
            data.len() == full || without_code,
            "accepted a payload of the wrong length"
        );
        let encoded = message.encode();
        let round = HolepunchMessage::decode(&encoded)
            .unwrap_or_else(|e| panic!("our encoding of {message:?} does not decode: {e}"));
        assert_eq!(round.kind, message.kind);
        assert_eq!(round.addr.port(), message.addr.port());
        assert_eq!(round.addr.ip(), message.addr.ip().to_canonical());
    }
    let start = Instant::now();
    let mut now = start;
    let mut meter = HolepunchMeter::default();
    let mut allowed = 0u64;
    for &gap in data {
        now += Duration::from_millis(u64::from(gap) * 100);
        allowed += u64::from(meter.allow(now));
    }
    let refills = now.duration_since(start).as_nanos() / HOLEPUNCH_REFILL.as_nanos();
    let bound = u64::from(HOLEPUNCH_BURST) + refills as u64;
    assert!(allowed <= bound, "{allowed} allowed, bound {bound}");
}
