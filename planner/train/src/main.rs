//! `hanse-planner-train`: what `hanse planner train` runs (in a process of its own, the
//! only one that loads libtorch). Labels the training families with the look-ahead oracle,
//! trains the network, tunes its selector margin and writes its weights.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use hanse_planner::sim::trace::{Replay, read_trace};
use hanse_planner::train::TrainOptions;

#[derive(Parser)]
#[command(name = "hanse planner train", about = "Trains the planner's network")]
struct Args {
    #[arg(
        long,
        default_value = "planner/weights/planner.safetensors",
        value_name = "PATH"
    )]
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
    /// A load recorded by `hanse planner record`, replayed beside the workload families
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    trace: Vec<PathBuf>,
    /// The scorer's teacher labels every this many ticks.
    #[arg(long, default_value_t = TrainOptions::default().label_every)]
    label_every: u64,
    /// Ticks the scorer's teacher rolls each proposed action out over.
    #[arg(long, default_value_t = TrainOptions::default().scorer_horizon)]
    scorer_horizon: u64,
    /// Keeps the selector and the per-shard heads of the weights at --out and trains only
    /// the scorer.
    #[arg(long)]
    scorer_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut traces = Vec::new();
    for path in &args.trace {
        let trace = read_trace(path).with_context(|| format!("reading {}", path.display()))?;
        traces.push(Arc::new(Replay::new(&trace)));
    }
    let options = TrainOptions {
        seeds: (1..=args.seeds).collect(),
        ticks: args.ticks,
        epochs: args.epochs,
        traces,
        dagger_rounds: args.dagger_rounds,
        label_every: args.label_every,
        scorer_horizon: args.scorer_horizon,
        ..TrainOptions::default()
    };
    let runs = (options.families.len() + options.traces.len()) * options.seeds.len();
    let mut shown = 0;
    let mut bar = |done: usize, total: usize| {
        let percent = done * 100 / total.max(1);
        // A new phase starts from the beginning.
        if percent < shown {
            shown = 0;
        }
        if percent >= shown + 5 || done == total {
            shown = percent;
            eprintln!("  {percent:3} % ({done}/{total} steps)");
        }
    };
    let net = if args.scorer_only {
        hanse_planner::net::PlannerNet::load(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
    } else {
        eprintln!(
            "selector: labelling {runs} runs with the look-ahead oracle, then {} epochs; again \
             for each of {} rounds with the network acting",
            args.epochs, args.dagger_rounds
        );
        let (net, losses) = hanse_planner_train::train(&options, 1, &mut bar);
        println!(
            "selector: loss {:.4} -> {:.4}; margin {} (tuned on the training runs)",
            losses.first().copied().unwrap_or(f64::NAN),
            losses.last().copied().unwrap_or(f64::NAN),
            net.selector_margin(),
        );
        net
    };
    eprintln!(
        "scorer: the privileged teacher rolls out every action proposed for the busiest \
         shards every {} ticks of {runs} runs, then {} epochs; again for each of {} rounds \
         with the scorer acting",
        options.label_every, args.epochs, args.dagger_rounds
    );
    let (net, losses) = hanse_planner_train::train_scorer(&net, &options, 1, &mut bar);
    println!(
        "scorer: loss {:.4} -> {:.4}; margin {} (tuned on the training runs)",
        losses.first().copied().unwrap_or(f64::NAN),
        losses.last().copied().unwrap_or(f64::NAN),
        net.scorer_margin(),
    );
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    net.save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("weights in {}", args.out.display());
    Ok(())
}
