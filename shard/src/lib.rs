//! hanse-shard: the pure shard layer.
//!
//! Everything here is a function of its inputs: no clock, no disk, no network, no async
//! runtime, so it is tested without sockets or disks and the deterministic simulation
//! runs exactly the code that ships.
//!
//! - [`descriptor`]: shards, epochs and replicas, and how split and merge change them.
//! - [`command`]: the commands a shard's Raft log carries and their answers.
//! - [`apply`]: what a command does to a shard.
//! - [`meta`]: the meta shard's routing table and node directory records.
//! - [`range`]: key ranges and the system keyspace.
//! - [`routing`]: which hosted shard serves a key, and whether a client's route is current.
//! - [`coordinate`]: the split and merge coordinators, as state machines.
//! - [`hosting`]: which shard groups a node starts and retires after a split or merge.
//! - [`knobs`] and [`limits`]: the limits every crate agrees on, and their checks.

pub mod apply;
mod bytes;
pub mod command;
pub mod coordinate;
pub mod descriptor;
pub mod hosting;
pub mod knobs;
pub mod limits;
pub mod meta;
pub mod range;
pub mod routing;

#[cfg(test)]
mod tests;

pub use command::{KeyValue, Mutation, Proposal, Rejection, ShardRequest, ShardResponse};
pub use descriptor::{
    Epoch, MergeError, MergeState, NodeId, ReplicaDescriptor, ReplicaRole, ShardDescriptor,
    ShardId, SplitError,
};
pub use hosting::{HostingChanges, hosting_changes};
pub use routing::{RouteTable, Routed, StaleRoute, admit_route};
