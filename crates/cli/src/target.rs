//! What a command was given: a .torrent file, a magnet link or a bare
//! infohash. One reading for every command, so `inspect` and `download`
//! never disagree about the same argument.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::anyhow;
use indicatif::BinaryBytes;
use lodestone_bencode::Limits;
use lodestone_core::{InfoHash, Magnet, Metainfo};

use crate::failure::{BadInputExt, Failure};

/// A torrent named on the command line.
pub enum Target {
    /// A .torrent file: the metainfo is known.
    Torrent(Metainfo),
    /// A magnet link (or bare infohash): the metainfo comes from peers.
    Magnet(Magnet),
}

impl Target {
    /// Reads a magnet link, a bare infohash that names no existing file, or
    /// else a .torrent file path.
    pub fn read(text: &str) -> Result<Target, Failure> {
        if text.starts_with("magnet:") {
            return Magnet::parse(text)
                .map(Target::Magnet)
                .bad_input(|| "bad magnet link".to_owned());
        }
        match Magnet::parse(text) {
            Ok(magnet) if !Path::new(text).exists() => Ok(Target::Magnet(magnet)),
            _ => read_torrent(Path::new(text)).map(Target::Torrent),
        }
    }

    /// The swarm it names.
    pub fn info_hash(&self) -> InfoHash {
        match self {
            Target::Torrent(metainfo) => metainfo.info_hash,
            Target::Magnet(magnet) => magnet.info_hash,
        }
    }
}

/// Reads and parses a .torrent file, refusing files larger than any sane
/// torrent before reading them.
pub fn read_torrent(path: &Path) -> Result<Metainfo, Failure> {
    let context = || format!("cannot read torrent {}", path.display());
    let file = File::open(path).bad_input(context)?;
    let limit = Limits::METAINFO.max_input as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .bad_input(context)?;
    if bytes.len() as u64 > limit {
        return Err(Failure::BadInput(anyhow!(
            "torrent {} is larger than {}",
            path.display(),
            BinaryBytes(limit)
        )));
    }
    Metainfo::from_torrent_bytes(&bytes)
        .bad_input(|| format!("torrent {} is refused", path.display()))
}
