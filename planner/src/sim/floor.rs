//! A lower bound of a tick's cost that no policy passes: the floor the gap a policy
//! closes is measured against (`G = (best heuristic - policy) / (best heuristic -
//! floor)`). Most of every policy's cost is round trips between regions that no placement
//! removes; the floor takes them out.
//!
//! - **p99**: every key's requests could have a shard, and a leader, of their own, placed
//!   in whichever region is best for that key; a write also waits for the nearest other
//!   region (three replicas stay in three regions), and every request on a key waits at
//!   least the queue that key alone makes on its leader. For a threshold `x`, each key's
//!   best region leaves the fewest of its requests slower than `x`, independently of the
//!   other keys; the floor is the smallest `x` that leaves no more than the slowest
//!   percent slower. No assignment of leaders does better, so this bounds the p99 of the
//!   network and the queues from below.
//! - **Imbalance**: the busiest node carries at least the heaviest key's leader work, and
//!   even a perfect split of the load shows the sampling noise of a tick's requests: the
//!   expected largest of `N` nodes' shares of `n` requests is about `1 + z_N sqrt(N / n)`
//!   times the mean, `z_N` the expected largest of `N` standard normal draws. (An
//!   expectation, not a bound for each tick: a tick's noise can fall below it.)
//! - **Moves**: none.

use std::collections::HashMap;

use super::quorum_ms;
use super::request::{Op, Request};
use crate::vocab::Node;

/// One tick's floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickFloor {
    pub imbalance: f64,
    pub p99_ms: f64,
}

impl TickFloor {
    /// The floor of the tick's share of the cost (see [`super::Outcome::cost`]).
    pub fn cost(&self) -> f64 {
        self.imbalance + self.p99_ms / 100.0
    }
}

/// What one key's requests ask for in a tick.
#[derive(Default)]
struct KeyLoad {
    /// Operations its leader serves for it.
    leader_ops: f64,
    /// (origin region, whether a write) of each request that its leader serves.
    requests: Vec<(usize, bool)>,
    /// Origin regions of its follower reads.
    follower_reads: Vec<usize>,
}

/// The floor of a tick that served `requests` (each standing for `weight`; those marked
/// in `follower_reads` may be served by any replica) on `nodes` whose total work was
/// `node_ops`, with `latency` one way between regions; `wait` is the p99 queueing delay
/// at a node of the given utilisation.
pub fn tick_floor(
    requests: &[Request],
    follower_reads: &[bool],
    weight: f64,
    nodes: &[Node],
    latency: &[Vec<f64>],
    node_ops: &[f64],
    wait: &dyn Fn(f64) -> f64,
) -> TickFloor {
    let mut keys: HashMap<u64, KeyLoad> = HashMap::new();
    for (i, request) in requests.iter().enumerate() {
        let key = keys.entry(request.key).or_default();
        // A follower read may be served in its own region, by an idle replica.
        if follower_reads.get(i).copied().unwrap_or(false) {
            key.follower_reads.push(request.origin);
            continue;
        }
        let write = matches!(request.op, Op::Write { .. });
        // A scan's work can be spread over shards; only its first step is the key's.
        key.leader_ops += match request.op {
            Op::Scan { .. } => 0.0,
            _ => weight,
        };
        key.requests.push((request.origin, write));
    }
    let capacity = nodes
        .iter()
        .map(|n| n.capacity)
        .fold(f64::INFINITY, f64::min);
    let mean_ops = node_ops.iter().sum::<f64>() / node_ops.len().max(1) as f64;
    let heaviest = keys.values().map(|k| k.leader_ops).fold(0.0, f64::max);
    let noise = 1.0
        + expected_max_normal(nodes.len())
            * (nodes.len() as f64 / requests.len().max(1) as f64).sqrt();
    let imbalance = if mean_ops > 0.0 {
        noise.max(heaviest / mean_ops)
    } else {
        1.0
    };

    // Each region as a leader: the round trip a write waits for after reaching it.
    let regions = latency.len();
    let quorum: Vec<f64> = (0..regions)
        .map(|leader_region| {
            let leader = nodes.iter().position(|n| n.region == leader_region);
            let spread: Vec<usize> = (0..regions)
                .filter_map(|r| nodes.iter().position(|n| n.region == r))
                .collect();
            leader.map_or(f64::INFINITY, |leader| {
                // The nearest majority of three replicas in three regions.
                let mut best = f64::INFINITY;
                for &a in &spread {
                    for &b in &spread {
                        if a != b && a != leader && b != leader {
                            best = best.min(quorum_ms(latency, nodes, &[leader, a, b], leader));
                        }
                    }
                }
                if best.is_finite() { best } else { 0.0 }
            })
        })
        .collect();
    let key_latencies: Vec<Vec<Vec<f64>>> = keys
        .values()
        .map(|key| {
            let queue = wait(key.leader_ops / capacity);
            let idle = wait(0.0);
            (0..regions)
                .map(|leader| {
                    key.requests
                        .iter()
                        .map(|&(origin, write)| {
                            let trip = 2.0 * latency[origin][leader];
                            trip + if write { quorum[leader] } else { 0.0 } + queue
                        })
                        .chain(
                            key.follower_reads
                                .iter()
                                .map(|&origin| 2.0 * latency[origin][origin] + idle),
                        )
                        .collect()
                })
                .collect()
        })
        .collect();
    let n = requests.len();
    // The p99 is the request at index n * 99 / 100 in latency order: at most this many
    // may be slower.
    let allowed = n.saturating_sub(1 + n * 99 / 100);
    let slower_than = |x: f64| -> usize {
        key_latencies
            .iter()
            .map(|by_leader| {
                by_leader
                    .iter()
                    .map(|lat| lat.iter().filter(|&&l| l > x).count())
                    .min()
                    .unwrap_or(0)
            })
            .sum()
    };
    let mut candidates: Vec<f64> = key_latencies.iter().flatten().flatten().copied().collect();
    candidates.sort_unstable_by(f64::total_cmp);
    candidates.dedup();
    let at = candidates.partition_point(|&x| slower_than(x) > allowed);
    TickFloor {
        imbalance,
        p99_ms: candidates.get(at).copied().unwrap_or(0.0),
    }
}

/// The expected largest of `n` independent standard normal draws (0 for one).
pub fn expected_max_normal(n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    // E[max] = ∫ x n φ(x) Φ(x)^(n-1) dx, by the midpoint rule over ±8.
    let steps = 4_000;
    let (lo, hi) = (-8.0f64, 8.0f64);
    let h = (hi - lo) / steps as f64;
    (0..steps)
        .map(|i| {
            let x = lo + (i as f64 + 0.5) * h;
            let density = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            x * n as f64 * density * normal_cdf(x).powi(n as i32 - 1) * h
        })
        .sum()
}

/// Φ(x), from the error function's approximation 7.1.26 of Abramowitz and Stegun
/// (absolute error under 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        (1.0 + erf) / 2.0
    } else {
        (1.0 - erf) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_regions() -> (Vec<Node>, Vec<Vec<f64>>) {
        let nodes = (0..6)
            .map(|i| Node {
                region: i % 3,
                capacity: 4_000.0,
            })
            .collect();
        let latency = vec![
            vec![0.5, 125.0, 150.0],
            vec![125.0, 0.5, 75.0],
            vec![150.0, 75.0, 0.5],
        ];
        (nodes, latency)
    }

    #[test]
    fn the_largest_of_normal_draws_matches_the_tables() {
        assert!((expected_max_normal(2) - 0.5642).abs() < 1e-3);
        assert!((expected_max_normal(6) - 1.2672).abs() < 1e-3);
        assert_eq!(expected_max_normal(1), 0.0);
    }

    #[test]
    fn reads_of_one_key_from_every_region_wait_for_the_farthest_region() {
        // YCSB C's floor from the first round's note: whichever region leads the key,
        // a third of its reads come from 250 ms away or more.
        let (nodes, latency) = three_regions();
        let requests: Vec<Request> = (0..300)
            .map(|i| Request {
                key: 7,
                op: Op::Read,
                origin: i % 3,
            })
            .collect();
        let ops = vec![50.0; 6];
        let floor = tick_floor(&requests, &[], 1.0, &nodes, &latency, &ops, &|_| 0.0);
        assert_eq!(floor.p99_ms, 250.0);
        // One key: the busiest node does all of it.
        assert!((floor.imbalance - 6.0).abs() < 1e-9, "{floor:?}");
    }

    #[test]
    fn keys_each_read_from_one_region_can_all_be_served_there() {
        let (nodes, latency) = three_regions();
        let requests: Vec<Request> = (0..3_000)
            .map(|i| Request {
                key: i as u64,
                op: Op::Read,
                origin: i % 3,
            })
            .collect();
        let ops = vec![500.0; 6];
        let floor = tick_floor(&requests, &[], 1.0, &nodes, &latency, &ops, &|_| 0.0);
        assert_eq!(floor.p99_ms, 1.0);
        // 3,000 requests on six nodes: about 1 + 1.27 * sqrt(6 / 3000).
        assert!((floor.imbalance - 1.0567).abs() < 1e-3, "{floor:?}");
        // Writes also wait for the nearest other region from the best leader.
        let writes: Vec<Request> = requests
            .iter()
            .map(|r| Request {
                op: Op::Write { bytes: 1 },
                ..*r
            })
            .collect();
        let floor = tick_floor(&writes, &[], 1.0, &nodes, &latency, &ops, &|_| 0.0);
        // From Hamburg the nearest other region is 250 ms away and back; from China
        // or Sydney 150 ms.
        assert_eq!(floor.p99_ms, 1.0 + 250.0);
    }
}
