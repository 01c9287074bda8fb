//! The receiving side of the transport: the `hanse.v1.Raft` gRPC service. It hands each
//! message of a batch to the local group of its shard; a message for a shard this node
//! does not host is answered `ShardNotHosted` and creates nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hanse_proto::v1::raft_server;
use hanse_proto::v1::{
    RaftBatch, RaftBatchReply, RaftMessage, RaftResult, ShardNotHosted, raft_message, raft_result,
};
use hanse_shard::{NodeId, ShardId};
use openraft::error::RaftError;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::ShardGroup;
use crate::knobs::PEER_MESSAGE_BYTES_MAX;
use crate::transport::{decode, encode};

/// The shard groups this node hosts, by shard id.
#[derive(Clone, Default)]
pub struct ShardRegistry {
    groups: Arc<RwLock<HashMap<ShardId, ShardGroup>>>,
}

impl ShardRegistry {
    pub fn insert(&self, group: ShardGroup) {
        self.groups
            .write()
            .expect("registry lock")
            .insert(group.shard, group);
    }

    pub fn remove(&self, shard: ShardId) -> Option<ShardGroup> {
        self.groups.write().expect("registry lock").remove(&shard)
    }

    pub fn get(&self, shard: ShardId) -> Option<ShardGroup> {
        self.groups
            .read()
            .expect("registry lock")
            .get(&shard)
            .cloned()
    }
}

/// The `hanse.v1.Raft` service of one node.
pub struct RaftService {
    node_id: NodeId,
    registry: ShardRegistry,
}

impl RaftService {
    pub fn new(node_id: NodeId, registry: ShardRegistry) -> Self {
        RaftService { node_id, registry }
    }

    /// The gRPC server for this service.
    pub fn into_server(self) -> raft_server::RaftServer<Self> {
        raft_server::RaftServer::new(self)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }

    async fn handle(&self, message: RaftMessage) -> RaftResult {
        let Some(group) = self.registry.get(message.shard_id) else {
            return outcome(raft_result::Outcome::ShardNotHosted(ShardNotHosted {
                shard_id: message.shard_id,
                node_id: self.node_id,
            }));
        };
        let raft = &group.raft;
        match message.body {
            Some(raft_message::Body::AppendEntries(bytes)) => match decode(&bytes) {
                Ok(rpc) => answer(raft.append_entries(rpc).await),
                Err(e) => malformed(e),
            },
            Some(raft_message::Body::Vote(bytes)) => match decode(&bytes) {
                Ok(rpc) => answer(group.vote(rpc).await),
                Err(e) => malformed(e),
            },
            Some(raft_message::Body::InstallSnapshot(bytes)) => match decode(&bytes) {
                Ok(rpc) => answer(raft.install_snapshot(rpc).await),
                Err(e) => malformed(e),
            },
            Some(raft_message::Body::TimeoutNow(_)) => answer(
                raft.trigger()
                    .elect()
                    .await
                    .map_err(RaftError::<NodeId>::Fatal),
            ),
            None => outcome(raft_result::Outcome::Malformed(
                "message without a body".into(),
            )),
        }
    }
}

fn outcome(outcome: raft_result::Outcome) -> RaftResult {
    RaftResult {
        outcome: Some(outcome),
    }
}

fn answer<T: Serialize, E: Serialize>(result: Result<T, E>) -> RaftResult {
    outcome(match result {
        Ok(response) => raft_result::Outcome::Response(encode(&response)),
        Err(error) => raft_result::Outcome::RaftError(encode(&error)),
    })
}

fn malformed(e: impl std::fmt::Display) -> RaftResult {
    outcome(raft_result::Outcome::Malformed(e.to_string()))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<RaftBatchReply>, Status> {
        let batch = request.into_inner();
        let mut results = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            results.push(self.handle(message).await);
        }
        Ok(Response::new(RaftBatchReply { results }))
    }
}
