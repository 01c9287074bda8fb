//! Runs the size and leader heuristics ([`hanse_planner::balance`]) on the meta shard's
//! leader: every few seconds it reads the routing table, asks for splits and merges
//! (with the replica moves that give merge partners the same replicas first) or, when
//! there are none, role changes and leadership moves toward the preferred region or an
//! even spread, and carries them out: a split or merge of a shard led here runs its
//! coordinator here, anything else goes to the Admin service of the node that leads the
//! shard. Every node runs the loop; only the meta leader acts, so a new meta leader takes
//! over by itself. How long each shard has been unchanged is remembered
//! here, so a new meta leader waits one cool-down before it acts.

use crate::knobs::{
    ACTION_TIMEOUT, ACTIONS_PER_ROUND_MAX, BALANCE_INTERVAL, DRAIN_CHECK_TIMEOUT,
    LEADER_MOVES_PER_ROUND_MAX, MERGE_RESUME_AFTER, NODE_LIVE_MS,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use hanse_planner::balance::{
    Action, BalanceOptions, LeaderMove, LeaderView, PlacementView, RegionRule, RoleChange,
    ShardView, VOTERS_MIN, leader_policy, learner_regions, placement_policy, region_policy,
    size_policy, writers_region,
};
use hanse_planner::envelope::Envelope;
use hanse_planner::live::{LiveAction, LiveLoad, LiveNode, LiveShard, Observe, PlannerActor};
use hanse_proto::v1 as pb;
use hanse_proto::v1::admin_client::AdminClient;
use hanse_shard::ReplicaRole;
use hanse_shard::meta::{META_SHARD, NodeRecord, ShardRecord, ShardStats};
use hanse_shard::{Epoch, NodeId, ShardId};
use hanse_storage_rocksdb::Engine;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::transport::Channel;

use crate::activity::Activity;
use crate::actors::Routes;
use crate::config::{BalanceConfig, PlannerMode};
use crate::coordination::NodeRuntime;
use crate::peers::Peers;
use crate::reporter::{now_ms, read_routing_table};

/// A routing-table entry's load as the planner takes it.
fn live_load(stats: &ShardStats) -> LiveLoad {
    LiveLoad {
        reads_per_sec: stats.reads_per_sec as f64,
        writes_per_sec: stats.writes_per_sec as f64,
        bytes_written_per_sec: stats.bytes_written_per_sec as f64,
        size_bytes: stats.size_bytes,
        split_key: stats.split_key.clone(),
        sampled_keys: stats.sampled_keys.clone(),
        origins: stats.origins.clone(),
    }
}

pub(crate) struct Balancer {
    /// This node's Admin address.
    addr: String,
    peers: Arc<Peers>,
    /// Splits and merges of shards led here run here.
    runtime: NodeRuntime,
    engine: Arc<Engine>,
    routes: Arc<Routes>,
    options: BalanceOptions,
    preferred_leader_region: Option<String>,
    /// How many replicas of every shard each region holds.
    rules: Vec<RegionRule>,
    /// Regions whose replicas are learners (from the rules).
    learner_regions: Vec<String>,
    /// The planner, shown every round's table; in model mode its decisions are carried
    /// out before the size rules'.
    planner: Option<Addr<PlannerActor>>,
    /// The planner's decisions are carried out (model mode): it owns leader placement,
    /// and the leader-spreading rule stays out of its way.
    planner_acts: bool,
    /// Each shard's epoch and when this node first saw it.
    seen: Mutex<HashMap<ShardId, (Epoch, Instant)>>,
    /// Keep split keys out of the log.
    redact: bool,
    /// The heat map and the actions begun, for the console.
    activity: Arc<std::sync::Mutex<Activity>>,
}

/// The planner's safety envelope for this balancer's settings: merged shards stay under
/// the split size, a changed shard rests one cool-down, and one round's action limit.
/// What one balancing round read from the meta shard: the routing table and the node
/// directory.
struct Directory<'a> {
    table: &'a [ShardRecord],
    nodes: &'a HashMap<NodeId, NodeRecord>,
}

impl Directory<'_> {
    /// The address of a node hosting `shard`, its leader first: only such a node can
    /// change the shard, and the meta leader running the balancer may host none of it.
    fn host_of(&self, shard: ShardId) -> Option<&str> {
        let record = self.table.iter().find(|r| r.descriptor.id == shard)?;
        let replicas = record.descriptor.replicas.iter().map(|r| r.node);
        record
            .leader
            .into_iter()
            .chain(replicas)
            .find_map(|node| self.nodes.get(&node))
            .map(|n| n.addr.as_str())
    }
}

pub(crate) fn planner_envelope(config: &BalanceConfig) -> Envelope {
    Envelope {
        merge_size_max: config.split_size_bytes as f64,
        cool_down_ticks: config.cool_down_secs / BALANCE_INTERVAL.as_secs(),
        actions_per_tick_max: ACTIONS_PER_ROUND_MAX,
        ..Envelope::default()
    }
}

impl Balancer {
    pub(crate) fn new(
        addr: String,
        runtime: NodeRuntime,
        config: &BalanceConfig,
        planner: Option<Addr<PlannerActor>>,
        redact: bool,
        activity: Arc<std::sync::Mutex<Activity>>,
    ) -> Self {
        Balancer {
            addr,
            peers: runtime.peers.clone(),
            engine: runtime.engine.clone(),
            routes: runtime.routes.clone(),
            runtime,
            options: config.options(),
            preferred_leader_region: config.preferred_leader_region.clone(),
            learner_regions: learner_regions(&config.placement),
            rules: config.placement.clone(),
            planner_acts: planner.is_some()
                && matches!(config.planner, PlannerMode::Model | PlannerMode::Heuristic),
            planner,
            seen: Mutex::new(HashMap::new()),
            redact,
            activity,
        }
    }

    /// Whether node `node` was drained (it would refuse the leadership, after the shard's
    /// leader had held its heartbeats back for nothing); a node that does not answer is
    /// left to the transfer to find out.
    async fn drained(&self, node: NodeId, directory: &Directory<'_>) -> bool {
        let Some(record) = directory.nodes.get(&node) else {
            return false;
        };
        let Ok(mut admin) = self.peers.admin(&record.addr) else {
            return false;
        };
        let asked = admin.status(self.peers.request(pb::StatusRequest {}));
        match tokio::time::timeout(DRAIN_CHECK_TIMEOUT, asked).await {
            Ok(Ok(status)) if status.get_ref().draining => {
                tracing::info!(node, "not moving leadership to a drained node");
                true
            }
            _ => false,
        }
    }

    /// Counts an action about to be carried out and keeps it for the console.
    fn decided(
        &self,
        kind: &'static str,
        decided_by: &'static str,
        shard: ShardId,
        detail: String,
    ) {
        crate::metrics::METRICS
            .planner_decisions
            .with_label_values(&[kind, decided_by])
            .inc();
        let action = pb::BalanceAction {
            unix_ms: now_ms(),
            kind: kind.into(),
            shard_id: shard,
            decided_by: decided_by.into(),
            detail,
        };
        self.activity.lock().expect("activity lock").action(action);
    }

    /// `action` as the log shows it: without its split key where keys are redacted.
    fn shown(&self, action: &LiveAction) -> String {
        match action {
            LiveAction::Split { shard, .. } if self.redact => {
                format!("split shard {shard} at a key (redacted)")
            }
            action => action.to_string(),
        }
    }

    /// An Admin client on a node that can change `shard` (this node when none is known).
    async fn admin_for(
        &self,
        shard: ShardId,
        directory: &Directory<'_>,
    ) -> Result<AdminClient<Channel>, Status> {
        let addr = directory.host_of(shard).unwrap_or(&self.addr);
        self.peers.admin(addr)
    }

    /// Balances every `BALANCE_INTERVAL` until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(BALANCE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let started = std::time::Instant::now();
            let round = self.balance_once().await;
            if self.routes.get(META_SHARD).is_some_and(|m| m.leads()) {
                crate::metrics::METRICS
                    .balancer_round
                    .observe(started.elapsed().as_secs_f64());
            }
            if let Err(e) = round {
                tracing::info!("balancing stopped for a round: {}", e.message());
            }
        }
    }

    async fn balance_once(&self) -> Result<(), Status> {
        let Some(meta) = self.routes.get(META_SHARD).filter(|m| m.leads()) else {
            self.seen.lock().await.clear();
            return Ok(());
        };
        let (table, nodes) = read_routing_table(&self.engine, &meta).await?;
        self.activity
            .lock()
            .expect("activity lock")
            .observe(&table, now_ms());
        let directory = Directory {
            table: &table,
            nodes: &nodes,
        };
        let now = Instant::now();
        let mut seen = self.seen.lock().await;
        let listed: HashSet<ShardId> = table.iter().map(|r| r.descriptor.id).collect();
        seen.retain(|id, _| listed.contains(id));
        let views: Vec<ShardView> = table
            .iter()
            .map(|record| {
                let d = &record.descriptor;
                let since = seen.entry(d.id).or_insert((d.epoch, now));
                if since.0 != d.epoch {
                    *since = (d.epoch, now);
                }
                let mut replicas: Vec<_> = d.replicas.iter().map(|r| (r.node, r.role)).collect();
                replicas.sort_by_key(|(node, _)| *node);
                ShardView {
                    id: d.id,
                    replicas,
                    size_bytes: record.stats.size_bytes,
                    ops_per_sec: record.stats.reads_per_sec + record.stats.writes_per_sec,
                    split_key: record.stats.split_key.clone(),
                    stable_for: now - since.1,
                    pinned: d.id == META_SHARD || d.merging.is_some(),
                }
            })
            .collect();
        drop(seen);
        // A merge whose coordinator died (its node killed, or before the coordinator ran
        // on its own, its caller gone) leaves the right shard frozen: running the merge
        // again commits it or rolls it back.
        let stalled = table.iter().zip(&views).find_map(|(record, view)| {
            let merging = record.descriptor.merging.as_ref()?;
            (view.stable_for >= MERGE_RESUME_AFTER).then_some((merging.into, view.id))
        });
        if let Some((into, frozen)) = stalled {
            let resumed = tokio::time::timeout(ACTION_TIMEOUT, self.merge(into, &directory)).await;
            match resumed {
                Ok(Ok(())) => tracing::warn!(into, frozen, "resumed a stalled merge"),
                Ok(Err(e)) => tracing::info!(into, frozen, "stalled merge: {}", e.message()),
                Err(_) => tracing::info!(into, frozen, "stalled merge: no answer yet"),
            }
            return Ok(());
        }
        let planned = self.plan(&table, &nodes).await;
        if !planned.is_empty() {
            for action in planned {
                self.carry_out_planned(action, &directory).await?;
            }
            return Ok(());
        }
        let actions = size_policy(&views, &self.options);
        // Roles and leaders of the meta shard move like any other's; only a merge or a
        // recent change holds a shard still.
        let unsettled = |record: &ShardRecord, view: &ShardView| {
            record.descriptor.merging.is_some() || view.stable_for < self.options.cool_down
        };
        if actions.is_empty() {
            let placements: Vec<PlacementView> = table
                .iter()
                .zip(&views)
                .map(|(record, view)| PlacementView {
                    id: view.id,
                    replicas: record
                        .descriptor
                        .replicas
                        .iter()
                        .map(|r| (r.node, r.region.clone(), r.role))
                        .collect(),
                    leader: record.leader,
                    pinned: unsettled(record, view),
                })
                .collect();
            let live: Vec<(NodeId, String)> = nodes
                .values()
                .filter(|n| now_ms().saturating_sub(n.reported_at_ms) < NODE_LIVE_MS)
                .map(|n| (n.node, n.region.clone()))
                .collect();
            let adds = region_policy(&placements, &live, &self.rules, LEADER_MOVES_PER_ROUND_MAX);
            if !adds.is_empty() {
                for action in adds {
                    self.carry_out(action, &directory, "region_rule").await?;
                }
                return Ok(());
            }
            let changes = placement_policy(
                &placements,
                &self.learner_regions,
                LEADER_MOVES_PER_ROUND_MAX,
            );
            if !changes.is_empty() {
                for RoleChange { shard, node, role } in changes {
                    let detail = format!("node {node} becomes a {role:?}");
                    self.decided("change_role", "placement_rule", shard, detail);
                    match self
                        .admin_for(shard, &directory)
                        .await?
                        .change_role(role_change(shard, node, role))
                        .await
                    {
                        Ok(_) => tracing::info!(shard, node, ?role, "replica role changed"),
                        Err(e) => tracing::info!(shard, node, "role not changed: {}", e.message()),
                    }
                }
                return Ok(());
            }
            let leaders: Vec<LeaderView> = table
                .iter()
                .zip(&views)
                .map(|(record, view)| {
                    let voters: Vec<(u64, String)> = record
                        .descriptor
                        .replicas
                        .iter()
                        .filter(|r| r.role == ReplicaRole::Voter)
                        .map(|r| (r.node, r.region.clone()))
                        .collect();
                    // Voters in a learner region lead only while they must stay voters.
                    let (elsewhere, recovery): (Vec<_>, Vec<_>) = voters
                        .into_iter()
                        .partition(|(_, region)| !self.learner_regions.contains(region));
                    let eligible = if elsewhere.len() >= VOTERS_MIN {
                        elsewhere
                    } else {
                        elsewhere.into_iter().chain(recovery).collect()
                    };
                    LeaderView {
                        id: view.id,
                        leader: record.leader,
                        voters: eligible,
                        writers: writers_region(&record.stats.origins),
                        pinned: unsettled(record, view),
                    }
                })
                .collect();
            let preferred = self.preferred_leader_region.as_deref();
            // The region rules hold in every mode; where the planner acts, it spreads the
            // other leaders by load.
            let spread = !self.planner_acts;
            for LeaderMove { shard, to } in
                leader_policy(&leaders, preferred, LEADER_MOVES_PER_ROUND_MAX, spread)
            {
                if self.drained(to, &directory).await {
                    continue;
                }
                let detail = format!("leadership to node {to}");
                self.decided("transfer_leader", "leader_rule", shard, detail);
                let request = pb::TransferLeaderRequest {
                    shard_id: shard,
                    to_node: to,
                };
                match self
                    .admin_for(shard, &directory)
                    .await?
                    .transfer_leader(request)
                    .await
                {
                    Ok(_) => tracing::info!(shard, to, "leadership moved"),
                    Err(e) => tracing::info!(shard, to, "leadership not moved: {}", e.message()),
                }
            }
            return Ok(());
        }
        for action in actions.into_iter().take(ACTIONS_PER_ROUND_MAX) {
            self.carry_out(action, &directory, "size_rule").await?;
        }
        Ok(())
    }

    /// Shows the planner this round's table; the actions it wants carried out (none in
    /// shadow mode, or without a planner).
    async fn plan(
        &self,
        table: &[ShardRecord],
        nodes: &HashMap<NodeId, NodeRecord>,
    ) -> Vec<LiveAction> {
        let Some(planner) = &self.planner else {
            return Vec::new();
        };
        let live = |n: &NodeRecord| now_ms().saturating_sub(n.reported_at_ms) < NODE_LIVE_MS;
        let observe = Observe {
            shards: table
                .iter()
                .map(|record| LiveShard {
                    descriptor: record.descriptor.clone(),
                    leader: record.leader,
                    load: live_load(&record.stats),
                    pinned: record.descriptor.id == META_SHARD
                        || record.descriptor.merging.is_some(),
                })
                .collect(),
            nodes: nodes
                .values()
                .filter(|n| live(n))
                .map(|n| LiveNode {
                    id: n.node,
                    region: n.region.clone(),
                    round_trips_ms: self
                        .runtime
                        .round_trips
                        .of(n.node)
                        .iter()
                        .map(|t| (t.node, t.round_trip.as_secs_f64() * 1_000.0))
                        .collect(),
                })
                .collect(),
        };
        planner.send(observe).await.unwrap_or_else(|e| {
            tracing::warn!("the planner did not answer: {e}");
            Vec::new()
        })
    }

    /// The region a region rule holds `shard`'s leader in, if one does: the preferred
    /// leader region, else the region most of its requests come from. The planner's
    /// leader moves keep to it, as the leader heuristic's do.
    fn leader_region(&self, shard: ShardId, directory: &Directory<'_>) -> Option<String> {
        let record = directory.table.iter().find(|r| r.descriptor.id == shard)?;
        self.preferred_leader_region
            .clone()
            .or_else(|| writers_region(&record.stats.origins))
    }

    /// Carries out one of the planner's actions; a leader move out of the region a rule
    /// holds the shard's leader in, or a role swap that makes a recovery region's replica
    /// vote, is not carried out.
    async fn carry_out_planned(
        &self,
        action: LiveAction,
        directory: &Directory<'_>,
    ) -> Result<(), Status> {
        tracing::info!(action = self.shown(&action), "the planner decided");
        if let LiveAction::TransferLeader { shard, to } = action
            && let Some(region) = self.leader_region(shard, directory)
            && directory.nodes.get(&to).is_none_or(|n| n.region != region)
        {
            tracing::info!(shard, to, region, "leadership kept in its rule's region");
            return Ok(());
        }
        // The placement rule would demote it again: a recovery region's replicas learn.
        if let LiveAction::SwapRoles { shard, promote, .. } = action
            && let Some(node) = directory.nodes.get(&promote)
            && self.learner_regions.contains(&node.region)
        {
            tracing::info!(
                shard,
                promote,
                "a recovery region's replica stays a learner"
            );
            return Ok(());
        }
        self.carry_out(action, directory, "planner").await
    }

    /// The shard's replica here, if this node leads it: its split or merge runs here.
    fn led_here(&self, shard: ShardId) -> Option<crate::actors::ReplicaHandle> {
        self.routes.get(shard).filter(|r| r.leads())
    }

    /// Merges `left` with its right neighbour: here when this node leads `left`, else on
    /// its leader through the Admin service.
    async fn merge(&self, left: ShardId, directory: &Directory<'_>) -> Result<(), Status> {
        match self.led_here(left) {
            Some(replica) => self.runtime.merge(&replica).await.map(|_| ()),
            None => {
                let mut admin = self.admin_for(left, directory).await?;
                admin
                    .merge(pb::MergeRequest { shard_id: left })
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Carries out one action through the Admin service of a node hosting the shard; a
    /// refusal is logged and left for the next round.
    async fn carry_out(
        &self,
        action: Action,
        directory: &Directory<'_>,
        decided_by: &'static str,
    ) -> Result<(), Status> {
        if let Action::TransferLeader { to, .. } = action
            && self.drained(to, directory).await
        {
            return Ok(());
        }
        let shard = action.shard();
        self.decided(action_kind(&action), decided_by, shard, self.shown(&action));
        let mut admin = self.admin_for(shard, directory).await?;
        let add = |node: NodeId, role: ReplicaRole| match directory.nodes.get(&node) {
            Some(record) => Ok(pb::AddNodeRequest {
                node_id: node,
                addr: record.addr.clone(),
                region: record.region.clone(),
                learner: role == ReplicaRole::Learner,
                shard_ids: vec![shard],
            }),
            None => Err(Status::not_found(format!(
                "node {node} is not in the node directory"
            ))),
        };
        let remove = |node: NodeId| pb::RemoveNodeRequest {
            node_id: node,
            shard_ids: vec![shard],
        };
        let call = async {
            match &action {
                Action::Split { at, .. } => match self.led_here(shard) {
                    Some(replica) => self.runtime.split(&replica, at.clone()).await.map(|_| ()),
                    None => admin
                        .split(pb::SplitRequest { key: at.clone() })
                        .await
                        .map(|_| ()),
                },
                Action::Merge { .. } => self.merge(shard, directory).await,
                Action::TransferLeader { to, .. } => admin
                    .transfer_leader(pb::TransferLeaderRequest {
                        shard_id: shard,
                        to_node: *to,
                    })
                    .await
                    .map(|_| ()),
                Action::AddReplica { node, role, .. } => {
                    admin.add_node(add(*node, *role)?).await.map(|_| ())
                }
                Action::RemoveReplica { node, .. } => {
                    admin.remove_node(remove(*node)).await.map(|_| ())
                }
                // The new replica first; the old one goes only once that worked.
                Action::MoveReplica { from, to, .. } => {
                    admin.add_node(add(*to, ReplicaRole::Voter)?).await?;
                    admin.remove_node(remove(*from)).await.map(|_| ())
                }
                // The new voter first, so the shard never has fewer voters than before.
                Action::SwapRoles {
                    promote, demote, ..
                } => {
                    admin
                        .change_role(role_change(shard, *promote, ReplicaRole::Voter))
                        .await?;
                    admin
                        .change_role(role_change(shard, *demote, ReplicaRole::Learner))
                        .await
                        .map(|_| ())
                }
            }
        };
        // A stuck step must not stop the balancing: it is given up and tried again.
        let outcome = tokio::time::timeout(ACTION_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within {ACTION_TIMEOUT:?}"
                )))
            });
        match outcome {
            Ok(()) => tracing::info!(action = self.shown(&action), "balanced"),
            Err(e) => tracing::info!(action = self.shown(&action), "not done: {}", e.message()),
        }
        Ok(())
    }
}

/// The Admin request that makes the replica of `shard` on `node` a `role`.
fn role_change(shard: ShardId, node: NodeId, role: ReplicaRole) -> pb::ChangeRoleRequest {
    let role = match role {
        ReplicaRole::Voter => pb::ReplicaRole::Voter,
        ReplicaRole::Learner => pb::ReplicaRole::Learner,
    };
    pb::ChangeRoleRequest {
        shard_id: shard,
        node_id: node,
        role: role as i32,
    }
}

/// The metrics' name of an action's kind.
fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::SwapRoles { .. } => "swap_roles",
        Action::Split { .. } => "split",
        Action::Merge { .. } => "merge",
        Action::TransferLeader { .. } => "transfer_leader",
        Action::AddReplica { .. } => "add_replica",
        Action::RemoveReplica { .. } => "remove_replica",
        Action::MoveReplica { .. } => "move_replica",
    }
}
