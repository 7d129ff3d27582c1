//! Child processes that speak JSON lines and die with their handle.
//!
//! Every helper process (the python drivers, and aria2/transmission through
//! `tests/py/supervise.py`) prints one JSON object per line on stdout, each
//! with an `"event"` key, and exits when its stdin closes. [`Proc`] owns
//! such a child: it reads events on a thread, forwards stderr (and any
//! non-JSON stdout) into the test output with a prefix, and on drop closes
//! stdin, kills the child and reaps it. Because the children also exit on
//! stdin EOF, they go away even when the test process itself is killed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// A running helper process; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    history: Vec<Value>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Proc {
    /// Starts `command` with piped stdio; `name` prefixes its forwarded output.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Proc> {
        Self::spawn_from(name.into(), &mut command)
    }

    /// Starts a python driver of libtorrent sessions and waits up to
    /// `within` for its `event`, as [`Proc::spawn`] then
    /// [`Proc::wait_event`] do, but starts it once more (in the same work
    /// directory, which the drivers overwrite) if it crashed first; returns
    /// the process and the event.
    ///
    /// libtorrent's python binding (2.0.8) has died of SIGSEGV while the
    /// swarm's DHT sessions started, talking only among themselves: twice
    /// in CI, in one test, never in about 720 starts on a machine of ours.
    /// That is the harness failing, not the test. So only for drivers whose
    /// sessions hear from nothing of ours before `event`: a crash our bytes
    /// might have caused is never retried, nor is a second crash, a plain
    /// exit or a crash after `event`. Each retry is printed, and noted in
    /// the file [`RESTARTS_LOG_ENV`] names, which `tests/run` prints, so
    /// that one in a passing run is seen; with it goes the crash's
    /// backtrace, when the system left a core in the driver's directory
    /// (`core_pattern` is `core`).
    pub fn spawn_retrying_crash(
        name: &str,
        command: Command,
        event: &str,
        within: Duration,
    ) -> Result<(Proc, Value)> {
        let log = std::env::var_os(RESTARTS_LOG_ENV).map(PathBuf::from);
        Self::spawn_retrying_crash_noting(name, command, event, within, log.as_deref())
    }

    /// [`Proc::spawn_retrying_crash`], noting a retry in `log`, if any.
    fn spawn_retrying_crash_noting(
        name: &str,
        command: Command,
        event: &str,
        within: Duration,
        log: Option<&Path>,
    ) -> Result<(Proc, Value)> {
        let cores = WorkDir::new("driver-cores")?;
        let program = command.get_program().to_owned();
        let mut command = allowing_core_dumps(&command, cores.path());
        let mut proc = Self::spawn_from(name.to_owned(), &mut command)?;
        match proc.wait_event(event, within) {
            Err(HarnessError::Exited { status, .. }) if crashed(status) => {
                // libtest names each test's thread after the test.
                let test = std::thread::current().name().unwrap_or("?").to_owned();
                let mut line = format!(
                    "{test}: {name} crashed ({status}) before {event:?}; started once more"
                );
                if let Some(trace) = backtrace(cores.path(), &program) {
                    line.push('\n');
                    line.push_str(&trace);
                }
                eprintln!("[{name}] {line}");
                if let Some(log) = log {
                    note_restart(log, &line);
                }
                let mut proc = Self::spawn_from(name.to_owned(), &mut command)?;
                let got = proc.wait_event(event, within)?;
                Ok((proc, got))
            }
            awaited => awaited.map(|got| (proc, got)),
        }
    }

    fn spawn_from(name: String, command: &mut Command) -> Result<Proc> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(HarnessError::io(format!("starting {name} ({command:?})")))?;
        let (tx, lines) = mpsc::channel();
        let started = Instant::now();
        if let Some(out) = child.stdout.take() {
            let prefix = name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    eprintln!("[{prefix} +{:.3}s] {line}", started.elapsed().as_secs_f64());
                    if let Ok(event) = serde_json::from_str::<Value>(&line)
                        && event.get("event").is_some()
                        && tx.send(event).is_err()
                    {
                        break;
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let prefix = name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    eprintln!("[{prefix} +{:.3}s] {line}", started.elapsed().as_secs_f64());
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Proc {
            name,
            child,
            stdin,
            lines,
            history: Vec::new(),
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event received so far, oldest first.
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    /// Sends one command line (JSON) on the child's stdin.
    pub fn send(&mut self, command: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| HarnessError::Protocol {
            what: self.name.clone(),
            detail: "stdin already closed".to_owned(),
        })?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(HarnessError::io(format!("writing to {}", self.name)))
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(event) => {
                self.history.push(event.clone());
                Ok(event)
            }
            Err(RecvTimeoutError::Timeout) => Err(HarnessError::Timeout {
                what: format!("{}: waiting for an event", self.name),
                waited: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.exited()),
        }
    }

    /// Waits up to `timeout` for an event named `event`, passing over
    /// others (they stay in [`Proc::history`]). An `"error"` event fails.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self.next_event(left).map_err(|e| match e {
                HarnessError::Timeout { .. } => HarnessError::Timeout {
                    what: format!("{}: waiting for {event:?}", self.name),
                    waited: timeout,
                },
                other => other,
            })?;
            match got.get("event").and_then(Value::as_str) {
                Some(name) if name == event => return Ok(got),
                Some("error") => {
                    return Err(HarnessError::Protocol {
                        what: self.name.clone(),
                        detail: format!("reported an error while we waited for {event:?}: {got}"),
                    });
                }
                _ => {}
            }
        }
    }

    /// Closes stdin and waits up to `timeout` for a clean exit.
    pub fn finish(mut self, timeout: Duration) -> Result<ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            // Drain events so the reader thread never blocks on a full channel.
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) => self.history.push(event),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(HarnessError::Timeout {
                        what: format!("{}: waiting for exit after closing stdin", self.name),
                        waited: timeout,
                    });
                }
            }
        }
        self.child
            .wait()
            .map_err(HarnessError::io(format!("waiting for {}", self.name)))
    }

    fn exited(&mut self) -> HarnessError {
        match self.child.wait() {
            Ok(status) => HarnessError::Exited {
                what: self.name.clone(),
                status,
            },
            Err(e) => HarnessError::io(format!("waiting for {}", self.name))(e),
        }
    }
}

/// The file [`Proc::spawn_retrying_crash`] notes each retry in: `tests/run`
/// sets it to a fresh file of its own and prints it last.
pub const RESTARTS_LOG_ENV: &str = "LODESTONE_TEST_RESTARTS_LOG";

/// Appends `line` to the file at `path` in one write, so that the lines of
/// tests running at once do not mix; a failure to write it is only said,
/// the retry itself has been printed already.
fn note_restart(path: &Path, line: &str) {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?
                .write_all(format!("{line}\n").as_bytes())
        });
    if let Err(e) = written {
        eprintln!("could not note the restart in {}: {e}", path.display());
    }
}

/// `inner` run through `sh` with core dumps allowed, in `dir`: a crash then
/// leaves its core there, where the system writes cores to the working
/// directory.
fn allowing_core_dumps(inner: &Command, dir: &Path) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg(r#"ulimit -c unlimited 2>/dev/null; exec "$@""#)
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(dir);
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// The crashed thread's stack, read by gdb from a core `program` left in
/// `dir`, if it left one; the core is removed.
fn backtrace(dir: &Path, program: &std::ffi::OsStr) -> Option<String> {
    let core = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("core"))
        })?;
    let output = Command::new("gdb")
        .args(["-batch", "-q", "-ex", "bt 40"])
        .arg(program)
        .arg(&core)
        .output();
    let _ = std::fs::remove_file(&core);
    let mut frames: Vec<String> = String::from_utf8_lossy(&output.ok()?.stdout)
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| format!("    {line}"))
        .collect();
    // gdb prints the crashed frame once on loading the core, then in `bt`.
    frames.dedup();
    (!frames.is_empty()).then(|| frames.join("\n"))
}

/// Whether `status` is death by a signal that means a crash (Linux's
/// numbers for SIGILL, SIGABRT, SIGBUS, SIGFPE and SIGSEGV), rather than an
/// exit or a kill from outside.
fn crashed(status: ExitStatus) -> bool {
    matches!(status.signal(), Some(4 | 6 | 7 | 8 | 11))
}

/// How long a dropped process gets to exit by itself after its stdin closes
/// (supervise.py gives its program 5 s after SIGTERM) before it is killed.
const GRACE: Duration = Duration::from_secs(8);

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + GRACE;
        // Stdout closes when the child exits; wait for that, within the grace period.
        while let Ok(event) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.history.push(event);
        }
        // Already gone is fine; anything else we can only report.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workdir::WorkDir;

    /// A shell helper that counts its starts in a file, then ends with
    /// `end` on its first `times` starts and says `ready` on later ones.
    fn helper(dir: &WorkDir, end: &str, times: usize) -> (Command, std::path::PathBuf) {
        let starts = dir.path().join("starts");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            r#"ulimit -c 0; echo started >> "$0"; [ "$(wc -l < "$0")" -gt {times} ] || {end}; echo '{{"event":"ready"}}'; cat"#
        ));
        command.arg(&starts);
        (command, starts)
    }

    fn starts(path: &std::path::Path) -> usize {
        std::fs::read_to_string(path)
            .expect("starts file")
            .lines()
            .count()
    }

    /// Starts `command` as a driver that says `ready`, noting retries in `log`.
    fn start(name: &str, command: Command, log: &Path) -> Result<(Proc, Value)> {
        Proc::spawn_retrying_crash_noting(
            name,
            command,
            "ready",
            Duration::from_secs(10),
            Some(log),
        )
    }

    #[test]
    fn a_helper_that_crashed_before_it_was_ready_is_started_once_more() {
        let dir = WorkDir::new("crash-once").expect("workdir");
        let (command, count) = helper(&dir, "kill -SEGV $$", 1);
        let log = dir.path().join("restarts");
        let (_proc, ready) = start("crash-once", command, &log).expect("the second start is ready");
        assert_eq!(ready["event"], "ready");
        assert_eq!(starts(&count), 2);
        let noted = std::fs::read_to_string(&log).expect("the retry is noted");
        assert!(noted.contains("crash-once crashed (signal: 11"), "{noted}");
        assert!(
            noted.starts_with("process::tests::a_helper_that_crashed"),
            "{noted}"
        );
    }

    #[test]
    fn a_driver_runs_in_its_directory_with_core_dumps_allowed() {
        let dir = WorkDir::new("cores").expect("workdir");
        let mut inner = Command::new("sh");
        inner
            .args(["-c", "ulimit -c; pwd; echo \"$MARK\""])
            .env("MARK", "kept");
        let output = allowing_core_dumps(&inner, dir.path())
            .output()
            .expect("sh runs");
        let said = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.first(), Some(&"unlimited"), "{said}");
        assert_eq!(
            lines.get(1).map(std::path::Path::new),
            Some(dir.path()),
            "{said}"
        );
        assert_eq!(lines.get(2), Some(&"kept"), "{said}");
    }

    /// Starts a helper that ends with `end` on its first `times` starts,
    /// as a start that must fail with an exit; returns how often it was
    /// started and whether a retry was noted.
    fn failed_start(name: &str, end: &str, times: usize) -> (usize, bool) {
        let dir = WorkDir::new(name).expect("workdir");
        let (command, count) = helper(&dir, end, times);
        let log = dir.path().join("restarts");
        let error = start(name, command, &log).expect_err("the start fails");
        assert!(matches!(error, HarnessError::Exited { .. }), "{error}");
        (starts(&count), log.exists())
    }

    #[test]
    fn a_helper_that_failed_without_crashing_is_not_started_again() {
        let (started, noted) = failed_start("exit-once", "exit 3", 1);
        assert_eq!(started, 1);
        assert!(!noted, "nothing was retried");
    }

    #[test]
    fn a_helper_that_crashes_twice_fails() {
        let (started, _) = failed_start("crash-always", "kill -SEGV $$", 2);
        assert_eq!(started, 2);
    }
}
