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
use hanse_consensus::{
    GroupOptions, ProposeError, ProposerOptions, ReplicaNode, ShardGroup, TypeConfig,
    destroy_replica, retire_merged, store_placeholder,
};
use hanse_proto::convert::to_proto;
use hanse_shard::range::single_key;
use hanse_shard::{Epoch, NodeId, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
use hanse_shard::{Mutation, ShardRequest, ShardResponse, hosting_changes};
use hanse_shard::{RouteTable, StaleRoute, admit_route};
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

impl SimPeer {
    /// Carries one request to the target's group and its reply back, each leg delayed
    /// and possibly lost. A group the target does not host answers nothing.
    async fn call<R, E, F, Fut>(&self, deliver: F) -> RpcResult<R, E>
    where
        E: std::error::Error,
        F: FnOnce(openraft::Raft<TypeConfig>) -> Fut,
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
        let reply = deliver(target.raft).await;
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
        self.call(|raft| async move { raft.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(|raft| async move { raft.install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(|raft| async move { raft.vote(rpc).await }).await
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
            group.shutdown().await;
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
    let request = ShardRequest::Write {
        epoch,
        mutations: vec![Mutation::Put {
            key: key.to_vec(),
            value: value.as_bytes().to_vec(),
        }],
    };
    match group.proposer.propose(request).await {
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
    next_shard: ShardId,
    /// The epoch each node last stored for each shard.
    epochs: BTreeMap<(NodeId, ShardId), Epoch>,
    trace: Arc<Mutex<Vec<String>>>,
    started: tokio::time::Instant,
    _dir: tempfile::TempDir,
}

fn member(node: NodeId) -> ReplicaNode {
    ReplicaNode {
        addr: addr(node),
        region: "sim".into(),
    }
}

impl Sim {
    async fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().expect("temporary directory");
        let net = Arc::new(Net(Mutex::new(NetState {
            rng: StdRng::seed_from_u64(rng.random()),
            groups: BTreeMap::new(),
            live: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss: 0.0,
            processes: BTreeMap::new(),
            removed: Vec::new(),
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
                snapshot_after_entries: 40,
                log_entries_kept: 5,
                heartbeat_interval: Duration::from_millis(50),
                election_timeout_min: Duration::from_millis(timeout),
                election_timeout_max: Duration::from_millis(timeout + 1),
                proposer: ProposerOptions::default(),
            };
            let mut node = SimNode {
                id,
                store,
                process: None,
                incarnation: 0,
                groups: BTreeMap::new(),
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
        Sim {
            net,
            nodes,
            rng,
            next_shard: 2,
            epochs: BTreeMap::new(),
            trace: Arc::new(Mutex::new(Vec::new())),
            started: tokio::time::Instant::now(),
            _dir: dir,
        }
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

    /// Splits a random shard its leader knows at a random workload key inside it.
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
        let new_shard_id = self.next_shard;
        self.next_shard += 1;
        self.log(format!(
            "split s{} at {} into s{new_shard_id} on n{node}",
            current.id,
            String::from_utf8_lossy(&at)
        ));
        let request = ShardRequest::Split {
            at,
            new_shard_id,
            expected_epoch: current.epoch,
        };
        let trace = self.trace.clone();
        tokio::spawn(async move {
            let outcome = group.proposer.propose(request).await;
            trace.lock().unwrap().push(format!(
                "       split into s{new_shard_id}: {}",
                brief(&outcome)
            ));
        });
    }

    /// Merges a random shard with its right neighbour, as the admin service does:
    /// PrepareMerge in the right one, wait until all its replicas applied it, CommitMerge
    /// in the left one, RollbackMerge when the commit was refused or never proposed.
    fn merge(&mut self) {
        let Some((_, left)) = self.pick_led_shard() else {
            return;
        };
        let l = left.descriptor.borrow().clone();
        if l.end.is_empty() || l.merging.is_some() {
            return;
        }
        let right = self
            .net
            .lock()
            .groups
            .values()
            .map(|g| g.descriptor.borrow().clone())
            .filter(|d| d.start == l.end)
            .max_by_key(|d| d.epoch.version);
        let Some(r) = right else { return };
        // A shard frozen into this one is a merge whose commit went unanswered: run it
        // again, as an operator would.
        if r.merging.is_some_and(|m| m.into != l.id) {
            return;
        }
        self.log(format!("merge s{} into s{}", r.id, l.id));
        let net = self.net.clone();
        let trace = self.trace.clone();
        tokio::spawn(async move {
            let outcome = merge(&net, &l, &r).await;
            trace.lock().unwrap().push(format!(
                "       merge of s{} into s{}: {outcome}",
                r.id, l.id
            ));
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
            for d in stored {
                // Epochs only grow (a power failure may take back what was not synced).
                let seen = self.epochs.entry((node.id, d.id)).or_insert(d.epoch);
                if d.epoch.version < seen.version || d.epoch.conf_ver < seen.conf_ver {
                    return Err(format!(
                        "n{}: the epoch of s{} went back from {:?} to {:?}",
                        node.id, d.id, seen, d.epoch
                    ));
                }
                *seen = d.epoch;
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
        Ok(())
    }

    /// Reads `key` through its shard's leader after a read barrier.
    async fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        for _ in 0..200 {
            for node in &self.nodes {
                let Some(process) = node.process.clone() else {
                    continue;
                };
                for group in self.net.groups_on(node.id) {
                    let m = group.raft.metrics().borrow().clone();
                    if !group.descriptor.borrow().contains(key) || m.current_leader != Some(m.id) {
                        continue;
                    }
                    if group.raft.ensure_linearizable().await.is_ok()
                        && group.descriptor.borrow().contains(key)
                    {
                        return process.get(Cf::Data, key).map_err(|e| e.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "no leader served {} after the faults healed",
            String::from_utf8_lossy(key)
        ))
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

fn brief(outcome: &Result<ShardResponse, ProposeError>) -> String {
    match outcome {
        Ok(ShardResponse::Rejected(r)) => format!("refused: {r}"),
        Ok(ShardResponse::Split { .. } | ShardResponse::Merge(_)) => "done".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// Proposes `request` to the current leader of `shard`; `None` when no leader is known.
async fn propose_to_leader(
    net: &Net,
    shard: ShardId,
    request: ShardRequest,
) -> Option<Result<ShardResponse, ProposeError>> {
    let (_, group) = net.leader_of(shard)?;
    Some(group.propose(request).await)
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
    let vote = group.raft.metrics().borrow().vote;
    let leader = vote
        .leader_id()
        .voted_for()
        .map(|node| (vote.leader_id().term, node));
    if let Err(e) = store_placeholder(process.as_ref(), current, leader) {
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

async fn merge(net: &Net, l: &ShardDescriptor, r: &ShardDescriptor) -> String {
    let prepare = ShardRequest::PrepareMerge {
        into: l.clone(),
        expected_epoch: r.epoch,
    };
    let frozen = match r.merging {
        Some(_) => r.clone(),
        None => match propose_to_leader(net, r.id, prepare).await {
            Some(Ok(ShardResponse::Merge(frozen))) => frozen,
            Some(other) => return format!("prepare: {}", brief(&other)),
            None => return "prepare: no leader".into(),
        },
    };
    let index = frozen.merging.map_or(0, |m| m.index);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let prepared = loop {
        let all_applied = frozen.replicas.iter().map(|r| r.node).all(|node| {
            net.group(node, r.id).is_some_and(|g| {
                g.raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .is_some_and(|id| id.index >= index)
            })
        });
        if all_applied {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let commit = ShardRequest::CommitMerge {
        source: frozen.clone(),
        expected_epoch: l.epoch,
    };
    let committed = match prepared {
        true => propose_to_leader(net, l.id, commit).await,
        false => None,
    };
    let refused = match committed {
        Some(Ok(ShardResponse::Merge(_))) => return "done".into(),
        Some(Err(e)) if !matches!(e, ProposeError::NotLeader { .. }) => {
            return format!("commit outcome unknown ({e}); s{} stays frozen", r.id);
        }
        refused => refused.map_or("never proposed".into(), |o| brief(&o)),
    };
    // Give up: fence the left shard so no commit of this preparation can apply (another
    // coordinator's included), then unfreeze the right one.
    let fence = ShardRequest::FenceMerge {
        source: frozen.clone(),
    };
    match propose_to_leader(net, l.id, fence).await {
        Some(Ok(ShardResponse::Merge(current))) if current.covers(&frozen) => {
            return format!("commit {refused}; fence: committed meanwhile");
        }
        Some(Ok(ShardResponse::Merge(_))) => {}
        other => {
            let fence = other.map_or("no leader".into(), |o| brief(&o));
            return format!("commit {refused}; fence: {fence}; s{} stays frozen", r.id);
        }
    }
    let rollback = ShardRequest::RollbackMerge { into: l.id };
    let rolled = propose_to_leader(net, r.id, rollback).await;
    format!(
        "commit {refused}; rollback: {}",
        rolled.map_or("no leader".into(), |o| brief(&o))
    )
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

fn run_seed(seed: u64) -> SeedOutcome {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(simulate(seed))
    };
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
///   replayed a split whose new shard the node already held.
const REGRESSIONS: [u64; 6] = [5, 17, 28, 89, 170, 381];

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
                splits += done(&report.trace, "split into");
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
