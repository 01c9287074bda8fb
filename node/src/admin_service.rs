//! The `hanse.v1.Admin` gRPC service: what this node knows about itself and its shards,
//! and membership changes. A change for a shard this node does not lead is forwarded
//! once to the leader it knows of.

use crate::knobs::{
    BACKUP_CATCH_UP_TIMEOUT, BACKUP_CHUNK_BYTES, CATCH_UP_TIMEOUT, LEADER_TIMEOUT, WAIT_APPLIED_MAX,
};
use crate::round_trips;
use std::sync::Arc;
use std::time::Duration;

use hanse_consensus::{AddedBy, ReplicaNode};
use hanse_planner::decide::Mode;
use hanse_planner::live::Report;
use hanse_proto::v1 as pb;
use hanse_proto::v1::admin_server::{Admin, AdminServer};
use hanse_shard::{NodeId, ReplicaRole, ShardId};
use hanse_storage::Store;
use openraft::{CommittedLeaderId, LogId, ServerState};
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use hanse_consensus::PlaceholderError;
use hanse_shard::meta::META_SHARD;
use hanse_shard::{ShardRequest, ShardResponse};

use crate::activity::HEAT_COLUMN_INTERVAL;
use crate::actors::{
    ChangeReplicas, DestroyReplica, NodeActorError, OpenReplica, ReplicaChange, ReplicaError,
    ReplicaHandle, TransferLeader,
};
use crate::coordination::{NodeRuntime, wait_applied};
use crate::follower;
use crate::grants;
use crate::knobs::{
    BACKUP_READER_STALL, BACKUPS_IN_FLIGHT_MAX, DRAIN_ROUND_PAUSE, DRAIN_TIMEOUT_DEFAULT,
    DRAIN_TIMEOUT_MAX, REPORT_CLOCK_SKEW_MAX_MS,
};
use crate::peers::unreachable;
use crate::reporter::{now_ms, read_routing_table};
use crate::state::NodeState;
use hanse_proto::convert::{
    from_proto, load_to_proto, node_from_proto, node_to_proto, report_from_proto, to_proto,
};
use hanse_security::Caller;

/// Marks a request one node forwarded to a shard's leader; it is not forwarded again.
const FORWARDED: &str = "hanse-forwarded";

#[derive(Clone)]
pub(crate) struct AdminService {
    state: Arc<NodeState>,
}

/// Who leads a shard, as this node sees it.
enum Leadership {
    Here(ReplicaHandle),
    Elsewhere { node: NodeId, addr: String },
}

fn replica_status(e: ReplicaError) -> Status {
    let code = match &e {
        ReplicaError::NotLeader { .. } => Code::FailedPrecondition,
        ReplicaError::Busy { .. } | ReplicaError::Unavailable { .. } => Code::Unavailable,
        ReplicaError::Group(group) => match **group {
            hanse_consensus::GroupError::NotLeader { .. }
            | hanse_consensus::GroupError::Membership { .. }
            | hanse_consensus::GroupError::Transfer { .. } => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        ReplicaError::OutcomeUnknown(_) => Code::Unknown,
    };
    Status::new(code, e.to_string())
}

fn node_status(e: NodeActorError) -> Status {
    match e {
        NodeActorError::Refused { .. } => Status::failed_precondition(e.to_string()),
        NodeActorError::Placeholder(PlaceholderError::Overlaps { .. }) => {
            Status::unavailable(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// Membership changes wait until a merge involving the shard is over: a merge needs the
/// replica sets it checked to stay as they are.
fn refuse_while_merging(replica: &ReplicaHandle) -> Result<(), Status> {
    match replica.descriptor().merging {
        Some(m) => Err(Status::failed_precondition(format!(
            "shard {} is frozen for a merge into shard {}; retry after it",
            replica.shard, m.into
        ))),
        None => Ok(()),
    }
}

fn stopped() -> Status {
    Status::unavailable("the node is shutting down")
}

fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, "1".parse().expect("ascii header"));
    request
}

impl AdminService {
    pub(crate) fn new(state: Arc<NodeState>) -> Self {
        AdminService { state }
    }

    pub(crate) fn into_server(self) -> AdminServer<Self> {
        AdminServer::new(self)
    }

    /// This node's runtime for split and merge coordinators.
    fn runtime(&self) -> NodeRuntime {
        NodeRuntime {
            node_id: self.state.node_id,
            engine: self.state.engine.clone(),
            routes: self.state.routes.clone(),
            peers: self.state.peers.clone(),
            round_trips: self.state.round_trips.clone(),
        }
    }

    /// The cluster's shards from the meta shard's routing table (read on its leader, this
    /// node), with each leader's address and region from the node directory.
    async fn routing_table(&self, meta: &ReplicaHandle) -> Result<Vec<pb::ShardStatus>, Status> {
        let (shards, nodes) = read_routing_table(&self.state.engine, meta).await?;
        Ok(shard_table(shards, &nodes))
    }

    fn shard_statuses(&self) -> Vec<pb::ShardStatus> {
        self.state
            .routes
            .all()
            .into_iter()
            .map(|replica| {
                let metrics = replica.group.raft.metrics().borrow().clone();
                let role = match metrics.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "shutdown",
                };
                pb::ShardStatus {
                    descriptor: Some(to_proto(&replica.descriptor())),
                    leader_node: metrics.current_leader.unwrap_or(0),
                    leader_addr: replica.member_addr(metrics.current_leader),
                    role: role.to_string(),
                    applied_index: metrics.last_applied.map_or(0, |id| id.index),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// The shards a change names, or every hosted shard when it names none.
    fn target_shards(&self, shard_ids: &[ShardId]) -> Result<Vec<ShardId>, Status> {
        if shard_ids.is_empty() {
            return Ok(self.state.routes.all().iter().map(|r| r.shard).collect());
        }
        for &shard in shard_ids {
            if self.state.routes.get(shard).is_none() {
                return Err(Status::not_found(format!(
                    "node {} holds no replica of shard {shard}; ask a node that does",
                    self.state.node_id
                )));
            }
        }
        Ok(shard_ids.to_vec())
    }

    /// Where the change for `shard` must run. A shard without a known leader (an election
    /// under way, or a new shard this node has not heard from yet) gets a moment to find
    /// one. A request that was forwarded here already is not forwarded again: leadership
    /// moved meanwhile, and the caller retries.
    /// Refuses to destroy this node's replica of `shard` unless the group no longer
    /// counts it: a replica still in the group may be one its quorum needs, and
    /// destroying two followers of three loses the shard. The other members say what the
    /// group is (the newest descriptor among their answers; the leader that removed this
    /// replica is one of them); when none answers, the replica stays.
    async fn check_removed(&self, shard: ShardId, replica: &ReplicaHandle) -> Result<(), Status> {
        let me = self.state.node_id;
        let mut newest: Option<pb::ShardDescriptor> = None;
        for member in replica
            .descriptor()
            .replicas
            .iter()
            .filter(|r| r.node != me)
        {
            let addr = replica.member_addr(Some(member.node));
            let Ok(mut admin) = self.state.peers.admin(&addr) else {
                continue;
            };
            let Ok(status) = admin.status(forwarded(pb::StatusRequest {})).await else {
                continue;
            };
            let theirs = status
                .into_inner()
                .shards
                .into_iter()
                .filter_map(|s| s.descriptor);
            for descriptor in theirs.filter(|d| d.id == shard) {
                let epoch = |d: &pb::ShardDescriptor| d.epoch.map(|e| (e.version, e.conf_ver));
                if newest
                    .as_ref()
                    .is_none_or(|n| epoch(&descriptor) > epoch(n))
                {
                    newest = Some(descriptor);
                }
            }
        }
        match newest {
            None => Err(Status::failed_precondition(format!(
                "no other replica of shard {shard} answered; a replica is destroyed only \
                 once the group has removed it"
            ))),
            Some(group) if group.replicas.iter().any(|r| r.node == me) => {
                Err(Status::failed_precondition(format!(
                    "node {me} is still a replica of shard {shard}: remove it from the group \
                     first (`hanse admin remove-node`)"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    async fn leadership<T>(
        &self,
        shard: ShardId,
        request: &Request<T>,
    ) -> Result<Leadership, Status> {
        let replica = self
            .state
            .routes
            .get(shard)
            .ok_or_else(|| Status::not_found(format!("shard {shard} is not hosted here")))?;
        let leader = replica
            .group
            .raft
            .wait(Some(LEADER_TIMEOUT))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()
            .and_then(|m| m.current_leader);
        match leader {
            Some(node) if node == self.state.node_id => Ok(Leadership::Here(replica)),
            _ if request.metadata().contains_key(FORWARDED) => Err(Status::unavailable(format!(
                "shard {shard}: leadership moved while the request was forwarded; retry"
            ))),
            Some(node) => Ok(Leadership::Elsewhere {
                node,
                addr: replica.member_addr(Some(node)),
            }),
            None => Err(Status::unavailable(format!(
                "shard {shard} has had no leader for {LEADER_TIMEOUT:?}; retry shortly"
            ))),
        }
    }

    async fn add_to_shard(
        &self,
        shard: ShardId,
        request: &Request<pb::AddNodeRequest>,
    ) -> Result<Vec<pb::ShardDescriptor>, Status> {
        let req = request.get_ref();
        let replica = match self.leadership(shard, request).await? {
            Leadership::Here(replica) => replica,
            Leadership::Elsewhere { addr, .. } => {
                let one = pb::AddNodeRequest {
                    shard_ids: vec![shard],
                    ..req.clone()
                };
                let answer = self
                    .state
                    .peers
                    .admin(&addr)?
                    .add_node(forwarded(one))
                    .await
                    .map_err(unreachable(&addr))?;
                return Ok(answer.into_inner().shards);
            }
        };
        refuse_while_merging(&replica)?;
        // The new node hosts an empty replica before the group sends it anything.
        let added_by = replica
            .group
            .added_by()
            .ok_or_else(|| Status::unavailable(format!("shard {shard}: leadership moved")))?;
        let last_log = added_by.last_log;
        let open = pb::OpenReplicaRequest {
            descriptor: Some(to_proto(&replica.descriptor())),
            leader_term: added_by.term,
            leader_node: added_by.node,
            last_log_term: last_log.map_or(0, |id| id.leader_id.term),
            last_log_node: last_log.map_or(0, |id| id.leader_id.node_id),
            last_log_index: last_log.map_or(0, |id| id.index),
        };
        self.state
            .peers
            .admin(&req.addr)?
            .open_replica(open)
            .await
            .map_err(unreachable(&req.addr))?;
        let change = ReplicaChange::Add {
            node: req.node_id,
            at: ReplicaNode {
                addr: req.addr.clone(),
                region: req.region.clone(),
            },
            role: if req.learner {
                ReplicaRole::Learner
            } else {
                ReplicaRole::Voter
            },
        };
        let added = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            replica.ask(|reply| ChangeReplicas { change, reply }),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "shard {shard}: node {} did not catch up within {CATCH_UP_TIMEOUT:?}; it \
                 stays a learner until AddNode is run again",
                req.node_id
            ))
        })?
        .map_err(replica_status)?;
        Ok(vec![to_proto(&added)])
    }

    async fn remove_from_shard(
        &self,
        shard: ShardId,
        request: &Request<pb::RemoveNodeRequest>,
    ) -> Result<Vec<pb::ShardDescriptor>, Status> {
        let node = request.get_ref().node_id;
        let one = pb::RemoveNodeRequest {
            node_id: node,
            shard_ids: vec![shard],
        };
        let replica = match self.leadership(shard, request).await? {
            Leadership::Elsewhere { addr, .. } => {
                let answer = self
                    .state
                    .peers
                    .admin(&addr)?
                    .remove_node(forwarded(one))
                    .await
                    .map_err(unreachable(&addr))?;
                return Ok(answer.into_inner().shards);
            }
            Leadership::Here(replica) if node == self.state.node_id => {
                // A leader does not remove itself: it hands over, and the new leader does.
                let to = self.successor(&replica)?;
                replica
                    .ask(|reply| TransferLeader { to, reply })
                    .await
                    .map_err(replica_status)?;
                let addr = replica.member_addr(Some(to));
                let answer = self
                    .state
                    .peers
                    .admin(&addr)?
                    .remove_node(forwarded(one))
                    .await
                    .map_err(unreachable(&addr))?;
                return Ok(answer.into_inner().shards);
            }
            Leadership::Here(replica) => replica,
        };
        refuse_while_merging(&replica)?;
        let removed_addr = replica.member_addr(Some(node));
        if replica.descriptor().replica_on(node).is_none() {
            return Err(Status::not_found(format!(
                "node {node} holds no replica of shard {shard}"
            )));
        }
        let change = ReplicaChange::Remove { node };
        let after = replica
            .ask(|reply| ChangeReplicas { change, reply })
            .await
            .map_err(replica_status)?;
        // The removed node deletes its copy; if it is down, the copy stays (it no longer
        // takes part in the group) until it is destroyed by hand.
        let destroy = async {
            self.state
                .peers
                .admin(&removed_addr)?
                .destroy_replica(pb::DestroyReplicaRequest { shard_id: shard })
                .await
                .map_err(unreachable(&removed_addr))
        };
        if let Err(e) = destroy.await {
            tracing::warn!(shard, node, "the removed replica was not deleted: {e}");
        }
        Ok(vec![to_proto(&after)])
    }

    async fn propose_here(
        &self,
        replica: &ReplicaHandle,
        request: ShardRequest,
    ) -> Result<ShardResponse, Status> {
        replica.propose(request).await.map_err(replica_status)
    }

    /// The planner's report, if this node runs it (it leads the meta shard and has a
    /// planner).
    async fn planner_status(&self) -> Option<pb::PlannerStatus> {
        let planner = self.state.planner.as_ref()?;
        self.state.routes.get(META_SHARD).filter(|m| m.leads())?;
        let report = planner.send(Report).await.ok()?;
        Some(pb::PlannerStatus {
            mode: match report.mode {
                Mode::Model => "model",
                Mode::Shadow => "shadow",
                Mode::Heuristic => "heuristic",
            }
            .into(),
            ticks: report.ticks,
            acting: report.acting,
            fallback: report.fallback.unwrap_or_default(),
            fallback_ticks: report.fallback_ticks,
            decisions: report
                .decisions
                .into_iter()
                .map(|d| pb::PlannerDecision {
                    tick: d.tick,
                    policy: d.policy,
                    action: d.action,
                    features: d.features,
                })
                .collect(),
            shadow: report.shadow,
            refused: report.refused,
            region_latency: report
                .region_latency
                .into_iter()
                .map(|l| pb::RegionLatency {
                    from: l.from,
                    to: l.to,
                    one_way_ms: l.one_way_ms,
                    measured: l.measured,
                })
                .collect(),
        })
    }

    /// The voter best placed to take over from this leader: the one furthest along.
    fn successor(&self, replica: &ReplicaHandle) -> Result<NodeId, Status> {
        let metrics = replica.group.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let progress = metrics.replication.unwrap_or_default();
        membership
            .voter_ids()
            .filter(|&v| v != self.state.node_id)
            .max_by_key(|v| progress.get(v).copied().flatten().map(|id| id.index))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "shard {}: node {} is its only voter and cannot be removed",
                    replica.shard, self.state.node_id
                ))
            })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = Counted<ReceiverStream<Result<pb::BackupChunk, Status>>>;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let shard = request.get_ref().shard_id;
        let replica = self.state.routes.get(shard).ok_or_else(|| {
            Status::not_found(format!(
                "node {} holds no replica of shard {shard}",
                self.state.node_id
            ))
        })?;
        // Each backup stages a whole copy of its shard: only a few at once.
        let permit = self
            .state
            .backups
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{BACKUPS_IN_FLIGHT_MAX} backups are under way on this node; try again when \
                 one has finished"
                ))
            })?;
        // Every write acknowledged before the request goes into the copy.
        if replica.leads() {
            replica.read_barrier().await.map_err(replica_status)?;
        } else {
            follower::barrier(
                &self.state,
                &replica,
                Duration::ZERO,
                BACKUP_CATCH_UP_TIMEOUT,
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        let applied_index = replica
            .group
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |log| log.index);
        let descriptor = replica.descriptor();
        let staging = tempfile::tempdir()
            .map_err(|e| Status::internal(format!("no room to stage the copy: {e}")))?;
        let file = staging.path().join("shard.hsnap");
        let (engine, copied, path) = (self.state.engine.clone(), descriptor.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            hanse_consensus::write_shard_file(engine.as_ref(), &copied, &path)
        })
        .await
        .map_err(|e| Status::internal(format!("copying shard {shard} failed: {e}")))?
        .map_err(|e| Status::internal(format!("copying shard {shard} failed: {e}")))?;
        let (chunks, stream) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _staging = staging;
            let mut first = Some(to_proto(&descriptor));
            let sent = async {
                let mut input = tokio::fs::File::open(&file).await?;
                loop {
                    let mut data = Vec::with_capacity(BACKUP_CHUNK_BYTES);
                    (&mut input)
                        .take(BACKUP_CHUNK_BYTES as u64)
                        .read_to_end(&mut data)
                        .await?;
                    if data.is_empty() && first.is_none() {
                        return Ok::<_, std::io::Error>(());
                    }
                    let chunk = pb::BackupChunk {
                        descriptor: first.take(),
                        applied_index,
                        data,
                    };
                    // A reader that stops reading gives its copy up after a while.
                    let sent = tokio::time::timeout(BACKUP_READER_STALL, chunks.send(Ok(chunk)));
                    match sent.await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Ok(()),
                        Err(_) => {
                            tracing::warn!(shard, "a backup's reader stalled; its copy is dropped");
                            return Ok(());
                        }
                    }
                }
            };
            if let Err(e) = sent.await {
                let failed = Status::internal(format!("reading shard {shard}'s copy: {e}"));
                let _ = chunks.send(Err(failed)).await;
            }
        });
        // The backup counts until its reader has taken the last chunk or gone away.
        Ok(Response::new(Counted {
            inner: ReceiverStream::new(stream),
            _permit: permit,
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            node_id: self.state.node_id,
            region: self.state.region.clone(),
            addr: self.state.addr.clone(),
            storage_error: self.state.engine.poisoned().unwrap_or_default(),
            certificate_expires_unix_ms: self.state.tls.as_ref().map_or(0, |tls| {
                let expires = tls.expires().duration_since(std::time::UNIX_EPOCH);
                expires.map_or(0, |d| d.as_millis() as u64)
            }),
            shards: self.shard_statuses(),
            draining: self
                .state
                .draining
                .load(std::sync::atomic::Ordering::SeqCst),
            round_trips: self
                .state
                .transport
                .round_trips()
                .iter()
                .map(round_trips::to_proto)
                .collect(),
            planner: self.planner_status().await,
            ingest: self.state.ingest.is_some().then(|| {
                let counters = &self.state.ingest_counters;
                let read = |counter: &std::sync::atomic::AtomicU64| {
                    counter.load(std::sync::atomic::Ordering::Relaxed)
                };
                pb::IngestStatus {
                    writes: read(&counters.writes),
                    batches: read(&counters.batches),
                    largest_batch: read(&counters.largest_batch),
                    waited_micros: read(&counters.waited_micros),
                    refused_busy: read(&counters.refused_busy),
                    forwarded_batches: read(&counters.forwarded_batches),
                }
            }),
        }))
    }

    async fn shards(
        &self,
        request: Request<pb::ShardsRequest>,
    ) -> Result<Response<pb::ShardsResponse>, Status> {
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(meta) => Ok(Response::new(pb::ShardsResponse {
                shards: self.routing_table(&meta).await?,
            })),
            Leadership::Elsewhere { addr, .. } => self
                .state
                .peers
                .admin(&addr)?
                .shards(forwarded(pb::ShardsRequest {}))
                .await
                .map_err(unreachable(&addr)),
        }
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let timeout = match request.get_ref().timeout_ms {
            0 => DRAIN_TIMEOUT_DEFAULT,
            ms => Duration::from_millis(ms),
        };
        if timeout > DRAIN_TIMEOUT_MAX {
            return Err(Status::invalid_argument(format!(
                "a drain goes on at most {DRAIN_TIMEOUT_MAX:?}; {timeout:?} was asked for"
            )));
        }
        let me = self.state.node_id;
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("draining: handing every leadership over");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut moved = std::collections::BTreeSet::new();
        let mut attempts: std::collections::HashMap<ShardId, usize> = Default::default();
        loop {
            let led: Vec<ReplicaHandle> = self
                .state
                .routes
                .all()
                .into_iter()
                .filter(|r| r.leads())
                .collect();
            if led.is_empty() || tokio::time::Instant::now() >= deadline {
                let mut kept: Vec<ShardId> = led.iter().map(|r| r.shard).collect();
                kept.sort_unstable();
                return Ok(Response::new(pb::DrainResponse {
                    moved: moved.into_iter().collect(),
                    kept,
                }));
            }
            for replica in led {
                let attempt = attempts.entry(replica.shard).or_default();
                let Some(to) = successor(&replica.descriptor(), me, &self.state.region, *attempt)
                else {
                    continue;
                };
                *attempt += 1;
                let asked = replica.ask(|reply| TransferLeader { to, reply });
                match tokio::time::timeout_at(deadline, asked).await {
                    Ok(Ok(())) => {
                        moved.insert(replica.shard);
                    }
                    Ok(Err(e)) => tracing::info!(shard = replica.shard, to, "not moved yet: {e}"),
                    Err(_) => break,
                }
            }
            tokio::time::sleep(DRAIN_ROUND_PAUSE).await;
        }
    }

    async fn activity(
        &self,
        request: Request<pb::ActivityRequest>,
    ) -> Result<Response<pb::ActivityResponse>, Status> {
        let heat_map = request.get_ref().heat_map;
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(meta) => {
                let (table, nodes) = read_routing_table(&self.state.engine, &meta).await?;
                let planner = self.planner_status().await;
                let activity = self.state.activity.lock().expect("activity lock");
                let (columns, actions) = activity.snapshot(now_ms(), heat_map);
                Ok(Response::new(pb::ActivityResponse {
                    columns,
                    column_interval_ms: HEAT_COLUMN_INTERVAL.as_millis() as u64,
                    actions,
                    nodes: nodes.values().map(node_to_proto).collect(),
                    planner,
                    shards: shard_table(table, &nodes),
                }))
            }
            Leadership::Elsewhere { addr, .. } => self
                .state
                .peers
                .admin(&addr)?
                .activity(forwarded(pb::ActivityRequest { heat_map }))
                .await
                .map_err(unreachable(&addr)),
        }
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        check_report_claims(&Caller::of(&request), request.get_ref())?;
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(meta) => {
                let pb::ReportRequest {
                    shards,
                    nodes,
                    round_trips,
                } = request.into_inner();
                // Round trips are the one reporting node's own (its claim was checked).
                if let [node] = nodes.as_slice() {
                    let trips = round_trips.into_iter().map(round_trips::from_proto);
                    self.state.round_trips.record(node.node_id, trips.collect());
                }
                let shards = shards
                    .into_iter()
                    .map(|s| {
                        report_from_proto(s).ok_or_else(|| {
                            Status::invalid_argument("a report without a descriptor")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let nodes = nodes.into_iter().map(node_from_proto).collect();
                let request = ShardRequest::Report { shards, nodes };
                match self.propose_here(&meta, request).await? {
                    ShardResponse::Applied => Ok(Response::new(pb::ReportResponse {})),
                    other => Err(Status::internal(format!("unexpected {other:?}"))),
                }
            }
            // Not forwarded: the meta shard's leader checks a report against the node
            // that sends it, so each node sends its own (again next round).
            Leadership::Elsewhere { node, addr } => Err(Status::unavailable(format!(
                "node {node} at {addr} leads the meta shard; report there"
            ))),
        }
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = request.get_ref();
        if req.node_id == 0 || req.addr.is_empty() || req.region.is_empty() {
            return Err(Status::invalid_argument(
                "AddNode needs node_id (not 0), addr (HOST:PORT) and region",
            ));
        }
        let mut shards = Vec::new();
        for shard in self.target_shards(&req.shard_ids)? {
            shards.extend(self.add_to_shard(shard, &request).await?);
        }
        Ok(Response::new(pb::MembershipResponse { shards }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        if request.get_ref().node_id == 0 {
            return Err(Status::invalid_argument("RemoveNode needs node_id (not 0)"));
        }
        let node = request.get_ref().node_id;
        let named = &request.get_ref().shard_ids;
        let mut targets = self.target_shards(named)?;
        if named.is_empty() {
            // "Every shard": of this node's, those the removed node is a replica of.
            targets.retain(|&shard| {
                self.state
                    .routes
                    .get(shard)
                    .is_some_and(|r| r.descriptor().replica_on(node).is_some())
            });
            if targets.is_empty() {
                return Err(Status::not_found(format!(
                    "node {node} is a replica of no shard node {} holds",
                    self.state.node_id
                )));
            }
        }
        let mut shards = Vec::new();
        for shard in targets {
            shards.extend(self.remove_from_shard(shard, &request).await?);
        }
        Ok(Response::new(pb::MembershipResponse { shards }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let pb::TransferLeaderRequest { shard_id, to_node } = *request.get_ref();
        match self.leadership(shard_id, &request).await? {
            Leadership::Here(replica) => {
                replica
                    .ask(|reply| TransferLeader { to: to_node, reply })
                    .await
                    .map_err(replica_status)?;
                Ok(Response::new(pb::TransferLeaderResponse {}))
            }
            Leadership::Elsewhere { node, addr } => {
                if node == to_node {
                    return Ok(Response::new(pb::TransferLeaderResponse {}));
                }
                let again = pb::TransferLeaderRequest { shard_id, to_node };
                self.state
                    .peers
                    .admin(&addr)?
                    .transfer_leader(forwarded(again))
                    .await
                    .map_err(unreachable(&addr))
            }
        }
    }

    async fn split(
        &self,
        request: Request<pb::SplitRequest>,
    ) -> Result<Response<pb::SplitResponse>, Status> {
        let key = request.get_ref().key.clone();
        self.state
            .limits
            .check_key(&key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let shard = self
            .state
            .routes
            .lookup(&key)
            .map(|r| r.shard)
            .ok_or_else(|| Status::not_found("no shard on this node holds the key"))?;
        match self.leadership(shard, &request).await? {
            Leadership::Here(replica) => {
                let (left, right) = self.runtime().split(&replica, key).await?;
                Ok(Response::new(pb::SplitResponse {
                    left: Some(to_proto(&left)),
                    right: Some(to_proto(&right)),
                }))
            }
            Leadership::Elsewhere { addr, .. } => {
                let again = pb::SplitRequest { key };
                self.state
                    .peers
                    .admin(&addr)?
                    .split(forwarded(again))
                    .await
                    .map_err(unreachable(&addr))
            }
        }
    }

    async fn merge(
        &self,
        request: Request<pb::MergeRequest>,
    ) -> Result<Response<pb::MergeResponse>, Status> {
        let shard = request.get_ref().shard_id;
        match self.leadership(shard, &request).await? {
            Leadership::Here(left) => {
                let merged = self.runtime().merge(&left).await?;
                Ok(Response::new(pb::MergeResponse {
                    merged: Some(to_proto(&merged)),
                }))
            }
            Leadership::Elsewhere { addr, .. } => {
                let again = pb::MergeRequest { shard_id: shard };
                self.state
                    .peers
                    .admin(&addr)?
                    .merge(forwarded(again))
                    .await
                    .map_err(unreachable(&addr))
            }
        }
    }

    async fn change_role(
        &self,
        request: Request<pb::ChangeRoleRequest>,
    ) -> Result<Response<pb::ChangeRoleResponse>, Status> {
        let req = *request.get_ref();
        let role = match pb::ReplicaRole::try_from(req.role) {
            Ok(pb::ReplicaRole::Voter) => ReplicaRole::Voter,
            Ok(pb::ReplicaRole::Learner) => ReplicaRole::Learner,
            _ => return Err(Status::invalid_argument("role must be voter or learner")),
        };
        let replica = match self.leadership(req.shard_id, &request).await? {
            Leadership::Here(replica) => replica,
            Leadership::Elsewhere { addr, .. } => {
                return self
                    .state
                    .peers
                    .admin(&addr)?
                    .change_role(forwarded(req))
                    .await
                    .map_err(unreachable(&addr));
            }
        };
        refuse_while_merging(&replica)?;
        if replica.descriptor().replica_on(req.node_id).is_none() {
            return Err(Status::not_found(format!(
                "node {} holds no replica of shard {}",
                req.node_id, req.shard_id
            )));
        }
        if req.node_id == self.state.node_id && role == ReplicaRole::Learner {
            return Err(Status::failed_precondition(format!(
                "node {} leads shard {}; transfer its leadership before making it a learner",
                req.node_id, req.shard_id
            )));
        }
        let change = ReplicaChange::SetRole {
            node: req.node_id,
            role,
        };
        let after = replica
            .ask(|reply| ChangeReplicas { change, reply })
            .await
            .map_err(replica_status)?;
        Ok(Response::new(pb::ChangeRoleResponse {
            shard: Some(to_proto(&after)),
        }))
    }

    async fn open_replica(
        &self,
        request: Request<pb::OpenReplicaRequest>,
    ) -> Result<Response<pb::OpenReplicaResponse>, Status> {
        let request = request.into_inner();
        let added_by = (request.leader_term > 0 && request.leader_node > 0).then(|| AddedBy {
            term: request.leader_term,
            node: request.leader_node,
            last_log: (request.last_log_term > 0).then(|| {
                LogId::new(
                    CommittedLeaderId::new(request.last_log_term, request.last_log_node),
                    request.last_log_index,
                )
            }),
        });
        let descriptor = request
            .descriptor
            .and_then(from_proto)
            .ok_or_else(|| Status::invalid_argument("OpenReplica needs a full descriptor"))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.state
            .node
            .send(OpenReplica {
                descriptor,
                added_by,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(node_status)?;
        Ok(Response::new(pb::OpenReplicaResponse {}))
    }

    async fn wait_applied(
        &self,
        request: Request<pb::WaitAppliedRequest>,
    ) -> Result<Response<pb::WaitAppliedResponse>, Status> {
        let pb::WaitAppliedRequest {
            shard_id,
            index,
            timeout_ms,
        } = request.into_inner();
        let replica = self.state.routes.get(shard_id).ok_or_else(|| {
            Status::not_found(format!(
                "node {} holds no replica of shard {shard_id}",
                self.state.node_id
            ))
        })?;
        let timeout = Duration::from_millis(timeout_ms.into()).min(WAIT_APPLIED_MAX);
        let applied_index = wait_applied(&replica, index, timeout).await?;
        Ok(Response::new(pb::WaitAppliedResponse { applied_index }))
    }

    async fn auth(
        &self,
        request: Request<pb::AuthRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(meta) => {
                let request = request.into_inner();
                let change = tokio::task::spawn_blocking(move || grants::change_from(request))
                    .await
                    .map_err(|e| Status::internal(format!("reading the change failed: {e}")))??;
                grants::change(&self.state.engine, &meta, change).await?;
                Ok(Response::new(pb::AuthResponse {}))
            }
            // The guard let the caller through here (root); the leader lets this node.
            Leadership::Elsewhere { addr, .. } => self
                .state
                .peers
                .admin(&addr)?
                .auth(forwarded(request.into_inner()))
                .await
                .map_err(unreachable(&addr)),
        }
    }

    async fn list_auth(
        &self,
        request: Request<pb::ListAuthRequest>,
    ) -> Result<Response<pb::ListAuthResponse>, Status> {
        // From the meta shard's leader, which has applied every change it answered.
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(_) => {
                let grants = grants::read(&self.state.engine)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(Response::new(grants::list(&grants)))
            }
            Leadership::Elsewhere { addr, .. } => self
                .state
                .peers
                .admin(&addr)?
                .list_auth(forwarded(pb::ListAuthRequest {}))
                .await
                .map_err(unreachable(&addr)),
        }
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        // On the meta shard's leader, which has applied every password change it answered.
        match self.leadership(META_SHARD, &request).await? {
            Leadership::Here(meta) => {
                let answer = grants::login(&self.state.grants, &meta, request.into_inner());
                Ok(Response::new(answer.await?))
            }
            Leadership::Elsewhere { addr, .. } => self
                .state
                .peers
                .admin(&addr)?
                .login(forwarded(request.into_inner()))
                .await
                .map_err(unreachable(&addr)),
        }
    }

    async fn destroy_replica(
        &self,
        request: Request<pb::DestroyReplicaRequest>,
    ) -> Result<Response<pb::DestroyReplicaResponse>, Status> {
        let shard = request.into_inner().shard_id;
        if let Some(replica) = self.state.routes.get(shard) {
            self.check_removed(shard, &replica).await?;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.state
            .node
            .send(DestroyReplica { shard, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(node_status)?;
        Ok(Response::new(pb::DestroyReplicaResponse {}))
    }
}

/// A report may speak only for the node that sends it: the leader it names for each
/// shard and every node record in it must be the caller's, and a shard's leader must be
/// one of its replicas. Anything else could steer clients to an address of the
/// sender's choosing.
fn check_report_claims(caller: &Caller, report: &pb::ReportRequest) -> Result<(), Status> {
    for shard in &report.shards {
        if !caller.may_speak_for_node(shard.leader_node) {
            return Err(Status::permission_denied(format!(
                "{caller} may not report node {} as a shard's leader",
                shard.leader_node
            )));
        }
        let replicas = shard.descriptor.as_ref().map(|d| d.replicas.as_slice());
        if !replicas
            .unwrap_or_default()
            .iter()
            .any(|r| r.node == shard.leader_node)
        {
            return Err(Status::invalid_argument(format!(
                "a report names node {} as the leader of a shard it holds no replica of",
                shard.leader_node
            )));
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let latest_ms = now_ms.saturating_add(REPORT_CLOCK_SKEW_MAX_MS);
    let times = report.shards.iter().map(|s| s.reported_at_ms);
    if times
        .chain(report.nodes.iter().map(|n| n.reported_at_ms))
        .any(|at| at > latest_ms)
    {
        return Err(Status::invalid_argument(format!(
            "a report from the future: its time is more than {REPORT_CLOCK_SKEW_MAX_MS} ms \
             after this node's clock"
        )));
    }
    if let Some(node) = report
        .nodes
        .iter()
        .find(|n| !caller.may_speak_for_node(n.node_id))
    {
        return Err(Status::permission_denied(format!(
            "{caller} may not report for node {}",
            node.node_id
        )));
    }
    Ok(())
}

/// A stream that holds a permit (of the node's backups under way) until it is dropped.
pub(crate) struct Counted<S> {
    inner: S,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The voter to hand `descriptor`'s leadership to when node `me` drains, on its
/// `attempt`th try: the other voters in turn, those in `region` first (a leader stays
/// near its writers), so that one voter down does not hold the drain up.
fn successor(
    descriptor: &hanse_shard::ShardDescriptor,
    me: NodeId,
    region: &str,
    attempt: usize,
) -> Option<NodeId> {
    let mut voters: Vec<_> = descriptor
        .replicas
        .iter()
        .filter(|r| r.node != me && r.role == ReplicaRole::Voter)
        .collect();
    voters.sort_by_key(|r| (r.region != region, r.node));
    (!voters.is_empty()).then(|| voters[attempt % voters.len()].node)
}

/// The routing table's records as `Shards` answers them, with each leader's address and
/// region from the node directory.
fn shard_table(
    shards: Vec<hanse_shard::meta::ShardRecord>,
    nodes: &std::collections::HashMap<NodeId, hanse_shard::meta::NodeRecord>,
) -> Vec<pb::ShardStatus> {
    shards
        .into_iter()
        .map(|record| {
            let leader = record.leader.and_then(|id| nodes.get(&id));
            pb::ShardStatus {
                descriptor: Some(to_proto(&record.descriptor)),
                leader_node: record.leader.unwrap_or(0),
                leader_addr: leader.map(|n| n.addr.clone()).unwrap_or_default(),
                leader_region: leader.map(|n| n.region.clone()).unwrap_or_default(),
                load: Some(load_to_proto(&record.stats)),
                ..Default::default()
            }
        })
        .collect()
}
