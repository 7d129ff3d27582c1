//! Fuzz target: see `checks/tracker_http.rs` for the properties checked.
#![no_main]

#[path = "../checks/tracker_http.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
