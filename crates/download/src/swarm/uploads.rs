//! The requests a peer made of us, waiting to be read from disk and sent.
//!
//! Pure bookkeeping with a hard bound: a peer may queue at most
//! [`MAX_QUEUED`] requests (what we advertise as `reqq`); more are refused,
//! so a peer cannot make us buffer without limit. Requests are kept as
//! offsets only; the data is read in small batches just before sending.

use std::collections::VecDeque;

use lodestone_wire::BlockRequest;

use crate::layout::Layout;

/// Most requests one peer may have queued with us.
pub(crate) const MAX_QUEUED: usize = 256;

/// Requests read from disk in one blocking job.
pub(crate) const READ_BATCH: usize = 16;

/// What to do with a request the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queued; it will be served.
    Queued,
    /// Not served (we choke the peer, lack the piece, or the queue is full):
    /// answer with `reject` if the fast extension is on, else ignore.
    Refused,
    /// The offsets do not describe a block of this torrent: the peer is
    /// broken or hostile.
    Invalid,
}

/// A request validated against the layout, to be read from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// The block as the peer asked for it.
    pub request: BlockRequest,
    /// Where its bytes start in the torrent's byte stream.
    pub offset: u64,
}

/// One peer's queue of requests to serve.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    queue: VecDeque<ReadRequest>,
}

impl Uploads {
    /// Judges and maybe queues a request. `can_serve(piece)` says whether we
    /// unchoke the peer and have the piece on disk.
    pub(crate) fn admit(
        &mut self,
        layout: &Layout,
        request: BlockRequest,
        can_serve: impl FnOnce(u32) -> bool,
    ) -> Admission {
        let Some(offset) = layout.request_offset(request.index, request.begin, request.length)
        else {
            return Admission::Invalid;
        };
        if self.queue.len() >= MAX_QUEUED || !can_serve(request.index) {
            return Admission::Refused;
        }
        self.queue.push_back(ReadRequest { request, offset });
        Admission::Queued
    }

    /// The peer cancelled: drop the request if it is still queued.
    pub(crate) fn cancel(&mut self, request: BlockRequest) -> bool {
        let before = self.queue.len();
        self.queue.retain(|p| p.request != request);
        before != self.queue.len()
    }

    /// Empties the queue (we choked the peer); returns what was dropped.
    pub(crate) fn clear(&mut self) -> Vec<BlockRequest> {
        self.queue.drain(..).map(|p| p.request).collect()
    }

    /// The next requests to read, at most [`READ_BATCH`].
    pub(crate) fn next_batch(&mut self) -> Vec<ReadRequest> {
        let n = self.queue.len().min(READ_BATCH);
        self.queue.drain(..n).collect()
    }

    /// Requests queued.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::BLOCK_SIZE;

    fn req(index: u32, begin: u32, length: u32) -> BlockRequest {
        BlockRequest {
            index,
            begin,
            length,
        }
    }

    #[test]
    fn validates_bounds_and_caps_the_queue() {
        let layout =
            Layout::new(2 * BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 3 + 10, false)]).unwrap();
        let mut u = Uploads::default();
        let yes = |_| true;
        assert_eq!(
            u.admit(&layout, req(0, 0, BLOCK_SIZE), yes),
            Admission::Queued
        );
        assert_eq!(
            u.admit(&layout, req(1, BLOCK_SIZE, 10), yes),
            Admission::Queued
        );
        assert_eq!(
            u.admit(&layout, req(1, BLOCK_SIZE, 11), yes),
            Admission::Invalid
        );
        assert_eq!(u.admit(&layout, req(2, 0, 1), yes), Admission::Invalid);
        assert_eq!(
            u.admit(&layout, req(0, 0, BLOCK_SIZE + 1), yes),
            Admission::Invalid
        );
        assert_eq!(
            u.admit(&layout, req(0, u32::MAX, 2), yes),
            Admission::Invalid
        );
        assert_eq!(u.admit(&layout, req(0, 0, 0), yes), Admission::Invalid);
        assert_eq!(
            u.admit(&layout, req(0, 0, 100), |_| false),
            Admission::Refused
        );
        let batch = u.next_batch();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].offset, 3 * u64::from(BLOCK_SIZE));
        for _ in 0..MAX_QUEUED {
            assert_eq!(u.admit(&layout, req(0, 0, 1), yes), Admission::Queued);
        }
        assert_eq!(u.admit(&layout, req(0, 0, 1), yes), Admission::Refused);
        assert!(u.cancel(req(0, 0, 1)));
        assert!(u.is_empty());
        assert!(!u.cancel(req(0, 0, 1)));
    }

    #[test]
    fn clear_returns_dropped_requests() {
        let layout = Layout::new(BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 2, false)]).unwrap();
        let mut u = Uploads::default();
        u.admit(&layout, req(1, 0, 5), |_| true);
        assert_eq!(u.clear(), vec![req(1, 0, 5)]);
        assert!(u.next_batch().is_empty());
    }
}
