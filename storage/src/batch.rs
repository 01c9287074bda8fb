//! The vocabulary of writes every store shares: column families, batches of writes, scan
//! order, and what a range export holds.

use std::path::PathBuf;

use hanse_shard::ShardDescriptor;

use crate::{Result, codec};

/// The column families of a node's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// User keys and values of every shard on the node.
    Data,
    /// Raft log entries of every shard.
    RaftLog,
    /// Raft hard state and state-machine pointers of every shard.
    RaftState,
    /// Local metadata: format version and shard descriptors.
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Data, Cf::RaftLog, Cf::RaftState, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::RaftLog => "raft_log",
            Cf::RaftState => "raft_state",
            Cf::Meta => "meta",
        }
    }
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanOrder {
    #[default]
    Forward,
    Reverse,
}

/// An ordered list of writes that [`Store::write`] applies atomically.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<WriteOp>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete {
            cf,
            key: key.into(),
        });
    }

    /// Adds the write of `descriptor`.
    pub fn put_descriptor(&mut self, descriptor: &ShardDescriptor) {
        self.put(
            Cf::Meta,
            codec::descriptor_key(descriptor.id),
            codec::encode(descriptor),
        );
    }

    /// The writes, in order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Deletes every key in `[start, end)`; nothing when `start >= end` (an empty `end`
    /// is no bound here: see [`crate::exclusive_upper_bound`] for "to the end").
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::DeleteRange {
            cf,
            start: start.into(),
            end: end.into(),
        });
    }
}

/// What a key range holds (see [`Engine::range_size`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSize {
    pub keys: u64,
    pub bytes: u64,
    /// The key that splits the range into halves by bytes; `None` with fewer than two keys.
    pub middle_key: Option<Vec<u8>>,
}

/// The SST files holding one key range: a shard snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeExport {
    pub files: Vec<PathBuf>,
    pub keys: u64,
    pub bytes: u64,
}

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
    /// Deletes every key in `[start, end)` (nothing when `start >= end`).
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl WriteOp {
    /// About how many bytes the write carries.
    pub fn approximate_bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::DeleteRange { start, end, .. } => start.len() + end.len(),
        }
    }
}

/// Called once the writes of a request are durable (or failed to become so).
pub type OnDurable = Box<dyn FnOnce(Result<()>) + Send>;
