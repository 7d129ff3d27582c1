//! Properties of the loaders of lodestone's own state files on arbitrary
//! bytes: a damaged, truncated or planted file must load as a clear error
//! or as less than it held, never as a panic or as more than the caps.
//!
//! Included with `#[path]` by the cargo-fuzz target `state_files` and by
//! the stable replay test `tests/tests/fuzz_replay.rs`.
//!
//! The first byte picks the loader, the rest is the file:
//! * even: the bootstrap node's pool log (`lodestone_dht::net::replay_pool_log`).
//!   No panic; at most `CAPACITY` live entries per family; no more whole
//!   records than the bytes hold; read one to seven bytes at a time it gives
//!   exactly what it gives read whole (the loader streams the file).
//! * odd: the DHT state file (`lodestone_dht::net::SavedState`). No panic; a
//!   decoded state encodes to bytes that decode to the same state.

use std::io::Read;

use lodestone_core::compact::Family;
use lodestone_dht::net::{SavedState, replay_pool_log};

/// Live entries per family the pool log replay may keep.
const CAPACITY: usize = 16;

/// Smallest record: `-`, the family, a 20-byte id.
const MIN_RECORD: usize = 22;

/// Hands out its bytes a few at a time, as a slow file or pipe might.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.bytes.len()).min(self.step);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.step = self.step % 7 + 1;
        Ok(n)
    }
}

/// Checks every property on `data`; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        pool_log(file);
    } else {
        saved_state(file);
    }
}

fn pool_log(file: &[u8]) {
    let whole = replay_pool_log(file, CAPACITY);
    let trickled = replay_pool_log(
        Trickle {
            bytes: file,
            step: 1,
        },
        CAPACITY,
    );
    let (whole, trickled) = match (whole, trickled) {
        (Ok(whole), Ok(trickled)) => (whole, trickled),
        (Err(_), Err(_)) => return,
        (whole, trickled) => panic!("whole {whole:?} but trickled {trickled:?}"),
    };
    let sorted = |mut r: lodestone_dht::net::Replayed| {
        r.nodes.sort_by_key(|n| (n.id, n.addr));
        r
    };
    let (whole, trickled) = (sorted(whole), sorted(trickled));
    assert_eq!(whole, trickled, "reading in pieces changed the replay");
    for family in [Family::V4, Family::V6] {
        let live = whole
            .nodes
            .iter()
            .filter(|n| Family::of(&n.addr) == family)
            .count();
        assert!(live <= CAPACITY, "{live} live {family:?} entries");
    }
    assert!(whole.records <= file.len() / MIN_RECORD);
}

fn saved_state(file: &[u8]) {
    let Ok(state) = SavedState::decode(file) else {
        return;
    };
    let again = SavedState::decode(&state.encode()).expect("an encoded state decodes");
    assert_eq!(again, state);
}
