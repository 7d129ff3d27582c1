//! Cores for the node benchmark: the node on some, the load generator on
//! another, and how busy the generator's core was, so a reader can tell
//! whether the node or the generator set the saturated rate.
//!
//! Pinning goes through `taskset` (util-linux): the workspace forbids
//! `unsafe`, which a direct `sched_setaffinity` call would need.

use std::process::{Command, Stdio};

/// Which cores run what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The generator's core (the highest-numbered one).
    pub generator: usize,
    /// The node's cores, as a `taskset` list (`0` or `0-2`).
    pub node: String,
}

impl Plan {
    /// The plan for this machine, or why there is none (one core, or no
    /// `taskset`): then nothing is pinned.
    pub fn find() -> Result<Plan, String> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if cores < 2 {
            return Err("one core: node and generator not pinned apart".to_owned());
        }
        lodestone_tests::tools::require("taskset")
            .map_err(|_| "no taskset: node and generator not pinned".to_owned())?;
        let last = cores - 1;
        Ok(Plan {
            generator: last,
            node: if last == 1 {
                "0".to_owned()
            } else {
                format!("0-{}", last - 1)
            },
        })
    }

    /// Pins every thread of this process (the generator runs on the
    /// calling thread) to the generator's core.
    pub fn pin_generator(&self) -> Result<(), String> {
        set_affinity(&self.generator.to_string())
    }

    /// Lets this process run anywhere again.
    pub fn unpin_generator(&self) -> Result<(), String> {
        set_affinity(&format!("0-{}", self.generator))
    }
}

fn set_affinity(cores: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -p -c {cores}: {status}"))
    }
}

/// Busy and total time of one core, from `/proc/stat` (in USER_HZ ticks).
#[derive(Debug, Clone, Copy)]
pub struct CoreTimes {
    busy: u64,
    total: u64,
}

impl CoreTimes {
    /// The counters of `core` now.
    pub fn read(core: usize) -> Option<CoreTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let name = format!("cpu{core}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …: idle and iowait
        // are the idle ones.
        let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
        let total: u64 = ticks.iter().take(8).sum();
        Some(CoreTimes {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// The share of time the core was busy between `self` and `later`
    /// (with anything, not only the generator).
    pub fn busy_until(self, later: CoreTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        (total > 0).then(|| later.busy.saturating_sub(self.busy) as f64 / total as f64)
    }
}
