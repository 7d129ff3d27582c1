//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  lodestone inspect ubuntu.torrent
  lodestone inspect 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=example'
  lodestone inspect --json ubuntu.torrent";

/// lodestone: a trackerless BitTorrent client.
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
    /// Show what a .torrent file or magnet link describes: infohash, name, sizes, files.
    Inspect(InspectArgs),
}

/// Arguments of `lodestone inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .torrent file, a magnet link, or a bare 40-hex infohash.
    #[arg(value_name = "FILE.torrent | MAGNET")]
    pub target: String,

    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

impl InspectArgs {
    /// The target as a path, when it is not a magnet link or bare infohash.
    pub fn as_file(&self) -> Option<PathBuf> {
        let looks_like_magnet = self.target.starts_with("magnet:")
            || matches!(self.target.trim().len(), 32 | 40) && !self.target.contains(['/', '.']);
        (!looks_like_magnet).then(|| PathBuf::from(&self.target))
    }
}
