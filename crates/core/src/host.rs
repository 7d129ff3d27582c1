//! What a limit "per IP" counts under: the least a single host is given.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
