//! The node-wide group-commit log writer.
//!
//! Every shard's Raft log store hands its appends (and vote/truncate/purge writes, which
//! must stay ordered with them) to this one writer thread. The thread takes whatever has
//! queued up while the previous sync ran, writes it as one RocksDB write batch with one
//! WAL sync, and then tells each caller that its writes are durable. Under load, many
//! shards' appends share one fsync; with one writer the cost is one ordinary sync write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;

use crate::engine::{Cf, cf_handle};
use crate::{Error, Result};

/// One write inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl WriteOp {
    fn approximate_bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::DeleteRange { start, end, .. } => start.len() + end.len(),
        }
    }
}

/// Adds `ops` to a RocksDB write batch.
pub(crate) fn fill_batch(db: &DB, batch: &mut WriteBatch, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { cf, key, value } => batch.put_cf(cf_handle(db, *cf), key, value),
            WriteOp::Delete { cf, key } => batch.delete_cf(cf_handle(db, *cf), key),
            WriteOp::DeleteRange { cf, start, end } => {
                batch.delete_range_cf(cf_handle(db, *cf), start, end)
            }
        }
    }
}

/// Counters that show how well appends are being grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogWriterStats {
    /// Write requests received from log stores.
    pub requests: u64,
    /// RocksDB write batches (each one WAL write, synced when sync is on) that carried them.
    pub batches: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
}

struct Request {
    ops: Vec<WriteOp>,
    done: oneshot::Sender<Result<()>>,
}

/// Queue depth before `submit` blocks its caller: back-pressure instead of unbounded memory.
const QUEUE_REQUESTS_MAX: usize = 4096;
/// One group never exceeds these, so one huge burst cannot stall every shard's sync.
const GROUP_REQUESTS_MAX: usize = 1024;
const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

pub(crate) struct LogWriter {
    queue: Option<mpsc::SyncSender<Request>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl LogWriter {
    pub(crate) fn start(db: Arc<DB>, sync: bool) -> Self {
        let (queue, requests) = mpsc::sync_channel(QUEUE_REQUESTS_MAX);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("hanse-log-writer".into())
            .spawn(move || run(&db, sync, &requests, &thread_counters))
            .expect("spawning the log writer thread");
        LogWriter {
            queue: Some(queue),
            thread: Some(thread),
            counters,
        }
    }

    /// Queues `ops` for the next group; the receiver resolves once they are durable.
    pub(crate) fn submit(&self, ops: Vec<WriteOp>) -> oneshot::Receiver<Result<()>> {
        let (done, durable) = oneshot::channel();
        let request = Request { ops, done };
        let queue = self.queue.as_ref().expect("queue lives until drop");
        if let Err(mpsc::SendError(request)) = queue.send(request) {
            let _ = request.done.send(Err(Error::WriterStopped));
        }
        durable
    }

    pub(crate) fn stats(&self) -> LogWriterStats {
        LogWriterStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and exit.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &DB, sync: bool, requests: &mpsc::Receiver<Request>, counters: &Counters) {
    let mut write_options = WriteOptions::default();
    write_options.set_sync(sync);
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
        let mut batch = WriteBatch::default();
        for request in &group {
            fill_batch(db, &mut batch, &request.ops);
        }
        let result = db.write_opt(batch, &write_options);
        counters
            .requests
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        for request in group.drain(..) {
            let _ = request.done.send(result.clone().map_err(Error::RocksDb));
        }
    }
}
