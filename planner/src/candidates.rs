//! The per-shard policy: each tick the size rule acts, and for the busiest shards a
//! handful of concrete actions are proposed (split at the load's median or ahead of where
//! it drifts, merge with the right neighbour, the leadership to each other voter, a
//! replica to an idler node of its region, a learner and a voter swapping roles) and rated by the network's scorer
//! ([`PlannerNet::score`]): what each would add to the run's cost against leaving the
//! shard alone. The planner takes the best-rated actions that the scorer expects to pay
//! for their stalls by a margin.
//!
//! Every feature is relative (to the mean shard, the split size, a node's capacity, the
//! shard's own requests), so a live cluster whose shards are a few MiB and whose rates are
//! per second reads like the simulated clusters the scorer learnt on.

use std::collections::{HashMap, VecDeque};

use crate::envelope::{same_set, touched};
use crate::knobs::{SPLIT_SIZE_BYTES, WINDOW_ROUNDS};
use crate::model::quantile_key;
use crate::net::{CANDIDATE_FEATURES, Encoded, PlannerNet, SHARD_FEATURES, SPLIT_QUANTILES};
use crate::sim::policy::{
    load_split_key, quorum_swap, relieving_move, request_trips, sampled_below, slowest,
    trip_quantile,
};
use crate::sim::quorum_ms;
use crate::vocab::{Action, View};

/// Shards whose actions are rated each tick: the busiest. Hot-region schedulers (TiKV's
/// PD) also look at the hottest few only; the rest are the size rule's, and the cost of a
/// tick stays bounded whatever the number of shards.
pub const FOCUS_SHARDS: usize = 8;
/// Actions the scorer adds per tick at most.
pub const ACTIONS_PER_TICK: usize = 2;
/// Ticks ahead the forecast head predicts a shard's load for.
pub const FORECAST_TICKS: u64 = 5;
/// Ticks back the load trend and the key drift compare with.
pub const TREND_TICKS: usize = 5;
/// Ticks since a shard's last change count up to this (as in the selector's features).
const AGE_MAX: u64 = 120;

/// What the policy remembers of each shard (by its range) to see trends: its load and the
/// median of its sampled keys over the last ticks, and when its placement (leader or
/// voters) last changed.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    seen: HashMap<(u64, u64), Remembered>,
}

#[derive(Debug, Clone, Default)]
struct Remembered {
    /// (load, median sampled key) of the last ticks, oldest first.
    history: VecDeque<(f64, Option<u64>)>,
    /// The leader and the sorted voters last seen, and the tick they changed.
    placement: (usize, Vec<usize>),
    placed_at: u64,
}

impl Memory {
    /// Notes this tick's shards; forgets ranges that no longer exist.
    pub fn observe(&mut self, view: &View) {
        let ranges: Vec<(u64, u64)> = view.shards.iter().map(|s| (s.start, s.end)).collect();
        self.seen.retain(|range, _| ranges.contains(range));
        for ((range, stats), shard) in ranges.into_iter().zip(view.stats).zip(view.shards) {
            let mut voters = shard.replicas.clone();
            voters.sort_unstable();
            let placement = (shard.leader, voters);
            let known = self.seen.entry(range).or_insert_with(|| Remembered {
                placement: placement.clone(),
                placed_at: view.tick,
                ..Remembered::default()
            });
            if known.placement != placement {
                known.placement = placement;
                known.placed_at = view.tick;
            }
            let history = &mut known.history;
            history.push_back((
                stats.ops(),
                quantile_key(&stats.sampled, SPLIT_QUANTILES / 2),
            ));
            while history.len() > TREND_TICKS + 1 {
                history.pop_front();
            }
        }
    }

    /// Whether shard `i`'s placement changed (or it was made) too lately to be judged
    /// again: the averaged load the policy sees takes [`WINDOW_ROUNDS`] ticks to show
    /// where the load went, and a move decided before then chases the old picture back.
    fn settling(&self, view: &View, i: usize) -> bool {
        let shard = &view.shards[i];
        self.seen
            .get(&(shard.start, shard.end))
            .is_none_or(|known| view.tick < known.placed_at + WINDOW_ROUNDS as u64)
    }

    /// Shard `i`'s load trend (`ln` of now over [`TREND_TICKS`] ago) and the drift of its
    /// sampled keys' median over that time as a share of its width (−1 to 1); zero where
    /// it has no history.
    fn trend(&self, view: &View, i: usize) -> (f64, f64) {
        let shard = &view.shards[i];
        let Some(history) = self.seen.get(&(shard.start, shard.end)).map(|k| &k.history) else {
            return (0.0, 0.0);
        };
        let (Some(first), Some(last)) = (history.front(), history.back()) else {
            return (0.0, 0.0);
        };
        let trend = last.0.max(0.0).ln_1p() - first.0.max(0.0).ln_1p();
        let drift = match (first.1, last.1) {
            (Some(then), Some(now)) => {
                let width = (shard.end - shard.start).max(1) as f64;
                ((now as f64 - then as f64) / width).clamp(-1.0, 1.0)
            }
            _ => 0.0,
        };
        (trend, drift)
    }
}

/// What every candidate rating in a tick shares: the cluster's totals and the round trip
/// that the slowest percent of requests wait at least.
pub struct TickContext {
    total_ops: f64,
    mean_size: f64,
    mean_load: f64,
    /// The round trip (ms) at the 99th percentile of all requests' under their current
    /// leaders.
    tail_ms: f64,
    /// All requests' weight at or past `tail_ms`.
    tail_weight: f64,
}

impl TickContext {
    pub fn new(view: &View) -> TickContext {
        let n = view.shards.len().max(1) as f64;
        let mut trips: Vec<(f64, f64)> = (0..view.shards.len())
            .flat_map(|i| request_trips(view, i, view.shards[i].leader))
            .collect();
        let tail_ms = trip_quantile(&mut trips, 0.99);
        let tail_weight = trips.iter().filter(|t| t.0 >= tail_ms).map(|t| t.1).sum();
        TickContext {
            total_ops: view.stats.iter().map(|s| s.ops()).sum(),
            mean_size: view.shards.iter().map(|s| s.size_bytes).sum::<f64>() / n,
            mean_load: view.node_load.iter().sum::<f64>() / view.node_load.len().max(1) as f64,
            tail_ms,
            tail_weight,
        }
    }

    /// Of shard `i`'s requests were `leader` its leader: the share at or past the tail's
    /// round trip, their weight, and the slowest and mean round trip (ms).
    fn tail_of(&self, view: &View, i: usize, leader: usize) -> (f64, f64, f64, f64) {
        let trips = request_trips(view, i, leader);
        let total: f64 = trips.iter().map(|t| t.1).sum();
        let in_tail: f64 = trips
            .iter()
            .filter(|t| t.0 >= self.tail_ms)
            .map(|t| t.1)
            .sum();
        let slowest = slowest(&trips);
        let mean = trips.iter().map(|t| t.0 * t.1).sum::<f64>() / total.max(f64::MIN_POSITIVE);
        (
            in_tail / total.max(f64::MIN_POSITIVE),
            in_tail,
            slowest,
            mean,
        )
    }
}

/// The busiest shards with any load, busiest first: those whose actions are rated.
pub fn focus(view: &View) -> Vec<usize> {
    let mut busy: Vec<usize> = (0..view.shards.len())
        .filter(|&i| view.stats[i].ops() > 0.0)
        .collect();
    busy.sort_by(|&a, &b| view.stats[b].ops().total_cmp(&view.stats[a].ops()));
    busy.truncate(FOCUS_SHARDS);
    busy
}

/// Shard `i`'s features: its load relative to the mean shard's and as a share of all, its
/// mix, its size relative to the mean shard's and to the split size, its nodes' load, how
/// its sampled keys split, where its requests come from, its age, its load trend and key
/// drift, and how much of the slowest percent of requests it holds.
pub fn shard_features(
    view: &View,
    context: &TickContext,
    memory: &Memory,
    i: usize,
) -> [f32; SHARD_FEATURES] {
    let (shard, stats) = (&view.shards[i], &view.stats[i]);
    let ops = stats.ops();
    let n = view.shards.len() as f64;
    let loads = view.node_load;
    let total: u64 = stats.sampled.iter().map(|&(_, c)| c).sum();
    let top = stats.sampled.iter().map(|&(_, c)| c).max().unwrap_or(0);
    let leader_region = view.nodes[shard.leader].region;
    let requests: f64 = stats.origins.iter().sum();
    let (trend, drift) = memory.trend(view, i);
    let (tail_share, tail_weight, _, _) = context.tail_of(view, i, shard.leader);
    let share = |x: f64, of: f64| if of > 0.0 { x / of } else { 0.0 };
    [
        (share(ops, context.total_ops) * n).ln_1p(),
        share(ops, context.total_ops),
        share(stats.writes, ops),
        share(stats.scans, ops),
        share(shard.size_bytes, context.mean_size).ln_1p(),
        (shard.size_bytes / SPLIT_SIZE_BYTES as f64).min(2.0),
        loads[shard.leader],
        shard.replicas.iter().map(|&r| loads[r]).fold(0.0, f64::max),
        context.mean_load,
        share(top as f64, total as f64),
        f64::from(u8::from(load_split_key(shard, stats).is_some())),
        share(
            stats.origins.get(leader_region).copied().unwrap_or(0.0),
            requests,
        ),
        (view.tick.saturating_sub(shard.changed_at).min(AGE_MAX) as f64).ln_1p(),
        trend,
        drift,
        tail_share,
        share(tail_weight, context.tail_weight),
    ]
    .map(|x| x as f32)
}

/// The actions proposed for shard `i`: split at its load's median, split ahead of where
/// its keys drift, merge with its right neighbour (same voters and learners), the role
/// swap that shortens its write quorum most, and, unless
/// its placement is still settling, the leadership to each other voter and its busiest
/// replica to the idlest node of the same region that holds none (the shard keeps its
/// spread over regions).
pub fn candidates(view: &View, memory: &Memory, i: usize) -> Vec<Action> {
    let (shard, stats) = (&view.shards[i], &view.stats[i]);
    let mut out = Vec::new();
    let inside = |at: &u64| *at > shard.start && *at < shard.end;
    let median = quantile_key(&stats.sampled, SPLIT_QUANTILES / 2).filter(inside);
    if let Some(at) = median {
        out.push(Action::Split { shard: i, at });
    }
    let (_, drift) = memory.trend(view, i);
    let ahead = if drift > 0.0 { SPLIT_QUANTILES - 2 } else { 1 };
    if let Some(at) = quantile_key(&stats.sampled, ahead)
        .filter(inside)
        .filter(|&at| drift != 0.0 && Some(at) != median)
    {
        out.push(Action::Split { shard: i, at });
    }
    if let Some(right) = view.shards.get(i + 1)
        && same_set(&shard.replicas, &right.replicas)
        && same_set(&shard.learners, &right.learners)
    {
        out.push(Action::Merge { shard: i });
    }
    // A role swap moves no load, so the averaged view's lag does not hold it back.
    out.extend(quorum_swap(view, i));
    if memory.settling(view, i) {
        return out;
    }
    for &to in &shard.replicas {
        if to != shard.leader {
            out.push(Action::TransferLeader { shard: i, to });
        }
    }
    out.extend(relieving_move(view, i));
    out
}

/// An action's features: its kind; for a leadership, how the shard's slowest and mean
/// round trips and its share of the slowest percent would change, the share of its
/// requests from the new leader's region and whether it crosses regions (a stall); the
/// load of the node it loads; for a split, the share of the sampled load left of the key;
/// for a merge, the neighbour's load; the bytes it would merge or copy against the split
/// size; for a role swap, how the write quorum's round trip would change and the shard's
/// share of writes.
pub fn candidate_features(
    view: &View,
    context: &TickContext,
    action: &Action,
) -> [f32; CANDIDATE_FEATURES] {
    let i = action.shard();
    let (shard, stats) = (&view.shards[i], &view.stats[i]);
    let loads = view.node_load;
    let split = SPLIT_SIZE_BYTES as f64;
    let mut f = [0f64; CANDIDATE_FEATURES];
    match *action {
        Action::Split { at, .. } => {
            let total: u64 = stats.sampled.iter().map(|&(_, c)| c).sum();
            let left = sampled_below(stats, at);
            // The first split candidate is the median; the second, ahead of the drift.
            let median = quantile_key(&stats.sampled, SPLIT_QUANTILES / 2);
            f[if Some(at) == median { 0 } else { 1 }] = 1.0;
            f[8] = loads[shard.leader];
            f[10] = left as f64 / total.max(1) as f64;
        }
        Action::Merge { .. } => {
            f[2] = 1.0;
            let right = i + 1;
            f[8] = loads[view.shards[right].leader];
            let n = view.shards.len() as f64;
            f[10] =
                (view.stats[right].ops() / context.total_ops.max(f64::MIN_POSITIVE) * n).ln_1p();
            f[12] = (shard.size_bytes + view.shards[right].size_bytes) / split;
        }
        Action::TransferLeader { to, .. } => {
            f[3] = 1.0;
            let (share_now, _, slowest_now, mean_now) = context.tail_of(view, i, shard.leader);
            let (share_then, _, slowest_then, mean_then) = context.tail_of(view, i, to);
            f[5] = (slowest_then - slowest_now) / 100.0;
            f[6] = (mean_then - mean_now) / 100.0;
            let requests: f64 = stats.origins.iter().sum();
            let region = view.nodes[to].region;
            f[7] = stats.origins.get(region).copied().unwrap_or(0.0) / requests.max(1.0);
            f[8] = loads[to];
            f[9] = f64::from(u8::from(region != view.nodes[shard.leader].region));
            f[11] = share_then - share_now;
        }
        Action::MoveReplica { to, .. } => {
            f[4] = 1.0;
            f[8] = loads[to];
            f[12] = shard.size_bytes / split;
        }
        Action::SwapRoles {
            promote, demote, ..
        } => {
            f[13] = 1.0;
            let voters = shard.voters_swapped(promote, demote);
            let quorum = |voters: &[usize]| {
                quorum_ms(view.region_latency_ms, view.nodes, voters, shard.leader)
            };
            f[6] = (quorum(&voters) - quorum(&shard.replicas)) / 100.0;
            f[7] = stats.writes / stats.ops().max(f64::MIN_POSITIVE);
            f[8] = loads[promote];
        }
        Action::AddReplica { .. } | Action::RemoveReplica { .. } => {}
    }
    f.map(|x| x as f32)
}

/// One rated action: the shard's and the action's features, and the action.
pub struct Rated {
    pub shard: [f32; SHARD_FEATURES],
    pub candidate: [f32; CANDIDATE_FEATURES],
    pub action: Action,
}

/// Every action proposed for the focus shards that `base` (the size rule's actions this
/// tick) leaves alone, with its features.
pub fn proposals(view: &View, memory: &Memory, base: &[Action]) -> Vec<Rated> {
    let context = TickContext::new(view);
    let busy: Vec<usize> = base.iter().flat_map(touched).collect();
    let mut out = Vec::new();
    for i in focus(view) {
        if busy.contains(&i) {
            continue;
        }
        let shard = shard_features(view, &context, memory, i);
        for action in candidates(view, memory, i) {
            if touched(&action).iter().any(|s| busy.contains(s)) {
                continue;
            }
            out.push(Rated {
                shard,
                candidate: candidate_features(view, &context, &action),
                action,
            });
        }
    }
    out
}

/// Why the scorer's answer was not used for a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Untrusted {
    pub shard: usize,
    /// "shard" or "action".
    pub row: &'static str,
    pub feature: usize,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {}'s {} feature {} lies outside the scorer's training range",
            self.shard, self.row, self.feature
        )
    }
}

/// Of `proposals`, the actions the scorer expects to lower the run's cost by more than
/// its margin, best first, at most [`ACTIONS_PER_TICK`], no two on the same shard. A
/// proposal whose features lie outside what the scorer was trained on is not rated (the
/// shard is left to the size rule); refused as a whole when none could be rated.
pub fn chosen(net: &PlannerNet, proposals: &[Rated]) -> Result<Vec<Action>, Untrusted> {
    let mut rated = Vec::with_capacity(proposals.len());
    let mut untrusted = None;
    let mut encoded: Option<([f32; SHARD_FEATURES], Encoded)> = None;
    for p in proposals {
        if let Some(out) = net.scorer_out_of_range(&p.shard, Some(&p.candidate)) {
            let (row, feature) = match out {
                Ok(f) => ("shard", f),
                Err(f) => ("action", f),
            };
            untrusted.get_or_insert(Untrusted {
                shard: p.action.shard(),
                row,
                feature,
            });
            continue;
        }
        // Proposals come shard by shard: encode each shard once.
        if encoded.as_ref().is_none_or(|(row, _)| *row != p.shard) {
            encoded = Some((p.shard, net.encode(&p.shard)));
        }
        let code = &encoded.as_ref().expect("encoded above").1;
        rated.push((f64::from(net.score(code, &p.candidate)), p.action.clone()));
    }
    if let (true, Some(why)) = (rated.is_empty(), untrusted) {
        return Err(why);
    }
    Ok(best_of(rated, f64::from(net.scorer_margin())))
}

/// Of rated actions (what each would add to the cost, and the action), the best that
/// lower it by more than `margin`, at most [`ACTIONS_PER_TICK`], no two touching the same
/// shard: how the scorer and its teacher both act on their ratings.
pub fn best_of(mut rated: Vec<(f64, Action)>, margin: f64) -> Vec<Action> {
    rated.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut busy: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for (score, action) in rated {
        if out.len() == ACTIONS_PER_TICK || score >= -margin {
            break;
        }
        let shards = touched(&action);
        if shards.iter().any(|s| busy.contains(s)) {
            continue;
        }
        busy.extend(shards);
        out.push(action);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::workload::Family;
    use crate::sim::{Scenario, Sim};
    use crate::vocab::FnPolicy;

    #[test]
    fn proposals_cover_every_kind_and_stay_relative() {
        let scenario = Scenario {
            ticks: 30,
            requests_per_tick: 400,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.004 }, 2)
        };
        let mut memory = Memory::default();
        let mut kinds = [false; 5];
        Sim::new(scenario).run(&mut FnPolicy(&mut |view: &View| {
            memory.observe(view);
            // Split the first shard once: its halves share their voters and may merge.
            if view.tick == 12 {
                let s = &view.shards[0];
                return vec![Action::Split {
                    shard: 0,
                    at: s.start + (s.end - s.start) / 2,
                }];
            }
            for p in proposals(view, &memory, &[]) {
                assert!(p.shard.iter().chain(&p.candidate).all(|x| x.is_finite()));
                // Shares are shares.
                assert!((0.0..=1.0).contains(&p.shard[1]), "{:?}", p.shard);
                let kind = p.candidate[..5].iter().position(|&x| x == 1.0).unwrap();
                kinds[kind] = true;
                assert_eq!(p.candidate[13], 0.0, "no learners, no role swaps");
                let valid = match p.action {
                    Action::Split { shard, at } => {
                        at > view.shards[shard].start && at < view.shards[shard].end
                    }
                    Action::TransferLeader { shard, to } => {
                        view.shards[shard].replicas.contains(&to) && to != view.shards[shard].leader
                    }
                    Action::MoveReplica { shard, from, to } => {
                        let s = &view.shards[shard];
                        s.replicas.contains(&from)
                            && !s.replicas.contains(&to)
                            && view.nodes[from].region == view.nodes[to].region
                    }
                    Action::Merge { shard } => shard + 1 < view.shards.len(),
                    _ => false,
                };
                assert!(valid, "{:?}", p.action);
            }
            Vec::new()
        }));
        // The moving hotspot drifts: a split ahead of it is proposed too.
        assert_eq!(kinds, [true; 5], "split, split ahead, merge, leader, move");
    }

    #[test]
    fn where_shards_have_learners_a_swap_that_shortens_the_write_quorum_is_proposed() {
        let scenario = Scenario {
            ticks: 3,
            requests_per_tick: 400,
            ..Scenario::for_family(Family::FollowerReads, 1)
        };
        let mut swaps = Vec::new();
        Sim::new(scenario).run(&mut FnPolicy(&mut |view: &View| {
            let memory = Memory::default();
            for p in proposals(view, &memory, &[]) {
                if let Action::SwapRoles {
                    shard,
                    promote,
                    demote,
                } = p.action
                {
                    let s = &view.shards[shard];
                    assert!(s.learners.contains(&promote) && s.replicas.contains(&demote));
                    assert_ne!(demote, s.leader);
                    assert_eq!(p.candidate[13], 1.0);
                    // It shortens the quorum: the feature is the change per 100 ms.
                    assert!(p.candidate[6] < 0.0, "{:?}", p.candidate);
                    swaps.push(shard);
                }
            }
            Vec::new()
        }));
        // Shard 0's leader is in Hamburg, its voters in China and Sydney, its learner in
        // Virginia (45 ms away): Virginia should vote instead of China.
        assert!(swaps.contains(&0), "{swaps:?}");
    }

    #[test]
    fn the_memory_sees_a_moving_hotspot_drift_and_grow() {
        let scenario = Scenario {
            ticks: 40,
            requests_per_tick: 400,
            initial_shards: 1,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.004 }, 3)
        };
        let mut memory = Memory::default();
        let mut drifts = Vec::new();
        Sim::new(scenario).run(&mut FnPolicy(&mut |view: &View| {
            memory.observe(view);
            drifts.push(memory.trend(view, 0).1);
            Vec::new()
        }));
        let late = &drifts[20..];
        assert!(
            late.iter().filter(|&&d| d > 0.0).count() > late.len() / 2,
            "the hotspot moves up the key space: {late:?}"
        );
    }

    #[test]
    fn an_untrained_scorer_trusts_nothing() {
        let view_less = Rated {
            shard: [0.5; SHARD_FEATURES],
            candidate: [0.0; CANDIDATE_FEATURES],
            action: Action::Merge { shard: 0 },
        };
        let refused = chosen(&PlannerNet::untrained(), &[view_less]).unwrap_err();
        assert_eq!(refused.row, "shard");
        assert!(chosen(&PlannerNet::untrained(), &[]).unwrap().is_empty());
    }
}
