//! The request path's small steps, each on its own: the storage key codec, a client
//! request's protobuf encoding and decoding, a log entry's encoding and decoding (a
//! proposal of 32 writes, as the proposer and the ingest actor build them), and the
//! client's routing cache lookup among 1,000 shards. The group-commit writer is measured
//! in `embedded` (durable puts from 1 and 32 writers), the planner in `planner`.
//!
//! `cargo bench -p hanse-bench --bench hot_paths`; `cargo test` runs each once.

use std::hint::black_box;

use criterion::Criterion;
use hanse_client::proto;
use hanse_client::routes::RouteCache;
use hanse_shard::Epoch;
use hanse_shard::{Mutation, Proposal, ShardRequest};
use hanse_storage::codec;
use prost::Message;

const SHARDS: u64 = 1_000;

fn key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("hot-paths");

    group.bench_function("log-key", |b| {
        let mut index = 0u64;
        b.iter(|| {
            index += 1;
            black_box(codec::log_key(black_box(7), index))
        })
    });

    let put = proto::PutRequest {
        route: Some(proto::RouteContext {
            shard_id: 42,
            epoch: Some(proto::Epoch {
                version: 3,
                conf_ver: 5,
            }),
        }),
        key: key(1),
        value: vec![b'v'; 256],
    };
    group.bench_function("put-request-encode", |b| {
        b.iter(|| black_box(black_box(&put).encode_to_vec()))
    });
    let wire = put.encode_to_vec();
    group.bench_function("put-request-decode", |b| {
        b.iter(|| black_box(proto::PutRequest::decode(black_box(wire.as_slice())).unwrap()))
    });

    let proposal = Proposal {
        requests: (0..32)
            .map(|i| ShardRequest::Write {
                epoch: Epoch {
                    version: 3,
                    conf_ver: 5,
                },
                mutations: vec![Mutation::Put {
                    key: key(i),
                    value: vec![b'v'; 256],
                }],
            })
            .collect(),
    };
    group.bench_function("log-entry-32-writes-encode", |b| {
        b.iter(|| black_box(codec::encode(black_box(&proposal))))
    });
    let entry = codec::encode(&proposal);
    group.bench_function("log-entry-32-writes-decode", |b| {
        b.iter(|| {
            let decoded: Proposal = codec::decode("entry", black_box(&entry)).unwrap();
            black_box(decoded)
        })
    });

    let mut routes = RouteCache::default();
    let step = u64::MAX / SHARDS;
    for i in 0..SHARDS {
        let bound = |n: u64| (n * step).to_be_bytes().to_vec();
        routes.learn(proto::ShardDescriptor {
            id: i + 1,
            start: if i == 0 { Vec::new() } else { bound(i) },
            end: if i + 1 == SHARDS {
                Vec::new()
            } else {
                bound(i + 1)
            },
            epoch: Some(proto::Epoch {
                version: 1,
                conf_ver: 1,
            }),
            ..Default::default()
        });
    }
    group.bench_function("route-lookup-1000-shards", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            black_box(routes.lookup(&n.to_be_bytes()).map(|s| s.descriptor.id))
        })
    });
    group.finish();
    c.final_summary();
}
