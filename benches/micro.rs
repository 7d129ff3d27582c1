//! Criterion micro-benchmarks of lodestone's hot paths.
//!
//! Run with `cargo bench -p lodestone-benches --bench micro`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lodestone_bencode::{Limits, OwnedValue, encode, parse};

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

criterion_group!(benches, bencode);
criterion_main!(benches);
