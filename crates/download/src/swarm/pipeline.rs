//! The requests outstanding at one peer, and how many there should be.
//!
//! Pure: the peer task passes `now`. The depth follows the peer's measured
//! rate so a fast peer always has about [`QUEUE_TIME`] of work queued (it is
//! never idle waiting for our next request), while a slow one is not handed
//! blocks it will sit on. Blocks normally arrive in the order requested, so
//! the queue is a `VecDeque` searched from the front.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::{BLOCK_SIZE, BlockIndex};
use crate::rate::RateEstimator;

/// Blocks in flight to a peer we know nothing about yet (1 MiB).
pub(crate) const MIN_DEPTH: usize = 64;

/// Most blocks in flight to one peer (8 MiB): bounds memory per peer.
pub(crate) const MAX_DEPTH: usize = 512;

/// Requests are sent in batches of at least this many (one write each),
/// unless the pipeline is empty.
pub(crate) const REFILL_BATCH: usize = 16;

/// How much of the peer's rate we keep requested ahead.
pub(crate) const QUEUE_TIME: Duration = Duration::from_millis(300);

/// The request pipeline to one peer.
#[derive(Debug)]
pub(crate) struct Pipeline {
    outstanding: VecDeque<BlockIndex>,
    /// Last block received, or when requests went out to an empty pipeline.
    last_progress: Instant,
    /// Bytes received from the peer (wanted or not).
    rate: RateEstimator,
    /// The peer's own cap (`reqq` in its extension handshake).
    peer_cap: usize,
}

impl Pipeline {
    /// An empty pipeline at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            outstanding: VecDeque::new(),
            last_progress: now,
            rate: RateEstimator::new(now, Duration::from_millis(250), 8),
            peer_cap: MAX_DEPTH,
        }
    }

    /// The peer announced how many requests it queues (`reqq`).
    pub(crate) fn set_peer_cap(&mut self, reqq: u32) {
        self.peer_cap = (reqq as usize).clamp(1, MAX_DEPTH);
    }

    /// Blocks we want in flight now.
    pub(crate) fn target(&mut self, now: Instant) -> usize {
        let per_queue = self.rate.rate(now) * QUEUE_TIME.as_secs_f64() / f64::from(BLOCK_SIZE);
        (per_queue as usize)
            .clamp(MIN_DEPTH, MAX_DEPTH)
            .min(self.peer_cap)
    }

    /// How many blocks to request now: zero unless a worthwhile batch fits.
    pub(crate) fn room(&mut self, now: Instant) -> usize {
        let room = self.target(now).saturating_sub(self.outstanding.len());
        if room >= REFILL_BATCH.min(self.peer_cap) || self.outstanding.is_empty() {
            room
        } else {
            0
        }
    }

    /// Records requests just sent.
    pub(crate) fn requested(&mut self, blocks: &[BlockIndex], now: Instant) {
        if self.outstanding.is_empty() {
            self.last_progress = now;
        }
        self.outstanding.extend(blocks.iter().copied());
    }

    /// Counts `bytes` of piece data received, requested or not.
    pub(crate) fn record_bytes(&mut self, now: Instant, bytes: u64) {
        self.rate.record(now, bytes);
    }

    /// The receive rate, bytes per second.
    pub(crate) fn rate(&mut self, now: Instant) -> f64 {
        self.rate.rate(now)
    }

    /// A block arrived: whether we had requested it (and still had).
    pub(crate) fn received(&mut self, block: BlockIndex, now: Instant) -> bool {
        let found = self.remove(block);
        if found {
            self.last_progress = now;
        }
        found
    }

    /// Forgets one request (rejected or cancelled); whether it was there.
    pub(crate) fn remove(&mut self, block: BlockIndex) -> bool {
        match self.outstanding.iter().position(|&b| b == block) {
            Some(0) => self.outstanding.pop_front().is_some(),
            Some(i) => self.outstanding.remove(i).is_some(),
            None => false,
        }
    }

    /// Forgets every request (the peer choked us without the fast
    /// extension, or stalled) and returns them.
    pub(crate) fn take_all(&mut self) -> Vec<BlockIndex> {
        self.outstanding.drain(..).collect()
    }

    /// Requests are outstanding and nothing arrived for `timeout`.
    pub(crate) fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        !self.outstanding.is_empty() && now.saturating_duration_since(self.last_progress) > timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn blocks(n: u32) -> Vec<BlockIndex> {
        let layout = Layout::new(BLOCK_SIZE * 4, [(u64::from(BLOCK_SIZE) * 4 * 64, false)]).unwrap();
        (0..n)
            .map(|i| layout.block(layout.piece(i / 4).unwrap(), i % 4).unwrap())
            .collect()
    }

    #[test]
    fn depth_grows_with_rate_and_respects_caps() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        assert_eq!(p.target(t0), MIN_DEPTH);
        // 1 GB/s for a second: far above the cap.
        for i in 1..=10 {
            p.record_bytes(t0 + Duration::from_millis(100 * i), 100_000_000);
        }
        assert_eq!(p.target(t0 + Duration::from_secs(1)), MAX_DEPTH);
        p.set_peer_cap(100);
        assert_eq!(p.target(t0 + Duration::from_secs(1)), 100);
    }

    #[test]
    fn room_is_batched() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        let b = blocks(MIN_DEPTH as u32);
        assert_eq!(p.room(t0), MIN_DEPTH);
        p.requested(&b, t0);
        assert_eq!(p.room(t0), 0);
        for &x in &b[..REFILL_BATCH - 1] {
            assert!(p.received(x, t0));
        }
        assert_eq!(p.room(t0), 0, "fewer than a batch free");
        assert!(p.received(b[REFILL_BATCH - 1], t0));
        assert_eq!(p.room(t0), REFILL_BATCH);
    }

    #[test]
    fn out_of_order_late_and_stall() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        let b = blocks(8);
        p.requested(&b[..4], t0);
        assert!(p.received(b[2], t0));
        assert!(!p.received(b[2], t0), "a duplicate is not outstanding");
        assert!(!p.received(b[6], t0), "never requested");
        assert!(p.remove(b[0]));
        let timeout = Duration::from_secs(5);
        assert!(!p.stalled(t0 + timeout, timeout));
        assert!(p.stalled(t0 + timeout + Duration::from_millis(1), timeout));
        assert_eq!(p.take_all(), vec![b[1], b[3]]);
        assert!(!p.stalled(t0 + timeout * 2, timeout), "nothing outstanding");
    }
}
