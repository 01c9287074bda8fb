//! Starting and restarting one shard's Raft group on this node.

use crate::knobs::{
    CATCH_UP_TIMEOUT, INGESTED_LOG_BYTES_MAX, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_TIMEOUT,
    SNAPSHOT_TIMEOUT,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hanse_shard::{NodeId, ReplicaRole, ShardDescriptor, ShardId};
use hanse_storage::{FencedStore, Store};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::storage::RaftLogStorage;
use openraft::{ChangeMembers, CommittedLeaderId, Config, LogId, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use hanse_shard::{Routed, ShardRequest, ShardResponse};

use crate::hibernation::{HibernationOptions, Liveness, Sleep};
use crate::lease::{LeaseClock, Leased};
use crate::network::Campaigner;

use crate::{
    AddedBy, AppliedIndexes, LogStore, ProposeError, Proposer, ProposerOptions, Raft, ReplicaNode,
    StateMachine, StorageError, TypeConfig,
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
    /// How often a leader tells followers it is alive; openraft also gives up on an
    /// AppendEntries answer after this long.
    pub heartbeat_interval: Duration,
    /// A follower starts an election once it has heard nothing from its leader for
    /// openraft's leader lease (`election_timeout_max`) plus a random time between this
    /// and `election_timeout_max`: 600 to 800 ms of silence at the default 200 ms (six
    /// heartbeats or more, so a busy two-core machine holds no needless elections), and
    /// failover after SIGKILL of a leader takes about that long.
    pub election_timeout_min: Duration,
    /// The upper end of the election timeout (exclusive; twice the minimum by default).
    /// Simulations give each node a fixed timeout of its own instead of a random one.
    pub election_timeout_max: Duration,
    pub proposer: ProposerOptions,
    /// The applied indexes of every replica on the node (clones share them).
    pub applied_indexes: AppliedIndexes,
    /// When idle groups stop ticking (see [`crate::hibernation`]).
    pub hibernation: HibernationOptions,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            node_id: 1,
            snapshot_after_entries: 50_000,
            log_entries_kept: 1_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(400),
            proposer: ProposerOptions::default(),
            applied_indexes: AppliedIndexes::default(),
            hibernation: HibernationOptions::default(),
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
    #[error("shard {shard}: the node's storage refuses writes: {detail}")]
    StorageFailed { shard: ShardId, detail: String },
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
    #[error("this node does not lead shard {shard} (leader: {leader:?})")]
    NotLeader {
        shard: ShardId,
        leader: Option<NodeId>,
    },
    #[error("shard {shard}: membership change refused: {detail}")]
    Membership { shard: ShardId, detail: String },
    #[error("shard {shard}: leadership transfer to node {to} failed: {detail}")]
    Transfer {
        shard: ShardId,
        to: NodeId,
        detail: String,
    },
}

impl GroupError {
    /// The shard whose group failed.
    pub fn shard(&self) -> ShardId {
        match self {
            GroupError::Storage { shard, .. }
            | GroupError::StorageFailed { shard, .. }
            | GroupError::Config { shard, .. }
            | GroupError::Fatal { shard, .. }
            | GroupError::Initialize { shard, .. }
            | GroupError::NoLeader { shard, .. }
            | GroupError::NotLeader { shard, .. }
            | GroupError::Membership { shard, .. }
            | GroupError::Transfer { shard, .. } => *shard,
        }
    }
}

/// One shard's running Raft group.
#[derive(Clone)]
pub struct ShardGroup {
    pub shard: ShardId,
    pub raft: Raft,
    proposer: Proposer,
    /// The shard's descriptor as this replica has applied it.
    pub descriptor: watch::Receiver<ShardDescriptor>,
    /// How long a follower refuses to vote after it last heard from its leader.
    leader_lease: Duration,
    /// What followers acknowledged of this replica's leadership: its lease for reads.
    lease: Arc<LeaseClock>,
    /// A replica that may have followed a leader before this start refuses to vote until
    /// then (see [`crate::lease`]).
    votes_refused_until: Option<Instant>,
    /// Held by membership changes and by merge preparations and commits, which must not
    /// interleave (see [`holds_changes_back`]).
    changes: Arc<tokio::sync::Mutex<()>>,
    /// The log position below which this replica votes for no candidate (see
    /// [`crate::AddedBy`]).
    vote_floor: Option<LogId<NodeId>>,
    /// The store as this group writes to it; closed when the group stops, since
    /// openraft's state-machine worker may still be finishing a command (a snapshot
    /// install, say) after `Raft::shutdown` returns, and such a late write must not land
    /// after the replica was deleted, retired or started again.
    store: Arc<FencedStore>,
    /// Set when the shard was merged into its neighbour and its group stops for good (see
    /// [`ShardGroup::retire`]).
    retired: Arc<AtomicBool>,
    /// Whether the group hibernates (and when), and when it last had work.
    sleep: Arc<Sleep>,
}

/// Whether `request` must not interleave with a membership change of its shard. A
/// PrepareMerge freezes the source with the replica set the merge relies on. A
/// CommitMerge takes over the source's range with the data of each node's own replica of
/// it: a replica being added must start from a snapshot taken after the commit, never
/// replay the commit on a node that holds no replica of the source.
fn holds_changes_back(request: &ShardRequest) -> bool {
    matches!(
        request,
        ShardRequest::PrepareMerge { .. } | ShardRequest::CommitMerge { .. }
    )
}

impl Routed for ShardGroup {
    fn with_descriptor<R>(&self, f: impl FnOnce(&ShardDescriptor) -> R) -> R {
        f(&self.descriptor.borrow())
    }
}

/// Whether a replica that `voted` (or not) and holds the log `logged` may have accepted a
/// leader before this start. One whose log holds only its group's first entry (index 0,
/// written by `Raft::initialize` or by the split that created the shard) and that never
/// voted has followed no leader: a leader's first act is an entry at index 1. Refusing
/// its votes would leave a split's new shard leaderless for a whole lease.
fn may_have_followed(voted: bool, logged: &openraft::storage::LogState<TypeConfig>) -> bool {
    voted
        || logged.last_log_id.is_some_and(|id| id.index > 0)
        || logged.last_purged_log_id.is_some()
}

/// Builds a snapshot and purges the log up to it each time the replica took
/// [`INGESTED_LOG_BYTES_MAX`] of ingests since its last snapshot; ends with the state
/// machine.
async fn compact_after_ingests(raft: Raft, mut ingested: watch::Receiver<u64>) {
    while ingested.changed().await.is_ok() {
        if *ingested.borrow_and_update() < INGESTED_LOG_BYTES_MAX {
            continue;
        }
        let Some(applied) = raft.metrics().borrow().last_applied.map(|id| id.index) else {
            continue;
        };
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        let built = raft
            .wait(Some(SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "a snapshot after ingests",
            )
            .await;
        match built {
            Ok(_) => {
                if raft.trigger().purge_log(applied).await.is_err() {
                    return;
                }
            }
            Err(openraft::metrics::WaitError::ShuttingDown) => return,
            Err(openraft::metrics::WaitError::Timeout(..)) => {}
        }
    }
}

impl ShardGroup {
    /// Starts the group of `shard` from what `store` holds for it (its descriptor must be
    /// stored). A group that has never been initialised waits for [`ShardGroup::initialize`].
    pub async fn start<N>(
        shard: ShardId,
        store: Arc<dyn Store>,
        options: &GroupOptions,
        network: N,
    ) -> Result<ShardGroup, GroupError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        // A replica restarted on storage that refuses writes would only fail again.
        if let Some(detail) = store.poisoned() {
            return Err(GroupError::StorageFailed { shard, detail });
        }
        let storage = |source| GroupError::Storage {
            shard,
            source: Box::new(source),
        };
        let fenced = Arc::new(FencedStore::new(store));
        let store: Arc<dyn Store> = fenced.clone();
        let mut log_store = LogStore::new(shard, store.clone());
        let vote = log_store.read_vote().await.map_err(storage)?;
        // A follower of a leader elsewhere starts asleep: that leader may sleep and send
        // nothing, and waking it with an election would depose it for no reason. If its
        // node is gone, liveness wakes the group (see `crate::hibernation`).
        let asleep = options.hibernation.enabled
            && vote.is_some_and(|v| {
                v.is_committed()
                    && v.leader_id()
                        .voted_for()
                        .is_some_and(|leader| leader != options.node_id)
            });
        let config = Config {
            cluster_name: format!("hanse-shard-{shard}"),
            enable_tick: !asleep,
            heartbeat_interval: options.heartbeat_interval.as_millis() as u64,
            election_timeout_min: options.election_timeout_min.as_millis() as u64,
            election_timeout_max: options.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_after_entries),
            max_in_snapshot_log_to_keep: options.log_entries_kept,
            // Like AppendEntries (see the transport), each snapshot chunk must arrive
            // within its timeout on a loaded machine: smaller chunks, more time.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
            ..Config::default()
        }
        .validate()
        .map_err(|source| GroupError::Config { shard, source })?;
        // openraft 0.9 derives the followers' lease from the longest election timeout.
        let leader_lease = Duration::from_millis(config.election_timeout_max);
        // A replica that voted or holds a leader's entries may have acknowledged a leader
        // before this start; a new one cannot have. (Accepting a leader's first append
        // makes a follower save that leader's vote, durably, before it answers.)
        let voted = vote.is_some();
        let logged = log_store.get_log_state().await.map_err(storage)?;
        let votes_refused_until =
            may_have_followed(voted, &logged).then(|| Instant::now() + leader_lease);
        let vote_floor = log_store
            .vote_floor()
            .map_err(|source| GroupError::Storage {
                shard,
                source: Box::new(source),
            })?;
        let state_machine = StateMachine::open(shard, store)
            .map_err(|source| GroupError::Storage {
                shard,
                source: Box::new(source),
            })?
            .with_applied_indexes(options.applied_indexes.clone());
        let descriptor = state_machine.watch_descriptor();
        let ingested = state_machine.watch_ingested();
        let lease = Arc::new(LeaseClock::new(leader_lease));
        let raft = Raft::new(
            options.node_id,
            Arc::new(config),
            Leased::new(network, lease.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|source| GroupError::Fatal {
            shard,
            source: Box::new(source),
        })?;
        tokio::spawn(compact_after_ingests(raft.clone(), ingested));
        let retired = Arc::new(AtomicBool::new(false));
        let proposer = Proposer::start(shard, raft.clone(), &options.proposer, retired.clone());
        Ok(ShardGroup {
            shard,
            raft,
            proposer,
            descriptor,
            leader_lease,
            lease,
            votes_refused_until,
            changes: Arc::default(),
            vote_floor,
            store: fenced,
            retired,
            sleep: Arc::new(Sleep::new(options.hibernation, asleep)),
        })
    }

    /// Notes work for the group, and wakes it if it hibernates.
    pub fn wake(&self) {
        if self.sleep.options.enabled {
            self.sleep.wake(|| self.raft.runtime_config().tick(true));
        }
    }

    /// Wakes the group if this replica leads it: a client request or an admin step. A
    /// follower stays asleep: its election timer ran out while it slept, and woken it
    /// would campaign against a leader that is merely asleep too.
    fn wake_if_leading(&self) {
        let leading = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_leader == Some(metrics.id)
        };
        if leading {
            self.wake();
        }
    }

    /// Whether the group hibernates on this node.
    pub fn asleep(&self) -> bool {
        self.sleep.asleep()
    }

    /// Puts the group to sleep on this node if it is idle (see [`crate::hibernation`]):
    /// as leader, no request for the idle time, every replica holding its whole log and
    /// all of it applied; as follower, no new entries for half that, from a leader on a
    /// node `liveness` holds alive. Answers whether it sleeps.
    pub fn hibernate_if_idle(&self, liveness: &Liveness, now: Instant) -> bool {
        if !self.sleep.options.enabled {
            return false;
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let me = metrics.id;
        let (idle, quiet) = match metrics.current_leader {
            Some(leader) if leader == me && metrics.state == ServerState::Leader => {
                let last = metrics.last_log_index;
                let applied = metrics.last_applied.map(|id| id.index) == last;
                let replicated = metrics
                    .replication
                    .as_ref()
                    .is_some_and(|r| r.values().all(|matched| matched.map(|id| id.index) == last));
                (self.sleep.options.idle, applied && replicated)
            }
            Some(leader) if leader != me => (
                self.sleep.options.follower_idle(),
                matches!(metrics.state, ServerState::Follower | ServerState::Learner)
                    && liveness.is_alive(leader, now),
            ),
            _ => return false,
        };
        self.sleep.sleep_if_idle(
            idle,
            now,
            || quiet,
            || self.raft.runtime_config().tick(false),
        )
    }

    /// Hands a leader's append to this replica; one that carries entries wakes it (its
    /// leader is awake) once it was taken, so that the election timer starts from it
    /// rather than from before the sleep. A bare heartbeat leaves a sleeping follower
    /// asleep: its leader may be awake for reads alone.
    pub async fn append_entries(
        &self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) -> Result<openraft::raft::AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let carries_entries = !rpc.entries.is_empty();
        let answer = self.raft.append_entries(rpc).await;
        if carries_entries && answer.as_ref().is_ok_and(|a| a.is_success()) {
            self.wake();
        }
        answer
    }

    /// Hands a leader's snapshot chunk to this replica, and wakes it once taken (as an
    /// append with entries does).
    pub async fn install_snapshot(
        &self,
        rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        RaftError<NodeId, openraft::error::InstallSnapshotError>,
    > {
        let answer = self.raft.install_snapshot(rpc).await;
        if answer.is_ok() {
            self.wake();
        }
        answer
    }

    /// Wakes the group and starts an election now (a leader's `TimeoutNow`).
    pub async fn campaign(&self) -> Result<(), GroupError> {
        self.wake();
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|source| self.fatal(source))
    }

    /// Stops the group of a shard its left neighbour has absorbed. Every write still
    /// waiting in its log came after the merge's preparation (earlier ones were applied
    /// before the neighbour could commit), so none will ever apply: their callers hear a
    /// refusal they may retry, not "outcome unknown".
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.shutdown().await;
    }

    /// Stops the group: its Raft instance shuts down, and nothing of it writes to the
    /// store any more once this returns (a write under way finishes first). Deleting or
    /// restarting the replica comes after this.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.store.close();
    }

    /// What this replica, as its shard's leader, tells a node it adds an empty replica on
    /// (see [`crate::AddedBy`]); `None` while it does not lead. The leader's last entry is
    /// of its own term (its first act as leader appends one), so the floor is that term and
    /// its last index: never below its real last entry, which holds every committed one.
    pub fn added_by(&self) -> Option<AddedBy> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.vote.leader_id();
        let node = leader.voted_for()?;
        if node != metrics.id || metrics.current_leader != Some(metrics.id) {
            return None;
        }
        Some(AddedBy {
            term: leader.term,
            node,
            last_log: metrics
                .last_log_index
                .map(|index| LogId::new(CommittedLeaderId::new(leader.term, node), index)),
        })
    }

    /// Handles a candidate's vote request: refused without asking Raft when the candidate's
    /// log ends below this replica's vote floor (see [`crate::AddedBy`]), else Raft's.
    pub async fn vote(
        &self,
        rpc: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        if self
            .votes_refused_until
            .is_some_and(|until| Instant::now() < until)
        {
            // Restarted: the leader it followed may still hold a lease it cannot see.
            let vote = self.raft.metrics().borrow().vote;
            return Ok(VoteResponse::new(vote, None, false));
        }
        if self.vote_floor.is_some() && rpc.last_log_id < self.vote_floor {
            let vote = self.raft.metrics().borrow().vote;
            tracing::info!(
                shard = self.shard,
                candidate = rpc.vote.leader_id().voted_for(),
                "vote refused: the candidate's log ends before the leader that added this replica"
            );
            // The candidate looks at the refusal's vote only (a newer one deposes it).
            return Ok(VoteResponse::new(vote, None, false));
        }
        self.raft.vote(rpc).await
    }

    /// Proposes `request` and waits for its response. A merge step that membership
    /// changes must not interleave with (see [`holds_changes_back`]) waits for a change in
    /// progress here to finish, and holds the next one back until it is applied.
    pub async fn propose(&self, request: ShardRequest) -> Result<ShardResponse, ProposeError> {
        self.wake_if_leading();
        if holds_changes_back(&request) {
            let _changes = self.changes.lock().await;
            return self.proposer.propose(request).await;
        }
        self.proposer.propose(request).await
    }

    /// Proposes `requests` in one log entry and waits for each one's response, in order.
    pub async fn propose_together(
        &self,
        requests: Vec<ShardRequest>,
    ) -> Vec<Result<ShardResponse, ProposeError>> {
        self.wake_if_leading();
        let merge = requests.iter().any(holds_changes_back);
        let _changes = match merge {
            true => Some(self.changes.lock().await),
            false => None,
        };
        self.proposer.propose_together(requests).await
    }

    /// The index a linearizable read may be served at on this replica, once its state
    /// machine has applied it: at once from the applied state while this replica leads
    /// and holds its lease (see [`crate::lease`]), else after a heartbeat round to a
    /// quorum (openraft's read index).
    pub async fn read_index(
        &self,
    ) -> Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, ReplicaNode>>> {
        self.wake_if_leading();
        if let Some(index) = self.leased_read_index() {
            return Ok(index);
        }
        let read = self.raft.ensure_linearizable().await?;
        Ok(read.map_or(0, |log| log.index))
    }

    /// The applied index, if a read may be served from it without asking a quorum: this
    /// replica leads, has applied an entry of its own term (so everything earlier leaders
    /// committed is applied too, and every write it acknowledged), and holds the lease.
    pub fn leased_read_index(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leading = metrics.state == ServerState::Leader
            && metrics.current_leader == Some(metrics.id)
            && metrics.vote.is_committed();
        let applied = metrics.last_applied?;
        let own_term = applied.leader_id.term == metrics.vote.leader_id().term;
        let membership = metrics.membership_config.membership();
        let leased = leading
            && own_term
            && self
                .lease
                .holds(metrics.id, &metrics.vote, membership, Instant::now());
        leased.then_some(applied.index)
    }

    /// Taken before a membership change: waits for other changes on this leader, applies
    /// whatever earlier leaders committed (a PrepareMerge among it), and refuses while
    /// the shard is frozen for a merge, which would otherwise take over a range whose
    /// replicas it no longer knows.
    async fn membership_change(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, GroupError> {
        let shard = self.shard;
        self.wake_if_leading();
        let guard = self.changes.lock().await;
        self.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
                GroupError::NotLeader {
                    shard,
                    leader: forward.leader_id,
                }
            }
            other => GroupError::Membership {
                shard,
                detail: other.to_string(),
            },
        })?;
        if let Some(merge) = self.descriptor.borrow().merging {
            return Err(GroupError::Membership {
                shard,
                detail: format!(
                    "the shard is frozen for a merge into shard {}; replicas change once the \
                     merge commits or rolls back",
                    merge.into
                ),
            });
        }
        Ok(guard)
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
        let id = self.raft.metrics().borrow().id;
        if self.raft.current_leader().await == Some(id) {
            return Ok(());
        }
        self.campaign().await
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

    fn fatal(&self, source: openraft::error::Fatal<u64>) -> GroupError {
        GroupError::Fatal {
            shard: self.shard,
            source: Box::new(source),
        }
    }

    fn write_error(&self, e: RaftError<u64, ClientWriteError<u64, ReplicaNode>>) -> GroupError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                GroupError::NotLeader {
                    shard: self.shard,
                    leader: forward.leader_id,
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                GroupError::Membership {
                    shard: self.shard,
                    detail: e.to_string(),
                }
            }
            RaftError::Fatal(source) => self.fatal(source),
        }
    }

    /// Adds `node` (reachable as `at`) to the group: first as a learner, returning once it
    /// has caught up with the log (by snapshot and entries), then promoted to a voter when
    /// `role` asks for one. Run on the leader; the node must already host an empty replica.
    pub async fn add_replica(
        &self,
        node: NodeId,
        at: ReplicaNode,
        role: ReplicaRole,
    ) -> Result<(), GroupError> {
        let _change = self.membership_change().await?;
        self.purge_log_to_snapshot().await?;
        // Bounded, so that a replica that cannot catch up does not hold the shard's
        // membership changes (and merges) back for good; the caller may try again.
        tokio::time::timeout(CATCH_UP_TIMEOUT, self.raft.add_learner(node, at, true))
            .await
            .map_err(|_| GroupError::Membership {
                shard: self.shard,
                detail: format!("node {node} did not catch up within {CATCH_UP_TIMEOUT:?}"),
            })?
            .map_err(|e| self.write_error(e))?;
        if role == ReplicaRole::Voter {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds([node].into()), false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        Ok(())
    }

    /// Snapshots the shard's state and purges the log up to it, so that a replica added
    /// next starts from the snapshot. Replaying the log from its start would miss keys: a
    /// shard created by a split inherits its parent's keys and a merge its neighbour's,
    /// without a log entry that writes them (and replaying a split would create the new
    /// shard on a node that is not its member).
    async fn purge_log_to_snapshot(&self) -> Result<(), GroupError> {
        let shard = self.shard;
        let applied = self.raft.metrics().borrow().last_applied.map(|id| id.index);
        let Some(applied) = applied else {
            return Ok(());
        };
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| self.fatal(e))?;
        let membership_wait = |what: &str, waited| GroupError::Membership {
            shard,
            detail: format!("{what} not done within {waited:?}"),
        };
        let snapshot = self
            .raft
            .wait(Some(SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "a snapshot of the applied state",
            )
            .await
            .map_err(|_| {
                membership_wait("the snapshot before adding a replica was", SNAPSHOT_TIMEOUT)
            })?
            .snapshot
            .expect("waited for it");
        self.raft
            .trigger()
            .purge_log(snapshot.index)
            .await
            .map_err(|e| self.fatal(e))?;
        self.raft
            .wait(Some(SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= snapshot.index),
                "the log purged up to the snapshot",
            )
            .await
            .map_err(|_| {
                membership_wait(
                    "purging the log before adding a replica was",
                    SNAPSHOT_TIMEOUT,
                )
            })?;
        Ok(())
    }

    /// Makes the replica on `node` a voter or a learner; a voter turned learner keeps its
    /// copy and keeps receiving the log. Run on the leader.
    pub async fn set_role(&self, node: NodeId, role: ReplicaRole) -> Result<(), GroupError> {
        let _change = self.membership_change().await?;
        let change = match role {
            ReplicaRole::Voter => ChangeMembers::AddVoterIds([node].into()),
            ReplicaRole::Learner => ChangeMembers::RemoveVoters([node].into()),
        };
        self.raft
            .change_membership(change, true)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Removes `node` from the group, whether voter or learner. Run on the leader; a
    /// leader that removes itself steps down once the change is committed.
    pub async fn remove_replica(&self, node: NodeId) -> Result<(), GroupError> {
        let _change = self.membership_change().await?;
        let is_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node);
        let change = if is_voter {
            ChangeMembers::RemoveVoters([node].into())
        } else {
            ChangeMembers::RemoveNodes([node].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Hands leadership to the voter `to`. openraft 0.9 has no transfer command, so the
    /// leader does what one would: it waits until `to` holds its whole log, stops its
    /// heartbeats until the followers' leases have run out, then tells `to` to campaign
    /// (`TimeoutNow`). `to` has the longest log and campaigns before any other follower's
    /// election timer fires, so it wins. The caller must hold new writes and reads of the
    /// shard meanwhile (they would renew the leases); they pause for about one lease.
    pub async fn transfer_leader(
        &self,
        to: NodeId,
        network: &impl Campaigner,
        timeout: Duration,
    ) -> Result<(), GroupError> {
        let shard = self.shard;
        self.wake_if_leading();
        let failed = |detail: String| GroupError::Transfer { shard, to, detail };
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            return Err(GroupError::NotLeader {
                shard,
                leader: metrics.current_leader,
            });
        }
        if to == metrics.id {
            return Ok(());
        }
        let membership = metrics.membership_config.membership();
        let Some(target) = membership
            .get_node(&to)
            .filter(|_| membership.voter_ids().any(|v| v == to))
        else {
            return Err(failed(format!("node {to} is not a voter of the shard")));
        };
        let last_index = metrics.last_log_index;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&to).copied().flatten());
                    matched.map(|id| id.index) >= last_index
                },
                "the target holds the whole log",
            )
            .await
            .map_err(|_| failed(format!("it did not catch up within {timeout:?}")))?;

        // No read is served from the lease from here on: the target campaigns once the
        // followers' leases ran out. Heartbeats resume however this ends, a dropped call
        // included: this node leads again if the transfer did not happen.
        self.lease.end();
        let _silent = Silence::start(&self.raft);
        tokio::time::sleep(self.leader_lease + self.leader_lease / 4).await;
        network
            .timeout_now(to, target)
            .await
            .map_err(|e| failed(format!("it could not be told to campaign: {e}")))?;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(to), "the target leads")
            .await
            .map_err(|_| failed(format!("it did not win an election within {timeout:?}")))?;
        Ok(())
    }
}

/// A leader's heartbeats held back, so that its followers' leases run out for a transfer;
/// they resume when this is dropped.
struct Silence<'a>(&'a Raft);

impl<'a> Silence<'a> {
    fn start(raft: &'a Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        Silence(raft)
    }
}

impl Drop for Silence<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::LogState;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn only_a_replica_that_voted_or_holds_a_leaders_entries_waits_out_a_lease() {
        let first_entry_only = LogState::<TypeConfig> {
            last_purged_log_id: None,
            last_log_id: Some(LogId::default()),
        };
        // A split's new replica, or a bootstrapped one before any election.
        assert!(!may_have_followed(false, &first_entry_only));
        assert!(!may_have_followed(false, &LogState::default()));
        assert!(may_have_followed(true, &first_entry_only));
        let led = LogState::<TypeConfig> {
            last_purged_log_id: None,
            last_log_id: Some(log_id(1, 1)),
        };
        assert!(may_have_followed(false, &led));
        let purged = LogState::<TypeConfig> {
            last_purged_log_id: Some(log_id(2, 40)),
            last_log_id: Some(log_id(2, 40)),
        };
        assert!(may_have_followed(false, &purged));
    }
}
