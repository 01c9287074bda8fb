//! The `hanse.v1.Kv` gRPC service of a cluster node. Requests are served by the leader of
//! the key's shard: writes through the shard's proposer, reads after a read barrier (at
//! once while the leader holds its lease, else after a heartbeat round to a quorum; see
//! `hanse_consensus::lease`). Anywhere else the answer is `NotLeader` with the leader's
//! address, so the client retries there at once. A request routed with an epoch older than
//! the shard's is answered `EpochMismatch` with every descriptor this node has covering
//! the request, checked here before proposing and again when the command is applied.

use crate::knobs::{
    KV_MESSAGE_BYTES_MAX, MAX_STALENESS_MS_MAX, RETRY_AFTER_MS, SCAN_LIMIT_MAX, SCAN_PAGE_BYTES_MAX,
};
use hanse_security::Caller;
use hanse_security::grants::{Access, Denied};
use hanse_storage::Store;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::dev::SendError;
use hanse_proto::v1 as pb;
use hanse_proto::v1::kv_server::{Kv, KvServer};
use hanse_shard::apply;
use hanse_shard::range::{SYSTEM_KEYSPACE_START, intersect, is_system_key, single_key};
use hanse_shard::{Epoch, ShardDescriptor};
use hanse_shard::{
    KeyValue, Mutation, Rejection, ShardRequest, ShardResponse, StaleRoute, admit_route,
};
use hanse_storage::codec;
use hanse_storage::{Cf, ScanOrder};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::actors::{Ingest, ReplicaError, ReplicaHandle};
use crate::follower;
use crate::metrics::{METRICS, RequestMetrics};
use crate::requests::{KvRequests, origin};
use crate::state::NodeState;
use hanse_proto::convert::to_proto;
use tracing::Instrument;

pub(crate) struct KvService {
    state: Arc<NodeState>,
}

type Refusal = pb::RequestError;

fn refusal(kind: pb::request_error::Kind) -> Refusal {
    pb::RequestError { kind: Some(kind) }
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    refusal(pb::request_error::Kind::InvalidArgument(
        pb::InvalidArgument {
            message: e.to_string(),
        },
    ))
}

/// `ServerBusy`, counted under `reason` (see [`crate::metrics::Metrics::busy_refusals`]).
fn busy(reason: &'static str) -> Refusal {
    METRICS.busy_refusals.with_label_values(&[reason]).inc();
    refusal(pb::request_error::Kind::ServerBusy(pb::ServerBusy {
        retry_after_ms: RETRY_AFTER_MS,
    }))
}

fn replica_refusal(replica: &ReplicaHandle, e: ReplicaError) -> Refusal {
    match e {
        ReplicaError::NotLeader { leader, .. } => {
            refusal(pb::request_error::Kind::NotLeader(pb::NotLeader {
                shard_id: replica.shard,
                leader_node: leader.unwrap_or(0),
                leader_addr: replica.member_addr(leader),
                descriptor: Some(Box::new(to_proto(&replica.descriptor()))),
            }))
        }
        // Busy, restarting, or no quorum at the moment: all worth a retry shortly.
        ReplicaError::Busy { .. } => busy("replica_busy"),
        ReplicaError::Unavailable { .. } | ReplicaError::Group(_) => busy("unavailable"),
        ReplicaError::OutcomeUnknown(message) => refusal(pb::request_error::Kind::OutcomeUnknown(
            pb::OutcomeUnknown { message },
        )),
    }
}

/// `NotLeader` for `replica`'s shard, pointing at its leader as this node knows it.
fn not_leader(replica: &ReplicaHandle) -> Refusal {
    let leader = replica.leader();
    replica_refusal(
        replica,
        ReplicaError::NotLeader {
            shard: replica.shard,
            leader,
        },
    )
}

/// Counts a client write `request` from `origin` in `replica`'s load.
fn count_write(replica: &ReplicaHandle, request: &ShardRequest, origin: &str) {
    let load = &replica.load;
    match request {
        ShardRequest::Write { mutations, .. } => {
            let Some(first) = mutations.first() else {
                return;
            };
            load.touched(first.key(), origin);
            for mutation in mutations {
                match mutation {
                    Mutation::Put { key, value } => {
                        let bytes = (key.len() + value.len()) as u64;
                        load.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Mutation::Delete { .. } => {
                        load.deletes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let count = mutations.len() as u64;
            load.writes.fetch_add(count, Ordering::Relaxed);
        }
        ShardRequest::CompareAndSwap { key, .. } => {
            load.touched(key, origin);
            load.writes.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// How many mutations a write carries.
fn counted_mutations(request: &ShardRequest) -> usize {
    match request {
        ShardRequest::Write { mutations, .. } => mutations.len(),
        _ => 1,
    }
}

fn epoch_of(route: &pb::RouteContext) -> Epoch {
    let epoch = route.epoch.unwrap_or_default();
    Epoch {
        version: epoch.version,
        conf_ver: epoch.conf_ver,
    }
}

impl KvService {
    pub(crate) fn new(state: Arc<NodeState>) -> Self {
        KvService { state }
    }

    /// The gRPC service, behind the layer every Kv request passes first.
    pub(crate) fn into_server(self) -> KvRequests<KvServer<Self>> {
        let state = self.state.clone();
        let server = KvServer::new(self)
            .max_decoding_message_size(KV_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(KV_MESSAGE_BYTES_MAX);
        KvRequests::new(server, state)
    }

    /// `EpochMismatch` with every hosted shard overlapping `[start, end)`.
    fn epoch_mismatch(&self, (start, end): (Vec<u8>, Vec<u8>)) -> Refusal {
        let current = self
            .state
            .routes
            .overlapping(&start, &end)
            .iter()
            .map(to_proto)
            .collect();
        refusal(pb::request_error::Kind::EpochMismatch(pb::EpochMismatch {
            current,
        }))
    }

    /// The refusal for a command the state machine rejected.
    fn rejected(&self, rejection: Rejection, key: &[u8]) -> Refusal {
        match rejection {
            Rejection::EpochMismatch { .. } | Rejection::KeyNotInShard { .. } => {
                self.epoch_mismatch(single_key(key))
            }
            // Frozen for a merge: the range moves to the left neighbour in a moment.
            Rejection::Frozen { .. } => busy("merging"),
            Rejection::Split(e) => invalid(e),
            Rejection::Merge(e) => invalid(e),
            Rejection::NotMetaShard { .. } | Rejection::IngestOrder { .. } => invalid(rejection),
        }
    }

    /// The hosted replica that serves `key`, and the epoch to propose with: the client's
    /// when it routed the request itself (refused at once when stale), else the current.
    /// Whether the request's caller may `access` each of `keys`; a refusal is
    /// `PERMISSION_DENIED` naming the key and the grant missing.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        access: Access,
        keys: &[&[u8]],
    ) -> Result<(), Status> {
        keys.iter().try_for_each(|key| {
            let after = [key, &[0u8][..]].concat();
            self.authorize_range(request, access, key, &after)
        })
    }

    /// Whether the request's caller may `access` every key in `[start, end)`.
    fn authorize_range<T>(
        &self,
        request: &Request<T>,
        access: Access,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), Status> {
        let caller = Caller::of(request);
        if caller.is_node() {
            return Ok(());
        }
        let grants = self.state.grants.get();
        grants
            .check_keys(&caller, access, start, end)
            .map_err(|denied| self.denied(denied))
    }

    /// A refusal as the caller hears it (without the key where keys are redacted).
    fn denied(&self, denied: Denied) -> Status {
        let denied = match self.state.redact {
            true => denied.redacted(),
            false => denied,
        };
        Status::permission_denied(denied.to_string())
    }

    fn route(
        &self,
        key: &[u8],
        route: Option<&pb::RouteContext>,
    ) -> Result<(ReplicaHandle, Epoch), Refusal> {
        let Some(replica) = self.state.routes.lookup(key) else {
            return Err(refusal(pb::request_error::Kind::KeyNotInShard(
                pb::KeyNotInShard {
                    key: key.to_vec(),
                    shard_id: route.map_or(0, |r| r.shard_id),
                },
            )));
        };
        let routed = route
            .filter(|r| r.shard_id != 0)
            .map(|r| (r.shard_id, epoch_of(r)));
        match admit_route(&replica.descriptor(), routed) {
            Ok(epoch) => Ok((replica, epoch)),
            Err(StaleRoute) => Err(self.epoch_mismatch(single_key(key))),
        }
    }

    /// Waits until this node may serve a linearizable read of `replica`'s shard; answers
    /// the read index.
    async fn read_barrier(&self, replica: &ReplicaHandle) -> Result<u64, Refusal> {
        replica
            .read_barrier()
            .await
            .map_err(|e| replica_refusal(replica, e))
    }

    /// Proposes `request` to `replica`'s shard: through the ingest actor where this node
    /// has one (it batches, and forwards batches for shards led elsewhere), else straight
    /// to the replica.
    async fn propose(
        &self,
        replica: &ReplicaHandle,
        request: ShardRequest,
        key: &[u8],
    ) -> Result<ShardResponse, Refusal> {
        let answer = match &self.state.ingest {
            Some(ingest) => {
                let (reply, answer) = oneshot::channel();
                let shard = replica.shard;
                let unavailable = || ReplicaError::Unavailable {
                    shard,
                    detail: "the ingest actor has stopped".into(),
                };
                let ingest_it = Ingest {
                    replica: replica.clone(),
                    request,
                    reply,
                };
                match ingest.try_send(ingest_it) {
                    Ok(()) => answer.await.unwrap_or_else(|_| Err(unavailable())),
                    Err(SendError::Full(_)) => Err(ReplicaError::Busy { shard }),
                    Err(SendError::Closed(_)) => Err(unavailable()),
                }
            }
            _ => replica.propose(request).await,
        };
        match answer {
            Ok(ShardResponse::Rejected(rejection)) => Err(self.rejected(rejection, key)),
            Ok(response) => Ok(response),
            Err(e) => Err(replica_refusal(replica, e)),
        }
    }

    async fn write(
        &self,
        mutations: Vec<Mutation>,
        route: Option<pb::RouteContext>,
        origin: &str,
    ) -> Result<(), Refusal> {
        for m in &mutations {
            self.state.limits.check_mutation(m).map_err(invalid)?;
        }
        let Some(first) = mutations.first() else {
            return Ok(());
        };
        let first_key = first.key().to_vec();
        let (replica, epoch) = self.route(&first_key, route.as_ref())?;
        let descriptor = replica.descriptor();
        if let Some(outside) = mutations.iter().find(|m| !descriptor.contains(m.key())) {
            let key = match self.state.redact {
                true => "a key".to_string(),
                false => format!("key {:?}", String::from_utf8_lossy(outside.key())),
            };
            return Err(invalid(format!(
                "a batch must stay within one shard; {key} is outside shard {}",
                descriptor.id
            )));
        }
        let request = ShardRequest::Write { epoch, mutations };
        #[cfg(feature = "failpoints")]
        if self.state.ack_before_commit {
            let replica = replica.clone();
            tokio::spawn(async move { replica.propose(request).await });
            return Ok(());
        }
        let counted = request.clone();
        let (shard, count) = (descriptor.id, counted_mutations(&counted));
        match self.state.redact {
            true => tracing::debug!(shard, mutations = count, "proposing"),
            false => {
                let key = String::from_utf8_lossy(&first_key);
                tracing::debug!(shard, mutations = count, %key, "proposing");
            }
        }
        self.propose(&replica, request, &first_key).await?;
        tracing::debug!(shard, "committed and applied");
        count_write(&replica, &counted, origin);
        Ok(())
    }

    /// Proposes the pairs that lie in the shard of the first as one ingest, here at the
    /// shard's leader, and answers how many that was and the shard. Not through the ingest
    /// actor: an ingest is a log entry of its own anyway.
    async fn ingest_pairs(
        &self,
        mut pairs: Vec<KeyValue>,
        route: Option<pb::RouteContext>,
        origin: &str,
    ) -> Result<(u32, Option<ShardDescriptor>), Refusal> {
        let limits = &self.state.limits;
        for pair in &pairs {
            limits.check_key(&pair.key).map_err(invalid)?;
            limits.check_value(&pair.value).map_err(invalid)?;
        }
        if let Some(at) = apply::first_unordered(&pairs) {
            return Err(invalid(Rejection::IngestOrder { at }));
        }
        let Some(first) = pairs.first() else {
            return Ok((0, None));
        };
        let first_key = first.key.clone();
        let (replica, epoch) = self.route(&first_key, route.as_ref())?;
        let descriptor = replica.descriptor();
        // The keys ascend from one inside the shard: those inside come first.
        let inside = pairs.partition_point(|pair| descriptor.contains(&pair.key));
        pairs.truncate(inside);
        let taken = u32::try_from(inside).map_err(invalid)?;
        let bytes: u64 = pairs
            .iter()
            .map(|pair| (pair.key.len() + pair.value.len()) as u64)
            .sum();
        let load = &replica.load;
        let size = load.size_bytes.load(Ordering::Relaxed);
        if size.saturating_add(load.bytes_written.load(Ordering::Relaxed))
            > self.state.split_size_bytes
        {
            // Split by size within a few seconds; the client retries, then re-routes.
            return Err(busy("shard_full"));
        }
        let count = pairs.len() as u64;
        let request = ShardRequest::Ingest { epoch, pairs };
        let answer = replica.propose(request).await;
        match answer {
            Ok(ShardResponse::Rejected(rejection)) => Err(self.rejected(rejection, &first_key)),
            Ok(_) => {
                load.touched(&first_key, origin);
                load.writes.fetch_add(count, Ordering::Relaxed);
                load.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                Ok((taken, Some(descriptor)))
            }
            Err(e) => Err(replica_refusal(&replica, e)),
        }
    }

    /// The shard a scan of `[start, end)` is served by: the one holding `start`, or for a
    /// reverse scan the one holding the keys just before `end`.
    fn scan_shard(&self, start: &[u8], end: &[u8], reverse: bool) -> Option<ReplicaHandle> {
        if !reverse {
            return self.state.routes.lookup(start);
        }
        self.state
            .routes
            .all()
            .into_iter()
            .filter(|r| {
                let d = r.descriptor();
                d.overlaps(start, end) && (end.is_empty() || d.start.as_slice() < end)
            })
            .max_by(|a, b| a.descriptor().start.cmp(&b.descriptor().start))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request_metrics = RequestMetrics::start("get", request.metadata());
        self.authorize(&request, Access::Read, &[&request.get_ref().key])
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::GetRequest {
            route,
            key,
            max_staleness_ms,
        } = request.into_inner();
        let result = async {
            self.state.limits.check_key(&key).map_err(invalid)?;
            if max_staleness_ms > MAX_STALENESS_MS_MAX {
                return Err(invalid(format!(
                    "max_staleness_ms is {max_staleness_ms}, over the limit of \
                     {MAX_STALENESS_MS_MAX} ms"
                )));
            }
            let (replica, _) = self.route(&key, route.as_ref())?;
            let max_staleness = Duration::from_millis(max_staleness_ms.into());
            let asked = match max_staleness.is_zero() || replica.leads() {
                true => {
                    self.read_barrier(&replica).await?;
                    None
                }
                // Whatever keeps the follower from the bound, the leader serves instead.
                false => Some(
                    follower::barrier(&self.state, &replica, max_staleness, max_staleness)
                        .await
                        .map_err(|_| not_leader(&replica))?,
                ),
            };
            // A split applied while the barrier waited may have moved the key to a shard
            // led elsewhere, whose writes this replica does not see.
            if !replica.descriptor().contains(&key) {
                return Err(self.epoch_mismatch(single_key(&key)));
            }
            replica.load.reads.fetch_add(1, Ordering::Relaxed);
            replica.load.touched(&key, &origin);
            let value = self
                .state
                .engine
                .get(Cf::Data, &key)
                .map_err(|_| busy("storage"))?;
            // Rounded up, and never 0 (which says linearizable) for a follower's read.
            let staleness_ms = asked.map_or(0, |asked| {
                let micros = asked.elapsed().as_micros().div_ceil(1000).max(1);
                u32::try_from(micros).unwrap_or(u32::MAX)
            });
            if staleness_ms > max_staleness_ms {
                return Err(not_leader(&replica));
            }
            if asked.is_some() {
                METRICS.follower_reads.inc();
                let staleness = f64::from(staleness_ms) / 1000.0;
                METRICS.follower_read_staleness.observe(staleness);
            }
            Ok((value, staleness_ms))
        }
        .instrument(request_metrics.span.clone())
        .await;
        request_metrics.answered(result.as_ref().err());
        Ok(Response::new(match result {
            Ok((value, staleness_bound_ms)) => pb::GetResponse {
                error: None,
                found: value.is_some(),
                value: value.unwrap_or_default(),
                served_by_node: self.state.node_id,
                staleness_bound_ms,
            },
            Err(error) => pb::GetResponse {
                error: Some(error),
                ..Default::default()
            },
        }))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let request_metrics = RequestMetrics::start("read_index", request.metadata());
        let shard_id = request.get_ref().shard_id;
        let answer = match self.state.routes.get(shard_id) {
            Some(replica) => self.read_barrier(&replica).await,
            None => Err(refusal(pb::request_error::Kind::ShardNotFound(
                pb::ShardNotFound { shard_id },
            ))),
        };
        request_metrics.answered(answer.as_ref().err());
        Ok(Response::new(match answer {
            Ok(index) => pb::ReadIndexResponse { error: None, index },
            Err(error) => pb::ReadIndexResponse {
                error: Some(error),
                index: 0,
            },
        }))
    }

    async fn propose_batch(
        &self,
        request: Request<pb::ProposeBatchRequest>,
    ) -> Result<Response<pb::ProposeBatchResponse>, Status> {
        let request_metrics = RequestMetrics::start("propose_batch", request.metadata());
        let origin = origin(&request);
        let pb::ProposeBatchRequest { shard_id, commands } = request.into_inner();
        let answer = async {
            let replica = self.state.routes.get(shard_id).ok_or_else(|| {
                refusal(pb::request_error::Kind::ShardNotFound(pb::ShardNotFound {
                    shard_id,
                }))
            })?;
            let mut requests = Vec::with_capacity(commands.len());
            for command in &commands {
                let request: ShardRequest =
                    codec::decode("a forwarded write", command).map_err(invalid)?;
                if !matches!(
                    request,
                    ShardRequest::Write { .. } | ShardRequest::CompareAndSwap { .. }
                ) {
                    return Err(invalid("only client writes may be forwarded"));
                }
                requests.push(request);
            }
            let counted: Vec<ShardRequest> = requests.clone();
            let answers = replica
                .propose_together(requests)
                .await
                .map_err(|e| replica_refusal(&replica, e))?;
            let mut responses = Vec::with_capacity(answers.len());
            for answer in answers {
                // One entry: its answers fail or succeed together.
                responses.push(codec::encode(
                    &answer.map_err(|e| replica_refusal(&replica, e))?,
                ));
            }
            for request in &counted {
                count_write(&replica, request, &origin);
            }
            Ok(responses)
        }
        .instrument(request_metrics.span.clone())
        .await;
        request_metrics.answered(answer.as_ref().err());
        Ok(Response::new(match answer {
            Ok(responses) => pb::ProposeBatchResponse {
                error: None,
                responses,
            },
            Err(error) => pb::ProposeBatchResponse {
                error: Some(error),
                responses: Vec::new(),
            },
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request_metrics = RequestMetrics::start("put", request.metadata());
        self.authorize(&request, Access::Write, &[&request.get_ref().key])
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::PutRequest { route, key, value } = request.into_inner();
        let error = self
            .write(vec![Mutation::Put { key, value }], route, &origin)
            .instrument(request_metrics.span.clone())
            .await
            .err();
        request_metrics.answered(error.as_ref());
        Ok(Response::new(pb::PutResponse { error }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request_metrics = RequestMetrics::start("delete", request.metadata());
        self.authorize(&request, Access::Write, &[&request.get_ref().key])
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::DeleteRequest { route, key } = request.into_inner();
        let error = self
            .write(vec![Mutation::Delete { key }], route, &origin)
            .instrument(request_metrics.span.clone())
            .await
            .err();
        request_metrics.answered(error.as_ref());
        Ok(Response::new(pb::DeleteResponse { error }))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let request_metrics = RequestMetrics::start("batch", request.metadata());
        let keys: Vec<&[u8]> = request
            .get_ref()
            .mutations
            .iter()
            .filter_map(|m| match &m.op {
                Some(pb::mutation::Op::Put(kv)) => Some(kv.key.as_slice()),
                Some(pb::mutation::Op::Delete(key)) => Some(key.as_slice()),
                None => None,
            })
            .collect();
        self.authorize(&request, Access::Write, &keys)
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::BatchRequest { route, mutations } = request.into_inner();
        let mutations: Result<Vec<Mutation>, Refusal> = mutations
            .into_iter()
            .map(|m| match m.op {
                Some(pb::mutation::Op::Put(kv)) => Ok(Mutation::Put {
                    key: kv.key,
                    value: kv.value,
                }),
                Some(pb::mutation::Op::Delete(key)) => Ok(Mutation::Delete { key }),
                None => Err(invalid("a mutation without an operation")),
            })
            .collect();
        let error = match mutations {
            Ok(mutations) => {
                let writing = self.write(mutations, route, &origin);
                writing.instrument(request_metrics.span.clone()).await.err()
            }
            Err(e) => Some(e),
        };
        request_metrics.answered(error.as_ref());
        Ok(Response::new(pb::BatchResponse { error }))
    }

    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let request_metrics = RequestMetrics::start("ingest", request.metadata());
        let pairs = &request.get_ref().pairs;
        if let (Some(first), Some(last)) = (pairs.first(), pairs.last()) {
            // The keys ascend (checked below), so the range from the first to the last
            // holds them all; an unordered request is refused whatever it may touch.
            let after_last = [&last.key[..], &[0u8][..]].concat();
            if first.key < after_last {
                self.authorize_range(&request, Access::Write, &first.key, &after_last)
                    .inspect_err(|_| request_metrics.set("permission_denied"))?;
            }
        }
        let origin = origin(&request);
        let pb::IngestRequest { route, pairs } = request.into_inner();
        let pairs = pairs
            .into_iter()
            .map(|pair| KeyValue {
                key: pair.key,
                value: pair.value,
            })
            .collect();
        let answer = self
            .ingest_pairs(pairs, route, &origin)
            .instrument(request_metrics.span.clone())
            .await;
        request_metrics.answered(answer.as_ref().err());
        Ok(Response::new(match answer {
            Ok((taken, shard)) => pb::IngestResponse {
                error: None,
                taken,
                shard: shard.as_ref().map(to_proto),
            },
            Err(error) => pb::IngestResponse {
                error: Some(error),
                ..Default::default()
            },
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let request_metrics = RequestMetrics::start("compare_and_swap", request.metadata());
        self.authorize(&request, Access::Write, &[&request.get_ref().key])
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::CompareAndSwapRequest {
            route,
            key,
            expected_value,
            new_value,
        } = request.into_inner();
        let result = async {
            self.state.limits.check_key(&key).map_err(invalid)?;
            if let Some(value) = &new_value {
                self.state.limits.check_value(value).map_err(invalid)?;
            }
            let (replica, epoch) = self.route(&key, route.as_ref())?;
            let request = ShardRequest::CompareAndSwap {
                epoch,
                key: key.clone(),
                expected: expected_value,
                new: new_value,
            };
            let counted = request.clone();
            let response = self.propose(&replica, request, &key).await?;
            count_write(&replica, &counted, &origin);
            match response {
                ShardResponse::CompareAndSwap { swapped, previous } => Ok((swapped, previous)),
                other => Err(invalid(format!("unexpected response {other:?}"))),
            }
        }
        .instrument(request_metrics.span.clone())
        .await;
        request_metrics.answered(result.as_ref().err());
        Ok(Response::new(match result {
            Ok((swapped, previous_value)) => pb::CompareAndSwapResponse {
                error: None,
                swapped,
                previous_value,
            },
            Err(error) => pb::CompareAndSwapResponse {
                error: Some(error),
                ..Default::default()
            },
        }))
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let request_metrics = RequestMetrics::start("scan", request.metadata());
        // The whole range asked for, or nothing: a scan is refused, not clipped, so a
        // caller never takes a partial answer for all there is.
        let pb::ScanRequest { start, end, .. } = request.get_ref();
        let grants = self.state.grants.get();
        grants
            .check_keys(&Caller::of(&request), Access::Read, start, end)
            .map_err(|denied| self.denied(denied))
            .inspect_err(|_| request_metrics.set("permission_denied"))?;
        let origin = origin(&request);
        let pb::ScanRequest {
            route,
            start,
            end,
            limit,
            reverse,
        } = request.into_inner();
        let result = async {
            if !end.is_empty() && start > end {
                return Err(invalid("scan range starts after it ends"));
            }
            // Scans see user keys only: the system keyspace is the meta shard's.
            let end = if end.is_empty() || is_system_key(&end) {
                SYSTEM_KEYSPACE_START.to_vec()
            } else {
                end
            };
            if start >= end {
                return Ok((Vec::new(), None, Vec::new()));
            }
            let limit = limit.min(SCAN_LIMIT_MAX) as usize;
            let Some(replica) = self.scan_shard(&start, &end, reverse) else {
                return Err(refusal(pb::request_error::Kind::KeyNotInShard(
                    pb::KeyNotInShard {
                        key: if reverse { end.clone() } else { start.clone() },
                        shard_id: 0,
                    },
                )));
            };
            let descriptor = replica.descriptor();
            let routed = route
                .as_ref()
                .filter(|r| r.shard_id != 0)
                .map(|r| (r.shard_id, epoch_of(r)));
            if admit_route(&descriptor, routed).is_err() {
                return Err(self.epoch_mismatch((start.clone(), end.clone())));
            }
            self.read_barrier(&replica).await?;
            // The range as applied after the barrier: a split applied meanwhile hands
            // part of it to a shard whose writes this replica no longer sees.
            let applied = replica.descriptor();
            if (&applied.start, &applied.end) != (&descriptor.start, &descriptor.end) {
                return Err(self.epoch_mismatch((start.clone(), end.clone())));
            }
            replica.load.reads.fetch_add(1, Ordering::Relaxed);
            replica.load.touched(&start, &origin);
            let (lo, hi) = intersect(&descriptor, &start, &end);
            let order = if reverse {
                ScanOrder::Reverse
            } else {
                ScanOrder::Forward
            };
            let page = self
                .state
                .engine
                .scan_page(Cf::Data, &lo, &hi, limit, SCAN_PAGE_BYTES_MAX, order)
                .map_err(|_| busy("storage"))?;
            // Cut short by its byte bound: the client goes on after the last key.
            let resume_key = match (page.cut, page.entries.last()) {
                (true, Some((last, _))) if reverse => last.clone(),
                (true, Some((last, _))) => [last.as_slice(), &[0]].concat(),
                _ => Vec::new(),
            };
            let pairs = page
                .entries
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect();
            Ok((pairs, Some(to_proto(&descriptor)), resume_key))
        }
        .instrument(request_metrics.span.clone())
        .await;
        request_metrics.answered(result.as_ref().err());
        Ok(Response::new(match result {
            Ok((pairs, scanned, resume_key)) => pb::ScanResponse {
                error: None,
                pairs,
                scanned,
                resume_key,
            },
            Err(error) => pb::ScanResponse {
                error: Some(error),
                ..Default::default()
            },
        }))
    }
}
