//! `IngestActor`: on the nodes of the ingest region, client writes wait a moment to be
//! proposed together.
//!
//! A write joins its shard's open batch. A batch for a shard this node leads is proposed
//! here; one for a shard led elsewhere goes to the leader in one call, which proposes it
//! as one entry. The batch is
//! proposed as one log entry at once while fewer than [`BATCHES_IN_FLIGHT_MAX`] of the
//! shard's batches await their commit (an idle shard adds no delay), else once it holds
//! `max_batch` writes or its first write has waited `max_delay`, or a batch in flight
//! finishes, whichever comes first. Every write still gets its own answer, so one
//! refused write fails only itself. Writes arrive through the actor's mailbox and keep
//! their order in the batch and in the entry. At most `queue_max` writes wait or are under
//! way at once; more are answered `Busy` at once (back-pressure, never an unbounded queue).

use crate::knobs::BATCHES_IN_FLIGHT_MAX;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hanse_shard::ShardId;
use hanse_shard::{ShardRequest, ShardResponse};
use tokio::sync::oneshot;

use hanse_proto::v1 as pb;
use hanse_proto::v1::request_error::Kind;
use hanse_storage::codec;

use super::{ReplicaError, ReplicaHandle};
use crate::metrics::METRICS;
use crate::peers::Peers;

/// Bounds of the ingest actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// The longest a write waits for others to join its batch.
    pub max_delay: Duration,
    /// Writes in one batch; a full batch is proposed at once.
    pub max_batch: usize,
    /// Writes waiting or under way; more are answered `Busy`.
    pub queue_max: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_delay: Duration::from_millis(2),
            max_batch: 128,
            queue_max: 4096,
        }
    }
}

/// What the ingest actor did since its node started.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub writes: AtomicU64,
    pub batches: AtomicU64,
    /// The largest batch proposed.
    pub largest_batch: AtomicU64,
    /// Microseconds writes waited in their batches, summed.
    pub waited_micros: AtomicU64,
    /// Writes answered `Busy` because the queue was full.
    pub refused_busy: AtomicU64,
    /// Batches sent to their shard's leader on another node.
    pub forwarded_batches: AtomicU64,
}

/// One client write for `replica`'s shard; answered on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ingest {
    pub replica: ReplicaHandle,
    pub request: ShardRequest,
    pub reply: oneshot::Sender<Result<ShardResponse, ReplicaError>>,
}

struct Waiting {
    request: ShardRequest,
    reply: oneshot::Sender<Result<ShardResponse, ReplicaError>>,
    since: Instant,
}

/// A shard's open batch.
struct OpenBatch {
    replica: ReplicaHandle,
    writes: Vec<Waiting>,
    /// Proposes the batch when its first write has waited `max_delay`.
    deadline: SpawnHandle,
}

pub struct IngestActor {
    options: IngestOptions,
    peers: Arc<Peers>,
    open: HashMap<ShardId, OpenBatch>,
    /// Batches proposed and not yet answered, per shard.
    in_flight: HashMap<ShardId, usize>,
    /// Writes waiting or under way.
    queued: Arc<AtomicUsize>,
    counters: Arc<IngestCounters>,
}

impl IngestActor {
    pub(crate) fn new(
        options: IngestOptions,
        counters: Arc<IngestCounters>,
        peers: Arc<Peers>,
    ) -> Self {
        IngestActor {
            options,
            peers,
            open: HashMap::new(),
            in_flight: HashMap::new(),
            queued: Arc::default(),
            counters,
        }
    }

    /// Proposes `shard`'s open batch, if it has one, and answers its writes when done.
    fn propose(&mut self, shard: ShardId, ctx: &mut Context<Self>) {
        let Some(batch) = self.open.remove(&shard) else {
            return;
        };
        ctx.cancel_future(batch.deadline);
        *self.in_flight.entry(shard).or_default() += 1;
        let actor = ctx.address();
        let now = Instant::now();
        let count = batch.writes.len();
        let waited: u128 = batch
            .writes
            .iter()
            .map(|w| (now - w.since).as_micros())
            .sum();
        let counters = &self.counters;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        METRICS.ingest_batches.inc();
        METRICS.ingest_batch_writes.observe(count as f64);
        counters.writes.fetch_add(count as u64, Ordering::Relaxed);
        counters
            .largest_batch
            .fetch_max(count as u64, Ordering::Relaxed);
        counters
            .waited_micros
            .fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Ordering::Relaxed);
        let (requests, replies): (Vec<_>, Vec<_>) = batch
            .writes
            .into_iter()
            .map(|w| (w.request, w.reply))
            .unzip();
        let queued = self.queued.clone();
        let replica = batch.replica;
        let peers = self.peers.clone();
        let forwarded = !replica.leads();
        if forwarded {
            counters.forwarded_batches.fetch_add(1, Ordering::Relaxed);
            METRICS.ingest_forwarded_batches.inc();
        }
        tokio::spawn(async move {
            let answers = match forwarded {
                false => replica.propose_together(requests).await,
                true => forward(&peers, &replica, requests).await,
            };
            match answers {
                Ok(results) if results.len() != replies.len() => {
                    let unknown = format!(
                        "shard {}: {} answers for a batch of {count} writes",
                        replica.shard,
                        results.len()
                    );
                    for reply in replies {
                        let _ = reply.send(Err(ReplicaError::OutcomeUnknown(unknown.clone())));
                    }
                }
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.for_each_request()));
                    }
                }
            }
            queued.fetch_sub(count, Ordering::Relaxed);
            actor.do_send(BatchDone { shard });
        });
    }
}

/// Sends `requests` to the leader of `replica`'s shard, which proposes them as one log
/// entry. A call that fails on the way may or may not have reached the leader: each write
/// then has an unknown outcome.
async fn forward(
    peers: &Peers,
    replica: &ReplicaHandle,
    requests: Vec<ShardRequest>,
) -> Result<Vec<Result<ShardResponse, ReplicaError>>, ReplicaError> {
    let shard = replica.shard;
    let leader = replica.leader();
    let not_leader = || ReplicaError::NotLeader { shard, leader };
    let addr = replica.member_addr(leader);
    let mut kv = peers
        .kv(&addr)
        .ok()
        .filter(|_| leader.is_some())
        .ok_or_else(not_leader)?;
    let request = peers.request(pb::ProposeBatchRequest {
        shard_id: shard,
        commands: requests.iter().map(codec::encode).collect(),
    });
    let answer = kv
        .propose_batch(request)
        .await
        .map_err(|status| {
            let node = leader.unwrap_or_default();
            match hanse_security::never_sent(&status) {
                // It never left this node: refused, and worth a retry.
                true => ReplicaError::Unavailable {
                    shard,
                    detail: format!("node {node} could not be reached: {}", status.message()),
                },
                false => ReplicaError::OutcomeUnknown(format!(
                    "shard {shard}: the batch forwarded to node {node} failed on the way: {}",
                    status.message()
                )),
            }
        })?
        .into_inner();
    if let Some(refusal) = answer.error.and_then(|e| e.kind) {
        return Err(match refusal {
            Kind::NotLeader(hint) => ReplicaError::NotLeader {
                shard,
                leader: (hint.leader_node != 0).then_some(hint.leader_node),
            },
            Kind::ServerBusy(_) | Kind::KeyNotInShard(_) | Kind::ShardNotFound(_) => {
                ReplicaError::Busy { shard }
            }
            Kind::OutcomeUnknown(e) => ReplicaError::OutcomeUnknown(e.message),
            other => ReplicaError::Unavailable {
                shard,
                detail: format!("the leader refused the batch: {other:?}"),
            },
        });
    }
    Ok(answer
        .responses
        .iter()
        .map(|bytes| {
            codec::decode("a forwarded write's answer", bytes)
                .map_err(|e| ReplicaError::OutcomeUnknown(e.to_string()))
        })
        .collect())
}

/// A batch of `shard` was answered.
#[derive(Message)]
#[rtype(result = "()")]
struct BatchDone {
    shard: ShardId,
}

impl Handler<BatchDone> for IngestActor {
    type Result = ();

    fn handle(&mut self, msg: BatchDone, ctx: &mut Self::Context) {
        if let Some(in_flight) = self.in_flight.get_mut(&msg.shard) {
            *in_flight -= 1;
            if *in_flight == 0 {
                self.in_flight.remove(&msg.shard);
            }
        }
        // The freed slot goes to the writes that waited for it.
        self.propose(msg.shard, ctx);
    }
}

impl Actor for IngestActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.options.queue_max);
    }
}

impl Handler<Ingest> for IngestActor {
    type Result = ();

    fn handle(&mut self, msg: Ingest, ctx: &mut Self::Context) {
        let shard = msg.replica.shard;
        if self.queued.load(Ordering::Relaxed) >= self.options.queue_max {
            self.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
            let _ = msg.reply.send(Err(ReplicaError::Busy { shard }));
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let max_delay = self.options.max_delay;
        let batch = self.open.entry(shard).or_insert_with(|| OpenBatch {
            replica: msg.replica,
            writes: Vec::new(),
            deadline: ctx.run_later(max_delay, move |actor, ctx| actor.propose(shard, ctx)),
        });
        batch.writes.push(Waiting {
            request: msg.request,
            reply: msg.reply,
            since: Instant::now(),
        });
        let idle = self.in_flight.get(&shard).copied().unwrap_or(0) < BATCHES_IN_FLIGHT_MAX;
        if idle || batch.writes.len() >= self.options.max_batch {
            self.propose(shard, ctx);
        }
    }
}
