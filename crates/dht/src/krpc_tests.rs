use super::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

fn tid(s: &[u8]) -> TransactionId {
    TransactionId::new(s).unwrap()
}

fn query(q: Query, querier: &[u8; 20]) -> Message {
    Message {
        tid: tid(b"aa"),
        body: Body::Query {
            id: id(querier),
            query: q,
        },
        ip: None,
        read_only: false,
        version: None,
    }
}

/// Encodes `msg`, compares with the BEP's bytes and decodes the bytes back.
fn golden(msg: Message, bytes: &[u8]) {
    assert_eq!(
        String::from_utf8_lossy(&msg.to_bytes()),
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(Message::decode(bytes).unwrap(), msg);
}

#[test]
fn bep5_ping() {
    golden(
        query(Query::Ping, b"abcdefghij0123456789"),
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    );
    golden(
        Message {
            tid: tid(b"aa"),
            body: Body::Response(Response {
                id: id(b"mnopqrstuvwxyz123456"),
                ..Response::default()
            }),
            ip: None,
            read_only: false,
            version: None,
        },
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
    );
}

#[test]
fn bep5_find_node_and_get_peers_queries() {
    golden(
        query(
            Query::FindNode {
                target: id(b"mnopqrstuvwxyz123456"),
                want: None,
            },
            b"abcdefghij0123456789",
        ),
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
    );
    golden(
        query(
            Query::GetPeers {
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                want: None,
            },
            b"abcdefghij0123456789",
        ),
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
    );
}

#[test]
fn bep5_get_peers_response_with_values() {
    let peer = |b: &[u8; 6]| compact::decode_peer(b).unwrap();
    golden(
        Message {
            tid: tid(b"aa"),
            body: Body::Response(Response {
                id: id(b"abcdefghij0123456789"),
                token: Token::new(b"aoeusnth"),
                values: vec![peer(b"axje.u"), peer(b"idhtnm")],
                ..Response::default()
            }),
            ip: None,
            read_only: false,
            version: None,
        },
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    );
}

#[test]
fn bep5_announce_peer() {
    golden(
        query(
            Query::AnnouncePeer {
                info_hash: InfoHash(*b"mnopqrstuvwxyz123456"),
                port: 6881,
                implied_port: true,
                token: Token::new(b"aoeusnth").unwrap(),
            },
            b"abcdefghij0123456789",
        ),
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    );
}

#[test]
fn bep5_error() {
    golden(
        Message {
            tid: tid(b"aa"),
            body: Body::Error(ErrorBody {
                code: 201,
                message: "A Generic Error Ocurred".into(),
            }),
            ip: None,
            read_only: false,
            version: None,
        },
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    );
}

#[test]
fn bep5_example_nodes_string_is_ragged_and_dropped() {
    // The BEP's "def456..." placeholder is 9 bytes: not a multiple of 26.
    let bytes = b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re";
    assert!(matches!(
        Message::decode(bytes),
        Err(DecodeError::MalformedResponse(_))
    ));
}

#[test]
fn read_only_flag_and_ip_are_top_level() {
    let mut msg = query(Query::Ping, b"abcdefghij0123456789");
    msg.read_only = true;
    msg.version = Some(*b"LD01");
    let bytes = msg.to_bytes();
    assert!(bytes.windows(9).any(|w| w == b"2:roi1e1:"));
    assert_eq!(Message::decode(&bytes).unwrap(), msg);
    let reply = b"d2:ip6:\x7f\x00\x00\x01\x1a\xe11:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    let decoded = Message::decode(reply).unwrap();
    assert_eq!(decoded.ip, Some("127.0.0.1:6881".parse().unwrap()));
}

#[test]
fn the_first_of_duplicated_keys_wins() {
    // At the top level, in the arguments and in a response's values.
    let q = Message::decode(
        b"d1:ad2:id20:abcdefghij01234567892:id20:zzzzzzzzzzzzzzzzzzzze1:q4:ping1:q9:find_node1:t2:aa1:t2:bb1:y1:qe",
    )
    .unwrap();
    assert_eq!(q, query(Query::Ping, b"abcdefghij0123456789"));
    let r =
        Message::decode(b"d1:rd2:id20:abcdefghij01234567892:id3:abce1:t2:aa1:y1:r1:y1:qe").unwrap();
    let Body::Response(r) = r.body else {
        panic!("the first y says response");
    };
    assert_eq!(r.id, id(b"abcdefghij0123456789"));
}

#[test]
fn classification_of_bad_datagrams() {
    let not_krpc: &[&[u8]] = &[
        b"",
        b"garbage",
        b"li1ee",
        b"d1:y1:qe",
        b"d1:t2:aa1:y1:xe",
        b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:qe",
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe trailing",
    ];
    for bytes in not_krpc {
        assert!(
            matches!(Message::decode(bytes), Err(DecodeError::NotKrpc(_))),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:aa1:y1:qe";
    let err = Message::decode(unknown).unwrap_err();
    assert_eq!(err.reply().unwrap().1, ErrorCode::MethodUnknown);
    assert_eq!(err.reply().unwrap().0, tid(b"aa"));
    let malformed: &[&[u8]] = &[
        b"d1:ad2:id19:abcdefghij012345678e1:q4:ping1:t2:aa1:y1:qe",
        b"d1:q4:ping1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wanti1ee1:q9:find_node1:t2:aa1:y1:qe",
    ];
    for bytes in malformed {
        let err = Message::decode(bytes).unwrap_err();
        assert_eq!(
            err.reply().map(|r| r.1),
            Some(ErrorCode::Protocol),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let bad_responses: &[&[u8]] = &[
        b"d1:rd2:id3:abce1:t2:aa1:y1:re",
        b"d1:t2:aa1:y1:re",
        b"d1:rd2:id20:abcdefghij01234567896:valuesi1ee1:t2:aa1:y1:re",
    ];
    for bytes in bad_responses {
        let err = Message::decode(bytes).unwrap_err();
        assert!(err.reply().is_none());
    }
}

#[test]
fn oversized_lists_are_refused() {
    let mut nodes = vec![0u8; (MAX_NODES + 1) * 26];
    nodes[0] = 1;
    let mut bytes = b"d1:rd2:id20:abcdefghij01234567895:nodes".to_vec();
    bytes.extend_from_slice(format!("{}:", nodes.len()).as_bytes());
    bytes.extend_from_slice(&nodes);
    bytes.extend_from_slice(b"e1:t2:aa1:y1:re");
    assert!(Message::decode(&bytes).is_err());
    let mut values = b"d1:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
    for _ in 0..=MAX_VALUES {
        values.extend_from_slice(b"6:abcdef");
    }
    values.extend_from_slice(b"ee1:t2:aa1:y1:re");
    assert!(Message::decode(&values).is_err());
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
    ]
}

fn arb_node(v6: bool) -> impl Strategy<Value = NodeAddr> {
    (any::<[u8; 20]>(), arb_addr()).prop_map(move |(id, addr)| {
        let addr = match (v6, addr) {
            (false, SocketAddr::V6(a)) => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
            }
            (true, SocketAddr::V4(a)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port()),
            (_, a) => a,
        };
        NodeAddr {
            id: NodeId(id),
            addr,
        }
    })
}

fn arb_want() -> impl Strategy<Value = Option<Want>> {
    proptest::option::of((any::<bool>(), any::<bool>()).prop_map(|(n4, n6)| Want { n4, n6 }))
}

fn arb_bytes<const N: usize>() -> impl Strategy<Value = ShortBytes<N>> {
    proptest::collection::vec(any::<u8>(), 0..=N).prop_map(|v| ShortBytes::new(&v).unwrap())
}

fn arb_query() -> impl Strategy<Value = Query> {
    prop_oneof![
        Just(Query::Ping),
        (any::<[u8; 20]>(), arb_want()).prop_map(|(t, want)| Query::FindNode {
            target: NodeId(t),
            want
        }),
        (any::<[u8; 20]>(), arb_want()).prop_map(|(t, want)| Query::GetPeers {
            info_hash: InfoHash(t),
            want
        }),
        (any::<[u8; 20]>(), 1..=u16::MAX, any::<bool>(), arb_bytes()).prop_map(
            |(t, port, implied_port, token)| Query::AnnouncePeer {
                info_hash: InfoHash(t),
                port,
                implied_port,
                token
            }
        ),
    ]
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<[u8; 20]>(), arb_query()).prop_map(|(id, query)| Body::Query {
            id: NodeId(id),
            query
        }),
        (
            any::<[u8; 20]>(),
            // Up to the most a reply may carry: more than the encoder
            // gathers for one write, so its flushes are crossed.
            proptest::collection::vec(arb_node(false), 0..=MAX_NODES),
            proptest::collection::vec(arb_node(true), 0..=MAX_NODES),
            proptest::collection::vec(arb_addr(), 0..20),
            proptest::option::of(arb_bytes()),
            any::<(bool, bool)>(),
        )
            .prop_map(
                |(id, nodes, nodes6, values, token, (n4, n6))| Body::Response(Response {
                    id: NodeId(id),
                    // A non-empty list is always on the wire.
                    node_lists: Want {
                        n4: n4 || !nodes.is_empty(),
                        n6: n6 || !nodes6.is_empty(),
                    },
                    nodes,
                    nodes6,
                    values,
                    token,
                })
            ),
        (any::<i64>(), "[a-zA-Z ]{0,40}")
            .prop_map(|(code, message)| Body::Error(ErrorBody { code, message })),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(
        tid in arb_bytes(),
        body in arb_body(),
        ip in proptest::option::of(arb_addr()),
        read_only: bool,
        version: Option<[u8; 4]>,
    ) {
        let msg = Message { tid, body, ip, read_only, version };
        let bytes = msg.to_bytes();
        // Canonical: the scanner accepts it and re-encoding is byte-identical.
        let decoded = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &msg);
        prop_assert_eq!(decoded.to_bytes(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
    }
}

#[test]
fn bep5_empty_node_list_is_an_empty_string() {
    golden(
        Message {
            tid: tid(b"aa"),
            body: Body::Response(Response {
                id: id(b"0123456789abcdefghij"),
                node_lists: Want {
                    n4: true,
                    n6: false,
                },
                ..Response::default()
            }),
            ip: None,
            read_only: false,
            version: None,
        },
        b"d1:rd2:id20:0123456789abcdefghij5:nodes0:e1:t2:aa1:y1:re",
    );
}
