//! What the services of a running node share: its identity, its store, its hosted
//! replicas and its actors. The services and background tasks read it; only the node's
//! assembly ([`crate::server::start`]) makes it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix::Addr;
use hanse_consensus::latency::LatencyMatrix;
use hanse_planner::live::PlannerActor;
use hanse_shard::limits::Limits;
use hanse_storage_rocksdb::Engine;

use crate::actors::{IngestActor, IngestCounters, NodeActor, Routes};
use crate::peers::Peers;

/// What the services of a running node share.
pub(crate) struct NodeState {
    pub node_id: u64,
    pub region: String,
    /// The address peers and clients reach this node at.
    pub addr: String,
    pub engine: Arc<Engine>,
    pub limits: Limits,
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
}
