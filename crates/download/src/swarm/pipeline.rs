//! The requests outstanding at one peer, and how many there should be.
//!
//! Pure: the peer task passes `now`. The depth starts at [`MIN_DEPTH`] and
//! grows by a quarter each time the pipeline runs dry while the picker had
//! work for the peer: an empty pipeline means the peer sat idle for a round
//! trip, i.e. the depth is below its rate times its latency. So a fast,
//! distant peer is never idle, while a fast, near one (loopback) is not
//! handed megabytes it does not need, which only costs memory and cache.
//!
//! A peer that serves in bursts never lets the pipeline run dry: it
//! answers on a timer (Transmission every 500 ms) whatever is queued, and
//! we top the queue up as each burst lands. Its rate is then the depth per
//! tick. Such a peer shows itself by delivering a whole pipeline's depth
//! within [`BURST_SPAN`] after a pause of [`BURST_GAP`]; from then on its
//! depth never falls below what it delivered in the last [`QUEUED_TIME`],
//! which doubles its queue each tick up to the cap. Steady peers keep the
//! starvation rule alone: deeper queues only cost them, and over uTP they
//! cost throughput (LEDBAT fills whatever the requests allow up to its
//! delay target; 256 MiB from three uTP seeders took 23 s instead of 6).
//! Blocks normally arrive in the order requested, so the queue is a
//! `VecDeque` searched from the front.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::{BLOCK_SIZE, BlockIndex};
use crate::rate::RateEstimator;

/// Blocks in flight to a peer we know nothing about yet (1 MiB).
pub(crate) const MIN_DEPTH: usize = 64;

/// Most blocks in flight to one peer (4 MiB): bounds memory per peer.
pub(crate) const MAX_DEPTH: usize = 256;

/// How long the requests queued at a peer last at its recent rate, at
/// least: longer than a bursty peer's tick, short enough that a slow
/// peer does not hold blocks that a faster one could bring.
pub(crate) const QUEUED_TIME: Duration = Duration::from_secs(1);

/// A pause in a peer's deliveries, with requests outstanding, this long
/// or longer may be a timer-driven peer waiting for its next tick.
pub(crate) const BURST_GAP: Duration = Duration::from_millis(100);

/// How fast a whole pipeline's depth must arrive after such a pause for
/// the peer to count as bursty: 64 blocks in 20 ms is 52 MB/s, which a
/// peer streaming steadily back from a stall does not reach, while a peer
/// writing its whole answer at once does.
pub(crate) const BURST_SPAN: Duration = Duration::from_millis(20);

/// Blocks in flight to one peer during endgame, when every request is a
/// duplicate of one outstanding elsewhere: enough to keep the peer busy,
/// few enough that the duplicates we end up discarding stay small.
pub(crate) const ENDGAME_DEPTH: usize = 8;

/// Requests are sent in batches of at least this many (one write each),
/// unless the pipeline is empty.
pub(crate) const REFILL_BATCH: usize = 16;

/// The request pipeline to one peer.
#[derive(Debug)]
pub(crate) struct Pipeline {
    outstanding: VecDeque<BlockIndex>,
    /// Current depth, grown on starvation.
    depth: usize,
    /// The last top-up got every block it asked for: if the pipeline runs
    /// dry now, the depth (not the picker) was the limit.
    saturated: bool,
    /// Last block received, or when requests went out to an empty pipeline.
    last_progress: Instant,
    /// Bytes of the blocks taken from the peer (asked of it, if late).
    rate: RateEstimator,
    /// The same over the last [`QUEUED_TIME`] only, which sets a bursty
    /// peer's floor: the 5 s window of `rate` would ramp it up slowly.
    recent: RateEstimator,
    /// Since when, and how many blocks, the peer has delivered after its
    /// last pause of [`BURST_GAP`], while that is under [`BURST_SPAN`].
    burst: Option<(Instant, usize)>,
    /// The peer answers in bursts: its recent rate sets a floor.
    bursty: bool,
    /// The peer's own cap (`reqq` in its extension handshake).
    peer_cap: usize,
    /// Requests given back without their block (a choke, a reject, our
    /// cancel), newest last, at most [`MAX_DEPTH`]: a block of one may
    /// still arrive, crossing the message on the wire.
    given_back: VecDeque<BlockIndex>,
}

impl Pipeline {
    /// An empty pipeline at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            outstanding: VecDeque::new(),
            depth: MIN_DEPTH,
            saturated: false,
            last_progress: now,
            rate: RateEstimator::standard(now),
            recent: RateEstimator::new(now, QUEUED_TIME / 4, 4),
            burst: None,
            bursty: false,
            peer_cap: MAX_DEPTH,
            given_back: VecDeque::new(),
        }
    }

    /// The peer announced how many requests it queues (`reqq`).
    pub(crate) fn set_peer_cap(&mut self, reqq: u32) {
        self.peer_cap = (reqq as usize).clamp(1, MAX_DEPTH);
    }

    /// Blocks we want in flight now.
    pub(crate) fn target(&self) -> usize {
        self.depth.min(self.peer_cap)
    }

    /// How many blocks to request now: zero unless a worthwhile batch fits.
    pub(crate) fn room(&self) -> usize {
        let room = self.target().saturating_sub(self.outstanding.len());
        if room >= REFILL_BATCH.min(self.target()) || self.outstanding.is_empty() {
            room
        } else {
            0
        }
    }

    /// Blocks in flight.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Records requests just sent: `blocks` out of the `asked` we wanted.
    pub(crate) fn requested(&mut self, blocks: &[BlockIndex], asked: usize, now: Instant) {
        if blocks.is_empty() {
            return;
        }
        if self.outstanding.is_empty() {
            self.last_progress = now;
        }
        self.saturated = blocks.len() >= asked;
        self.outstanding.extend(blocks.iter().copied());
    }

    /// Counts `bytes` of a block taken: one asked of the peer, if late.
    pub(crate) fn record_bytes(&mut self, now: Instant, bytes: u64) {
        self.rate.record(now, bytes);
        self.recent.record(now, bytes);
    }

    /// The receive rate, bytes per second.
    pub(crate) fn rate(&mut self, now: Instant) -> f64 {
        self.rate.rate(now)
    }

    /// A block arrived: whether we had requested it (and still had).
    pub(crate) fn received(&mut self, block: BlockIndex, now: Instant) -> bool {
        let found = self.forget(block);
        if found {
            self.watch_bursts(now);
            self.last_progress = now;
            if self.outstanding.is_empty() && self.saturated {
                self.depth = (self.depth + self.depth / 4).min(MAX_DEPTH);
                self.saturated = false;
            }
            if self.bursty {
                let queued = self.recent.rate(now) * QUEUED_TIME.as_secs_f64();
                let floor = (queued / f64::from(BLOCK_SIZE)) as usize;
                self.depth = self.depth.max(floor.min(MAX_DEPTH));
            }
        }
        found
    }

    /// Notes a requested block arriving at `now`, before `last_progress`
    /// moves: does the peer answer a whole queue at once after a pause?
    fn watch_bursts(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_progress) >= BURST_GAP {
            self.burst = Some((now, 0));
        }
        if let Some((since, blocks)) = &mut self.burst {
            *blocks += 1;
            if now.saturating_duration_since(*since) > BURST_SPAN {
                self.burst = None;
            } else if *blocks >= self.depth {
                self.bursty = true;
                self.burst = None;
            }
        }
    }

    /// Gives one request back (rejected or cancelled); whether it was there.
    pub(crate) fn remove(&mut self, block: BlockIndex) -> bool {
        let found = self.forget(block);
        if found {
            self.give_back(block);
        }
        found
    }

    /// Gives every request back (the peer choked us without the fast
    /// extension) and returns them.
    pub(crate) fn take_all(&mut self) -> Vec<BlockIndex> {
        self.saturated = false;
        let taken: Vec<BlockIndex> = self.outstanding.drain(..).collect();
        for &block in &taken {
            self.give_back(block);
        }
        taken
    }

    /// A block that was not outstanding arrived: whether it is one given
    /// back lately, so late rather than never asked of this peer.
    pub(crate) fn late(&mut self, block: BlockIndex) -> bool {
        match self.given_back.iter().position(|&b| b == block) {
            Some(i) => self.given_back.remove(i).is_some(),
            None => false,
        }
    }

    fn forget(&mut self, block: BlockIndex) -> bool {
        match self.outstanding.iter().position(|&b| b == block) {
            Some(0) => self.outstanding.pop_front().is_some(),
            Some(i) => self.outstanding.remove(i).is_some(),
            None => false,
        }
    }

    fn give_back(&mut self, block: BlockIndex) {
        if self.given_back.len() == MAX_DEPTH {
            self.given_back.pop_front();
        }
        self.given_back.push_back(block);
    }

    /// Requests are outstanding and nothing arrived for `timeout`.
    pub(crate) fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        !self.outstanding.is_empty() && now.saturating_duration_since(self.last_progress) > timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{BLOCK_SIZE, Layout};

    fn blocks(n: u32) -> Vec<BlockIndex> {
        let layout =
            Layout::new(BLOCK_SIZE * 4, [(u64::from(BLOCK_SIZE) * 4 * 256, false)]).unwrap();
        (0..n)
            .map(|i| layout.block(layout.piece(i / 4).unwrap(), i % 4).unwrap())
            .collect()
    }

    #[test]
    fn depth_grows_only_when_starved_by_the_depth() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        assert_eq!(p.target(), MIN_DEPTH);
        let b = blocks(1024);
        // The picker had fewer blocks than asked: running dry is not our fault.
        p.requested(&b[..10], MIN_DEPTH, t0);
        b[..10].iter().for_each(|&x| assert!(p.received(x, t0)));
        assert_eq!(p.target(), MIN_DEPTH);
        // Full top-ups that drain completely: grow by a quarter each time.
        let mut at = 0;
        let mut expected = MIN_DEPTH;
        while expected < MAX_DEPTH {
            let n = p.room();
            assert_eq!(n, expected);
            p.requested(&b[at..at + n], n, t0);
            b[at..at + n]
                .iter()
                .for_each(|&x| assert!(p.received(x, t0)));
            at = (at + n) % 512;
            expected = (expected + expected / 4).min(MAX_DEPTH);
            assert_eq!(p.target(), expected);
        }
        p.set_peer_cap(100);
        assert_eq!(p.target(), 100);
    }

    /// A peer that answers every 500 ms whatever is queued, while we top
    /// the queue up as its bursts land, never lets the pipeline run dry:
    /// its rate sets the depth, which at least doubles each tick to the cap.
    #[test]
    fn a_bursty_peer_gets_a_second_of_its_rate() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        let b = blocks(1024);
        let mut next = 0;
        let mut request = |p: &mut Pipeline, now| {
            let n = p.room();
            let sent: Vec<_> = (0..n).map(|i| b[(next + i) % 1024]).collect();
            next += n;
            p.requested(&sent, n, now);
        };
        request(&mut p, t0);
        let mut depths = Vec::new();
        for tick in 1..=4 {
            let now = t0 + Duration::from_millis(500 * tick);
            let burst: Vec<_> = p.outstanding.iter().copied().collect();
            for block in burst {
                p.record_bytes(now, u64::from(BLOCK_SIZE));
                assert!(p.received(block, now));
                if p.room() > 0 {
                    request(&mut p, now);
                }
            }
            assert!(p.outstanding() > 0, "topped up as the burst landed");
            depths.push(p.target());
        }
        assert!(depths[0] >= 2 * MIN_DEPTH, "{depths:?}");
        assert!(depths.is_sorted(), "{depths:?}");
        assert_eq!(depths[2..], [MAX_DEPTH, MAX_DEPTH], "{depths:?}");
    }

    /// A peer streaming steadily, however fast, and one that pauses and
    /// then streams back slowly, keep the starvation rule alone.
    #[test]
    fn a_steady_peer_gets_no_floor() {
        let t0 = Instant::now();
        let b = blocks(1024);
        for (gap, pause) in [
            (Duration::from_micros(100), None),
            (Duration::from_millis(2), Some(5)),
        ] {
            let mut p = Pipeline::new(t0);
            let mut next = 0;
            let mut now = t0;
            p.requested(&b[..MIN_DEPTH], MIN_DEPTH, now);
            next += MIN_DEPTH;
            for i in 0..4000 {
                now += gap;
                if pause == Some(i % 500) {
                    now += Duration::from_millis(300);
                }
                let block = p.outstanding.front().copied().unwrap();
                p.record_bytes(now, u64::from(BLOCK_SIZE));
                assert!(p.received(block, now));
                let n = p.room();
                if n > 0 {
                    let sent: Vec<_> = (0..n).map(|k| b[(next + k) % 1024]).collect();
                    next += n;
                    p.requested(&sent, n, now);
                }
            }
            assert_eq!(p.target(), MIN_DEPTH, "every {gap:?}, pausing {pause:?}");
        }
    }

    #[test]
    fn room_is_batched() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        let b = blocks(MIN_DEPTH as u32);
        assert_eq!(p.room(), MIN_DEPTH);
        p.requested(&b, MIN_DEPTH, t0);
        assert_eq!(p.room(), 0);
        for &x in &b[..REFILL_BATCH - 1] {
            assert!(p.received(x, t0));
        }
        assert_eq!(p.room(), 0, "fewer than a batch free");
        assert!(p.received(b[REFILL_BATCH - 1], t0));
        assert_eq!(p.room(), REFILL_BATCH);
    }

    #[test]
    fn out_of_order_late_and_stall() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(t0);
        let b = blocks(8);
        p.requested(&b[..4], 4, t0);
        assert!(p.received(b[2], t0));
        assert!(!p.received(b[2], t0), "a duplicate is not outstanding");
        assert!(!p.received(b[6], t0), "never requested");
        assert!(p.remove(b[0]));
        let timeout = Duration::from_secs(5);
        assert!(!p.stalled(t0 + timeout, timeout));
        assert!(p.stalled(t0 + timeout + Duration::from_millis(1), timeout));
        assert_eq!(p.take_all(), vec![b[1], b[3]]);
        assert_eq!(p.outstanding(), 0);
        assert!(!p.stalled(t0 + timeout * 2, timeout), "nothing outstanding");
    }
}
