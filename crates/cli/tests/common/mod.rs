//! Running the lodestone binary inside an isolated end-to-end test.

// Each test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use lodestone_tests::netns::{BLOCK_LODESTONE, addr};

/// Runs `lodestone ARGS` to completion and returns its output.
pub fn lodestone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(args)
        .output()
        .expect("the lodestone binary runs")
}

/// The path of a torrent in the core crate's fixtures, made by real tools.
pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The DHT bind flag for the `index`-th lodestone process of a test.
pub fn dht_bind(index: u8) -> String {
    format!("--dht-bind={}:0", addr(BLOCK_LODESTONE, index))
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded, showing its stderr otherwise.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}: {}",
        output.status.code(),
        stderr(output)
    );
}
