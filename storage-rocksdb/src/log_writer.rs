//! The node-wide group-commit log writer.
//!
//! Every shard's Raft log store hands its appends (and vote/truncate/purge writes, which
//! must stay ordered with them) to this writer. Whatever has queued up is merged into one
//! RocksDB write batch; whatever has been written while the previous sync ran is made
//! durable by one WAL sync; then each caller is told that its writes are durable. Under
//! load, many appends of many shards share one batch and one fsync.
//!
//! A failed sync poisons the writer for good (until the process restarts): the kernel may
//! have dropped the dirty pages that sync was to write, so a later sync that succeeds
//! would say nothing about them, and acknowledging a later write would claim more than is
//! known (PostgreSQL's "fsyncgate"). Every write after the failure is refused.

use crate::knobs::{GROUP_BYTES_MAX, GROUP_REQUESTS_MAX, QUEUE_REQUESTS_MAX};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;

use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use hanse_storage::{Error, OnDurable, Result, WriteOp};

use crate::durable::{Mark, MarkWriter};
use crate::rocks::{OrEngine, fill_batch};

/// Counters that show how well appends are being grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// Write requests received from log stores.
    pub requests: u64,
    /// RocksDB write batches that carried them.
    pub batches: u64,
    /// WAL syncs that made them durable.
    pub syncs: u64,
}

/// What the writer, the syncer and the engine share.
#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    batches: AtomicU64,
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

struct Request {
    ops: Vec<WriteOp>,
    written: oneshot::Sender<Result<()>>,
    on_durable: Option<OnDurable>,
}

/// Two threads in a pipeline: the writer merges queued requests into one write batch and
/// writes it (the entries are readable from then on); the syncer makes everything written
/// so far durable with one WAL sync and then calls each request's `on_durable`. While the
/// syncer waits on the disk, the writer already writes the next group.
pub(crate) struct LogWriter {
    queue: Option<mpsc::SyncSender<Request>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Saved one last time once the threads have stopped.
    mark: Mark,
}

impl LogWriter {
    pub(crate) fn start(db: Arc<DB>, sync: bool, mark: Mark) -> Self {
        let (queue, requests) = mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let (to_sync, sync_requests) = mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        let (writer_db, writer_shared) = (db.clone(), shared.clone());
        threads.push(
            std::thread::Builder::new()
                .name("hanse-log-writer".into())
                .spawn(move || write_loop(&writer_db, &requests, &to_sync, &writer_shared))
                .expect("spawning the log writer thread"),
        );
        let (syncer_shared, marks) = (shared.clone(), mark.writer());
        threads.push(
            std::thread::Builder::new()
                .name("hanse-log-syncer".into())
                .spawn(move || sync_loop(&db, sync, &sync_requests, &syncer_shared, &marks))
                .expect("spawning the log syncer thread"),
        );
        LogWriter {
            queue: Some(queue),
            threads,
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

    /// Queues `ops` for the next group. The returned receiver resolves once they are
    /// written (readable); `on_durable` runs once they are synced.
    pub(crate) fn submit(
        &self,
        ops: Vec<WriteOp>,
        on_durable: Option<OnDurable>,
    ) -> oneshot::Receiver<Result<()>> {
        let (written, receiver) = oneshot::channel();
        if let Err(e) = self.shared.check_health() {
            if let Some(on_durable) = on_durable {
                on_durable(Err(clone_error(&e)));
            }
            let _ = written.send(Err(e));
            return receiver;
        }
        let request = Request {
            ops,
            written,
            on_durable,
        };
        let queue = self.queue.as_ref().expect("queue lives until drop");
        if let Err(mpsc::SendError(request)) = queue.send(request) {
            let _ = request.written.send(Err(Error::WriterStopped));
            if let Some(on_durable) = request.on_durable {
                on_durable(Err(Error::WriterStopped));
            }
        }
        receiver
    }

    pub(crate) fn stats(&self) -> LogWriterStats {
        LogWriterStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; the syncer
        // follows when the writer's channel to it closes.
        self.queue.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if self.shared.poisoned.get().is_none() {
            self.mark.close();
        }
    }
}

fn write_loop(
    db: &DB,
    requests: &mpsc::Receiver<Request>,
    to_sync: &mpsc::SyncSender<Vec<(OnDurable, Result<()>)>>,
    shared: &Shared,
) {
    let mut write_options = WriteOptions::default();
    // Durability comes from the syncer; the write itself only has to reach the WAL.
    write_options.set_sync(false);
    let mut group: Vec<Request> = Vec::with_capacity(GROUP_REQUESTS_MAX);
    while let Ok(first) = requests.recv() {
        let mut bytes: usize = first.ops.iter().map(WriteOp::approximate_bytes).sum();
        group.push(first);
        while group.len() < GROUP_REQUESTS_MAX && bytes < GROUP_BYTES_MAX {
            match requests.try_recv() {
                Ok(next) => {
                    bytes += next
                        .ops
                        .iter()
                        .map(WriteOp::approximate_bytes)
                        .sum::<usize>();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Nothing is written once a sync failed: it could never be acknowledged.
        let result = shared.check_health().and_then(|()| {
            let mut batch = WriteBatch::default();
            for request in &group {
                fill_batch(db, &mut batch, &request.ops);
            }
            db.write_opt(batch, &write_options).or_engine()
        });
        shared
            .requests
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        shared.batches.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Vec::new();
        for request in group.drain(..) {
            let _ = request.written.send(clone_result(&result));
            if let Some(on_durable) = request.on_durable {
                waiting.push((on_durable, clone_result(&result)));
            }
        }
        if waiting.is_empty() {
            continue;
        }
        if let Err(mpsc::SendError(waiting)) = to_sync.send(waiting) {
            for (on_durable, _) in waiting {
                on_durable(Err(Error::WriterStopped));
            }
        }
    }
}

fn sync_loop(
    db: &DB,
    sync: bool,
    groups: &mpsc::Receiver<Vec<(OnDurable, Result<()>)>>,
    shared: &Shared,
    marks: &MarkWriter,
) {
    while let Ok(mut waiting) = groups.recv() {
        while let Ok(more) = groups.try_recv() {
            waiting.extend(more);
        }
        // One sync covers every write that completed before it started.
        let synced = match shared.check_health() {
            Err(e) => Err(e),
            Ok(()) if sync => {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
                let covered = db.latest_sequence_number();
                let flushed = match shared.fail_next_sync.swap(false, Ordering::SeqCst) {
                    true => Err("injected sync failure".to_string()),
                    false => db.flush_wal(true).map_err(|e| e.to_string()),
                };
                match flushed {
                    Ok(()) => {
                        marks.synced(covered);
                        Ok(())
                    }
                    Err(detail) => Err(shared.poison(&detail)),
                }
            }
            Ok(()) => Ok(()),
        };
        for (on_durable, written) in waiting {
            on_durable(written.and_then(|()| clone_result(&synced)));
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
