//! Fuzz target: see `checks/state_files.rs` for the properties checked.
#![no_main]

#[path = "../checks/state_files.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
