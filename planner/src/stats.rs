//! What a shard's leader measures for the planner between two reports: a uniform sample
//! of the keys its requests touched (for the split point: a load split needs the keys the
//! load falls on, not the middle by size) and the requests per origin region.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::knobs::{RESERVOIR_REQUESTS, SAMPLED_KEYS};

/// A uniform sample of the keys offered since the last [`KeySampler::take`] (Algorithm R:
/// each offered key ends up in the sample with the same probability).
#[derive(Debug)]
pub struct KeySampler {
    seen: u64,
    keys: Vec<Vec<u8>>,
    rng: StdRng,
}

impl Default for KeySampler {
    fn default() -> Self {
        KeySampler {
            seen: 0,
            keys: Vec::with_capacity(RESERVOIR_REQUESTS),
            rng: StdRng::from_os_rng(),
        }
    }
}

impl KeySampler {
    /// A sampler whose choices follow `seed` (for tests).
    pub fn seeded(seed: u64) -> Self {
        KeySampler {
            rng: StdRng::seed_from_u64(seed),
            ..KeySampler::default()
        }
    }

    pub fn offer(&mut self, key: &[u8]) {
        self.seen += 1;
        if self.keys.len() < RESERVOIR_REQUESTS {
            self.keys.push(key.to_vec());
            return;
        }
        let slot = self.rng.random_range(0..self.seen);
        if let Some(kept) = self.keys.get_mut(slot as usize) {
            *kept = key.to_vec();
        }
    }

    /// The sample summarised by [`summarize`]; the sampler starts afresh.
    pub fn take(&mut self) -> Vec<(Vec<u8>, u64)> {
        self.seen = 0;
        summarize(std::mem::take(&mut self.keys))
    }
}

/// A key drawn at least this often in a sample of [`RESERVOIR_REQUESTS`] (and as large
/// a share of a larger one) is a heavy hitter, reported with its own count: over 2 % of
/// the load on one key, which a split can isolate but not divide. Distinct keys of a
/// large range hardly ever repeat three times in a sample of 128.
pub const HEAVY_HITTER_MIN: u64 = 3;
/// Heavy hitters a summary keeps at most (the most frequent); the other slots go to the
/// order statistics.
pub const HEAVY_HITTERS_MAX: usize = SAMPLED_KEYS / 4;

/// A sample of requested keys as at most [`SAMPLED_KEYS`] `(key, requests)` in key order
/// whose counts add up to the sample's size (see [`summarize_counted`]).
pub fn summarize<K: Ord + Clone>(sample: Vec<K>) -> Vec<(K, u64)> {
    summarize_counted(sample.into_iter().map(|key| (key, 1)).collect())
}

/// Keys with request counts (a sample, or summaries added together) as at most
/// [`SAMPLED_KEYS`] `(key, requests)` in key order whose counts add up to the input's: the
/// heavy hitters with their own counts, and of the other requests evenly spaced order
/// statistics, each standing for the requests from its key up to the next one's. So the
/// requests to the left of any reported key are the sampled requests below it, and a split
/// at the reported key with half the count on each side halves the load. (Keeping the
/// most frequent keys instead, ties in key order, keeps the smallest keys of a range of
/// distinct keys: a split among them takes an eighth of the load.)
pub fn summarize_counted<K: Ord + Clone>(mut counted: Vec<(K, u64)>) -> Vec<(K, u64)> {
    counted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut runs: Vec<(K, u64)> = Vec::with_capacity(counted.len());
    for (key, n) in counted {
        match runs.last_mut() {
            Some((last, count)) if *last == key => *count += n,
            _ => runs.push((key, n)),
        }
    }
    let total: u64 = runs.iter().map(|(_, n)| n).sum();
    let is_heavy =
        |n: u64| n >= HEAVY_HITTER_MIN && n * RESERVOIR_REQUESTS as u64 >= HEAVY_HITTER_MIN * total;
    let mut heavy: Vec<usize> = (0..runs.len()).filter(|&i| is_heavy(runs[i].1)).collect();
    heavy.sort_by(|&a, &b| runs[b].1.cmp(&runs[a].1).then(a.cmp(&b)));
    heavy.truncate(HEAVY_HITTERS_MAX);
    let mut summary: Vec<(K, u64)> = heavy.iter().map(|&i| runs[i].clone()).collect();
    let rest: Vec<&(K, u64)> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| !heavy.contains(i))
        .map(|(_, run)| run)
        .collect();
    let rest_total: u64 = rest.iter().map(|(_, n)| n).sum();
    let slots = (SAMPLED_KEYS - summary.len()) as u64;
    // Each key goes to the bucket its first request falls in; a bucket's first key stands
    // for every request in it.
    let mut below = 0;
    let mut last_bucket = None;
    for (key, n) in rest {
        let bucket = below * slots / rest_total.max(1);
        match summary.last_mut() {
            Some((_, count)) if last_bucket == Some(bucket) => *count += n,
            _ => summary.push((key.clone(), *n)),
        }
        last_bucket = Some(bucket);
        below += n;
    }
    summary.sort_by(|a, b| a.0.cmp(&b.0));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_stream_is_kept_whole_and_counted() {
        let mut sampler = KeySampler::seeded(1);
        for key in [b"b", b"a", b"b", b"c", b"b"] {
            sampler.offer(key);
        }
        assert_eq!(
            sampler.take(),
            vec![(b"a".to_vec(), 1), (b"b".to_vec(), 3), (b"c".to_vec(), 1)]
        );
        assert!(sampler.take().is_empty(), "a take starts afresh");
    }

    #[test]
    fn a_long_stream_is_sampled_in_proportion() {
        let mut sampler = KeySampler::seeded(2);
        // "hot" is 3 of every 4 requests; 1,000 cold keys share the rest.
        for i in 0..40_000u32 {
            if i % 4 == 0 {
                sampler.offer(format!("cold{:04}", i % 1000).as_bytes());
            } else {
                sampler.offer(b"hot");
            }
        }
        let sample = sampler.take();
        assert!(sample.len() <= SAMPLED_KEYS);
        let total: u64 = sample.iter().map(|(_, n)| n).sum();
        let hot = sample
            .iter()
            .find(|(k, _)| k == b"hot")
            .map_or(0, |(_, n)| *n);
        // 96 of 128 expected; far outside that would mean a biased sample.
        assert!((80..=112).contains(&hot), "hot {hot} of {total}");
        assert!(sample.windows(2).all(|w| w[0].0 < w[1].0), "key order");
    }

    #[test]
    fn a_range_of_distinct_keys_is_summarised_by_its_quantiles() {
        let mut sampler = KeySampler::seeded(3);
        for i in 0..10_000u32 {
            sampler.offer(format!("k{i:05}").as_bytes());
        }
        let sample = sampler.take();
        assert_eq!(sample.len(), SAMPLED_KEYS);
        let total: u64 = sample.iter().map(|(_, n)| n).sum();
        assert_eq!(
            total, RESERVOIR_REQUESTS as u64,
            "every sampled request counts"
        );
        // The key with half the counts below it lies near the middle of the range, not
        // in its first eighth.
        let mut below = 0;
        let middle = sample
            .iter()
            .find(|(_, n)| {
                below += n;
                below * 2 >= total
            })
            .map(|(k, _)| String::from_utf8_lossy(k).to_string())
            .unwrap();
        assert!(("k03500".."k06500").contains(&middle.as_str()), "{middle}");
        assert!(sample.windows(2).all(|w| w[0].0 < w[1].0), "key order");
    }

    #[test]
    fn heavy_hitters_keep_their_counts_beside_the_quantiles() {
        // Eight hot keys take half the requests; the rest are distinct.
        let mut sample: Vec<u64> = (0..64).map(|i| 1_000 + i % 8).collect();
        sample.extend((0..64).map(|i| i * 100 + 50));
        let summary = summarize(sample);
        assert!(summary.len() <= SAMPLED_KEYS);
        assert_eq!(summary.iter().map(|(_, n)| n).sum::<u64>(), 128);
        let hot: Vec<_> = summary
            .iter()
            .filter(|(k, _)| (1_000..1_008).contains(k))
            .collect();
        assert_eq!(hot.len(), HEAVY_HITTERS_MAX, "{summary:?}");
        assert!(hot.iter().all(|(_, n)| *n == 8), "{summary:?}");
    }
}
