//! `hanse bench planner`: the planner's A/B on a real cluster. The same time-varying loads
//! run against a fresh local 3-region cluster (Hamburg, China, Sydney on 127.0.0.x, with
//! the demo's injected round trips) once per planner mode and run, the modes interleaved
//! so that the machine's drift falls on all of them alike. Each run is an open loop at a
//! fixed rate (about 70 % of what the cluster serves) from clients in all three regions
//! (each run starts with the next mode in turn);
//! it reports throughput, the p99 per client region, the balancing actions begun and the
//! snapshot bytes they moved, and the summary gives each figure's mean with a 95 %
//! interval over the runs, and the model's difference to the heuristic with its own.

use std::path::Path;
use std::time::Duration;

use hanse_client::{Client, ClientOptions};
use hanse_node::units::parse_duration;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::compare::{LocalCluster, unique};
use crate::load::{Due, LoadSpec, Op, Target, Workload, open_loop, preload};

/// The regions of the cluster's three nodes, node 1 first, and where the clients are.
pub const REGIONS: [&str; 3] = ["eu-hamburg", "ap-china", "au-sydney"];
/// The round trips between them that the planner's calibration and the regions
/// benchmark inject (the demo's own are shorter).
pub const LATENCY: &str =
    "eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms";
/// Shards the keys start in, one led from each region.
const INITIAL_SHARDS: usize = 3;
/// The moving hotspot: this share of the operations...
const HOT_SHARE: f64 = 0.8;
/// ...falls on this fraction of the key space, which moves through the middle third of
/// the keys (the middle shard's at the start) over the run: slowly enough for a planner
/// that needs 20 s of evidence to follow it.
const HOT_WIDTH: f64 = 0.05;
/// Days the diurnal load lives through in one run (each region's day follows the sun).
const DAYS: f64 = 1.0;
/// The sequential load's reads fall on this many of the newest records.
const RECENT: u64 = 1_000;
/// Zones of the key space the demo's hotspot moves through.
const DEMO_ZONES: u64 = 4;
/// The share of a load's operations that write (the sequential load's inserts aside).
const WRITE_SHARE: f64 = 0.5;

/// A load the A/B runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Load {
    /// Half writes, 80 % of the operations on a window of 5 % of the keys that moves
    /// through the middle third of the key space once per run; clients in every region
    /// alike.
    MovingHotspot,
    /// Half writes on uniform keys; each region's share of the clients follows its own
    /// day (one per run, a third of a day apart).
    Diurnal,
    /// 90 % inserts of ever larger keys, 10 % reads of the newest 1,000.
    Sequential,
    /// The demo's load (`hanse demo`): Hamburg clients alone, 90 % writes, on a quarter
    /// of the key space that moves on to the next quarter every quarter of the run.
    Demo,
    /// YCSB A (half writes, uniform keys) from every region.
    YcsbA,
    /// YCSB C (reads, uniform keys) from every region.
    YcsbC,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::MovingHotspot => "moving-hotspot",
            Load::Diurnal => "diurnal",
            Load::Sequential => "sequential",
            Load::Demo => "demo",
            Load::YcsbA => "ycsb-a",
            Load::YcsbC => "ycsb-c",
        }
    }

    /// The operation due `at` (0 to 1) into the run, over `key_count` loaded records;
    /// `inserted` counts the sequential load's new records.
    pub fn draw(self, at: f64, key_count: u64, inserted: &mut u64, rng: &mut StdRng) -> Due {
        let uniform_region = |rng: &mut StdRng| rng.random_range(0..REGIONS.len());
        let write_or_read = |rng: &mut StdRng, share: f64| match rng.random_bool(share) {
            true => Op::Put,
            false => Op::Get,
        };
        let read_or_write = |rng: &mut StdRng| write_or_read(rng, WRITE_SHARE);
        let (target, op, record) = match self {
            Load::MovingHotspot => {
                let width = ((key_count as f64 * HOT_WIDTH) as u64).max(1);
                let record = match rng.random_bool(HOT_SHARE) {
                    true => {
                        let third = key_count / 3;
                        let start = third + (at * third.saturating_sub(width) as f64) as u64;
                        start + rng.random_range(0..width)
                    }
                    false => rng.random_range(0..key_count),
                };
                (uniform_region(rng), read_or_write(rng), record)
            }
            Load::Diurnal => {
                let weights = diurnal_weights(at);
                let mut roll = rng.random_range(0.0..weights.iter().sum::<f64>());
                let mut region = REGIONS.len() - 1;
                for (r, w) in weights.iter().enumerate() {
                    if roll < *w {
                        region = r;
                        break;
                    }
                    roll -= w;
                }
                (region, read_or_write(rng), rng.random_range(0..key_count))
            }
            Load::Sequential if *inserted > 0 && rng.random_bool(0.1) => {
                let newest = key_count + *inserted;
                let record = rng.random_range(newest - RECENT.min(*inserted)..newest);
                (uniform_region(rng), Op::Get, record)
            }
            Load::Sequential => {
                *inserted += 1;
                (uniform_region(rng), Op::Put, key_count + *inserted - 1)
            }
            Load::Demo => {
                let zone = ((at * DEMO_ZONES as f64) as u64).min(DEMO_ZONES - 1);
                let width = (key_count / DEMO_ZONES).max(1);
                (
                    0,
                    write_or_read(rng, 0.9),
                    zone * width + rng.random_range(0..width),
                )
            }
            Load::YcsbA => (
                uniform_region(rng),
                read_or_write(rng),
                rng.random_range(0..key_count),
            ),
            Load::YcsbC => (uniform_region(rng), Op::Get, rng.random_range(0..key_count)),
        };
        Due { target, op, record }
    }
}

/// Each region's share of the diurnal load `at` (0 to 1) into the run: its sun's height,
/// never below zero, the regions' days a third apart.
fn diurnal_weights(at: f64) -> [f64; 3] {
    std::array::from_fn(|r| {
        let phase = DAYS * at - r as f64 / REGIONS.len() as f64;
        (1.0 + (std::f64::consts::TAU * phase).cos()) / 2.0 + 0.05
    })
}

/// Who decides balancing in a run: the node's `[balance] planner` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The network acts (the size rule alone where it cannot).
    Model,
    /// The tuned heuristic acts.
    Heuristic,
    /// No planner: the balancer's size, region and leader rules.
    Off,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Model => "model",
            Mode::Heuristic => "heuristic",
            Mode::Off => "off",
        }
    }
}

/// How the A/B runs (the arguments of `hanse bench planner`).
#[derive(Debug, Clone, clap::Args)]
pub struct Plan {
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "moving-hotspot,diurnal,sequential"
    )]
    pub loads: Vec<Load>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "model,heuristic,off"
    )]
    pub modes: Vec<Mode>,
    /// Runs of each load under each mode.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// How long each run's load lasts (a fresh cluster's start and key load come
    /// first).
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "75s")]
    pub duration: Duration,
    /// Operations per second for every run (default: 70 % of what a 20 s run far
    /// above capacity, with the planner off, served of each load).
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// Records loaded before each run.
    #[arg(long, default_value_t = 5_000)]
    pub key_count: u64,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Operations under way at most (the open loop's bound).
    #[arg(long, default_value_t = 2_048)]
    pub in_flight: usize,
    /// The first cluster's port (each run moves on by 10).
    #[arg(long, default_value_t = 7700)]
    pub port: u16,
}

/// The share of the calibrated capacity the runs load the cluster with.
pub const CAPACITY_SHARE: f64 = 0.7;
/// How long the calibration runs, at a rate far above what the cluster serves.
const CALIBRATION: Duration = Duration::from_secs(20);
const CALIBRATION_RATE: f64 = 20_000.0;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub load: Load,
    pub mode: Mode,
    pub run: usize,
    pub rate: f64,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub p99_ms: f64,
    /// Per client region, in [`REGIONS`]' order.
    pub region_p99_ms: [f64; 3],
    /// The balancing the nodes did during the load.
    pub moved: Counters,
    /// The planner's rounds in the run, and those in which the network's input lay
    /// outside what it was trained on and the size rule alone decided (model mode).
    pub planner_ticks: u64,
    pub fallback_ticks: u64,
}

/// Counters summed over the nodes' `/metrics` pages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Balancing actions begun (splits, merges, leader transfers, replica changes) by
    /// whoever decided, and those that were splits, merges or leader transfers.
    pub actions: f64,
    pub splits: f64,
    pub merges: f64,
    pub transfers: f64,
    /// Snapshot bytes the nodes sent (replica moves and catch-ups).
    pub bytes_moved: f64,
}

impl Counters {
    /// Reads the balancing decisions and snapshot bytes off Prometheus text pages.
    pub fn of(pages: &[String]) -> Counters {
        let mut counters = Counters::default();
        for line in pages.iter().flat_map(|page| page.lines()) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with("hanse_planner_decisions_total{") {
                counters.actions += value;
                if series.contains("kind=\"split\"") {
                    counters.splits += value;
                }
                if series.contains("kind=\"merge\"") {
                    counters.merges += value;
                }
                if series.contains("kind=\"transfer_leader\"") {
                    counters.transfers += value;
                }
            } else if series == "hanse_raft_snapshot_sent_bytes_total" {
                counters.bytes_moved += value;
            }
        }
        counters
    }

    fn since(self, before: Counters) -> Counters {
        Counters {
            actions: self.actions - before.actions,
            splits: self.splits - before.splits,
            merges: self.merges - before.merges,
            transfers: self.transfers - before.transfers,
            bytes_moved: self.bytes_moved - before.bytes_moved,
        }
    }
}

/// Starts a fresh cluster for `mode`, splits the keys into [`INITIAL_SHARDS`] led from
/// each region, loads them, and answers the cluster with a client per region.
fn fresh_cluster(
    plan: &Plan,
    mode: Mode,
    port: u16,
    node_capacity: f64,
    runtime: &tokio::runtime::Runtime,
) -> Result<(LocalCluster, Vec<Target>), String> {
    let planner = format!("planner={}", mode.name());
    let capacity = format!("planner_node_capacity={}", node_capacity.max(1.0).round());
    let cluster = LocalCluster::start_with(
        port,
        [
            "--latency",
            LATENCY,
            "--regions",
            &REGIONS.join(","),
            "--balance-cool-down",
            "10",
            "--split-size",
            "16MiB",
            "--balance",
            &planner,
            "--balance",
            &capacity,
        ],
    )?;
    cluster.presplit(INITIAL_SHARDS, plan.key_count)?;
    let tls = cluster.root_tls()?;
    let endpoints = cluster.endpoints().to_vec();
    let _guard = runtime.enter();
    let targets = (0..REGIONS.len())
        .map(|r| {
            // Each region's clients ask their own region's node first.
            let mut ordered = endpoints.clone();
            ordered.rotate_left(r);
            let options = ClientOptions {
                region: Some(REGIONS[r].to_string()),
                tls: tls.clone(),
                ..ClientOptions::default()
            };
            Client::new(&ordered, options)
                .map(|c| Target::Cluster(std::sync::Arc::new(c)))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = spec(plan, plan.key_count, Duration::ZERO);
    runtime
        .block_on(preload(&targets[0], &spec, |_| {}))
        .map_err(|e| format!("loading the keys: {e}"))?;
    Ok((cluster, targets))
}

fn spec(plan: &Plan, ops: u64, duration: Duration) -> LoadSpec {
    LoadSpec {
        workload: Workload::Mixed,
        clients: plan.in_flight,
        ops,
        duration,
        key_count: plan.key_count,
        value_size: plan.value_size,
        seed: 42,
        max_staleness: Duration::ZERO,
        distribution: crate::load::Distribution::Uniform,
    }
}

/// Runs `load` against `targets` at `rate` for `duration`; answers the report and each
/// region's latency.
fn drive(
    plan: &Plan,
    load: Load,
    targets: &[Target],
    rate: f64,
    duration: Duration,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
) -> (crate::load::LoadReport, Vec<Histogram<u64>>) {
    let spec = LoadSpec {
        seed,
        ..spec(plan, u64::MAX, duration)
    };
    let mut inserted = 0;
    let key_count = plan.key_count;
    let draw = |at: f64, rng: &mut StdRng| load.draw(at, key_count, &mut inserted, rng);
    runtime.block_on(open_loop(targets, &spec, rate, draw, |_| {}))
}

/// What the cluster serves of `load` with the planner off: the throughput of an open
/// loop far above it.
pub fn calibrate(plan: &Plan, load: Load) -> Result<f64, String> {
    let runtime = runtime()?;
    let (cluster, targets) = fresh_cluster(plan, Mode::Off, plan.port, 1_000.0, &runtime)?;
    let (report, _) = drive(
        plan,
        load,
        &targets,
        CALIBRATION_RATE,
        CALIBRATION,
        7,
        &runtime,
    );
    drop(runtime);
    drop(targets);
    drop(cluster);
    Ok(report.throughput())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// One run of `load` under `mode` at `rate` on a fresh cluster on `port`.
pub fn run_once(
    plan: &Plan,
    load: Load,
    mode: Mode,
    run: usize,
    rate: f64,
    port: u16,
) -> Result<RunResult, String> {
    let runtime = runtime()?;
    let node_capacity = rate / CAPACITY_SHARE / REGIONS.len() as f64;
    let (cluster, targets) = fresh_cluster(plan, mode, port, node_capacity, &runtime)?;
    let before = Counters::of(&cluster.metrics()?);
    let (report, by_region) = drive(
        plan,
        load,
        &targets,
        rate,
        plan.duration,
        1_000 + run as u64,
        &runtime,
    );
    let moved = Counters::of(&cluster.metrics()?).since(before);
    let (planner_ticks, fallback_ticks) = runtime.block_on(planner_ticks(&cluster))?;
    drop(runtime);
    drop(targets);
    drop(cluster);
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1_000.0;
    Ok(RunResult {
        load,
        mode,
        run,
        rate,
        ops_per_sec: report.throughput(),
        errors: report.errors,
        p99_ms: p99(&report.latency_us),
        region_p99_ms: std::array::from_fn(|r| by_region.get(r).map_or(0.0, p99)),
        moved,
        planner_ticks,
        fallback_ticks,
    })
}

/// The planner's ticks and fallback ticks, from the node that runs it (the meta shard's
/// leader; none: no planner ran).
async fn planner_ticks(cluster: &LocalCluster) -> Result<(u64, u64), String> {
    let tls = cluster.root_tls()?;
    for endpoint in cluster.endpoints() {
        let channel = hanse_client::connect(endpoint, tls.clone()).map_err(|e| e.to_string())?;
        let mut admin = hanse_client::proto::admin_client::AdminClient::new(channel);
        let status = admin
            .status(hanse_client::proto::StatusRequest {})
            .await
            .map_err(|e| format!("{endpoint}: {}", e.message()))?;
        if let Some(planner) = status.into_inner().planner {
            return Ok((planner.ticks, planner.fallback_ticks));
        }
    }
    Ok((0, 0))
}

/// Runs the whole plan: per load, the calibration (unless the rate is given), then each
/// run of every mode in turn. `progress` hears a line per run. Answers the runs and
/// why any failed (a failed calibration ends it).
pub fn run_plan(
    plan: &Plan,
    progress: impl Fn(&str),
) -> Result<(Vec<RunResult>, Vec<String>), String> {
    let (mut results, mut failures) = (Vec::new(), Vec::new());
    let total = plan.loads.len() * plan.runs * plan.modes.len();
    for &load in &plan.loads {
        let rate = match plan.rate {
            Some(rate) => rate,
            None => {
                progress(&format!("{}: calibrating for {CALIBRATION:?}", load.name()));
                let served = calibrate(plan, load)?;
                progress(&format!(
                    "{}: the cluster served {served:.0} ops/s; the runs ask for {:.0}",
                    load.name(),
                    served * CAPACITY_SHARE
                ));
                served * CAPACITY_SHARE
            }
        };
        for run in 1..=plan.runs {
            // Each run starts with the next mode, so that none always runs first after
            // the calibration or a teardown.
            let mut order = plan.modes.clone();
            let first = (run - 1) % order.len().max(1);
            order.rotate_left(first);
            for mode in order {
                // A fresh port per run: the last cluster's sockets may linger.
                let port = plan.port + 10 * ((results.len() + failures.len()) % 50) as u16;
                let result = match run_once(plan, load, mode, run, rate, port) {
                    Ok(result) => result,
                    Err(e) => {
                        let failure = format!("{} {} run {run}: {e}", load.name(), mode.name());
                        progress(&format!("failed: {failure}"));
                        failures.push(failure);
                        continue;
                    }
                };
                progress(&format!(
                    "[{}/{total}] {} {} run {run}: {:.0} ops/s, p99 {:.0} ms, {} actions, {} errors",
                    results.len() + failures.len() + 1,
                    load.name(),
                    mode.name(),
                    result.ops_per_sec,
                    result.p99_ms,
                    result.moved.actions,
                    result.errors
                ));
                results.push(result);
            }
        }
    }
    Ok((results, failures))
}

/// The mean of `xs` and the half-width of its 95 % confidence interval (Student's t).
pub fn mean_interval(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let variance = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t_975(n - 1) * (variance / n as f64).sqrt())
}

/// Student's t at 97.5 % for `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::NAN,
        1..=10 => TABLE[df - 1],
        11..=30 => 2.042,
        _ => 1.96,
    }
}

/// How much `a`'s mean differs from `b`'s, as a share of `b`'s, with a 95 % interval
/// (Welch's, the delta method for the ratio's spread).
pub fn relative_difference(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (ma, mb) = (mean_interval(a).0, mean_interval(b).0);
    let var = |xs: &[f64], m: f64| {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len().max(2) - 1) as f64
    };
    let se = (var(a, ma) / a.len().max(1) as f64 + var(b, mb) / b.len().max(1) as f64).sqrt();
    let df = (a.len() + b.len()).saturating_sub(2);
    ((ma - mb) / mb, t_975(df) * se / mb)
}

/// The figure each summary column shows.
type Figure = fn(&RunResult) -> f64;

const FIGURES: [(&str, Figure); 9] = [
    ("ops/s", |r| r.ops_per_sec),
    ("p99 ms", |r| r.p99_ms),
    ("p99 Hamburg", |r| r.region_p99_ms[0]),
    ("p99 China", |r| r.region_p99_ms[1]),
    ("p99 Sydney", |r| r.region_p99_ms[2]),
    ("actions", |r| r.moved.actions),
    ("MiB moved", |r| r.moved.bytes_moved / (1024.0 * 1024.0)),
    ("errors", |r| r.errors as f64),
    ("% rounds on fallback", |r| {
        100.0 * r.fallback_ticks as f64 / r.planner_ticks.max(1) as f64
    }),
];

fn of(results: &[RunResult], load: Load, mode: Mode) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.load == load && r.mode == mode)
        .collect()
}

fn figure(runs: &[&RunResult], f: Figure) -> Vec<f64> {
    runs.iter().map(|r| f(r)).collect()
}

/// The summary as markdown: per load and mode each figure's mean ± the 95 % interval's
/// half-width, then the model against the heuristic.
pub fn table(results: &[RunResult]) -> String {
    let loads = unique(results.iter().map(|r| r.load));
    let modes = unique(results.iter().map(|r| r.mode));
    let mut out = String::from("| load | planner | runs |");
    for (name, _) in FIGURES {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n| --- | --- | --- |");
    out.push_str(&" --- |".repeat(FIGURES.len()));
    out.push('\n');
    for &load in &loads {
        for &mode in &modes {
            let runs = of(results, load, mode);
            if runs.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "| {} | {} | {} |",
                load.name(),
                mode.name(),
                runs.len()
            ));
            for (_, f) in FIGURES {
                let (mean, half) = mean_interval(&figure(&runs, f));
                out.push_str(&format!(" {mean:.0} ± {half:.0} |"));
            }
            out.push('\n');
        }
    }
    if modes.contains(&Mode::Model) && modes.contains(&Mode::Heuristic) {
        out.push_str("\n| load | model vs heuristic: p99 | ops/s | actions |\n");
        out.push_str("| --- | --- | --- | --- |\n");
        for &load in &loads {
            let (model, heuristic) = (
                of(results, load, Mode::Model),
                of(results, load, Mode::Heuristic),
            );
            let cell = |f: Figure| {
                let (d, half) = relative_difference(&figure(&model, f), &figure(&heuristic, f));
                format!(
                    "{:+.1} % [{:+.1}, {:+.1}]",
                    100.0 * d,
                    100.0 * (d - half),
                    100.0 * (d + half)
                )
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                load.name(),
                cell(FIGURES[1].1),
                cell(FIGURES[0].1),
                cell(FIGURES[5].1)
            ));
        }
    }
    out
}

/// Every run as JSON.
pub fn json(results: &[RunResult]) -> serde_json::Value {
    json!(results
        .iter()
        .map(|r| json!({
            "load": r.load.name(),
            "mode": r.mode.name(),
            "run": r.run,
            "rate": r.rate,
            "ops_per_sec": r.ops_per_sec,
            "errors": r.errors,
            "p99_ms": r.p99_ms,
            "region_p99_ms": REGIONS.iter().zip(r.region_p99_ms).map(|(name, p)| (name.to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
            "actions": r.moved.actions,
            "splits": r.moved.splits,
            "merges": r.moved.merges,
            "transfers": r.moved.transfers,
            "bytes_moved": r.moved.bytes_moved,
            "planner_ticks": r.planner_ticks,
            "fallback_ticks": r.fallback_ticks,
        }))
        .collect::<Vec<_>>())
}

/// Writes `planner-ab.md`, `planner-ab.json` and the charts (`planner-ab-p99.png`,
/// `planner-ab-throughput.png`: the mean per load and mode) into `dir`.
pub fn write_report(dir: &Path, results: &[RunResult]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("planner-ab.md"), table(results))?;
    std::fs::write(
        dir.join("planner-ab.json"),
        serde_json::to_vec_pretty(&json(results))?,
    )?;
    let loads = unique(results.iter().map(|r| r.load));
    let groups: Vec<String> = loads.iter().map(|l| l.name().to_string()).collect();
    for (file, title, (unit, f)) in [
        (
            "planner-ab-p99.png",
            "p99 latency by load and planner",
            FIGURES[1],
        ),
        (
            "planner-ab-throughput.png",
            "throughput by load and planner",
            FIGURES[0],
        ),
    ] {
        let series: Vec<(String, Vec<f64>)> = unique(results.iter().map(|r| r.mode))
            .into_iter()
            .map(|mode| {
                let means = loads
                    .iter()
                    .map(|&load| mean_interval(&figure(&of(results, load, mode), f)).0)
                    .collect();
                (mode.name().to_string(), means)
            })
            .collect();
        std::fs::write(
            dir.join(file),
            hanse_node::chart::bar_chart(title, unit, &groups, &series),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn draws(load: Load, at: f64, n: usize) -> Vec<Due> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut inserted = 0;
        (0..n)
            .map(|_| load.draw(at, 10_000, &mut inserted, &mut rng))
            .collect()
    }

    #[test]
    fn the_hotspot_moves_through_the_key_space() {
        for at in [0.0, 0.5, 0.99] {
            let start = 3_333 + (at * 2_833.0) as u64;
            let hot = draws(Load::MovingHotspot, at, 2_000)
                .iter()
                .filter(|d| (start..start + 500).contains(&d.record))
                .count();
            // 80 % in the window, and the uniform rest's 5 % of the others.
            assert!((1_550..1_750).contains(&hot), "{hot} of 2,000 at {at}");
        }
    }

    #[test]
    fn the_diurnal_load_follows_each_regions_day() {
        for (at, busiest) in [(0.0, 0), (1.0 / 3.0, 1), (2.0 / 3.0, 2), (0.99, 0)] {
            let mut per_region = [0; 3];
            for due in draws(Load::Diurnal, at, 3_000) {
                per_region[due.target] += 1;
            }
            let most = (0..3).max_by_key(|&r| per_region[r]).unwrap();
            assert_eq!(most, busiest, "at {at}: {per_region:?}");
        }
    }

    #[test]
    fn the_sequential_load_inserts_ever_larger_keys_and_reads_the_newest() {
        let dues = draws(Load::Sequential, 0.3, 5_000);
        let mut newest = 0;
        for due in &dues {
            match due.op {
                Op::Put => {
                    assert!(due.record >= 10_000 && due.record >= newest);
                    newest = due.record;
                }
                Op::Get => assert!(due.record < newest + 1 && due.record + RECENT >= newest),
                _ => panic!("only puts and gets"),
            }
        }
        let reads = dues.iter().filter(|d| matches!(d.op, Op::Get)).count();
        assert!((400..600).contains(&reads), "{reads} reads of 5,000");
    }

    #[test]
    fn the_demo_load_writes_from_hamburg_into_one_zone_at_a_time() {
        for (at, zone) in [(0.1, 0), (0.3, 1), (0.99, 3)] {
            let dues = draws(Load::Demo, at, 1_000);
            assert!(dues.iter().all(|d| d.target == 0));
            assert!(dues.iter().all(|d| d.record / 2_500 == zone), "at {at}");
            let writes = dues.iter().filter(|d| matches!(d.op, Op::Put)).count();
            assert!((850..950).contains(&writes), "{writes} writes of 1,000");
        }
    }

    #[test]
    fn counters_are_summed_over_the_nodes_pages() {
        let page = |split: f64, transfer: f64, bytes: f64| {
            format!(
                "# HELP hanse_planner_decisions_total ...\n\
                 hanse_planner_decisions_total{{decided_by=\"planner\",kind=\"split\"}} {split}\n\
                 hanse_planner_decisions_total{{decided_by=\"leader_rule\",kind=\"transfer_leader\"}} {transfer}\n\
                 hanse_planner_decisions_total{{decided_by=\"size_rule\",kind=\"merge\"}} 1\n\
                 hanse_raft_snapshot_sent_bytes_total {bytes}\n\
                 hanse_raft_snapshot_received_bytes_total 99\n"
            )
        };
        let counters = Counters::of(&[page(2.0, 3.0, 100.0), page(1.0, 0.0, 50.0)]);
        assert_eq!(
            counters,
            Counters {
                actions: 8.0,
                splits: 3.0,
                merges: 2.0,
                transfers: 3.0,
                bytes_moved: 150.0
            }
        );
    }

    #[test]
    fn intervals_follow_students_t() {
        let (mean, half) = mean_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(mean, 3.0);
        // s = 1.581, s/√5 = 0.7071, t(4) = 2.776.
        assert!((half - 1.963).abs() < 0.01, "{half}");
        let (d, half) = relative_difference(&[90.0, 92.0, 88.0], &[100.0, 102.0, 98.0]);
        assert!((d + 0.1).abs() < 1e-9, "{d}");
        assert!(half > 0.0 && half < 0.1, "{half}");
    }
}
