//! Learning our external IP from the BEP 42 `ip` field of answers.
//!
//! One node could lie, and one host could answer from many addresses, so a
//! voter counts by its host ([`host_of`]: an IPv4 address or an IPv6 /64),
//! once a round. The first address is believed as soon as `needed` voters
//! reported it, because a fresh node wants its BEP 42 id soon (a round of
//! [`ROUND`] voters without that agreement starts over). After that the
//! address changes only at the end of a round of [`ROUND`] voters, to the
//! one most of them reported: otherwise a handful of hostile voters
//! could flip it back and forth, and every flip gives us a new node id and
//! rebuilds the routing table. This is libtorrent's shape too: it rotates
//! its external address only after a round of votes. A real move is still
//! followed, one round after the network starts reporting it.
//!
//! Memory is bounded: [`MAX_CANDIDATES`] counts and one round's voters.

use std::collections::HashSet;
use std::net::IpAddr;

use lodestone_core::host_of;

/// Addresses tallied at once; a new one replaces the least reported.
const MAX_CANDIDATES: usize = 8;

/// Voters per round once an address is believed.
const ROUND: usize = 32;

/// Votes for our external IP, of one address family.
#[derive(Debug, Clone)]
pub struct IpVotes {
    needed: usize,
    believed: Option<IpAddr>,
    tally: Vec<(IpAddr, usize)>,
    voted: HashSet<IpAddr>,
}

impl IpVotes {
    /// A fresh ballot; an address needs `needed` voters (at least 1).
    pub fn new(needed: usize) -> Self {
        Self {
            needed: needed.max(1),
            believed: None,
            tally: Vec::new(),
            voted: HashSet::new(),
        }
    }

    /// Records that `voter` saw us as `reported`. Returns the address when
    /// this vote makes it the one believed, in place of none or another.
    pub fn vote(&mut self, reported: IpAddr, voter: IpAddr) -> Option<IpAddr> {
        if !self.voted.insert(host_of(voter)) {
            return None;
        }
        let count = self.count(reported);
        let decided = match self.believed {
            None if count >= self.needed => Some(reported),
            _ if self.voted.len() < ROUND => return None,
            // A round without agreement (a NAT with several public
            // addresses, say) starts over rather than remember every voter.
            None => None,
            Some(_) => self.leader(),
        };
        self.tally.clear();
        self.voted.clear();
        let changed = decided.filter(|ip| self.believed != Some(*ip));
        if changed.is_some() {
            self.believed = changed;
        }
        changed
    }

    /// Adds one vote for `ip` and returns its count this round.
    fn count(&mut self, ip: IpAddr) -> usize {
        if let Some((_, count)) = self
            .tally
            .iter_mut()
            .find(|(candidate, _)| *candidate == ip)
        {
            *count += 1;
            return *count;
        }
        if self.tally.len() >= MAX_CANDIDATES
            && let Some((weakest, _)) = self.tally.iter().enumerate().min_by_key(|(_, (_, n))| *n)
        {
            self.tally.swap_remove(weakest);
        }
        self.tally.push((ip, 1));
        1
    }

    /// The round's most reported address, if it had `needed` voters; a tie
    /// keeps the address believed.
    fn leader(&self) -> Option<IpAddr> {
        let votes_for = |ip: Option<IpAddr>| {
            self.tally
                .iter()
                .find(|(candidate, _)| Some(*candidate) == ip)
                .map_or(0, |(_, count)| *count)
        };
        let (ip, count) = self.tally.iter().max_by_key(|(_, count)| *count)?;
        (*count >= self.needed && *count > votes_for(self.believed)).then_some(*ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(i: u8) -> IpAddr {
        IpAddr::from([9, 9, 9, i])
    }

    /// Believes `me` after three voters, as a fresh node does.
    fn believing(me: IpAddr) -> IpVotes {
        let mut votes = IpVotes::new(3);
        assert_eq!(votes.vote(me, voter(1)), None);
        assert_eq!(votes.vote(me, voter(2)), None);
        assert_eq!(votes.vote(me, voter(3)), Some(me));
        votes
    }

    #[test]
    fn needs_distinct_voters() {
        let mut votes = IpVotes::new(3);
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(votes.vote(me, voter(1)), None);
        assert_eq!(votes.vote(me, voter(1)), None);
        assert_eq!(votes.vote("6.6.6.6".parse().unwrap(), voter(2)), None);
        // Voter 2 has had its say this round.
        assert_eq!(votes.vote(me, voter(2)), None);
        assert_eq!(votes.vote(me, voter(3)), None);
        assert_eq!(votes.vote(me, voter(4)), Some(me));
    }

    #[test]
    fn one_ipv6_host_is_one_voter() {
        let mut votes = IpVotes::new(3);
        let me: IpAddr = "2001:db8::7".parse().unwrap();
        for i in 1..=100u16 {
            let same_slash_64 = IpAddr::from([0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, i]);
            assert_eq!(votes.vote(me, same_slash_64), None);
        }
    }

    /// Three hostile voters won the moment they had voted, and each flip
    /// made a new node id.
    #[test]
    fn a_few_liars_do_not_move_a_believed_address() {
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        let lie: IpAddr = "6.6.6.6".parse().unwrap();
        let mut votes = believing(me);
        for round in 0..4u8 {
            for i in 0..32u8 {
                let (reported, who) = if i < 5 {
                    (lie, IpAddr::from([66, round, 0, i]))
                } else {
                    (me, IpAddr::from([10, round, 0, i]))
                };
                assert_eq!(votes.vote(reported, who), None, "round {round} vote {i}");
            }
        }
    }

    #[test]
    fn a_real_move_is_followed_after_a_round() {
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        let moved: IpAddr = "5.6.7.8".parse().unwrap();
        let mut votes = believing(me);
        for i in 0..31u8 {
            let reported = if i < 12 { me } else { moved };
            assert_eq!(votes.vote(reported, IpAddr::from([10, 0, 0, i])), None);
        }
        assert_eq!(votes.vote(moved, voter(200)), Some(moved));
    }

    #[test]
    fn a_round_without_agreement_starts_over() {
        let mut votes = IpVotes::new(3);
        for i in 0..=255u8 {
            let (reported, who) = (IpAddr::from([5, 5, 5, i]), IpAddr::from([10, 0, 0, i]));
            assert_eq!(votes.vote(reported, who), None);
            assert!(votes.voted.len() < ROUND);
        }
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(votes.vote(me, voter(1)), None);
        assert_eq!(votes.vote(me, voter(2)), None);
        assert_eq!(votes.vote(me, voter(3)), Some(me));
    }

    #[test]
    fn a_tied_round_keeps_the_address() {
        let me: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "5.6.7.8".parse().unwrap();
        let mut votes = believing(me);
        for i in 0..32u8 {
            let reported = if i % 2 == 0 { me } else { other };
            assert_eq!(votes.vote(reported, IpAddr::from([10, 0, 0, i])), None);
        }
    }
}
