//! Standard output that behaves under `| head`.
//!
//! `println!` panics when the reader of a pipe goes away. A command-line
//! tool should instead stop quietly, as it would by SIGPIPE.

use std::io::{ErrorKind, Write};

/// Writes one line to stdout; exits quietly if the reader has gone.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("lodestone: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
