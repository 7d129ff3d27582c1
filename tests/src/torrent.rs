//! Just enough of a .torrent for the harness, and a probe that a peer seeds it.
//!
//! The real metainfo parser lives in lodestone-core; the harness reads only
//! the infohash and piece count (through the bounded scanner) so that it does
//! not depend on the code under test beyond bencode.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use lodestone_bencode::{Limits, parse};
use sha1::{Digest, Sha1};

use crate::{HarnessError, Result};

/// The facts about a torrent the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentFacts {
    /// SHA-1 of the `info` dictionary as stored in the file.
    pub info_hash: [u8; 20],
    /// Number of pieces (`pieces` length / 20).
    pub piece_count: u32,
    /// The `name` field.
    pub name: String,
}

impl TorrentFacts {
    /// Reads a .torrent file.
    pub fn read(path: &Path) -> Result<TorrentFacts> {
        let bytes =
            std::fs::read(path).map_err(HarnessError::io(format!("reading {}", path.display())))?;
        TorrentFacts::from_bytes(&bytes).map_err(|detail| HarnessError::Protocol {
            what: path.display().to_string(),
            detail,
        })
    }

    /// Parses torrent bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TorrentFacts, String> {
        let doc = parse(bytes, &Limits::METAINFO).map_err(|e| e.to_string())?;
        let root = doc.root();
        let info = root
            .as_dict()
            .and_then(|d| d.get(b"info"))
            .ok_or("no info dictionary")?;
        let info_dict = info.as_dict().ok_or("info is not a dictionary")?;
        let pieces = info_dict.get_bytes(b"pieces").ok_or("no pieces")?;
        let name = info_dict
            .get_bytes(b"name")
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .ok_or("no name")?;
        Ok(TorrentFacts {
            info_hash: Sha1::digest(info.raw()).into(),
            piece_count: u32::try_from(pieces.len() / 20).map_err(|e| e.to_string())?,
            name,
        })
    }

    /// The infohash as lowercase hex.
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }
}

/// Waits until `peer` accepts a BitTorrent handshake for `info_hash` and
/// announces every one of `piece_count` pieces (bitfield, have, or have_all).
///
/// This is the readiness signal for seeders: a listening port alone can
/// precede the client's hash check. Connection attempts are retried every
/// 100 ms until `timeout`.
pub fn wait_seeding(
    peer: SocketAddr,
    info_hash: [u8; 20],
    piece_count: u32,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let Err(last) = probe_once(peer, info_hash, piece_count, deadline) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("{peer} seeding all {piece_count} pieces (last: {last})"),
                waited: timeout,
            });
        }
        // Polling a remote process's state: the retry interval is not synchronisation.
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MSG_HAVE: u8 = 4;
const MSG_BITFIELD: u8 = 5;
const MSG_HAVE_ALL: u8 = 14;
/// A bitfield bigger than this is not for any torrent the tests make.
const MAX_MESSAGE: usize = 1 << 20;

fn probe_once(
    peer: SocketAddr,
    info_hash: [u8; 20],
    piece_count: u32,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let mut stream = TcpStream::connect_timeout(&peer, left.min(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(left.min(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    let mut handshake = Vec::with_capacity(68);
    handshake.push(19);
    handshake.extend_from_slice(b"BitTorrent protocol");
    // Reserved: fast extension (bit 0x04 of byte 7) so have_all is allowed.
    handshake.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x04]);
    handshake.extend_from_slice(&info_hash);
    handshake.extend_from_slice(b"-LS0000-harnessprobe");
    stream.write_all(&handshake).map_err(|e| e.to_string())?;
    let mut reply = [0u8; 68];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("handshake: {e}"))?;
    if reply[..20] != handshake[..20] || reply[28..48] != info_hash {
        return Err("unexpected handshake reply".to_owned());
    }
    let mut have = vec![false; piece_count as usize];
    let mut missing = piece_count as usize;
    while missing > 0 {
        let mut len = [0u8; 4];
        // A partial bitfield may be completed by have messages (lazy
        // bitfields, or a client still checking its files).
        stream
            .read_exact(&mut len)
            .map_err(|e| format!("{missing} pieces not announced: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(format!("message of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("reading messages: {e}"))?;
        match body.split_first() {
            Some((&MSG_HAVE_ALL, _)) => missing = 0,
            Some((&MSG_BITFIELD, bits)) => {
                for (index, slot) in have.iter_mut().enumerate() {
                    let set = bits
                        .get(index / 8)
                        .is_some_and(|b| b & (0x80 >> (index % 8)) != 0);
                    if set && !*slot {
                        *slot = true;
                        missing -= 1;
                    }
                }
            }
            Some((&MSG_HAVE, index)) => {
                let index = index
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| "short have message")?;
                if let Some(slot) = have.get_mut(index as usize).filter(|s| !**s) {
                    *slot = true;
                    missing -= 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
