//! The planner's per-tick cost on 1,000 shards with the committed weights: the scorer's
//! proposals (the busiest shards' features and candidate actions) and their rating, the
//! selector's and the per-shard heads' features and forward passes, and the planner's whole
//! decision (the tuned heuristic kept current, the size rule, proposals, scores, the
//! envelope).
//! The planner issue's goal: under 1 ms per 1,000 shards per tick.
//!
//! `cargo bench -p hanse-bench --bench planner`; `cargo test` runs each once.

use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use hanse_planner::candidates::{Memory, chosen, proposals};
use hanse_planner::decide::{Mode, Planner};
use hanse_planner::envelope::Envelope;
use hanse_planner::model::{features, tick_features_of};
use hanse_planner::net::{FEATURES, PlannerNet};
use hanse_planner::sim::workload::Family;
use hanse_planner::sim::{Scenario, Sim};
use hanse_planner::vocab::{Action, Node, Policy, Shard, ShardStats, View};

const SHARDS: usize = 1_000;

/// One tick of the simulated cluster, owned.
#[derive(Default)]
struct Tick {
    tick: u64,
    nodes: Vec<Node>,
    shards: Vec<Shard>,
    stats: Vec<ShardStats>,
    node_load: Vec<f64>,
    region_latency_ms: Vec<Vec<f64>>,
}

impl Tick {
    fn view(&self) -> View<'_> {
        View {
            tick: self.tick,
            nodes: &self.nodes,
            shards: &self.shards,
            stats: &self.stats,
            node_load: &self.node_load,
            region_latency_ms: &self.region_latency_ms,
        }
    }
}

/// Keeps the last tick it saw and does nothing.
struct Capture(Tick);

impl Policy for Capture {
    fn name(&self) -> String {
        "capture".into()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        self.0 = Tick {
            tick: view.tick,
            nodes: view.nodes.to_vec(),
            shards: view.shards.to_vec(),
            stats: view.stats.to_vec(),
            node_load: view.node_load.to_vec(),
            region_latency_ms: view.region_latency_ms.to_vec(),
        };
        Vec::new()
    }
}

/// A realistic tick: 1,000 shards under a Zipfian load, after a few ticks of the simulator.
fn busy_tick() -> Tick {
    let scenario = Scenario {
        initial_shards: SHARDS,
        requests_per_tick: 50 * SHARDS,
        request_weight: 0.1,
        ticks: 3,
        ..Scenario::three_regions(Family::ZipfianA, 1)
    };
    let mut capture = Capture(Tick::default());
    Sim::new(scenario).run(&mut capture);
    capture.0
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/weights/planner.safetensors");
    let net = PlannerNet::load(&weights).expect("the committed planner weights");
    let tick = busy_tick();
    let view = tick.view();
    let rows: Vec<[f32; FEATURES]> = (0..SHARDS).map(|i| features(&view, i)).collect();
    let mut group = c.benchmark_group("planner-1000-shards");
    let mut memory = Memory::default();
    memory.observe(&view);
    group.bench_function("proposals", |b| {
        b.iter(|| black_box(proposals(&view, &memory, &[])))
    });
    let proposed = proposals(&view, &memory, &[]);
    group.bench_function("scoring", |b| b.iter(|| black_box(chosen(&net, &proposed))));
    group.bench_function("features", |b| {
        b.iter(|| {
            let rows: Vec<[f32; FEATURES]> = (0..SHARDS).map(|i| features(&view, i)).collect();
            black_box(rows)
        })
    });
    group.bench_function("inference", |b| b.iter(|| black_box(net.decide(&rows))));
    let tick = tick_features_of(&rows);
    group.bench_function("selector", |b| b.iter(|| black_box(net.choose(&tick))));
    let mut planner = Planner::new(Some(net.clone()), Mode::Model, Envelope::default());
    group.bench_function("decision", |b| b.iter(|| black_box(planner.decide(&view))));
    group.finish();
    c.final_summary();
    let actions = planner.decide(&view);
    match &planner.status().fallback {
        None => println!("the network decided {} actions on this tick", actions.len()),
        Some(why) => println!("the network fell back on this tick: {why}"),
    }
}
