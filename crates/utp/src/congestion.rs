//! How much a connection may have in flight: RTT and retransmission timeout
//! estimation (BEP 29, after RFC 6298) and LEDBAT's delay-based window
//! (RFC 6817), which backs off once the queueing delay it adds to the path
//! passes the target.

use std::time::{Duration, Instant};

/// The retransmission timeout never goes below this (BEP 29).
pub const MIN_RTO: Duration = Duration::from_millis(500);
/// Before any round trip was measured (BEP 29).
pub const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The retransmission timeout never goes above this: back-off stops
/// doubling here, and no round trip measured lifts it higher.
const MAX_RTO: Duration = Duration::from_secs(30);

/// Smoothed round-trip time and the retransmission timeout derived from it.
#[derive(Debug, Clone)]
pub struct Rtt {
    srtt: Option<Duration>,
    var: Duration,
    rto: Duration,
    /// The least sample: the path's round trip without our queue.
    least: Duration,
}

impl Rtt {
    /// No sample yet: the timeout is [`INITIAL_RTO`].
    pub fn new() -> Self {
        Rtt {
            srtt: None,
            var: Duration::ZERO,
            rto: INITIAL_RTO,
            least: Duration::MAX,
        }
    }

    /// Folds in one round trip of a packet sent once (Karn: never of a
    /// retransmitted one, whose ack can't be matched to a transmission).
    pub fn sample(&mut self, rtt: Duration) {
        self.least = self.least.min(rtt);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.var = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.var = (self.var * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        // Capped like the back-off: a peer that holds an ack back for a
        // minute must not stretch the timeout, and with it the time to
        // notice it is gone, without bound.
        self.rto = (self.srtt.unwrap_or(rtt) + self.var * 4).clamp(MIN_RTO, MAX_RTO);
    }

    /// The current timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round trip, or the timeout before any sample.
    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.rto)
    }

    /// The least round trip sampled ([`Duration::MAX`] before any).
    pub fn least(&self) -> Duration {
        self.least
    }

    /// A timeout fired: wait twice as long for the next one.
    pub fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(MAX_RTO);
    }
}

/// How often the base-delay history moves to a new slot, and how many it
/// keeps: the base delay is the least one-way delay seen in the last
/// `BASE_SLOTS` minutes, so a route change is forgotten within minutes.
const BASE_SLOT: Duration = Duration::from_secs(60);
const BASE_SLOTS: usize = 3;

/// No window grows past this, however long the path: 4 MiB is 64 MB/s at a
/// round trip of 64 ms.
const MAX_WINDOW: usize = 4 << 20;

/// LEDBAT's congestion window.
#[derive(Debug, Clone)]
pub struct Ledbat {
    /// Bytes allowed in flight.
    cwnd: usize,
    /// Doubling each round trip until loss or the delay target.
    slow_start: bool,
    mss: usize,
    /// The cap per millisecond of base round trip, and its floor.
    max_cwnd_per_ms: usize,
    /// The cap for the round trip seen so far.
    max_cwnd: usize,
    target_us: i64,
    /// Per-minute minimum one-way delays, newest last (wrapping microseconds
    /// of two unsynchronised clocks: only differences mean anything).
    base: Vec<u32>,
    base_slot_start: Option<Instant>,
    /// Latest queueing delay above the base, for tests and logs.
    queuing_us: u32,
    last_cut: Option<Instant>,
}

impl Ledbat {
    /// A window of two packets of `mss` bytes, at most `max_cwnd_per_ms`
    /// per millisecond of round trip (see [`Ledbat::set_base_rtt`]).
    pub fn new(mss: usize, max_cwnd_per_ms: usize, target: Duration) -> Self {
        let max_cwnd_per_ms = max_cwnd_per_ms.max(2 * mss);
        Ledbat {
            cwnd: 2 * mss,
            slow_start: true,
            mss,
            max_cwnd_per_ms,
            max_cwnd: max_cwnd_per_ms,
            target_us: i64::try_from(target.as_micros()).unwrap_or(i64::MAX),
            base: Vec::with_capacity(BASE_SLOTS),
            base_slot_start: None,
            queuing_us: 0,
            last_cut: None,
        }
    }

    /// The window in bytes.
    pub fn window(&self) -> usize {
        self.cwnd
    }

    /// The last measured queueing delay.
    pub fn queuing_delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.queuing_us))
    }

    /// The path's least round trip is `rtt`: the window may hold up to
    /// `max_cwnd_per_ms` bytes per millisecond of it (never less than that
    /// much, never more than 4 MiB).
    pub fn set_base_rtt(&mut self, rtt: Duration) {
        let per_us = self.max_cwnd_per_ms as f64 / 1000.0;
        let cap = (per_us * rtt.as_micros() as f64).min(MAX_WINDOW as f64) as usize;
        self.max_cwnd = cap.max(self.max_cwnd_per_ms);
    }

    fn min_window(&self) -> usize {
        self.mss
    }

    /// `acked` bytes left the network and the peer measured `delay_us` (its
    /// clock minus our timestamp) on the packet that acked them, if it had
    /// a measurement; without one the last queueing delay stands.
    pub fn on_ack(&mut self, now: Instant, acked: usize, delay_us: Option<u32>) {
        if acked == 0 {
            return;
        }
        if let Some(delay_us) = delay_us {
            self.record_base(now, delay_us);
            let base = self.base.iter().copied().fold(delay_us, wrapping_min);
            self.queuing_us = delay_us.wrapping_sub(base);
        }
        let queuing = i64::from(self.queuing_us);
        if self.slow_start {
            if queuing > self.target_us / 2 {
                self.slow_start = false;
            } else {
                self.cwnd = (self.cwnd + acked).min(self.max_cwnd);
                return;
            }
        }
        let target = self.target_us as f64;
        let step = if queuing <= self.target_us {
            // RFC 6817: grow by up to one packet per window of acks, in
            // proportion to how far below the target the delay is.
            (target - queuing as f64) / target * acked as f64 * self.mss as f64 / self.cwnd as f64
        } else {
            // Over the target, shrink multiplicatively (LEDBAT++): by
            // (delay/target - 1) of the window per round trip, at most half.
            // RFC 6817's linear decrease takes minutes to give way to a
            // loss-based flow that keeps the queue full.
            -((queuing as f64 / target - 1.0).min(0.5) * acked as f64)
        };
        let next = (self.cwnd as f64 + step).max(self.min_window() as f64);
        self.cwnd = (next as usize).min(self.max_cwnd);
    }

    fn record_base(&mut self, now: Instant, delay_us: u32) {
        let new_slot = match self.base_slot_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= BASE_SLOT,
        };
        if new_slot {
            if self.base.len() == BASE_SLOTS {
                self.base.remove(0);
            }
            self.base.push(delay_us);
            self.base_slot_start = Some(now);
        } else if let Some(last) = self.base.last_mut() {
            *last = wrapping_min(*last, delay_us);
        }
    }

    /// A packet was lost: halve the window, at most once per round trip.
    pub fn on_loss(&mut self, now: Instant, rtt: Duration) {
        self.slow_start = false;
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < rtt)
        {
            return;
        }
        self.last_cut = Some(now);
        self.cwnd = (self.cwnd / 2).max(self.min_window());
    }

    /// The retransmission timer fired: the path may be gone; restart from
    /// one packet.
    pub fn on_timeout(&mut self) {
        self.slow_start = false;
        self.cwnd = self.min_window();
    }
}

/// The smaller of two wrapping microsecond clock readings.
fn wrapping_min(a: u32, b: u32) -> u32 {
    if (b.wrapping_sub(a) as i32) < 0 { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_has_a_floor_and_backs_off() {
        let mut rtt = Rtt::new();
        assert_eq!(rtt.rto(), INITIAL_RTO);
        rtt.sample(Duration::from_millis(10));
        assert_eq!(rtt.rto(), MIN_RTO);
        for _ in 0..10 {
            rtt.back_off();
        }
        assert_eq!(rtt.rto(), MAX_RTO);
        let mut slow = Rtt::new();
        slow.sample(Duration::from_millis(400));
        assert_eq!(slow.rto(), Duration::from_millis(1200));
        let mut held_back = Rtt::new();
        held_back.sample(Duration::from_secs(60));
        assert_eq!(held_back.rto(), MAX_RTO);
    }

    #[test]
    fn ledbat_grows_on_an_empty_path_and_shrinks_past_the_target() {
        let t0 = Instant::now();
        let mut l = Ledbat::new(1000, 1 << 20, Duration::from_millis(100));
        // Base delay 5 ms on a foreign clock near wrap-around.
        let base = u32::MAX - 2_000;
        for _ in 0..10 {
            l.on_ack(t0, 1000, Some(base.wrapping_add(5_000)));
        }
        let grown = l.window();
        assert!(grown > 2000, "slow start grew to {grown}");
        // 200 ms of queueing: twice the target.
        for _ in 0..50 {
            l.on_ack(t0, 1000, Some(base.wrapping_add(205_000)));
        }
        assert!(l.window() < grown, "{} !< {grown}", l.window());
        assert!(l.queuing_delay() >= Duration::from_millis(199));
    }

    #[test]
    fn the_window_cap_grows_with_the_round_trip() {
        let t0 = Instant::now();
        let grow = |rtt: Option<Duration>| {
            let mut l = Ledbat::new(1000, 64 << 10, Duration::from_millis(100));
            if let Some(rtt) = rtt {
                l.set_base_rtt(rtt);
            }
            // An empty path: slow start all the way to the cap.
            for _ in 0..10_000 {
                l.on_ack(t0, 1000, Some(5_000));
            }
            l.window()
        };
        assert_eq!(grow(None), 64 << 10);
        // Loopback and LAN round trips keep the burst-sized cap.
        assert_eq!(grow(Some(Duration::from_micros(200))), 64 << 10);
        assert_eq!(grow(Some(Duration::from_millis(1))), 64 << 10);
        // 64 KiB per millisecond beyond, up to 4 MiB.
        assert_eq!(grow(Some(Duration::from_millis(10))), 640 << 10);
        assert_eq!(grow(Some(Duration::from_millis(500))), 4 << 20);
    }
}
