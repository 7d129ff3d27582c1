//! Transfer rates: a sliding-window estimator and a token-bucket limiter.
//!
//! Both are pure: the caller passes `now`, so tests run on virtual time.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes per second over the last few seconds.
///
/// Time is cut into fixed slots; bytes are added to the current slot and the
/// rate is the sum of the window divided by the time it covers (less while
/// the estimator is younger than the window, so a new peer's rate is not
/// underestimated).
#[derive(Debug, Clone)]
pub struct RateEstimator {
    origin: Instant,
    slot: Duration,
    counts: Vec<u64>,
    /// Absolute number of the newest slot touched.
    head: u64,
    total: u64,
}

impl RateEstimator {
    /// A window of `slots` slots of `slot` each (both at least 1 / 1 ms),
    /// starting at `now`.
    pub fn new(now: Instant, slot: Duration, slots: usize) -> Self {
        Self {
            origin: now,
            slot: slot.max(Duration::from_millis(1)),
            counts: vec![0; slots.max(1)],
            head: 0,
            total: 0,
        }
    }

    /// A 5-second window of 500 ms slots: reacts within a second or two,
    /// smooth enough to rank peers every 10 s.
    pub fn standard(now: Instant) -> Self {
        Self::new(now, Duration::from_millis(500), 10)
    }

    fn slot_of(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.slot.as_nanos()) as u64
    }

    /// Moves the window so that `now`'s slot is the newest, clearing slots
    /// that fell out. A `now` earlier than the newest slot changes nothing.
    fn advance(&mut self, now: Instant) {
        let slot = self.slot_of(now);
        if slot <= self.head {
            return;
        }
        let n = self.counts.len() as u64;
        for s in (self.head + 1..=slot).take(self.counts.len()) {
            self.counts[(s % n) as usize] = 0;
        }
        // When the gap exceeds the window every slot was cleared above.
        self.head = slot;
    }

    /// Counts `bytes` transferred at `now`.
    pub fn record(&mut self, now: Instant, bytes: u64) {
        self.advance(now);
        let n = self.counts.len() as u64;
        let i = (self.head % n) as usize;
        self.counts[i] = self.counts[i].saturating_add(bytes);
        self.total = self.total.saturating_add(bytes);
    }

    /// Bytes per second over the window ending at `now`.
    pub fn rate(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let sum: u64 = self.counts.iter().sum();
        let slot = self.slot.as_nanos();
        let age = now.saturating_duration_since(self.origin).as_nanos();
        // The full slots behind the newest one, plus the newest one so far.
        let full = slot * (self.counts.len() as u128 - 1);
        let into_head = age.saturating_sub(slot * u128::from(self.head));
        let covered = (full + into_head).min(age).max(slot);
        sum as f64 / (covered as f64 / 1e9)
    }

    /// Every byte ever recorded.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A [`TokenBucket`] that several downloads draw from, so that a limit set
/// for a whole session holds over their sum. Clones share the bucket.
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<TokenBucket>>);

impl SharedBucket {
    /// A bucket of `rate` bytes per second with a quarter second of burst.
    pub fn new(now: Instant, rate: NonZeroU64) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(
            now,
            rate,
            rate.get() / 4,
        ))))
    }

    /// [`TokenBucket::acquire`] on the shared bucket.
    pub fn acquire(&self, now: Instant, bytes: u64) -> Duration {
        self.bucket().acquire(now, bytes)
    }

    /// [`TokenBucket::affordable`] on the shared bucket.
    pub fn affordable(&self, now: Instant, unit: u64) -> u64 {
        self.bucket().affordable(now, unit)
    }

    /// [`TokenBucket::wait_for`] on the shared bucket.
    pub fn wait_for(&self, now: Instant, bytes: u64) -> Duration {
        self.bucket().wait_for(now, bytes)
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // The bucket holds plain numbers: a panic elsewhere while it was
        // locked cannot leave it inconsistent, so a poisoned lock is used.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A token bucket: at most `rate` bytes per second on average, with bursts
/// of up to `burst` bytes.
///
/// The bucket may go into debt: [`TokenBucket::acquire`] always grants the
/// bytes and says how long to wait before using them, so a 16 KiB block
/// passes even when the burst is smaller.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A burst of zero is raised to one 16 KiB block.
    pub fn new(now: Instant, rate: NonZeroU64, burst: u64) -> Self {
        let burst = burst.max(u64::from(crate::layout::BLOCK_SIZE)) as f64;
        Self {
            rate: rate.get() as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// How many whole `unit`s (at least 1 byte each) the bucket holds at
    /// `now`, without taking them.
    pub fn affordable(&mut self, now: Instant, unit: u64) -> u64 {
        self.refill(now);
        if self.tokens <= 0.0 {
            0
        } else {
            (self.tokens / unit.max(1) as f64) as u64
        }
    }

    /// How long from `now` until the bucket holds `bytes`.
    pub fn wait_for(&mut self, now: Instant, bytes: u64) -> Duration {
        self.refill(now);
        let missing = bytes as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate)
        }
    }

    /// Takes `bytes` at `now`; returns how long to wait before sending or
    /// reading them (zero if the bucket had enough).
    pub fn acquire(&mut self, now: Instant, bytes: u64) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_rate_is_measured() {
        let t0 = Instant::now();
        let mut r = RateEstimator::standard(t0);
        // 100 KB every 100 ms = 1 MB/s for 10 s.
        for i in 1..=100 {
            r.record(t0 + ms(i * 100), 100_000);
        }
        let rate = r.rate(t0 + ms(10_000));
        assert!((rate - 1e6).abs() < 0.1e6, "{rate}");
        assert_eq!(r.total(), 10_000_000);
    }

    #[test]
    fn young_estimator_is_not_diluted() {
        let t0 = Instant::now();
        let mut r = RateEstimator::standard(t0);
        r.record(t0 + ms(100), 100_000);
        r.record(t0 + ms(900), 100_000);
        let rate = r.rate(t0 + ms(1000));
        assert!((rate - 200_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn rate_decays_to_zero_after_silence() {
        let t0 = Instant::now();
        let mut r = RateEstimator::standard(t0);
        r.record(t0 + ms(100), 1_000_000);
        assert!(r.rate(t0 + ms(3000)) > 0.0);
        assert_eq!(r.rate(t0 + ms(5600)), 0.0);
        assert_eq!(r.rate(t0 + ms(60_000)), 0.0);
        r.record(t0 + ms(60_100), 500);
        assert!(r.rate(t0 + ms(60_200)) > 0.0);
    }

    #[test]
    fn affordable_counts_whole_units_and_wait_for_says_when() {
        let t0 = Instant::now();
        let rate = NonZeroU64::new(100_000).unwrap();
        let mut b = TokenBucket::new(t0, rate, 50_000);
        assert_eq!(b.affordable(t0, 16_384), 3);
        assert_eq!(b.wait_for(t0, 16_384), Duration::ZERO);
        b.acquire(t0, 50_000);
        assert_eq!(b.affordable(t0, 16_384), 0);
        assert_eq!(b.wait_for(t0, 10_000), ms(100));
        assert_eq!(b.affordable(t0 + ms(200), 10_000), 2);
    }

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let rate = NonZeroU64::new(100_000).unwrap();
        let mut b = TokenBucket::new(t0, rate, 50_000);
        assert_eq!(b.acquire(t0, 50_000), Duration::ZERO);
        assert_eq!(b.acquire(t0, 10_000), ms(100));
        // 200 ms later: 20 KB refilled, debt of 10 KB paid, 10 KB left.
        assert_eq!(b.acquire(t0 + ms(200), 10_000), Duration::ZERO);
        // A long pause refills only up to the burst.
        assert_eq!(b.acquire(t0 + ms(100_000), 50_000), Duration::ZERO);
        assert_eq!(b.acquire(t0 + ms(100_000), 1_000), ms(10));
    }

    proptest! {
        /// Whatever the request pattern, a client that waits as told never
        /// exceeds rate * elapsed + burst.
        #[test]
        fn limiter_bounds_throughput(
            rate in 1_000u64..1_000_000,
            burst in 0u64..100_000,
            sizes in proptest::collection::vec(1u64..40_000, 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(t0, NonZeroU64::new(rate).unwrap(), burst);
            let burst = burst.max(16_384);
            let mut now = t0;
            let mut sent = 0u64;
            for n in sizes {
                now += b.acquire(now, n);
                sent += n;
                let allowed = rate as f64 * (now - t0).as_secs_f64() + burst as f64;
                prop_assert!(sent as f64 <= allowed + 1.0, "{sent} > {allowed}");
            }
        }

        /// The estimate never exceeds what was recorded in the window
        /// divided by one slot, and matches a constant stream.
        #[test]
        fn estimator_matches_constant_streams(per_tick in 1u64..1_000_000, tick_ms in 10u64..400) {
            let t0 = Instant::now();
            let mut r = RateEstimator::standard(t0);
            let ticks = 20_000 / tick_ms;
            for i in 1..=ticks {
                r.record(t0 + ms(i * tick_ms), per_tick);
            }
            let truth = per_tick as f64 * 1000.0 / tick_ms as f64;
            let got = r.rate(t0 + ms(ticks * tick_ms));
            prop_assert!((got - truth).abs() <= truth * 0.25, "{got} vs {truth}");
        }
    }
}
