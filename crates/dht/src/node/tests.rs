use super::*;
use crate::krpc::{ErrorBody, Token};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn node(seed: u64, now: Instant) -> Node {
    Node::new(Config::default(), Some(NodeId([seed as u8; 20])), seed, now)
}

fn query_bytes(tid: &[u8], id: NodeId, query: Query, read_only: bool) -> Vec<u8> {
    Message {
        tid: TransactionId::new(tid).unwrap(),
        body: Body::Query { id, query },
        ip: None,
        read_only,
        version: None,
    }
    .to_bytes()
}

fn response_bytes(tid: TransactionId, response: Response, ip: Option<SocketAddr>) -> Vec<u8> {
    Message {
        tid,
        body: Body::Response(response),
        ip,
        read_only: false,
        version: None,
    }
    .to_bytes()
}

fn drain(n: &mut Node) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| n.poll_transmit())
        .map(|t| {
            assert!(t.bytes.len() <= MAX_DATAGRAM);
            (t.to, Message::decode(&t.bytes).unwrap())
        })
        .collect()
}

#[test]
fn ping_is_answered_with_our_id_and_their_ip() {
    let now = Instant::now();
    let mut n = node(1, now);
    let from = addr("127.0.0.2:7000");
    n.handle_datagram(
        now,
        from,
        &query_bytes(b"xy", NodeId([9; 20]), Query::Ping, true),
    );
    let out = drain(&mut n);
    // Read-only querier: answered, but no verification ping back.
    assert_eq!(out.len(), 1);
    let (to, msg) = &out[0];
    assert_eq!(*to, from);
    assert_eq!(msg.tid.as_slice(), b"xy");
    assert_eq!(msg.ip, Some(from));
    let Body::Response(r) = &msg.body else {
        panic!()
    };
    assert_eq!(r.id, n.id());
}

#[test]
fn unknown_querier_gets_pinged_and_enters_table_only_after_answering() {
    let now = Instant::now();
    let mut n = node(1, now);
    let from = addr("127.0.0.2:7000");
    let them = NodeId([9; 20]);
    n.handle_datagram(now, from, &query_bytes(b"xy", them, Query::Ping, false));
    let out = drain(&mut n);
    assert_eq!(out.len(), 2);
    // The verification ping goes out first, then the answer.
    let (_, ping) = &out[0];
    assert!(matches!(
        ping.body,
        Body::Query {
            query: Query::Ping,
            ..
        }
    ));
    assert!(matches!(out[1].1.body, Body::Response(_)));
    assert!(n.table(Family::V4).is_empty());
    let answer = response_bytes(
        ping.tid,
        Response {
            id: them,
            ..Response::default()
        },
        None,
    );
    // From the wrong address: ignored.
    n.handle_datagram(now, addr("127.0.0.3:7000"), &answer);
    assert!(n.table(Family::V4).is_empty());
    n.handle_datagram(now, from, &answer);
    assert_eq!(n.table(Family::V4).len(), 1);
    // A replay of the same answer matches nothing any more.
    let dropped = n.stats().dropped;
    n.handle_datagram(now, from, &answer);
    assert_eq!(n.stats().dropped, dropped + 1);
}

#[test]
fn bad_queries_get_203_or_204_and_garbage_gets_nothing() {
    let now = Instant::now();
    let mut n = node(1, now);
    let from = addr("127.0.0.2:7000");
    n.handle_datagram(
        now,
        from,
        b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:aa1:y1:qe",
    );
    n.handle_datagram(now, from, b"d1:ad2:id3:abce1:q4:ping1:t2:bb1:y1:qe");
    n.handle_datagram(now, from, b"\x00garbage");
    n.handle_datagram(now, from, b"d1:rd2:id3:abce1:t2:aa1:y1:re");
    let codes: Vec<(Vec<u8>, i64)> = drain(&mut n)
        .into_iter()
        .map(|(_, m)| match m.body {
            Body::Error(ErrorBody { code, .. }) => (m.tid.as_slice().to_vec(), code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, vec![(b"aa".to_vec(), 204), (b"bb".to_vec(), 203)]);
    assert_eq!(n.stats().dropped, 4);
}

#[test]
fn announce_needs_a_valid_token_and_then_serves_values() {
    let now = Instant::now();
    let mut n = node(1, now);
    let from = addr("127.0.0.2:7000");
    let them = NodeId([9; 20]);
    let ih = InfoHash([5; 20]);
    let get = |tid: &[u8]| {
        query_bytes(
            tid,
            them,
            Query::GetPeers {
                info_hash: ih,
                want: None,
            },
            true,
        )
    };
    n.handle_datagram(now, from, &get(b"g1"));
    let (_, msg) = drain(&mut n).remove(0);
    let Body::Response(r) = msg.body else {
        panic!()
    };
    let token = r.token.unwrap();
    assert!(r.values.is_empty());
    let announce = |token: Token, implied_port: bool| {
        query_bytes(
            b"a1",
            them,
            Query::AnnouncePeer {
                info_hash: ih,
                port: 6881,
                implied_port,
                token,
            },
            true,
        )
    };
    // A token for another IP is refused with 203.
    n.handle_datagram(now, addr("127.0.0.9:7000"), &announce(token, false));
    let (_, msg) = drain(&mut n).remove(0);
    assert!(matches!(msg.body, Body::Error(ErrorBody { code: 203, .. })));
    n.handle_datagram(now, from, &announce(token, false));
    n.handle_datagram(now, from, &announce(token, true));
    drain(&mut n);
    n.handle_datagram(now, addr("127.0.0.3:1"), &get(b"g2"));
    let (_, msg) = drain(&mut n).remove(0);
    let Body::Response(mut r) = msg.body else {
        panic!()
    };
    r.values.sort();
    assert_eq!(
        r.values,
        vec![addr("127.0.0.2:6881"), addr("127.0.0.2:7000")]
    );
}

#[test]
fn large_swarms_are_sampled_under_the_datagram_limit() {
    let now = Instant::now();
    let mut n = node(1, now);
    let ih = InfoHash([5; 20]);
    let them = NodeId([9; 20]);
    let mut now = now;
    for i in 0..300u16 {
        // Paced within the bytes a client answers with a second.
        now += Duration::from_millis(10);
        let from = SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 1000 + i));
        n.handle_datagram(
            now,
            from,
            &query_bytes(
                b"g",
                them,
                Query::GetPeers {
                    info_hash: ih,
                    want: None,
                },
                true,
            ),
        );
        let (_, msg) = drain(&mut n).remove(0);
        let Body::Response(r) = msg.body else {
            panic!()
        };
        let q = Query::AnnouncePeer {
            info_hash: ih,
            port: 1,
            implied_port: true,
            token: r.token.unwrap(),
        };
        n.handle_datagram(now, from, &query_bytes(b"a", them, q, true));
        drain(&mut n);
    }
    let want = Some(Want { n4: true, n6: true });
    now += Duration::from_millis(10);
    n.handle_datagram(
        now,
        addr("127.0.0.2:1"),
        &query_bytes(
            b"g",
            them,
            Query::GetPeers {
                info_hash: ih,
                want,
            },
            true,
        ),
    );
    // `drain` asserts the size limit.
    let (_, msg) = drain(&mut n).remove(0);
    let Body::Response(r) = msg.body else {
        panic!()
    };
    assert!(r.values.len() >= 20, "{}", r.values.len());
}

#[test]
fn external_ip_needs_several_voters_and_yields_a_bep42_id() {
    let now = Instant::now();
    let mut n = node(1, now);
    let me: SocketAddr = addr("203.0.113.7:6881");
    let old = n.id();
    for i in 1..=3u8 {
        let peer = SocketAddr::from(([127, 0, 0, i + 1], 7000));
        n.add_node(now, peer);
        let (_, ping) = drain(&mut n).remove(0);
        let r = Response {
            id: NodeId([i + 10; 20]),
            ..Response::default()
        };
        n.handle_datagram(now, peer, &response_bytes(ping.tid, r, Some(me)));
        if i < 3 {
            assert_eq!(n.external_ip(), None);
        }
    }
    assert_eq!(n.external_ip(), Some(me.ip()));
    assert_ne!(n.id(), old);
    assert!(secure_id::verify(&n.id(), &me.ip()));
    let events: Vec<Event> = std::iter::from_fn(|| n.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            Event::ExternalIp { ip: me.ip() },
            Event::IdChanged { id: n.id() }
        ]
    );
    // The table survived the id change.
    assert_eq!(n.table(Family::V4).len(), 3);
}

/// Answers `n`'s pings from `voters`, each reporting us as `me`.
fn votes_from(n: &mut Node, now: Instant, voters: &[SocketAddr], me: SocketAddr) {
    for (i, &peer) in voters.iter().enumerate() {
        n.add_node(now, peer);
        let (_, ping) = drain(n).remove(0);
        let r = Response {
            id: NodeId([i as u8 + 10; 20]),
            ..Response::default()
        };
        n.handle_datagram(now, peer, &response_bytes(ping.tid, r, Some(me)));
    }
}

/// Each family's answers report that family's address. Counted as one
/// ballot, they took turns winning, and every turn made a new id: here a
/// round of IPv6 voters would have won it.
#[test]
fn a_dual_stack_node_keeps_the_id_of_its_ipv4_address() {
    let now = Instant::now();
    let mut n = node(1, now);
    let me_v4 = addr("203.0.113.7:6881");
    let me_v6 = addr("[2001:db8::7]:6881");
    let v4_voters: Vec<SocketAddr> = (1..=3u8)
        .map(|i| SocketAddr::from(([127, 0, 0, i + 1], 7000)))
        .collect();
    let v6_voters: Vec<SocketAddr> = (1..=32u16)
        .map(|i| SocketAddr::from(([0x2001, 0xdb8, i, 0, 0, 0, 0, 1], 7000)))
        .collect();
    votes_from(&mut n, now, &v4_voters, me_v4);
    let id = n.id();
    assert!(secure_id::verify(&id, &me_v4.ip()));
    votes_from(&mut n, now, &v6_voters, me_v6);
    assert_eq!(n.id(), id);
    assert_eq!(n.external_ip(), Some(me_v4.ip()));
    // An IPv4 voter reporting an IPv6 address is not counted.
    let liars: Vec<SocketAddr> = (5..=8u8)
        .map(|i| SocketAddr::from(([127, 0, 0, i], 7000)))
        .collect();
    votes_from(&mut n, now, &liars, me_v6);
    assert_eq!(n.id(), id);
    assert_eq!(n.external_ip(), Some(me_v4.ip()));
}

#[test]
fn nodes_with_ids_not_matching_their_public_ip_stay_out_of_the_table() {
    let now = Instant::now();
    let mut n = node(1, now);
    let peer = addr("198.51.100.1:6881");
    n.add_node(now, peer);
    let (_, ping) = drain(&mut n).remove(0);
    let r = Response {
        id: NodeId([7; 20]),
        ..Response::default()
    };
    n.handle_datagram(now, peer, &response_bytes(ping.tid, r, None));
    assert!(n.table(Family::V4).is_empty());
}

#[test]
fn timeouts_are_exact_and_mark_failures() {
    let now = Instant::now();
    let mut n = node(1, now);
    let cfg = Config::default();
    assert_eq!(n.poll_timeout(), Some(now + cfg.maintenance_interval));
    let later = now + Duration::from_millis(100);
    n.add_node(later, addr("127.0.0.2:1"));
    drain(&mut n);
    assert_eq!(n.poll_timeout(), Some(later + cfg.short_timeout));
    n.handle_timeout(later + cfg.short_timeout);
    assert_eq!(n.poll_timeout(), Some(now + cfg.maintenance_interval));
    n.handle_timeout(now + cfg.maintenance_interval);
    // Maintenance comes round again just before the hard timeout.
    assert_eq!(n.poll_timeout(), Some(now + cfg.maintenance_interval * 2));
    n.handle_timeout(now + cfg.maintenance_interval * 2);
    assert_eq!(n.poll_timeout(), Some(later + cfg.query_timeout));
    n.handle_timeout(later + cfg.query_timeout);
    assert_eq!(n.stats().timeouts, 1);
    assert_eq!(n.queries_in_flight(), 0);
}

#[test]
fn a_bootstrap_node_that_is_slow_is_asked_once_more() {
    let now = Instant::now();
    let mut n = node(1, now);
    let cfg = Config::default();
    let router = addr("127.0.0.2:1");
    n.bootstrap(now, &[router]);
    let first = drain(&mut n);
    assert_eq!(first.len(), 1);
    // Its answer was lost: after the short timeout the same query (same
    // transaction) goes again, and only once.
    let slow = now + cfg.short_timeout;
    n.handle_timeout(slow);
    let again = drain(&mut n);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, router);
    assert_eq!(again[0].1.tid, first[0].1.tid);
    n.handle_timeout(slow + Duration::from_millis(1));
    assert!(drain(&mut n).is_empty(), "asked a third time");
}

#[test]
fn lookup_through_a_router_reports_peers_and_finishes() {
    let now = Instant::now();
    let mut n = node(1, now);
    let router = addr("127.0.0.2:1");
    let close = NodeAddr {
        id: NodeId([0x50; 20]),
        addr: addr("127.0.0.3:1"),
    };
    n.bootstrap(now, &[router]);
    let ih = InfoHash([0x51; 20]);
    let lookup = n.get_peers(now, ih);
    let out = drain(&mut n);
    // Bootstrap find_node and get_peers, both to the router (empty table).
    assert_eq!(out.len(), 2);
    for (to, msg) in out {
        assert_eq!(to, router);
        let r = Response {
            id: NodeId([0x90; 20]),
            nodes: vec![close],
            ..Response::default()
        };
        n.handle_datagram(now, router, &response_bytes(msg.tid, r, None));
    }
    // The close node is asked next, by both lookups.
    let out = drain(&mut n);
    assert_eq!(out.len(), 2);
    for (to, msg) in out {
        assert_eq!(to, close.addr);
        let r = Response {
            id: close.id,
            values: vec![addr("127.0.0.9:6881")],
            token: Token::new(b"tok"),
            ..Response::default()
        };
        n.handle_datagram(now, close.addr, &response_bytes(msg.tid, r, None));
    }
    let events: Vec<Event> = std::iter::from_fn(|| n.poll_event()).collect();
    assert!(events.contains(&Event::PeersFound {
        lookup,
        peers: vec![addr("127.0.0.9:6881")]
    }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Bootstrapped { nodes: 2 }))
    );
    let done = events.iter().find_map(|e| match e {
        Event::LookupDone { lookup: l, stats } if *l == lookup => Some(stats.clone()),
        _ => None,
    });
    let stats = done.expect("lookup finished");
    assert_eq!(stats.closest[0], close);
    // Router, then the close node: two hops.
    assert_eq!(stats.rounds, 2);
    assert_eq!(n.active_lookups(), 0);
}

/// A public node's answer naming our loopback or a private network: not
/// queried, not reported as peers.
#[test]
fn a_public_node_cannot_point_a_lookup_at_our_own_network() {
    let now = Instant::now();
    let mut n = node(1, now);
    let router = addr("198.51.100.1:1");
    let mut rng = StdRng::seed_from_u64(9);
    let router_id = secure_id::generate(&router.ip(), &mut rng);
    let contact = |s: &str, b: u8| NodeAddr {
        id: NodeId([b; 20]),
        addr: addr(s),
    };
    let (private, public) = (contact("10.0.0.3:1", 0x50), contact("203.0.113.9:1", 0x52));
    n.bootstrap(now, &[router]);
    let lookup = n.get_peers(now, InfoHash([0x51; 20]));
    for (to, msg) in drain(&mut n) {
        assert_eq!(to, router);
        let r = Response {
            id: router_id,
            nodes: vec![private, public],
            values: ["127.0.0.1:22", "192.168.1.1:80", "203.0.113.5:6881"]
                .map(addr)
                .to_vec(),
            token: Token::new(b"tok"),
            ..Response::default()
        };
        n.handle_datagram(now, router, &response_bytes(msg.tid, r, None));
    }
    let asked: Vec<SocketAddr> = drain(&mut n).into_iter().map(|(to, _)| to).collect();
    assert!(asked.contains(&public.addr), "{asked:?}");
    assert!(!asked.contains(&private.addr), "{asked:?}");
    let events: Vec<Event> = std::iter::from_fn(|| n.poll_event()).collect();
    assert!(events.contains(&Event::PeersFound {
        lookup,
        peers: vec![addr("203.0.113.5:6881")]
    }));
}

#[test]
fn read_only_node_answers_nothing_and_flags_its_queries() {
    let now = Instant::now();
    let config = Config {
        read_only: true,
        ..Config::default()
    };
    let mut n = Node::new(config, None, 1, now);
    let from = addr("127.0.0.2:7000");
    n.handle_datagram(
        now,
        from,
        &query_bytes(b"xy", NodeId([9; 20]), Query::Ping, false),
    );
    n.handle_datagram(
        now,
        from,
        b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:aa1:y1:qe",
    );
    assert!(n.poll_transmit().is_none());
    n.add_node(now, from);
    let (_, msg) = drain(&mut n).remove(0);
    assert!(msg.read_only);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Valid messages of every kind, to be mutated.
    fn seeds() -> Vec<Vec<u8>> {
        let id = NodeId([9; 20]);
        let ih = InfoHash([5; 20]);
        let node = NodeAddr {
            id,
            addr: addr("127.0.0.5:1"),
        };
        vec![
            query_bytes(b"aa", id, Query::Ping, false),
            query_bytes(
                b"ab",
                id,
                Query::FindNode {
                    target: id,
                    want: Some(Want { n4: true, n6: true }),
                },
                false,
            ),
            query_bytes(
                b"ac",
                id,
                Query::GetPeers {
                    info_hash: ih,
                    want: None,
                },
                false,
            ),
            query_bytes(
                b"ad",
                id,
                Query::AnnouncePeer {
                    info_hash: ih,
                    port: 1,
                    implied_port: false,
                    token: Token::new(b"t").unwrap(),
                },
                false,
            ),
            response_bytes(
                TransactionId::new(b"\x00\x01").unwrap(),
                Response {
                    id,
                    nodes: vec![node],
                    values: vec![node.addr],
                    ..Response::default()
                },
                Some(node.addr),
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Random and mutated datagrams from random sources never panic, and
        /// every answer stays a decodable KRPC message under the size limit.
        #[test]
        fn hostile_datagrams_never_panic(
            ops in proptest::collection::vec(
                (0usize..6, any::<u8>(), proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
                 proptest::collection::vec(any::<u8>(), 0..64), any::<u16>()),
                1..40),
        ) {
            let start = Instant::now();
            let mut n = node(1, start);
            n.bootstrap(start, &[addr("127.0.0.2:1")]);
            n.get_peers(start, InfoHash([5; 20]));
            let seeds = seeds();
            for (step, (kind, last, flips, random, port)) in ops.into_iter().enumerate() {
                let now = start + Duration::from_millis(step as u64 * 700);
                let mut bytes = if kind < seeds.len() { seeds[kind].clone() } else { random };
                for (at, value) in flips {
                    if !bytes.is_empty() {
                        let i = usize::from(at) % bytes.len();
                        bytes[i] = value;
                    }
                }
                let from = SocketAddr::from(([127, 0, 0, last], port));
                n.handle_datagram(now, from, &bytes);
                n.handle_timeout(now);
                for (_, msg) in drain(&mut n) {
                    prop_assert!(msg.tid.as_slice().len() <= crate::krpc::MAX_TID_LEN);
                }
                while n.poll_event().is_some() {}
            }
        }
    }
}

/// BEP 5: `find_node` and `get_peers` answers carry `nodes` even when the
/// node knows nobody (an empty string), and BEP 32's `nodes6` when asked for.
#[test]
fn empty_node_lists_are_sent_not_left_out() {
    let now = Instant::now();
    for config in [Config::default(), Config::server()] {
        let mut n = Node::new(config, Some(NodeId([1; 20])), 1, now);
        let target = NodeId([7; 20]);
        let queries = [
            Query::FindNode { target, want: None },
            Query::GetPeers {
                info_hash: InfoHash(target.0),
                want: None,
            },
            Query::FindNode {
                target,
                want: Some(Want { n4: true, n6: true }),
            },
        ];
        for (i, query) in queries.into_iter().enumerate() {
            let both = matches!(query, Query::FindNode { want: Some(_), .. });
            let bytes = query_bytes(&[i as u8], NodeId([9; 20]), query, true);
            n.handle_datagram(now, addr("127.0.0.2:7000"), &bytes);
            let reply = n.poll_transmit().unwrap().bytes;
            let has = |key: &[u8]| reply.windows(key.len()).any(|w| w == key);
            assert!(has(b"5:nodes0:"), "{}", String::from_utf8_lossy(&reply));
            assert_eq!(has(b"6:nodes60:"), both);
            let msg = Message::decode(&reply).unwrap();
            let Body::Response(r) = msg.body else {
                panic!("not an answer: {msg:?}");
            };
            assert_eq!(r.node_lists, Want { n4: true, n6: both });
        }
        // A ping answer has no node list.
        n.handle_datagram(
            now,
            addr("127.0.0.2:7000"),
            &query_bytes(b"p", NodeId([9; 20]), Query::Ping, true),
        );
        let reply = n.poll_transmit().unwrap().bytes;
        assert!(!reply.windows(5).any(|w| w == b"nodes"));
    }
}

#[test]
fn a_client_is_no_amplifier() {
    let now = Instant::now();
    let mut n = node(1, now);
    let answers = |n: &mut Node| {
        drain(n)
            .into_iter()
            .filter(|(_, m)| matches!(m.body, Body::Response(_)))
            .map(|(_, m)| m.to_bytes().len())
            .collect::<Vec<_>>()
    };
    // One source (spoofed, say): its burst of answers, then silence.
    let ping = query_bytes(b"x", NodeId([9; 20]), Query::Ping, false);
    for _ in 0..1000 {
        n.handle_datagram(now, addr("198.51.100.9:6881"), &ping);
    }
    let one = answers(&mut n).len();
    assert!(one <= 100, "{one} answers to one source");
    // Many sources at once: the bytes answered stay within the budget.
    let later = now + Duration::from_secs(1);
    for i in 0..4000u32 {
        let [_, _, a, b] = i.to_be_bytes();
        n.handle_datagram(later, SocketAddr::from(([203, 0, a, b], 6881)), &ping);
    }
    let bytes: usize = answers(&mut n).iter().sum();
    let budget = RateLimitConfig::client().reply_bytes_rate;
    assert!(
        (bytes as f64) < budget / 10.0 + 2048.0 + 1000.0,
        "{bytes} bytes answered at once"
    );
}

#[test]
fn a_client_never_limits_replies_to_its_own_queries() {
    // A router answering a burst of our lookups (replies are matched to
    // our queries later; unmatched ones are simply dropped).
    let now = Instant::now();
    let mut n = node(1, now);
    let router = addr("198.51.100.7:6881");
    let reply = response_bytes(
        TransactionId::new(b"zz").unwrap(),
        Response::default(),
        None,
    );
    for _ in 0..500 {
        n.handle_datagram(now, router, &reply);
    }
    drain(&mut n);
    // The router is not banned: its own query is answered.
    let ping = query_bytes(b"x", NodeId([7; 20]), Query::Ping, false);
    n.handle_datagram(now, router, &ping);
    assert!(
        drain(&mut n)
            .iter()
            .any(|(to, m)| *to == router && matches!(m.body, Body::Response(_)))
    );
}
