//! The safety envelope: hard rules every policy's actions pass through, the heuristics',
//! the network's and the oracle's alike, so that no policy wins by breaking them.
//!
//! - A shard smaller than `split_size_min` is not split (its halves would only merge back).
//! - Two neighbours merge only when together they stay under `merge_size_max` (the size
//!   rule would split the result again) and have the same voters and learners.
//! - Cool-down: a shard split or merged within `cool_down_ticks` is not merged, and one
//!   merged within it is not split, so a range does not flap.
//! - At most `actions_per_tick_max` actions per tick, and at most one per shard (a merge
//!   counts for both shards).
//! - Placement: a leader moves only to a replica; a replica moves only to a node that holds
//!   none of the shard, and never so that the shard spans fewer regions than before; a
//!   role swap promotes a learner and demotes a voter other than the leader, and leaves
//!   the voters spanning as many regions.

use std::collections::HashSet;
use std::fmt;

use crate::knobs::COLD_OPS_PER_SEC;
use crate::vocab::{Action, Policy, View};

/// The envelope's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub split_size_min: f64,
    pub merge_size_max: f64,
    pub cool_down_ticks: u64,
    pub actions_per_tick_max: usize,
}

impl Default for Envelope {
    /// A 1 MiB floor for splits, the 96 MiB split size as the merge ceiling, half a
    /// minute of cool-down and the live balancer's four actions per round.
    fn default() -> Self {
        Envelope {
            split_size_min: 1024.0 * 1024.0,
            merge_size_max: crate::knobs::SPLIT_SIZE_BYTES as f64,
            cool_down_ticks: 30,
            actions_per_tick_max: 4,
        }
    }
}

/// Why the envelope refused an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NoSuchShard,
    /// The shard (or a merge's neighbour) already has an action this tick.
    ShardBusy,
    TooManyActions,
    SplitKeyOutsideRange,
    TooSmallToSplit,
    TooLargeToMerge,
    TooBusyToMerge,
    ReplicasDiffer,
    CoolingDown,
    NotAReplica,
    AlreadyAReplica,
    FewerRegions,
    NotALearner,
    DemotesTheLeader,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NoSuchShard => "no such shard",
            Refusal::ShardBusy => "the shard already has an action this tick",
            Refusal::TooManyActions => "the tick's action limit is reached",
            Refusal::SplitKeyOutsideRange => "the split key is not inside the shard",
            Refusal::TooSmallToSplit => "the shard is below the minimum split size",
            Refusal::TooLargeToMerge => "the merged shard would exceed the merge size limit",
            Refusal::TooBusyToMerge => "a busy shard keeps its own leader (merges stall both)",
            Refusal::ReplicasDiffer => "the neighbours' replicas differ",
            Refusal::CoolingDown => "the range changed within the cool-down",
            Refusal::NotAReplica => "the node holds no replica of the shard",
            Refusal::AlreadyAReplica => "the target node already holds a replica",
            Refusal::FewerRegions => "the shard would span fewer regions",
            Refusal::NotALearner => "the node to promote holds no learner of the shard",
            Refusal::DemotesTheLeader => "the leader cannot become a learner",
        })
    }
}

impl Envelope {
    /// The actions of `proposed` that keep to the envelope, in order, and the others with
    /// the reason each was refused.
    pub fn admit(
        &self,
        view: &View,
        proposed: Vec<Action>,
    ) -> (Vec<Action>, Vec<(Action, Refusal)>) {
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        let mut busy = HashSet::new();
        for action in proposed {
            let verdict = if admitted.len() >= self.actions_per_tick_max {
                Err(Refusal::TooManyActions)
            } else {
                self.check(view, &action, &busy)
            };
            match verdict {
                Ok(()) => {
                    busy.extend(touched(&action));
                    admitted.push(action);
                }
                Err(reason) => refused.push((action, reason)),
            }
        }
        (admitted, refused)
    }

    fn check(&self, view: &View, action: &Action, busy: &HashSet<usize>) -> Result<(), Refusal> {
        if touched(action).iter().any(|s| busy.contains(s)) {
            return Err(Refusal::ShardBusy);
        }
        let index = touched(action)[0];
        let shard = view.shards.get(index).ok_or(Refusal::NoSuchShard)?;
        let cooling = |changed_at: Option<u64>| {
            changed_at.is_some_and(|at| view.tick < at + self.cool_down_ticks)
        };
        match *action {
            Action::Split { at, .. } => {
                if at <= shard.start || at >= shard.end {
                    return Err(Refusal::SplitKeyOutsideRange);
                }
                if shard.size_bytes < self.split_size_min {
                    return Err(Refusal::TooSmallToSplit);
                }
                if cooling(shard.merged_at) {
                    return Err(Refusal::CoolingDown);
                }
            }
            Action::Merge { .. } => {
                let right = view.shards.get(index + 1).ok_or(Refusal::NoSuchShard)?;
                if !same_set(&shard.replicas, &right.replicas)
                    || !same_set(&shard.learners, &right.learners)
                {
                    return Err(Refusal::ReplicasDiffer);
                }
                if shard.size_bytes + right.size_bytes > self.merge_size_max {
                    return Err(Refusal::TooLargeToMerge);
                }
                let busy = |i: usize| {
                    view.stats
                        .get(i)
                        .is_some_and(|s| s.ops() >= COLD_OPS_PER_SEC as f64)
                };
                if busy(index) || busy(index + 1) {
                    return Err(Refusal::TooBusyToMerge);
                }
                if cooling(Some(shard.changed_at)) || cooling(Some(right.changed_at)) {
                    return Err(Refusal::CoolingDown);
                }
            }
            Action::TransferLeader { to, .. } => {
                if !shard.replicas.contains(&to) || to == shard.leader {
                    return Err(Refusal::NotAReplica);
                }
            }
            Action::MoveReplica { from, to, .. } => {
                if !shard.replicas.contains(&from) || to >= view.nodes.len() {
                    return Err(Refusal::NotAReplica);
                }
                if shard.replicas.contains(&to) || shard.learners.contains(&to) {
                    return Err(Refusal::AlreadyAReplica);
                }
                let before = regions_of(view, shard.replicas.iter().copied());
                let after = regions_of(
                    view,
                    shard
                        .replicas
                        .iter()
                        .map(|&r| if r == from { to } else { r }),
                );
                if after < before {
                    return Err(Refusal::FewerRegions);
                }
            }
            Action::AddReplica { node, .. } => {
                if node >= view.nodes.len() {
                    return Err(Refusal::NotAReplica);
                }
                if shard.replicas.contains(&node) || shard.learners.contains(&node) {
                    return Err(Refusal::AlreadyAReplica);
                }
            }
            // A learner goes freely: it holds no vote and no region's spread.
            Action::RemoveReplica { node, .. } if shard.learners.contains(&node) => {}
            Action::RemoveReplica { node, .. } => {
                if !shard.replicas.contains(&node) || node == shard.leader {
                    return Err(Refusal::NotAReplica);
                }
                let before = regions_of(view, shard.replicas.iter().copied());
                let after = regions_of(view, shard.replicas.iter().copied().filter(|&r| r != node));
                if after < before {
                    return Err(Refusal::FewerRegions);
                }
            }
            Action::SwapRoles {
                promote, demote, ..
            } => {
                if !shard.learners.contains(&promote) {
                    return Err(Refusal::NotALearner);
                }
                if !shard.replicas.contains(&demote) {
                    return Err(Refusal::NotAReplica);
                }
                if demote == shard.leader {
                    return Err(Refusal::DemotesTheLeader);
                }
                let swapped = shard.voters_swapped(promote, demote).into_iter();
                if regions_of(view, swapped) < regions_of(view, shard.replicas.iter().copied()) {
                    return Err(Refusal::FewerRegions);
                }
            }
        }
        Ok(())
    }

    /// `policy` with every decision passed through this envelope.
    pub fn guard<P: Policy>(&self, policy: P) -> Guarded<P> {
        Guarded {
            policy,
            envelope: self.clone(),
        }
    }
}

/// How many regions `nodes` span.
pub(crate) fn regions_of(view: &View, nodes: impl Iterator<Item = usize>) -> usize {
    nodes
        .map(|n| view.nodes[n].region)
        .collect::<HashSet<_>>()
        .len()
}

/// The shard indices an action acts on: its shard, and a merge's right neighbour.
pub(crate) fn touched(action: &Action) -> Vec<usize> {
    match *action {
        Action::Merge { shard } => vec![shard, shard + 1],
        _ => vec![action.shard()],
    }
}

pub(crate) fn same_set(a: &[usize], b: &[usize]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// A policy whose decisions pass through an envelope; it keeps the policy's name.
#[derive(Clone)]
pub struct Guarded<P> {
    pub policy: P,
    envelope: Envelope,
}

impl<P: Policy> Policy for Guarded<P> {
    fn name(&self) -> String {
        self.policy.name()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        let proposed = self.policy.decide(view);
        self.envelope.admit(view, proposed).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::workload::Family;
    use crate::sim::{Scenario, Sim};
    use crate::vocab::{FnPolicy, KEY_SPACE, Node, Shard, ShardStats};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const MIB: f64 = 1024.0 * 1024.0;

    fn nodes() -> Vec<Node> {
        (0..6)
            .map(|i| Node {
                region: i % 3,
                capacity: 1.0,
            })
            .collect()
    }

    fn shard(start: u64, end: u64, mib: f64, replicas: &[usize]) -> Shard {
        Shard {
            start,
            end,
            size_bytes: mib * MIB,
            replicas: replicas.to_vec(),
            leader: replicas[0],
            learners: Vec::new(),
            changed_at: 0,
            merged_at: None,
        }
    }

    fn swap(shard: usize, promote: usize, demote: usize) -> Action {
        Action::SwapRoles {
            shard,
            promote,
            demote,
        }
    }

    fn admit(shards: &[Shard], tick: u64, actions: Vec<Action>) -> Vec<Option<Refusal>> {
        admit_with(
            shards,
            &vec![ShardStats::default(); shards.len()],
            tick,
            actions,
        )
    }

    fn admit_with(
        shards: &[Shard],
        stats: &[ShardStats],
        tick: u64,
        actions: Vec<Action>,
    ) -> Vec<Option<Refusal>> {
        let nodes = nodes();
        let load = vec![0.0; nodes.len()];
        let view = View {
            tick,
            nodes: &nodes,
            shards,
            stats,
            node_load: &load,
            region_latency_ms: &[],
        };
        let (admitted, refused) = Envelope::default().admit(&view, actions.clone());
        actions
            .iter()
            .map(|a| {
                if admitted.contains(a) {
                    None
                } else {
                    refused
                        .iter()
                        .find(|(r, _)| r == a)
                        .map(|(_, why)| why.clone())
                }
            })
            .collect()
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let mut shards = vec![
            shard(0, 100, 10.0, &[0, 1, 2]),
            shard(100, 200, 0.5, &[0, 1, 2]),
            shard(200, 300, 90.0, &[0, 1, 2]),
            shard(300, 400, 10.0, &[3, 4, 5]),
        ];
        shards[0].changed_at = 95;
        let cases = [
            (
                Action::Split { shard: 1, at: 150 },
                Refusal::TooSmallToSplit,
            ),
            (Action::Merge { shard: 0 }, Refusal::CoolingDown),
            (Action::Merge { shard: 2 }, Refusal::ReplicasDiffer),
            (
                Action::Split { shard: 2, at: 300 },
                Refusal::SplitKeyOutsideRange,
            ),
            // Node 1 is in region 1 like node 4: the shard would lose region 0.
            (
                Action::MoveReplica {
                    shard: 3,
                    from: 3,
                    to: 1,
                },
                Refusal::FewerRegions,
            ),
            (
                Action::MoveReplica {
                    shard: 3,
                    from: 3,
                    to: 4,
                },
                Refusal::AlreadyAReplica,
            ),
            (
                Action::TransferLeader { shard: 3, to: 1 },
                Refusal::NotAReplica,
            ),
            (Action::Split { shard: 7, at: 1 }, Refusal::NoSuchShard),
            (swap(1, 3, 1), Refusal::NotALearner),
        ];
        for (action, reason) in cases {
            assert_eq!(
                admit(&shards, 100, vec![action.clone()]),
                vec![Some(reason)],
                "{action:?}"
            );
        }
        // Node 3 is in region 0 like the leader: voting instead of node 1 would leave
        // region 1 without a voter.
        shards[1].learners = vec![3];
        assert_eq!(
            admit(&shards, 100, vec![swap(1, 3, 1)]),
            vec![Some(Refusal::FewerRegions)]
        );
        shards[1].replicas = vec![0, 1, 3];
        shards[1].learners = vec![2];
        assert_eq!(
            admit(&shards, 100, vec![swap(1, 2, 0)]),
            vec![Some(Refusal::DemotesTheLeader)]
        );
        assert_eq!(
            admit(&shards, 100, vec![swap(1, 2, 5)]),
            vec![Some(Refusal::NotAReplica)]
        );
        assert_eq!(admit(&shards, 100, vec![swap(1, 2, 3)]), vec![None]);
        shards[1].replicas = vec![0, 1, 2];
        shards[1].learners = Vec::new();
        shards[3].replicas = vec![0, 1, 2];
        shards[2].size_bytes = 90.0 * MIB;
        assert_eq!(
            admit(&shards, 100, vec![Action::Merge { shard: 2 }]),
            vec![Some(Refusal::TooLargeToMerge)]
        );
        shards[2].size_bytes = 10.0 * MIB;
        let mut stats = vec![ShardStats::default(); shards.len()];
        stats[3].reads = COLD_OPS_PER_SEC as f64;
        assert_eq!(
            admit_with(&shards, &stats, 100, vec![Action::Merge { shard: 2 }]),
            vec![Some(Refusal::TooBusyToMerge)],
            "a small shard as busy as the cold limit keeps its leader"
        );
        stats[3].reads = COLD_OPS_PER_SEC as f64 - 1.0;
        assert_eq!(
            admit_with(&shards, &stats, 100, vec![Action::Merge { shard: 2 }]),
            vec![None]
        );
        shards[2].merged_at = Some(80);
        assert_eq!(
            admit(&shards, 100, vec![Action::Split { shard: 2, at: 250 }]),
            vec![Some(Refusal::CoolingDown)],
            "a range merged within the cool-down is not split"
        );
        assert_eq!(
            admit(&shards, 110, vec![Action::Split { shard: 2, at: 250 }]),
            vec![None]
        );
    }

    #[test]
    fn one_action_per_shard_and_a_limit_per_tick() {
        let shards: Vec<Shard> = (0..8)
            .map(|i| shard(i * 100, i * 100 + 100, 10.0, &[0, 1, 2]))
            .collect();
        let mut actions = vec![
            Action::Merge { shard: 0 },
            Action::Split { shard: 1, at: 150 },
        ];
        actions.extend((2..8).map(|i| Action::TransferLeader { shard: i, to: 1 }));
        let verdicts = admit(&shards, 100, actions);
        assert_eq!(verdicts[0], None);
        assert_eq!(verdicts[1], Some(Refusal::ShardBusy));
        assert_eq!(verdicts[2..5], [None, None, None]);
        assert!(
            verdicts[5..]
                .iter()
                .all(|v| *v == Some(Refusal::TooManyActions))
        );
    }

    /// Proposes anything at all: random kinds, shards, keys and nodes, valid or not.
    struct Reckless(StdRng);

    impl Policy for Reckless {
        fn name(&self) -> String {
            "reckless".into()
        }

        fn decide(&mut self, view: &View) -> Vec<Action> {
            let rng = &mut self.0;
            let count = rng.random_range(0..10);
            (0..count)
                .map(|_| {
                    let shard = rng.random_range(0..view.shards.len() + 2);
                    let node = rng.random_range(0..view.nodes.len() + 1);
                    let other = rng.random_range(0..view.nodes.len());
                    match rng.random_range(0..5) {
                        0 => Action::Split {
                            shard,
                            at: rng.random_range(0..KEY_SPACE),
                        },
                        1 => Action::Merge { shard },
                        2 => Action::TransferLeader { shard, to: node },
                        3 => Action::SwapRoles {
                            shard,
                            promote: other,
                            demote: node,
                        },
                        _ => Action::MoveReplica {
                            shard,
                            from: other,
                            to: node,
                        },
                    }
                })
                .collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Whatever a policy proposes, what passes the envelope keeps every rule, checked
        /// here on the cluster the actions leave behind, tick after tick.
        #[test]
        fn nothing_that_passes_breaks_the_envelope(seed in 0u64..1_000, family in 0usize..4) {
            let family = [Family::ZipfianA, Family::MovingHotspot { speed: 0.002 }, Family::Uniform, Family::FollowerReads][family];
            let envelope = Envelope::default();
            let scenario = Scenario { ticks: 80, requests_per_tick: 200, ..Scenario::for_family(family, seed) };
            let regions = |s: &Shard, nodes: &[Node]| {
                s.replicas.iter().map(|&r| nodes[r].region).collect::<HashSet<_>>().len()
            };
            let nodes = scenario.nodes.clone();
            let mut previous: Option<Vec<Shard>> = None;
            let mut policy = envelope.guard(Reckless(StdRng::seed_from_u64(seed)));
            let mut checked = 0;
            let mut observe = |view: &View| {
                let actions = policy.decide(view);
                prop_assert!(actions.len() <= envelope.actions_per_tick_max);
                for s in view.shards {
                    prop_assert!(s.replicas.contains(&s.leader));
                    prop_assert_eq!(regions(s, &nodes), 3, "voters spread over the regions");
                    prop_assert!(s.learners.iter().all(|l| !s.replicas.contains(l)), "a learner does not vote");
                }
                if let Some(before) = &previous {
                    // A shard that is new this tick came from a split or a merge: its
                    // parents were large enough to split, or small enough to merge.
                    for s in view.shards.iter().filter(|s| s.changed_at + 1 == view.tick) {
                        let parents: Vec<&Shard> = before.iter().filter(|p| p.start < s.end && s.start < p.end).collect();
                        if parents.len() > 1 {
                            let size: f64 = parents.iter().map(|p| p.size_bytes).sum();
                            prop_assert!(size <= envelope.merge_size_max);
                            prop_assert!(parents.iter().all(|p| p.changed_at + envelope.cool_down_ticks < view.tick));
                        } else if parents[0].end != s.end || parents[0].start != s.start {
                            prop_assert!(parents[0].size_bytes >= envelope.split_size_min);
                            prop_assert!(parents[0].merged_at.is_none_or(|at| at + envelope.cool_down_ticks < view.tick));
                        }
                    }
                }
                previous = Some(view.shards.to_vec());
                checked += 1;
                Ok(actions)
            };
            let mut failure = None;
            let outcome = Sim::new(scenario).run(&mut FnPolicy(&mut |view: &View| {
                match observe(view) {
                    Ok(actions) => actions,
                    Err(e) => {
                        failure.get_or_insert(e);
                        Vec::new()
                    }
                }
            }));
            if let Some(e) = failure {
                return Err(e);
            }
            prop_assert_eq!(checked, 80);
            prop_assert!(outcome.splits > 0, "some reckless splits passed");
            prop_assert_eq!(outcome.refused, 0, "the simulator accepts everything the envelope admits");
        }
    }
}
