//! What a shard's leader measures for the planner between two reports: a uniform sample
//! of the keys its requests touched (for the split point: a load split needs the keys the
//! load falls on, not the middle by size) and the requests per origin region.

use std::collections::BTreeMap;

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

    /// The sample's distinct keys with their counts, the [`SAMPLED_KEYS`] most frequent,
    /// in key order; the sampler starts afresh.
    pub fn take(&mut self) -> Vec<(Vec<u8>, u64)> {
        self.seen = 0;
        let mut counted: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for key in self.keys.drain(..) {
            *counted.entry(key).or_default() += 1;
        }
        let mut keys: Vec<(Vec<u8>, u64)> = counted.into_iter().collect();
        // The most frequent first (ties in key order), then back to key order.
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(SAMPLED_KEYS);
        keys.sort();
        keys
    }
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
}
