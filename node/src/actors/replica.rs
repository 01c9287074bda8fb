//! `ShardReplica`: the actor that owns one shard's running Raft group on this node.
//!
//! The actor carries out what changes the replica itself (its replica set, its
//! leadership) and watches its group: when the Raft group stops by itself (a fatal
//! storage error), the actor stops, and its node restarts the replica from storage.
//! Client requests do not pass its mailbox: the [`super::ReplicaHandle`] admits them
//! against the same permits (at most `requests_in_flight_max` under way, more answered
//! `Busy` at once) and proposes or reads straight through the group, one hand-off fewer
//! per request. A leadership transfer takes every permit: requests arriving meanwhile
//! are answered `Busy` instead of renewing the followers' leases.

use crate::knobs;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hanse_consensus::{GroupError, ProposeError, ReplicaNode, ShardGroup, ShardNetwork};
use hanse_shard::{NodeId, ReplicaRole, ShardDescriptor, ShardId};
use tokio::sync::{Semaphore, oneshot};

use super::notice::{DescriptorChanged, ReplicaStopped, StopReplica};

/// Bounds of one replica actor.
#[derive(Debug, Clone)]
pub struct ReplicaLimits {
    /// Commands (replica-set changes, leadership transfers) waiting in the mailbox; more
    /// are answered `Busy`.
    pub mailbox_max: usize,
    /// Requests admitted and not yet answered. Matches the proposer's queue, so a write
    /// that is admitted never waits for room there.
    pub requests_in_flight_max: usize,
    /// How long a leadership transfer may take in each of its steps.
    pub transfer_timeout: Duration,
}

impl Default for ReplicaLimits {
    fn default() -> Self {
        ReplicaLimits {
            mailbox_max: knobs::REPLICA_MAILBOX_MAX,
            requests_in_flight_max: knobs::REQUESTS_IN_FLIGHT_MAX,
            transfer_timeout: knobs::TRANSFER_STEP_TIMEOUT,
        }
    }
}

/// Why a replica did not carry out a request.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this node does not lead shard {shard} (leader: {leader:?})")]
    NotLeader {
        shard: ShardId,
        leader: Option<NodeId>,
    },
    #[error("shard {shard} is busy; retry shortly")]
    Busy { shard: ShardId },
    #[error("shard {shard} is unavailable on this node: {detail}")]
    Unavailable { shard: ShardId, detail: String },
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Group(Box<GroupError>),
}

impl From<GroupError> for ReplicaError {
    fn from(e: GroupError) -> Self {
        ReplicaError::Group(Box::new(e))
    }
}

impl ReplicaError {
    /// The same refusal once more, for each request of a batch refused as a whole.
    pub fn for_each_request(&self) -> ReplicaError {
        match self {
            ReplicaError::NotLeader { shard, leader } => ReplicaError::NotLeader {
                shard: *shard,
                leader: *leader,
            },
            ReplicaError::Busy { shard } => ReplicaError::Busy { shard: *shard },
            ReplicaError::Unavailable { shard, detail } => ReplicaError::Unavailable {
                shard: *shard,
                detail: detail.clone(),
            },
            ReplicaError::OutcomeUnknown(message) => ReplicaError::OutcomeUnknown(message.clone()),
            ReplicaError::Group(e) => ReplicaError::Unavailable {
                shard: e.shard(),
                detail: e.to_string(),
            },
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ReplicaError>>;

/// A change of the shard's replica set (leader only).
pub enum ReplicaChange {
    Add {
        node: NodeId,
        at: ReplicaNode,
        role: ReplicaRole,
    },
    Remove {
        node: NodeId,
    },
    SetRole {
        node: NodeId,
        role: ReplicaRole,
    },
}

/// Carry out a replica-set change; answers with the descriptor after it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangeReplicas {
    pub change: ReplicaChange,
    pub reply: Reply<ShardDescriptor>,
}

/// Hand the shard's leadership to the voter on `to` (leader only).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransferLeader {
    pub to: NodeId,
    pub reply: Reply<()>,
}

pub struct ShardReplica {
    group: ShardGroup,
    network: ShardNetwork,
    limits: ReplicaLimits,
    permits: Arc<Semaphore>,
    /// Where this actor tells its node that it stopped, and that its descriptor changed.
    stopped: Recipient<ReplicaStopped>,
    changed: Recipient<DescriptorChanged>,
    /// Which start of this shard's replica this actor is, so the node ignores the stop
    /// of one it has already replaced.
    generation: u64,
}

impl ShardReplica {
    pub fn new(
        group: ShardGroup,
        network: ShardNetwork,
        limits: ReplicaLimits,
        stopped: Recipient<ReplicaStopped>,
        changed: Recipient<DescriptorChanged>,
        generation: u64,
        permits: Arc<Semaphore>,
    ) -> Self {
        ShardReplica {
            group,
            network,
            limits,
            permits,
            stopped,
            changed,
            generation,
        }
    }
}

impl Actor for ShardReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.mailbox_max);
        // The group's core drops this channel's sender when it stops, whatever the
        // reason. Until then the channel changes only with the leader or the replica's
        // role, not with every commit as the full metrics do: one wake-up fewer per write.
        let mut server = self.group.raft.server_metrics();
        let stopped = async move {
            let mut leader = server.borrow().current_leader;
            while server.changed().await.is_ok() {
                let now = server.borrow().current_leader;
                if now.is_some() && now != leader {
                    crate::metrics::METRICS.leader_changes.inc();
                }
                leader = now;
            }
        };
        ctx.spawn(stopped.into_actor(self).map(|(), replica, ctx| {
            tracing::warn!(shard = replica.group.shard, "raft group stopped");
            ctx.stop();
        }));
        // A split or membership change: the node re-reads what storage now holds.
        let mut descriptor = self.group.descriptor.clone();
        let changed = self.changed.clone();
        let shard = self.group.shard;
        ctx.spawn(
            async move {
                while descriptor.changed().await.is_ok() {
                    changed.do_send(DescriptorChanged { shard });
                }
            }
            .into_actor(self),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stopped.do_send(ReplicaStopped {
            shard: self.group.shard,
            generation: self.generation,
        });
    }
}

impl From<ProposeError> for ReplicaError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { shard, leader } => ReplicaError::NotLeader { shard, leader },
            ProposeError::Stopped { shard, detail } | ProposeError::Failed { shard, detail } => {
                ReplicaError::Unavailable { shard, detail }
            }
            retired @ ProposeError::Retired { shard } => ReplicaError::Unavailable {
                shard,
                detail: retired.to_string(),
            },
            unknown @ ProposeError::OutcomeUnknown { .. } => {
                ReplicaError::OutcomeUnknown(unknown.to_string())
            }
        }
    }
}

impl Handler<ChangeReplicas> for ShardReplica {
    type Result = ();

    fn handle(&mut self, msg: ChangeReplicas, _: &mut Self::Context) {
        let group = self.group.clone();
        tokio::spawn(async move {
            let changed = match msg.change {
                ReplicaChange::Add { node, at, role } => group.add_replica(node, at, role).await,
                ReplicaChange::Remove { node } => group.remove_replica(node).await,
                ReplicaChange::SetRole { node, role } => group.set_role(node, role).await,
            };
            let result = changed
                .map(|()| group.descriptor.borrow().clone())
                .map_err(ReplicaError::from);
            let _ = msg.reply.send(result);
        });
    }
}

impl Handler<TransferLeader> for ShardReplica {
    type Result = ();

    fn handle(&mut self, msg: TransferLeader, _: &mut Self::Context) {
        let group = self.group.clone();
        let network = self.network.clone();
        let permits = self.permits.clone();
        let all = self.limits.requests_in_flight_max as u32;
        let timeout = self.limits.transfer_timeout;
        tokio::spawn(async move {
            // Every permit: requests under way finish, new ones are answered Busy.
            let result = match permits.acquire_many_owned(all).await {
                Ok(_paused) => group
                    .transfer_leader(msg.to, &network, timeout)
                    .await
                    .map_err(ReplicaError::from),
                Err(_) => Err(ReplicaError::Unavailable {
                    shard: group.shard,
                    detail: "the replica is shutting down".into(),
                }),
            };
            let _ = msg.reply.send(result);
        });
    }
}

impl Handler<StopReplica> for ShardReplica {
    type Result = ();

    fn handle(&mut self, _: StopReplica, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
