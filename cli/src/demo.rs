//! `hanse demo`: the seed's story on one machine. A local cluster in three regions
//! (Hamburg, China, Australia) with the round trips between them injected; its shards
//! start led from China. A write-heavy load from Hamburg, whose hotspot moves through the
//! key space, then shows live what the cluster does about it: leaders move to Hamburg,
//! hot shards split, cold ones merge, the Hamburg ingest actor batches writes, and the
//! Australian recovery replicas follow as learners. At the end: a summary (throughput
//! and latency before and after, every acknowledged write read back) and a report (HTML
//! with PNG charts). Ctrl-C ends the load early and still cleans up.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use hanse_client::{Client, ClientOptions, proto};
use hanse_consensus::latency::LatencyMatrix;
use hanse_node::chart::{Series, line_chart};
use hanse_node::units::parse_duration;

use crate::admin::first_answer;
use crate::connect::{Credentials, admin};
use crate::{cluster, display, tour};

/// The nodes' regions in id order, and the round trips between the regions (roughly the
/// real ones).
const NODE_REGIONS: [&str; 4] = ["eu-hamburg", "ap-china", "au-sydney", "eu-hamburg"];
const LATENCY: &str =
    "eu-hamburg:ap-china=180ms,eu-hamburg:au-sydney=280ms,ap-china:au-sydney=120ms";
/// The node the shards' leaders start on (China's).
const CHINA_NODE: u64 = 2;
/// Concurrent Hamburg writers; each owns its keys, so its last acknowledged value of a
/// key is the value the key must hold at the end.
const WRITERS: usize = 32;
/// Keys per writer in each zone of the hotspot.
const KEYS_PER_WRITER: u64 = 200;
/// Each value's size, as the benchmarks write them.
const VALUE_BYTES: usize = 256;
/// Zones the hotspot moves through, one after another.
const ZONES: u64 = 4;
/// How often the live view looks at the cluster.
const TICK: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct DemoArgs {
    /// How long the Hamburg load runs.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "120s")]
    duration: Duration,
    /// Where the report (index.html and its charts) goes.
    #[arg(long, value_name = "DIR", default_value = "demo-report")]
    out: PathBuf,
    /// Keep the cluster's data here (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The port the nodes listen on, each on its own 127.0.0.x address.
    #[arg(long, default_value_t = 7800)]
    port: u16,
    /// Who decides splits, merges and leader placement: the planner's tuned heuristic, or
    /// its trained network (`model`). The heuristic by default: the network has not yet
    /// shown itself at least as good (docs/planner.md, "Results").
    #[arg(long, value_enum, default_value = "heuristic")]
    planner: DemoPlanner,
    /// The short tour of the embedded store instead (single process, no cluster).
    #[arg(long)]
    embedded: bool,
    #[command(flatten)]
    tour: tour::TourArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DemoPlanner {
    Heuristic,
    Model,
}

impl DemoPlanner {
    /// The node config's name for the mode.
    fn name(self) -> &'static str {
        match self {
            DemoPlanner::Heuristic => "heuristic",
            DemoPlanner::Model => "model",
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.embedded {
        return tour::run(args.tour);
    }
    anyhow::ensure!(
        args.duration >= Duration::from_secs(10),
        "--duration must be at least 10s"
    );
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    println!("Hanse demo: a geo-distributed cluster on this machine\n");
    println!("Four nodes in three regions, with injected round trips ({LATENCY}):");
    println!("two in eu-hamburg, one in ap-china, one in au-sydney (the recovery region,");
    println!("whose replicas are learners: they follow every shard but never vote).");
    let cluster_dir = dir.join("cluster");
    // The planner acts (not only in shadow), and shards change on the demo's time scale.
    let tables = format!(
        "[balance]\nplanner = \"{}\"\ncool_down_secs = 10\n\
         split_size_bytes = 4194304\nmerge_size_bytes = 3145728\n\
         planner_node_capacity = 1000\n\n",
        args.planner.name()
    );
    let latency = LatencyMatrix::parse(LATENCY, parse_duration).map_err(anyhow::Error::msg)?;
    // Stops whatever started, however the demo ends from here on.
    let _cluster = ClusterGuard(cluster_dir.clone());
    let endpoints = cluster::up_new(
        &cluster_dir,
        &NODE_REGIONS.map(String::from),
        args.port,
        &tables,
        &latency,
        None,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let tls = cluster::tls_of(&cluster_dir)?;
    let console = match cluster::http_addrs(&cluster_dir)?.first() {
        Some(addr) => {
            let token = runtime.block_on(console_token(&endpoints, &tls))?;
            println!(
                "\nThe web console (while the demo runs; the browser will not know the cluster's \
                 CA, {}/certs/ca.crt):\n  https://{addr}/#token={token}",
                cluster_dir.display()
            );
            Some(format!("https://{addr}/"))
        }
        None => None,
    };
    let mut story = runtime.block_on(tell(&endpoints, &tls, args.duration))?;
    story.console = console;
    drop(runtime);
    print_summary(&story);
    let report = write_report(&args.out, &story)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    println!("\nreport: {}", report.display());
    Ok(())
}

/// Stops the cluster when the demo ends, however it ends.
struct ClusterGuard(PathBuf);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        // Nothing to stop when the cluster was never created.
        if let Ok(stopped) = cluster::stop_all(&self.0) {
            println!("stopped the cluster's {stopped} nodes");
        }
    }
}

/// What the load saw in one tick.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// One tick of the live view.
#[derive(Debug, Clone)]
struct Sample {
    at: f64,
    zone: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    shards: usize,
    leaders_in_hamburg: usize,
    learners_in_sydney: usize,
    ingest_batch: f64,
}

/// Something the cluster did, as the live view saw it.
#[derive(Debug, Clone)]
struct Event {
    at: f64,
    kind: EventKind,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Split,
    Merge,
    LeaderMove,
}

/// Everything the story gathered, for the summary and the report.
struct Story {
    /// Where the console was while the cluster ran.
    console: Option<String>,
    samples: Vec<Sample>,
    events: Vec<Event>,
    interrupted: bool,
    checked_keys: usize,
    wrong_keys: Vec<String>,
    final_shards: Vec<proto::ShardStatus>,
    ingest: IngestTotals,
    planner: Option<proto::PlannerStatus>,
}

#[derive(Debug, Default, Clone, Copy)]
struct IngestTotals {
    writes: u64,
    batches: u64,
    largest: u64,
    waited_micros: u64,
}

impl IngestTotals {
    fn mean_batch(&self) -> f64 {
        self.writes as f64 / self.batches.max(1) as f64
    }
}

/// A sensor reading of `VALUE_BYTES`, unique per writer and sequence number.
fn reading(writer: usize, sequence: u64) -> Vec<u8> {
    let mut value = format!("{{\"writer\":{writer},\"seq\":{sequence},\"pad\":\"").into_bytes();
    value.resize(VALUE_BYTES - 2, b'.');
    value.extend_from_slice(b"\"}");
    value
}

fn zone_key(zone: u64, writer: usize, n: u64) -> Vec<u8> {
    format!("sensor:{zone}:{writer:02}:{n:04}").into_bytes()
}

/// The hotspot's zone `elapsed` into a load of `duration`.
fn zone_at(elapsed: Duration, duration: Duration) -> u64 {
    let phase = duration.as_secs_f64() / ZONES as f64;
    ((elapsed.as_secs_f64() / phase) as u64).min(ZONES - 1)
}

async fn tell(endpoints: &[String], tls: &Credentials, duration: Duration) -> Result<Story> {
    let client = Arc::new(Client::new(
        endpoints,
        ClientOptions {
            region: Some("eu-hamburg".into()),
            ..tls.options()
        },
    )?);
    let shards = routing_table(endpoints, tls).await?;
    println!("\nThe data starts led from ap-china, as if it had been loaded there:");
    for shard in shards.iter().filter(|s| !is_meta(s)) {
        let id = shard.descriptor.as_ref().map_or(0, |d| d.id);
        if shard.leader_node != CHINA_NODE {
            transfer_leader(endpoints, tls, id, CHINA_NODE).await?;
        }
        println!("  shard {id}: leader node {CHINA_NODE} (ap-china)");
    }
    println!(
        "\nNow {WRITERS} clients in eu-hamburg write (90 % puts, 10 % gets) for {duration:?}; the \
         hotspot moves through {ZONES} zones of the key space."
    );
    println!(
        "{:>5} {:>4} {:>7} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>7}",
        "time",
        "zone",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "shards",
        "led in HH",
        "learners",
        "batch"
    );

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Mutex::new(Window::default()));
    let acknowledged: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, stop, window, acknowledged) = (
            client.clone(),
            stop.clone(),
            window.clone(),
            acknowledged.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let zone = zone_at(started.elapsed(), duration);
                // Strides through the writer's keys of the zone, a get every tenth.
                let key = zone_key(zone, writer, sequence * 7919 % KEYS_PER_WRITER);
                let begun = Instant::now();
                let ok = if !sequence.is_multiple_of(10) {
                    let value = reading(writer, sequence);
                    let written = client.put(&key, &value).await;
                    if written.is_ok() {
                        acknowledged.lock().expect("lock").insert(key, value);
                    }
                    written.is_ok()
                } else {
                    client.get(&key).await.is_ok()
                };
                let mut window = window.lock().expect("lock");
                if ok {
                    window.latencies_us.push(begun.elapsed().as_micros() as u64);
                } else {
                    window.errors += 1;
                }
            }
        }));
    }

    let mut watch = Watch::default();
    let mut samples = Vec::new();
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ticks = tokio::time::interval(TICK);
    ticks.tick().await;
    while started.elapsed() < duration {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut ctrl_c => {
                interrupted = true;
                println!("\nCtrl-C: stopping the load; the summary and cleanup follow.");
                break;
            }
        }
        let at = started.elapsed();
        let taken = std::mem::take(&mut *window.lock().expect("lock"));
        let look = watch.look(endpoints, tls, at.as_secs_f64()).await;
        let sample = Sample {
            at: at.as_secs_f64(),
            zone: zone_at(at, duration),
            ops_per_sec: taken.latencies_us.len() as f64 / TICK.as_secs_f64(),
            p50_ms: percentile_ms(&taken.latencies_us, 0.5),
            p99_ms: percentile_ms(&taken.latencies_us, 0.99),
            errors: taken.errors,
            shards: look.shards,
            leaders_in_hamburg: look.leaders_in_hamburg,
            learners_in_sydney: look.learners_in_sydney,
            ingest_batch: look.ingest_batch,
        };
        println!(
            "{:>4.0}s {:>4} {:>7.0} {:>8.1} {:>8.1} {:>6} {:>6} {:>9} {:>9} {:>7.1}",
            sample.at,
            sample.zone,
            sample.ops_per_sec,
            sample.p50_ms,
            sample.p99_ms,
            sample.errors,
            sample.shards,
            sample.leaders_in_hamburg,
            sample.learners_in_sydney,
            sample.ingest_batch
        );
        for event in &watch.events[look.first_new_event..] {
            println!("       {}", event.text);
        }
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        // A writer ends after its operation under way answers (bounded by the client's
        // request timeout).
        let _ = writer.await;
    }

    println!("\nReading back every key the load wrote...");
    let expected = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    let wrong_keys = read_back(&client, &expected).await?;
    let final_shards = routing_table(endpoints, tls).await?;
    let (ingest, planner) = node_status(endpoints, tls).await;
    Ok(Story {
        console: None,
        samples,
        events: watch.events,
        interrupted,
        checked_keys: expected.len(),
        wrong_keys,
        final_shards,
        ingest,
        planner,
    })
}

/// The keys of `expected` whose value in the cluster differs from it, shown readably.
async fn read_back(client: &Client, expected: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Vec<String>> {
    let mut stored = HashMap::new();
    for zone in 0..ZONES {
        let start = format!("sensor:{zone}:").into_bytes();
        let end = format!("sensor:{zone};").into_bytes();
        let limit = (WRITERS as u64 * KEYS_PER_WRITER) as u32;
        for (key, value) in client.scan(&start, &end, limit, false).await? {
            stored.insert(key, value);
        }
    }
    let mut wrong: Vec<String> = expected
        .iter()
        .filter(|(key, value)| stored.get(*key) != Some(*value))
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect();
    wrong.sort();
    Ok(wrong)
}

/// A token for the console: the user `viewer`, who may only watch (the role `monitor`),
/// logged in with a password nobody else learns.
async fn console_token(endpoints: &[String], tls: &Credentials) -> Result<String> {
    use proto::auth_request::Change;
    // Randomly keyed hashers: a password of 128 unpredictable bits without a crate.
    let random =
        || std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let password = format!("{:016x}{:016x}", random(), random());
    let changes = [
        Change::AddUser("viewer".into()),
        Change::GrantRole(proto::UserRole {
            user: "viewer".into(),
            role: "monitor".into(),
        }),
        Change::SetPassword(proto::UserPassword {
            user: "viewer".into(),
            password: password.clone(),
        }),
    ];
    for change in changes {
        first_answer(endpoints, async |endpoint| {
            let request = proto::AuthRequest {
                change: Some(change.clone()),
            };
            admin(endpoint, tls)?.auth(request).await?;
            Ok(())
        })
        .await?;
    }
    let login = proto::LoginRequest {
        user: "viewer".into(),
        password,
        ttl_ms: 0,
    };
    first_answer(endpoints, async |endpoint| {
        let answer = admin(endpoint, tls)?.login(login.clone()).await?;
        Ok(answer.into_inner().token)
    })
    .await
    .context("logging the console's viewer in")
}

/// The routing table: every shard as the meta shard knows it.
async fn routing_table(endpoints: &[String], tls: &Credentials) -> Result<Vec<proto::ShardStatus>> {
    first_answer(endpoints, async |endpoint| {
        let mut admin = admin(endpoint, tls)?;
        let shards = admin.shards(proto::ShardsRequest {}).await?.into_inner();
        Ok(shards.shards)
    })
    .await
}

async fn transfer_leader(
    endpoints: &[String],
    tls: &Credentials,
    shard: u64,
    to: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let moved = first_answer(endpoints, async |endpoint| {
            let mut admin = admin(endpoint, tls)?;
            let request = proto::TransferLeaderRequest {
                shard_id: shard,
                to_node: to,
            };
            admin.transfer_leader(request).await?;
            Ok(())
        })
        .await;
        match moved {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("moving shard {shard}'s leader to node {to}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The ingest actors' counters summed over the nodes, and the planner's status from the
/// node that runs it.
async fn node_status(
    endpoints: &[String],
    tls: &Credentials,
) -> (IngestTotals, Option<proto::PlannerStatus>) {
    let mut totals = IngestTotals::default();
    let mut planner = None;
    for endpoint in endpoints {
        let Ok(mut admin) = admin(endpoint, tls) else {
            continue;
        };
        let Ok(status) = admin.status(proto::StatusRequest {}).await else {
            continue;
        };
        let status = status.into_inner();
        if let Some(ingest) = status.ingest {
            totals.writes += ingest.writes;
            totals.batches += ingest.batches;
            totals.largest = totals.largest.max(ingest.largest_batch);
            totals.waited_micros += ingest.waited_micros;
        }
        if status.planner.is_some() {
            planner = status.planner;
        }
    }
    (totals, planner)
}

/// What the live view remembers between ticks.
#[derive(Default)]
struct Watch {
    shards: BTreeMap<u64, proto::ShardStatus>,
    ingest: IngestTotals,
    events: Vec<Event>,
}

/// What one look at the cluster found.
struct Look {
    shards: usize,
    leaders_in_hamburg: usize,
    learners_in_sydney: usize,
    ingest_batch: f64,
    first_new_event: usize,
}

impl Watch {
    async fn look(&mut self, endpoints: &[String], tls: &Credentials, at: f64) -> Look {
        let first_new_event = self.events.len();
        let (ingest, _) = node_status(endpoints, tls).await;
        let ingest_batch = (ingest.writes.saturating_sub(self.ingest.writes)) as f64
            / (ingest.batches.saturating_sub(self.ingest.batches)).max(1) as f64;
        self.ingest = ingest;
        if let Ok(table) = routing_table(endpoints, tls).await {
            let now: BTreeMap<u64, proto::ShardStatus> = table
                .into_iter()
                .filter_map(|s| Some((s.descriptor.as_ref()?.id, s)))
                .collect();
            if !self.shards.is_empty() {
                self.diff(&now, at);
            }
            self.shards = now;
        }
        let data: Vec<&proto::ShardStatus> = self.shards.values().filter(|s| !is_meta(s)).collect();
        Look {
            shards: data.len(),
            leaders_in_hamburg: data
                .iter()
                .filter(|s| s.leader_region == "eu-hamburg")
                .count(),
            learners_in_sydney: data
                .iter()
                .filter(|s| {
                    s.descriptor.as_ref().is_some_and(|d| {
                        d.replicas.iter().any(|r| {
                            r.region == "au-sydney" && r.role == proto::ReplicaRole::Learner as i32
                        })
                    })
                })
                .count(),
            ingest_batch,
            first_new_event,
        }
    }

    fn event(&mut self, at: f64, kind: EventKind, text: String) {
        self.events.push(Event { at, kind, text });
    }

    /// Splits, merges and leader moves between the last table and `now`.
    fn diff(&mut self, now: &BTreeMap<u64, proto::ShardStatus>, at: f64) {
        let before = std::mem::take(&mut self.shards);
        for (id, shard) in now {
            let Some(d) = &shard.descriptor else { continue };
            match before.get(id) {
                None => {
                    // A split keeps the left part in the parent: its left neighbour now.
                    let parent = now
                        .values()
                        .filter_map(|s| s.descriptor.as_ref())
                        .find(|left| left.end == d.start)
                        .map_or("a shard".to_string(), |left| format!("shard {}", left.id));
                    self.event(
                        at,
                        EventKind::Split,
                        format!(
                            "split: {parent} gave {} to new shard {id}",
                            display::range(&d.start, &d.end)
                        ),
                    );
                }
                Some(old) if old.leader_node != shard.leader_node && shard.leader_node != 0 => {
                    self.event(
                        at,
                        EventKind::LeaderMove,
                        format!(
                            "leader of shard {id}: node {} ({}) -> node {} ({})",
                            old.leader_node,
                            old.leader_region,
                            shard.leader_node,
                            shard.leader_region
                        ),
                    );
                }
                _ => {}
            }
        }
        for (id, old) in &before {
            if !now.contains_key(id) {
                let range = old
                    .descriptor
                    .as_ref()
                    .map_or(String::new(), |d| display::range(&d.start, &d.end));
                self.event(
                    at,
                    EventKind::Merge,
                    format!("merge: shard {id} {range} joined its left neighbour"),
                );
            }
        }
    }
}

/// The meta shard holds the routing table, not data; it is left out of the counts.
fn is_meta(shard: &proto::ShardStatus) -> bool {
    shard
        .descriptor
        .as_ref()
        .is_some_and(|d| d.id == hanse_shard::meta::META_SHARD)
}

fn percentile_ms(latencies_us: &[u64], q: f64) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Throughput and latency over the samples in `range` (seconds into the load).
fn period(samples: &[Sample], from: f64, to: f64) -> (f64, f64, f64) {
    let chosen: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > from && s.at <= to)
        .collect();
    let n = chosen.len().max(1) as f64;
    (
        chosen.iter().map(|s| s.ops_per_sec).sum::<f64>() / n,
        chosen.iter().map(|s| s.p50_ms).sum::<f64>() / n,
        chosen.iter().map(|s| s.p99_ms).sum::<f64>() / n,
    )
}

fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

fn summary_lines(story: &Story) -> Vec<String> {
    let end = story.samples.last().map_or(0.0, |s| s.at);
    let (before_ops, before_p50, before_p99) = period(&story.samples, 0.0, 10.0);
    let (after_ops, after_p50, after_p99) = period(&story.samples, end - 10.0, end);
    let errors: u64 = story.samples.iter().map(|s| s.errors).sum();
    let mut lines = vec![
        format!(
            "first 10 s (leaders in ap-china): {before_ops:.0} ops/s, p50 {before_p50:.1} ms, p99 {before_p99:.1} ms"
        ),
        format!(
            "last 10 s: {after_ops:.0} ops/s, p50 {after_p50:.1} ms, p99 {after_p99:.1} ms ({:.1}x the throughput)",
            after_ops / before_ops.max(1.0)
        ),
        format!(
            "{errors} operations failed; splits {}, merges {}, leader moves {}",
            count(&story.events, EventKind::Split),
            count(&story.events, EventKind::Merge),
            count(&story.events, EventKind::LeaderMove)
        ),
    ];
    let data: Vec<&proto::ShardStatus> =
        story.final_shards.iter().filter(|s| !is_meta(s)).collect();
    lines.push(format!(
        "at the end: {} data shards, {} led from eu-hamburg; {} with a learner in au-sydney",
        data.len(),
        data.iter()
            .filter(|s| s.leader_region == "eu-hamburg")
            .count(),
        data.iter()
            .filter(|s| s
                .descriptor
                .as_ref()
                .is_some_and(|d| d.replicas.iter().any(
                    |r| r.region == "au-sydney" && r.role == proto::ReplicaRole::Learner as i32
                )))
            .count()
    ));
    lines.push(format!(
        "ingest (eu-hamburg): {} writes in {} log entries, {:.1} per entry on average, largest {}, mean wait {:.2} ms",
        story.ingest.writes,
        story.ingest.batches,
        story.ingest.mean_batch(),
        story.ingest.largest,
        story.ingest.waited_micros as f64 / story.ingest.writes.max(1) as f64 / 1000.0
    ));
    if let Some(planner) = &story.planner {
        let why = match planner.mode.as_str() {
            "heuristic" => " (the tuned heuristic by default: in the simulator and in the \
                 real-cluster A/B the trained network has not yet shown itself at least as \
                 good, see docs/planner.md; --planner model runs it)"
                .to_string(),
            "model" => format!(
                " (the network's input lay outside what it was trained on, and the size \
                 rule alone decided, in {} of them)",
                planner.fallback_ticks
            ),
            _ => String::new(),
        };
        lines.push(format!(
            "planner: {} ticks, the last decided by {}{why}",
            planner.ticks, planner.acting
        ));
    }
    lines.push(if story.wrong_keys.is_empty() {
        format!(
            "every acknowledged write read back: {} keys checked",
            story.checked_keys
        )
    } else {
        format!(
            "{} of {} keys do NOT hold their last acknowledged value, e.g. {}",
            story.wrong_keys.len(),
            story.checked_keys,
            story.wrong_keys[0]
        )
    });
    if story.interrupted {
        lines.push("(interrupted by Ctrl-C before the planned end)".into());
    }
    lines
}

fn print_summary(story: &Story) {
    println!("\nSummary");
    for line in summary_lines(story) {
        println!("  {line}");
    }
}

/// Writes `index.html` and its charts into `dir`; answers the page's path.
fn write_report(dir: &Path, story: &Story) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let series = |name: &str, value: fn(&Sample) -> f64| Series {
        name: name.to_string(),
        points: story.samples.iter().map(|s| (s.at, value(s))).collect(),
    };
    let charts = [
        (
            "throughput.png",
            line_chart(
                "Hamburg load",
                "seconds",
                "ops/s",
                &[series("ops/s", |s| s.ops_per_sec)],
            ),
        ),
        (
            "latency.png",
            line_chart(
                "latency",
                "seconds",
                "ms",
                &[series("p50", |s| s.p50_ms), series("p99", |s| s.p99_ms)],
            ),
        ),
        (
            "shards.png",
            line_chart(
                "shards",
                "seconds",
                "count",
                &[
                    series("data shards", |s| s.shards as f64),
                    series("led from eu-hamburg", |s| s.leaders_in_hamburg as f64),
                    series("hotspot zone", |s| s.zone as f64),
                ],
            ),
        ),
        (
            "ingest.png",
            line_chart(
                "ingest batches",
                "seconds",
                "writes per log entry",
                &[series("mean batch", |s| s.ingest_batch)],
            ),
        ),
    ];
    let mut html = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>Hanse demo</title>\n\
         <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}li{margin:.2em 0}</style>\n\
         <h1>Hanse demo</h1>\n<p>Four nodes in eu-hamburg (2), ap-china and au-sydney, round trips ",
    );
    html += &format!(
        "{}; a write-heavy load from eu-hamburg whose hotspot moves.</p>\n<h2>Summary</h2>\n<ul>\n",
        escape(LATENCY)
    );
    for line in summary_lines(story) {
        html += &format!("<li>{}</li>\n", escape(&line));
    }
    html += "</ul>\n";
    if let Some(console) = &story.console {
        html += &format!(
            "<p>While the cluster ran, its web console was at <a href=\"{0}\">{0}</a> (the \
             demo printed a token for it).</p>\n",
            escape(console)
        );
    }
    for (name, png) in &charts {
        std::fs::write(dir.join(name), png)?;
        html += &format!("<p><img src=\"{name}\" width=\"960\"></p>\n");
    }
    html += "<h2>What the cluster did</h2>\n<ul>\n";
    for event in &story.events {
        html += &format!("<li>{:.0} s: {}</li>\n", event.at, escape(&event.text));
    }
    html += "</ul>\n";
    let page = dir.join("index.html");
    std::fs::write(&page, html)?;
    Ok(page)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hotspot_visits_every_zone_in_order() {
        let duration = Duration::from_secs(100);
        let zones: Vec<u64> = (0..100)
            .map(|s| zone_at(Duration::from_secs(s), duration))
            .collect();
        assert_eq!(zones[0], 0);
        assert_eq!(zones[99], ZONES - 1);
        assert!(zones.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        assert_eq!(zone_at(Duration::from_secs(500), duration), ZONES - 1);
    }

    fn shard(id: u64, start: &[u8], end: &[u8], leader: u64) -> proto::ShardStatus {
        proto::ShardStatus {
            descriptor: Some(proto::ShardDescriptor {
                id,
                start: start.to_vec(),
                end: end.to_vec(),
                ..Default::default()
            }),
            leader_node: leader,
            leader_region: format!("region-of-{leader}"),
            ..Default::default()
        }
    }

    fn table(shards: &[proto::ShardStatus]) -> BTreeMap<u64, proto::ShardStatus> {
        shards
            .iter()
            .map(|s| (s.descriptor.as_ref().unwrap().id, s.clone()))
            .collect()
    }

    #[test]
    fn the_watch_names_splits_merges_and_leader_moves() {
        let mut watch = Watch {
            shards: table(&[shard(0, b"\xff", b"", 1), shard(1, b"", b"\xff", 2)]),
            ..Watch::default()
        };
        let split = table(&[
            shard(0, b"\xff", b"", 1),
            shard(1, b"", b"m", 1),
            shard(7, b"m", b"\xff", 1),
        ]);
        watch.diff(&split, 1.0);
        watch.shards = split;
        let merged = table(&[shard(0, b"\xff", b"", 1), shard(1, b"", b"\xff", 1)]);
        watch.diff(&merged, 2.0);
        let texts: Vec<&str> = watch.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "leader of shard 1: node 2 (region-of-2) -> node 1 (region-of-1)",
                "split: shard 1 gave [m, \\xff) to new shard 7",
                "merge: shard 7 [m, \\xff) joined its left neighbour",
            ]
        );
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let latencies: Vec<u64> = (1..=100).rev().map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&latencies, 0.5), 51.0);
        assert_eq!(percentile_ms(&latencies, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}
