//! What the meta shard's leader keeps of the cluster's recent life for the web console:
//! the key heat map (each shard's range and load over time, in the manner of TiDB's Key
//! Visualizer) and the balancing actions begun. Both are bounded rings in memory: a new
//! meta leader starts them afresh.
//!
//! The balancer adds the routing table's loads every round (its leaders' one-second
//! rates); every [`HEAT_COLUMN_INTERVAL`] the rounds so far become one column of their
//! averages. [`HEAT_COLUMNS_KEPT`] columns cover half an hour; with `n` shards they hold
//! about `HEAT_COLUMNS_KEPT × n` ranges (two keys and three numbers each: about 35 MiB
//! for 1,000 shards with 60-byte keys).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use hanse_proto::v1 as pb;
use hanse_shard::ShardId;
use hanse_shard::meta::ShardRecord;

/// How much time one heat-map column averages.
pub(crate) const HEAT_COLUMN_INTERVAL: Duration = Duration::from_secs(10);
/// Columns kept: half an hour.
pub(crate) const HEAT_COLUMNS_KEPT: usize = 180;
/// Balancing actions kept.
pub(crate) const ACTIONS_KEPT: usize = 100;

/// One shard's load summed over a column's rounds.
#[derive(Debug, Clone, Default)]
struct Summed {
    start: Vec<u8>,
    end: Vec<u8>,
    reads: u64,
    writes: u64,
}

/// The column being gathered: loads summed per shard over `rounds` rounds.
#[derive(Debug, Default)]
struct Gathering {
    began_ms: u64,
    rounds: u64,
    shards: BTreeMap<ShardId, Summed>,
}

impl Gathering {
    /// The column of averages, ranges in key order.
    fn column(&self, unix_ms: u64) -> pb::HeatColumn {
        let rounds = self.rounds.max(1);
        let mut ranges: Vec<pb::HeatRange> = self
            .shards
            .iter()
            .map(|(&shard_id, s)| pb::HeatRange {
                shard_id,
                start: s.start.clone(),
                end: s.end.clone(),
                reads_per_sec: s.reads / rounds,
                writes_per_sec: s.writes / rounds,
            })
            .collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        pb::HeatColumn { unix_ms, ranges }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Activity {
    columns: VecDeque<pb::HeatColumn>,
    gathering: Gathering,
    actions: VecDeque<pb::BalanceAction>,
}

impl Activity {
    /// Adds one round of the routing table, read at `now_ms`.
    pub(crate) fn observe(&mut self, table: &[ShardRecord], now_ms: u64) {
        let interval = HEAT_COLUMN_INTERVAL.as_millis() as u64;
        if self.gathering.rounds == 0 {
            self.gathering.began_ms = now_ms;
        } else if now_ms.saturating_sub(self.gathering.began_ms) >= interval {
            if self.columns.len() == HEAT_COLUMNS_KEPT {
                self.columns.pop_front();
            }
            self.columns.push_back(self.gathering.column(now_ms));
            self.gathering = Gathering {
                began_ms: now_ms,
                ..Gathering::default()
            };
        }
        self.gathering.rounds += 1;
        for record in table {
            let d = &record.descriptor;
            let summed = self.gathering.shards.entry(d.id).or_default();
            // A shard that split during the column keeps its newest range.
            summed.start.clone_from(&d.start);
            summed.end.clone_from(&d.end);
            summed.reads += record.stats.reads_per_sec;
            summed.writes += record.stats.writes_per_sec;
        }
    }

    /// Notes a balancing action begun at `unix_ms`.
    pub(crate) fn action(&mut self, action: pb::BalanceAction) {
        if self.actions.len() == ACTIONS_KEPT {
            self.actions.pop_front();
        }
        self.actions.push_back(action);
    }

    /// With `heat_map`, the kept columns and the one being gathered last (as of
    /// `now_ms`); and the actions.
    pub(crate) fn snapshot(
        &self,
        now_ms: u64,
        heat_map: bool,
    ) -> (Vec<pb::HeatColumn>, Vec<pb::BalanceAction>) {
        let mut columns = Vec::new();
        if heat_map {
            columns.extend(self.columns.iter().cloned());
            if self.gathering.rounds > 0 {
                columns.push(self.gathering.column(now_ms));
            }
        }
        (columns, self.actions.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_shard::meta::ShardStats;
    use hanse_shard::{Epoch, ShardDescriptor};

    fn record(id: ShardId, start: &[u8], end: &[u8], reads: u64) -> ShardRecord {
        ShardRecord {
            descriptor: ShardDescriptor {
                id,
                start: start.to_vec(),
                end: end.to_vec(),
                epoch: Epoch::default(),
                replicas: Vec::new(),
                merging: None,
            },
            leader: None,
            stats: ShardStats {
                reads_per_sec: reads,
                ..ShardStats::default()
            },
            reported_at_ms: 0,
        }
    }

    #[test]
    fn columns_average_their_rounds_and_the_ring_stays_bounded() {
        let mut activity = Activity::default();
        let step = HEAT_COLUMN_INTERVAL.as_millis() as u64 / 2;
        let table = |reads| vec![record(2, b"m", b"", 0), record(1, b"", b"m", reads)];
        activity.observe(&table(10), 0);
        activity.observe(&table(30), step);
        let (columns, _) = activity.snapshot(step, true);
        assert_eq!(columns.len(), 1, "the column being gathered shows");
        let first = &columns[0].ranges;
        assert_eq!(first[0].start, b"", "key order");
        assert_eq!(first[0].reads_per_sec, 20, "the average of 10 and 30");
        assert_eq!(first[1].reads_per_sec, 0);
        for round in 2..(HEAT_COLUMNS_KEPT as u64 * 2 + 10) {
            activity.observe(&table(round), round * step);
        }
        let (columns, _) = activity.snapshot(u64::MAX, true);
        assert_eq!(columns.len(), HEAT_COLUMNS_KEPT + 1);
        assert!(columns.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms));
        for i in 0..ACTIONS_KEPT as u64 + 5 {
            activity.action(pb::BalanceAction {
                unix_ms: i,
                ..Default::default()
            });
        }
        let (_, actions) = activity.snapshot(0, false);
        assert_eq!(actions.len(), ACTIONS_KEPT);
        assert_eq!(actions[0].unix_ms, 5, "the oldest go first");
    }
}
