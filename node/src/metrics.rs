//! The node's Prometheus metrics, and the exposition its HTTP port serves: these, the
//! consensus layer's and the storage engine's, all in the process's default registry,
//! each sample labelled with the node and its region.
//!
//! Names follow Prometheus' conventions (`hanse_<subsystem>_<name>_<unit>`, `_total`
//! counters, base units). The `hanse_debugging_` ones describe internals and may change
//! between releases; the rest are the stable set dashboards and alerts are built on.
//! Labels stay bounded: node, region, op, outcome, role, reason, kind; never a shard or
//! a key.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hanse_proto::v1 as pb;
use prometheus::proto::LabelPair;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, TextEncoder, exponential_buckets, register_gauge, register_gauge_vec,
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec,
};

pub(crate) struct Metrics {
    /// Kv requests by op and outcome.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Requests answered `ServerBusy`, by why.
    pub busy_refusals: IntCounterVec,
    pub follower_reads: IntCounter,
    /// How old, at most, the data a follower read served was.
    pub follower_read_staleness: Histogram,
    pub leader_changes: IntCounter,
    pub replica_restarts: IntCounter,
    /// This node's replicas by role (`voter`, `learner`) and those it leads (`leader`).
    pub replicas: IntGaugeVec,
    /// Hosted replicas whose shard has no leader this node knows of.
    pub leaderless: IntGauge,
    /// How long the furthest-behind learner of a shard led here has not held everything
    /// its leader had a report (a second) earlier.
    pub learner_lag: Gauge,
    pub ingest_batches: IntCounter,
    pub ingest_batch_writes: Histogram,
    pub ingest_forwarded_batches: IntCounter,
    /// Planner and balancer actions carried out, by kind and by who decided.
    pub planner_decisions: IntCounterVec,
    /// One round of the balancer on the meta shard's leader (reading the routing table,
    /// deciding, starting its actions).
    pub balancer_round: Histogram,
    /// The smoothed round trip to each peer node, as the Raft transport measures it.
    pub peer_round_trip: GaugeVec,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    requests: register_int_counter_vec!(
        "hanse_kv_requests_total",
        "Kv requests served by this node, by op and outcome.",
        &["op", "outcome"]
    )
    .expect("registered once"),
    request_duration: register_histogram_vec!(
        "hanse_kv_request_duration_seconds",
        "Time this node took to answer a Kv request, by op.",
        &["op"],
        exponential_buckets(100e-6, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    busy_refusals: register_int_counter_vec!(
        "hanse_kv_busy_refusals_total",
        "Kv requests answered ServerBusy, by reason (replica_busy: a replica's mailbox, its \
         request permits or the ingest queue were full; unavailable: no quorum or restarting; merging: the \
         shard is frozen for a merge; storage: a local read failed).",
        &["reason"]
    )
    .expect("registered once"),
    follower_reads: register_int_counter!(
        "hanse_kv_follower_reads_total",
        "Bounded-staleness reads served by a replica that does not lead its shard."
    )
    .expect("registered once"),
    follower_read_staleness: register_histogram!(
        "hanse_kv_follower_read_staleness_seconds",
        "Upper bound of how stale a follower read's data was.",
        exponential_buckets(1e-3, 2.0, 14).expect("valid buckets")
    )
    .expect("registered once"),
    leader_changes: register_int_counter!(
        "hanse_raft_leader_changes_total",
        "Changes of a shard's leader as this node's replicas saw them."
    )
    .expect("registered once"),
    replica_restarts: register_int_counter!(
        "hanse_node_replica_restarts_total",
        "Replicas restarted after their actor or Raft group died."
    )
    .expect("registered once"),
    replicas: register_int_gauge_vec!(
        "hanse_node_replicas",
        "Replicas this node hosts, by role (voter, learner; leader: those it leads).",
        &["role"]
    )
    .expect("registered once"),
    leaderless: register_int_gauge!(
        "hanse_node_shards_without_leader",
        "Replicas on this node whose shard has no leader the node knows of."
    )
    .expect("registered once"),
    learner_lag: register_gauge!(
        "hanse_raft_learner_lag_seconds",
        "How long the furthest-behind learner (a recovery-region replica) of the shards \
         this node leads has lacked entries its leader had a second before."
    )
    .expect("registered once"),
    ingest_batches: register_int_counter!(
        "hanse_ingest_batches_total",
        "Batches the ingest actor proposed."
    )
    .expect("registered once"),
    ingest_batch_writes: register_histogram!(
        "hanse_ingest_batch_writes",
        "Client writes in one ingest batch.",
        exponential_buckets(1.0, 2.0, 12).expect("valid buckets")
    )
    .expect("registered once"),
    ingest_forwarded_batches: register_int_counter!(
        "hanse_ingest_forwarded_batches_total",
        "Ingest batches sent to their shard's leader on another node."
    )
    .expect("registered once"),
    planner_decisions: register_int_counter_vec!(
        "hanse_planner_decisions_total",
        "Balancing actions begun, by kind (split, merge, transfer_leader, add_replica, \
         remove_replica, move_replica, change_role, swap_roles) and by who decided (planner, or the \
         balancer's size_rule, region_rule, placement_rule, leader_rule).",
        &["kind", "decided_by"]
    )
    .expect("registered once"),
    balancer_round: register_histogram!(
        "hanse_balancer_round_seconds",
        "One balancer round on the meta shard's leader: the routing table read, the \
         decisions and the start of their actions.",
        prometheus::exponential_buckets(100e-6, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    peer_round_trip: register_gauge_vec!(
        "hanse_raft_peer_round_trip_seconds",
        "The smoothed round trip to each peer node (by its id), as this node's Raft \
         transport measures it: the fastest call of each two-second window.",
        &["peer"]
    )
    .expect("registered once"),
}
});

/// Registers every metric of the node, the consensus layer and the engine, so that a
/// scrape lists all of them from the start, not only those used since.
pub(crate) fn register_all() {
    // The labels known in advance start at zero, so a rate over them is defined at once.
    for reason in ["replica_busy", "unavailable", "merging", "storage"] {
        METRICS.busy_refusals.with_label_values(&[reason]);
    }
    for role in ["voter", "learner", "leader"] {
        METRICS.replicas.with_label_values(&[role]);
    }
    hanse_consensus::metrics::METRICS.register_outcomes();
    LazyLock::force(&hanse_storage_rocksdb::metrics::METRICS);
}

/// The metadata key a client may name its request by (else the node numbers it).
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client.
const REQUEST_ID_BYTES_MAX: usize = 64;

/// One Kv request as the node records it: timed, counted once dropped under the outcome
/// last set (`cancelled` if the handler never said: the caller went away mid-request),
/// and logged at debug level under its request id, which the span carries through the
/// write path.
pub(crate) struct RequestMetrics {
    op: &'static str,
    started: Instant,
    outcome: Cell<&'static str>,
    pub span: tracing::Span,
}

impl RequestMetrics {
    pub(crate) fn start(op: &'static str, metadata: &tonic::metadata::MetadataMap) -> Self {
        static NUMBERED: AtomicU64 = AtomicU64::new(0);
        let named = metadata
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= REQUEST_ID_BYTES_MAX)
            .map(str::to_string);
        let id = named.unwrap_or_else(|| format!("n{}", NUMBERED.fetch_add(1, Ordering::Relaxed)));
        let span = tracing::debug_span!("request", id = %id, op);
        span.in_scope(|| tracing::debug!("received"));
        RequestMetrics {
            op,
            started: Instant::now(),
            outcome: Cell::new("cancelled"),
            span,
        }
    }

    pub(crate) fn set(&self, outcome: &'static str) {
        self.outcome.set(outcome);
    }

    /// Sets the outcome from the typed error a request was answered with (none: `ok`).
    pub(crate) fn answered(&self, error: Option<&pb::RequestError>) {
        use pb::request_error::Kind;
        self.set(match error.and_then(|e| e.kind.as_ref()) {
            None if error.is_some() => "error",
            None => "ok",
            Some(Kind::NotLeader(_)) => "not_leader",
            Some(Kind::EpochMismatch(_)) => "epoch_mismatch",
            Some(Kind::KeyNotInShard(_)) => "key_not_in_shard",
            Some(Kind::ShardNotFound(_)) => "shard_not_found",
            Some(Kind::ServerBusy(_)) => "server_busy",
            Some(Kind::InvalidArgument(_)) => "invalid_argument",
            Some(Kind::OutcomeUnknown(_)) => "outcome_unknown",
        });
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        let (outcome, elapsed) = (self.outcome.get(), self.started.elapsed());
        self.span
            .in_scope(|| tracing::debug!(outcome, micros = elapsed.as_micros() as u64, "answered"));
        let metrics = &*METRICS;
        metrics
            .requests
            .with_label_values(&[self.op, outcome])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[self.op])
            .observe(elapsed.as_secs_f64());
    }
}

/// Every registered metric in Prometheus' text format, each sample labelled with `node`
/// and `region`.
pub(crate) fn exposition(node: u64, region: &str) -> String {
    let mut families = prometheus::gather();
    let labels = [("node", node.to_string()), ("region", region.to_string())];
    for family in &mut families {
        for metric in family.mut_metric() {
            let mut pairs = metric.take_label();
            for (name, value) in &labels {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.clone());
                pairs.push(pair);
            }
            metric.set_label(pairs);
        }
    }
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut text)
        .expect("text encoding into memory does not fail");
    String::from_utf8(text).expect("the text format is UTF-8")
}
