//! The node's report to the meta shard, once a second: the node itself (region, address)
//! and every shard it leads whose record changed since it was last sent (descriptor,
//! leader, size, load), all of them every [`REPORT_REFRESH`]. The meta shard keeps the
//! newest report of each shard. An idle shard costs the meta shard nothing: over
//! thousands of shards, resending unchanged records made the meta shard's replicas the
//! cluster's largest idle cost.
//!
//! A shard's size comes from a pass over its range ([`Engine::range_size`]) plus what was
//! written since (see [`Measured::estimate`] for when it is measured again).

use crate::knobs::{
    BUSY_WAIT, REMEASURE_AFTER, REMEASURE_AFTER_BYTES, REMEASURE_BYTES_MIN, REMEASURE_FRACTION,
    REPORT_INTERVAL, REPORT_REFRESH,
};
use hanse_storage::Store;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hanse_proto::v1 as pb;
use hanse_shard::ShardRequest;
use hanse_shard::meta::{self, META_SHARD, NodeRecord, ShardRecord, ShardStats};
use hanse_shard::{Epoch, NodeId, ShardId};
use hanse_storage::{Cf, RangeSize, ScanOrder, codec};
use hanse_storage_rocksdb::Engine;
use tokio::sync::Mutex;
use tonic::Status;

use crate::actors::{ReplicaError, ReplicaHandle, Routes};
use crate::peers::Peers;
use crate::round_trips::{self, ClusterRoundTrips};
use hanse_consensus::round_trip::PeerRoundTrip;
use hanse_proto::convert::{node_to_proto, report_to_proto};

/// How long a measurement of a shard of `bytes` stands while it takes only a few writes.
fn remeasure_after(bytes: u64) -> Duration {
    let units = (bytes / REMEASURE_AFTER_BYTES).clamp(1, u32::MAX as u64) as u32;
    REMEASURE_AFTER.saturating_mul(units)
}

/// A shard's last measurement.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub epoch: Epoch,
    pub size: RangeSize,
    /// Bytes put into the shard since this measurement (keys and values; an overwrite
    /// counts whole, so this is an upper bound of the growth).
    pub written_since: u64,
    /// Bytes deleted from it since, estimated at one average entry per delete.
    pub deleted_since: u64,
    pub at: Instant,
}

impl Measured {
    /// The shard's size as this measurement and the writes since tell it, or `None` when
    /// it should be measured again: its range changed (`epoch`), it may just have grown
    /// past `split_size` (a split then wants a fresh middle key), deletes may have shrunk
    /// it by an eighth (a merge wants to know), or any write came after a measurement
    /// that is old for its size. A pass over the range costs in proportion to its size:
    /// during a bulk load, measuring at every eighth of growth read each shard many times
    /// over.
    fn estimate(&self, epoch: Epoch, split_size: u64) -> Option<RangeSize> {
        let measured = &self.size;
        let grown = measured.bytes.saturating_add(self.written_since);
        let threshold = (measured.bytes / REMEASURE_FRACTION).max(REMEASURE_BYTES_MIN);
        let changed = self.written_since + self.deleted_since > 0;
        let remeasure = self.epoch != epoch
            || (grown > split_size && measured.bytes <= split_size)
            || self.deleted_since >= threshold
            || (changed && self.at.elapsed() > remeasure_after(measured.bytes));
        if remeasure {
            return None;
        }
        let entry_bytes = (measured.bytes / measured.keys.max(1)).max(1);
        Some(RangeSize {
            bytes: grown.saturating_sub(self.deleted_since),
            keys: measured.keys + self.written_since / entry_bytes,
            middle_key: measured.middle_key.clone(),
        })
    }
}

pub(crate) struct Reporter {
    node: NodeRecord,
    transport: Arc<hanse_consensus::Transport>,
    round_trips: Arc<ClusterRoundTrips>,
    engine: Arc<Engine>,
    routes: Arc<Routes>,
    peers: Arc<Peers>,
    measured: Mutex<HashMap<ShardId, Measured>>,
    /// The cluster's split size: a shard's size is measured again when it may cross it.
    split_size_bytes: u64,
    last_report: Mutex<Instant>,
    learners: Mutex<LearnerLag>,
    sent: Mutex<Sent>,
}

/// The shard records the meta shard last took from this node, and when all were last
/// sent.
struct Sent {
    records: HashMap<ShardId, ShardRecord>,
    refreshed: Instant,
}

impl Sent {
    /// Of `records` (every shard this node leads), those to send: each that changed
    /// since it was last sent, or all of them once a refresh is due.
    fn due(&mut self, records: Vec<ShardRecord>, now: Instant) -> Vec<ShardRecord> {
        let led: HashSet<ShardId> = records.iter().map(|r| r.descriptor.id).collect();
        self.records.retain(|id, _| led.contains(id));
        if now.duration_since(self.refreshed) >= REPORT_REFRESH {
            self.records.clear();
            self.refreshed = now;
        }
        records
            .into_iter()
            .filter(|r| {
                // Everything but the time of the report (a field added to the record
                // must be placed here).
                let ShardRecord {
                    descriptor,
                    leader,
                    stats,
                    reported_at_ms: _,
                } = r;
                self.records.get(&descriptor.id).is_none_or(|last| {
                    (&last.descriptor, last.leader, &last.stats) != (descriptor, *leader, stats)
                })
            })
            .collect()
    }

    /// Notes that the meta shard took `records`.
    fn taken(&mut self, records: Vec<ShardRecord>) {
        for record in records {
            self.records.insert(record.descriptor.id, record);
        }
    }
}

/// How far behind the learners of the shards this node leads are, in time: when each
/// last held every entry its leader had one report earlier.
#[derive(Default)]
struct LearnerLag {
    /// Each led shard's last log index at the previous report.
    last_log: HashMap<ShardId, u64>,
    caught_up: HashMap<(ShardId, NodeId), Instant>,
}

impl LearnerLag {
    /// Notes where the learners of `replica`'s shard (led here) stand now.
    fn observe(&mut self, replica: &ReplicaHandle, now: Instant) {
        let shard = replica.shard;
        let metrics = replica.group.raft.metrics();
        let metrics = metrics.borrow();
        let last = metrics.last_log_index.unwrap_or(0);
        let target = self.last_log.insert(shard, last).unwrap_or(last);
        for learner in replica.descriptor().replicas.iter() {
            if learner.role != hanse_shard::ReplicaRole::Learner {
                continue;
            }
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&learner.node).copied().flatten())
                .map_or(0, |id| id.index);
            let since = self.caught_up.entry((shard, learner.node)).or_insert(now);
            if matched >= target {
                *since = now;
            }
        }
    }

    /// Forgets shards not led here any more; the furthest behind learner's lag.
    fn worst(&mut self, led: &HashSet<ShardId>, now: Instant) -> Duration {
        self.last_log.retain(|shard, _| led.contains(shard));
        self.caught_up.retain(|(shard, _), _| led.contains(shard));
        self.caught_up
            .values()
            .map(|since| now - *since)
            .max()
            .unwrap_or_default()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Reporter {
    pub(crate) fn new(
        node: NodeRecord,
        (transport, round_trips): (Arc<hanse_consensus::Transport>, Arc<ClusterRoundTrips>),
        engine: Arc<Engine>,
        routes: Arc<Routes>,
        peers: Arc<Peers>,
        split_size_bytes: u64,
    ) -> Self {
        Reporter {
            node,
            transport,
            round_trips,
            engine,
            routes,
            peers,
            measured: Mutex::new(HashMap::new()),
            split_size_bytes,
            last_report: Mutex::new(Instant::now()),
            learners: Mutex::new(LearnerLag::default()),
            sent: Mutex::new(Sent {
                records: HashMap::new(),
                refreshed: Instant::now(),
            }),
        }
    }

    /// Reports every `REPORT_INTERVAL` until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(REPORT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = self.report_once().await {
                tracing::debug!("reporting to the meta shard failed: {}", e.message());
            }
        }
    }

    /// The shard's size, measured again when it changed or grew enough.
    /// `written` bytes and `deletes` since the last report count toward the next
    /// measurement.
    async fn size_of(&self, replica: &ReplicaHandle, written: u64, deletes: u64) -> RangeSize {
        let descriptor = replica.descriptor();
        let mut measured = self.measured.lock().await;
        // The meta shard is written by reports, not by counted requests, and is small.
        if let Some(m) = measured.get_mut(&replica.shard)
            && replica.shard != META_SHARD
        {
            // A delete frees about one average entry.
            let entry_bytes = m.size.bytes / m.size.keys.max(1);
            m.written_since += written;
            m.deleted_since += deletes * entry_bytes;
            if let Some(size) = m.estimate(descriptor.epoch, self.split_size_bytes) {
                replica.load.size_bytes.store(size.bytes, Ordering::Relaxed);
                return size;
            }
        }
        let engine = self.engine.clone();
        let (start, end) = (descriptor.start.clone(), descriptor.end.clone());
        let size = tokio::task::spawn_blocking(move || engine.range_size(&start, &end))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        replica.load.size_bytes.store(size.bytes, Ordering::Relaxed);
        measured.insert(
            replica.shard,
            Measured {
                epoch: descriptor.epoch,
                size: size.clone(),
                written_since: 0,
                deleted_since: 0,
                at: Instant::now(),
            },
        );
        size
    }

    async fn report_once(&self) -> Result<(), Status> {
        let elapsed = {
            let mut last = self.last_report.lock().await;
            let elapsed = last.elapsed().as_secs_f64().max(0.001);
            *last = Instant::now();
            elapsed
        };
        let reported_at_ms = now_ms();
        let mut shards = Vec::new();
        let per_sec = |count: u64| (count as f64 / elapsed).round() as u64;
        let now = Instant::now();
        let mut learners = self.learners.lock().await;
        let mut led = HashSet::new();
        let mut unled = Vec::new();
        // Every node this one shares a shard with, for the round trips.
        let mut peers = std::collections::BTreeMap::new();
        for replica in self.routes.all() {
            let metrics = replica.group.raft.metrics();
            for (&node, member) in metrics.borrow().membership_config.membership().nodes() {
                peers.entry(node).or_insert_with(|| member.clone());
            }
            // Every replica's counters start afresh each tick; a leader's are reported.
            let load = &replica.load;
            let reads = load.reads.swap(0, Ordering::Relaxed);
            let writes = load.writes.swap(0, Ordering::Relaxed);
            let written = load.bytes_written.swap(0, Ordering::Relaxed);
            let deletes = load.deletes.swap(0, Ordering::Relaxed);
            let sampled_keys = load.sampled.lock().expect("sampler lock").take();
            let origins = std::mem::take(&mut *load.origins.lock().expect("origins lock"));
            if !replica.leads() {
                unled.push(replica.shard);
                continue;
            }
            learners.observe(&replica, now);
            led.insert(replica.shard);
            let size = self.size_of(&replica, written, deletes).await;
            let mut origins: Vec<(String, u64)> = origins
                .into_iter()
                .map(|(region, count)| (region, per_sec(count)))
                .collect();
            origins.sort();
            shards.push(ShardRecord {
                descriptor: replica.descriptor(),
                leader: replica.leader(),
                stats: ShardStats {
                    size_bytes: size.bytes,
                    keys: size.keys,
                    reads_per_sec: per_sec(reads),
                    writes_per_sec: per_sec(writes),
                    bytes_written_per_sec: per_sec(written),
                    split_key: size.middle_key,
                    sampled_keys,
                    origins,
                    replica_lag: replica_lag(&replica),
                },
                reported_at_ms,
            });
        }
        // Measured afresh should they lead again: their writes meanwhile were not counted
        // here. One lock for all: over thousands of shards this runs every second.
        let mut measured = self.measured.lock().await;
        for shard in unled {
            measured.remove(&shard);
        }
        drop(measured);
        let worst = learners.worst(&led, now);
        drop(learners);
        crate::metrics::METRICS.learner_lag.set(worst.as_secs_f64());
        let node = NodeRecord {
            reported_at_ms,
            ..self.node.clone()
        };
        self.transport.probe_unmeasured(peers);
        let trips = self.transport.round_trips();
        for trip in &trips {
            crate::metrics::METRICS
                .peer_round_trip
                .with_label_values(&[&trip.node.to_string()])
                .set(trip.round_trip.as_secs_f64());
        }
        let measured = Some((self.round_trips.as_ref(), trips));
        let mut sent = self.sent.lock().await;
        let due = sent.due(shards, now);
        send_report(&self.routes, &self.peers, due.clone(), vec![node], measured).await?;
        sent.taken(due);
        Ok(())
    }
}

/// Log entries the furthest-behind replica of a shard this node leads has yet to receive
/// (a replica that has acknowledged nothing yet counts from the log's start).
fn replica_lag(replica: &ReplicaHandle) -> u64 {
    let metrics = replica.group.raft.metrics();
    let metrics = metrics.borrow();
    let last = metrics.last_log_index.unwrap_or(0);
    metrics
        .replication
        .iter()
        .flat_map(|r| r.values())
        .map(|matched| last.saturating_sub(matched.map_or(0, |id| id.index)))
        .max()
        .unwrap_or(0)
}

/// The meta shard's routing table in key order and its node directory by id, read here
/// after a read barrier (this node must lead the meta shard).
pub(crate) async fn read_routing_table(
    engine: &Engine,
    meta: &ReplicaHandle,
) -> Result<(Vec<ShardRecord>, HashMap<NodeId, NodeRecord>), Status> {
    // A moment of Busy (the meta shard's leadership or roles moving) is waited out.
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match meta.read_barrier().await {
            Ok(_) => break,
            Err(ReplicaError::Busy { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
    }
    let read = |(start, end): (Vec<u8>, Vec<u8>)| {
        engine
            .scan(Cf::Data, &start, &end, usize::MAX, ScanOrder::Forward)
            .map_err(|e| Status::internal(e.to_string()))
    };
    let mut nodes = HashMap::new();
    for record in read(meta::node_range())? {
        if let Some(node) = decoded::<NodeRecord>(&record, "node record") {
            nodes.insert(node.node, node);
        }
    }
    let mut shards = Vec::new();
    for record in read(meta::route_range())? {
        shards.extend(decoded::<ShardRecord>(&record, "routing record"));
    }
    shards.sort_by(|a, b| a.descriptor.start.cmp(&b.descriptor.start));
    Ok((shards, nodes))
}

/// One record of the routing table, decoded; one that does not decode (a bug, or a
/// damaged store) is left out and logged: it must not take the whole table, and every
/// client's routing, with it.
fn decoded<T: serde::de::DeserializeOwned>(
    (key, bytes): &(Vec<u8>, Vec<u8>),
    what: &'static str,
) -> Option<T> {
    codec::decode(what, bytes)
        .inspect_err(|e| tracing::error!(key = ?key, "left out of the routing table: {e}"))
        .ok()
}

/// Records `shards` and `nodes` in the meta shard: proposed here when this node leads it,
/// else sent to its leader; with them the round trips the one node of `nodes` measured,
/// kept in the meta leader's memory (`measured`: where this node keeps them).
pub(crate) async fn send_report(
    routes: &Routes,
    peers: &Peers,
    shards: Vec<ShardRecord>,
    nodes: Vec<NodeRecord>,
    measured: Option<(&ClusterRoundTrips, Vec<PeerRoundTrip>)>,
) -> Result<(), Status> {
    let meta = routes
        .get(META_SHARD)
        .ok_or_else(|| Status::unavailable("this node holds no replica of the meta shard"))?;
    let (kept, trips) = measured.map_or((None, Vec::new()), |(kept, trips)| (Some(kept), trips));
    if meta.leads() {
        if let (Some(kept), [node]) = (kept, nodes.as_slice()) {
            kept.record(node.node, trips);
        }
        let request = ShardRequest::Report { shards, nodes };
        meta.propose(request)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        return Ok(());
    }
    let leader = meta
        .leader()
        .ok_or_else(|| Status::unavailable("the meta shard has no leader at the moment"))?;
    let request = pb::ReportRequest {
        shards: shards.iter().map(report_to_proto).collect(),
        nodes: nodes.iter().map(node_to_proto).collect(),
        round_trips: trips.iter().map(round_trips::to_proto).collect(),
    };
    let addr = meta.member_addr(Some(leader));
    peers.admin(&addr)?.report(request).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_shard::ShardDescriptor;

    fn record(id: ShardId, reads: u64, at_ms: u64) -> ShardRecord {
        ShardRecord {
            descriptor: ShardDescriptor::whole_keyspace(id, Vec::new()),
            leader: Some(1),
            stats: ShardStats {
                reads_per_sec: reads,
                ..ShardStats::default()
            },
            reported_at_ms: at_ms,
        }
    }

    #[test]
    fn writes_add_to_the_measurement_until_the_split_size_may_be_crossed() {
        let epoch = Epoch::default();
        let mib = 1 << 20;
        let mut m = Measured {
            epoch,
            size: RangeSize {
                keys: 1000,
                bytes: 10 * mib,
                middle_key: Some(b"m".to_vec()),
            },
            written_since: 0,
            deleted_since: 0,
            at: Instant::now(),
        };
        let split = 64 * mib;
        assert_eq!(m.estimate(epoch, split), Some(m.size.clone()));
        // Growth far past an eighth is added, not measured.
        m.written_since = 40 * mib;
        let grown = m.estimate(epoch, split).unwrap();
        assert_eq!((grown.bytes, grown.keys), (50 * mib, 5000));
        assert_eq!(grown.middle_key.as_deref(), Some(&b"m"[..]));
        // Past the split size, or after a split or merge: measured again.
        m.written_since = 60 * mib;
        assert_eq!(m.estimate(epoch, split), None);
        m.written_since = 0;
        let next = Epoch {
            version: epoch.version + 1,
            ..epoch
        };
        assert_eq!(m.estimate(next, split), None);
        // Deletes of an eighth: measured again (a merge may be due).
        m.deleted_since = 2 * mib;
        assert_eq!(m.estimate(epoch, split), None);
        // Already past the split size (waiting for the split): growth is only added.
        m.deleted_since = 0;
        m.size.bytes = 70 * mib;
        m.written_since = mib;
        assert_eq!(m.estimate(epoch, split).map(|s| s.bytes), Some(71 * mib));
    }

    #[test]
    fn a_larger_shard_keeps_its_measurement_longer_under_a_trickle_of_writes() {
        assert_eq!(remeasure_after(0), REMEASURE_AFTER);
        assert_eq!(remeasure_after(REMEASURE_AFTER_BYTES - 1), REMEASURE_AFTER);
        assert_eq!(
            remeasure_after(16 * REMEASURE_AFTER_BYTES),
            16 * REMEASURE_AFTER
        );
        assert!(remeasure_after(u64::MAX) >= remeasure_after(u64::MAX / 2));
    }

    #[test]
    fn only_changed_records_are_sent_until_a_refresh_sends_all() {
        let start = Instant::now();
        let mut sent = Sent {
            records: HashMap::new(),
            refreshed: start,
        };
        let ids = |records: &[ShardRecord]| -> Vec<ShardId> {
            records.iter().map(|r| r.descriptor.id).collect()
        };
        let first = sent.due(vec![record(1, 0, 1), record(2, 5, 1)], start);
        assert_eq!(ids(&first), [1, 2]);
        sent.taken(first);
        // Only the time moved for shard 1; shard 2's load changed.
        let second = sent.due(vec![record(1, 0, 2), record(2, 6, 2)], start);
        assert_eq!(ids(&second), [2]);
        // A report the meta shard did not take is due again.
        let third = sent.due(vec![record(1, 0, 3), record(2, 6, 3)], start);
        assert_eq!(ids(&third), [2]);
        sent.taken(third);
        assert!(
            sent.due(vec![record(1, 0, 4), record(2, 6, 4)], start)
                .is_empty()
        );
        // A shard led again after a while away is sent anew.
        assert!(sent.due(vec![record(2, 6, 5)], start).is_empty());
        assert_eq!(ids(&sent.due(vec![record(1, 0, 6)], start)), [1]);
        let later = start + REPORT_REFRESH;
        assert_eq!(
            ids(&sent.due(vec![record(1, 0, 7), record(2, 6, 7)], later)),
            [1, 2]
        );
    }
}
