//! Fuzz target: see `checks/ut_holepunch.rs` for the properties checked.
#![no_main]

#[path = "../checks/ut_holepunch.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
