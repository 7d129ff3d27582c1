//! `lodestone node`: a long-lived DHT bootstrap node.
//!
//! All protocol work is the DHT crate's server mode ([`Config::server`]); this
//! file turns flags into its configuration, prints the node id, logs a stats
//! line every `--stats-interval`, serves `--metrics` in the Prometheus text
//! format, and saves the state on SIGTERM/SIGINT before exiting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_dht::ratelimit::RateLimitConfig;
use lodestone_dht::{Config, DEFAULT_BOOTSTRAP, Dht, DhtConfig, DhtStats};
use tokio::net::TcpListener;

use crate::args::NodeArgs;
use crate::failure::Failure;
use crate::output::outln;
use crate::stop_signal::StopSignals;

mod metrics;

/// Default listening addresses: both families on the standard DHT port.
const DEFAULT_BIND: [&str; 2] = ["0.0.0.0:6881", "[::]:6881"];

fn failed(e: impl Into<anyhow::Error>, what: &str) -> Failure {
    Failure::Failed(e.into().context(what.to_owned()))
}

/// The DHT configuration `args` describe.
fn dht_config(args: &NodeArgs, bind: Vec<SocketAddr>) -> DhtConfig {
    let mut node = Config::server();
    if let Some(server) = &mut node.server {
        server.pool.capacity = args.pool_size;
        server.verify_delay = Duration::from_secs_f64(args.verify_delay.max(0.0));
        server.limits = RateLimitConfig {
            per_ip_rate: args.per_ip_rate,
            per_ip_burst: args.per_ip_burst.max(1.0),
            ban: Duration::from_secs_f64(args.ban.max(0.0)),
            exempt_loopback: !args.rate_limit_loopback,
            global_rate: args.global_rate,
            reply_bytes_rate: args.reply_bytes_rate,
            ..RateLimitConfig::default()
        };
    }
    let bootstrap = if args.no_bootstrap {
        Vec::new()
    } else if args.bootstrap.is_empty() {
        DEFAULT_BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.bootstrap.clone()
    };
    DhtConfig {
        bind,
        bootstrap,
        state_file: args.state.as_ref().map(|d| d.join("dht.state")),
        pool_file: args.state.as_ref().map(|d| d.join("pool.log")),
        save_interval: Some(Duration::from_secs_f64(args.save_interval.max(1.0))),
        socket_buffer: Some(args.socket_buffer),
        shards: args.shards.map_or_else(cores, usize::from),
        node,
    }
}

/// Cores this process may run on (its CPU affinity, so `taskset` counts).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Starts the DHT; with the default addresses a missing IPv6 stack is a
/// warning, not a failure.
async fn spawn(args: &NodeArgs) -> Result<Dht, Failure> {
    if let Some(dir) = &args.state {
        std::fs::create_dir_all(dir).map_err(|e| {
            failed(
                e,
                &format!("cannot create the state directory {}", dir.display()),
            )
        })?;
    }
    if !args.bind.is_empty() {
        return Dht::spawn(dht_config(args, args.bind.clone()))
            .await
            .map_err(|e| failed(e, &format!("cannot start the node on {:?}", args.bind)));
    }
    let both: Vec<SocketAddr> = DEFAULT_BIND.iter().filter_map(|a| a.parse().ok()).collect();
    match Dht::spawn(dht_config(args, both)).await {
        Ok(dht) => Ok(dht),
        Err(e) => {
            let v4: Vec<SocketAddr> = DEFAULT_BIND[..1]
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            let dht = Dht::spawn(dht_config(args, v4.clone()))
                .await
                .map_err(|e| failed(e, &format!("cannot start the node on {v4:?}")))?;
            tracing::warn!("IPv6 unavailable ({e}); serving IPv4 only");
            eprintln!("lodestone: warning: IPv6 unavailable ({e}); serving IPv4 only");
            Ok(dht)
        }
    }
}

/// Runs `lodestone node` until SIGTERM or SIGINT.
pub async fn run(args: NodeArgs) -> Result<(), Failure> {
    // A mistyped --bootstrap is refused before anything starts; the DHT
    // resolves the names again when it joins.
    crate::bootstrap::resolve(&args.bootstrap).await?;
    // Watched before the listening line is printed: a supervisor may stop
    // the node as soon as it reads that line, and the state must be saved.
    let mut stop =
        StopSignals::watch().map_err(|e| failed(e, "cannot watch SIGTERM and SIGINT"))?;
    let dht = spawn(&args).await?;
    let stats = dht
        .stats()
        .await
        .map_err(|e| failed(e, "the node stopped"))?;
    let addrs: Vec<String> = dht.local_addrs().iter().map(ToString::to_string).collect();
    outln!(
        "lodestone node {} listening on {}",
        stats.id,
        addrs.join(" ")
    );
    if let Some(addr) = args.metrics {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| failed(e, &format!("cannot listen for metrics on {addr}")))?;
        tokio::spawn(metrics::serve(listener, dht.clone()));
    }
    let interval =
        (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let mut ticker =
        interval.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut last = (Instant::now(), stats);
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.recv() => break,
            () = tick => {
                let Ok(now) = dht.stats().await else { break };
                eprintln!("{}", stats_line(&last.1, &now, last.0.elapsed()));
                last = (Instant::now(), now);
            }
        }
    }
    let saved = dht.shutdown().await;
    match (&args.state, saved) {
        (_, Err(e)) => Err(failed(e, "cannot save the node state")),
        (Some(dir), Ok(())) => {
            eprintln!("lodestone: node state saved in {}", dir.display());
            Ok(())
        }
        (None, Ok(())) => Ok(()),
    }
}

/// Resident memory from /proc/self/status, in bytes.
pub(crate) fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One line: sizes, per-second rates since the previous line, memory.
fn stats_line(before: &DhtStats, now: &DhtStats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let (t0, t1) = (&before.traffic, &now.traffic);
    let m = |i: usize| rate(t0.queries_by_method[i], t1.queries_by_method[i]);
    format!(
        "node: table {}+{} pool {}+{} verifying {} stored {}/{} | in {:.0}/s (ping {:.0} find_node {:.0} get_peers {:.0} announce {:.0}) replies {:.0}/s | dropped {:.0}/s rate-limited {:.0}/s | rss {:.1} MiB",
        now.ipv4_nodes,
        now.ipv6_nodes,
        now.pool.0,
        now.pool.1,
        now.verify_queued,
        now.stored.0,
        now.stored.1,
        rate(t0.queries_in, t1.queries_in),
        m(0),
        m(1),
        m(2),
        m(3),
        rate(t0.replies_out, t1.replies_out),
        rate(t0.dropped, t1.dropped),
        rate(t0.rate_limited, t1.rate_limited),
        rss().unwrap_or(0) as f64 / (1024.0 * 1024.0),
    )
}
