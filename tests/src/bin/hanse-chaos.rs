//! `hanse chaos`: runs a local cluster under faults and judges what its clients saw
//! (see `hanse_tests::chaos`). Exit status 0 only for a valid run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};
use hanse_tests::chaos::nemesis::FaultKind;
use hanse_tests::chaos::{ChaosOptions, history, judge, run};
use hanse_tests::linearizability::Verdict;

#[derive(Parser)]
#[command(name = "hanse chaos", about = "Chaos tests of a local Hanse cluster")]
struct Cli {
    #[command(subcommand)]
    command: Op,
}

#[derive(Subcommand)]
enum Op {
    /// Starts a cluster, runs the workload under faults, heals, reads every key and judges
    /// the history.
    Run {
        #[arg(long, default_value_t = 5)]
        nodes: u64,
        /// How long faults run (e.g. 60s, 10m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Fault kinds, comma-separated: kill,pause,partition,latency,membership,shards.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "kill,pause,partition,latency,membership,shards"
        )]
        faults: Vec<FaultKind>,
        /// The schedule's seed (default: a random one, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Keep the run here (default: a new directory under /tmp, removed if the run is
        /// valid).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        clients: u64,
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
    },
    /// Judges a history file again (the run's DIR/history.jsonl).
    Check {
        history: PathBuf,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        check_budget: Duration,
    },
}

/// `90`, `90s`, `500ms`, `10m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 60s or 10m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        other => Err(format!("unknown unit `{other}`; use ms, s or m")),
    }
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
        Op::Run {
            nodes,
            duration,
            faults,
            seed,
            dir,
            clients,
            keys,
            port,
            request_timeout,
            check_budget,
            ack_before_commit,
        } => {
            ensure!((3..=20).contains(&nodes), "--nodes must be 3 to 20");
            ensure!(
                keys >= 2 && clients >= 1,
                "--keys needs 2 or more, --clients 1 or more"
            );
            let hanse = std::env::current_exe()?.with_file_name("hanse");
            ensure!(
                hanse.exists(),
                "{} is not built: run `cargo build -p hanse`",
                hanse.display()
            );
            let seed = seed.unwrap_or_else(rand::random);
            let keep = dir.is_some();
            let dir = match dir {
                Some(dir) => dir,
                None => {
                    std::env::temp_dir().join(format!("hanse-chaos-{seed}-{}", std::process::id()))
                }
            };
            ensure!(
                !dir.join("cluster").exists(),
                "{} already holds a run; give a new --dir",
                dir.display()
            );
            let kinds: Vec<&str> = faults.iter().map(|k| k.name()).collect();
            let replay = format!(
                "hanse chaos run --nodes {nodes} --duration {}s --faults {} --seed {seed}{}",
                duration.as_secs(),
                kinds.join(","),
                if ack_before_commit {
                    " --ack-before-commit"
                } else {
                    ""
                }
            );
            println!("{replay}   (in {})", dir.display());
            let options = ChaosOptions {
                hanse,
                dir: dir.clone(),
                nodes,
                duration,
                faults,
                seed,
                clients,
                keys,
                port,
                request_timeout,
                check_budget,
                ack_before_commit,
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
            if report.valid() {
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Ok(ExitCode::SUCCESS)
            } else {
                println!("replay this schedule: {replay}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
