//! The merge of a shard (`left`) with its right neighbour, coordinated from the node that
//! leads `left`:
//!
//! 1. this node takes over the leadership of `right`, so it can propose to both;
//! 2. PrepareMerge in `right` freezes it (unless it is frozen for this merge already: a
//!    coordinator that did not finish is being run again);
//! 3. every replica of `right` applies up to the PrepareMerge, so each node holds the
//!    whole of `right` when it takes it over;
//! 4. CommitMerge in `left` extends it over `right`; the meta shard hears of it.
//!
//! A merge that cannot commit (a replica did not catch up in time, `left` refused the
//! commit) rolls back: FenceMerge moves `left` one version on, so that no commit of this
//! preparation can apply any more, another coordinator's included; only then may
//! RollbackMerge unfreeze `right`. When the fence finds `left` already covering `right`,
//! the merge committed after all and is done. A commit whose outcome is unknown leaves
//! `right` frozen: running the merge again finishes it one way or the other.

use crate::command::{Rejection, ShardRequest, ShardResponse};
use crate::descriptor::{MergeError, ShardDescriptor};
use crate::meta::META_SHARD;

use super::{Command, Coordinator, CoordinatorError, ErrorKind, Event, Failure, Step, unexpected};

/// Where a merge stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Start,
    /// Waiting for the leadership of `right` to move here.
    Leading,
    /// PrepareMerge proposed to `right`.
    Preparing,
    /// Waiting for `right`'s replicas (`frozen.replicas[next..]`) to apply the preparation.
    Preparation {
        frozen: ShardDescriptor,
        next: usize,
    },
    /// CommitMerge proposed to `left`.
    Committing {
        frozen: ShardDescriptor,
    },
    /// Telling the meta shard of the merged shard.
    Reporting {
        merged: ShardDescriptor,
    },
    /// FenceMerge proposed to `left`, because of `reason`.
    Fencing {
        frozen: ShardDescriptor,
        reason: CoordinatorError,
    },
    /// RollbackMerge proposed to `right`, because of `reason`.
    RollingBack {
        frozen: ShardDescriptor,
        reason: CoordinatorError,
    },
    Finished,
}

/// The merge of `left` with `right`, run on the node that leads `left`.
#[derive(Debug, Clone)]
pub struct MergeCoordinator {
    left: ShardDescriptor,
    /// The shard this node hosts right of `left`, as it last applied it (if any).
    right: Option<ShardDescriptor>,
    stage: Stage,
}

impl MergeCoordinator {
    /// A merge of `left` (led by this node) with `right`, this node's replica of the
    /// shard that starts where `left` ends.
    pub fn new(left: ShardDescriptor, right: Option<ShardDescriptor>) -> MergeCoordinator {
        MergeCoordinator {
            left,
            right,
            stage: Stage::Start,
        }
    }

    fn finish(
        &mut self,
        outcome: Result<ShardDescriptor, CoordinatorError>,
    ) -> Step<ShardDescriptor> {
        self.stage = Stage::Finished;
        Step::Finish(outcome)
    }

    fn fail(&mut self, kind: ErrorKind, message: String) -> Step<ShardDescriptor> {
        self.finish(Err(CoordinatorError::new(kind, message)))
    }

    fn right(&self) -> &ShardDescriptor {
        self.right.as_ref().expect("checked when the merge started")
    }

    /// What must hold before anything is proposed; the first command when it does.
    fn begin(&mut self) -> Step<ShardDescriptor> {
        let l = &self.left;
        if l.end.is_empty() {
            let message = format!(
                "shard {} is the last shard; merge its left neighbour into it instead",
                l.id
            );
            return self.fail(ErrorKind::Precondition, message);
        }
        if let Some(m) = l.merging {
            let message = format!(
                "shard {} is itself frozen for a merge into shard {}; finish that first",
                l.id, m.into
            );
            return self.fail(ErrorKind::Precondition, message);
        }
        let Some(r) = self.right.as_ref().filter(|r| r.start == l.end) else {
            let message = format!(
                "this node holds no replica of the shard right of shard {}",
                l.id
            );
            return self.fail(ErrorKind::NotFound, message);
        };
        if l.id == META_SHARD || r.id == META_SHARD {
            let message = "the meta shard holds the routing table and does not merge".to_string();
            return self.fail(ErrorKind::Precondition, message);
        }
        if !l.same_replicas(r) {
            let differ = MergeError::ReplicasDiffer {
                left: l.id,
                right: r.id,
            };
            return self.fail(ErrorKind::Precondition, differ.to_string());
        }
        let shard = r.id;
        self.stage = Stage::Leading;
        Step::Run(Command::LeadHere { shard })
    }

    /// Right leads here: freeze it, or carry on with a preparation already made.
    fn led(&mut self) -> Step<ShardDescriptor> {
        let (l, r) = (self.left.clone(), self.right().clone());
        match r.merging {
            Some(m) if m.into == l.id => self.await_preparation(r, 0),
            Some(m) => self.fail(
                ErrorKind::Precondition,
                format!("shard {} is being merged into shard {}", r.id, m.into),
            ),
            None => {
                self.stage = Stage::Preparing;
                Step::Run(Command::Propose {
                    shard: r.id,
                    request: ShardRequest::PrepareMerge {
                        into: l,
                        expected_epoch: r.epoch,
                    },
                })
            }
        }
    }

    /// Waits for the replica `next` of `frozen` to apply the preparation, or commits once
    /// every replica has.
    fn await_preparation(&mut self, frozen: ShardDescriptor, next: usize) -> Step<ShardDescriptor> {
        let index = frozen.merging.map_or(0, |m| m.index);
        match frozen.replicas.get(next) {
            Some(replica) => {
                let command = Command::AwaitApplied {
                    shard: frozen.id,
                    node: replica.node,
                    index,
                };
                self.stage = Stage::Preparation { frozen, next };
                Step::Run(command)
            }
            None => {
                let request = ShardRequest::CommitMerge {
                    source: frozen.clone(),
                    expected_epoch: self.left.epoch,
                };
                self.stage = Stage::Committing { frozen };
                Step::Run(Command::Propose {
                    shard: self.left.id,
                    request,
                })
            }
        }
    }

    /// Gives up the merge because of `reason`: fences `left` first.
    fn roll_back(
        &mut self,
        frozen: ShardDescriptor,
        reason: CoordinatorError,
    ) -> Step<ShardDescriptor> {
        let request = ShardRequest::FenceMerge {
            source: frozen.clone(),
        };
        self.stage = Stage::Fencing { frozen, reason };
        Step::Run(Command::Propose {
            shard: self.left.id,
            request,
        })
    }

    /// `reason`, and that `step` failed, so the right shard stays frozen.
    fn still_frozen(
        &mut self,
        reason: &CoordinatorError,
        step: &str,
        outcome: String,
    ) -> Step<ShardDescriptor> {
        let message = format!(
            "{reason}; {step} failed ({outcome}), so shard {} stays frozen until the merge \
             runs again",
            self.right().id
        );
        self.fail(reason.kind, message)
    }
}

/// A proposal's refusal or failure, in words.
fn outcome(answer: &Result<ShardResponse, Failure>) -> String {
    match answer {
        Ok(ShardResponse::Rejected(rejection)) => rejection.to_string(),
        Ok(other) => format!("{other:?}"),
        Err(failure) => failure.detail.clone(),
    }
}

impl Coordinator for MergeCoordinator {
    type Output = ShardDescriptor;

    fn start(&mut self) -> Step<ShardDescriptor> {
        self.begin()
    }

    fn step(&mut self, event: Event) -> Step<ShardDescriptor> {
        let (l, r) = (self.left.id, self.right.as_ref().map_or(0, |r| r.id));
        match (std::mem::replace(&mut self.stage, Stage::Finished), event) {
            (Stage::Leading, Event::Done) => self.led(),
            (Stage::Leading, Event::Failed(failure)) => {
                let message = format!(
                    "shard {r}: leadership did not move here ({}); retry",
                    failure.detail
                );
                self.fail(ErrorKind::Unavailable, message)
            }
            (Stage::Preparing, Event::Proposed(answer)) => match answer {
                Ok(ShardResponse::Merge(frozen)) => self.await_preparation(frozen, 0),
                Ok(ShardResponse::Rejected(rejection)) => {
                    self.fail(ErrorKind::Precondition, format!("shard {r}: {rejection}"))
                }
                Ok(other) => self.fail(ErrorKind::Internal, format!("unexpected {other:?}")),
                Err(failure) => self.fail(failure.kind, failure.detail),
            },
            (Stage::Preparation { frozen, next }, Event::Done) => {
                self.await_preparation(frozen, next + 1)
            }
            (Stage::Preparation { frozen, next }, Event::Failed(failure)) => {
                let node = frozen.replicas[next].node;
                let reason = CoordinatorError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "shard {r}: node {node} did not apply the merge preparation ({})",
                        failure.detail
                    ),
                );
                self.roll_back(frozen, reason)
            }
            (Stage::Committing { frozen }, Event::Proposed(answer)) => match answer {
                Ok(ShardResponse::Merge(merged)) => {
                    self.stage = Stage::Reporting {
                        merged: merged.clone(),
                    };
                    Step::Run(Command::Report {
                        descriptors: vec![merged],
                    })
                }
                Ok(ShardResponse::Rejected(rejection)) => {
                    let reason = CoordinatorError::new(
                        ErrorKind::Precondition,
                        format!("shard {l}: {rejection}"),
                    );
                    self.roll_back(frozen, reason)
                }
                Ok(other) => self.fail(ErrorKind::Internal, format!("unexpected {other:?}")),
                Err(failure) => self.fail(
                    ErrorKind::Unknown,
                    format!(
                        "the merge's outcome is unknown ({}); run it again to finish it",
                        failure.detail
                    ),
                ),
            },
            (Stage::Reporting { merged }, Event::Done | Event::Failed(_)) => {
                self.finish(Ok(merged))
            }
            (Stage::Fencing { frozen, reason }, Event::Proposed(answer)) => match answer {
                // The merge committed after all (another coordinator's commit).
                Ok(ShardResponse::Merge(current)) if current.covers(&frozen) => {
                    self.finish(Ok(current))
                }
                Ok(ShardResponse::Merge(_)) => {
                    self.stage = Stage::RollingBack { frozen, reason };
                    Step::Run(Command::Propose {
                        shard: r,
                        request: ShardRequest::RollbackMerge { into: l },
                    })
                }
                other => self.still_frozen(&reason, "fencing the merge", outcome(&other)),
            },
            (Stage::RollingBack { reason, .. }, Event::Proposed(answer)) => match answer {
                Ok(ShardResponse::Merge(_)) => {
                    self.fail(reason.kind, format!("{reason}; the merge was rolled back"))
                }
                // Another coordinator of the same merge rolled it back first.
                Ok(ShardResponse::Rejected(Rejection::Merge(MergeError::NotMergingInto {
                    ..
                }))) => self.fail(
                    reason.kind,
                    format!("{reason}; the merge was rolled back (by another coordinator)"),
                ),
                other => self.still_frozen(&reason, "the rollback", outcome(&other)),
            },
            (stage, event) => {
                let step = format!("merge of shard {r} into shard {l} at {stage:?}");
                unexpected(&step, &event)
            }
        }
    }
}
