//! The split and merge coordinators: the steps that take a shard through a split or two
//! shards through a merge, across their Raft groups and nodes, as state machines.
//!
//! A coordinator never does I/O. It answers each [`Event`] with the next [`Step`]: a
//! [`Command`] for its runtime to carry out (propose a command to a shard, move a
//! leadership here, wait until a node applied an index, ...) or its outcome. A node runs
//! coordinators over its actors and gRPC, the deterministic simulation over its
//! in-process network, and the scenario scripts in `shard/testdata` over a model of the
//! shards: all three run this code. [`drive`] is the loop that connects one to a
//! [`Runtime`].

mod merge;
mod split;

use std::future::Future;

pub use merge::MergeCoordinator;
pub use split::SplitCoordinator;

use crate::command::{ShardRequest, ShardResponse};
use crate::descriptor::{NodeId, ShardDescriptor, ShardId};

/// What a coordinator asks its runtime to do. Every command is answered by one [`Event`];
/// the runtime bounds each one's wait by its own step timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Propose `request` to `shard`, whose leader is this node; answered by
    /// [`Event::Proposed`].
    Propose {
        shard: ShardId,
        request: ShardRequest,
    },
    /// Make this node the leader of `shard` (ask its leader to hand over) and wait until
    /// it is; answered by [`Event::Done`] or [`Event::Failed`].
    LeadHere { shard: ShardId },
    /// Wait until the replica of `shard` on `node` has applied up to `index`; answered by
    /// [`Event::Done`] or [`Event::Failed`].
    AwaitApplied {
        shard: ShardId,
        node: NodeId,
        index: u64,
    },
    /// Wait until `shard` (the new shard of a split) has a leader; answered by
    /// [`Event::Done`] or [`Event::Failed`].
    AwaitLeader { shard: ShardId },
    /// Allocate a shard id no other shard ever had; answered by [`Event::Allocated`] or
    /// [`Event::Failed`].
    AllocateShardId,
    /// Tell the meta shard's routing table of `descriptors`, led here (best effort: the
    /// periodic report repeats them); answered by [`Event::Done`] or [`Event::Failed`].
    Report { descriptors: Vec<ShardDescriptor> },
}

/// What the runtime answers a command with. One lives at a time, so the size of the
/// proposal's answer costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The proposal's answer, or why there is none.
    Proposed(Result<ShardResponse, Failure>),
    /// The command was carried out.
    Done,
    /// A new shard id.
    Allocated(ShardId),
    /// The command was not carried out (or not within its time).
    Failed(Failure),
}

/// Why a command was not carried out, and what its caller can conclude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// What kind of refusal an outcome is, for the caller to act on (each maps onto one gRPC
/// status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a split at a shard's first key).
    Invalid,
    /// Something the request names is not here.
    NotFound,
    /// The shards are not in a state the request can proceed from; it changed nothing.
    Precondition,
    /// A node or leader was out of reach or busy; it changed nothing, or nothing that
    /// running it again does not finish. Retry shortly.
    Unavailable,
    /// A step did not finish in its time.
    DeadlineExceeded,
    /// A proposal may or may not have taken effect: run the request again to find out and
    /// finish it.
    Unknown,
    /// An answer the protocol does not allow.
    Internal,
}

/// A coordinator's outcome when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CoordinatorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CoordinatorError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> CoordinatorError {
        CoordinatorError {
            kind,
            message: message.into(),
        }
    }
}

/// A coordinator's next move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    Run(Command),
    Finish(Result<T, CoordinatorError>),
}

/// A split or merge, as a state machine.
pub trait Coordinator {
    type Output;
    /// The first step.
    fn start(&mut self) -> Step<Self::Output>;
    /// The step after the answer to the last command.
    fn step(&mut self, event: Event) -> Step<Self::Output>;
}

/// Carries out commands for a coordinator.
pub trait Runtime {
    fn execute(&self, command: Command) -> impl Future<Output = Event> + Send;
}

/// Steps a coordinator through at most this many commands: a merge of three replicas
/// takes nine, a split four; anything far beyond is a bug, not a slow cluster.
pub const STEPS_MAX: usize = 64;

/// Runs `coordinator` to its outcome, its commands carried out by `runtime`.
pub async fn drive<C: Coordinator, R: Runtime>(
    mut coordinator: C,
    runtime: &R,
) -> Result<C::Output, CoordinatorError> {
    let mut step = coordinator.start();
    for _ in 0..STEPS_MAX {
        match step {
            Step::Finish(outcome) => return outcome,
            Step::Run(command) => step = coordinator.step(runtime.execute(command).await),
        }
    }
    Err(CoordinatorError::new(
        ErrorKind::Internal,
        format!("the coordinator did not finish within {STEPS_MAX} steps"),
    ))
}

/// The outcome for an answer the protocol does not allow at this step.
pub(crate) fn unexpected<T>(step: &str, event: &Event) -> Step<T> {
    Step::Finish(Err(CoordinatorError::new(
        ErrorKind::Internal,
        format!("{step}: unexpected answer {event:?}"),
    )))
}

#[cfg(test)]
mod tests;
