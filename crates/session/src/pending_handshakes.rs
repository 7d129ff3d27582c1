//! Incoming connections whose handshake is under way at one listener,
//! bounded in all and per IP.
//!
//! A connection that says nothing holds its slot until the handshake times
//! out. The bound in all keeps a crowd of them to a fixed number of tasks
//! and sockets; the bound per IP keeps one host from taking every slot, so
//! honest peers still get in while it tries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use lodestone_core::counts::count_down;
use lodestone_core::host_of;

/// Handshakes under way at once per listener.
pub(crate) const MAX_PENDING: usize = 128;

/// Of those, from one IP (an IPv6 /64, see [`host_of`]): as many as the
/// connections one IP may hold.
pub(crate) const MAX_PENDING_PER_IP: usize = 8;

/// The handshakes under way, by IP. Clones share the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingHandshakes {
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl PendingHandshakes {
    /// A slot for a handshake from `ip`, held until the slot drops; none
    /// when the listener or that IP has all it may.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<PendingSlot> {
        let ip = host_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= MAX_PENDING || from_ip >= MAX_PENDING_PER_IP {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Some(PendingSlot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

/// One handshake's place in [`PendingHandshakes`]; dropping it frees it.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        count_down(&mut counts.per_ip, self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_ip_cannot_take_every_slot() {
        let pending = PendingHandshakes::default();
        let hog: Vec<PendingSlot> = std::iter::from_fn(|| pending.admit(ip(1))).collect();
        assert_eq!(hog.len(), MAX_PENDING_PER_IP);
        assert!(pending.admit(ip(2)).is_some(), "another IP is let in");
        drop(hog);
        assert!(pending.admit(ip(1)).is_some(), "freed when the slots drop");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_slash_64() {
        let pending = PendingHandshakes::default();
        let addrs = (1..=20u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]));
        let admitted: Vec<PendingSlot> = addrs.filter_map(|ip| pending.admit(ip)).collect();
        assert_eq!(admitted.len(), MAX_PENDING_PER_IP);
    }

    #[test]
    fn many_ips_fill_the_listener_and_free_it() {
        let pending = PendingHandshakes::default();
        let all: Vec<PendingSlot> = (0..=255u8)
            .flat_map(|last| (0..MAX_PENDING_PER_IP).map(move |_| last))
            .filter_map(|last| pending.admit(ip(last)))
            .collect();
        assert_eq!(all.len(), MAX_PENDING);
        assert!(pending.admit(ip(255)).is_none(), "full");
        drop(all);
        assert!(pending.counts.lock().unwrap().per_ip.is_empty());
        assert!(pending.admit(ip(255)).is_some());
    }
}
