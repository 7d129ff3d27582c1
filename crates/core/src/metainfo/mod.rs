//! Torrent metainfo (BEP 3): `.torrent` files and the info dictionary that
//! ut_metadata (BEP 9) delivers.
//!
//! Parsing never trusts the input: bytes are scanned by the bounded bencode
//! scanner ([`lodestone_bencode::Limits::METAINFO`]), then walked without
//! recursion into a validated [`Info`]. The infohash is the SHA-1 of the
//! `info` dictionary's bytes exactly as received, and those bytes are kept so
//! a written `.torrent` (and metadata served to peers) hashes the same.
//!
//! Only v1 metadata is used: a hybrid torrent is read through its v1 part
//! (`pieces`, `files`); a v2-only torrent is refused.

mod error;
mod info;
mod parse;
mod paths;
mod write;

use std::collections::HashSet;
use std::fmt;

use lodestone_bencode::{Dict, Limits, Value};
use sha1::{Digest, Sha1};

use crate::id::InfoHash;
use crate::magnet::Magnet;

pub use error::{MetainfoError, PathProblem};
pub use info::{FileEntry, FileSlice, FilesInRange, Info};
pub use paths::{disk_component, invisible};

/// Largest piece length accepted: 256 MiB. The BEP sets no bound, but real
/// torrents stay at or below 16 MiB and a piece is held in memory while it is
/// verified, so an absurd length would be a memory attack. Any length from 1
/// byte up is accepted; a power of two is not required.
pub const MAX_PIECE_LENGTH: u32 = 256 << 20;

/// A validated torrent: the info dictionary, its hash and raw bytes, and the
/// optional fields of a `.torrent` file around it.
#[derive(Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of [`Metainfo::raw_info`].
    pub info_hash: InfoHash,
    /// The validated info dictionary.
    pub info: Info,
    /// `announce`: the main tracker URL.
    pub announce: Option<String>,
    /// `announce-list` (BEP 12): tiers of tracker URLs; empty tiers dropped.
    pub announce_list: Vec<Vec<String>>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`: the tool that made the torrent.
    pub created_by: Option<String>,
    /// `creation date`, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    raw_info: Vec<u8>,
}

impl Metainfo {
    /// Parses a `.torrent` file.
    pub fn from_torrent_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let doc = lodestone_bencode::parse(bytes, &Limits::METAINFO)?;
        let root = doc.root().as_dict().ok_or(MetainfoError::NotADict {
            what: "torrent file",
        })?;
        let info = root.get(b"info").ok_or(MetainfoError::Missing {
            key: "info",
            within: "torrent file".to_owned(),
        })?;
        let (info_hash, parsed) = validate(info)?;
        let mut metainfo = Metainfo::bare(info_hash, parsed, info.raw().to_vec());
        metainfo.announce = root.get_bytes(b"announce").map(lossy);
        metainfo.announce_list = announce_list(root);
        metainfo.comment = preferred_text(root, b"comment", b"comment.utf-8");
        metainfo.created_by = preferred_text(root, b"created by", b"created by.utf-8");
        metainfo.creation_date = root.get_int(b"creation date");
        Ok(metainfo)
    }

    /// Builds a torrent from a bare info dictionary, as assembled from
    /// ut_metadata pieces. The infohash is the SHA-1 of `raw_info`; the caller
    /// compares it with the one it asked for.
    pub fn from_info_bytes(raw_info: Vec<u8>) -> Result<Metainfo, MetainfoError> {
        let doc = lodestone_bencode::parse(&raw_info, &Limits::METAINFO)?;
        let (info_hash, info) = validate(doc.root())?;
        drop(doc);
        Ok(Metainfo::bare(info_hash, info, raw_info))
    }

    /// A torrent with no optional fields.
    fn bare(info_hash: InfoHash, info: Info, raw_info: Vec<u8>) -> Metainfo {
        Metainfo {
            info_hash,
            info,
            announce: None,
            announce_list: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
            raw_info,
        }
    }

    /// The info dictionary exactly as received: what ut_metadata serves and
    /// what the infohash is computed over.
    pub fn raw_info(&self) -> &[u8] {
        &self.raw_info
    }

    /// A magnet link for this torrent: its infohash, name and trackers.
    pub fn magnet(&self) -> Magnet {
        let mut magnet = Magnet::new(self.info_hash);
        magnet.display_name = Some(self.info.name.clone());
        let tiers = self.announce_list.iter().flatten();
        // A set, not a search of the list so far: a torrent may list
        // hundreds of thousands of trackers.
        let mut seen = HashSet::new();
        for tracker in self.announce.iter().chain(tiers) {
            if seen.insert(tracker.as_str()) {
                magnet.trackers.push(tracker.clone());
            }
        }
        magnet
    }
}

impl fmt::Debug for Metainfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metainfo")
            .field("info_hash", &self.info_hash)
            .field("info", &self.info)
            .field("announce", &self.announce)
            .field("announce_list", &self.announce_list)
            .field("comment", &self.comment)
            .field("created_by", &self.created_by)
            .field("creation_date", &self.creation_date)
            .field("raw_info", &format_args!("[{} bytes]", self.raw_info.len()))
            .finish()
    }
}

/// Hashes the exact bytes of `info` and validates its contents.
fn validate(info: Value<'_>) -> Result<(InfoHash, Info), MetainfoError> {
    let dict = info
        .as_dict()
        .ok_or(MetainfoError::NotADict { what: "info" })?;
    let parsed = parse::parse_info(dict)?;
    Ok((InfoHash::new(Sha1::digest(info.raw()).into()), parsed))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Optional text: the `.utf-8` twin if valid, else the plain key, lossily.
fn preferred_text(dict: Dict<'_>, key: &[u8], utf8_key: &[u8]) -> Option<String> {
    dict.get(utf8_key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| dict.get_bytes(key).map(lossy))
}

/// `announce-list` is advisory: malformed tiers and entries are skipped
/// rather than failing the whole torrent.
fn announce_list(root: Dict<'_>) -> Vec<Vec<String>> {
    let Some(tiers) = root.get_list(b"announce-list") else {
        return Vec::new();
    };
    tiers
        .filter_map(|tier| tier.as_list())
        .map(|tier| {
            tier.filter_map(|url| url.as_bytes().map(lossy))
                .collect::<Vec<_>>()
        })
        .filter(|tier| !tier.is_empty())
        .collect()
}
