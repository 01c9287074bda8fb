//! Coalesces the requests for one shard into as few Raft entries as possible.
//!
//! Requests queue in a bounded mailbox, alone or as a group a caller wants in one entry
//! (the ingest actor's batches). A task takes everything that has queued, proposes it as
//! one [`Proposal`], and hands each caller its own response. At most
//! `in_flight_max` proposals wait for commit at once; while they do, new requests pile up
//! and become the next, larger proposal. One lone writer pays no extra delay; many
//! concurrent writers share entries, log appends and fsyncs.

use crate::knobs;
use crate::metrics::METRICS;
use hanse_shard::{NodeId, ShardId};
use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

use crate::batching::{BatchLimits, drain_in_batches};
use hanse_shard::{Proposal, ShardRequest, ShardResponse};

use crate::{Raft, ReplicaNode, TypeConfig};

/// Bounds of one shard's proposer.
#[derive(Debug, Clone)]
pub struct ProposerOptions {
    /// Submissions (a request, or a group of them) waiting for a proposal; senders wait
    /// when it is full.
    pub mailbox_requests_max: usize,
    /// Submissions in one proposal.
    pub proposal_requests_max: usize,
    /// Bytes of keys and values in one proposal (one that is larger on its own goes
    /// alone): a log entry has to reach the followers within openraft's AppendEntries
    /// timeout, so many large writes share no entry.
    pub proposal_bytes_max: usize,
    /// Proposals waiting for commit at once: deep enough to keep the log writer busy,
    /// shallow enough that waiting requests form large proposals.
    pub in_flight_max: usize,
}

impl Default for ProposerOptions {
    fn default() -> Self {
        ProposerOptions {
            mailbox_requests_max: knobs::PROPOSER_MAILBOX_REQUESTS_MAX,
            proposal_requests_max: knobs::PROPOSAL_REQUESTS_MAX,
            proposal_bytes_max: knobs::PROPOSAL_BYTES_MAX,
            in_flight_max: knobs::PROPOSALS_IN_FLIGHT_MAX,
        }
    }
}

/// Why a proposal did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node does not lead shard {shard} (leader: {leader:?})")]
    NotLeader {
        shard: ShardId,
        leader: Option<NodeId>,
    },
    #[error("shard {shard}: the raft group has stopped: {detail}")]
    Stopped { shard: ShardId, detail: String },
    #[error("shard {shard}: the write failed: {detail}")]
    Failed { shard: ShardId, detail: String },
    /// The shard merged into its left neighbour first: the write did not apply and never
    /// will; send it to the neighbour.
    #[error(
        "shard {shard} merged into its left neighbour before the write applied; it did not \
         apply"
    )]
    Retired { shard: ShardId },
    /// Proposed, but no answer will come from here: it may still commit.
    #[error("shard {shard}: the write was proposed but its outcome is unknown: {detail}")]
    OutcomeUnknown { shard: ShardId, detail: String },
}

struct Pending {
    request: ShardRequest,
    respond: oneshot::Sender<Result<ShardResponse, ProposeError>>,
}

/// Requests that go into the same proposal.
type Submission = Vec<Pending>;

/// The handle callers propose through; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    shard: ShardId,
    mailbox: mpsc::Sender<Submission>,
}

impl Proposer {
    /// Starts the proposing task of `shard` on the current tokio runtime.
    /// `retired` turns true when the shard is retired after a merge (see
    /// [`crate::ShardGroup::retire`]).
    pub fn start(
        shard: ShardId,
        raft: Raft,
        options: &ProposerOptions,
        retired: Arc<AtomicBool>,
    ) -> Self {
        let (mailbox, requests) = mpsc::channel(options.mailbox_requests_max);
        tokio::spawn(run(shard, raft, requests, options.clone(), retired));
        Proposer { shard, mailbox }
    }

    /// Proposes `request` and waits for its own response.
    pub async fn propose(&self, request: ShardRequest) -> Result<ShardResponse, ProposeError> {
        let mut responses = self.propose_together(vec![request]).await;
        responses.pop().unwrap_or_else(|| Err(self.stopped()))
    }

    /// Proposes `requests` in one log entry, in their order, and waits for each one's own
    /// response (one per request, in the same order).
    pub async fn propose_together(
        &self,
        requests: Vec<ShardRequest>,
    ) -> Vec<Result<ShardResponse, ProposeError>> {
        let (submission, responses): (Submission, Vec<_>) = requests
            .into_iter()
            .map(|request| {
                let (respond, response) = oneshot::channel();
                (Pending { request, respond }, response)
            })
            .unzip();
        if self.mailbox.send(submission).await.is_err() {
            return responses.iter().map(|_| Err(self.stopped())).collect();
        }
        let mut answers = Vec::with_capacity(responses.len());
        for response in responses {
            answers.push(response.await.unwrap_or_else(|_| Err(self.stopped())));
        }
        answers
    }

    fn stopped(&self) -> ProposeError {
        ProposeError::Stopped {
            shard: self.shard,
            detail: "the proposer has shut down".into(),
        }
    }
}

async fn run(
    shard: ShardId,
    raft: Raft,
    requests: mpsc::Receiver<Submission>,
    options: ProposerOptions,
    retired: Arc<AtomicBool>,
) {
    let limits = BatchLimits {
        items_max: options.proposal_requests_max,
        weight_max: options.proposal_bytes_max,
        in_flight_max: options.in_flight_max,
    };
    // An ingest weighs more than any batch may, so it is always an entry of its own: the
    // state machine writes what precedes it before the file lands (see `StateMachine`).
    let weigh = |submission: &Submission| -> usize {
        submission
            .iter()
            .map(|p| match p.request {
                ShardRequest::Ingest { .. } => usize::MAX,
                _ => p.request.approximate_bytes(),
            })
            .fold(0, usize::saturating_add)
    };
    drain_in_batches(requests, limits, weigh, |submissions: Vec<Submission>| {
        let (raft, retired) = (raft.clone(), retired.clone());
        async move {
            let (batch, responders): (Vec<_>, Vec<_>) = submissions
                .into_iter()
                .flatten()
                .map(|p| (p.request, p.respond))
                .unzip();
            METRICS.proposal_requests.observe(batch.len() as f64);
            // A node that knows it does not lead refuses before anything enters its log:
            // only that refusal is a certain "not applied" (see `respond_when_applied`).
            if let Some(leader) = not_leading(&raft) {
                let refused = Err(ProposeError::NotLeader { shard, leader });
                return Some(respond_when_applied(shard, refused, responders, retired));
            }
            // Sent here, in order, so proposals enter the log in the order requests
            // arrived.
            match raft.client_write_ff(Proposal { requests: batch }).await {
                Ok(receiver) => Some(respond_when_applied(
                    shard,
                    Ok(receiver),
                    responders,
                    retired,
                )),
                Err(fatal) => {
                    METRICS.proposal_ended("stopped");
                    let error = ProposeError::Stopped {
                        shard,
                        detail: fatal.to_string(),
                    };
                    respond_all(responders, &error);
                    None
                }
            }
        }
    })
    .await;
}

/// `Some(leader as far as known)` when this replica is not its group's leader now.
fn not_leading(raft: &Raft) -> Option<Option<NodeId>> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    match metrics.state.is_leader() {
        true => None,
        false => Some(metrics.current_leader),
    }
}

/// Hands each caller of a proposal its own response once the proposal is applied (or
/// the refusal it got before it was proposed).
async fn respond_when_applied(
    shard: ShardId,
    proposed: Result<AppliedReceiver, ProposeError>,
    responders: Vec<Responder>,
    retired: Arc<AtomicBool>,
) {
    let receiver = match proposed {
        Ok(receiver) => receiver,
        Err(refused) => {
            METRICS.proposal_ended("not_leader");
            return respond_all(responders, &refused);
        }
    };
    let started = Instant::now();
    METRICS.proposals_pending.inc();
    let answer = receiver.await;
    METRICS.proposals_pending.dec();
    METRICS
        .proposal_duration
        .observe(started.elapsed().as_secs_f64());
    METRICS.proposal_ended(match &answer {
        Ok(Ok(_)) => "applied",
        Ok(Err(ClientWriteError::ForwardToLeader(_))) => "unknown",
        Ok(Err(_)) => "failed",
        Err(_) if retired.load(Ordering::SeqCst) => "retired",
        Err(_) => "unknown",
    });
    match answer {
        Ok(Ok(written)) if written.data.len() == responders.len() => {
            for (respond, response) in responders.into_iter().zip(written.data) {
                let _ = respond.send(Ok(response));
            }
        }
        Ok(Ok(written)) => respond_all(
            responders,
            &ProposeError::Failed {
                shard,
                detail: format!("{} responses for a proposal", written.data.len()),
            },
        ),
        // The leader checked it led before proposing, so this comes (but for a race
        // with an election) from a new leader's log replacing the entry here. Another
        // replica may still hold it, and with five or more voters a later leader can
        // commit it: only "unknown" is true.
        Ok(Err(ClientWriteError::ForwardToLeader(forward))) => respond_all(
            responders,
            &ProposeError::OutcomeUnknown {
                shard,
                detail: format!(
                    "this node lost its leadership (to {:?}) with the write in its log",
                    forward.leader_id
                ),
            },
        ),
        Ok(Err(other)) => respond_all(
            responders,
            &ProposeError::Failed {
                shard,
                detail: other.to_string(),
            },
        ),
        // The shard merged into its neighbour: what its log still held never applies.
        Err(_) if retired.load(Ordering::SeqCst) => {
            respond_all(responders, &ProposeError::Retired { shard })
        }
        // A dropped answer means the group stopped with the entry in its log.
        Err(_) => respond_all(
            responders,
            &ProposeError::OutcomeUnknown {
                shard,
                detail: "the raft group stopped before the write was applied".into(),
            },
        ),
    }
}

/// What openraft answers a proposal on, once it is applied (or refused).
type AppliedReceiver = oneshot::Receiver<
    Result<ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, ReplicaNode>>,
>;

type Responder = oneshot::Sender<Result<ShardResponse, ProposeError>>;

fn respond_all(responders: Vec<Responder>, error: &ProposeError) {
    for respond in responders {
        let _ = respond.send(Err(error.clone()));
    }
}
