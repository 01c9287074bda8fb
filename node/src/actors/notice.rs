//! The messages between a replica actor and its node actor, apart from both so that
//! neither needs the other's type.

use actix::prelude::*;
use hanse_shard::ShardId;

/// Sent by a replica actor as it stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplicaStopped {
    pub shard: ShardId,
    pub generation: u64,
}

/// Sent by a replica actor when its shard's descriptor changed (split, membership).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DescriptorChanged {
    pub shard: ShardId,
}

/// Tells a replica actor to stop without being restarted (its node has unhosted it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReplica;
