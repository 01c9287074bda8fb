//! The consensus layer's Prometheus metrics (a node serves them on its HTTP port). They
//! are process-wide and never labelled by shard: one node per process in a deployment,
//! and a label per shard would grow without bound.

use std::sync::LazyLock;

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, exponential_buckets, register_histogram,
    register_int_counter, register_int_counter_vec, register_int_gauge,
};

/// Latency buckets from 100 µs to about 3.3 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(100e-6, 2.0, 16).expect("valid buckets")
}

pub struct Metrics {
    /// From an append reaching the log store to its entries being durable.
    pub append_duration: Histogram,
    /// One call of the state machine's apply (one or more entries).
    pub apply_duration: Histogram,
    pub entries_applied: IntCounter,
    /// From a proposal entering openraft on the leader to its response (committed and
    /// applied there): the commit latency a client sees, less the queueing before it.
    pub proposal_duration: Histogram,
    /// Proposals by how they ended: `applied`, `not_leader`, `unknown`, `failed`,
    /// `retired`, `stopped`.
    pub proposals: IntCounterVec,
    /// Proposals in openraft, not answered yet.
    pub proposals_pending: IntGauge,
    /// Client requests one proposal (one log entry) carried.
    pub proposal_requests: Histogram,
    pub snapshot_sent_bytes: IntCounter,
    pub snapshot_received_bytes: IntCounter,
    /// Replicas on this node whose group hibernates.
    pub groups_hibernating: IntGauge,
    /// Peers this node found dead (each death once).
    pub peer_deaths: IntCounter,
}

/// Registered in the process's default registry on first use.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    append_duration: register_histogram!(
        "hanse_raft_append_duration_seconds",
        "From a Raft-log append to its entries being durable.",
        latency_buckets()
    )
    .expect("registered once"),
    apply_duration: register_histogram!(
        "hanse_raft_apply_duration_seconds",
        "Duration of one state-machine apply (one or more committed entries).",
        latency_buckets()
    )
    .expect("registered once"),
    entries_applied: register_int_counter!(
        "hanse_raft_entries_applied_total",
        "Raft entries applied to the state machines of this node's replicas."
    )
    .expect("registered once"),
    proposal_duration: register_histogram!(
        "hanse_raft_proposal_duration_seconds",
        "From a proposal entering Raft on the leader to its response (committed and applied).",
        latency_buckets()
    )
    .expect("registered once"),
    proposals: register_int_counter_vec!(
        "hanse_raft_proposals_total",
        "Proposals by outcome: applied, not_leader (refused before entering the log), \
         unknown (may yet commit), failed, retired (the shard merged away), stopped.",
        &["outcome"]
    )
    .expect("registered once"),
    proposals_pending: register_int_gauge!(
        "hanse_raft_proposals_pending",
        "Proposals in Raft on this node, not answered yet."
    )
    .expect("registered once"),
    proposal_requests: register_histogram!(
        "hanse_debugging_raft_proposal_requests",
        "Client requests carried by one proposal (one log entry).",
        exponential_buckets(1.0, 2.0, 12).expect("valid buckets")
    )
    .expect("registered once"),
    snapshot_sent_bytes: register_int_counter!(
        "hanse_raft_snapshot_sent_bytes_total",
        "Bytes of shard snapshots sent to other replicas."
    )
    .expect("registered once"),
    snapshot_received_bytes: register_int_counter!(
        "hanse_raft_snapshot_received_bytes_total",
        "Bytes of shard snapshots received from leaders."
    )
    .expect("registered once"),
    groups_hibernating: register_int_gauge!(
        "hanse_raft_groups_hibernating",
        "Replicas on this node whose Raft group hibernates (no ticks, no heartbeats)."
    )
    .expect("registered once"),
    peer_deaths: register_int_counter!(
        "hanse_raft_peer_deaths_total",
        "Peers this node found dead (nothing heard for the liveness timeout)."
    )
    .expect("registered once"),
});

/// How a proposal can end.
const PROPOSAL_OUTCOMES: [&str; 6] = [
    "applied",
    "not_leader",
    "unknown",
    "failed",
    "retired",
    "stopped",
];

impl Metrics {
    /// Starts every proposal outcome's counter at zero.
    pub fn register_outcomes(&self) {
        for outcome in PROPOSAL_OUTCOMES {
            self.proposals.with_label_values(&[outcome]);
        }
    }

    /// Counts a proposal that ended as `outcome`.
    pub(crate) fn proposal_ended(&self, outcome: &str) {
        self.proposals.with_label_values(&[outcome]).inc();
    }
}
