//! Piece buffers being filled block by block, and who filled them.
//!
//! A piece's buffer is allocated (or reused) when its first block arrives
//! and handed to the hash pool when the picker says it is complete; the
//! contributors are kept until the verdict so a failed hash can be blamed.
//! Memory is bounded by the pieces with blocks in flight, which the request
//! pipelines bound, not by the torrent's size.

use std::collections::HashMap;

use crate::layout::{BlockIndex, Layout, PieceIndex};
use crate::picker::PeerKey;

/// Spare buffers kept for reuse.
const MAX_SPARE: usize = 4;

#[derive(Debug, Default)]
struct Filling {
    data: Vec<u8>,
    contributors: Vec<PeerKey>,
}

/// The pieces under assembly of one torrent.
#[derive(Debug, Default)]
pub(crate) struct Assembly {
    filling: HashMap<PieceIndex, Filling>,
    /// Contributors of pieces at the hash pool.
    hashing: HashMap<PieceIndex, Vec<PeerKey>>,
    spare: Vec<Vec<u8>>,
}

impl Assembly {
    /// Copies an accepted block into its piece's buffer. `data` must be the
    /// block's exact length (checked by [`Layout::block_at`]).
    pub(crate) fn put(&mut self, layout: &Layout, block: BlockIndex, data: &[u8], from: PeerKey) {
        let piece = block.piece();
        let filling = self.filling.entry(piece).or_insert_with(|| {
            let mut data = self.spare.pop().unwrap_or_default();
            data.resize(layout.piece_len(piece) as usize, 0);
            Filling {
                data,
                contributors: Vec::new(),
            }
        });
        let begin = block.begin() as usize;
        if let Some(dst) = filling.data.get_mut(begin..begin + data.len()) {
            dst.copy_from_slice(data);
        }
        if !filling.contributors.contains(&from) {
            filling.contributors.push(from);
        }
    }

    /// The complete piece's bytes, to hash; its contributors are remembered.
    pub(crate) fn take(&mut self, piece: PieceIndex) -> Option<Vec<u8>> {
        let filling = self.filling.remove(&piece)?;
        self.hashing.insert(piece, filling.contributors);
        Some(filling.data)
    }

    /// The verdict on a piece is in: its contributors, and the buffer back.
    pub(crate) fn finished(&mut self, piece: PieceIndex, buffer: Vec<u8>) -> Vec<PeerKey> {
        if self.spare.len() < MAX_SPARE {
            self.spare.push(buffer);
        }
        self.hashing.remove(&piece).unwrap_or_default()
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
    fn assembles_and_blames() {
        let layout = Layout::new(2 * BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 3, false)]).unwrap();
        let p0 = layout.piece(0).unwrap();
        let p1 = layout.piece(1).unwrap();
        let mut a = Assembly::default();
        let (k1, k2) = (PeerKey(1), PeerKey(2));
        a.put(
            &layout,
            layout.block(p0, 1).unwrap(),
            &[2; BLOCK_SIZE as usize],
            k1,
        );
        a.put(
            &layout,
            layout.block(p0, 0).unwrap(),
            &[1; BLOCK_SIZE as usize],
            k2,
        );
        a.put(
            &layout,
            layout.block(p1, 0).unwrap(),
            &[3; BLOCK_SIZE as usize],
            k1,
        );
        let data = a.take(p0).unwrap();
        assert_eq!(data.len(), 2 * BLOCK_SIZE as usize);
        assert!(data[..BLOCK_SIZE as usize].iter().all(|&b| b == 1));
        assert!(data[BLOCK_SIZE as usize..].iter().all(|&b| b == 2));
        assert_eq!(a.hashing(), 1);
        assert_eq!(a.finished(p0, data), vec![k1, k2]);
        assert_eq!(a.hashing(), 0);
        // The last piece is shorter; the reused buffer is resized.
        let last = a.take(p1).unwrap();
        assert_eq!(last.len(), BLOCK_SIZE as usize);
        assert_eq!(a.finished(p1, last), vec![k1]);
        assert!(a.take(p1).is_none());
    }
}
