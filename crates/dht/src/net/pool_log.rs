//! The verified pool on disk: an append-only log, compacted when it grows.
//!
//! A bootstrap node's pool may hold a million entries (26–38 MB in compact
//! form); rewriting it every few minutes would be wasteful, so every save
//! appends only what changed since the last one (`+` records for nodes that
//! entered, `-` records for nodes that left). When the log holds more than
//! twice as many records as the pool has entries (or the node's journal
//! overflowed), the save rewrites it from the live pool instead, atomically
//! through a temporary file. A torn last record (a crash mid-append) is
//! ignored on load; so is everything from a damaged record on, with a
//! warning, and the next save rewrites the log from the live pool.
//!
//! Format: the magic `LDPOOL1\n`, then records:
//! `+` family(4|6) compact-node-info (26 or 38 bytes) | `-` family id(20).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use lodestone_core::compact::{self, Family};
use lodestone_core::{NodeAddr, NodeId, state_file};

use crate::pool::{Change, Journal};

const MAGIC: &[u8; 8] = b"LDPOOL1\n";
/// Longest record: `+`, the family, and an IPv6 compact node info.
const MAX_RECORD: usize = 2 + 38;

/// Larger files are not ours. A save keeps the log within twice the pool's
/// entries (both families) and 4,096 more records, so a log for `capacity`
/// entries per family stays under this; it is never less than 1 GiB, so a
/// log written before the operator lowered the capacity still loads (the
/// replay keeps only what the capacity allows).
fn max_file(capacity: usize) -> u64 {
    let records = (capacity as u64).saturating_mul(4).saturating_add(4096);
    records
        .saturating_mul(MAX_RECORD as u64)
        .saturating_add(MAGIC.len() as u64)
        .max(1 << 30)
}

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

/// The live entries of a log as it is replayed, at most `capacity` of each
/// family: the pool would take no more, and a damaged or hostile log of the
/// largest size allowed would otherwise describe tens of millions.
struct LiveEntries {
    nodes: HashMap<(u8, NodeId), NodeAddr>,
    per_family: [usize; 2],
    capacity: usize,
}

impl LiveEntries {
    fn apply(&mut self, op: u8, family: Family, body: &[u8]) {
        let (fam, slot) = (family_byte(family), usize::from(family == Family::V6));
        if op == b'+' {
            let Some(node) = compact::decode_node(body) else {
                return;
            };
            if let Some(known) = self.nodes.get_mut(&(fam, node.id)) {
                *known = node;
            } else if self.per_family[slot] < self.capacity {
                self.nodes.insert((fam, node.id), node);
                self.per_family[slot] += 1;
            }
        } else if let Some(id) = NodeId::from_slice(body)
            && self.nodes.remove(&(fam, id)).is_some()
        {
            self.per_family[slot] -= 1;
        }
    }
}

/// The family and body length of a record starting `op family`, if those
/// two bytes are a record's.
fn record_shape(op: u8, family: u8) -> Option<(Family, usize)> {
    let family = match family {
        4 => Family::V4,
        6 => Family::V6,
        _ => return None,
    };
    match op {
        b'+' => Some((family, family.node_len())),
        b'-' => Some((family, 20)),
        _ => None,
    }
}

/// Reads until `buf` is full or the input ends; how many bytes it got
/// (`read_exact` would not tell a torn record's length from an error).
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What the bytes of a pool log describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The live entries at the end, at most the capacity per family.
    pub nodes: Vec<NodeAddr>,
    /// Whole records read.
    pub records: usize,
    /// The log ends in part of a record (a crash mid-append).
    pub torn: bool,
    /// The offset of a record that is not one (a bad op or family byte);
    /// nothing from there on was read.
    pub damaged_at: Option<usize>,
}

/// Replays a pool log read from `reader` (an empty input is an empty log),
/// keeping at most `capacity` live entries per family. Fails only if the
/// input does not begin as a pool log, or reading fails.
pub fn replay(mut reader: impl Read, capacity: usize) -> io::Result<Replayed> {
    let mut replayed = Replayed::default();
    let mut magic = [0; MAGIC.len()];
    match fill(&mut reader, &mut magic)? {
        0 => return Ok(replayed),
        n if n == MAGIC.len() && magic == *MAGIC => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a lodestone pool log",
            ));
        }
    }
    let mut live = LiveEntries {
        nodes: HashMap::new(),
        per_family: [0; 2],
        capacity,
    };
    let mut offset = MAGIC.len();
    let mut record = [0; MAX_RECORD];
    loop {
        let head = fill(&mut reader, &mut record[..2])?;
        if head == 0 {
            break;
        }
        if head < 2 {
            replayed.torn = true;
            break;
        }
        // A crash mid-append leaves a torn record only at the very end; a
        // bad byte before that is damage, and the rest of the input cannot
        // be told apart into records any more.
        let Some((family, len)) = record_shape(record[0], record[1]) else {
            replayed.damaged_at = Some(offset);
            break;
        };
        if fill(&mut reader, &mut record[2..2 + len])? < len {
            replayed.torn = true;
            break;
        }
        live.apply(record[0], family, &record[2..2 + len]);
        replayed.records += 1;
        offset += 2 + len;
    }
    replayed.nodes = live.nodes.into_values().collect();
    Ok(replayed)
}

impl PoolLog {
    /// Opens (reads) the log at `path`; a missing file is an empty pool.
    /// Returns the log and the nodes it describes, at most `capacity` per
    /// family. The file is streamed, so loading holds the live entries and
    /// not the log's bytes too.
    pub fn load(path: &Path, capacity: usize) -> io::Result<(PoolLog, Vec<NodeAddr>)> {
        let replayed = match state_file::open(path, max_file(capacity))? {
            Some(file) => replay(BufReader::new(file), capacity)?,
            None => Replayed::default(),
        };
        if let Some(offset) = replayed.damaged_at {
            tracing::warn!(
                "pool log {} damaged at byte {offset}: kept the {} records before it",
                path.display(),
                replayed.records
            );
        }
        let log = PoolLog {
            path: path.to_owned(),
            records: replayed.records,
            torn: replayed.torn || replayed.damaged_at.is_some(),
        };
        Ok((log, replayed.nodes))
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
        let path = scratch("replay");
        let (mut log, nodes) = PoolLog::load(&path, 10).unwrap();
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
        let (_, nodes) = PoolLog::load(&path, 10).unwrap();
        assert_eq!(nodes, vec![b]);
        // A torn record at the end is ignored.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"+\x04abc").unwrap();
        let (mut log2, nodes) = PoolLog::load(&path, 10).unwrap();
        assert_eq!((log2.records(), nodes), (3, vec![b]));
        // The next save does not append after the tear, where the new
        // records would be read out of step: it rewrites the log.
        let c = node(3, "5.6.7.8:9");
        assert_eq!(add_then_replay(&mut log2, &path, b, c), vec![b, c]);
        // An overflowed journal rewrites from the live pool.
        let journal = Journal {
            rewrite: true,
            changes: vec![],
        };
        log.save(journal, 1, [b].into_iter()).unwrap();
        assert_eq!(log.records(), 1);
        assert_eq!(PoolLog::load(&path, 10).unwrap().1, vec![b]);
        std::fs::write(&path, b"not a log").unwrap();
        assert!(PoolLog::load(&path, 10).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    /// A fresh path of a test's own (tests run at once).
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lodestone-pool-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{test}.log"));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Saves a journal adding `added` to a pool of `kept` and `added`, and
    /// returns what loading the log then gives, in id order.
    fn add_then_replay(
        log: &mut PoolLog,
        path: &Path,
        kept: NodeAddr,
        added: NodeAddr,
    ) -> Vec<NodeAddr> {
        let journal = Journal {
            rewrite: false,
            changes: vec![Change::Added(added)],
        };
        log.save(journal, 2, [kept, added].into_iter()).unwrap();
        let mut replayed = PoolLog::load(path, 10).unwrap().1;
        replayed.sort_by_key(|n| n.id);
        replayed
    }

    fn log_of(changes: &[Change]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for change in changes {
            write_change(&mut bytes, change);
        }
        bytes
    }

    #[test]
    fn loading_keeps_at_most_capacity_live_entries_per_family() {
        let path = scratch("capped");
        let v4: Vec<NodeAddr> = (1..=5).map(|i| node(i, &format!("1.2.3.{i}:5"))).collect();
        let v6 = node(9, "[2001:db8::1]:6");
        let mut changes: Vec<Change> = v4.iter().copied().map(Change::Added).collect();
        changes.push(Change::Added(v6));
        // A removal makes room again, and a known node's new address is
        // taken even when the family is full.
        changes.push(Change::Removed(v4[0].id, Family::V4));
        let moved = NodeAddr {
            addr: "9.9.9.9:9".parse().unwrap(),
            ..v4[1]
        };
        changes.extend([Change::Added(v4[4]), Change::Added(moved)]);
        std::fs::write(&path, log_of(&changes)).unwrap();
        let (log, mut nodes) = PoolLog::load(&path, 2).unwrap();
        nodes.sort_by_key(|n| n.id);
        assert_eq!(nodes, vec![moved, v4[4], v6]);
        assert_eq!(log.records(), changes.len());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_damaged_record_ends_the_replay_and_the_next_save_rewrites() {
        let path = scratch("damaged");
        let (a, b) = (node(1, "1.2.3.4:5"), node(2, "5.6.7.8:9"));
        let mut bytes = log_of(&[Change::Added(a)]);
        let damaged_at = bytes.len();
        bytes.extend(log_of(&[Change::Added(b)])[MAGIC.len()..].iter());
        bytes[damaged_at] = b'?';
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, nodes) = PoolLog::load(&path, 10).unwrap();
        assert_eq!((log.records(), nodes), (1, vec![a]));
        let c = node(3, "9.9.9.9:9");
        assert_eq!(add_then_replay(&mut log, &path, a, c), vec![a, c]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_larger_than_any_log_is_refused_unread() {
        let path = scratch("huge");
        // Sparse: no disk, and far more than loading could afford to read.
        File::create(&path)
            .unwrap()
            .set_len(max_file(10) + 1)
            .unwrap();
        let err = PoolLog::load(&path, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_file(&path).unwrap();
    }
}
