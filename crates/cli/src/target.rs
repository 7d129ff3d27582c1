//! What a command was given: a .torrent file (a path, or an http(s) URL
//! to fetch it from), a magnet link or a bare infohash. One reading for every command, so `inspect` and `download`
//! never disagree about the same argument.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::anyhow;
use indicatif::BinaryBytes;
use lodestone_bencode::Limits;
use lodestone_core::{Magnet, Metainfo};
use url::Url;

use crate::failure::{BadInputExt, Failure};

/// Deadline for fetching a .torrent file by URL, redirects included.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A torrent named on the command line.
pub enum Target {
    /// A .torrent file: the metainfo is known.
    Torrent(Metainfo),
    /// A magnet link (or bare infohash): the metainfo comes from peers.
    Magnet(Magnet),
}

impl Target {
    /// Reads a magnet link, an http(s) URL of a .torrent file, a bare
    /// infohash that names no existing file, or else a .torrent file path.
    pub async fn read(text: &str) -> Result<Target, Failure> {
        if text.starts_with("magnet:") {
            return Magnet::parse(text)
                .map(Target::Magnet)
                .bad_input(|| "bad magnet link".to_owned());
        }
        if let Some(url) = url_in(text)? {
            return fetch_torrent(&url).await.map(Target::Torrent);
        }
        match Magnet::parse(text) {
            Ok(magnet) if !Path::new(text).exists() => Ok(Target::Magnet(magnet)),
            _ => read_torrent(Path::new(text)).map(Target::Torrent),
        }
    }
}

/// The http(s) URL in `text`, if it is one; a URL of any other scheme
/// is refused by name rather than looked for as a file.
fn url_in(text: &str) -> Result<Option<Url>, Failure> {
    if !text.contains("://") {
        return Ok(None);
    }
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(url)),
        Ok(url) => Err(Failure::BadInput(anyhow!(
            "{}: URLs are supported only as http:// and https://; give a magnet link, \
             an http(s) URL of a .torrent file or a .torrent file's path",
            url.scheme()
        ))),
        Err(_) => Ok(None),
    }
}

/// Downloads and parses a .torrent file, held to the same size limit as
/// one read from disk.
async fn fetch_torrent(url: &Url) -> Result<Metainfo, Failure> {
    let limits = lodestone_http::Limits {
        max_body: Limits::METAINFO.max_input as u64,
        timeout: FETCH_TIMEOUT,
        ..lodestone_http::Limits::default()
    };
    let fetched = lodestone_http::Client::new(limits).get(url).await;
    let bytes = fetched.map_err(|e| {
        if e.is_request_fault() {
            Failure::BadInput(e.into())
        } else {
            Failure::Failed(e.into())
        }
    })?;
    parse_torrent(&bytes, url.as_str())
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
    parse_torrent(&bytes, &path.display().to_string())
}

/// Parses the bytes of a .torrent file read from `source`.
fn parse_torrent(bytes: &[u8], source: &str) -> Result<Metainfo, Failure> {
    Metainfo::from_torrent_bytes(bytes).bad_input(|| format!("torrent {source} is refused"))
}
