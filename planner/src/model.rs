//! The planner's network (tch): per-shard features in, an action and a split point out,
//! trained by imitating the simulator's look-ahead oracle.
//!
//! Each shard is judged with its neighbours and the nodes it lives on ([`features`]); the
//! network answers one of [`ACTIONS`] and, for a split, which of [`SPLIT_QUANTILES`]
//! quantiles of the shard's sampled keys to split at; [`per_shard_actions`] turns those
//! answers into simulator actions. A selector head on the whole tick's features chooses
//! whose actions to take instead, the tuned heuristic's or one of the oracle's proposers'
//! ([`model_actions`]): the design the planner runs.

use std::path::Path;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::sim::policy::{PROPOSERS, follow_workload_transfer, load_split_key, oracle_proposers};
use crate::sim::{Action, View};

/// What the network may answer for a shard.
pub const ACTIONS: [&str; 6] = [
    "none",
    "split",
    "merge-right",
    "transfer-leader",
    "move-replica",
    "follow-workload",
];
/// The share of a shard's requests one region must send for "follow-workload" to move
/// its leader there.
const FOLLOW_SHARE_MIN: f64 = 0.5;
/// Split points: the 1/8 .. 7/8 quantiles of the sampled keys.
pub const SPLIT_QUANTILES: usize = 7;
/// Features per shard.
pub const FEATURES: usize = 16;
/// What the selector chooses among each tick: the tuned heuristic or one of the oracle's
/// proposers.
pub const CHOICES: usize = 1 + PROPOSERS;
/// The selector's margin (see [`PlannerNet::set_selector_margin`]) before it is tuned.
const ADVANTAGE_MIN_DEFAULT: f32 = 0.01;
/// Rollout cost differences are hundredths; the selector learns them scaled up by this,
/// in the range of the other heads' losses.
const ADVANTAGE_SCALE: f32 = 10.0;
/// The committed weights (see [`PlannerNet::built_in`]).
const BUILT_IN_WEIGHTS: &[u8] = include_bytes!("../weights/planner.safetensors");
/// Ticks since a shard's last change count up to this (a live cluster runs far longer
/// than a training run; past this, age says nothing new).
const AGE_MAX: u64 = 120;
/// How far outside the training data's range (a fraction of it) a feature may lie before
/// the network's answer is not trusted.
const RANGE_MARGIN: f64 = 0.5;
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

/// Features of a whole tick, for choosing a proposer: the mean and the max over the
/// shards of each shard feature.
pub const TICK_FEATURES: usize = 2 * FEATURES;

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

/// The network: a small MLP with an action head and a split-point head.
pub struct PlannerNet {
    vars: nn::VarStore,
    /// Per feature over the training examples: mean and standard deviation (inputs are
    /// standardised with them), minimum and maximum (the range the answers are trusted
    /// in). Saved with the weights.
    input_mean: Tensor,
    input_std: Tensor,
    input_min: Tensor,
    input_max: Tensor,
    body: nn::Sequential,
    action_head: nn::Linear,
    split_head: nn::Linear,
    /// The tick features' mean and standard deviation over the training ticks.
    tick_mean: Tensor,
    tick_std: Tensor,
    /// Tick features in, whose actions to follow out (see [`CHOICES`]).
    selector: nn::Sequential,
    /// How much cheaper than the tuned heuristic's (in cost over the oracle's horizon) the
    /// selector must expect a proposer's rollout to be before it follows the proposer;
    /// tuned on the training families after training, saved with the weights.
    selector_margin: Tensor,
}

const HIDDEN: i64 = 64;

impl PlannerNet {
    /// A network with fresh weights drawn from `seed`.
    pub fn new(seed: i64) -> PlannerNet {
        tch::manual_seed(seed);
        let vars = nn::VarStore::new(Device::Cpu);
        let root = vars.root();
        let width = [FEATURES as i64];
        let input_mean = root.zeros_no_train("input_mean", &width);
        let input_std = root.ones_no_train("input_std", &width);
        // Unfitted, the range is empty: nothing is trusted before training.
        let input_min = root.zeros_no_train("input_min", &width);
        let input_max = root.zeros_no_train("input_max", &width);
        let body = nn::seq()
            .add(nn::linear(
                &root / "l1",
                FEATURES as i64,
                HIDDEN,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "l2", HIDDEN, HIDDEN, Default::default()))
            .add_fn(|x| x.relu());
        let action_head = nn::linear(
            &root / "action",
            HIDDEN,
            ACTIONS.len() as i64,
            Default::default(),
        );
        let split_head = nn::linear(
            &root / "split",
            HIDDEN,
            SPLIT_QUANTILES as i64,
            Default::default(),
        );
        let tick_width = [TICK_FEATURES as i64];
        let tick_mean = root.zeros_no_train("tick_mean", &tick_width);
        let tick_std = root.ones_no_train("tick_std", &tick_width);
        let mut selector_margin = root.zeros_no_train("selector_margin", &[1]);
        tch::no_grad(|| {
            let _ = selector_margin.fill_(f64::from(ADVANTAGE_MIN_DEFAULT));
        });
        let selector = nn::seq()
            .add(nn::linear(
                &root / "s1",
                TICK_FEATURES as i64,
                HIDDEN,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add(nn::linear(
                &root / "s2",
                HIDDEN,
                CHOICES as i64,
                Default::default(),
            ));
        PlannerNet {
            vars,
            input_mean,
            input_std,
            input_min,
            input_max,
            body,
            action_head,
            split_head,
            tick_mean,
            tick_std,
            selector,
            selector_margin,
        }
    }

    /// Whose actions to follow in a tick with these features: 0 the tuned heuristic's,
    /// `k` those of the oracle's proposer `k - 1`. A proposer is followed only where the
    /// network expects it to beat the heuristic by the selector's margin: a wrong
    /// departure costs more than a missed one.
    pub fn choose(&self, tick: &[f32; TICK_FEATURES]) -> usize {
        let xs = Tensor::from_slice(tick).reshape([1, TICK_FEATURES as i64]);
        let expected = tch::no_grad(|| {
            self.selector
                .forward(&((xs - &self.tick_mean) / &self.tick_std))
        });
        let expected = Vec::<f32>::try_from(expected.reshape([-1])).unwrap_or_default();
        let margin = self.selector_margin() * ADVANTAGE_SCALE;
        (1..expected.len())
            .filter(|&k| expected[k] < -margin)
            .min_by(|&a, &b| expected[a].total_cmp(&expected[b]))
            .unwrap_or(0)
    }

    /// Action and split logits for a `[n, FEATURES]` batch.
    fn forward(&self, xs: &Tensor) -> (Tensor, Tensor) {
        let hidden = self
            .body
            .forward(&((xs - &self.input_mean) / &self.input_std));
        (
            self.action_head.forward(&hidden),
            self.split_head.forward(&hidden),
        )
    }

    /// Trains on `examples` (per shard) and `ticks` (per tick, for the selector) for
    /// `epochs` passes; returns the mean loss of each epoch.
    pub fn train(
        &mut self,
        examples: &[Example],
        ticks: &[TickExample],
        epochs: usize,
        learning_rate: f64,
    ) -> Vec<f64> {
        let Ok(mut optimizer) = nn::Adam::default().build(&self.vars, learning_rate) else {
            return Vec::new();
        };
        let xs = batch(examples);
        tch::no_grad(|| {
            self.input_mean.copy_(&xs.mean_dim(0, false, Kind::Float));
            // A constant feature keeps a unit scale.
            let std = xs.std_dim(0, false, false);
            self.input_std
                .copy_(&std.where_self(&std.gt(1e-6), &std.ones_like()));
            self.input_min.copy_(&xs.amin(0, false));
            self.input_max.copy_(&xs.amax(0, false));
        });
        let tick_xs =
            Tensor::from_slice(&ticks.iter().flat_map(|t| t.features).collect::<Vec<_>>())
                .reshape([ticks.len() as i64, TICK_FEATURES as i64]);
        let advantages = Tensor::from_slice(
            &ticks
                .iter()
                .flat_map(|t| t.advantages.map(|a| a * ADVANTAGE_SCALE))
                .collect::<Vec<_>>(),
        )
        .reshape([ticks.len() as i64, CHOICES as i64]);
        if !ticks.is_empty() {
            tch::no_grad(|| {
                self.tick_mean
                    .copy_(&tick_xs.mean_dim(0, false, Kind::Float));
                let std = tick_xs.std_dim(0, false, false);
                self.tick_std
                    .copy_(&std.where_self(&std.gt(1e-6), &std.ones_like()));
            });
        }
        let tick_inputs = (&tick_xs - &self.tick_mean) / &self.tick_std;
        let actions =
            Tensor::from_slice(&examples.iter().map(|e| e.action as i64).collect::<Vec<_>>());
        let quantiles = Tensor::from_slice(
            &examples
                .iter()
                .map(|e| e.quantile as i64)
                .collect::<Vec<_>>(),
        );
        let splits = actions.eq(1);
        // Most shards do nothing most ticks: weigh each action by how rare it is, or the
        // network learns to answer "none" always.
        let mut counts = [0usize; ACTIONS.len()];
        for e in examples {
            counts[e.action] += 1;
        }
        let weights: Vec<f32> = counts
            .iter()
            .map(|&n| examples.len() as f32 / (ACTIONS.len() * n.max(1)) as f32)
            .collect();
        let weights = Tensor::from_slice(&weights);
        let mut losses = Vec::with_capacity(epochs);
        for _ in 0..epochs {
            let (action_logits, split_logits) = self.forward(&xs);
            let mut loss = action_logits.cross_entropy_loss(
                &actions,
                Some(&weights),
                tch::Reduction::Mean,
                -100,
                0.0,
            );
            if splits.any().int64_value(&[]) != 0 {
                let chosen = split_logits.index_select(0, &splits.nonzero().squeeze_dim(1));
                let targets = quantiles.index_select(0, &splits.nonzero().squeeze_dim(1));
                loss += chosen.cross_entropy_for_logits(&targets);
            }
            if !ticks.is_empty() {
                loss += self
                    .selector
                    .forward(&tick_inputs)
                    .mse_loss(&advantages, tch::Reduction::Mean);
            }
            optimizer.backward_step(&loss);
            losses.push(loss.double_value(&[]));
        }
        losses
    }

    /// For each row of features: the action index, its probability, and the split
    /// quantile.
    pub fn decide(&self, rows: &[[f32; FEATURES]]) -> Vec<(usize, f64, usize)> {
        if rows.is_empty() {
            return Vec::new();
        }
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let xs = Tensor::from_slice(&flat).reshape([rows.len() as i64, FEATURES as i64]);
        let (action_logits, split_logits) = tch::no_grad(|| self.forward(&xs));
        let probabilities = action_logits.softmax(-1, Kind::Float);
        let (best, chosen) = probabilities.max_dim(-1, false);
        let quantiles = split_logits.argmax(-1, false);
        // One copy out of libtorch per column: element by element costs microseconds each.
        let best = Vec::<f64>::try_from(best.to_kind(Kind::Double)).unwrap_or_default();
        let chosen = Vec::<i64>::try_from(chosen).unwrap_or_default();
        let quantiles = Vec::<i64>::try_from(quantiles).unwrap_or_default();
        chosen
            .into_iter()
            .zip(best)
            .zip(quantiles)
            .map(|((action, p), quantile)| (action as usize, p, quantile as usize))
            .collect()
    }

    /// The first (row, feature) of `rows` that is not finite or lies outside the training
    /// data's range (widened by [`RANGE_MARGIN`]), if any: where the answers are not
    /// trusted.
    pub fn out_of_range(&self, rows: &[[f32; FEATURES]]) -> Option<(usize, usize)> {
        let min: Vec<f32> = Vec::try_from(&self.input_min).unwrap_or_default();
        let max: Vec<f32> = Vec::try_from(&self.input_max).unwrap_or_default();
        let bounds: Vec<(f64, f64)> = min
            .iter()
            .zip(&max)
            .map(|(&lo, &hi)| {
                let slack = (f64::from(hi) - f64::from(lo)) * RANGE_MARGIN;
                (f64::from(lo) - slack, f64::from(hi) + slack)
            })
            .collect();
        rows.iter().enumerate().find_map(|(r, row)| {
            row.iter()
                .zip(&bounds)
                .position(|(&x, &(lo, hi))| {
                    !x.is_finite() || f64::from(x) < lo || f64::from(x) > hi
                })
                .map(|feature| (r, feature))
        })
    }

    /// How much cheaper than the tuned heuristic's (in cost over the oracle's horizon) the
    /// selector must expect a proposer's rollout to be before it follows the proposer.
    pub fn selector_margin(&self) -> f32 {
        self.selector_margin.double_value(&[0]) as f32
    }

    pub fn set_selector_margin(&mut self, margin: f32) {
        tch::no_grad(|| {
            let _ = self.selector_margin.fill_(f64::from(margin));
        });
    }

    /// A second network with the same weights.
    pub fn clone_weights(&self) -> PlannerNet {
        let mut copy = PlannerNet::new(0);
        copy.vars
            .copy(&self.vars)
            .expect("networks of one shape have the same variables");
        copy
    }

    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        self.vars.save(path)
    }

    /// The network trained by `hanse planner train` and committed with the source
    /// (`planner/weights/planner.safetensors`), built into the binary.
    pub fn built_in() -> Result<PlannerNet, tch::TchError> {
        // libtorch reads safetensors from files only.
        let path = std::env::temp_dir().join(format!(
            "hanse-planner-{}-{:?}.safetensors",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, BUILT_IN_WEIGHTS)?;
        let net = PlannerNet::load(&path);
        // A leftover temporary file is harmless; the network is what matters.
        let _ = std::fs::remove_file(&path);
        net
    }

    /// A network with the weights saved at `path`.
    pub fn load(path: &Path) -> Result<PlannerNet, tch::TchError> {
        let mut net = PlannerNet::new(0);
        net.vars.load(path)?;
        Ok(net)
    }
}

fn batch(examples: &[Example]) -> Tensor {
    let flat: Vec<f32> = examples.iter().flat_map(|e| e.features).collect();
    Tensor::from_slice(&flat).reshape([examples.len() as i64, FEATURES as i64])
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
/// loses to choosing a proposer; see the README).
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
            4 => {
                let from = shard
                    .replicas
                    .iter()
                    .copied()
                    .max_by(|&a, &b| loads[a].total_cmp(&loads[b]));
                // The idlest node in the region the replica leaves: the shard keeps its
                // spread over the regions.
                let to = from.and_then(|from| {
                    (0..view.nodes.len())
                        .filter(|&n| {
                            !shard.replicas.contains(&n)
                                && view.nodes[n].region == view.nodes[from].region
                        })
                        .min_by(|&a, &b| loads[a].total_cmp(&loads[b]))
                });
                from.zip(to)
                    .map(|(from, to)| Action::MoveReplica { shard: i, from, to })
            }
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
pub(crate) mod tests {
    use super::*;
    use crate::decide::{Mode, Planner};
    use crate::envelope::Envelope;
    use crate::sim::policy::LoadSplit;
    use crate::sim::workload::Family;
    use crate::sim::{Policy, Scenario, Sim, cheapest};

    /// Examples from the oracle on a short hotspot run, per shard and per tick.
    pub(crate) fn oracle_examples() -> (Vec<Example>, Vec<TickExample>) {
        let scenario = Scenario {
            ticks: 40,
            requests_per_tick: 400,
            request_weight: 25.0,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.001 }, 5)
        };
        let mut examples = Vec::new();
        let mut ticks = Vec::new();
        let owned = oracle_proposers();
        let proposers: Vec<&dyn Fn() -> Box<dyn Policy>> =
            owned.iter().map(|p| p.as_ref()).collect();
        let base = Envelope::default().guard(LoadSplit::tuned());
        Sim::new(scenario).run_oracle(5, base, &proposers, &mut |view, firsts, costs| {
            let best = cheapest(costs);
            examples.extend(super::examples(view, &firsts[best]));
            ticks.push(TickExample::new(view, costs));
            best
        });
        (examples, ticks)
    }

    #[test]
    fn quantiles_follow_the_sample_weights() {
        let sampled = [(10, 1), (20, 1), (30, 6)];
        assert_eq!(quantile_key(&sampled, 0), Some(20));
        assert_eq!(quantile_key(&sampled, SPLIT_QUANTILES - 1), Some(30));
        assert_eq!(quantile_key(&[], 3), None);
        assert_eq!(nearest_quantile(&sampled, 21), 0);
    }

    #[test]
    fn training_lowers_the_loss_on_the_oracles_choices() {
        let (examples, ticks) = oracle_examples();
        assert!(examples.iter().any(|e| e.action != 0), "the oracle acted");
        assert!(
            ticks.iter().any(|t| t.advantages.iter().any(|&a| a < 0.0)),
            "a proposer beat the heuristic somewhere"
        );
        let mut net = PlannerNet::new(1);
        let losses = net.train(&examples, &ticks, 60, 1e-2);
        assert!(
            losses[59] < losses[0] * 0.8,
            "{:?}",
            (losses[0], losses[59])
        );
    }

    #[test]
    fn the_trained_policy_only_takes_actions_the_cluster_accepts() {
        let mut net = PlannerNet::new(3);
        let (examples, ticks) = oracle_examples();
        net.train(&examples, &ticks, 40, 1e-2);
        let scenario = Scenario {
            ticks: 60,
            requests_per_tick: 400,
            request_weight: 25.0,
            ..Scenario::three_regions(Family::ZipfianA, 9)
        };
        let mut planner = Planner::new(Some(net), Mode::Model, Envelope::default());
        let outcome = Sim::new(scenario).run(&mut planner);
        assert_eq!(outcome.refused, 0);
    }

    #[test]
    fn saved_weights_give_the_same_decisions() {
        let (examples, ticks) = oracle_examples();
        let mut net = PlannerNet::new(2);
        net.train(&examples, &ticks, 10, 1e-2);
        net.set_selector_margin(0.05);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planner.safetensors");
        net.save(&path).unwrap();
        let loaded = PlannerNet::load(&path).unwrap();
        assert_eq!(loaded.selector_margin(), net.selector_margin());
        let rows: Vec<[f32; FEATURES]> = examples.iter().map(|e| e.features).collect();
        assert_eq!(net.decide(&rows), loaded.decide(&rows));
        assert!(PlannerNet::load(&dir.path().join("missing")).is_err());
        let built_in = PlannerNet::built_in().expect("the committed weights load");
        assert_eq!(built_in.decide(&rows).len(), rows.len());
    }
}
