//! Fuzz target: see `checks/extension.rs` for the properties checked.
#![no_main]

#[path = "../checks/extension.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
