//! The size heuristic that keeps shards between sizes before the learned planner exists:
//! split a shard that grew past `split_size` at its middle key by size, merge neighbours
//! that are both small and cold (first moving replicas until both have the same set), and leave a shard alone for a cool-down after it changed
//! (so a split is not undone by a merge at once, and the other way round). A pure function
//! of the routing table, tested without a cluster; the node carries its actions out.

use std::time::Duration;

use hanse_shard::{NodeId, ReplicaRole, ShardId};

use crate::knobs::{COLD_OPS_PER_SEC, FOLLOW_SHARE_MIN, MERGE_SIZE_BYTES, SPLIT_SIZE_BYTES};
use crate::vocab::ClusterAction;

/// Whether neighbours of these sizes may merge: both below `merge_size`, and together
/// below half `split_size`, so that the merged shard does not split again soon. One rule
/// for the simulator and the live heuristic.
pub fn sizes_merge(left: f64, right: f64, split_size: f64, merge_size: f64) -> bool {
    left < merge_size && right < merge_size && (left + right) * 2.0 < split_size
}

/// The thresholds, each with why its default is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceOptions {
    /// A shard larger than this splits (default [`SPLIT_SIZE_BYTES`]).
    pub split_size_bytes: u64,
    /// Neighbours merge only when both are below this (default [`MERGE_SIZE_BYTES`]) and
    /// their sum is below half the split size (see [`sizes_merge`]).
    pub merge_size_bytes: u64,
    /// ...and when both serve fewer operations per second than this (default 50): a busy
    /// shard is worth its own leader even when small.
    pub cold_ops_per_sec: u64,
    /// A shard whose range or replicas changed less than this long ago is left alone
    /// (default 60 s), but for a split by size (see [`SIZE_SPLIT_SETTLE`]).
    pub cool_down: Duration,
}

/// How long after its last change a shard past the split size may split again. A size
/// limit is no matter of taste that a cool-down protects from flapping (the halves are
/// too large to merge back): a bulk load fills a shard within seconds, and waiting the
/// whole cool-down would hold the load that long. Long enough for the halves' leaders to
/// measure and report them (a report a second) rather than act on the parent's size.
pub const SIZE_SPLIT_SETTLE: Duration = Duration::from_secs(5);

impl Default for BalanceOptions {
    fn default() -> Self {
        BalanceOptions {
            split_size_bytes: SPLIT_SIZE_BYTES,
            merge_size_bytes: MERGE_SIZE_BYTES,
            cold_ops_per_sec: COLD_OPS_PER_SEC,
            cool_down: Duration::from_secs(60),
        }
    }
}

/// One shard as the heuristic sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub id: ShardId,
    /// Its replicas, (node, role), sorted by node: only neighbours with equal sets merge.
    pub replicas: Vec<(NodeId, ReplicaRole)>,
    pub size_bytes: u64,
    pub ops_per_sec: u64,
    /// Where a split would halve it by size, when its leader measured one.
    pub split_key: Option<Vec<u8>>,
    /// How long since its range or replicas last changed.
    pub stable_for: Duration,
    /// Frozen for a merge, or otherwise not to be touched (the meta shard).
    pub pinned: bool,
}

/// What the heuristic asks for: the planner's one action type, on a real cluster.
pub type Action = ClusterAction;

/// The actions for `shards`, the routing table in key order. Each shard takes part in at
/// most one action.
pub fn size_policy(shards: &[ShardView], options: &BalanceOptions) -> Vec<Action> {
    let settled = |s: &ShardView| !s.pinned && s.stable_for >= options.cool_down;
    let mut actions = Vec::new();
    let mut used = vec![false; shards.len()];
    let splittable =
        |s: &ShardView| !s.pinned && s.stable_for >= SIZE_SPLIT_SETTLE.min(options.cool_down);
    for (i, shard) in shards.iter().enumerate() {
        if splittable(shard)
            && shard.size_bytes > options.split_size_bytes
            && let Some(at) = &shard.split_key
        {
            actions.push(Action::Split {
                shard: shard.id,
                at: at.clone(),
            });
            used[i] = true;
        }
    }
    let small_and_cold = |s: &ShardView| {
        settled(s)
            && s.size_bytes < options.merge_size_bytes
            && s.ops_per_sec < options.cold_ops_per_sec
    };
    for i in 0..shards.len().saturating_sub(1) {
        let (left, right) = (&shards[i], &shards[i + 1]);
        if used[i] || used[i + 1] {
            continue;
        }
        let sizes = |s: &ShardView| s.size_bytes as f64;
        if small_and_cold(left)
            && small_and_cold(right)
            && sizes_merge(
                sizes(left),
                sizes(right),
                options.split_size_bytes as f64,
                options.merge_size_bytes as f64,
            )
        {
            let step = match left.replicas == right.replicas {
                true => Some(Action::Merge { shard: left.id }),
                false => align_replicas(left, right),
            };
            if let Some(step) = step {
                actions.push(step);
                used[i] = true;
                used[i + 1] = true;
            }
        }
    }
    actions
}

/// The next step that gives `right` the replicas of `left`, its merge partner (only
/// neighbours with equal replica sets merge): first add a replica where the left one has
/// one, then remove one the left one lacks, so the shard never runs with fewer replicas.
/// `None` once both have replicas on the same nodes: a role that differs on one node is
/// left to the placement rules, which give both shards the same role there.
fn align_replicas(left: &ShardView, right: &ShardView) -> Option<Action> {
    let holds = |shard: &ShardView, node: NodeId| shard.replicas.iter().any(|(n, _)| *n == node);
    if let Some(&(node, role)) = left.replicas.iter().find(|(n, _)| !holds(right, *n)) {
        return Some(Action::AddReplica {
            shard: right.id,
            node,
            role,
        });
    }
    let (node, _) = right.replicas.iter().find(|(n, _)| !holds(left, *n))?;
    Some(Action::RemoveReplica {
        shard: right.id,
        node: *node,
    })
}

/// One shard's leadership as the leader heuristic sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    pub id: ShardId,
    pub leader: Option<NodeId>,
    /// The voters that may lead it and their regions; a leader elsewhere (e.g. in the
    /// recovery region) moves to one of them.
    pub voters: Vec<(NodeId, String)>,
    /// The region most of its requests come from, if one does (see [`writers_region`]).
    pub writers: Option<String>,
    /// Not to be moved now (frozen for a merge, or changed within the cool-down).
    pub pinned: bool,
}

/// A leadership move the heuristic asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderMove {
    pub shard: ShardId,
    pub to: NodeId,
}

/// Requests per second a shard must see before its leader follows them: an idle shard's
/// few requests say nothing about where its clients are.
pub const FOLLOW_REQUESTS_MIN: u64 = 1;

/// The region that sent more than [`FOLLOW_SHARE_MIN`] of a shard's requests (`origins`:
/// requests per second by client region; untagged requests under ""), when it sent at
/// least [`FOLLOW_REQUESTS_MIN`] per second. CockroachDB's follow-the-workload, by share.
pub fn writers_region(origins: &[(String, u64)]) -> Option<String> {
    let total: u64 = origins.iter().map(|(_, n)| n).sum();
    let (region, most) = origins.iter().max_by_key(|(_, n)| *n)?;
    let leads = !region.is_empty()
        && *most >= FOLLOW_REQUESTS_MIN
        && *most as f64 > total as f64 * FOLLOW_SHARE_MIN;
    leads.then(|| region.clone())
}

/// At most `moves_max` leadership moves, in this order:
/// 1. a leader that is no eligible voter moves to one;
/// 2. with a `preferred` region, leaders go to a voter there (the one leading least);
/// 3. otherwise a shard whose requests come mostly from one region ([`LeaderView::writers`])
///    moves its leader to a voter there;
/// 4. with `spread`, the other leaders spread evenly over the nodes that hold voters, one
///    move from the busiest node to the idlest at a time, and only while they differ by
///    more than one (without it, where the planner places them by load).
pub fn leader_policy(
    shards: &[LeaderView],
    preferred: Option<&str>,
    moves_max: usize,
    spread: bool,
) -> Vec<LeaderMove> {
    let mut led: std::collections::BTreeMap<NodeId, usize> = shards
        .iter()
        .flat_map(|s| s.voters.iter().map(|(node, _)| (*node, 0)))
        .collect();
    for leader in shards.iter().filter_map(|s| s.leader) {
        *led.entry(leader).or_default() += 1;
    }
    // Moves `shard`'s leadership to the voter leading least among those `allowed`.
    let move_to = |shard: &LeaderView,
                   allowed: &dyn Fn(&(NodeId, String)) -> bool,
                   led: &mut std::collections::BTreeMap<NodeId, usize>| {
        let leader = shard.leader.expect("movable shards have a leader");
        let &(to, _) = shard
            .voters
            .iter()
            .filter(|v| v.0 != leader && allowed(v))
            .min_by_key(|(n, _)| led[n])?;
        *led.get_mut(&leader).expect("counted") -= 1;
        *led.get_mut(&to).expect("counted") += 1;
        Some(LeaderMove {
            shard: shard.id,
            to,
        })
    };
    let in_region = |shard: &LeaderView, region: &str| {
        let leader = shard.leader.expect("movable shards have a leader");
        shard
            .voters
            .iter()
            .any(|(n, r)| *n == leader && r == region)
    };
    let (mut moves, mut drawn) = (Vec::new(), Vec::new());
    let mut candidates: Vec<&LeaderView> = Vec::new();
    for shard in shards.iter().filter(|s| !s.pinned && s.leader.is_some()) {
        let leader = shard.leader.expect("filtered");
        let target = preferred.or(shard.writers.as_deref());
        if !shard.voters.iter().any(|(n, _)| *n == leader) {
            moves.extend(move_to(shard, &|_| true, &mut led));
        } else if let Some(region) = target.filter(|r| !in_region(shard, r)) {
            drawn.extend(move_to(shard, &|(_, r)| r == region, &mut led));
        } else if target.is_none() {
            candidates.push(shard);
        }
    }
    moves.append(&mut drawn);
    moves.truncate(moves_max);
    while spread && moves.len() < moves_max {
        let Some((&busiest, &most)) = led
            .iter()
            .max_by_key(|(node, n)| (**n, std::cmp::Reverse(**node)))
        else {
            break;
        };
        // A shard led by the busiest node, movable to a voter that leads fewer by two.
        let found = candidates.iter().enumerate().find_map(|(i, s)| {
            (s.leader == Some(busiest))
                .then(|| {
                    s.voters
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|n| led[n] + 1 < most)
                        .min_by_key(|n| led[n])
                        .map(|to| (i, s.id, to))
                })
                .flatten()
        });
        let Some((i, shard, to)) = found else {
            break;
        };
        candidates.remove(i);
        *led.get_mut(&busiest).expect("counted") -= 1;
        *led.get_mut(&to).expect("counted") += 1;
        moves.push(LeaderMove { shard, to });
    }
    moves
}

/// One shard's replicas as the placement rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementView {
    pub id: ShardId,
    /// (node, region, role) of each replica.
    pub replicas: Vec<(NodeId, String, ReplicaRole)>,
    pub leader: Option<NodeId>,
    /// Not to be changed now (frozen for a merge, or changed within the cool-down).
    pub pinned: bool,
}

/// A role change the placement rules ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    pub shard: ShardId,
    pub node: NodeId,
    pub role: ReplicaRole,
}

/// Voters a shard keeps outside the learner regions before one there becomes a learner:
/// three survive the loss of any one.
pub const VOTERS_MIN: usize = 3;

/// How many replicas of every shard one region holds: `voters` voters and `learners`
/// learners (a region with learners and no voters is a learner region, see
/// [`placement_policy`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRule {
    pub region: String,
    #[serde(default)]
    pub voters: usize,
    #[serde(default)]
    pub learners: usize,
}

/// The default layout: a voter in eu-hamburg and one in ap-china (the third voter goes
/// wherever the nodes are), and a learner in au-sydney, the recovery region.
pub fn default_region_rules() -> Vec<RegionRule> {
    let rule = |region: &str, voters, learners| RegionRule {
        region: region.into(),
        voters,
        learners,
    };
    vec![
        rule("eu-hamburg", 1, 0),
        rule("ap-china", 1, 0),
        rule("au-sydney", 0, 1),
    ]
}

/// The regions whose replicas are learners: those the rules give learners and no voters.
pub fn learner_regions(rules: &[RegionRule]) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.voters == 0 && r.learners > 0)
        .map(|r| r.region.clone())
        .collect()
}

/// At most `adds_max` replica additions that bring shards to the region rules: a shard
/// with fewer replicas in a region than its rule asks for gets one more, on a node of
/// that region (from `nodes`, (node, region) of the live ones) that holds none of it; a
/// voter while the region lacks voters, else a learner. One addition per shard per
/// round; nothing when the region has no such node. Extra replicas stay: removing is
/// for people (or the merge alignment) to decide.
pub fn region_policy(
    shards: &[PlacementView],
    nodes: &[(NodeId, String)],
    rules: &[RegionRule],
    adds_max: usize,
) -> Vec<Action> {
    let mut adds = Vec::new();
    for shard in shards.iter().filter(|s| !s.pinned) {
        let step = rules.iter().find_map(|rule| {
            let here: Vec<&(NodeId, String, ReplicaRole)> = shard
                .replicas
                .iter()
                .filter(|(_, region, _)| *region == rule.region)
                .collect();
            if here.len() >= rule.voters + rule.learners {
                return None;
            }
            let voters = here
                .iter()
                .filter(|(_, _, role)| *role == ReplicaRole::Voter);
            let role = match voters.count() < rule.voters {
                true => ReplicaRole::Voter,
                false => ReplicaRole::Learner,
            };
            let holds = |node: NodeId| shard.replicas.iter().any(|(n, _, _)| *n == node);
            nodes
                .iter()
                .find(|(node, region)| *region == rule.region && !holds(*node))
                .map(|(node, _)| Action::AddReplica {
                    shard: shard.id,
                    node: *node,
                    role,
                })
        });
        adds.extend(step);
        if adds.len() == adds_max {
            break;
        }
    }
    adds
}

/// At most `changes_max` role changes that bring shards to the placement rules: a
/// replica in one of `learner_regions` (the recovery region) is a learner, as long as
/// [`VOTERS_MIN`] voters remain elsewhere; a learner elsewhere becomes a voter while
/// fewer remain (beyond them, which replicas vote is the planner's: a role swap).
pub fn placement_policy(
    shards: &[PlacementView],
    learner_regions: &[String],
    changes_max: usize,
) -> Vec<RoleChange> {
    let mut changes = Vec::new();
    for shard in shards.iter().filter(|s| !s.pinned) {
        let in_learner_region = |region: &String| learner_regions.contains(region);
        let voters_elsewhere = shard
            .replicas
            .iter()
            .filter(|(_, region, role)| *role == ReplicaRole::Voter && !in_learner_region(region))
            .count();
        for (node, region, role) in &shard.replicas {
            let wanted = if !in_learner_region(region) {
                if voters_elsewhere < VOTERS_MIN {
                    ReplicaRole::Voter
                } else {
                    *role
                }
            } else if voters_elsewhere >= VOTERS_MIN && shard.leader != Some(*node) {
                ReplicaRole::Learner
            } else {
                *role
            };
            if wanted != *role {
                changes.push(RoleChange {
                    shard: shard.id,
                    node: *node,
                    role: wanted,
                });
                // One change per shard per round: the next round sees its effect.
                break;
            }
        }
        if changes.len() == changes_max {
            break;
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn placed(replicas: &[(NodeId, &str, ReplicaRole)]) -> PlacementView {
        PlacementView {
            id: 1,
            replicas: replicas
                .iter()
                .map(|(n, r, role)| (*n, r.to_string(), *role))
                .collect(),
            leader: Some(1),
            pinned: false,
        }
    }

    #[test]
    fn a_region_below_its_rule_gets_a_replica_on_a_node_of_its_own() {
        use ReplicaRole::{Learner, Voter};
        let rules = default_region_rules();
        assert_eq!(learner_regions(&rules), ["au-sydney"]);
        let nodes: Vec<(NodeId, String)> = [
            (1, "eu-hamburg"),
            (2, "ap-china"),
            (3, "au-sydney"),
            (4, "eu-hamburg"),
            (5, "au-sydney"),
        ]
        .iter()
        .map(|(n, r)| (*n, r.to_string()))
        .collect();
        // China lost its replica: node 2 gets a voter back.
        let no_china = placed(&[(1, "eu-hamburg", Voter), (3, "au-sydney", Learner)]);
        assert_eq!(
            region_policy(&[no_china], &nodes, &rules, 10),
            [Action::AddReplica {
                shard: 1,
                node: 2,
                role: Voter
            }]
        );
        // Sydney holds none: a learner there.
        let no_sydney = placed(&[(1, "eu-hamburg", Voter), (2, "ap-china", Voter)]);
        assert_eq!(
            region_policy(&[no_sydney], &nodes, &rules, 10),
            [Action::AddReplica {
                shard: 1,
                node: 3,
                role: Learner
            }]
        );
        // Every rule met (Hamburg's extra voter stays), or no node left to add: nothing.
        let full = placed(&[
            (1, "eu-hamburg", Voter),
            (4, "eu-hamburg", Voter),
            (2, "ap-china", Voter),
            (5, "au-sydney", Learner),
        ]);
        assert!(region_policy(&[full], &nodes, &rules, 10).is_empty());
        let only_china_node_taken = placed(&[(2, "ap-china", Voter), (3, "au-sydney", Voter)]);
        let hamburg_down: Vec<_> = nodes
            .iter()
            .filter(|(n, _)| *n != 1 && *n != 4)
            .cloned()
            .collect();
        assert!(region_policy(&[only_china_node_taken], &hamburg_down, &rules, 10).is_empty());
    }

    #[test]
    fn the_recovery_region_holds_learners_once_three_voters_remain_elsewhere() {
        use ReplicaRole::{Learner, Voter};
        let recovery = ["au-sydney".to_string()];
        let four = placed(&[
            (1, "eu-hamburg", Voter),
            (2, "ap-china", Voter),
            (3, "au-sydney", Voter),
            (4, "eu-hamburg", Voter),
        ]);
        assert_eq!(
            placement_policy(&[four], &recovery, 10),
            [RoleChange {
                shard: 1,
                node: 3,
                role: Learner
            }]
        );
        // Three nodes, one per region: demoting Sydney would leave two voters.
        let three = placed(&[
            (1, "eu-hamburg", Voter),
            (2, "ap-china", Voter),
            (3, "au-sydney", Voter),
        ]);
        assert!(placement_policy(&[three], &recovery, 10).is_empty());
        // A learner outside the recovery region votes again.
        let stray = placed(&[
            (1, "eu-hamburg", Voter),
            (2, "ap-china", Learner),
            (3, "au-sydney", Voter),
        ]);
        assert_eq!(
            placement_policy(&[stray], &recovery, 10),
            [RoleChange {
                shard: 1,
                node: 2,
                role: Voter
            }]
        );
        let settled = placed(&[
            (1, "eu-hamburg", Voter),
            (2, "ap-china", Voter),
            (3, "au-sydney", Learner),
            (4, "eu-hamburg", Voter),
        ]);
        assert!(placement_policy(&[settled], &recovery, 10).is_empty());
        // With three voters elsewhere, a learner outside the recovery region stays one
        // (the planner swapped roles to shorten the write quorum).
        let swapped = placed(&[
            (1, "eu-hamburg", Voter),
            (2, "ap-china", Learner),
            (4, "eu-hamburg", Voter),
            (5, "us-virginia", Voter),
        ]);
        assert!(placement_policy(&[swapped], &recovery, 10).is_empty());
    }

    fn led_by(id: ShardId, leader: NodeId) -> LeaderView {
        LeaderView {
            id,
            leader: Some(leader),
            voters: vec![
                (1, "eu-hamburg".into()),
                (2, "ap-china".into()),
                (3, "au-sydney".into()),
            ],
            writers: None,
            pinned: false,
        }
    }

    #[test]
    fn leaders_spread_evenly_one_move_at_a_time() {
        let all_on_one: Vec<_> = (1..=6).map(|id| led_by(id, 1)).collect();
        let moves = leader_policy(&all_on_one, None, 10, true);
        let to: Vec<NodeId> = moves.iter().map(|m| m.to).collect();
        assert_eq!(moves.len(), 4, "{moves:?}");
        assert_eq!(to.iter().filter(|&&n| n == 2).count(), 2);
        assert_eq!(to.iter().filter(|&&n| n == 3).count(), 2);
        assert_eq!(leader_policy(&all_on_one, None, 1, true).len(), 1);
        let balanced = [led_by(1, 1), led_by(2, 2), led_by(3, 3), led_by(4, 1)];
        assert!(leader_policy(&balanced, None, 10, true).is_empty());
    }

    #[test]
    fn a_leader_outside_the_eligible_voters_moves_first() {
        let mut in_recovery = led_by(1, 3);
        in_recovery.voters.retain(|(n, _)| *n != 3);
        let moves = leader_policy(&[in_recovery, led_by(2, 1)], None, 1, true);
        assert_eq!(moves, [LeaderMove { shard: 1, to: 2 }]);
    }

    #[test]
    fn a_preferred_region_draws_leaders_that_have_a_voter_there() {
        let mut elsewhere = led_by(2, 3);
        elsewhere.voters.retain(|(n, _)| *n != 2);
        let shards = [led_by(1, 1), elsewhere, led_by(3, 2)];
        let moves = leader_policy(&shards, Some("ap-china"), 10, true);
        assert_eq!(moves, [LeaderMove { shard: 1, to: 2 }]);
        let mut pinned = led_by(4, 1);
        pinned.pinned = true;
        assert!(leader_policy(&[pinned], Some("ap-china"), 10, true).is_empty());
    }

    #[test]
    fn a_leader_follows_the_region_most_requests_come_from() {
        let origins = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
        };
        assert_eq!(
            writers_region(&origins(&[("ap-china", 10), ("eu-hamburg", 30)])),
            Some("eu-hamburg".into())
        );
        // Not more than half, untagged, or too few to say.
        assert_eq!(
            writers_region(&origins(&[("ap-china", 30), ("eu-hamburg", 30)])),
            None
        );
        assert_eq!(
            writers_region(&origins(&[
                ("ap-china", 20),
                ("au-sydney", 10),
                ("eu-hamburg", 30)
            ])),
            None
        );
        assert_eq!(writers_region(&origins(&[("", 30)])), None);
        assert_eq!(writers_region(&origins(&[("eu-hamburg", 0)])), None);
        assert_eq!(writers_region(&[]), None);

        let mut written_from_hamburg = led_by(1, 2);
        written_from_hamburg.writers = Some("eu-hamburg".into());
        // Leaders spread evenly already; the written shard still moves, and one led from
        // its writers' region stays there.
        let mut settled = led_by(2, 1);
        settled.writers = Some("eu-hamburg".into());
        let shards = [written_from_hamburg, settled, led_by(3, 3)];
        assert_eq!(
            leader_policy(&shards, None, 10, true),
            [LeaderMove { shard: 1, to: 1 }]
        );
        // An operator's preferred region comes first.
        assert_eq!(
            leader_policy(&shards, Some("au-sydney"), 10, true),
            [
                LeaderMove { shard: 1, to: 3 },
                LeaderMove { shard: 2, to: 3 }
            ]
        );
    }

    fn shard(id: ShardId, size_mib: u64, ops: u64) -> ShardView {
        ShardView {
            id,
            replicas: vec![(1, ReplicaRole::Voter), (2, ReplicaRole::Voter)],
            size_bytes: size_mib * MIB,
            ops_per_sec: ops,
            split_key: Some(format!("key-{id}").into_bytes()),
            stable_for: Duration::from_secs(600),
            pinned: false,
        }
    }

    #[test]
    fn a_large_shard_splits_at_its_middle_key() {
        let actions = size_policy(&[shard(1, 100, 0), shard(2, 30, 0)], &Default::default());
        assert_eq!(
            actions,
            [Action::Split {
                shard: 1,
                at: b"key-1".to_vec()
            }]
        );
    }

    #[test]
    fn a_shard_past_the_split_size_splits_again_before_the_cool_down_ends() {
        let mut grown = shard(1, 100, 0);
        grown.stable_for = SIZE_SPLIT_SETTLE;
        let actions = size_policy(&[grown.clone()], &Default::default());
        assert!(
            matches!(actions[..], [Action::Split { shard: 1, .. }]),
            "{actions:?}"
        );
        // Not before its halves were measured.
        grown.stable_for = SIZE_SPLIT_SETTLE / 2;
        assert!(size_policy(&[grown], &Default::default()).is_empty());
    }

    #[test]
    fn small_cold_neighbours_with_equal_replicas_merge_pairwise() {
        let table = [
            shard(1, 1, 0),
            shard(2, 1, 0),
            shard(3, 1, 0),
            shard(4, 1, 0),
        ];
        let actions = size_policy(&table, &Default::default());
        assert_eq!(
            actions,
            [Action::Merge { shard: 1 }, Action::Merge { shard: 3 }]
        );
    }

    #[test]
    fn busy_recent_or_pinned_shards_stay() {
        let options = BalanceOptions::default();
        let busy = [shard(1, 1, 500), shard(2, 1, 0)];
        assert!(size_policy(&busy, &options).is_empty());
        let mut recent = [shard(1, 1, 0), shard(2, 1, 0)];
        recent[1].stable_for = Duration::from_secs(5);
        assert!(size_policy(&recent, &options).is_empty());
        let mut meta = [shard(1, 1, 0), shard(0, 1, 0)];
        meta[1].pinned = true;
        assert!(size_policy(&meta, &options).is_empty());
        // Two neighbours whose sum would be near the split size stay apart.
        let options = BalanceOptions {
            merge_size_bytes: 40 * MIB,
            ..BalanceOptions::default()
        };
        assert!(size_policy(&[shard(1, 30, 0), shard(2, 30, 0)], &options).is_empty());
    }

    #[test]
    fn neighbours_on_different_nodes_first_get_the_same_replicas() {
        use ReplicaRole::{Learner, Voter};
        let options = BalanceOptions::default();
        let mut table = [shard(1, 1, 0), shard(2, 1, 0)];
        table[0].replicas = vec![(1, Voter), (2, Voter), (4, Learner)];
        table[1].replicas = vec![(1, Voter), (3, Voter)];
        let mut steps = Vec::new();
        loop {
            let action = size_policy(&table, &options).remove(0);
            match &action {
                Action::AddReplica { node, role, .. } => {
                    table[1].replicas.push((*node, *role));
                    table[1].replicas.sort_by_key(|(n, _)| *n);
                }
                Action::RemoveReplica { node, .. } => table[1].replicas.retain(|(n, _)| n != node),
                _ => break,
            }
            steps.push(action);
        }
        assert_eq!(
            steps,
            [
                Action::AddReplica {
                    shard: 2,
                    node: 2,
                    role: Voter
                },
                Action::AddReplica {
                    shard: 2,
                    node: 4,
                    role: Learner
                },
                Action::RemoveReplica { shard: 2, node: 3 },
            ]
        );
        assert_eq!(table[0].replicas, table[1].replicas);
        // Same nodes, one role apart: nothing here, so the placement rules get their turn.
        table[1].replicas[2].1 = Voter;
        assert!(size_policy(&table, &options).is_empty());
    }

    #[test]
    fn a_large_shard_without_a_measured_middle_waits() {
        let mut big = shard(1, 100, 0);
        big.split_key = None;
        assert!(size_policy(&[big], &Default::default()).is_empty());
    }
}
