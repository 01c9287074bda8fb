//! Deterministic simulation of the shard protocol: the real Raft groups (openraft with
//! Hanse's log store, state machine, split and merge commands) on three simulated nodes,
//! over the in-memory [`MemStore`] and a seeded in-process network that delays, loses and
//! cuts messages. Clients route with the client crate's routing cache and the same epoch
//! checks the Kv service makes; a seeded schedule splits, merges, partitions, crashes
//! (with and without losing unsynced writes) and restarts nodes.
//!
//! After every step the invariants are checked: on each node the stored shards never
//! overlap, the newest descriptors cover the key space exactly once, epochs only grow;
//! at the end every key reads back a value its history allows (no acknowledged write
//! disappears).
//!
//! Time is tokio's paused clock on one thread, and every random choice (including each
//! node's election timeout) comes from the seed, so a seed replays:
//! `SIM_SEED=17 cargo test -p hanse-consensus --test simulation`. `SIM_SEEDS=N` runs
//! seeds 0..N (200 by default).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hanse_client::proto;
use hanse_client::routes::RouteCache;
use hanse_consensus::hibernation::{Deaths, HibernationOptions, Liveness};
use hanse_consensus::liveness_watch::wake_groups_led_by;
use hanse_consensus::{
    AppliedIndexes, Campaigner, GroupOptions, ProposeError, ProposerOptions, ReplicaNode,
    ShardGroup, TypeConfig, destroy_replica, retire_merged, store_placeholder,
};
use hanse_proto::convert::to_proto;
use hanse_shard::coordinate::{
    Command, ErrorKind, Event, Failure, MergeCoordinator, Runtime, SplitCoordinator, drive,
};
use hanse_shard::range::single_key;
use hanse_shard::{Epoch, NodeId, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
use hanse_shard::{KeyValue, Mutation, ShardRequest, ShardResponse, hosting_changes};
use hanse_shard::{RouteTable, StaleRoute, admit_route};
use hanse_storage::codec::{self, StateKey};
use hanse_storage::{Batch, Cf, FencedStore, MemStore, Store};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODES: u64 = 4;
/// Nodes 1 to 3 hold the first shard; replica moves bring node 4 in.
const FOUNDERS: u64 = 3;
const KEYS: usize = 40;
const CLIENTS: u64 = 4;
/// Fault and admin steps per seed; each advances the simulated clock 10-300 ms.
const STEPS: usize = 60;
const TICK: Duration = Duration::from_millis(10);

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ReplicaNode, RaftError<NodeId, E>>>;

// ---------------------------------------------------------------------------------------
// Storage: one MemStore per node, written through the incarnation (process) running on
// it: a `FencedStore` closed when the process crashes, so its leftover tasks write
// nothing into the next incarnation.

/// A node's process over its store.
type Process = FencedStore;

// ---------------------------------------------------------------------------------------
// Network: seeded delay and loss, directed cuts, and the groups each live node hosts.

struct NetState {
    rng: StdRng,
    /// The running groups of live nodes.
    groups: BTreeMap<(NodeId, ShardId), ShardGroup>,
    /// The incarnation of each live node.
    live: BTreeMap<NodeId, u64>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability that one message (request or reply) is lost.
    loss: f64,
    /// The process of each live node, for the admin steps of replica moves.
    processes: BTreeMap<NodeId, Arc<Process>>,
    /// Replicas removed from their group, for their node to delete.
    removed: Vec<(NodeId, ShardId)>,
    /// Groups whose leader is handing over: clients are answered "busy" there, as a
    /// node's replica actor answers while it transfers leadership.
    paused: BTreeSet<(NodeId, ShardId)>,
    /// The next shard id a coordinator allocates.
    next_shard: ShardId,
}

struct Net(Mutex<NetState>);

impl Net {
    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.0.lock().expect("network lock")
    }

    /// The delay of one message from `from` to `to`, and whether it arrives.
    fn hop(&self, from: NodeId, to: NodeId) -> (Duration, bool) {
        let mut net = self.lock();
        let delay = Duration::from_millis(net.rng.random_range(1..=12));
        let loss = net.loss;
        let lost = net.cut.contains(&(from, to)) || net.rng.random_bool(loss);
        (delay, !lost)
    }

    fn is_live(&self, node: NodeId, incarnation: u64) -> bool {
        self.lock().live.get(&node) == Some(&incarnation)
    }

    fn group(&self, node: NodeId, shard: ShardId) -> Option<ShardGroup> {
        self.lock().groups.get(&(node, shard)).cloned()
    }

    fn groups_on(&self, node: NodeId) -> Vec<ShardGroup> {
        self.lock()
            .groups
            .range((node, 0)..=(node, ShardId::MAX))
            .map(|(_, g)| g.clone())
            .collect()
    }

    /// The network of `node`'s group of `shard`, in its current incarnation.
    fn network(self: &Arc<Self>, node: NodeId, shard: ShardId) -> SimNetwork {
        let incarnation = self.lock().live.get(&node).copied().unwrap_or_default();
        SimNetwork {
            net: self.clone(),
            from: node,
            incarnation,
            shard,
        }
    }

    /// The group that leads `shard`, if any live node has one that believes it leads.
    fn leader_of(&self, shard: ShardId) -> Option<(NodeId, ShardGroup)> {
        let net = self.lock();
        net.groups
            .iter()
            .filter(|((_, s), _)| *s == shard)
            .find(|((node, _), g)| g.raft.metrics().borrow().current_leader == Some(*node))
            .map(|((node, _), g)| (*node, g.clone()))
    }
}

fn lost<E: std::error::Error>() -> RPCError<NodeId, ReplicaNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other("message lost")))
}

/// The network of one shard's group on one incarnation of a node.
#[derive(Clone)]
struct SimNetwork {
    net: Arc<Net>,
    from: NodeId,
    incarnation: u64,
    shard: ShardId,
}

struct SimPeer {
    link: SimNetwork,
    to: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimPeer;

    async fn new_client(&mut self, target: NodeId, _node: &ReplicaNode) -> SimPeer {
        SimPeer {
            link: self.clone(),
            to: target,
        }
    }
}

impl Campaigner for SimNetwork {
    async fn timeout_now(&self, target: NodeId, _at: &ReplicaNode) -> Result<(), String> {
        let (delay, arrives) = self.net.hop(self.from, target);
        tokio::time::sleep(delay).await;
        let group = match arrives && self.net.is_live(self.from, self.incarnation) {
            true => self.net.group(target, self.shard),
            false => None,
        };
        let group = group.ok_or_else(|| "message lost".to_string())?;
        group.campaign().await.map_err(|e| e.to_string())
    }
}

impl SimPeer {
    /// Carries one request to the target's group and its reply back, each leg delayed
    /// and possibly lost. A group the target does not host answers nothing.
    async fn call<R, E, F, Fut>(&self, deliver: F) -> RpcResult<R, E>
    where
        E: std::error::Error,
        F: FnOnce(ShardGroup) -> Fut,
        Fut: Future<Output = Result<R, RaftError<NodeId, E>>>,
    {
        let SimNetwork {
            net,
            from,
            incarnation,
            shard,
        } = &self.link;
        let (delay, arrives) = net.hop(*from, self.to);
        tokio::time::sleep(delay).await;
        let target = match arrives && net.is_live(*from, *incarnation) {
            true => net.group(self.to, *shard),
            false => None,
        };
        let Some(target) = target else {
            return Err(lost());
        };
        let reply = deliver(target).await;
        let (delay, arrives) = net.hop(self.to, *from);
        tokio::time::sleep(delay).await;
        if !arrives || !net.is_live(*from, *incarnation) {
            return Err(lost());
        }
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(|group| async move { group.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(|group| async move { group.install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(|group| async move { group.vote(rpc).await })
            .await
    }
}

// ---------------------------------------------------------------------------------------
// The coordinators' runtime: what a node does for a split or merge coordinator, over the
// simulated network.

struct SimRuntime {
    net: Arc<Net>,
    /// The node the coordinator runs on.
    node: NodeId,
    /// How long a wait of the coordinator may take.
    step_timeout: Duration,
}

impl SimRuntime {
    fn here(&self, shard: ShardId) -> Result<ShardGroup, Failure> {
        self.net.group(self.node, shard).ok_or_else(|| {
            Failure::new(
                ErrorKind::Unavailable,
                format!("n{} hosts no s{shard}", self.node),
            )
        })
    }

    /// Polls `done` every tick until it holds or the step timeout passes.
    async fn until(&self, what: &str, mut done: impl FnMut() -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + self.step_timeout;
        while !done() {
            if tokio::time::Instant::now() >= deadline {
                return Event::Failed(Failure::new(
                    ErrorKind::DeadlineExceeded,
                    format!("no {what}"),
                ));
            }
            tokio::time::sleep(TICK).await;
        }
        Event::Done
    }

    /// Hands the leadership of `shard` to this node, as a node's replica actor does:
    /// client requests to the leader pause while it transfers.
    async fn lead_here(&self, shard: ShardId) -> Event {
        if let Err(f) = self.here(shard) {
            return Event::Failed(f);
        }
        let Some((leader, group)) = self.net.leader_of(shard) else {
            return Event::Failed(Failure::new(
                ErrorKind::Unavailable,
                "no leader at the moment",
            ));
        };
        if leader == self.node {
            return Event::Done;
        }
        let network = self.net.network(leader, shard);
        self.net.lock().paused.insert((leader, shard));
        let moved = group
            .transfer_leader(self.node, &network, self.step_timeout)
            .await;
        self.net.lock().paused.remove(&(leader, shard));
        match moved {
            Ok(()) => {
                let me = self.node;
                let net = self.net.clone();
                self.until("leadership here", || {
                    net.group(me, shard)
                        .is_some_and(|g| g.raft.metrics().borrow().current_leader == Some(me))
                })
                .await
            }
            Err(e) => Event::Failed(Failure::new(ErrorKind::Unavailable, e.to_string())),
        }
    }
}

impl Runtime for SimRuntime {
    async fn execute(&self, command: Command) -> Event {
        match command {
            Command::Propose { shard, request } => {
                let group = match self.here(shard) {
                    Ok(group) => group,
                    Err(f) => return Event::Proposed(Err(f)),
                };
                Event::Proposed(group.propose(request).await.map_err(|e| {
                    let kind = match e {
                        ProposeError::NotLeader { .. } => ErrorKind::Precondition,
                        ProposeError::OutcomeUnknown { .. } => ErrorKind::Unknown,
                        _ => ErrorKind::Unavailable,
                    };
                    Failure::new(kind, e.to_string())
                }))
            }
            Command::LeadHere { shard } => self.lead_here(shard).await,
            Command::AwaitApplied { shard, node, index } => {
                let net = self.net.clone();
                self.until("application of the preparation", || {
                    net.group(node, shard).is_some_and(|g| {
                        g.raft
                            .metrics()
                            .borrow()
                            .last_applied
                            .is_some_and(|id| id.index >= index)
                    })
                })
                .await
            }
            Command::AwaitLeader { shard } => {
                let (net, me) = (self.net.clone(), self.node);
                self.until("leader of the new shard", || {
                    net.group(me, shard)
                        .is_some_and(|g| g.raft.metrics().borrow().current_leader.is_some())
                })
                .await
            }
            Command::AllocateShardId => {
                let mut net = self.net.lock();
                net.next_shard += 1;
                Event::Allocated(net.next_shard - 1)
            }
            Command::Report { .. } => Event::Done,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Nodes: which groups run follows the stored descriptors, as on a real node.

struct SimNode {
    id: NodeId,
    store: Arc<MemStore>,
    process: Option<Arc<Process>>,
    incarnation: u64,
    groups: BTreeMap<ShardId, ShardGroup>,
    options: GroupOptions,
    /// What this incarnation heard of its peers, and which it found dead.
    liveness: Arc<Liveness>,
    deaths: Deaths,
}

impl SimNode {
    /// Starts the groups of shards a split stored here and retires those a merge
    /// absorbed. The node leading a new shard's left neighbour (its parent) campaigns.
    async fn reconcile(&mut self, net: &Arc<Net>) -> Result<(), String> {
        let Some(process) = self.process.clone() else {
            return Ok(());
        };
        // A replica removed from its group is deleted, as the admin service has the
        // removed node do.
        let removed: Vec<ShardId> = {
            let mut net = net.lock();
            let (mine, others) = net.removed.drain(..).partition(|(n, _)| *n == self.id);
            net.removed = others;
            mine.into_iter().map(|(_, shard)| shard).collect()
        };
        for shard in removed {
            let Some(group) = self.groups.remove(&shard) else {
                continue;
            };
            net.lock().groups.remove(&(self.id, shard));
            group.shutdown().await;
            let descriptor = group.descriptor.borrow().clone();
            destroy_replica(process.as_ref(), &descriptor)
                .await
                .map_err(|e| format!("n{}: deleting removed s{shard}: {e}", self.id))?;
        }
        let stored = process.load_descriptors().map_err(|e| e.to_string())?;
        let changes = hosting_changes(self.groups.keys().copied(), &stored);
        for shard in changes.retire {
            let group = self.groups.remove(&shard).expect("hosted");
            net.lock().groups.remove(&(self.id, shard));
            group.retire().await;
            retire_merged(process.as_ref(), shard)
                .await
                .map_err(|e| format!("n{}: retiring s{shard}: {e}", self.id))?;
        }
        for shard in changes.start {
            let network = SimNetwork {
                net: net.clone(),
                from: self.id,
                incarnation: self.incarnation,
                shard,
            };
            let group = ShardGroup::start(shard, process.clone(), &self.options, network)
                .await
                .map_err(|e| format!("n{}: starting s{shard}: {e}", self.id))?;
            let start = &stored.iter().find(|d| d.id == shard).expect("stored").start;
            let leads_parent = self.groups.values().any(|g| {
                let m = g.raft.metrics().borrow().clone();
                g.descriptor.borrow().end == *start && m.current_leader == Some(m.id)
            });
            if leads_parent {
                let _ = group.campaign_unless_leader().await;
            }
            net.lock().groups.insert((self.id, shard), group.clone());
            self.groups.insert(shard, group);
        }
        Ok(())
    }

    /// The node-level heartbeat, as the node's hibernation task runs it: each peer whose
    /// links both ways are up is heard from (a live peer answers); idle groups sleep; the
    /// sleeping groups of a peer found dead are woken to elect.
    fn heartbeat(&mut self, net: &Net) {
        if self.process.is_none() || !self.options.hibernation.enabled {
            return;
        }
        let now = tokio::time::Instant::now();
        let peers: Vec<NodeId> = (1..=NODES).filter(|n| *n != self.id).collect();
        {
            let net = net.lock();
            for &peer in &peers {
                let up = !net.cut.contains(&(self.id, peer)) && !net.cut.contains(&(peer, self.id));
                if up && net.live.contains_key(&peer) {
                    self.liveness.heard(peer, now);
                }
            }
        }
        for group in self.groups.values() {
            group.hibernate_if_idle(&self.liveness, now);
        }
        for dead in self.deaths.newly_dead(peers, &self.liveness, now) {
            wake_groups_led_by(self.groups.values().cloned().collect(), dead);
        }
    }

    /// Kills the process: its groups stop and it writes nothing more. With `power_loss`
    /// the store also forgets every write that was not yet synced.
    async fn crash(&mut self, net: &Net, power_loss: bool) {
        if let Some(process) = self.process.take() {
            process.close();
        }
        {
            let mut net = net.lock();
            net.live.remove(&self.id);
            net.processes.remove(&self.id);
            net.groups.retain(|(node, _), _| *node != self.id);
        }
        for (_, group) in std::mem::take(&mut self.groups) {
            group.shutdown().await;
        }
        if power_loss {
            self.store.lose_unsynced();
        }
    }

    async fn restart(&mut self, net: &Arc<Net>) -> Result<(), String> {
        self.incarnation += 1;
        self.liveness = Arc::new(Liveness::new(self.options.hibernation.dead_after));
        self.deaths = Deaths::default();
        let process = Arc::new(Process::new(self.store.clone()));
        self.process = Some(process.clone());
        {
            let mut locked = net.lock();
            locked.live.insert(self.id, self.incarnation);
            locked.processes.insert(self.id, process);
        }
        self.reconcile(net).await
    }
}

// ---------------------------------------------------------------------------------------
// Clients: each owns some keys and writes unique values to them, routing like the SDK.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Ok,
    /// Certainly not applied: refused before or when it was applied.
    Failed,
    /// May or may not have been applied.
    Unknown,
}

/// Every write of every key, in the order each key's (single) writer issued them.
#[derive(Default)]
struct History {
    writes: BTreeMap<Vec<u8>, Vec<(String, Outcome)>>,
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:03}").into_bytes()
}

fn addr(node: NodeId) -> String {
    format!("n{node}")
}

/// The Kv service's routing on `node`: the hosted shard holding `key`, refused with
/// every hosted descriptor overlapping it when the client routed with another epoch.
fn route(
    net: &Net,
    node: NodeId,
    key: &[u8],
    routed: Option<&proto::ShardDescriptor>,
) -> Result<(ShardGroup, Epoch), Vec<ShardDescriptor>> {
    let mut hosted = RouteTable::default();
    for group in net.groups_on(node) {
        // A lagging replica about to be retired overlaps its successor; the node does not
        // serve it either.
        let _ = hosted.insert(group);
    }
    let Some(group) = hosted.lookup(key).cloned() else {
        return Err(Vec::new());
    };
    let routed = routed.map(|r| {
        let epoch = r.epoch.unwrap_or_default();
        let epoch = Epoch {
            version: epoch.version,
            conf_ver: epoch.conf_ver,
        };
        (r.id, epoch)
    });
    let (start, end) = single_key(key);
    match admit_route(&group.descriptor.borrow(), routed) {
        Ok(epoch) => Ok((group.clone(), epoch)),
        Err(StaleRoute) => Err(hosted
            .overlapping(&start, &end)
            .map(|g| g.descriptor.borrow().clone())
            .collect()),
    }
}

async fn write_once(
    net: &Net,
    cache: &mut RouteCache,
    rng: &mut StdRng,
    key: &[u8],
    value: &str,
) -> Outcome {
    let routed = cache.lookup(key).cloned();
    let node = routed
        .as_ref()
        .and_then(|r| r.leader.as_ref())
        .and_then(|a| a[1..].parse().ok())
        .unwrap_or_else(|| rng.random_range(1..=NODES));
    let (group, epoch) = match route(net, node, key, routed.as_ref().map(|r| &r.descriptor)) {
        Ok(found) => found,
        Err(current) => {
            if current.is_empty() {
                cache.forget(key);
            }
            for d in &current {
                cache.learn(to_proto(d));
            }
            return Outcome::Failed;
        }
    };
    if routed.is_none() {
        cache.learn(to_proto(&group.descriptor.borrow()));
    }
    if net.lock().paused.contains(&(node, group.shard)) {
        return Outcome::Failed;
    }
    // One write in four takes the bulk path: the same put, as an ingested file, which
    // lands outside the apply batch and must survive the same crashes.
    let request = match rng.random_range(0..4) {
        0 => ShardRequest::Ingest {
            epoch,
            pairs: vec![KeyValue {
                key: key.to_vec(),
                value: value.as_bytes().to_vec(),
            }],
        },
        _ => ShardRequest::Write {
            epoch,
            mutations: vec![Mutation::Put {
                key: key.to_vec(),
                value: value.as_bytes().to_vec(),
            }],
        },
    };
    match group.propose(request).await {
        Ok(ShardResponse::Applied) => {
            cache.set_leader(group.shard, Some(addr(node)));
            Outcome::Ok
        }
        Ok(ShardResponse::Rejected(_)) => {
            if let Ok((_, _)) = route(net, node, key, None) {
                cache.forget(key);
            }
            Outcome::Failed
        }
        Ok(other) => panic!("a write answered {other:?}"),
        Err(ProposeError::NotLeader { leader, .. }) => {
            cache.set_leader(group.shard, leader.map(addr));
            Outcome::Failed
        }
        // Claimed not applied: the final reads check that it never was.
        Err(ProposeError::Retired { .. }) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

async fn client(
    id: u64,
    seed: u64,
    net: Arc<Net>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id));
    let mut cache = RouteCache::default();
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .filter(|i| *i as u64 % CLIENTS == id)
        .map(key)
        .collect();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = keys[rng.random_range(0..keys.len())].clone();
        sequence += 1;
        let value = format!("c{id}-{sequence}");
        let slot = {
            let mut history = history.lock().unwrap();
            let writes = history.writes.entry(key.clone()).or_default();
            writes.push((value.clone(), Outcome::Pending));
            writes.len() - 1
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(2),
            write_once(&net, &mut cache, &mut rng, &key, &value),
        )
        .await
        .unwrap_or(Outcome::Unknown);
        history.lock().unwrap().writes.get_mut(&key).unwrap()[slot].1 = outcome;
        let pause = rng.random_range(0..30);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The cluster under simulation.

struct Sim {
    net: Arc<Net>,
    nodes: Vec<SimNode>,
    rng: StdRng,
    /// The epoch each node last stored for each shard.
    epochs: BTreeMap<(NodeId, ShardId), Epoch>,
    trace: Arc<Mutex<Vec<String>>>,
    started: tokio::time::Instant,
    /// How long a coordinator's wait may take.
    step_timeout: Duration,
    _dir: tempfile::TempDir,
}

/// Timings and sizes drawn per seed within their allowed ranges (FoundationDB's BUGGIFY):
/// each is the value the simulation otherwise uses half the time, else a random one, so
/// the seeds also cover timings and batch sizes the defaults never produce.
#[derive(Debug, Clone)]
struct Knobs {
    heartbeat_interval: Duration,
    snapshot_after_entries: u64,
    log_entries_kept: u64,
    proposer: ProposerOptions,
    /// How long a coordinator's wait may take.
    step_timeout: Duration,
    hibernation: HibernationOptions,
}

impl Knobs {
    fn draw(rng: &mut StdRng) -> Knobs {
        fn pick<T: rand::distr::uniform::SampleUniform + PartialOrd>(
            rng: &mut StdRng,
            usual: T,
            range: std::ops::RangeInclusive<T>,
        ) -> T {
            match rng.random_bool(0.5) {
                true => usual,
                false => rng.random_range(range),
            }
        }
        let usual = ProposerOptions::default();
        Knobs {
            heartbeat_interval: Duration::from_millis(pick(rng, 50, 20..=100)),
            snapshot_after_entries: pick(rng, 40, 5..=200),
            log_entries_kept: pick(rng, 5, 0..=20),
            proposer: ProposerOptions {
                mailbox_requests_max: pick(rng, usual.mailbox_requests_max, 8..=4096),
                proposal_requests_max: pick(rng, usual.proposal_requests_max, 1..=512),
                proposal_bytes_max: pick(rng, usual.proposal_bytes_max, 64..=1 << 20),
                in_flight_max: pick(rng, usual.in_flight_max, 1..=4),
            },
            step_timeout: Duration::from_millis(pick(rng, 2000, 500..=5000)),
            hibernation: HibernationOptions {
                enabled: rng.random_bool(0.5),
                idle: Duration::from_millis(pick(rng, 1000, 100..=3000)),
                dead_after: Duration::from_millis(pick(rng, 800, 300..=2000)),
                heartbeat: TICK,
            },
        }
    }
}

fn member(node: NodeId) -> ReplicaNode {
    ReplicaNode {
        addr: addr(node),
        region: "sim".into(),
    }
}

impl Sim {
    async fn new(seed: u64) -> Sim {
        Sim::new_with(seed, |_| ()).await
    }

    /// A cluster whose knobs `adjust` changes after they are drawn.
    async fn new_with(seed: u64, adjust: impl FnOnce(&mut Knobs)) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut knobs = Knobs::draw(&mut rng);
        adjust(&mut knobs);
        let dir = tempfile::tempdir().expect("temporary directory");
        let net = Arc::new(Net(Mutex::new(NetState {
            rng: StdRng::seed_from_u64(rng.random()),
            groups: BTreeMap::new(),
            live: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss: 0.0,
            processes: BTreeMap::new(),
            removed: Vec::new(),
            paused: BTreeSet::new(),
            next_shard: 2,
        })));
        let replicas: Vec<ReplicaDescriptor> = (1..=FOUNDERS)
            .map(|node| ReplicaDescriptor {
                node,
                region: "sim".into(),
                role: ReplicaRole::Voter,
            })
            .collect();
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let store = Arc::new(MemStore::new(dir.path().join(format!("n{id}"))));
            let mut batch = Batch::default();
            batch.put_descriptor(&ShardDescriptor::whole_keyspace(1, replicas.clone()));
            store.write(batch, true).expect("bootstrap");
            // A fixed election timeout per node, drawn from the seed: openraft draws its
            // own from a thread-local generator, which would not replay.
            let timeout = rng.random_range(150..450);
            let options = GroupOptions {
                node_id: id,
                snapshot_after_entries: knobs.snapshot_after_entries,
                log_entries_kept: knobs.log_entries_kept,
                heartbeat_interval: knobs.heartbeat_interval,
                election_timeout_min: Duration::from_millis(timeout),
                election_timeout_max: Duration::from_millis(timeout + 1),
                proposer: knobs.proposer.clone(),
                applied_indexes: AppliedIndexes::default(),
                hibernation: knobs.hibernation,
            };
            let mut node = SimNode {
                id,
                store,
                process: None,
                incarnation: 0,
                groups: BTreeMap::new(),
                liveness: Arc::new(Liveness::new(knobs.hibernation.dead_after)),
                deaths: Deaths::default(),
                options,
            };
            node.restart(&net).await.expect("a fresh node starts");
            nodes.push(node);
        }
        let members = (1..=FOUNDERS).map(|n| (n, member(n))).collect();
        nodes[0].groups[&1]
            .initialize(members)
            .await
            .expect("initialise the first shard");
        let sim = Sim {
            net,
            nodes,
            rng,
            epochs: BTreeMap::new(),
            trace: Arc::new(Mutex::new(Vec::new())),
            started: tokio::time::Instant::now(),
            step_timeout: knobs.step_timeout,
            _dir: dir,
        };
        sim.log(format!("knobs {knobs:?}"));
        sim
    }

    fn log(&self, event: String) {
        let at = self.started.elapsed().as_millis();
        self.trace
            .lock()
            .unwrap()
            .push(format!("{at:>6} ms {event}"));
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn down(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_none())
            .map(|n| n.id)
            .collect()
    }

    /// Advances the clock by `ticks`, letting every node host what it stores as it goes.
    async fn advance(&mut self, ticks: u32) -> Result<(), String> {
        for _ in 0..ticks {
            tokio::time::sleep(TICK).await;
            for node in &mut self.nodes {
                node.reconcile(&self.net).await?;
                node.heartbeat(&self.net);
            }
            self.check()?;
        }
        Ok(())
    }

    /// One random fault or admin action.
    async fn act(&mut self) -> Result<(), String> {
        match self.rng.random_range(0..110) {
            0..30 => self.split(),
            30..50 => self.merge(),
            100..110 => self.move_replica(),
            50..62 => {
                let down = self.down();
                if let Some(&node) = down.first() {
                    self.log(format!("restart n{node}"));
                    let net = self.net.clone();
                    return self.node(node).restart(&net).await;
                }
                {
                    let node = self.rng.random_range(1..=NODES);
                    let power_loss = self.rng.random_bool(0.5);
                    self.log(format!("crash n{node} power_loss={power_loss}"));
                    let net = self.net.clone();
                    self.node(node).crash(&net, power_loss).await;
                    if power_loss {
                        self.epochs.retain(|(n, _), _| *n != node);
                    }
                }
            }
            62..77 => {
                let node = self.rng.random_range(1..=NODES);
                let one_way = self.rng.random_bool(0.3);
                self.log(format!("isolate n{node} one_way={one_way}"));
                let mut net = self.net.lock();
                for other in (1..=NODES).filter(|o| *o != node) {
                    net.cut.insert((node, other));
                    if !one_way {
                        net.cut.insert((other, node));
                    }
                }
            }
            77..90 => {
                self.log("heal partitions".into());
                self.net.lock().cut.clear();
            }
            _ => {
                let loss = [0.0, 0.02, 0.1, 0.3][self.rng.random_range(0..4)];
                self.log(format!("loss {loss}"));
                self.net.lock().loss = loss;
            }
        }
        Ok(())
    }

    /// Splits a random shard its leader knows at a random workload key inside it, with
    /// the split coordinator a node runs.
    fn split(&mut self) {
        let shard = self.pick_led_shard();
        let Some((node, group)) = shard else { return };
        let current = group.descriptor.borrow().clone();
        let inside: Vec<Vec<u8>> = (0..KEYS)
            .map(key)
            .filter(|k| current.contains(k) && *k != current.start)
            .collect();
        if inside.is_empty() || current.merging.is_some() {
            return;
        }
        let at = inside[self.rng.random_range(0..inside.len())].clone();
        self.log(format!(
            "split s{} at {} on n{node}",
            current.id,
            String::from_utf8_lossy(&at)
        ));
        let runtime = SimRuntime {
            net: self.net.clone(),
            node,
            step_timeout: self.step_timeout,
        };
        let trace = self.trace.clone();
        let shard = current.id;
        tokio::spawn(async move {
            let outcome = drive(SplitCoordinator::new(current, at), &runtime).await;
            let outcome =
                outcome.map_or_else(|e| e.to_string(), |(_, r)| format!("into s{}: done", r.id));
            trace
                .lock()
                .unwrap()
                .push(format!("       split of s{shard} {outcome}"));
        });
    }

    /// Merges a random shard with its right neighbour, with the merge coordinator a node
    /// runs, on the node that leads the left shard.
    fn merge(&mut self) {
        let Some((node, left)) = self.pick_led_shard() else {
            return;
        };
        let l = left.descriptor.borrow().clone();
        if l.end.is_empty() || l.merging.is_some() {
            return;
        }
        // The neighbour as this node has it, as the admin service takes it.
        let right = self
            .net
            .groups_on(node)
            .into_iter()
            .map(|g| g.descriptor.borrow().clone())
            .find(|d| d.start == l.end);
        let Some(r) = right else { return };
        // A shard frozen into another is a merge under way elsewhere.
        if r.merging.is_some_and(|m| m.into != l.id) {
            return;
        }
        self.log(format!("merge s{} into s{} on n{node}", r.id, l.id));
        let runtime = SimRuntime {
            net: self.net.clone(),
            node,
            step_timeout: self.step_timeout,
        };
        let trace = self.trace.clone();
        let (l_id, r_id) = (l.id, r.id);
        tokio::spawn(async move {
            let outcome = drive(MergeCoordinator::new(l, Some(r)), &runtime).await;
            let outcome = outcome.map_or_else(|e| e.to_string(), |_| "done".into());
            trace
                .lock()
                .unwrap()
                .push(format!("       merge of s{r_id} into s{l_id}: {outcome}"));
        });
    }

    /// Moves a random shard's replica from one node to one without it, as `hanse admin
    /// add-node` and `remove-node` do: an empty replica on the new node, added (it
    /// catches up from a snapshot) as a voter, then the old one removed and deleted.
    fn move_replica(&mut self) {
        let Some((leader, group)) = self.pick_led_shard() else {
            return;
        };
        let current = group.descriptor.borrow().clone();
        let holders: Vec<NodeId> = current.replicas.iter().map(|r| r.node).collect();
        let to: Vec<NodeId> = (1..=NODES).filter(|n| !holders.contains(n)).collect();
        let from: Vec<NodeId> = holders.iter().copied().filter(|n| *n != leader).collect();
        if to.is_empty() || from.is_empty() {
            return;
        }
        let to = to[self.rng.random_range(0..to.len())];
        let from = from[self.rng.random_range(0..from.len())];
        self.log(format!("move s{} from n{from} to n{to}", current.id));
        let net = self.net.clone();
        let trace = self.trace.clone();
        tokio::spawn(async move {
            let outcome = move_replica(&net, &group, &current, from, to).await;
            trace
                .lock()
                .unwrap()
                .push(format!("       move of s{}: {outcome}", current.id));
        });
    }

    fn pick_led_shard(&mut self) -> Option<(NodeId, ShardGroup)> {
        let led: Vec<(NodeId, ShardGroup)> = self
            .net
            .lock()
            .groups
            .iter()
            .filter(|((node, _), g)| g.raft.metrics().borrow().current_leader == Some(*node))
            .map(|((node, _), g)| (*node, g.clone()))
            .collect();
        if led.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..led.len());
        Some(led[i].clone())
    }

    /// The invariants that hold at every moment.
    fn check(&mut self) -> Result<(), String> {
        let mut newest: BTreeMap<ShardId, ShardDescriptor> = BTreeMap::new();
        for node in &self.nodes {
            let stored = node.store.load_descriptors().map_err(|e| e.to_string())?;
            // No key is served by two shards on one node.
            let mut by_start = stored.clone();
            by_start.sort_by(|a, b| a.start.cmp(&b.start));
            for pair in by_start.windows(2) {
                if pair[0].end.is_empty() || pair[0].end > pair[1].start {
                    return Err(format!(
                        "n{}: shards overlap: {} and {}",
                        node.id,
                        show(&pair[0]),
                        show(&pair[1])
                    ));
                }
            }
            // An empty replica (it has applied nothing yet) holds the descriptor its leader
            // gave it until its first snapshot, which may be older and replaced by the log
            // that follows it. A replica deleted here and added again later starts over.
            let applied = |shard| {
                node.store
                    .get(Cf::RaftState, &codec::state_key(shard, StateKey::Applied))
                    .map(|state| state.is_some())
            };
            let mut replicas = Vec::new();
            for d in &stored {
                if applied(d.id).map_err(|e| e.to_string())? {
                    replicas.push(d.id);
                }
            }
            self.epochs
                .retain(|(n, shard), _| *n != node.id || replicas.contains(shard));
            for d in stored {
                // Epochs only grow (a power failure may take back what was not synced).
                if replicas.contains(&d.id) {
                    let seen = self.epochs.entry((node.id, d.id)).or_insert(d.epoch);
                    if d.epoch.version < seen.version || d.epoch.conf_ver < seen.conf_ver {
                        return Err(format!(
                            "n{}: the epoch of s{} went back from {:?} to {:?}",
                            node.id, d.id, seen, d.epoch
                        ));
                    }
                    *seen = d.epoch;
                }
                let known = newest.entry(d.id).or_insert_with(|| d.clone());
                if d.epoch.version > known.epoch.version {
                    *known = d;
                }
            }
        }
        // The newest descriptors, less those a newer one overlaps (a lagging replica's
        // view of a split parent or a merged-away shard), cover the key space once.
        let all: Vec<ShardDescriptor> = newest.into_values().collect();
        let mut current: Vec<&ShardDescriptor> = all
            .iter()
            .filter(|d| {
                !all.iter()
                    .any(|o| o.epoch.version > d.epoch.version && o.overlaps(&d.start, &d.end))
            })
            .collect();
        current.sort_by(|a, b| a.start.cmp(&b.start));
        let mut expected_start: &[u8] = b"";
        for (i, d) in current.iter().enumerate() {
            if d.start != expected_start {
                return Err(format!(
                    "the key space is not covered once: {} follows a shard ending at {:?}",
                    show(d),
                    String::from_utf8_lossy(expected_start)
                ));
            }
            if d.end.is_empty() && i + 1 != current.len() {
                return Err(format!("{} is unbounded but not last", show(d)));
            }
            expected_start = &d.end;
        }
        if !expected_start.is_empty() {
            return Err("the last shard does not reach the end of the key space".into());
        }
        self.check_leases()
    }

    /// While a replica would serve reads from its lease, no other replica of its shard
    /// leads at a newer vote: else a read there could miss the new leader's writes.
    fn check_leases(&self) -> Result<(), String> {
        let groups: Vec<(NodeId, ShardGroup)> = {
            let net = self.net.lock();
            net.groups
                .iter()
                .map(|((node, _), g)| (*node, g.clone()))
                .collect()
        };
        for (node, group) in &groups {
            if group.leased_read_index().is_none() {
                continue;
            }
            let vote = group.raft.metrics().borrow().vote;
            for (other, rival) in &groups {
                if rival.shard != group.shard || other == node {
                    continue;
                }
                let m = rival.raft.metrics().borrow().clone();
                if m.state == openraft::ServerState::Leader
                    && m.vote.is_committed()
                    && m.vote > vote
                {
                    return Err(format!(
                        "n{node} would serve reads of s{} from its lease at vote {vote} while n{other} leads at {}",
                        group.shard, m.vote
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts an election on the replica of `key`'s shard with the longest log. Each node's
    /// election timeout is fixed here (for replay), and two candidates with fixed timeouts
    /// can take turns forever, the one with the shorter log always first; the jitter that
    /// openraft's randomised timeouts give a real cluster breaks the tie.
    async fn jitter_election(&self, key: &[u8]) {
        let mut replicas: Vec<_> = self
            .nodes
            .iter()
            .filter(|node| node.process.is_some())
            .flat_map(|node| self.net.groups_on(node.id))
            .filter(|group| group.descriptor.borrow().contains(key))
            .collect();
        replicas.sort_by_key(|group| group.raft.metrics().borrow().last_log_index);
        if let Some(longest) = replicas.last() {
            let _ = longest.campaign().await;
        }
    }

    /// Reads `key` through its shard's leader after a read barrier. The nodes go on
    /// starting and retiring groups meanwhile: a split still under way when the faults
    /// healed may commit now.
    async fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        for round in 0..200 {
            for node in &mut self.nodes {
                node.reconcile(&self.net).await?;
            }
            if round % 10 == 9 {
                self.jitter_election(key).await;
            }
            for node in &self.nodes {
                let Some(process) = node.process.clone() else {
                    continue;
                };
                for group in self.net.groups_on(node.id) {
                    let m = group.raft.metrics().borrow().clone();
                    if !group.descriptor.borrow().contains(key) || m.current_leader != Some(m.id) {
                        continue;
                    }
                    if group.read_index().await.is_ok() && group.descriptor.borrow().contains(key) {
                        return process.get(Cf::Data, key).map_err(|e| e.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "no leader served {} after the faults healed; its replicas: {}",
            String::from_utf8_lossy(key),
            self.replicas_of(key)
        ))
    }

    /// What each replica of `key`'s shards believes, and whether its node holds the key:
    /// to tell why none leads, or where a write went.
    fn replicas_of(&self, key: &[u8]) -> String {
        let mut replicas = Vec::new();
        for node in &self.nodes {
            for group in self.net.groups_on(node.id) {
                if !group.descriptor.borrow().contains(key) {
                    continue;
                }
                let held = node.process.as_ref().map(|p| p.get(Cf::Data, key));
                let m = group.raft.metrics().borrow().clone();
                replicas.push(format!(
                    "n{} {} {:?} ({:?}) vote {} last log {:?} applied {:?} voters {:?} holds {:?}",
                    node.id,
                    show(&group.descriptor.borrow()),
                    m.state,
                    m.running_state,
                    m.vote,
                    m.last_log_index,
                    m.last_applied.map(|id| id.index),
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .collect::<Vec<_>>(),
                    held.map(|r| r.map(|v| v.map(|v| String::from_utf8_lossy(&v).to_string())))
                ));
            }
        }
        replicas.join("; ")
    }
}

fn show(d: &ShardDescriptor) -> String {
    format!(
        "s{}[{:?}, {:?}) v{}{}",
        d.id,
        String::from_utf8_lossy(&d.start),
        String::from_utf8_lossy(&d.end),
        d.epoch.version,
        if d.merging.is_some() { " frozen" } else { "" }
    )
}

async fn move_replica(
    net: &Net,
    group: &ShardGroup,
    current: &ShardDescriptor,
    from: NodeId,
    to: NodeId,
) -> String {
    let process = net.lock().processes.get(&to).cloned();
    let Some(process) = process else {
        return "the new node is down".into();
    };
    if let Err(e) = store_placeholder(process.as_ref(), current, group.added_by()) {
        return format!("placeholder refused: {e}");
    }
    // The new node's next reconcile starts the (empty) group.
    for _ in 0..50 {
        if net.group(to, current.id).is_some() {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let added = tokio::time::timeout(
        Duration::from_secs(5),
        group.add_replica(to, member(to), ReplicaRole::Voter),
    )
    .await;
    match added {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return format!("add: {e}"),
        Err(_) => return "add: timed out".into(),
    }
    let removed = tokio::time::timeout(Duration::from_secs(5), group.remove_replica(from)).await;
    match removed {
        Ok(Ok(())) => {
            net.lock().removed.push((from, current.id));
            "done".into()
        }
        Ok(Err(e)) => format!("remove: {e}"),
        Err(_) => "remove: timed out".into(),
    }
}

/// Checks the value `key` ended with against its history: the last acknowledged write,
/// or one whose outcome is unknown (it may have taken effect at any time); never a
/// refused write, and nothing at all only when no write was acknowledged.
fn check_final(
    key: &[u8],
    value: Option<Vec<u8>>,
    writes: &[(String, Outcome)],
) -> Result<(), String> {
    let last_ok = writes.iter().rposition(|(_, o)| *o == Outcome::Ok);
    let shown = String::from_utf8_lossy(key);
    let Some(value) = value else {
        return match last_ok {
            Some(i) => Err(format!(
                "{shown}: acknowledged write {} is lost (key is empty)",
                writes[i].0
            )),
            None => Ok(()),
        };
    };
    let value = String::from_utf8_lossy(&value).to_string();
    match writes.iter().position(|(v, _)| *v == value) {
        None => Err(format!("{shown}: holds {value}, which was never written")),
        Some(i) => match writes[i].1 {
            Outcome::Unknown => Ok(()),
            Outcome::Ok if Some(i) == last_ok => Ok(()),
            Outcome::Ok => Err(format!(
                "{shown}: holds {value}, but the later acknowledged write {} is lost",
                writes[last_ok.expect("an acknowledged write")].0
            )),
            Outcome::Failed => Err(format!("{shown}: holds {value}, a write that was refused")),
            Outcome::Pending => Err(format!("{shown}: holds {value}, a write still pending")),
        },
    }
}

/// What one seed did, for the determinism check and the summary.
struct Report {
    trace: Vec<String>,
    acknowledged: usize,
    shards: usize,
}

/// A seed's report, or why it failed with the events that led there.
type SeedOutcome = Result<Report, (String, Vec<String>)>;

async fn simulate(seed: u64) -> SeedOutcome {
    let mut sim = Sim::new(seed).await;
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                sim.net.clone(),
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let fail = |sim: &Sim, e: String| (e, sim.trace.lock().unwrap().clone());
    for _ in 0..STEPS {
        if let Err(e) = sim.act().await {
            return Err(fail(&sim, e));
        }
        let ticks = sim.rng.random_range(1..30);
        if let Err(e) = sim.advance(ticks).await {
            return Err(fail(&sim, e));
        }
    }
    // Heal: every node up, no cuts, no loss; clients stop; the cluster settles.
    sim.log("heal everything".into());
    {
        let mut net = sim.net.lock();
        net.cut.clear();
        net.loss = 0.0;
    }
    for node in sim.down() {
        let net = sim.net.clone();
        if let Err(e) = sim.node(node).restart(&net).await {
            return Err(fail(&sim, e));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    if let Err(e) = sim.advance(300).await {
        return Err(fail(&sim, e));
    }
    let writes = std::mem::take(&mut history.lock().unwrap().writes);
    let mut acknowledged = 0;
    for (key, writes) in &writes {
        acknowledged += writes.iter().filter(|(_, o)| *o == Outcome::Ok).count();
        let value = match sim.read(key).await {
            Ok(value) => value,
            Err(e) => return Err(fail(&sim, e)),
        };
        if let Err(e) = check_final(key, value, writes) {
            let e = format!("{e}; its replicas: {}", sim.replicas_of(key));
            return Err(fail(&sim, e));
        }
    }
    let shards = sim.nodes[0].store.load_descriptors().map_or(0, |d| d.len());
    for node in 1..=NODES {
        let net = sim.net.clone();
        sim.node(node).crash(&net, false).await;
    }
    let trace = sim.trace.lock().unwrap().clone();
    Ok(Report {
        trace,
        acknowledged,
        shards,
    })
}

/// Runs `future` to its end on one thread under tokio's paused clock.
fn on_paused_clock<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(future)
}

fn run_seed(seed: u64) -> SeedOutcome {
    let run = || on_paused_clock(simulate(seed));
    // A panic inside the simulated cluster (a group that cannot start) fails this seed.
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err((format!("panicked: {message}"), Vec::new()))
    })
}

/// Seeds that found bugs, run beside the others (each found it with the code of its day;
/// the schedule a seed draws changes as the simulation grows):
/// - 381: a lagging replica installed a snapshot of a shard that had absorbed another by
///   a merge, and kept its replica of the absorbed shard: two shards on one node covered
///   the same keys.
/// - 28, 170: two coordinators of one merge, one rolling back while the other committed;
///   and a commit into a shard that was itself frozen for a merge.
/// - 5, 17: a split's new shard moved conf_ver backwards.
/// - 89: an empty replica took an old snapshot from a deposed leader, and would have
///   replayed a split whose new shard the node already held; later, once the simulation
///   ran the shipped coordinators, a node down since before its shard's replica set
///   changed won an election with the vote of an empty replica re-added in its place,
///   and led without committed entries (fixed by the empty replica's vote floor).
/// - 171: a split that committed after the faults healed left its new shard unhosted in
///   the simulation (the nodes stopped starting groups during the final reads), and two
///   candidates with fixed election timeouts took turns forever (the final reads now
///   jitter an election, as openraft's randomised timeouts do).
/// - 178 (with knobs drawn per seed): a replica added to a merge's target started from a
///   snapshot taken before the merge's commit, replayed the commit on a node without a
///   replica of the source, and led the merged range without its data: acknowledged
///   writes were lost. Merge commits now wait for membership changes (and the reverse),
///   and a commit on a node without the source stops the replica.
const REGRESSIONS: [u64; 8] = [5, 17, 28, 89, 170, 171, 178, 381];

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return vec![seed.parse().expect("SIM_SEED is a number")];
    }
    let count =
        std::env::var("SIM_SEEDS").map_or(200, |n| n.parse().expect("SIM_SEEDS is a number"));
    let mut seeds: Vec<u64> = (0..count).collect();
    seeds.extend(REGRESSIONS.iter().filter(|s| **s >= count));
    seeds
}

#[test]
fn the_protocol_keeps_its_invariants_under_faults() {
    let mut failures = Vec::new();
    let (mut acknowledged, mut shards, mut splits, mut merges, mut moves) = (0, 0, 0, 0, 0);
    let done = |trace: &[String], what: &str| {
        trace
            .iter()
            .filter(|l| l.trim_start().starts_with(what) && l.ends_with(": done"))
            .count()
    };
    // Seeds run side by side, one thread each at a time: each has its own runtime and
    // clock, so running beside others changes nothing in it.
    let seeds = seeds();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes: Vec<(u64, SeedOutcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::SeqCst)) {
                        done.push((seed, run_seed(seed)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("simulation thread"))
            .collect()
    });
    outcomes.sort_by_key(|(seed, _)| *seed);
    for (seed, outcome) in outcomes {
        match outcome {
            Ok(report) => {
                acknowledged += report.acknowledged;
                shards += report.shards;
                splits += done(&report.trace, "split of");
                merges += done(&report.trace, "merge of");
                moves += done(&report.trace, "move of");
            }
            Err((error, trace)) => {
                eprintln!(
                    "seed {seed} failed: {error}\nits events:\n{}",
                    trace.join("\n")
                );
                failures.push(format!(
                    "seed {seed}: {error} (replay: SIM_SEED={seed} cargo test -p hanse-consensus --test simulation)"
                ));
            }
        }
    }
    eprintln!(
        "{acknowledged} acknowledged writes checked; {splits} splits, {merges} merges and \
         {moves} replica moves done; {shards} shards at the ends of the runs"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(acknowledged > 0, "the clients got no write through");
}

#[test]
fn a_seed_replays_the_same_run() {
    let outline = |seed| match run_seed(seed) {
        Ok(report) => (report.trace, report.acknowledged),
        Err((_, trace)) => (trace, 0),
    };
    assert_eq!(outline(7), outline(7));
}

#[test]
#[ignore]
fn print_trace() {
    let seed = std::env::var("SIM_SEED").map_or(7, |s| s.parse().unwrap());
    match run_seed(seed) {
        Ok(r) => println!(
            "{}\nacknowledged {} shards {}",
            r.trace.join("\n"),
            r.acknowledged,
            r.shards
        ),
        Err((e, t)) => println!("{}\nFAILED {e}", t.join("\n")),
    }
}

/// A leader cut off from every other node (as a paused process is) past its lease while
/// another is elected and takes a write: the moment it can talk again, it no longer
/// claims its lease, and a read barrier on it either fails or sees the new write.
#[test]
fn a_leader_cut_off_past_its_lease_serves_no_stale_read() {
    on_paused_clock(async {
        let mut sim = Sim::new(3).await;
        let key = key(0);
        let put = |value: &str| ShardRequest::Write {
            epoch: Epoch::default(),
            mutations: vec![Mutation::Put {
                key: key.clone(),
                value: value.as_bytes().to_vec(),
            }],
        };
        let with_epoch = |request: ShardRequest, group: &ShardGroup| match request {
            ShardRequest::Write { mutations, .. } => ShardRequest::Write {
                epoch: group.descriptor.borrow().epoch,
                mutations,
            },
            other => other,
        };
        let mut leased = None;
        for _ in 0..500 {
            sim.advance(1).await.unwrap();
            if let Some((node, group)) = sim.net.leader_of(1)
                && group.leased_read_index().is_some()
            {
                leased = Some((node, group));
                break;
            }
        }
        let (old_node, old) = leased.expect("a leader holds its lease within 5 s");
        let written = old.propose(with_epoch(put("before"), &old)).await;
        assert!(matches!(written, Ok(ShardResponse::Applied)), "{written:?}");

        // Cut off, as a paused process is, until another node leads and takes a write.
        {
            let mut net = sim.net.lock();
            for other in (1..=NODES).filter(|o| *o != old_node) {
                net.cut.insert((old_node, other));
                net.cut.insert((other, old_node));
            }
        }
        let old_vote = old.raft.metrics().borrow().vote;
        let mut successor = None;
        for _ in 0..1000 {
            sim.advance(1).await.unwrap();
            let leaders: Vec<ShardGroup> = (1..=NODES)
                .filter(|n| *n != old_node)
                .filter_map(|n| sim.net.group(n, 1))
                .filter(|g| {
                    let m = g.raft.metrics().borrow().clone();
                    m.current_leader == Some(m.id) && m.vote > old_vote
                })
                .collect();
            if let Some(group) = leaders.into_iter().next() {
                let written = group.propose(with_epoch(put("after"), &group)).await;
                if matches!(written, Ok(ShardResponse::Applied)) {
                    successor = Some(group);
                    break;
                }
            }
        }
        assert!(successor.is_some(), "no other node led and took the write");

        // It wakes: no time has passed for it to hear of the new leader.
        sim.net.lock().cut.clear();
        assert_eq!(
            old.leased_read_index(),
            None,
            "the old leader still claims its lease"
        );
        let barrier = tokio::time::timeout(Duration::from_secs(2), old.read_index()).await;
        if let Ok(Ok(_)) = barrier {
            let process = sim.nodes[(old_node - 1) as usize].process.clone().unwrap();
            let value = process.get(Cf::Data, &key).unwrap();
            assert_eq!(value.as_deref(), Some(&b"after"[..]), "a stale read");
        }
    });
}

#[test]
fn a_node_dies_while_its_shards_sleep() {
    on_paused_clock(async {
        let mut sim = Sim::new_with(11, |knobs| {
            knobs.hibernation = HibernationOptions {
                enabled: true,
                idle: Duration::from_millis(500),
                dead_after: Duration::from_millis(800),
                heartbeat: TICK,
            };
        })
        .await;
        // A few shards, each with a leader and a write.
        for _ in 0..200 {
            sim.advance(1).await.unwrap();
            if sim.net.leader_of(1).is_some() {
                break;
            }
        }
        for _ in 0..3 {
            sim.split();
            sim.advance(50).await.unwrap();
        }
        let mut written = BTreeMap::new();
        for i in 0..KEYS {
            let key = key(i);
            let leader = sim.net.lock().groups.iter().find_map(|((node, _), g)| {
                let m = g.raft.metrics().borrow().clone();
                (g.descriptor.borrow().contains(&key) && m.current_leader == Some(*node))
                    .then(|| g.clone())
            });
            let group = leader.expect("every key's shard has a leader");
            let value = format!("v{i}");
            let request = ShardRequest::Write {
                epoch: group.descriptor.borrow().epoch,
                mutations: vec![Mutation::Put {
                    key: key.clone(),
                    value: value.clone().into_bytes(),
                }],
            };
            let answer = group.propose(request).await;
            assert!(matches!(answer, Ok(ShardResponse::Applied)), "{answer:?}");
            written.insert(key, value);
        }
        let shards = sim.nodes[0].groups.len();
        assert!(shards >= 2, "the splits made shards: {shards}");

        // Idle: every replica falls asleep, and sleeping groups hold no elections.
        // (Node 4 holds only the first shard's never-initialised group.)
        let member = |g: &ShardGroup| {
            let m = g.raft.metrics().borrow().clone();
            m.membership_config.membership().get_node(&m.id).is_some()
        };
        let all_asleep = |sim: &Sim| {
            (1..=NODES)
                .flat_map(|n| sim.net.groups_on(n))
                .filter(member)
                .all(|g| g.asleep())
        };
        for _ in 0..300 {
            sim.advance(1).await.unwrap();
            if all_asleep(&sim) {
                break;
            }
        }
        let awake: Vec<String> = (1..=NODES)
            .flat_map(|n| sim.net.groups_on(n))
            .filter(|g| member(g) && !g.asleep())
            .map(|g| {
                let m = g.raft.metrics().borrow().clone();
                format!(
                    "s{} on n{}: {:?} leader {:?} last {:?} applied {:?} replication {:?}",
                    g.shard,
                    m.id,
                    m.state,
                    m.current_leader,
                    m.last_log_index,
                    m.last_applied,
                    m.replication
                )
            })
            .collect();
        assert!(awake.is_empty(), "idle groups hibernate: {awake:#?}");
        let votes = |sim: &Sim| -> Vec<_> {
            (1..=NODES)
                .flat_map(|n| sim.net.groups_on(n))
                .map(|g| g.raft.metrics().borrow().vote)
                .collect()
        };
        let before = votes(&sim);
        sim.advance(300).await.unwrap();
        assert_eq!(votes(&sim), before, "a sleeping group held an election");
        assert!(all_asleep(&sim));

        // The node leading the most shards dies while they sleep.
        let leaders: Vec<NodeId> = (1..=NODES)
            .flat_map(|n| sim.net.groups_on(n))
            .filter_map(|g| {
                let m = g.raft.metrics().borrow().clone();
                (m.current_leader == Some(m.id)).then_some(m.id)
            })
            .collect();
        let dead = (1..=NODES)
            .max_by_key(|n| leaders.iter().filter(|l| *l == n).count())
            .unwrap();
        let orphaned = leaders.iter().filter(|l| **l == dead).count();
        assert!(orphaned > 0);
        let net = sim.net.clone();
        sim.node(dead).crash(&net, false).await;

        // Liveness notices, and every shard it led is led again by a survivor.
        let led_everywhere = |sim: &Sim| {
            (0..KEYS).all(|i| {
                sim.net.lock().groups.iter().any(|((node, _), g)| {
                    let m = g.raft.metrics().borrow().clone();
                    g.descriptor.borrow().contains(&key(i))
                        && m.current_leader == Some(*node)
                        && *node != dead
                })
            })
        };
        let mut waited = Duration::ZERO;
        while !led_everywhere(&sim) && waited < Duration::from_secs(10) {
            sim.advance(1).await.unwrap();
            waited += TICK;
        }
        assert!(led_everywhere(&sim), "every shard of node {dead} led again");
        let detect = Duration::from_millis(800);
        assert!(
            waited < detect + Duration::from_secs(3),
            "led again {waited:?} after the crash"
        );

        // Nothing acknowledged was lost.
        for (key, value) in &written {
            let read = sim.read(key).await.unwrap();
            assert_eq!(read.as_deref(), Some(value.as_bytes()), "{value}");
        }
    });
}
