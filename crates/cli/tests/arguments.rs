//! Arguments a user can get wrong are refused at once with exit 2 and one
//! line that names the mistake.

mod common;

use common::{lodestone, stderr};

const HASH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

lodestone_tests::isolated_test! {
    /// A bootstrap node without a port, or whose name does not resolve.
    fn a_bad_bootstrap_value_is_bad_input() {
        for (value, says) in [
            ("foo", "is not HOST:PORT"),
            ("no-such-router.invalid:6881", "cannot resolve --bootstrap no-such-router.invalid:6881"),
        ] {
            for command in [
                &["dht", "get-peers", HASH, "--timeout", "1", "--bootstrap", value][..],
                &["metadata", HASH, "--timeout", "1", "--bootstrap", value][..],
            ] {
                let output = lodestone(command);
                let text = stderr(&output);
                assert_eq!(output.status.code(), Some(2), "{command:?}: {text}");
                assert!(text.starts_with("lodestone: ") && text.contains(says), "{command:?}: {text}");
                assert_eq!(text.lines().count(), 1, "{command:?}: {text}");
            }
        }
    }
}
