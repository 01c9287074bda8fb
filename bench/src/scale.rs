//! `hanse bench scale`: what a 3-node cluster costs as its shards grow. For each number
//! of shards, a fresh local cluster is split into that many shards (evenly over the
//! load's keys, leaders spread round-robin over the nodes), and the run measures the time
//! that took, each node's idle CPU and resident memory once idle shards hibernated, the
//! routing table's size, a balancer round, a uniform load's throughput and p99 over all
//! shards, and how long after a SIGKILL of one node every shard it led answers again.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hanse_client::Channel;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::{Client, ClientOptions, proto};
use prost::Message;
use tokio::sync::Semaphore;

use hanse_node::chart::{Series, line_chart};
use hanse_node::units::parse_duration;

use crate::compare::LocalCluster;
use crate::cpu::Processes;
use crate::load::{self, Distribution, LoadSpec, Target, Workload, load_key};

/// What one scale run does (`hanse bench scale`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleSpec {
    /// Numbers of shards, comma-separated (one fresh cluster each).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub shards: Vec<usize>,
    /// How long idle CPU is measured (after idle shards had time to hibernate).
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "60s")]
    pub idle: Duration,
    /// How long the uniform load runs.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "20s")]
    pub load: Duration,
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    #[arg(long, default_value_t = 100_000)]
    pub key_count: u64,
    /// The port the local cluster's nodes listen on.
    #[arg(long, default_value_t = 7660)]
    pub port: u16,
    /// A `[raft]` setting of the nodes, as KEY=VALUE (repeatable), e.g. `--raft
    /// heartbeat_ms=300`: what the cluster costs with other Raft timings.
    #[arg(long, value_name = "KEY=VALUE")]
    pub raft: Vec<String>,
}

/// What one number of shards cost.
#[derive(Debug, Clone)]
pub struct ScalePoint {
    pub shards: usize,
    /// Splitting and spreading the leaders.
    pub create_secs: f64,
    /// Each node's CPU over the idle window, in percent of one core.
    pub idle_cpu_percent: Vec<f64>,
    /// Each node's resident memory after the idle window.
    pub rss_mib: Vec<f64>,
    /// Replicas hibernating on each node at the end of the idle window.
    pub hibernating: Vec<u64>,
    /// The routing table (every shard's descriptor and leader) as the Admin service
    /// sends it.
    pub routing_bytes: usize,
    /// The mean balancer round over the run, from the meta leader's metrics.
    pub balancer_round_ms: Option<f64>,
    pub ops_per_sec: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// From the SIGKILL of a node to every shard it led answering a linearizable read.
    pub led_again_secs: Option<f64>,
    /// From the SIGKILL to half of those shards answering.
    pub half_led_again_secs: Option<f64>,
    /// How many of those shards answered within the limit.
    pub led_again: usize,
    /// Shards the killed node led.
    pub orphaned: usize,
}

/// Runs `spec`, one fresh cluster per number of shards; `progress` hears each phase and
/// `measured` every point so far as each is done (a long run keeps what it measured).
pub fn run(
    spec: &ScaleSpec,
    progress: impl Fn(&str),
    mut measured: impl FnMut(&[ScalePoint]) -> Result<(), String>,
) -> Result<Vec<ScalePoint>, String> {
    let mut points = Vec::new();
    for &shards in &spec.shards {
        progress(&format!("{shards} shards: starting a cluster"));
        points.push(measure(spec, shards, &progress)?);
        measured(&points)?;
    }
    Ok(points)
}

fn measure(
    spec: &ScaleSpec,
    shards: usize,
    progress: &impl Fn(&str),
) -> Result<ScalePoint, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Channels and clients are made inside the runtime that drives them.
    let _inside = runtime.enter();
    // The balancer leaves every new shard alone for an hour: the run measures its round
    // over many shards, not it merging them back.
    let raft = spec
        .raft
        .iter()
        .flat_map(|setting| ["--raft", setting.as_str()]);
    let up: Vec<&str> = ["--balance-cool-down", "3600"]
        .into_iter()
        .chain(raft)
        .collect();
    let cluster = LocalCluster::start_with(spec.port, up)?;
    let tls = cluster.root_tls()?;
    let admin = |addr: &str| -> Result<AdminClient<Channel>, String> {
        let channel = hanse_client::connect(addr, tls.clone()).map_err(|e| e.to_string())?;
        Ok(AdminClient::new(channel).max_decoding_message_size(256 << 20))
    };
    let first = admin(&cluster.endpoints()[0])?;

    progress(&format!("{shards} shards: splitting and spreading leaders"));
    let started = Instant::now();
    runtime.block_on(split_evenly(&first, shards, spec.key_count))?;
    runtime.block_on(spread_leaders(&first, cluster.endpoints().len() as u64))?;
    let create_secs = started.elapsed().as_secs_f64();

    let table = runtime.block_on(shard_table(&first))?;
    let routing_bytes = table.encoded_len();

    let hibernate_after = Duration::from_secs(10);
    progress(&format!(
        "{shards} shards: idle for {:?} then measuring {:?}",
        hibernate_after, spec.idle
    ));
    std::thread::sleep(hibernate_after);
    let pids = node_pids(&cluster.dir());
    let before: Vec<Option<Duration>> = pids.iter().map(|p| Processes(vec![*p]).cpu()).collect();
    std::thread::sleep(spec.idle);
    let after: Vec<Option<Duration>> = pids.iter().map(|p| Processes(vec![*p]).cpu()).collect();
    let idle_cpu_percent = before
        .iter()
        .zip(&after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => {
                a.saturating_sub(*b).as_secs_f64() / spec.idle.as_secs_f64() * 100.0
            }
            _ => f64::NAN,
        })
        .collect();
    let rss_mib = pids
        .iter()
        .map(|p| rss_mib(*p).unwrap_or(f64::NAN))
        .collect();
    let pages = cluster.metrics()?;
    let hibernating = pages
        .iter()
        .map(|page| metric(page, "hanse_raft_groups_hibernating").unwrap_or(0.0) as u64)
        .collect();
    let balancer_round_ms = pages.iter().find_map(|page| {
        let sum = metric(page, "hanse_balancer_round_seconds_sum")?;
        let count = metric(page, "hanse_balancer_round_seconds_count")?;
        (count > 0.0).then(|| sum / count * 1000.0)
    });

    progress(&format!(
        "{shards} shards: uniform load for {:?}",
        spec.load
    ));
    let client = Client::new(
        cluster.endpoints(),
        ClientOptions {
            tls: tls.clone(),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let client = Arc::new(client);
    let target = Target::Cluster(client.clone());
    let load = LoadSpec {
        workload: Workload::Mixed,
        clients: spec.clients,
        ops: u64::MAX,
        duration: spec.load,
        key_count: spec.key_count,
        value_size: 256,
        seed: 7,
        max_staleness: Duration::ZERO,
        distribution: Distribution::Uniform,
    };
    let report = runtime.block_on(load::run(target, &load, None, |_| {}));

    // The shards fall asleep again, so the kill strikes sleeping groups, which only
    // node-level liveness wakes.
    progress(&format!(
        "{shards} shards: idle for {hibernate_after:?}, then SIGKILL of a node until its shards answer"
    ));
    std::thread::sleep(hibernate_after);
    let victim = cluster.endpoints().len() as u64;
    let table = runtime.block_on(shard_table(&first))?;
    let orphans: Vec<Vec<u8>> = table
        .shards
        .iter()
        .filter(|s| s.leader_node == victim)
        .filter_map(|s| s.descriptor.as_ref().map(|d| d.start.clone()))
        .collect();
    let orphaned = orphans.len();
    let killed = Instant::now();
    kill(pids[victim as usize - 1])?;
    let mut answered = runtime.block_on(answer_times(&client, orphans, FAILOVER_LIMIT, killed));
    answered.sort_by(f64::total_cmp);
    let led_again_secs = (answered.len() == orphaned)
        .then(|| answered.last().copied())
        .flatten();
    let half_led_again_secs = answered
        .get(orphaned.div_ceil(2).saturating_sub(1))
        .copied();
    drop(_inside);
    drop(runtime);
    drop(cluster);
    Ok(ScalePoint {
        shards,
        create_secs,
        idle_cpu_percent,
        rss_mib,
        hibernating,
        routing_bytes,
        balancer_round_ms,
        ops_per_sec: report.throughput(),
        p99_ms: report.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        errors: report.errors,
        led_again_secs,
        half_led_again_secs,
        led_again: answered.len(),
        orphaned,
    })
}

/// Splits the load's keys into `shards` ranges of equal key counts: level by level, each
/// range at its middle, the splits of one level (each in another shard) concurrently.
async fn split_evenly(
    admin: &AdminClient<Channel>,
    shards: usize,
    key_count: u64,
) -> Result<(), String> {
    let mut ranges = vec![(0usize, shards)];
    let concurrent = Arc::new(Semaphore::new(8));
    while !ranges.is_empty() {
        let mut next = Vec::new();
        let mut splits = tokio::task::JoinSet::new();
        for (low, high) in ranges {
            if high - low < 2 {
                continue;
            }
            let middle = (low + high) / 2;
            next.push((low, middle));
            next.push((middle, high));
            let at = load_key(key_count * middle as u64 / shards as u64);
            let admin = admin.clone();
            let concurrent = concurrent.clone();
            splits.spawn(async move {
                let _turn = concurrent.acquire().await;
                retry(|| {
                    let key = at.clone();
                    let mut admin = admin.clone();
                    async move { admin.split(proto::SplitRequest { key }).await }
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("split at {}: {e}", String::from_utf8_lossy(&at)))
            });
        }
        while let Some(done) = splits.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
        ranges = next;
    }
    Ok(())
}

/// Moves each data shard's leadership to node `i % nodes + 1` of its place in key order.
async fn spread_leaders(admin: &AdminClient<Channel>, nodes: u64) -> Result<(), String> {
    let table = shard_table(admin).await?;
    let mut data: Vec<(Vec<u8>, u64, u64)> = table
        .shards
        .iter()
        .filter_map(|s| {
            let d = s.descriptor.as_ref()?;
            (d.start.first() != Some(&0xff)).then(|| (d.start.clone(), d.id, s.leader_node))
        })
        .collect();
    data.sort();
    let concurrent = Arc::new(Semaphore::new(64));
    let mut transfers = tokio::task::JoinSet::new();
    for (i, (_, shard, leader)) in data.into_iter().enumerate() {
        let to = i as u64 % nodes + 1;
        if leader == to {
            continue;
        }
        let admin = admin.clone();
        let concurrent = concurrent.clone();
        transfers.spawn(async move {
            let _turn = concurrent.acquire().await;
            retry(|| {
                let mut admin = admin.clone();
                async move {
                    admin
                        .transfer_leader(proto::TransferLeaderRequest {
                            shard_id: shard,
                            to_node: to,
                        })
                        .await
                }
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("leader of shard {shard} to node {to}: {e}"))
        });
    }
    while let Some(done) = transfers.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// How long the failover measurement waits for the killed node's shards to answer.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// How long a refused split or transfer waits before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// `call` until it succeeds, up to 10 tries [`RETRY_PAUSE`] apart (a shard busy with its
/// own split or transfer refuses for a moment).
async fn retry<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(e) if tries >= 9 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

pub(crate) async fn shard_table(
    admin: &AdminClient<Channel>,
) -> Result<proto::ShardsResponse, String> {
    admin
        .clone()
        .shards(proto::ShardsRequest::default())
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("the shard table: {e}"))
}

/// Retries a linearizable read of each of `keys` until it answers or `limit` passed;
/// answers the seconds from `since` to each answer (of those that answered).
async fn answer_times(
    client: &Arc<Client>,
    keys: Vec<Vec<u8>>,
    limit: Duration,
    since: Instant,
) -> Vec<f64> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut reads = tokio::task::JoinSet::new();
    for key in keys {
        let client = client.clone();
        reads.spawn(async move {
            while tokio::time::Instant::now() < deadline {
                if client.get(&key).await.is_ok() {
                    return Some(since.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        });
    }
    let mut answered = Vec::new();
    while let Some(read) = reads.join_next().await {
        answered.extend(read.ok().flatten());
    }
    answered
}

pub(crate) fn node_pids(dir: &Path) -> Vec<u32> {
    crate::compare::cluster_processes(dir).0
}

pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn kill(pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -9 {pid} failed"))
}

/// The value of the first sample of `name` on a Prometheus page (labels ignored).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// `points` as JSON.
pub fn json(points: &[ScalePoint]) -> serde_json::Value {
    serde_json::Value::Array(
        points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "shards": p.shards,
                    "create_secs": p.create_secs,
                    "idle_cpu_percent": p.idle_cpu_percent,
                    "rss_mib": p.rss_mib,
                    "hibernating": p.hibernating,
                    "routing_bytes": p.routing_bytes,
                    "balancer_round_ms": p.balancer_round_ms,
                    "ops_per_sec": p.ops_per_sec,
                    "p99_ms": p.p99_ms,
                    "errors": p.errors,
                    "led_again_secs": p.led_again_secs,
                    "half_led_again_secs": p.half_led_again_secs,
                    "led_again": p.led_again,
                    "orphaned": p.orphaned,
                })
            })
            .collect(),
    )
}

/// The points of a run's JSON (see [`json`]), to draw its charts again.
pub fn from_json(value: &serde_json::Value) -> Result<Vec<ScalePoint>, String> {
    let points = value.as_array().ok_or("scale JSON: not a list of points")?;
    points
        .iter()
        .map(|p| {
            let number = |key: &str| {
                p[key]
                    .as_f64()
                    .ok_or_else(|| format!("scale JSON: a point without {key}"))
            };
            let list = |key: &str| -> Vec<f64> {
                p[key]
                    .as_array()
                    .map(|values| values.iter().filter_map(|v| v.as_f64()).collect())
                    .unwrap_or_default()
            };
            Ok(ScalePoint {
                shards: number("shards")? as usize,
                create_secs: number("create_secs")?,
                idle_cpu_percent: list("idle_cpu_percent"),
                rss_mib: list("rss_mib"),
                hibernating: list("hibernating").iter().map(|&h| h as u64).collect(),
                routing_bytes: number("routing_bytes")? as usize,
                balancer_round_ms: p["balancer_round_ms"].as_f64(),
                ops_per_sec: number("ops_per_sec")?,
                p99_ms: number("p99_ms")?,
                errors: number("errors")? as u64,
                led_again_secs: p["led_again_secs"].as_f64(),
                half_led_again_secs: p["half_led_again_secs"].as_f64(),
                // Runs before this field was recorded answered all or said nothing.
                led_again: p["led_again"].as_u64().map_or_else(
                    || {
                        if p["led_again_secs"].is_f64() {
                            p["orphaned"].as_u64().unwrap_or(0) as usize
                        } else {
                            0
                        }
                    },
                    |n| n as usize,
                ),
                orphaned: number("orphaned")? as usize,
            })
        })
        .collect()
}

/// The charts of `points` as (file name, PNG): idle CPU and resident memory per node,
/// and the uniform load's throughput, each over the number of shards (log scale).
pub fn charts(points: &[ScalePoint]) -> Vec<(&'static str, Vec<u8>)> {
    let x = |p: &ScalePoint| (p.shards.max(1) as f64).log10();
    let per_node = |values: fn(&ScalePoint) -> &[f64]| -> Vec<Series> {
        let nodes = points.iter().map(|p| values(p).len()).max().unwrap_or(0);
        (0..nodes)
            .map(|node| Series {
                name: format!("node {}", node + 1),
                points: points
                    .iter()
                    .filter_map(|p| values(p).get(node).map(|&v| (x(p), v)))
                    .collect(),
            })
            .collect()
    };
    let throughput = [Series {
        name: "YCSB A, 32 clients".into(),
        points: points.iter().map(|p| (x(p), p.ops_per_sec)).collect(),
    }];
    let x_label = "shards (log10)";
    vec![
        (
            "scale-idle-cpu.png",
            line_chart(
                "idle CPU per node as shards grow",
                x_label,
                "% of one core",
                &per_node(|p| &p.idle_cpu_percent),
            ),
        ),
        (
            "scale-rss.png",
            line_chart(
                "resident memory per node as shards grow",
                x_label,
                "MiB",
                &per_node(|p| &p.rss_mib),
            ),
        ),
        (
            "scale-throughput.png",
            line_chart("throughput over all shards", x_label, "ops/s", &throughput),
        ),
    ]
}

/// One figure per node, as a table cell: `a / b / c`.
pub(crate) fn per_node(values: &[f64], digits: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.digits$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The table of `points`, as Markdown.
pub fn table(points: &[ScalePoint]) -> String {
    let mut out = String::from(
        "| shards | create (s) | idle CPU per node (% of a core) | RSS per node (MiB) | hibernating | routing table (KiB) | balancer round (ms) | ops/s | p99 (ms) | killed node's shards | half led again (s) | all led again (s) |\n\
         |---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let list = per_node;
    for p in points {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {:.1} | {} | {:.0} | {:.1} | {} | {} | {} |\n",
            p.shards,
            p.create_secs,
            list(&p.idle_cpu_percent, 1),
            list(&p.rss_mib, 0),
            p.hibernating
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            p.routing_bytes as f64 / 1024.0,
            p.balancer_round_ms
                .map_or("-".to_string(), |ms| format!("{ms:.2}")),
            p.ops_per_sec,
            p.p99_ms,
            p.orphaned,
            p.half_led_again_secs
                .map_or("-".to_string(), |s| format!("{s:.2}")),
            p.led_again_secs.map_or_else(
                || format!(
                    "{} of {} within {FAILOVER_LIMIT:?}",
                    p.led_again, p.orphaned
                ),
                |s| format!("{s:.2}")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_read_back_from_its_json_draws_the_same_table_and_three_charts() {
        let point = ScalePoint {
            shards: 1000,
            create_secs: 19.3,
            idle_cpu_percent: vec![5.9, 4.2, 4.4],
            rss_mib: vec![230.0, 134.0, 246.0],
            hibernating: vec![1000, 1000, 999],
            routing_bytes: 136_000,
            balancer_round_ms: Some(20.3),
            ops_per_sec: 1577.0,
            p99_ms: 85.0,
            errors: 0,
            led_again_secs: None,
            half_led_again_secs: Some(2.5),
            led_again: 300,
            orphaned: 333,
        };
        let points = vec![
            point.clone(),
            ScalePoint {
                shards: 100,
                ..point
            },
        ];
        let back = from_json(&json(&points)).unwrap();
        assert_eq!(table(&back), table(&points));
        let charts = charts(&back);
        assert_eq!(charts.len(), 3);
        assert!(charts.iter().all(|(_, png)| png.starts_with(b"\x89PNG")));
        assert!(from_json(&serde_json::json!({"shards": 1})).is_err());
    }

    #[test]
    fn a_metric_is_read_with_or_without_labels_and_not_by_prefix() {
        let page = "# HELP x\nhanse_x_total{node=\"1\"} 4\nhanse_x 2.5\nhanse_x_sum 9\n";
        assert_eq!(metric(page, "hanse_x"), Some(2.5));
        assert_eq!(metric(page, "hanse_x_total"), Some(4.0));
        assert_eq!(metric(page, "hanse_x_sum"), Some(9.0));
        assert_eq!(metric(page, "hanse_y"), None);
    }
}
