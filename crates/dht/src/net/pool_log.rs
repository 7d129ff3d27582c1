//! The verified pool on disk: an append-only log, compacted when it grows.
//!
//! A bootstrap node's pool may hold a million entries (26–38 MB in compact
//! form); rewriting it every few minutes would be wasteful, so every save
//! appends only what changed since the last one (`+` records for nodes that
//! entered, `-` records for nodes that left). When the log holds more than
//! twice as many records as the pool has entries (or the node's journal
//! overflowed), the save rewrites it from the live pool instead, atomically
//! through a temporary file. A torn last record (a crash mid-append) is
//! ignored on load.
//!
//! Format: the magic `LDPOOL1\n`, then records:
//! `+` family(4|6) compact-node-info (26 or 38 bytes) | `-` family id(20).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use lodestone_core::compact::{self, Family};
use lodestone_core::{NodeAddr, NodeId};

use crate::pool::{Change, Journal};

const MAGIC: &[u8] = b"LDPOOL1\n";
/// Larger files are not ours (a full log of 2 × 2 M entries is ~160 MB).
const MAX_FILE: u64 = 1 << 30;

/// The log file and how many records it holds.
#[derive(Debug)]
pub struct PoolLog {
    path: PathBuf,
    records: usize,
    /// The file ends in a torn record (a crash mid-append): the next save
    /// rewrites it, since records appended after the tear would be read
    /// out of step with their boundaries.
    torn: bool,
}

fn family_byte(family: Family) -> u8 {
    match family {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

fn write_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Added(node) => {
            out.push(b'+');
            out.push(family_byte(Family::of(&node.addr)));
            compact::write_node(node, out);
        }
        Change::Removed(id, family) => {
            out.push(b'-');
            out.push(family_byte(*family));
            out.extend_from_slice(id.as_bytes());
        }
    }
}

impl PoolLog {
    /// Opens (reads) the log at `path`; a missing file is an empty pool.
    /// Returns the log and the nodes it describes.
    pub fn load(path: &Path) -> io::Result<(PoolLog, Vec<NodeAddr>)> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(f) => {
                f.take(MAX_FILE).read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut log = PoolLog {
            path: path.to_owned(),
            records: 0,
            torn: false,
        };
        if bytes.is_empty() {
            return Ok((log, Vec::new()));
        }
        let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a lodestone pool log", path.display()),
            ));
        };
        let mut nodes: HashMap<(u8, NodeId), NodeAddr> = HashMap::new();
        while let [op, fam, body @ ..] = rest {
            let family = match fam {
                4 => Family::V4,
                6 => Family::V6,
                _ => break,
            };
            let len = match op {
                b'+' => family.node_len(),
                b'-' => 20,
                _ => break,
            };
            let Some(record) = body.get(..len) else {
                break; // torn last record
            };
            if *op == b'+' {
                if let Ok(decoded) = compact::decode_nodes(record, family)
                    && let Some(node) = decoded.first()
                {
                    nodes.insert((*fam, node.id), *node);
                }
            } else if let Some(id) = NodeId::from_slice(record) {
                nodes.remove(&(*fam, id));
            }
            log.records += 1;
            rest = &body[len..];
        }
        log.torn = !rest.is_empty();
        Ok((log, nodes.into_values().collect()))
    }

    /// Writes `journal` out: appended, or a full rewrite from `all` when the
    /// journal overflowed or the log has grown past twice the pool.
    pub fn save<I>(&mut self, journal: Journal, pool_len: usize, all: I) -> io::Result<()>
    where
        I: Iterator<Item = NodeAddr>,
    {
        let grown = self.records + journal.changes.len() > pool_len.saturating_mul(2) + 4096;
        if journal.rewrite || grown || self.torn || !self.path.exists() {
            return self.rewrite(all);
        }
        if journal.changes.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(journal.changes.len() * 40);
        for change in &journal.changes {
            write_change(&mut out, change);
        }
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        file.write_all(&out)?;
        self.records += journal.changes.len();
        Ok(())
    }

    fn rewrite(&mut self, all: impl Iterator<Item = NodeAddr>) -> io::Result<()> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        let mut records = 0;
        let mut buf = Vec::with_capacity(64);
        for node in all {
            buf.clear();
            write_change(&mut buf, &Change::Added(node));
            out.write_all(&buf)?;
            records += 1;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.records = records;
        self.torn = false;
        Ok(())
    }

    /// Records in the file.
    pub fn records(&self) -> usize {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, addr: &str) -> NodeAddr {
        NodeAddr {
            id: NodeId([id; 20]),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn appends_replays_compacts_and_survives_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("lodestone-pool-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pool.log");
        let _ = std::fs::remove_file(&path);
        let (mut log, nodes) = PoolLog::load(&path).unwrap();
        assert!(nodes.is_empty());
        let a = node(1, "1.2.3.4:5");
        let b = node(2, "[2001:db8::1]:6");
        // First save: no file yet, so a full rewrite.
        log.save(Journal::default(), 1, [a].into_iter()).unwrap();
        assert_eq!(log.records(), 1);
        let journal = Journal {
            rewrite: false,
            changes: vec![Change::Added(b), Change::Removed(a.id, Family::V4)],
        };
        log.save(journal, 1, std::iter::empty()).unwrap();
        assert_eq!(log.records(), 3);
        let (_, nodes) = PoolLog::load(&path).unwrap();
        assert_eq!(nodes, vec![b]);
        // A torn record at the end is ignored.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"+\x04abc").unwrap();
        let (mut log2, nodes) = PoolLog::load(&path).unwrap();
        assert_eq!((log2.records(), nodes), (3, vec![b]));
        // The next save does not append after the tear, where the new
        // records would be read out of step: it rewrites the log.
        let c = node(3, "5.6.7.8:9");
        let journal = Journal {
            rewrite: false,
            changes: vec![Change::Added(c)],
        };
        log2.save(journal, 2, [b, c].into_iter()).unwrap();
        let mut replayed = PoolLog::load(&path).unwrap().1;
        replayed.sort_by_key(|n| n.id);
        assert_eq!(replayed, vec![b, c]);
        // An overflowed journal rewrites from the live pool.
        let journal = Journal {
            rewrite: true,
            changes: vec![],
        };
        log.save(journal, 1, [b].into_iter()).unwrap();
        assert_eq!(log.records(), 1);
        assert_eq!(PoolLog::load(&path).unwrap().1, vec![b]);
        std::fs::write(&path, b"not a log").unwrap();
        assert!(PoolLog::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
