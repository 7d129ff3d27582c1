//! Hostile DHT nodes against the sans-IO [`lodestone_dht::Node`]: no
//! socket, a virtual clock, and a scripted network in which every other
//! node is whatever the test says it is.
//!
//! Each test has a positive control (the honest version of the same
//! exchange is accepted), so it fails if the node ignored everything.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, NodeAddr, NodeId};
use lodestone_dht::krpc::{Body, Message, Query, Response, Token, TransactionId};
use lodestone_dht::{Config, Event, LookupId, Node, Transmit, secure_id};
use rand::SeedableRng;
use rand::rngs::StdRng;

const OWN: NodeId = NodeId([0x55; 20]);

fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

/// A query the node sent, decoded.
#[derive(Debug, Clone)]
struct Sent {
    to: SocketAddr,
    tid: TransactionId,
    query: Query,
}

/// The node under attack and a virtual clock.
struct Harness {
    node: Node,
    now: Instant,
    start: Instant,
    events: Vec<Event>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let start = Instant::now();
        Self {
            node: Node::new(config, Some(OWN), 1, start),
            now: start,
            start,
            events: Vec::new(),
        }
    }

    /// Everything the node sent since the last call: queries decoded,
    /// answers dropped (the tests only script answers to its queries).
    fn sent(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        while let Some(Transmit { to, bytes }) = self.node.poll_transmit() {
            let message = Message::decode(&bytes).expect("the node sends valid KRPC");
            if let Body::Query { query, .. } = message.body {
                out.push(Sent {
                    to,
                    tid: message.tid,
                    query,
                });
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.events.push(event);
        }
        out
    }

    fn reply(&mut self, from: SocketAddr, tid: TransactionId, response: Response) {
        let message = Message {
            tid,
            body: Body::Response(response),
            ip: None,
            read_only: false,
            version: None,
        };
        self.node
            .handle_datagram(self.now, from, &message.to_bytes());
    }

    /// Advances to the node's next deadline, handling it.
    fn tick(&mut self) {
        let next = self
            .node
            .poll_timeout()
            .expect("a node always has a deadline");
        self.now = self.now.max(next);
        self.node.handle_timeout(self.now);
    }

    fn table_ids(&self) -> HashSet<NodeId> {
        self.node
            .table(Family::V4)
            .entries()
            .map(|e| e.node.id)
            .collect()
    }

    fn done(&self, lookup: LookupId) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::LookupDone { lookup: l, .. } if *l == lookup))
    }
}

fn response(id: NodeId) -> Response {
    Response {
        id,
        ..Response::default()
    }
}

fn altered(tid: TransactionId) -> TransactionId {
    let mut bytes = tid.as_slice().to_vec();
    bytes[0] ^= 0x01;
    TransactionId::new(&bytes).unwrap()
}

/// The single ping `add_node` sends to `to`.
fn ping(h: &mut Harness, to: SocketAddr) -> Sent {
    h.node.add_node(h.now, to);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "add_node sends one ping: {sent:?}");
    assert_eq!(sent[0].to, to);
    assert!(matches!(sent[0].query, Query::Ping));
    sent[0].clone()
}

#[test]
fn reply_with_a_wrong_transaction_id_is_ignored() {
    let mut h = Harness::new(Config::default());
    let peer = addr(10, 0, 0, 1, 6881);
    let id = NodeId([0x11; 20]);
    let sent = ping(&mut h, peer);
    let dropped = h.node.stats().dropped;
    h.reply(peer, altered(sent.tid), response(id));
    assert!(
        h.node.table(Family::V4).is_empty(),
        "forged answer entered the table"
    );
    assert_eq!(h.node.stats().dropped, dropped + 1);
    // Control: the real transaction id is still pending and accepted.
    h.reply(peer, sent.tid, response(id));
    assert_eq!(h.table_ids(), HashSet::from([id]));
}

#[test]
fn reply_from_another_address_is_ignored() {
    let mut h = Harness::new(Config::default());
    let peer = addr(10, 0, 0, 1, 6881);
    let id = NodeId([0x11; 20]);
    let sent = ping(&mut h, peer);
    for spoof in [addr(10, 0, 0, 2, 6881), addr(10, 0, 0, 1, 6882)] {
        h.reply(spoof, sent.tid, response(id));
        assert!(
            h.node.table(Family::V4).is_empty(),
            "answer from {spoof} accepted for a query to {peer}"
        );
    }
    h.reply(peer, sent.tid, response(id));
    assert_eq!(h.table_ids(), HashSet::from([id]));
    // A replay of the same answer matches nothing any more.
    let dropped = h.node.stats().dropped;
    h.reply(peer, sent.tid, response(NodeId([0x12; 20])));
    assert_eq!(h.table_ids(), HashSet::from([id]));
    assert_eq!(h.node.stats().dropped, dropped + 1);
}

#[test]
fn a_node_claiming_our_own_id_never_enters_the_table() {
    let mut h = Harness::new(Config::default());
    let peer = addr(10, 0, 0, 1, 6881);
    let sent = ping(&mut h, peer);
    h.reply(peer, sent.tid, response(OWN));
    assert!(h.node.table(Family::V4).is_empty());
    // Its query is not answered either: our id coming back is a reflection.
    let query = Message {
        tid: TransactionId::new(b"qq").unwrap(),
        body: Body::Query {
            id: OWN,
            query: Query::Ping,
        },
        ip: None,
        read_only: false,
        version: None,
    };
    h.node.handle_datagram(h.now, peer, &query.to_bytes());
    assert!(h.node.poll_transmit().is_none());
}

/// A router's answer to bootstrap, full of junk contacts: our own id, port
/// 0, one public IP many times. Nothing enters the table unless it answers
/// from its own address, and one public IP gets one entry.
#[test]
fn junk_node_lists_do_not_pollute_the_table() {
    let mut h = Harness::new(Config::default());
    let router = addr(10, 0, 0, 1, 6881);
    h.node.bootstrap(h.now, &[router]);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let target = match sent[0].query {
        Query::FindNode { target, .. } => target,
        ref q => panic!("bootstrap sent {q:?}"),
    };
    assert_eq!(target, OWN);

    let mut rng = StdRng::seed_from_u64(9);
    let public = IpAddr::V4(Ipv4Addr::new(124, 31, 75, 21));
    let mut nodes = Vec::new();
    let mut claimed = HashMap::new();
    for i in 0..8u8 {
        nodes.push(NodeAddr {
            id: OWN,
            addr: addr(10, 0, 1, i, 6881),
        });
        nodes.push(NodeAddr {
            id: NodeId([0x54; 20]),
            addr: addr(10, 0, 2, i, 0),
        });
    }
    for port in 1..=40u16 {
        // Valid BEP 42 ids for that IP, so only the per-IP rule can refuse them.
        let node = NodeAddr {
            id: secure_id::generate(&public, &mut rng),
            addr: SocketAddr::new(public, 6000 + port),
        };
        claimed.insert(node.addr, node.id);
        nodes.push(node);
    }
    let mut answer = response(NodeId([0x77; 20]));
    answer.nodes = nodes;
    h.reply(router, sent[0].tid, answer);

    // Every contact that gets a query answers it honestly, as often as asked.
    let mut queried = HashSet::new();
    for _ in 0..200 {
        let sent = h.sent();
        if sent.is_empty() {
            if h.node.active_lookups() == 0 {
                break;
            }
            h.tick();
            continue;
        }
        for s in sent {
            assert_ne!(s.to.port(), 0, "queried a port-0 contact");
            assert!(
                !s.to.ip().is_unspecified(),
                "queried the unspecified address"
            );
            queried.insert(s.to);
            if let Some(&id) = claimed.get(&s.to) {
                h.reply(s.to, s.tid, response(id));
            }
        }
    }
    assert!(
        queried.iter().any(|a| a.ip() == public),
        "control: the public contacts were queried"
    );
    assert!(
        !queried
            .iter()
            .any(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.octets()[..3] == [10, 0, 1])),
        "queried a contact that claimed our own id"
    );
    let table = h.node.table(Family::V4);
    table.check_invariants().unwrap();
    assert!(table.get(&OWN).is_none());
    assert!(table.entries().all(|e| e.node.addr.port() != 0));
    let on_public = table
        .entries()
        .filter(|e| e.node.addr.ip() == public)
        .count();
    assert_eq!(on_public, 1, "one public IP took {on_public} entries");
}

/// BEP 5 nodes lists are compact IPv4 contacts; a hostile node can name
/// 0.0.0.0 (which a socket delivers to the local host) or a broadcast
/// address. The node should not send queries there.
#[test]
fn lookups_do_not_query_unspecified_or_broadcast_addresses() {
    let mut h = Harness::new(Config::default());
    let router = addr(10, 0, 0, 1, 6881);
    h.node.bootstrap(h.now, &[router]);
    let sent = h.sent();
    let mut answer = response(NodeId([0x77; 20]));
    answer.nodes = vec![
        NodeAddr {
            id: NodeId([0x56; 20]),
            addr: addr(0, 0, 0, 0, 6881),
        },
        NodeAddr {
            id: NodeId([0x57; 20]),
            addr: addr(255, 255, 255, 255, 6881),
        },
        NodeAddr {
            id: NodeId([0x58; 20]),
            addr: addr(10, 0, 0, 9, 6881),
        },
    ];
    h.reply(router, sent[0].tid, answer);
    let sent = h.sent();
    assert!(
        sent.iter().any(|s| s.to == addr(10, 0, 0, 9, 6881)),
        "control: the sane contact is queried"
    );
    let bad: Vec<_> = sent
        .iter()
        .map(|s| s.to)
        .filter(|a| a.ip().is_unspecified() || a.ip() == IpAddr::V4(Ipv4Addr::BROADCAST))
        .collect();
    assert!(bad.is_empty(), "queried {bad:?}");
}

/// `Node::announce(now, ih, Some(0))` sends `announce_peer` with port 0 and
/// no `implied_port`, which every node (ours included) refuses with 203.
/// Found by the `dht_node` fuzz target.
#[test]
fn announce_with_port_zero_sends_a_valid_query() {
    let mut h = Harness::new(Config::default());
    let peer = addr(10, 0, 0, 1, 6881);
    let sent = ping(&mut h, peer);
    h.reply(peer, sent.tid, response(NodeId([0x11; 20])));
    let lookup = h.node.announce(h.now, InfoHash::new([0x54; 20]), Some(0));
    let sent = h.sent();
    let get_peers = sent.iter().find(|s| s.to == peer).unwrap();
    let mut answer = response(NodeId([0x11; 20]));
    answer.token = Token::new(b"tok");
    h.reply(peer, get_peers.tid, answer);
    let mut announces = 0;
    while let Some(t) = h.node.poll_transmit() {
        if let Err(e) = Message::decode(&t.bytes) {
            panic!("the node sent a query it would itself refuse: {e}");
        }
        announces += 1;
    }
    assert!(announces > 0 || h.done(lookup), "control: the lookup ended");
}

/// A swarm of liars: every queried node answers at once with a batch of
/// fresh contacts closer to the target than anything seen, drawn from a
/// pool of 10,000 fakes; half of the fakes never answer. The lookup must
/// still end, in bounded virtual time and with each address queried once.
#[test]
fn ten_thousand_fake_closest_nodes_do_not_make_a_lookup_hang() {
    const FAKES: u32 = 10_000;
    let mut h = Harness::new(Config::default());
    let info_hash = InfoHash::new([0xa5; 20]);
    let target = info_hash.as_node_id();
    // Fake number n sits at 10.(n >> 16).(n >> 8).n with an id that agrees
    // with the target on more leading bits the larger n is: every batch
    // beats the last.
    let fake = |n: u32| {
        let mut id = target.0;
        let flip = 9 + (n as usize * 150 / FAKES as usize).min(150);
        id[flip / 8] ^= 0x80 >> (flip % 8);
        id[19] ^= n as u8;
        id[18] ^= (n >> 8) as u8;
        NodeAddr {
            id: NodeId(id),
            addr: addr(10, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8, 6881),
        }
    };
    let router = addr(10, 0, 0, 1, 6881);
    h.node.bootstrap(h.now, &[router]);
    let boot = h.sent();
    h.reply(router, boot[0].tid, response(NodeId([0x77; 20])));
    h.sent();
    while h.node.active_lookups() > 0 {
        h.tick();
        h.sent();
    }

    let lookup = h.node.get_peers(h.now, info_hash);
    let mut next_fake = 0u32;
    // Queries per address: a slow query is sent once more, never a third time.
    let mut queried: HashMap<SocketAddr, HashSet<TransactionId>> = HashMap::new();
    let mut steps = 0;
    while !h.done(lookup) {
        steps += 1;
        assert!(steps < 100_000, "lookup still running after {steps} steps");
        let sent = h.sent();
        if sent.is_empty() {
            h.tick();
            continue;
        }
        for s in sent {
            if !matches!(s.query, Query::GetPeers { .. }) {
                continue;
            }
            let tids = queried.entry(s.to).or_default();
            tids.insert(s.tid);
            // The router is asked both as a table entry and as a router
            // (the table is sparse); a fake is asked once.
            if s.to != router {
                assert_eq!(tids.len(), 1, "{} queried twice in one lookup", s.to);
            }
            let n = match s.to {
                a if a == router => 0,
                SocketAddr::V4(a) => {
                    let o = a.ip().octets();
                    (u32::from(o[1] - 1) << 16) | (u32::from(o[2]) << 8) | u32::from(o[3])
                }
                SocketAddr::V6(_) => unreachable!(),
            };
            if n % 2 == 1 {
                continue; // a silent fake
            }
            let id = if s.to == router {
                NodeId([0x77; 20])
            } else {
                fake(n).id
            };
            let mut answer = response(id);
            answer.token = Token::new(b"liar");
            let batch = (FAKES - next_fake).min(64);
            answer.nodes = (next_fake..next_fake + batch).map(fake).collect();
            next_fake += batch;
            h.reply(s.to, s.tid, answer);
        }
    }
    let elapsed = h.now - h.start;
    assert!(
        elapsed < Duration::from_secs(30 * 60),
        "the lookup took {elapsed:?} of virtual time"
    );
    assert!(next_fake > 64, "control: the liars were queried");
    eprintln!(
        "lookup over {next_fake} fakes: {} queries, {elapsed:?} virtual",
        queried.len()
    );
}

/// A hostile node's `values` list naming port 0, 0.0.0.0, broadcast or
/// multicast peers: the application would dial them (0.0.0.0 reaches the
/// local host), so a lookup should not report them.
#[test]
fn uncontactable_peers_are_not_reported() {
    let mut h = Harness::new(Config::default());
    let peer = addr(10, 0, 0, 1, 6881);
    let sent = ping(&mut h, peer);
    h.reply(peer, sent.tid, response(NodeId([0x11; 20])));
    let lookup = h.node.get_peers(h.now, InfoHash::new([0x54; 20]));
    let sent = h.sent();
    let query = sent.iter().find(|s| s.to == peer).unwrap();
    let good = addr(10, 0, 0, 9, 51413);
    let mut answer = response(NodeId([0x11; 20]));
    answer.values = vec![
        addr(0, 0, 0, 0, 6881),
        addr(10, 0, 0, 8, 0),
        addr(255, 255, 255, 255, 6881),
        addr(224, 0, 0, 1, 6881),
        good,
    ];
    h.reply(peer, query.tid, answer);
    h.sent();
    let reported: Vec<SocketAddr> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeersFound { lookup: l, peers } if *l == lookup => Some(peers.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(reported, vec![good]);
}

/// A bootstrap node verifies the contacts its lookups learn by pinging
/// them; contacts a hostile node listed at 0.0.0.0, broadcast or multicast
/// addresses must not be pinged.
#[test]
fn server_pings_only_contactable_nodes() {
    let mut config = Config::server();
    if let Some(server) = &mut config.server {
        server.limits.slots = 64;
    }
    let mut h = Harness::new(config);
    let router = addr(10, 0, 0, 1, 6881);
    h.node.bootstrap(h.now, &[router]);
    let sent = h.sent();
    let boot = sent.iter().find(|s| s.to == router).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let odd = [
        addr(0, 0, 0, 0, 6881),
        addr(255, 255, 255, 255, 6881),
        addr(224, 0, 0, 1, 6881),
    ];
    let good = addr(10, 0, 0, 9, 6881);
    let mut answer = response(NodeId([0x77; 20]));
    answer.nodes = odd
        .iter()
        .chain([&good])
        .map(|a| NodeAddr {
            // BEP 42 ids for each IP, so only the address itself is wrong.
            id: secure_id::generate(&a.ip(), &mut rng),
            addr: *a,
        })
        .collect();
    h.reply(router, boot.tid, answer);
    let mut sent_to = HashSet::new();
    for _ in 0..200 {
        sent_to.extend(h.sent().into_iter().map(|s| s.to));
        h.tick();
        if h.now - h.start > Duration::from_secs(30) {
            break;
        }
    }
    assert!(
        sent_to.contains(&good),
        "control: the sane contact is pinged"
    );
    let bad: Vec<_> = odd.iter().filter(|a| sent_to.contains(a)).collect();
    assert!(bad.is_empty(), "a server pinged {bad:?}");
}
