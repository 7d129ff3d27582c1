use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{NodeAddr, NodeId};

use crate::krpc::{Body, Message, Query, Response, TransactionId};
use crate::node::{Config, MAX_DATAGRAM, Node};
use crate::pool::PoolConfig;
use crate::ratelimit::RateLimitConfig;

fn server_config(capacity: usize) -> Config {
    let mut config = Config::server();
    if let Some(s) = &mut config.server {
        s.pool = PoolConfig {
            capacity,
            ..PoolConfig::default()
        };
        s.verify_queue = 1000;
        s.verify_rate = 1e9;
        s.limits = RateLimitConfig {
            per_ip_rate: 0.0,
            global_rate: 0.0,
            reply_bytes_rate: 0.0,
            ..RateLimitConfig::default()
        };
    }
    config
}

fn query(tid: &[u8], id: NodeId, query: Query, read_only: bool) -> Vec<u8> {
    Message {
        tid: TransactionId::new(tid).unwrap(),
        body: Body::Query { id, query },
        ip: None,
        read_only,
        version: None,
    }
    .to_bytes()
}

fn answer(tid: TransactionId, id: NodeId, read_only: bool) -> Vec<u8> {
    Message {
        tid,
        body: Body::Response(Response {
            id,
            ..Response::default()
        }),
        ip: None,
        read_only,
        version: None,
    }
    .to_bytes()
}

fn drain(n: &mut Node) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| n.poll_transmit())
        .map(|t| {
            assert!(t.bytes.len() <= MAX_DATAGRAM, "{} bytes", t.bytes.len());
            (t.to, Message::decode(&t.bytes).unwrap())
        })
        .collect()
}

fn id(i: u32) -> NodeId {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[19] = 1;
    NodeId(b)
}

fn local(i: u32) -> SocketAddr {
    let [_, a, b, c] = i.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 6881))
}

/// Pings sent to `to` by the node (cookie or ordinary).
fn pings_to(out: &[(SocketAddr, Message)], to: SocketAddr) -> Vec<TransactionId> {
    out.iter()
        .filter(|(a, m)| {
            *a == to
                && matches!(
                    m.body,
                    Body::Query {
                        query: Query::Ping,
                        ..
                    }
                )
        })
        .map(|(_, m)| m.tid)
        .collect()
}

#[test]
fn a_querier_is_verified_after_the_delay_by_a_stateless_cookie() {
    let now = Instant::now();
    let mut config = server_config(100);
    // Keep the table from pinging at once, to isolate the delayed path.
    config.max_pings = 0;
    let mut n = Node::new(config, Some(NodeId([0xee; 20])), 1, now);
    let from = local(1);
    n.handle_datagram(now, from, &query(b"q1", id(1), Query::Ping, false));
    let out = drain(&mut n);
    assert_eq!(out.len(), 1, "only the answer: {out:?}");
    assert_eq!(n.verify_queued(), 1);
    n.handle_timeout(now + Duration::from_secs(89));
    assert!(pings_to(&drain(&mut n), from).is_empty());
    let later = now + Duration::from_secs(91);
    n.handle_timeout(later);
    let tids = pings_to(&drain(&mut n), from);
    assert_eq!(tids.len(), 1);
    let cookie = tids[0];
    assert_eq!(cookie.as_slice().len(), 7);
    assert_eq!(n.queries_in_flight(), 0, "a cookie ping keeps no state");
    // From another address, or a forged cookie: nothing.
    n.handle_datagram(later, local(2), &answer(cookie, id(1), false));
    let mut forged = cookie.as_slice().to_vec();
    forged[6] ^= 1;
    n.handle_datagram(
        later,
        from,
        &answer(TransactionId::new(&forged).unwrap(), id(1), false),
    );
    // Read-only answers never enter the pool.
    n.handle_datagram(later, from, &answer(cookie, id(1), true));
    assert_eq!(n.pool().unwrap().len(Family::V4), 0);
    n.handle_datagram(later, from, &answer(cookie, id(1), false));
    assert_eq!(n.pool().unwrap().len(Family::V4), 1);
    // Too late: a cookie lives a few minutes only.
    n.handle_datagram(
        later + Duration::from_secs(400),
        local(3),
        &answer(cookie, id(3), false),
    );
    assert_eq!(n.pool().unwrap().len(Family::V4), 1);
}

#[test]
fn read_only_queriers_and_our_own_id_are_never_pooled() {
    let now = Instant::now();
    let own = NodeId([0xee; 20]);
    let mut n = Node::new(server_config(100), Some(own), 1, now);
    n.handle_datagram(now, local(1), &query(b"q1", id(1), Query::Ping, true));
    assert_eq!(drain(&mut n).len(), 1);
    assert_eq!(n.verify_queued(), 0);
    let dropped = n.stats().dropped;
    n.handle_datagram(now, local(2), &query(b"q2", own, Query::Ping, false));
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.stats().dropped, dropped + 1);
}

#[test]
fn a_loaded_pool_keeps_only_nodes_a_live_one_would_admit() {
    let now = Instant::now();
    let own = NodeId([0xee; 20]);
    let mut n = Node::new(server_config(100), Some(own), 1, now);
    let node = |i, addr: &str| NodeAddr {
        id: id(i),
        addr: addr.parse().unwrap(),
    };
    let kept = node(1, "10.0.0.1:6881");
    let loaded = [
        kept,
        node(2, "10.0.0.2:0"),
        node(3, "224.0.0.1:6881"),
        node(4, "0.0.0.0:6881"),
        NodeAddr {
            id: own,
            addr: local(5),
        },
    ];
    n.load_pool(&loaded, now);
    let pool = n.pool().unwrap();
    assert_eq!(pool.len(Family::V4), 1);
    assert_eq!(pool.nodes().collect::<Vec<_>>(), vec![kept]);
}

#[test]
fn nodes_answering_our_queries_are_served_at_once_sixteen_per_reply() {
    let now = Instant::now();
    let mut n = Node::new(server_config(1000), Some(NodeId([0xee; 20])), 1, now);
    // Queriers the routing table has room for get its immediate ping and
    // enter the pool as soon as they answer it.
    for i in 1..=40 {
        n.handle_datagram(now, local(i), &query(b"q", id(i), Query::Ping, false));
        for tid in pings_to(&drain(&mut n), local(i)) {
            n.handle_datagram(now, local(i), &answer(tid, id(i), false));
        }
    }
    let at_once = n.pool().unwrap().len(Family::V4);
    assert!((8..40).contains(&at_once), "{at_once}");
    // The others get a cookie ping once the NAT delay has passed.
    let later = now + Duration::from_secs(91);
    n.handle_timeout(later);
    let out = drain(&mut n);
    for i in 1..=40 {
        for tid in pings_to(&out, local(i)) {
            n.handle_datagram(later, local(i), &answer(tid, id(i), false));
        }
    }
    assert_eq!(n.pool().unwrap().len(Family::V4), 40);
    let target = id(20);
    n.handle_datagram(
        now,
        local(500),
        &query(b"f", id(500), Query::FindNode { target, want: None }, false),
    );
    let out = drain(&mut n);
    let reply = out
        .iter()
        .find_map(|(_, m)| match &m.body {
            Body::Response(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(reply.nodes.len(), 16);
    assert_eq!(reply.nodes[0].id, target);
    let mut sorted = reply.nodes.clone();
    sorted.sort_by_key(|node| node.id.distance(&target));
    assert_eq!(sorted, reply.nodes);
    // Both families asked for: still one small datagram.
    n.handle_datagram(
        now,
        SocketAddr::from(([127, 0, 0, 9], 1)),
        &query(
            b"g",
            id(501),
            Query::GetPeers {
                info_hash: lodestone_core::InfoHash([1; 20]),
                want: Some(crate::krpc::Want { n4: true, n6: true }),
            },
            false,
        ),
    );
    assert!(!drain(&mut n).is_empty());
}

#[test]
fn a_flood_of_unique_ids_leaves_every_table_bounded() {
    let now = Instant::now();
    let cap = 500;
    let mut n = Node::new(server_config(cap), Some(NodeId([0xee; 20])), 1, now);
    let mut t = now;
    let mut ids = std::collections::HashMap::new();
    for i in 1..=20_000u32 {
        t += Duration::from_micros(50);
        let node = NodeAddr {
            id: id(i.wrapping_mul(2_654_435_761)),
            addr: local(i),
        };
        ids.insert(node.addr, node.id);
        let q = if i % 2 == 0 {
            Query::Ping
        } else {
            Query::FindNode {
                target: id(i),
                want: None,
            }
        };
        n.handle_datagram(t, node.addr, &query(b"zz", node.id, q, false));
        n.handle_timeout(t);
        // Everyone answers every ping: the worst case for the pool.
        for (to, m) in drain(&mut n) {
            if to == node.addr && matches!(m.body, Body::Query { .. }) {
                n.handle_datagram(t, to, &answer(m.tid, node.id, false));
            }
        }
    }
    let late = t + Duration::from_secs(100);
    n.handle_timeout(late);
    for (to, m) in drain(&mut n) {
        if let (Body::Query { .. }, Some(node_id)) = (&m.body, ids.get(&to)) {
            n.handle_datagram(late, to, &answer(m.tid, *node_id, false));
        }
    }
    let pool = n.pool().unwrap();
    assert_eq!(pool.len(Family::V4), cap);
    assert!(n.verify_queued() <= 1000);
    assert!(n.queries_in_flight() <= 16_384);
    assert!(n.table(Family::V4).len() <= 160 * 8);
    n.table(Family::V4).check_invariants().unwrap();
}

#[test]
fn rate_limits_drop_a_flooding_ip_and_cap_reply_bytes() {
    let now = Instant::now();
    let mut config = server_config(100);
    if let Some(s) = &mut config.server {
        s.limits = RateLimitConfig {
            per_ip_rate: 5.0,
            per_ip_burst: 20.0,
            reply_bytes_rate: 0.0,
            global_rate: 0.0,
            ..RateLimitConfig::default()
        };
    }
    config.max_pings = 0;
    let mut n = Node::new(config, Some(NodeId([0xee; 20])), 1, now);
    let flooder: SocketAddr = "203.0.113.5:1000".parse().unwrap();
    for _ in 0..100 {
        n.handle_datagram(now, flooder, &query(b"p", id(7), Query::Ping, false));
    }
    assert_eq!(drain(&mut n).len(), 20);
    assert_eq!(n.stats().rate_limited, 80);
    // Banned well after the bucket would have refilled.
    n.handle_datagram(
        now + Duration::from_secs(60),
        flooder,
        &query(b"p", id(7), Query::Ping, false),
    );
    assert!(drain(&mut n).is_empty());
    let other: SocketAddr = "198.51.100.5:1000".parse().unwrap();
    n.handle_datagram(now, other, &query(b"p", id(8), Query::Ping, false));
    assert_eq!(drain(&mut n).len(), 1);
}

#[test]
fn a_burst_is_answered_as_its_datagrams_one_by_one() {
    let now = Instant::now();
    // Large enough to be served from the snapshot, which `warm` reads.
    let pool: Vec<NodeAddr> = (1..=10_000u32)
        .map(|i| NodeAddr {
            id: NodeId(std::array::from_fn(|b| {
                (i.wrapping_mul(2_654_435_761) >> (b % 4 * 8)) as u8
            })),
            addr: local(i),
        })
        .collect();
    let node = || {
        let mut n = Node::new(server_config(20_000), Some(NodeId([0xee; 20])), 7, now);
        n.load_pool(&pool, now);
        n
    };
    let info_hash = lodestone_core::InfoHash([3; 20]);
    let burst: Vec<(SocketAddr, Vec<u8>)> = (0..60u32)
        .map(|i| {
            let q = match i % 4 {
                0 => Query::Ping,
                1 => Query::FindNode {
                    target: id(i * 1000),
                    want: None,
                },
                2 => Query::GetPeers {
                    info_hash,
                    want: None,
                },
                // A query without a method: answered with an error, in
                // its place among the answers.
                _ => return (local(90_000 + i), b"d1:t2:xx1:y1:qe".to_vec()),
            };
            (
                local(90_000 + i),
                query(&i.to_be_bytes(), id(90_000 + i), q, false),
            )
        })
        .collect();
    let (mut one_by_one, mut together) = (node(), node());
    for (from, bytes) in &burst {
        one_by_one.handle_datagram(now, *from, bytes);
    }
    together.handle_datagrams(now, burst.iter().map(|(from, b)| (*from, &b[..])));
    let (a, b) = (drain(&mut one_by_one), drain(&mut together));
    let count = |kind: fn(&Body) -> bool| a.iter().filter(|(_, m)| kind(&m.body)).count();
    assert_eq!(count(|b| matches!(b, Body::Response(_))), 45);
    assert_eq!(count(|b| matches!(b, Body::Error(_))), 15);
    assert_eq!(a, b);
}
