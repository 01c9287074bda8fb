//! Hanse: a geo-distributed, strongly consistent key-value store.
//!
//! This crate assembles a node from the storage, consensus and planner crates. Today it
//! offers the embedded mode, [`Db`]: the whole store in one process, every write through a
//! shard's Raft group, no network. The `hanse` binary wraps it for the command line.

mod db;
mod error;
mod options;

pub use db::{BatchOp, CasOutcome, Db};
pub use hanse_storage::{Error as StorageError, LogWriterStats};
pub use error::{Error, Result};
pub use hanse_storage::{Epoch, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
pub use options::Options;
