//! How a command fails: the exit code says whose fault it was.

use std::process::ExitCode;

use crate::shown::Shown;

/// A command's failure, classified for the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The user gave something unusable (a bad magnet link, a hostile torrent): exit 2.
    BadInput(anyhow::Error),
    /// The job could not be done (no peers, an IO error): exit 1.
    Failed(anyhow::Error),
}

impl Failure {
    /// Prints the one-line error on stderr and returns the exit code.
    pub fn report(self) -> ExitCode {
        let (code, error) = match self {
            Failure::BadInput(e) => (2, e),
            Failure::Failed(e) => (1, e),
        };
        // Errors quote names, paths, URLs and replies strangers wrote.
        eprintln!("lodestone: {}", Shown(format_args!("{error:#}")));
        ExitCode::from(code)
    }
}

/// Marks an error as the user's input being at fault.
pub trait BadInputExt<T> {
    /// Wraps the error as [`Failure::BadInput`] with `context` in front.
    fn bad_input(self, context: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> BadInputExt<T> for Result<T, E> {
    fn bad_input(self, context: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::BadInput(e.into().context(context())))
    }
}
