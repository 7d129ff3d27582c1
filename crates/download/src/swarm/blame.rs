//! Whom to ban when a piece fails its hash.
//!
//! A piece sent entirely by one peer convicts that peer at once. A piece
//! with several contributors proves only that one of them lied, so each
//! gets a strike, and [`MAX_STRIKES`] strikes ban. In practice pieces are
//! rarely shared (the picker hands whole pieces to one peer), so a liar is
//! usually caught on its first bad piece.

use std::collections::HashMap;

use crate::picker::PeerKey;

/// Strikes from shared failed pieces that ban a peer.
pub(crate) const MAX_STRIKES: u32 = 3;

/// Hash-failure strikes against the connected peers.
#[derive(Debug, Default)]
pub(crate) struct Blame {
    strikes: HashMap<PeerKey, u32>,
}

impl Blame {
    /// A piece from `contributors` failed: the peers to ban now.
    pub(crate) fn piece_failed(&mut self, contributors: &[PeerKey]) -> Vec<PeerKey> {
        if let [only] = contributors {
            return vec![*only];
        }
        contributors
            .iter()
            .copied()
            .filter(|k| {
                let n = self.strikes.entry(*k).or_default();
                *n += 1;
                *n >= MAX_STRIKES
            })
            .collect()
    }

    /// The peer is gone; its record with it.
    pub(crate) fn forget(&mut self, peer: PeerKey) {
        self.strikes.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sole_sender_is_banned_shared_failures_accumulate() {
        let mut b = Blame::default();
        let (x, y) = (PeerKey(1), PeerKey(2));
        assert_eq!(b.piece_failed(&[x]), vec![x]);
        assert!(b.piece_failed(&[x, y]).is_empty());
        assert!(b.piece_failed(&[y, x]).is_empty());
        assert_eq!(b.piece_failed(&[x, y]), vec![x, y]);
        b.forget(x);
        assert_eq!(b.piece_failed(&[x, y]), vec![y], "only y still has strikes");
        assert!(b.piece_failed(&[]).is_empty());
    }
}
