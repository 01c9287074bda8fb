//! Load recorded from a live cluster (`hanse planner record`), replayed as a workload:
//! each recorded tick gives every shard's request rates, its sampled keys with counts and
//! its requests by region; the replay draws requests in those proportions, with keys laid
//! on the simulator's key line by rank (every recorded boundary and sampled key its own
//! position, in key order).

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::request::{Op, Request};
use crate::vocab::KEY_SPACE;

/// The regions of the simulated cluster, in its order (see `Scenario::three_regions`);
/// requests from any other region count as the first's.
pub const SIM_REGIONS: [&str; 3] = ["eu-hamburg", "ap-china", "au-sydney"];

/// One shard in one recorded tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceShard {
    pub start: Vec<u8>,
    /// Empty: to the end of the keyspace.
    pub end: Vec<u8>,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    pub sampled_keys: Vec<(Vec<u8>, u64)>,
    pub origins: Vec<(String, f64)>,
}

/// One recorded tick: every data shard of the routing table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceTick {
    pub shards: Vec<TraceShard>,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trace {path}, line {line}: not a recorded tick ({detail})")]
    Malformed {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("trace {path} holds no tick with any load")]
    Empty { path: PathBuf },
}

/// Appends `tick` to a trace as one JSON line.
pub fn write_tick(out: &mut impl Write, tick: &TraceTick) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, tick)?;
    out.write_all(b"\n")
}

/// A trace file's ticks, each line checked.
pub fn read_trace(path: &Path) -> Result<Vec<TraceTick>, TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut ticks = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let tick: TraceTick = serde_json::from_str(&line).map_err(|e| TraceError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        ticks.push(tick);
    }
    let busy = |t: &TraceTick| {
        t.shards
            .iter()
            .any(|s| s.reads_per_sec + s.writes_per_sec > 0.0)
    };
    if !ticks.iter().any(busy) {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(ticks)
}

/// A trace ready to draw requests from.
#[derive(Debug)]
pub struct Replay {
    ticks: Vec<ReplayTick>,
    /// Requests per second over the whole trace.
    pub mean_rate: f64,
}

#[derive(Debug)]
struct ReplayTick {
    rate: f64,
    /// Cumulative request rates of the shards, for picking one.
    cumulative: Vec<f64>,
    shards: Vec<ReplayShard>,
}

#[derive(Debug)]
struct ReplayShard {
    start: u64,
    end: u64,
    write_share: f64,
    /// Sampled keys' positions and cumulative counts.
    keys: Vec<(u64, u64)>,
    /// Cumulative requests per simulated region.
    origins: [f64; SIM_REGIONS.len()],
}

/// Share of a shard's requests drawn from its sampled keys; the rest fall anywhere in it.
const SAMPLED_SHARE: f64 = 0.9;

impl Replay {
    pub fn new(ticks: &[TraceTick]) -> Replay {
        let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
        for shard in ticks.iter().flat_map(|t| &t.shards) {
            keys.insert(&shard.start);
            keys.insert(&shard.end);
            keys.extend(shard.sampled_keys.iter().map(|(k, _)| k.as_slice()));
        }
        keys.remove(&b""[..]);
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        let step = KEY_SPACE / (keys.len() as u64 + 2);
        let at = |key: &[u8]| match keys.binary_search(&key) {
            Ok(rank) => (rank as u64 + 1) * step,
            Err(_) => 0,
        };
        let replayed: Vec<ReplayTick> = ticks
            .iter()
            .map(|tick| {
                let mut total = 0.0;
                let mut cumulative = Vec::new();
                let shards = tick
                    .shards
                    .iter()
                    .map(|s| {
                        let rate = s.reads_per_sec + s.writes_per_sec;
                        total += rate;
                        cumulative.push(total);
                        let mut seen = 0;
                        let keys = s
                            .sampled_keys
                            .iter()
                            .map(|(k, n)| {
                                seen += n;
                                (at(k), seen)
                            })
                            .collect();
                        let mut origins = [0.0; SIM_REGIONS.len()];
                        for (region, per_sec) in &s.origins {
                            let r = SIM_REGIONS.iter().position(|n| n == region).unwrap_or(0);
                            origins[r] += per_sec;
                        }
                        let mut sum = 0.0;
                        for o in origins.iter_mut() {
                            sum += *o;
                            *o = sum;
                        }
                        ReplayShard {
                            start: at(&s.start),
                            end: if s.end.is_empty() {
                                KEY_SPACE
                            } else {
                                at(&s.end)
                            },
                            write_share: if rate > 0.0 {
                                s.writes_per_sec / rate
                            } else {
                                0.0
                            },
                            keys,
                            origins,
                        }
                    })
                    .collect();
                ReplayTick {
                    rate: total,
                    cumulative,
                    shards,
                }
            })
            .collect();
        let mean_rate = replayed.iter().map(|t| t.rate).sum::<f64>() / replayed.len().max(1) as f64;
        Replay {
            ticks: replayed,
            mean_rate,
        }
    }

    fn tick(&self, tick: u64) -> Option<&ReplayTick> {
        self.ticks.get(tick as usize % self.ticks.len().max(1))
    }

    /// Requests to simulate in `tick` when `count` stands for the mean rate.
    pub fn count(&self, tick: u64, count: usize) -> usize {
        let rate = self.tick(tick).map_or(0.0, |t| t.rate);
        (count as f64 * rate / self.mean_rate.max(f64::MIN_POSITIVE)).round() as usize
    }

    /// One request of `tick`, drawn with `rng`.
    pub fn request(&self, tick: u64, rng: &mut StdRng, value_bytes: u32) -> Request {
        let Some(t) = self.tick(tick).filter(|t| t.rate > 0.0) else {
            return Request {
                key: rng.random_range(0..KEY_SPACE),
                op: Op::Read,
                origin: 0,
            };
        };
        let pick = rng.random::<f64>() * t.rate;
        let shard = &t.shards[t
            .cumulative
            .partition_point(|&c| c <= pick)
            .min(t.shards.len() - 1)];
        let key = match shard.keys.last() {
            Some(&(_, total)) if rng.random_bool(SAMPLED_SHARE) => {
                let pick = rng.random_range(0..total);
                shard.keys[shard.keys.partition_point(|&(_, c)| c <= pick)].0
            }
            _ => rng.random_range(shard.start..shard.end.max(shard.start + 1)),
        };
        let regions = shard.origins[SIM_REGIONS.len() - 1];
        let origin = if regions > 0.0 {
            let pick = rng.random::<f64>() * regions;
            shard.origins.partition_point(|&c| c <= pick)
        } else {
            rng.random_range(0..SIM_REGIONS.len())
        };
        let op = if rng.random_bool(shard.write_share.clamp(0.0, 1.0)) {
            Op::Write { bytes: value_bytes }
        } else {
            Op::Read
        };
        Request { key, op, origin }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn tick(rates: &[(f64, f64)]) -> TraceTick {
        let bounds: [&[u8]; 3] = [b"", b"m", b""];
        TraceTick {
            shards: rates
                .iter()
                .enumerate()
                .map(|(i, &(reads, writes))| TraceShard {
                    start: bounds[i].to_vec(),
                    end: bounds[i + 1].to_vec(),
                    reads_per_sec: reads,
                    writes_per_sec: writes,
                    sampled_keys: vec![(if i == 0 { b"c" } else { b"x" }.to_vec(), 5)],
                    origins: vec![("ap-china".into(), reads + writes)],
                })
                .collect(),
        }
    }

    #[test]
    fn a_trace_file_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let ticks = vec![
            tick(&[(10.0, 0.0), (0.0, 30.0)]),
            tick(&[(5.0, 5.0), (1.0, 1.0)]),
        ];
        let mut file = std::fs::File::create(&path).unwrap();
        for t in &ticks {
            write_tick(&mut file, t).unwrap();
        }
        assert_eq!(read_trace(&path).unwrap(), ticks);

        std::fs::write(&path, "{\"shards\": []}\nnot json\n").unwrap();
        let error = read_trace(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        std::fs::write(&path, "{\"shards\": []}\n").unwrap();
        assert!(matches!(read_trace(&path), Err(TraceError::Empty { .. })));
        assert!(matches!(
            read_trace(&dir.path().join("missing")),
            Err(TraceError::Io { .. })
        ));
    }

    #[test]
    fn the_replay_draws_in_the_recorded_proportions() {
        // Tick 0: the right shard takes 3 of 4 requests, all writes, from China.
        let replay = Replay::new(&[
            tick(&[(10.0, 0.0), (0.0, 30.0)]),
            tick(&[(5.0, 5.0), (0.0, 0.0)]),
        ]);
        assert_eq!(replay.mean_rate, 25.0);
        assert_eq!(replay.count(0, 100), 160);
        assert_eq!(replay.count(1, 100), 40);
        let mut rng = StdRng::seed_from_u64(1);
        let requests: Vec<Request> = (0..4000)
            .map(|_| replay.request(0, &mut rng, 256))
            .collect();
        // Keys by rank: "c", "m", "x" at 1, 2 and 3 fifths of the key line.
        let step = KEY_SPACE / 5;
        let right: Vec<&Request> = requests.iter().filter(|r| r.key >= 2 * step).collect();
        assert!((2_800..3_200).contains(&right.len()), "{}", right.len());
        assert!(right.iter().all(|r| matches!(r.op, Op::Write { .. })));
        assert!(requests.iter().all(|r| r.origin == 1), "from ap-china");
        // The sampled key "x" draws 90 % of its shard's requests.
        let on_x = right.iter().filter(|r| r.key == 3 * step).count();
        assert!(on_x * 10 > right.len() * 8, "{on_x} of {}", right.len());
    }
}
