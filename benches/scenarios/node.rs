//! A DHT bootstrap node under load: `lodestone node` against a lone
//! libtorrent DHT node (`benches/py/dht_node.py`, rate limits raised).
//!
//! Both join the swarm's DHT through the same bootstrap node, then take two
//! phases of queries from 64 source addresses (127.0.20.1–64), generated in
//! this process on one thread (the machine has two cores: the other is the
//! node's):
//! 1. open loop at a moderate fixed rate: reply latency when not saturated;
//! 2. closed loop, a few queries in flight per source: answered queries/s.
//!
//! Memory is the node process's `VmHWM` (for libtorrent, python included)
//! and CPU its user + system time over both phases.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lodestone_benches::krpc_load::{
    self, Kind, LoadConfig, LoadReport, Reply, classify, encode_query,
};
use lodestone_tests::netns::{BLOCK_LIBTORRENT, BLOCK_LODESTONE, addr};
use lodestone_tests::process::Proc;
use lodestone_tests::tools::SYSTEM_PYTHON;
use serde::Serialize;

use crate::clients::{Lodestone, PORT};
use crate::launch::{Launched, cpu_seconds, memory_kib};

/// Open-loop rate of the latency phase.
pub const LIGHT_RATE: f64 = 2_000.0;
/// Closed-loop queries in flight per source address.
pub const WINDOW: usize = 4;
/// Source addresses of the load.
pub const SOURCES: u8 = 64;

/// One node's results.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRun {
    /// `lodestone` or `libtorrent`.
    pub node: &'static str,
    /// Where it listened.
    pub addr: SocketAddr,
    /// Seconds from spawn to its first answer to a ping.
    pub ready_s: f64,
    /// The latency phase.
    pub light: LoadReport,
    /// The throughput phase.
    pub saturate: LoadReport,
    /// Resident memory before the load, KiB.
    pub rss_before_kib: Option<u64>,
    /// Peak resident memory at the end, KiB.
    pub peak_rss_kib: Option<u64>,
    /// CPU seconds (user + system) spent during both phases.
    pub cpu_s: Option<f64>,
    /// `cpu_s` per answered query, in microseconds: the node's cost per
    /// answer, which stays meaningful when the load generator, not the
    /// node, is what limits the saturated rate.
    pub cpu_us_per_answer: Option<f64>,
}

/// Benchmarks `lodestone node`, if the subcommand exists.
pub fn lodestone(
    l: &Lodestone,
    bootstrap: SocketAddr,
    dir: &Path,
    phase: Duration,
) -> Result<NodeRun, String> {
    let help = l
        .node
        .as_deref()
        .ok_or("lodestone: node command not available yet")?;
    let bind = SocketAddr::from((addr(BLOCK_LODESTONE, 200), PORT));
    let mut args = vec!["node".to_owned(), "--bind".to_owned(), bind.to_string()];
    if help.contains("--bootstrap") {
        args.extend(["--bootstrap".to_owned(), bootstrap.to_string()]);
    }
    let mut node = Launched::spawn("lodestone-node", &l.bin, &args, dir, false)?;
    let (started, pid) = (node.started(), node.pid());
    let result = load(
        &mut || node.exited(),
        pid,
        started,
        bind,
        "lodestone",
        phase,
    );
    if result.is_err() {
        eprintln!("lodestone node output:\n{}", node.log_tail(20));
    }
    result
}

/// Benchmarks a lone libtorrent DHT node.
pub fn libtorrent(bootstrap: SocketAddr, phase: Duration) -> Result<NodeRun, String> {
    let bind = SocketAddr::from((addr(BLOCK_LIBTORRENT, 200), PORT));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/dht_node.py");
    let mut command = Command::new(SYSTEM_PYTHON);
    command
        .arg(script)
        .args(["--ip", &bind.ip().to_string()])
        .args(["--port", &PORT.to_string()])
        .args(["--bootstrap", &bootstrap.to_string()]);
    let started = Instant::now();
    let mut proc = Proc::spawn("libtorrent-node", command).map_err(|e| e.to_string())?;
    proc.wait_event("ready", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let pid = proc.pid();
    // The process handle reports an exit only as a missing /proc entry.
    let mut gone = || !Path::new(&format!("/proc/{pid}")).exists();
    load(&mut gone, pid, started, bind, "libtorrent", phase)
}

fn load(
    gone: &mut dyn FnMut() -> bool,
    pid: u32,
    started: Instant,
    target: SocketAddr,
    name: &'static str,
    phase: Duration,
) -> Result<NodeRun, String> {
    let ready_s = wait_ready(gone, target, started)?;
    let rss_before_kib = memory_kib(pid).map(|(_, rss)| rss);
    let cpu_before = cpu_seconds(pid);
    let sources: Vec<IpAddr> = (1..=SOURCES)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 20, i)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let reply_timeout = Duration::from_secs(1);
    let light_config = LoadConfig {
        target,
        sources,
        window: 1,
        rate: Some(LIGHT_RATE),
        duration: phase,
        max_queries: (LIGHT_RATE * phase.as_secs_f64()) as u64 + 1,
        reply_timeout,
        seed: 1,
    };
    let saturate = LoadConfig {
        window: WINDOW,
        rate: None,
        // Far above what two cores can answer in `phase`: time is the bound.
        max_queries: 100_000_000,
        seed: 2,
        ..light_config.clone()
    };
    let light = runtime
        .block_on(krpc_load::run(&light_config))
        .map_err(|e| format!("load generator: {e}"))?;
    let saturate = runtime
        .block_on(krpc_load::run(&saturate))
        .map_err(|e| format!("load generator: {e}"))?;
    if gone() {
        return Err(format!("{name} node died under load"));
    }
    let peak_rss_kib = memory_kib(pid).map(|(hwm, _)| hwm);
    let cpu_s = cpu_before
        .zip(cpu_seconds(pid))
        .map(|(before, after)| after - before);
    let answered = light.answered + saturate.answered;
    let cpu_us_per_answer = cpu_s
        .filter(|_| answered > 0)
        .map(|c| c * 1e6 / answered as f64);
    Ok(NodeRun {
        cpu_us_per_answer,
        node: name,
        addr: target,
        ready_s,
        light,
        saturate,
        rss_before_kib,
        peak_rss_kib,
        cpu_s,
    })
}

/// Pings until the node answers: at most 100 tries, 100 ms apart.
fn wait_ready(
    gone: &mut dyn FnMut() -> bool,
    target: SocketAddr,
    started: Instant,
) -> Result<f64, String> {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 20, 250), 0)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut query = Vec::new();
    let mut buf = [0u8; 1500];
    for tid in 0..100u32 {
        if gone() {
            return Err(format!("node at {target} exited before answering"));
        }
        encode_query(&mut query, Kind::Ping, tid, &[0x42; 20], &[0; 20]);
        socket.send_to(&query, target).map_err(|e| e.to_string())?;
        // A read timeout ends the attempt; the next ping follows.
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from == target && classify(&buf[..n]) == Reply::Answer(tid) {
                return Ok(started.elapsed().as_secs_f64());
            }
        }
    }
    Err(format!(
        "node at {target} did not answer a ping within 10 s"
    ))
}
