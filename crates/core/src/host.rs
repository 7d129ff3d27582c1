//! What a limit "per IP" counts under: the least a single host is given;
//! and how far an address reaches, so that a stranger cannot point us at
//! our own machine or network.
//!
//! An IPv4 address is one host (or one NAT). An IPv6 host is commonly given
//! a whole /64 and may answer from any address in it, so counting its
//! addresses apart would give it 2^64 allowances: every per-IP bound of the
//! DHT and the listener counts an IPv6 address by its /64.

use std::net::IpAddr;

/// The key `ip` counts under: itself for IPv4, its /64 for IPv6.
pub fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The block `ip` is in that one party commonly holds whole: an IPv4 /24
/// (a hosting customer's or a small site's range) or an IPv6 /48 (a site's
/// allocation, 65 536 /64s). Bounds per [`host_of`] stop one host; bounds
/// per network stop one party that owns many hosts, at the price of every
/// host in the block sharing one allowance with its unrelated neighbours.
/// An IPv4-mapped IPv6 address counts as its IPv4.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & !0xff).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
    }
}

/// How far an address reaches, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// This machine: loopback.
    Machine,
    /// A network behind a router: RFC 1918 and link-local IPv4;
    /// unique-local and link-local IPv6.
    Private,
    /// The shared space of a carrier-grade NAT (100.64.0.0/10): strangers,
    /// the ISP's other customers, but not the internet either.
    Shared,
    /// Anything else.
    Public,
}

/// The scope of `ip` (an IPv4-mapped IPv6 address counts as its IPv4).
fn scope_of(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            if v4.is_loopback() {
                Scope::Machine
            } else if v4.is_private() || v4.is_link_local() {
                Scope::Private
            } else if shared {
                Scope::Shared
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let unique_local = first & 0xfe00 == 0xfc00;
            let link_local = first & 0xffc0 == 0xfe80;
            if v6.is_loopback() {
                Scope::Machine
            } else if unique_local || link_local {
                Scope::Private
            } else {
                Scope::Public
            }
        }
    }
}

/// Whether a peer at `reporter` may point us at `named`. An address of a
/// narrower scope than the reporter's names something on the reporter's
/// own machine or network, which from here is ours instead: a public peer
/// naming `127.0.0.1:6379` or `192.168.1.1:80` would aim our dials at our
/// own services and neighbours. A peer on our machine may name anything.
pub fn may_name(reporter: IpAddr, named: IpAddr) -> bool {
    scope_of(named) >= scope_of(reporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reporter_names_only_its_own_scope_or_wider() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let public = ip("198.51.100.1");
        for narrower in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!may_name(public, ip(narrower)), "{narrower}");
            assert!(may_name(ip("127.0.0.1"), ip(narrower)), "{narrower}");
        }
        assert!(may_name(public, ip("203.0.113.9")));
        assert!(may_name(public, ip("2001:db8::1")));
        assert!(may_name(ip("192.168.1.7"), ip("10.0.0.1")));
        assert!(!may_name(ip("192.168.1.7"), ip("127.0.0.1")));
        // A carrier's other customers are strangers to our own network.
        assert!(!may_name(ip("100.64.0.1"), ip("192.168.1.1")));
        assert!(!may_name(ip("100.64.0.1"), ip("169.254.169.254")));
        assert!(may_name(ip("100.64.0.1"), ip("100.64.0.9")));
        assert!(may_name(ip("192.168.1.7"), ip("100.64.0.9")));
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(host_of(a), host_of(b));
        assert_ne!(host_of(a), host_of(other));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(host_of(v4), v4);
    }

    #[test]
    fn a_network_is_an_ipv4_slash_24_or_an_ipv6_slash_48() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network_of(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_ne!(network_of(ip("192.0.2.77")), network_of(ip("192.0.3.77")));
        assert_eq!(network_of(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(
            network_of(ip("2001:db8:1:ffff:aaaa::1")),
            ip("2001:db8:1::")
        );
        assert_ne!(
            network_of(ip("2001:db8:1::1")),
            network_of(ip("2001:db8:2::1"))
        );
    }
}
