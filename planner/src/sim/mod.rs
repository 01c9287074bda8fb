//! A deterministic model of a cluster under a workload, for training and judging the
//! planner's policies without running one.
//!
//! Nodes live in regions and serve a number of operations per tick. Shards are ranges of
//! the key space with a size, a replica set and a leader. Each tick the [`workload`]'s
//! requests load the nodes: a read costs its shard's leader one operation, a write costs
//! the leader one and every follower half of one, a scan costs the leader of each shard it
//! touches in proportion to the keys it reads plus a fixed step per shard. A policy sees
//! each shard's statistics and proposes [`Action`]s; actions cost what they cost on a real
//! cluster: a split or a leader transfer almost nothing, moving a replica reads and
//! writes the shard's bytes on two nodes for ticks in proportion to its size.
//!
//! What a run is judged by ([`Outcome`]): the time-weighted ratio of the busiest node's
//! load to the mean, an estimated p99 latency (network round trips between regions plus
//! M/M/1 queueing at the busiest node a request meets), and the moves made.

pub mod eval;
pub mod floor;
pub mod policy;
pub mod request;
pub mod trace;
pub mod workload;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use request::{Op, Request};
use workload::Workload;

use crate::knobs::{
    MERGE_STALL_MS, RESERVOIR_REQUESTS, ROUND_MS, SPLIT_STALL_MS, TRANSFER_STALL_MS, WINDOW_ROUNDS,
};
use crate::stats::{summarize, summarize_counted};
use crate::vocab::{Action, KEY_SPACE, Node, Policy, Shard, ShardStats, View};
use hanse_shard::ReplicaRole;

/// What the look-ahead oracle asks each tick (see [`Sim::run_oracle`]): given the view,
/// each candidate's first actions and its rollout's cost, which candidate to carry out.
pub type Choose<'a> = dyn FnMut(&View, &[Vec<Action>], &[f64]) -> usize + 'a;

/// The cluster and workload of a run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: Vec<Node>,
    /// One-way latency in ms between regions (`[from][to]`).
    pub region_latency_ms: Vec<Vec<f64>>,
    pub family: workload::Family,
    /// Requests simulated per tick.
    pub requests_per_tick: usize,
    /// Each simulated request stands for this many real ones.
    pub request_weight: f64,
    pub ticks: u64,
    pub seed: u64,
    pub initial_shards: usize,
    /// The recording a [`workload::Family::Recorded`] scenario replays.
    pub replay: Option<Arc<trace::Replay>>,
    /// Ticks of load the policies see averaged, as the live planner averages its rounds
    /// ([`WINDOW_ROUNDS`]); 1 shows them the last tick alone.
    pub window: usize,
    /// The share of reads whose clients accept a bounded staleness (follower reads):
    /// the replica (voter or learner) nearest the client serves them when it can keep
    /// to [`Scenario::staleness_ms`], the leader otherwise.
    pub stale_reads: f64,
    /// The follower reads' bound: a replica keeps to it when its round trip to the leader
    /// (for a read index, reused while younger than the bound) is shorter.
    pub staleness_ms: f64,
    /// Whether each shard starts with a learner on the node after its three voters (in
    /// four regions, the region they leave out), as a recovery region's replica.
    pub learners: bool,
}

/// The bound follower reads keep unless a scenario says otherwise, as
/// `scripts/bench-regions.sh` measured them (1 s: China's and Sydney's replicas served in
/// 2.4-2.5 ms at the p99 on 250/300 ms round trips to the leader).
pub const STALENESS_MS: f64 = 1_000.0;

impl Scenario {
    /// Three regions (Hamburg, China, Sydney), two nodes in each, four shards.
    pub fn three_regions(family: workload::Family, seed: u64) -> Scenario {
        Scenario {
            nodes: (0..6)
                .map(|i| Node {
                    region: i % 3,
                    capacity: 4_000.0,
                })
                .collect(),
            region_latency_ms: vec![
                vec![0.5, 125.0, 150.0],
                vec![125.0, 0.5, 75.0],
                vec![150.0, 75.0, 0.5],
            ],
            family,
            requests_per_tick: 2_000,
            request_weight: 5.0,
            ticks: 600,
            seed,
            initial_shards: 4,
            replay: None,
            window: WINDOW_ROUNDS,
            stale_reads: 0.0,
            staleness_ms: STALENESS_MS,
            learners: false,
        }
    }

    /// Four regions (Hamburg, China, Sydney and Virginia), two nodes in each, four
    /// shards: the three regions' matrix with Virginia 45, 110 and 100 ms one way from the
    /// others (about the public clouds' round trips).
    pub fn four_regions(family: workload::Family, seed: u64) -> Scenario {
        let three = Scenario::three_regions(family, seed);
        Scenario {
            nodes: (0..8)
                .map(|i| Node {
                    region: i % 4,
                    capacity: 4_000.0,
                })
                .collect(),
            region_latency_ms: vec![
                vec![0.5, 125.0, 150.0, 45.0],
                vec![125.0, 0.5, 75.0, 110.0],
                vec![150.0, 75.0, 0.5, 100.0],
                vec![45.0, 110.0, 100.0, 0.5],
            ],
            // As much load per node as in three regions.
            request_weight: three.request_weight * 8.0 / 6.0,
            ..three
        }
    }

    /// The cluster `family` runs on: four regions for [`workload::Family::FourRegions`]
    /// and [`workload::Family::FollowerReads`] (there three reads in four accept the
    /// default staleness bound, and each shard has a learner), three for the others.
    pub fn for_family(family: workload::Family, seed: u64) -> Scenario {
        match family {
            workload::Family::FourRegions => Scenario::four_regions(family, seed),
            workload::Family::FollowerReads => Scenario {
                stale_reads: 0.75,
                learners: true,
                ..Scenario::four_regions(family, seed)
            },
            _ => Scenario::three_regions(family, seed),
        }
    }

    /// The three regions under a recorded load, as heavy on average as the recording.
    pub fn recorded(replay: Arc<trace::Replay>, seed: u64) -> Scenario {
        Scenario::replaying(workload::Family::Recorded, replay, seed)
    }

    /// [`Scenario::recorded`] under the name of `family` (an evaluation's
    /// [`workload::Family::Trace`]).
    pub fn replaying(family: workload::Family, replay: Arc<trace::Replay>, seed: u64) -> Scenario {
        let base = Scenario::three_regions(family, seed);
        Scenario {
            request_weight: replay.mean_rate / base.requests_per_tick as f64,
            replay: Some(replay),
            ..base
        }
    }
}

/// Bytes a node moves per tick when a replica moves (the rest of its work goes on).
const MOVE_BYTES_PER_TICK: f64 = 32.0 * 1024.0 * 1024.0;
/// Load a replica move puts on each of its two nodes while it runs (operations per tick).
const MOVE_LOAD: f64 = 400.0;
/// Leader cost of a scan per shard it touches, on top of its keys.
const SCAN_STEP: f64 = 2.0;
/// Keys of a scan that cost one operation.
const SCAN_KEYS_PER_OP: f64 = 100.0;
/// Service time of one operation at an idle node.
const SERVICE_MS: f64 = 0.5;
/// Bytes the data set starts with, spread evenly.
const INITIAL_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Per tick, each node's utilisation.
    pub node_load: Vec<Vec<f64>>,
    /// Per tick, the estimated p99 latency in ms.
    pub p99_ms: Vec<f64>,
    /// Replica moves, splits, merges, leader transfers and role swaps carried out.
    pub moves: u64,
    pub splits: u64,
    pub merges: u64,
    pub transfers: u64,
    pub role_swaps: u64,
    /// Actions refused as invalid (a merge of different replica sets, a split outside
    /// its shard, ...).
    pub refused: u64,
    pub shards_at_end: usize,
    /// Per tick, the floor no policy's cost passes (see [`floor`]).
    pub floor: Vec<floor::TickFloor>,
}

impl Outcome {
    /// Each tick's max/mean node utilisation (1 is perfectly even).
    pub fn imbalance_per_tick(&self) -> Vec<f64> {
        self.node_load
            .iter()
            .map(|loads| {
                let mean = loads.iter().sum::<f64>() / loads.len() as f64;
                let max = loads.iter().cloned().fold(0.0, f64::max);
                if mean > 0.0 { max / mean } else { 1.0 }
            })
            .collect()
    }

    /// Time-weighted mean of max/mean node utilisation (1 is perfectly even).
    pub fn imbalance(&self) -> f64 {
        let per_tick = self.imbalance_per_tick();
        per_tick.iter().sum::<f64>() / per_tick.len().max(1) as f64
    }

    pub fn mean_p99_ms(&self) -> f64 {
        self.p99_ms.iter().sum::<f64>() / self.p99_ms.len().max(1) as f64
    }

    /// The composite cost policies are ranked by: imbalance, p99 (per 100 ms) and moves
    /// (each replica move as much as 1 % more imbalance for the whole run).
    pub fn cost(&self) -> f64 {
        self.imbalance() + self.mean_p99_ms() / 100.0 + self.moves as f64 * 0.01
    }

    /// The cost's floor over the run: the mean of the ticks' floors.
    pub fn floor_cost(&self) -> f64 {
        let sum: f64 = self.floor.iter().map(floor::TickFloor::cost).sum();
        sum / self.floor.len().max(1) as f64
    }

    /// What this outcome adds to the cost of a run of `run_ticks` ticks, times
    /// `run_ticks`: each tick's imbalance and p99 (per 100 ms), and 0.01 of the run's cost
    /// per replica move. Additive over ticks, so a rollout of a few ticks weighs a move
    /// as the whole run does (a rollout's own [`Outcome::cost`] weighs it `run_ticks /
    /// ticks` times more).
    pub fn summed_cost(&self, run_ticks: u64) -> f64 {
        let per_tick: f64 = self
            .imbalance_per_tick()
            .iter()
            .zip(&self.p99_ms)
            .map(|(imbalance, p99)| imbalance + p99 / 100.0)
            .sum();
        per_tick + self.moves as f64 * 0.01 * run_ticks as f64
    }

    /// What the cost exceeds its floor by: what a policy controls.
    pub fn excess(&self) -> f64 {
        self.cost() - self.floor_cost()
    }
}

/// A simulated cluster running a scenario.
#[derive(Clone)]
pub struct Sim {
    scenario: Scenario,
    workload: Workload,
    pub shards: Vec<Shard>,
    /// Replica moves under way: (from, to, ticks left).
    copying: Vec<(usize, usize, u64)>,
    /// Draws the key samples.
    sampler: StdRng,
    tick: u64,
    /// Each shard's last ticks of load (by its range: a changed shard starts afresh)
    /// and the nodes' last ticks of load, for the averaged view.
    recent: HashMap<(u64, u64), VecDeque<ShardStats>>,
    recent_load: VecDeque<Vec<f64>>,
    /// Shards (by their start) whose requests wait, and how much longer from the next
    /// tick's start (ms): a leadership that moved to another region, a split's new half
    /// without its first leader.
    stalls: HashMap<u64, f64>,
}

impl Sim {
    pub fn new(scenario: Scenario) -> Sim {
        let regions = scenario.region_latency_ms.len();
        let workload = match &scenario.replay {
            Some(replay) => Workload::replaying(replay.clone(), regions, scenario.seed),
            None => Workload::new(scenario.family, regions, scenario.seed),
        };
        let scenario_seed = scenario.seed;
        let n = scenario.initial_shards.max(1) as u64;
        let nodes = scenario.nodes.len();
        let shards = (0..n)
            .map(|i| {
                // Three replicas in consecutive nodes (one per region in the default
                // layout), leaders spread.
                let replicas: Vec<usize> = (0..3.min(nodes))
                    .map(|r| (i as usize + r) % nodes)
                    .collect();
                let learners = match scenario.learners && nodes > 3 {
                    true => vec![(i as usize + 3) % nodes],
                    false => Vec::new(),
                };
                Shard {
                    start: i * (KEY_SPACE / n),
                    end: if i + 1 == n {
                        KEY_SPACE
                    } else {
                        (i + 1) * (KEY_SPACE / n)
                    },
                    size_bytes: INITIAL_BYTES / n as f64,
                    leader: replicas[0],
                    replicas,
                    learners,
                    changed_at: 0,
                    merged_at: None,
                }
            })
            .collect();
        Sim {
            scenario,
            workload,
            shards,
            copying: Vec::new(),
            sampler: StdRng::seed_from_u64(scenario_seed ^ 0x5eed),
            tick: 0,
            recent: HashMap::new(),
            recent_load: VecDeque::new(),
            stalls: HashMap::new(),
        }
    }

    /// The workload family the run serves.
    pub fn family(&self) -> workload::Family {
        self.scenario.family
    }

    fn shard_of(&self, key: u64) -> usize {
        self.shards.partition_point(|s| s.end <= key)
    }

    /// Runs every tick with `policy` deciding after each.
    pub fn run(mut self, policy: &mut dyn Policy) -> Outcome {
        let mut outcome = Outcome::default();
        while self.tick < self.scenario.ticks {
            self.step(&mut outcome, |view| policy.decide(view));
        }
        outcome.shards_at_end = self.shards.len();
        outcome
    }

    /// Runs every tick with the look-ahead oracle weighing the choices: the ceiling the
    /// heuristics and the model are measured against, and the model's teacher. Each tick it
    /// weighs what `base` would do (a policy that sees every tick and keeps its memory)
    /// against what each of `proposers` (made fresh, so without memory of earlier ticks)
    /// would do: it rolls each out over the next `horizon` ticks on a copy of the cluster,
    /// continuing with the same policy (a copy of `base` for the base). `choose` sees the
    /// tick's view, each candidate's first actions and its rollout's cost (the base's first,
    /// then `proposers`' in order) and answers which to carry out: the oracle takes the
    /// [`cheapest`]; a learner being taught may take its own choice.
    pub fn run_oracle<B: Policy + Clone + 'static>(
        self,
        horizon: u64,
        mut base: B,
        proposers: &[&dyn Fn() -> Box<dyn Policy>],
        choose: &mut Choose,
    ) -> Outcome {
        self.run_looking_ahead(&mut |ahead, view| {
            let mut candidates: Vec<(Vec<Action>, Box<dyn Policy>)> = Vec::new();
            candidates.push((base.decide(view), Box::new(base.clone())));
            for make in proposers {
                let mut proposer = make();
                candidates.push((proposer.decide(view), proposer));
            }
            let (costs, mut firsts): (Vec<f64>, Vec<Vec<Action>>) = candidates
                .into_iter()
                .map(|(first, mut policy)| {
                    let cost = ahead.rollout(first.clone(), &mut policy, horizon).cost();
                    (cost, first)
                })
                .unzip();
            let chosen = choose(view, &firsts, &costs).min(firsts.len() - 1);
            firsts.swap_remove(chosen)
        })
    }

    /// Runs every tick with `decide` seeing, beside the tick's view, the cluster as it was
    /// before the tick: what a teacher rolls futures out from ([`Sim::rollout`]).
    pub fn run_looking_ahead(
        mut self,
        decide: &mut dyn FnMut(&Sim, &View) -> Vec<Action>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        while self.tick < self.scenario.ticks {
            let ahead = self.clone();
            self.step(&mut outcome, |view| decide(&ahead, view));
        }
        outcome.shards_at_end = self.shards.len();
        outcome
    }

    /// On a copy of this cluster (as it was before its current tick): serves the tick
    /// again (the same requests), carries out `first`, then lets `policy` decide for up to
    /// `horizon` more ticks; what that future cost.
    pub fn rollout(&self, first: Vec<Action>, policy: &mut dyn Policy, horizon: u64) -> Outcome {
        let mut trial = self.clone();
        trial.scenario.ticks = (trial.tick + 1 + horizon).min(trial.scenario.ticks);
        let mut future = Outcome::default();
        let mut pending = Some(first);
        while trial.tick < trial.scenario.ticks {
            trial.step(&mut future, |v| match pending.take() {
                Some(actions) => actions,
                None => policy.decide(v),
            });
        }
        future
    }

    /// The ticks the run lasts.
    pub fn run_ticks(&self) -> u64 {
        self.scenario.ticks
    }

    /// The requests the workload will send `ahead` ticks after the current one: what only
    /// a privileged teacher, one that sees the workload generator, may know.
    pub fn future_requests(&self, ahead: u64) -> Vec<Request> {
        let mut workload = self.workload.clone();
        let mut requests = Vec::new();
        for k in 0..=ahead {
            requests = workload.tick(self.tick + k, self.scenario.requests_per_tick);
        }
        requests
    }

    /// Serves one tick, records it, and carries out what `decide` answers.
    fn step(&mut self, outcome: &mut Outcome, decide: impl FnOnce(&View) -> Vec<Action>) {
        let requests = self
            .workload
            .tick(self.tick, self.scenario.requests_per_tick);
        let (stats, load, p99, floor) = self.serve(&requests);
        outcome.node_load.push(load.clone());
        outcome.p99_ms.push(p99);
        outcome.floor.push(floor);
        let (stats, load) = self.averaged(stats, load);
        let view = View {
            tick: self.tick,
            nodes: &self.scenario.nodes,
            shards: &self.shards,
            stats: &stats,
            node_load: &load,
            region_latency_ms: &self.scenario.region_latency_ms,
        };
        let actions = decide(&view);
        self.apply_all(actions, outcome);
        self.tick += 1;
    }

    /// This tick's shard statistics and node loads averaged with the last ticks' (see
    /// [`Scenario::window`]), as the live planner sees them.
    fn averaged(&mut self, stats: Vec<ShardStats>, load: Vec<f64>) -> (Vec<ShardStats>, Vec<f64>) {
        let window = self.scenario.window.max(1);
        let ranges: Vec<(u64, u64)> = self.shards.iter().map(|s| (s.start, s.end)).collect();
        self.recent.retain(|range, _| ranges.contains(range));
        let averaged = ranges
            .iter()
            .zip(stats)
            .map(|(range, now)| {
                let recent = self.recent.entry(*range).or_default();
                recent.push_back(now);
                while recent.len() > window {
                    recent.pop_front();
                }
                mean_stats(recent)
            })
            .collect();
        self.recent_load.push_back(load);
        while self.recent_load.len() > window {
            self.recent_load.pop_front();
        }
        let n = self.recent_load.len() as f64;
        let nodes = self.scenario.nodes.len();
        let load = (0..nodes)
            .map(|i| self.recent_load.iter().map(|l| l[i]).sum::<f64>() / n)
            .collect();
        (averaged, load)
    }

    fn apply_all(&mut self, mut actions: Vec<Action>, outcome: &mut Outcome) {
        // Applied from the highest shard index down, so earlier indices stay valid.
        actions.sort_by_key(|a| std::cmp::Reverse(a.shard()));
        for action in actions {
            if !self.apply(&action, outcome) {
                outcome.refused += 1;
            }
        }
    }

    /// Serves one tick: the shards' statistics, each node's utilisation, the p99, and the
    /// tick's floor.
    fn serve(
        &mut self,
        requests: &[Request],
    ) -> (Vec<ShardStats>, Vec<f64>, f64, floor::TickFloor) {
        let weight = self.scenario.request_weight;
        let regions = self.scenario.region_latency_ms.len();
        let nodes = &self.scenario.nodes;
        let mut stats = vec![
            ShardStats {
                origins: vec![0.0; regions],
                ..ShardStats::default()
            };
            self.shards.len()
        ];
        // Per shard, a reservoir of the keys its requests touched (Algorithm R).
        let mut reservoirs: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); self.shards.len()];
        let mut scans_from: Vec<Vec<(u64, u64)>> = vec![Vec::new(); self.shards.len()];
        let mut ops = vec![0.0; nodes.len()];
        for &(from, to, _) in &self.copying {
            ops[from] += MOVE_LOAD;
            ops[to] += MOVE_LOAD;
        }
        // The nodes each request waits on, and its network time, for the latency pass.
        let mut paths: Vec<(f64, Vec<usize>)> = Vec::with_capacity(requests.len());
        let count = requests.len().max(1) as f64;
        let stale: Vec<bool> = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                request.op == Op::Read
                    && self.scenario.stale_reads > 0.0
                    && unit_draw(self.scenario.seed, self.tick, i) < self.scenario.stale_reads
            })
            .collect();
        for (i, request) in requests.iter().enumerate() {
            let first = self.shard_of(request.key);
            // Requests arrive spread over the tick; a stalled shard's wait for the rest.
            let arrival = ROUND_MS as f64 * (i as f64 + 0.5) / count;
            let stalled = self
                .stalls
                .get(&self.shards[first].start)
                .map_or(0.0, |left| (left - arrival).max(0.0));
            let (seen, reservoir) = &mut reservoirs[first];
            *seen += 1;
            if reservoir.len() < RESERVOIR_REQUESTS {
                reservoir.push(request.key);
            } else {
                let slot = self.sampler.random_range(0..*seen);
                if slot < RESERVOIR_REQUESTS as u64 {
                    reservoir[slot as usize] = request.key;
                }
            }
            let shard = &self.shards[first];
            let leader_region = nodes[shard.leader].region;
            let network =
                2.0 * self.scenario.region_latency_ms[request.origin][leader_region] + stalled;
            stats[first].origins[request.origin] += weight;
            match request.op {
                Op::Read => {
                    stats[first].reads += weight;
                    match stale[i]
                        .then(|| self.follower_for(first, request.origin))
                        .flatten()
                    {
                        Some(replica) => {
                            ops[replica] += weight;
                            let region = nodes[replica].region;
                            let trip =
                                2.0 * self.scenario.region_latency_ms[request.origin][region];
                            // Its cached read index lasts into a stall as long as the bound.
                            let waited = (stalled - self.scenario.staleness_ms).max(0.0);
                            paths.push((trip + waited, vec![replica]));
                        }
                        None => {
                            ops[shard.leader] += weight;
                            paths.push((network, vec![shard.leader]));
                        }
                    }
                }
                Op::Write { bytes } => {
                    stats[first].writes += weight;
                    stats[first].bytes_written += weight * bytes as f64;
                    for &r in shard.replicas.iter().chain(&shard.learners) {
                        ops[r] += if r == shard.leader {
                            weight
                        } else {
                            weight / 2.0
                        };
                    }
                    let leader = shard.leader;
                    let quorum = self.quorum_ms(first);
                    self.shards[first].size_bytes += weight * bytes as f64;
                    paths.push((network + quorum, vec![leader]));
                }
                Op::Scan { span } => {
                    let end = request.key.saturating_add(span).min(KEY_SPACE);
                    scans_from[first].push((request.key, end));
                    let mut touched = Vec::new();
                    let mut index = first;
                    while index < self.shards.len() && self.shards[index].start < end {
                        let shard = &self.shards[index];
                        let from = request.key.max(shard.start);
                        let keys =
                            (end.min(shard.end) - from) as f64 / (KEY_SPACE as f64) * 100_000.0;
                        ops[shard.leader] += weight * (SCAN_STEP + keys / SCAN_KEYS_PER_OP);
                        stats[index].scans += weight;
                        touched.push(shard.leader);
                        index += 1;
                    }
                    paths.push((network, touched));
                }
            }
        }
        for ((s, (_, reservoir)), scans) in stats.iter_mut().zip(reservoirs).zip(scans_from) {
            let sampled = summarize(reservoir);
            // How many of the scans that started in the shard spanned each sampled key.
            s.crossing = sampled
                .iter()
                .map(|&(key, _)| {
                    scans
                        .iter()
                        .filter(|&&(from, to)| from < key && key < to)
                        .count() as u64
                })
                .collect();
            s.sampled = sampled;
        }
        let load: Vec<f64> = ops
            .iter()
            .zip(nodes)
            .map(|(ops, node)| ops / node.capacity)
            .collect();
        let wait = |node: usize| queue_p99_ms(load[node]);
        let mut latencies: Vec<f64> = paths
            .iter()
            .map(|(network, touched)| {
                network + touched.iter().map(|&n| wait(n)).fold(0.0, f64::max)
            })
            .collect();
        latencies.sort_unstable_by(f64::total_cmp);
        let p99 = latencies
            .get(latencies.len() * 99 / 100)
            .copied()
            .unwrap_or(0.0);
        self.copying.retain_mut(|(_, _, left)| {
            *left = left.saturating_sub(1);
            *left > 0
        });
        self.stalls.retain(|_, left| {
            *left -= ROUND_MS as f64;
            *left > 0.0
        });
        let floor = floor::tick_floor(
            requests,
            &stale,
            weight,
            nodes,
            &self.scenario.region_latency_ms,
            &ops,
            &queue_p99_ms,
        );
        (stats, load, p99, floor)
    }

    /// The replica other than the leader that serves `shard`'s follower reads from
    /// `origin`: the nearest to it, if that one keeps to the staleness bound.
    fn follower_for(&self, shard: usize, origin: usize) -> Option<usize> {
        let shard = &self.shards[shard];
        let latency = &self.scenario.region_latency_ms;
        let nodes = &self.scenario.nodes;
        let nearest = shard
            .replicas
            .iter()
            .chain(&shard.learners)
            .copied()
            .min_by(|&a, &b| {
                latency[origin][nodes[a].region].total_cmp(&latency[origin][nodes[b].region])
            })?;
        let leader_trip = 2.0 * latency[nodes[nearest].region][nodes[shard.leader].region];
        (nearest != shard.leader && leader_trip < self.scenario.staleness_ms).then_some(nearest)
    }

    fn quorum_ms(&self, shard: usize) -> f64 {
        let shard = &self.shards[shard];
        quorum_ms(
            &self.scenario.region_latency_ms,
            &self.scenario.nodes,
            &shard.replicas,
            shard.leader,
        )
    }

    /// Carries out `action`; false when it is not valid now.
    fn apply(&mut self, action: &Action, outcome: &mut Outcome) -> bool {
        match *action {
            Action::Split { shard, at } => {
                let Some(s) = self.shards.get(shard) else {
                    return false;
                };
                if at <= s.start || at >= s.end {
                    return false;
                }
                let share = (at - s.start) as f64 / (s.end - s.start) as f64;
                let mut right = s.clone();
                right.start = at;
                right.size_bytes = s.size_bytes * (1.0 - share);
                right.changed_at = self.tick;
                let left = &mut self.shards[shard];
                left.end = at;
                left.size_bytes *= share;
                left.changed_at = self.tick;
                self.shards.insert(shard + 1, right);
                // The new half has no leader until its group elects one.
                self.stalls.insert(at, SPLIT_STALL_MS);
                outcome.splits += 1;
                true
            }
            Action::Merge { shard } => {
                if shard + 1 >= self.shards.len() {
                    return false;
                }
                let mut left_set = self.shards[shard].replicas.clone();
                let mut right_set = self.shards[shard + 1].replicas.clone();
                left_set.sort_unstable();
                right_set.sort_unstable();
                let mut left_learners = self.shards[shard].learners.clone();
                let mut right_learners = self.shards[shard + 1].learners.clone();
                left_learners.sort_unstable();
                right_learners.sort_unstable();
                if left_set != right_set || left_learners != right_learners {
                    return false;
                }
                let right = self.shards.remove(shard + 1);
                let left = &mut self.shards[shard];
                left.end = right.end;
                left.size_bytes += right.size_bytes;
                left.changed_at = self.tick;
                left.merged_at = Some(self.tick);
                // Both halves' requests wait for the merge to commit.
                let left_stall = self.stalls.remove(&left.start).unwrap_or(0.0);
                let right_stall = self.stalls.remove(&right.start).unwrap_or(0.0);
                self.stalls
                    .insert(left.start, MERGE_STALL_MS.max(left_stall).max(right_stall));
                outcome.merges += 1;
                true
            }
            Action::TransferLeader { shard, to } => {
                let Some(s) = self.shards.get_mut(shard) else {
                    return false;
                };
                if !s.replicas.contains(&to) || s.leader == to {
                    return false;
                }
                let moved_away =
                    self.scenario.nodes[s.leader].region != self.scenario.nodes[to].region;
                s.leader = to;
                if moved_away {
                    self.stalls.insert(s.start, TRANSFER_STALL_MS);
                }
                outcome.transfers += 1;
                true
            }
            Action::MoveReplica { shard, from, to } => {
                let nodes = self.scenario.nodes.len();
                let Some(s) = self.shards.get_mut(shard) else {
                    return false;
                };
                if to >= nodes
                    || !s.replicas.contains(&from)
                    || s.replicas.contains(&to)
                    || s.learners.contains(&to)
                {
                    return false;
                }
                for r in s.replicas.iter_mut() {
                    if *r == from {
                        *r = to;
                    }
                }
                if s.leader == from {
                    s.leader = to;
                }
                let ticks = (s.size_bytes / MOVE_BYTES_PER_TICK).ceil().max(1.0) as u64;
                self.copying.push((from, to, ticks));
                outcome.moves += 1;
                true
            }
            Action::AddReplica { shard, node, role } => {
                let nodes = self.scenario.nodes.len();
                let Some(s) = self.shards.get_mut(shard) else {
                    return false;
                };
                if node >= nodes || s.replicas.contains(&node) || s.learners.contains(&node) {
                    return false;
                }
                // The copy comes from the leader.
                let ticks = (s.size_bytes / MOVE_BYTES_PER_TICK).ceil().max(1.0) as u64;
                match role {
                    ReplicaRole::Voter => s.replicas.push(node),
                    ReplicaRole::Learner => s.learners.push(node),
                }
                self.copying.push((s.leader, node, ticks));
                outcome.moves += 1;
                true
            }
            Action::RemoveReplica { shard, node } => {
                let Some(s) = self.shards.get_mut(shard) else {
                    return false;
                };
                if s.learners.contains(&node) {
                    s.learners.retain(|&r| r != node);
                    return true;
                }
                if s.leader == node || !s.replicas.contains(&node) || s.replicas.len() == 1 {
                    return false;
                }
                s.replicas.retain(|&r| r != node);
                true
            }
            Action::SwapRoles {
                shard,
                promote,
                demote,
            } => {
                let Some(s) = self.shards.get_mut(shard) else {
                    return false;
                };
                if !s.learners.contains(&promote) || !s.replicas.contains(&demote) {
                    return false;
                }
                if s.leader == demote {
                    return false;
                }
                // One membership change through the log: the writes go on meanwhile.
                s.learners.retain(|&r| r != promote);
                s.learners.push(demote);
                s.replicas.retain(|&r| r != demote);
                s.replicas.push(promote);
                outcome.role_swaps += 1;
                true
            }
        }
    }
}

/// The mean of a shard's last ticks of load: rates and origins averaged, the key samples
/// counted together and summarised again, the scans crossing each summarised key summed
/// over the ticks (as the samples' counts are).
fn mean_stats(recent: &VecDeque<ShardStats>) -> ShardStats {
    let n = recent.len().max(1) as f64;
    let sum = |f: fn(&ShardStats) -> f64| recent.iter().map(f).sum::<f64>() / n;
    let regions = recent.back().map_or(0, |s| s.origins.len());
    let sampled = summarize_counted(
        recent
            .iter()
            .flat_map(|s| s.sampled.iter().copied())
            .collect(),
    );
    let scanned = recent.iter().any(|s| s.crossing.iter().any(|&c| c > 0));
    let crossing = sampled
        .iter()
        .map(|&(key, _)| {
            if !scanned {
                return 0;
            }
            recent
                .iter()
                .map(|s| {
                    // The tick's count at its sampled key nearest this one (in key order).
                    let at = s.sampled.partition_point(|&(k, _)| k < key);
                    let near = [at.checked_sub(1), Some(at)]
                        .into_iter()
                        .flatten()
                        .filter(|&i| i < s.sampled.len())
                        .min_by_key(|&i| s.sampled[i].0.abs_diff(key));
                    near.and_then(|i| s.crossing.get(i)).copied().unwrap_or(0)
                })
                .sum()
        })
        .collect();
    ShardStats {
        reads: sum(|s| s.reads),
        writes: sum(|s| s.writes),
        scans: sum(|s| s.scans),
        bytes_written: sum(|s| s.bytes_written),
        origins: (0..regions)
            .map(|r| recent.iter().map(|s| s.origins[r]).sum::<f64>() / n)
            .collect(),
        sampled,
        crossing,
    }
}

/// The p99 wait at a node of utilisation `load`, as an M/M/1 queue: ln(100) mean waits.
fn queue_p99_ms(load: f64) -> f64 {
    let u = load.min(0.99);
    SERVICE_MS / (1.0 - u) * 100f64.ln()
}

/// A draw in [0, 1) fixed by the run's seed, the tick and the request's place in it
/// (SplitMix64), so that which reads are follower reads takes nothing from the samplers.
fn unit_draw(seed: u64, tick: u64, index: usize) -> f64 {
    let mut z = seed ^ tick.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64).rotate_left(32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the lowest of `costs` (the first of equals; 0 when empty).
pub fn cheapest(costs: &[f64]) -> usize {
    (0..costs.len())
        .min_by(|&a, &b| costs[a].total_cmp(&costs[b]))
        .unwrap_or(0)
}

/// The round trip from `leader` to the closest majority of `replicas`: what a write waits
/// for after it reaches its leader.
pub fn quorum_ms(latency: &[Vec<f64>], nodes: &[Node], replicas: &[usize], leader: usize) -> f64 {
    let from = nodes[leader].region;
    let mut trips: Vec<f64> = replicas
        .iter()
        .map(|&r| 2.0 * latency[from][nodes[r].region])
        .collect();
    trips.sort_unstable_by(f64::total_cmp);
    trips.get(replicas.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::policy::{LoadSplit, SizeOnly, quorum_swap};
    use super::*;
    use crate::vocab::FnPolicy;
    use workload::Family;

    fn short(family: Family, seed: u64) -> Scenario {
        Scenario {
            ticks: 120,
            ..Scenario::three_regions(family, seed)
        }
    }

    #[test]
    fn a_runs_summed_cost_is_its_cost_times_its_ticks() {
        let scenario = Scenario {
            ticks: 40,
            requests_per_tick: 300,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.004 }, 2)
        };
        let outcome = Sim::new(scenario).run(&mut LoadSplit::tikv());
        assert!(outcome.moves + outcome.splits > 0, "{outcome:?}");
        let summed = outcome.summed_cost(40);
        assert!(
            (summed - 40.0 * outcome.cost()).abs() < 1e-9 * summed,
            "{summed}"
        );
    }

    #[test]
    fn a_rollout_continues_the_run_and_the_future_is_the_workloads() {
        let scenario = Scenario {
            ticks: 30,
            requests_per_tick: 300,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.004 }, 5)
        };
        let mut rolled = None;
        let mut foreseen = None;
        let mut seen_then = None;
        let run = Sim::new(scenario).run_looking_ahead(&mut |ahead, view| {
            let actions = SizeOnly.decide(view);
            if view.tick == 10 {
                rolled = Some(ahead.rollout(actions.clone(), &mut SizeOnly, 5));
                foreseen = Some(ahead.future_requests(3));
            }
            if view.tick == 13 {
                seen_then = Some(ahead.future_requests(0));
            }
            actions
        });
        let rolled = rolled.unwrap();
        assert_eq!(rolled.p99_ms, run.p99_ms[10..16]);
        assert_eq!(rolled.node_load, run.node_load[10..16]);
        assert_eq!(foreseen, seen_then, "the teacher sees the requests to come");
    }

    #[test]
    fn a_run_is_a_function_of_its_seed() {
        let run = |seed| Sim::new(short(Family::ZipfianA, seed)).run(&mut LoadSplit::tikv());
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).node_load, run(4).node_load);
    }

    #[test]
    fn splitting_a_hot_range_spreads_its_load() {
        let family = Family::MovingHotspot { speed: 0.0005 };
        let floor = Sim::new(short(family, 1)).run(&mut SizeOnly);
        let split = Sim::new(short(family, 1)).run(&mut LoadSplit::tikv());
        assert!(split.splits > floor.splits);
        assert!(
            split.imbalance() < floor.imbalance(),
            "{} vs {}",
            split.imbalance(),
            floor.imbalance()
        );
    }

    #[test]
    fn the_look_ahead_oracle_beats_the_heuristics_it_chooses_among() {
        let scenario = || Scenario {
            ticks: 60,
            requests_per_tick: 500,
            request_weight: 20.0,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.001 }, 2)
        };
        let floor = || Box::new(SizeOnly) as Box<dyn Policy>;
        let eager = LoadSplit::tikv().with_thresholds(1_200.0, 1);
        let oracle =
            Sim::new(scenario()).run_oracle(10, eager.clone(), &[&floor], &mut |_, _, costs| {
                cheapest(costs)
            });
        let floor_cost = Sim::new(scenario()).run(&mut SizeOnly).cost();
        let eager_cost = Sim::new(scenario()).run(&mut eager.clone()).cost();
        assert!(
            oracle.cost() <= floor_cost.min(eager_cost),
            "oracle {} floor {floor_cost} eager {eager_cost}",
            oracle.cost()
        );
    }

    #[test]
    fn no_policy_runs_below_the_floor() {
        use policy::{TailLeaders, oracle_proposers};
        let families = [
            Family::ZipfianC,
            Family::HotKey,
            Family::MovingHotspot { speed: 0.004 },
            Family::Regional,
            Family::FourRegions,
        ];
        for family in families {
            let mut runs = vec![
                Sim::new(short(family, 2)).run(&mut SizeOnly),
                Sim::new(short(family, 2)).run(&mut TailLeaders::tuned()),
            ];
            for make in oracle_proposers() {
                runs.push(Sim::new(short(family, 2)).run(make().as_mut()));
            }
            for outcome in runs {
                // The p99's floor bounds every tick; the imbalance's noise only on average.
                for (p99, floor) in outcome.p99_ms.iter().zip(&outcome.floor) {
                    assert!(*p99 >= floor.p99_ms, "{}: {p99} < {floor:?}", family.name());
                }
                assert!(
                    outcome.cost() > outcome.floor_cost(),
                    "{}: {} vs {}",
                    family.name(),
                    outcome.cost(),
                    outcome.floor_cost()
                );
            }
        }
    }

    #[test]
    fn a_leader_moved_to_another_region_and_a_new_split_half_stall_their_requests() {
        let scenario = || Scenario {
            initial_shards: 1,
            window: 1,
            ..short(Family::Uniform, 3)
        };
        // Tick 0 decides; tick 1 serves the first requests after the decision.
        let p99_at = |tick: usize, first: Vec<Action>| {
            let mut sim = Sim::new(scenario());
            let mut outcome = Outcome::default();
            let mut pending = Some(first);
            for _ in 0..=tick {
                sim.step(&mut outcome, |_| pending.take().unwrap_or_default());
            }
            outcome.p99_ms[tick]
        };
        let calm = p99_at(1, Vec::new());
        // Node 1 is the shard's replica in China; its leader is in Hamburg.
        let moved = p99_at(1, vec![Action::TransferLeader { shard: 0, to: 1 }]);
        assert!(moved > calm + 1_000.0, "{moved} vs {calm}");
        let split = p99_at(
            1,
            vec![Action::Split {
                shard: 0,
                at: KEY_SPACE / 2,
            }],
        );
        assert!(split > calm + 1_000.0, "{split} vs {calm}");
        // Two ticks later the stalls are over.
        let later = p99_at(3, vec![Action::TransferLeader { shard: 0, to: 1 }]);
        assert!(later < calm + 300.0, "{later} vs {calm}");
        // A merge stalls the merged shard's requests for less than a tick.
        let two_halves = |sim: &mut Sim| {
            let mut outcome = Outcome::default();
            sim.apply(
                &Action::Split {
                    shard: 0,
                    at: KEY_SPACE / 2,
                },
                &mut outcome,
            );
            sim.stalls.clear();
        };
        let mut sim = Sim::new(scenario());
        two_halves(&mut sim);
        let mut outcome = Outcome::default();
        sim.step(&mut outcome, |_| vec![Action::Merge { shard: 0 }]);
        sim.step(&mut outcome, |_| Vec::new());
        assert_eq!(sim.shards.len(), 1);
        let merged = outcome.p99_ms[1];
        assert!(
            merged > calm + MERGE_STALL_MS / 2.0 && merged < calm + MERGE_STALL_MS + 300.0,
            "{merged} vs {calm}"
        );
    }

    #[test]
    fn follower_reads_are_served_nearby_while_the_bound_allows() {
        let run = |stale_reads: f64, staleness_ms: f64| {
            Sim::new(Scenario {
                stale_reads,
                staleness_ms,
                ..short(Family::ZipfianC, 4)
            })
            .run(&mut SizeOnly)
        };
        let leader = run(0.0, STALENESS_MS);
        // Every shard has a replica in every region: each read stays in its own.
        let follower = run(1.0, STALENESS_MS);
        assert!(
            follower.mean_p99_ms() < 20.0 && leader.mean_p99_ms() > 200.0,
            "{} vs {}",
            follower.mean_p99_ms(),
            leader.mean_p99_ms()
        );
        // Below the replicas' round trip to their leader (150-300 ms) they cannot keep to
        // it: the leader serves, as for a linearizable read.
        let tight = run(1.0, 100.0);
        assert_eq!(tight.p99_ms, leader.p99_ms);
        // Half of them: the slowest percent is still the leader's.
        let half = run(0.5, STALENESS_MS);
        assert!(half.mean_p99_ms() > 200.0);
        for outcome in [&follower, &half] {
            for (p99, floor) in outcome.p99_ms.iter().zip(&outcome.floor) {
                assert!(*p99 >= floor.p99_ms, "{p99} < {floor:?}");
            }
        }
        assert!(follower.floor_cost() < leader.floor_cost());
    }

    #[test]
    fn a_learner_serves_follower_reads_and_takes_writes_but_never_counts_for_the_quorum() {
        // Nodes 0-5 in regions 0, 1, 2, 0, 1, 2; shard 0's voters are nodes 0, 1, 2.
        let mut sim = Sim::new(Scenario {
            initial_shards: 1,
            ..short(Family::Uniform, 5)
        });
        let mut outcome = Outcome::default();
        let quorum = sim.quorum_ms(0);
        // A voter in a region of its own would not change the quorum of three regions
        // either; a learner must not make the write quorum four.
        let learner = Action::AddReplica {
            shard: 0,
            node: 3,
            role: ReplicaRole::Learner,
        };
        assert!(sim.apply(&learner, &mut outcome));
        assert_eq!(sim.shards[0].learners, vec![3]);
        assert_eq!(sim.shards[0].replicas, vec![0, 1, 2]);
        assert_eq!(sim.quorum_ms(0), quorum);
        assert!(!sim.apply(&learner, &mut outcome), "already a learner");
        // From Hamburg the leader itself is nearest; from China, China's voter.
        assert_eq!(
            sim.follower_for(0, 0),
            None,
            "the leader is nearest Hamburg"
        );
        assert_eq!(sim.follower_for(0, 1), Some(1));
        let step = |sim: &mut Sim, outcome: &mut Outcome| sim.step(outcome, |_| Vec::new());
        step(&mut sim, &mut outcome);
        let with_learner = outcome.node_load.last().unwrap()[3];
        assert!(
            with_learner > 0.0,
            "the learner takes its share of the writes"
        );
        assert!(sim.apply(&Action::RemoveReplica { shard: 0, node: 3 }, &mut outcome));
        assert!(sim.shards[0].learners.is_empty());
    }

    #[test]
    fn a_role_swap_shortens_the_write_quorum_and_the_tail_rule_makes_it() {
        // Four regions, shard 0: leader in Hamburg, voters in China and Sydney, a learner
        // in Virginia (45 ms one way).
        let scenario = || Scenario {
            ticks: 40,
            ..Scenario::for_family(Family::FollowerReads, 3)
        };
        let mut sim = Sim::new(scenario());
        assert_eq!(sim.shards[0].learners, vec![3]);
        let before = sim.quorum_ms(0);
        let mut outcome = Outcome::default();
        let demote_leader = Action::SwapRoles {
            shard: 0,
            promote: 3,
            demote: 0,
        };
        assert!(!sim.apply(&demote_leader, &mut outcome));
        let swap = Action::SwapRoles {
            shard: 0,
            promote: 3,
            demote: 1,
        };
        assert!(sim.apply(&swap, &mut outcome));
        assert_eq!(sim.shards[0].learners, vec![1]);
        assert_eq!(sim.quorum_ms(0), 90.0);
        assert_eq!(before, 250.0);
        assert!(!sim.apply(&swap, &mut outcome), "node 3 is no learner now");
        // The size rule with every swap that shortens a quorum: the writes' tail is
        // shorter, and every swap is made once.
        let swapped = Sim::new(scenario()).run(&mut FnPolicy(&mut |view: &View| {
            let mut actions = SizeOnly.decide(view);
            actions.extend((0..view.shards.len()).filter_map(|i| quorum_swap(view, i)));
            actions
        }));
        let size_only = Sim::new(scenario()).run(&mut SizeOnly);
        assert!(swapped.role_swaps > 0 && swapped.role_swaps <= 4);
        assert!(
            swapped.mean_p99_ms() < size_only.mean_p99_ms(),
            "{} vs {}",
            swapped.mean_p99_ms(),
            size_only.mean_p99_ms()
        );
        // The tail rule makes them too.
        let tail = Sim::new(scenario()).run(&mut super::policy::TailLeaders::tuned());
        assert!(tail.role_swaps > 0);
    }

    #[test]
    fn policies_see_the_load_averaged_over_the_window() {
        let mut seen = Vec::new();
        let mut sim = Sim::new(Scenario {
            initial_shards: 1,
            window: 4,
            ..short(Family::FlashCrowd { at: 3, lasting: 50 }, 1)
        });
        let mut outcome = Outcome::default();
        for _ in 0..8 {
            sim.step(&mut outcome, |view| {
                seen.push((view.stats[0].reads, view.node_load[0]));
                Vec::new()
            });
        }
        // The crowd reads from tick 3: the view's reads climb over four ticks, then hold.
        let reads: Vec<f64> = seen.iter().map(|s| s.0).collect();
        assert!(
            reads[3] < reads[4] && reads[4] < reads[5] && reads[5] < reads[6],
            "{reads:?}"
        );
        assert!((reads[7] - reads[6]).abs() < reads[6] * 0.1, "{reads:?}");
        let actual = outcome.node_load[..4].iter().map(|l| l[0]).sum::<f64>() / 4.0;
        assert!((seen[3].1 - actual).abs() < 1e-9);
    }

    #[test]
    fn invalid_actions_are_refused_and_change_nothing() {
        let mut sim = Sim::new(short(Family::Uniform, 1));
        let before = sim.shards.clone();
        let mut outcome = Sim::new(short(Family::Uniform, 1)).run(&mut SizeOnly);
        let refused = [
            Action::Split { shard: 0, at: 0 },
            Action::Split { shard: 9, at: 5 },
            // Shards 0 and 1 have different replica sets in the default layout.
            Action::Merge { shard: 0 },
            Action::Merge { shard: 3 },
            Action::TransferLeader { shard: 0, to: 5 },
            Action::MoveReplica {
                shard: 0,
                from: 5,
                to: 4,
            },
            Action::MoveReplica {
                shard: 0,
                from: 0,
                to: 1,
            },
        ];
        for action in refused {
            assert!(!sim.apply(&action, &mut outcome), "{action:?}");
        }
        assert_eq!(sim.shards, before);
    }
}
