//! hanse-planner-train: trains the planner's network with Torch (tch, libtorch from the
//! PyPI torch wheel) on the simulator's look-ahead oracle, and writes the weights the
//! planner runs in plain Rust (`hanse_planner::net`). Only this crate links libtorch:
//! nodes and every other `hanse` command start without it.

use hanse_planner::decide::{Design, Planner};
use hanse_planner::envelope::Envelope;
use hanse_planner::model::{Example, TickExample};
use hanse_planner::net::{
    self as planner_net, ACTIONS, ADVANTAGE_MIN_DEFAULT, ADVANTAGE_SCALE, CANDIDATE_FEATURES,
    CHOICES, FEATURES, PlannerNet, SHARD_FEATURES, SPLIT_QUANTILES, TICK_FEATURES,
};
use hanse_planner::sim::Sim;
use hanse_planner::train::{
    ScoreExample, TrainOptions, collect_examples, label_candidates, scorer_planner,
    training_scenarios,
};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// The selector margins [`train`] tries, lowest first.
pub const SELECTOR_MARGINS: [f32; 7] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// Trains a fresh network (seeded) on the oracle's choices, then for each of the options'
/// DAgger rounds lets it act, adds the oracle's labels of where it went, and trains a fresh
/// one on all of them; last it picks the selector margin of [`SELECTOR_MARGINS`] under
/// which the planner runs cheapest on the training runs (the larger of equals), as the
/// tuned heuristics' thresholds are picked. Returns the last network with each of its
/// epochs' loss. `progress` hears (steps done, steps in all): the oracle's runs and the
/// epochs of each round, then each margin tried.
pub fn train(
    options: &TrainOptions,
    seed: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> (PlannerNet, Vec<f64>) {
    let runs = (options.families.len() + options.traces.len()) * options.seeds.len();
    let rounds = 1 + options.dagger_rounds;
    let total = rounds * (runs + options.epochs) + SELECTOR_MARGINS.len();
    let mut examples = Vec::new();
    let mut ticks = Vec::new();
    let mut round = |round: usize, learner: Option<&PlannerNet>| {
        let done = round * (runs + options.epochs);
        let (more, more_ticks) = collect_examples(options, learner, &mut |runs_done, _| {
            progress(done + runs_done, total)
        });
        examples.extend(more);
        ticks.extend(more_ticks);
        let mut net = TorchNet::new(seed);
        let mut losses = Vec::with_capacity(options.epochs);
        // In chunks, so the progress bar moves.
        let chunk = (options.epochs / 20).max(1);
        while losses.len() < options.epochs {
            let epochs = chunk.min(options.epochs - losses.len());
            losses.extend(net.train(&examples, &ticks, epochs, options.learning_rate));
            progress(done + runs + losses.len(), total);
        }
        (net.export(), losses)
    };
    let (mut net, mut losses) = round(0, None);
    for k in 1..rounds {
        (net, losses) = round(k, Some(&net));
    }
    let scenarios = training_scenarios(options);
    let mut best: Option<(f64, f32)> = None;
    for (k, &margin) in SELECTOR_MARGINS.iter().enumerate() {
        net.set_selector_margin(margin);
        let cost = scenarios
            .iter()
            .map(|scenario| {
                let mut planner =
                    Planner::designed(net.clone(), Design::Selector, Envelope::default());
                Sim::new(scenario.clone()).run(&mut planner).cost()
            })
            .sum::<f64>()
            / scenarios.len().max(1) as f64;
        if best.is_none_or(|(lowest, _)| cost <= lowest) {
            best = Some((cost, margin));
        }
        progress(rounds * (runs + options.epochs) + k + 1, total);
    }
    if let Some((_, margin)) = best {
        net.set_selector_margin(margin);
    }
    (net, losses)
}

/// The network as Torch trains it: the same layers as [`PlannerNet`], with their
/// gradients.
pub struct TorchNet {
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
}

const HIDDEN: i64 = planner_net::HIDDEN as i64;

impl TorchNet {
    /// A network with fresh weights drawn from `seed`.
    pub fn new(seed: i64) -> TorchNet {
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
        // Saved with the weights; training leaves it to the margin tuning after it.
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
        TorchNet {
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
        }
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

    /// The trained network, for the planner to run (and to save), its scorer untrained.
    pub fn export(&self) -> PlannerNet {
        export_into(&self.vars, &PlannerNet::untrained())
    }
}

/// `net` with the layers `vars` holds in place of its own.
fn export_into(vars: &nn::VarStore, net: &PlannerNet) -> PlannerNet {
    let mut tensors = net.tensors();
    for (name, tensor) in vars.variables() {
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        let values =
            Vec::<f32>::try_from(tensor.reshape([-1])).expect("every variable is an f32 tensor");
        tensors.insert(name, (shape, values));
    }
    PlannerNet::from_tensors(tensors).expect("the Torch network has the planner's shape")
}

/// The scorer as Torch trains it: the same members as the planner's scorer
/// ([`PlannerNet::score`]), with their gradients.
pub struct TorchScorer {
    vars: nn::VarStore,
    shard_mean: Tensor,
    shard_std: Tensor,
    shard_min: Tensor,
    shard_max: Tensor,
    candidate_mean: Tensor,
    candidate_std: Tensor,
    candidate_min: Tensor,
    candidate_max: Tensor,
    members: Vec<TorchMember>,
}

/// One member: encoder, forecast head, advantage head.
struct TorchMember {
    encoder: nn::Sequential,
    forecast: nn::Linear,
    head: nn::Sequential,
}

const SCORER_HIDDEN: i64 = planner_net::SCORER_HIDDEN as i64;

impl TorchMember {
    fn new(path: &nn::Path) -> TorchMember {
        let linear = |name: &str, inputs: i64, outputs: i64| {
            nn::linear(path / name, inputs, outputs, Default::default())
        };
        TorchMember {
            encoder: nn::seq()
                .add(linear("e1", SHARD_FEATURES as i64, SCORER_HIDDEN))
                .add_fn(|x| x.relu())
                .add(linear("e2", SCORER_HIDDEN, SCORER_HIDDEN))
                .add_fn(|x| x.relu()),
            forecast: linear("forecast", SCORER_HIDDEN, 1),
            head: nn::seq()
                .add(linear(
                    "c1",
                    SCORER_HIDDEN + 1 + CANDIDATE_FEATURES as i64,
                    SCORER_HIDDEN,
                ))
                .add_fn(|x| x.relu())
                .add(linear("c2", SCORER_HIDDEN, 1)),
        }
    }

    /// Forecasts and advantages for standardised batches.
    fn forward(&self, shards: &Tensor, candidates: &Tensor) -> (Tensor, Tensor) {
        let hidden = self.encoder.forward(shards);
        let forecast = self.forecast.forward(&hidden);
        let advantage = self
            .head
            .forward(&Tensor::cat(&[&hidden, &forecast, candidates], 1));
        (forecast.squeeze_dim(1), advantage.squeeze_dim(1))
    }
}

impl TorchScorer {
    /// A scorer with fresh weights drawn from `seed` (each member its own).
    pub fn new(seed: i64) -> TorchScorer {
        tch::manual_seed(seed);
        let vars = nn::VarStore::new(Device::Cpu);
        let root = vars.root();
        let (shard, candidate) = ([SHARD_FEATURES as i64], [CANDIDATE_FEATURES as i64]);
        TorchScorer {
            shard_mean: root.zeros_no_train("shard_mean", &shard),
            shard_std: root.ones_no_train("shard_std", &shard),
            shard_min: root.zeros_no_train("shard_min", &shard),
            shard_max: root.zeros_no_train("shard_max", &shard),
            candidate_mean: root.zeros_no_train("candidate_mean", &candidate),
            candidate_std: root.ones_no_train("candidate_std", &candidate),
            candidate_min: root.zeros_no_train("candidate_min", &candidate),
            candidate_max: root.zeros_no_train("candidate_max", &candidate),
            members: (0..planner_net::SCORER_MEMBERS)
                .map(|k| TorchMember::new(&(&root / format!("m{k}"))))
                .collect(),
            vars,
        }
    }

    /// Each member's forecasts and advantages for `[n, SHARD_FEATURES]` and
    /// `[n, CANDIDATE_FEATURES]` batches.
    fn forward(&self, shards: &Tensor, candidates: &Tensor) -> Vec<(Tensor, Tensor)> {
        let shards = (shards - &self.shard_mean) / &self.shard_std;
        let candidates = (candidates - &self.candidate_mean) / &self.candidate_std;
        self.members
            .iter()
            .map(|m| m.forward(&shards, &candidates))
            .collect()
    }

    /// Trains on `examples` for `epochs` passes of minibatches; returns each epoch's mean
    /// loss (over the members): the advantage's smooth L1 (outliers are a leadership's
    /// multi-second stall) plus the forecast's squared error.
    pub fn train(
        &mut self,
        examples: &[ScoreExample],
        epochs: usize,
        learning_rate: f64,
    ) -> Vec<f64> {
        let Ok(mut optimizer) = nn::Adam::default().build(&self.vars, learning_rate) else {
            return Vec::new();
        };
        if examples.is_empty() {
            return Vec::new();
        }
        let n = examples.len() as i64;
        let rows = |width: usize, f: &dyn Fn(&ScoreExample) -> Vec<f32>| {
            Tensor::from_slice(&examples.iter().flat_map(f).collect::<Vec<_>>())
                .reshape([n, width as i64])
        };
        let shards = rows(SHARD_FEATURES, &|e| e.shard.to_vec());
        let candidates = rows(CANDIDATE_FEATURES, &|e| e.candidate.to_vec());
        let advantages = rows(1, &|e| vec![e.advantage]).squeeze_dim(1);
        let forecasts = rows(1, &|e| vec![e.forecast]).squeeze_dim(1);
        tch::no_grad(|| {
            for (xs, mean, std, min, max) in [
                (
                    &shards,
                    &mut self.shard_mean,
                    &mut self.shard_std,
                    &mut self.shard_min,
                    &mut self.shard_max,
                ),
                (
                    &candidates,
                    &mut self.candidate_mean,
                    &mut self.candidate_std,
                    &mut self.candidate_min,
                    &mut self.candidate_max,
                ),
            ] {
                mean.copy_(&xs.mean_dim(0, false, Kind::Float));
                // A constant feature keeps a unit scale.
                let spread = xs.std_dim(0, false, false);
                std.copy_(&spread.where_self(&spread.gt(1e-6), &spread.ones_like()));
                min.copy_(&xs.amin(0, false));
                max.copy_(&xs.amax(0, false));
            }
        });
        let batch = 512.min(n);
        let mut losses = Vec::with_capacity(epochs);
        for _ in 0..epochs {
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut sum = 0.0;
            let mut batches = 0;
            for start in (0..n).step_by(batch as usize) {
                let take = order.narrow(0, start, batch.min(n - start));
                let (advantages, forecasts) = (
                    advantages.index_select(0, &take),
                    forecasts.index_select(0, &take),
                );
                // The members' parameters are disjoint: one step trains each on its own
                // loss.
                let loss = self
                    .forward(
                        &shards.index_select(0, &take),
                        &candidates.index_select(0, &take),
                    )
                    .into_iter()
                    .map(|(forecast, advantage)| {
                        advantage.smooth_l1_loss(&advantages, tch::Reduction::Mean, 1.0)
                            + forecast.mse_loss(&forecasts, tch::Reduction::Mean)
                    })
                    .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
                    / planner_net::SCORER_MEMBERS as f64;
                optimizer.backward_step(&loss);
                sum += loss.double_value(&[]);
                batches += 1;
            }
            losses.push(sum / f64::from(batches.max(1)));
        }
        losses
    }

    /// `net` with this scorer in place of its own.
    pub fn export_into(&self, net: &PlannerNet) -> PlannerNet {
        export_into(&self.vars, net)
    }
}

/// The scorer's margins [`train_scorer`] tries, lowest first (summed cost: one tick's p99
/// 100 ms longer is 1).
pub const SCORER_MARGINS: [f32; 7] = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0];

/// Trains `net`'s scorer afresh: the privileged teacher labels the training runs acting
/// itself, then for each DAgger round the scorer trained so far acts while the teacher
/// labels where it goes, and a fresh scorer trains on everything; last the margin of
/// [`SCORER_MARGINS`] under which the planner runs cheapest on the training runs (the
/// larger of equals). Returns the network and each epoch's loss of the last round.
/// `progress` hears (steps done, steps in all).
pub fn train_scorer(
    net: &PlannerNet,
    options: &TrainOptions,
    seed: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> (PlannerNet, Vec<f64>) {
    let runs = training_scenarios(options).len();
    let rounds = 1 + options.dagger_rounds;
    // Labelling a run takes about as long as this many epochs: the bar moves evenly.
    let run_steps = (options.epochs / 10).max(1);
    let round_steps = runs * run_steps + options.epochs;
    let total = rounds * round_steps + SCORER_MARGINS.len();
    let mut examples = Vec::new();
    let mut current = net.clone();
    let mut losses = Vec::new();
    for round in 0..rounds {
        let done = round * round_steps;
        let learner = (round > 0).then_some(&current);
        examples.extend(label_candidates(options, learner, &mut |k, _| {
            progress(done + k * run_steps, total)
        }));
        let mut scorer = TorchScorer::new(seed);
        losses.clear();
        let chunk = (options.epochs / 20).max(1);
        while losses.len() < options.epochs {
            let epochs = chunk.min(options.epochs - losses.len());
            losses.extend(scorer.train(&examples, epochs, options.learning_rate));
            progress(done + runs * run_steps + losses.len(), total);
        }
        current = scorer.export_into(net);
    }
    let scenarios = training_scenarios(options);
    let mut best: Option<(f64, f32)> = None;
    for (k, &margin) in SCORER_MARGINS.iter().enumerate() {
        current.set_scorer_margin(margin);
        let cost = scenarios
            .iter()
            .map(|scenario| {
                Sim::new(scenario.clone())
                    .run(&mut scorer_planner(&current))
                    .cost()
            })
            .sum::<f64>()
            / scenarios.len().max(1) as f64;
        if best.is_none_or(|(lowest, _)| cost <= lowest) {
            best = Some((cost, margin));
        }
        progress(rounds * round_steps + k + 1, total);
    }
    if let Some((_, margin)) = best {
        current.set_scorer_margin(margin);
    }
    (current, losses)
}

fn batch(examples: &[Example]) -> Tensor {
    let flat: Vec<f32> = examples.iter().flat_map(|e| e.features).collect();
    Tensor::from_slice(&flat).reshape([examples.len() as i64, FEATURES as i64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_planner::model;
    use hanse_planner::sim::eval::judge;
    use hanse_planner::sim::policy::{LoadSplit, oracle_proposers};
    use hanse_planner::sim::workload::Family;
    use hanse_planner::sim::{Scenario, cheapest};
    use hanse_planner::train::{Comparison, compare, is_heuristic};
    use hanse_planner::vocab::Policy;

    /// Examples from the oracle on a short hotspot run, per shard and per tick.
    fn oracle_examples() -> (Vec<Example>, Vec<TickExample>) {
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
            examples.extend(model::examples(view, &firsts[best]));
            ticks.push(TickExample::new(view, costs));
            best
        });
        (examples, ticks)
    }

    #[test]
    fn training_lowers_the_loss_on_the_oracles_choices() {
        let (examples, ticks) = oracle_examples();
        assert!(examples.iter().any(|e| e.action != 0), "the oracle acted");
        assert!(
            ticks.iter().any(|t| t.advantages.iter().any(|&a| a < 0.0)),
            "a proposer beat the heuristic somewhere"
        );
        let mut net = TorchNet::new(1);
        let losses = net.train(&examples, &ticks, 60, 1e-2);
        assert!(
            losses[59] < losses[0] * 0.8,
            "{:?}",
            (losses[0], losses[59])
        );
    }

    #[test]
    fn the_trained_policy_only_takes_actions_the_cluster_accepts() {
        let mut net = TorchNet::new(3);
        let (examples, ticks) = oracle_examples();
        net.train(&examples, &ticks, 40, 1e-2);
        let scenario = Scenario {
            ticks: 60,
            requests_per_tick: 400,
            request_weight: 25.0,
            ..Scenario::three_regions(Family::ZipfianA, 9)
        };
        let mut planner = Planner::designed(net.export(), Design::Selector, Envelope::default());
        let outcome = Sim::new(scenario).run(&mut planner);
        assert_eq!(outcome.refused, 0);
    }

    fn scorer_examples() -> Vec<ScoreExample> {
        let options = TrainOptions {
            families: vec![Family::MovingHotspot { speed: 0.004 }],
            seeds: vec![1],
            ticks: 40,
            requests_per_tick: 300,
            scorer_horizon: 6,
            label_every: 2,
            ..TrainOptions::default()
        };
        label_candidates(&options, None, &mut |_, _| {})
    }

    #[test]
    fn the_scorer_learns_the_teachers_ratings_and_runs_as_torch_computes_it() {
        let examples = scorer_examples();
        let mut torch = TorchScorer::new(4);
        let losses = torch.train(&examples, 60, 5e-3);
        assert!(
            losses.last().unwrap() < &(losses[0] * 0.7),
            "{:?}",
            (losses[0], losses.last())
        );
        let net = torch.export_into(&PlannerNet::untrained());
        let n = examples.len().min(16);
        let shards: Vec<f32> = examples[..n].iter().flat_map(|e| e.shard).collect();
        let candidates: Vec<f32> = examples[..n].iter().flat_map(|e| e.candidate).collect();
        let members = torch.forward(
            &Tensor::from_slice(&shards).reshape([n as i64, SHARD_FEATURES as i64]),
            &Tensor::from_slice(&candidates).reshape([n as i64, CANDIDATE_FEATURES as i64]),
        );
        for (k, e) in examples[..n].iter().enumerate() {
            let encoded = net.encode(&e.shard);
            let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-3 * (1.0 + b.abs());
            let at = |t: &Tensor| t.double_value(&[k as i64]);
            let forecast = members.iter().map(|(f, _)| at(f)).sum::<f64>() / members.len() as f64;
            assert!(close(encoded.forecast(), forecast));
            let scores = net.member_scores(&encoded, &e.candidate);
            for (score, (_, advantage)) in scores.iter().zip(&members) {
                assert!(close(*score, at(advantage)));
            }
            // The rating is the most pessimistic member's.
            let worst = members.iter().map(|(_, a)| at(a)).fold(f64::MIN, f64::max);
            assert!(close(net.score(&encoded, &e.candidate), worst));
            // What it learnt from, it trusts.
            assert_eq!(net.scorer_out_of_range(&e.shard, Some(&e.candidate)), None);
        }
    }

    #[test]
    fn training_the_scorer_reports_progress_and_tunes_its_margin() {
        let options = TrainOptions {
            families: vec![Family::MovingHotspot { speed: 0.004 }],
            seeds: vec![1],
            ticks: 30,
            requests_per_tick: 300,
            scorer_horizon: 4,
            label_every: 3,
            epochs: 10,
            dagger_rounds: 1,
            ..TrainOptions::default()
        };
        let mut steps = Vec::new();
        let (net, losses) = train_scorer(&PlannerNet::untrained(), &options, 3, &mut |d, t| {
            steps.push((d, t))
        });
        assert_eq!(losses.len(), 10);
        // Two rounds of one run (an epoch's worth of steps) and 10 epochs, then each
        // margin.
        let total = 2 * 11 + SCORER_MARGINS.len();
        assert_eq!(steps.last(), Some(&(total, total)));
        assert!(SCORER_MARGINS.contains(&net.scorer_margin()));
    }

    /// The plain-Rust network the planner runs answers as Torch's forward pass does.
    #[test]
    fn the_exported_network_computes_what_torch_computes() {
        let (examples, ticks) = oracle_examples();
        let mut torch = TorchNet::new(2);
        torch.train(&examples, &ticks, 30, 1e-2);
        let net = torch.export();
        let rows: Vec<[f32; FEATURES]> = examples.iter().map(|e| e.features).collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let xs = Tensor::from_slice(&flat).reshape([rows.len() as i64, FEATURES as i64]);
        let (action_logits, _) = tch::no_grad(|| torch.forward(&xs));
        let probabilities = action_logits.softmax(-1, Kind::Float);
        let (best, chosen) = probabilities.max_dim(-1, false);
        let best = Vec::<f32>::try_from(best).unwrap();
        let chosen = Vec::<i64>::try_from(chosen).unwrap();
        let plain = net.decide(&rows);
        assert_eq!(plain.len(), rows.len());
        for (i, &(action, p, _)) in plain.iter().enumerate() {
            assert_eq!(action as i64, chosen[i], "row {i}");
            assert!(
                (p - f64::from(best[i])).abs() < 1e-5,
                "row {i}: {p} vs {}",
                best[i]
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planner.safetensors");
        net.save(&path).unwrap();
        assert_eq!(PlannerNet::load(&path).unwrap().decide(&rows), plain);
        for tick in &ticks {
            assert!(net.choose(&tick.features) < CHOICES);
        }
    }

    #[test]
    fn training_and_comparison_cover_every_family_and_policy() {
        let options = TrainOptions {
            families: vec![Family::MovingHotspot { speed: 0.001 }],
            seeds: vec![1],
            ticks: 30,
            horizon: 4,
            epochs: 20,
            requests_per_tick: 300,
            ..TrainOptions::default()
        };
        let mut steps = Vec::new();
        let (net, losses) = train(&options, 7, &mut |done, total| steps.push((done, total)));
        assert_eq!(losses.len(), 20);
        // Two rounds (the oracle acting, then the network): one run and 20 epochs each;
        // then each selector margin.
        let total = 42 + SELECTOR_MARGINS.len();
        assert_eq!(steps.last(), Some(&(total, total)));
        assert!(SELECTOR_MARGINS.contains(&net.selector_margin()));
        let families = [Family::HotKey, Family::Uniform];
        let tuned = [LoadSplit::tikv().with_thresholds(900.0, 3)];
        let mut runs = 0;
        let comparison = Comparison {
            net: Some(&net),
            tuned: &tuned,
            families: &families,
            seeds: &[1, 2],
            oracle_seeds: &[1],
            family_tuning_seeds: &[],
            traces: &[],
            ticks: 20,
            requests_per_tick: 300,
        };
        let rows = compare(&comparison, &mut |done, total| {
            runs = done;
            assert_eq!(total, 2 * 9 * 2 + 2);
        });
        assert_eq!(runs, 38);
        let policies: Vec<&str> = rows[..9].iter().map(|r| r.policy.as_str()).collect();
        assert_eq!(
            policies,
            [
                "size-only",
                "tikv",
                "cockroach",
                "cockroach-follow",
                "tikv-tuned",
                "tikv-tuned-tail",
                "model-per-shard",
                "model-selector",
                "model",
            ]
        );
        assert_eq!(rows.len(), 20);
        assert!(
            rows[18..]
                .iter()
                .all(|r| r.policy == "oracle" && r.seeds == 1)
        );
        let judged = judge(&rows, "model", &is_heuristic);
        assert_eq!(judged.len(), 2);
        assert!(
            judged
                .iter()
                .all(|j| j.relative.is_finite() && j.gap_closed.is_finite() && j.floor > 0.0),
            "{judged:?}"
        );
    }
}
