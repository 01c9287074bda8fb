//! The node's RocksDB instance: opening (with format check and lock), reads, scans,
//! atomic write batches across column families, and range export/ingest as SST files.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBRecoveryMode, Direction, ErrorKind, IngestExternalFileOptions,
    IteratorMode, Options, ReadOptions, SstFileWriter, WriteBatch, WriteOptions,
};

use hanse_shard::{KeyValue, NodeId, ShardId};
use hanse_storage::{
    Batch, Cf, Error, OnDurable, Page, RangeExport, RangeSize, Result, ScanOrder, Store,
    StoreFuture, codec, exclusive_upper_bound,
};

use crate::durable;
use crate::log_writer::{LogWriter, LogWriterStats};
use crate::rocks::{OrEngine, cf_handle, fill_batch};

/// The data format this build writes and the newest it can read. Bump it whenever the
/// layout in [`codec`] changes incompatibly.
pub const FORMAT_VERSION: u32 = 4;

const MARKER_FILE: &str = "HANSE";
const LOCK_FILE: &str = "hanse.lock";
const ROCKSDB_DIR: &str = "db";

/// How an engine opens and writes.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Sync the WAL on every Raft log write (the default). Off, an acknowledged write
    /// survives a crash of the process but not of the machine.
    pub sync_log_writes: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sync_log_writes: true,
        }
    }
}

/// One node's RocksDB. Cheap to share: wrap it in an `Arc`.
pub struct Engine {
    // Field order is drop order: the writer thread stops before the DB closes.
    log_writer: LogWriter,
    db: Arc<DB>,
    path: PathBuf,
    /// Serialises shard-id allocation (a read, an increment and a synced write).
    allocating: std::sync::Mutex<()>,
    _lock: File,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

impl Engine {
    /// Opens the data directory `path`, creating it when it is missing or empty.
    ///
    /// Refuses a directory that holds something other than Hanse data, one written by a
    /// newer format, one that another process has open, one whose RocksDB is damaged, one
    /// whose marker file is gone while its RocksDB holds data, and one whose write-ahead
    /// log lost writes it had made durable, each with its own [`Error`] variant; none of
    /// these change anything on disk.
    pub fn open(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let marker = path.join(MARKER_FILE);
        let has_marker = marker.exists();
        if !has_marker && has_foreign_entries(&path)? {
            return Err(Error::NotADataDir { path });
        }
        let lock = take_lock(&path)?;
        let db = if has_marker {
            check_marker(&path, &marker)?;
            open_rocksdb(&path, false)?
        } else {
            let db = open_unmarked(&path)?;
            write_marker(&path, &marker)?;
            db
        };
        durable::check(&path, &db)?;
        remove_unfinished_ingests(&path)?;
        let db = Arc::new(db);
        let durable_mark = durable::Mark::start(&path, db.clone());
        let log_writer = LogWriter::start(db.clone(), options.sync_log_writes, durable_mark);
        Ok(Engine {
            log_writer,
            db,
            path,
            allocating: std::sync::Mutex::new(()),
            _lock: lock,
        })
    }

    /// Records that this data directory belongs to node `node`, or checks that it does:
    /// a directory started under another node id would vote and acknowledge as a node
    /// that never made those promises.
    pub fn claim_node(&self, node: NodeId) -> Result<()> {
        match self.get(Cf::Meta, codec::NODE_ID_KEY)? {
            Some(bytes) => {
                let recorded: NodeId = codec::decode("node id", &bytes)?;
                if recorded != node {
                    return Err(Error::WrongNode {
                        path: self.path.clone(),
                        recorded,
                        claimed: node,
                    });
                }
                Ok(())
            }
            None => {
                let mut batch = Batch::default();
                batch.put(Cf::Meta, codec::NODE_ID_KEY, codec::encode(&node));
                self.write(batch, true)
            }
        }
    }

    /// Makes the next WAL sync fail, as a failing disk would: for tests of what follows.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn fail_next_sync(&self) {
        self.log_writer.fail_next_sync();
    }

    /// How many user keys `[start, end)` of the data column family holds and their bytes
    /// (keys plus values), from one pass over the range, and where a split would halve it
    /// by bytes: the first key (after at least one other) whose own bytes take the running
    /// total past half.
    pub fn range_size(&self, start: &[u8], end: &[u8]) -> Result<RangeSize> {
        let data = cf_handle(&self.db, Cf::Data);
        let iterate = |visit: &mut dyn FnMut(&[u8], usize) -> bool| -> Result<()> {
            let mut read_options = ReadOptions::default();
            read_options.set_iterate_lower_bound(start);
            if !end.is_empty() {
                read_options.set_iterate_upper_bound(end);
            }
            // A full pass over the range would evict the hot data from the block cache.
            read_options.fill_cache(false);
            let mode = IteratorMode::From(start, Direction::Forward);
            for item in self.db.iterator_cf_opt(data, read_options, mode) {
                let (key, value) = item.or_engine()?;
                if !visit(&key, key.len() + value.len()) {
                    break;
                }
            }
            Ok(())
        };
        let mut size = RangeSize::default();
        iterate(&mut |_, bytes| {
            size.keys += 1;
            size.bytes += bytes as u64;
            true
        })?;
        if size.keys >= 2 {
            let mut before = 0u64;
            iterate(&mut |key, bytes| {
                let through = before + bytes as u64;
                if before > 0 && through * 2 > size.bytes {
                    size.middle_key = Some(key.to_vec());
                    return false;
                }
                before = through;
                true
            })?;
        }
        Ok(size)
    }

    /// How well log writes are being grouped so far.
    pub fn log_writer_stats(&self) -> LogWriterStats {
        self.log_writer.stats()
    }

    /// A shard id no other node and no earlier call on this node ever returns: `node` in
    /// the high 32 bits, this node's next sequence number in the low 32. The sequence is
    /// synced to disk before the id is handed out, so a crash never lets an id be reused
    /// (a reused id in a split could name two different shards on different replicas).
    pub fn allocate_shard_id(&self, node: NodeId) -> Result<ShardId> {
        assert!(
            node < 1 << 31,
            "node ids are checked to be below 2^31 at startup"
        );
        let _guard = self.allocating.lock().expect("allocation lock");
        let last: u32 = match self.get(Cf::Meta, codec::SHARD_SEQUENCE_KEY)? {
            Some(bytes) => codec::decode("shard id sequence", &bytes)?,
            None => 0,
        };
        let next = last.checked_add(1).ok_or(Error::Exhausted {
            what: "shard ids of this node",
        })?;
        let mut batch = Batch::default();
        batch.put(Cf::Meta, codec::SHARD_SEQUENCE_KEY, codec::encode(&next));
        self.write(batch, true)?;
        Ok((node << 32) | u64::from(next))
    }
}

impl Store for Engine {
    fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one key of a column family.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_pinned_cf(cf_handle(&self.db, cf), key)
            .or_engine()?
            .map(|v| v.to_vec()))
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
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_lower_bound(start);
        if !end.is_empty() {
            read_options.set_iterate_upper_bound(end);
        }
        let mode = match order {
            ScanOrder::Forward => IteratorMode::From(start, Direction::Forward),
            ScanOrder::Reverse => IteratorMode::End,
        };
        let (mut page, mut used) = (Page::default(), 0usize);
        for item in self
            .db
            .iterator_cf_opt(cf_handle(&self.db, cf), read_options, mode)
            .take(limit)
        {
            let (key, value) = item.or_engine()?;
            if !page.take(&mut used, (key.into_vec(), value.into_vec()), bytes_max) {
                break;
            }
        }
        Ok(page)
    }

    /// Applies `batch` atomically; with `sync` the WAL is synced before returning.
    fn write(&self, batch: Batch, sync: bool) -> Result<()> {
        self.log_writer.check_health()?;
        let mut write_batch = WriteBatch::default();
        fill_batch(&self.db, &mut write_batch, batch.ops());
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        match self.db.write_opt(write_batch, &write_options) {
            Ok(()) => Ok(()),
            // A failed synced write may have left earlier writes undurable: nothing
            // written after it may be acknowledged (see the log writer).
            Err(e) if sync => Err(self.log_writer.poison(e.as_ref())),
            Err(e) => Err(e).or_engine(),
        }
    }

    fn poisoned(&self) -> Option<String> {
        self.log_writer.poisoned()
    }

    /// Writes `batch` through the group-commit log writer, on this thread, and resolves
    /// at once (written: readable, not yet synced); `on_durable`, if given, runs once it
    /// is durable.
    fn append_log(&self, batch: Batch, on_durable: Option<OnDurable>) -> StoreFuture<'_> {
        let written = self.log_writer.submit(batch.ops(), on_durable);
        Box::pin(std::future::ready(written))
    }

    /// Writes the user data in `[start, end)` as SST files of at most about
    /// `file_bytes_max` bytes each into `dir`, from one consistent view of the data.
    /// An empty range yields no files.
    fn export_range(
        &self,
        start: &[u8],
        end: &[u8],
        dir: &Path,
        file_bytes_max: u64,
    ) -> Result<RangeExport> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_lower_bound(start);
        if !end.is_empty() {
            read_options.set_iterate_upper_bound(end);
        }
        let sst_options = Options::default();
        let mut export = RangeExport::default();
        let mut writer: Option<SstFileWriter> = None;
        let iter = self.db.iterator_cf_opt(
            cf_handle(&self.db, Cf::Data),
            read_options,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.or_engine()?;
            let current = match &mut writer {
                Some(current) => current,
                None => {
                    let file = dir.join(format!("{:06}.sst", export.files.len()));
                    let new_writer = SstFileWriter::create(&sst_options);
                    new_writer.open(&file).or_engine()?;
                    export.files.push(file);
                    writer.insert(new_writer)
                }
            };
            current.put(&key, &value).or_engine()?;
            export.keys += 1;
            if current.file_size() >= file_bytes_max {
                export.bytes += finish_sst(writer.take())?;
            }
        }
        export.bytes += finish_sst(writer.take())?;
        Ok(export)
    }

    /// Replaces the user data in `[start, end)` with the contents of `files` (as written
    /// by [`Store::export_range`]). Keys outside the range in the files are refused.
    fn ingest_range(&self, start: &[u8], end: &[u8], files: &[PathBuf]) -> Result<()> {
        self.log_writer.check_health()?;
        check_keys_within(files, start, end)?;
        let data = cf_handle(&self.db, Cf::Data);
        if let Some(upper) = exclusive_upper_bound(self, start, end)? {
            self.db.delete_range_cf(data, start, &upper).or_engine()?;
        }
        if files.is_empty() {
            return Ok(());
        }
        let mut ingest_options = IngestExternalFileOptions::default();
        ingest_options.set_move_files(false);
        self.db
            .ingest_external_file_cf_opts(data, &ingest_options, files.to_vec())
            .or_engine()?;
        Ok(())
    }

    /// Builds one SST file of `pairs` and moves it into the data column family: it lands
    /// below the memtable, with a sequence number above every earlier write, so it reads as
    /// puts made now.
    fn ingest_sorted(&self, pairs: &[KeyValue]) -> Result<()> {
        self.log_writer.check_health()?;
        if pairs.is_empty() {
            return Ok(());
        }
        let dir = self.path.join(INGEST_DIR);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Removed on every way out; after a successful ingest RocksDB took the file.
        let file = tempfile::Builder::new()
            .suffix(".sst")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .into_temp_path();
        let sst_options = Options::default();
        let mut writer = SstFileWriter::create(&sst_options);
        writer.open(&file).or_engine()?;
        for pair in pairs {
            writer.put(&pair.key, &pair.value).or_engine()?;
        }
        finish_sst(Some(writer))?;
        let mut ingest_options = IngestExternalFileOptions::default();
        ingest_options.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(
                cf_handle(&self.db, Cf::Data),
                &ingest_options,
                vec![file.to_path_buf()],
            )
            .or_engine()
    }
}

/// The folder under a store where files for [`Store::ingest_sorted`] are built; whatever
/// a crash left there is removed at open.
const INGEST_DIR: &str = "ingest";

/// Removes the files a crash left half built for [`Store::ingest_sorted`]: an ingest that
/// did not finish is applied again from the Raft log.
fn remove_unfinished_ingests(path: &Path) -> Result<()> {
    let dir = path.join(INGEST_DIR);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&dir, e)),
        _ => Ok(()),
    }
}

/// Refuses files that hold a key outside `[start, end)` (an empty `end`: unbounded), before
/// anything of them lands. rust-rocksdb reads no SST file directly, so each is ingested
/// (copied) into a scratch RocksDB and its first and last keys compared with the range.
fn check_keys_within(files: &[PathBuf], start: &[u8], end: &[u8]) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut options = Options::default();
    options.create_if_missing(true);
    let db = DB::open(&options, scratch.path()).or_engine()?;
    let mut copy = IngestExternalFileOptions::default();
    copy.set_move_files(false);
    for file in files {
        db.ingest_external_file_opts(&copy, vec![file.clone()])
            .map_err(|e| Error::Corrupted {
                path: file.clone(),
                detail: format!("not a readable range export: {e}"),
            })?;
        let mut keys = db.raw_iterator();
        keys.seek_to_first();
        let first = keys.key().map(<[u8]>::to_vec);
        keys.seek_to_last();
        let last = keys.key().map(<[u8]>::to_vec);
        let inside = |key: &Option<Vec<u8>>| {
            key.as_deref()
                .is_none_or(|k| k >= start && (end.is_empty() || k < end))
        };
        if !inside(&first) || !inside(&last) {
            return Err(Error::Corrupted {
                path: file.clone(),
                detail: "a range export holds a key outside its range".into(),
            });
        }
    }
    Ok(())
}

fn finish_sst(writer: Option<SstFileWriter>) -> Result<u64> {
    match writer {
        Some(mut writer) => {
            writer.finish().or_engine()?;
            Ok(writer.file_size())
        }
        None => Ok(0),
    }
}

/// Whether `path` holds anything a fresh Hanse directory may not: anything but our own
/// lock file, a `db/` and the durability mark.
fn has_foreign_entries(path: &Path) -> Result<bool> {
    for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name();
        if name != LOCK_FILE && name != ROCKSDB_DIR && name != durable::MARK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

fn take_lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&lock_path, e)),
    }
}

/// Opens the RocksDB of a directory without a marker file. A `db/` without a `CURRENT`
/// file is an initialisation that crashed before RocksDB finished creating itself, so
/// nothing was ever written there: it starts afresh. A `db/` that opens but holds no key
/// at all is an initialisation that crashed before the marker was written (perhaps before
/// every column family was made): it is kept and finished.
/// Anything else holds data whose marker was lost: refused, and nothing is touched.
fn open_unmarked(path: &Path) -> Result<DB> {
    let db_dir = path.join(ROCKSDB_DIR);
    if db_dir.exists() && !db_dir.join("CURRENT").exists() {
        tracing::warn!(path = %db_dir.display(), "removing a RocksDB that was never created");
        fs::remove_dir_all(&db_dir).map_err(|e| Error::io(&db_dir, e))?;
    }
    if !db_dir.exists() {
        return open_rocksdb(path, true);
    }
    // Looked at read-only, with the column families it has: RocksDB creates them one by
    // one after itself, so a crash may have left some out, and a read-write open would
    // already rewrite its files.
    let names = DB::list_cf(&rocksdb_options(), &db_dir).map_err(|e| open_error(path, false, e))?;
    let db = DB::open_cf_for_read_only(&rocksdb_options(), &db_dir, &names, false)
        .map_err(|e| open_error(path, false, e))?;
    for name in &names {
        let Some(cf) = db.cf_handle(name) else {
            continue;
        };
        if db.iterator_cf(cf, IteratorMode::Start).next().is_some() {
            return Err(Error::MarkerMissing {
                path: path.to_path_buf(),
                format: FORMAT_VERSION,
            });
        }
    }
    drop(db);
    // Empty: the initialisation is finished, missing column families included.
    open_rocksdb(path, true)
}

fn check_marker(path: &Path, marker: &Path) -> Result<()> {
    let text = fs::read_to_string(marker).map_err(|e| Error::io(marker, e))?;
    let found = text
        .lines()
        .find_map(|line| line.strip_prefix("format "))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| Error::Corrupted {
            path: path.to_path_buf(),
            detail: format!("the marker file {} is unreadable", marker.display()),
        })?;
    if found > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    if found < FORMAT_VERSION {
        return Err(Error::OlderFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Writes the marker atomically (temporary file, fsync, rename, fsync of the directory):
/// its presence means the directory is fully initialised.
fn write_marker(path: &Path, marker: &Path) -> Result<()> {
    let tmp = path.join(format!("{MARKER_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    writeln!(file, "hanse data directory\nformat {FORMAT_VERSION}")
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, marker).map_err(|e| Error::io(marker, e))?;
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// The RocksDB options every node's database opens with; benchmarks open their raw
/// RocksDB baseline with these too, so the comparison is like for like.
pub fn rocksdb_options() -> Options {
    let mut options = Options::default();
    options.set_max_background_jobs(2);
    options.set_paranoid_checks(true);
    // Recovery stops at the first damaged WAL record: after a power loss the torn tail
    // holds only writes that were never synced, hence never acknowledged. A WAL damaged
    // further back is told apart by the durability mark (see `durable`).
    options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    options
}

/// Log entries at least this large are kept in blob files beside the raft log's SST
/// files (see [`cf_options`]).
const LOG_BLOB_BYTES_MIN: u64 = 64 << 10;

/// The options of one column family. The raft log keeps large entries (ingests, large
/// values) in blob files: in its SST files a large entry is a data block of its own, and
/// reading one small entry seeks in every file of a level, which decompressed the large
/// block each seek landed on; a node that had taken a bulk load spent its CPU on that
/// and applied a few hundred puts a second. Blobs of purged entries go with compaction.
fn cf_options(cf: Cf) -> Options {
    let mut options = Options::default();
    if cf == Cf::RaftLog {
        options.set_enable_blob_files(true);
        options.set_min_blob_size(LOG_BLOB_BYTES_MIN);
        options.set_enable_blob_gc(true);
    }
    options
}

fn open_rocksdb(path: &Path, create: bool) -> Result<DB> {
    let mut options = rocksdb_options();
    options.create_if_missing(create);
    options.create_missing_column_families(create);
    let families = Cf::ALL
        .iter()
        .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(*cf)));
    let db_path = path.join(ROCKSDB_DIR);
    DB::open_cf_descriptors(&options, &db_path, families).map_err(|e| open_error(path, create, e))
}

/// The error for a RocksDB in `path` that did not open.
fn open_error(path: &Path, create: bool, e: rocksdb::Error) -> Error {
    let message = e.to_string();
    if e.kind() == ErrorKind::Corruption {
        Error::Corrupted {
            path: path.to_path_buf(),
            detail: message,
        }
    } else if !create && (message.contains("does not exist") || message.contains("No such file")) {
        Error::Corrupted {
            path: path.to_path_buf(),
            detail: format!("RocksDB files are missing ({message})"),
        }
    } else {
        Error::Engine { detail: message }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
