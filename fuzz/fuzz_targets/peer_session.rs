//! Fuzz target: see `checks/peer_session.rs` for the properties checked.
#![no_main]

#[path = "../checks/peer_session.rs"]
mod check;
#[path = "../checks/script.rs"]
mod script;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
