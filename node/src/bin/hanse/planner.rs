//! `hanse planner train|eval`: trains the planner's network in the simulator and compares
//! it with the heuristics on workload families it never saw.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hanse::progress::{bar, end_bar};
use hanse_planner::model::PlannerNet;
use hanse_planner::train::{
    TrainOptions, compare, held_out_families, improvement_vs_best_heuristic, train,
};
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
    /// Trains the network from scratch on the look-ahead oracle's choices in the simulator
    /// and writes its weights.
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
    },
    /// Runs every policy on the held-out families and prints mean costs (95 % interval)
    /// and the network's improvement over the best heuristic.
    Eval {
        #[arg(long, default_value = WEIGHTS, value_name = "PATH")]
        weights: PathBuf,
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        #[arg(long, default_value_t = 200)]
        ticks: u64,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: PlannerArgs) -> Result<()> {
    match args.op {
        PlannerOp::Train {
            out,
            seeds,
            ticks,
            epochs,
        } => {
            let options = TrainOptions {
                seeds: (1..=seeds).collect(),
                ticks,
                epochs,
                ..TrainOptions::default()
            };
            eprintln!(
                "labelling {} runs with the look-ahead oracle, then {epochs} epochs",
                options.families.len() * options.seeds.len()
            );
            let (net, losses) = train(&options, 1, &mut |done, total| {
                bar(done as u64, total as u64)
            });
            end_bar();
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            net.save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "loss {:.4} -> {:.4}; weights in {}",
                losses.first().copied().unwrap_or(f64::NAN),
                losses.last().copied().unwrap_or(f64::NAN),
                out.display()
            );
            Ok(())
        }
        PlannerOp::Eval {
            weights,
            seeds,
            ticks,
            json,
        } => {
            let net = match PlannerNet::load(&weights) {
                Ok(net) => Some(net),
                Err(e) => {
                    eprintln!(
                        "no network ({}: {e}); comparing the heuristics only",
                        weights.display()
                    );
                    None
                }
            };
            let seeds: Vec<u64> = (1..=seeds).collect();
            let families = held_out_families();
            let mut rows = Vec::new();
            for (i, family) in families.iter().enumerate() {
                bar(i as u64, families.len() as u64);
                rows.extend(compare(net.as_ref(), &[*family], &seeds, ticks, 500));
            }
            bar(families.len() as u64, families.len() as u64);
            end_bar();
            let improvements = improvement_vs_best_heuristic(&rows);
            let overall = (!improvements.is_empty()).then(|| {
                improvements.iter().map(|(_, x)| x).sum::<f64>() / improvements.len() as f64
            });
            if json {
                let out = json!({
                    "seeds": seeds.len(),
                    "ticks": ticks,
                    "rows": rows.iter().map(|r| json!({
                        "family": r.family,
                        "policy": r.policy,
                        "mean_cost": r.mean_cost,
                        "ci95": r.ci95,
                    })).collect::<Vec<_>>(),
                    "improvement_vs_best_heuristic": improvements
                        .iter()
                        .map(|(family, x)| (family.clone(), json!(x)))
                        .collect::<serde_json::Map<_, _>>(),
                    "overall_improvement_vs_best_heuristic": overall,
                });
                println!("{out}");
                return Ok(());
            }
            println!("{:<14} {:<10} {:>16}", "family", "policy", "cost (95 % CI)");
            for r in &rows {
                println!(
                    "{:<14} {:<10} {:>9.3} ± {:.3}",
                    r.family, r.policy, r.mean_cost, r.ci95
                );
            }
            for (family, x) in &improvements {
                println!("{family}: model vs best heuristic {:+.1} %", x * 100.0);
            }
            if let Some(x) = overall {
                println!("overall (mean over families): {:+.1} %", x * 100.0);
            }
            Ok(())
        }
    }
}
