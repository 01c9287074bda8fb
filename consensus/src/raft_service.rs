//! The receiving side of the transport: the `hanse.v1.Raft` gRPC service. It hands each
//! message of a batch to the local group of its shard; a message for a shard this node
//! does not host is answered `ShardNotHosted` and creates nothing.
//!
//! Where nodes authenticate (TLS with node certificates), a batch must come from the node
//! it names (`from_node` is the caller's certificate's), and every vote, append and
//! snapshot in it must be that node's own: no node speaks for another.
//!
//! A vote request, and a leader's nudge to campaign (`TimeoutNow`), are taken only from a
//! voter of the group as this replica knows it (once it knows one): a node outside the
//! group cannot drive its terms up or make it elect. Appends and snapshots are taken from any node: a replica
//! that missed membership changes must still hear from a leader it does not know yet
//! (Raft's terms and log checks decide whether to follow it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use hanse_proto::v1::raft_server;
use hanse_proto::v1::{
    RaftBatch, RaftBatchReply, RaftMessage, RaftResult, ShardNotHosted, raft_message, raft_result,
};
use hanse_security::Caller;
use hanse_shard::{NodeId, ShardId};
use openraft::error::RaftError;
use openraft::{LogId, Vote};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::ShardGroup;
use crate::hibernation::Liveness;
use crate::knobs::{PEER_MESSAGE_BYTES_MAX, TERM_AND_INDEX_MAX};
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

    /// Every group hosted now.
    pub fn all(&self) -> Vec<ShardGroup> {
        let groups = self.groups.read().expect("registry lock");
        groups.values().cloned().collect()
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
    /// The node is draining: it refuses a leader's nudge to campaign.
    draining: Arc<AtomicBool>,
    /// Every batch is news that its sender lives.
    liveness: Arc<Liveness>,
}

impl RaftService {
    /// The service of `node_id`'s groups; while `draining` holds, a leadership transfer
    /// to this node is refused. Each batch's sender is heard of in `liveness`.
    pub fn new(
        node_id: NodeId,
        registry: ShardRegistry,
        draining: Arc<AtomicBool>,
        liveness: Arc<Liveness>,
    ) -> Self {
        RaftService {
            node_id,
            registry,
            draining,
            liveness,
        }
    }

    /// The gRPC server for this service.
    pub fn into_server(self) -> raft_server::RaftServer<Self> {
        raft_server::RaftServer::new(self)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }

    async fn handle(&self, from: NodeId, message: RaftMessage) -> RaftResult {
        let Some(group) = self.registry.get(message.shard_id) else {
            return outcome(raft_result::Outcome::ShardNotHosted(ShardNotHosted {
                shard_id: message.shard_id,
                node_id: self.node_id,
            }));
        };
        let raft = &group.raft;
        match message.body {
            Some(raft_message::Body::AppendEntries(bytes)) => {
                match decode::<openraft::raft::AppendEntriesRequest<crate::TypeConfig>>(&bytes) {
                    Ok(rpc) => {
                        let entries = rpc.entries.iter().map(|e| Some(&e.log_id));
                        let ids = [rpc.prev_log_id.as_ref(), rpc.leader_commit.as_ref()];
                        match admissible(from, &rpc.vote, ids.into_iter().chain(entries)) {
                            Err(why) => malformed(why),
                            Ok(()) => answer(group.append_entries(rpc).await),
                        }
                    }
                    Err(e) => malformed(e),
                }
            }
            Some(raft_message::Body::Vote(bytes)) => {
                match decode::<openraft::raft::VoteRequest<NodeId>>(&bytes) {
                    Ok(rpc) => match admissible(from, &rpc.vote, [rpc.last_log_id.as_ref()])
                        .and_then(|()| known_voter(&group, from, "vote request"))
                    {
                        Err(why) => malformed(why),
                        Ok(()) => answer(group.vote(rpc).await),
                    },
                    Err(e) => malformed(e),
                }
            }
            Some(raft_message::Body::InstallSnapshot(bytes)) => {
                match decode::<openraft::raft::InstallSnapshotRequest<crate::TypeConfig>>(&bytes) {
                    Ok(rpc) => {
                        crate::metrics::METRICS
                            .snapshot_received_bytes
                            .inc_by(rpc.data.len() as u64);
                        let ids = [rpc.meta.last_log_id.as_ref()];
                        match admissible(from, &rpc.vote, ids) {
                            Err(why) => malformed(why),
                            Ok(()) => answer(group.install_snapshot(rpc).await),
                        }
                    }
                    Err(e) => malformed(e),
                }
            }
            Some(raft_message::Body::TimeoutNow(_)) => {
                match known_voter(&group, from, "request to campaign") {
                    Err(why) => malformed(why),
                    Ok(()) if self.draining.load(Ordering::SeqCst) => malformed(format!(
                        "node {} is draining: it takes no leadership",
                        self.node_id
                    )),
                    Ok(()) => answer({
                        group.wake();
                        raft.trigger()
                            .elect()
                            .await
                            .map_err(RaftError::<NodeId>::Fatal)
                    }),
                }
            }
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

/// Whether node `from` may send a message with `vote` and these log ids: its own
/// candidacy or leadership, and terms and indexes no real group reaches (a forged one
/// near `u64::MAX` would overflow where openraft adds to it).
fn admissible<'a>(
    from: NodeId,
    vote: &Vote<NodeId>,
    log_ids: impl IntoIterator<Item = Option<&'a LogId<NodeId>>>,
) -> Result<(), String> {
    if vote.leader_id().voted_for() != Some(from) {
        return Err(format!(
            "node {from} sent a message for another node's term ({vote}); refused"
        ));
    }
    let too_large = |n: u64| n > TERM_AND_INDEX_MAX;
    if too_large(vote.leader_id().term)
        || log_ids
            .into_iter()
            .flatten()
            .any(|id| too_large(id.index) || too_large(id.leader_id.term))
    {
        return Err(format!(
            "node {from} sent a term or log index over {TERM_AND_INDEX_MAX}; refused"
        ));
    }
    Ok(())
}

/// Whether `from` is a voter of `group`'s membership as this replica knows it (in a
/// joint configuration, of either half). A replica that knows no membership yet (a new
/// group's, before its first leader reached it) takes any node's word, as Raft must for
/// the group's first election.
fn known_voter(group: &ShardGroup, from: NodeId, what: &str) -> Result<(), String> {
    let metrics = group.raft.metrics();
    let metrics = metrics.borrow();
    let mut voters = metrics
        .membership_config
        .membership()
        .voter_ids()
        .peekable();
    let voter = voters.peek().is_none() || voters.any(|id| id == from);
    match voter {
        true => Ok(()),
        false => Err(format!(
            "node {from} is no voter of shard {} as this replica knows it; its {what} is refused",
            group.shard
        )),
    }
}

fn malformed(e: impl std::fmt::Display) -> RaftResult {
    outcome(raft_result::Outcome::Malformed(e.to_string()))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<RaftBatchReply>, Status> {
        let caller = Caller::of(&request);
        let batch = request.into_inner();
        if !caller.may_speak_for_node(batch.from_node) {
            return Err(Status::permission_denied(format!(
                "{caller} may not send Raft messages as node {}",
                batch.from_node
            )));
        }
        self.liveness
            .heard(batch.from_node, tokio::time::Instant::now());
        let mut results = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            results.push(self.handle(batch.from_node, message).await);
        }
        Ok(Response::new(RaftBatchReply { results }))
    }
}
