//! The RocksDB engine and `MemStore` against a reference model (a `BTreeMap` per column
//! family): random batches of puts, deletes and range deletes, some synced, random gets
//! and scans in both directions with limits, and crashes. Each store must answer exactly
//! what the model does. After a restart the engine holds every write (it closes cleanly,
//! as after a process exit); after a simulated power loss `MemStore` holds exactly what
//! was synced, and its model falls back to that point. While both have seen the same
//! writes, they must also answer alike.

use std::collections::BTreeMap;
use std::ops::Bound;

use hanse_storage::{Batch, Cf, MemStore, ScanOrder, Store, WriteOp};
use hanse_storage_rocksdb::{Engine, EngineOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 12;
const STEPS: usize = 400;
/// Families the test owns wholly (the engine keeps its own records in `Meta`).
const FAMILIES: [Cf; 3] = [Cf::Data, Cf::RaftLog, Cf::RaftState];

type Model = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

fn family(cf: Cf) -> usize {
    FAMILIES
        .iter()
        .position(|f| *f == cf)
        .expect("a test family")
}

/// Keys from a small space, so that writes collide; some end in 0xff to exercise the
/// bounds of ranges.
fn key(rng: &mut StdRng) -> Vec<u8> {
    let mut key = vec![b'k', rng.random_range(b'a'..=b'h')];
    if rng.random_bool(0.5) {
        key.push(if rng.random_bool(0.2) {
            0xff
        } else {
            rng.random_range(b'0'..=b'9')
        });
    }
    key
}

fn range(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (key(rng), key(rng));
    if a <= b { (a, b) } else { (b, a) }
}

/// A random batch.
fn batch(rng: &mut StdRng) -> Batch {
    let mut batch = Batch::default();
    for _ in 0..rng.random_range(1..8) {
        let cf = FAMILIES[rng.random_range(0..FAMILIES.len())];
        match rng.random_range(0..10) {
            0..6 => {
                let len = rng.random_range(0..64);
                let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                batch.put(cf, key(rng), value);
            }
            6..9 => batch.delete(cf, key(rng)),
            _ => {
                // Sometimes inverted or open-ended: both delete nothing.
                let (mut start, mut end) = range(rng);
                match rng.random_range(0..10) {
                    0..2 => std::mem::swap(&mut start, &mut end),
                    2 => end.clear(),
                    _ => {}
                }
                batch.delete_range(cf, start, end);
            }
        }
    }
    batch
}

/// What `batch` does to a model.
fn apply(model: &mut Model, batch: &Batch) {
    for op in batch.ops() {
        match op {
            WriteOp::Put { cf, key, value } => {
                model.insert((family(*cf), key.clone()), value.clone());
            }
            WriteOp::Delete { cf, key } => {
                model.remove(&(family(*cf), key.clone()));
            }
            WriteOp::DeleteRange { cf, start, end } => {
                let f = family(*cf);
                model.retain(|(family, k), _| *family != f || k < start || k >= end);
            }
        }
    }
}

/// What the model answers to a scan of `[start, end)` (empty `end`: unbounded).
fn model_scan(
    model: &Model,
    f: usize,
    start: &[u8],
    end: &[u8],
    limit: usize,
    order: ScanOrder,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let upper = match end.is_empty() {
        true => Bound::Excluded((f + 1, Vec::new())),
        false => Bound::Excluded((f, end.to_vec())),
    };
    let range = model.range((Bound::Included((f, start.to_vec())), upper));
    let entries = range.map(|((_, k), v)| (k.clone(), v.clone()));
    match order {
        ScanOrder::Forward => entries.take(limit).collect(),
        ScanOrder::Reverse => entries.rev().take(limit).collect(),
    }
}

/// Checks one random read on `store` against `model`.
fn check_read(store: &dyn Store, model: &Model, rng: &mut StdRng, what: &str) {
    let cf = FAMILIES[rng.random_range(0..FAMILIES.len())];
    let f = family(cf);
    if rng.random_bool(0.4) {
        let k = key(rng);
        assert_eq!(
            store.get(cf, &k).unwrap(),
            model.get(&(f, k.clone())).cloned(),
            "{what}: get {cf:?} {k:?}"
        );
    } else {
        let (start, mut end) = range(rng);
        if rng.random_bool(0.2) {
            end.clear();
        }
        let limit = rng.random_range(1..20);
        let order = match rng.random_bool(0.5) {
            true => ScanOrder::Forward,
            false => ScanOrder::Reverse,
        };
        assert_eq!(
            store.scan(cf, &start, &end, limit, order).unwrap(),
            model_scan(model, f, &start, &end, limit, order),
            "{what}: scan {cf:?} [{start:?}, {end:?}) limit {limit} {order:?}"
        );
    }
}

/// Everything `store` holds in the test's families, in the model's shape.
fn contents(store: &dyn Store) -> Model {
    let mut all = Model::new();
    for cf in FAMILIES {
        for (k, v) in store
            .scan(cf, b"", b"", usize::MAX, ScanOrder::Forward)
            .unwrap()
        {
            all.insert((family(cf), k), v);
        }
    }
    all
}

#[test]
fn the_engine_and_memstore_answer_like_a_reference_model_through_crashes() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let engine_dir = dir.path().join("engine");
        let mut engine = Some(Engine::open(&engine_dir, EngineOptions::default()).unwrap());
        let memstore = MemStore::new(dir.path().join("mem"));
        let (mut engine_model, mut mem_model) = (Model::new(), Model::new());
        // The memstore's model as of its last sync: what a power loss falls back to.
        let mut mem_synced = Model::new();
        let mut alike = true;
        for step in 0..STEPS {
            let what = format!("seed {seed} step {step}");
            let live = engine.as_ref().expect("open");
            match rng.random_range(0..100) {
                0..45 => {
                    let batch = batch(&mut rng);
                    let sync = rng.random_bool(0.3);
                    apply(&mut engine_model, &batch);
                    apply(&mut mem_model, &batch);
                    live.write(batch.clone(), sync).unwrap();
                    memstore.write(batch, sync).unwrap();
                    if sync {
                        mem_synced = mem_model.clone();
                    }
                }
                45..92 => {
                    // The same draw for all three, so the stores are compared on it too.
                    let state = rng.clone();
                    check_read(live, &engine_model, &mut rng, &format!("{what}: engine"));
                    let mut again = state.clone();
                    check_read(
                        &memstore,
                        &mem_model,
                        &mut again,
                        &format!("{what}: memstore"),
                    );
                    if alike {
                        let mut third = state;
                        check_read(live, &mem_model, &mut third, &format!("{what}: alike"));
                    }
                }
                92..96 => {
                    drop(engine.take());
                    engine = Some(Engine::open(&engine_dir, EngineOptions::default()).unwrap());
                    let reopened = engine.as_ref().expect("open");
                    assert_eq!(contents(reopened), engine_model, "{what}: engine restart");
                }
                _ => {
                    memstore.lose_unsynced();
                    mem_model = mem_synced.clone();
                    alike = engine_model == mem_model;
                    assert_eq!(
                        contents(&memstore),
                        mem_model,
                        "{what}: memstore power loss"
                    );
                }
            }
        }
        assert_eq!(
            contents(engine.as_ref().unwrap()),
            engine_model,
            "seed {seed}: engine"
        );
        assert_eq!(contents(&memstore), mem_model, "seed {seed}: memstore");
    }
}
