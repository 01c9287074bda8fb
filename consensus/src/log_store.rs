//! openraft's `RaftLogStorage` for one shard, on the node's RocksDB.
//!
//! Every write (append, vote, truncate, purge) goes through the node-wide group-commit
//! log writer, which keeps them in order and shares WAL syncs across shards.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use hanse_shard::ShardId;
use hanse_storage::codec::{self, StateKey};
use hanse_storage::{Batch, Cf, OnDurable, ScanOrder, Store};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, StorageIOError, Vote};

use crate::knobs::APPEND_BYTES_MAX;
use crate::metrics::METRICS;
use crate::{StorageError, TypeConfig};

/// The Raft log and vote of one shard.
#[derive(Clone)]
pub struct LogStore {
    shard: ShardId,
    store: Arc<dyn Store>,
}

pub(crate) fn read_error(e: hanse_storage::Error) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_error(e: hanse_storage::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    pub fn new(shard: ShardId, store: Arc<dyn Store>) -> Self {
        LogStore { shard, store }
    }

    /// The log position below which this replica votes for no candidate, if its leader
    /// created it empty (see [`crate::AddedBy`]).
    pub(crate) fn vote_floor(&self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(self
            .read_state::<Option<LogId<u64>>>(StateKey::VoteFloor)?
            .flatten())
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        kind: StateKey,
    ) -> Result<Option<T>, StorageError> {
        let key = codec::state_key(self.shard, kind);
        match self.store.get(Cf::RaftState, &key).map_err(read_error)? {
            Some(bytes) => codec::decode("raft state", &bytes)
                .map(Some)
                .map_err(read_error),
            None => Ok(None),
        }
    }

    fn state_batch<T: serde::Serialize>(&self, kind: StateKey, value: &T) -> Batch {
        let mut batch = Batch::default();
        batch.put(
            Cf::RaftState,
            codec::state_key(self.shard, kind),
            codec::encode(value),
        );
        batch
    }

    /// The key just past the last possible log entry of this shard.
    fn log_end(&self) -> Vec<u8> {
        codec::shard_prefix_end(self.shard)
    }
}

/// Adds the entries to `batch` as this shard's log records.
pub(crate) fn put_entries(
    batch: &mut Batch,
    shard: ShardId,
    entries: impl IntoIterator<Item = Entry<TypeConfig>>,
) {
    for entry in entries {
        batch.put(
            Cf::RaftLog,
            codec::log_key(shard, entry.log_id.index).to_vec(),
            codec::encode(&entry),
        );
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i
                .checked_add(1)
                .map(|e| codec::log_key(self.shard, e).to_vec()),
            Bound::Excluded(i) => Some(codec::log_key(self.shard, *i).to_vec()),
            Bound::Unbounded => None,
        }
        .unwrap_or_else(|| self.log_end());
        let start = codec::log_key(self.shard, start);
        if start.as_slice() >= end.as_slice() {
            return Ok(Vec::new());
        }
        self.store
            .scan(Cf::RaftLog, &start, &end, usize::MAX, ScanOrder::Forward)
            .map_err(read_error)?
            .into_iter()
            .map(|(_, bytes)| codec::decode("raft log entry", &bytes).map_err(read_error))
            .collect()
    }

    /// What replication sends next: the entries from `start` up to about
    /// [`APPEND_BYTES_MAX`] stored bytes (at least one). The transport sends no more in one
    /// message, and openraft asks for up to 300 entries each time: read and decoded whole,
    /// a few large entries (ingests) would be read hundreds of times over.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (
            codec::log_key(self.shard, start),
            codec::log_key(self.shard, end),
        );
        let page = self
            .store
            .scan_page(
                Cf::RaftLog,
                &first,
                &last,
                usize::MAX,
                APPEND_BYTES_MAX,
                ScanOrder::Forward,
            )
            .map_err(read_error)?;
        page.entries
            .into_iter()
            .map(|(_, bytes)| codec::decode("raft log entry", &bytes).map_err(read_error))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_state(StateKey::LastPurged)?;
        let prefix = codec::shard_prefix(self.shard);
        let last = self
            .store
            .scan(Cf::RaftLog, &prefix, &self.log_end(), 1, ScanOrder::Reverse)
            .map_err(read_error)?;
        let last_log_id = match last.first() {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> =
                    codec::decode("raft log entry", bytes).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let batch = self.state_batch(StateKey::Vote, vote);
        self.store
            .write_log(batch)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_state(StateKey::Vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        put_entries(&mut batch, self.shard, entries);
        // Returns once the entries are written (readable); openraft hears of durability
        // from the syncer, so the next append does not wait for this one's fsync.
        let started = Instant::now();
        let on_durable: OnDurable = Box::new(move |result| {
            METRICS
                .append_duration
                .observe(started.elapsed().as_secs_f64());
            callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
        });
        self.store
            .append_log(batch, Some(on_durable))
            .await
            .map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.delete_range(
            Cf::RaftLog,
            codec::log_key(self.shard, log_id.index).to_vec(),
            self.log_end(),
        );
        self.store.write_log(batch).await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let mut batch = self.state_batch(StateKey::LastPurged, &log_id);
        let end = match log_id.index.checked_add(1) {
            Some(next) => codec::log_key(self.shard, next).to_vec(),
            None => self.log_end(),
        };
        batch.delete_range(Cf::RaftLog, codec::shard_prefix(self.shard).to_vec(), end);
        // Written, not synced: purged entries are already in the applied state.
        self.store
            .append_log(batch, None)
            .await
            .map_err(write_error)
    }
}
