//! The small file that carries a node across restarts: its id and its good
//! contacts, as a bencoded dictionary `{id, nodes, nodes6}` in the compact
//! encodings of BEP 5 and BEP 32.

use std::io;
use std::path::Path;

use lodestone_bencode::{Limits, Writer, parse};
use lodestone_core::compact::{self, Family};
use lodestone_core::state_file;
use lodestone_core::{NodeAddr, NodeId};

/// Most contacts of one family taken from a state file. A table of the
/// default 8 per bucket holds at most 1,280 and, in a network of `n` nodes,
/// about `8 · log2(n)`; the input limit alone would let a damaged file name
/// 40,000, each of which bootstrapping would compare with all the others.
const MAX_NODES_PER_FAMILY: usize = 2048;

/// What is remembered between runs. Loading keeps only contacts a datagram
/// could reach, at most 2,048 of each family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedState {
    /// Our node id.
    pub id: Option<NodeId>,
    /// Contacts that were good at shutdown.
    pub nodes: Vec<NodeAddr>,
}

/// A state file is small; anything bigger is not ours.
const LIMITS: Limits = Limits {
    max_depth: 2,
    max_input: 1 << 20,
    max_items: 16,
    max_string: 1 << 20,
};

impl SavedState {
    /// Encodes the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let list = |family| {
            let mut bytes = Vec::new();
            for node in self.nodes.iter().filter(|n| Family::of(&n.addr) == family) {
                compact::write_node(node, &mut bytes);
            }
            bytes
        };
        let (v4, v6) = (list(Family::V4), list(Family::V6));
        Writer::new(&mut out).dict(|d| {
            if let Some(id) = &self.id {
                d.bytes(b"id", id.as_bytes());
            }
            d.bytes(b"nodes", &v4);
            d.bytes(b"nodes6", &v6);
        });
        out
    }

    /// Decodes a state file; a damaged file is an error the caller may ignore.
    pub fn decode(bytes: &[u8]) -> io::Result<SavedState> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let doc = parse(bytes, &LIMITS).map_err(|e| bad(&e.to_string()))?;
        let dict = doc
            .root()
            .as_dict()
            .ok_or_else(|| bad("not a dictionary"))?;
        let id = dict.get_bytes(b"id").and_then(NodeId::from_slice);
        let mut nodes = Vec::new();
        for (key, family) in [(&b"nodes"[..], Family::V4), (&b"nodes6"[..], Family::V6)] {
            if let Some(bytes) = dict.get_bytes(key) {
                let decoded =
                    compact::decode_nodes(bytes, family).map_err(|e| bad(&e.to_string()))?;
                let usable = decoded
                    .into_iter()
                    .filter(|n| compact::is_contactable(&n.addr));
                nodes.extend(usable.take(MAX_NODES_PER_FAMILY));
            }
        }
        Ok(SavedState { id, nodes })
    }

    /// Reads `path`; a missing file is an empty state. A file larger than
    /// the decoder's input limit, or not a regular file, is refused without
    /// being read whole (see [`lodestone_core::state_file`]).
    pub fn load(path: &Path) -> io::Result<SavedState> {
        match state_file::read(path, LIMITS.max_input as u64)? {
            Some(bytes) => Self::decode(&bytes),
            None => Ok(SavedState::default()),
        }
    }

    /// Writes `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let state = SavedState {
            id: Some(NodeId([7; 20])),
            nodes: vec![
                NodeAddr {
                    id: NodeId([1; 20]),
                    addr: "127.0.0.1:5".parse().unwrap(),
                },
                NodeAddr {
                    id: NodeId([2; 20]),
                    addr: "[::1]:6".parse().unwrap(),
                },
            ],
        };
        assert_eq!(SavedState::decode(&state.encode()).unwrap(), state);
        assert!(SavedState::decode(b"d5:nodes3:abce").is_err());
        assert!(SavedState::decode(b"garbage").is_err());
    }

    #[test]
    fn a_file_gives_the_first_reachable_contacts_of_each_family_up_to_a_cap() {
        let node = |i: u32, addr: &str| NodeAddr {
            id: NodeId::from_slice(&[i.to_be_bytes(); 5].concat()).unwrap(),
            addr: addr.parse().unwrap(),
        };
        // Ones no datagram could reach are skipped before counting.
        let unreachable = [node(0, "0.0.0.0:6881"), node(0, "10.0.0.1:0")];
        let nodes: Vec<NodeAddr> = (unreachable.into_iter())
            .chain((0..3000).map(|i| node(i, "10.0.0.1:6881")))
            .chain((0..5).map(|i| node(i, "[2001:db8::1]:6881")))
            .collect();
        let state = SavedState { id: None, nodes };
        let loaded = SavedState::decode(&state.encode()).unwrap();
        let (v4, v6): (Vec<NodeAddr>, Vec<NodeAddr>) =
            loaded.nodes.into_iter().partition(|n| n.addr.is_ipv4());
        assert_eq!(v4, state.nodes[2..2 + MAX_NODES_PER_FAMILY]);
        assert_eq!(v6, state.nodes[3002..]);
    }

    #[test]
    fn a_huge_file_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("lodestone-dht-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dht.state");
        // Sparse: 64 GiB that take no disk, and more memory than reading
        // the file whole could get.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let err = SavedState::load(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
