//! The `hanse.v1.Admin` gRPC service: what this node knows about itself and its shards.

use std::sync::Arc;

use hanse_proto::v1 as pb;
use hanse_proto::v1::admin_server::{Admin, AdminServer};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::kv_service::to_proto;
use crate::server::NodeState;

pub(crate) struct AdminService {
    state: Arc<NodeState>,
}

impl AdminService {
    pub(crate) fn new(state: Arc<NodeState>) -> Self {
        AdminService { state }
    }

    pub(crate) fn into_server(self) -> AdminServer<Self> {
        AdminServer::new(self)
    }

    async fn shard_statuses(&self) -> Vec<pb::ShardStatus> {
        let shards = self.state.shards.read().await;
        shards
            .values()
            .map(|shard| {
                let metrics = shard.group.raft.metrics().borrow().clone();
                let leader_addr = metrics
                    .current_leader
                    .and_then(|id| metrics.membership_config.membership().get_node(&id))
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                let role = match metrics.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                };
                pb::ShardStatus {
                    descriptor: Some(to_proto(&shard.descriptor)),
                    leader_node: metrics.current_leader.unwrap_or(0),
                    leader_addr,
                    role: role.to_string(),
                    applied_index: metrics.last_applied.map_or(0, |id| id.index),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            node_id: self.state.node_id,
            region: self.state.region.clone(),
            addr: self.state.addr.clone(),
            shards: self.shard_statuses().await,
        }))
    }

    async fn shards(
        &self,
        _: Request<pb::ShardsRequest>,
    ) -> Result<Response<pb::ShardsResponse>, Status> {
        Ok(Response::new(pb::ShardsResponse {
            shards: self.shard_statuses().await,
        }))
    }
}
