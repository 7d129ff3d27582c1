//! Fuzz target: see `checks/wire_stream.rs` for the properties checked.
#![no_main]

#[path = "../checks/wire_stream.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
