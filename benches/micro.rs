//! Criterion micro-benchmarks of lodestone's hot paths.
//!
//! Run with `cargo bench -p lodestone-benches --bench micro`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lodestone_benches::krpc_load::{Kind, encode_query};
use lodestone_bencode::{Limits, OwnedValue, encode, parse};
use lodestone_core::compact::Family;
use lodestone_core::{InfoHash, NodeAddr, NodeId};
use lodestone_dht::krpc::{Body, Message, Query, Response, TransactionId};
use lodestone_dht::pool::{Pool, PoolConfig};
use lodestone_dht::routing::{RoutingConfig, RoutingTable};
use lodestone_dht::{Config, Node};
use lodestone_download::{Bitfield, BlockOutcome, Layout, PeerKey, Picker};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha1::{Digest, Sha1};

/// A realistic `find_node` reply: 8 compact IPv4 nodes, as a bootstrap node sends.
fn find_node_reply() -> Vec<u8> {
    let mut nodes = Vec::new();
    for i in 0..8u8 {
        nodes.extend_from_slice(&[i; 20]);
        nodes.extend_from_slice(&[127, 0, 0, i, 0x1a, 0xe1]);
    }
    let mut out = b"d2:ip6:".to_vec();
    out.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
    out.extend_from_slice(b"1:rd2:id20:");
    out.extend_from_slice(&[7; 20]);
    out.extend_from_slice(format!("5:nodes{}:", nodes.len()).as_bytes());
    out.extend_from_slice(&nodes);
    out.extend_from_slice(b"e1:t2:aa1:y1:re");
    out
}

fn bencode(c: &mut Criterion) {
    let reply = find_node_reply();
    let mut group = c.benchmark_group("bencode");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function("scan find_node reply", |b| {
        b.iter(|| parse(black_box(&reply), &Limits::KRPC).map(|d| d.item_count()))
    });
    group.bench_function("serde_bencode find_node reply (reference)", |b| {
        b.iter(|| {
            serde_bencode::from_bytes::<serde_bencode::value::Value>(black_box(&reply)).is_ok()
        })
    });
    let owned = OwnedValue::from(parse(&reply, &Limits::KRPC).expect("valid reply").root());
    group.bench_function("encode find_node reply", |b| {
        b.iter(|| encode(black_box(&owned)))
    });
    group.finish();
}

/// A `get_peers` query as a client sends it.
fn get_peers_query() -> Vec<u8> {
    let mut out = Vec::new();
    Message {
        tid: TransactionId::new(b"gp").expect("2 bytes fit"),
        body: Body::Query {
            id: NodeId([3; 20]),
            query: Query::GetPeers {
                info_hash: InfoHash([9; 20]),
                want: None,
            },
        },
        ip: None,
        read_only: false,
        version: None,
    }
    .encode(&mut out);
    out
}

fn krpc(c: &mut Criterion) {
    let reply = find_node_reply();
    let query = get_peers_query();
    let mut group = c.benchmark_group("krpc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode find_node reply (8 nodes)", |b| {
        b.iter(|| Message::decode(black_box(&reply)).is_ok())
    });
    group.bench_function("decode get_peers query", |b| {
        b.iter(|| Message::decode(black_box(&query)).is_ok())
    });
    let message = Message::decode(&reply).expect("valid reply");
    let mut out = Vec::with_capacity(512);
    group.bench_function("encode find_node reply (8 nodes)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&message).encode(&mut out);
            out.len()
        })
    });
    let response = Message {
        tid: TransactionId::new(b"aa").expect("2 bytes fit"),
        body: Body::Response(Response {
            id: NodeId([7; 20]),
            ..Response::default()
        }),
        ip: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 6881))),
        read_only: false,
        version: None,
    };
    group.bench_function("encode ping reply", |b| {
        b.iter(|| {
            out.clear();
            black_box(&response).encode(&mut out);
            out.len()
        })
    });
    group.finish();
}

/// A table filled from 100,000 random contacts: every bucket the random
/// ids can reach is full (about k * log2(n) entries).
fn full_table(rng: &mut StdRng) -> RoutingTable {
    let now = Instant::now();
    let config = RoutingConfig {
        restrict_ips: false,
        ..RoutingConfig::default()
    };
    let mut table = RoutingTable::new(NodeId(rng.random()), config, now);
    for i in 0..100_000u32 {
        let [a, b, c, d] = i.to_be_bytes();
        let addr = SocketAddr::from((Ipv4Addr::new(10, b, c, d), 6881 + u16::from(a)));
        table.insert(
            NodeAddr {
                id: NodeId(rng.random()),
                addr,
            },
            now,
        );
    }
    table
}

fn routing(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let table = full_table(&mut rng);
    let targets: Vec<NodeId> = (0..1024).map(|_| NodeId(rng.random())).collect();
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function(format!("closest 8 of {} entries", table.len()), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            table.closest(black_box(&targets[i]), 8)
        })
    });
    let mut out = Vec::with_capacity(8);
    group.bench_function(format!("closest_into 8 of {} entries", table.len()), |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            out.clear();
            table.closest_into(black_box(&targets[i]), 8, &mut out);
            out.len()
        })
    });
    group.finish();
}

/// `entries` nodes with random ids on distinct loopback addresses (exempt
/// from the pool's per-IP cap).
fn loopback_nodes(rng: &mut StdRng, entries: u32) -> impl Iterator<Item = NodeAddr> + '_ {
    (0..entries).map(|i| {
        let [_, a, b, c] = i.to_be_bytes();
        NodeAddr {
            id: NodeId(rng.random()),
            addr: SocketAddr::from((Ipv4Addr::new(127, 128 | a, b, c), 6881)),
        }
    })
}

/// A bootstrap node's pool of `entries` [`loopback_nodes`], with its
/// serving snapshot built.
fn full_pool(rng: &mut StdRng, entries: u32) -> Pool {
    let now = Instant::now();
    let mut pool = Pool::new(PoolConfig::default(), now);
    for node in loopback_nodes(rng, entries) {
        pool.insert(node, now, now);
    }
    pool.refresh_snapshot(Family::V4, now);
    pool
}

/// The 16 contacts a bootstrap node answers with, from pools in and far
/// out of the cache: the cost per query must not grow with the pool.
fn pool(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(43);
    let targets: Vec<NodeId> = (0..1 << 16).map(|_| NodeId(rng.random())).collect();
    let querier = NodeId([0xff; 20]);
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    for entries in [10_000, 1_000_000] {
        let pool = full_pool(&mut rng, entries);
        let mut out = Vec::with_capacity(16);
        let mut i = 0;
        group.bench_function(format!("closest 16 of {entries} entries"), |b| {
            b.iter(|| {
                i = (i + 1) % targets.len();
                pool.closest_into(black_box(&targets[i]), Family::V4, 16, &querier, &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

/// A bootstrap node answering bursts of 64 queries (`ping`, `find_node`
/// and `get_peers` in turn, as the scenario's load generator sends them)
/// from a pool of 1,000,000 entries: the node's own share of the CPU per
/// answer, without the kernel's, which the scenario benchmark adds.
fn node_answers(c: &mut Criterion) {
    const BURST: usize = 64;
    const SOURCES: u32 = 1 << 16;
    let mut rng = StdRng::seed_from_u64(44);
    let mut now = Instant::now();
    let mut node = Node::new(Config::server(), None, 1, now);
    let pool: Vec<NodeAddr> = loopback_nodes(&mut rng, 1_000_000).collect();
    node.load_pool(&pool, now);
    // Each source sends once per 1,024 bursts, a virtual second apart: the
    // node's per-address limits never refuse one.
    let queries: Vec<(SocketAddr, Vec<u8>)> = (0..SOURCES)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            let from = SocketAddr::from((Ipv4Addr::new(10, 1, a, b), 6881));
            let mut query = Vec::new();
            let kind = Kind::nth(u64::from(i));
            encode_query(&mut query, kind, i, &rng.random(), &rng.random());
            (from, query)
        })
        .collect();
    let mut group = c.benchmark_group("node");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0;
    group.bench_function("answer 64 queries, pool of 1000000", |b| {
        b.iter(|| {
            now += std::time::Duration::from_millis(1);
            let burst = &queries[next..next + BURST];
            next = (next + BURST) % queries.len();
            node.handle_datagrams(now, burst.iter().map(|(from, q)| (*from, q.as_slice())));
            let mut bytes = 0;
            while let Some(t) = node.poll_transmit() {
                bytes += t.bytes.len();
            }
            while node.poll_event().is_some() {}
            bytes
        })
    });
    group.finish();
    // Refused or unanswered queries would be cheaper, and the figure wrong.
    let stats = node.stats();
    assert_eq!(
        (stats.replies_out, stats.rate_limited),
        (stats.queries_in, 0),
        "the node answered every query"
    );
}

fn piece_hashing(c: &mut Criterion) {
    let piece: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut group = c.benchmark_group("piece");
    group.throughput(Throughput::Bytes(piece.len() as u64));
    group.bench_function("sha1 1 MiB", |b| b.iter(|| Sha1::digest(black_box(&piece))));
    group.finish();
}

/// A whole download through the picker alone: 3 seeds, 64 requests per
/// call, every block arriving and every piece verifying. 512 MiB in
/// 256 KiB pieces: 2048 pieces, 32,768 blocks.
fn picker(c: &mut Criterion) {
    const PIECE: u32 = 256 << 10;
    const TOTAL: u64 = 512 << 20;
    let layout = Arc::new(Layout::new(PIECE, [(TOTAL, false)]).expect("valid layout"));
    let pieces = layout.piece_count();
    let blocks = TOTAL / (16 << 10);
    let fresh = || {
        let mut p = Picker::new(
            Arc::clone(&layout),
            Bitfield::full(pieces),
            Bitfield::new(pieces),
            StdRng::seed_from_u64(1),
        );
        for peer in 0..3 {
            p.peer_connected(PeerKey(peer));
            p.peer_have_all(PeerKey(peer));
        }
        p
    };
    let mut group = c.benchmark_group("picker");
    group.throughput(Throughput::Elements(blocks));
    group.sample_size(10);
    group.bench_function("download 2048 pieces from 3 seeds (per block)", |b| {
        b.iter_batched(
            fresh,
            |mut p| {
                // Bounded: each round trip receives at least one block.
                for _ in 0..blocks * 2 {
                    if p.is_complete() {
                        break;
                    }
                    for peer in 0..3 {
                        let peer = PeerKey(peer);
                        for block in p.next_requests(peer, 64) {
                            if let BlockOutcome::Accepted {
                                piece_complete: true,
                                ..
                            } = p.block_received(peer, block)
                            {
                                p.piece_verified(block.piece());
                            }
                        }
                    }
                }
                assert!(p.is_complete(), "picker stalled");
                p
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    bencode,
    krpc,
    routing,
    pool,
    node_answers,
    piece_hashing,
    picker
);
criterion_main!(benches);
