//! SIGINT and SIGTERM as one stream of stop requests.
//!
//! A terminal sends SIGINT (Ctrl-C); service managers and `kill` send
//! SIGTERM. Both mean the same to lodestone: stop cleanly and keep the
//! state. A command watches from its start, so a stop that arrives while
//! it starts up waits to be read instead of killing the process unsaved.

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
