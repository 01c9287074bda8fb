//! The meta shard (shard 0): the cluster's routing table and node directory. Its records
//! live in the system keyspace (from [`SYSTEM_KEYSPACE_START`] on), so the meta
//! shard is replicated, snapshotted and moved like any other shard. Shard leaders report
//! their shards to it ([`ShardRequest::Report`](crate::command::ShardRequest::Report)); a report
//! never replaces a newer one, so reports may arrive late and in any order.

use std::collections::BTreeMap;

use crate::descriptor::{Epoch, NodeId, ReplicaDescriptor, ShardDescriptor, ShardId};
use crate::range::SYSTEM_KEYSPACE_START;
use serde::{Deserialize, Serialize};

/// The meta shard's id.
pub const META_SHARD: ShardId = 0;

const ROUTE_PREFIX: &[u8] = b"\xffroute/";
const NODE_PREFIX: &[u8] = b"\xffnode/";
const GRANTS_KEY: &[u8] = b"\xffgrants";

/// The meta shard of a new cluster: the whole system keyspace.
pub fn meta_descriptor(replicas: Vec<ReplicaDescriptor>) -> ShardDescriptor {
    ShardDescriptor {
        start: SYSTEM_KEYSPACE_START.to_vec(),
        ..ShardDescriptor::whole_keyspace(META_SHARD, replicas)
    }
}

/// The first data shard of a new cluster: every user key.
pub fn first_user_descriptor(id: ShardId, replicas: Vec<ReplicaDescriptor>) -> ShardDescriptor {
    ShardDescriptor {
        end: SYSTEM_KEYSPACE_START.to_vec(),
        ..ShardDescriptor::whole_keyspace(id, replicas)
    }
}

/// How much a shard holds and how busy it is, as its leader last measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    pub size_bytes: u64,
    pub keys: u64,
    pub reads_per_sec: u64,
    pub writes_per_sec: u64,
    /// Bytes of keys and values written per second.
    pub bytes_written_per_sec: u64,
    /// The key that halves the shard by size (none with fewer than two keys).
    pub split_key: Option<Vec<u8>>,
    /// The most frequent keys of a sample of the requests since the last report, with
    /// their counts, in key order: where the load falls, for a load split.
    pub sampled_keys: Vec<(Vec<u8>, u64)>,
    /// Requests per second by the region their client named (untagged ones under "").
    pub origins: Vec<(String, u64)>,
    /// Log entries the furthest-behind replica has yet to receive.
    pub replica_lag: u64,
}

/// One routing-table entry: a shard as its leader reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub descriptor: ShardDescriptor,
    pub leader: Option<NodeId>,
    pub stats: ShardStats,
    /// Unix milliseconds of the report, by the reporting node's clock.
    pub reported_at_ms: u64,
}

/// One node-directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: NodeId,
    pub region: String,
    pub addr: String,
    pub reported_at_ms: u64,
}

fn keyed(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The system key of shard `shard`'s routing record.
pub fn route_key(shard: ShardId) -> Vec<u8> {
    keyed(ROUTE_PREFIX, shard)
}

/// The system key of node `node`'s directory record.
pub fn node_key(node: NodeId) -> Vec<u8> {
    keyed(NODE_PREFIX, node)
}

fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("prefix is not empty") += 1;
    (prefix.to_vec(), end)
}

/// The system key of the table of users and roles (`hanse_security::grants`): one
/// record, so a change is one compare-and-swap.
pub fn grants_key() -> Vec<u8> {
    GRANTS_KEY.to_vec()
}

/// The range of every routing record.
pub fn route_range() -> (Vec<u8>, Vec<u8>) {
    prefix_range(ROUTE_PREFIX)
}

/// The range of every node record.
pub fn node_range() -> (Vec<u8>, Vec<u8>) {
    prefix_range(NODE_PREFIX)
}

/// How far past the table's epoch of a range a report's may be. Each split or merge adds
/// one to a version and each membership change one to a conf_ver, and reports come every
/// second: no real shard gets this far ahead of its record. A report that claims more
/// (a huge version would make every genuine report look stale, and replace the records
/// of every shard its range overlaps) is ignored.
pub const REPORT_EPOCH_JUMP_MAX: u64 = 100_000;

fn newer(a: Epoch, b: Epoch) -> bool {
    (a.version, a.conf_ver) > (b.version, b.conf_ver)
}

/// The routing table as the meta shard applies reports to it: records by shard id, and
/// their ranges by start key, so that a report finds the records its range overlaps
/// without a pass over every shard. The table never holds overlapping records
/// ([`record`] replaces what a newer report overlaps), so the one record that can cover a
/// range's start is the last to start at or before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingTable {
    records: BTreeMap<ShardId, ShardRecord>,
    starts: BTreeMap<Vec<u8>, ShardId>,
}

impl RoutingTable {
    pub fn get(&self, shard: ShardId) -> Option<&ShardRecord> {
        self.records.get(&shard)
    }

    /// Adds `record`, or replaces the one of the same shard.
    pub fn insert(&mut self, record: ShardRecord) {
        let d = &record.descriptor;
        if let Some(old) = self.records.get(&d.id)
            && old.descriptor.start != d.start
            && self.starts.get(&old.descriptor.start) == Some(&d.id)
        {
            self.starts.remove(&old.descriptor.start);
        }
        self.starts.insert(d.start.clone(), d.id);
        self.records.insert(d.id, record);
    }

    pub fn remove(&mut self, shard: ShardId) -> Option<ShardRecord> {
        let removed = self.records.remove(&shard)?;
        if self.starts.get(&removed.descriptor.start) == Some(&shard) {
            self.starts.remove(&removed.descriptor.start);
        }
        Some(removed)
    }

    /// The records whose ranges overlap `[start, end)` (an empty `end` is the keyspace's).
    pub fn overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a ShardRecord> + 'a {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let covering = self
            .starts
            .range::<[u8], _>((Unbounded, Included(start)))
            .next_back();
        let inside = self
            .starts
            .range::<[u8], _>((Excluded(start), Unbounded))
            .take_while(move |(s, _)| end.is_empty() || s.as_slice() < end);
        covering
            .into_iter()
            .chain(inside)
            .filter_map(|(_, id)| self.records.get(id))
            .filter(move |r| r.descriptor.overlaps(start, end))
    }

    /// Every record, in shard id order.
    pub fn records(&self) -> impl Iterator<Item = &ShardRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl FromIterator<ShardRecord> for RoutingTable {
    fn from_iter<I: IntoIterator<Item = ShardRecord>>(records: I) -> Self {
        let mut table = RoutingTable::default();
        for record in records {
            table.insert(record);
        }
        table
    }
}

/// What recording `incoming` in the routing `table` changes: `None` when the table
/// already knows something newer about its range (the report is stale) or the report's
/// epoch is past any the table's could have reached (see [`REPORT_EPOCH_JUMP_MAX`]), else
/// the ids of the records it replaces (older shards overlapping its range: a split's
/// parent, a merge's absorbed neighbour).
pub fn record(table: &RoutingTable, incoming: &ShardRecord) -> Option<Vec<ShardId>> {
    let new = &incoming.descriptor;
    let stored = table.get(new.id);
    // The common report: a shard's record again, same range and epoch. The table never
    // holds overlapping records, so nothing else overlaps it.
    if let Some(stored) = stored
        && stored.descriptor.epoch == new.epoch
        && stored.descriptor.start == new.start
        && stored.descriptor.end == new.end
    {
        return Some(Vec::new());
    }
    if let Some(stored) = stored
        && (newer(stored.descriptor.epoch, new.epoch)
            || new.epoch.conf_ver
                > stored
                    .descriptor
                    .epoch
                    .conf_ver
                    .saturating_add(REPORT_EPOCH_JUMP_MAX))
    {
        return None;
    }
    let overlapping: Vec<&ShardRecord> = table.overlapping(&new.start, &new.end).collect();
    let known_version = stored
        .into_iter()
        .chain(overlapping.iter().copied())
        .map(|r| r.descriptor.epoch.version)
        .max();
    if known_version
        .is_some_and(|known| new.epoch.version > known.saturating_add(REPORT_EPOCH_JUMP_MAX))
    {
        return None;
    }
    let mut replaced = Vec::new();
    for other in overlapping {
        let old = &other.descriptor;
        if old.id == new.id {
            continue;
        }
        if old.epoch.version >= new.epoch.version {
            return None;
        }
        replaced.push(old.id);
    }
    replaced.sort_unstable();
    Some(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: ShardId, start: &str, end: &str, version: u64, conf_ver: u64) -> ShardRecord {
        ShardRecord {
            descriptor: ShardDescriptor {
                id,
                start: start.as_bytes().to_vec(),
                end: end.as_bytes().to_vec(),
                ..ShardDescriptor::whole_keyspace(id, Vec::new())
            }
            .with_epoch(version, conf_ver),
            leader: Some(1),
            stats: ShardStats::default(),
            reported_at_ms: 0,
        }
    }

    trait WithEpoch {
        fn with_epoch(self, version: u64, conf_ver: u64) -> Self;
    }

    impl WithEpoch for ShardDescriptor {
        fn with_epoch(self, version: u64, conf_ver: u64) -> Self {
            ShardDescriptor {
                epoch: Epoch { version, conf_ver },
                ..self
            }
        }
    }

    /// Applies reports in order the way the meta shard does.
    fn table_after(reports: &[ShardRecord]) -> Vec<(ShardId, String, String)> {
        let mut table = RoutingTable::default();
        for report in reports {
            if let Some(replaced) = record(&table, report) {
                for id in replaced {
                    table.remove(id);
                }
                table.insert(report.clone());
            }
        }
        let mut rows: Vec<_> = table
            .records()
            .map(|r| {
                let d = &r.descriptor;
                (
                    d.id,
                    String::from_utf8(d.start.clone()).unwrap(),
                    String::from_utf8(d.end.clone()).unwrap(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.1.cmp(&b.1));
        rows
    }

    #[test]
    fn a_split_and_a_merge_converge_whatever_order_the_reports_arrive_in() {
        let parent = rec(1, "", "", 1, 1);
        let left = rec(1, "", "m", 2, 1);
        let right = rec(7, "m", "", 2, 1);
        let merged = rec(1, "", "", 3, 1);
        let split_map = vec![
            (1, String::new(), "m".to_string()),
            (7, "m".to_string(), String::new()),
        ];
        for order in [
            vec![&parent, &left, &right],
            vec![&parent, &right, &left],
            vec![&right, &parent, &left],
            vec![&left, &right, &parent],
        ] {
            let reports: Vec<ShardRecord> = order.into_iter().cloned().collect();
            assert_eq!(table_after(&reports), split_map, "{reports:?}");
        }
        let whole = vec![(1, String::new(), String::new())];
        assert_eq!(
            table_after(&[left.clone(), right.clone(), merged.clone()]),
            whole
        );
        // A late report of the absorbed shard changes nothing.
        assert_eq!(table_after(&[left, merged, right]), whole);
    }

    #[test]
    fn a_report_far_past_the_known_epoch_is_ignored() {
        let genuine = rec(1, "", "", 5, 3);
        let table: RoutingTable = [genuine.clone()].into_iter().collect();
        let jump = REPORT_EPOCH_JUMP_MAX;
        assert_eq!(record(&table, &rec(1, "", "", 5 + jump + 1, 3)), None);
        assert_eq!(record(&table, &rec(1, "", "", 5, 3 + jump + 1)), None);
        assert_eq!(record(&table, &rec(9, "a", "b", u64::MAX, 1)), None);
        assert_eq!(
            record(&table, &rec(1, "", "", 5 + jump, 3 + jump)),
            Some(vec![])
        );
        // A new shard's range is judged by the records it overlaps.
        assert_eq!(record(&table, &rec(9, "a", "b", 6, 1)), Some(vec![1]));
        // Into an empty table any report goes: there is nothing to judge it by.
        assert_eq!(
            record(&RoutingTable::default(), &rec(1, "", "", 1 << 40, 1)),
            Some(vec![])
        );
    }

    #[test]
    fn a_membership_change_replaces_the_record_and_an_old_one_does_not() {
        let before = rec(1, "", "", 1, 1);
        let after = ShardRecord {
            leader: Some(3),
            ..rec(1, "", "", 1, 9)
        };
        let table: RoutingTable = [after.clone()].into_iter().collect();
        assert_eq!(record(&table, &before), None);
        let table: RoutingTable = [before].into_iter().collect();
        assert_eq!(record(&table, &after), Some(vec![]));
        // The same epoch again: fresher stats and leader are taken.
        let table: RoutingTable = [after.clone()].into_iter().collect();
        assert_eq!(record(&table, &after), Some(vec![]));
    }

    #[test]
    fn system_keys_sort_after_every_user_key_and_stay_in_the_meta_shard() {
        let meta = meta_descriptor(Vec::new());
        let first = first_user_descriptor(1, Vec::new());
        for key in [route_key(0), route_key(u64::MAX), node_key(3)] {
            assert!(crate::range::is_system_key(&key));
            assert!(meta.contains(&key) && !first.contains(&key));
        }
        assert!(first.contains(&[0xfe; 40]) && !meta.contains(&[0xfe; 40]));
        let (start, end) = route_range();
        assert!(route_key(5) >= start && route_key(5) < end);
        assert!(node_key(5) < start || node_key(5) >= end);
    }

    #[test]
    fn the_same_record_again_replaces_nothing_and_a_stale_one_is_still_refused() {
        let table: RoutingTable = [rec(1, "", "m", 2, 1), rec(7, "m", "", 2, 1)]
            .into_iter()
            .collect();
        let again = ShardRecord {
            reported_at_ms: 99,
            ..rec(7, "m", "", 2, 1)
        };
        assert_eq!(record(&table, &again), Some(vec![]));
        assert_eq!(record(&table, &rec(7, "m", "", 1, 1)), None);
        assert_eq!(record(&table, &rec(7, "m", "", 3, 1)), Some(vec![]));
    }

    proptest::proptest! {
        /// The start-key index finds exactly what a pass over every record finds, after
        /// inserts, moves of a shard's start, and removals.
        #[test]
        fn the_index_finds_the_overlapping_records_a_full_pass_finds(
            cuts in proptest::collection::btree_set(1u8..200, 0..20),
            moved in 0usize..20,
            removed in 0usize..20,
            query in (0u8..210, 0u8..210),
        ) {
            let key = |b: u8| vec![b];
            let bounds: Vec<Vec<u8>> = std::iter::once(Vec::new())
                .chain(cuts.iter().map(|&c| key(c)))
                .chain(std::iter::once(Vec::new()))
                .collect();
            let mut table = RoutingTable::default();
            for (i, pair) in bounds.windows(2).enumerate() {
                let mut r = rec(i as u64, "", "", 1, 1);
                r.descriptor.start = pair[0].clone();
                r.descriptor.end = pair[1].clone();
                table.insert(r);
            }
            // A shard whose range shrank from the left (its neighbour took the keys).
            if let Some(mut r) = table.get(moved as u64).cloned()
                && !r.descriptor.end.is_empty()
                && r.descriptor.start.len() == 1
                && r.descriptor.start[0] + 1 < r.descriptor.end[0]
            {
                r.descriptor.start = key(r.descriptor.start[0] + 1);
                table.insert(r);
            }
            table.remove(removed as u64);
            let (a, b) = (query.0.min(query.1), query.0.max(query.1));
            for (start, end) in [(key(a), key(b)), (key(a), Vec::new()), (Vec::new(), key(b))] {
                let mut found: Vec<ShardId> =
                    table.overlapping(&start, &end).map(|r| r.descriptor.id).collect();
                found.sort_unstable();
                let expected: Vec<ShardId> = table
                    .records()
                    .filter(|r| r.descriptor.overlaps(&start, &end))
                    .map(|r| r.descriptor.id)
                    .collect();
                proptest::prop_assert_eq!(found, expected);
            }
        }
    }
}
