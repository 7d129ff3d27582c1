//! Fuzz target: see `checks/dht_node.rs` for the properties checked.
#![no_main]

#[path = "../checks/dht_node.rs"]
mod check;
#[path = "../checks/script.rs"]
mod script;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
