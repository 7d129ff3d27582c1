//! BEP 12 tiers: the trackers of one tier are tried in a shuffled order,
//! and one that answers moves to the front, so the next announce goes to
//! it first.

use std::collections::HashSet;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::announce::{Announce, AnnounceReply};
use crate::client::{Client, Tracker};
use crate::error::TrackerError;

/// Most trackers kept in one tier, and most tiers kept for a torrent: a
/// metainfo listing thousands of trackers must not make us announce to
/// them all.
pub const MAX_TRACKERS: usize = 16;

/// One tier: its trackers in the order they are tried.
#[derive(Debug)]
pub struct Tier {
    trackers: Vec<Tracker>,
}

impl Tier {
    /// A tier of the URLs we can speak (others are left out), shuffled
    /// with `rng`, at most [`MAX_TRACKERS`].
    pub fn new(urls: &[String], rng: &mut impl Rng) -> Tier {
        let mut trackers: Vec<Tracker> = urls
            .iter()
            .filter_map(|u| Tracker::parse(u).ok())
            .take(MAX_TRACKERS)
            .collect();
        trackers.shuffle(rng);
        Tier { trackers }
    }

    /// Whether no tracker of the tier can be used.
    pub fn is_empty(&self) -> bool {
        self.trackers.is_empty()
    }

    /// The trackers in the order they are tried now.
    pub fn trackers(&self) -> &[Tracker] {
        &self.trackers
    }

    /// Announces to the tier's trackers in order until one answers, then
    /// moves that one to the front. Returns its reply, or the last error
    /// when none answered.
    pub async fn announce(
        &mut self,
        client: &Client,
        a: &Announce,
    ) -> Result<AnnounceReply, TrackerError> {
        let mut last = TrackerError::UnsupportedUrl("(an empty tier)".into());
        for i in 0..self.trackers.len() {
            match self.trackers[i].announce(client, a).await {
                Ok(reply) => {
                    promote(&mut self.trackers, i);
                    return Ok(reply);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The tracker at the front: the one that answered last.
    pub fn front_mut(&mut self) -> Option<&mut Tracker> {
        self.trackers.first_mut()
    }
}

/// Moves the `i`-th item to the front, keeping the others' order.
fn promote<T>(items: &mut [T], i: usize) {
    if let Some(head) = items.get_mut(..=i) {
        head.rotate_right(1);
    }
}

/// The tiers of a torrent: a metainfo's `announce-list`, else its
/// `announce` alone. A magnet's `tr=` trackers come with no tiers; each is
/// a tier of its own, as every tracker named is meant to be tried.
pub fn tiers_of(
    announce: Option<&str>,
    announce_list: &[Vec<String>],
    magnet_trackers: &[String],
    rng: &mut impl Rng,
) -> Vec<Tier> {
    let mut lists: Vec<Vec<String>> = if announce_list.is_empty() {
        announce.map(|a| vec![a.to_owned()]).into_iter().collect()
    } else {
        announce_list.to_vec()
    };
    // A set, not a search of the lists so far: a magnet link may name
    // tens of thousands of trackers.
    let mut named: HashSet<&str> = lists.iter().flatten().map(String::as_str).collect();
    let mut added = Vec::new();
    for tr in magnet_trackers {
        if named.insert(tr) {
            added.push(vec![tr.clone()]);
        }
    }
    lists.extend(added);
    lists
        .iter()
        .map(|urls| Tier::new(urls, rng))
        .filter(|t| !t.is_empty())
        .take(MAX_TRACKERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn promote_moves_one_to_the_front_and_keeps_the_rest() {
        let mut v = vec![1, 2, 3, 4];
        promote(&mut v, 2);
        assert_eq!(v, [3, 1, 2, 4]);
        promote(&mut v, 0);
        assert_eq!(v, [3, 1, 2, 4]);
        promote(&mut v, 9);
        assert_eq!(v, [3, 1, 2, 4]);
    }

    #[test]
    fn tiers_come_from_the_announce_list_then_the_magnet() {
        let mut rng = StdRng::seed_from_u64(1);
        let list = vec![
            vec!["http://a/announce".to_owned(), "udp://b:80".to_owned()],
            vec!["wss://c".to_owned()],
            vec!["http://d/announce".to_owned()],
        ];
        let tr = ["udp://b:80".to_owned(), "udp://e:1".to_owned()];
        let tiers = tiers_of(Some("http://ignored/announce"), &list, &tr, &mut rng);
        let urls: Vec<Vec<String>> = tiers
            .iter()
            .map(|t| {
                let mut u: Vec<String> = t.trackers().iter().map(|t| t.url().to_string()).collect();
                u.sort();
                u
            })
            .collect();
        assert_eq!(
            urls,
            [
                vec!["http://a/announce".to_owned(), "udp://b:80".to_owned()],
                vec!["http://d/announce".to_owned()],
                vec!["udp://e:1".to_owned()],
            ]
        );
    }

    #[test]
    fn announce_alone_is_one_tier_and_huge_lists_are_capped() {
        let mut rng = StdRng::seed_from_u64(2);
        let tiers = tiers_of(Some("http://a/announce"), &[], &[], &mut rng);
        assert_eq!(tiers.len(), 1);
        let many: Vec<Vec<String>> = (0..100)
            .map(|i| (0..100).map(|j| format!("udp://t{i}-{j}:1")).collect())
            .collect();
        let tiers = tiers_of(None, &many, &[], &mut rng);
        assert_eq!(tiers.len(), MAX_TRACKERS);
        assert!(tiers.iter().all(|t| t.trackers().len() == MAX_TRACKERS));
    }

    /// Tens of thousands of `tr=` are deduplicated in linear time: checking
    /// each against the tiers so far took minutes (a hang, not a failure,
    /// is what a return of that would show here).
    #[test]
    fn a_magnet_naming_many_trackers_is_deduplicated_quickly() {
        let mut rng = StdRng::seed_from_u64(3);
        let tr: Vec<String> = (0..200_000)
            .map(|i| format!("udp://t{}:1", i % 100_000))
            .collect();
        let tiers = tiers_of(None, &[], &tr, &mut rng);
        let urls: Vec<String> = tiers
            .iter()
            .map(|t| t.trackers()[0].url().to_string())
            .collect();
        let first: Vec<String> = (0..MAX_TRACKERS).map(|i| format!("udp://t{i}:1")).collect();
        assert_eq!(urls, first);
    }
}
