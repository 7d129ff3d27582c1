//! Starting a client program, timing it to its exit, and its peak memory.
//!
//! Command-line clients (lodestone, rqbit, aria2c) signal "done" by exiting.
//! [`Launched`] runs one under `/usr/bin/time -f %M` (GNU time's maximum
//! resident set size, from `wait4`, so a spike just before exit is counted),
//! in its own process group, with stdout and stderr in a log file. A thread
//! waits for the exit and stamps it, so the measured time does not depend on
//! a polling interval. Dropping a still-running [`Launched`] kills the whole
//! group.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

/// GNU time, for peak RSS.
pub const TIME: &str = "/usr/bin/time";

/// What GNU time is asked to write: peak RSS in KiB, user and system CPU
/// seconds, on one line that [`Usage::parse`] reads back.
pub const TIME_FORMAT: &str = "%M %U %S";

/// A finished process's resource use as GNU time reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Peak resident set size, KiB.
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU seconds over the whole life of the process.
    pub cpu_s: Option<f64>,
}

impl Usage {
    /// Reads the [`TIME_FORMAT`] line of a GNU time output file. On a
    /// non-zero exit GNU time writes a "Command exited..." line first, so
    /// the last line that parses counts.
    pub fn parse(text: &str) -> Usage {
        text.lines()
            .rev()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let rss = fields.next()?.parse().ok()?;
                let user: f64 = fields.next()?.parse().ok()?;
                let system: f64 = fields.next()?.parse().ok()?;
                Some(Usage {
                    peak_rss_kib: Some(rss),
                    cpu_s: Some(user + system),
                })
            })
            .unwrap_or_default()
    }

    /// Reads a GNU time output file; a missing file gives no figures.
    pub fn read(path: &Path) -> Usage {
        std::fs::read_to_string(path).map_or_else(|_| Usage::default(), |t| Usage::parse(&t))
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    /// The program exited by itself after this long.
    Exited(ExitStatus, Duration),
    /// Still running at the deadline; it has been killed.
    TimedOut,
}

/// A running client process.
#[derive(Debug)]
pub struct Launched {
    name: String,
    pid: u32,
    started: Instant,
    started_wall: SystemTime,
    exit: Receiver<(std::io::Result<ExitStatus>, Instant)>,
    done: bool,
    log: PathBuf,
    rss: Option<PathBuf>,
}

impl Launched {
    /// Starts `program args` with its output in `dir/<name>.log`; with
    /// `measure_rss`, under GNU time writing its [`Usage`] to `dir/<name>.rss`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        measure_rss: bool,
    ) -> Result<Launched, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        // Without GNU time the run still counts, without its peak RSS.
        let rss =
            (measure_rss && Path::new(TIME).is_file()).then(|| dir.join(format!("{name}.rss")));
        let mut command = match &rss {
            Some(rss) => {
                let mut c = Command::new(TIME);
                c.arg("-f").arg(TIME_FORMAT).arg("-o").arg(rss).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let (started, started_wall) = (Instant::now(), SystemTime::now());
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let pid = child.id();
        let (tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((status, Instant::now()));
        });
        Ok(Launched {
            name: name.to_owned(),
            pid,
            started,
            started_wall,
            exit,
            done: false,
            log,
            rss,
        })
    }

    /// The process id (of GNU time when measuring RSS).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When it was started, by the wall clock (to compare with log lines).
    pub fn started_wall(&self) -> SystemTime {
        self.started_wall
    }

    /// Waits at most `timeout` for the exit; kills the group on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Result<Ended, String> {
        match self.exit.recv_timeout(timeout) {
            Ok((status, at)) => {
                self.done = true;
                let status = status.map_err(|e| format!("waiting for {}: {e}", self.name))?;
                Ok(Ended::Exited(status, at.duration_since(self.started)))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Ok(Ended::TimedOut)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.done = true;
                Err(format!("lost the waiter thread of {}", self.name))
            }
        }
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        if !self.done && self.exit.try_recv().is_ok() {
            self.done = true;
        }
        self.done
    }

    /// Peak RSS and CPU time as GNU time reported them (after the exit).
    pub fn usage(&self) -> Usage {
        self.rss.as_deref().map(Usage::read).unwrap_or_default()
    }

    /// The last `n` lines of its output, for error reports.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its whole output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the process group, then reap (bounded).
    pub fn kill(&mut self) {
        if self.done {
            return;
        }
        kill_group(self.pid);
        if self.exit.recv_timeout(Duration::from_secs(5)).is_ok() {
            self.done = true;
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL to every process of group `pgid` (best effort: it may be gone).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// `VmHWM` (peak) and `VmRSS` (current) of a live process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// User + system CPU time of a live process, all threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_times(pid).map(|t| t.user + t.system)
}

/// A process's CPU time so far, all threads, in seconds, split by where it
/// was spent.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    /// In the process itself.
    pub user: f64,
    /// In the kernel on its behalf (system calls, and what they set off).
    pub system: f64,
}

/// The CPU time of a live process so far.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI that matters here.
    Some(CpuTimes {
        user: utime as f64 / 100.0,
        system: stime as f64 / 100.0,
    })
}
