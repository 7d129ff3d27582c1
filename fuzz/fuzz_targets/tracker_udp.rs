//! Fuzz target: see `checks/tracker_udp.rs` for the properties checked.
#![no_main]

#[path = "../checks/tracker_udp.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
