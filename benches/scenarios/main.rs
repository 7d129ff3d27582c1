//! Scenario benchmark: lodestone against real clients on a private DHT.
//!
//! ```text
//! cargo build --release -p lodestone-cli
//! cargo bench -p lodestone-benches --bench scenarios -- --quick   # a few minutes
//! cargo bench -p lodestone-benches --bench scenarios              # about ten
//! ```
//!
//! The process re-executes itself inside fresh network, mount and PID
//! namespaces ([`isolate`]): only `lo` exists, so no packet can leave the
//! machine, and every process it started dies with it. There it builds a
//! private Mainline DHT of 8 libtorrent nodes and 3 libtorrent seeders of
//! generated multi-file content (`tests/py/swarm.py`), then runs, in rounds
//! with the client order rotating each round:
//!
//! * **ceilings**: SHA-1, loopback TCP and disk-write speed of this machine;
//! * **metadata**: magnet (infohash only) → metainfo, DHT only;
//! * **download**: magnet → every file verified by SHA-1, with wall time,
//!   MB/s and peak RSS;
//! * **transmission**: the same download when the only seeder is a
//!   transmission-cli, announced into the DHT on its behalf;
//! * **utp**: the same download from uTP-only seeders, over uTP only;
//! * **pex**: the same download from 30 seeders of which the DHT knows one,
//!   the rest learned by peer exchange;
//! * **upload**: the other direction, each client seeding to one libtorrent
//!   downloader over uTP and over TCP ([`upload`]);
//! * **node**: a KRPC load generator against `lodestone node` and a
//!   libtorrent DHT node.
//!
//! It prints tables of medians with ratios to lodestone and writes every
//! measurement as JSON (timestamp, git commit) under `target/bench/`. See
//! `--help` for the options.

mod ceilings;
mod clients;
mod isolate;
mod launch;
mod node;
mod page_cache;
mod pin;
mod report;
mod upload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use lodestone_benches::clock::Utc;
use lodestone_benches::options::{Client, Options, Scenario, USAGE, workspace_root};
use lodestone_tests::clients::{announce_peer, lt_forced_encryption, transmission_seeder_with};
use lodestone_tests::netns::{BLOCK_SWARM_SEEDERS, BLOCK_TRANSMISSION, addr};
use lodestone_tests::pex_swarm::PexSwarm;
use lodestone_tests::swarm::{Swarm, SwarmConfig, SwarmInfo};
use lodestone_tests::torrent::TorrentFacts;

use crate::clients::{Arena, Race, Tools};
use crate::report::{RaceReport, Report, SwarmSummary};

/// Libtorrent DHT nodes in the swarm.
const DHT_NODES: u8 = 8;
/// Which swarm node every client bootstraps from (not the one the swarm
/// probes with, so lookups have to walk).
const BOOTSTRAP_INDEX: usize = 2;
/// Per-run limit of the metadata race.
const METADATA_TIMEOUT: Duration = Duration::from_secs(60);

const TRANSMISSION_NOTE: &str = "transmission-cli takes part as a seeder only, in its own race: \
Transmission 3.00 drops every DHT packet from 127.0.0.0/8 (\"martian\"), so from a magnet it can \
find no peer in a loopback DHT, and it cannot announce itself there either. In the transmission \
race it seeds alone (TCP, plaintext preferred, DHT off) and tests/py/announce.py announces it into \
the private DHT from its own address, so the downloaders find it by a DHT lookup as usual.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let scratch = options.dir.join("lodestone-bench");
    if let Err(e) = isolate::enter(&scratch) {
        eprintln!("scenarios: {e}");
        return ExitCode::FAILURE;
    }
    let outcome = run(options, &scratch);
    if std::env::var_os(lodestone_tests::workdir::KEEP_ENV).is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("keeping {}", scratch.display());
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scenarios: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options, scratch: &Path) -> Result<(), String> {
    let begun = Instant::now();
    let timestamp = Utc::now();
    let tools = Tools::find(&options.lodestone, options.rqbit.as_deref());
    let mut notes = vec![
        format!(
            "swarm content and downloads live under {}; /dev/shm (the default) is RAM, so there disk speed is not what is measured",
            options.dir.display()
        ),
        "every client: the same magnet (infohash + name, no trackers, no x.pe), the same single \
         bootstrap node, DHT as the only peer source, no trackers/LSD/UPnP/NAT-PMP, no rate or \
         connection caps; the seeders speak TCP only, except in the utp race, where they speak \
         uTP only"
            .to_owned(),
        "libtorrent's times come from its own alerts, counted from after python imported \
         libtorrent; its RSS includes the python interpreter (about 20-30 MiB) and, as \
         libtorrent 2.0 memory-maps the files it writes, the file pages it touched"
            .to_owned(),
        "aria2c waits about 10 s before its first DHT lookup, and again before looking up peers \
         for the content once the metadata is in: its download time is mostly these fixed waits, \
         not transfer"
            .to_owned(),
    ];
    notes.push(TRANSMISSION_NOTE.to_owned());
    // The node table reports the floor responder's peak RSS as well.
    let floor = Path::new(env!("CARGO_BIN_EXE_udp-floor"));
    let executables: Vec<&Path> = tools.executables().into_iter().chain([floor]).collect();
    notes.extend(page_cache::drop_executables(&executables));
    if options.encrypted {
        notes.push(
            "encrypted: every seeder requires RC4 both ways (libtorrent in/out_enc_policy forced, \
             allowed_enc_level rc4); lodestone runs with --encryption require, libtorrent forced, \
             aria2c --bt-require-crypto --bt-min-crypto-level=arc4; rqbit has no MSE/PE and sits out"
                .to_owned(),
        );
    }
    if let Ok(l) = &tools.lodestone
        && let Some(age) = std::fs::metadata(&l.bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
    {
        println!(
            "lodestone binary: {} (built {:.0} min ago; rebuild with `cargo build --release -p lodestone-cli`)",
            l.bin.display(),
            age.as_secs_f64() / 60.0
        );
    }
    let chosen: Vec<Client> = options.clients.iter().copied().collect();

    let mut report = Report {
        timestamp: timestamp.iso8601(),
        git_commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        machine: machine(),
        options: options.clone(),
        versions: versions(&tools),
        settings: chosen
            .iter()
            .map(|&c| (c.name().to_owned(), clients::settings(c).to_owned()))
            .collect(),
        notes,
        swarm: Vec::new(),
        ceilings: None,
        metadata: None,
        download: Vec::new(),
        transmission: None,
        utp: None,
        pex: None,
        upload: Vec::new(),
        node: Vec::new(),
        node_skipped: Vec::new(),
    };
    for (client, version) in &report.versions {
        println!("{client}: {version}");
    }

    if options.scenarios.contains(&Scenario::Ceilings) {
        let bytes = options.size_mib.clamp(128, 1024) << 20;
        eprintln!("measuring ceilings...");
        let c = ceilings::measure(bytes, lodestone_tests::netns::addr(30, 1), scratch)?;
        print!("{}", report::ceilings_table(&c));
        report.ceilings = Some(c);
    }

    if options.scenarios.contains(&Scenario::Transmission) {
        transmission_scenario(&mut report, &options, &tools, &chosen, scratch)?;
    }
    if options.scenarios.contains(&Scenario::Utp) {
        utp_scenario(&mut report, &options, &tools, &chosen, scratch)?;
    }
    if options.scenarios.contains(&Scenario::Pex) {
        pex_scenario(&mut report, &options, &tools, &chosen, scratch)?;
    }
    if options.scenarios.contains(&Scenario::Upload) {
        report.upload = upload_scenario(&options, &tools, &chosen, scratch)?;
    }

    let needs_swarm = [Scenario::Metadata, Scenario::Download, Scenario::Node]
        .iter()
        .any(|s| options.scenarios.contains(s));
    if needs_swarm {
        // The first swarm runs every scenario; each further seeder count
        // gets a swarm of its own for the download race only.
        // Without the download race, only the first swarm has work.
        let swarms = if options.scenarios.contains(&Scenario::Download) {
            options.seeders.len()
        } else {
            1
        };
        for (i, &seeders) in options.seeders.iter().take(swarms).enumerate() {
            swarm_scenarios(
                &mut report,
                &options,
                &tools,
                &chosen,
                scratch,
                seeders,
                i == 0,
            )?;
        }
    }

    println!("\nnotes:");
    for note in &report.notes {
        println!("  - {note}");
    }
    println!("\nsettings given to each client:");
    for (client, s) in &report.settings {
        println!("  {client}: {s}");
    }
    let out = options.out.clone().unwrap_or_else(|| {
        workspace_root()
            .join("target/bench")
            .join(format!("scenarios-{}.json", timestamp.compact()))
    });
    write_json(&out, &report)?;
    println!(
        "\nreport: {} (commit {}{}; {:.0} s)",
        out.display(),
        &report.git_commit[..report.git_commit.len().min(12)],
        if report.git_dirty { ", dirty" } else { "" },
        begun.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts a swarm of `seeders` libtorrent seeders and runs the races that
/// need one: all of them for the `first` swarm, only the download after.
fn swarm_scenarios(
    report: &mut Report,
    options: &Options,
    tools: &Tools,
    chosen: &[Client],
    scratch: &Path,
    seeders: u8,
    first: bool,
) -> Result<(), String> {
    let download = options.scenarios.contains(&Scenario::Download);
    // Content only matters to the download race.
    let size = if download {
        options.size_mib << 20
    } else {
        16 << 20
    };
    let swarm = start_swarm(options, seeders, size, false)?;
    let info = swarm.info().clone();
    let bootstrap = bootstrap_of(&info);
    let swarm_summary = SwarmSummary {
        dht_nodes: info.dht_nodes.len(),
        seeders: info.seeders.len(),
        bootstrap: bootstrap.to_string(),
        info_hash: info.info_hash.clone(),
        total_length: info.total_length,
        files: info.files.len(),
        piece_length: info.piece_length,
        ready_s: info.ready_s,
    };
    println!(
        "\nswarm: {} libtorrent DHT nodes, {} seeders, {} files, {:.1} MiB in {} KiB pieces, ready in {:.1} s; every client bootstraps from {bootstrap}",
        swarm_summary.dht_nodes,
        swarm_summary.seeders,
        swarm_summary.files,
        info.total_length as f64 / 1048576.0,
        info.piece_length / 1024,
        info.ready_s
    );
    report.swarm.push(swarm_summary);
    let arena = Arena {
        encrypted: options.encrypted,
        ..Arena::new(&info, bootstrap, scratch, tools)
    };

    if first && options.scenarios.contains(&Scenario::Metadata) {
        let race = race(
            &arena,
            chosen,
            Race::Metadata,
            options.rounds,
            METADATA_TIMEOUT,
        );
        let r = RaceReport::new(
            "magnet (infohash only) -> metainfo known, through the DHT only; seconds to each client's own signal",
            race.0,
            race.1,
            None,
        );
        print!("{}", r.table("time to metadata"));
        report.metadata = Some(r);
    }
    if download {
        // Generous: 10 MB/s would still finish.
        let r = download_race(
            &arena,
            chosen,
            options.rounds,
            10_000_000,
            "magnet -> all files written and verified by the client (then checked here by SHA-1); wall seconds",
            &format!(
                "download of {:.0} MiB in {} files from {} seeders",
                info.total_length as f64 / 1048576.0,
                info.files.len(),
                info.seeders.len()
            ),
        );
        report.download.push(r);
    }
    if first && options.scenarios.contains(&Scenario::Node) {
        node_scenario(report, tools, bootstrap, scratch, options);
        print!("{}", report::node_table(&report.node, &report.node_skipped));
    }
    drop(swarm);
    Ok(())
}

/// The private DHT of [`DHT_NODES`] libtorrent nodes with `seeders`
/// libtorrent seeders of `size` bytes of generated content; with
/// `utp_only`, the seeders speak uTP and no TCP.
fn start_swarm(options: &Options, seeders: u8, size: u64, utp_only: bool) -> Result<Swarm, String> {
    eprintln!(
        "starting the swarm: {DHT_NODES} DHT nodes, {seeders}{} seeders, {} MiB...",
        if utp_only { " uTP-only" } else { "" },
        size >> 20
    );
    Swarm::start(SwarmConfig {
        dht_nodes: DHT_NODES,
        seeders,
        file_sizes: file_sizes(size),
        single_file: false,
        name: "content".to_owned(),
        piece_length: (options.piece_kib > 0).then_some(options.piece_kib * 1024),
        seed: 7,
        port: clients::PORT,
        utp: utp_only,
        utp_only_seeders: if utp_only { seeders } else { 0 },
        ready_timeout: Duration::from_secs(180),
        seeder_settings: if options.encrypted {
            vec![lt_forced_encryption()]
        } else {
            Vec::new()
        },
    })
    .map_err(|e| format!("swarm: {e}"))
}

/// The download race when the only seeder is transmission-cli, announced
/// into the private DHT on its behalf (it cannot do so itself on loopback).
fn transmission_scenario(
    report: &mut Report,
    options: &Options,
    tools: &Tools,
    chosen: &[Client],
    scratch: &Path,
) -> Result<(), String> {
    let swarm = start_swarm(options, 0, options.transmission_mib << 20, false)?;
    let info = swarm.info().clone();
    eprintln!("starting the transmission-cli seeder (it verifies its files first)...");
    let seeder = transmission_seeder_with(
        &info.torrent,
        &info.content_dir,
        addr(BLOCK_TRANSMISSION, 1),
        clients::PORT,
        options.encrypted,
    )
    .map_err(|e| format!("transmission seeder: {e}"))?;
    let SocketAddr::V4(seeder_addr) = seeder.addr() else {
        return Err("the transmission seeder listens on IPv4 only".to_owned());
    };
    let acked = announce_peer(&info.dht_nodes, seeder_addr, &info.info_hash)
        .map_err(|e| format!("announcing transmission: {e}"))?;
    if acked.is_empty() {
        return Err("no DHT node took the transmission seeder's announce".to_owned());
    }
    let arena = Arena {
        encrypted: options.encrypted,
        ..Arena::new(&info, bootstrap_of(&info), scratch, tools)
    };
    // Generous: 0.5 MB/s would still finish.
    let r = download_race(
        &arena,
        chosen,
        options.rounds,
        500_000,
        "magnet -> all files verified, the only seeder a transmission-cli 3.00 found through the DHT; wall seconds",
        &format!(
            "download of {:.0} MiB from one transmission-cli seeder",
            info.total_length as f64 / 1048576.0
        ),
    );
    report.transmission = Some(r);
    Ok(())
}

/// The download race from as many libtorrent seeders as the first swarm
/// has, all of them speaking uTP only, every client dialing uTP only.
fn utp_scenario(
    report: &mut Report,
    options: &Options,
    tools: &Tools,
    chosen: &[Client],
    scratch: &Path,
) -> Result<(), String> {
    let seeders = options.seeders.first().copied().unwrap_or(3);
    let swarm = start_swarm(options, seeders, options.utp_mib << 20, true)?;
    let info = swarm.info().clone();
    let arena = Arena {
        encrypted: options.encrypted,
        utp_only: true,
        ..Arena::new(&info, bootstrap_of(&info), scratch, tools)
    };
    // Generous: 2 MB/s would still finish.
    let r = download_race(
        &arena,
        chosen,
        options.rounds,
        2_000_000,
        "magnet -> all files verified, every seeder and every client on uTP only (no TCP); wall seconds",
        &format!(
            "download of {:.0} MiB over uTP from {} uTP-only seeders",
            info.total_length as f64 / 1048576.0,
            info.seeders.len()
        ),
    );
    report.utp = Some(r);
    Ok(())
}

/// The upload direction: each chosen client, as a seeder, serves the
/// content of a seederless swarm to a libtorrent downloader, over uTP and
/// then over TCP; one table each.
fn upload_scenario(
    options: &Options,
    tools: &Tools,
    chosen: &[Client],
    scratch: &Path,
) -> Result<Vec<RaceReport>, String> {
    let mut tables = Vec::new();
    let swarm = start_swarm(options, 0, options.utp_mib << 20, false)?;
    let info = swarm.info().clone();
    let arena = Arena::new(&info, bootstrap_of(&info), scratch, tools);
    // Generous: 2 MB/s would still finish.
    let timeout = Duration::from_secs(60 + info.total_length / 2_000_000);
    for transport in [upload::Transport::Utp, upload::Transport::Tcp] {
        let (runs, skipped) = in_rounds(
            &format!("Upload over {}", transport.name()),
            chosen,
            options.rounds,
            |c| upload::missing(&arena, c, transport),
            |seeder, round| upload::run(&arena, seeder, transport, round, timeout),
        );
        let r = RaceReport::new(
            format!(
                "the client seeds to one libtorrent downloader, both on {} only; wall seconds \
                 from the downloader's metadata to its last piece, the seeder's CPU over the \
                 transfer and peak RSS",
                transport.name()
            ),
            runs,
            skipped,
            Some(info.total_length),
        );
        print!(
            "{}",
            r.table(&format!(
                "upload of {:.0} MiB from each seeder to one libtorrent downloader over {}",
                info.total_length as f64 / 1048576.0,
                transport.name()
            ))
        );
        tables.push(r);
    }
    Ok(tables)
}

/// Seeders in the race found by peer exchange.
const PEX_SEEDERS: u8 = 30;

/// The download race from [`PEX_SEEDERS`] libtorrent seeders with the DHT
/// off, the first connected to the rest: it alone is announced into the
/// private DHT (on its behalf, from its own address), so a client finds
/// the others only by peer exchange.
fn pex_scenario(
    report: &mut Report,
    options: &Options,
    tools: &Tools,
    chosen: &[Client],
    scratch: &Path,
) -> Result<(), String> {
    // The DHT only: its own content is a token.
    let dht = start_swarm(options, 0, 1 << 20, false)?;
    let dht_nodes = dht.info().dht_nodes.clone();
    eprintln!("starting {PEX_SEEDERS} seeders that know each other, DHT off...");
    let ips: Vec<_> = (1..=PEX_SEEDERS)
        .map(|i| addr(BLOCK_SWARM_SEEDERS, i))
        .collect();
    let seeders = PexSwarm::start(&ips, false, options.pex_mib << 20)
        .map_err(|e| format!("PEX seeders: {e}"))?;
    let ready = seeders.ready().clone();
    let Some(SocketAddr::V4(first)) = ready.seeders.first().copied() else {
        return Err("the PEX swarm has no IPv4 seeder".to_owned());
    };
    let acked = announce_peer(&dht_nodes, first, &ready.info_hash)
        .map_err(|e| format!("announcing the first PEX seeder: {e}"))?;
    if acked.is_empty() {
        return Err("no DHT node took the first PEX seeder's announce".to_owned());
    }
    let facts = TorrentFacts::read(&ready.torrent).map_err(|e| e.to_string())?;
    let info = SwarmInfo {
        dht_nodes,
        seeders: ready.seeders,
        info_hash: ready.info_hash,
        torrent: ready.torrent,
        content_dir: ready.content_dir,
        name: facts.name,
        piece_length: 0,
        piece_count: facts.piece_count,
        total_length: ready.files.iter().map(|f| f.length).sum(),
        files: ready.files,
        dht_ready_s: 0.0,
        ready_s: 0.0,
    };
    let arena = Arena::new(&info, bootstrap_of(&info), scratch, tools);
    // Generous: 2 MB/s would still finish.
    let r = download_race(
        &arena,
        chosen,
        options.rounds,
        2_000_000,
        "magnet -> all files verified; 30 seeders, one of them in the DHT, the rest known only to it (peer exchange); wall seconds",
        &format!(
            "download of {:.0} MiB from {PEX_SEEDERS} seeders, one in the DHT",
            info.total_length as f64 / 1048576.0
        ),
    );
    report.pex = Some(r);
    Ok(())
}

/// The node every client of a race over `info`'s DHT bootstraps from.
fn bootstrap_of(info: &SwarmInfo) -> SocketAddr {
    info.dht_nodes[BOOTSTRAP_INDEX.min(info.dht_nodes.len() - 1)]
}

/// Runs the download race in `arena`, with a timeout that a client at
/// `floor_rate` bytes per second would still meet, prints its table under
/// `title` and returns it.
fn download_race(
    arena: &Arena<'_>,
    chosen: &[Client],
    rounds: usize,
    floor_rate: u64,
    what: &'static str,
    title: &str,
) -> RaceReport {
    let timeout = Duration::from_secs(60 + arena.swarm.total_length / floor_rate);
    let (runs, skipped) = race(arena, chosen, Race::Download, rounds, timeout);
    let r = RaceReport::new(what, runs, skipped, Some(arena.swarm.total_length));
    print!("{}", r.table(title));
    r
}

/// Runs `race` for `rounds`, rotating the client order every round.
fn race(
    arena: &Arena<'_>,
    chosen: &[Client],
    race: Race,
    rounds: usize,
    timeout: Duration,
) -> (Vec<clients::Run>, BTreeMap<String, String>) {
    let missing = |c: Client| {
        if arena.encrypted && c == Client::Rqbit {
            Some("rqbit does not speak MSE/PE encryption".to_owned())
        } else if arena.utp_only && c == Client::Aria2c {
            Some("aria2c does not speak uTP".to_owned())
        } else {
            arena.tools.missing(c, race)
        }
    };
    in_rounds(
        &format!("{race:?}"),
        chosen,
        rounds,
        missing,
        |client, round| clients::run(arena, client, race, round, timeout),
    )
}

/// Runs `run` for each of `chosen` that is not `missing` (those are
/// returned with the reason), for `rounds`, rotating the client order
/// every round so that no client always goes first; `label` names the
/// runs in the progress lines.
fn in_rounds(
    label: &str,
    chosen: &[Client],
    rounds: usize,
    missing: impl Fn(Client) -> Option<String>,
    mut run: impl FnMut(Client, usize) -> clients::Run,
) -> (Vec<clients::Run>, BTreeMap<String, String>) {
    let mut skipped = BTreeMap::new();
    let mut runners = Vec::new();
    for &c in chosen {
        match missing(c) {
            Some(why) => {
                skipped.insert(c.name().to_owned(), why);
            }
            None => runners.push(c),
        }
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        let mut order = runners.clone();
        let n = order.len();
        if n > 0 {
            order.rotate_left(round % n);
        }
        for client in order {
            eprintln!("{label} round {}/{rounds}: {}...", round + 1, client.name());
            let result = run(client, round);
            match (&result.seconds, &result.error) {
                (Some(s), _) => eprintln!("  {} {s:.3} s", client.name()),
                (_, Some(e)) => eprintln!("  {} failed: {e}", client.name()),
                _ => {}
            }
            runs.push(result);
        }
    }
    (runs, skipped)
}

fn node_scenario(
    report: &mut Report,
    tools: &Tools,
    bootstrap: std::net::SocketAddr,
    scratch: &Path,
    options: &Options,
) {
    let plan = pin::Plan::find();
    if let Err(e) = &plan {
        println!("node: {e}");
        report.node_skipped.push(e.clone());
    }
    let setup = node::Setup {
        bootstrap,
        phase: options.node_load,
        plan: plan.as_ref().ok(),
    };
    eprintln!("loading the UDP floor responder...");
    let dir = scratch.join("node-floor");
    let floor = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| node::floor(&setup, &dir));
    match floor {
        Ok(run) => report.node.push(run),
        Err(e) => report.node_skipped.push(format!("udp floor: {e}")),
    }
    match &tools.lodestone {
        Err(e) => report.node_skipped.push(e.clone()),
        Ok(l) => {
            // One shard and two, alternated for `rounds` rounds (the first
            // of each round swapping), so that drift on the machine falls on
            // both: the ratio of their costs per answer is a difference of
            // under 10 %, within one run's noise.
            for round in 0..options.rounds {
                let order = if round % 2 == 0 { [1, 2] } else { [2, 1] };
                for shards in order {
                    let plural = if shards == 1 { "" } else { "s" };
                    eprintln!(
                        "loading lodestone node, {shards} shard{plural}, round {}...",
                        round + 1
                    );
                    let dir = scratch.join(format!("node-lodestone-{shards}-{round}"));
                    let result = std::fs::create_dir_all(&dir)
                        .map_err(|e| e.to_string())
                        .and_then(|()| node::lodestone(l, &setup, &dir, shards, options.node_pool))
                        .map(|run| node::NodeRun {
                            round: Some(round + 1),
                            ..run
                        });
                    // The pool log is 28 MB a run, and /dev/shm is small.
                    let _ = std::fs::remove_file(dir.join("state").join("pool.log"));
                    match result {
                        Ok(run) => report.node.push(run),
                        Err(e) => {
                            println!("lodestone node: {e}");
                            report.node_skipped.push(e);
                        }
                    }
                }
            }
        }
    }
    match &tools.libtorrent {
        Err(e) => report.node_skipped.push(e.clone()),
        Ok(_) => {
            eprintln!("loading libtorrent node...");
            match node::libtorrent(&setup) {
                Ok(run) => report.node.push(run),
                Err(e) => report.node_skipped.push(format!("libtorrent node: {e}")),
            }
        }
    }
}

/// Multi-file content of exactly `total` bytes: six large files of uneven,
/// odd sizes (so file and piece boundaries rarely meet) and, when there is
/// room, two small ones, one of them in a subdirectory.
fn file_sizes(total: u64) -> Vec<u64> {
    let mut sizes: Vec<u64> = [30u64, 22, 16, 12, 9]
        .iter()
        .zip([7u64, 3, 11, 1, 5])
        .map(|(pct, odd)| total * pct / 100 + odd)
        .collect();
    if total >= 16 << 20 {
        sizes.extend([1_000, 123_457]);
    }
    let used: u64 = sizes.iter().sum();
    // At least 11% of `total` is left for the last large file.
    sizes.insert(5, total.saturating_sub(used).max(1));
    sizes
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine() -> BTreeMap<&'static str, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    BTreeMap::from([
        ("cpu", model),
        ("cores", cores.to_string()),
        ("kernel", kernel),
    ])
}

fn versions(tools: &Tools) -> BTreeMap<String, String> {
    let first_line = |program: &Path, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let mut v = BTreeMap::new();
    let mut put = |name: &str, found: Result<String, &String>| {
        v.insert(
            name.to_owned(),
            found.unwrap_or_else(|why| format!("absent: {why}")),
        );
    };
    put(
        "lodestone",
        tools
            .lodestone
            .as_ref()
            .map(|l| first_line(&l.bin, &["--version"])),
    );
    put(
        "rqbit",
        tools.rqbit.as_ref().map(|b| first_line(b, &["--version"])),
    );
    put(
        "aria2c",
        tools.aria2c.as_ref().map(|b| first_line(b, &["--version"])),
    );
    put(
        "libtorrent",
        tools.libtorrent.as_ref().map(|p| {
            first_line(
                p,
                &[
                    "-c",
                    "import libtorrent; print('libtorrent', libtorrent.__version__)",
                ],
            )
        }),
    );
    v
}

fn write_json(path: &PathBuf, report: &Report) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("serialising: {e}"))?;
    std::fs::write(path, json + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}
