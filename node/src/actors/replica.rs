//! `ShardReplica`: the actor that owns one shard's running Raft group on this node.
//!
//! Every request for the shard enters through its mailbox. The actor admits it (or
//! answers `Busy` at once when the shard already has `requests_in_flight_max` requests
//! under way) and hands the work to the shared runtime, so one slow commit never holds
//! the mailbox. A leadership transfer takes every admission permit: requests arriving
//! meanwhile are answered `Busy` instead of renewing the followers' leases. When the Raft
//! group stops by itself (a fatal storage error), the actor stops, and its node restarts
//! the replica from storage.

use crate::knobs;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hanse_consensus::{GroupError, ProposeError, ReplicaNode, ShardGroup, ShardNetwork};
use hanse_shard::{NodeId, ReplicaRole, ShardDescriptor, ShardId};
use hanse_shard::{ShardRequest, ShardResponse};
use openraft::ServerState;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::notice::{DescriptorChanged, ReplicaStopped, StopReplica};

/// Bounds of one replica actor.
#[derive(Debug, Clone)]
pub struct ReplicaLimits {
    /// Messages waiting in the mailbox; more are answered `Busy`.
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

/// Propose a command to the shard's log (leader only).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Propose {
    pub request: ShardRequest,
    pub reply: Reply<ShardResponse>,
}

/// Propose several commands in one log entry (leader only); one answer per command, in
/// order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProposeTogether {
    pub requests: Vec<ShardRequest>,
    pub reply: Reply<Vec<Result<ShardResponse, ReplicaError>>>,
}

/// Answer once this node may serve a linearizable read of the shard (leader only), with
/// the read index: every write acknowledged before the barrier is at or below it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadBarrier {
    pub reply: Reply<u64>,
}

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
    ) -> Self {
        let permits = Arc::new(Semaphore::new(limits.requests_in_flight_max));
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

    /// Admits `requests` requests, or answers `Busy`.
    fn admit<T>(
        &self,
        reply: Reply<T>,
        requests: usize,
    ) -> Option<(OwnedSemaphorePermit, Reply<T>)> {
        let requests = u32::try_from(requests).unwrap_or(u32::MAX);
        match self.permits.clone().try_acquire_many_owned(requests) {
            Ok(permit) => Some((permit, reply)),
            Err(_) => {
                let _ = reply.send(Err(ReplicaError::Busy {
                    shard: self.group.shard,
                }));
                None
            }
        }
    }
}

impl Actor for ShardReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.mailbox_max);
        let mut metrics = self.group.raft.metrics();
        let stopped = async move {
            let _ = metrics
                .wait_for(|m| m.running_state.is_err() || m.state == ServerState::Shutdown)
                .await;
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

fn from_propose(e: ProposeError) -> ReplicaError {
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

impl Handler<Propose> for ShardReplica {
    type Result = ();

    fn handle(&mut self, msg: Propose, _: &mut Self::Context) {
        let Some((permit, reply)) = self.admit(msg.reply, 1) else {
            return;
        };
        let group = self.group.clone();
        tokio::spawn(async move {
            let result = group.propose(msg.request).await.map_err(from_propose);
            drop(permit);
            let _ = reply.send(result);
        });
    }
}

impl Handler<ProposeTogether> for ShardReplica {
    type Result = ();

    fn handle(&mut self, msg: ProposeTogether, _: &mut Self::Context) {
        let Some((permit, reply)) = self.admit(msg.reply, msg.requests.len()) else {
            return;
        };
        let group = self.group.clone();
        tokio::spawn(async move {
            let results = group.propose_together(msg.requests).await;
            drop(permit);
            let _ = reply.send(Ok(results
                .into_iter()
                .map(|r| r.map_err(from_propose))
                .collect()));
        });
    }
}

impl Handler<ReadBarrier> for ShardReplica {
    type Result = ();

    fn handle(&mut self, msg: ReadBarrier, _: &mut Self::Context) {
        let Some((permit, reply)) = self.admit(msg.reply, 1) else {
            return;
        };
        let group = self.group.clone();
        let shard = self.group.shard;
        tokio::spawn(async move {
            let result = match group.read_index().await {
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
            };
            drop(permit);
            let _ = reply.send(result);
        });
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
