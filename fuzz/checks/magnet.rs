//! Properties of magnet link parsing and printing on arbitrary bytes.
//!
//! Included with `#[path]` by the cargo-fuzz target `magnet` and by the
//! stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! For any UTF-8 text that `Magnet::parse` accepts, the printed link parses
//! back to an equal `Magnet` and prints identically (printing is canonical).

use lodestone_core::Magnet;

/// Checks the round trip on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(magnet) = Magnet::parse(text) else {
        return;
    };
    let printed = magnet.to_string();
    let again = Magnet::parse(&printed)
        .unwrap_or_else(|e| panic!("printed link {printed:?} does not parse: {e}"));
    assert_eq!(
        again, magnet,
        "printed link {printed:?} parses to another magnet"
    );
    assert_eq!(again.to_string(), printed, "printing is not canonical");
}
