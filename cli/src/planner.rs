//! `hanse planner train|eval|record`: trains the planner's network in the simulator,
//! compares it with the heuristics on workload families it never saw, and records a live
//! cluster's load for training.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin::first_answer;
use crate::connect::{ConnectArgs, Credentials, admin};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hanse_node::chart::{self, Series};
use hanse_node::progress::{bar, end_bar};
use hanse_node::units::parse_duration;
use hanse_planner::net::PlannerNet;
use hanse_planner::sim::eval::{Judgement, Row, judge};
use hanse_planner::sim::policy::LoadSplit;
use hanse_planner::sim::trace::{Replay, TraceShard, TraceTick, read_trace, write_tick};
use hanse_planner::sim::workload::Family;
use hanse_planner::train::{
    Comparison, TrainOptions, compare, held_out_families, is_heuristic, training_families,
    tuned_baselines,
};
use hanse_proto::v1 as pb;
use hanse_shard::meta::META_SHARD;
use serde_json::json;

/// Where the trained weights live in the repository.
const WEIGHTS: &str = "planner/weights/planner.safetensors";

#[derive(Args)]
pub struct PlannerArgs {
    #[command(subcommand)]
    op: PlannerOp,
}

#[derive(Subcommand)]
enum PlannerOp {
    /// Trains the network from scratch in the simulator (the selector on the look-ahead
    /// oracle's choices, the scorer on a privileged teacher's rollouts) and writes its
    /// weights.
    Train {
        #[arg(long, default_value = WEIGHTS, value_name = "PATH")]
        out: PathBuf,
        /// Seeds per training family.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Simulated ticks per run.
        #[arg(long, default_value_t = 200)]
        ticks: u64,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        /// Rounds in which the trained network acts and the oracle labels where it goes
        /// (DAgger), each followed by training afresh on everything labelled.
        #[arg(long, default_value_t = TrainOptions::default().dagger_rounds)]
        dagger_rounds: usize,
        /// A load recorded by `hanse planner record`, replayed beside the workload
        /// families (repeatable).
        #[arg(long, value_name = "FILE")]
        trace: Vec<PathBuf>,
        /// Keeps the selector and the per-shard heads of the weights at --out and trains
        /// only the scorer.
        #[arg(long)]
        scorer_only: bool,
    },
    /// Records a running cluster's load (each shard's rates, sampled keys and client
    /// regions, from the routing table) as a trace `hanse planner train --trace` replays.
    Record {
        /// Nodes to ask (any of the cluster's), HOST:PORT.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Time between two looks (the nodes report once a second).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Tunes the baselines' thresholds on the training families, runs every policy on
    /// every family (those held out of training first), and prints mean costs (95 %
    /// interval), each family's floor, and how the network fares against the best
    /// heuristic: the cost difference and the gap closed toward the floor, with paired
    /// bootstrap 95 % intervals; the mean over the held-out families is the goal.
    Eval {
        #[arg(long, default_value = WEIGHTS, value_name = "PATH")]
        weights: PathBuf,
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Seeds of the look-ahead oracle (the ceiling; slow), 0 for none.
        #[arg(long, default_value_t = 3)]
        oracle_seeds: u64,
        /// Seeds per training family the baselines are tuned on.
        #[arg(long, default_value_t = 2)]
        tuning_seeds: u64,
        #[arg(long, default_value_t = 200)]
        ticks: u64,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Also write the report here: eval.json, eval.md, cost.png and one
        /// imbalance-FAMILY.png per family.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// A recorded (`hanse planner record`) or synthetic trace to evaluate on as a
        /// family of its own, `trace-1` for the first (repeatable).
        #[arg(long, value_name = "FILE")]
        trace: Vec<PathBuf>,
    },
}

/// Requests simulated per tick in an evaluation.
const EVAL_REQUESTS_PER_TICK: usize = 500;

/// Seeds the rule tuned on each family by itself is tuned on: apart from the evaluation's
/// seeds (1 up), so that it is not tuned on the runs it is judged by.
const FAMILY_TUNING_SEEDS: [u64; 2] = [1_001, 1_002];

pub fn run(args: PlannerArgs) -> Result<()> {
    match args.op {
        PlannerOp::Record {
            endpoints,
            duration,
            interval,
            out,
            connect,
        } => record(
            &endpoints,
            &connect.credentials()?,
            duration,
            interval,
            &out,
        ),
        PlannerOp::Train {
            out,
            seeds,
            ticks,
            epochs,
            dagger_rounds,
            trace,
            scorer_only,
        } => {
            // Training is the one thing that needs libtorch: it runs in its own process, so
            // this one (and every other command) starts without loading it.
            let mut forwarded = vec![
                format!("--out={}", out.display()),
                format!("--seeds={seeds}"),
                format!("--ticks={ticks}"),
                format!("--epochs={epochs}"),
                format!("--dagger-rounds={dagger_rounds}"),
            ];
            forwarded.extend(trace.iter().map(|t| format!("--trace={}", t.display())));
            if scorer_only {
                forwarded.push("--scorer-only".into());
            }
            let status = crate::sibling("hanse-planner-train", "hanse-planner-train", &forwarded)?;
            anyhow::ensure!(status == std::process::ExitCode::SUCCESS, "training failed");
            let net = PlannerNet::load(&out)
                .with_context(|| format!("reading the trained weights {}", out.display()))?;
            held_out_check(&net, ticks);
            Ok(())
        }
        PlannerOp::Eval {
            weights,
            seeds,
            oracle_seeds,
            tuning_seeds,
            ticks,
            json,
            out,
            trace,
        } => eval(&EvalArgs {
            weights,
            seeds: (1..=seeds).collect(),
            oracle_seeds: (1..=oracle_seeds).collect(),
            tuning_seeds: (1..=tuning_seeds).collect(),
            ticks,
            json,
            out,
            traces: trace,
        }),
    }
}

/// Asks the cluster for its routing table every `interval` for `duration` and appends each
/// answer's data shards to `out` as one trace tick.
fn record(
    endpoints: &[String],
    tls: &Credentials,
    duration: Duration,
    interval: Duration,
    out: &Path,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let start = std::time::Instant::now();
    let mut ticks = 0u64;
    while start.elapsed() < duration {
        let look = std::time::Instant::now();
        let shards = runtime.block_on(first_answer(endpoints, async |endpoint| {
            let mut admin = admin(endpoint, tls)?;
            Ok(admin
                .shards(pb::ShardsRequest {})
                .await?
                .into_inner()
                .shards)
        }))?;
        let tick = TraceTick {
            shards: shards
                .into_iter()
                .filter_map(|status| {
                    let d = status.descriptor?;
                    let load = status.load.unwrap_or_default();
                    (d.id != META_SHARD).then(|| TraceShard {
                        start: d.start,
                        end: d.end,
                        reads_per_sec: load.reads_per_sec as f64,
                        writes_per_sec: load.writes_per_sec as f64,
                        sampled_keys: load
                            .sampled_keys
                            .into_iter()
                            .map(|s| (s.key, s.count))
                            .collect(),
                        origins: load
                            .origins
                            .into_iter()
                            .map(|o| (o.region, o.per_sec as f64))
                            .collect(),
                    })
                })
                .collect(),
        };
        write_tick(&mut file, &tick)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", out.display()))?;
        ticks += 1;
        bar(
            start.elapsed().as_millis().min(duration.as_millis()) as u64,
            duration.as_millis() as u64,
        );
        std::thread::sleep(interval.saturating_sub(look.elapsed()));
    }
    end_bar();
    println!("recorded {ticks} ticks in {}", out.display());
    Ok(())
}

struct EvalArgs {
    weights: PathBuf,
    seeds: Vec<u64>,
    oracle_seeds: Vec<u64>,
    tuning_seeds: Vec<u64>,
    ticks: u64,
    json: bool,
    out: Option<PathBuf>,
    traces: Vec<PathBuf>,
}

fn eval(args: &EvalArgs) -> Result<()> {
    let net = match PlannerNet::load(&args.weights) {
        Ok(net) => Some(net),
        Err(e) => {
            eprintln!(
                "no network ({}: {e}); comparing the heuristics only",
                args.weights.display()
            );
            None
        }
    };
    eprintln!("tuning the baselines on the training families");
    let tuned = tuned_baselines(&args.tuning_seeds, args.ticks, EVAL_REQUESTS_PER_TICK);
    for policy in &tuned {
        eprintln!(
            "  {}: hot above {} requests per tick for {} ticks",
            policy.name, policy.qps_threshold, policy.detect_ticks
        );
    }
    let fallback = LoadSplit::tuned();
    eprintln!(
        "  the planner's fallback ({}): {} requests per tick for {} ticks",
        fallback.name, fallback.qps_threshold, fallback.detect_ticks
    );
    eprintln!("running every policy on every family, the held-out ones first");
    let held_out: Vec<String> = held_out_families().iter().map(Family::name).collect();
    let seen: Vec<String> = training_families().iter().map(Family::name).collect();
    let mut families = held_out_families();
    families.extend(training_families());
    let mut traces = Vec::new();
    for (i, path) in args.traces.iter().enumerate() {
        let ticks = read_trace(path).with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(!ticks.is_empty(), "{} holds no trace ticks", path.display());
        let family = Family::Trace { index: i + 1 };
        eprintln!("  {}: {}", family.name(), path.display());
        families.push(family);
        traces.push(std::sync::Arc::new(Replay::new(&ticks)));
    }
    let comparison = Comparison {
        net: net.as_ref(),
        tuned: &tuned,
        families: &families,
        seeds: &args.seeds,
        oracle_seeds: &args.oracle_seeds,
        family_tuning_seeds: &FAMILY_TUNING_SEEDS,
        traces: &traces,
        ticks: args.ticks,
        requests_per_tick: EVAL_REQUESTS_PER_TICK,
    };
    let rows = compare(&comparison, &mut |done, total| {
        bar(done as u64, total as u64)
    });
    end_bar();
    let judged = judge(&rows, "model", &is_heuristic);
    let summary = Summary::of(&judged, &held_out);
    let judgement_json = |j: &Judgement| {
        json!({
            "family": j.family,
            "held_out": held_out.contains(&j.family),
            "best_heuristic": j.best_heuristic,
            "floor": j.floor,
            "headroom": j.headroom,
            "model_vs_best_heuristic": j.relative,
            "model_vs_best_heuristic_ci95": [j.relative_ci.0, j.relative_ci.1],
            "gap_closed": j.gap_closed,
            "gap_closed_ci95": [j.gap_closed_ci.0, j.gap_closed_ci.1],
        })
    };
    let report = json!({
        "held_out_families": &held_out,
        "training_families": &seen,
        "seeds": args.seeds.len(),
        "oracle_seeds": args.oracle_seeds.len(),
        "family_tuning_seeds": FAMILY_TUNING_SEEDS,
        "traces": args.traces.iter().enumerate().map(|(i, path)| {
            (Family::Trace { index: i + 1 }.name(), json!(path.display().to_string()))
        }).collect::<serde_json::Map<_, _>>(),
        "ticks": args.ticks,
        "tuned": tuned.iter().map(|p| json!({
            "policy": p.name,
            "qps_threshold": p.qps_threshold,
            "detect_ticks": p.detect_ticks,
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| json!({
            "family": r.family,
            "held_out": held_out.contains(&r.family),
            "policy": r.policy,
            "mean_cost": r.mean_cost,
            "ci95": r.ci95,
            "seeds": r.seeds,
            "mean_floor": r.floors.iter().sum::<f64>() / r.floors.len().max(1) as f64,
        })).collect::<Vec<_>>(),
        "model": judged.iter().map(judgement_json).collect::<Vec<_>>(),
        "held_out_mean_gap_closed": summary.mean_gap_closed,
        "held_out_mean_model_vs_best_heuristic": summary.mean_relative,
        "training_mean_model_vs_best_heuristic": Summary::of(&judged, &seen).mean_relative,
    });
    let table = markdown_table(&rows, &judged, &held_out, &summary);
    if let Some(dir) = &args.out {
        write_report(dir, &report, &table, &rows)?;
        eprintln!("report in {}", dir.display());
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The network over a set of families, against the goals.
struct Summary {
    mean_gap_closed: Option<f64>,
    mean_relative: Option<f64>,
    /// Families with at least 3 % headroom, and those of them where G ≥ 0.15.
    with_headroom: usize,
    closing_enough: usize,
    /// Families whose interval of (model − best heuristic) stays below +1 %.
    never_much_worse: usize,
    families: usize,
}

impl Summary {
    fn of(judged: &[Judgement], families: &[String]) -> Summary {
        let of: Vec<&Judgement> = judged
            .iter()
            .filter(|j| families.contains(&j.family))
            .collect();
        let mean = |x: &dyn Fn(&Judgement) -> f64| {
            (!of.is_empty()).then(|| of.iter().map(|j| x(j)).sum::<f64>() / of.len() as f64)
        };
        let roomy: Vec<&&Judgement> = of.iter().filter(|j| j.headroom >= 0.03).collect();
        Summary {
            mean_gap_closed: mean(&|j| j.gap_closed),
            mean_relative: mean(&|j| j.relative),
            with_headroom: roomy.len(),
            closing_enough: roomy.iter().filter(|j| j.gap_closed >= 0.15).count(),
            never_much_worse: of.iter().filter(|j| j.relative_ci.1 < 0.01).count(),
            families: of.len(),
        }
    }
}

/// Seeds of the quick held-out check after training (`hanse planner eval` runs ten).
const CHECK_SEEDS: [u64; 2] = [1, 2];

/// Prints the freshly trained network's cost on the held-out families beside the
/// planner's tuned heuristic's, over [`CHECK_SEEDS`].
fn held_out_check(net: &PlannerNet, ticks: u64) {
    eprintln!(
        "held-out cost ({} seeds; `hanse planner eval` for the full comparison):",
        CHECK_SEEDS.len()
    );
    let comparison = Comparison {
        net: Some(net),
        tuned: &[LoadSplit::tuned()],
        families: &held_out_families(),
        seeds: &CHECK_SEEDS,
        oracle_seeds: &[],
        family_tuning_seeds: &[],
        traces: &[],
        ticks,
        requests_per_tick: EVAL_REQUESTS_PER_TICK,
    };
    let rows = compare(&comparison, &mut |done, total| {
        bar(done as u64, total as u64)
    });
    end_bar();
    let cost = |family: &str, policy: &str| {
        rows.iter()
            .find(|r| r.family == family && r.policy == policy)
            .map_or(f64::NAN, |r| r.mean_cost)
    };
    for j in judge(&rows, "model", &is_heuristic) {
        println!(
            "  {}: model {:.3}, {} {:.3}, floor {:.3}: {:+.1} %, gap closed {:.2}",
            j.family,
            cost(&j.family, "model"),
            j.best_heuristic,
            cost(&j.family, &j.best_heuristic),
            j.floor,
            j.relative * 100.0,
            j.gap_closed
        );
    }
}

/// The values `field` takes in `rows`, in order of appearance, each once.
fn distinct(rows: &[Row], field: impl Fn(&Row) -> &String) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        if !names.contains(field(row)) {
            names.push(field(row).clone());
        }
    }
    names
}

/// One row per family (the `held_out` ones marked), one column per policy (mean ± 95 %
/// interval), the family's floor, and the network against the best heuristic (the cost
/// difference and the gap closed, each with its paired 95 % interval); under it the
/// summary over the held-out families.
fn markdown_table(
    rows: &[Row],
    judged: &[Judgement],
    held_out: &[String],
    summary: &Summary,
) -> String {
    let policies = distinct(rows, |r| &r.policy);
    let mut out = format!(
        "| family | {} | floor | model vs best heuristic | gap closed |\n",
        policies.join(" | ")
    );
    out += &format!(
        "| --- |{} --- | --- | --- |\n",
        " --- |".repeat(policies.len())
    );
    for family in distinct(rows, |r| &r.family) {
        let cells: Vec<String> = policies
            .iter()
            .map(|policy| {
                rows.iter()
                    .find(|r| r.family == family && &r.policy == policy)
                    .map_or("-".into(), |r| {
                        format!("{:.3} ± {:.3}", r.mean_cost, r.ci95)
                    })
            })
            .collect();
        let judgement = judged.iter().find(|j| j.family == family);
        let (floor, relative, gap) = judgement.map_or(("-".into(), "-".into(), "-".into()), |j| {
            (
                format!("{:.3}", j.floor),
                format!(
                    "{:+.1} % [{:+.1}, {:+.1}] vs {}",
                    j.relative * 100.0,
                    j.relative_ci.0 * 100.0,
                    j.relative_ci.1 * 100.0,
                    j.best_heuristic
                ),
                format!(
                    "{:.2} [{:.2}, {:.2}]",
                    j.gap_closed, j.gap_closed_ci.0, j.gap_closed_ci.1
                ),
            )
        });
        let mark = if held_out.contains(&family) {
            " (held out)"
        } else {
            ""
        };
        out += &format!(
            "| {family}{mark} | {} | {floor} | {relative} | {gap} |\n",
            cells.join(" | ")
        );
    }
    let percent = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:+.1} %", x * 100.0));
    let ratio = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
    out += &format!(
        "\nheld-out families (the goal): mean gap closed {}, model vs best heuristic {}; \
         G ≥ 0.15 on {} of the {} with at least 3 % headroom; the upper 95 % bound under \
         +1 % on {} of {}\n",
        ratio(summary.mean_gap_closed),
        percent(summary.mean_relative),
        summary.closing_enough,
        summary.with_headroom,
        summary.never_much_worse,
        summary.families,
    );
    out
}

fn write_report(dir: &Path, report: &serde_json::Value, table: &str, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("eval.json", format!("{report:#}\n").as_bytes())?;
    write("eval.md", table.as_bytes())?;
    let policies = distinct(rows, |r| &r.policy);
    let families = distinct(rows, |r| &r.family);
    let cost_of = |policy: &str| {
        families
            .iter()
            .map(|family| {
                rows.iter()
                    .find(|r| &r.family == family && r.policy == policy)
                    .map_or(0.0, |r| r.mean_cost)
            })
            .collect::<Vec<f64>>()
    };
    let bars: Vec<(String, Vec<f64>)> = policies.iter().map(|p| (p.clone(), cost_of(p))).collect();
    write(
        "cost.png",
        &chart::bar_chart(
            "mean cost per family (lower is better)",
            "cost",
            &families,
            &bars,
        ),
    )?;
    for family in &families {
        let series: Vec<Series> = rows
            .iter()
            .filter(|r| &r.family == family)
            .map(|r| Series {
                name: r.policy.clone(),
                points: r
                    .imbalance
                    .iter()
                    .enumerate()
                    .map(|(tick, &x)| (tick as f64, x))
                    .collect(),
            })
            .collect();
        let file = format!("imbalance-{}.png", family.replace([' ', '/'], "-"));
        write(
            &file,
            &chart::line_chart(
                &format!("node-load imbalance, {family}"),
                "tick",
                "max/mean node load",
                &series,
            ),
        )?;
    }
    Ok(())
}
