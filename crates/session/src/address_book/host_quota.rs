//! How many entries one host may hold in an address book, when the sources
//! that named them may name any address.
//!
//! An IP address gets [`MAX_PER_ADDRESS`] ports, as a few peers may share a
//! NAT but a list of one victim's ports would be a port scan (libtorrent
//! keeps one per IP by default). An IPv6 /64 gets [`MAX_PER_SLASH_64`] in
//! all: hosting providers put many unrelated machines in one /64, so it is
//! not one host, but one party may hold all of its 2^64 addresses.
//! Loopback counts under nothing: local swarms share one IP, as the book's
//! bans already allow.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use lodestone_core::host_of;

/// Entries of one IP address (any ports) that count against the quota.
pub const MAX_PER_ADDRESS: usize = 4;

/// Entries of one IPv6 /64 (any addresses) that count against the quota.
pub const MAX_PER_SLASH_64: usize = 32;

/// What an entry counts under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HostKey {
    Address(IpAddr),
    Slash64(IpAddr),
}

/// The keys `ip` counts under, each with its cap: none on loopback.
fn keys(ip: IpAddr) -> [Option<(HostKey, usize)>; 2] {
    if ip.is_loopback() {
        return [None, None];
    }
    let slash_64 = ip
        .is_ipv6()
        .then(|| (HostKey::Slash64(host_of(ip)), MAX_PER_SLASH_64));
    [Some((HostKey::Address(ip), MAX_PER_ADDRESS)), slash_64]
}

/// Counts of counted entries per IP address and per IPv6 /64.
#[derive(Debug, Default)]
pub(super) struct HostQuota {
    counts: HashMap<HostKey, usize>,
}

impl HostQuota {
    /// Whether one more entry at `ip` would pass a cap.
    pub(super) fn is_full(&self, ip: IpAddr) -> bool {
        keys(ip)
            .into_iter()
            .flatten()
            .any(|(key, cap)| self.at_cap(key, cap))
    }

    /// Whether removing an entry at `other` would make room for one at
    /// `ip`, under a cap `ip` has reached.
    pub(super) fn frees_room_for(&self, ip: IpAddr, other: IpAddr) -> bool {
        let others = keys(other);
        keys(ip).into_iter().flatten().any(|(key, cap)| {
            self.at_cap(key, cap) && others.iter().flatten().any(|(k, _)| *k == key)
        })
    }

    /// An entry at `ip` is counted.
    pub(super) fn add(&mut self, ip: IpAddr) {
        for (key, _) in keys(ip).into_iter().flatten() {
            *self.counts.entry(key).or_default() += 1;
        }
    }

    /// A counted entry at `ip` is gone.
    pub(super) fn remove(&mut self, ip: IpAddr) {
        for (key, _) in keys(ip).into_iter().flatten() {
            if let Entry::Occupied(mut count) = self.counts.entry(key) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
    }

    fn at_cap(&self, key: HostKey, cap: usize) -> bool {
        self.counts.get(&key).is_some_and(|&n| n >= cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_then_a_slash_64_fill_up() {
        let mut quota = HostQuota::default();
        for _ in 0..MAX_PER_ADDRESS {
            assert!(!quota.is_full(ip("198.51.100.7")));
            quota.add(ip("198.51.100.7"));
        }
        assert!(quota.is_full(ip("198.51.100.7")));
        assert!(!quota.is_full(ip("198.51.100.8")));
        // Many machines of one /64 each get their own few, up to its cap.
        for i in 0..MAX_PER_SLASH_64 as u16 {
            let machine = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, i]);
            assert!(!quota.is_full(machine));
            quota.add(machine);
        }
        let another = ip("2001:db8::2:1");
        assert!(quota.is_full(another));
        assert!(quota.frees_room_for(another, ip("2001:db8::1:0")));
        assert!(!quota.frees_room_for(another, ip("2001:db8:0:1::1")));
        quota.remove(ip("2001:db8::1:0"));
        assert!(!quota.is_full(another));
        // Loopback is never counted.
        for _ in 0..100 {
            quota.add(ip("127.0.0.1"));
        }
        assert!(!quota.is_full(ip("127.0.0.1")));
        assert!(
            quota
                .counts
                .keys()
                .all(|k| !matches!(k, HostKey::Address(a) if a.is_loopback()))
        );
    }
}
