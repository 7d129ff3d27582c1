//! Fuzz target: see `checks/krpc.rs` for the properties checked.
#![no_main]

#[path = "../checks/krpc.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
