//! `hanse chaos`: runs a local cluster under faults and judges what its clients saw
//! (see `hanse_tests::chaos`). Exit status 0 only for a valid run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Args, Parser, Subcommand};
use hanse_node::units::parse_duration;
use hanse_tests::chaos::nemesis::FaultKind;
use hanse_tests::chaos::{ChaosOptions, history, judge, run};
use hanse_tests::linearizability::Verdict;

#[derive(Parser)]
#[command(
    name = "hanse chaos",
    bin_name = "hanse chaos",
    about = "Chaos tests of a local Hanse cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Op,
}

#[derive(Subcommand)]
enum Op {
    /// Starts a cluster, runs the workload under faults, heals, reads every key and judges
    /// the history.
    Run(RunArgs),
    /// Judges a history file again (the run's DIR/history.jsonl).
    Check {
        history: PathBuf,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        check_budget: Duration,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// How long faults run (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Fault kinds, comma-separated: kill,pause,lease,partition,latency,membership,shards.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,lease,partition,latency,membership,shards"
    )]
    faults: Vec<FaultKind>,
    /// The schedule's seed (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the run here (default: a new directory under /tmp, removed if the run is
    /// valid).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Clients of the workload, each one operation at a time.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Keys the clients share (chaos-000, chaos-001, ...).
    #[arg(long, default_value_t = 16)]
    keys: u64,
    /// Nodes listen on this port of 127.0.0.(10+id), their proxies on the next.
    #[arg(long, default_value_t = 7600)]
    port: u16,
    /// A client's wait for an answer before its outcome counts as unknown.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// The checker's time budget per key.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    check_budget: Duration,
    /// Test the checker: the nodes acknowledge writes before they commit (a bug the
    /// run must find).
    #[arg(long)]
    ack_before_commit: bool,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_main() -> Result<ExitCode> {
    match Cli::parse().command {
        Op::Check {
            history,
            check_budget,
        } => {
            let operations = history::read(&history)?;
            let (verdict, witness) = judge(&operations, check_budget)?;
            let summary = match &verdict {
                Verdict::Valid => "valid".to_string(),
                Verdict::Invalid { key, .. } => format!(
                    "INVALID: key {}; its first {} operations already contradict",
                    String::from_utf8_lossy(key),
                    witness.len()
                ),
                Verdict::Unknown { key } => format!(
                    "UNKNOWN: the search for key {} ran out of its {check_budget:?}",
                    String::from_utf8_lossy(key)
                ),
            };
            println!("{} operations: {summary}", operations.len());
            Ok(if verdict == Verdict::Valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Op::Run(args) => {
            ensure!((3..=20).contains(&args.nodes), "--nodes must be 3 to 20");
            ensure!(
                args.keys >= 2 && args.clients >= 1,
                "--keys needs 2 or more, --clients 1 or more"
            );
            let hanse = std::env::current_exe()?.with_file_name("hanse");
            ensure!(
                hanse.exists(),
                "{} is not built: run `cargo build -p hanse-cli`",
                hanse.display()
            );
            let seed = args.seed.unwrap_or_else(rand::random);
            let keep = args.dir.is_some();
            let dir = args.dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("hanse-chaos-{seed}-{}", std::process::id()))
            });
            ensure!(
                !dir.join("cluster").exists(),
                "{} already holds a run; give a new --dir",
                dir.display()
            );
            let kinds: Vec<&str> = args.faults.iter().map(|k| k.name()).collect();
            let replay = format!(
                "hanse chaos run --nodes {} --duration {}s --faults {} --seed {seed}{}",
                args.nodes,
                args.duration.as_secs(),
                kinds.join(","),
                if args.ack_before_commit {
                    " --ack-before-commit"
                } else {
                    ""
                }
            );
            println!("{replay}   (in {})", dir.display());
            let options = ChaosOptions {
                hanse,
                dir: dir.clone(),
                nodes: args.nodes,
                duration: args.duration,
                faults: args.faults,
                seed,
                clients: args.clients,
                keys: args.keys,
                port: args.port,
                request_timeout: args.request_timeout,
                check_budget: args.check_budget,
                ack_before_commit: args.ack_before_commit,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let mut terminate = {
                let _entered = runtime.enter();
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?
            };
            let report = runtime.block_on(async {
                tokio::select! {
                    report = run(options) => report.map(Some),
                    _ = tokio::signal::ctrl_c() => Ok(None),
                    _ = terminate.recv() => Ok(None),
                }
            })?;
            let Some(report) = report else {
                // Dropping the run's future stopped its cluster.
                eprintln!("interrupted; the run is in {}", dir.display());
                return Ok(ExitCode::from(130));
            };
            print!("{}", report.render());
            if report.valid() && !keep {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                println!(
                    "kept in:     {} (history.jsonl, faults.log, cluster/node*.log)",
                    dir.display()
                );
            }
            if report.valid() {
                Ok(ExitCode::SUCCESS)
            } else {
                println!("replay this schedule: {replay}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
