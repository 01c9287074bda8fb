//! What training the planner's network learns from (the oracle's choices on the training
//! families) and how every policy is judged on families the network never saw. The
//! optimiser itself, which needs Torch, is the crate `hanse-planner-train`.

use crate::candidates::{FORECAST_TICKS, Memory, best_of, proposals};
use crate::decide::{Design, Planner, scorer_actions};
use crate::envelope::{Envelope, Guarded};
use crate::knobs::WINDOW_ROUNDS;
use crate::model::{Example, TickExample, examples};
use crate::net::{CANDIDATE_FEATURES, PlannerNet, SHARD_FEATURES};
use crate::sim::eval::{Contender, Row, evaluate, tune};
use crate::sim::request::Request;
use crate::vocab::{Action, View};
use std::sync::Arc;

use crate::sim::policy::{FollowWorkload, LoadSplit, SizeOnly, TailLeaders, oracle_proposers};
use crate::sim::trace::Replay;
use crate::sim::workload::Family;
use crate::sim::{Scenario, Sim, cheapest};
use crate::vocab::Policy;

/// The families the network learns from.
pub fn training_families() -> Vec<Family> {
    vec![
        Family::Uniform,
        Family::ZipfianA,
        Family::MovingHotspot { speed: 0.001 },
        Family::Sequential,
        Family::ScanHeavy,
        Family::Regional,
        Family::FollowerReads,
    ]
}

/// Whole families kept out of training, for evaluation only: five from the first
/// round, and four frozen (2026-12-07) before any of the second round's policy work: a
/// flash crowd, a hotspot that turns back, two days of the diurnal load, and YCSB A
/// from four regions.
pub fn held_out_families() -> Vec<Family> {
    vec![
        Family::ZipfianC,
        Family::ZipfianE,
        Family::MovingHotspot { speed: 0.004 },
        Family::HotKey,
        Family::Diurnal { day_ticks: 200 },
        Family::FlashCrowd {
            at: 60,
            lasting: 60,
        },
        Family::ReversingHotspot {
            speed: 0.004,
            period: 50,
        },
        Family::Diurnal { day_ticks: 100 },
        Family::FourRegions,
    ]
}

/// How a training run goes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub families: Vec<Family>,
    pub seeds: Vec<u64>,
    /// Ticks of each simulated run the oracle labels.
    pub ticks: u64,
    /// The oracle's look-ahead.
    pub horizon: u64,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Requests simulated per tick (each weighing proportionally more when fewer).
    pub requests_per_tick: usize,
    /// Loads recorded from live clusters (`hanse planner record`), replayed beside the
    /// families, each with every seed.
    pub traces: Vec<Arc<Replay>>,
    /// Rounds in which the network, trained so far, acts while the oracle labels the
    /// ticks it leads to (DAgger): it learns what to do where its own choices take the
    /// cluster, not only where the oracle's do.
    pub dagger_rounds: usize,
    /// Ticks the scorer's teacher rolls each action out over.
    pub scorer_horizon: u64,
    /// The scorer's teacher labels every this many ticks (each labelled tick rolls out
    /// every proposed action).
    pub label_every: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            families: training_families(),
            seeds: vec![1, 2, 3],
            ticks: 200,
            horizon: 8,
            epochs: 300,
            learning_rate: 5e-3,
            requests_per_tick: 500,
            traces: Vec::new(),
            dagger_rounds: 1,
            scorer_horizon: 20,
            label_every: 2,
        }
    }
}

/// The three-region scenario with the training run's request budget.
fn scenario(family: Family, seed: u64, ticks: u64, requests_per_tick: usize) -> Scenario {
    sized(Scenario::for_family(family, seed), ticks, requests_per_tick)
}

/// `base` run for `ticks` with `requests_per_tick`, each weighing as much more as needed to
/// keep the load.
fn sized(base: Scenario, ticks: u64, requests_per_tick: usize) -> Scenario {
    Scenario {
        ticks,
        request_weight: base.request_weight * base.requests_per_tick as f64
            / requests_per_tick as f64,
        requests_per_tick,
        ..base
    }
}

/// The oracle's base: the planner's tuned heuristic, inside the envelope.
fn tuned_base() -> Guarded<LoadSplit> {
    Envelope::default().guard(LoadSplit::tuned())
}

/// The look-ahead oracle with the training run's proposers and `horizon`.
pub fn oracle(horizon: u64) -> Contender<'static> {
    Contender::custom("oracle", move |sim| {
        let owned = oracle_proposers();
        let proposers: Vec<&dyn Fn() -> Box<dyn Policy>> =
            owned.iter().map(|p| p.as_ref()).collect();
        sim.run_oracle(horizon, tuned_base(), &proposers, &mut |_, _, costs| {
            cheapest(costs)
        })
    })
}

/// The thresholds the tuned baselines choose among: requests per tick that make a shard
/// hot, and hot ticks in a row before it splits.
pub const TUNING_GRID: [(f64, u32); 9] = [
    (600.0, 1),
    (600.0, 3),
    (900.0, 1),
    (900.0, 3),
    (1_200.0, 1),
    (1_200.0, 3),
    (1_200.0, 10),
    (2_000.0, 1),
    (2_000.0, 3),
];

/// The TiKV- and CockroachDB-style rules with thresholds grid-tuned on the training
/// families over `seeds`.
pub fn tuned_baselines(seeds: &[u64], ticks: u64, requests_per_tick: usize) -> Vec<LoadSplit> {
    let scenario = |family, seed| scenario(family, seed, ticks, requests_per_tick);
    [LoadSplit::tikv(), LoadSplit::cockroach()]
        .iter()
        .map(|base| tune(base, &TUNING_GRID, &training_families(), seeds, &scenario))
        .collect()
}

/// The runs training learns from: every family and recorded trace with every seed, at
/// the options' length and request budget.
pub fn training_scenarios(options: &TrainOptions) -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    for &seed in &options.seeds {
        for &family in &options.families {
            scenarios.push(Scenario::for_family(family, seed));
        }
        for replay in &options.traces {
            scenarios.push(Scenario::recorded(replay.clone(), seed));
        }
    }
    scenarios
        .into_iter()
        .map(|base| sized(base, options.ticks, options.requests_per_tick))
        .collect()
}

/// Runs the oracle on every family and seed and collects its choices and rollout costs,
/// per shard and per tick. With a `learner`, the learner's choice is carried out each tick
/// (the oracle still labels it); without, the oracle's. `progress` hears (runs done, runs
/// in all).
pub fn collect_examples(
    options: &TrainOptions,
    learner: Option<&PlannerNet>,
    progress: &mut dyn FnMut(usize, usize),
) -> (Vec<Example>, Vec<TickExample>) {
    let owned = oracle_proposers();
    let proposers: Vec<&dyn Fn() -> Box<dyn Policy>> = owned.iter().map(|p| p.as_ref()).collect();
    let scenarios = training_scenarios(options);
    let runs = scenarios.len();
    let mut collected = Vec::new();
    let mut ticks = Vec::new();
    for (done, run) in scenarios.into_iter().enumerate() {
        Sim::new(run).run_oracle(
            options.horizon,
            tuned_base(),
            &proposers,
            &mut |view, firsts, costs| {
                let best = cheapest(costs);
                collected.extend(examples(view, &firsts[best]));
                let example = TickExample::new(view, costs);
                let chosen = learner.map_or(best, |net| net.choose(&example.features));
                ticks.push(example);
                chosen
            },
        );
        progress(done + 1, runs);
    }
    (collected, ticks)
}

/// One action the scorer's teacher rated: the shard's and the action's features, what
/// the action added to the run's summed cost over the teacher's horizon against the size
/// rule alone (negative: cheaper), and the shard's load [`FORECAST_TICKS`] ahead
/// (`ln(1 + x)` of its share of the requests times the number of shards).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreExample {
    pub shard: [f32; SHARD_FEATURES],
    pub candidate: [f32; CANDIDATE_FEATURES],
    pub advantage: f32,
    pub forecast: f32,
}

/// Shard `i`'s load in `future` as the forecast head learns it.
fn future_load(view: &View, future: &[Request], i: usize) -> f32 {
    let shard = &view.shards[i];
    let inside = future
        .iter()
        .filter(|r| r.key >= shard.start && r.key < shard.end)
        .count();
    let share = inside as f64 / future.len().max(1) as f64;
    (share * view.shards.len() as f64).ln_1p() as f32
}

/// Labels one run for the scorer. The teacher is privileged: it rolls every action
/// proposed for the busiest shards out on a copy of the cluster, serving the very requests
/// the workload will send, against the size rule alone, and it reads the shards' future
/// load off the workload generator. With a `learner`, the learner's choices are carried
/// out (DAgger); without, the teacher's: the size rule and the (at most two) actions whose
/// rollouts were cheapest, if cheaper than none.
fn label_run(
    options: &TrainOptions,
    scenario: Scenario,
    learner: Option<&PlannerNet>,
) -> Vec<ScoreExample> {
    let envelope = Envelope::default();
    let mut memory = Memory::default();
    let mut labelled = Vec::new();
    let sim = Sim::new(scenario);
    let run_ticks = sim.run_ticks();
    sim.run_looking_ahead(&mut |ahead, view| {
        memory.observe(view);
        let base = envelope.admit(view, SizeOnly.decide(view)).0;
        let learnt =
            learner.map(|net| scorer_actions(net, &memory, view).unwrap_or_else(|_| base.clone()));
        if view.tick < WINDOW_ROUNDS as u64 || view.tick % options.label_every.max(1) != 0 {
            return envelope.admit(view, learnt.unwrap_or(base)).0;
        }
        let cost_of = |first: Vec<Action>| {
            let mut size_rule = envelope.guard(SizeOnly);
            ahead
                .rollout(first, &mut size_rule, options.scorer_horizon)
                .summed_cost(run_ticks)
        };
        let base_cost = cost_of(base.clone());
        let future = ahead.future_requests(FORECAST_TICKS);
        let mut rated: Vec<(f64, Action)> = Vec::new();
        for proposal in proposals(view, &memory, &base) {
            let mut first = base.clone();
            first.push(proposal.action.clone());
            let (admitted, refused) = envelope.admit(view, first);
            if !refused.is_empty() {
                continue;
            }
            let advantage = cost_of(admitted) - base_cost;
            labelled.push(ScoreExample {
                shard: proposal.shard,
                candidate: proposal.candidate,
                advantage: advantage as f32,
                forecast: future_load(view, &future, proposal.action.shard()),
            });
            rated.push((advantage, proposal.action));
        }
        // Proposals leave the shards the size rule acts on alone.
        let actions = learnt.unwrap_or_else(|| {
            let mut taken = base.clone();
            taken.extend(best_of(rated, 0.0));
            taken
        });
        envelope.admit(view, actions).0
    });
    labelled
}

/// The scorer's examples from every training run (see [`label_run`]), labelled on all
/// cores. `progress` hears (runs done, runs in all).
pub fn label_candidates(
    options: &TrainOptions,
    learner: Option<&PlannerNet>,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<ScoreExample> {
    let scenarios = training_scenarios(options);
    let runs = scenarios.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(runs.max(1));
    let (sender, receiver) = std::sync::mpsc::channel();
    let mut by_run: Vec<Vec<ScoreExample>> = vec![Vec::new(); runs];
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (sender, next, scenarios) = (sender.clone(), &next, &scenarios);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(scenario) = scenarios.get(k) else {
                        break;
                    };
                    let examples = label_run(options, scenario.clone(), learner);
                    if sender.send((k, examples)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (done, (k, examples)) in receiver.iter().enumerate() {
            by_run[k] = examples;
            progress(done + 1, runs);
        }
    });
    by_run.concat()
}

/// The planner with the scorer deciding, under `net`'s scorer margin.
pub fn scorer_planner(net: &PlannerNet) -> Planner {
    Planner::designed(net.clone(), Design::Scorer, Envelope::default())
}

/// What [`compare`] runs.
#[derive(Clone, Copy)]
pub struct Comparison<'a> {
    pub net: Option<&'a PlannerNet>,
    pub tuned: &'a [LoadSplit],
    pub families: &'a [Family],
    pub seeds: &'a [u64],
    pub oracle_seeds: &'a [u64],
    /// Seeds the CockroachDB-style rule is tuned on for each family by itself (none:
    /// no such contender); they should not be among `seeds`.
    pub family_tuning_seeds: &'a [u64],
    /// The recordings `families`' [`Family::Trace`] entries replay (index 1 first).
    pub traces: &'a [Arc<Replay>],
    pub ticks: u64,
    pub requests_per_tick: usize,
}

/// The contender tuned on each family by itself: a reference, not a deployable rule.
pub const FAMILY_TUNED: &str = "cockroach-family-tuned";

/// Whether `policy` (a contender's name) is one of the heuristics a policy is judged
/// against: not the network, the oracle, or the rule tuned on each family by itself.
pub fn is_heuristic(policy: &str) -> bool {
    !policy.starts_with("model") && policy != "oracle" && policy != FAMILY_TUNED
}

/// Every policy on each of `families` over `seeds`: the size-only rule, TiKV- and
/// CockroachDB-style, the `tuned` baselines, the network when given (as the planner in
/// model mode, which falls back to the tuned heuristic where it must), and the oracle
/// when `oracle_seeds` is not empty (it is slow: every tick rolls each proposer out).
/// `progress` hears (runs done, runs in all).
pub fn compare(comparison: &Comparison, progress: &mut dyn FnMut(usize, usize)) -> Vec<Row> {
    let Comparison {
        net,
        tuned,
        families,
        seeds,
        oracle_seeds,
        family_tuning_seeds,
        traces,
        ticks,
        requests_per_tick,
    } = *comparison;
    let scenario = |family, seed| match family {
        Family::Trace { index } if (1..=traces.len()).contains(&index) => sized(
            Scenario::replaying(family, traces[index - 1].clone(), seed),
            ticks,
            requests_per_tick,
        ),
        _ => scenario(family, seed, ticks, requests_per_tick),
    };
    let family_tuned: Vec<(String, LoadSplit)> = if family_tuning_seeds.is_empty() {
        Vec::new()
    } else {
        families
            .iter()
            .map(|family| {
                let base = LoadSplit::cockroach();
                let tuned = tune(
                    &base,
                    &TUNING_GRID,
                    &[*family],
                    family_tuning_seeds,
                    &scenario,
                );
                (family.name(), tuned)
            })
            .collect()
    };
    let mut contenders = vec![
        Contender::policy(|| Box::new(SizeOnly)),
        Contender::policy(|| Box::new(LoadSplit::tikv())),
        Contender::policy(|| Box::new(LoadSplit::cockroach())),
        Contender::policy(|| Box::new(FollowWorkload::cockroach())),
    ];
    contenders.extend(
        tuned
            .iter()
            .map(|policy| Contender::policy(move || Box::new(policy.clone()))),
    );
    // The last tuned rule with its leaders placed for the tail latency: the heuristic
    // form of the proposer the oracle gained most from.
    if let Some(inner) = tuned.last() {
        contenders.push(Contender::policy(move || {
            Box::new(TailLeaders {
                inner: inner.clone(),
                ..TailLeaders::tuned()
            })
        }));
    }
    if !family_tuned.is_empty() {
        let family_tuned = &family_tuned;
        contenders.push(Contender::custom(FAMILY_TUNED, move |sim| {
            let family = sim.family().name();
            let tuned = family_tuned
                .iter()
                .find(|(name, _)| *name == family)
                .map_or_else(LoadSplit::tuned, |(_, tuned)| tuned.clone());
            sim.run(&mut Envelope::default().guard(tuned))
        }));
    }
    if let Some(net) = net {
        for design in [Design::PerShard, Design::Selector, Design::Scorer] {
            contenders.push(Contender::policy(move || {
                Box::new(Planner::designed(net.clone(), design, Envelope::default()))
            }));
        }
    }
    let policy_runs = families.len() * contenders.len() * seeds.len();
    let total = policy_runs + families.len() * oracle_seeds.len();
    let mut rows = evaluate(families, &contenders, seeds, &scenario, &mut |done, _| {
        progress(done, total)
    });
    if !oracle_seeds.is_empty() {
        let horizon = TrainOptions::default().horizon;
        rows.extend(evaluate(
            families,
            &[oracle(horizon)],
            oracle_seeds,
            &scenario,
            &mut |done, _| progress(policy_runs + done, total),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace::{TraceShard, TraceTick};

    #[test]
    fn a_recorded_load_gives_examples_like_a_family() {
        let hot = TraceTick {
            shards: vec![TraceShard {
                start: Vec::new(),
                end: Vec::new(),
                reads_per_sec: 500.0,
                writes_per_sec: 2_500.0,
                sampled_keys: vec![
                    (b"a".to_vec(), 10),
                    (b"k".to_vec(), 10),
                    (b"t".to_vec(), 10),
                ],
                origins: vec![("eu-hamburg".into(), 3_000.0)],
            }],
        };
        let options = TrainOptions {
            families: Vec::new(),
            traces: vec![Arc::new(Replay::new(&[hot]))],
            seeds: vec![1],
            ticks: 20,
            horizon: 3,
            requests_per_tick: 300,
            ..TrainOptions::default()
        };
        let (examples, ticks) = collect_examples(&options, None, &mut |_, _| {});
        // Four shards at first, one example per shard per tick.
        assert!(examples.len() >= 4 * 20, "{}", examples.len());
        assert_eq!(ticks.len(), 20);
        let run = |seed| Sim::new(Scenario::recorded(options.traces[0].clone(), seed));
        let floor = |seed| run(seed).run(&mut SizeOnly);
        assert_eq!(floor(1), floor(1), "a replay is a function of its seed");
    }

    /// Options for a short labelling run.
    fn quick() -> TrainOptions {
        TrainOptions {
            families: vec![Family::MovingHotspot { speed: 0.004 }, Family::ZipfianA],
            seeds: vec![1],
            ticks: 40,
            requests_per_tick: 300,
            scorer_horizon: 6,
            label_every: 3,
            ..TrainOptions::default()
        }
    }

    #[test]
    fn the_privileged_teacher_finds_actions_that_pay_and_actions_that_cost() {
        let options = quick();
        let mut runs = Vec::new();
        let examples =
            label_candidates(&options, None, &mut |done, total| runs.push((done, total)));
        assert_eq!(runs.last(), Some(&(2, 2)));
        assert!(examples.len() > 50, "{}", examples.len());
        assert!(
            examples
                .iter()
                .all(|e| e.advantage.is_finite() && e.forecast >= 0.0)
        );
        assert!(
            examples.iter().any(|e| e.advantage < -0.01),
            "some action pays"
        );
        assert!(
            examples.iter().any(|e| e.advantage > 0.01),
            "some action costs"
        );
        // Splits, leaderships and replica moves were rated (merges need halves of a
        // split, which these short runs may not make).
        for kind in [0, 3, 4] {
            assert!(
                examples.iter().any(|e| e.candidate[kind] == 1.0),
                "kind {kind} never rated"
            );
        }
        // Labelling is a function of the options: the same examples on all cores.
        assert_eq!(label_candidates(&options, None, &mut |_, _| {}), examples);
    }

    #[test]
    fn training_and_held_out_families_do_not_overlap() {
        let training: Vec<String> = training_families().iter().map(Family::name).collect();
        assert!(
            held_out_families()
                .iter()
                .all(|f| !training.contains(&f.name()))
        );
    }
}
