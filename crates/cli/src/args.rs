//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  lodestone download 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a' -o ~/Downloads
  lodestone download ubuntu.torrent --select '*.iso' --no-seed
  lodestone download first.torrent 'magnet:?xt=urn:btih:…' -o ~/Downloads
  lodestone metadata 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a' -o example.torrent
  lodestone dht get-peers c12fe1c06bba254a9dc9f519b335aa7c1367a88a
  lodestone inspect ubuntu.torrent
  lodestone inspect 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=example'
  lodestone inspect --json ubuntu.torrent";

/// lodestone: a BitTorrent client that needs no tracker (and uses one when named).
#[derive(Debug, Parser)]
#[command(name = "lodestone", version, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a .torrent file or magnet link describes: infohash, name, sizes, files,
    /// trackers, magnet link.
    Inspect(InspectArgs),
    /// Download a magnet link or .torrent file, verify every piece, then seed.
    Download(DownloadArgs),
    /// Fetch a magnet link's metadata from peers and write it as a .torrent file.
    Metadata(MetadataArgs),
    /// Use the Mainline DHT directly: find or announce peers of an infohash.
    #[command(subcommand)]
    Dht(DhtCommand),
    /// Run a long-lived DHT bootstrap node that hands newcomers good nodes.
    Node(NodeArgs),
}

/// `lodestone dht ...`
#[derive(Debug, Subcommand)]
pub enum DhtCommand {
    /// Print the peers of a swarm as the DHT finds them, one `ip:port` per line.
    ///
    /// Exits 0 when at least one peer was found, 1 when none was.
    GetPeers {
        /// The swarm: 40 hex or 32 base32 characters, or a magnet link.
        #[arg(value_name = "INFOHASH")]
        info_hash: String,
        /// Stop after this many seconds even if the lookup is still running.
        #[arg(long, value_name = "SECS", default_value_t = 30.0)]
        timeout: f64,
        #[command(flatten)]
        dht: DhtArgs,
    },
    /// Tell the DHT that a peer of the swarm listens on PORT at our address.
    Announce {
        /// The swarm: 40 hex or 32 base32 characters, or a magnet link.
        #[arg(value_name = "INFOHASH")]
        info_hash: String,
        /// The TCP port peers should connect to.
        #[arg(long)]
        port: u16,
        #[command(flatten)]
        dht: DhtArgs,
    },
}

/// `--transport`: which transports to speak to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportArg {
    /// TCP only.
    Tcp,
    /// uTP only.
    Utp,
    /// Both.
    Both,
}

impl From<TransportArg> for lodestone_session::Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Tcp => lodestone_session::Transport::Tcp,
            TransportArg::Utp => lodestone_session::Transport::Utp,
            TransportArg::Both => lodestone_session::Transport::Both,
        }
    }
}

/// Arguments of `lodestone download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Magnet links, bare infohashes or .torrent files (paths or http(s)
    /// URLs); several run at once in one session (one listen port, one
    /// DHT, shared rate caps).
    #[arg(value_name = "MAGNET | FILE.torrent | URL", required = true)]
    pub targets: Vec<String>,
    /// Directory the files are written under (the torrent's name is a
    /// directory or file inside it). Running again resumes.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Only these files: indices (`0,2,4-6`, see `lodestone inspect`) or glob
    /// patterns on the paths inspect shows (`*.mkv`); repeatable. Overrides
    /// the magnet's so=.
    #[arg(long, value_name = "INDICES | GLOB")]
    pub select: Vec<String>,
    /// TCP port for incoming peers; the next free one is used if taken.
    /// uTP listens on the same number over UDP, shared with the DHT.
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// IP address to accept peers on (repeatable, at most one IPv4 and one
    /// IPv6). Without it: every address of both families (0.0.0.0 and
    /// [::]); naming only one family leaves the other off.
    #[arg(long = "bind", value_name = "IP")]
    pub bind_ips: Vec<std::net::IpAddr>,
    /// Transports to peers: tcp, utp (BEP 29, LEDBAT: yields to other
    /// traffic), or both (dial both at once, the first to connect carries
    /// the handshakes; accept both).
    #[arg(long, value_enum, default_value_t = TransportArg::Both)]
    pub transport: TransportArg,
    /// Most peer connections and connection attempts of all torrents
    /// together (each torrent has at most 50): past it none dials or
    /// accepts more, and a torrent kept waiting says so in its status.
    /// One left with no connection at all asks, after 5 s, the torrent
    /// with the most downloading or seeding connections to close one
    /// (never its last), then less and less often until a connection of
    /// its own ends after being of use, or its metadata arrives.
    #[arg(
        long,
        value_name = "N",
        default_value_t = lodestone_session::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Cap on the download rate of all torrents together, bytes per second
    /// (500K, 10M, 1.5G).
    #[arg(long, value_name = "RATE")]
    pub max_download_rate: Option<String>,
    /// Cap on the upload rate of all torrents together, bytes per second
    /// (500K, 10M, 1.5G).
    #[arg(long, value_name = "RATE")]
    pub max_upload_rate: Option<String>,
    /// After the download, seed until uploaded / downloaded reaches this
    /// (a torrent already on disk counts its size as downloaded).
    #[arg(long, value_name = "RATIO", default_value_t = 1.0)]
    pub seed_ratio: f64,
    /// After the download, seed at most this many seconds.
    #[arg(long, value_name = "SECS")]
    pub seed_time: Option<f64>,
    /// Exit as soon as every file is verified, without seeding.
    #[arg(long)]
    pub no_seed: bool,
    /// Give up fetching a magnet link's metadata after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub metadata_timeout: f64,
    /// Print one JSON event per line on stdout instead of a progress display.
    #[arg(long)]
    pub json: bool,
    /// Do not use the DHT: peers come from the trackers, the magnet
    /// link's x.pe and --peer, and those they tell of by PEX.
    #[arg(long)]
    pub no_dht: bool,
    /// Do not announce to trackers (the magnet's tr=, the .torrent's
    /// announce list) nor take peers from them.
    #[arg(long)]
    pub no_trackers: bool,
    /// A peer to connect to (repeatable), like a magnet's x.pe; the one way
    /// to name peers for a .torrent file.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<std::net::SocketAddr>,
    /// Give up when nothing is verified for this many seconds, saying why.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub stall_timeout: f64,
    /// Hash every piece already on disk again instead of trusting the
    /// resume record (it still runs alongside the download).
    #[arg(long)]
    pub recheck: bool,
    /// Start even when the output directory's file system has less free
    /// space than the selected files still need (by default such a
    /// download is refused before any file is made).
    #[arg(long)]
    pub no_space_check: bool,
    #[command(flatten)]
    pub encryption: EncryptionArgs,
    #[command(flatten)]
    pub dht: DhtArgs,
}

/// Peer connection encryption; shared by every command that connects to
/// peers.
#[derive(Debug, Args, Clone)]
pub struct EncryptionArgs {
    /// Peer connection encryption (MSE/PE), both ways: `prefer` encrypts
    /// when the peer can (outgoing: encrypted first, plaintext fallback);
    /// `require` never sends a plaintext BitTorrent byte and refuses
    /// plaintext peers; `off` speaks plaintext only.
    #[arg(
        long = "encryption",
        value_name = "prefer|require|off",
        default_value = "prefer"
    )]
    pub policy: lodestone_session::Encryption,
}

/// Arguments of `lodestone metadata`.
#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// The magnet link (or bare infohash).
    #[arg(value_name = "MAGNET")]
    pub magnet: String,
    /// Where to write the .torrent file [default: NAME.torrent].
    #[arg(short, long, value_name = "FILE.torrent")]
    pub output: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,
    /// Do not use the DHT: peers come from the magnet link's trackers
    /// (tr=) and x.pe, and those they tell of by PEX.
    #[arg(long)]
    pub no_dht: bool,
    /// Do not announce to the magnet link's trackers (tr=) nor take peers
    /// from them.
    #[arg(long)]
    pub no_trackers: bool,
    #[command(flatten)]
    pub encryption: EncryptionArgs,
    #[command(flatten)]
    pub dht: DhtArgs,
}

/// How to join the DHT; shared by every command that uses it.
#[derive(Debug, Args, Clone)]
pub struct DhtArgs {
    /// A node to join the DHT through (repeatable; every A/AAAA record is tried).
    /// Replaces the default public routers.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// UDP address to listen on (repeatable, one per address family)
    /// [default: 0.0.0.0:0 and [::]:0, dual-stack (BEP 32); IPv4 only on a
    /// host without IPv6].
    #[arg(long = "dht-bind", value_name = "ADDR:PORT")]
    pub bind: Vec<std::net::SocketAddr>,
    /// File keeping the node id and known nodes between runs
    /// [default: dht.state in the state directory].
    #[arg(long = "dht-state", value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Directory keeping state between runs: DHT node, fetched metadata,
    /// resume records [default: $XDG_STATE_HOME/lodestone].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Arguments of `lodestone inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .torrent file (a path or an http(s) URL), a magnet link, or a bare
    /// 40-hex infohash.
    #[arg(value_name = "FILE.torrent | URL | MAGNET")]
    pub target: String,

    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `lodestone node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// UDP address to serve on (repeatable, one per address family)
    /// [default: 0.0.0.0:6881 and [::]:6881, IPv4 only if IPv6 is unavailable].
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Vec<std::net::SocketAddr>,
    /// Directory keeping the node id, routing table and verified pool across restarts.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// A node to join the DHT through (repeatable); replaces the public routers.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// Join through nobody: the first node of a private DHT.
    #[arg(long, conflicts_with = "bootstrap")]
    pub no_bootstrap: bool,
    /// Seconds between stats lines on stderr (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub stats_interval: f64,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Most verified nodes kept per address family.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub pool_size: usize,
    /// Seconds to wait before verifying a node that only queried us (defeats NAT pinholes).
    #[arg(long, value_name = "SECS", default_value_t = 90.0)]
    pub verify_delay: f64,
    /// Sustained packets per second accepted from one IP (0: no per-IP limit).
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    pub per_ip_rate: f64,
    /// Packets one IP may send in a burst before it is banned.
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub per_ip_burst: f64,
    /// Seconds an IP over its budget is ignored.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub ban: f64,
    /// Apply the per-IP limit to loopback sources too (exempt by default).
    #[arg(long)]
    pub rate_limit_loopback: bool,
    /// Packets per second accepted from everyone together (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = 1_000_000.0)]
    pub global_rate: f64,
    /// Bytes per second of answers sent at most (0: unlimited).
    #[arg(long, value_name = "BYTES", default_value_t = 200e6)]
    pub reply_bytes_rate: f64,
    /// Seconds between incremental saves of the state directory.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub save_interval: f64,
    /// Socket send/receive buffer size to ask the kernel for.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub socket_buffer: usize,
    /// Receive shards, each with its own socket per address (SO_REUSEPORT) and thread,
    /// all serving one pool [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,
}
