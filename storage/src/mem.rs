//! A [`Store`] in memory. It keeps the four column families in ordered maps and models
//! what a crash keeps: a synced write makes it and everything written before it durable
//! (as a RocksDB WAL sync does), [`MemStore::lose_unsynced`] drops the rest, as a power
//! failure would, and [`MemStore::fail_next_sync`] fails a sync as a dying disk would.
//! Deterministic simulations run the real Raft groups over it.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::batch::{Batch, Cf, OnDurable, RangeExport, ScanOrder, WriteOp};
use crate::store::{Page, Store, StoreFuture, exclusive_upper_bound};
use crate::{Error, Result, codec};
use hanse_shard::KeyValue;

type Families = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Default)]
struct MemState {
    /// What reads see.
    live: Families,
    /// What survives [`MemStore::lose_unsynced`].
    durable: Families,
    /// Batches written since the last sync, oldest first: the difference between the two.
    unsynced: Vec<Vec<WriteOp>>,
    /// The next sync fails (and poisons the store), as a failing disk's would.
    fail_next_sync: bool,
    /// Why writes are refused, once a sync failed.
    poisoned: Option<String>,
}

/// A [`Store`] in memory, for deterministic tests. Snapshot files go to `path`.
pub struct MemStore {
    path: PathBuf,
    state: Mutex<MemState>,
}

impl MemStore {
    /// An empty store whose snapshot files go under `path`.
    pub fn new(path: impl Into<PathBuf>) -> MemStore {
        MemStore {
            path: path.into(),
            state: Mutex::new(MemState::default()),
        }
    }

    /// Makes the next sync fail: the store then refuses every write, as the RocksDB
    /// engine does after a failed WAL sync.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Forgets every write not yet made durable, as a power failure would.
    pub fn lose_unsynced(&self) {
        let mut state = self.lock();
        state.unsynced.clear();
        state.live = state.durable.clone();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().expect("memory store lock")
    }

    /// `Err(Poisoned)` once a sync failed.
    fn check_health(&self) -> Result<()> {
        match &self.lock().poisoned {
            Some(detail) => Err(Error::Poisoned {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Applies `ops`; with `sync` makes them and everything before durable. A failing
    /// sync leaves them readable, not durable, and poisons the store.
    fn apply(&self, ops: Vec<WriteOp>, sync: bool) -> Result<()> {
        let mut state = self.lock();
        apply_ops(&mut state.live, &ops);
        state.unsynced.push(ops);
        if sync && std::mem::take(&mut state.fail_next_sync) {
            let detail = "injected sync failure".to_string();
            state.poisoned = Some(detail.clone());
            return Err(Error::Poisoned { detail });
        }
        if sync {
            let unsynced = std::mem::take(&mut state.unsynced);
            for ops in &unsynced {
                apply_ops(&mut state.durable, ops);
            }
        }
        Ok(())
    }
}

fn cf_index(cf: Cf) -> usize {
    match cf {
        Cf::Data => 0,
        Cf::RaftLog => 1,
        Cf::RaftState => 2,
        Cf::Meta => 3,
    }
}

fn key_range<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    (Bound::Included(start), upper)
}

fn apply_ops(families: &mut Families, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { cf, key, value } => {
                families[cf_index(*cf)].insert(key.clone(), value.clone());
            }
            WriteOp::Delete { cf, key } => {
                families[cf_index(*cf)].remove(key);
            }
            WriteOp::DeleteRange { cf, start, end } if start < end => {
                let family = &mut families[cf_index(*cf)];
                let doomed: Vec<Vec<u8>> = family
                    .range::<[u8], _>(key_range(start, end))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    family.remove(&key);
                }
            }
            WriteOp::DeleteRange { .. } => {}
        }
    }
}

impl Store for MemStore {
    fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().live[cf_index(cf)].get(key).cloned())
    }

    fn scan_page(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        bytes_max: usize,
        order: ScanOrder,
    ) -> Result<Page> {
        let state = self.lock();
        let range = state.live[cf_index(cf)].range::<[u8], _>(key_range(start, end));
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = match order {
            ScanOrder::Forward => Box::new(range),
            ScanOrder::Reverse => Box::new(range.rev()),
        };
        let (mut page, mut used) = (Page::default(), 0usize);
        for (key, value) in entries.take(limit) {
            if !page.take(&mut used, (key.clone(), value.clone()), bytes_max) {
                break;
            }
        }
        Ok(page)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<()> {
        self.check_health()?;
        self.apply(batch.into_ops(), sync)
    }

    fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    fn append_log(&self, batch: Batch, on_durable: Option<OnDurable>) -> StoreFuture<'_> {
        if let Err(e) = self.check_health() {
            return Box::pin(std::future::ready(Err(e)));
        }
        // Log writes are synced at once: there is no group commit to wait for. A failed
        // sync leaves the batch written (readable) but never durable.
        let synced = self.apply(batch.into_ops(), true);
        if let Some(on_durable) = on_durable {
            on_durable(synced);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        _file_bytes_max: u64,
    ) -> Result<RangeExport> {
        let pairs = self.scan(Cf::Data, start, end, usize::MAX, ScanOrder::Forward)?;
        let mut export = RangeExport {
            keys: pairs.len() as u64,
            bytes: pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            ..RangeExport::default()
        };
        if pairs.is_empty() {
            return Ok(export);
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let file = dir.join("000000.mem");
        fs::write(&file, codec::encode(&pairs)).map_err(|e| Error::io(&file, e))?;
        export.files.push(file);
        Ok(export)
    }

    fn ingest_range(&self, start: &[u8], end: &[u8], files: &[PathBuf]) -> Result<()> {
        self.check_health()?;
        let mut batch = Batch::default();
        if let Some(upper) = exclusive_upper_bound(self, start, end)? {
            batch.delete_range(Cf::Data, start.to_vec(), upper);
        }
        for file in files {
            let bytes = fs::read(file).map_err(|e| Error::io(file, e))?;
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = codec::decode("range export", &bytes)?;
            for (key, value) in pairs {
                let inside = key.as_slice() >= start && (end.is_empty() || key.as_slice() < end);
                if !inside {
                    return Err(Error::Corrupted {
                        path: file.clone(),
                        detail: "a range export holds a key outside its range".into(),
                    });
                }
                batch.put(Cf::Data, key, value);
            }
        }
        // Ingested files are durable in RocksDB once ingested.
        self.apply(batch.into_ops(), true)
    }

    fn ingest_sorted(&self, pairs: &[KeyValue]) -> Result<()> {
        self.check_health()?;
        let mut batch = Batch::default();
        for pair in pairs {
            batch.put(Cf::Data, pair.key.clone(), pair.value.clone());
        }
        self.apply(batch.into_ops(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FencedStore;
    use std::sync::Arc;

    fn put(store: &MemStore, key: &str, sync: bool) {
        let mut batch = Batch::default();
        batch.put(Cf::Data, key, "v");
        store.write(batch, sync).unwrap();
    }

    #[test]
    fn a_sync_makes_earlier_writes_durable_and_a_power_failure_loses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new(dir.path());
        put(&store, "a", false);
        put(&store, "b", true);
        put(&store, "c", false);
        store.lose_unsynced();
        assert!(store.get(Cf::Data, b"a").unwrap().is_some());
        assert!(store.get(Cf::Data, b"b").unwrap().is_some());
        assert_eq!(store.get(Cf::Data, b"c").unwrap(), None);
    }

    #[test]
    fn a_failed_sync_leaves_its_write_undurable_and_refuses_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new(dir.path());
        put(&store, "a", true);
        store.fail_next_sync();
        let mut batch = Batch::default();
        batch.put(Cf::Data, "b", "v");
        assert!(matches!(
            store.write(batch.clone(), true),
            Err(Error::Poisoned { .. })
        ));
        assert!(store.poisoned().is_some());
        assert!(matches!(
            store.write(batch, false),
            Err(Error::Poisoned { .. })
        ));
        store.lose_unsynced();
        assert!(store.get(Cf::Data, b"a").unwrap().is_some());
        assert_eq!(store.get(Cf::Data, b"b").unwrap(), None);
    }

    #[test]
    fn export_then_ingest_replaces_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let source = MemStore::new(dir.path().join("a"));
        let target = MemStore::new(dir.path().join("b"));
        for key in ["a", "b", "c", "d"] {
            put(&source, key, false);
        }
        for key in ["b2", "d"] {
            put(&target, key, false);
        }
        let export = source
            .export_range(b"b", b"d", &dir.path().join("export"), u64::MAX)
            .unwrap();
        assert_eq!(export.keys, 2);
        target.ingest_range(b"b", b"d", &export.files).unwrap();
        let keys: Vec<Vec<u8>> = target
            .scan(Cf::Data, b"", b"", usize::MAX, ScanOrder::Forward)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        let reversed = target
            .scan(Cf::Data, b"", b"", 1, ScanOrder::Reverse)
            .unwrap();
        assert_eq!(reversed[0].0, b"d");
    }

    #[test]
    fn a_closed_fence_refuses_writes_and_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new(dir.path()));
        let fenced = FencedStore::new(store.clone());
        let mut batch = Batch::default();
        batch.put(Cf::Data, "a", "1");
        fenced.write(batch.clone(), true).unwrap();
        fenced.close();
        assert!(matches!(
            fenced.write(batch.clone(), true),
            Err(Error::Closed)
        ));
        let appended = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fenced.append_log(batch, None));
        assert!(matches!(appended, Err(Error::Closed)));
        assert_eq!(fenced.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
    }
}
