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

/// Spares one thread keeps; more are freed. A few cover the connections
/// that wake on a thread between two of its parks, and at 32 KiB each the
/// memory they hold stays small against a torrent's pieces.
const SPARES_PER_THREAD: usize = 4;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer to read into: a parked spare if the thread has one (it may
/// still share its allocation with messages split off it, which
/// `BytesMut::reserve` handles), else an empty one to be sized by its
/// first reservation.
pub(crate) fn take() -> BytesMut {
    SPARES.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Parks an emptied buffer for the next reader on this thread, or frees
/// it when the thread already keeps enough.
pub(crate) fn park(mut buffer: BytesMut) {
    // Nothing buffered may be lost: only an emptied buffer is parked.
    debug_assert!(buffer.is_empty());
    buffer.clear();
    SPARES.with_borrow_mut(|spares| {
        if spares.len() < SPARES_PER_THREAD {
            spares.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_buffer_is_the_next_one_taken() {
        let mut buffer = BytesMut::with_capacity(1000);
        let at = buffer.as_ptr();
        buffer.extend_from_slice(b"x");
        buffer.clear();
        park(buffer);
        let again = take();
        assert_eq!(again.as_ptr(), at);
        assert!(again.capacity() >= 1000);
        assert_eq!(take().capacity(), 0, "one park, one spare");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_spares() {
        for _ in 0..SPARES_PER_THREAD + 3 {
            park(BytesMut::with_capacity(64));
        }
        let kept = std::iter::from_fn(|| Some(take()))
            .take_while(|b| b.capacity() > 0)
            .count();
        assert_eq!(kept, SPARES_PER_THREAD);
    }
}
