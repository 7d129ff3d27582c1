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
use std::net::IpAddr;

use lodestone_core::counts::count_down;
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

/// A cap an address has reached: one entry it [`Crowd::includes`] leaving
/// makes room for one more at that address, under every cap.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crowd(HostKey);

impl Crowd {
    /// Whether an entry at `ip` counts under this cap.
    pub(super) fn includes(self, ip: IpAddr) -> bool {
        keys(ip).into_iter().flatten().any(|(key, _)| key == self.0)
    }
}

impl HostQuota {
    /// The narrowest cap one more entry at `ip` would pass, if any. An
    /// entry at the same address counts under its /64 too, so when the
    /// address is full, one of its own entries leaving frees both caps.
    pub(super) fn crowding(&self, ip: IpAddr) -> Option<Crowd> {
        keys(ip)
            .into_iter()
            .flatten()
            .find(|&(key, cap)| self.at_cap(key, cap))
            .map(|(key, _)| Crowd(key))
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
            count_down(&mut self.counts, key);
        }
    }

    fn at_cap(&self, key: HostKey, cap: usize) -> bool {
        self.counts.get(&key).is_some_and(|&n| n >= cap)
    }

    /// Whether these counts are those of the entries at `counted`, and
    /// within every cap.
    #[cfg(test)]
    pub(super) fn counts_exactly(&self, counted: impl Iterator<Item = IpAddr>) -> bool {
        let mut recount = HostQuota::default();
        counted.for_each(|ip| recount.add(ip));
        let within = |key: &HostKey, n: &usize| {
            *n <= match key {
                HostKey::Address(_) => MAX_PER_ADDRESS,
                HostKey::Slash64(_) => MAX_PER_SLASH_64,
            }
        };
        recount.counts == self.counts && self.counts.iter().all(|(k, n)| within(k, n))
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
            assert!(quota.crowding(ip("198.51.100.7")).is_none());
            quota.add(ip("198.51.100.7"));
        }
        let crowd = quota.crowding(ip("198.51.100.7")).expect("full");
        assert!(crowd.includes(ip("198.51.100.7")));
        assert!(!crowd.includes(ip("198.51.100.8")));
        assert!(quota.crowding(ip("198.51.100.8")).is_none());
        // Many machines of one /64 each get their own few, up to its cap.
        for i in 0..MAX_PER_SLASH_64 as u16 {
            let machine = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, i]);
            assert!(quota.crowding(machine).is_none());
            quota.add(machine);
        }
        let another = ip("2001:db8::2:1");
        let crowd = quota.crowding(another).expect("the /64 is full");
        assert!(crowd.includes(ip("2001:db8::1:0")));
        assert!(!crowd.includes(ip("2001:db8:0:1::1")));
        quota.remove(ip("2001:db8::1:0"));
        assert!(quota.crowding(another).is_none());
        // A full address in a full /64: its own entries are the ones that
        // make room.
        for _ in 0..MAX_PER_ADDRESS {
            quota.add(ip("2001:db8::1:1"));
        }
        let crowd = quota.crowding(ip("2001:db8::1:1")).expect("full");
        assert!(crowd.includes(ip("2001:db8::1:1")));
        assert!(!crowd.includes(ip("2001:db8::1:2")));
        // Loopback is never counted.
        for _ in 0..100 {
            quota.add(ip("127.0.0.1"));
        }
        assert!(quota.crowding(ip("127.0.0.1")).is_none());
        assert!(
            quota
                .counts
                .keys()
                .all(|k| !matches!(k, HostKey::Address(a) if a.is_loopback()))
        );
    }
}
