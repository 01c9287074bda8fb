//! Hanse: a geo-distributed, strongly consistent key-value store.
//!
//! This crate assembles a node from the storage, consensus and planner crates. Today it
//! offers the embedded mode, [`Db`]: the whole store in one process, every write through a
//! shard's Raft group, no network. The `hanse` binary wraps it for the command line.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let db = hanse::Db::open(dir.path(), hanse::Options::default())?;
//! db.put(b"city/hamburg", b"1.9M")?;
//! db.put(b"city/sydney", b"5.5M")?;
//! db.split_shard(b"city/s")?; // two shards, two Raft groups
//! assert_eq!(db.get(b"city/hamburg")?, Some(b"1.9M".to_vec()));
//! assert_eq!(db.scan(b"city/".to_vec()..b"city0".to_vec(), 10)?.len(), 2);
//! let swapped = db.compare_and_swap(b"city/sydney", Some(b"5.5M"), Some(b"5.6M"))?;
//! assert!(swapped.swapped);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod actors;
mod admin_service;
mod balancer;
pub mod chart;
pub mod config;
mod db;
mod error;
mod follower;
mod kv_service;
mod limits;
mod options;
mod peers;
pub mod progress;
mod reporter;
pub mod server;
pub mod units;

pub use db::{BatchOp, CasOutcome, Db};
pub use error::{Error, Result};
pub use hanse_shard::{Epoch, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
pub use hanse_storage::Error as StorageError;
pub use hanse_storage_rocksdb::LogWriterStats;
pub use options::Options;
