//! BEP 42: node ids tied to the node's external IP, so that one host cannot
//! place itself anywhere it likes in the keyspace.
//!
//! The first 21 bits of a conforming id equal the first 21 bits of CRC32C over
//! the masked IP with a 3-bit random `r` folded into its top bits; the last id
//! byte carries `r` in its low 3 bits. Local-network addresses are exempt,
//! because their ids cannot be checked by anyone outside.

use std::net::IpAddr;

use lodestone_core::NodeId;
use rand::{Rng, RngExt};

const V4_MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];
const V6_MASK: [u8; 8] = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];

/// Whether `ip` is a loopback, private, link-local or unspecified address:
/// such addresses are exempt from BEP 42 and from the one-node-per-IP rule.
pub fn is_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_local(&IpAddr::V4(v4)))
        }
    }
}

/// CRC32C of the masked IP with `r` (0..=7) in the top three bits.
fn crc(ip: &IpAddr, r: u8) -> u32 {
    let r = r & 7;
    match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            for (byte, mask) in b.iter_mut().zip(V4_MASK) {
                *byte &= mask;
            }
            b[0] |= r << 5;
            crc32c::crc32c(&b)
        }
        IpAddr::V6(v6) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v6.octets()[..8]);
            for (byte, mask) in b.iter_mut().zip(V6_MASK) {
                *byte &= mask;
            }
            b[0] |= r << 5;
            crc32c::crc32c(&b)
        }
    }
}

/// Makes a conforming id for `ip`: the CRC prefix, then random bytes.
pub fn generate(ip: &IpAddr, rng: &mut impl Rng) -> NodeId {
    let mut id: [u8; 20] = rng.random();
    let r = id[19] & 7;
    let c = crc(ip, r).to_be_bytes();
    id[0] = c[0];
    id[1] = c[1];
    id[2] = (c[2] & 0xf8) | (id[2] & 0x07);
    NodeId(id)
}

/// Whether `id` conforms to BEP 42 for `ip`. Local addresses always pass.
pub fn verify(id: &NodeId, ip: &IpAddr) -> bool {
    if is_local(ip) {
        return true;
    }
    let c = crc(ip, id.0[19]).to_be_bytes();
    id.0[0] == c[0] && id.0[1] == c[1] && (id.0[2] & 0xf8) == (c[2] & 0xf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn bep42_vectors() {
        let vectors: [(&str, u8, [u8; 3]); 5] = [
            ("124.31.75.21", 1, [0x5f, 0xbf, 0xbf]),
            ("21.75.31.124", 86, [0x5a, 0x3c, 0xe9]),
            ("65.23.51.170", 22, [0xa5, 0xd4, 0x32]),
            ("84.124.73.14", 65, [0x1b, 0x03, 0x21]),
            ("43.213.53.83", 90, [0xe5, 0x6f, 0x6c]),
        ];
        for (ip, rand, prefix) in vectors {
            let ip: IpAddr = ip.parse().unwrap();
            let mut id = [0u8; 20];
            id[..3].copy_from_slice(&prefix);
            id[19] = rand;
            assert!(verify(&NodeId(id), &ip), "{ip}");
            id[1] ^= 1;
            assert!(!verify(&NodeId(id), &ip), "{ip}");
        }
    }

    #[test]
    fn generated_ids_verify_and_local_addresses_are_exempt() {
        let mut rng = StdRng::seed_from_u64(7);
        for ip in ["1.2.3.4", "2001:db8::1", "203.0.113.9"] {
            let ip: IpAddr = ip.parse().unwrap();
            let id = generate(&ip, &mut rng);
            assert!(verify(&id, &ip));
            assert!(!verify(&id, &"5.6.7.8".parse().unwrap()) || ip.to_string() == "5.6.7.8");
        }
        for ip in ["127.0.0.5", "10.1.2.3", "192.168.0.1", "::1", "fd00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_local(&ip));
            assert!(verify(&NodeId([0; 20]), &ip));
        }
        assert!(!is_local(&"8.8.8.8".parse().unwrap()));
    }
}
