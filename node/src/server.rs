//! A cluster node: its RocksDB, its shard groups joined to their peers over the
//! multi-raft transport, and the gRPC services (`hanse.v1.Kv` for clients, `hanse.v1.Admin`
//! for operators, `hanse.v1.Raft` between nodes) on one listening address.

use hanse_storage::Store;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actix::{Actor, Addr};
use hanse_consensus::peer_channels::{ChannelOptions, PeerChannels};
use hanse_consensus::{
    RaftService, ReplicaNode, ShardGroup, ShardRegistry, Transport, TransportOptions,
};
use hanse_planner::decide::{Mode, Planner};
use hanse_planner::live::PlannerActor;
use hanse_planner::net::PlannerNet;
use hanse_security::Protocol;
use hanse_shard::limits::Limits;
use hanse_shard::meta::{self, META_SHARD, NodeRecord};
use hanse_shard::{ReplicaDescriptor, ReplicaRole, ShardId};
use hanse_storage::Batch;
use hanse_storage_rocksdb::{Engine, EngineOptions};
use tokio::sync::oneshot;

use crate::activity::Activity;
use crate::actors::{IngestActor, IngestCounters, NodeActor, ReplicaLimits, Routes, StopReplicas};
use crate::admin_service::AdminService;
use crate::balancer::{Balancer, planner_envelope};
use crate::config::{BalanceConfig, NodeConfig, NodeTls, PlannerMode};
use crate::coordination::NodeRuntime;
use crate::grants::GrantsCache;
use crate::knobs::{BACKUPS_IN_FLIGHT_MAX, CERTIFICATE_CHECK_INTERVAL, SHUTDOWN_GRACE};
use crate::kv_service::KvService;
use crate::peers::Peers;
use crate::reporter::Reporter;
use crate::requests::GuardLayer;
use crate::round_trips::ClusterRoundTrips;
use crate::state::NodeState;

/// The first data shard of a new cluster (shard 0 is reserved for the meta shard).
const FIRST_SHARD: ShardId = 1;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} (config field `{field}`): {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot load the planner's weights from {path} (config field `balance.planner_weights`): {detail}"
    )]
    PlannerWeights { path: PathBuf, detail: String },
    #[error("config field `latency`: {0}")]
    Latency(#[from] hanse_consensus::latency::LatencyError),
    #[error("TLS (config fields `certs_dir`, `insecure`): {0}")]
    Security(#[from] hanse_security::SecurityError),
    #[error(transparent)]
    Storage(#[from] hanse_storage::Error),
    #[error(transparent)]
    Group(#[from] Box<hanse_consensus::GroupError>),
    #[error(
        "{ACK_BEFORE_COMMIT_VAR} is set, but this build has no test fault hooks (build with the \
         `hanse-node/failpoints` feature, as scripts/test.sh does)"
    )]
    NoFailpoints,
}

impl From<hanse_consensus::GroupError> for ServerError {
    fn from(e: hanse_consensus::GroupError) -> Self {
        ServerError::Group(Box::new(e))
    }
}

/// Builds the runtime a node runs on: an actix system whose actors share a tokio
/// multi-thread runtime with tonic and openraft, with `threads` workers (default: one
/// per core; see [`NodeConfig::runtime_threads`]). [`start`] must be called inside it.
pub fn system(threads: Option<usize>) -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(move || {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = threads {
            builder.worker_threads(threads);
        }
        builder
            .enable_all()
            .thread_name("hanse-node")
            .build()
            .expect("the tokio runtime starts")
    })
}

/// The planner actor `balance` asks for, with its network: the configured weights (a
/// file that cannot be loaded stops the start), else the built-in ones (without which
/// the planner runs on its tuned heuristic and says so in its status); none in
/// heuristic mode.
fn start_planner(balance: &BalanceConfig) -> Result<Option<Addr<PlannerActor>>, ServerError> {
    let mode = match balance.planner {
        PlannerMode::Off => return Ok(None),
        _ if !balance.enabled => return Ok(None),
        PlannerMode::Shadow => Mode::Shadow,
        PlannerMode::Model => Mode::Model,
        PlannerMode::Heuristic => Mode::Heuristic,
    };
    let net = match &balance.planner_weights {
        _ if balance.planner == PlannerMode::Heuristic => None,
        Some(path) => Some(
            PlannerNet::load(path).map_err(|e| ServerError::PlannerWeights {
                path: path.clone(),
                detail: e.to_string(),
            })?,
        ),
        None => PlannerNet::built_in()
            .inspect_err(|e| tracing::warn!("the built-in planner weights did not load: {e}"))
            .ok(),
    };
    let planner = Planner::new(net, mode, planner_envelope(balance));
    Ok(Some(
        PlannerActor::new(planner, balance.planner_node_capacity as f64).start(),
    ))
}

/// Setting this environment variable to `1` breaks the node on purpose (see
/// [`NodeState::ack_before_commit`]); tests use it to show the chaos checker catches it.
/// Only a build with the `failpoints` feature obeys it; others refuse to start.
pub const ACK_BEFORE_COMMIT_VAR: &str = "HANSE_TEST_ACK_BEFORE_COMMIT";

/// A started node; dropping it stops the node.
pub struct RunningNode {
    pub local_addr: SocketAddr,
    /// Where the HTTP port listens, if the node has one.
    pub http_addr: Option<SocketAddr>,
    /// Stops the HTTP port, and its task.
    http: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    state: Arc<NodeState>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    reporting: tokio::task::JoinHandle<()>,
    hibernating: tokio::task::JoinHandle<()>,
    balancing: Option<tokio::task::JoinHandle<()>>,
    refreshing_grants: tokio::task::JoinHandle<()>,
    certificates: Option<NodeTls>,
    watching: Option<tokio::task::JoinHandle<()>>,
}

/// Both sides of a node's TLS settings are reloaded together.
impl NodeTls {
    /// Reads the files again; a failure keeps the settings in use and says why.
    fn reload(&self) {
        match self.server.reload().and_then(|()| self.client.reload()) {
            Ok(()) => tracing::info!("reloaded the TLS certificates"),
            Err(e) => tracing::error!("kept the TLS certificates in use: {e}"),
        }
    }

    /// When the files last changed (as far as the file system says).
    fn changed_at(&self) -> Vec<Option<std::time::SystemTime>> {
        let files = self.server.files();
        [&files.ca, &files.cert, &files.key]
            .iter()
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reloads whenever a file changes, checked every [`CERTIFICATE_CHECK_INTERVAL`].
    async fn watch(self) {
        let mut seen = self.changed_at();
        loop {
            tokio::time::sleep(CERTIFICATE_CHECK_INTERVAL).await;
            let now = self.changed_at();
            if now != seen {
                self.reload();
                seen = now;
            }
        }
    }
}

impl RunningNode {
    /// Reads the node's certificate, key and CA files again (on SIGHUP; the node also
    /// notices changed files by itself). New connections use them; a file that does not
    /// load leaves the ones in use in place, and the log says why.
    pub fn reload_certificates(&self) {
        if let Some(certificates) = &self.certificates {
            certificates.reload();
        }
    }

    /// Serves until `stop` is called or the process ends.
    pub async fn wait(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops serving and shuts the shard groups down. The HTTP port answers until the
    /// end, not ready from the start.
    pub async fn stop(mut self) {
        self.state.draining.store(true, Ordering::SeqCst);
        self.reporting.abort();
        self.hibernating.abort();
        self.refreshing_grants.abort();
        if let Some(watching) = &self.watching {
            watching.abort();
        }
        if let Some(balancing) = &self.balancing {
            balancing.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            // Open calls finish first, but a client that never lets go of its
            // connection must not keep the node from stopping.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                server.abort();
            }
        }
        let (reply, stopped) = oneshot::channel();
        self.state.node.do_send(StopReplicas { reply });
        let _ = stopped.await;
        if let Some((stop, mut serving)) = self.http.take() {
            let _ = stop.send(());
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut serving)
                .await
                .is_err()
            {
                tracing::warn!(
                    "HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them"
                );
                serving.abort();
            }
        }
    }

    /// How many replicas were restarted after their actor or Raft group died.
    pub fn replica_restarts(&self) -> u64 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// Shuts down the Raft group of `shard` behind its replica actor's back, as a fatal
    /// storage error would: for tests of the node's supervision.
    #[doc(hidden)]
    pub async fn kill_raft_group(&self, shard: ShardId) -> bool {
        match self.state.routes.get(shard) {
            Some(handle) => handle.group.raft.shutdown().await.is_ok(),
            None => false,
        }
    }
}

/// A listener on `addr`, the config field `field` names, and the address it got.
async fn bind(
    field: &'static str,
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind {
        field,
        addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Starts the node `config` describes. Runs inside [`system`].
pub async fn start(config: NodeConfig) -> Result<RunningNode, ServerError> {
    // Bind first: a port in use is refused before anything on disk is touched.
    let (listener, local_addr) = bind("listen_addr", config.listen_addr).await?;
    let http_listener = match config.http_addr {
        Some(addr) => Some(bind("http_addr", addr).await?),
        None => None,
    };
    // Certificates before the data directory: a node that cannot authenticate touches
    // nothing.
    let certificates = config.tls()?;
    if certificates.is_none() {
        tracing::warn!(
            "insecure = true: serving plaintext gRPC on {local_addr}; anyone who reaches it \
             can read, write and administer everything"
        );
    }
    let server_tls = certificates.as_ref().map(|c| c.server.clone());
    let client_tls = certificates.as_ref().map(|c| c.client.clone());
    let planner = start_planner(&config.balance)?;
    let engine = Arc::new(Engine::open(
        &config.data_dir,
        EngineOptions {
            sync_log_writes: config.sync,
        },
    )?);
    engine.claim_node(config.node_id)?;
    // A founding member writes the first shard; a node that joins later (no
    // `initial_peers`) hosts nothing until the cluster adds it to shards.
    if engine.load_descriptors()?.is_empty() && !config.initial_peers.is_empty() {
        let replicas: Vec<ReplicaDescriptor> = config
            .initial_peers
            .iter()
            .map(|p| ReplicaDescriptor {
                node: p.id,
                region: p.region.clone(),
                role: ReplicaRole::Voter,
            })
            .collect();
        let mut batch = Batch::default();
        batch.put_descriptor(&meta::meta_descriptor(replicas.clone()));
        batch.put_descriptor(&meta::first_user_descriptor(FIRST_SHARD, replicas));
        engine.write(batch, true)?;
    }

    let source_ip = config.source_ip();
    let ack_before_commit = std::env::var(ACK_BEFORE_COMMIT_VAR).is_ok_and(|v| v == "1");
    if ack_before_commit && !cfg!(feature = "failpoints") {
        return Err(ServerError::NoFailpoints);
    }
    if ack_before_commit {
        tracing::error!(
            "{ACK_BEFORE_COMMIT_VAR}=1: this node acknowledges writes before they commit \
             and WILL lose data; it exists only to test the chaos checker"
        );
    }
    let latency = config.latency_matrix()?;
    let channels = Arc::new(PeerChannels::new(ChannelOptions {
        source_ip,
        tls: client_tls.clone(),
        ..ChannelOptions::default()
    }));
    let peers = Arc::new(Peers::new(channels.clone(), &config.region));
    let group_options = config.group_options()?;
    let hibernation = group_options.hibernation;
    let transport = Transport::new(
        config.node_id,
        TransportOptions {
            region: config.region.clone(),
            latency: latency.clone(),
            peer_dead_after: group_options.hibernation.dead_after,
            ..TransportOptions::default()
        },
        channels,
    );
    let registry = ShardRegistry::default();
    let mut groups = Vec::new();
    for descriptor in engine.load_descriptors()? {
        let network = transport.shard_network(descriptor.id);
        groups
            .push(ShardGroup::start(descriptor.id, engine.clone(), &group_options, network).await?);
    }
    if config.bootstrap {
        let members: BTreeMap<u64, ReplicaNode> = config
            .initial_peers
            .iter()
            .map(|p| {
                let node = ReplicaNode {
                    addr: p.addr.clone(),
                    region: p.region.clone(),
                };
                (p.id, node)
            })
            .collect();
        for group in &groups {
            if group.shard == META_SHARD || group.shard == FIRST_SHARD {
                group.initialize(members.clone()).await?;
            }
        }
    }

    let routes = Arc::new(Routes::default());
    let round_trips = Arc::new(ClusterRoundTrips::default());
    let restarts = Arc::new(AtomicU64::new(0));
    let node = NodeActor::new(
        engine.clone(),
        transport.clone(),
        registry.clone(),
        group_options,
        ReplicaLimits {
            mailbox_max: config.limits.replica_mailbox_max,
            requests_in_flight_max: config.limits.replica_requests_in_flight_max,
            ..ReplicaLimits::default()
        },
        routes.clone(),
        restarts.clone(),
    )
    .start_with(groups);
    let reporter = Arc::new(Reporter::new(
        NodeRecord {
            node: config.node_id,
            region: config.region.clone(),
            addr: config.advertised(),
            reported_at_ms: 0,
        },
        (transport.clone(), round_trips.clone()),
        engine.clone(),
        routes.clone(),
        peers.clone(),
        config.balance.split_size_bytes,
    ));
    let reporting = tokio::spawn(reporter.run());
    let liveness = transport.liveness();
    let hibernating = tokio::spawn(hanse_consensus::liveness_watch::keep_watch(
        transport.clone(),
        registry.clone(),
        hibernation,
    ));
    let activity = Arc::new(std::sync::Mutex::new(Activity::default()));
    let draining = Arc::new(AtomicBool::new(false));
    let balancing = config.balance.enabled.then(|| {
        let runtime = NodeRuntime {
            node_id: config.node_id,
            engine: engine.clone(),
            routes: routes.clone(),
            peers: peers.clone(),
            round_trips: round_trips.clone(),
        };
        let balancer = Balancer::new(
            config.advertised(),
            runtime,
            &config.balance,
            planner.clone(),
            config.redact,
            activity.clone(),
        );
        tokio::spawn(Arc::new(balancer).run())
    });
    let grants = Arc::new(GrantsCache::new(engine.clone(), routes.clone()));
    let refreshing_grants = tokio::spawn(grants.clone().refresh());
    let ingest_counters = Arc::new(IngestCounters::default());
    let ingest = (config.ingest.enabled && config.region == config.ingest_region).then(|| {
        let options = config.ingest.options();
        IngestActor::new(options, ingest_counters.clone(), peers.clone()).start()
    });
    let state = Arc::new(NodeState {
        node_id: config.node_id,
        region: config.region.clone(),
        addr: config.advertised(),
        latency,
        engine,
        limits: Limits {
            key_bytes_max: config.limits.max_key_bytes,
            value_bytes_max: config.limits.max_value_bytes,
        },
        split_size_bytes: config.balance.split_size_bytes,
        routes,
        node,
        restarts,
        #[cfg(feature = "failpoints")]
        ack_before_commit,
        planner,
        ingest,
        ingest_counters,
        peers,
        redact: config.redact,
        backups: Arc::new(tokio::sync::Semaphore::new(BACKUPS_IN_FLIGHT_MAX)),
        grants: grants.clone(),
        tls: server_tls.clone(),
        draining: draining.clone(),
        activity,
        transport,
        round_trips,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = hanse_security::incoming(listener, server_tls.clone(), Protocol::Grpc);
    let router = tonic::transport::Server::builder()
        .layer(GuardLayer::new(grants))
        .add_service(RaftService::new(config.node_id, registry, draining, liveness).into_server())
        .add_service(KvService::new(state.clone()).into_server())
        .add_service(AdminService::new(state.clone()).into_server());
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!("gRPC server stopped: {e}");
        }
    });
    let watching = certificates.clone().map(|c| tokio::spawn(c.watch()));
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http = match http_listener {
        Some((listener, addr)) => {
            let stopped = async {
                let _ = http_stopped.await;
            };
            let serving =
                crate::http::serve(listener, state.clone(), stopped).map_err(|source| {
                    ServerError::Bind {
                        field: "http_addr",
                        addr,
                        source,
                    }
                })?;
            Some((addr, serving))
        }
        None => None,
    };
    Ok(RunningNode {
        local_addr,
        http_addr: http.as_ref().map(|(addr, _)| *addr),
        http: http.map(|(_, serving)| (stop_http, serving)),
        state,
        stop: Some(stop),
        server: Some(server),
        reporting,
        hibernating,
        balancing,
        refreshing_grants,
        certificates,
        watching,
    })
}
