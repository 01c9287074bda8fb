//! The engine's Prometheus metrics (a node serves them on its HTTP port). They are
//! process-wide: one node per process in a deployment.

use std::sync::LazyLock;

use prometheus::{
    Histogram, IntCounter, exponential_buckets, register_histogram, register_int_counter,
};

pub struct Metrics {
    /// One WAL sync of the log writer.
    pub fsync_duration: Histogram,
    /// Log writes one sync made durable (its group).
    pub fsync_group_writes: Histogram,
    /// Syncs that failed (each poisons the writer).
    pub fsync_failures: IntCounter,
    /// Writes of the Raft log (appends, votes, truncations, purges) of every shard.
    pub log_writes: IntCounter,
}

/// Registered in the process's default registry on first use.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    fsync_duration: register_histogram!(
        "hanse_storage_fsync_duration_seconds",
        "Duration of one WAL sync of the Raft-log writer.",
        exponential_buckets(50e-6, 2.0, 16).expect("valid buckets")
    )
    .expect("registered once"),
    fsync_group_writes: register_histogram!(
        "hanse_storage_fsync_group_writes",
        "Raft-log writes made durable by one WAL sync.",
        exponential_buckets(1.0, 2.0, 12).expect("valid buckets")
    )
    .expect("registered once"),
    fsync_failures: register_int_counter!(
        "hanse_storage_fsync_failures_total",
        "WAL syncs that failed; the first one stops the node's writes."
    )
    .expect("registered once"),
    log_writes: register_int_counter!(
        "hanse_storage_log_writes_total",
        "Raft-log writes of every shard on this node."
    )
    .expect("registered once"),
});
