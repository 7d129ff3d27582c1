//! Learning our external IP from the BEP 42 `ip` field of answers.
//!
//! One node could lie, so an address wins only once `needed` distinct voters
//! (by IP) reported it. Memory is bounded: a few candidates, each with at most
//! `needed` voters remembered.

use std::net::IpAddr;

const MAX_CANDIDATES: usize = 8;

/// Votes for our external IP.
#[derive(Debug, Clone)]
pub struct IpVotes {
    needed: usize,
    candidates: Vec<(IpAddr, Vec<IpAddr>)>,
}

impl IpVotes {
    /// A fresh ballot; an address needs `needed` distinct voters (at least 1).
    pub fn new(needed: usize) -> Self {
        Self {
            needed: needed.max(1),
            candidates: Vec::new(),
        }
    }

    /// Records that `voter` saw us as `reported`. Returns the winner when this
    /// vote decides; the ballot then starts over.
    pub fn vote(&mut self, reported: IpAddr, voter: IpAddr) -> Option<IpAddr> {
        let index = match self.candidates.iter().position(|(ip, _)| *ip == reported) {
            Some(i) => i,
            None => {
                if self.candidates.len() >= MAX_CANDIDATES {
                    // Forget the least supported candidate.
                    let weakest = (0..self.candidates.len())
                        .min_by_key(|&i| self.candidates[i].1.len())
                        .unwrap_or(0);
                    self.candidates.swap_remove(weakest);
                }
                self.candidates.push((reported, Vec::new()));
                self.candidates.len() - 1
            }
        };
        let voters = &mut self.candidates[index].1;
        if !voters.contains(&voter) {
            voters.push(voter);
        }
        if voters.len() >= self.needed {
            self.candidates.clear();
            return Some(reported);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_distinct_voters() {
        let mut votes = IpVotes::new(3);
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        let v = |i: u8| IpAddr::from([9, 9, 9, i]);
        assert_eq!(votes.vote(me, v(1)), None);
        assert_eq!(votes.vote(me, v(1)), None);
        assert_eq!(votes.vote("6.6.6.6".parse().unwrap(), v(2)), None);
        assert_eq!(votes.vote(me, v(2)), None);
        assert_eq!(votes.vote(me, v(3)), Some(me));
        assert_eq!(votes.vote(me, v(4)), None);
    }
}
