//! The TOML configuration of one `hanse server` node.
//!
//! ```toml
//! node_id = 1
//! region = "eu-hamburg"
//! listen_addr = "127.0.0.11:7401"
//! advertise_addr = "127.0.0.11:7401"   # optional; defaults to listen_addr (a proxy's, say)
//!                                       # connections to peers start from listen_addr's IP
//! http_addr = "127.0.0.11:7481"       # optional; /metrics, /livez, /readyz (same TLS)
//! data_dir = "/var/lib/hanse/n1"
//! certs_dir = "/etc/hanse/certs"        # ca.crt, node-1.crt, node-1.key (`hanse cert`)
//! # insecure = true                     # no TLS and no authentication: refused by default
//! # redact = true                       # no user keys or values in logs and error messages
//! bootstrap = true                      # on exactly one node of a new cluster
//! latency = "eu-hamburg:ap-china=250ms" # optional; injected round trips between regions
//! # runtime_threads = 2                 # optional; the runtime's workers (default: one per core)
//!
//! [[initial_peers]]                     # every node of the first membership, itself included
//! id = 1
//! addr = "127.0.0.11:7401"
//! region = "eu-hamburg"
//!
//! [balance]                             # optional; the size heuristic
//! split_size_bytes = 100663296
//! merge_size_bytes = 20971520
//!
//! [raft]                                # optional; derived from `latency` by default
//! heartbeat_ms = 100
//! election_timeout_ms = 200
//! hibernate = true                      # idle shards stop ticking (default)
//! hibernate_after_ms = 5000
//! peer_dead_after_ms = 1600
//!
//! [ingest]                              # optional; on the nodes of `ingest_region`
//! max_delay_ms = 2                      # (top-level key, default "eu-hamburg")
//! max_batch = 128
//!
//! [limits]                              # optional; each field has a default
//! max_key_bytes = 4096
//! max_value_bytes = 16777216
//! replica_mailbox_max = 1024
//! replica_requests_in_flight_max = 4096
//! ```
//!
//! A node that joins a running cluster has no `initial_peers` and no `bootstrap`: it
//! starts empty and gets its replicas from `hanse admin add-node`.

use crate::knobs::{
    ELECTION_TIMEOUT_MS_MAX, HEARTBEAT_MS_MAX, KV_MESSAGE_BYTES_MAX, REPLICA_QUEUE_MAX,
    RUNTIME_THREADS_MAX,
};
use hanse_consensus::GroupOptions;
use hanse_consensus::hibernation::HibernationOptions;
use hanse_consensus::latency::{LatencyError, LatencyMatrix};
use hanse_planner::balance::{RegionRule, default_region_rules};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hanse_security::{CertsDir, ClientTls, Identity, SecurityError, ServerTls};

use crate::units::parse_duration;

use serde::Deserialize;

/// A node's TLS settings: as a server, and towards its peers (same certificate).
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub server: Arc<ServerTls>,
    pub client: Arc<ClientTls>,
}

/// One member of the cluster's first membership.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u64,
    pub addr: String,
    pub region: String,
}

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u64,
    pub region: String,
    pub listen_addr: SocketAddr,
    /// The address peers and clients reach this node at (default: `listen_addr`).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Where the node serves HTTP (Prometheus `/metrics`, the `/livez` and `/readyz`
    /// probes), with the same TLS as `listen_addr`; none: no HTTP port.
    #[serde(default)]
    pub http_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The directory of this node's TLS files: the cluster CA's `ca.crt`, and
    /// `node-ID.crt` and `node-ID.key` for this node (made by `hanse cert`). Required
    /// unless `insecure`.
    #[serde(default)]
    pub certs_dir: Option<PathBuf>,
    /// Serve and connect in plaintext, with nobody authenticated: any process that
    /// reaches the port may read, write and administer everything. Off by default.
    #[serde(default)]
    pub insecure: bool,
    /// Keep user keys and values out of this node's logs and the messages of its errors
    /// (a refusal says "a key" instead of which). Off by default.
    #[serde(default)]
    pub redact: bool,
    /// Initialise the first shard's Raft group with `initial_peers` when this node's store
    /// is new. Set it on one node of a new cluster; repeating it later changes nothing.
    #[serde(default)]
    pub bootstrap: bool,
    /// The cluster's first membership. A node with an empty store creates the first shard
    /// with these replicas; afterwards membership changes go through the Admin service.
    /// Empty on a node that joins a running cluster.
    #[serde(default)]
    pub initial_peers: Vec<PeerConfig>,
    /// Acknowledge writes only after the log is synced (default true).
    #[serde(default = "default_true")]
    pub sync: bool,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Round trips injected between regions, `REGION:REGION=TIME` comma separated (e.g.
    /// `eu-hamburg:ap-china=250ms`): Raft messages to a node of another region, and client
    /// requests that name their region, wait that long. Default: none.
    #[serde(default)]
    pub latency: String,
    #[serde(default)]
    pub raft: RaftConfig,
    /// The region whose nodes batch client writes in an ingest actor (default
    /// `eu-hamburg`); nodes elsewhere send writes straight to the shard's proposer.
    #[serde(default = "default_ingest_region")]
    pub ingest_region: String,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Worker threads of the node's runtime (default: one per core). Several nodes on one
    /// machine do better with their share of its cores each (`hanse cluster up` sets it
    /// so, at least two): a node with more workers than it has cores to run them spends
    /// its CPU waking and stealing between them, while with one worker it sends no
    /// heartbeat while it applies a large batch.
    #[serde(default)]
    pub runtime_threads: Option<usize>,
}

fn default_ingest_region() -> String {
    "eu-hamburg".to_string()
}

/// How a node of the ingest region batches client writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Batch writes at all (default true).
    pub enabled: bool,
    /// The longest a write waits for others to join its batch (default 2 ms).
    pub max_delay_ms: u64,
    /// Writes in one batch (default 128); a full batch is proposed at once.
    pub max_batch: usize,
    /// Writes waiting or under way on the node (default 4096); more are answered
    /// `ServerBusy`.
    pub queue_max: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let options = crate::actors::IngestOptions::default();
        IngestConfig {
            enabled: true,
            max_delay_ms: options.max_delay.as_millis() as u64,
            max_batch: options.max_batch,
            queue_max: options.queue_max,
        }
    }
}

impl IngestConfig {
    pub fn options(&self) -> crate::actors::IngestOptions {
        crate::actors::IngestOptions {
            max_delay: Duration::from_millis(self.max_delay_ms),
            max_batch: self.max_batch,
            queue_max: self.queue_max,
        }
    }
}

/// Raft timing; by default derived from the latency matrix, so that heartbeats and
/// elections work across its longest round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// How often a leader tells its followers it is alive; also how long openraft waits
    /// for an AppendEntries answer, so it must exceed the longest round trip (default:
    /// 100 ms, or one and a half of the longest injected round trip plus 50 ms when that
    /// is more).
    pub heartbeat_ms: Option<u64>,
    /// The shortest election timeout: a follower campaigns after hearing nothing from its
    /// leader for twice this (openraft's leader lease) plus a random time between this
    /// and twice this (default: 200 ms, or two heartbeats when that is more).
    pub election_timeout_ms: Option<u64>,
    /// Idle shard groups stop ticking and heartbeating (default true; see
    /// `hanse_consensus::hibernation`).
    pub hibernate: Option<bool>,
    /// A shard's leader hibernates after this long without a request (default 5000).
    pub hibernate_after_ms: Option<u64>,
    /// A peer heard nothing from for this long is dead, and the sleeping shards it led
    /// elect new leaders (default: two of the longest election timeouts plus the longest
    /// injected round trip, at least 1600).
    pub peer_dead_after_ms: Option<u64>,
}

/// The size heuristic the meta shard's leader runs (see `hanse_planner::balance`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// Split and merge shards by size (default true).
    pub enabled: bool,
    /// A shard larger than this splits at its middle key (default 96 MiB).
    pub split_size_bytes: u64,
    /// Small cold neighbours below this merge (default 20 MiB).
    pub merge_size_bytes: u64,
    /// ...when each serves fewer operations per second than this (default 50).
    pub cold_ops_per_sec: u64,
    /// A shard that changed less than this long ago is left alone (default 60).
    pub cool_down_secs: u64,
    /// Move shard leaders to a voter in this region where they have one (default: none,
    /// spread leaders evenly over the nodes).
    pub preferred_leader_region: Option<String>,
    /// How many voters and learners of every shard each region holds
    /// (`[[balance.placement]]` tables of `region`, `voters`, `learners`). A region with
    /// learners and no voters is a learner region: its replicas become learners as long
    /// as each shard keeps three voters elsewhere. Default: a voter in eu-hamburg and in
    /// ap-china, a learner in au-sydney (the recovery region).
    pub placement: Vec<RegionRule>,
    /// What the planner does (see `hanse_planner::live`): `shadow` (default) records what
    /// it would do beside the size rules, `model` carries its decisions out (the network,
    /// or the tuned heuristic where the network cannot decide), `heuristic` carries out
    /// the tuned heuristic's (no network), `off` runs none.
    pub planner: PlannerMode,
    /// The network's weights (default: the ones built into the binary).
    pub planner_weights: Option<PathBuf>,
    /// Operations per second a node serves at full load (default 4000): the planner
    /// judges load relative to it, as the simulator it learned in does.
    pub planner_node_capacity: u64,
}

/// See [`BalanceConfig::planner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannerMode {
    Off,
    #[default]
    Shadow,
    Model,
    Heuristic,
}

impl PlannerMode {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            PlannerMode::Off => "off",
            PlannerMode::Shadow => "shadow",
            PlannerMode::Model => "model",
            PlannerMode::Heuristic => "heuristic",
        }
    }
}

impl Default for BalanceConfig {
    fn default() -> Self {
        let options = hanse_planner::balance::BalanceOptions::default();
        BalanceConfig {
            enabled: true,
            split_size_bytes: options.split_size_bytes,
            merge_size_bytes: options.merge_size_bytes,
            cold_ops_per_sec: options.cold_ops_per_sec,
            cool_down_secs: options.cool_down.as_secs(),
            preferred_leader_region: None,
            placement: default_region_rules(),
            planner: PlannerMode::default(),
            planner_weights: None,
            planner_node_capacity: hanse_planner::live::NODE_CAPACITY as u64,
        }
    }
}

impl BalanceConfig {
    /// The heuristic's options.
    pub fn options(&self) -> hanse_planner::balance::BalanceOptions {
        hanse_planner::balance::BalanceOptions {
            split_size_bytes: self.split_size_bytes,
            merge_size_bytes: self.merge_size_bytes,
            cold_ops_per_sec: self.cold_ops_per_sec,
            cool_down: std::time::Duration::from_secs(self.cool_down_secs),
        }
    }
}

/// Bounds on what a node accepts and queues.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest accepted key (default 4 KiB).
    pub max_key_bytes: usize,
    /// Longest accepted value (default 16 MiB).
    pub max_value_bytes: usize,
    /// Commands (replica-set changes, leadership transfers) waiting in one shard
    /// replica's mailbox (default 1024); more are answered `ServerBusy` at once. Client
    /// requests do not pass the mailbox: the next bound is theirs.
    pub replica_mailbox_max: usize,
    /// Requests one shard replica works on at once (default 4096, the proposer's queue);
    /// more are answered `ServerBusy`.
    pub replica_requests_in_flight_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let replica = crate::actors::ReplicaLimits::default();
        LimitsConfig {
            max_key_bytes: hanse_shard::knobs::KEY_BYTES_MAX,
            max_value_bytes: hanse_shard::knobs::VALUE_BYTES_MAX,
            replica_mailbox_max: replica.mailbox_max,
            replica_requests_in_flight_max: replica.requests_in_flight_max,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: field `{field}`: {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

impl NodeConfig {
    /// Node `node_id` of `region` on `listen_addr`, its data in `data_dir`, with every
    /// other field as a config file that leaves it out has it (no certificates yet: set
    /// `certs_dir` or `insecure`).
    pub fn new(node_id: u64, region: &str, listen_addr: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            node_id,
            region: region.to_string(),
            listen_addr,
            advertise_addr: None,
            http_addr: None,
            data_dir,
            certs_dir: None,
            insecure: false,
            redact: false,
            bootstrap: false,
            initial_peers: Vec::new(),
            sync: default_true(),
            limits: LimitsConfig::default(),
            balance: BalanceConfig::default(),
            latency: String::new(),
            raft: RaftConfig::default(),
            ingest_region: default_ingest_region(),
            ingest: IngestConfig::default(),
            runtime_threads: None,
        }
    }

    /// Reads and checks the configuration in `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        Self::load_as(path, false)
    }

    /// Reads and checks the configuration in `path`; `insecure` turns TLS off whatever
    /// the file says (`hanse server --insecure`).
    pub fn load_as(path: &Path, insecure: bool) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        let config = NodeConfig {
            insecure: config.insecure || insecure,
            ..config
        };
        config
            .validate()
            .map_err(|(field, problem)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                problem,
            })?;
        Ok(config)
    }

    /// The address peers and clients use for this node.
    pub fn advertised(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.listen_addr.to_string())
    }

    /// Where this node's connections to its peers start from: the listen address's IP
    /// when it names one (so that peers, and a proxy between them, see which node calls),
    /// else the kernel's pick.
    pub fn source_ip(&self) -> Option<IpAddr> {
        let ip = self.listen_addr.ip();
        (!ip.is_unspecified()).then_some(ip)
    }

    /// The injected round trips between regions.
    pub fn latency_matrix(&self) -> Result<LatencyMatrix, LatencyError> {
        LatencyMatrix::parse(&self.latency, parse_duration)
    }

    /// Logs the configuration as the node will run it, with what it derives (the Raft
    /// timings, the runtime's workers): the first thing to read when a node misbehaves.
    pub fn log_effective(&self) {
        let raft = self.group_options().ok();
        let heartbeat_ms = raft
            .as_ref()
            .map(|r| r.heartbeat_interval.as_millis() as u64);
        let election_timeout_ms = raft
            .as_ref()
            .map(|r| r.election_timeout_min.as_millis() as u64);
        let runtime_threads = self.runtime_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        tracing::info!(
            config = ?self,
            heartbeat_ms,
            election_timeout_ms,
            runtime_threads,
            "effective configuration"
        );
    }

    /// Raft timing for this node's groups: the configured values, or ones derived from
    /// the latency matrix (see [`RaftConfig`]).
    pub fn group_options(&self) -> Result<GroupOptions, LatencyError> {
        let longest = self.latency_matrix()?.longest_round_trip();
        let defaults = GroupOptions::default();
        let heartbeat = self.raft.heartbeat_ms.map(Duration::from_millis).unwrap_or(
            defaults
                .heartbeat_interval
                .max(longest * 3 / 2 + Duration::from_millis(50)),
        );
        let election = self
            .raft
            .election_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.election_timeout_min.max(heartbeat * 2));
        let usual = defaults.hibernation;
        let hibernation = HibernationOptions {
            enabled: self.raft.hibernate.unwrap_or(usual.enabled),
            idle: self
                .raft
                .hibernate_after_ms
                .map_or(usual.idle, Duration::from_millis),
            dead_after: self.raft.peer_dead_after_ms.map_or_else(
                || usual.dead_after.max(election * 4 + longest),
                Duration::from_millis,
            ),
            heartbeat: heartbeat * 2,
        };
        Ok(GroupOptions {
            node_id: self.node_id,
            heartbeat_interval: heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            hibernation,
            ..defaults
        })
    }

    /// This node's TLS settings, as a server and towards its peers (`None` when it runs
    /// `insecure`). A missing or unusable file is named in the error.
    pub fn tls(&self) -> Result<Option<NodeTls>, SecurityError> {
        if self.insecure {
            return Ok(None);
        }
        let dir = self
            .certs_dir
            .as_ref()
            .ok_or_else(|| SecurityError::Invalid {
                what: "config",
                detail: "no `certs_dir`".into(),
            })?;
        let identity = Identity::Node(self.node_id);
        let files = CertsDir::new(dir).files(&identity);
        let server = ServerTls::load(files.clone(), self.node_id)?;
        let client = ClientTls::load(files, identity)?;
        Ok(Some(NodeTls { server, client }))
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.insecure && self.certs_dir.is_none() {
            return Err((
                "certs_dir",
                "missing: name the directory of this node's certificates (`hanse cert \
                 create-ca` and `create-node` make them), or set `insecure = true` to run \
                 without TLS and authentication"
                    .into(),
            ));
        }
        if self.node_id == 0 || self.node_id >= 1 << 31 {
            // Shard ids a node allocates carry its id in their high 32 bits.
            return Err(("node_id", "must be 1 to 2147483647".into()));
        }
        if self.region.trim().is_empty() {
            return Err(("region", "must not be empty".into()));
        }
        if self.bootstrap && self.initial_peers.is_empty() {
            return Err((
                "initial_peers",
                "must list at least this node when it bootstraps".into(),
            ));
        }
        if self.balance.split_size_bytes < 4096 {
            return Err((
                "balance.split_size_bytes",
                "must be at least 4096 bytes".into(),
            ));
        }
        if self.balance.merge_size_bytes >= self.balance.split_size_bytes {
            return Err((
                "balance.merge_size_bytes",
                "must be below balance.split_size_bytes".into(),
            ));
        }
        let limits = &self.limits;
        for (field, value) in [
            ("limits.max_key_bytes", limits.max_key_bytes),
            ("limits.max_value_bytes", limits.max_value_bytes),
            ("limits.replica_mailbox_max", limits.replica_mailbox_max),
            (
                "limits.replica_requests_in_flight_max",
                limits.replica_requests_in_flight_max,
            ),
        ] {
            if value == 0 {
                return Err((field, "must be 1 or more".into()));
            }
        }
        for (field, value) in [
            ("limits.replica_mailbox_max", limits.replica_mailbox_max),
            (
                "limits.replica_requests_in_flight_max",
                limits.replica_requests_in_flight_max,
            ),
        ] {
            if value > REPLICA_QUEUE_MAX {
                return Err((field, format!("must be at most {REPLICA_QUEUE_MAX}")));
            }
        }
        let mut ids = BTreeSet::new();
        for peer in &self.initial_peers {
            if !ids.insert(peer.id) {
                return Err((
                    "initial_peers",
                    format!("node id {} appears twice", peer.id),
                ));
            }
            if !is_host_port(&peer.addr) {
                return Err((
                    "initial_peers",
                    format!("node {}: `{}` is not HOST:PORT", peer.id, peer.addr),
                ));
            }
        }
        if self
            .raft
            .heartbeat_ms
            .is_some_and(|ms| ms > HEARTBEAT_MS_MAX)
        {
            return Err((
                "raft.heartbeat_ms",
                format!("must be at most {HEARTBEAT_MS_MAX}"),
            ));
        }
        if self
            .raft
            .election_timeout_ms
            .is_some_and(|ms| ms > ELECTION_TIMEOUT_MS_MAX)
        {
            return Err((
                "raft.election_timeout_ms",
                format!("must be at most {ELECTION_TIMEOUT_MS_MAX}"),
            ));
        }
        // A key and a value at the limits travel in one Kv message.
        if limits.max_key_bytes.saturating_add(limits.max_value_bytes) >= KV_MESSAGE_BYTES_MAX {
            return Err((
                "limits.max_value_bytes",
                format!(
                    "with limits.max_key_bytes must stay below the {KV_MESSAGE_BYTES_MAX}-byte \
                     message limit"
                ),
            ));
        }
        if let Some(threads) = self.runtime_threads
            && !(1..=RUNTIME_THREADS_MAX).contains(&threads)
        {
            return Err((
                "runtime_threads",
                format!("must be 1 to {RUNTIME_THREADS_MAX}"),
            ));
        }
        if self.http_addr == Some(self.listen_addr) {
            return Err((
                "http_addr",
                format!("must differ from listen_addr ({})", self.listen_addr),
            ));
        }
        if self.ingest.enabled && self.ingest.queue_max == 0 {
            return Err(("ingest.queue_max", "must be 1 or more".into()));
        }
        let raft = self
            .group_options()
            .map_err(|e| ("latency", e.to_string()))?;
        if raft.heartbeat_interval.is_zero() {
            return Err(("raft.heartbeat_ms", "must be 1 or more".into()));
        }
        if raft.election_timeout_min < raft.heartbeat_interval * 2 {
            return Err((
                "raft.election_timeout_ms",
                format!(
                    "must be at least two heartbeats ({} ms)",
                    raft.heartbeat_interval.as_millis() * 2
                ),
            ));
        }
        if self.bootstrap && !ids.contains(&self.node_id) {
            return Err((
                "bootstrap",
                format!(
                    "node {} bootstraps but is not in initial_peers",
                    self.node_id
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `addr` is HOST:PORT: an IP address, or a host name (as Kubernetes gives a
/// StatefulSet's pods, resolved when connecting), and a port.
fn is_host_port(addr: &str) -> bool {
    if addr.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    port.parse::<u16>().is_ok_and(|p| p > 0) && host.len() <= 253 && host.split('.').all(label)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peers_are_named_by_address_or_host_name_with_a_port() {
        for good in [
            "127.0.0.11:7400",
            "[::1]:7400",
            "localhost:1",
            "hanse-eu-hamburg-0.hanse.db.svc.cluster.local:7400",
        ] {
            assert!(super::is_host_port(good), "{good}");
        }
        for bad in [
            "nowhere",
            "host:",
            "host:0",
            "host:99999",
            "ho st:1",
            ":7400",
            "a..b:1",
            "-a:1",
        ] {
            assert!(!super::is_host_port(bad), "{bad}");
        }
    }

    use super::*;

    fn load(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(&path)
    }

    const GOOD: &str = r#"
node_id = 1
region = "eu-hamburg"
listen_addr = "127.0.0.11:7401"
data_dir = "/tmp/n1"
certs_dir = "/tmp/n1-certs"
bootstrap = true
[[initial_peers]]
id = 1
addr = "127.0.0.11:7401"
region = "eu-hamburg"
"#;

    #[test]
    fn a_good_config_loads_with_defaults() {
        let config = load(GOOD).unwrap();
        assert_eq!(config.advertised(), "127.0.0.11:7401");
        assert!(config.sync);
    }

    #[test]
    fn a_node_without_certificates_must_say_it_runs_insecure() {
        let bare = GOOD.replace("certs_dir = \"/tmp/n1-certs\"\n", "");
        let refused = load(&bare).unwrap_err().to_string();
        assert!(refused.contains("`certs_dir`"), "{refused}");
        assert!(refused.contains("insecure = true"), "{refused}");
        let insecure = load(&format!("insecure = true\n{bare}")).unwrap();
        assert!(insecure.tls().unwrap().is_none());
        // With a directory that lacks the files, the error names the missing one.
        let missing = load(GOOD).unwrap().tls().unwrap_err().to_string();
        assert!(
            missing.contains("/tmp/n1-certs/ca.crt does not exist"),
            "{missing}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let missing = load(&GOOD.replace("node_id = 1\n", ""))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("node_id"), "{missing}");
        let unknown = load(&format!("colour = \"red\"\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("colour"), "{unknown}");
        let bad_addr = load(&GOOD.replace(
            "listen_addr = \"127.0.0.11:7401\"",
            "listen_addr = \"nowhere\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad_addr.contains("listen_addr") || bad_addr.contains("socket address"),
            "{bad_addr}"
        );
        let zero = load(&GOOD.replace("node_id = 1", "node_id = 0"))
            .unwrap_err()
            .to_string();
        assert!(zero.contains("`node_id`"), "{zero}");
        let huge = load(&GOOD.replace("node_id = 1", "node_id = 4294967296"))
            .unwrap_err()
            .to_string();
        assert!(huge.contains("`node_id`"), "{huge}");
        let stranger = load(&GOOD.replace("node_id = 1", "node_id = 9"))
            .unwrap_err()
            .to_string();
        assert!(stranger.contains("`bootstrap`"), "{stranger}");
        let no_mailbox = load(&format!("{GOOD}\n[limits]\nreplica_mailbox_max = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            no_mailbox.contains("`limits.replica_mailbox_max`"),
            "{no_mailbox}"
        );
        for (field, section) in [
            (
                "latency",
                "latency = \"eu-hamburg:ap-china=18446744073709551615s\"\n",
            ),
            (
                "raft.heartbeat_ms",
                "[raft]\nheartbeat_ms = 9223372036854775807\n",
            ),
            (
                "raft.election_timeout_ms",
                "[raft]\nelection_timeout_ms = 9223372036854775807\n",
            ),
            (
                "limits.max_value_bytes",
                "[limits]\nmax_value_bytes = 17825792\n",
            ),
            (
                "limits.max_value_bytes",
                "[limits]\nmax_key_bytes = 9223372036854775807\n",
            ),
            ("ingest.queue_max", "[ingest]\nqueue_max = 0\n"),
            ("runtime_threads", "runtime_threads = 0\n"),
            ("runtime_threads", "runtime_threads = 100000\n"),
            ("http_addr", "http_addr = \"127.0.0.11:7401\"\n"),
        ] {
            let text = match section.starts_with('[') {
                true => format!("{GOOD}\n{section}"),
                false => format!("{section}{GOOD}"),
            };
            let refused = load(&text).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("`{field}`")),
                "{section}: {refused}"
            );
        }
        let typo = load(&format!("{GOOD}\n[limits]\nmax_keys = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(typo.contains("max_keys"), "{typo}");
    }

    #[test]
    fn a_joining_node_needs_no_peers_and_limits_have_defaults() {
        let joining = GOOD
            .split("[[initial_peers]]")
            .next()
            .unwrap()
            .replace("bootstrap = true", "");
        let config = load(&joining).unwrap();
        assert!(config.initial_peers.is_empty());
        assert_eq!(config.limits, LimitsConfig::default());
        let limited = load(&format!("{GOOD}\n[limits]\nmax_key_bytes = 64\n")).unwrap();
        assert_eq!(limited.limits.max_key_bytes, 64);
        assert_eq!(limited.limits.replica_mailbox_max, 1024);
        assert!(config.balance.enabled);
        let inverted = load(&format!(
            "{GOOD}\n[balance]\nsplit_size_bytes = 65536\nmerge_size_bytes = 65536\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            inverted.contains("`balance.merge_size_bytes`"),
            "{inverted}"
        );
        assert_eq!(config.balance.placement, default_region_rules());
        let placed = load(&format!(
            "{GOOD}\n[[balance.placement]]\nregion = \"eu-hamburg\"\nvoters = 2\n\n\
             [[balance.placement]]\nregion = \"au-sydney\"\nlearners = 1\n"
        ))
        .unwrap();
        let rules: Vec<_> = placed
            .balance
            .placement
            .iter()
            .map(|r| (r.region.as_str(), r.voters, r.learners))
            .collect();
        assert_eq!(rules, [("eu-hamburg", 2, 0), ("au-sydney", 0, 1)]);
    }

    #[test]
    fn raft_timing_follows_the_latency_matrix_unless_set() {
        let plain = load(GOOD).unwrap().group_options().unwrap();
        assert_eq!(plain.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(plain.election_timeout_min, Duration::from_millis(200));
        let far = GOOD.replace(
            "bootstrap = true",
            "bootstrap = true\nlatency = \"eu-hamburg:ap-china=250ms, ap-china:au-sydney=1s\"",
        );
        let derived = load(&far).unwrap().group_options().unwrap();
        assert_eq!(derived.heartbeat_interval, Duration::from_millis(1550));
        assert_eq!(derived.election_timeout_min, Duration::from_millis(3100));
        assert_eq!(derived.election_timeout_max, Duration::from_millis(6200));
        let set = load(&format!(
            "{far}\n[raft]\nheartbeat_ms = 50\nelection_timeout_ms = 200\n"
        ))
        .unwrap()
        .group_options()
        .unwrap();
        assert_eq!(set.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(set.election_timeout_min, Duration::from_millis(200));
    }

    #[test]
    fn a_bad_latency_matrix_or_raft_timing_is_refused_by_field() {
        let bad = load(&GOOD.replace(
            "bootstrap = true",
            "bootstrap = true\nlatency = \"eu-hamburg=250ms\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("field `latency`") && bad.contains("REGION:REGION=TIME"),
            "{bad}"
        );
        let tight = load(&format!(
            "{GOOD}\n[raft]\nheartbeat_ms = 100\nelection_timeout_ms = 150\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(tight.contains("raft.election_timeout_ms"), "{tight}");
    }
}
