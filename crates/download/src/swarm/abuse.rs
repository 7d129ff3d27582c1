//! Tolerance for things an honest peer does now and then but a hostile one
//! does in bulk.
//!
//! Late blocks after a cancel, or a request that crosses our choke on the
//! wire, are normal in small numbers; thousands per second are not. A
//! meter counts such events and forgets half of them every second, so an
//! honest peer's occasional slips never add up over a long session while a
//! flood crosses the limit within one batch.

/// Counts suspicious events with exponential forgetting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AbuseMeter {
    count: u32,
    limit: u32,
}

impl AbuseMeter {
    /// A meter that trips when more than `limit` events are counted before
    /// decay brings the count back down.
    pub(crate) const fn new(limit: u32) -> Self {
        Self { count: 0, limit }
    }

    /// Counts one event; `false` once the limit is exceeded.
    #[must_use]
    pub(crate) fn record(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }

    /// Forgets half of what was counted; called once per second.
    pub(crate) fn decay(&mut self) {
        self.count /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_past_the_limit_and_recovers_with_decay() {
        let mut m = AbuseMeter::new(3);
        assert!((0..3).all(|_| m.record()));
        assert!(!m.record());
        m.decay();
        m.decay();
        // 4 → 2 → 1: one more is fine, then one short of the limit again.
        assert!(m.record());
        assert!(m.record());
        assert!(!m.record());
    }

    #[test]
    fn a_steady_trickle_of_half_the_limit_per_second_never_trips() {
        let mut m = AbuseMeter::new(100);
        for _ in 0..1000 {
            assert!((0..50).all(|_| m.record()));
            m.decay();
        }
    }
}
