//! The storage interface the consensus layer is written against. The RocksDB engine
//! (crate `hanse-storage-rocksdb`) is the real implementation; [`MemStore`](crate::MemStore)
//! the one in memory.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use hanse_shard::{KeyValue, ShardDescriptor, ShardId};

use crate::batch::{Batch, Cf, OnDurable, RangeExport, ScanOrder};
use crate::{Error, Result, codec};

/// What [`Store::append_log`] and [`Store::write_log`] return.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A node's storage as the consensus layer uses it: four column families with atomic
/// batches, an ordered log-write path, and range export/ingest for snapshots.
/// What [`Store::scan_page`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The page stopped at its byte bound with more entries in range and limit.
    pub cut: bool,
}

impl Page {
    /// Adds an entry if it fits within `bytes_max` (the first always does); answers
    /// whether it did, and marks the page cut when not.
    pub fn take(&mut self, used: &mut usize, entry: (Vec<u8>, Vec<u8>), bytes_max: usize) -> bool {
        let size = entry.0.len() + entry.1.len();
        if *used > 0 && used.saturating_add(size) > bytes_max {
            self.cut = true;
            return false;
        }
        *used += size;
        self.entries.push(entry);
        true
    }
}

pub trait Store: Send + Sync + 'static {
    /// The directory where snapshot files of this store live.
    fn path(&self) -> &Path;

    /// Reads one key of a column family.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads up to `limit` entries of `cf` with keys in `[start, end)` (an empty `end` is
    /// unbounded), in `order`.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        order: ScanOrder,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .scan_page(cf, start, end, limit, usize::MAX, order)?
            .entries)
    }

    /// As [`scan`](Store::scan), and stops before the entry that would bring the keys
    /// and values read past `bytes_max` (the first entry is read whatever its size), so a
    /// page of large values fits a message.
    fn scan_page(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        bytes_max: usize,
        order: ScanOrder,
    ) -> Result<Page>;

    /// Applies `batch` atomically; with `sync` it is durable before this returns.
    fn write(&self, batch: Batch, sync: bool) -> Result<()>;

    /// Writes `batch` in order with the other log writes and resolves once it is written
    /// (readable); `on_durable`, if given, runs once it is durable.
    fn append_log(&self, batch: Batch, on_durable: Option<OnDurable>) -> StoreFuture<'_>;

    /// Writes the user data in `[start, end)` into files of at most about
    /// `file_bytes_max` bytes each in `dir`, from one consistent view. An empty range
    /// yields no files.
    fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        file_bytes_max: u64,
    ) -> Result<RangeExport>;

    /// Replaces the user data in `[start, end)` with the contents of `files` (as written
    /// by [`Store::export_range`] of the same kind of store).
    fn ingest_range(&self, start: &[u8], end: &[u8], files: &[PathBuf]) -> Result<()>;

    /// Puts `pairs` (keys strictly ascending) into the user data as one ingested file,
    /// durably: the bulk path, which skips the write-ahead log and the memtable.
    fn ingest_sorted(&self, pairs: &[KeyValue]) -> Result<()>;

    /// Why this store refuses every write, once a failed sync made it do so.
    fn poisoned(&self) -> Option<String> {
        None
    }

    /// Like [`Store::append_log`], but resolves once the batch is durable.
    fn write_log(&self, batch: Batch) -> StoreFuture<'_> {
        Box::pin(async move {
            let (durable_tx, durable) = tokio::sync::oneshot::channel();
            let on_durable: OnDurable = Box::new(move |result| {
                let _ = durable_tx.send(result);
            });
            self.append_log(batch, Some(on_durable)).await?;
            durable.await.map_err(|_| Error::WriterStopped)?
        })
    }

    /// All shard descriptors stored here, in id order.
    fn load_descriptors(&self) -> Result<Vec<ShardDescriptor>> {
        let (start, end) = codec::descriptor_key_range();
        self.scan(Cf::Meta, &start, &end, usize::MAX, ScanOrder::Forward)?
            .into_iter()
            .map(|(_, value)| codec::decode("shard descriptor", &value))
            .collect()
    }

    /// The descriptor of `shard`, if one is stored.
    fn descriptor(&self, shard: ShardId) -> Result<Option<ShardDescriptor>> {
        self.get(Cf::Meta, &codec::descriptor_key(shard))?
            .map(|bytes| codec::decode("shard descriptor", &bytes))
            .transpose()
    }

    /// Deletes everything stored of the shard `descriptor` names: its data range, Raft
    /// log, Raft state and descriptor, in one durable batch. Used once the replica has
    /// been removed from the shard's group. It goes through the log-write path, so the
    /// group's last log writes cannot land after it.
    fn destroy_replica<'a>(&'a self, descriptor: &ShardDescriptor) -> StoreFuture<'a> {
        let mut batch = Batch::default();
        match exclusive_upper_bound(self, &descriptor.start, &descriptor.end) {
            Ok(Some(upper)) => batch.delete_range(Cf::Data, descriptor.start.clone(), upper),
            Ok(None) => {}
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        }
        delete_raft_state(&mut batch, descriptor.id);
        self.write_log(batch)
    }

    /// Deletes the Raft log, Raft state and descriptor of `shard` but keeps its data: a
    /// merged shard's keys now belong to the shard that absorbed it. Ordered after the
    /// group's log writes, as [`Store::destroy_replica`] is.
    fn retire_merged(&self, shard: ShardId) -> StoreFuture<'_> {
        let mut batch = Batch::default();
        delete_raft_state(&mut batch, shard);
        self.write_log(batch)
    }
}

/// An end key for range deletes of `[start, end)`: `end` itself, or just past the last
/// stored key when `end` is unbounded. `None` when there is nothing to delete.
pub fn exclusive_upper_bound<S: Store + ?Sized>(
    store: &S,
    start: &[u8],
    end: &[u8],
) -> Result<Option<Vec<u8>>> {
    if !end.is_empty() {
        return Ok(Some(end.to_vec()));
    }
    let last = store.scan(Cf::Data, start, end, 1, ScanOrder::Reverse)?;
    Ok(last.into_iter().next().map(|(mut key, _)| {
        key.push(0);
        key
    }))
}

/// Adds to `batch` the deletion of `shard`'s Raft log, Raft state and descriptor.
fn delete_raft_state(batch: &mut Batch, shard: ShardId) {
    let prefix = codec::shard_prefix(shard).to_vec();
    let prefix_end = codec::shard_prefix_end(shard);
    batch.delete_range(Cf::RaftLog, prefix.clone(), prefix_end.clone());
    batch.delete_range(Cf::RaftState, prefix, prefix_end);
    batch.delete(Cf::Meta, codec::descriptor_key(shard));
}

/// A handle on a store whose writes can be shut off for good: a shard group writes
/// through one, closed when the group stops, so that nothing it still had under way lands
/// after its replica was deleted or started again (the simulation closes one per process
/// when it crashes). Reads pass through; closing waits for a write under way.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    open: RwLock<bool>,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>) -> FencedStore {
        FencedStore {
            inner,
            open: RwLock::new(true),
        }
    }

    /// Refuses every write from now on.
    pub fn close(&self) {
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// Holds the handle open for one write.
    fn admit(&self) -> Result<std::sync::RwLockReadGuard<'_, bool>> {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        match *open {
            true => Ok(open),
            false => Err(Error::Closed),
        }
    }
}

impl Store for FencedStore {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn poisoned(&self) -> Option<String> {
        self.inner.poisoned()
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
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
        self.inner
            .scan_page(cf, start, end, limit, bytes_max, order)
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<()> {
        let _open = self.admit()?;
        self.inner.write(batch, sync)
    }

    fn append_log(&self, batch: Batch, on_durable: Option<OnDurable>) -> StoreFuture<'_> {
        // The write is handed over before this returns; only waiting for it is async.
        match self.admit() {
            Ok(_open) => self.inner.append_log(batch, on_durable),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        file_bytes_max: u64,
    ) -> Result<RangeExport> {
        self.inner.export_range(start, end, dir, file_bytes_max)
    }

    fn ingest_range(&self, start: &[u8], end: &[u8], files: &[PathBuf]) -> Result<()> {
        let _open = self.admit()?;
        self.inner.ingest_range(start, end, files)
    }

    fn ingest_sorted(&self, pairs: &[KeyValue]) -> Result<()> {
        let _open = self.admit()?;
        self.inner.ingest_sorted(pairs)
    }
}
