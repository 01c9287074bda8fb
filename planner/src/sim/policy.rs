//! Heuristic policies, written from the rules TiKV and CockroachDB publish, and the floor
//! that never splits by load.
//!
//! - **Size only** (the floor): split a shard past `split_bytes` in the middle of its
//!   range; merge small, cold neighbours.
//! - **TiKV-style** ([`LoadSplit::tikv`]): the same size rules, plus TiKV's load-based
//!   split: a shard over `qps_threshold` for `detect_ticks` ticks in a row splits at the
//!   sampled key that best balances its requests (balance score `|left - right| / (left +
//!   right)` under 0.25) without cutting through many of them (contained score under 0.5),
//!   and PD merges small, cold neighbours only `merge_interval` ticks after a split.
//! - **CockroachDB-style** ([`LoadSplit::cockroach`]): split on load with the same finder
//!   after a single tick over the threshold, and merge only when the shards' highest load
//!   over the last `merge_memory` ticks (five minutes) was below half the threshold.
//!
//! Both also move load the way PD's hot-region scheduler and CockroachDB's load-based
//! lease rebalancing do: when the busiest node carries over 1.2 times the mean, the
//! leadership of its hottest shard goes to that shard's least loaded replica, if that
//! lowers the peak (one transfer per tick). Splitting alone moves nothing: both halves
//! keep their parent's leader.

use std::collections::{HashMap, VecDeque};

use super::{Action, Policy, Shard, ShardStats, View, action_shard};
use crate::envelope::Envelope;

/// Splits a shard past this size (TiKV's region-split-size, 96 MiB).
const SPLIT_BYTES: f64 = 96.0 * 1024.0 * 1024.0;
/// Merges neighbours both under this size (PD's max-merge-region-size, 20 MiB).
const MERGE_BYTES: f64 = 20.0 * 1024.0 * 1024.0;
/// TiKV's split.split-balance-score and split.split-contained-score.
pub const BALANCE_SCORE_MAX: f64 = 0.25;
pub const CONTAINED_SCORE_MAX: f64 = 0.5;

/// The sampled key that splits a shard's load best, by TiKV's rule: among the sampled keys
/// whose balance score is below [`BALANCE_SCORE_MAX`] and contained score below
/// [`CONTAINED_SCORE_MAX`], the one with the smallest balance score.
pub fn load_split_key(shard: &Shard, stats: &ShardStats) -> Option<u64> {
    let total: u64 = stats.sampled.iter().map(|&(_, n)| n).sum();
    let mut best: Option<(f64, u64)> = None;
    for (i, &(key, _)) in stats.sampled.iter().enumerate() {
        if key <= shard.start || key >= shard.end {
            continue;
        }
        let left: u64 = stats
            .sampled
            .iter()
            .filter(|&&(k, _)| k < key)
            .map(|&(_, n)| n)
            .sum();
        let right = total - left;
        let contained = stats.crossing.get(i).copied().unwrap_or(0);
        if left + right == 0 {
            continue;
        }
        let balance = left.abs_diff(right) as f64 / (left + right) as f64;
        let contained_score = contained as f64 / (left + right + contained) as f64;
        if balance < BALANCE_SCORE_MAX
            && contained_score < CONTAINED_SCORE_MAX
            && best.is_none_or(|(b, _)| balance < b)
        {
            best = Some((balance, key));
        }
    }
    best.map(|(_, key)| key)
}

/// Size splits and merges of small, cold neighbours: what every policy does, and all the
/// floor does.
fn size_actions(view: &View, merge_allowed: impl Fn(usize) -> bool) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut touched = vec![false; view.shards.len()];
    for (i, shard) in view.shards.iter().enumerate() {
        if shard.size_bytes > SPLIT_BYTES {
            let at = shard.start + (shard.end - shard.start) / 2;
            actions.push(Action::Split { shard: i, at });
            touched[i] = true;
        }
    }
    for i in 0..view.shards.len().saturating_sub(1) {
        let (left, right) = (&view.shards[i], &view.shards[i + 1]);
        if touched[i] || touched[i + 1] {
            continue;
        }
        let small = left.size_bytes + right.size_bytes < MERGE_BYTES * 2.0
            && left.size_bytes < MERGE_BYTES
            && right.size_bytes < MERGE_BYTES;
        if small && merge_allowed(i) && merge_allowed(i + 1) {
            actions.push(Action::Merge { shard: i });
            touched[i] = true;
            touched[i + 1] = true;
        }
    }
    actions
}

/// The leader transfer that best relieves the busiest node, if it carries over 1.2 times
/// the mean load and a transfer lowers its peak.
pub fn hot_leader_transfer(view: &View) -> Option<Action> {
    let loads = view.node_load;
    let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
    let (busiest, &peak) = loads.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    if peak <= mean * 1.2 {
        return None;
    }
    let capacity = view.nodes[busiest].capacity;
    let mut best: Option<(f64, Action)> = None;
    for (i, (shard, stats)) in view.shards.iter().zip(view.stats).enumerate() {
        if shard.leader != busiest {
            continue;
        }
        let share = stats.ops() / capacity;
        for &to in shard.replicas.iter().filter(|&&r| r != busiest) {
            let after = (peak - share).max(loads[to] + share);
            if after < peak && best.as_ref().is_none_or(|(b, _)| after < *b) {
                best = Some((after, Action::TransferLeader { shard: i, to }));
            }
        }
    }
    best.map(|(_, action)| action)
}

/// The leadership move CockroachDB's follow-the-workload lease placement would make for
/// shard `i`: to its replica in the region most of its requests come from, when that
/// region sends over `share_min` of them and the leader is elsewhere.
pub fn follow_workload_transfer(view: &View, i: usize, share_min: f64) -> Option<Action> {
    let shard = &view.shards[i];
    let origins = &view.stats[i].origins;
    let total: f64 = origins.iter().sum();
    let (region, &requests) = origins
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if total <= 0.0 || requests / total <= share_min {
        return None;
    }
    if view.nodes[shard.leader].region == region {
        return None;
    }
    let to = shard
        .replicas
        .iter()
        .copied()
        .filter(|&r| view.nodes[r].region == region)
        .min_by(|&a, &b| view.node_load[a].total_cmp(&view.node_load[b]))?;
    Some(Action::TransferLeader { shard: i, to })
}

/// A load-split rule plus follow-the-workload: each tick, up to `moves_max` shards whose
/// requests come mostly from another region than their leader's get a leader there.
#[derive(Debug, Clone)]
pub struct FollowWorkload {
    pub inner: LoadSplit,
    /// The share of a shard's requests one region must send.
    pub share_min: f64,
    pub moves_max: usize,
}

impl FollowWorkload {
    /// CockroachDB's load split with its lease preference for the busiest region.
    pub fn cockroach() -> Self {
        FollowWorkload {
            inner: LoadSplit::cockroach(),
            share_min: 0.5,
            moves_max: 2,
        }
    }
}

impl Policy for FollowWorkload {
    fn name(&self) -> String {
        format!("{}-follow", self.inner.name)
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        let mut actions = self.inner.decide(view);
        let busy: Vec<usize> = actions.iter().map(action_shard).collect();
        let transfers: Vec<Action> = (0..view.shards.len())
            .filter(|i| !busy.contains(i) && !busy.contains(&(i + 1)))
            .filter_map(|i| follow_workload_transfer(view, i, self.share_min))
            .take(self.moves_max)
            .collect();
        actions.extend(transfers);
        actions
    }
}

/// How many policies the oracle chooses among.
pub const PROPOSERS: usize = 4;

/// What the look-ahead oracle (and the network's selector) chooses among, each made fresh:
/// the floor, TiKV-style splitting after one hot tick, CockroachDB-style, and
/// CockroachDB-style with follow-the-workload; each inside the envelope like every other
/// policy.
pub fn oracle_proposers() -> [Box<dyn Fn() -> Box<dyn Policy>>; PROPOSERS] {
    let guarded = |policy: Box<dyn Policy>| Box::new(Envelope::default().guard(policy));
    [
        Box::new(move || guarded(Box::new(SizeOnly)) as Box<dyn Policy>),
        Box::new(move || {
            guarded(Box::new(LoadSplit::tikv().with_thresholds(1_200.0, 1))) as Box<dyn Policy>
        }),
        Box::new(move || guarded(Box::new(LoadSplit::cockroach())) as Box<dyn Policy>),
        Box::new(move || guarded(Box::new(FollowWorkload::cockroach())) as Box<dyn Policy>),
    ]
}

/// The floor: never splits by load.
#[derive(Debug, Default)]
pub struct SizeOnly;

impl Policy for SizeOnly {
    fn name(&self) -> String {
        "size-only".into()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        size_actions(view, |_| true)
    }
}

/// Load-based splitting in the manner of TiKV or CockroachDB; the thresholds are fields
/// so that a grid search can tune them.
#[derive(Debug, Clone)]
pub struct LoadSplit {
    pub name: String,
    /// Requests per tick above which a shard is hot.
    pub qps_threshold: f64,
    /// Consecutive hot ticks before it splits.
    pub detect_ticks: u32,
    /// Ticks after a split or merge before a shard may merge (PD's split-merge interval).
    pub merge_interval: u64,
    /// Ticks of load history a merge looks back over (0: none).
    pub merge_memory: usize,
    /// Hot ticks in a row per shard, by its start key.
    hot_for: HashMap<u64, u32>,
    /// Recent load per shard, by its start key.
    history: HashMap<u64, VecDeque<f64>>,
}

impl LoadSplit {
    fn new(name: &str, qps_threshold: f64, detect_ticks: u32, merge_interval: u64) -> Self {
        LoadSplit {
            name: name.into(),
            qps_threshold,
            detect_ticks,
            merge_interval,
            merge_memory: 0,
            hot_for: HashMap::new(),
            history: HashMap::new(),
        }
    }

    /// TiKV's defaults, scaled to the simulated nodes (split.qps-threshold 3,000 of a
    /// node's roughly 10,000; 10 detections; an hour's split-merge interval as 60 ticks).
    pub fn tikv() -> Self {
        LoadSplit::new("tikv", 1_200.0, 10, 60)
    }

    /// CockroachDB's rule: split after one tick over its 2,500 QPS (scaled like TiKV's),
    /// merge only after five minutes (300 ticks) of low load.
    pub fn cockroach() -> Self {
        LoadSplit {
            merge_memory: 300,
            ..LoadSplit::new("cockroach", 1_000.0, 1, 0)
        }
    }

    /// The CockroachDB-style rule with the thresholds the grid search in `hanse planner
    /// eval` picked on the training families (2026-11-27: 600 requests per tick for 3
    /// ticks): the planner's fallback.
    pub fn tuned() -> Self {
        LoadSplit::cockroach().with_thresholds(600.0, 3)
    }

    /// The same rule with other thresholds (for tuning).
    pub fn with_thresholds(&self, qps_threshold: f64, detect_ticks: u32) -> Self {
        LoadSplit {
            name: format!("{}-tuned", self.name),
            qps_threshold,
            detect_ticks,
            ..self.clone()
        }
    }
}

impl Policy for LoadSplit {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        let mut hot_for = HashMap::new();
        let mut history = HashMap::new();
        let mut load_splits = Vec::new();
        for (i, (shard, stats)) in view.shards.iter().zip(view.stats).enumerate() {
            let hot = stats.ops() > self.qps_threshold;
            let streak = if hot {
                self.hot_for.get(&shard.start).copied().unwrap_or(0) + 1
            } else {
                0
            };
            let mut recent = self.history.remove(&shard.start).unwrap_or_default();
            recent.push_back(stats.ops());
            while recent.len() > self.merge_memory.max(1) {
                recent.pop_front();
            }
            history.insert(shard.start, recent);
            if streak >= self.detect_ticks
                && let Some(at) = load_split_key(shard, stats)
            {
                load_splits.push(Action::Split { shard: i, at });
                continue;
            }
            hot_for.insert(shard.start, streak);
        }
        self.hot_for = hot_for;
        self.history = history;
        let calm = |i: usize| {
            let shard = &view.shards[i];
            let settled = view.tick >= shard.changed_at + self.merge_interval;
            let quiet = self.history.get(&shard.start).is_some_and(|recent| {
                recent.iter().cloned().fold(0.0, f64::max) < self.qps_threshold / 2.0
            });
            settled && quiet
        };
        let split: Vec<usize> = load_splits
            .iter()
            .filter_map(|a| match a {
                Action::Split { shard, .. } => Some(*shard),
                _ => None,
            })
            .collect();
        let mut actions = load_splits;
        if let Some(transfer) = hot_leader_transfer(view) {
            actions.push(transfer);
        }
        // Size rules for the shards not split by load this tick.
        actions.extend(size_actions(view, calm).into_iter().filter(|a| match a {
            Action::Split { shard, .. } => !split.contains(shard),
            Action::Merge { shard } => !split.contains(shard) && !split.contains(&(shard + 1)),
            _ => true,
        }));
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(start: u64, end: u64) -> Shard {
        Shard {
            start,
            end,
            size_bytes: 1.0,
            replicas: vec![0, 1, 2],
            leader: 0,
            changed_at: 0,
            merged_at: None,
        }
    }

    fn stats(sampled: &[(u64, u64)], crossing: &[u64]) -> ShardStats {
        ShardStats {
            sampled: sampled.to_vec(),
            crossing: crossing.to_vec(),
            ..ShardStats::default()
        }
    }

    #[test]
    fn the_leader_follows_the_region_most_requests_come_from() {
        use super::super::Node;
        let nodes: Vec<Node> = (0..6)
            .map(|i| Node {
                region: i % 3,
                capacity: 1.0,
            })
            .collect();
        let shards = [shard(0, 100), shard(100, 200)];
        let origins = |o: [f64; 3]| ShardStats {
            origins: o.to_vec(),
            ..ShardStats::default()
        };
        // Shard 0: 70 % from region 2 (replica node 2). Shard 1: no region over half.
        let stats = [origins([20.0, 10.0, 70.0]), origins([40.0, 35.0, 25.0])];
        let view = View {
            tick: 5,
            nodes: &nodes,
            shards: &shards,
            stats: &stats,
            node_load: &[0.0; 6],
        };
        assert_eq!(
            follow_workload_transfer(&view, 0, 0.5),
            Some(Action::TransferLeader { shard: 0, to: 2 })
        );
        assert_eq!(follow_workload_transfer(&view, 1, 0.5), None);
        assert_eq!(follow_workload_transfer(&view, 0, 0.8), None);
    }

    #[test]
    fn the_finder_picks_the_key_that_balances_the_samples() {
        // 10 + 10 on the left of 300, 10 + 10 on its right: 300 balances exactly.
        let s = stats(&[(100, 10), (200, 10), (300, 10), (400, 10)], &[0, 0, 0, 0]);
        assert_eq!(load_split_key(&shard(0, 1000), &s), Some(300));
    }

    #[test]
    fn no_key_balances_a_single_hot_key() {
        // One key holds 90 % of the samples: any split leaves one side with 90 %+.
        let s = stats(&[(100, 1), (500, 90), (900, 1)], &[0, 0, 0]);
        assert_eq!(load_split_key(&shard(0, 1000), &s), None);
    }

    #[test]
    fn a_key_most_requests_span_is_not_a_split_point() {
        let sampled = [(100, 10), (200, 10), (300, 10), (400, 10)];
        // Scans cross 300 as often as the samples on both sides together.
        let s = stats(&sampled, &[0, 0, 60, 0]);
        assert_eq!(load_split_key(&shard(0, 1000), &s), None);
        let s = stats(&sampled, &[0, 0, 10, 0]);
        assert_eq!(load_split_key(&shard(0, 1000), &s), Some(300));
    }

    #[test]
    fn of_several_candidates_the_best_balanced_wins() {
        // 300 leaves 20 | 31 (score 0.22), 400 leaves 30 | 21 (0.18): both pass, 400 wins.
        let s = stats(
            &[(100, 10), (200, 10), (300, 10), (400, 11), (500, 10)],
            &[0; 5],
        );
        assert_eq!(load_split_key(&shard(0, 1000), &s), Some(400));
    }
}
