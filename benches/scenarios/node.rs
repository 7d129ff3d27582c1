//! A DHT bootstrap node under load: `lodestone node` (one shard and two,
//! alternated for the benchmark's rounds) against a lone libtorrent DHT
//! node (`benches/py/dht_node.py`, rate limits raised).
//!
//! lodestone starts with a verified pool of `--node-pool` entries (a
//! `pool.log` written here, loopback addresses that answer nothing), as a
//! long-running public node has; libtorrent cannot be given one. All join
//! the swarm's DHT through the same bootstrap node, then take two phases of
//! queries from 64 source addresses (127.0.20.1–64), generated in this
//! process on one thread:
//! 1. open loop at a moderate fixed rate: reply latency when not saturated;
//! 2. closed loop, a few queries in flight per source: answered queries/s.
//!
//! Before them, the same load meets the floor responder ([`floor`]), which
//! only receives and sends the node's replies: what any node must spend per
//! answer on this machine before it does any work of its own.
//!
//! The node runs on every core but the last and the generator on the last
//! ([`pin::Plan`]); how busy the generator's core was is reported, so a
//! reader can tell whether the node or the generator set the rate. Memory
//! is the node process's `VmHWM` (for libtorrent, python included) and CPU
//! its user + system time over both phases.

use std::io::Write;
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

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::clients::{Lodestone, PORT};
use crate::launch::{CpuTimes, Launched, cpu_seconds, cpu_times, memory_kib};
use crate::pin::{CoreTimes, Plan};

/// Open-loop rate of the latency phase.
pub const LIGHT_RATE: f64 = 2_000.0;
/// Closed-loop queries in flight per source address.
pub const WINDOW: usize = 4;
/// Source addresses of the load.
pub const SOURCES: u8 = 64;

/// One node's results.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRun {
    /// `lodestone`, `lodestone x2` (two shards) or `libtorrent`.
    pub node: String,
    /// lodestone's `--shards`.
    pub shards: Option<usize>,
    /// Which round of lodestone's alternated runs, from 1.
    pub round: Option<usize>,
    /// Entries of the verified pool it served from (lodestone).
    pub pool: Option<u32>,
    /// The cores it was pinned to (`taskset` list), if pinned.
    pub cores: Option<String>,
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
    /// The part of `cpu_us_per_answer` spent in the kernel: receiving,
    /// sending, and on loopback delivering each answer to the generator's
    /// socket. What is left is the node's own code.
    pub system_us_per_answer: Option<f64>,
    /// Share of the saturated phase the node's CPU time covers, per core
    /// it was given (1.0: its cores were saturated).
    pub node_busy: Option<f64>,
    /// Share of the saturated phase the generator's core was busy (with
    /// anything): near 1.0 the generator may have been the limit.
    pub generator_busy: Option<f64>,
    /// Share of the saturated phase the generator itself (this process)
    /// spent on CPU: the part of `generator_busy` that was the generator.
    pub generator_own: Option<f64>,
}

/// How to load a node.
pub struct Setup<'a> {
    /// The swarm's bootstrap node.
    pub bootstrap: SocketAddr,
    /// Length of each phase.
    pub phase: Duration,
    /// Cores, when they can be pinned.
    pub plan: Option<&'a Plan>,
}

/// Writes a `pool.log` (see `lodestone_dht::net::PoolLog`) of `entries`
/// random ids on loopback addresses in 127.128.0.0/9, which no benchmark
/// process uses: the node's verification pings to them find nobody.
pub fn write_pool(path: &Path, entries: u32) -> std::io::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::with_capacity(8 + entries as usize * 28);
    out.extend_from_slice(b"LDPOOL1\n");
    for i in 0..entries {
        let id: [u8; 20] = rng.random();
        let [_, a, b, c] = i.to_be_bytes();
        out.extend_from_slice(b"+\x04");
        out.extend_from_slice(&id);
        out.extend_from_slice(&[127, 128 | (a & 0x7f), b, c]);
        out.extend_from_slice(&6881u16.to_be_bytes());
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// Benchmarks `lodestone node` with `shards` shards and a pool of `pool`
/// entries, if the subcommand exists.
pub fn lodestone(
    l: &Lodestone,
    setup: &Setup<'_>,
    dir: &Path,
    shards: usize,
    pool: u32,
) -> Result<NodeRun, String> {
    let help = l
        .node
        .as_deref()
        .ok_or("lodestone: node command not available yet")?;
    let bind = SocketAddr::from((addr(BLOCK_LODESTONE, 200), PORT));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    write_pool(&state.join("pool.log"), pool).map_err(|e| format!("writing the pool: {e}"))?;
    let mut args = vec!["node".to_owned(), "--bind".to_owned(), bind.to_string()];
    args.extend(["--state".to_owned(), state.display().to_string()]);
    if help.contains("--bootstrap") {
        args.extend(["--bootstrap".to_owned(), setup.bootstrap.to_string()]);
    }
    if help.contains("--shards") {
        args.extend(["--shards".to_owned(), shards.to_string()]);
    } else if shards > 1 {
        return Err("lodestone node has no --shards".to_owned());
    }
    let (program, args) = pinned(setup.plan, &l.bin, args);
    let name = format!("lodestone-node-{shards}");
    let mut node = Launched::spawn(&name, &program, &args, dir, false)?;
    let (started, pid) = (node.started(), node.pid());
    let label = match shards {
        1 => "lodestone".to_owned(),
        n => format!("lodestone x{n}"),
    };
    let result = load(&mut || node.exited(), pid, started, bind, label, setup).map(|mut run| {
        run.shards = Some(shards);
        run.pool = Some(pool);
        run
    });
    if result.is_err() {
        eprintln!("lodestone node output:\n{}", node.log_tail(20));
    }
    result
}

/// `program args` under `taskset -c <node cores>` when there is a plan.
fn pinned(
    plan: Option<&Plan>,
    program: &Path,
    args: Vec<String>,
) -> (std::path::PathBuf, Vec<String>) {
    match plan {
        Some(plan) => {
            let mut all = vec!["-c".to_owned(), plan.node.clone()];
            all.push(program.display().to_string());
            all.extend(args);
            ("taskset".into(), all)
        }
        None => (program.to_owned(), args),
    }
}

/// The floor row's name in the table.
pub const FLOOR: &str = "udp floor";

/// Benchmarks the floor responder (`udp-floor`, see
/// [`lodestone_benches::udp_floor`]) exactly as a node: pinned to the
/// node's cores, loaded by the same generator, its CPU read the same way.
pub fn floor(setup: &Setup<'_>, dir: &Path) -> Result<NodeRun, String> {
    let bind = SocketAddr::from((addr(BLOCK_LODESTONE, 201), PORT));
    let args = vec!["--bind".to_owned(), bind.to_string()];
    let program = Path::new(env!("CARGO_BIN_EXE_udp-floor"));
    let (program, args) = pinned(setup.plan, program, args);
    let mut responder = Launched::spawn("udp-floor", &program, &args, dir, false)?;
    let (started, pid) = (responder.started(), responder.pid());
    let result = load(
        &mut || responder.exited(),
        pid,
        started,
        bind,
        FLOOR.to_owned(),
        setup,
    );
    if result.is_err() {
        eprintln!("udp-floor output:\n{}", responder.log_tail(20));
    }
    result
}

/// Benchmarks a lone libtorrent DHT node.
pub fn libtorrent(setup: &Setup<'_>) -> Result<NodeRun, String> {
    let bind = SocketAddr::from((addr(BLOCK_LIBTORRENT, 200), PORT));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/dht_node.py");
    let args = vec![
        script.display().to_string(),
        "--ip".to_owned(),
        bind.ip().to_string(),
        "--port".to_owned(),
        PORT.to_string(),
        "--bootstrap".to_owned(),
        setup.bootstrap.to_string(),
    ];
    let (program, args) = pinned(setup.plan, Path::new(SYSTEM_PYTHON), args);
    let mut command = Command::new(program);
    command.args(args);
    let started = Instant::now();
    let mut proc = Proc::spawn("libtorrent-node", command).map_err(|e| e.to_string())?;
    proc.wait_event("ready", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let pid = proc.pid();
    // The process handle reports an exit only as a missing /proc entry.
    let mut gone = || !Path::new(&format!("/proc/{pid}")).exists();
    load(
        &mut gone,
        pid,
        started,
        bind,
        "libtorrent".to_owned(),
        setup,
    )
}

fn load(
    gone: &mut dyn FnMut() -> bool,
    pid: u32,
    started: Instant,
    target: SocketAddr,
    name: String,
    setup: &Setup<'_>,
) -> Result<NodeRun, String> {
    let phase = setup.phase;
    let ready_s = wait_ready(gone, target, started)?;
    let rss_before_kib = memory_kib(pid).map(|(_, rss)| rss);
    let cpu_before = cpu_times(pid);
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
    if let Some(plan) = setup.plan {
        plan.pin_generator()?;
    }
    let light = runtime
        .block_on(krpc_load::run(&light_config))
        .map_err(|e| format!("load generator: {e}"));
    let core = setup.plan.map(|p| p.generator);
    let me = std::process::id();
    let (gen_before, node_before, own_before) = (
        core.and_then(CoreTimes::read),
        cpu_seconds(pid),
        cpu_seconds(me),
    );
    let saturate = light.and_then(|light| {
        runtime
            .block_on(krpc_load::run(&saturate))
            .map(|saturate| (light, saturate))
            .map_err(|e| format!("load generator: {e}"))
    });
    let (gen_after, node_after, own_after) = (
        core.and_then(CoreTimes::read),
        cpu_seconds(pid),
        cpu_seconds(me),
    );
    if let Some(plan) = setup.plan {
        plan.unpin_generator()?;
    }
    let (light, saturate) = saturate?;
    let generator_busy = gen_before.zip(gen_after).and_then(|(a, b)| a.busy_until(b));
    let node_cores = setup.plan.map_or(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        |p| p.generator,
    );
    let generator_own = own_before
        .zip(own_after)
        .map(|(a, b)| (b - a) / saturate.active_s.max(1e-3));
    let node_busy = node_before
        .zip(node_after)
        .map(|(a, b)| (b - a) / saturate.active_s.max(1e-3) / node_cores as f64);
    if gone() {
        return Err(format!("{name} node died under load"));
    }
    let peak_rss_kib = memory_kib(pid).map(|(hwm, _)| hwm);
    let cpu_spent = cpu_before
        .zip(cpu_times(pid))
        .map(|(before, after)| CpuTimes {
            user: after.user - before.user,
            system: after.system - before.system,
        });
    let cpu_s = cpu_spent.map(|t| t.user + t.system);
    let answered = light.answered + saturate.answered;
    let per_answer = |seconds: f64| seconds * 1e6 / answered as f64;
    let cpu_us_per_answer = cpu_s.filter(|_| answered > 0).map(per_answer);
    let system_us_per_answer = cpu_spent
        .filter(|_| answered > 0)
        .map(|t| per_answer(t.system));
    Ok(NodeRun {
        cpu_us_per_answer,
        system_us_per_answer,
        node: name,
        shards: None,
        round: None,
        pool: None,
        cores: setup.plan.map(|p| p.node.clone()),
        node_busy,
        generator_busy,
        generator_own,
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
