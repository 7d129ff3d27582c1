use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::SeedableRng;

use super::*;
use crate::layout::BLOCK_SIZE;

fn layout(pieces: u32, blocks_per_piece: u32) -> Arc<Layout> {
    let pl = BLOCK_SIZE * blocks_per_piece;
    // The last piece is one block short, to exercise uneven pieces.
    let total = u64::from(pl) * u64::from(pieces) - u64::from(BLOCK_SIZE) / 2;
    Arc::new(Layout::new(pl, [(total, false)]).unwrap())
}

fn picker(l: &Arc<Layout>, seed: u64) -> Picker {
    let n = l.piece_count();
    Picker::new(
        l.clone(),
        Bitfield::full(n),
        Bitfield::new(n),
        StdRng::seed_from_u64(seed),
    )
}

fn bits(n: u32, ones: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in ones {
        b.set(i);
    }
    b
}

#[test]
fn starts_with_the_rarest_piece() {
    let l = layout(4, 2);
    for seed in 0..20 {
        let mut pk = picker(&l, seed);
        let (a, b, c) = (PeerKey(1), PeerKey(2), PeerKey(3));
        for p in [a, b, c] {
            pk.peer_connected(p);
        }
        pk.peer_bitfield(a, bits(4, &[0, 1, 2]));
        pk.peer_bitfield(b, bits(4, &[0, 1, 3]));
        pk.peer_bitfield(c, bits(4, &[0, 1, 2, 3]));
        // c: pieces 2 and 3 have availability 2, 0 and 1 have 3.
        let first = pk.next_requests(c, 2);
        assert_eq!(first.len(), 2);
        assert!(matches!(first[0].piece().get(), 2 | 3), "seed {seed}");
        assert_eq!(first[0].piece(), first[1].piece());
        let second = pk.next_requests(c, 2);
        let rare: BTreeSet<u32> = [first[0].piece().get(), second[0].piece().get()].into();
        assert_eq!(rare, BTreeSet::from([2, 3]));
    }
}

#[test]
fn ties_are_broken_randomly() {
    let l = layout(16, 1);
    let starts: BTreeSet<u32> = (0..32)
        .map(|seed| {
            let mut pk = picker(&l, seed);
            pk.peer_connected(PeerKey(0));
            pk.peer_have_all(PeerKey(0));
            pk.next_requests(PeerKey(0), 1)[0].piece().get()
        })
        .collect();
    assert!(starts.len() > 4, "{starts:?}");
}

#[test]
fn finishes_started_pieces_first() {
    let l = layout(8, 4);
    let mut pk = picker(&l, 1);
    let (a, b) = (PeerKey(1), PeerKey(2));
    pk.peer_connected(a);
    pk.peer_connected(b);
    pk.peer_have_all(a);
    pk.peer_have_all(b);
    let got = pk.next_requests(a, 2);
    let piece = got[0].piece();
    let next = pk.next_requests(b, 3);
    assert_eq!(next.len(), 3);
    assert_eq!(next[0].piece(), piece);
    assert_eq!(next[1].piece(), piece);
    assert_ne!(next[2].piece(), piece);
}

#[test]
fn never_requests_what_the_peer_lacks_or_we_do_not_want() {
    let l = layout(6, 1);
    let wanted = bits(6, &[1, 2, 3]);
    let have = bits(6, &[2]);
    let mut pk = Picker::new(l.clone(), wanted, have, StdRng::seed_from_u64(3));
    assert_eq!(pk.remaining(), 2);
    let p = PeerKey(7);
    pk.peer_connected(p);
    pk.peer_bitfield(p, bits(6, &[0, 2, 3, 4]));
    assert!(pk.is_interesting(p));
    let got = pk.next_requests(p, 10);
    assert_eq!(
        got.iter().map(|b| b.piece().get()).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(pk.next_requests(p, 10), vec![]);
    assert!(matches!(
        pk.block_received(p, got[0]),
        BlockOutcome::Accepted {
            piece_complete: true,
            ..
        }
    ));
    assert!(pk.piece_verified(got[0].piece()));
    assert!(!pk.is_interesting(p));
    pk.peer_have(p, l.piece(1).unwrap());
    assert!(pk.is_interesting(p));
}

#[test]
fn endgame_duplicates_and_cancels() {
    let l = layout(1, 2);
    let mut pk = picker(&l, 0);
    let (a, b) = (PeerKey(1), PeerKey(2));
    for p in [a, b] {
        pk.peer_connected(p);
        pk.peer_have_all(p);
    }
    let ra = pk.next_requests(a, 10);
    assert_eq!(ra.len(), 2);
    assert!(pk.in_endgame());
    let rb = pk.next_requests(b, 10);
    assert_eq!(rb, ra);
    assert_eq!(
        pk.next_requests(b, 10),
        vec![],
        "no block twice to one peer"
    );
    assert_eq!(
        pk.block_received(b, ra[0]),
        BlockOutcome::Accepted {
            cancel: vec![a],
            piece_complete: false
        }
    );
    assert_eq!(pk.block_received(a, ra[0]), BlockOutcome::Unwanted);
    // a goes away: its request for block 1 passes to b, nothing is missing.
    pk.peer_gone(a);
    assert!(pk.in_endgame());
    assert_eq!(
        pk.block_received(b, ra[1]),
        BlockOutcome::Accepted {
            cancel: vec![],
            piece_complete: true
        }
    );
}

#[test]
fn hash_failure_makes_blocks_missing_again() {
    let l = layout(2, 2);
    let mut pk = picker(&l, 0);
    let (a, b) = (PeerKey(1), PeerKey(2));
    pk.peer_connected(a);
    pk.peer_have_all(a);
    pk.peer_connected(b);
    pk.peer_bitfield(b, bits(2, &[0]));
    let got = pk.next_requests(b, 2);
    assert_eq!(got.len(), 2);
    pk.block_received(b, got[0]);
    pk.block_received(a, got[1]);
    assert_eq!(pk.piece_failed(got[0].piece()), vec![b, a]);
    let again = pk.next_requests(a, 2);
    assert_eq!(again, got);
}

#[test]
fn a_piece_failed_by_several_senders_is_fetched_from_one_at_a_time() {
    let l = layout(2, 4);
    let mut pk = picker(&l, 0);
    let (a, b) = (PeerKey(1), PeerKey(2));
    for p in [a, b] {
        pk.peer_connected(p);
        pk.peer_bitfield(p, bits(2, &[0]));
    }
    let first = pk.next_requests(a, 2);
    let second = pk.next_requests(b, 2);
    for (&x, y) in first.iter().zip(&second) {
        pk.block_received(a, x);
        pk.block_received(b, *y);
    }
    pk.piece_failed(first[0].piece());
    // a takes part of the retry; b may not join while a holds requests.
    assert_eq!(pk.next_requests(a, 2).len(), 2);
    assert!(pk.next_requests(b, 4).is_empty());
    // Once a lets go (choked), b may take the piece.
    pk.peer_choked(a);
    assert_eq!(pk.next_requests(b, 4).len(), 4);
}

#[test]
fn withheld_pieces_wait_for_their_recheck() {
    let l = layout(3, 1);
    let mut pk = picker(&l, 0);
    let a = PeerKey(1);
    pk.peer_connected(a);
    pk.peer_have_all(a);
    let (p0, p1) = (l.piece(0).unwrap(), l.piece(1).unwrap());
    pk.withhold(p0);
    pk.withhold(p1);
    let got: Vec<u32> = pk
        .next_requests(a, 10)
        .iter()
        .map(|b| b.piece().get())
        .collect();
    assert_eq!(got, vec![2], "withheld pieces are not requested");
    assert_eq!(pk.remaining(), 3, "withheld pieces still count");
    // p0's bytes on disk were good; p1's were not.
    assert!(pk.piece_verified(p0));
    pk.release(p1);
    let got: Vec<u32> = pk
        .next_requests(a, 10)
        .iter()
        .map(|b| b.piece().get())
        .collect();
    assert_eq!(got, vec![1]);
    assert_eq!(pk.remaining(), 2);
}

#[test]
fn choke_and_reject_release_requests() {
    let l = layout(1, 3);
    let mut pk = picker(&l, 0);
    let (a, b) = (PeerKey(1), PeerKey(2));
    for p in [a, b] {
        pk.peer_connected(p);
        pk.peer_have_all(p);
    }
    let got = pk.next_requests(a, 3);
    pk.request_failed(a, got[1]);
    assert_eq!(pk.next_requests(b, 3), vec![got[1]]);
    pk.peer_choked(a);
    let mut rest = pk.next_requests(b, 3);
    rest.sort();
    assert_eq!(rest, vec![got[0], got[2]]);
}

/// A picker of 8 pieces of 4 blocks, at most `limit` open, and two seeds.
fn two_seeds_with_open_limit(limit: usize) -> (Picker, PeerKey, PeerKey) {
    let mut pk = picker(&layout(8, 4), 1);
    pk.set_open_limit(limit);
    let (a, b) = (PeerKey(1), PeerKey(2));
    for p in [a, b] {
        pk.peer_connected(p);
        pk.peer_have_all(p);
    }
    (pk, a, b)
}

#[test]
fn the_open_limit_bounds_started_pieces() {
    let (mut pk, a, b) = two_seeds_with_open_limit(2);
    // Two pieces of four blocks open; a third is refused.
    let first = pk.next_requests(a, 16);
    assert_eq!(first.len(), 8);
    assert!(pk.next_requests(b, 16).is_empty());
    assert!(pk.take_held_by_limit());
    assert!(!pk.take_held_by_limit());
    // Closing one piece lets the next one open.
    let piece = first[0].piece();
    for &block in first.iter().filter(|x| x.piece() == piece) {
        pk.block_received(a, block);
    }
    assert!(pk.piece_verified(piece));
    let next = pk.next_requests(b, 16);
    assert_eq!(next.len(), 4);
    assert!(next.iter().all(|x| x.piece() != piece));
}

#[test]
fn a_peer_without_the_open_pieces_may_open_one() {
    let l = layout(8, 4);
    let mut pk = picker(&l, 1);
    pk.set_open_limit(1);
    let (a, b) = (PeerKey(1), PeerKey(2));
    pk.peer_connected(a);
    pk.peer_bitfield(a, bits(8, &[0]));
    pk.peer_connected(b);
    pk.peer_bitfield(b, bits(8, &[5, 6]));
    assert_eq!(pk.next_requests(a, 16).len(), 4);
    // b cannot help with piece 0: it opens one piece, not two.
    let got = pk.next_requests(b, 16);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|x| x.piece() == got[0].piece()));
    assert!(pk.next_requests(b, 16).is_empty());
}

#[test]
fn pieces_left_untouched_by_a_departed_peer_are_requeued() {
    let (mut pk, a, b) = two_seeds_with_open_limit(2);
    let asked = pk.next_requests(a, 8);
    assert_eq!(asked.len(), 8);
    // One block of the first piece arrived; then a leaves.
    pk.block_received(a, asked[0]);
    pk.peer_gone(a);
    // The untouched piece no longer counts: b opens another besides
    // finishing the started one.
    let got = pk.next_requests(b, 16);
    assert_eq!(got.len(), 3 + 4);
}

#[test]
fn availability_counts_seeds_and_departures() {
    let l = layout(3, 1);
    let mut pk = picker(&l, 0);
    let p1 = l.piece(1).unwrap();
    pk.peer_connected(PeerKey(1));
    pk.peer_have_all(PeerKey(1));
    pk.peer_connected(PeerKey(2));
    pk.peer_have(PeerKey(2), p1);
    pk.peer_have(PeerKey(2), p1);
    assert_eq!(pk.availability(p1), 2);
    pk.peer_gone(PeerKey(1));
    assert_eq!(pk.availability(p1), 1);
    pk.peer_gone(PeerKey(2));
    assert_eq!(pk.availability(p1), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Connect(u32, Vec<bool>),
    Have(u32, u32),
    Request(u32, usize),
    Deliver(usize),
    Fail(usize),
    Choke(u32),
    Gone(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u32..5, proptest::collection::vec(any::<bool>(), 12)).prop_map(|(p, b)| Op::Connect(p, b)),
        1 => (0u32..5, 0u32..12).prop_map(|(p, i)| Op::Have(p, i)),
        4 => (0u32..5, 1usize..8).prop_map(|(p, m)| Op::Request(p, m)),
        4 => any::<usize>().prop_map(Op::Deliver),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => (0u32..5).prop_map(Op::Choke),
        1 => (0u32..5).prop_map(Op::Gone),
    ]
}

/// Drives a picker and checks it against what it handed out.
struct Harness {
    pk: Picker,
    layout: Arc<Layout>,
    /// Outstanding requests: block -> peers asked.
    out: BTreeMap<BlockIndex, BTreeSet<PeerKey>>,
    /// Per peer, announced pieces (mirrors the picker's input).
    has: BTreeMap<PeerKey, BTreeSet<u32>>,
    received: BTreeSet<BlockIndex>,
    fail_next: bool,
}

impl Harness {
    fn request(&mut self, peer: PeerKey, max: usize) -> Result<(), TestCaseError> {
        let endgame = self.pk.in_endgame();
        let got = self.pk.next_requests(peer, max);
        prop_assert!(got.len() <= max);
        let unique: BTreeSet<_> = got.iter().collect();
        prop_assert_eq!(unique.len(), got.len(), "a block twice in one answer");
        for b in got {
            let p = b.piece().get();
            prop_assert!(
                self.has.get(&peer).is_some_and(|h| h.contains(&p)),
                "peer lacks {p}"
            );
            prop_assert!(!self.pk.have().get(p));
            prop_assert!(!self.received.contains(&b), "block already received");
            let askers = self.out.entry(b).or_default();
            if !endgame {
                prop_assert!(askers.is_empty(), "block requested twice outside endgame");
            }
            prop_assert!(askers.insert(peer), "same peer asked twice");
        }
        Ok(())
    }

    fn deliver(&mut self, pick: usize) {
        let Some((&b, askers)) = self.out.iter().nth(pick % self.out.len().max(1)) else {
            return;
        };
        let peer = *askers.iter().next().unwrap();
        let others: BTreeSet<PeerKey> = askers.iter().copied().filter(|&q| q != peer).collect();
        self.out.remove(&b);
        match self.pk.block_received(peer, b) {
            BlockOutcome::Accepted {
                cancel,
                piece_complete,
            } => {
                assert_eq!(cancel.into_iter().collect::<BTreeSet<_>>(), others);
                self.received.insert(b);
                if piece_complete {
                    for blk in self.layout.blocks(b.piece()) {
                        assert!(self.received.remove(&blk));
                    }
                    if std::mem::take(&mut self.fail_next) {
                        assert!(!self.pk.piece_failed(b.piece()).is_empty());
                    } else {
                        assert!(self.pk.piece_verified(b.piece()));
                    }
                }
            }
            BlockOutcome::Unwanted => panic!("outstanding block {b:?} refused"),
        }
    }

    fn forget_peer(&mut self, peer: PeerKey) {
        for askers in self.out.values_mut() {
            askers.remove(&peer);
        }
        self.out.retain(|_, a| !a.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Random events never make the picker hand out a block twice (outside
    /// endgame) or a block the peer lacks; afterwards a seed completes it.
    #[test]
    fn random_sessions_are_safe_and_complete(
        pieces in 1u32..12,
        blocks in 1u32..4,
        seed in any::<u64>(),
        open_limit in 1usize..16,
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let layout = layout(pieces, blocks);
        let mut h = Harness {
            pk: picker(&layout, seed),
            layout: layout.clone(),
            out: BTreeMap::new(),
            has: BTreeMap::new(),
            received: BTreeSet::new(),
            fail_next: false,
        };
        h.pk.set_open_limit(open_limit);
        for op in ops {
            match op {
                Op::Connect(p, b) => {
                    let peer = PeerKey(p);
                    h.forget_peer(peer);
                    h.pk.peer_connected(peer);
                    let ones: Vec<u32> = (0..pieces).filter(|&i| b[i as usize]).collect();
                    h.pk.peer_bitfield(peer, bits(pieces, &ones));
                    h.has.insert(peer, ones.into_iter().collect());
                }
                Op::Have(p, i) => {
                    let peer = PeerKey(p);
                    if let (Some(has), Some(piece)) = (h.has.get_mut(&peer), layout.piece(i)) {
                        has.insert(i);
                        h.pk.peer_have(peer, piece);
                    }
                }
                Op::Request(p, max) => {
                    if h.has.contains_key(&PeerKey(p)) {
                        h.request(PeerKey(p), max)?;
                    }
                }
                Op::Deliver(i) => h.deliver(i),
                Op::Fail(i) => {
                    h.fail_next = i % 2 == 0;
                }
                Op::Choke(p) => {
                    h.forget_peer(PeerKey(p));
                    h.pk.peer_choked(PeerKey(p));
                }
                Op::Gone(p) => {
                    h.forget_peer(PeerKey(p));
                    h.has.remove(&PeerKey(p));
                    h.pk.peer_gone(PeerKey(p));
                }
            }
        }
        // A seed joins; keep requesting and delivering until done.
        let s = PeerKey(99);
        h.pk.peer_connected(s);
        h.pk.peer_have_all(s);
        h.has.insert(s, (0..pieces).collect());
        let mut steps = 0;
        while !h.pk.is_complete() {
            steps += 1;
            prop_assert!(steps < 10_000, "no progress");
            let peers: Vec<PeerKey> = h.has.keys().copied().collect();
            for p in peers {
                h.request(p, 4)?;
            }
            prop_assert!(!h.out.is_empty(), "stuck with nothing outstanding");
            h.deliver(steps);
        }
        prop_assert_eq!(h.pk.have().count_ones(), pieces);
        for p in h.has.keys() {
            prop_assert!(!h.pk.is_interesting(*p));
        }
    }
}

/// Picks over 32k pieces stay cheap: a smoke check that the whole download
/// of a large torrent from a few peers goes through without quadratic work
/// (the time is printed, not asserted).
#[test]
fn large_torrent_download_smoke() {
    let l = Arc::new(Layout::new(BLOCK_SIZE, [(u64::from(BLOCK_SIZE) * 32_768, false)]).unwrap());
    let mut pk = picker(&l, 9);
    let peers: Vec<PeerKey> = (0..3).map(PeerKey).collect();
    for &p in &peers {
        pk.peer_connected(p);
        // Partial peers, so availability buckets are not trivial.
        let ones: Vec<u32> = (0..32_768).filter(|i| i % 3 != p.0 || *i < 16).collect();
        pk.peer_bitfield(p, bits(32_768, &ones));
    }
    let start = std::time::Instant::now();
    let mut picks = 0u64;
    while !pk.is_complete() {
        for &p in &peers {
            for b in pk.next_requests(p, 16) {
                picks += 1;
                if let BlockOutcome::Accepted {
                    piece_complete: true,
                    ..
                } = pk.block_received(p, b)
                {
                    pk.piece_verified(b.piece());
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "picked {picks} blocks in {secs:.3}s: {:.0} blocks/s",
        picks as f64 / secs
    );
    assert_eq!(picks, 32_768);
}
