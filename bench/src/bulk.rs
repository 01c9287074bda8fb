//! `hanse bench bulk`: many small keys into a fresh local 3-node cluster through the bulk
//! path (`Kv.Ingest`: sorted pairs that every replica ingests as one file through the
//! shard's log), against the plain write path on the same cluster: single puts and
//! batches from concurrent clients, run after the load. It waits until size-based splits
//! brought every shard under the split size, checks a sample of the loaded keys, and
//! measures linearizable reads over them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanse_client::proto::admin_client::AdminClient;
use hanse_client::{BatchWrite, Client, ClientError, ClientOptions};
use hanse_node::units::{parse_duration, parse_size};
use rand::Rng;

use crate::compare::LocalCluster;
use crate::load::{self, Distribution, LoadSpec, Target, Workload, load_key};
use crate::scale::{node_pids, per_node, rss_mib, shard_table};

/// What one bulk run does (`hanse bench bulk`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct BulkSpec {
    /// Keys the bulk path loads (`load000000000000` on, 16 bytes each).
    #[arg(long, default_value_t = 10_000_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 32)]
    pub value_size: usize,
    /// Loaders at once, each over its own contiguous share of the keys, in key order.
    #[arg(long, default_value_t = 4)]
    pub loaders: u64,
    /// Pairs each loader hands to one `Client::ingest` call.
    #[arg(long, default_value_t = 100_000)]
    pub chunk: u64,
    /// How long each plain write path (single puts, then batches) runs before the load.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "20s")]
    pub write: Duration,
    /// Concurrent clients of the plain write paths and the reads.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Keys in one batch of the batched write path.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// The cluster's split size (`hanse cluster up --split-size`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    pub split_size: u64,
    /// How long linearizable reads run over the loaded keys afterwards.
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "10s")]
    pub read: Duration,
    /// The port the local cluster's nodes listen on.
    #[arg(long, default_value_t = 7670)]
    pub port: u16,
}

/// What one bulk run measured.
#[derive(Debug, Clone)]
pub struct BulkReport {
    pub keys: u64,
    pub value_size: usize,
    pub loaders: u64,
    pub split_size_bytes: u64,
    /// Keys per second of single puts from `clients` clients.
    pub put_keys_per_sec: f64,
    /// Keys per second of batches of `batch` keys from `clients` clients.
    pub batch_keys_per_sec: f64,
    pub batch: u64,
    pub clients: usize,
    /// The bulk load: keys per second and MiB of keys and values per second.
    pub bulk_keys_per_sec: f64,
    pub bulk_mib_per_sec: f64,
    pub bulk_secs: f64,
    /// Ingest calls that failed and were sent again.
    pub bulk_retries: u64,
    /// From the end of the load until every shard was under the split size.
    pub settle_secs: Option<f64>,
    pub shards: usize,
    pub largest_shard_bytes: u64,
    /// Sampled loaded keys read back with a value other than the one loaded (or none).
    pub wrong_reads: u64,
    pub read_ops_per_sec: f64,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
    pub read_errors: u64,
    /// Each node's data directory and resident memory after the load.
    pub disk_gib: Vec<f64>,
    pub rss_mib: Vec<f64>,
}

/// The value loaded for key `i`: `size` bytes that name `i`, so a read can check it.
pub fn bulk_value(i: u64, size: usize) -> Vec<u8> {
    let mut value = format!("{i:x}-").into_bytes();
    value.resize(size.max(value.len()), b'v');
    value
}

/// Runs `spec` on a fresh cluster; `progress` hears each phase.
pub fn run(spec: &BulkSpec, progress: impl Fn(&str)) -> Result<BulkReport, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _inside = runtime.enter();
    let split_size = spec.split_size.to_string();
    let cluster = LocalCluster::start_with(spec.port, ["--split-size", split_size.as_str()])?;
    let tls = cluster.root_tls()?;
    let client = Arc::new(
        Client::new(
            cluster.endpoints(),
            ClientOptions {
                tls: tls.clone(),
                ..ClientOptions::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let channel = hanse_client::connect(&cluster.endpoints()[0], tls).map_err(|e| e.to_string())?;
    let admin = AdminClient::new(channel).max_decoding_message_size(64 << 20);

    // The bulk load comes first, into the empty key range, as an import of a new
    // table would: its files land in the bottom level rather than above earlier writes.
    progress(&format!(
        "bulk loading {} keys with {} loaders",
        spec.keys, spec.loaders
    ));
    let started = Instant::now();
    let retries = runtime.block_on(bulk_load(&client, spec))?;
    let bulk_secs = started.elapsed().as_secs_f64();
    let bytes = spec.keys as f64 * (load_key(0).len() + spec.value_size) as f64;

    progress("waiting until every shard is under the split size");
    let settled = Instant::now();
    let (shards, largest, under) = runtime.block_on(until_split(&admin, spec.split_size))?;
    let settle_secs = under.then(|| settled.elapsed().as_secs_f64());

    progress("checking a sample of the loaded keys");
    let wrong_reads = runtime.block_on(check_sample(&client, spec));

    progress(&format!("single puts for {:?}", spec.write));
    let puts = LoadSpec {
        workload: Workload::Write,
        clients: spec.clients,
        ops: u64::MAX,
        duration: spec.write,
        key_count: spec.keys,
        value_size: spec.value_size,
        seed: 11,
        max_staleness: Duration::ZERO,
        distribution: Distribution::Uniform,
    };
    let put_report = runtime.block_on(load::run(
        Target::Cluster(client.clone()),
        &puts,
        None,
        |_| {},
    ));

    progress(&format!(
        "batches of {} keys for {:?}",
        spec.batch, spec.write
    ));
    let batch_keys_per_sec = runtime.block_on(batches(&client, spec));

    progress(&format!("linearizable reads for {:?}", spec.read));
    let reads = LoadSpec {
        workload: Workload::Read,
        duration: spec.read,
        seed: 13,
        ..puts
    };
    let read_report = runtime.block_on(load::run(
        Target::Cluster(client.clone()),
        &reads,
        None,
        |_| {},
    ));
    let dir = cluster.dir();
    let disk_gib = (1..=cluster.endpoints().len())
        .map(|n| tree_bytes(&dir.join(format!("node{n}"))) as f64 / (1u64 << 30) as f64)
        .collect();
    let rss_mib = node_pids(&dir)
        .into_iter()
        .map(|pid| rss_mib(pid).unwrap_or(f64::NAN))
        .collect();
    Ok(BulkReport {
        keys: spec.keys,
        value_size: spec.value_size,
        loaders: spec.loaders,
        split_size_bytes: spec.split_size,
        put_keys_per_sec: put_report.throughput(),
        batch_keys_per_sec,
        batch: spec.batch,
        clients: spec.clients,
        bulk_keys_per_sec: spec.keys as f64 / bulk_secs,
        bulk_mib_per_sec: bytes / bulk_secs / (1 << 20) as f64,
        bulk_secs,
        bulk_retries: retries,
        settle_secs,
        shards,
        largest_shard_bytes: largest,
        wrong_reads,
        read_ops_per_sec: read_report.throughput(),
        read_p50_ms: read_report.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        read_p99_ms: read_report.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        read_errors: read_report.errors,
        disk_gib,
        rss_mib,
    })
}

/// Keys per second that `spec.clients` clients write in batches of `spec.batch` keys,
/// each client in key order within its own range (so a batch stays in one shard but at a
/// shard's edge, where it is refused and not counted).
async fn batches(client: &Arc<Client>, spec: &BulkSpec) -> f64 {
    let written = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + spec.write;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..spec.clients as u64 {
        let (client, written) = (client.clone(), written.clone());
        let (batch, value_size, keys) = (spec.batch, spec.value_size, spec.keys);
        let clients = spec.clients.max(1) as u64;
        tasks.spawn(async move {
            let mut next = writer * (keys / clients);
            while tokio::time::Instant::now() < deadline {
                let writes: Vec<BatchWrite> = (next..next + batch)
                    .map(|i| BatchWrite::Put {
                        key: load_key(i),
                        value: bulk_value(i, value_size),
                    })
                    .collect();
                next += batch;
                if client.batch(&writes).await.is_ok() {
                    written.fetch_add(batch, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Loads every key through the bulk path, `spec.loaders` loaders at once; answers how
/// many calls were sent again.
async fn bulk_load(client: &Arc<Client>, spec: &BulkSpec) -> Result<u64, String> {
    let done = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let loaders = spec.loaders.clamp(1, spec.keys.max(1));
    for loader in 0..loaders {
        let from = spec.keys * loader / loaders;
        let to = spec.keys * (loader + 1) / loaders;
        let (client, done, retries) = (client.clone(), done.clone(), retries.clone());
        let (chunk, value_size) = (spec.chunk.max(1), spec.value_size);
        tasks.spawn(async move {
            let mut at = from;
            while at < to {
                let end = (at + chunk).min(to);
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = (at..end)
                    .map(|i| (load_key(i), bulk_value(i, value_size)))
                    .collect();
                ingest_retrying(&client, &pairs, &retries).await?;
                done.fetch_add(end - at, Ordering::Relaxed);
                at = end;
            }
            Ok::<(), String>(())
        });
    }
    let total = spec.keys;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            finished = tasks.join_next() => match finished {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(e.to_string()),
            },
            _ = ticks.tick() => hanse_node::progress::bar(done.load(Ordering::Relaxed), total),
        }
    }
    hanse_node::progress::bar(total, total);
    hanse_node::progress::end_bar();
    Ok(retries.load(Ordering::Relaxed))
}

/// Ingest calls one chunk may take before the load gives up: a shard waiting for its
/// split answers busy for a few seconds, a call may time out meanwhile.
const INGEST_TRIES_MAX: u64 = 30;

/// Sends `pairs` until they were taken. Sending an ingest again is safe here: nothing
/// else writes these keys meanwhile.
async fn ingest_retrying(
    client: &Client,
    pairs: &[(Vec<u8>, Vec<u8>)],
    retries: &AtomicU64,
) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match client.ingest(pairs).await {
            Ok(()) => return Ok(()),
            Err(e @ (ClientError::InvalidArgument(_) | ClientError::PermissionDenied(_))) => {
                return Err(e.to_string());
            }
            Err(e) if tries + 1 >= INGEST_TRIES_MAX => {
                return Err(format!("an ingest failed {INGEST_TRIES_MAX} times: {e}"));
            }
            Err(_) => {
                tries += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// How long the load's shards may take to come under the split size.
const SETTLE_MAX: Duration = Duration::from_secs(180);

/// Waits until every shard in the routing table is at most `split_size` bytes (as their
/// leaders last measured); answers the number of shards, the largest, and whether they
/// got there within [`SETTLE_MAX`].
async fn until_split(
    admin: &AdminClient<hanse_client::Channel>,
    split_size: u64,
) -> Result<(usize, u64, bool), String> {
    let deadline = Instant::now() + SETTLE_MAX;
    loop {
        // A node busy with the load's compactions may not answer at once.
        let table = match shard_table(admin).await {
            Ok(table) => table,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let largest = table
            .shards
            .iter()
            .filter_map(|s| s.load.as_ref().map(|l| l.size_bytes))
            .max()
            .unwrap_or(0);
        let under = largest <= split_size;
        if under || Instant::now() >= deadline {
            return Ok((table.shards.len(), largest, under));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keys read back in the check after the load.
const SAMPLE_KEYS: u64 = 2_000;

/// Reads a random sample of the loaded keys; answers how many did not hold the loaded
/// value (read before any other write).
async fn check_sample(client: &Client, spec: &BulkSpec) -> u64 {
    let mut wrong = 0;
    let mut rng = rand::rng();
    for _ in 0..SAMPLE_KEYS.min(spec.keys) {
        let i = rng.random_range(0..spec.keys);
        match client.get(&load_key(i)).await {
            Ok(Some(value)) if value == bulk_value(i, spec.value_size) => {}
            _ => wrong += 1,
        }
    }
    wrong
}

/// Bytes of the files under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The report as JSON.
pub fn json(r: &BulkReport) -> serde_json::Value {
    serde_json::json!({
        "keys": r.keys,
        "value_size": r.value_size,
        "loaders": r.loaders,
        "split_size_bytes": r.split_size_bytes,
        "clients": r.clients,
        "batch": r.batch,
        "put_keys_per_sec": r.put_keys_per_sec,
        "batch_keys_per_sec": r.batch_keys_per_sec,
        "bulk_keys_per_sec": r.bulk_keys_per_sec,
        "bulk_mib_per_sec": r.bulk_mib_per_sec,
        "bulk_secs": r.bulk_secs,
        "bulk_retries": r.bulk_retries,
        "settle_secs": r.settle_secs,
        "shards": r.shards,
        "largest_shard_bytes": r.largest_shard_bytes,
        "wrong_reads": r.wrong_reads,
        "read_ops_per_sec": r.read_ops_per_sec,
        "read_p50_ms": r.read_p50_ms,
        "read_p99_ms": r.read_p99_ms,
        "read_errors": r.read_errors,
        "disk_gib": r.disk_gib,
        "rss_mib": r.rss_mib,
    })
}

/// The report as a Markdown table.
pub fn table(report: &BulkReport) -> String {
    let key_bytes = load_key(0).len();
    let ratio = |path: f64| match path > 0.0 {
        true => format!("{:.1}x", report.bulk_keys_per_sec / path),
        false => "-".into(),
    };
    let list = per_node;
    let mut out = format!(
        "{} keys of {key_bytes} bytes with {}-byte values, split size {} MiB\n\n\
         | path | keys/s | bulk is |\n| --- | ---: | ---: |\n",
        report.keys,
        report.value_size,
        report.split_size_bytes >> 20
    );
    out += &format!(
        "| single puts, {} clients | {:.0} | {} |\n",
        report.clients,
        report.put_keys_per_sec,
        ratio(report.put_keys_per_sec)
    );
    out += &format!(
        "| batches of {}, {} clients | {:.0} | {} |\n",
        report.batch,
        report.clients,
        report.batch_keys_per_sec,
        ratio(report.batch_keys_per_sec)
    );
    out += &format!(
        "| bulk ingest, {} loaders | {:.0} ({:.1} MiB/s, {:.0} s, {} calls sent again) | 1.0x |\n\n",
        report.loaders,
        report.bulk_keys_per_sec,
        report.bulk_mib_per_sec,
        report.bulk_secs,
        report.bulk_retries
    );
    let settle = match report.settle_secs {
        Some(secs) => format!("all under the split size {secs:.0} s after the load"),
        None => format!("NOT all under the split size within {SETTLE_MAX:?}"),
    };
    out += &format!(
        "After the load: {} shards, the largest {:.1} MiB ({settle}); {} of {} sampled keys \
         read back wrong; linearizable reads {:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} errors); \
         data directories {} GiB, RSS {} MiB per node.\n",
        report.shards,
        report.largest_shard_bytes as f64 / (1 << 20) as f64,
        report.wrong_reads,
        SAMPLE_KEYS.min(report.keys),
        report.read_ops_per_sec,
        report.read_p50_ms,
        report.read_p99_ms,
        report.read_errors,
        list(&report.disk_gib, 2),
        list(&report.rss_mib, 0)
    );
    out
}
