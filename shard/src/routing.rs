//! Routing: which hosted shard serves a key, and whether the route a client sent with a
//! request is still current. The node's request handlers, the embedded store and the
//! simulation all route through these.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::descriptor::{Epoch, ShardDescriptor, ShardId};

/// Something hosted for one shard, whose descriptor may change as its log applies.
pub trait Routed {
    /// Calls `f` with the shard's current descriptor.
    fn with_descriptor<R>(&self, f: impl FnOnce(&ShardDescriptor) -> R) -> R;
}

impl Routed for ShardDescriptor {
    fn with_descriptor<R>(&self, f: impl FnOnce(&ShardDescriptor) -> R) -> R {
        f(self)
    }
}

/// Why a shard was not hosted: its range overlaps one hosted already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "shard {shard} overlaps shard {hosted}, which this node hosts already; a node never serves \
     one key from two shards"
)]
pub struct Overlap {
    pub shard: ShardId,
    pub hosted: ShardId,
}

/// The shards a node hosts, by the start key of their range. A shard keeps its start key
/// for life (a split shrinks its end, a merge moves its end), so the entries stay sorted as
/// descriptors change. Every operation is logarithmic in the shards hosted (a node may
/// host thousands), with each shard's start key indexed by its id.
#[derive(Debug)]
pub struct RouteTable<T> {
    by_start: BTreeMap<Vec<u8>, T>,
    start_of: HashMap<ShardId, Vec<u8>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            by_start: BTreeMap::new(),
            start_of: HashMap::new(),
        }
    }
}

impl<T: Routed> RouteTable<T> {
    /// Hosts `item`, in place of what was hosted for its shard. Refused when its range
    /// overlaps another hosted shard's.
    pub fn insert(&mut self, item: T) -> Result<(), Overlap> {
        let (shard, start, end) = item.with_descriptor(|d| (d.id, d.start.clone(), d.end.clone()));
        let other = |entry: &T| entry.with_descriptor(|d| (d.id != shard).then_some(d.id));
        let before = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start.as_slice())))
            .next_back()
            .map(|(_, entry)| entry)
            .filter(|entry| entry.with_descriptor(|d| d.id != shard && d.overlaps(&start, &end)));
        let upper = match end.is_empty() {
            true => Bound::Unbounded,
            false => Bound::Excluded(end.as_slice()),
        };
        let within = self
            .by_start
            .range::<[u8], _>((Bound::Included(start.as_slice()), upper))
            .map(|(_, entry)| entry)
            .find(|entry| other(entry).is_some());
        if let Some(hosted) = before.or(within).and_then(other) {
            return Err(Overlap { shard, hosted });
        }
        self.remove(shard);
        self.start_of.insert(shard, start.clone());
        self.by_start.insert(start, item);
        Ok(())
    }

    /// Stops hosting `shard`; returns what was hosted for it.
    pub fn remove(&mut self, shard: ShardId) -> Option<T> {
        let start = self.start_of.remove(&shard)?;
        self.by_start.remove(&start)
    }

    /// The hosted shard whose range holds `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<&T> {
        self.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, entry)| entry)
            .filter(|entry| entry.with_descriptor(|d| d.contains(key)))
    }

    /// What is hosted for `shard`.
    pub fn get(&self, shard: ShardId) -> Option<&T> {
        self.by_start.get(self.start_of.get(&shard)?)
    }

    /// What is hosted for `shard`, to change (its descriptor must keep its start key).
    pub fn get_mut(&mut self, shard: ShardId) -> Option<&mut T> {
        self.by_start.get_mut(self.start_of.get(&shard)?)
    }

    /// Every hosted shard, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.by_start.values()
    }

    /// The hosted shards whose ranges overlap `[start, end)`, in key order.
    pub fn overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a T> {
        // The shard holding `start` begins at or before it; the others between it and end.
        let first = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(key, _)| key.as_slice())
            .unwrap_or(start);
        let (first, upper) = match end.is_empty() {
            true => (first, Bound::Unbounded),
            // An empty or reversed range asks for nothing (and must not reverse the range).
            false => (first.min(end), Bound::Excluded(end)),
        };
        self.by_start
            .range::<[u8], _>((Bound::Included(first), upper))
            .map(|(_, entry)| entry)
            .filter(move |entry| entry.with_descriptor(|d| d.overlaps(start, end)))
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

/// A client's route names another shard, or a version older or newer than the current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleRoute;

/// The epoch a request is proposed with: the one its client routed it by, which must name
/// `current` at its version (a membership change, conf_ver, moves no keys), or the current
/// epoch when the client left routing to the node.
pub fn admit_route(
    current: &ShardDescriptor,
    routed: Option<(ShardId, Epoch)>,
) -> Result<Epoch, StaleRoute> {
    match routed {
        None => Ok(current.epoch),
        Some((shard, epoch)) if shard == current.id && epoch.version == current.epoch.version => {
            Ok(epoch)
        }
        Some(_) => Err(StaleRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: ShardId, start: &str, end: &str) -> ShardDescriptor {
        ShardDescriptor {
            start: start.as_bytes().to_vec(),
            end: end.as_bytes().to_vec(),
            ..ShardDescriptor::whole_keyspace(id, vec![])
        }
    }

    #[test]
    fn a_key_routes_to_the_shard_whose_range_holds_it() {
        let mut table = RouteTable::default();
        table.insert(shard(1, "", "g")).unwrap();
        table.insert(shard(2, "m", "")).unwrap();
        assert_eq!(table.lookup(b"a").map(|d| d.id), Some(1));
        assert_eq!(table.lookup(b"h"), None, "[g, m) is hosted elsewhere");
        assert_eq!(table.lookup(b"zz").map(|d| d.id), Some(2));
        let ids: Vec<_> = table.overlapping(b"f", b"n").map(|d| d.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(table.remove(1).map(|d| d.id), Some(1));
        assert_eq!(table.lookup(b"a"), None);
    }

    #[test]
    fn a_shard_overlapping_a_hosted_one_is_refused_and_its_own_update_is_not() {
        let mut table = RouteTable::default();
        table.insert(shard(1, "a", "m")).unwrap();
        table.insert(shard(2, "m", "t")).unwrap();
        let overlap = table.insert(shard(3, "k", "n")).unwrap_err();
        assert_eq!(
            overlap,
            Overlap {
                shard: 3,
                hosted: 1
            }
        );
        assert!(table.insert(shard(3, "", "b")).is_err());
        assert!(table.insert(shard(3, "s", "")).is_err());
        // Shard 1 after a merge over [m, t) overlaps shard 2 until that one is retired.
        assert!(table.insert(shard(1, "a", "t")).is_err());
        table.remove(2);
        table.insert(shard(1, "a", "t")).unwrap();
        assert_eq!(table.lookup(b"p").map(|d| d.id), Some(1));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn shards_are_found_by_id_and_by_range_among_many() {
        let mut table = RouteTable::default();
        let at = |i: u32| format!("k{i:05}");
        for i in 0..1000u32 {
            let end = if i == 999 { String::new() } else { at(i + 1) };
            table
                .insert(shard(u64::from(i) + 10, &at(i), &end))
                .unwrap();
        }
        assert_eq!(
            table.get(510).map(|d| d.start.clone()),
            Some(at(500).into_bytes())
        );
        assert!(table.get(5).is_none());
        let ids: Vec<_> = table
            .overlapping(at(500).as_bytes(), at(503).as_bytes())
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, [510, 511, 512]);
        // From the middle of a shard to the end of the key space.
        let tail: Vec<_> = table.overlapping(b"k00998x", b"").map(|d| d.id).collect();
        assert_eq!(tail, [1008, 1009]);
        // Any range, reversed ones included, finds what a pass over every shard finds.
        for (start, end) in [(&b"k5"[..], &b"k1"[..]), (b"", b""), (b"k00010", b"k00010")] {
            let expected: Vec<_> = table
                .iter()
                .filter(|d| d.overlaps(start, end))
                .map(|d| d.id)
                .collect();
            let found: Vec<_> = table.overlapping(start, end).map(|d| d.id).collect();
            assert_eq!(found, expected);
        }
        // A shard's update (its end moved by a merge) keeps it findable by id.
        table.remove(511);
        table.insert(shard(510, &at(500), &at(502))).unwrap();
        assert_eq!(
            table.get(510).map(|d| d.end.clone()),
            Some(at(502).into_bytes())
        );
        assert_eq!(table.lookup(at(501).as_bytes()).map(|d| d.id), Some(510));
        assert_eq!(table.len(), 999);
        assert_eq!(table.remove(510).map(|d| d.id), Some(510));
        assert!(table.get(510).is_none() && table.lookup(at(500).as_bytes()).is_none());
    }

    #[test]
    fn a_route_is_current_only_for_the_same_shard_at_the_same_version() {
        let current = shard(4, "a", "m");
        let epoch = current.epoch;
        assert_eq!(admit_route(&current, None), Ok(epoch));
        assert_eq!(admit_route(&current, Some((4, epoch))), Ok(epoch));
        let newer_conf = Epoch {
            conf_ver: epoch.conf_ver + 3,
            ..epoch
        };
        assert_eq!(admit_route(&current, Some((4, newer_conf))), Ok(newer_conf));
        let older = Epoch {
            version: epoch.version - 1,
            ..epoch
        };
        assert_eq!(admit_route(&current, Some((4, older))), Err(StaleRoute));
        assert_eq!(admit_route(&current, Some((5, epoch))), Err(StaleRoute));
    }
}
