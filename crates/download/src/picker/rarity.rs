//! Unstarted pieces ordered by availability, with O(1) updates.
//!
//! All pieces live in one vector, grouped into consecutive buckets by how
//! many peers have them (bucket `k` = availability `k`). When a piece's
//! availability moves by one it swaps with the first or last element of its
//! bucket and the boundary moves: O(1) per `have`. Removing a piece (it was
//! started) walks the hole through the buckets above it: O(distinct
//! availabilities), which is at most the number of peers.
//!
//! The order within a bucket carries no meaning; the picker starts each scan
//! at a random position in the bucket, which is the random tie-break.

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(super) struct RarityQueue {
    order: Vec<u32>,
    /// `pos[piece]` = index in `order`, or `NONE` when not queued.
    pos: Vec<u32>,
    /// `start[k]` = index of the first piece with availability `k`.
    start: Vec<u32>,
}

impl RarityQueue {
    /// Queues `pieces` (all with availability 0) out of `piece_count`.
    pub(super) fn new(piece_count: u32, pieces: impl IntoIterator<Item = u32>) -> Self {
        let mut pos = vec![NONE; piece_count as usize];
        let order: Vec<u32> = pieces.into_iter().collect();
        for (at, &p) in order.iter().enumerate() {
            pos[p as usize] = at as u32;
        }
        Self {
            order,
            pos,
            start: vec![0],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    #[cfg(test)]
    pub(super) fn contains(&self, piece: u32) -> bool {
        self.pos[piece as usize] != NONE
    }

    /// The bucket count, including empty buckets.
    pub(super) fn bucket_count(&self) -> usize {
        self.start.len()
    }

    /// The pieces with availability `k`.
    pub(super) fn bucket(&self, k: usize) -> &[u32] {
        &self.order[self.start[k] as usize..self.end(k) as usize]
    }

    fn end(&self, k: usize) -> u32 {
        self.start
            .get(k + 1)
            .copied()
            .unwrap_or(self.order.len() as u32)
    }

    fn swap(&mut self, a: u32, b: u32) {
        self.order.swap(a as usize, b as usize);
        self.pos[self.order[a as usize] as usize] = a;
        self.pos[self.order[b as usize] as usize] = b;
    }

    /// The piece's availability went from `k` to `k + 1`.
    pub(super) fn increment(&mut self, piece: u32, k: u32) {
        let at = self.pos[piece as usize];
        if at == NONE {
            return;
        }
        let k = k as usize;
        let last = self.end(k) - 1;
        self.swap(at, last);
        if self.start.len() == k + 1 {
            self.start.push(self.order.len() as u32);
        }
        self.start[k + 1] -= 1;
    }

    /// The piece's availability went from `k` (at least 1) to `k - 1`.
    pub(super) fn decrement(&mut self, piece: u32, k: u32) {
        let at = self.pos[piece as usize];
        if at == NONE {
            return;
        }
        let k = k as usize;
        let first = self.start[k];
        self.swap(at, first);
        self.start[k] += 1;
    }

    /// Puts the piece (availability `k`) back in the queue: the mirror of
    /// [`Self::remove`], walking it down from the end through every bucket
    /// above `k`.
    pub(super) fn insert(&mut self, piece: u32, k: u32) {
        if self.pos[piece as usize] != NONE {
            return;
        }
        let k = k as usize;
        while self.start.len() <= k {
            self.start.push(self.order.len() as u32);
        }
        self.order.push(piece);
        let mut at = self.order.len() as u32 - 1;
        self.pos[piece as usize] = at;
        for j in (k + 1..self.start.len()).rev() {
            let first = self.start[j];
            self.swap(at, first);
            at = first;
            self.start[j] += 1;
        }
    }

    /// Takes the piece (availability `k`) out of the queue.
    pub(super) fn remove(&mut self, piece: u32, k: u32) {
        let at = self.pos[piece as usize];
        if at == NONE {
            return;
        }
        let k = k as usize;
        // Move the piece to the end of its bucket, then through every higher
        // bucket: each step swaps it with that bucket's last element and
        // shifts the boundary below it, so each bucket keeps its members.
        let last = self.end(k) - 1;
        self.swap(at, last);
        for j in k + 1..self.start.len() {
            let last = self.end(j) - 1;
            self.swap(self.start[j] - 1, last);
            self.start[j] -= 1;
        }
        self.order.pop();
        self.pos[piece as usize] = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// After any sequence of updates every queued piece sits in the bucket
        /// of its availability, removed pieces are gone and re-inserted ones
        /// are back.
        #[test]
        fn buckets_match_availability(
            n in 1u32..40,
            ops in proptest::collection::vec((0u32..40, 0u8..4), 0..300),
        ) {
            let mut q = RarityQueue::new(n, 0..n);
            let mut avail = vec![0u32; n as usize];
            let mut queued = vec![true; n as usize];
            for (p, op) in ops {
                let p = p % n;
                match op {
                    0 => { q.increment(p, avail[p as usize]); avail[p as usize] += 1; }
                    1 if avail[p as usize] > 0 => { q.decrement(p, avail[p as usize]); avail[p as usize] -= 1; }
                    2 => { q.remove(p, avail[p as usize]); queued[p as usize] = false; }
                    3 => { q.insert(p, avail[p as usize]); queued[p as usize] = true; }
                    _ => {}
                }
            }
            let mut seen = 0;
            for k in 0..q.bucket_count() {
                for &p in q.bucket(k) {
                    prop_assert_eq!(avail[p as usize] as usize, k);
                    prop_assert!(queued[p as usize]);
                    seen += 1;
                }
            }
            prop_assert_eq!(seen, queued.iter().filter(|q| **q).count());
            prop_assert_eq!(q.len(), seen);
            for p in 0..n {
                prop_assert_eq!(q.contains(p), queued[p as usize]);
            }
        }
    }
}
