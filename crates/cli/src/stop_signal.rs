//! SIGINT and SIGTERM as one stream of stop requests.
//!
//! A terminal sends SIGINT (Ctrl-C); service managers and `kill` send
//! SIGTERM. Both mean the same to lodestone: stop cleanly and keep the
//! state. Once watched, a stop that arrives while the command is busy
//! waits to be read instead of killing the process unsaved, so the node
//! watches before it says it is listening, and a download before its
//! first status.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listens for SIGINT and SIGTERM.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Starts listening. From here on, neither signal kills the process.
    pub fn watch() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next stop request; one that came before the call
    /// returns at once.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
