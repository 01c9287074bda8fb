//! Request streams of the workload families the planner is trained and judged on.
//!
//! Keys are points of `[0, KEY_SPACE)`; a request is a read, a write or a short scan,
//! from one of the regions. Every stream is a deterministic function of its seed.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::request::{Op, Request};
use super::trace::Replay;
use crate::vocab::KEY_SPACE;
/// Distinct items the Zipfian families draw from (YCSB's record count).
const ZIPF_ITEMS: u64 = 100_000;
/// YCSB's skew.
const ZIPF_THETA: f64 = 0.99;

/// The workload families.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// Every key equally likely, half reads, half writes.
    Uniform,
    /// YCSB A: Zipfian keys, 50 % reads, 50 % updates.
    ZipfianA,
    /// YCSB C: Zipfian keys, reads only.
    ZipfianC,
    /// YCSB E: Zipfian scan starts (spans up to 100 keys), 5 % inserts.
    ZipfianE,
    /// 80 % of requests within 1 % of the key space around a point that moves by
    /// `speed` of the key space per tick.
    MovingHotspot { speed: f64 },
    /// Inserts at increasing (timestamp) keys, reads of recent ones.
    Sequential,
    /// Half of all requests on one key: no split helps.
    HotKey,
    /// 70 % scans of 1,000 keys, 30 % writes.
    ScanHeavy,
    /// Each region busy in its own day: region r's share follows a sine shifted by its
    /// place; each region writes mostly its own part of the key space.
    Diurnal { day_ticks: u64 },
    /// Geo-partitioned data: each region's clients (equally busy) touch mostly their own
    /// part of the key space, Zipfian within it; the diurnal family without the day.
    Regional,
    /// Load recorded from a live cluster, replayed (see [`super::trace`]); without a
    /// recording, uniform.
    Recorded,
    /// Uniform reads and writes until tick `at`; then for `lasting` ticks 70 % of all
    /// requests, nine in ten of them reads, fall on 0.5 % of the key space at a place
    /// the seed picks (a news item, a sale).
    FlashCrowd { at: u64, lasting: u64 },
    /// The moving hotspot, turning back every `period` ticks: a policy that splits ahead
    /// of the hotspot's path is wrong after every turn.
    ReversingHotspot { speed: f64, period: u64 },
    /// YCSB A from four regions (Hamburg, China, Sydney and Virginia; see
    /// [`super::Scenario::four_regions`]).
    FourRegions,
    /// YCSB B (95 % reads) from four regions, three reads in four accepting a bounded
    /// staleness (follower reads), every shard with a learner in the region its voters
    /// leave out (see [`super::Scenario::for_family`]): which replicas vote decides how
    /// long a write waits.
    FollowerReads,
    /// The `index`th (from 1) recording given to an evaluation, as a family of its own.
    Trace { index: usize },
}

impl Family {
    /// A short name for tables and file names.
    pub fn name(&self) -> String {
        match self {
            Family::Uniform => "uniform".into(),
            Family::ZipfianA => "ycsb-a".into(),
            Family::ZipfianC => "ycsb-c".into(),
            Family::ZipfianE => "ycsb-e".into(),
            Family::MovingHotspot { speed } => format!("hotspot-{speed}"),
            Family::Sequential => "sequential".into(),
            Family::HotKey => "hot-key".into(),
            Family::ScanHeavy => "scan-heavy".into(),
            Family::Diurnal { day_ticks: 200 } => "diurnal".into(),
            Family::Diurnal { day_ticks } => format!("diurnal-{day_ticks}-tick-days"),
            Family::Regional => "regional".into(),
            Family::Recorded => "recorded".into(),
            Family::FlashCrowd { .. } => "flash-crowd".into(),
            Family::ReversingHotspot { .. } => "hotspot-reversing".into(),
            Family::FourRegions => "four-regions".into(),
            Family::FollowerReads => "follower-reads".into(),
            Family::Trace { index } => format!("trace-{index}"),
        }
    }
}

/// YCSB's Zipfian generator (Gray et al.'s method): rank 0 is the most popular.
#[derive(Clone)]
struct Zipf {
    items: f64,
    alpha: f64,
    zeta: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipf {
    fn new(items: u64, theta: f64) -> Zipf {
        let zeta_of = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta = zeta_of(items);
        let zeta2 = zeta_of(2);
        Zipf {
            items: items as f64,
            alpha: 1.0 / (1.0 - theta),
            zeta,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zeta),
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    fn rank(&self, rng: &mut StdRng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1;
        }
        let rank = self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (rank as u64).min(self.items as u64 - 1)
    }
}

/// Spreads item ranks over the key space (YCSB's scrambled Zipfian): popular items are
/// not neighbours.
fn scatter(rank: u64) -> u64 {
    let mut x = rank.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) % KEY_SPACE
}

/// A family's request stream.
#[derive(Clone)]
pub struct Workload {
    pub family: Family,
    regions: usize,
    rng: StdRng,
    /// Where the flash crowd falls (drawn from the seed).
    crowd_at: u64,
    zipf: Zipf,
    /// The recording a [`Family::Recorded`] workload replays.
    replay: Option<Arc<Replay>>,
}

const VALUE_BYTES: u32 = 256;

impl Workload {
    pub fn new(family: Family, regions: usize, seed: u64) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        Workload {
            family,
            regions: regions.max(1),
            crowd_at: rng.random_range(0..KEY_SPACE - KEY_SPACE / 200),
            rng,
            zipf: Zipf::new(ZIPF_ITEMS, ZIPF_THETA),
            replay: None,
        }
    }

    /// A [`Family::Recorded`] workload replaying `replay`.
    pub fn replaying(replay: Arc<Replay>, regions: usize, seed: u64) -> Workload {
        Workload {
            replay: Some(replay),
            ..Workload::new(Family::Recorded, regions, seed)
        }
    }

    fn uniform_key(&mut self) -> u64 {
        self.rng.random_range(0..KEY_SPACE)
    }

    fn zipf_key(&mut self) -> u64 {
        scatter(self.zipf.rank(&mut self.rng))
    }

    fn read_or_write(&mut self, key: u64, write_share: f64, origin: usize) -> Request {
        let op = if self.rng.random_bool(write_share) {
            Op::Write { bytes: VALUE_BYTES }
        } else {
            Op::Read
        };
        Request { key, op, origin }
    }

    /// The `count` requests of tick `tick`.
    pub fn tick(&mut self, tick: u64, count: usize) -> Vec<Request> {
        if let Some(replay) = self.replay.clone() {
            return (0..replay.count(tick, count))
                .map(|_| replay.request(tick, &mut self.rng, VALUE_BYTES))
                .collect();
        }
        (0..count).map(|_| self.request(tick)).collect()
    }

    fn request(&mut self, tick: u64) -> Request {
        let origin = self.rng.random_range(0..self.regions);
        match self.family {
            Family::Uniform => {
                let key = self.uniform_key();
                self.read_or_write(key, 0.5, origin)
            }
            Family::ZipfianA | Family::FourRegions => {
                let key = self.zipf_key();
                self.read_or_write(key, 0.5, origin)
            }
            Family::FollowerReads => {
                let key = self.zipf_key();
                self.read_or_write(key, 0.05, origin)
            }
            Family::FlashCrowd { at, lasting } => {
                if (at..at + lasting).contains(&tick) && self.rng.random_bool(0.7) {
                    let key = self.crowd_at + self.rng.random_range(0..KEY_SPACE / 200);
                    self.read_or_write(key, 0.1, origin)
                } else {
                    let key = self.uniform_key();
                    self.read_or_write(key, 0.5, origin)
                }
            }
            Family::ReversingHotspot { speed, period } => {
                // The centre goes up for a period, then back down: a triangle wave.
                let period = period.max(1);
                let leg = tick % (2 * period);
                let along = if leg < period { leg } else { 2 * period - leg };
                let key = if self.rng.random_bool(0.8) {
                    let start = 0.3;
                    let center =
                        ((start + along as f64 * speed).rem_euclid(1.0) * KEY_SPACE as f64) as u64;
                    (center + self.rng.random_range(0..KEY_SPACE / 100)) % KEY_SPACE
                } else {
                    self.uniform_key()
                };
                self.read_or_write(key, 0.5, origin)
            }
            Family::ZipfianC => {
                let key = self.zipf_key();
                self.read_or_write(key, 0.0, origin)
            }
            Family::ZipfianE => {
                if self.rng.random_bool(0.05) {
                    let key = self.uniform_key();
                    return self.read_or_write(key, 1.0, origin);
                }
                let key = self.zipf_key();
                let span = self.rng.random_range(1..=100) * (KEY_SPACE / ZIPF_ITEMS);
                Request {
                    key,
                    op: Op::Scan { span },
                    origin,
                }
            }
            Family::MovingHotspot { speed } => {
                let key = if self.rng.random_bool(0.8) {
                    let center = ((tick as f64 * speed).fract() * KEY_SPACE as f64) as u64;
                    let width = KEY_SPACE / 100;
                    (center + self.rng.random_range(0..width)) % KEY_SPACE
                } else {
                    self.uniform_key()
                };
                self.read_or_write(key, 0.5, origin)
            }
            Family::Sequential => {
                // Timestamps fill the key space over about 100,000 ticks.
                let now = (tick * (KEY_SPACE / 100_000)).min(KEY_SPACE - 1);
                if self.rng.random_bool(0.7) {
                    let key =
                        (now + self.rng.random_range(0..KEY_SPACE / 1_000_000)).min(KEY_SPACE - 1);
                    self.read_or_write(key, 1.0, origin)
                } else {
                    let back = self.rng.random_range(0..=now.min(KEY_SPACE / 1_000));
                    self.read_or_write(now - back, 0.0, origin)
                }
            }
            Family::HotKey => {
                let key = if self.rng.random_bool(0.5) {
                    KEY_SPACE / 3
                } else {
                    self.uniform_key()
                };
                self.read_or_write(key, 0.5, origin)
            }
            Family::ScanHeavy => {
                if self.rng.random_bool(0.7) {
                    let key = self.uniform_key();
                    let span = 1_000 * (KEY_SPACE / ZIPF_ITEMS);
                    Request {
                        key,
                        op: Op::Scan { span },
                        origin,
                    }
                } else {
                    let key = self.uniform_key();
                    self.read_or_write(key, 1.0, origin)
                }
            }
            Family::Diurnal { day_ticks } => {
                // Region r's weight peaks at day fraction r / regions.
                let day = (tick % day_ticks.max(1)) as f64 / day_ticks.max(1) as f64;
                let weights: Vec<f64> = (0..self.regions)
                    .map(|r| {
                        let phase = day - r as f64 / self.regions as f64;
                        0.05 + (1.0 + (phase * std::f64::consts::TAU).cos()) / 2.0
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut pick = self.rng.random::<f64>() * total;
                let mut origin = self.regions - 1;
                for (r, w) in weights.iter().enumerate() {
                    if pick < *w {
                        origin = r;
                        break;
                    }
                    pick -= w;
                }
                // Each region's clients mostly touch their own slice of the key space.
                let slice = KEY_SPACE / self.regions as u64;
                let key = if self.rng.random_bool(0.9) {
                    origin as u64 * slice + self.rng.random_range(0..slice)
                } else {
                    self.uniform_key()
                };
                self.read_or_write(key, 0.5, origin)
            }
            Family::Recorded | Family::Trace { .. } => {
                let key = self.uniform_key();
                self.read_or_write(key, 0.5, origin)
            }
            Family::Regional => {
                let slice = KEY_SPACE / self.regions as u64;
                let key = if self.rng.random_bool(0.9) {
                    origin as u64 * slice + self.zipf_key() % slice
                } else {
                    self.uniform_key()
                };
                self.read_or_write(key, 0.5, origin)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_a_function_of_its_seed() {
        let families = [
            Family::Uniform,
            Family::ZipfianA,
            Family::ZipfianE,
            Family::MovingHotspot { speed: 0.01 },
            Family::Sequential,
            Family::HotKey,
            Family::ScanHeavy,
            Family::Diurnal { day_ticks: 100 },
            Family::FlashCrowd { at: 2, lasting: 10 },
            Family::ReversingHotspot {
                speed: 0.004,
                period: 50,
            },
            Family::FourRegions,
            Family::FollowerReads,
        ];
        for family in families {
            let a = Workload::new(family, 3, 7).tick(5, 200);
            let b = Workload::new(family, 3, 7).tick(5, 200);
            let c = Workload::new(family, 3, 8).tick(5, 200);
            assert_eq!(a, b, "{}", family.name());
            assert_ne!(a, c, "{}", family.name());
            assert!(a.iter().all(|r| r.key < KEY_SPACE && r.origin < 3));
        }
    }

    #[test]
    fn zipfian_keys_are_skewed_like_ycsb() {
        let mut workload = Workload::new(Family::ZipfianC, 1, 1);
        let requests = workload.tick(0, 50_000);
        let mut counts = std::collections::HashMap::<u64, u64>::new();
        for r in &requests {
            *counts.entry(r.key).or_default() += 1;
        }
        let mut by_count: Vec<u64> = counts.into_values().collect();
        by_count.sort_unstable_by(|a, b| b.cmp(a));
        // With theta 0.99 over 100,000 items the top item draws about 8 % and the top
        // hundred about 43 % of requests.
        let top: u64 = by_count[0];
        let top_hundred: u64 = by_count.iter().take(100).sum();
        assert!((3_000..5_500).contains(&top), "{top}");
        assert!((18_000..25_000).contains(&top_hundred), "{top_hundred}");
    }

    #[test]
    fn the_flash_crowd_comes_and_goes_and_the_reversing_hotspot_turns_back() {
        let crowd = Family::FlashCrowd { at: 10, lasting: 5 };
        let in_crowd = |tick| {
            let mut w = Workload::new(crowd, 3, 4);
            let at = w.crowd_at;
            let keys = w.tick(tick, 1_000);
            keys.iter()
                .filter(|r| (at..at + KEY_SPACE / 200).contains(&r.key))
                .count()
        };
        assert!(in_crowd(9) < 50 && in_crowd(15) < 50);
        assert!((600..800).contains(&in_crowd(12)), "{}", in_crowd(12));
        let turning = Family::ReversingHotspot {
            speed: 0.01,
            period: 10,
        };
        let center = |tick| {
            let mut w = Workload::new(turning, 1, 3);
            let mut keys: Vec<u64> = w.tick(tick, 2_000).iter().map(|r| r.key).collect();
            keys.sort_unstable();
            keys[keys.len() / 2] / (KEY_SPACE / 100)
        };
        // Up for ten ticks, then back: tick 15 is where tick 5 was.
        assert!(center(10) > center(5));
        assert!(
            center(15).abs_diff(center(5)) <= 1,
            "{} {}",
            center(15),
            center(5)
        );
    }

    #[test]
    fn the_hotspot_moves_and_the_hot_key_stays() {
        let center = |family, tick| {
            let mut w = Workload::new(family, 1, 3);
            let mut keys: Vec<u64> = w.tick(tick, 2_000).iter().map(|r| r.key).collect();
            keys.sort_unstable();
            keys[keys.len() / 2]
        };
        let moving = Family::MovingHotspot { speed: 0.1 };
        assert_ne!(
            center(moving, 1) / (KEY_SPACE / 10),
            center(moving, 5) / (KEY_SPACE / 10)
        );
        let mut hot = Workload::new(Family::HotKey, 1, 3);
        let on_hot = hot
            .tick(0, 1_000)
            .iter()
            .filter(|r| r.key == KEY_SPACE / 3)
            .count();
        assert!((400..600).contains(&on_hot), "{on_hot}");
    }
}
