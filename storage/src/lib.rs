//! hanse-storage: the storage interface of a node, and its in-memory implementation.
//!
//! A node keeps everything in one store with four column families (see [`Cf`]): user
//! data of all shards, the Raft logs, the Raft hard state, and local metadata (shard
//! descriptors). [`Store`] is what the consensus layer writes through: atomic batches,
//! an ordered log-write path with group commit, range export and ingest for snapshots.
//! The [`codec`] module fixes how keys are laid out in each family.
//!
//! This crate has no RocksDB in it (as TiKV's `engine_traits`): the RocksDB engine is the
//! crate `hanse-storage-rocksdb`; [`MemStore`] is the other implementation, for tests and
//! the deterministic simulation. Nothing here knows of Raft or networking.

mod batch;
pub mod codec;
mod error;
mod mem;
mod store;

pub use batch::{Batch, Cf, OnDurable, RangeExport, RangeSize, ScanOrder, WriteOp};
pub use error::{Error, Result};
pub use mem::MemStore;
pub use store::{FencedStore, Page, Store, StoreFuture, exclusive_upper_bound};
