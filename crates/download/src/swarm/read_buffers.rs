//! One peer's upload read buffers, used again once the socket is done with
//! them.
//!
//! Each storage read for a peer fills one buffer, and the blocks it holds
//! go to the socket as slices of it; the buffer is free again once the last
//! slice is written. A fresh buffer per batch cost a TCP seeder about 5 %
//! of its samples in zeroing alone (`perf`, a 256 MiB upload): std has no
//! safe read into uninitialised memory, and the workspace forbids `unsafe`,
//! so every new buffer is zeroed before the read overwrites it. A buffer
//! used again is overwritten as it is.
//!
//! Slices are written in the order they were read, so the oldest buffer
//! kept is the first to come free: only it is looked at. Buffers are kept
//! only while the peer is being served (see [`ReadBuffers::clear`]); those
//! still in flight are memory the socket's queue holds anyway.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::session::UPLOAD_BUFFER;
use super::uploads::READ_BATCH;
use crate::layout::BLOCK_SIZE;

/// Buffers kept at most: as many batches as the session lets queue for the
/// socket, plus the one being read.
const MAX_KEPT: usize = UPLOAD_BUFFER / (READ_BATCH * BLOCK_SIZE as usize) + 1;

/// The buffers of one peer's recent reads, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffers {
    kept: VecDeque<Bytes>,
}

impl ReadBuffers {
    /// A buffer of `len` bytes to read into: the oldest kept one if nothing
    /// refers to it any more, else a new one.
    pub(crate) fn take(&mut self, len: usize) -> BytesMut {
        match self.kept.pop_front().map(Bytes::try_into_mut) {
            Some(Ok(mut buffer)) => {
                // Zeroes only what grows past the buffer's last length.
                buffer.resize(len, 0);
                buffer
            }
            Some(Err(in_flight)) => {
                self.kept.push_front(in_flight);
                BytesMut::zeroed(len)
            }
            // Zeroed by the allocator, which may have fresh pages at hand.
            None => BytesMut::zeroed(len),
        }
    }

    /// Keeps a read's whole buffer, whose slices are on their way out.
    pub(crate) fn keep(&mut self, buffer: Bytes) {
        if self.kept.len() >= MAX_KEPT {
            // Still in flight (the oldest is freed first): the socket's
            // queue keeps it alive until it is written.
            self.kept.pop_front();
        }
        self.kept.push_back(buffer);
    }

    /// Lets go of every buffer: call when the peer has nothing left to be
    /// served, so an idle connection holds none.
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = READ_BATCH * BLOCK_SIZE as usize;

    /// Reads a batch the way the peer task does: fills the buffer, freezes
    /// it, keeps it, and returns a block's slice as the socket would hold it.
    fn read(buffers: &mut ReadBuffers, len: usize, fill: u8) -> Bytes {
        let mut buffer = buffers.take(len);
        buffer.fill(fill);
        let whole = buffer.freeze();
        buffers.keep(whole.clone());
        whole.slice(..BLOCK_SIZE as usize)
    }

    #[test]
    fn a_buffer_comes_back_once_its_slices_are_written() {
        let mut buffers = ReadBuffers::default();
        let sent = read(&mut buffers, LEN, 1);
        let first = sent.as_ptr();
        drop(sent);
        let again = buffers.take(LEN);
        assert_eq!(again.as_ptr(), first, "the written buffer is used again");
        assert_eq!(again.len(), LEN);
        assert!(again.iter().all(|&b| b == 1), "used as it is, not zeroed");
    }

    #[test]
    fn a_buffer_still_in_flight_is_not_used_again() {
        let mut buffers = ReadBuffers::default();
        let sent = read(&mut buffers, LEN, 1);
        let fresh = buffers.take(LEN);
        assert_ne!(fresh.as_ptr(), sent.as_ptr());
        assert!(fresh.iter().all(|&b| b == 0));
        assert!(
            sent.iter().all(|&b| b == 1),
            "the slice in flight is intact"
        );
    }

    #[test]
    fn a_shorter_or_longer_batch_gets_its_own_length() {
        let mut buffers = ReadBuffers::default();
        drop(read(&mut buffers, LEN, 1));
        let short = buffers.take(LEN / 2);
        assert_eq!(short.len(), LEN / 2);
        buffers.keep(short.freeze());
        let long = buffers.take(LEN);
        assert_eq!(long.len(), LEN);
        assert!(
            long[LEN / 2..].iter().all(|&b| b == 0),
            "the growth is zeroed"
        );
    }

    #[test]
    fn at_most_max_kept_buffers_are_kept_and_clear_lets_go_of_them() {
        let mut buffers = ReadBuffers::default();
        let in_flight: Vec<Bytes> = (0..MAX_KEPT + 3)
            .map(|i| read(&mut buffers, LEN, i as u8))
            .collect();
        assert_eq!(buffers.kept.len(), MAX_KEPT);
        drop(in_flight);
        buffers.clear();
        assert!(buffers.kept.is_empty());
    }
}
