//! The load generator: closed-loop clients against a running cluster, latency in an HDR
//! histogram, and optionally the failover gap around a SIGKILL of the leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hanse_client::{Client, ClientError};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

/// What each client does per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Puts only.
    Write,
    /// Linearizable gets only (keys are loaded first).
    Read,
    /// Half gets, half puts (YCSB A).
    Mixed,
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

fn key(i: u64) -> Vec<u8> {
    format!("load{i:012}").into_bytes()
}

/// Writes every key once, so reads find values.
pub async fn preload(
    client: &Arc<Client>,
    spec: &LoadSpec,
    progress: impl Fn(u64),
) -> Result<(), ClientError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..spec.clients {
        let (client, next, value) = (client.clone(), next.clone(), vec![b'v'; spec.value_size]);
        let key_count = spec.key_count;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= key_count {
                    return Ok::<(), ClientError>(());
                }
                client.put(&key(i), &value).await?;
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

/// Runs `spec` with `client`, injecting `fault` if given; `progress` hears the operation
/// count a few times a second.
pub async fn run(
    client: Arc<Client>,
    spec: &LoadSpec,
    fault: Option<Fault>,
    progress: impl Fn(u64),
) -> LoadReport {
    let started = Instant::now();
    let deadline = started + spec.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Acknowledgement times in nanoseconds since the start, around the fault.
    let fault_at = Arc::new(AtomicU64::new(u64::MAX));
    let last_before = Arc::new(AtomicU64::new(0));
    let acks_after = Arc::new(Mutex::new(Vec::new()));

    let mut tasks = Vec::new();
    for worker in 0..spec.clients {
        let (client, issued, done, errors) =
            (client.clone(), issued.clone(), done.clone(), errors.clone());
        let (fault_at, last_before, acks_after) =
            (fault_at.clone(), last_before.clone(), acks_after.clone());
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ worker as u64);
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let value = vec![b'x'; spec.value_size];
            while issued.fetch_add(1, Ordering::Relaxed) < spec.ops && Instant::now() < deadline {
                let k = key(rng.random_range(0..spec.key_count));
                let read = match spec.workload {
                    Workload::Write => false,
                    Workload::Read => true,
                    Workload::Mixed => rng.random_bool(0.5),
                };
                let t = Instant::now();
                let outcome = if read {
                    client.get_stale(&k, spec.max_staleness).await.map(|_| ())
                } else {
                    client.put(&k, &value).await
                };
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
    fn the_failover_gap_is_the_longest_silence() {
        let ms = |v: u64| v * 1_000_000;
        assert_eq!(
            longest_gap(vec![ms(5), ms(1), ms(2), ms(1500), ms(1501)]),
            Duration::from_millis(1495)
        );
        assert_eq!(longest_gap(vec![ms(3)]), Duration::ZERO);
    }
}
