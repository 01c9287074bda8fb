//! hanse-storage-rocksdb: a node's one RocksDB, behind `hanse-storage`'s [`Store`].
//!
//! [`Engine::open`] opens (or creates) a data directory and refuses one that is not
//! Hanse's, newer, in use, damaged, missing its marker while holding data, or whose
//! write-ahead log lost writes it had made durable. Raft-log appends of every shard on the
//! node go through one group-commit log writer: whatever has queued up is merged into one
//! RocksDB write batch, and one WAL sync makes it durable for all of them. Shard snapshots
//! are their key range as SST files.
//!
//! [`Store`]: hanse_storage::Store

mod durable;
mod engine;
pub mod knobs;
mod log_writer;
pub mod metrics;
mod rocks;

pub use engine::{Engine, EngineOptions, FORMAT_VERSION, rocksdb_options};
pub use log_writer::LogWriterStats;
