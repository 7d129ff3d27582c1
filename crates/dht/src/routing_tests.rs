use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::Ipv4Addr;

fn node(id: [u8; 20], ip: [u8; 4], port: u16) -> NodeAddr {
    NodeAddr {
        id: NodeId(id),
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
    }
}

fn table() -> (RoutingTable, Instant) {
    let now = Instant::now();
    (
        RoutingTable::new(NodeId([0; 20]), RoutingConfig::default(), now),
        now,
    )
}

#[test]
fn own_id_and_hijacks_are_rejected() {
    let (mut t, now) = table();
    assert_eq!(
        t.insert(node([0; 20], [127, 0, 0, 1], 1), now),
        Insert::Rejected
    );
    let a = node([1; 20], [127, 0, 0, 1], 1);
    assert_eq!(t.insert(a, now), Insert::Added);
    assert_eq!(t.insert(a, now), Insert::Refreshed);
    let moved = NodeAddr {
        addr: "127.0.0.2:1".parse().unwrap(),
        ..a
    };
    assert_eq!(t.insert(moved, now), Insert::Rejected);
}

#[test]
fn one_node_per_public_ip_but_local_addresses_are_exempt() {
    let (mut t, now) = table();
    assert_eq!(t.insert(node([1; 20], [8, 8, 8, 8], 1), now), Insert::Added);
    assert_eq!(
        t.insert(node([2; 20], [8, 8, 8, 8], 2), now),
        Insert::Rejected
    );
    assert_eq!(
        t.insert(node([3; 20], [127, 0, 0, 1], 1), now),
        Insert::Added
    );
    assert_eq!(
        t.insert(node([4; 20], [127, 0, 0, 1], 2), now),
        Insert::Added
    );
    // An IPv6 host is its /64: a second address of it is one node more.
    let six = |id: u8, last: u16| NodeAddr {
        id: NodeId([id; 20]),
        addr: SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last]), 1),
    };
    assert_eq!(t.insert(six(5, 1), now), Insert::Added);
    assert_eq!(t.insert(six(6, 2), now), Insert::Rejected);
}

#[test]
fn full_far_bucket_keeps_replacements_and_promotes_them_on_failure() {
    let (mut t, now) = table();
    // Ids with the top bit set all fall in bucket 0 once the table has split.
    let far = |i: u8| node([0x80 | i; 20], [10, 0, 0, i], 1);
    for i in 0..8 {
        assert_eq!(t.insert(far(i), now), Insert::Added);
    }
    // The first bucket covers our id too, so it splits instead of refusing.
    assert_eq!(
        t.insert(node([0x01; 20], [10, 0, 1, 1], 1), now),
        Insert::Added
    );
    assert_eq!(t.bucket_count(), 2);
    assert_eq!(t.insert(far(8), now), Insert::Replacement);
    let victim = far(0);
    assert!(!t.failed(&victim.id, &victim.addr));
    assert!(t.failed(&victim.id, &victim.addr));
    assert!(t.get(&victim.id).is_none());
    assert!(t.get(&far(8).id).is_some());
    t.check_invariants().unwrap();
}

#[test]
fn states_follow_replies_and_failures() {
    let (mut t, now) = table();
    let a = node([1; 20], [127, 0, 0, 1], 1);
    t.insert(a, now);
    let e = t.get(&a.id).unwrap().clone();
    assert_eq!(t.state(&e, now), NodeState::Good);
    assert_eq!(
        t.state(&e, now + Duration::from_secs(16 * 60)),
        NodeState::Questionable
    );
    assert_eq!(t.stale_entries(now + Duration::from_secs(16 * 60)), vec![a]);
    t.failed(&a.id, &a.addr);
    let e = t.get(&a.id).unwrap();
    assert_eq!(t.state(e, now), NodeState::Questionable);
}

#[test]
fn refresh_targets_land_in_their_buckets() {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut t, now) = table();
    for i in 0..200u32 {
        let mut id: [u8; 20] = rng.random();
        id[19] = i as u8;
        t.insert(node(id, [10, 0, (i >> 8) as u8, i as u8], 1), now);
    }
    for index in 0..t.bucket_count() {
        let id = t.random_id_in(index, &mut rng);
        assert_eq!(t.bucket_of(&id), index);
    }
    assert!(
        t.refresh_targets(now, Duration::from_secs(60), &mut rng)
            .is_empty()
    );
    let later = now + Duration::from_secs(61);
    assert_eq!(
        t.refresh_targets(later, Duration::from_secs(60), &mut rng)
            .len(),
        t.bucket_count()
    );
    assert!(
        t.refresh_targets(later, Duration::from_secs(60), &mut rng)
            .is_empty()
    );
}

#[derive(Debug, Clone)]
enum Op {
    Insert([u8; 20], u8),
    Fail(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<[u8; 20]>(), any::<u8>()).prop_map(|(id, ip)| Op::Insert(id, ip)),
        2 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Remove),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_under_random_operations(
        own: [u8; 20],
        near in proptest::collection::vec(any::<[u8; 20]>(), 0..40),
        ops in proptest::collection::vec(op(), 0..300),
        target: [u8; 20],
    ) {
        let now = Instant::now();
        let own = NodeId(own);
        let mut t = RoutingTable::new(own, RoutingConfig::default(), now);
        let mut known: Vec<NodeAddr> = Vec::new();
        // Ids sharing a long prefix with ours force deep splits.
        let near = near.into_iter().enumerate().map(|(i, mut id)| {
            id[..i.min(19) / 2 + 1].copy_from_slice(&own.0[..i.min(19) / 2 + 1]);
            Op::Insert(id, i as u8)
        });
        for op in near.chain(ops) {
            match op {
                Op::Insert(id, ip) => {
                    // Public addresses, few distinct, to exercise the per-IP rule.
                    let n = node(id, [8, 8, 8, ip % 64], 1);
                    t.insert(n, now);
                    known.push(n);
                }
                Op::Fail(i) if !known.is_empty() => {
                    let n = known[i % known.len()];
                    t.failed(&n.id, &n.addr);
                }
                Op::Remove(i) if !known.is_empty() => t.remove(&known[i % known.len()].id),
                _ => {}
            }
            t.check_invariants().map_err(TestCaseError::fail)?;
        }
        // At most one entry per public IP.
        let mut ips: Vec<_> = t.entries().map(|e| e.node.addr.ip()).collect();
        ips.sort();
        let before = ips.len();
        ips.dedup();
        prop_assert_eq!(before, ips.len());
        // closest agrees with a brute-force sort of the whole table.
        let target = NodeId(target);
        let mut all: Vec<NodeAddr> = t.entries().map(|e| e.node).collect();
        all.sort_by_key(|n| n.id.distance(&target));
        for n in [1, 8, 20, 1000] {
            let expect: Vec<_> = all.iter().take(n).copied().collect();
            prop_assert_eq!(t.closest(&target, n), expect);
        }
        // Every point of the space maps to some bucket.
        prop_assert!(t.bucket_of(&target) < t.bucket_count());
    }

    #[test]
    fn closest_matches_brute_force_on_local_addresses(
        ids in proptest::collection::vec(any::<[u8; 20]>(), 0..400),
        target: [u8; 20],
    ) {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId(target), RoutingConfig::default(), now);
        for (i, id) in ids.iter().enumerate() {
            t.insert(node(*id, [10, 0, (i >> 8) as u8, i as u8], 1), now);
        }
        let mut all: Vec<NodeAddr> = t.entries().map(|e| e.node).collect();
        for probe in [NodeId(target), NodeId(ids.first().copied().unwrap_or_default())] {
            all.sort_by_key(|n| n.id.distance(&probe));
            prop_assert_eq!(t.closest(&probe, 8), all.iter().take(8).copied().collect::<Vec<_>>());
        }
    }
}
