//! Command-line and environment options of the scenario benchmark.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// Usage text, printed for `--help` and on a bad option.
pub const USAGE: &str = "\
lodestone scenario benchmark: lodestone against rqbit, libtorrent and aria2c
on a private loopback DHT, inside a fresh network namespace.

  cargo build --release -p lodestone-cli
  cargo bench -p lodestone-benches --bench scenarios -- [OPTIONS]

Options (each also read from the environment variable in brackets):
  --quick               1 round, 128 MiB (16 from transmission, 64 over uTP and uploaded, 32 by
                        PEX), 3 s node load: a few minutes
  --rounds N            rounds per scenario, clients alternating; the node scenario alternates
                        lodestone's 1 and 2 shards as many times [LODESTONE_BENCH_ROUNDS] (5)
  --size-mib N          download size in MiB, spread over 8 files [LODESTONE_BENCH_SIZE_MIB] (512)
  --piece-kib N         piece length in KiB, 0 lets libtorrent choose [LODESTONE_BENCH_PIECE_KIB] (0)
  --seeders LIST        libtorrent seeders per swarm, e.g. 3,48: one download race each; the
                        other scenarios use the first [LODESTONE_BENCH_SEEDERS] (3)
  --encrypted           seeders require RC4 (MSE/PE) both ways; each client is told to
                        encrypt, rqbit (no MSE) sits out [LODESTONE_BENCH_ENCRYPTED=1] (off)
  --scenarios LIST      any of ceilings,metadata,download,transmission,utp,pex,upload,node
                        [LODESTONE_BENCH_SCENARIOS] (all)
  --transmission-mib N  size of the download from a lone transmission-cli seeder
                        [LODESTONE_BENCH_TRANSMISSION_MIB] (32)
  --utp-mib N           size of the download from uTP-only seeders, and of the upload
                        scenario's content [LODESTONE_BENCH_UTP_MIB] (256)
  --pex-mib N           size of the download from 30 seeders of which the DHT knows one
                        [LODESTONE_BENCH_PEX_MIB] (128)
  --clients LIST        any of lodestone,rqbit,libtorrent,aria2c [LODESTONE_BENCH_CLIENTS] (all)
  --node-secs S         seconds of each load phase against a DHT node [LODESTONE_BENCH_NODE_SECS] (10)
  --node-pool N         verified pool lodestone node starts with [LODESTONE_BENCH_NODE_POOL] (1000000)
  --dir PATH            scratch dir for swarm content and downloads [LODESTONE_BENCH_DIR] (/dev/shm)
  --out FILE            JSON report [LODESTONE_BENCH_OUT] (target/bench/scenarios-<time>.json)
  --lodestone PATH      lodestone binary [LODESTONE_BIN] (target/release/lodestone)
  --rqbit PATH          rqbit binary [RQBIT_BIN] (rqbit on PATH, else ~/.cargo/bin/rqbit)
  --help                this text";

/// A part of the benchmark that can be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// SHA-1, loopback TCP and disk write speed of this machine.
    Ceilings,
    /// Magnet to metainfo through the DHT.
    Metadata,
    /// Magnet to verified files.
    Download,
    /// Magnet to verified files when the only seeder is transmission-cli,
    /// whose choker and request handling differ from libtorrent's.
    Transmission,
    /// Magnet to verified files from seeders that speak uTP only, each
    /// client dialing uTP only.
    Utp,
    /// Magnet to verified files from 30 seeders of which only one is in
    /// the DHT: the rest are learned by peer exchange.
    Pex,
    /// Seeding to one libtorrent downloader, over uTP and over TCP.
    Upload,
    /// Load on a DHT bootstrap node.
    Node,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Ceilings,
        Scenario::Metadata,
        Scenario::Download,
        Scenario::Transmission,
        Scenario::Utp,
        Scenario::Pex,
        Scenario::Upload,
        Scenario::Node,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Ceilings => "ceilings",
            Scenario::Metadata => "metadata",
            Scenario::Download => "download",
            Scenario::Transmission => "transmission",
            Scenario::Utp => "utp",
            Scenario::Pex => "pex",
            Scenario::Upload => "upload",
            Scenario::Node => "node",
        }
    }
}

/// A BitTorrent client taking part in the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// Ours.
    Lodestone,
    /// rqbit (Rust).
    Rqbit,
    /// libtorrent-rasterbar through its python binding.
    Libtorrent,
    /// aria2c.
    Aria2c,
}

impl Client {
    /// Every client, lodestone first (the reference of every ratio).
    pub const ALL: [Client; 4] = [
        Client::Lodestone,
        Client::Rqbit,
        Client::Libtorrent,
        Client::Aria2c,
    ];

    /// Its name in tables and options.
    pub fn name(self) -> &'static str {
        match self {
            Client::Lodestone => "lodestone",
            Client::Rqbit => "rqbit",
            Client::Libtorrent => "libtorrent",
            Client::Aria2c => "aria2c",
        }
    }
}

/// Everything the benchmark can be told.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Rounds per scenario.
    pub rounds: usize,
    /// Total content size in MiB.
    pub size_mib: u64,
    /// Piece length in KiB; 0 lets libtorrent choose.
    pub piece_kib: u32,
    /// Seeders of each swarm: one download race per entry, in order.
    pub seeders: Vec<u8>,
    /// The seeders require RC4 encryption (MSE/PE) both ways.
    pub encrypted: bool,
    /// Content size in MiB of the race from a lone transmission-cli seeder,
    /// which serves one peer at a few MiB/s: smaller than `size_mib`.
    pub transmission_mib: u64,
    /// Content size in MiB of the race from uTP-only seeders and of the
    /// upload scenario.
    pub utp_mib: u64,
    /// Content size in MiB of the race found by peer exchange.
    pub pex_mib: u64,
    /// Selected scenarios.
    pub scenarios: BTreeSet<Scenario>,
    /// Selected clients.
    pub clients: BTreeSet<Client>,
    /// Length of each load phase against a DHT node.
    #[serde(serialize_with = "secs")]
    pub node_load: Duration,
    /// Entries of the verified pool `lodestone node` starts with.
    pub node_pool: u32,
    /// Scratch directory (swarm content, downloads).
    pub dir: PathBuf,
    /// JSON report path; `None` means the default under target/bench.
    pub out: Option<PathBuf>,
    /// The lodestone binary.
    pub lodestone: PathBuf,
    /// The rqbit binary; `None`: `rqbit` on `PATH`, else `~/.cargo/bin/rqbit`.
    pub rqbit: Option<PathBuf>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The workspace root (benches/ is one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl Options {
    fn defaults() -> Options {
        Options {
            rounds: 5,
            size_mib: 512,
            piece_kib: 0,
            seeders: vec![3],
            encrypted: false,
            transmission_mib: 32,
            utp_mib: 256,
            pex_mib: 128,
            scenarios: Scenario::ALL.into_iter().collect(),
            clients: Client::ALL.into_iter().collect(),
            node_load: Duration::from_secs(10),
            node_pool: 1_000_000,
            dir: PathBuf::from("/dev/shm"),
            out: None,
            lodestone: workspace_root().join("target/release/lodestone"),
            rqbit: None,
        }
    }

    /// Defaults, then the environment, then `args` (without the program
    /// name). `--bench`, which cargo passes to every bench target, is ignored.
    /// `Ok(None)` means help was asked for.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut o = Options::defaults();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("LODESTONE_BENCH_ROUNDS") {
            o.rounds = number(&v, "LODESTONE_BENCH_ROUNDS")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_SIZE_MIB") {
            o.size_mib = number(&v, "LODESTONE_BENCH_SIZE_MIB")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_PIECE_KIB") {
            o.piece_kib = number(&v, "LODESTONE_BENCH_PIECE_KIB")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_SEEDERS") {
            o.seeders = seeder_counts(&v)?;
        }
        if let Some(v) = env("LODESTONE_BENCH_ENCRYPTED") {
            o.encrypted = v == "1";
        }
        if let Some(v) = env("LODESTONE_BENCH_TRANSMISSION_MIB") {
            o.transmission_mib = number(&v, "LODESTONE_BENCH_TRANSMISSION_MIB")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_UTP_MIB") {
            o.utp_mib = number(&v, "LODESTONE_BENCH_UTP_MIB")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_PEX_MIB") {
            o.pex_mib = number(&v, "LODESTONE_BENCH_PEX_MIB")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_SCENARIOS") {
            o.scenarios = scenarios(&v)?;
        }
        if let Some(v) = env("LODESTONE_BENCH_CLIENTS") {
            o.clients = clients(&v)?;
        }
        if let Some(v) = env("LODESTONE_BENCH_NODE_SECS") {
            o.node_load = seconds(&v, "LODESTONE_BENCH_NODE_SECS")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_NODE_POOL") {
            o.node_pool = number(&v, "LODESTONE_BENCH_NODE_POOL")?;
        }
        if let Some(v) = env("LODESTONE_BENCH_DIR") {
            o.dir = v.into();
        }
        if let Some(v) = env("LODESTONE_BENCH_OUT") {
            o.out = Some(v.into());
        }
        if let Some(v) = env("LODESTONE_BIN") {
            o.lodestone = v.into();
        }
        if let Some(v) = env("RQBIT_BIN") {
            o.rqbit = Some(v.into());
        }

        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--help" | "-h" => return Ok(None),
                "--quick" => {
                    o.rounds = 1;
                    o.size_mib = 128;
                    o.transmission_mib = 16;
                    o.utp_mib = 64;
                    o.pex_mib = 32;
                    o.node_load = Duration::from_secs(3);
                }
                "--rounds" => o.rounds = number(&value(arg)?, arg)?,
                "--size-mib" => o.size_mib = number(&value(arg)?, arg)?,
                "--piece-kib" => o.piece_kib = number(&value(arg)?, arg)?,
                "--encrypted" => o.encrypted = true,
                "--transmission-mib" => o.transmission_mib = number(&value(arg)?, arg)?,
                "--utp-mib" => o.utp_mib = number(&value(arg)?, arg)?,
                "--pex-mib" => o.pex_mib = number(&value(arg)?, arg)?,
                "--seeders" => o.seeders = seeder_counts(&value(arg)?)?,
                "--scenarios" => o.scenarios = scenarios(&value(arg)?)?,
                "--clients" => o.clients = clients(&value(arg)?)?,
                "--node-secs" => o.node_load = seconds(&value(arg)?, arg)?,
                "--node-pool" => o.node_pool = number(&value(arg)?, arg)?,
                "--dir" => o.dir = value(arg)?.into(),
                "--out" => o.out = Some(value(arg)?.into()),
                "--lodestone" => o.lodestone = value(arg)?.into(),
                "--rqbit" => o.rqbit = Some(value(arg)?.into()),
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if !(1..=100).contains(&o.rounds) {
            return Err(format!("rounds must be 1..=100, not {}", o.rounds));
        }
        for (what, mib) in [
            ("size", o.size_mib),
            ("transmission size", o.transmission_mib),
        ] {
            if !(1..=4096).contains(&mib) {
                return Err(format!("{what} must be 1..=4096 MiB, not {mib}"));
            }
        }
        if o.piece_kib != 0 && (o.piece_kib < 16 || !o.piece_kib.is_power_of_two()) {
            return Err(format!(
                "piece length must be 0 or a power of two >= 16 KiB, not {}",
                o.piece_kib
            ));
        }
        if o.node_pool > 4_000_000 {
            return Err("the node's pool is capped at 4000000 entries".to_owned());
        }
        if o.node_load > Duration::from_secs(300) {
            return Err("node load phases are capped at 300 s".to_owned());
        }
        Ok(Some(o))
    }
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what}: not a number: {text:?}"))
}

/// Most seeders in one swarm: each is a libtorrent session in one python
/// process, sharing the two cores with the downloader.
const MAX_SEEDERS: u8 = 64;

fn seeder_counts(text: &str) -> Result<Vec<u8>, String> {
    let counts = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match number::<u8>(s, "--seeders")? {
            n @ 1..=MAX_SEEDERS => Ok(n),
            n => Err(format!("--seeders: {n} is outside 1..={MAX_SEEDERS}")),
        })
        .collect::<Result<Vec<u8>, String>>()?;
    if counts.is_empty() {
        return Err("--seeders: no count given".to_owned());
    }
    Ok(counts)
}

fn seconds(text: &str, what: &str) -> Result<Duration, String> {
    let s: f64 = number(text, what)?;
    if !(0.1..=300.0).contains(&s) {
        return Err(format!("{what}: {s} s is outside 0.1..=300"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn list<T: Copy + Ord>(
    text: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<BTreeSet<T>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            all.iter().copied().find(|&x| name(x) == s).ok_or_else(|| {
                let known: Vec<_> = all.iter().map(|&x| name(x)).collect();
                format!("unknown {s:?}; known: {}", known.join(","))
            })
        })
        .collect()
}

fn scenarios(text: &str) -> Result<BTreeSet<Scenario>, String> {
    list(text, &Scenario::ALL, Scenario::name)
}

fn clients(text: &str) -> Result<BTreeSet<Client>, String> {
    list(text, &Client::ALL, Client::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quick_then_overrides() {
        let o = Options::parse(&args(&["--bench", "--quick", "--rounds", "3"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.rounds, o.size_mib, o.seeders.as_slice()),
            (3, 128, &[3][..])
        );
        let o = Options::parse(&args(&["--seeders", "3, 48"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.seeders, [3, 48]);
        let o = Options::parse(&args(&[
            "--clients",
            "rqbit,lodestone",
            "--scenarios",
            "node",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            o.clients.into_iter().collect::<Vec<_>>(),
            [Client::Lodestone, Client::Rqbit]
        );
        assert_eq!(
            o.scenarios.into_iter().collect::<Vec<_>>(),
            [Scenario::Node]
        );
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(Options::parse(&args(&["--rounds"])).is_err());
        assert!(Options::parse(&args(&["--rounds", "0"])).is_err());
        assert!(Options::parse(&args(&["--clients", "utorrent"])).is_err());
        assert!(Options::parse(&args(&["--piece-kib", "100"])).is_err());
        assert!(Options::parse(&args(&["--seeders", "0"])).is_err());
        assert!(Options::parse(&args(&["--seeders", ","])).is_err());
        assert!(Options::parse(&args(&["--seeders", "65"])).is_err());
        assert!(Options::parse(&args(&["--transmission-mib", "0"])).is_err());
        assert!(Options::parse(&args(&["--frobnicate"])).is_err());
        assert!(Options::parse(&args(&["--help"])).unwrap().is_none());
    }
}
