//! The one error type of the harness.
//!
//! Tests usually `.expect()` these; the messages are written to tell whoever
//! reads a failed CI log what to do next.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program or python module the tests need is not installed (local setup problem).
    #[error("{what} is missing: run `tests/setup` as root ({detail})")]
    MissingTool {
        /// The program or module.
        what: String,
        /// What was looked for, and where.
        detail: String,
    },
    /// Starting a process or touching a file failed (local failure).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A process did not reach the awaited state in time.
    #[error("{what}: nothing after {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A process exited before it was done (its stderr was forwarded to the test output).
    #[error("{what} exited early with {status}")]
    Exited {
        /// Which process.
        what: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A helper process reported a failure or said something we could not understand.
    #[error("{what}: {detail}")]
    Protocol {
        /// Which process or probe.
        what: String,
        /// The complaint.
        detail: String,
    },
    /// Downloaded content differs from what was seeded.
    #[error("content mismatch in {path}: {detail}")]
    Content {
        /// The file that differs.
        path: PathBuf,
        /// How it differs.
        detail: String,
    },
}

impl HarnessError {
    /// Wraps an IO error with what was being attempted.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

/// Result of harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
