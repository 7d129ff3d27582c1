//! Whom we upload to: the BEP 3 choking policy, as a pure function of peer
//! statistics and `now`.
//!
//! Every 10 s the interested peers are ranked by the rate they give us
//! (while downloading) or the rate we reach to them (while seeding), and the
//! best four are unchoked: reciprocation, and few enough uploads for TCP to
//! behave. Every 30 s one more interested peer is unchoked regardless of
//! rate (optimistic unchoke), so newcomers get a chance to prove themselves;
//! peers connected for less than one rotation are three times as likely to
//! be chosen. Rate-based decisions change only on those ticks, which avoids
//! fibrillation; between them only peers that left or lost interest are
//! dropped, and their free slots are filled at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::picker::PeerKey;

/// What the choker needs to know about one connected peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerStats {
    /// The peer.
    pub peer: PeerKey,
    /// It told us it is interested in our pieces.
    pub interested: bool,
    /// Bytes per second we receive from it.
    pub download_rate: f64,
    /// Bytes per second we send to it.
    pub upload_rate: f64,
    /// When the connection was established.
    pub connected_at: Instant,
}

/// Tuning of the choker; [`ChokerConfig::default`] is BEP 3's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Peers unchoked for their rate (4).
    pub slots: usize,
    /// How often the rate-based choice is remade (10 s).
    pub interval: Duration,
    /// How often the optimistic unchoke rotates (30 s).
    pub optimistic_interval: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
        }
    }
}

/// Messages to send after a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChokeChanges {
    /// Send `unchoke` to these peers.
    pub unchoke: Vec<PeerKey>,
    /// Send `choke` to these peers.
    pub choke: Vec<PeerKey>,
}

/// The choking state of one torrent.
#[derive(Debug)]
pub struct Choker {
    config: ChokerConfig,
    unchoked: BTreeSet<PeerKey>,
    optimistic: Option<PeerKey>,
    next_regular: Option<Instant>,
    next_optimistic: Option<Instant>,
    rng: StdRng,
}

impl Choker {
    /// A choker with nobody unchoked; the first [`Choker::tick`] decides.
    pub fn new(config: ChokerConfig, rng: StdRng) -> Self {
        Self {
            config,
            unchoked: BTreeSet::new(),
            optimistic: None,
            next_regular: None,
            next_optimistic: None,
            rng,
        }
    }

    /// The peers currently unchoked.
    pub fn unchoked(&self) -> &BTreeSet<PeerKey> {
        &self.unchoked
    }

    /// The optimistically unchoked peer, if any.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// When [`Choker::tick`] next has something to decide.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_regular, self.next_optimistic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        }
    }

    /// Remakes the decisions that are due at `now` given every connected
    /// peer, and says which messages to send. Peers missing from `peers`
    /// are treated as gone (no message). `seeding` ranks by upload rate.
    pub fn tick(&mut self, now: Instant, peers: &[PeerStats], seeding: bool) -> ChokeChanges {
        let before = std::mem::take(&mut self.unchoked);
        let present: BTreeSet<PeerKey> = peers.iter().map(|p| p.peer).collect();
        let interested = |k: PeerKey| peers.iter().any(|p| p.peer == k && p.interested);

        let optimistic_due = self.next_optimistic.is_none_or(|t| now >= t)
            || self.optimistic.is_none_or(|o| !interested(o));
        let regular_due = self.next_regular.is_none_or(|t| now >= t);

        if optimistic_due {
            self.optimistic = self.choose_optimistic(now, peers, &before);
            if self.next_optimistic.is_none_or(|t| now >= t) {
                self.next_optimistic = Some(now + self.config.optimistic_interval);
            }
        }
        let regular: Vec<PeerKey> = if regular_due {
            self.next_regular = Some(now + self.config.interval);
            self.rank(peers, seeding)
        } else {
            // Keep the previous choice, minus peers that left or lost
            // interest; a slot freed that way is filled at once rather than
            // idling until the next round.
            let mut kept: Vec<PeerKey> = before
                .iter()
                .copied()
                .filter(|&k| Some(k) != self.optimistic && interested(k))
                .collect();
            for k in self.rank(peers, seeding) {
                if kept.len() >= self.config.slots {
                    break;
                }
                if !kept.contains(&k) {
                    kept.push(k);
                }
            }
            kept
        };
        self.unchoked = regular.into_iter().chain(self.optimistic).collect();

        ChokeChanges {
            unchoke: self.unchoked.difference(&before).copied().collect(),
            choke: before
                .difference(&self.unchoked)
                .filter(|k| present.contains(k))
                .copied()
                .collect(),
        }
    }

    /// The best `slots` interested peers, except the optimistic one; equal
    /// rates are ordered at random.
    fn rank(&mut self, peers: &[PeerStats], seeding: bool) -> Vec<PeerKey> {
        let mut candidates: Vec<&PeerStats> = peers
            .iter()
            .filter(|p| p.interested && Some(p.peer) != self.optimistic)
            .collect();
        candidates.shuffle(&mut self.rng);
        let rate = |p: &PeerStats| {
            if seeding {
                p.upload_rate
            } else {
                p.download_rate
            }
        };
        candidates.sort_by(|a, b| rate(b).total_cmp(&rate(a)));
        candidates
            .into_iter()
            .take(self.config.slots)
            .map(|p| p.peer)
            .collect()
    }

    /// A random interested peer that is not unchoked for its rate, new
    /// connections weighted three to one.
    fn choose_optimistic(
        &mut self,
        now: Instant,
        peers: &[PeerStats],
        unchoked: &BTreeSet<PeerKey>,
    ) -> Option<PeerKey> {
        let candidates: Vec<(PeerKey, u32)> = peers
            .iter()
            .filter(|p| {
                p.interested && !unchoked.contains(&p.peer) && Some(p.peer) != self.optimistic
            })
            .map(|p| {
                let new =
                    now.saturating_duration_since(p.connected_at) < self.config.optimistic_interval;
                (p.peer, if new { 3 } else { 1 })
            })
            .collect();
        let total: u32 = candidates.iter().map(|c| c.1).sum();
        if total == 0 {
            // Nobody else to rotate to: keep the current one if still interested.
            return self
                .optimistic
                .filter(|o| peers.iter().any(|p| p.peer == *o && p.interested));
        }
        let mut pick = self.rng.random_range(0..total);
        for (peer, weight) in candidates {
            if pick < weight {
                return Some(peer);
            }
            pick -= weight;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn stats(t0: Instant, peer: u32, interested: bool, down: f64) -> PeerStats {
        PeerStats {
            peer: PeerKey(peer),
            interested,
            download_rate: down,
            upload_rate: 1000.0 - down,
            connected_at: t0,
        }
    }

    fn choker(seed: u64) -> Choker {
        Choker::new(ChokerConfig::default(), StdRng::seed_from_u64(seed))
    }

    #[test]
    fn unchokes_the_fastest_four_plus_one_optimistic() {
        let t0 = Instant::now();
        let peers: Vec<_> = (0..8)
            .map(|i| stats(t0, i, i != 7, f64::from(i) * 10.0))
            .collect();
        let mut c = choker(1);
        let changes = c.tick(t0 + Duration::from_secs(100), &peers, false);
        let opt = c.optimistic().unwrap();
        assert!(opt.0 < 7, "only interested peers");
        let mut expected: BTreeSet<PeerKey> = [6, 5, 4, 3, 2]
            .into_iter()
            .map(PeerKey)
            .filter(|&k| k != opt)
            .take(4)
            .collect();
        expected.insert(opt);
        assert_eq!(c.unchoked(), &expected);
        assert_eq!(
            changes.unchoke,
            expected.iter().copied().collect::<Vec<_>>()
        );
        assert!(changes.choke.is_empty());
    }

    #[test]
    fn seeding_ranks_by_upload_rate() {
        let t0 = Instant::now();
        let peers: Vec<_> = (0..8)
            .map(|i| stats(t0, i, true, f64::from(i) * 10.0))
            .collect();
        let mut c = choker(2);
        c.tick(t0, &peers, true);
        let regular: BTreeSet<_> = c
            .unchoked()
            .iter()
            .copied()
            .filter(|&k| Some(k) != c.optimistic())
            .collect();
        let best: Vec<PeerKey> = (0..5)
            .map(PeerKey)
            .filter(|&k| Some(k) != c.optimistic())
            .take(4)
            .collect();
        assert_eq!(regular, best.into_iter().collect());
    }

    #[test]
    fn decisions_hold_between_ticks_and_rotate_on_time() {
        let t0 = Instant::now();
        let mut peers: Vec<_> = (0..6).map(|i| stats(t0, i, true, f64::from(i))).collect();
        let mut c = choker(3);
        c.tick(t0, &peers, false);
        let first = c.unchoked().clone();
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        // Rates flip, but nothing changes before 10 s.
        for p in &mut peers {
            p.download_rate = -p.download_rate;
        }
        let none = c.tick(t0 + Duration::from_secs(5), &peers, false);
        assert_eq!(none, ChokeChanges::default());
        assert_eq!(c.unchoked(), &first);
        let changes = c.tick(t0 + Duration::from_secs(10), &peers, false);
        assert!(!changes.choke.is_empty());
        assert!(c.unchoked().contains(&PeerKey(0)));
        // Optimistic unchokes seen over several rotations vary.
        let mut seen = BTreeSet::new();
        for i in 1..20u64 {
            c.tick(t0 + Duration::from_secs(30 * i), &peers, false);
            seen.insert(c.optimistic());
        }
        assert!(seen.len() > 1, "{seen:?}");
    }

    #[test]
    fn departed_and_uninterested_peers_leave_the_set() {
        let t0 = Instant::now();
        let peers: Vec<_> = (0..3).map(|i| stats(t0, i, true, f64::from(i))).collect();
        let mut c = choker(4);
        c.tick(t0, &peers, false);
        assert_eq!(c.unchoked().len(), 3);
        let mut fewer = peers[1..].to_vec();
        fewer[0].interested = false;
        let changes = c.tick(t0 + Duration::from_secs(1), &fewer, false);
        assert_eq!(c.unchoked(), &BTreeSet::from([PeerKey(2)]));
        // Peer 0 left: no message; peer 1 lost interest: choked.
        assert_eq!(changes.choke, vec![PeerKey(1)]);
        // A newcomer gets a free slot before the next 10 s round.
        let mut more = fewer.clone();
        more.push(stats(t0, 5, true, 0.0));
        let changes = c.tick(t0 + Duration::from_secs(2), &more, false);
        assert_eq!(changes.unchoke, vec![PeerKey(5)]);
    }

    #[test]
    fn new_peers_are_favoured_for_optimistic_unchoke() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3600);
        let mut new_hits = 0;
        for seed in 0..400 {
            let mut c = Choker::new(
                ChokerConfig {
                    slots: 0,
                    ..ChokerConfig::default()
                },
                StdRng::seed_from_u64(seed),
            );
            let mut fresh = stats(t0, 1, true, 0.0);
            fresh.connected_at = now;
            let peers = [stats(t0, 0, true, 0.0), fresh];
            c.tick(now, &peers, false);
            if c.optimistic() == Some(PeerKey(1)) {
                new_hits += 1;
            }
        }
        // Expected 300 of 400 (3:1).
        assert!((250..350).contains(&new_hits), "{new_hits}");
    }
}
