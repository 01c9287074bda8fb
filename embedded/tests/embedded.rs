//! The embedded store through its public API: reads, writes, batches, compare-and-swap,
//! scans across shards, splits, restarts and every kind of bad input.

use std::collections::BTreeMap;

use hanse::{BatchOp, Db, Error, Options, StorageError};
use proptest::prelude::*;

fn open(dir: &std::path::Path) -> Db {
    Db::open(dir, Options::default()).expect("open store")
}

fn all(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(.., usize::MAX).unwrap()
}

#[test]
fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(db.get(b"a").unwrap(), None);
    db.put(b"a", b"1").unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
    db.put(b"a", b"2").unwrap();
    assert_eq!(db.get(b"a").unwrap(), Some(b"2".to_vec()));
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    db.delete(b"never-written").unwrap();
}

#[test]
fn compare_and_swap_covers_absent_present_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let created = db.compare_and_swap(b"k", None, Some(b"1")).unwrap();
    assert!(created.swapped);
    assert_eq!(created.previous, None);
    let refused = db.compare_and_swap(b"k", None, Some(b"2")).unwrap();
    assert!(!refused.swapped);
    assert_eq!(refused.previous, Some(b"1".to_vec()));
    assert_eq!(db.get(b"k").unwrap(), Some(b"1".to_vec()));
    let deleted = db.compare_and_swap(b"k", Some(b"1"), None).unwrap();
    assert!(deleted.swapped);
    assert_eq!(db.get(b"k").unwrap(), None);
}

#[test]
fn batch_applies_in_order_within_and_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.split_shard(b"m").unwrap();
    db.batch(vec![
        BatchOp::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        },
        BatchOp::Put {
            key: b"x".to_vec(),
            value: b"2".to_vec(),
        },
        BatchOp::Put {
            key: b"a".to_vec(),
            value: b"3".to_vec(),
        },
        BatchOp::Delete { key: b"x".to_vec() },
    ])
    .unwrap();
    assert_eq!(all(&db), vec![(b"a".to_vec(), b"3".to_vec())]);
}

#[test]
fn split_keeps_every_key_reachable_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i:03}").into_bytes()).collect();
    {
        let db = open(dir.path());
        for key in &keys {
            db.put(key, key).unwrap();
        }
        let (left, right) = db.split_shard(b"k100").unwrap();
        assert_eq!(left.end, b"k100");
        assert_eq!(right.start, b"k100");
        assert_eq!(left.epoch.version, right.epoch.version);
        db.split_shard(b"k150").unwrap();
        assert_eq!(db.shards().len(), 3);
        // Writes after the split land in the new shards.
        db.put(b"k175", b"new").unwrap();
    }
    let db = open(dir.path());
    let shards = db.shards();
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert_eq!(
        shards.iter().map(|s| s.start.clone()).collect::<Vec<_>>(),
        vec![b"".to_vec(), b"k100".to_vec(), b"k150".to_vec()]
    );
    for key in &keys {
        let expected = if key == b"k175" {
            b"new".to_vec()
        } else {
            key.clone()
        };
        assert_eq!(db.get(key).unwrap(), Some(expected));
    }
    db.put(b"k199", b"after-restart").unwrap();
    assert_eq!(db.get(b"k199").unwrap(), Some(b"after-restart".to_vec()));
}

#[test]
fn an_ingest_across_shards_lands_whole_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1000)
        .map(|i| {
            (
                format!("k{i:04}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    {
        let db = open(dir.path());
        db.put(b"k0500", b"old").unwrap();
        db.split_shard(b"k0300").unwrap();
        assert!(matches!(
            db.ingest(vec![pairs[2].clone(), pairs[1].clone()]),
            Err(Error::IngestOrder { at: 1 })
        ));
        assert_eq!(db.get(&pairs[1].0).unwrap(), None);
        db.ingest(pairs.clone()).unwrap();
        db.put(b"k0999", b"later").unwrap();
    }
    let db = open(dir.path());
    let mut expected = pairs;
    expected[999].1 = b"later".to_vec();
    assert_eq!(all(&db), expected);
}

#[test]
fn splitting_at_a_shard_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.split_shard(b"m").unwrap();
    let err = db.split_shard(b"m").unwrap_err();
    assert!(matches!(err, Error::InvalidSplit { .. }), "{err}");
    assert_eq!(db.shards().len(), 2);
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        max_key_bytes: 8,
        max_value_bytes: 16,
        ..Options::default()
    };
    let db = Db::open(dir.path(), options).unwrap();
    db.put(b"keep", b"v").unwrap();
    let before = all(&db);

    assert!(matches!(db.put(b"", b"v"), Err(Error::EmptyKey { .. })));
    assert!(matches!(db.get(b""), Err(Error::EmptyKey { .. })));
    assert!(matches!(
        db.put(b"\xffroute", b"v"),
        Err(Error::ReservedKey)
    ));
    assert!(matches!(
        db.put(b"123456789", b"v"),
        Err(Error::KeyTooLarge { len: 9, max: 8 })
    ));
    assert!(matches!(
        db.put(b"k", &[0u8; 17]),
        Err(Error::ValueTooLarge { len: 17, max: 16 })
    ));
    assert!(matches!(
        db.compare_and_swap(b"keep", Some(b"v"), Some(&[0u8; 17])),
        Err(Error::ValueTooLarge { .. })
    ));
    // One bad op refuses the whole batch before anything is written.
    let batch = vec![
        BatchOp::Put {
            key: b"fine".to_vec(),
            value: b"v".to_vec(),
        },
        BatchOp::Put {
            key: b"too-long-key".to_vec(),
            value: b"v".to_vec(),
        },
    ];
    assert!(matches!(db.batch(batch), Err(Error::KeyTooLarge { .. })));
    let err = db.scan(b"z".to_vec()..b"a".to_vec(), 10).unwrap_err();
    assert!(matches!(err, Error::InvalidRange { .. }), "{err}");
    assert!(err.to_string().contains("\"z\""), "{err}");
    assert_eq!(all(&db), before);
}

#[test]
fn default_limits_are_4_kib_keys_and_16_mib_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put(&[b'k'; 4096], b"v").unwrap();
    assert!(matches!(
        db.put(&[b'k'; 4097], b"v"),
        Err(Error::KeyTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    let err = db
        .put(b"big", &vec![0u8; 16 * 1024 * 1024 + 1])
        .unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put(b"a", b"1").unwrap();
    let err = Db::open(dir.path(), Options::default())
        .err()
        .expect("second open must fail");
    assert!(
        matches!(err, Error::Storage(StorageError::Locked { .. })),
        "{err}"
    );
    assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, u8),
    Delete(Vec<u8>),
    Split(Vec<u8>),
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(b'a'..=b'e', 1..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (small_key(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => small_key().prop_map(Op::Delete),
        1 => small_key().prop_map(Op::Split),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Scans over any range, forward and reverse, with any limit, return exactly what a
    /// sorted map holds, however the keyspace has been split into shards.
    #[test]
    fn scans_across_shards_match_a_sorted_map(
        ops in proptest::collection::vec(op(), 1..40),
        ranges in proptest::collection::vec((small_key(), small_key(), 0usize..12), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => { db.put(&k, &[v]).unwrap(); model.insert(k, vec![v]); }
                Op::Delete(k) => { db.delete(&k).unwrap(); model.remove(&k); }
                Op::Split(k) => match db.split_shard(&k) {
                    Ok(_) | Err(Error::InvalidSplit { .. }) => {}
                    Err(e) => panic!("split failed: {e}"),
                },
            }
        }
        for (a, b, limit) in ranges {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let expected: Vec<_> = model.range(lo.clone()..hi.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
            let forward = db.scan(lo.clone()..hi.clone(), limit).unwrap();
            prop_assert_eq!(&forward, &expected.iter().take(limit).cloned().collect::<Vec<_>>());
            let reverse = db.scan_reverse(lo.clone()..hi.clone(), limit).unwrap();
            prop_assert_eq!(reverse, expected.iter().rev().take(limit).cloned().collect::<Vec<_>>());
            let inclusive = db.scan(lo.clone()..=hi.clone(), usize::MAX).unwrap();
            let expected_inclusive: Vec<_> = model.range(lo.clone()..=hi.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(inclusive, expected_inclusive);
        }
        prop_assert_eq!(all(&db), model.into_iter().collect::<Vec<_>>());
        // Every shard boundary is a key some shard starts at, in order, without gaps.
        let shards = db.shards();
        for pair in shards.windows(2) {
            prop_assert_eq!(&pair[0].end, &pair[1].start);
        }
    }
}
