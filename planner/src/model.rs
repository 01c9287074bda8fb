//! What the planner's network sees and answers: per-shard features in, an action and a
//! split point out, learnt by imitating the simulator's look-ahead oracle (the network
//! itself is [`crate::net`]; training it, `hanse-planner-train`).
//!
//! Each shard is judged with its neighbours and the nodes it lives on ([`features`]); the
//! network answers one of [`ACTIONS`](crate::net::ACTIONS) and, for a split, which of [`SPLIT_QUANTILES`]
//! quantiles of the shard's sampled keys to split at; [`per_shard_actions`] turns those
//! answers into simulator actions. A selector head on the whole tick's features chooses
//! whose actions to take instead, the tuned heuristic's or one of the oracle's proposers'
//! ([`model_actions`]). The planner runs neither now but the scorer
//! ([`crate::candidates`]); both stay as contenders in the evaluation.

use crate::knobs::FOLLOW_SHARE_MIN;
use crate::net::{CHOICES, FEATURES, PlannerNet, SPLIT_QUANTILES, TICK_FEATURES};
use crate::sim::policy::{
    follow_workload_transfer, load_split_key, oracle_proposers, relieving_move,
};
use crate::vocab::{Action, View};

/// Ticks since a shard's last change count up to this (a live cluster runs far longer
/// than a training run; past this, age says nothing new).
const AGE_MAX: u64 = 120;
/// Actions the policy takes per tick at most.
const ACTIONS_PER_TICK: usize = 2;

/// The split point at quantile `q` (0-based, of [`SPLIT_QUANTILES`]) of the sampled keys,
/// weighted by their counts.
pub fn quantile_key(sampled: &[(u64, u64)], q: usize) -> Option<u64> {
    let total: u64 = sampled.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let want = total * (q as u64 + 1) / (SPLIT_QUANTILES as u64 + 1);
    let mut seen = 0;
    for &(key, n) in sampled {
        seen += n;
        if seen > want {
            return Some(key);
        }
    }
    sampled.last().map(|&(key, _)| key)
}

/// The quantile whose key is closest to `key`.
pub fn nearest_quantile(sampled: &[(u64, u64)], key: u64) -> usize {
    (0..SPLIT_QUANTILES)
        .min_by_key(|&q| quantile_key(sampled, q).map_or(u64::MAX, |k| k.abs_diff(key)))
        .unwrap_or(SPLIT_QUANTILES / 2)
}

/// Shard `i`'s features: its load, size and age, its neighbours', the load of the nodes
/// it lives on, how well its sampled keys split, and where its requests come from.
/// Counts are `ln(1 + x)`, loads are utilisations.
pub fn features(view: &View, i: usize) -> [f32; FEATURES] {
    let shard = &view.shards[i];
    let stats = &view.stats[i];
    let loads = view.node_load;
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let ln = |x: f64| x.max(0.0).ln_1p();
    let mb = |bytes: f64| ln(bytes / (1024.0 * 1024.0));
    let replica_max = shard.replicas.iter().map(|&r| loads[r]).fold(0.0, f64::max);
    let right = view.shards.get(i + 1);
    let right_ops = view.stats.get(i + 1).map_or(0.0, |s| s.ops());
    let left_ops = i.checked_sub(1).map_or(0.0, |l| view.stats[l].ops());
    let same_replicas = right.is_some_and(|r| {
        let mut a = shard.replicas.clone();
        let mut b = r.replicas.clone();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    });
    let total: u64 = stats.sampled.iter().map(|&(_, n)| n).sum();
    let top_share =
        stats.sampled.iter().map(|&(_, n)| n).max().unwrap_or(0) as f64 / total.max(1) as f64;
    let splittable = load_split_key(shard, stats).is_some();
    let requests: f64 = stats.origins.iter().sum();
    let leader_region = view.nodes[shard.leader].region;
    let local_share = stats.origins.get(leader_region).copied().unwrap_or(0.0) / requests.max(1.0);
    [
        // The load as a whole and its mix: a read-heavy hotspot is as hot as a
        // write-heavy one.
        ln(stats.ops()),
        stats.writes / stats.ops().max(1.0),
        stats.scans / stats.ops().max(1.0),
        mb(shard.size_bytes),
        loads[shard.leader],
        replica_max,
        mean,
        loads[shard.leader] - mean,
        ln(right_ops),
        right.map_or(0.0, |r| mb(r.size_bytes)),
        f64::from(u8::from(same_replicas)),
        ln(left_ops),
        f64::from(u8::from(splittable)),
        top_share,
        local_share,
        ln(view.tick.saturating_sub(shard.changed_at).min(AGE_MAX) as f64),
    ]
    .map(|x| x as f32)
}

pub fn tick_features(view: &View) -> [f32; TICK_FEATURES] {
    let rows: Vec<[f32; FEATURES]> = (0..view.shards.len()).map(|i| features(view, i)).collect();
    tick_features_of(&rows)
}

/// [`tick_features`] from the shards' features.
pub fn tick_features_of(rows: &[[f32; FEATURES]]) -> [f32; TICK_FEATURES] {
    let mut out = [0f32; TICK_FEATURES];
    let n = rows.len().max(1) as f32;
    for (i, row) in rows.iter().enumerate() {
        for (k, &x) in row.iter().enumerate() {
            out[k] += x / n;
            out[FEATURES + k] = if i == 0 { x } else { out[FEATURES + k].max(x) };
        }
    }
    out
}

/// One tick the oracle decided: its features and, for each of [`CHOICES`], how much the
/// cost of its rollout exceeded the tuned heuristic's (negative: cheaper).
#[derive(Debug, Clone, PartialEq)]
pub struct TickExample {
    pub features: [f32; TICK_FEATURES],
    pub advantages: [f32; CHOICES],
}

impl TickExample {
    /// From the oracle's rollout `costs` in this tick (the tuned heuristic's first, then
    /// each proposer's in order).
    pub fn new(view: &View, costs: &[f64]) -> TickExample {
        let base = costs.first().copied().unwrap_or(0.0);
        let mut advantages = [0f32; CHOICES];
        for (a, cost) in advantages.iter_mut().zip(costs) {
            *a = (cost - base) as f32;
        }
        TickExample {
            features: tick_features(view),
            advantages,
        }
    }
}

/// One training example: a shard's features, the action taken, and the split quantile
/// (meaningful for splits only).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub features: [f32; FEATURES],
    pub action: usize,
    pub quantile: usize,
}

/// The examples one tick of a teacher's decisions gives: one per shard.
pub fn examples(view: &View, actions: &[Action]) -> Vec<Example> {
    (0..view.shards.len())
        .map(|i| {
            let mut example = Example {
                features: features(view, i),
                action: 0,
                quantile: SPLIT_QUANTILES / 2,
            };
            for action in actions {
                match *action {
                    Action::Split { shard, at } if shard == i => {
                        example.action = 1;
                        example.quantile = nearest_quantile(&view.stats[i].sampled, at);
                    }
                    Action::Merge { shard } if shard == i => example.action = 2,
                    Action::TransferLeader { shard, .. } if shard == i => {
                        let toward_origin = follow_workload_transfer(view, i, FOLLOW_SHARE_MIN)
                            == Some(action.clone());
                        example.action = if toward_origin { 5 } else { 3 };
                    }
                    Action::MoveReplica { shard, .. } if shard == i => example.action = 4,
                    _ => {}
                }
            }
            example
        })
        .collect()
}

/// Why the network's answer was not used for a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfRange {
    pub shard: usize,
    pub feature: usize,
    pub value: f32,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {}'s feature {} ({}) lies outside the training data's range",
            self.shard, self.feature, self.value
        )
    }
}

/// The shards' features for `view`, refused when one lies outside the range the network
/// was trained on.
fn trusted_rows(net: &PlannerNet, view: &View) -> Result<Vec<[f32; FEATURES]>, OutOfRange> {
    let rows: Vec<[f32; FEATURES]> = (0..view.shards.len()).map(|i| features(view, i)).collect();
    match net.out_of_range(&rows) {
        Some((shard, feature)) => Err(OutOfRange {
            shard,
            feature,
            value: rows[shard][feature],
        }),
        None => Ok(rows),
    }
}

/// The network's actions for `view`: `heuristic` (the tuned heuristic's for this tick) or
/// those of the oracle proposer its selector picks (made fresh, as the oracle makes them);
/// refused as a whole when a shard's features lie outside the range the network was
/// trained on.
pub fn model_actions(
    net: &PlannerNet,
    view: &View,
    heuristic: Vec<Action>,
) -> Result<Vec<Action>, OutOfRange> {
    let rows = trusted_rows(net, view)?;
    Ok(match net.choose(&tick_features_of(&rows)) {
        0 => heuristic,
        k => oracle_proposers()[k - 1]().decide(view),
    })
}

/// The network's per-shard answers as actions, the most confident first, at most
/// [`ACTIONS_PER_TICK`]: the first design, kept as a contender in the evaluation (it
/// loses to choosing a proposer; see docs/planner.md).
pub fn per_shard_actions(net: &PlannerNet, view: &View) -> Result<Vec<Action>, OutOfRange> {
    let rows = trusted_rows(net, view)?;
    let mut answers: Vec<(usize, (usize, f64, usize))> =
        net.decide(&rows).into_iter().enumerate().collect();
    answers.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let loads = view.node_load;
    let mut actions = Vec::new();
    let mut touched = vec![false; view.shards.len()];
    for (i, (action, _, quantile)) in answers {
        if actions.len() == ACTIONS_PER_TICK {
            break;
        }
        let shard = &view.shards[i];
        let neighbour_free = !touched.get(i + 1).copied().unwrap_or(true);
        let chosen = match action {
            1 => quantile_key(&view.stats[i].sampled, quantile)
                .filter(|&at| at > shard.start && at < shard.end)
                .map(|at| Action::Split { shard: i, at }),
            // Feature 10: the right neighbour has the same replicas.
            2 if neighbour_free && rows[i][10] == 1.0 => Some(Action::Merge { shard: i }),
            3 => shard
                .replicas
                .iter()
                .copied()
                .filter(|&r| r != shard.leader)
                .min_by(|&a, &b| loads[a].total_cmp(&loads[b]))
                .map(|to| Action::TransferLeader { shard: i, to }),
            4 => relieving_move(view, i),
            5 => follow_workload_transfer(view, i, FOLLOW_SHARE_MIN),
            _ => None,
        };
        if let Some(chosen) = chosen.filter(|_| !touched[i]) {
            touched[i] = true;
            if let Action::Merge { .. } = chosen {
                touched[i + 1] = true;
            }
            actions.push(chosen);
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_sample_weights() {
        let sampled = [(10, 1), (20, 1), (30, 6)];
        assert_eq!(quantile_key(&sampled, 0), Some(20));
        assert_eq!(quantile_key(&sampled, SPLIT_QUANTILES - 1), Some(30));
        assert_eq!(quantile_key(&[], 3), None);
        assert_eq!(nearest_quantile(&sampled, 21), 0);
    }
}
