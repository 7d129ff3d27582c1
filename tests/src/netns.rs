//! Loopback-only network namespaces for tests that start real processes.
//!
//! House rule: traffic between processes in tests never leaves a fresh
//! network namespace whose only interface is `lo`. A test opts in with
//! [`isolated_test!`](crate::isolated_test) (or by calling [`isolated`]
//! first). Under plain `cargo test` the test then runs twice:
//!
//! 1. **Outside**, [`isolated`] re-executes the current test binary as
//!    `unshare --net --mount -- sh -c '…' <exe> <test> --exact --nocapture
//!    --test-threads=1 --include-ignored` with [`ENV`] set. The shell brings
//!    `lo` up, remounts `/sys` (so `/sys/class/net` describes the new
//!    namespace) and bind-mounts a private `/etc/hosts` that maps the public
//!    DHT routers to 127.0.0.1, so nothing even tries to resolve them.
//!    The child's output is forwarded line by line; the outer test fails
//!    unless the child exits 0 *and* reports that exactly one test passed.
//! 2. **Inside**, [`isolated`] checks that [`ENV`] is set and that `lo` is
//!    the only interface (both in `/sys/class/net` and `/proc/net/dev`), then
//!    returns `true` so the body runs.
//!
//! If `unshare` is missing or not permitted (it needs root, or user
//! namespaces), the test fails with a message pointing at `tests/setup`.
//!
//! Every process inside gets its own address in 127.0.0.0/8; [`addr`] and
//! the block constants keep different clients out of each other's way.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::tools::require;
use crate::workdir::WorkDir;
use crate::{HarnessError, Result};

/// Set (to `1`) in the re-executed test process; with only `lo` present it
/// means "we are inside the isolated namespace".
pub const ENV: &str = "LODESTONE_NETNS";

/// Overrides the outer watchdog (seconds) that kills a hung isolated test.
pub const TIMEOUT_ENV: &str = "LODESTONE_NETNS_TIMEOUT_SECS";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Public DHT routers that clients try by default; inside the namespace they
/// resolve to 127.0.0.1.
pub const ROUTER_NAMES: &[&str] = &[
    "dht.libtorrent.org",
    "router.bittorrent.com",
    "dht.transmissionbt.com",
    "router.utorrent.com",
    "router.bitcomet.com",
    "dht.aelitis.com",
];

/// Address block for the libtorrent DHT nodes of a [`crate::swarm::Swarm`].
pub const BLOCK_SWARM_DHT: u8 = 1;
/// Address block for the libtorrent seeders of a swarm.
pub const BLOCK_SWARM_SEEDERS: u8 = 2;
/// Address block for libtorrent downloaders.
pub const BLOCK_LIBTORRENT: u8 = 3;
/// Address block for aria2 processes.
pub const BLOCK_ARIA2: u8 = 4;
/// Address block for transmission processes.
pub const BLOCK_TRANSMISSION: u8 = 5;
/// Address block for lodestone processes and in-process lodestone sockets.
pub const BLOCK_LODESTONE: u8 = 10;
/// Address block for test relays and fake peers.
pub const BLOCK_RELAY: u8 = 20;

/// `127.0.<block>.<index>`: one address per process, by convention of the
/// `BLOCK_*` constants.
pub fn addr(block: u8, index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, block, index)
}

/// The shell run by `unshare` before it execs the test binary again.
const ENTER_SCRIPT: &str = r#"set -e
ip link set lo up
mount -t sysfs sysfs /sys
mount --bind "$LODESTONE_NETNS_HOSTS" /etc/hosts
exec "$@""#;

/// Runs the calling test inside a fresh loopback-only namespace.
///
/// Returns `true` when the caller is inside and should run its body, and
/// `false` in the outer process after the isolated run has passed (the
/// caller returns). Panics — failing the test — if the isolated run failed,
/// if isolation cannot be set up, or if [`ENV`] is set but the namespace has
/// interfaces other than `lo`.
///
/// `test` is the name libtest knows the test by, e.g. `swarm_smoke` or
/// `module::swarm_smoke`; [`isolated_test!`](crate::isolated_test) passes it.
#[must_use = "run the test body only when this returns true"]
pub fn isolated(test: &str) -> bool {
    if std::env::var_os(ENV).is_some() {
        if let Err(problem) = only_loopback() {
            panic!("{ENV} is set but this is not an isolated namespace: {problem}");
        }
        true
    } else {
        if let Err(e) = run_isolated(test) {
            panic!("isolated run of `{test}` failed: {e}");
        }
        false
    }
}

/// The libtest name of a test from its `module_path!()` and function name:
/// the crate name (first component) is dropped.
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    }
}

/// Checks that `lo` is the only network interface and that it is up.
pub fn only_loopback() -> Result<(), String> {
    let mut sys: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map_err(|e| format!("cannot list /sys/class/net: {e}"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    sys.sort();
    if sys != ["lo"] {
        return Err(format!("/sys/class/net lists {sys:?}"));
    }
    let dev = std::fs::read_to_string("/proc/net/dev")
        .map_err(|e| format!("cannot read /proc/net/dev: {e}"))?;
    let proc: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    if proc != ["lo"] {
        return Err(format!("/proc/net/dev lists {proc:?}"));
    }
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags")
        .map_err(|e| format!("cannot read lo flags: {e}"))?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .map_err(|e| format!("bad lo flags {flags:?}: {e}"))?;
    if flags & 1 == 0 {
        return Err("lo is down".to_owned());
    }
    Ok(())
}

fn hosts_file(dir: &Path) -> Result<std::path::PathBuf> {
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    for name in ROUTER_NAMES {
        hosts.push_str(&format!("127.0.0.1 {name}\n"));
    }
    let path = dir.join("hosts");
    std::fs::write(&path, hosts).map_err(HarnessError::io("writing the private /etc/hosts"))?;
    Ok(path)
}

fn run_isolated(test: &str) -> Result<()> {
    let unshare = require("unshare")?;
    require("ip")?;
    require("mount")?;
    let exe = std::env::current_exe().map_err(HarnessError::io("finding the test binary"))?;
    let scratch = WorkDir::new("netns")?;
    let hosts = hosts_file(scratch.path())?;
    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);

    let mut child = Command::new(&unshare)
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .args(["sh", "-c", ENTER_SCRIPT, "sh"])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .arg("--include-ignored")
        .env(ENV, "1")
        .env("LODESTONE_NETNS_HOSTS", &hosts)
        // Every lodestone the test starts keeps its state here, not in the
        // user's own state directory, and no test sees another's.
        .env("XDG_STATE_HOME", scratch.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HarnessError::io(format!("running {}", unshare.display())))?;

    // `unshare` execs sh, which execs the test binary: one pid throughout.
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("isolated test still running after {timeout:?}: killing pid {pid}");
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    // Forwarded through print!/eprint! so libtest captures them like the
    // test's own output (shown on failure or with --nocapture).
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                eprintln!("[netns] {line}");
            }
        })
    });
    let mut passed_one = false;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            passed_one |= line.starts_with("test result: ok. 1 passed;");
            println!("[netns] {line}");
        }
    }
    if let Some(handle) = stderr {
        let _ = handle.join();
    }
    let status = child
        .wait()
        .map_err(HarnessError::io("waiting for the isolated test"))?;
    let _ = done_tx.send(());
    let _ = watchdog.join();

    if !status.success() {
        return Err(HarnessError::Exited {
            what: format!("{} in a new network namespace", exe.display()),
            status,
        });
    }
    if !passed_one {
        return Err(HarnessError::Protocol {
            what: "isolated test run".to_owned(),
            detail: format!(
                "exit 0 but libtest did not report exactly one passed test named `{test}`"
            ),
        });
    }
    Ok(())
}

/// Declares a `#[test]` whose body runs only inside a fresh loopback-only
/// network namespace (see [`netns`](crate::netns)).
///
/// ```ignore
/// lodestone_tests::isolated_test! {
///     /// A libtorrent swarm comes up.
///     fn swarm_comes_up() {
///         let swarm = Swarm::start(SwarmConfig::default()).expect("swarm");
///     }
/// }
/// ```
///
/// `async fn` bodies run on a multi-threaded tokio runtime.
#[macro_export]
macro_rules! isolated_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            if $crate::netns::isolated(&$crate::netns::test_path(module_path!(), stringify!($name))) {
                $body
            }
        }
        $crate::isolated_test! { $($rest)* }
    };
    ($(#[$meta:meta])* async fn $name:ident() $body:block $($rest:tt)*) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            if $crate::netns::isolated(&$crate::netns::test_path(module_path!(), stringify!($name))) {
                $crate::__private::tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .expect("building a tokio runtime")
                    .block_on(async move $body)
            }
        }
        $crate::isolated_test! { $($rest)* }
    };
    () => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_path_drops_the_crate_name() {
        assert_eq!(test_path("harness", "smoke"), "smoke");
        assert_eq!(test_path("harness::e2e::dht", "smoke"), "e2e::dht::smoke");
    }

    #[test]
    fn addresses_follow_the_block_convention() {
        assert_eq!(addr(BLOCK_ARIA2, 7), Ipv4Addr::new(127, 0, 4, 7));
    }

    crate::isolated_test! {
        /// Inside, `lo` is up and alone, and the public routers resolve to loopback.
        fn namespace_has_only_loopback() {
            only_loopback().expect("only lo");
            let hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
            for name in ROUTER_NAMES {
                assert!(hosts.contains(&format!("127.0.0.1 {name}")), "{name} not mapped");
            }
            use std::net::ToSocketAddrs;
            let resolved: Vec<_> = ("router.bittorrent.com", 6881)
                .to_socket_addrs()
                .expect("resolve through /etc/hosts")
                .collect();
            assert!(resolved.iter().all(|a| a.ip().is_loopback()), "{resolved:?}");
            // Any loopback address is usable, not only 127.0.0.1.
            let socket = std::net::UdpSocket::bind((addr(BLOCK_LODESTONE, 1), 0)).expect("bind");
            let other = std::net::UdpSocket::bind((addr(BLOCK_LODESTONE, 2), 0)).expect("bind");
            socket.send_to(b"ping", other.local_addr().expect("addr")).expect("send");
            other.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut buf = [0u8; 8];
            let (n, from) = other.recv_from(&mut buf).expect("recv");
            assert_eq!((&buf[..n], from), (&b"ping"[..], socket.local_addr().expect("addr")));
        }

        /// The async form runs its body on a runtime, inside the namespace.
        async fn async_body_runs_inside() {
            only_loopback().expect("only lo");
            let listener = tokio::net::TcpListener::bind((addr(BLOCK_LODESTONE, 3), 0))
                .await
                .expect("bind");
            let target = listener.local_addr().expect("addr");
            let (accepted, connected) =
                tokio::join!(listener.accept(), tokio::net::TcpStream::connect(target));
            accepted.expect("accept");
            connected.expect("connect");
        }
    }
}
