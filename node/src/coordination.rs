//! Runs the split and merge coordinators of `hanse-shard` on a node: each command becomes
//! a message to a replica actor, a wait on a Raft group's metrics, or a call to another
//! node through the peer channels. The Admin service and the balancer both start
//! coordinators here; the coordinators' logic is the shard layer's, tested there.

use crate::knobs::{MERGE_STEP_TIMEOUT, NEW_SHARD_LEADER_TIMEOUT, NEW_SHARD_POLL_INTERVAL};
use std::sync::Arc;
use std::time::Duration;

use hanse_shard::coordinate::{
    self, Command, CoordinatorError, ErrorKind, Event, Failure, MergeCoordinator, Runtime,
    SplitCoordinator,
};
use hanse_shard::meta::{ShardRecord, ShardStats};
use hanse_shard::{NodeId, ShardDescriptor, ShardId};
use hanse_storage_rocksdb::Engine;
use tonic::{Code, Status};

use crate::actors::{ReplicaError, ReplicaHandle, Routes};
use crate::peers::{Peers, unreachable};
use crate::reporter::{now_ms, send_report};

/// What a node's coordinators work with.
#[derive(Clone)]
pub(crate) struct NodeRuntime {
    pub node_id: NodeId,
    pub engine: Arc<Engine>,
    pub routes: Arc<Routes>,
    pub peers: Arc<Peers>,
    /// Every node's round trips, as reported here while this node leads the meta shard.
    pub round_trips: Arc<crate::round_trips::ClusterRoundTrips>,
}

/// A replica's refusal as a coordinator's failure.
pub(crate) fn failure(e: ReplicaError) -> Failure {
    let kind = match &e {
        ReplicaError::NotLeader { .. } => ErrorKind::Precondition,
        ReplicaError::Busy { .. } | ReplicaError::Unavailable { .. } => ErrorKind::Unavailable,
        ReplicaError::Group(group) => match **group {
            hanse_consensus::GroupError::NotLeader { .. }
            | hanse_consensus::GroupError::Membership { .. }
            | hanse_consensus::GroupError::Transfer { .. } => ErrorKind::Precondition,
            _ => ErrorKind::Internal,
        },
        ReplicaError::OutcomeUnknown(_) => ErrorKind::Unknown,
    };
    Failure::new(kind, e.to_string())
}

/// A coordinator's outcome as a gRPC status.
pub(crate) fn status(e: CoordinatorError) -> Status {
    let code = match e.kind {
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unknown => Code::Unknown,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, e.message)
}

fn failed(kind: ErrorKind, detail: impl Into<String>) -> Event {
    Event::Failed(Failure::new(kind, detail))
}

impl NodeRuntime {
    fn hosted(&self, shard: ShardId) -> Result<ReplicaHandle, Failure> {
        self.routes.get(shard).ok_or_else(|| {
            Failure::new(
                ErrorKind::Unavailable,
                format!("node {} hosts no replica of shard {shard}", self.node_id),
            )
        })
    }

    /// Splits the shard holding `key` (led here) at `key`.
    pub(crate) async fn split(
        &self,
        shard: &ReplicaHandle,
        key: Vec<u8>,
    ) -> Result<(ShardDescriptor, ShardDescriptor), Status> {
        let coordinator = SplitCoordinator::new(shard.descriptor(), key);
        coordinate::drive(coordinator, self).await.map_err(status)
    }

    /// Merges `left` (led here) with its right neighbour. The coordinator runs on a task
    /// of its own: a caller that goes away mid-merge must not leave the right shard
    /// frozen.
    pub(crate) async fn merge(&self, left: &ReplicaHandle) -> Result<ShardDescriptor, Status> {
        let l = left.descriptor();
        let right = self
            .routes
            .lookup(&l.end)
            .filter(|_| !l.end.is_empty())
            .map(|r| r.descriptor());
        let runtime = self.clone();
        tokio::spawn(async move {
            coordinate::drive(MergeCoordinator::new(l, right), &runtime)
                .await
                .map_err(status)
        })
        .await
        .map_err(|e| Status::internal(format!("the merge coordinator failed: {e}")))?
    }

    async fn propose(&self, shard: ShardId, request: hanse_shard::ShardRequest) -> Event {
        let replica = match self.hosted(shard) {
            Ok(replica) => replica,
            Err(f) => return Event::Proposed(Err(f)),
        };
        Event::Proposed(replica.propose(request).await.map_err(failure))
    }

    /// Makes this node the leader of `shard`, asking its current leader to hand over.
    async fn lead_here(&self, shard: ShardId) -> Event {
        let replica = match self.hosted(shard) {
            Ok(replica) => replica,
            Err(f) => return Event::Failed(f),
        };
        let me = self.node_id;
        match replica.leader() {
            Some(leader) if leader == me => return Event::Done,
            Some(leader) => {
                let addr = replica.member_addr(Some(leader));
                let request = hanse_proto::v1::TransferLeaderRequest {
                    shard_id: shard,
                    to_node: me,
                };
                let asked = match self.peers.admin(&addr) {
                    Ok(mut admin) => admin
                        .transfer_leader(request)
                        .await
                        .map_err(unreachable(&addr)),
                    Err(e) => Err(e),
                };
                if let Err(e) = asked {
                    return failed(ErrorKind::Unavailable, e.message());
                }
            }
            None => return failed(ErrorKind::Unavailable, "no leader at the moment"),
        }
        let led = replica
            .group
            .raft
            .wait(Some(MERGE_STEP_TIMEOUT))
            .metrics(|m| m.current_leader == Some(me), "this node leads")
            .await;
        match led {
            Ok(_) => Event::Done,
            Err(_) => failed(
                ErrorKind::Unavailable,
                format!("this node did not lead within {MERGE_STEP_TIMEOUT:?}"),
            ),
        }
    }

    /// Waits until `node`'s replica of `shard` applied up to `index`: here by watching its
    /// group, elsewhere by asking that node to wait (Admin.WaitApplied).
    async fn await_applied(&self, shard: ShardId, node: NodeId, index: u64) -> Event {
        let replica = match self.hosted(shard) {
            Ok(replica) => replica,
            Err(f) => return Event::Failed(f),
        };
        if node == self.node_id {
            return match wait_applied(&replica, index, MERGE_STEP_TIMEOUT).await {
                Ok(_) => Event::Done,
                Err(e) => failed(ErrorKind::DeadlineExceeded, e.message()),
            };
        }
        let addr = replica.member_addr(Some(node));
        let request = hanse_proto::v1::WaitAppliedRequest {
            shard_id: shard,
            index,
            timeout_ms: MERGE_STEP_TIMEOUT.as_millis() as u32,
        };
        let waited = match self.peers.admin(&addr) {
            Ok(mut admin) => admin
                .wait_applied(request)
                .await
                .map_err(unreachable(&addr)),
            Err(e) => Err(e),
        };
        match waited {
            Ok(_) => Event::Done,
            Err(e) => failed(
                ErrorKind::DeadlineExceeded,
                format!("{} ({:?})", e.message(), e.code()),
            ),
        }
    }

    /// Waits until this node hosts `shard` and it has a leader.
    async fn await_leader(&self, shard: ShardId) -> Event {
        let deadline = tokio::time::Instant::now() + NEW_SHARD_LEADER_TIMEOUT;
        loop {
            if self.routes.get(shard).is_some_and(|r| r.leader().is_some()) {
                return Event::Done;
            }
            if tokio::time::Instant::now() >= deadline {
                return failed(
                    ErrorKind::DeadlineExceeded,
                    format!("none within {NEW_SHARD_LEADER_TIMEOUT:?}"),
                );
            }
            tokio::time::sleep(NEW_SHARD_POLL_INTERVAL).await;
        }
    }

    async fn report(&self, descriptors: Vec<ShardDescriptor>) -> Event {
        let records = descriptors
            .into_iter()
            .map(|descriptor| ShardRecord {
                descriptor,
                leader: Some(self.node_id),
                stats: ShardStats::default(),
                reported_at_ms: now_ms(),
            })
            .collect();
        match send_report(&self.routes, &self.peers, records, Vec::new(), None).await {
            Ok(()) => Event::Done,
            Err(e) => {
                tracing::debug!("reporting a split or merge failed: {}", e.message());
                failed(ErrorKind::Unavailable, e.message())
            }
        }
    }
}

impl Runtime for NodeRuntime {
    async fn execute(&self, command: Command) -> Event {
        match command {
            Command::Propose { shard, request } => self.propose(shard, request).await,
            Command::LeadHere { shard } => self.lead_here(shard).await,
            Command::AwaitApplied { shard, node, index } => {
                self.await_applied(shard, node, index).await
            }
            Command::AwaitLeader { shard } => self.await_leader(shard).await,
            Command::AllocateShardId => match self.engine.allocate_shard_id(self.node_id) {
                Ok(id) => Event::Allocated(id),
                Err(e) => failed(ErrorKind::Internal, e.to_string()),
            },
            Command::Report { descriptors } => self.report(descriptors).await,
        }
    }
}

/// Waits until `replica` applied up to `index` (at most `timeout`); answers what it applied.
pub(crate) async fn wait_applied(
    replica: &ReplicaHandle,
    index: u64,
    timeout: Duration,
) -> Result<u64, Status> {
    replica
        .group
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "applied up to the index")
        .await
        .map(|m| m.last_applied.map_or(0, |id| id.index))
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "shard {}: node did not apply up to {index} within {timeout:?}",
                replica.shard
            ))
        })
}
