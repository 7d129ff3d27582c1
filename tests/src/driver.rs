//! A python driver of libtorrent sessions (`tests/py/*_swarm.py`): it
//! prints one `ready` event describing what it set up, then answers one
//! JSON command per line on stdin until stdin closes, when its sessions
//! stop.

use std::process::Command;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::process::Proc;
use crate::tools::{python_with_libtorrent, script};
use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// How long a command's answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A running driver whose `ready` event read as `R`; its sessions stop
/// when this is dropped.
#[derive(Debug)]
pub struct Driver<R> {
    proc: Proc,
    ready: R,
    // Dropped after `proc`: the sessions serve its files until they stop.
    _dir: WorkDir,
}

impl<R: DeserializeOwned> Driver<R> {
    /// Runs `tests/py/<name>.py --workdir DIR ARGS` with a fresh work
    /// directory, and waits up to `ready_within` for its `ready` event.
    pub fn spawn(name: &str, args: &[String], ready_within: Duration) -> Result<Self> {
        let dir = WorkDir::new(&name.replace('_', "-"))?;
        let mut command = Command::new(python_with_libtorrent()?);
        command
            .arg(script(&format!("{name}.py")))
            .arg("--workdir")
            .arg(dir.path())
            .args(args);
        let (proc, event) =
            Proc::spawn_retrying_crash(&name.replace('_', "-"), command, "ready", ready_within)?;
        let ready = serde_json::from_value(event).map_err(|e| HarnessError::Protocol {
            what: format!("{name}.py ready event"),
            detail: e.to_string(),
        })?;
        Ok(Driver {
            proc,
            ready,
            _dir: dir,
        })
    }

    /// What the driver said when it was ready.
    pub fn ready(&self) -> &R {
        &self.ready
    }

    /// Sends `command` and waits for the `event` answering it.
    pub fn ask(&mut self, command: &Value, event: &str) -> Result<Value> {
        self.proc.send(command)?;
        self.proc.wait_event(event, ANSWER_WITHIN)
    }
}
