//! Embedded Hanse against raw rust-rocksdb with the same RocksDB options, in one run:
//! point get, durable put with 1 and 32 concurrent writers, and a 100-key scan.
//!
//! `cargo bench -p hanse-bench --bench embedded` measures and prints the ratios;
//! `cargo test` runs each benchmark once as a smoke test.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use hanse::{BatchOp, Db, Options};
use hanse_bench::{criterion_dir, key, ratio_report, value};
use rocksdb::{DB, IteratorMode, ReadOptions, WriteOptions};

const PRELOADED_KEYS: u64 = 20_000;
const CONCURRENT_WRITERS: u64 = 32;

struct Stores {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    hanse: Arc<Db>,
    raw: Arc<DB>,
}

fn stores() -> Stores {
    let hanse_dir = tempfile::tempdir().unwrap();
    let raw_dir = tempfile::tempdir().unwrap();
    let hanse = Db::open(hanse_dir.path(), Options::default()).unwrap();
    let mut raw_options = hanse_storage_rocksdb::rocksdb_options();
    raw_options.create_if_missing(true);
    let raw = DB::open(&raw_options, raw_dir.path()).unwrap();
    for chunk in (0..PRELOADED_KEYS).collect::<Vec<_>>().chunks(1000) {
        let ops = chunk
            .iter()
            .map(|&i| BatchOp::Put {
                key: key(i),
                value: value(i),
            })
            .collect();
        hanse.batch(ops).unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        for &i in chunk {
            batch.put(key(i), value(i));
        }
        raw.write(batch).unwrap();
    }
    Stores {
        _dirs: (hanse_dir, raw_dir),
        hanse: Arc::new(hanse),
        raw: Arc::new(raw),
    }
}

fn sync_writes() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Runs `iters` writes spread over `writers` threads and returns the wall time: the time
/// per iteration is then the inverse of the aggregate throughput.
fn concurrent(iters: u64, writers: u64, write: impl Fn(u64) + Sync) -> Duration {
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..writers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= iters {
                        break;
                    }
                    write(i);
                }
            });
        }
    });
    started.elapsed()
}

fn bench_get(c: &mut Criterion, s: &Stores) {
    let mut group = c.benchmark_group("get");
    let mut i = 0u64;
    group.bench_function("hanse", |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOADED_KEYS;
            black_box(s.hanse.get(&key(i)).unwrap())
        })
    });
    group.bench_function("raw-rocksdb", |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOADED_KEYS;
            black_box(s.raw.get_pinned(key(i)).unwrap().map(|v| v.to_vec()))
        })
    });
    group.finish();
}

fn bench_put(c: &mut Criterion, s: &Stores, writers: u64) {
    let mut group = c.benchmark_group(format!("durable-put-{writers}-writers"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let next = AtomicU64::new(PRELOADED_KEYS);
    group.bench_function("hanse", |b| {
        b.iter_custom(|iters| {
            concurrent(iters, writers, |_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                s.hanse.put(&key(i), &value(i)).unwrap();
            })
        })
    });
    let options = sync_writes();
    group.bench_function("raw-rocksdb", |b| {
        b.iter_custom(|iters| {
            concurrent(iters, writers, |_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                s.raw.put_opt(key(i), value(i), &options).unwrap();
            })
        })
    });
    group.finish();
}

fn bench_scan(c: &mut Criterion, s: &Stores) {
    const SCAN_KEYS: usize = 100;
    let mut group = c.benchmark_group("scan-100");
    let mut start = 0u64;
    let mut next_start = || {
        start = (start + 4099) % (PRELOADED_KEYS - SCAN_KEYS as u64);
        start
    };
    group.bench_function("hanse", |b| {
        b.iter_batched(
            &mut next_start,
            |from| black_box(s.hanse.scan(key(from).., SCAN_KEYS).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("raw-rocksdb", |b| {
        b.iter_batched(
            &mut next_start,
            |from| {
                let rows: Vec<(Vec<u8>, Vec<u8>)> = s
                    .raw
                    .iterator_opt(
                        IteratorMode::From(&key(from), rocksdb::Direction::Forward),
                        ReadOptions::default(),
                    )
                    .take(SCAN_KEYS)
                    .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).unwrap())
                    .collect();
                black_box(rows)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let s = stores();
    bench_get(&mut c, &s);
    bench_put(&mut c, &s, 1);
    bench_put(&mut c, &s, CONCURRENT_WRITERS);
    bench_scan(&mut c, &s);
    c.final_summary();
    let groups = [
        ("get", Some(0.95)),
        ("durable-put-1-writers", None),
        ("durable-put-32-writers", Some(0.9)),
        ("scan-100", None),
    ];
    println!(
        "\nHanse embedded vs raw RocksDB (ratio = Hanse throughput / raw throughput):\n{}",
        ratio_report(&criterion_dir(), &groups)
    );
}
