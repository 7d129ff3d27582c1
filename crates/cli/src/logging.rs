//! Logging to stderr through tracing-subscriber.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging: `RUST_LOG` wins when set; otherwise each `-v` raises the
/// level from warnings to info, debug and trace for lodestone's own crates.
/// Colours only on a terminal: in a pipe or a log file escape codes are noise.
pub fn init(verbose: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        EnvFilter::new(format!("warn,lodestone={level},lodestone_cli={level},lodestone_dht={level},lodestone_wire={level},lodestone_metadata={level},lodestone_download={level},lodestone_session={level},lodestone_tracker={level}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
