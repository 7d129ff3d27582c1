//! Piece buffers being filled block by block.
//!
//! A piece's buffer is allocated (or reused) when its first block arrives
//! and handed to the hash pool when the picker says it is complete; it
//! comes back with the verdict. Memory is bounded by the pieces open in
//! the picker (its open limit), not by the torrent's size or the peers.

use std::collections::{HashMap, HashSet};

use crate::layout::{BlockIndex, Layout, PieceIndex};

/// Buffers (in use or spare) kept when no limit is set: spares are reused
/// so the allocator does not churn piece-sized blocks.
const DEFAULT_BUFFER_LIMIT: usize = 4;

/// The pieces under assembly of one torrent.
#[derive(Debug)]
pub(crate) struct Assembly {
    filling: HashMap<PieceIndex, Vec<u8>>,
    /// Pieces at the hash pool.
    hashing: HashSet<PieceIndex>,
    spare: Vec<Vec<u8>>,
    /// Spares are kept only while buffers in use plus spares stay below it.
    buffer_limit: usize,
}

impl Default for Assembly {
    fn default() -> Self {
        Self {
            filling: HashMap::new(),
            hashing: HashSet::new(),
            spare: Vec::new(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
        }
    }
}

impl Assembly {
    /// Keeps spare buffers only while in-use plus spare stay below
    /// `buffers`: the picker's open limit, so reuse never adds memory.
    pub(crate) fn set_buffer_limit(&mut self, buffers: usize) {
        self.buffer_limit = buffers;
    }

    /// Copies an accepted block into its piece's buffer. `data` must be the
    /// block's exact length (checked by [`Layout::block_at`]).
    pub(crate) fn put(&mut self, layout: &Layout, block: BlockIndex, data: &[u8]) {
        let piece = block.piece();
        let filling = self.filling.entry(piece).or_insert_with(|| {
            let mut buffer = self.spare.pop().unwrap_or_default();
            buffer.resize(layout.piece_len(piece) as usize, 0);
            buffer
        });
        let begin = block.begin() as usize;
        if let Some(dst) = filling.get_mut(begin..begin + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    /// The complete piece's bytes, to hash.
    pub(crate) fn take(&mut self, piece: PieceIndex) -> Option<Vec<u8>> {
        let data = self.filling.remove(&piece)?;
        self.hashing.insert(piece);
        Some(data)
    }

    /// The verdict on a piece is in: the buffer comes back.
    pub(crate) fn finished(&mut self, piece: PieceIndex, buffer: Vec<u8>) {
        // The finished piece still counts in `hashing` here.
        let kept = self.spare.len() + self.filling.len() + self.hashing.len();
        if kept <= self.buffer_limit {
            self.spare.push(buffer);
        }
        self.hashing.remove(&piece);
    }

    /// Pieces at the hash pool.
    pub(crate) fn hashing(&self) -> usize {
        self.hashing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::BLOCK_SIZE;

    #[test]
    fn assembles_and_reuses_buffers() {
        let layout = Layout::new(2 * BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 3, false)]).unwrap();
        let p0 = layout.piece(0).unwrap();
        let p1 = layout.piece(1).unwrap();
        let mut a = Assembly::default();
        a.put(
            &layout,
            layout.block(p0, 1).unwrap(),
            &[2; BLOCK_SIZE as usize],
        );
        a.put(
            &layout,
            layout.block(p0, 0).unwrap(),
            &[1; BLOCK_SIZE as usize],
        );
        a.put(
            &layout,
            layout.block(p1, 0).unwrap(),
            &[3; BLOCK_SIZE as usize],
        );
        let data = a.take(p0).unwrap();
        assert_eq!(data.len(), 2 * BLOCK_SIZE as usize);
        assert!(data[..BLOCK_SIZE as usize].iter().all(|&b| b == 1));
        assert!(data[BLOCK_SIZE as usize..].iter().all(|&b| b == 2));
        assert_eq!(a.hashing(), 1);
        a.finished(p0, data);
        assert_eq!((a.hashing(), a.spare.len()), (0, 1));
        // The last piece is shorter; the reused buffer is resized.
        let last = a.take(p1).unwrap();
        assert_eq!(last.len(), BLOCK_SIZE as usize);
        a.finished(p1, last);
        assert!(a.take(p1).is_none());
    }

    #[test]
    fn spares_stay_within_the_buffer_limit() {
        let layout = Layout::new(BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 8, false)]).unwrap();
        let mut a = Assembly::default();
        a.set_buffer_limit(2);
        let pieces: Vec<_> = (0..4).map(|i| layout.piece(i).unwrap()).collect();
        for &p in &pieces {
            a.put(
                &layout,
                layout.block(p, 0).unwrap(),
                &[0; BLOCK_SIZE as usize],
            );
        }
        let buffers: Vec<_> = pieces.iter().map(|&p| a.take(p).unwrap()).collect();
        for (&p, b) in pieces.iter().zip(buffers) {
            a.finished(p, b);
        }
        assert_eq!(a.spare.len(), 2);
    }
}
