//! hanse-storage: the node's single RocksDB instance and everything written to it.
//!
//! One [`Engine`] per node owns one RocksDB with four column families (see [`Cf`]):
//! user data of all shards, the Raft logs, the Raft hard state, and local metadata
//! (shard descriptors). The [`codec`] module fixes how keys are laid out in each of
//! them; the [`LogWriter`] merges the Raft-log appends of every shard on the node
//! into one write batch and one WAL sync.
//!
//! This crate knows nothing of Raft or networking: the consensus crate builds on it.

pub mod codec;
mod descriptor;
mod engine;
mod error;
mod log_writer;
mod store;

pub use descriptor::{
    Epoch, MergeError, MergeState, NodeId, ReplicaDescriptor, ReplicaRole, ShardDescriptor,
    ShardId, SplitError,
};
pub use engine::{
    Batch, Cf, Engine, EngineOptions, FORMAT_VERSION, RangeExport, RangeSize, ScanOrder,
    rocksdb_options,
};
pub use error::{Error, Result};
pub use log_writer::{LogWriterStats, OnDurable, WriteOp};
pub use store::{FencedStore, MemStore, Store, StoreFuture};

/// The largest key a user may store, in bytes. Keys also travel inside Raft entries and
/// descriptors, where small keys keep the routing table and split commands cheap.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// The largest value a user may store, in bytes: one value travels in one Raft entry.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
