//! Fuzz target: see `checks/magnet.rs` for the properties checked.
#![no_main]

#[path = "../checks/magnet.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
