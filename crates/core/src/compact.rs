//! Compact peer and node encodings (BEP 5 for IPv4, BEP 32 for IPv6).
//!
//! A compact peer is the IP followed by a big-endian port: 6 bytes for IPv4,
//! 18 for IPv6. A compact node is a 20-byte node id followed by a compact peer:
//! 26 and 38 bytes. Lists are plain concatenations, so a list whose length is
//! not a multiple of the entry size is malformed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::id::NodeId;

/// Why a compact list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compact list of {len} bytes is not a multiple of {entry} bytes")]
pub struct CompactError {
    /// Length of the list that was given.
    pub len: usize,
    /// Size of one entry in the expected family.
    pub entry: usize,
}

/// Address family of a compact encoding, which fixes its entry sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 4-byte addresses.
    V4,
    /// 16-byte addresses.
    V6,
}

impl Family {
    /// Family of an address.
    pub fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes in one compact peer of this family.
    pub const fn peer_len(self) -> usize {
        match self {
            Family::V4 => 6,
            Family::V6 => 18,
        }
    }

    /// Bytes in one compact node of this family.
    pub const fn node_len(self) -> usize {
        20 + self.peer_len()
    }
}

/// A DHT contact: a node id and where it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// The node's id.
    pub id: NodeId,
    /// Its UDP address.
    pub addr: SocketAddr,
}

/// Whether a datagram or connection to `addr` could reach a single host:
/// not port 0, not the unspecified address, not broadcast or multicast.
/// Compact lists come from strangers, who may fill them with such values.
pub fn is_contactable(addr: &SocketAddr) -> bool {
    let ip_ok = match addr.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    };
    ip_ok && addr.port() != 0
}

/// Appends the compact form of `addr` (IP then big-endian port).
pub fn write_peer(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The compact form of one address.
pub fn encode_peer(addr: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    write_peer(addr, &mut out);
    out
}

/// Decodes one compact peer of 6 or 18 bytes; any other length is `None`.
pub fn decode_peer(bytes: &[u8]) -> Option<SocketAddr> {
    let (ip, port) = match bytes.len() {
        6 => {
            let octets: [u8; 4] = bytes[..4].try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(octets)), &bytes[4..])
        }
        18 => {
            let octets: [u8; 16] = bytes[..16].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(octets)), &bytes[16..])
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// The compact peers of one family in `bytes`, decoded as they are taken,
/// so a caller with a cap decodes no more than it keeps; unusable entries
/// are skipped. Refuses a length that is not a whole number of entries.
pub fn peers(
    bytes: &[u8],
    family: Family,
) -> Result<impl Iterator<Item = SocketAddr> + '_, CompactError> {
    let entry = family.peer_len();
    check_multiple(bytes, entry)?;
    Ok(bytes.chunks_exact(entry).filter_map(decode_peer))
}

/// Decodes a concatenation of compact peers of one family.
pub fn decode_peers(bytes: &[u8], family: Family) -> Result<Vec<SocketAddr>, CompactError> {
    Ok(peers(bytes, family)?.collect())
}

/// Appends the compact form of a node (id, IP, port).
pub fn write_node(node: &NodeAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(node.id.as_bytes());
    write_peer(&node.addr, out);
}

/// Decodes one compact node info: a 20-byte id, then a compact peer of 6
/// or 18 bytes; any other length is `None`.
pub fn decode_node(bytes: &[u8]) -> Option<NodeAddr> {
    let (id, peer) = bytes.split_at_checked(20)?;
    Some(NodeAddr {
        id: NodeId::from_slice(id)?,
        addr: decode_peer(peer)?,
    })
}

/// Decodes a concatenation of compact nodes of one family (`nodes` or `nodes6`).
pub fn decode_nodes(bytes: &[u8], family: Family) -> Result<Vec<NodeAddr>, CompactError> {
    let entry = family.node_len();
    check_multiple(bytes, entry)?;
    Ok(bytes.chunks_exact(entry).filter_map(decode_node).collect())
}

fn check_multiple(bytes: &[u8], entry: usize) -> Result<(), CompactError> {
    if bytes.len().is_multiple_of(entry) {
        Ok(())
    } else {
        Err(CompactError {
            len: bytes.len(),
            entry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_peer_golden_bytes() {
        let addr: SocketAddr = "1.2.3.4:6881".parse().unwrap();
        assert_eq!(encode_peer(&addr), [1, 2, 3, 4, 0x1a, 0xe1]);
    }

    #[test]
    fn only_unicast_addresses_with_a_port_are_contactable() {
        for good in ["1.2.3.4:6881", "127.0.0.1:1", "[::1]:6881"] {
            assert!(is_contactable(&good.parse().unwrap()), "{good}");
        }
        for bad in [
            "1.2.3.4:0",
            "0.0.0.0:6881",
            "255.255.255.255:6881",
            "224.0.0.1:6881",
            "[::]:6881",
            "[ff02::1]:6881",
        ] {
            assert!(!is_contactable(&bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn ragged_lists_are_refused() {
        assert!(decode_peers(&[0; 7], Family::V4).is_err());
        assert!(decode_nodes(&[0; 27], Family::V4).is_err());
        assert!(decode_nodes(&[0; 38 * 2], Family::V6).is_ok());
    }

    proptest! {
        #[test]
        fn nodes_round_trip(id: [u8; 20], v6: bool, ip4: [u8; 4], ip6: [u8; 16], port: u16) {
            let ip = if v6 { IpAddr::from(ip6) } else { IpAddr::from(ip4) };
            let node = NodeAddr { id: NodeId(id), addr: SocketAddr::new(ip, port) };
            let mut out = Vec::new();
            write_node(&node, &mut out);
            let family = Family::of(&node.addr);
            prop_assert_eq!(decode_nodes(&out, family).unwrap(), vec![node]);
        }
    }
}
