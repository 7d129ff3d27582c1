//! What a user sees: on an 80-column terminal every line fits and nothing is
//! cut; in a pipe there are no escape codes. The terminal is a real
//! pseudo-terminal driven by `tests/py/on_terminal.py`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{fixture, stderr};
use lodestone_tests::workdir::WorkDir;

/// The width of the terminal the tests draw on.
const COLUMNS: usize = 80;

/// A run of lodestone on a pseudo-terminal, ended by Ctrl-C once `wait_for`
/// (a regex) shows on the screen.
struct TerminalRun {
    /// Everything drawn, escape sequences included.
    output: String,
    /// The exit code, or minus the signal.
    status: i64,
}

fn on_terminal(wait_for: &str, args: &[&str]) -> TerminalRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/on_terminal.py");
    let output = Command::new("/usr/bin/python3")
        .arg(script)
        .args([&COLUMNS.to_string(), wait_for, "60", "--"])
        .arg(env!("CARGO_BIN_EXE_lodestone"))
        .args(args)
        .output()
        .expect("python3 runs on_terminal.py");
    assert!(
        output.status.success(),
        "on_terminal.py: {}",
        stderr(&output)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("on_terminal.py prints one JSON object");
    let text = report["output"].as_str().expect("output").to_owned();
    assert_eq!(
        report["matched"], true,
        "{wait_for:?} never showed:\n{text}"
    );
    assert_eq!(
        report["timed_out"], false,
        "still running after 60 s:\n{text}"
    );
    TerminalRun {
        output: text,
        status: report["status"].as_i64().expect("status"),
    }
}

/// Every row as it stood when the cursor left it or it was erased, as an
/// 80-column terminal shows them. Text that reaches the right edge wraps
/// to the next row, so a line longer than the terminal leaves a row cut in
/// the middle of what it said.
fn drawn_rows(output: &str) -> Vec<String> {
    let mut screen = Screen::default();
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut parameters = String::new();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        screen.control(c, parameters.parse().unwrap_or(1));
                        break;
                    }
                    parameters.push(c);
                }
            }
            '\r' => screen.col = 0,
            '\n' => screen.move_to(screen.row + 1),
            c if !c.is_control() => screen.put(c),
            _ => {}
        }
    }
    screen.move_to(screen.row + 1);
    screen.drawn
}

/// Just enough of a terminal for indicatif's drawing: printing with
/// wrap-around, carriage return, newline, cursor up and down, erase line.
#[derive(Default)]
struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    drawn: Vec<String>,
}

impl Screen {
    fn put(&mut self, c: char) {
        if self.col == COLUMNS {
            self.move_to(self.row + 1);
            self.col = 0;
        }
        let col = self.col;
        let row = self.current();
        row.resize(row.len().max(col), ' ');
        row.truncate(col);
        row.push(c);
        self.col += 1;
    }

    fn control(&mut self, command: char, n: usize) {
        match command {
            'A' => self.move_to(self.row.saturating_sub(n)),
            'B' => self.move_to(self.row + n),
            'K' => {
                self.record();
                self.current().clear();
            }
            _ => {}
        }
    }

    fn move_to(&mut self, row: usize) {
        self.record();
        self.row = row;
    }

    fn current(&mut self) -> &mut Vec<char> {
        if self.rows.len() <= self.row {
            self.rows.resize(self.row + 1, Vec::new());
        }
        &mut self.rows[self.row]
    }

    fn record(&mut self) {
        let text: String = self.current().iter().collect();
        let text = text.trim_end();
        if !text.is_empty() && self.drawn.last().is_none_or(|last| last != text) {
            self.drawn.push(text.to_owned());
        }
    }
}

lodestone_tests::isolated_test! {
    /// A download nobody serves: the bar waits at 0 B/s until Ctrl-C.
    fn the_download_bar_fits_80_columns_and_guesses_no_eta() {
        let work = WorkDir::new("display-bar").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let torrent = fixture("libtorrent-v1-multi.torrent");
        let run = on_terminal(
            r"peers \d+/\d+",
            &["download", &torrent, "-o", &out.to_string_lossy(), "--no-dht"],
        );
        let rows = drawn_rows(&run.output);
        assert!(!run.output.contains("eta"), "{rows:#?}");
        assert_eq!(run.status, 1, "{rows:#?}");
        // Each line of the display is one whole row: the bar ends with its
        // percentage, the details row starts with the rates.
        let bars: Vec<&String> = rows.iter().filter(|r| r.starts_with("downloading")).collect();
        assert!(!bars.is_empty(), "{rows:#?}");
        for bar in &bars {
            assert!(bar.ends_with('%'), "a bar cut by the edge: {rows:#?}");
        }
        let live = rows.iter().take_while(|r| !r.starts_with("stopped at"));
        for row in live.filter(|r| r.contains("peers ")) {
            assert!(row.starts_with("down "), "a wrapped row: {rows:#?}");
        }

        // The bar and the summary show the size the same way, and the
        // summary says that nothing was verified.
        let size = bars[0]["downloading".len()..].trim_start().split(" [").next();
        assert_eq!(size, Some("0 B/34.18 KiB"), "{}", bars[0]);
        let summary = rows
            .iter()
            .find(|r| r.starts_with("stopped at"))
            .expect("a summary");
        assert!(summary.starts_with("stopped at 0 B of 34.18 KiB in"), "{summary}");
    }

    /// A metadata fetch through a DHT where nobody answers: the status line
    /// is whole, up to its last count.
    fn the_metadata_status_is_not_cut_at_80_columns() {
        let run = on_terminal(
            r"metadata: ",
            &[
                "metadata",
                "c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
                "--bootstrap",
                "127.0.0.1:9",
            ],
        );
        let rows = drawn_rows(&run.output);
        let statuses: Vec<&String> = rows.iter().filter(|r| r.contains("metadata: ")).collect();
        assert!(!statuses.is_empty(), "{rows:#?}");
        for status in statuses {
            assert!(ends_with_every_count(status), "cut: {status:?}");
        }
    }

    /// In a pipe the progress lines and the log lines carry no escape codes.
    fn a_pipe_gets_no_escape_codes() {
        let work = WorkDir::new("display-pipe").expect("work dir");
        let out = work.subdir("out").expect("out dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lodestone"))
            .args(["download", &fixture("libtorrent-v1-multi.torrent"), "--no-dht", "-o"])
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("lodestone runs");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut text = String::new();
        while !text.contains("downloading: ") {
            let mut line = String::new();
            assert_ne!(err.read_line(&mut line).expect("stderr"), 0, "ended early:\n{text}");
            text.push_str(&line);
        }
        let interrupted = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(interrupted.success());
        err.read_to_string(&mut text).expect("stderr");
        assert_eq!(child.wait().expect("exit").code(), Some(1), "{text}");
        assert!(text.contains("stopped at 0 B of 34.18 KiB"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");

        // A warning: an unreadable DHT state file is ignored.
        let state = work.path().join("dht.state");
        std::fs::write(&state, b"not bencode").expect("write state");
        let output = common::lodestone(&[
            "dht",
            "get-peers",
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "--bootstrap",
            "127.0.0.1:9",
            "--timeout",
            "0.5",
            "--dht-state",
            &state.to_string_lossy(),
        ]);
        let text = stderr(&output);
        assert!(text.contains("WARN") && text.contains("ignoring unreadable DHT state"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}

/// Whether a metadata status line ends with all its counts:
/// `... pieces N/N, DHT nodes N`.
fn ends_with_every_count(status: &str) -> bool {
    let Some((_, tail)) = status.rsplit_once(", DHT nodes ") else {
        return false;
    };
    !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) && status.contains("pieces ")
}
