//! Untrusted text on a terminal. A torrent's names, a magnet's `dn=`, a
//! tracker's URL and the errors that quote them are written by strangers,
//! and may hold control characters: ESC starts a sequence that can clear the
//! screen, retitle the window or, on some terminals, answer back as if
//! typed; CR overwrites the line it is on. Bidirectional overrides make
//! `txt.exe` read as `exe.txt`, and zero-width characters make one name
//! look like another. Text the CLI prints for people goes through
//! [`Shown`], which writes each such character as a `\u{..}` escape.
//!
//! JSON output needs no such care: serde writes C0 controls as escapes, and
//! a JSON reader is a program. Log lines are escaped by tracing-subscriber.

use std::fmt::{self, Display, Write};

use lodestone_core::metainfo::invisible;

/// Displays `T` with every control character and invisible formatting
/// character written as a `\u{..}` escape.
pub struct Shown<T>(pub T);

impl<T: Display> Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// Passes text on to a formatter, escaping what a terminal would act on.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if acts_on_a_terminal(c) {
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// C0 and C1 controls and DEL, and the invisible formatting characters a
/// name on disk leaves out (those that reorder text or make one name look
/// like another).
fn acts_on_a_terminal(c: char) -> bool {
    c.is_control() || invisible(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_terminal_acts_on_is_escaped_and_the_rest_kept() {
        let hostile = "a\x1b]0;title\x07\x1b[2J\r\n\t\u{9b}\u{7f}\u{202e}\u{200b}\u{61c}txt.exe";
        assert_eq!(
            Shown(hostile).to_string(),
            "a\\u{1b}]0;title\\u{7}\\u{1b}[2J\\u{d}\\u{a}\\u{9}\\u{9b}\\u{7f}\\u{202e}\\u{200b}\\u{61c}txt.exe"
        );
        let honest = "Big Buck Bunny/ビッグ・バック・バニー (2008) [1080p]\\x.mkv";
        assert_eq!(Shown(honest).to_string(), honest);
    }
}
