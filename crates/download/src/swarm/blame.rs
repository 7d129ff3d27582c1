//! Whom to ban when a piece fails its hash.
//!
//! A piece sent entirely by one peer convicts that peer at once. A piece
//! with several contributors proves only that one of them lied, and with a
//! budget of open pieces smaller than the number of peers, pieces are
//! often shared. So for a shared failure we keep, per block, who sent it
//! and a digest of what they sent; once the piece passes from a later
//! download, every sender whose block differs from the good one is
//! convicted. Honest co-contributors are never punished for a liar.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

use crate::layout::{BLOCK_SIZE, PieceIndex};
use crate::picker::PeerKey;

/// Failed shared pieces remembered at once; past it the oldest record is
/// dropped (a liar then goes unconvicted for that piece only). Each costs
/// 24 bytes per block.
const MAX_SUSPECT_PIECES: usize = 64;

/// Who sent each block of a failed piece, and a digest of what they sent.
type BlockRecord = Vec<(PeerKey, [u8; 20])>;

/// Records of failed shared pieces, until they pass.
#[derive(Debug, Default)]
pub(crate) struct Blame {
    suspect: HashMap<PieceIndex, (u64, BlockRecord)>,
    /// Order of the records, for dropping the oldest.
    next_seq: u64,
}

impl Blame {
    /// The piece failed: `senders[b]` sent block `b` of `data`. Returns
    /// the peers to ban now (the sole sender, if there was one).
    pub(crate) fn piece_failed(
        &mut self,
        piece: PieceIndex,
        senders: &[PeerKey],
        data: &[u8],
    ) -> Vec<PeerKey> {
        let Some(&first) = senders.first() else {
            return Vec::new();
        };
        if senders.iter().all(|&k| k == first) {
            self.suspect.remove(&piece);
            return vec![first];
        }
        if self.suspect.len() >= MAX_SUSPECT_PIECES
            && !self.suspect.contains_key(&piece)
            && let Some(oldest) = self
                .suspect
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(&p, _)| p)
        {
            self.suspect.remove(&oldest);
        }
        let record = senders
            .iter()
            .zip(data.chunks(BLOCK_SIZE as usize))
            .map(|(&k, block)| (k, Sha1::digest(block).into()))
            .collect();
        self.next_seq += 1;
        self.suspect.insert(piece, (self.next_seq, record));
        Vec::new()
    }

    /// The piece passed with `data`: the senders of its last failure whose
    /// blocks differed from these, to ban.
    pub(crate) fn piece_verified(&mut self, piece: PieceIndex, data: &[u8]) -> Vec<PeerKey> {
        let Some((_, record)) = self.suspect.remove(&piece) else {
            return Vec::new();
        };
        let mut liars = Vec::new();
        for ((sender, digest), good) in record.iter().zip(data.chunks(BLOCK_SIZE as usize)) {
            if Sha1::digest(good).as_slice() != digest && !liars.contains(sender) {
                liars.push(*sender);
            }
        }
        liars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(i: u32) -> PieceIndex {
        let layout =
            crate::layout::Layout::new(2 * BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 8, false)])
                .unwrap();
        layout.piece(i).unwrap()
    }

    fn blocks(fill: &[u8]) -> Vec<u8> {
        fill.iter()
            .flat_map(|&b| std::iter::repeat_n(b, BLOCK_SIZE as usize))
            .collect()
    }

    #[test]
    fn a_sole_sender_is_banned_at_once() {
        let mut b = Blame::default();
        let x = PeerKey(1);
        assert_eq!(b.piece_failed(piece(0), &[x, x], &blocks(&[1, 2])), vec![x]);
        assert!(b.piece_failed(piece(0), &[], &[]).is_empty());
    }

    #[test]
    fn a_shared_failure_convicts_only_the_sender_of_the_bad_block() {
        let mut b = Blame::default();
        let (honest, liar) = (PeerKey(1), PeerKey(2));
        let good = blocks(&[1, 2]);
        let bad = blocks(&[1, 9]);
        assert!(b.piece_failed(piece(1), &[honest, liar], &bad).is_empty());
        // Another piece passing convicts no one.
        assert!(b.piece_verified(piece(2), &good).is_empty());
        assert_eq!(b.piece_verified(piece(1), &good), vec![liar]);
        // The record is gone with the verdict.
        assert!(b.piece_verified(piece(1), &good).is_empty());
    }

    #[test]
    fn records_are_bounded() {
        let mut b = Blame::default();
        let (x, y) = (PeerKey(1), PeerKey(2));
        let layout =
            crate::layout::Layout::new(BLOCK_SIZE * 2, [(u64::from(BLOCK_SIZE) * 2 * 100, false)])
                .unwrap();
        for i in 0..100 {
            let p = layout.piece(i).unwrap();
            b.piece_failed(p, &[x, y], &blocks(&[0, 0]));
        }
        assert_eq!(b.suspect.len(), MAX_SUSPECT_PIECES);
        // The oldest were dropped, the newest kept.
        let newest = layout.piece(99).unwrap();
        assert_eq!(b.piece_verified(newest, &blocks(&[1, 0])), vec![x]);
        assert!(
            b.piece_verified(layout.piece(0).unwrap(), &blocks(&[1, 1]))
                .is_empty()
        );
    }
}
