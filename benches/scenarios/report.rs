//! The report: tables of medians and ratios on stdout, everything in JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lodestone_benches::options::{Client, Options};
use lodestone_benches::stats::{Summary, ratios_by_round};
use serde::Serialize;

use crate::ceilings::Ceilings;
use crate::clients::Run;
use crate::node::NodeRun;

/// One client's runs in one race, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    /// Who.
    pub client: Client,
    /// Successful runs.
    pub ok: usize,
    /// Attempted runs.
    pub rounds: usize,
    /// Seconds of the successful runs.
    pub seconds: Option<Summary>,
    /// Content size / median seconds, in MB/s (downloads only).
    pub median_mb_s: Option<f64>,
    /// Median of the peak RSS of its runs, MiB.
    pub median_peak_rss_mib: Option<f64>,
    /// Median CPU seconds (user + system, whole process) per GiB of
    /// content (downloads only): on a 2-core machine shared with the
    /// seeders, the figure a client can win on.
    pub median_cpu_s_per_gib: Option<f64>,
    /// This client's median time / lodestone's (> 1: lodestone is faster).
    pub time_vs_lodestone: Option<f64>,
}

/// One race: every run, the summaries, and who sat out.
#[derive(Debug, Clone, Serialize)]
pub struct RaceReport {
    /// What was measured.
    pub what: String,
    /// Every attempt.
    pub runs: Vec<Run>,
    /// Per client.
    pub summary: Vec<ClientSummary>,
    /// Clients that did not run, and why.
    pub skipped: BTreeMap<String, String>,
}

impl RaceReport {
    /// Summarises `runs`; `bytes` turns times into MB/s.
    pub fn new(
        what: impl Into<String>,
        runs: Vec<Run>,
        skipped: BTreeMap<String, String>,
        bytes: Option<u64>,
    ) -> RaceReport {
        let mut clients: Vec<Client> = runs.iter().map(|r| r.client).collect();
        clients.sort();
        clients.dedup();
        let mut summary: Vec<ClientSummary> = clients
            .into_iter()
            .map(|client| {
                let mine: Vec<&Run> = runs.iter().filter(|r| r.client == client).collect();
                let times: Vec<f64> = mine.iter().filter_map(|r| r.seconds).collect();
                let rss: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| r.peak_rss_kib)
                    .map(|k| k as f64 / 1024.0)
                    .collect();
                let seconds = Summary::of(&times);
                let gib = bytes.map(|b| b as f64 / f64::from(1u32 << 30));
                let cpu: Vec<f64> = mine
                    .iter()
                    .filter(|r| r.seconds.is_some())
                    .filter_map(|r| Some(r.cpu_s? / gib?.max(1e-12)))
                    .collect();
                ClientSummary {
                    client,
                    ok: times.len(),
                    rounds: mine.len(),
                    seconds,
                    median_mb_s: bytes
                        .zip(seconds)
                        .map(|(b, s)| b as f64 / 1e6 / s.median.max(1e-9)),
                    median_peak_rss_mib: Summary::of(&rss).map(|s| s.median),
                    median_cpu_s_per_gib: Summary::of(&cpu).map(|s| s.median),
                    time_vs_lodestone: None,
                }
            })
            .collect();
        let reference = summary
            .iter()
            .find(|s| s.client == Client::Lodestone)
            .and_then(|s| s.seconds)
            .map(|s| s.median);
        for s in &mut summary {
            s.time_vs_lodestone = reference
                .zip(s.seconds)
                .map(|(lodestone, mine)| mine.median / lodestone.max(1e-9));
        }
        RaceReport {
            what: what.into(),
            runs,
            summary,
            skipped,
        }
    }

    /// The table.
    pub fn table(&self, title: &str) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "\n== {title} ==");
        let _ = writeln!(t, "   {}", self.what);
        let download = self.summary.iter().any(|s| s.median_mb_s.is_some());
        let _ = writeln!(
            t,
            "{:<11} {:>5}  {:>9}  {:>15}  {:>8}  {:>10}  {:>10}   time vs lodestone",
            "client", "ok", "median s", "min-max s", "MB/s", "CPU s/GiB", "peak MiB",
        );
        for s in &self.summary {
            let (median, range) = match s.seconds {
                Some(x) => (
                    format!("{:.3}", x.median),
                    format!("{:.3}-{:.3}", x.min, x.max),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let mb = s
                .median_mb_s
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
            let rss = s
                .median_peak_rss_mib
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            let cpu = s
                .median_cpu_s_per_gib
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            let ratio = match (s.client, s.time_vs_lodestone) {
                (Client::Lodestone, Some(_)) => "1.00 (reference)".to_owned(),
                (_, Some(r)) => format!("{r:.2}x"),
                _ => "n/a".to_owned(),
            };
            let _ = writeln!(
                t,
                "{:<11} {:>5}  {:>9}  {:>15}  {:>8}  {:>10}  {:>10}   {}",
                s.client.name(),
                format!("{}/{}", s.ok, s.rounds),
                median,
                range,
                if download { mb } else { "".to_owned() },
                if download { cpu } else { "".to_owned() },
                rss,
                ratio
            );
        }
        for (client, why) in &self.skipped {
            let _ = writeln!(t, "{client:<11} skipped: {why}");
        }
        let failures: Vec<&Run> = self.runs.iter().filter(|r| r.error.is_some()).collect();
        for r in failures {
            let _ = writeln!(
                t,
                "  ! {} round {}: {}",
                r.client.name(),
                r.round + 1,
                r.error
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', "\n    ")
            );
        }
        t
    }
}

/// The bootstrap-node table.
pub fn node_table(runs: &[NodeRun], skipped: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n== DHT bootstrap node under load ==");
    let _ = writeln!(
        t,
        "   KRPC ping/find_node/get_peers from 64 addresses; open loop at {:.0} q/s, then closed loop with {} in flight per address",
        crate::node::LIGHT_RATE,
        crate::node::WINDOW
    );
    if let Some(r) = runs.first() {
        let _ = writeln!(
            t,
            "   node on cores {}, generator on the other; lodestone's verified pool: {} entries",
            r.cores.as_deref().unwrap_or("(not pinned)"),
            runs.iter()
                .find_map(|r| r.pool)
                .map_or_else(|| "-".to_owned(), |p| p.to_string())
        );
    }
    let _ = writeln!(
        t,
        "{:<17} {:>17} {:>8} {:>8}   {:>12} {:>8} {:>8} {:>8}   {:>9} {:>7} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "node",
        "light answered",
        "p50 us",
        "p99 us",
        "saturated q/s",
        "lost",
        "p50 us",
        "p99 us",
        "peak MiB",
        "CPU s",
        "CPU us/ans",
        "sys us/ans",
        "node busy",
        "gen busy",
        "gen own"
    );
    let percent =
        |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    let tenths = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for r in runs {
        let lat = |l: &Option<lodestone_benches::krpc_load::Latency>| {
            l.map_or(("-".to_owned(), "-".to_owned()), |l| {
                (l.p50.to_string(), l.p99.to_string())
            })
        };
        let (lp50, lp99) = lat(&r.light.latency_us);
        let (sp50, sp99) = lat(&r.saturate.latency_us);
        let name = match r.round {
            Some(round) => format!("{} #{round}", r.node),
            None => r.node.clone(),
        };
        let _ = writeln!(
            t,
            "{:<17} {:>17} {:>8} {:>8}   {:>12.0} {:>8} {:>8} {:>8}   {:>9} {:>7} {:>10} {:>10} {:>10} {:>9} {:>8}",
            name,
            format!("{}/{}", r.light.answered, r.light.sent),
            lp50,
            lp99,
            r.saturate.answered_per_s,
            r.saturate.lost,
            sp50,
            sp99,
            r.peak_rss_kib
                .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
            tenths(r.cpu_s),
            tenths(r.cpu_us_per_answer),
            tenths(r.system_us_per_answer),
            percent(r.node_busy),
            percent(r.generator_busy),
            percent(r.generator_own)
        );
    }
    // lodestone's rows are rounds: its figures below are their medians.
    let samples = |name: &str, figure: fn(&NodeRun) -> Option<f64>| -> Vec<(usize, f64)> {
        runs.iter()
            .filter(|r| r.node == name)
            .filter_map(|r| Some((r.round.unwrap_or(1), figure(r)?)))
            .collect()
    };
    let median = |name: &str, figure: fn(&NodeRun) -> Option<f64>| {
        let values: Vec<f64> = samples(name, figure).iter().map(|&(_, v)| v).collect();
        Summary::of(&values).map(|s| s.median)
    };
    let rate = |r: &NodeRun| Some(r.saturate.answered_per_s);
    let cost = |r: &NodeRun| r.cpu_us_per_answer;
    if let (Some(l), Some(lt)) = (median("lodestone", rate), median("libtorrent", rate)) {
        let _ = writeln!(
            t,
            "lodestone answers {:.2}x libtorrent's queries/s",
            l / lt.max(1e-9)
        );
    }
    if let (Some(node), Some(floor)) = (median("lodestone", cost), median(crate::node::FLOOR, cost))
    {
        let _ = writeln!(
            t,
            "lodestone spends {:.1} us per answer above the udp floor's {floor:.1} us",
            node - floor
        );
    }
    let ratios = ratios_by_round(&samples("lodestone", cost), &samples("lodestone x2", cost));
    if let Some(r) = Summary::of(&ratios) {
        let _ = writeln!(
            t,
            "lodestone with 2 shards spends {:.2}x the CPU per answer of 1 shard (median of {} rounds, {:.2}-{:.2})",
            r.median, r.count, r.min, r.max
        );
    }
    let _ = writeln!(
        t,
        "   (node busy: its CPU time over the saturated phase per core it was given; gen busy: the \
         generator's core, with anything on it; gen own: the generator's own share of it. Near 100% \
         gen busy, the generator, not the node, set the saturated rate; CPU us/ans compares cost \
         either way; sys us/ans is its kernel part: receiving, sending and, on loopback, \
         delivering each answer into the generator's socket; udp floor: a responder that \
         receives and sends as lodestone's node does and answers with a copy of its reply, \
         the least any node spends here)"
    );
    for why in skipped {
        let _ = writeln!(t, "skipped: {why}");
    }
    t
}

/// The ceilings table.
pub fn ceilings_table(c: &Ceilings) -> String {
    let seconds = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    format!(
        "\n== ceilings of this machine ({} MiB each) ==\n\
         SHA-1, one core (sha1 crate, 1 MiB chunks)   {:>8.0} MB/s\n\
         loopback TCP, one stream, in-process         {:>8.0} MB/s   receiving it: {} CPU s/GiB\n\
         file write, fsync included                   {:>8.0} MB/s   to {} ({})\n\
         hash, then write, one GiB at these speeds    {:>8.2} s/GiB  (the CPU floor of a verified download to tmpfs)\n\
         receive, hash, then write, one GiB           {:>8} s/GiB  (the same from loopback seeders, as in the races)\n",
        c.bytes >> 20,
        c.sha1_one_core_mb_s,
        c.loopback_tcp_mb_s,
        seconds(c.loopback_tcp_receive_s_per_gib),
        c.disk_write_mb_s,
        c.disk_dir,
        c.disk_fs,
        c.hash_and_write_s_per_gib(),
        seconds(c.receive_hash_and_write_s_per_gib())
    )
}

/// The swarm, as the report records it.
#[derive(Debug, Clone, Serialize)]
pub struct SwarmSummary {
    /// libtorrent DHT nodes.
    pub dht_nodes: usize,
    /// libtorrent seeders.
    pub seeders: usize,
    /// The node every client bootstraps from.
    pub bootstrap: String,
    /// Infohash.
    pub info_hash: String,
    /// Bytes of content.
    pub total_length: u64,
    /// Files.
    pub files: usize,
    /// Piece length.
    pub piece_length: u32,
    /// Seconds the swarm took to be ready.
    pub ready_s: f64,
}

/// Everything, as written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Report {
    /// UTC start time.
    pub timestamp: String,
    /// `git rev-parse HEAD` of the workspace.
    pub git_commit: String,
    /// Uncommitted changes to tracked files.
    pub git_dirty: bool,
    /// CPU model, cores, kernel.
    pub machine: BTreeMap<&'static str, String>,
    /// The options in force.
    pub options: Options,
    /// `--version` of each client.
    pub versions: BTreeMap<String, String>,
    /// What each client was given.
    pub settings: BTreeMap<String, String>,
    /// Remarks a reader needs (skips, caveats).
    pub notes: Vec<String>,
    /// The private DHTs and their content, one per seeder count.
    pub swarm: Vec<SwarmSummary>,
    /// Machine ceilings.
    pub ceilings: Option<Ceilings>,
    /// Magnet → metainfo.
    pub metadata: Option<RaceReport>,
    /// Magnet → verified files, one race per seeder count.
    pub download: Vec<RaceReport>,
    /// Magnet → verified files from a lone transmission-cli seeder.
    pub transmission: Option<RaceReport>,
    /// Magnet → verified files from uTP-only seeders, over uTP only.
    pub utp: Option<RaceReport>,
    /// Magnet → verified files from seeders found by peer exchange.
    pub pex: Option<RaceReport>,
    /// Seeding to one libtorrent downloader, over uTP then over TCP.
    pub upload: Vec<RaceReport>,
    /// DHT nodes under load.
    pub node: Vec<NodeRun>,
    /// Nodes that did not run, and why.
    pub node_skipped: Vec<String>,
}
