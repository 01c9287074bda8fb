//! The actors of a cluster node (actix, on the tokio multi-thread runtime that also runs
//! tonic and openraft; see [`crate::server::system`]):
//!
//! - [`NodeActor`]: one per node; owns the RocksDB handle and the replicas, opens,
//!   destroys and restarts them.
//! - [`ShardReplica`]: one per hosted shard; wraps the shard's Raft group and admits
//!   requests with bounded mailboxes and in-flight counts.
//! - [`IngestActor`]: one per node of the ingest region; batches client writes per shard
//!   into shared log entries.
//!
//! gRPC handlers find a shard's [`ReplicaHandle`] in the node's [`Routes`]: they propose
//! and read through it (admitted against the replica's permits; more than it takes is
//! answered `Busy` at once, never queued without bound) and send the actor the rarer
//! commands that change the replica. The consensus and storage crates know nothing of
//! actix.

mod ingest;
mod node;
mod notice;
mod replica;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use actix::prelude::*;
use hanse_consensus::ShardGroup;
use hanse_planner::stats::KeySampler;
use hanse_shard::routing::Overlap;
use hanse_shard::{NodeId, RouteTable, Routed, ShardDescriptor, ShardId};
use hanse_shard::{ShardRequest, ShardResponse};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};

use crate::knobs::{ORIGIN_REGIONS_MAX, OTHER_REGIONS};

pub use ingest::{Ingest, IngestActor, IngestCounters, IngestOptions};
pub use node::{DestroyReplica, NodeActor, NodeActorError, OpenReplica, StopReplicas};
pub use replica::{
    ChangeReplicas, ReplicaChange, ReplicaError, ReplicaLimits, ShardReplica, TransferLeader,
};

/// What this replica served since its node last reported (see the reporter).
#[derive(Debug, Default)]
pub struct ReplicaLoad {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    /// Keys plus values of the puts.
    pub bytes_written: AtomicU64,
    /// Deleted keys (their values' sizes are not known where they are counted).
    pub deletes: AtomicU64,
    /// A sample of the keys requests touched (for load splits).
    pub sampled: Mutex<KeySampler>,
    /// The shard's size in bytes as this node last reported it (while it leads; see the
    /// reporter): with the bytes written since, what the bulk path holds against the
    /// split size. The same figure the balancer splits by, so an ingest refused for size
    /// always has a split coming.
    pub size_bytes: AtomicU64,
    /// Requests by the region their client named ("" for untagged ones; at most
    /// [`ORIGIN_REGIONS_MAX`] names, the rest counted as [`OTHER_REGIONS`]).
    pub origins: Mutex<HashMap<String, u64>>,
}

impl ReplicaLoad {
    /// Counts one request that touched `key` (its first key) from `origin`.
    pub fn touched(&self, key: &[u8], origin: &str) {
        self.sampled.lock().expect("sampler lock").offer(key);
        let mut origins = self.origins.lock().expect("origins lock");
        // Clients name their region freely; what goes into the meta shard's log every
        // second must not grow with the names they invent.
        let counted = match origins.contains_key(origin) || origins.len() < ORIGIN_REGIONS_MAX {
            true => origin,
            false => OTHER_REGIONS,
        };
        match origins.get_mut(counted) {
            Some(count) => *count += 1,
            None => {
                origins.insert(counted.to_string(), 1);
            }
        }
    }
}

/// A leader's read index as a follower learned it: every write acknowledged before
/// `asked` (when the follower asked) is at or below `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndex {
    pub asked: Instant,
    pub index: u64,
}

/// A hosted shard as request handlers see it: its actor, its group for read-only looks
/// (metrics, descriptor), its load counters, and the newest read index its leader gave
/// it (for follower reads).
#[derive(Clone)]
pub struct ReplicaHandle {
    pub shard: ShardId,
    pub addr: Addr<ShardReplica>,
    pub group: ShardGroup,
    pub load: Arc<ReplicaLoad>,
    pub read_index: Arc<Mutex<Option<ReadIndex>>>,
    /// Requests that may be under way at once; shared with the actor, which takes them
    /// all while it transfers leadership.
    permits: Arc<Semaphore>,
}

impl ReplicaHandle {
    /// Admits `requests` requests, or answers `Busy` at once.
    fn admit(&self, requests: usize) -> Result<SemaphorePermit<'_>, ReplicaError> {
        let requests = u32::try_from(requests).unwrap_or(u32::MAX);
        self.permits
            .try_acquire_many(requests)
            .map_err(|_| ReplicaError::Busy { shard: self.shard })
    }

    /// Proposes `request` to the shard's log (leader only) and waits for its response.
    pub async fn propose(&self, request: ShardRequest) -> Result<ShardResponse, ReplicaError> {
        let _admitted = self.admit(1)?;
        Ok(self.group.propose(request).await?)
    }

    /// Proposes `requests` in one log entry (leader only); one answer per request, in
    /// order.
    pub async fn propose_together(
        &self,
        requests: Vec<ShardRequest>,
    ) -> Result<Vec<Result<ShardResponse, ReplicaError>>, ReplicaError> {
        let _admitted = self.admit(requests.len())?;
        let answers = self.group.propose_together(requests).await;
        Ok(answers
            .into_iter()
            .map(|answer| answer.map_err(ReplicaError::from))
            .collect())
    }

    /// Answers once this node may serve a linearizable read of the shard (leader only),
    /// with the read index: every write acknowledged before the barrier is at or below it.
    pub async fn read_barrier(&self) -> Result<u64, ReplicaError> {
        let _admitted = self.admit(1)?;
        let shard = self.shard;
        match self.group.read_index().await {
            Ok(index) => Ok(index),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(ReplicaError::NotLeader {
                    shard,
                    leader: forward.leader_id,
                })
            }
            Err(e) => Err(ReplicaError::Unavailable {
                shard,
                detail: e.to_string(),
            }),
        }
    }

    /// The shard's descriptor as this replica has applied it.
    pub fn descriptor(&self) -> ShardDescriptor {
        self.group.descriptor.borrow().clone()
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.group.raft.metrics().borrow().current_leader
    }

    /// Whether this node leads the shard.
    pub fn leads(&self) -> bool {
        let metrics = self.group.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(metrics.id)
    }

    /// The address of `node` as the group's membership records it (empty if unknown).
    pub fn member_addr(&self, node: Option<NodeId>) -> String {
        node.and_then(|id| {
            let metrics = self.group.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })
        .unwrap_or_default()
    }

    /// Sends the message `make` builds around a reply channel and waits for the reply.
    /// A full mailbox is `Busy`; a stopped actor (being restarted) is `Unavailable`.
    pub async fn ask<M, T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ReplicaError>>) -> M,
    ) -> Result<T, ReplicaError>
    where
        M: Message<Result = ()> + Send + 'static,
        ShardReplica: Handler<M>,
    {
        let shard = self.shard;
        let unavailable = || ReplicaError::Unavailable {
            shard,
            detail: "the replica is restarting".into(),
        };
        let (reply, answer) = oneshot::channel();
        self.addr.try_send(make(reply)).map_err(|e| match e {
            SendError::Full(_) => ReplicaError::Busy { shard },
            SendError::Closed(_) => unavailable(),
        })?;
        answer.await.map_err(|_| unavailable())?
    }
}

impl Routed for ReplicaHandle {
    fn with_descriptor<R>(&self, f: impl FnOnce(&ShardDescriptor) -> R) -> R {
        self.group.with_descriptor(f)
    }
}

/// The replicas this node hosts, by the start key of their range. Written by the
/// [`NodeActor`] only; read by every request handler.
#[derive(Default)]
pub struct Routes {
    table: RwLock<RouteTable<ReplicaHandle>>,
}

impl Routes {
    /// Publishes `handle`; refused when its range overlaps another hosted shard's.
    fn insert(&self, handle: ReplicaHandle) -> Result<(), Overlap> {
        self.table.write().expect("routes lock").insert(handle)
    }

    fn remove(&self, shard: ShardId) {
        self.table.write().expect("routes lock").remove(shard);
    }

    /// The hosted replica whose range holds `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<ReplicaHandle> {
        self.table.read().expect("routes lock").lookup(key).cloned()
    }

    /// The hosted replica of `shard`.
    pub fn get(&self, shard: ShardId) -> Option<ReplicaHandle> {
        self.table.read().expect("routes lock").get(shard).cloned()
    }

    /// Every hosted replica, in key order.
    pub fn all(&self) -> Vec<ReplicaHandle> {
        self.table
            .read()
            .expect("routes lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The descriptors of the hosted replicas whose ranges overlap `[start, end)`.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<ShardDescriptor> {
        let table = self.table.read().expect("routes lock");
        table
            .overlapping(start, end)
            .map(ReplicaHandle::descriptor)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_counts_a_bounded_number_of_client_regions() {
        let load = ReplicaLoad::default();
        for i in 0..1000 {
            load.touched(b"k", &format!("invented-{i}"));
        }
        load.touched(b"k", "invented-0");
        let origins = load.origins.lock().unwrap();
        assert_eq!(origins.len(), ORIGIN_REGIONS_MAX + 1);
        assert_eq!(origins["invented-0"], 2);
        assert_eq!(origins[OTHER_REGIONS], 1000 - ORIGIN_REGIONS_MAX as u64);
    }
}
