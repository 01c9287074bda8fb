//! The node-wide group-commit log writer.
//!
//! Every shard's Raft log store writes its appends (and vote/truncate/purge writes, which
//! must stay ordered with them) through this writer. A write goes into RocksDB on the
//! caller's thread, unsynced (RocksDB merges concurrent writers into one WAL write); then
//! a syncer thread makes everything written while the previous sync ran durable with one
//! WAL sync and tells each caller that waits for it. Under load, many appends of many
//! shards share one fsync. (A writer thread of its own cost two thread wake-ups per
//! append and saved nothing: openraft waits for the write anyway.)
//!
//! A failed sync poisons the writer for good (until the process restarts): the kernel may
//! have dropped the dirty pages that sync was to write, so a later sync that succeeds
//! would say nothing about them, and acknowledging a later write would claim more than is
//! known (PostgreSQL's "fsyncgate"). Every write after the failure is refused.

use crate::knobs::QUEUE_REQUESTS_MAX;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::{DB, WriteBatch, WriteOptions};

use hanse_storage::{Error, OnDurable, Result, WriteOp};

use crate::durable::{Mark, MarkWriter};
use crate::metrics::METRICS;
use crate::rocks::{OrEngine, fill_batch};

/// Counters that show how well appends are being grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// Write requests received from log stores.
    pub requests: u64,
    /// WAL syncs that made them durable.
    pub syncs: u64,
}

/// What the writers, the syncer and the engine share.
#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    syncs: AtomicU64,
    /// Why writes are refused, once a sync failed.
    poisoned: OnceLock<String>,
    /// Makes the next sync fail (tests of what follows a failing disk).
    fail_next_sync: AtomicBool,
}

impl Shared {
    fn check_health(&self) -> Result<()> {
        match self.poisoned.get() {
            Some(detail) => Err(Error::Poisoned {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, detail: &str) -> Error {
        if self.poisoned.set(detail.to_string()).is_ok() {
            tracing::error!(
                "a write-ahead-log sync failed ({detail}): this node refuses every write \
                 until it restarts"
            );
        }
        Error::Poisoned {
            detail: self.poisoned.get().cloned().unwrap_or_default(),
        }
    }
}

/// Writes on the caller's thread and syncs on its own: while the syncer waits on the
/// disk, callers already write the next group.
pub(crate) struct LogWriter {
    db: Arc<DB>,
    to_sync: Option<mpsc::SyncSender<OnDurable>>,
    syncer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Saved one last time once the syncer has stopped.
    mark: Mark,
}

impl LogWriter {
    pub(crate) fn start(db: Arc<DB>, sync: bool, mark: Mark) -> Self {
        let (to_sync, waiting) = mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let shared = Arc::new(Shared::default());
        let (syncer_db, syncer_shared, marks) = (db.clone(), shared.clone(), mark.writer());
        let syncer = std::thread::Builder::new()
            .name("hanse-log-syncer".into())
            .spawn(move || sync_loop(&syncer_db, sync, &waiting, &syncer_shared, &marks))
            .expect("spawning the log syncer thread");
        LogWriter {
            db,
            to_sync: Some(to_sync),
            syncer: Some(syncer),
            shared,
            mark,
        }
    }

    /// `Err(Poisoned)` once a sync failed.
    pub(crate) fn check_health(&self) -> Result<()> {
        self.shared.check_health()
    }

    /// Refuses every write from now on, because a synced write failed with `detail`.
    pub(crate) fn poison(&self, detail: &str) -> Error {
        self.shared.poison(detail)
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.get().cloned()
    }

    #[cfg(any(test, feature = "failpoints"))]
    pub(crate) fn fail_next_sync(&self) {
        self.shared.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Writes `ops` (readable once this returns, in the order of calls); `on_durable`
    /// runs once a sync covers them, or with the error that kept them from being written.
    pub(crate) fn submit(&self, ops: &[WriteOp], on_durable: Option<OnDurable>) -> Result<()> {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        METRICS.log_writes.inc();
        // Nothing is written once a sync failed: it could never be acknowledged.
        let written = self.shared.check_health().and_then(|()| {
            let mut batch = WriteBatch::default();
            fill_batch(&self.db, &mut batch, ops);
            let mut write_options = WriteOptions::default();
            // Durability comes from the syncer; the write itself only has to reach the WAL.
            write_options.set_sync(false);
            self.db.write_opt(batch, &write_options).or_engine()
        });
        let Some(on_durable) = on_durable else {
            return written;
        };
        if let Err(e) = &written {
            on_durable(Err(clone_error(e)));
            return written;
        }
        let to_sync = self.to_sync.as_ref().expect("the syncer lives until drop");
        if let Err(mpsc::SendError(on_durable)) = to_sync.send(on_durable) {
            on_durable(Err(Error::WriterStopped));
        }
        written
    }

    pub(crate) fn stats(&self) -> LogWriterStats {
        LogWriterStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the queue lets the syncer sync what is queued and exit.
        self.to_sync.take();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
        if self.shared.poisoned.get().is_none() {
            self.mark.close();
        }
    }
}

fn sync_loop(
    db: &DB,
    sync: bool,
    waiting: &mpsc::Receiver<OnDurable>,
    shared: &Shared,
    marks: &MarkWriter,
) {
    while let Ok(first) = waiting.recv() {
        let mut group = vec![first];
        group.extend(waiting.try_iter());
        // One sync covers every write that completed before it started: each caller
        // queued its `on_durable` after its write returned.
        let synced = match shared.check_health() {
            Err(e) => Err(e),
            Ok(()) if sync => {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
                let covered = db.latest_sequence_number();
                let started = Instant::now();
                let flushed = match shared.fail_next_sync.swap(false, Ordering::SeqCst) {
                    true => Err("injected sync failure".to_string()),
                    false => db.flush_wal(true).map_err(|e| e.to_string()),
                };
                METRICS
                    .fsync_duration
                    .observe(started.elapsed().as_secs_f64());
                METRICS.fsync_group_writes.observe(group.len() as f64);
                match flushed {
                    Ok(()) => {
                        marks.synced(covered);
                        Ok(())
                    }
                    Err(detail) => {
                        METRICS.fsync_failures.inc();
                        Err(shared.poison(&detail))
                    }
                }
            }
            Ok(()) => Ok(()),
        };
        for on_durable in group {
            on_durable(clone_result(&synced));
        }
    }
}

fn clone_result(result: &Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(clone_error(e)),
    }
}

/// The same error once more, for each caller a shared write or sync failed for.
fn clone_error(error: &Error) -> Error {
    match error {
        Error::Engine { detail } => Error::Engine {
            detail: detail.clone(),
        },
        Error::Poisoned { detail } => Error::Poisoned {
            detail: detail.clone(),
        },
        _ => Error::WriterStopped,
    }
}
