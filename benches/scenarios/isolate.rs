//! Running the whole benchmark inside a fresh loopback-only namespace.
//!
//! The harness's `isolated_test!` re-executes a *libtest* binary; a bench
//! with `harness = false` has no test names, so it re-executes itself here,
//! with the same private `/etc/hosts` idea, plus a PID namespace:
//!
//! `unshare --net --mount --pid --fork --mount-proc --kill-child` makes the
//! benchmark process PID 1 of its own namespace. When it exits (or is
//! killed, or `unshare` dies and `--kill-child` fires) the kernel kills every
//! process left in the namespace, so no client survives the run, whatever
//! path the run took. `/proc` is remounted, so `/proc/<pid>` of a child is
//! the child.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use lodestone_tests::netns::{ENV, ROUTER_NAMES, only_loopback};

/// Takes the scratch directory's lock, brings `lo` up, shows this
/// namespace's interfaces in `/sys`, and hides the public DHT routers behind
/// 127.0.0.1, then runs the benchmark.
///
/// Every run uses the same scratch directory and removes it at its end, so
/// a second run at once would lose its files mid-transfer to the first.
/// The lock is on descriptor 9, which the benchmark inherits as PID 1 of the
/// namespace: it is held until the last process of the run is gone, even
/// when the `unshare` that started it was killed.
const ENTER_SCRIPT: &str = r#"set -e
exec 9>"$LODESTONE_BENCH_LOCK"
if ! flock -n 9; then
    echo "another scenario run holds $LODESTONE_BENCH_LOCK and uses its scratch directory: wait for it to end" >&2
    exit 75
fi
ip link set lo up
mount -t sysfs sysfs /sys
mount --bind "$LODESTONE_BENCH_HOSTS" /etc/hosts
exec "$@""#;

/// Outside: replaces this process with itself under `unshare` (never
/// returns on success). Inside: checks that `lo` is the only interface.
pub fn enter(scratch: &Path) -> Result<(), String> {
    if std::env::var_os(ENV).is_some() {
        return only_loopback().map_err(|e| format!("{ENV} is set but {e}"));
    }
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    for name in ROUTER_NAMES {
        hosts.push_str(&format!("127.0.0.1 {name}\n"));
    }
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let hosts_path = scratch.join("hosts");
    std::fs::write(&hosts_path, hosts).map_err(|e| format!("writing hosts: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the bench binary: {e}"))?;
    let error = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork", "--mount-proc"])
        .args(["--kill-child", "--propagation", "private", "--"])
        .args(["sh", "-c", ENTER_SCRIPT, "sh"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV, "1")
        .env("LODESTONE_BENCH_HOSTS", &hosts_path)
        .env("LODESTONE_BENCH_LOCK", scratch.with_extension("lock"))
        // WorkDir (swarm content, downloader scratch) goes to the scratch dir.
        .env("TMPDIR", scratch)
        // cargo points this at the build's and the toolchain's folders,
        // which no client needs: every client would inherit it, and its
        // dynamic loader would search them all for each shared library
        // first (0.3-0.6 ms more per start here, counted in the times).
        .env_remove("LD_LIBRARY_PATH")
        .exec();
    Err(format!(
        "cannot run unshare (needs root or user namespaces; see tests/setup): {error}"
    ))
}
