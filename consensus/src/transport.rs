//! The multi-raft transport: one gRPC channel per peer node, shared by every shard group
//! on this node, with the messages of all shards to one peer batched into one call.
//!
//! Each shard group gets a [`ShardNetwork`] (openraft's network factory) that hands its
//! messages to the node's [`Transport`]. Per peer, a task takes everything queued for that
//! peer, sends it as one `RaftBatch`, and gives each shard its own result. Up to
//! `in_flight_max` batches per peer are on the wire at once, so one slow message (a
//! snapshot chunk) does not hold every heartbeat behind it.

use crate::knobs::{APPEND_BYTES_MAX, LARGE_APPEND_BYTES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hanse_proto::v1::raft_client::RaftClient;
use hanse_proto::v1::{RaftBatch, RaftMessage, RaftResult, TimeoutNow, raft_message, raft_result};
use hanse_shard::{NodeId, ShardId};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Entry, EntryPayload, LogId, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use crate::batching::{BatchLimits, drain_in_batches};
use crate::hibernation::Liveness;
use crate::knobs::PEER_MESSAGE_BYTES_MAX;
use crate::latency::LatencyMatrix;
use crate::network::Campaigner;
use crate::peer_channels::PeerChannels;
use crate::round_trip::{PeerRoundTrip, RoundTrips};
use crate::{ReplicaNode, TypeConfig};

/// Bounds of the transport.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Messages queued for one peer before shard groups wait.
    pub queue_messages_max: usize,
    /// Messages in one batch.
    pub batch_messages_max: usize,
    /// Encoded bytes in one batch (a larger message goes alone), well under the Raft
    /// service's message limit.
    pub batch_bytes_max: usize,
    /// Batches on the wire to one peer at once.
    pub in_flight_max: usize,
    /// Deadline of one batch call, plus the time its bytes take at
    /// `slow_link_bytes_per_sec`; openraft retries what fails.
    pub request_timeout: Duration,
    /// The slowest a link (and a loaded peer) is assumed to carry bytes: a large batch
    /// gets the time it needs at this rate on top of `request_timeout`.
    pub slow_link_bytes_per_sec: u64,
    /// This node's region, and the round trips injected toward other regions (none by
    /// default).
    pub region: String,
    pub latency: LatencyMatrix,
    /// A peer heard nothing from for this long is dead (see [`crate::hibernation`]).
    pub peer_dead_after: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            queue_messages_max: 4096,
            batch_messages_max: 256,
            batch_bytes_max: 16 * 1024 * 1024,
            in_flight_max: 4,
            request_timeout: Duration::from_secs(5),
            slow_link_bytes_per_sec: 1024 * 1024,
            region: String::new(),
            latency: LatencyMatrix::default(),
            peer_dead_after: crate::hibernation::HibernationOptions::default().dead_after,
        }
    }
}

/// Why a message got no answer from its peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("node {node} at {addr} is unreachable: {detail}")]
    Unreachable {
        node: NodeId,
        addr: String,
        detail: String,
    },
    #[error("node {node} does not host shard {shard}")]
    ShardNotHosted { node: NodeId, shard: ShardId },
    #[error("node {node} could not decode the message: {detail}")]
    Malformed { node: NodeId, detail: String },
}

type Outgoing = (
    RaftMessage,
    oneshot::Sender<Result<RaftResult, TransportError>>,
);

struct Peer {
    addr: String,
    queue: mpsc::Sender<Outgoing>,
}

/// How well messages are being batched, over all peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub messages: u64,
    pub batches: u64,
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    batches: AtomicU64,
}

/// This node's connections to its peers, shared by all of its shard groups.
pub struct Transport {
    node_id: NodeId,
    options: TransportOptions,
    channels: Arc<PeerChannels>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    counters: Arc<Counters>,
    round_trips: RoundTrips,
    liveness: Arc<Liveness>,
    /// Peers with a probe under way.
    probing: Mutex<std::collections::HashSet<NodeId>>,
}

impl Transport {
    pub fn new(
        node_id: NodeId,
        options: TransportOptions,
        channels: Arc<PeerChannels>,
    ) -> Arc<Self> {
        Arc::new(Transport {
            node_id,
            liveness: Arc::new(Liveness::new(options.peer_dead_after)),
            options,
            channels,
            peers: Mutex::new(HashMap::new()),
            counters: Arc::default(),
            round_trips: RoundTrips::default(),
            probing: Mutex::default(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn stats(&self) -> TransportStats {
        TransportStats {
            messages: self.counters.messages.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }

    /// The smoothed round trip to each peer called lately (see [`crate::round_trip`]).
    pub fn round_trips(&self) -> Vec<PeerRoundTrip> {
        self.round_trips.current(Instant::now())
    }

    /// When each peer was last heard from: every answered call counts, and so does every
    /// batch a peer sends (the Raft service notes those).
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Sends each of `peers` that was not heard from within `within` an empty batch (a
    /// node-level heartbeat: its answer is news that the peer lives); returns at once.
    pub fn heartbeat_silent(
        self: &Arc<Self>,
        peers: impl IntoIterator<Item = (NodeId, ReplicaNode)>,
        within: Duration,
    ) {
        self.probe_each(peers, |transport, node, now| {
            transport.liveness.heard_within(node, within, now.into())
        });
    }

    /// Sends each of `peers` that no call measured within the last window an empty batch,
    /// whose answer measures the round trip (see [`crate::round_trip`]); returns at once.
    pub fn probe_unmeasured(
        self: &Arc<Self>,
        peers: impl IntoIterator<Item = (NodeId, ReplicaNode)>,
    ) {
        self.probe_each(peers, |transport, node, now| {
            transport.round_trips.measured_lately(node, now)
        });
    }

    /// Probes each peer of `peers` but this node, those `fresh` holds fresh enough and
    /// those with a probe still under way (a dead peer's would pile up).
    fn probe_each(
        self: &Arc<Self>,
        peers: impl IntoIterator<Item = (NodeId, ReplicaNode)>,
        fresh: impl Fn(&Transport, NodeId, Instant) -> bool,
    ) {
        let now = Instant::now();
        for (node, peer) in peers {
            if node == self.node_id || fresh(self, node, now) {
                continue;
            }
            if !self.probing.lock().expect("probing lock").insert(node) {
                continue;
            }
            let transport = self.clone();
            tokio::spawn(async move {
                transport.probe(node, &peer.addr, &peer.region).await;
                transport
                    .probing
                    .lock()
                    .expect("probing lock")
                    .remove(&node);
            });
        }
    }

    /// One empty batch to `node`, measured like every other call.
    async fn probe(&self, node: NodeId, addr: &str, region: &str) {
        let Ok(channel) = self.channels.channel(addr) else {
            return;
        };
        let mut client = RaftClient::new(channel);
        let empty = RaftBatch {
            from_node: self.node_id,
            messages: Vec::new(),
        };
        let timeout = self
            .options
            .request_timeout
            .min(self.options.peer_dead_after);
        let call = async {
            match tokio::time::timeout(timeout, client.send(empty)).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err(()),
            }
        };
        let _ = self.across(node, region, call).await;
    }

    /// Runs `call` to `node` (in `region`) after the injected one-way time to that region,
    /// answers after the same again, and measures the round trip of a call that succeeded.
    async fn across<T, E>(
        &self,
        node: NodeId,
        region: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let one_way = self.options.latency.one_way(&self.options.region, region);
        if !one_way.is_zero() {
            tokio::time::sleep(one_way).await;
        }
        let result = call.await;
        if !one_way.is_zero() {
            tokio::time::sleep(one_way).await;
        }
        if result.is_ok() {
            let now = Instant::now();
            self.round_trips
                .observe(node, region, now.duration_since(started), now);
            self.liveness.heard(node, now.into());
        }
        result
    }

    /// The network factory for one shard's group.
    pub fn shard_network(self: &Arc<Self>, shard: ShardId) -> ShardNetwork {
        ShardNetwork {
            shard,
            transport: self.clone(),
        }
    }

    fn queue_for(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Result<mpsc::Sender<Outgoing>, TransportError> {
        let mut peers = self.peers.lock().expect("peer map lock");
        if let Some(peer) = peers
            .get(&node)
            .filter(|p| p.addr == addr && !p.queue.is_closed())
        {
            return Ok(peer.queue.clone());
        }
        let channel = self
            .channels
            .channel(addr)
            .map_err(|e| TransportError::Unreachable {
                node,
                addr: addr.to_string(),
                detail: e.to_string(),
            })?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let (queue, outgoing) = mpsc::channel(self.options.queue_messages_max);
        tokio::spawn(send_batches(
            self.node_id,
            node,
            addr.to_string(),
            client,
            outgoing,
            self.options.clone(),
            self.counters.clone(),
        ));
        peers.insert(
            node,
            Peer {
                addr: addr.to_string(),
                queue: queue.clone(),
            },
        );
        Ok(queue)
    }

    /// Sends `message` to `node` at `addr` (in `region`) in the next batch and returns its
    /// result, each way after the injected one-way time to that region.
    pub async fn send(
        &self,
        node: NodeId,
        addr: &str,
        region: &str,
        message: RaftMessage,
    ) -> Result<RaftResult, TransportError> {
        self.across(node, region, self.send_now(node, addr, message))
            .await
    }

    async fn send_now(
        &self,
        node: NodeId,
        addr: &str,
        message: RaftMessage,
    ) -> Result<RaftResult, TransportError> {
        let queue = self.queue_for(node, addr)?;
        let (respond, result) = oneshot::channel();
        let gone = || TransportError::Unreachable {
            node,
            addr: addr.to_string(),
            detail: "the connection task stopped".into(),
        };
        queue.send((message, respond)).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

async fn send_batches(
    from_node: NodeId,
    node: NodeId,
    addr: String,
    client: RaftClient<Channel>,
    outgoing: mpsc::Receiver<Outgoing>,
    options: TransportOptions,
    counters: Arc<Counters>,
) {
    let limits = BatchLimits {
        items_max: options.batch_messages_max,
        weight_max: options.batch_bytes_max,
        in_flight_max: options.in_flight_max,
    };
    let weigh = |(message, _): &Outgoing| message_bytes(message);
    drain_in_batches(outgoing, limits, weigh, |waiting: Vec<Outgoing>| {
        let bytes: usize = waiting.iter().map(|(m, _)| message_bytes(m)).sum();
        let (messages, responders): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
        counters
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let carry_time = bytes as f64 / options.slow_link_bytes_per_sec.max(1) as f64;
        let deadline = options.request_timeout + Duration::from_secs_f64(carry_time);
        let call = send_batch(
            client.clone(),
            RaftBatch {
                from_node,
                messages,
            },
            deadline,
            node,
            addr.clone(),
            responders,
        );
        async move { Some(call) }
    })
    .await;
}

/// About how many bytes `message` takes on the wire.
fn message_bytes(message: &RaftMessage) -> usize {
    let body = match &message.body {
        Some(
            raft_message::Body::AppendEntries(bytes)
            | raft_message::Body::Vote(bytes)
            | raft_message::Body::InstallSnapshot(bytes),
        ) => bytes.len(),
        _ => 0,
    };
    body + 16
}

/// Sends one batch and gives each message's sender its own result.
async fn send_batch(
    mut client: RaftClient<Channel>,
    batch: RaftBatch,
    deadline: Duration,
    node: NodeId,
    addr: String,
    responders: Vec<oneshot::Sender<Result<RaftResult, TransportError>>>,
) {
    let sent = tokio::time::timeout(deadline, client.send(batch))
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {deadline:?}"
            )))
        });
    match sent {
        Ok(reply) if reply.get_ref().results.len() == responders.len() => {
            for (respond, result) in responders.into_iter().zip(reply.into_inner().results) {
                let _ = respond.send(Ok(result));
            }
        }
        Ok(reply) => {
            let detail = format!(
                "{} results for {} messages",
                reply.get_ref().results.len(),
                responders.len()
            );
            for respond in responders {
                let _ = respond.send(Err(TransportError::Malformed {
                    node,
                    detail: detail.clone(),
                }));
            }
        }
        Err(status) => {
            for respond in responders {
                let _ = respond.send(Err(TransportError::Unreachable {
                    node,
                    addr: addr.clone(),
                    detail: status.message().to_string(),
                }));
            }
        }
    }
}

/// openraft's network factory for one shard: every connection goes through the node's
/// shared [`Transport`].
#[derive(Clone)]
pub struct ShardNetwork {
    shard: ShardId,
    transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for ShardNetwork {
    type Network = ShardPeer;

    async fn new_client(&mut self, target: NodeId, node: &ReplicaNode) -> ShardPeer {
        ShardPeer {
            shard: self.shard,
            target,
            addr: node.addr.clone(),
            region: node.region.clone(),
            transport: self.transport.clone(),
            large: None,
        }
    }
}

impl Campaigner for ShardNetwork {
    async fn timeout_now(&self, target: NodeId, at: &ReplicaNode) -> Result<(), String> {
        let peer = ShardPeer {
            shard: self.shard,
            target,
            addr: at.addr.clone(),
            region: at.region.clone(),
            transport: self.transport.clone(),
            large: None,
        };
        let told: Result<(), RPCError<NodeId, ReplicaNode, RaftError<NodeId>>> = peer
            .call(raft_message::Body::TimeoutNow(TimeoutNow {}))
            .await;
        told.map_err(|e| e.to_string())
    }
}

/// One shard group's link to one peer.
pub struct ShardPeer {
    shard: ShardId,
    target: NodeId,
    addr: String,
    region: String,
    transport: Arc<Transport>,
    /// The large AppendEntries last sent on its own task.
    large: Option<LargeAppend>,
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ReplicaNode, RaftError<NodeId>>>;

/// A large AppendEntries under way on its own task.
struct LargeAppend {
    /// The leader's vote and the first and last log id the request covers.
    key: AppendKey,
    answer: watch::Receiver<Option<AppendResult>>,
}

type AppendKey = (Vote<NodeId>, Option<LogId<NodeId>>, Option<LogId<NodeId>>);

fn append_key(rpc: &AppendEntriesRequest<TypeConfig>) -> AppendKey {
    (
        rpc.vote,
        rpc.prev_log_id,
        rpc.entries.last().map(|e| e.log_id),
    )
}

fn clone_answer(answer: &AppendResult) -> AppendResult {
    match answer {
        Ok(response) => Ok(match response {
            AppendEntriesResponse::Success => AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(id) => AppendEntriesResponse::PartialSuccess(*id),
            AppendEntriesResponse::Conflict => AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote) => AppendEntriesResponse::HigherVote(*vote),
        }),
        Err(e) => Err(e.clone()),
    }
}

impl ShardPeer {
    fn link(&self) -> PeerLink {
        PeerLink {
            shard: self.shard,
            target: self.target,
            addr: self.addr.clone(),
            region: self.region.clone(),
            transport: self.transport.clone(),
        }
    }

    async fn call<Resp, E>(
        &self,
        body: raft_message::Body,
    ) -> Result<Resp, RPCError<NodeId, ReplicaNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.link().call(body).await
    }

    /// Sends a large `rpc` on its own task, or waits for the one sent for the same request
    /// before (see [`LARGE_APPEND_BYTES`]).
    async fn append_large(&mut self, rpc: AppendEntriesRequest<TypeConfig>) -> AppendResult {
        let key = append_key(&rpc);
        let reusable = self
            .large
            .as_ref()
            .filter(|large| large.key == key)
            .map(|large| large.answer.clone());
        let mut answer = match reusable {
            Some(answer) => {
                let heartbeat = AppendEntriesRequest::<TypeConfig> {
                    entries: Vec::new(),
                    ..rpc
                };
                let beat: AppendResult = self
                    .call(raft_message::Body::AppendEntries(encode(&heartbeat)))
                    .await;
                // A conflict or a newer vote answers the large request just as well.
                if let Ok(
                    response @ (AppendEntriesResponse::Conflict
                    | AppendEntriesResponse::HigherVote(_)),
                ) = beat
                {
                    self.large = None;
                    return Ok(response);
                }
                answer
            }
            None => {
                let (publish, answer) = watch::channel(None);
                let link = self.link();
                let body = raft_message::Body::AppendEntries(encode(&rpc));
                tokio::spawn(async move {
                    let result = link.call(body).await;
                    let _ = publish.send(Some(result));
                });
                self.large = Some(LargeAppend {
                    key,
                    answer: answer.clone(),
                });
                answer
            }
        };
        let result = match answer.wait_for(Option::is_some).await {
            Ok(result) => clone_answer(result.as_ref().expect("waited for it")),
            Err(_) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("the send task stopped"),
            ))),
        };
        // Answered: the next request, even the same one again, is sent anew.
        self.large = None;
        result
    }
}

/// What one call to a peer needs, apart from the [`ShardPeer`] state (so a call can run on
/// a task of its own).
struct PeerLink {
    shard: ShardId,
    target: NodeId,
    addr: String,
    region: String,
    transport: Arc<Transport>,
}

impl PeerLink {
    async fn call<Resp, E>(
        &self,
        body: raft_message::Body,
    ) -> Result<Resp, RPCError<NodeId, ReplicaNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let message = RaftMessage {
            shard_id: self.shard,
            body: Some(body),
        };
        let result = self
            .transport
            .send(self.target, &self.addr, &self.region, message)
            .await
            .map_err(|e| match e {
                TransportError::Malformed { .. } => RPCError::Network(NetworkError::new(&e)),
                _ => RPCError::Unreachable(Unreachable::new(&e)),
            })?;
        match result.outcome {
            Some(raft_result::Outcome::Response(bytes)) => {
                decode(&bytes).map_err(RPCError::Network)
            }
            Some(raft_result::Outcome::RaftError(bytes)) => {
                let error: RaftError<NodeId, E> = decode(&bytes).map_err(RPCError::Network)?;
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Some(raft_result::Outcome::ShardNotHosted(_)) => {
                let e = TransportError::ShardNotHosted {
                    node: self.target,
                    shard: self.shard,
                };
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Some(raft_result::Outcome::Malformed(detail)) => {
                let e = TransportError::Malformed {
                    node: self.target,
                    detail,
                };
                Err(RPCError::Network(NetworkError::new(&e)))
            }
            None => {
                let e = TransportError::Malformed {
                    node: self.target,
                    detail: "empty result".into(),
                };
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

/// Encodes an openraft message for the wire.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    hanse_storage::codec::encode(value)
}

/// Decodes an openraft message from the wire.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NetworkError> {
    postcard::from_bytes(bytes).map_err(|e| NetworkError::new(&AnyError::new(&e)))
}

/// Cuts `rpc`'s entries to about [`APPEND_BYTES_MAX`] bytes; returns the last entry
/// kept when some were cut.
fn trim_to_budget(rpc: &mut AppendEntriesRequest<TypeConfig>) -> Option<LogId<NodeId>> {
    let mut bytes = 0;
    let keep = rpc
        .entries
        .iter()
        .position(|entry| {
            bytes += entry_bytes(entry);
            bytes > APPEND_BYTES_MAX
        })
        .map(|first_over| first_over.max(1))?;
    if keep >= rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id)
}

/// About how many bytes an entry takes on the wire: its keys and values.
fn entry_bytes(entry: &Entry<TypeConfig>) -> usize {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal.approximate_bytes(),
        _ => 64,
    }
}

impl RaftNetwork<TypeConfig> for ShardPeer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ReplicaNode, RaftError<NodeId>>>
    {
        let trimmed = trim_to_budget(&mut rpc);
        let bytes: usize = rpc.entries.iter().map(entry_bytes).sum();
        let response = match bytes >= LARGE_APPEND_BYTES {
            true => self.append_large(rpc).await?,
            false => {
                self.call(raft_message::Body::AppendEntries(encode(&rpc)))
                    .await?
            }
        };
        Ok(match (response, trimmed) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (response, _) => response,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ReplicaNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        crate::metrics::METRICS
            .snapshot_sent_bytes
            .inc_by(rpc.data.len() as u64);
        self.call(raft_message::Body::InstallSnapshot(encode(&rpc)))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ReplicaNode, RaftError<NodeId>>> {
        self.call(raft_message::Body::Vote(encode(&rpc))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_shard::Epoch;
    use hanse_shard::{Mutation, Proposal, ShardRequest};
    use openraft::CommittedLeaderId;

    fn entry(index: u64, value_bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                requests: vec![ShardRequest::Write {
                    epoch: Epoch::default(),
                    mutations: vec![Mutation::Put {
                        key: b"k".to_vec(),
                        value: vec![0; value_bytes],
                    }],
                }],
            }),
        }
    }

    fn request(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[test]
    fn append_entries_carry_about_half_a_megabyte_but_always_one_entry() {
        let mut small = request((1..=10).map(|i| entry(i, 1000)).collect());
        assert_eq!(trim_to_budget(&mut small), None);
        assert_eq!(small.entries.len(), 10);

        let mut large = request((1..=10).map(|i| entry(i, 200 * 1024)).collect());
        let last = trim_to_budget(&mut large).expect("trimmed");
        assert_eq!(large.entries.len(), 2);
        assert_eq!(last.index, 2);

        let mut huge = request((1..=3).map(|i| entry(i, 4 << 20)).collect());
        assert_eq!(trim_to_budget(&mut huge).map(|l| l.index), Some(1));
        assert_eq!(huge.entries.len(), 1);
    }
}
