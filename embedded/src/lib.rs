//! Hanse: a geo-distributed, strongly consistent key-value store, here as an embedded
//! library: [`Db`] is the whole store in one process, every write through its shard's
//! Raft group (this process its only voter), on the node's RocksDB, with no network.
//! The same shard layer, consensus and storage engine run a cluster node (crate
//! `hanse-node`); this crate pulls in no actors, gRPC or Torch.
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

mod db;
mod error;
mod options;

pub use db::{BatchOp, CasOutcome, Db};
pub use error::{Error, Result};
pub use hanse_shard::{Epoch, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
pub use hanse_storage::Error as StorageError;
pub use hanse_storage_rocksdb::LogWriterStats;
pub use options::Options;
