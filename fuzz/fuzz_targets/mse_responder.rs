//! Fuzz target: see `checks/mse.rs` for the properties checked.
#![no_main]

#[path = "../checks/mse.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check_responder(data);
});
