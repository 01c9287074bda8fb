//! Starting and restarting one shard's Raft group on this node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hanse_storage::{Engine, NodeId, ShardId};
use openraft::network::RaftNetworkFactory;
use openraft::{Config, SnapshotPolicy};

use crate::{
    LogStore, Proposer, ProposerOptions, Raft, ReplicaNode, StateMachine, StorageError, TypeConfig,
};

/// Tuning of every group on a node.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// This node's id in every group it belongs to.
    pub node_id: NodeId,
    /// A snapshot is built after this many applied entries, so the log before it can be
    /// purged. Each snapshot writes the shard's whole range, so this trades log size
    /// (about entries × entry size on disk) against snapshot I/O.
    pub snapshot_after_entries: u64,
    /// Entries kept behind a snapshot, so slightly lagging replicas catch up from the log.
    pub log_entries_kept: u64,
    /// How often a leader tells followers it is alive.
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for a random time between this and twice this starts
    /// an election. Failover takes a few of these: 300 ms (three heartbeats) brings a read
    /// after SIGKILL of the leader back in about 1.5 s on loopback; shorter risks needless
    /// elections on a busy two-core machine.
    pub election_timeout_min: Duration,
    pub proposer: ProposerOptions,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            node_id: 1,
            snapshot_after_entries: 50_000,
            log_entries_kept: 1_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            proposer: ProposerOptions::default(),
        }
    }
}

/// Why a group could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("shard {shard}: storage: {source}")]
    Storage {
        shard: ShardId,
        source: Box<StorageError>,
    },
    #[error("shard {shard}: raft configuration rejected: {source}")]
    Config {
        shard: ShardId,
        source: openraft::ConfigError,
    },
    #[error("shard {shard}: raft stopped: {source}")]
    Fatal {
        shard: ShardId,
        source: Box<openraft::error::Fatal<u64>>,
    },
    #[error("shard {shard}: initialising the group failed: {detail}")]
    Initialize { shard: ShardId, detail: String },
    #[error("shard {shard}: no leader elected within {waited:?}")]
    NoLeader { shard: ShardId, waited: Duration },
}

/// One shard's running Raft group.
#[derive(Clone)]
pub struct ShardGroup {
    pub shard: ShardId,
    pub raft: Raft,
    pub proposer: Proposer,
}

impl ShardGroup {
    /// Starts the group of `shard` from what `engine` holds for it (its descriptor must be
    /// stored). A group that has never been initialised waits for [`ShardGroup::initialize`].
    pub async fn start<N>(
        shard: ShardId,
        engine: Arc<Engine>,
        options: &GroupOptions,
        network: N,
    ) -> Result<ShardGroup, GroupError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let config = Config {
            cluster_name: format!("hanse-shard-{shard}"),
            heartbeat_interval: options.heartbeat_interval.as_millis() as u64,
            election_timeout_min: options.election_timeout_min.as_millis() as u64,
            election_timeout_max: 2 * options.election_timeout_min.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_after_entries),
            max_in_snapshot_log_to_keep: options.log_entries_kept,
            ..Config::default()
        }
        .validate()
        .map_err(|source| GroupError::Config { shard, source })?;
        let log_store = LogStore::new(shard, engine.clone());
        let state_machine =
            StateMachine::open(shard, engine).map_err(|source| GroupError::Storage {
                shard,
                source: Box::new(source),
            })?;
        let raft = Raft::new(
            options.node_id,
            Arc::new(config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|source| GroupError::Fatal {
            shard,
            source: Box::new(source),
        })?;
        let proposer = Proposer::start(shard, raft.clone(), &options.proposer);
        Ok(ShardGroup {
            shard,
            raft,
            proposer,
        })
    }

    /// Makes `members` the group's first membership, unless it already has one (so calling
    /// it again after a restart changes nothing).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, ReplicaNode>,
    ) -> Result<(), GroupError> {
        let shard = self.shard;
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|source| GroupError::Fatal {
                shard,
                source: Box::new(source),
            })?;
        if initialized {
            return Ok(());
        }
        self.raft
            .initialize(members)
            .await
            .map_err(|e| GroupError::Initialize {
                shard,
                detail: e.to_string(),
            })
    }

    /// Starts an election now instead of after the election timeout: used when this node
    /// is the group's only voter, or is the preferred leader of a new group.
    pub async fn campaign_unless_leader(&self) -> Result<(), GroupError> {
        let shard = self.shard;
        let id = self.raft.metrics().borrow().id;
        if self.raft.current_leader().await == Some(id) {
            return Ok(());
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|source| GroupError::Fatal {
                shard,
                source: Box::new(source),
            })
    }

    /// Waits until the group has a leader and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, GroupError> {
        let shard = self.shard;
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|_| GroupError::NoLeader {
                shard,
                waited: timeout,
            })?;
        metrics.current_leader.ok_or(GroupError::NoLeader {
            shard,
            waited: timeout,
        })
    }
}
