//! Fuzz target: see `checks/bencode.rs` for the properties checked.
#![no_main]

#[path = "../checks/bencode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
