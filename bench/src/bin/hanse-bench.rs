//! `hanse-bench run`: the load generator against a running Hanse cluster. Reports
//! throughput and p50/p99/p999 latency, and with `--kill-leader-after` the failover gap
//! (the longest time without an acknowledgement once the leader is SIGKILLed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use hanse_bench::compare::{self, Contender};
use hanse_bench::load::{self, Distribution, Fault, LoadSpec, Workload, preload, run, run_at_rate};
use hanse_bench::planner_ab;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::{Client, ClientOptions, proto};
use hanse_node::config::NodeConfig;
use hanse_node::progress::{bar, end_bar};
use hanse_node::units::parse_duration;

#[derive(Parser)]
#[command(name = "hanse-bench", about = "Load generator for Hanse")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the same workloads against Hanse (a 3-node cluster and the embedded mode) and
    /// its peers back to back, and prints one table with Hanse's ratio to each peer.
    Compare {
        /// The stores to run, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "hanse,embedded,rocksdb,etcd,postgres"
        )]
        stores: Vec<Contender>,
        /// The workloads, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "write,ycsb-a,ycsb-c"
        )]
        workloads: Vec<Workload>,
        /// How long each workload runs against each store.
        #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "30s")]
        duration: Duration,
        /// Concurrent clients, comma-separated for a curve (each store runs every
        /// workload at each).
        #[arg(long, value_delimiter = ',', default_value = "32")]
        clients: Vec<usize>,
        /// Shards a Hanse cluster's keys are split into before its runs (evenly by key,
        /// leaders spread over the nodes), comma-separated for a curve; stores without
        /// shards run once.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        shards: Vec<usize>,
        #[arg(long, default_value_t = 10_000)]
        key_count: u64,
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        /// The port the local cluster's nodes listen on.
        #[arg(long, default_value_t = 7650)]
        port: u16,
        /// Where compare.md, compare.json and the chart compare.png go.
        #[arg(long, value_name = "DIR", default_value = "bench-compare")]
        out: PathBuf,
        /// The JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Runs one workload and prints what it measured.
    Run(RunArgs),
    /// What a fresh local 3-node cluster costs as its shards grow: per number of shards,
    /// the time to create them, idle CPU and RSS per node, the routing table, a balancer
    /// round, a uniform load's throughput and p99, and how long the shards of a
    /// SIGKILLed node take to answer again. Writes scale.md and scale.json into --out.
    Scale {
        #[command(flatten)]
        spec: hanse_bench::scale::ScaleSpec,
        #[arg(long, value_name = "DIR", default_value = "bench-scale")]
        out: PathBuf,
        /// Runs nothing: draws the table and the charts of an earlier run's scale.json
        /// into --out.
        #[arg(long, value_name = "FILE")]
        replot: Option<PathBuf>,
    },
    /// Many small keys into a fresh local 3-node cluster through the bulk path (sorted
    /// pairs ingested as files through each shard's log), against single puts and batches
    /// on the same cluster; then waits for size-based splits, checks a sample of the keys
    /// and measures reads. Writes bulk.md and bulk.json into --out.
    Bulk {
        #[command(flatten)]
        spec: hanse_bench::bulk::BulkSpec,
        #[arg(long, value_name = "DIR", default_value = "bench-bulk")]
        out: PathBuf,
    },
    /// The planner's A/B on a real cluster: each load against a fresh local 3-region
    /// cluster (250/300/150 ms round trips) once per planner mode and run, an open loop
    /// from every region at about 70 % of capacity; prints a table of means with 95 %
    /// intervals and writes it, every run's JSON and two charts into --out.
    Planner {
        #[command(flatten)]
        plan: planner_ab::Plan,
        #[arg(long, value_name = "DIR", default_value = "bench-planner")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// What to drive: Hanse (a running cluster with --endpoints, else a fresh local
    /// one), the embedded mode or raw RocksDB in this process, or a fresh etcd cluster or
    /// PostgreSQL server started for the run.
    #[arg(long, value_enum, default_value = "hanse")]
    target: Contender,
    /// A running Hanse cluster's nodes.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    endpoints: Vec<String>,
    /// The running cluster's certificates: its `ca.crt` and `client-root.crt`/`.key`
    /// (a local cluster's are in its DIR/certs).
    #[arg(long, env = "HANSE_CERTS_DIR", value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// Talk plaintext to a running cluster whose nodes run `insecure = true` (wins over
    /// --certs-dir).
    #[arg(long)]
    insecure: bool,
    /// The port a store started for the run listens on (each process on its own
    /// 127.0.0.x address).
    #[arg(long, default_value_t = 7650)]
    port: u16,
    /// The store's directory for --target embedded or rocksdb (default: a temporary
    /// one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "mixed")]
    workload: Workload,
    /// How keys are picked (the hot workload is always Zipfian).
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: Distribution,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// Upper bound on the run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    #[arg(long, default_value_t = 10_000)]
    key_count: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// An open loop at this many operations per second (due on schedule, latency from
    /// when each was due, at most --clients under way) instead of closed-loop clients.
    #[arg(long, value_name = "OPS_PER_SEC", conflicts_with = "kill_leader_after")]
    rate: Option<f64>,
    /// SIGKILL the leader this many seconds into the run (needs --cluster-dir).
    #[arg(long, value_name = "SECONDS", requires = "cluster_dir")]
    kill_leader_after: Option<f64>,
    /// Move the first data shard's leadership to a voter in another region this many
    /// seconds into the run (needs --cluster-dir): the stall a planner's leader move
    /// costs, which the planner's simulator is calibrated with.
    #[arg(long, value_name = "SECONDS", requires = "cluster_dir", conflicts_with_all = ["kill_leader_after", "rate"])]
    transfer_leader_after: Option<f64>,
    /// Split the first data shard in the middle of the loaded keys this many seconds
    /// into the run (needs --cluster-dir): what a planner's split costs the clients.
    #[arg(long, value_name = "SECONDS", requires = "cluster_dir", conflicts_with_all = ["kill_leader_after", "transfer_leader_after", "rate"])]
    split_after: Option<f64>,
    /// Split the first data shard in the middle of the loaded keys before the run, and
    /// merge the halves again this many seconds into it (needs --cluster-dir): what a
    /// planner's merge costs the clients.
    #[arg(long, value_name = "SECONDS", requires = "cluster_dir", conflicts_with_all = ["kill_leader_after", "transfer_leader_after", "split_after", "rate"])]
    merge_after: Option<f64>,
    /// The `hanse cluster up --dir` directory, to find the leader's process.
    #[arg(long, value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
    /// The region the clients say they are in (counts toward where the shards' load
    /// comes from; the cluster's latency matrix applies to it).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Let any replica serve a read that misses no write acknowledged longer than
    /// this ago (follower reads; the first endpoint is asked first), e.g. 500ms.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "0ms")]
    max_staleness: Duration,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    match bench() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn bench() -> Result<()> {
    match Cli::parse().command {
        Command::Compare {
            stores,
            workloads,
            duration,
            clients,
            shards,
            key_count,
            value_size,
            port,
            out,
            json,
        } => {
            ensure!(
                clients.iter().chain(&shards).all(|&n| n >= 1) && key_count >= 1,
                "--clients, --shards and --key-count must be at least 1"
            );
            ensure!(
                shards.iter().all(|&n| n as u64 <= key_count),
                "--shards cannot be more than --key-count"
            );
            let base = LoadSpec {
                workload: Workload::Write,
                clients: clients[0],
                ops: u64::MAX,
                duration,
                key_count,
                value_size,
                seed: 42,
                max_staleness: Duration::ZERO,
                distribution: Distribution::Uniform,
            };
            let shape = compare::Shape { clients, shards };
            let (measured, skipped) =
                compare::compare(&stores, &workloads, &base, &shape, port, |run| {
                    eprintln!("running {run} for {duration:?}")
                });
            for s in &skipped {
                eprintln!("skipped {}: {}", s.contender.name(), s.reason);
            }
            let charts = compare::write_report(&out, &measured, &skipped)
                .with_context(|| format!("writing the report into {}", out.display()))?;
            if json {
                println!("{}", compare::json(&measured, &skipped));
            } else {
                print!("{}", compare::table(&measured));
                for chart in charts {
                    println!("chart: {}", chart.display());
                }
            }
            Ok(())
        }
        Command::Run(args) => run_one(args),
        Command::Scale { spec, out, replot } => {
            let write = |points: &[hanse_bench::scale::ScalePoint]| -> Result<(), String> {
                let json = serde_json::to_string_pretty(&hanse_bench::scale::json(points))
                    .map_err(|e| e.to_string())?;
                let charts = hanse_bench::scale::charts(points);
                std::fs::write(out.join("scale.md"), hanse_bench::scale::table(points))
                    .and_then(|()| std::fs::write(out.join("scale.json"), json))
                    .and_then(|()| {
                        charts
                            .iter()
                            .try_for_each(|(name, png)| std::fs::write(out.join(name), png))
                    })
                    .map_err(|e| format!("writing into {}: {e}", out.display()))
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            if let Some(json) = replot {
                let text = std::fs::read_to_string(&json)
                    .with_context(|| format!("reading {}", json.display()))?;
                let points = hanse_bench::scale::from_json(&serde_json::from_str(&text)?)
                    .map_err(anyhow::Error::msg)?;
                write(&points).map_err(anyhow::Error::msg)?;
                print!("{}", hanse_bench::scale::table(&points));
                return Ok(());
            }
            ensure!(
                spec.shards
                    .iter()
                    .all(|&s| s >= 1 && s as u64 <= spec.key_count),
                "each --shards must be between 1 and --key-count"
            );
            let points = hanse_bench::scale::run(&spec, |line| eprintln!("{line}"), write)
                .map_err(anyhow::Error::msg)?;
            print!("{}", hanse_bench::scale::table(&points));
            Ok(())
        }
        Command::Bulk { spec, out } => {
            ensure!(
                spec.keys >= 1 && spec.clients >= 1 && spec.batch >= 1,
                "--keys, --clients and --batch must be at least 1"
            );
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let report = hanse_bench::bulk::run(&spec, |line| eprintln!("{line}"))
                .map_err(anyhow::Error::msg)?;
            let table = hanse_bench::bulk::table(&report);
            let json = serde_json::to_string_pretty(&hanse_bench::bulk::json(&report))?;
            std::fs::write(out.join("bulk.md"), &table)
                .and_then(|()| std::fs::write(out.join("bulk.json"), json))
                .with_context(|| format!("writing into {}", out.display()))?;
            print!("{table}");
            Ok(())
        }
        Command::Planner { plan, out } => {
            ensure!(
                plan.runs >= 1 && plan.key_count >= 100 && plan.in_flight >= 1,
                "--runs and --in-flight must be at least 1, --key-count at least 100"
            );
            ensure!(plan.rate.is_none_or(|r| r > 0.0), "--rate must be above 0");
            let (results, failures) = planner_ab::run_plan(&plan, |line| eprintln!("{line}"))
                .map_err(anyhow::Error::msg)?;
            for failure in &failures {
                eprintln!("failed: {failure}");
            }
            ensure!(!results.is_empty(), "no run succeeded");
            planner_ab::write_report(&out, &results)
                .with_context(|| format!("writing the report into {}", out.display()))?;
            print!("{}", planner_ab::table(&results));
            println!("report: {}", out.join("planner-ab.md").display());
            Ok(())
        }
    }
}

/// `hanse-bench run`.
fn run_one(args: RunArgs) -> Result<()> {
    ensure!(
        args.clients >= 1 && args.key_count >= 1 && args.ops >= 1,
        "--clients, --key-count and --ops must be at least 1"
    );
    let spec = LoadSpec {
        workload: args.workload,
        clients: args.clients,
        ops: args.ops,
        duration: Duration::from_secs(args.duration),
        key_count: args.key_count,
        value_size: args.value_size,
        seed: args.seed,
        max_staleness: args.max_staleness,
        distribution: args.distribution,
    };
    // The embedded store runs its own runtime: it is opened, and dropped, outside this
    // one.
    let scratch = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (store, servers) = match (args.target, args.endpoints.is_empty()) {
        (Contender::Hanse, false) => {
            let tls = match (&args.certs_dir, args.insecure) {
                (_, true) => None,
                (Some(dir), false) => Some(hanse_client::user_tls(dir, "root")?),
                (None, false) => {
                    bail!("give --certs-dir DIR with the cluster's certificates, or --insecure")
                }
            };
            let options = ClientOptions {
                region: args.region.clone(),
                tls,
                ..ClientOptions::default()
            };
            let client = Client::new(&args.endpoints, options)?;
            (load::Target::Cluster(Arc::new(client)), None)
        }
        (_, false) => bail!("--endpoints reaches a running Hanse cluster (--target hanse)"),
        (target, true) => {
            eprintln!("starting {}", target.name());
            compare::start(target, &dir, args.port, args.clients, &runtime)
                .map_err(anyhow::Error::msg)?
        }
    };
    // Whose CPU time the run costs: the servers started for it, a running cluster's (by
    // its directory's pid files), or this process for a store inside it.
    let processes = match (&servers, &args.cluster_dir, args.endpoints.is_empty()) {
        (Some(servers), _, _) => Some(servers.processes()),
        (None, Some(dir), false) => Some(compare::cluster_processes(dir)),
        (None, None, false) => None,
        (None, _, true) => Some(hanse_bench::cpu::Processes::this_process()),
    };
    let result = measure(&runtime, &store, &spec, &args, processes.as_ref());
    drop(runtime);
    drop(store);
    drop(servers);
    result
}

/// Runs `spec` against `store` as `args` say and prints what it measured.
fn measure(
    runtime: &tokio::runtime::Runtime,
    store: &load::Target,
    spec: &LoadSpec,
    args: &RunArgs,
    processes: Option<&hanse_bench::cpu::Processes>,
) -> Result<()> {
    let RunArgs {
        target,
        workload,
        clients,
        ops,
        key_count,
        rate,
        kill_leader_after,
        transfer_leader_after,
        split_after,
        merge_after,
        json,
        ..
    } = *args;
    runtime.block_on(async {
        if workload.reads() {
            eprintln!("loading {key_count} keys");
            preload(store, spec, |n| bar(n, key_count)).await?;
            end_bar();
        }
        let fault = match (kill_leader_after, &args.cluster_dir) {
            (Some(after), Some(dir)) => {
                let (leader, pid) = find_leader(dir).await?;
                eprintln!("will SIGKILL leader node {leader} (pid {pid}) after {after}s");
                Some(Fault {
                    after: Duration::from_secs_f64(after),
                    inject: Box::new(move || {
                        // SAFETY: kill(2) has no memory effects; the pid is the leader's server.
                        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                        if rc == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error().to_string())
                        }
                    }),
                })
            }
            _ => match (
                transfer_leader_after.or(split_after).or(merge_after),
                &args.cluster_dir,
            ) {
                (Some(after), Some(dir)) => {
                    let (leader, mut admin, descriptor) = first_shard_leader(dir).await?;
                    let what = match transfer_leader_after {
                        None if merge_after.is_some() => {
                            let key = load::load_key(key_count / 2);
                            admin
                                .split(proto::SplitRequest { key })
                                .await
                                .map_err(|e| anyhow::anyhow!("splitting before the merge: {}", e.message()))?;
                            eprintln!("split shard {}; will merge it again after {after}s", descriptor.id);
                            Calibration::Merge { shard: descriptor.id }
                        }
                        Some(_) => {
                            let here = descriptor.replicas.iter().find(|r| r.node == leader);
                            let to = descriptor
                                .replicas
                                .iter()
                                .filter(|r| r.node != leader && r.role == proto::ReplicaRole::Voter as i32)
                                .max_by_key(|r| here.is_some_and(|h| h.region != r.region))
                                .context("the first shard has no other voter")?
                                .node;
                            eprintln!("will move shard {}'s leadership from node {leader} to node {to} after {after}s", descriptor.id);
                            Calibration::Transfer { shard: descriptor.id, to }
                        }
                        None => {
                            eprintln!("will split shard {} after {after}s", descriptor.id);
                            Calibration::Split {
                                key: load::load_key(key_count / 2),
                            }
                        }
                    };
                    Some(Fault {
                        after: Duration::from_secs_f64(after),
                        inject: Box::new(move || {
                            tokio::spawn(async move {
                                let done = match what {
                                    Calibration::Transfer { shard, to } => admin
                                        .transfer_leader(proto::TransferLeaderRequest {
                                            shard_id: shard,
                                            to_node: to,
                                        })
                                        .await
                                        .map(drop),
                                    Calibration::Split { key } => admin
                                        .split(proto::SplitRequest { key })
                                        .await
                                        .map(drop),
                                    Calibration::Merge { shard } => admin
                                        .merge(proto::MergeRequest { shard_id: shard })
                                        .await
                                        .map(drop),
                                };
                                if let Err(e) = done {
                                    eprintln!("the calibration step failed: {}", e.message());
                                }
                            });
                            Ok(())
                        }),
                    })
                }
                _ => None,
            },
        };
        let cpu_before = processes.and_then(|p| p.cpu());
        let report = match rate {
            Some(rate) => run_at_rate(store.clone(), spec, rate, |n| bar(n, ops)).await,
            None => run(store.clone(), spec, fault, |n| bar(n, ops)).await,
        };
        let cpu = cpu_before
            .zip(processes.and_then(|p| p.cpu()))
            .map(|(before, after)| after.saturating_sub(before));
        let cpu_ms_per_kop = cpu.and_then(|cpu| hanse_bench::cpu::ms_per_kop(cpu, report.ops));
        end_bar();
        let h = &report.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        if json {
            let out = serde_json::json!({
                "target": target.name(),
                "workload": format!("{workload:?}").to_lowercase(),
                "clients": clients,
                "ops": report.ops,
                "errors": report.errors,
                "seconds": report.elapsed.as_secs_f64(),
                "ops_per_sec": report.throughput(),
                "p50_ms": ms(h.value_at_quantile(0.5)),
                "p99_ms": ms(h.value_at_quantile(0.99)),
                "p999_ms": ms(h.value_at_quantile(0.999)),
                "failover_ms": report.failover.map(|d| d.as_secs_f64() * 1000.0),
                "max_ms": ms(h.max()),
                "cpu_ms_per_kop": cpu_ms_per_kop,
            });
            println!("{out}");
        } else {
            println!(
                "{workload:?} with {clients} clients: {} ops in {:.2?} ({:.0} ops/s), {} errors",
                report.ops,
                report.elapsed,
                report.throughput(),
                report.errors
            );
            println!(
                "latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999))
            );
            match cpu_ms_per_kop {
                Some(per_kop) => println!(
                    "CPU {per_kop:.1} ms per 1,000 operations, {:.2} s in all, over the store's processes{}",
                    cpu.unwrap_or_default().as_secs_f64(),
                    match processes.is_some_and(|p| *p == hanse_bench::cpu::Processes::this_process()) {
                        true => " (this process: the load generator's included)",
                        false => "",
                    }
                ),
                None => println!(
                    "CPU per operation: not measured (give --cluster-dir for a running cluster's processes)"
                ),
            }
            if let Some(gap) = report.failover {
                let after = match (transfer_leader_after, split_after, merge_after) {
                    (Some(_), _, _) => "the leadership moved",
                    (_, Some(_), _) => "the split",
                    (_, _, Some(_)) => "the merge",
                    _ => "the leader was killed",
                };
                println!("failover: no acknowledgement for {gap:.2?} after {after}");
            }
            println!("slowest operation {:.2} ms", ms(h.max()));
        }
        Ok(())
    })
}

type LeaderAdmin = AdminClient<hanse_client::Channel>;

/// A step whose cost to the clients the planner's simulator is calibrated with.
enum Calibration {
    Transfer { shard: u64, to: u64 },
    Split { key: Vec<u8> },
    Merge { shard: u64 },
}

/// Each node of the cluster in `dir` that answers, in id order: its id, an admin client
/// of it, and its status.
async fn node_statuses(dir: &Path) -> Result<Vec<(u64, LeaderAdmin, proto::StatusResponse)>> {
    let mut answered = Vec::new();
    for id in 1.. {
        let path = dir.join(format!("node{id}.toml"));
        if !path.exists() {
            break;
        }
        let config = NodeConfig::load(&path)?;
        let tls = match config.insecure {
            true => None,
            false => Some(hanse_client::user_tls(&dir.join("certs"), "root")?),
        };
        let channel = hanse_client::connect(&config.advertised(), tls)?;
        let mut admin = AdminClient::new(channel);
        // A node that is down leads nothing.
        if let Ok(status) = admin.status(proto::StatusRequest {}).await {
            answered.push((id, admin, status.into_inner()));
        }
    }
    Ok(answered)
}

/// The node leading the first data shard of the cluster in `dir`, an admin client of it,
/// and the shard.
async fn first_shard_leader(dir: &Path) -> Result<(u64, LeaderAdmin, proto::ShardDescriptor)> {
    for (id, admin, status) in node_statuses(dir).await? {
        let first = status.shards.into_iter().find(|s| {
            s.role == "leader" && s.descriptor.as_ref().is_some_and(|d| d.start.is_empty())
        });
        if let Some(descriptor) = first.and_then(|s| s.descriptor) {
            return Ok((id, admin, descriptor));
        }
    }
    bail!("no node in {} leads the first data shard", dir.display())
}

/// The leader of the first shard in the cluster in `dir`, and its process id.
async fn find_leader(dir: &Path) -> Result<(u64, i32)> {
    for (id, _, status) in node_statuses(dir).await? {
        if status.shards.iter().any(|s| s.role == "leader") {
            let pid_path = dir.join(format!("node{id}.pid"));
            let pid = std::fs::read_to_string(&pid_path)
                .with_context(|| format!("reading {}", pid_path.display()))?
                .trim()
                .parse()
                .context("pid file")?;
            return Ok((id, pid));
        }
    }
    bail!("no node in {} leads a shard", dir.display())
}
