//! The split of a shard at a key, coordinated from the node that leads it: a new shard
//! id, the Split command in the shard's own log (every replica applies it at the same
//! index and starts the new shard's group), then a wait until the new shard has elected
//! its leader (here, where the parent's leader is), and the meta shard hears of both.

use crate::command::{ShardRequest, ShardResponse};
use crate::descriptor::ShardDescriptor;

use super::{Command, Coordinator, CoordinatorError, ErrorKind, Event, Step, unexpected};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Start,
    Allocating,
    Splitting,
    /// Waiting for the new shard's leader.
    Electing {
        left: ShardDescriptor,
        right: ShardDescriptor,
    },
    Reporting {
        left: ShardDescriptor,
        right: ShardDescriptor,
    },
    Finished,
}

/// The split of `shard` (led by this node) at `at`.
#[derive(Debug, Clone)]
pub struct SplitCoordinator {
    shard: ShardDescriptor,
    at: Vec<u8>,
    stage: Stage,
}

impl SplitCoordinator {
    pub fn new(shard: ShardDescriptor, at: Vec<u8>) -> SplitCoordinator {
        SplitCoordinator {
            shard,
            at,
            stage: Stage::Start,
        }
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        message: String,
    ) -> Step<(ShardDescriptor, ShardDescriptor)> {
        self.stage = Stage::Finished;
        Step::Finish(Err(CoordinatorError::new(kind, message)))
    }
}

impl Coordinator for SplitCoordinator {
    /// The shrunk shard and the new one.
    type Output = (ShardDescriptor, ShardDescriptor);

    fn start(&mut self) -> Step<Self::Output> {
        if self.at == self.shard.start {
            let message = format!(
                "the key is already the first key of shard {}",
                self.shard.id
            );
            return self.fail(ErrorKind::Invalid, message);
        }
        self.stage = Stage::Allocating;
        Step::Run(Command::AllocateShardId)
    }

    fn step(&mut self, event: Event) -> Step<Self::Output> {
        let id = self.shard.id;
        match (std::mem::replace(&mut self.stage, Stage::Finished), event) {
            (Stage::Allocating, Event::Allocated(new_shard_id)) => {
                self.stage = Stage::Splitting;
                Step::Run(Command::Propose {
                    shard: id,
                    request: ShardRequest::Split {
                        at: self.at.clone(),
                        new_shard_id,
                        expected_epoch: self.shard.epoch,
                    },
                })
            }
            (Stage::Allocating, Event::Failed(failure)) => self.fail(
                ErrorKind::Internal,
                format!("allocating a shard id failed: {}", failure.detail),
            ),
            (Stage::Splitting, Event::Proposed(answer)) => match answer {
                Ok(ShardResponse::Split { left, right }) => {
                    let shard = right.id;
                    self.stage = Stage::Electing { left, right };
                    Step::Run(Command::AwaitLeader { shard })
                }
                Ok(ShardResponse::Rejected(rejection)) => self.fail(
                    ErrorKind::Precondition,
                    format!("shard {id}: {rejection}; retry"),
                ),
                Ok(other) => self.fail(ErrorKind::Internal, format!("unexpected answer {other:?}")),
                Err(failure) => self.fail(failure.kind, failure.detail),
            },
            (Stage::Electing { left, right }, Event::Done) => {
                let descriptors = vec![left.clone(), right.clone()];
                self.stage = Stage::Reporting { left, right };
                Step::Run(Command::Report { descriptors })
            }
            (Stage::Electing { left, right }, Event::Failed(failure)) => self.fail(
                ErrorKind::DeadlineExceeded,
                format!(
                    "shard {id} split into {} and {}, but shard {} elected no leader ({})",
                    left.id, right.id, right.id, failure.detail
                ),
            ),
            (Stage::Reporting { left, right }, Event::Done | Event::Failed(_)) => {
                Step::Finish(Ok((left, right)))
            }
            (stage, event) => unexpected(&format!("split of shard {id} at {stage:?}"), &event),
        }
    }
}
