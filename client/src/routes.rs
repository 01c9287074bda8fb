//! The client's routing cache: which shard holds a key, its epoch, and which node leads
//! it. Filled from what servers answer (`NotLeader` and `EpochMismatch` carry
//! descriptors, scans name the shard they covered), so a split or merge costs one retry
//! and no lookup round trip.

use std::collections::BTreeMap;
use std::ops::Bound;

use hanse_proto::v1 as proto;

/// A shard as the client last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedShard {
    pub descriptor: proto::ShardDescriptor,
    /// The address of its leader, when known.
    pub leader: Option<String>,
}

fn version(d: &proto::ShardDescriptor) -> u64 {
    d.epoch.map_or(0, |e| e.version)
}

fn contains(d: &proto::ShardDescriptor, key: &[u8]) -> bool {
    key >= d.start.as_slice() && (d.end.is_empty() || key < d.end.as_slice())
}

fn overlaps(a: &proto::ShardDescriptor, b: &proto::ShardDescriptor) -> bool {
    let a_before_b_ends = b.end.is_empty() || a.start < b.end;
    let b_before_a_ends = a.end.is_empty() || b.start < a.end;
    a_before_b_ends && b_before_a_ends
}

/// Shards by start key; entries never overlap.
#[derive(Debug, Default)]
pub struct RouteCache {
    by_start: BTreeMap<Vec<u8>, CachedShard>,
}

impl RouteCache {
    /// The cached shard holding `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<&CachedShard> {
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, shard)| shard)
            .filter(|shard| contains(&shard.descriptor, key))
    }

    /// The cached shard holding the keys just before `end` (empty: the last shard).
    pub fn lookup_before(&self, end: &[u8]) -> Option<&CachedShard> {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, upper))
            .next_back()
            .map(|(_, shard)| shard)
            .filter(|shard| {
                let d = &shard.descriptor;
                if end.is_empty() {
                    d.end.is_empty()
                } else {
                    d.end.is_empty() || d.end.as_slice() >= end
                }
            })
    }

    /// Takes in a descriptor a server sent. Cached shards it overlaps are dropped unless
    /// one of them is newer (then the descriptor itself is stale and ignored). The leader
    /// of the same shard at the same version is kept.
    pub fn learn(&mut self, descriptor: proto::ShardDescriptor) {
        let overlapping: Vec<Vec<u8>> = self
            .by_start
            .iter()
            .filter(|(_, shard)| overlaps(&shard.descriptor, &descriptor))
            .map(|(start, _)| start.clone())
            .collect();
        if overlapping
            .iter()
            .any(|start| version(&self.by_start[start].descriptor) > version(&descriptor))
        {
            return;
        }
        let mut leader = None;
        for start in overlapping {
            let old = self.by_start.remove(&start).expect("listed above");
            if old.descriptor.id == descriptor.id
                && version(&old.descriptor) == version(&descriptor)
            {
                leader = old.leader;
            }
        }
        self.by_start
            .insert(descriptor.start.clone(), CachedShard { descriptor, leader });
    }

    /// The cached shard with id `id`.
    pub fn lookup_id(&self, id: u64) -> Option<&CachedShard> {
        self.by_start.values().find(|s| s.descriptor.id == id)
    }

    /// Records where shard `id` is led (`None`: unknown, e.g. an election is under way).
    pub fn set_leader(&mut self, id: u64, leader: Option<String>) {
        if let Some(shard) = self.by_start.values_mut().find(|s| s.descriptor.id == id) {
            shard.leader = leader;
        }
    }

    /// Drops what the cache believes about the shard of `key`.
    pub fn forget(&mut self, key: &[u8]) {
        if let Some(start) = self.lookup(key).map(|s| s.descriptor.start.clone()) {
            self.by_start.remove(&start);
        }
    }

    /// Forgets every leader at `addr` (the node did not answer).
    pub fn forget_leader_at(&mut self, addr: &str) {
        for shard in self.by_start.values_mut() {
            if shard.leader.as_deref() == Some(addr) {
                shard.leader = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u64, start: &str, end: &str, version: u64) -> proto::ShardDescriptor {
        proto::ShardDescriptor {
            id,
            start: start.as_bytes().to_vec(),
            end: end.as_bytes().to_vec(),
            epoch: Some(proto::Epoch {
                version,
                conf_ver: 1,
            }),
            replicas: Vec::new(),
            merging: None,
        }
    }

    fn id_of(cache: &RouteCache, key: &str) -> Option<u64> {
        cache.lookup(key.as_bytes()).map(|s| s.descriptor.id)
    }

    #[test]
    fn a_split_replaces_the_parent_and_keeps_nothing_stale() {
        let mut cache = RouteCache::default();
        cache.learn(shard(1, "", "", 1));
        cache.set_leader(1, Some("n1".into()));
        assert_eq!(id_of(&cache, "zebra"), Some(1));

        // After a split at "m", the server answers with both halves at version 2.
        cache.learn(shard(1, "", "m", 2));
        cache.learn(shard(7, "m", "", 2));
        assert_eq!(id_of(&cache, "apple"), Some(1));
        assert_eq!(id_of(&cache, "zebra"), Some(7));
        assert_eq!(
            cache.lookup(b"apple").unwrap().leader,
            None,
            "a new epoch, a new leader"
        );

        // An older descriptor arriving late changes nothing.
        cache.learn(shard(1, "", "", 1));
        assert_eq!(id_of(&cache, "zebra"), Some(7));
    }

    #[test]
    fn the_same_shard_again_keeps_its_leader_and_forget_drops_it() {
        let mut cache = RouteCache::default();
        cache.learn(shard(3, "a", "k", 4));
        cache.set_leader(3, Some("n2".into()));
        cache.learn(shard(3, "a", "k", 4));
        assert_eq!(cache.lookup(b"b").unwrap().leader.as_deref(), Some("n2"));
        cache.forget_leader_at("n2");
        assert_eq!(cache.lookup(b"b").unwrap().leader, None);
        assert_eq!(id_of(&cache, "k"), None, "end is exclusive");
        cache.forget(b"c");
        assert_eq!(id_of(&cache, "c"), None);
    }

    #[test]
    fn lookup_before_finds_the_shard_of_the_keys_just_before_an_end() {
        let mut cache = RouteCache::default();
        cache.learn(shard(1, "", "m", 2));
        cache.learn(shard(7, "m", "", 2));
        let before = |end: &str| cache.lookup_before(end.as_bytes()).map(|s| s.descriptor.id);
        assert_eq!(before("m"), Some(1));
        assert_eq!(before("n"), Some(7));
        assert_eq!(before(""), Some(7));
        assert_eq!(before("c"), Some(1));
    }
}
