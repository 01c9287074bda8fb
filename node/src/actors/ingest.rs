//! `IngestActor`: on the nodes of the ingest region, client writes wait a moment to be
//! proposed together.
//!
//! A write this node leads the shard of joins its shard's open batch. The batch is
//! proposed as one log entry at once while fewer than [`BATCHES_IN_FLIGHT_MAX`] of the
//! shard's batches await their commit (an idle shard adds no delay), else once it holds
//! `max_batch` writes or its first write has waited `max_delay`, or a batch in flight
//! finishes, whichever comes first. Every write still gets its own answer, so one
//! refused write fails only itself. Writes arrive through the actor's mailbox and keep
//! their order in the batch and in the entry. At most `queue_max` writes wait or are under
//! way at once; more are answered `Busy` at once (back-pressure, never an unbounded queue).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hanse_consensus::{ShardRequest, ShardResponse};
use hanse_storage::ShardId;
use tokio::sync::oneshot;

use super::{ProposeTogether, ReplicaError, ReplicaHandle};

/// Batches of one shard awaiting their commit before new writes wait to be batched.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

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
    open: HashMap<ShardId, OpenBatch>,
    /// Batches proposed and not yet answered, per shard.
    in_flight: HashMap<ShardId, usize>,
    /// Writes waiting or under way.
    queued: Arc<AtomicUsize>,
    counters: Arc<IngestCounters>,
}

impl IngestActor {
    pub fn new(options: IngestOptions, counters: Arc<IngestCounters>) -> Self {
        IngestActor {
            options,
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
        tokio::spawn(async move {
            match replica
                .ask(|reply| ProposeTogether { requests, reply })
                .await
            {
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
