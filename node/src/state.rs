//! What the services of a running node share: its identity, its store, its hosted
//! replicas and its actors. The services and background tasks read it; only the node's
//! assembly ([`crate::server::start`]) makes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use actix::Addr;
use hanse_consensus::latency::LatencyMatrix;
use hanse_planner::live::PlannerActor;
use hanse_shard::limits::Limits;
use hanse_storage_rocksdb::Engine;

use crate::actors::{IngestActor, IngestCounters, NodeActor, Routes};
use crate::metrics::METRICS;
use crate::peers::Peers;
use hanse_shard::ReplicaRole;

/// What the services of a running node share.
pub(crate) struct NodeState {
    pub node_id: u64,
    pub region: String,
    /// The address peers and clients reach this node at.
    pub addr: String,
    pub engine: Arc<Engine>,
    pub limits: Limits,
    /// A shard past this many bytes takes no ingest until it was split.
    pub split_size_bytes: u64,
    /// The hosted replicas, kept by the node actor.
    pub routes: Arc<Routes>,
    pub node: Addr<NodeActor>,
    /// Replicas restarted after their actor or Raft group died.
    pub restarts: Arc<AtomicU64>,
    /// A deliberate bug for the chaos harness to catch: writes are answered before Raft
    /// commits them. Only set by the environment variable [`ACK_BEFORE_COMMIT_VAR`](crate::server::ACK_BEFORE_COMMIT_VAR),
    /// and only in a build with the `failpoints` feature.
    #[cfg(feature = "failpoints")]
    pub ack_before_commit: bool,
    /// The planner (asked by the balancer while this node leads the meta shard).
    pub planner: Option<Addr<PlannerActor>>,
    /// Round trips injected for clients in other regions.
    pub latency: LatencyMatrix,
    /// The ingest actor, on a node of the ingest region with batching enabled.
    pub ingest: Option<Addr<IngestActor>>,
    pub ingest_counters: Arc<IngestCounters>,
    /// Other nodes' Kv services (read indexes for follower reads, forwarded batches).
    pub peers: Arc<Peers>,
    /// Backups under way may hold at most this many permits (each stages a copy).
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Keep user keys and values out of logs and error messages.
    pub redact: bool,
    /// The users and roles every request is checked against.
    pub grants: Arc<crate::grants::GrantsCache>,
    /// The node's TLS settings (`None`: it runs insecure).
    pub tls: Option<Arc<hanse_security::ServerTls>>,
    /// The node is stopping (or was drained): it reports itself not ready and takes no
    /// leadership.
    pub draining: Arc<AtomicBool>,
    /// The heat map and balancing actions, kept while this node leads the meta shard.
    pub activity: Arc<std::sync::Mutex<crate::activity::Activity>>,
    /// This node's Raft transport: its round trips to its peers.
    pub transport: Arc<hanse_consensus::Transport>,
    /// Every node's round trips, as reported to this node while it leads the meta shard.
    pub round_trips: Arc<crate::round_trips::ClusterRoundTrips>,
}

impl NodeState {
    /// Sets the replica gauges of the metrics from the hosted replicas as they are now.
    pub(crate) fn publish_replica_counts(&self) {
        let (mut voters, mut learners, mut leaders, mut leaderless) = (0, 0, 0, 0);
        for replica in self.routes.all() {
            let descriptor = replica.descriptor();
            let own = descriptor.replicas.iter().find(|r| r.node == self.node_id);
            match own.map(|r| r.role) {
                Some(ReplicaRole::Learner) => learners += 1,
                _ => voters += 1,
            }
            if replica.leads() {
                leaders += 1;
            }
            if replica.leader().is_none() {
                leaderless += 1;
            }
        }
        METRICS.leaderless.set(leaderless);
        let gauges = &METRICS.replicas;
        gauges.with_label_values(&["voter"]).set(voters);
        gauges.with_label_values(&["learner"]).set(learners);
        gauges.with_label_values(&["leader"]).set(leaders);
    }
}
