//! Fuzz target: see `checks/utp.rs` for the properties checked.
#![no_main]

#[path = "../checks/utp.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
