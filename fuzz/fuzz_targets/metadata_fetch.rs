//! Fuzz target: see `checks/metadata_fetch.rs` for the properties checked.
#![no_main]

#[path = "../checks/metadata_fetch.rs"]
mod check;
#[path = "../checks/script.rs"]
mod script;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
