//! A one-line status on stderr: a live spinner on a terminal, a plain line
//! every few seconds otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain status line is printed when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// The status line of a running command.
pub enum StatusLine {
    /// stderr is a terminal: one line redrawn in place.
    Live(ProgressBar),
    /// stderr is a file or pipe: a line now and then.
    Plain {
        /// When the last line was printed.
        last: Option<Instant>,
    },
    /// Nothing is shown (another form of output has the screen).
    Hidden,
}

impl StatusLine {
    /// Chooses the form from whether stderr is a terminal; `visible` false
    /// (JSON output) shows nothing.
    pub fn new(visible: bool) -> Self {
        if !visible {
            StatusLine::Hidden
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            StatusLine::Live(bar)
        } else {
            StatusLine::Plain { last: None }
        }
    }

    /// Shows `message` as the current status.
    pub fn set(&mut self, message: String) {
        match self {
            StatusLine::Live(bar) => bar.set_message(message),
            StatusLine::Plain { last } => {
                if last.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL) {
                    eprintln!("{message}");
                    *last = Some(Instant::now());
                }
            }
            StatusLine::Hidden => {}
        }
    }

    /// Removes the live line so that final output starts clean.
    pub fn clear(&self) {
        if let StatusLine::Live(bar) = self {
            bar.finish_and_clear();
        }
    }
}
