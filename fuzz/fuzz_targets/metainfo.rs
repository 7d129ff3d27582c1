//! Fuzz target: see `checks/metainfo.rs` for the properties checked.
#![no_main]

#[path = "../checks/metainfo.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
