//! hanse-consensus: one openraft group per shard, on the storage interface.
//!
//! - [`types`]: the openraft type configuration; the commands a shard's log carries, and
//!   what applying them does, are `hanse-shard`'s.
//! - [`LogStore`] and [`StateMachine`]: openraft's storage traits on `hanse-storage`'s
//!   [`Store`](hanse_storage::Store) (RocksDB on a node, `MemStore` in simulations).
//! - [`ShardGroup`]: starts (or restarts) the Raft group of one shard, with the
//!   [`Proposer`] that packs concurrent requests into shared entries.

// openraft's storage traits return its `StorageError` (over 200 bytes) by value; the
// helpers that build those results return the same type rather than boxing and unboxing.
#![allow(clippy::result_large_err)]

mod applied;
mod batching;
mod group;
pub mod hibernation;
mod hosting;
pub mod knobs;
pub mod latency;
pub mod lease;
pub mod liveness_watch;
mod log_store;
pub mod metrics;
mod network;
#[cfg(feature = "grpc")]
pub mod peer_channels;
mod proposer;
#[cfg(feature = "grpc")]
mod raft_service;
#[cfg(feature = "grpc")]
pub mod round_trip;
mod snapshot;
mod state_machine;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "grpc")]
mod transport;
pub mod types;

pub use applied::AppliedIndexes;
pub use group::{GroupError, GroupOptions, ShardGroup};
pub use hosting::{AddedBy, PlaceholderError, store_placeholder};
pub use log_store::LogStore;
pub use network::{Campaigner, SingleVoterNetwork};
pub use proposer::{ProposeError, Proposer, ProposerOptions};
#[cfg(feature = "grpc")]
pub use raft_service::{RaftService, ShardRegistry};
pub use snapshot::{SnapshotFile, unpack as unpack_shard_file, write as write_shard_file};
pub use state_machine::{StateMachine, destroy_replica, retire_merged};
#[cfg(feature = "grpc")]
pub use transport::{
    ShardNetwork, ShardPeer, Transport, TransportError, TransportOptions, TransportStats,
};
pub use types::{ReplicaNode, TypeConfig, replicas_of};

/// The openraft handle of one shard's group.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<u64>;
