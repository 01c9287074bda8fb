//! The load generator: closed-loop clients against a running cluster, latency in an HDR
//! histogram, and optionally the failover gap around a SIGKILL of the leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hanse_client::{Client, ClientError};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rocksdb::{DB, WriteOptions};

use crate::peers::PgPool;

/// What the load generator drives.
#[derive(Clone)]
pub enum Target {
    /// A running cluster, through the client SDK.
    Cluster(Arc<Client>),
    /// The embedded mode: a `hanse::Db` in this process (writes synced, as by default).
    Embedded(Arc<hanse::Db>),
    /// Raw RocksDB with synced writes: the embedded mode's baseline.
    RocksDb(Arc<DB>),
    /// An etcd cluster (linearizable reads, etcd's default).
    Etcd(Arc<etcd_client::Client>),
    /// PostgreSQL's `kv` table through a pool of connections.
    Postgres(Arc<PgPool>),
}

/// Why one operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Embedded(#[from] hanse::Error),
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the store's worker thread failed: {0}")]
    Worker(String),
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, TargetError> + Send + 'static,
) -> Result<T, TargetError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| TargetError::Worker(e.to_string()))?
}

impl Target {
    /// The value of `key`; a cluster may serve it from a follower within `max_staleness`.
    pub async fn get(
        &self,
        key: Vec<u8>,
        max_staleness: Duration,
    ) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(match self {
            Target::Cluster(client) => client.get_stale(&key, max_staleness).await?.value,
            Target::Embedded(db) => {
                let db = db.clone();
                blocking(move || Ok(db.get(&key)?)).await?
            }
            Target::RocksDb(db) => {
                let db = db.clone();
                blocking(move || Ok(db.get(&key)?)).await?
            }
            Target::Etcd(client) => {
                let found = client.kv_client().get(key, None).await?;
                found.kvs().first().map(|pair| pair.value().to_vec())
            }
            Target::Postgres(pool) => pool.get(&key).await?,
        })
    }

    /// Writes `key`; durable when it returns.
    pub async fn put(&self, key: Vec<u8>, value: Arc<[u8]>) -> Result<(), TargetError> {
        match self {
            Target::Cluster(client) => client.put(&key, &value).await?,
            Target::Embedded(db) => {
                let db = db.clone();
                blocking(move || Ok(db.put(&key, &value)?)).await?;
            }
            Target::RocksDb(db) => {
                let db = db.clone();
                blocking(move || {
                    let mut synced = WriteOptions::default();
                    synced.set_sync(true);
                    Ok(db.put_opt(&key, &*value, &synced)?)
                })
                .await?;
            }
            Target::Etcd(client) => {
                client.kv_client().put(key, value.to_vec(), None).await?;
            }
            Target::Postgres(pool) => pool.put(&key, &value).await?,
        }
        Ok(())
    }

    /// How many pairs (at most `limit`) there are from `start` on.
    pub async fn scan(&self, start: Vec<u8>, limit: u32) -> Result<usize, TargetError> {
        Ok(match self {
            Target::Cluster(client) => client.scan(&start, SCAN_END, limit, false).await?.len(),
            Target::Embedded(db) => {
                let db = db.clone();
                blocking(move || Ok(db.scan(start..SCAN_END.to_vec(), limit as usize)?.len()))
                    .await?
            }
            Target::RocksDb(db) => {
                let db = db.clone();
                blocking(move || {
                    let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
                    let mut found = 0;
                    for pair in db.iterator(mode).take(limit as usize) {
                        pair?;
                        found += 1;
                    }
                    Ok(found)
                })
                .await?
            }
            Target::Etcd(client) => {
                let range = etcd_client::GetOptions::new()
                    .with_range(SCAN_END)
                    .with_limit(limit.into());
                client
                    .kv_client()
                    .get(start, Some(range))
                    .await?
                    .kvs()
                    .len()
            }
            Target::Postgres(pool) => pool.scan(&start, SCAN_END, limit).await?.len(),
        })
    }
}

/// What each client does per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Puts only.
    Write,
    /// Linearizable gets only (YCSB C; keys are loaded first).
    #[value(alias = "ycsb-c")]
    Read,
    /// Half gets, half puts (YCSB A).
    #[value(alias = "ycsb-a")]
    Mixed,
    /// 95 % gets, 5 % puts (YCSB B).
    YcsbB,
    /// 95 % short scans (1 to 100 keys from a chosen one), 5 % inserts of new keys
    /// (YCSB E).
    YcsbE,
    /// The Hamburg hotspot: 90 % puts, 10 % gets, on Zipfian keys (θ = 0.99) whose hot
    /// end is one contiguous range (run it with `--region eu-hamburg`).
    Hot,
}

/// How keys are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    Uniform,
    /// YCSB's scrambled Zipfian (θ = 0.99): a few hot keys spread over the key space.
    Zipfian,
}

/// The operation a client runs next.
pub enum Op {
    Get,
    Put,
    Scan { limit: u32 },
    Insert,
}

impl Workload {
    fn next(self, rng: &mut impl Rng) -> Op {
        let roll: f64 = rng.random();
        match self {
            Workload::Write => Op::Put,
            Workload::Read => Op::Get,
            Workload::Mixed if roll < 0.5 => Op::Get,
            Workload::Mixed => Op::Put,
            Workload::YcsbB if roll < 0.95 => Op::Get,
            Workload::YcsbB => Op::Put,
            Workload::YcsbE if roll < 0.95 => Op::Scan {
                limit: rng.random_range(1..=100),
            },
            Workload::YcsbE => Op::Insert,
            Workload::Hot if roll < 0.9 => Op::Put,
            Workload::Hot => Op::Get,
        }
    }

    /// Whether the keys must exist before the run.
    pub fn reads(self) -> bool {
        self != Workload::Write
    }
}

/// Zipfian ranks in `[0, n)` with exponent θ, as YCSB draws them (Gray et al., "Quickly
/// generating billion-record synthetic databases"): rank 0 is the most frequent.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let (zeta_2, zeta_n) = (zeta(2), zeta(n.max(1)));
        let n = n.max(1) as f64;
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta: (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        let rank = if uz < 1.0 {
            0.0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1.0
        } else {
            self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)
        };
        (rank as u64).min(self.n as u64 - 1)
    }
}

/// YCSB's θ.
const ZIPF_THETA: f64 = 0.99;

/// Picks the keys of a run.
struct Keys {
    count: u64,
    zipf: Option<Zipf>,
    /// Spread the hot ranks over the key space (YCSB), or keep them together (a hotspot).
    scramble: bool,
}

impl Keys {
    fn of(spec: &LoadSpec) -> Keys {
        let zipfian = spec.distribution == Distribution::Zipfian || spec.workload == Workload::Hot;
        Keys {
            count: spec.key_count,
            zipf: zipfian.then(|| Zipf::new(spec.key_count, ZIPF_THETA)),
            scramble: spec.workload != Workload::Hot,
        }
    }

    fn pick(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.count),
            Some(zipf) if self.scramble => fnv(zipf.sample(rng)) % self.count,
            Some(zipf) => zipf.sample(rng),
        }
    }
}

/// FNV-1a of `n`'s bytes: YCSB's scrambling of Zipfian ranks.
fn fnv(n: u64) -> u64 {
    n.to_le_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, b| {
            (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub workload: Workload,
    pub clients: usize,
    /// Stop after this many operations...
    pub ops: u64,
    /// ...or after this long, whichever comes first.
    pub duration: Duration,
    pub key_count: u64,
    pub value_size: usize,
    pub seed: u64,
    /// Reads may be served by any replica that keeps to this bound (follower reads);
    /// zero reads linearizably from the leader.
    pub max_staleness: Duration,
    pub distribution: Distribution,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of successful operations, in microseconds.
    pub latency_us: Histogram<u64>,
    /// The longest time without any acknowledgement, from the last one before the fault
    /// on: how long the cluster stopped answering.
    pub failover: Option<Duration>,
}

impl LoadReport {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// A fault to inject during the run: `inject` is called once, `after` into the run.
pub struct Fault {
    pub after: Duration,
    pub inject: Box<dyn FnOnce() -> Result<(), String> + Send>,
}

/// The key of record `i` of a load (they sort by `i`).
pub fn load_key(i: u64) -> Vec<u8> {
    format!("load{i:012}").into_bytes()
}

/// Where scans stop: past every key the generator writes.
const SCAN_END: &[u8] = b"load~";

/// Writes every key once, so reads find values.
pub async fn preload(
    target: &Target,
    spec: &LoadSpec,
    progress: impl Fn(u64),
) -> Result<(), TargetError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..spec.clients {
        let (target, next) = (target.clone(), next.clone());
        let value: Arc<[u8]> = vec![b'v'; spec.value_size].into();
        let key_count = spec.key_count;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= key_count {
                    return Ok::<(), TargetError>(());
                }
                target.put(load_key(i), value.clone()).await?;
            }
        }));
    }
    while tasks.iter().any(|t| !t.is_finished()) {
        progress(next.load(Ordering::Relaxed).min(spec.key_count));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        task.await.expect("preload task panicked")?;
    }
    Ok(())
}

/// Runs `op` on key `k`.
async fn operate(
    target: &Target,
    spec: &LoadSpec,
    op: Op,
    k: Vec<u8>,
    value: &Arc<[u8]>,
    inserted: &AtomicU64,
) -> Result<(), TargetError> {
    match op {
        Op::Get => target.get(k, spec.max_staleness).await.map(drop),
        Op::Put => target.put(k, value.clone()).await,
        Op::Scan { limit } => target.scan(k, limit).await.map(drop),
        Op::Insert => {
            let new = load_key(spec.key_count + inserted.fetch_add(1, Ordering::Relaxed));
            target.put(new, value.clone()).await
        }
    }
}

/// Runs `spec` at a fixed rate (an open loop): operation i is due `i / rate` seconds in,
/// whether or not earlier ones have answered, with at most `spec.clients` under way; its
/// latency counts from when it was due, so a stall shows in every operation it delayed
/// (no coordinated omission).
pub async fn run_at_rate(
    target: Target,
    spec: &LoadSpec,
    rate: f64,
    progress: impl Fn(u64),
) -> LoadReport {
    let keys = Keys::of(spec);
    let draw = |_: f64, rng: &mut rand::rngs::StdRng| Due {
        target: 0,
        record: keys.pick(rng),
        op: spec.workload.next(rng),
    };
    open_loop(&[target], spec, rate, draw, progress).await.0
}

/// One operation of an open loop: the target that serves it (one per client region),
/// what it does, and the record it names.
pub struct Due {
    pub target: usize,
    pub op: Op,
    pub record: u64,
}

/// The open loop of [`run_at_rate`] over several targets: `draw` answers each operation,
/// given how far into `spec.duration` it is due (0 to 1). Answers the whole run's report
/// and each target's latency.
pub async fn open_loop(
    targets: &[Target],
    spec: &LoadSpec,
    rate: f64,
    mut draw: impl FnMut(f64, &mut rand::rngs::StdRng) -> Due,
    progress: impl Fn(u64),
) -> (LoadReport, Vec<Histogram<u64>>) {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(f64::MIN_POSITIVE));
    let slots = Arc::new(tokio::sync::Semaphore::new(spec.clients));
    let histogram =
        || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let latency = Arc::new(Mutex::new(vec![histogram(); targets.len()]));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let inserted = Arc::new(AtomicU64::new(0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let value: Arc<[u8]> = vec![b'x'; spec.value_size].into();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.ops {
        let offset = interval.mul_f64(i as f64);
        // An overloaded loop falls behind its schedule: it stops at the end of the run
        // all the same, and what it could not issue is not counted.
        if offset > spec.duration || started.elapsed() > spec.duration {
            break;
        }
        let due = started + offset;
        tokio::time::sleep_until(due.into()).await;
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        if i % 64 == 0 {
            progress(done.load(Ordering::Relaxed));
        }
        let at = offset.as_secs_f64() / spec.duration.as_secs_f64().max(f64::EPSILON);
        let Due { target, op, record } = draw(at, &mut rng);
        let k = load_key(record);
        let (spec, value) = (spec.clone(), value.clone());
        let client = targets[target].clone();
        let (latency, done, errors, inserted) = (
            latency.clone(),
            done.clone(),
            errors.clone(),
            inserted.clone(),
        );
        tasks.spawn(async move {
            match operate(&client, &spec, op, k, &value, &inserted).await {
                Ok(()) => {
                    let micros = due.elapsed().as_micros().max(1) as u64;
                    let _ = latency.lock().expect("latency lock")[target].record(micros);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(slot);
        });
    }
    while tasks.join_next().await.is_some() {}
    let by_target = std::mem::take(&mut *latency.lock().expect("latency lock"));
    let mut latency_us = histogram();
    for h in &by_target {
        latency_us.add(h).expect("same bounds");
    }
    let report = LoadReport {
        ops: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency_us,
        failover: None,
    };
    (report, by_target)
}

/// Runs `spec` against `target`, injecting `fault` if given; `progress` hears the
/// operation count a few times a second.
pub async fn run(
    target: Target,
    spec: &LoadSpec,
    fault: Option<Fault>,
    progress: impl Fn(u64),
) -> LoadReport {
    let started = Instant::now();
    let deadline = started + spec.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // New keys YCSB E inserted, numbered after the loaded ones.
    let inserted = Arc::new(AtomicU64::new(0));
    // Acknowledgement times in nanoseconds since the start, around the fault.
    let fault_at = Arc::new(AtomicU64::new(u64::MAX));
    let last_before = Arc::new(AtomicU64::new(0));
    let acks_after = Arc::new(Mutex::new(Vec::new()));

    let mut tasks = Vec::new();
    for worker in 0..spec.clients {
        let (target, issued, done, errors) =
            (target.clone(), issued.clone(), done.clone(), errors.clone());
        let (fault_at, last_before, acks_after) =
            (fault_at.clone(), last_before.clone(), acks_after.clone());
        let inserted = inserted.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ worker as u64);
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let value: Arc<[u8]> = vec![b'x'; spec.value_size].into();
            let keys = Keys::of(&spec);
            while issued.fetch_add(1, Ordering::Relaxed) < spec.ops && Instant::now() < deadline {
                let k = load_key(keys.pick(&mut rng));
                let op = spec.workload.next(&mut rng);
                let t = Instant::now();
                let outcome = operate(&target, &spec, op, k, &value, &inserted).await;
                match outcome {
                    Ok(()) => {
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                        let acked = started.elapsed().as_nanos() as u64;
                        if acked < fault_at.load(Ordering::Relaxed) {
                            last_before.fetch_max(acked, Ordering::Relaxed);
                        } else {
                            acks_after.lock().expect("acks lock").push(acked);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latency
        }));
    }
    let mut fault = fault;
    while tasks.iter().any(|t| !t.is_finished()) {
        if let Some(f) = fault.take_if(|f| started.elapsed() >= f.after) {
            fault_at.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if let Err(e) = (f.inject)() {
                eprintln!("fault injection failed: {e}");
            }
        }
        progress(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for task in tasks {
        latency_us
            .add(task.await.expect("load task panicked"))
            .expect("same bounds");
    }
    let elapsed = started.elapsed();
    let failover = (fault_at.load(Ordering::Relaxed) != u64::MAX).then(|| {
        let mut acks = std::mem::take(&mut *acks_after.lock().expect("acks lock"));
        acks.push(last_before.load(Ordering::Relaxed));
        longest_gap(acks)
    });
    LoadReport {
        ops: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency_us,
        failover,
    }
}

/// The longest interval between consecutive timestamps (nanoseconds).
fn longest_gap(mut times: Vec<u64>) -> Duration {
    times.sort_unstable();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Duration::from_nanos(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_ranks_stay_in_range_and_the_first_is_by_far_the_most_frequent() {
        let zipf = Zipf::new(1_000, ZIPF_THETA);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = vec![0u64; 1_000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        // 1/ζ(1000) of the draws, about 13 %, against 0.1 % for a uniform pick.
        assert!(counts[0] > 10_000, "rank 0 drawn {} times", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        let mut again = rand::rngs::StdRng::seed_from_u64(1);
        let replay: Vec<u64> = (0..10).map(|_| zipf.sample(&mut again)).collect();
        let mut first = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            replay,
            (0..10).map(|_| zipf.sample(&mut first)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_workload_runs_its_mix() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let share = |workload: Workload, rng: &mut rand::rngs::StdRng| {
            let ops: Vec<Op> = (0..10_000).map(|_| workload.next(rng)).collect();
            let of = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count() as f64 / 1e4;
            (
                of(|o| matches!(o, Op::Get)),
                of(|o| matches!(o, Op::Put)),
                of(|o| matches!(o, Op::Scan { limit } if (1..=100).contains(limit))),
                of(|o| matches!(o, Op::Insert)),
            )
        };
        let near = |got: f64, want: f64| (got - want).abs() < 0.02;
        let (get, put, _, _) = share(Workload::YcsbB, &mut rng);
        assert!(near(get, 0.95) && near(put, 0.05), "{get} {put}");
        let (_, _, scan, insert) = share(Workload::YcsbE, &mut rng);
        assert!(near(scan, 0.95) && near(insert, 0.05), "{scan} {insert}");
        let (get, put, _, _) = share(Workload::Hot, &mut rng);
        assert!(near(get, 0.1) && near(put, 0.9), "{get} {put}");
        let (get, put, _, _) = share(Workload::Mixed, &mut rng);
        assert!(near(get, 0.5) && near(put, 0.5), "{get} {put}");
    }

    #[test]
    fn the_hotspot_keeps_its_hot_keys_together_and_ycsb_spreads_them() {
        let spec = |workload, distribution| LoadSpec {
            workload,
            clients: 1,
            ops: 1,
            duration: Duration::from_secs(1),
            key_count: 10_000,
            value_size: 1,
            seed: 0,
            max_staleness: Duration::ZERO,
            distribution,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let hot = Keys::of(&spec(Workload::Hot, Distribution::Uniform));
        let low = (0..10_000).filter(|_| hot.pick(&mut rng) < 100).count();
        assert!(low > 5_000, "the hot end holds most draws: {low}");
        let spread = Keys::of(&spec(Workload::Mixed, Distribution::Zipfian));
        let low = (0..10_000).filter(|_| spread.pick(&mut rng) < 100).count();
        assert!(low < 2_000, "YCSB scrambles its hot keys: {low}");
    }

    #[test]
    fn the_failover_gap_is_the_longest_silence() {
        let ms = |v: u64| v * 1_000_000;
        assert_eq!(
            longest_gap(vec![ms(5), ms(1), ms(2), ms(1500), ms(1501)]),
            Duration::from_millis(1495)
        );
        assert_eq!(longest_gap(vec![ms(3)]), Duration::ZERO);
    }
}
