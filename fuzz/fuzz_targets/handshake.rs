//! Fuzz target: see `checks/handshake.rs` for the properties checked.
#![no_main]

#[path = "../checks/handshake.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
