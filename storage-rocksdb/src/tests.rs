use super::*;
use hanse_shard::{Epoch, KeyValue, ReplicaDescriptor, ReplicaRole, ShardDescriptor};

fn open(dir: &Path) -> Engine {
    Engine::open(dir, EngineOptions::default()).expect("open engine")
}

fn put_data(engine: &Engine, pairs: &[(&str, &str)]) {
    let mut batch = Batch::default();
    for (k, v) in pairs {
        batch.put(Cf::Data, k.as_bytes(), v.as_bytes());
    }
    engine.write(batch, true).unwrap();
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect()
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    put_data(&open(dir.path()), &[("a", "1")]);
    let engine = open(dir.path());
    assert_eq!(engine.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn batch_is_atomic_across_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut batch = Batch::default();
    batch.put(Cf::Data, "k", "v");
    batch.put(Cf::RaftState, "s", "x");
    batch.put(Cf::RaftLog, "l", "y");
    batch.delete(Cf::Data, "absent");
    engine.write(batch, false).unwrap();
    assert_eq!(engine.get(Cf::Data, b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        engine.get(Cf::RaftState, b"s").unwrap(),
        Some(b"x".to_vec())
    );
    assert_eq!(engine.get(Cf::RaftLog, b"l").unwrap(), Some(b"y".to_vec()));
    assert_eq!(
        engine.get(Cf::Meta, b"s").unwrap(),
        None,
        "column families are separate"
    );
}

#[test]
fn scan_honours_bounds_limit_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_data(&engine, &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let forward = engine
        .scan(Cf::Data, b"b", b"d", 10, ScanOrder::Forward)
        .unwrap();
    assert_eq!(keys(&forward), ["b", "c"]);
    let reverse = engine
        .scan(Cf::Data, b"a", b"", 3, ScanOrder::Reverse)
        .unwrap();
    assert_eq!(keys(&reverse), ["d", "c", "b"]);
    let reverse_bounded = engine
        .scan(Cf::Data, b"a", b"c", 10, ScanOrder::Reverse)
        .unwrap();
    assert_eq!(keys(&reverse_bounded), ["b", "a"]);
    assert!(
        engine
            .scan(Cf::Data, b"x", b"", 10, ScanOrder::Forward)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn descriptors_round_trip_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let replica = ReplicaDescriptor {
        node: 1,
        region: "eu-hamburg".into(),
        role: ReplicaRole::Voter,
    };
    let whole = ShardDescriptor::whole_keyspace(7, vec![replica]);
    let (left, right) = whole.split(b"m", 300, whole.epoch).unwrap();
    let mut batch = Batch::default();
    batch.put_descriptor(&right);
    batch.put_descriptor(&left);
    engine.write(batch, true).unwrap();
    assert_eq!(
        engine.load_descriptors().unwrap(),
        vec![left.clone(), right]
    );
    assert_eq!(
        engine.descriptor(7).unwrap().unwrap().epoch,
        Epoch {
            version: 2,
            conf_ver: 1
        }
    );
}

#[test]
fn export_and_ingest_replace_exactly_the_range() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    let values: Vec<(String, String)> = (0..500)
        .map(|i| (format!("k{i:04}"), format!("value-{i}-{}", "x".repeat(200))))
        .collect();
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    put_data(&source, &pairs);

    let sst_dir = tempfile::tempdir().unwrap();
    // A tiny file limit (RocksDB counts a file's size per 4 KiB block) forces several files.
    let export = source
        .export_range(b"k0100", b"k0200", sst_dir.path(), 1024)
        .unwrap();
    assert_eq!(export.keys, 100);
    assert!(
        export.files.len() > 1,
        "expected several files, got {:?}",
        export.files
    );

    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    put_data(
        &target,
        &[
            ("k0099", "outside"),
            ("k0150", "stale"),
            ("k0150x", "stale"),
            ("k0200", "outside"),
        ],
    );
    target
        .ingest_range(b"k0100", b"k0200", &export.files)
        .unwrap();
    let got = target
        .scan(Cf::Data, b"", b"", usize::MAX, ScanOrder::Forward)
        .unwrap();
    assert_eq!(
        got.len(),
        102,
        "100 ingested keys plus the two outside the range"
    );
    assert_eq!(
        target.get(Cf::Data, b"k0150").unwrap(),
        Some(values[150].1.as_bytes().to_vec())
    );
    assert_eq!(
        target.get(Cf::Data, b"k0150x").unwrap(),
        None,
        "stale key inside the range is gone"
    );
    assert_eq!(
        target.get(Cf::Data, b"k0099").unwrap(),
        Some(b"outside".to_vec())
    );

    // Files with keys outside the range they are ingested as (a snapshot whose sender
    // lied about its range) are refused, and the range keeps what it held.
    let err = target
        .ingest_range(b"k0150", b"k0200", &export.files)
        .unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert_eq!(
        target.get(Cf::Data, b"k0150").unwrap(),
        Some(values[150].1.as_bytes().to_vec())
    );
    assert!(target.poisoned().is_none());
}

#[test]
fn ingesting_an_empty_export_clears_an_unbounded_range() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_data(&engine, &[("a", "1"), ("m", "2"), ("z", "3")]);
    let export = engine
        .export_range(b"q", b"r", &dir.path().join("ssts"), 1 << 20)
        .unwrap();
    assert!(export.files.is_empty());
    engine.ingest_range(b"m", b"", &export.files).unwrap();
    let left = engine
        .scan(Cf::Data, b"", b"", 10, ScanOrder::Forward)
        .unwrap();
    assert_eq!(keys(&left), ["a"]);
}

#[test]
fn sorted_pairs_are_ingested_as_puts_made_now_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_data(&engine, &[("b", "old"), ("d", "kept")]);
    let pairs: Vec<KeyValue> = ["a", "b", "c"]
        .iter()
        .map(|key| KeyValue {
            key: key.as_bytes().to_vec(),
            value: format!("new {key}").into_bytes(),
        })
        .collect();
    engine.ingest_sorted(&pairs).unwrap();
    // The ingested file is newer than the memtable's write of "b", and RocksDB took it.
    assert_eq!(engine.get(Cf::Data, b"b").unwrap(), Some(b"new b".to_vec()));
    let ingest_dir = dir.path().join(INGEST_DIR);
    assert_eq!(std::fs::read_dir(&ingest_dir).unwrap().count(), 0);
    // A later put wins over the ingested value.
    put_data(&engine, &[("c", "later")]);
    std::fs::write(ingest_dir.join("left-by-a-crash.sst"), b"half").unwrap();
    drop(engine);
    let engine = open(dir.path());
    let all = engine
        .scan(Cf::Data, b"", b"", 10, ScanOrder::Forward)
        .unwrap();
    assert_eq!(keys(&all), ["a", "b", "c", "d"]);
    assert_eq!(engine.get(Cf::Data, b"c").unwrap(), Some(b"later".to_vec()));
    assert!(
        !ingest_dir.exists(),
        "a crash's half-built file is removed at open"
    );
}

#[test]
fn large_log_entries_live_in_blob_files_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let large = vec![7u8; LOG_BLOB_BYTES_MIN as usize];
    let mut batch = Batch::default();
    batch.put(Cf::RaftLog, b"entry-large".to_vec(), large.clone());
    batch.put(Cf::RaftLog, b"entry-small".to_vec(), b"small".to_vec());
    engine.write(batch, true).unwrap();
    engine
        .db
        .flush_cf(crate::rocks::cf_handle(&engine.db, Cf::RaftLog))
        .unwrap();
    let blobs = std::fs::read_dir(dir.path().join(ROCKSDB_DIR))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".blob"))
        .count();
    assert_eq!(blobs, 1);
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(
        engine.get(Cf::RaftLog, b"entry-large").unwrap(),
        Some(large)
    );
    assert_eq!(
        engine.get(Cf::RaftLog, b"entry-small").unwrap(),
        Some(b"small".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_writer_groups_concurrent_writes_and_acknowledges_each() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(dir.path()));
    let requests = 400u64;
    let mut pending = Vec::new();
    for i in 0..requests {
        let engine = engine.clone();
        pending.push(tokio::spawn(async move {
            let mut batch = Batch::default();
            batch.put(
                Cf::RaftLog,
                codec::log_key(i % 8, i).to_vec(),
                vec![1u8; 64],
            );
            engine.write_log(batch).await
        }));
    }
    for task in pending {
        task.await.unwrap().unwrap();
    }
    for i in 0..requests {
        assert!(
            engine
                .get(Cf::RaftLog, &codec::log_key(i % 8, i))
                .unwrap()
                .is_some()
        );
    }
    let stats = engine.log_writer_stats();
    assert_eq!(stats.requests, requests);
    assert!(
        stats.syncs < stats.requests,
        "concurrent appends should share syncs: {stats:?}"
    );
}

#[test]
fn refuses_a_directory_that_is_not_hanse_data() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotADataDir { .. }), "{err}");
    assert!(
        !dir.path().join(MARKER_FILE).exists(),
        "nothing was written"
    );
    assert!(!dir.path().join(LOCK_FILE).exists(), "nothing was written");
}

#[test]
fn refuses_a_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    fs::write(
        dir.path().join(MARKER_FILE),
        "hanse data directory\nformat 99\n",
    )
    .unwrap();
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NewerFormat {
                found: 99,
                supported: FORMAT_VERSION,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade Hanse"));
}

#[test]
fn refuses_an_older_format_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    put_data(&open(dir.path()), &[("a", "1")]);
    let old = "hanse data directory\nformat 1\n";
    fs::write(dir.path().join(MARKER_FILE), old).unwrap();
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::OlderFormat { found: 1, .. }), "{err}");
    assert!(err.to_string().contains("build that wrote it"));
    assert_eq!(
        fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap(),
        old
    );
}

#[test]
fn refuses_a_directory_open_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    put_data(&first, &[("a", "1")]);
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(first.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
    drop(first);
    assert_eq!(
        open(dir.path()).get(Cf::Data, b"a").unwrap(),
        Some(b"1".to_vec())
    );
}

#[test]
fn refuses_a_corrupted_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    put_data(&open(dir.path()), &[("a", "1")]);
    fs::write(
        dir.path().join(ROCKSDB_DIR).join("CURRENT"),
        "garbage-without-newline",
    )
    .unwrap();
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
}

#[test]
fn refuses_a_data_dir_whose_rocksdb_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    put_data(&open(dir.path()), &[("a", "1")]);
    fs::remove_dir_all(dir.path().join(ROCKSDB_DIR)).unwrap();
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert!(
        !dir.path().join(ROCKSDB_DIR).join("CURRENT").exists(),
        "no empty store was created in its place"
    );
}

#[test]
fn restarts_an_initialisation_that_never_finished() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(ROCKSDB_DIR)).unwrap();
    fs::write(dir.path().join(ROCKSDB_DIR).join("half-written"), "x").unwrap();
    let engine = open(dir.path());
    assert!(dir.path().join(MARKER_FILE).exists());
    put_data(&engine, &[("a", "1")]);
}

#[test]
fn keeps_an_empty_rocksdb_whose_marker_was_never_written() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    fs::remove_file(dir.path().join(MARKER_FILE)).unwrap();
    let engine = open(dir.path());
    assert!(dir.path().join(MARKER_FILE).exists());
    put_data(&engine, &[("a", "1")]);
}

#[test]
fn an_initialisation_killed_before_its_column_families_were_made_is_finished() {
    // RocksDB exists (its CURRENT written) with the default column family only: a
    // process killed while RocksDB was still making the others, before the marker.
    let dir = tempfile::tempdir().unwrap();
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    drop(rocksdb::DB::open(&options, dir.path().join(ROCKSDB_DIR)).unwrap());
    let engine = open(dir.path());
    assert!(dir.path().join(MARKER_FILE).exists());
    put_data(&engine, &[("a", "1")]);
}

/// Bytes of every file under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            match entry.file_type().unwrap().is_dir() {
                true => tree_bytes(&entry.path()),
                false => entry.metadata().unwrap().len(),
            }
        })
        .sum()
}

#[test]
fn never_deletes_a_rocksdb_with_data_whose_marker_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{i}"), "v".repeat(500)))
        .collect();
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    put_data(&open(dir.path()), &pairs);
    fs::remove_file(dir.path().join(MARKER_FILE)).unwrap();
    let before = tree_bytes(&dir.path().join(ROCKSDB_DIR));
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::MarkerMissing { .. }), "{err}");
    assert!(err.to_string().contains("put the marker back"), "{err}");
    assert!(
        !dir.path().join(MARKER_FILE).exists(),
        "nothing was written"
    );
    assert!(
        tree_bytes(&dir.path().join(ROCKSDB_DIR)) >= before,
        "the database is untouched"
    );
    // The way back the message gives works, and every key is there.
    fs::write(
        dir.path().join(MARKER_FILE),
        format!("hanse data directory\nformat {FORMAT_VERSION}\n"),
    )
    .unwrap();
    let engine = open(dir.path());
    assert_eq!(
        engine
            .scan(Cf::Data, b"", b"", usize::MAX, ScanOrder::Forward)
            .unwrap()
            .len(),
        200
    );
}

#[test]
fn a_directory_belongs_to_the_node_that_first_claimed_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    engine.claim_node(3).unwrap();
    engine.claim_node(3).unwrap();
    drop(engine);
    let engine = open(dir.path());
    engine.claim_node(3).unwrap();
    let err = engine.claim_node(4).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongNode {
                recorded: 3,
                claimed: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("node_id"), "{err}");
}

/// Writes `count` log batches through the log writer and waits until each is durable.
async fn write_durably(engine: &Engine, count: u64) {
    for i in 0..count {
        let mut batch = Batch::default();
        batch.put(Cf::RaftLog, codec::log_key(1, i).to_vec(), vec![7u8; 1024]);
        engine.write_log(batch).await.unwrap();
    }
}

#[tokio::test]
async fn refuses_to_start_when_the_wal_lost_durable_writes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    write_durably(&engine, 500).await;
    drop(engine);
    let mut wals: Vec<PathBuf> = fs::read_dir(dir.path().join(ROCKSDB_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    let newest = wals.pop().expect("a write-ahead log");
    let len = fs::metadata(&newest).unwrap().len();
    assert!(
        len > 100_000,
        "the writes are still in the WAL ({len} bytes)"
    );
    let file = fs::OpenOptions::new().write(true).open(&newest).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let err = Engine::open(dir.path(), EngineOptions::default()).unwrap_err();
    assert!(matches!(err, Error::LostWrites { .. }), "{err}");
    assert!(err.to_string().contains("add the node again"), "{err}");
}

#[tokio::test]
async fn the_durability_mark_follows_the_syncs_and_reopening_agrees_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    write_durably(&engine, 50).await;
    drop(engine);
    let mark: u64 = fs::read_to_string(dir.path().join(durable::MARK_FILE))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(mark >= 50, "the mark covers the synced writes: {mark}");
    let engine = open(dir.path());
    assert!(
        engine
            .get(Cf::RaftLog, &codec::log_key(1, 49))
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_failed_sync_refuses_every_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    write_durably(&engine, 3).await;
    assert_eq!(engine.poisoned(), None);
    engine.fail_next_sync();
    let mut batch = Batch::default();
    batch.put(Cf::RaftLog, codec::log_key(1, 10).to_vec(), "x");
    let failed = engine.write_log(batch.clone()).await.unwrap_err();
    assert!(matches!(failed, Error::Poisoned { .. }), "{failed}");
    assert!(engine.poisoned().is_some_and(|d| d.contains("injected")));
    // Every kind of write is refused from now on, though later syncs would succeed.
    let appended = engine.append_log(batch.clone(), None).await.unwrap_err();
    assert!(matches!(appended, Error::Poisoned { .. }), "{appended}");
    let written = engine.write(batch.clone(), false).unwrap_err();
    assert!(matches!(written, Error::Poisoned { .. }), "{written}");
    assert!(matches!(
        engine.write(batch, true),
        Err(Error::Poisoned { .. })
    ));
    assert!(
        written.to_string().contains("until it is restarted"),
        "{written}"
    );
    // Reads still work; a restart clears the refusal.
    assert!(
        engine
            .get(Cf::RaftLog, &codec::log_key(1, 2))
            .unwrap()
            .is_some()
    );
    drop(engine);
    let engine = open(dir.path());
    write_durably(&engine, 1).await;
}

#[tokio::test]
async fn destroying_or_retiring_a_replica_removes_exactly_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_data(&engine, &[("a", "1"), ("m", "2"), ("z", "3")]);
    let left = ShardDescriptor {
        end: b"m".to_vec(),
        ..ShardDescriptor::whole_keyspace(1, vec![])
    };
    let right = ShardDescriptor {
        id: 2,
        start: b"m".to_vec(),
        ..ShardDescriptor::whole_keyspace(2, vec![])
    };
    let mut batch = Batch::default();
    batch.put_descriptor(&left);
    batch.put_descriptor(&right);
    for shard in [1, 2] {
        batch.put(Cf::RaftLog, codec::log_key(shard, 1), "entry");
        batch.put(
            Cf::RaftState,
            codec::state_key(shard, codec::StateKey::Vote),
            "vote",
        );
    }
    engine.write(batch, true).unwrap();

    engine.destroy_replica(&right).await.unwrap();

    let remaining = engine
        .scan(Cf::Data, b"", b"", 10, ScanOrder::Forward)
        .unwrap();
    assert_eq!(keys(&remaining), ["a"]);
    assert_eq!(engine.load_descriptors().unwrap(), vec![left]);
    assert!(
        engine
            .get(Cf::RaftLog, &codec::log_key(2, 1))
            .unwrap()
            .is_none()
    );
    assert!(
        engine
            .get(Cf::RaftLog, &codec::log_key(1, 1))
            .unwrap()
            .is_some()
    );
    let vote = |shard| codec::state_key(shard, codec::StateKey::Vote);
    assert!(engine.get(Cf::RaftState, &vote(2)).unwrap().is_none());
    assert!(engine.get(Cf::RaftState, &vote(1)).unwrap().is_some());

    // A merged shard leaves its data to the shard that absorbed it.
    engine.retire_merged(1).await.unwrap();
    let remaining = engine
        .scan(Cf::Data, b"", b"", 10, ScanOrder::Forward)
        .unwrap();
    assert_eq!(keys(&remaining), ["a"]);
    assert_eq!(engine.load_descriptors().unwrap(), vec![]);
    assert!(
        engine
            .get(Cf::RaftLog, &codec::log_key(1, 1))
            .unwrap()
            .is_none()
    );
    assert!(engine.get(Cf::RaftState, &vote(1)).unwrap().is_none());
}

#[test]
fn allocated_shard_ids_are_unique_per_node_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let engine = open(dir.path());
        let a = engine.allocate_shard_id(3).unwrap();
        let b = engine.allocate_shard_id(3).unwrap();
        assert_eq!((a >> 32, b >> 32), (3, 3));
        assert!(b > a);
        b
    };
    let engine = open(dir.path());
    let after_reopen = engine.allocate_shard_id(3).unwrap();
    assert!(after_reopen > first, "a reopened node never repeats an id");
    let other = tempfile::tempdir().unwrap();
    let elsewhere = open(other.path()).allocate_shard_id(4).unwrap();
    assert_ne!(elsewhere, first);
    assert_eq!(elsewhere >> 32, 4);
}

#[test]
fn range_size_counts_keys_and_bytes_and_finds_the_middle_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert_eq!(engine.range_size(b"", b"").unwrap(), RangeSize::default());
    // Four 10-byte entries (2-byte key, 8-byte value) and one large one at the end.
    put_data(
        &engine,
        &[
            ("a1", "........"),
            ("a2", "........"),
            ("a3", "........"),
            ("a4", "........"),
            (
                "zz",
                "................................................................",
            ),
        ],
    );
    let all = engine.range_size(b"", b"").unwrap();
    assert_eq!((all.keys, all.bytes), (5, 40 + 66));
    // Half of 106 bytes is 53: the large last key takes the total past it.
    assert_eq!(all.middle_key.as_deref(), Some(&b"zz"[..]));
    let small = engine.range_size(b"a", b"b").unwrap();
    assert_eq!((small.keys, small.bytes), (4, 40));
    assert_eq!(small.middle_key.as_deref(), Some(&b"a3"[..]));
    let one = engine.range_size(b"a1", b"a2").unwrap();
    assert_eq!((one.keys, one.middle_key), (1, None));
}

/// A range delete of an empty range writes nothing: RocksDB would count it in the
/// batch's sequence numbers but not replay it at recovery, so the durability mark would
/// be one ahead of what reopening finds, and the next open refuse the directory.
#[test]
fn an_empty_range_delete_leaves_the_directory_reopenable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut batch = Batch::default();
    batch.put(Cf::Data, b"a".to_vec(), b"1".to_vec());
    batch.delete_range(Cf::Data, b"k".to_vec(), b"k".to_vec());
    batch.delete_range(Cf::Data, b"z".to_vec(), b"b".to_vec());
    engine.write(batch, true).unwrap();
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(engine.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn scan_pages_stop_at_their_byte_bound_in_both_stores_alike() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(&dir.path().join("rocks"));
    let memory = hanse_storage::MemStore::new(dir.path().join("mem"));
    let mut batch = Batch::default();
    for (key, size) in [("a", 10usize), ("b", 40), ("c", 40), ("d", 5)] {
        batch.put(Cf::Data, key, vec![b'x'; size]);
    }
    engine.write(batch.clone(), true).unwrap();
    memory.write(batch, true).unwrap();
    let stores: [&dyn Store; 2] = [&engine, &memory];
    for store in stores {
        let page = |order, bytes_max| {
            store
                .scan_page(Cf::Data, b"", b"", 10, bytes_max, order)
                .unwrap()
        };
        // a (11 bytes) and b (41) fit 60; c would pass it: cut after b.
        let forward = page(ScanOrder::Forward, 60);
        assert_eq!(keys(&forward.entries), ["a", "b"]);
        assert!(forward.cut);
        let reverse = page(ScanOrder::Reverse, 60);
        assert_eq!(keys(&reverse.entries), ["d", "c"]);
        assert!(reverse.cut);
        // The first entry comes whatever its size; nothing left is no cut.
        let tiny = page(ScanOrder::Forward, 1);
        assert_eq!(keys(&tiny.entries), ["a"]);
        let all = page(ScanOrder::Forward, usize::MAX);
        assert_eq!(keys(&all.entries), ["a", "b", "c", "d"]);
        assert!(!all.cut);
        let limited = store
            .scan_page(Cf::Data, b"", b"", 2, usize::MAX, ScanOrder::Forward)
            .unwrap();
        assert!(!limited.cut, "the count, not the bytes, ended it");
    }
}
