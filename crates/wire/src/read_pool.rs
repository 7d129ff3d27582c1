//! Spare read buffers, shared by the connections a thread drives.
//!
//! A connection needs a read buffer only while bytes are arriving or a
//! frame is half read. One that waits with nothing buffered (choked,
//! seeding to nobody, or between bursts) parks its buffer here, and the
//! next connection that reads takes it. So the memory held for reading
//! follows the connections with bytes in flight, not how many are open: a
//! session with hundreds of quiet peers no longer holds a buffer for each.
//!
//! The spares are per thread, so taking and parking cost no lock; a
//! connection's task may move between tokio's workers, and the buffer
//! simply joins the spares of the thread it is parked on.

use std::cell::RefCell;

use bytes::BytesMut;

use crate::connection::READ_CHUNK;

/// Spares one thread keeps; more are freed. A few cover the connections
/// that wake on a thread between two of its parks.
const SPARES_PER_THREAD: usize = 4;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer to read into: a parked spare if the thread has one, else an
/// empty one that its first reservation sizes.
pub(crate) fn take() -> BytesMut {
    // A thread tearing down its locals gets a new buffer rather than a panic.
    SPARES
        .try_with(|spares| spares.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Parks an emptied buffer for the next reader on this thread. It is
/// freed instead when the thread keeps enough, when it grew past
/// [`READ_CHUNK`] (for a large `bitfield`, say), or when it cannot win back
/// [`READ_CHUNK`] of room because a message split off it still holds the
/// memory. So the spares hold at most `SPARES_PER_THREAD` buffers of the
/// usual size, and a message that outlives its read is not kept alive
/// by them.
pub(crate) fn park(mut buffer: BytesMut) {
    // Nothing buffered may be lost: only an emptied buffer is parked.
    debug_assert!(buffer.is_empty());
    if !buffer.try_reclaim(READ_CHUNK) || buffer.capacity() > READ_CHUNK {
        return;
    }
    let _ = SPARES.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES_PER_THREAD {
            spares.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every spare this thread keeps.
    fn take_all() -> Vec<BytesMut> {
        std::iter::from_fn(|| Some(take()))
            .take_while(|b| b.capacity() > 0)
            .collect()
    }

    #[test]
    fn a_parked_buffer_is_the_next_one_taken() {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let at = buffer.as_ptr();
        buffer.extend_from_slice(b"x");
        buffer.clear();
        park(buffer);
        let again = take();
        assert_eq!(again.as_ptr(), at);
        assert_eq!(again.capacity(), READ_CHUNK);
        assert_eq!(take().capacity(), 0, "one park, one spare");
    }

    /// The reader's usual case: every message split off the buffer has
    /// been handled and dropped when it parks, so the whole buffer is kept.
    #[test]
    fn a_buffer_whose_messages_are_gone_is_kept_whole() {
        let mut buffer = BytesMut::new();
        buffer.reserve(READ_CHUNK);
        let at = buffer.as_ptr();
        buffer.extend_from_slice(&[1; 1000]);
        drop(buffer.split_to(1000).freeze());
        park(buffer);
        let again = take();
        assert_eq!(again.as_ptr(), at);
        assert_eq!(again.capacity(), READ_CHUNK);
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_spares() {
        for _ in 0..SPARES_PER_THREAD + 3 {
            park(BytesMut::with_capacity(READ_CHUNK));
        }
        assert_eq!(take_all().len(), SPARES_PER_THREAD);
    }

    #[test]
    fn an_oversized_buffer_is_freed_not_kept() {
        park(BytesMut::with_capacity(256 * 1024));
        assert!(take_all().is_empty());
    }

    #[test]
    fn a_buffer_whose_memory_a_message_still_shares_is_freed_not_kept() {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        buffer.extend_from_slice(&[7; 100]);
        let message = buffer.split_to(100).freeze();
        park(buffer);
        assert!(take_all().is_empty());
        assert_eq!(&message[..], &[7; 100]);
    }
}
