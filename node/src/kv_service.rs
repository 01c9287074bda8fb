//! The `hanse.v1.Kv` gRPC service of a cluster node. Requests are served by the leader of
//! the key's shard: writes through the shard's proposer, reads after
//! `ensure_linearizable`. Anywhere else the answer is `NotLeader` with the leader's
//! address, so the client retries there at once.

use std::sync::Arc;

use hanse_consensus::{Mutation, Rejection, ShardRequest, ShardResponse};
use hanse_proto::v1 as pb;
use hanse_proto::v1::kv_server::{Kv, KvServer};
use hanse_storage::{Cf, ScanOrder};
use tonic::{Request, Response, Status};

use crate::actors::{Propose, ReadBarrier, ReplicaError, ReplicaHandle};
use crate::db::intersect;
use crate::proto_convert::to_proto;
use crate::server::NodeState;

/// Messages up to this size are accepted: a 16 MiB value plus its key and framing.
const MESSAGE_BYTES_MAX: usize = 17 * 1024 * 1024;
/// Scans return at most this many pairs per call, whatever the client asks.
const SCAN_LIMIT_MAX: u32 = 10_000;
/// How long a client should wait when the group has no quorum at the moment.
const RETRY_AFTER_MS: u32 = 100;

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

fn busy() -> Refusal {
    refusal(pb::request_error::Kind::ServerBusy(pb::ServerBusy {
        retry_after_ms: RETRY_AFTER_MS,
    }))
}

/// The address of `node` as the group's membership records it.
pub(crate) fn member_addr(replica: &ReplicaHandle, node: Option<u64>) -> String {
    node.and_then(|id| {
        let metrics = replica.group.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    })
    .unwrap_or_default()
}

fn replica_refusal(replica: &ReplicaHandle, e: ReplicaError) -> Refusal {
    match e {
        ReplicaError::NotLeader { leader, .. } => {
            refusal(pb::request_error::Kind::NotLeader(pb::NotLeader {
                shard_id: replica.shard,
                leader_node: leader.unwrap_or(0),
                leader_addr: member_addr(replica, leader),
            }))
        }
        // Busy, restarting, or no quorum at the moment: all worth a retry shortly.
        ReplicaError::Busy { .. } | ReplicaError::Unavailable { .. } | ReplicaError::Group(_) => {
            busy()
        }
    }
}

fn rejected(rejection: Rejection) -> Refusal {
    match rejection {
        Rejection::EpochMismatch { current } => {
            refusal(pb::request_error::Kind::EpochMismatch(pb::EpochMismatch {
                current: vec![to_proto(&current)],
            }))
        }
        Rejection::KeyNotInShard { key, current } => {
            refusal(pb::request_error::Kind::KeyNotInShard(pb::KeyNotInShard {
                key,
                shard_id: current.id,
            }))
        }
        Rejection::Split(e) => invalid(e),
    }
}

impl KvService {
    pub(crate) fn new(state: Arc<NodeState>) -> Self {
        KvService { state }
    }

    pub(crate) fn into_server(self) -> KvServer<Self> {
        KvServer::new(self)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The hosted replica whose shard owns `key`.
    fn shard_of(&self, key: &[u8]) -> Result<ReplicaHandle, Refusal> {
        self.state.routes.lookup(key).ok_or_else(|| {
            refusal(pb::request_error::Kind::KeyNotInShard(pb::KeyNotInShard {
                key: key.to_vec(),
                shard_id: 0,
            }))
        })
    }

    /// Waits until this node may serve a linearizable read of `replica`'s shard.
    async fn read_barrier(&self, replica: &ReplicaHandle) -> Result<(), Refusal> {
        replica
            .ask(|reply| ReadBarrier { reply })
            .await
            .map_err(|e| replica_refusal(replica, e))
    }

    async fn propose(
        &self,
        replica: &ReplicaHandle,
        request: ShardRequest,
    ) -> Result<ShardResponse, Refusal> {
        match replica.ask(|reply| Propose { request, reply }).await {
            Ok(ShardResponse::Rejected(rejection)) => Err(rejected(rejection)),
            Ok(response) => Ok(response),
            Err(e) => Err(replica_refusal(replica, e)),
        }
    }

    async fn write(&self, mutations: Vec<Mutation>) -> Result<(), Refusal> {
        for m in &mutations {
            self.state.limits.check_mutation(m).map_err(invalid)?;
        }
        let Some(first) = mutations.first() else {
            return Ok(());
        };
        let replica = self.shard_of(first.key())?;
        let descriptor = replica.descriptor();
        if let Some(outside) = mutations.iter().find(|m| !descriptor.contains(m.key())) {
            return Err(invalid(format!(
                "a batch must stay within one shard; key {:?} is outside shard {}",
                String::from_utf8_lossy(outside.key()),
                descriptor.id
            )));
        }
        let request = ShardRequest::Write {
            epoch: descriptor.epoch,
            mutations,
        };
        self.propose(&replica, request).await.map(|_| ())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let key = request.into_inner().key;
        let result = async {
            self.state.limits.check_key(&key).map_err(invalid)?;
            let replica = self.shard_of(&key)?;
            self.read_barrier(&replica).await?;
            self.state.engine.get(Cf::Data, &key).map_err(|_| busy())
        }
        .await;
        Ok(Response::new(match result {
            Ok(value) => pb::GetResponse {
                error: None,
                found: value.is_some(),
                value: value.unwrap_or_default(),
            },
            Err(error) => pb::GetResponse {
                error: Some(error),
                ..Default::default()
            },
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let pb::PutRequest { key, value, .. } = request.into_inner();
        let error = self.write(vec![Mutation::Put { key, value }]).await.err();
        Ok(Response::new(pb::PutResponse { error }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let key = request.into_inner().key;
        let error = self.write(vec![Mutation::Delete { key }]).await.err();
        Ok(Response::new(pb::DeleteResponse { error }))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let mutations: Result<Vec<Mutation>, Refusal> = request
            .into_inner()
            .mutations
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
            Ok(mutations) => self.write(mutations).await.err(),
            Err(e) => Some(e),
        };
        Ok(Response::new(pb::BatchResponse { error }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let pb::CompareAndSwapRequest {
            key,
            expected_value,
            new_value,
            ..
        } = request.into_inner();
        let result = async {
            self.state.limits.check_key(&key).map_err(invalid)?;
            if let Some(value) = &new_value {
                self.state.limits.check_value(value).map_err(invalid)?;
            }
            let replica = self.shard_of(&key)?;
            let request = ShardRequest::CompareAndSwap {
                epoch: replica.descriptor().epoch,
                key,
                expected: expected_value,
                new: new_value,
            };
            match self.propose(&replica, request).await? {
                ShardResponse::CompareAndSwap { swapped, previous } => Ok((swapped, previous)),
                other => Err(invalid(format!("unexpected response {other:?}"))),
            }
        }
        .await;
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
        let pb::ScanRequest {
            start,
            end,
            limit,
            reverse,
            ..
        } = request.into_inner();
        let result = async {
            if !end.is_empty() && start > end {
                return Err(invalid("scan range starts after it ends"));
            }
            let limit = limit.min(SCAN_LIMIT_MAX) as usize;
            let mut parts: Vec<ReplicaHandle> = self
                .state
                .routes
                .all()
                .into_iter()
                .filter(|r| r.descriptor().overlaps(&start, &end))
                .collect();
            let order = if reverse {
                parts.reverse();
                ScanOrder::Reverse
            } else {
                ScanOrder::Forward
            };
            let mut pairs = Vec::new();
            for replica in parts {
                if pairs.len() >= limit {
                    break;
                }
                self.read_barrier(&replica).await?;
                let (lo, hi) = intersect(&replica.descriptor(), &start, &end);
                let rows = self
                    .state
                    .engine
                    .scan(Cf::Data, &lo, &hi, limit - pairs.len(), order)
                    .map_err(|_| busy())?;
                pairs.extend(
                    rows.into_iter()
                        .map(|(key, value)| pb::KeyValue { key, value }),
                );
            }
            Ok(pairs)
        }
        .await;
        Ok(Response::new(match result {
            Ok(pairs) => pb::ScanResponse { error: None, pairs },
            Err(error) => pb::ScanResponse {
                error: Some(error),
                pairs: Vec::new(),
            },
        }))
    }
}
