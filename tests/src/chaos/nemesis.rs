//! The nemesis: faults drawn from a seeded generator, one at a time, each with its heal.
//!
//! One fault at a time keeps a quorum recoverable: a kill or a pause takes one node, every
//! partition leaves a majority connected, a membership change keeps at least the starting
//! number of nodes, and a split or merge is a normal (if forced) cluster operation. Half
//! the time a membership change or a split or merge also happens while a kill, pause,
//! partition or latency fault is in force: it must work (or fail cleanly) with a
//! majority.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tokio::process::Command;

use super::ChaosError;
use super::history::Recorder;
use super::proxy::{Faults, NodeId, Proxy};
use super::workload;
use crate::linearizability::{Call, Return};

/// A kind of fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a node, then restart it on its data directory.
    Kill,
    /// SIGSTOP a node, then SIGCONT it.
    Pause,
    /// SIGSTOP a shard's leader until another node leads the shard, SIGCONT it, and read
    /// from it the moment it wakes: a leader must not serve reads from a lease that ran
    /// out while it was stopped.
    Lease,
    /// Cut the network between nodes (several shapes), then heal it.
    Partition,
    /// Delay traffic between nodes, then remove the delay.
    Latency,
    /// Add a fresh node, or remove one when there are more than at the start.
    Membership,
    /// Split a shard at a workload key, or merge a shard with its neighbour.
    Shards,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Lease,
        FaultKind::Partition,
        FaultKind::Latency,
        FaultKind::Membership,
        FaultKind::Shards,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Lease => "lease",
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Membership => "membership",
            FaultKind::Shards => "shards",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == text.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault `{text}`; choose from {}", names.join(","))
            })
    }
}

/// The local cluster under test, driven through the `hanse` command line.
pub struct Cluster {
    pub hanse: PathBuf,
    /// The launcher's directory: node configurations, data, logs and pid files.
    pub dir: PathBuf,
    /// Every node's proxy address by id (also the ids a node added later will get).
    pub endpoints: BTreeMap<NodeId, String>,
    /// The nodes now in the cluster.
    pub members: Vec<NodeId>,
    /// Starts the nodes with the deliberate ack-before-commit bug.
    pub ack_before_commit: bool,
    /// Nodes a fault now keeps from a majority: asked last.
    pub impaired: Vec<NodeId>,
}

/// How long a command-line step may take before the harness gives up on it.
const COMMAND_WAIT: Duration = Duration::from_secs(120);
/// How long a membership change or a split or merge during another fault may take.
const ACTION_WAIT: Duration = Duration::from_secs(20);
/// How long the lease fault keeps a leader stopped waiting for another to take over.
const LEASE_TAKEOVER_WAIT: Duration = Duration::from_secs(15);
/// How long one of the lease fault's reads may take (it fails rather than waits).
const LEASE_READ_WAIT: Duration = Duration::from_secs(2);

impl Cluster {
    /// The proxy addresses of the current members, impaired nodes last.
    pub fn member_endpoints(&self) -> Vec<String> {
        let mut ids = self.members.clone();
        ids.sort_by_key(|id| self.impaired.contains(id));
        ids.iter().map(|id| self.endpoints[id].clone()).collect()
    }

    /// Runs `hanse ARGS`, returning its standard output or why it failed.
    pub async fn hanse(&self, args: &[&str]) -> Result<String, ChaosError> {
        let mut command = Command::new(&self.hanse);
        command.args(args).kill_on_drop(true);
        if self.ack_before_commit {
            command.env(hanse_node::server::ACK_BEFORE_COMMIT_VAR, "1");
        }
        let described = format!("hanse {}", args.join(" "));
        let output = tokio::time::timeout(COMMAND_WAIT, command.output())
            .await
            .map_err(|_| ChaosError::Command {
                command: described.clone(),
                detail: format!("gave no answer within {COMMAND_WAIT:?}"),
            })?
            .map_err(|e| ChaosError::Command {
                command: described.clone(),
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(ChaosError::Command {
                command: described,
                detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `hanse admin ARGS --endpoints <members, impaired ones last>`.
    async fn admin(&self, args: &[&str]) -> Result<String, ChaosError> {
        let endpoints = self.member_endpoints().join(",");
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.extend(["--endpoints", &endpoints]);
        let certs = self.certs_dir().display().to_string();
        all.extend(["--certs-dir", &certs]);
        self.hanse(&all).await
    }

    /// The certificates the cluster's nodes use (`hanse cluster up` made them, and one
    /// for `root`).
    pub fn certs_dir(&self) -> PathBuf {
        hanse_node::config::NodeConfig::load(&self.dir.join("node1.toml"))
            .ok()
            .and_then(|config| config.certs_dir)
            .unwrap_or_else(|| self.dir.join("certs"))
    }

    /// How the workload's clients connect: as `root`, with TLS.
    pub fn root_tls(&self) -> Result<Arc<hanse_client::ClientTls>, ChaosError> {
        hanse_client::user_tls(&self.certs_dir(), "root").map_err(|e| ChaosError::Command {
            command: "loading the cluster's client certificate".into(),
            detail: e.to_string(),
        })
    }

    fn dir_arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// The pid of node `id`'s server, from the launcher's pid file.
    fn pid(&self, id: NodeId) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("node{id}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends `signal` to node `id`'s server; false when it has no running process.
    pub fn signal(&self, id: NodeId, signal: i32) -> bool {
        let Some(pid) = self.pid(id) else {
            return false;
        };
        // SAFETY: kill(2) touches no memory of ours; the pid is the launcher's record of
        // the node's server process.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    pub async fn start(&self, id: NodeId) -> Result<String, ChaosError> {
        let node = id.to_string();
        self.hanse(&[
            "cluster",
            "start",
            "--dir",
            &self.dir_arg(),
            "--node",
            &node,
        ])
        .await
    }

    /// Each shard's (id, leader node, whether it is the meta shard), from the routing table.
    pub async fn shards(&self) -> Result<Vec<(u64, NodeId, bool)>, ChaosError> {
        let answer = self.admin(&["shards", "--json"]).await?;
        let parsed: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| ChaosError::Command {
                command: "hanse admin shards --json".into(),
                detail: format!("unreadable answer: {e}"),
            })?;
        let shards = parsed["shards"].as_array().cloned().unwrap_or_default();
        Ok(shards
            .iter()
            .map(|s| {
                let system = s["start"].as_str().unwrap_or("").starts_with("\\xff");
                (
                    s["id"].as_u64().unwrap_or(0),
                    s["leader_node"].as_u64().unwrap_or(0),
                    system,
                )
            })
            .collect())
    }

    /// Stops every node; paused ones are continued first so they can stop cleanly.
    pub fn down(&self) {
        for &id in &self.members {
            self.signal(id, libc::SIGCONT);
        }
        let _ = std::process::Command::new(&self.hanse)
            .args(["cluster", "down", "--dir", &self.dir_arg()])
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}

/// A fault in force and how to undo it.
enum Heal {
    Restart(NodeId),
    Continue(NodeId),
    Network,
}

/// The log of faults: lines of `<seconds since start> <what>`, also kept for the report.
pub struct FaultLog {
    file: Mutex<File>,
    /// Each fault's (kind, start, end) in the history's microseconds.
    pub windows: Mutex<Vec<(FaultKind, u64, u64)>>,
}

impl FaultLog {
    pub fn create(path: &Path) -> std::io::Result<FaultLog> {
        Ok(FaultLog {
            file: Mutex::new(File::create(path)?),
            windows: Mutex::new(Vec::new()),
        })
    }

    pub fn line(&self, recorder: &Recorder, text: &str) {
        let at = recorder.now_us() as f64 / 1e6;
        let mut file = self.file.lock().expect("fault log lock");
        let _ = writeln!(file, "{at:9.3}s {text}");
    }
}

/// Injects faults until `until` (history microseconds), then heals everything.
pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub proxy: &'a Proxy,
    pub recorder: &'a Recorder,
    pub log: &'a FaultLog,
    pub kinds: Vec<FaultKind>,
    pub keys: u64,
    /// Membership changes never go below this many nodes.
    pub nodes_min: usize,
    /// Node ids the proxy listens for; an addition beyond them is skipped.
    pub ids_max: NodeId,
    /// The client id the nemesis's own reads are recorded under (a lease fault's).
    pub reader_id: u64,
    /// How long the workload's clients wait for an answer.
    pub client_timeout: Duration,
    pub reads: u64,
}

impl Nemesis<'_> {
    pub async fn run(&mut self, seed: u64, until_us: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        // Rounds of every kind in a shuffled order: even a short run sees each of them.
        let mut round: Vec<FaultKind> = Vec::new();
        while self.recorder.now_us() < until_us {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            if self.recorder.now_us() >= until_us {
                break;
            }
            if round.is_empty() {
                round = self.kinds.clone();
                round.shuffle(&mut rng);
            }
            let kind = round.pop().expect("a round has every kind");
            let started = self.recorder.now_us();
            let heal = match self.inject(kind, &mut rng).await {
                Ok(heal) => heal,
                Err(e) => {
                    self.log.line(self.recorder, &format!("{kind}: {e}"));
                    None
                }
            };
            if let Some(heal) = heal {
                let hold = Duration::from_millis(rng.random_range(2000..6000));
                let left = Duration::from_micros(until_us.saturating_sub(self.recorder.now_us()));
                let hold = hold.min(left);
                let actions: Vec<FaultKind> = self
                    .kinds
                    .iter()
                    .copied()
                    .filter(|k| matches!(k, FaultKind::Membership | FaultKind::Shards))
                    .collect();
                if !actions.is_empty() && rng.random_bool(0.5) {
                    tokio::time::sleep(hold / 2).await;
                    let action = *actions.choose(&mut rng).expect("an action kind");
                    self.act(action, &mut rng).await;
                    tokio::time::sleep(hold / 2).await;
                } else {
                    tokio::time::sleep(hold).await;
                }
                self.heal(heal).await;
            }
            self.record(kind, started);
        }
    }

    fn record(&self, kind: FaultKind, started: u64) {
        let ended = self.recorder.now_us();
        self.log
            .windows
            .lock()
            .expect("fault windows lock")
            .push((kind, started, ended));
    }

    /// Carries out a membership change or a split or merge while another fault holds,
    /// giving up (its command killed, its outcome unknown) after [`ACTION_WAIT`] so that
    /// the fault is healed on time.
    async fn act(&mut self, kind: FaultKind, rng: &mut StdRng) {
        let started = self.recorder.now_us();
        match tokio::time::timeout(ACTION_WAIT, self.inject(kind, rng)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.log.line(self.recorder, &format!("{kind}: {e}")),
            Err(_) => self.log.line(
                self.recorder,
                &format!("{kind}: gave up after {ACTION_WAIT:?}; its outcome is unknown"),
            ),
        }
        self.record(kind, started);
    }

    async fn inject(
        &mut self,
        kind: FaultKind,
        rng: &mut StdRng,
    ) -> Result<Option<Heal>, ChaosError> {
        let members = self.cluster.members.clone();
        let say = |text: String| self.log.line(self.recorder, &text);
        match kind {
            FaultKind::Kill => {
                let node = self.victim(rng).await;
                self.cluster.signal(node, libc::SIGKILL);
                self.cluster.impaired = vec![node];
                say(format!("kill: SIGKILL node {node}"));
                Ok(Some(Heal::Restart(node)))
            }
            FaultKind::Pause => {
                let node = self.victim(rng).await;
                self.cluster.signal(node, libc::SIGSTOP);
                self.cluster.impaired = vec![node];
                say(format!("pause: SIGSTOP node {node}"));
                Ok(Some(Heal::Continue(node)))
            }
            FaultKind::Lease => {
                self.stale_lease(rng).await?;
                Ok(None)
            }
            FaultKind::Latency => {
                let delay =
                    Duration::from_millis(*[50, 100, 200, 400].choose(rng).expect("delays"));
                let mut faults = Faults::default();
                let only = rng
                    .random_bool(0.5)
                    .then(|| *members.choose(rng).expect("members"));
                for &a in &members {
                    for &b in &members {
                        if a != b && only.is_none_or(|n| n == a || n == b) {
                            faults.latency.insert((a, b), delay);
                        }
                    }
                }
                self.proxy.set(faults);
                match only {
                    Some(node) => say(format!(
                        "latency: {delay:?} each way to and from node {node}"
                    )),
                    None => say(format!("latency: {delay:?} each way between all nodes")),
                }
                Ok(Some(Heal::Network))
            }
            FaultKind::Partition => {
                let leader = self.some_leader(rng).await;
                let (faults, shape) = partition(&members, leader, rng);
                self.cluster.impaired = cut_off(&members, &faults);
                self.proxy.set(faults);
                say(format!("partition: {shape}"));
                Ok(Some(Heal::Network))
            }
            FaultKind::Membership => {
                if members.len() > self.nodes_min {
                    let node = *members.choose(rng).expect("members");
                    let dir = self.cluster.dir_arg();
                    let id = node.to_string();
                    say(format!("membership: removing node {node}"));
                    self.cluster
                        .hanse(&["cluster", "remove-node", "--dir", &dir, "--node", &id])
                        .await?;
                    self.cluster.members.retain(|&m| m != node);
                    say(format!("membership: node {node} removed"));
                } else {
                    let next = self.cluster.dir.read_dir().map_or(0, |entries| {
                        entries
                            .filter_map(|e| {
                                let name = e.ok()?.file_name().into_string().ok()?;
                                name.strip_prefix("node")?.split('.').next()?.parse().ok()
                            })
                            .max()
                            .unwrap_or(0)
                    }) + 1;
                    if next > self.ids_max {
                        say(format!("membership: no proxy for a node {next}; skipped"));
                        return Ok(None);
                    }
                    say(format!("membership: adding node {next}"));
                    let dir = self.cluster.dir_arg();
                    self.cluster
                        .hanse(&["cluster", "add-node", "--dir", &dir])
                        .await?;
                    self.cluster.members.push(next);
                    say(format!("membership: node {next} added"));
                }
                Ok(None)
            }
            FaultKind::Shards => {
                if rng.random_bool(0.5) {
                    let generation = workload::generation(self.recorder.now_us());
                    let key = workload::key(generation, rng.random_range(1..self.keys));
                    let key = String::from_utf8_lossy(&key).into_owned();
                    let answer = self.cluster.admin(&["split", &key]).await;
                    say(format!("shards: split at {key}: {}", outcome(&answer)));
                } else {
                    let shards = self.cluster.shards().await?;
                    let data: Vec<u64> = shards
                        .iter()
                        .filter(|(_, _, system)| !system)
                        .map(|(id, _, _)| *id)
                        .collect();
                    // The last data shard's right neighbour is the meta shard.
                    let Some(shard) = data[..data.len().saturating_sub(1)].choose(rng) else {
                        say("shards: one data shard, nothing to merge".into());
                        return Ok(None);
                    };
                    let id = shard.to_string();
                    let answer = self.cluster.admin(&["merge", &id]).await;
                    say(format!("shards: merge {id}: {}", outcome(&answer)));
                }
                Ok(None)
            }
        }
    }

    /// The lease fault: stops the leader of a data shard, cut off from the other nodes,
    /// until another node says it leads it (at most [`LEASE_TAKEOVER_WAIT`]) and the
    /// clients wrote through that one; continues it, reads every key of the current
    /// generation from it alone, each read recorded, and heals the cut.
    async fn stale_lease(&mut self, rng: &mut StdRng) -> Result<(), ChaosError> {
        let shards = self.cluster.shards().await?;
        let data: Vec<(u64, NodeId)> = shards
            .iter()
            .filter(|(_, leader, system)| !system && self.cluster.members.contains(leader))
            .map(|&(id, leader, _)| (id, leader))
            .collect();
        let Some(&(shard, leader)) = data.choose(rng) else {
            self.log
                .line(self.recorder, "lease: no data shard with a known leader");
            return Ok(());
        };
        let say = |text: String| self.log.line(self.recorder, &text);
        // Cut off from the other nodes as well, so that nothing the new leader sends it
        // waits in its sockets: when it wakes, only its lease decides whether it serves.
        let others: Vec<NodeId> = self
            .cluster
            .members
            .iter()
            .copied()
            .filter(|&n| n != leader)
            .collect();
        let mut cut = Faults::default();
        cut.cut(&[leader], &others);
        self.proxy.set(cut);
        self.cluster.signal(leader, libc::SIGSTOP);
        self.cluster.impaired = vec![leader];
        say(format!(
            "lease: SIGSTOP node {leader}, leader of shard {shard}, and cut it off"
        ));
        let deadline = tokio::time::Instant::now() + LEASE_TAKEOVER_WAIT;
        let mut successor = None;
        while tokio::time::Instant::now() < deadline && successor.is_none() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            successor = self.leads_elsewhere(shard, leader).await;
        }
        // The clients write through the new leader for a moment (those that waited for
        // the stopped one give up after their request timeout).
        tokio::time::sleep(self.client_timeout + Duration::from_secs(1)).await;
        self.cluster.signal(leader, libc::SIGCONT);
        match successor {
            Some(new) => say(format!(
                "lease: node {new} leads shard {shard}; node {leader} continued, read from at once"
            )),
            None => say(format!(
                "lease: no other leader of shard {shard} within {LEASE_TAKEOVER_WAIT:?}; node {leader} continued, read from at once"
            )),
        }
        self.read_from(leader).await;
        self.proxy.set(Faults::default());
        self.cluster.impaired.clear();
        Ok(())
    }

    /// A node other than `except` that says it leads `shard` (each asked for its own
    /// view: the routing table may be served by the stopped node).
    async fn leads_elsewhere(&self, shard: u64, except: NodeId) -> Option<NodeId> {
        let tls = self.cluster.root_tls().ok()?;
        for &node in self.cluster.members.iter().filter(|&&n| n != except) {
            let endpoint = &self.cluster.endpoints[&node];
            let Ok(mut admin) = hanse_client::admin(endpoint, Some(tls.clone()), None) else {
                continue;
            };
            let request = hanse_client::proto::StatusRequest {};
            let Ok(Ok(status)) = tokio::time::timeout(LEASE_READ_WAIT, admin.status(request)).await
            else {
                continue;
            };
            let leads = status.into_inner().shards.iter().any(|s| {
                s.role == "leader" && s.descriptor.as_ref().is_some_and(|d| d.id == shard)
            });
            if leads {
                return Some(node);
            }
        }
        None
    }

    /// Reads every key of the current generation from node `node` alone (no retries, no
    /// other node), recording each read; a refusal is a failed read, and so is every read
    /// not answered within [`LEASE_READ_WAIT`] of the first.
    async fn read_from(&mut self, node: NodeId) {
        let Ok(tls) = self.cluster.root_tls() else {
            return;
        };
        let Ok(channel) = hanse_client::connect(&self.cluster.endpoints[&node], Some(tls)) else {
            return;
        };
        let mut kv = hanse_client::proto::kv_client::KvClient::new(channel);
        let generation = workload::generation(self.recorder.now_us());
        let deadline = tokio::time::Instant::now() + LEASE_READ_WAIT;
        for index in 0..self.keys {
            let key = workload::key(generation, index);
            self.reads += 1;
            let op = self.reads;
            self.recorder.invoke(self.reader_id, op, &key, &Call::Get);
            let request = hanse_client::proto::GetRequest {
                route: None,
                key: key.clone(),
                max_staleness_ms: 0,
            };
            let answer = tokio::time::timeout_at(deadline, kv.get(request)).await;
            let (ret, error) = match answer {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    match answer.error {
                        None => (Return::Read(answer.found.then_some(answer.value)), None),
                        Some(refused) => (Return::Failed, Some(format!("{refused:?}"))),
                    }
                }
                Ok(Err(status)) => (Return::Failed, Some(status.message().to_string())),
                Err(_) => (Return::Failed, Some("no answer in time".into())),
            };
            self.recorder.complete(self.reader_id, op, &ret, error);
        }
    }

    /// A node to kill or pause: half the time a shard's leader, else any node.
    async fn victim(&self, rng: &mut StdRng) -> NodeId {
        if rng.random_bool(0.5) {
            self.some_leader(rng).await
        } else {
            *self.cluster.members.choose(rng).expect("members")
        }
    }

    /// The leader of a random shard (some node when none is known).
    async fn some_leader(&self, rng: &mut StdRng) -> NodeId {
        let leaders: Vec<NodeId> = self
            .cluster
            .shards()
            .await
            .unwrap_or_default()
            .iter()
            .map(|&(_, leader, _)| leader)
            .filter(|l| self.cluster.members.contains(l))
            .collect();
        match leaders.choose(rng) {
            Some(&leader) => leader,
            None => *self.cluster.members.choose(rng).expect("members"),
        }
    }

    async fn heal(&mut self, heal: Heal) {
        self.cluster.impaired.clear();
        match heal {
            Heal::Restart(node) => match self.cluster.start(node).await {
                Ok(_) => self
                    .log
                    .line(self.recorder, &format!("heal: node {node} restarted")),
                Err(e) => self
                    .log
                    .line(self.recorder, &format!("heal: restarting node {node}: {e}")),
            },
            Heal::Continue(node) => {
                self.cluster.signal(node, libc::SIGCONT);
                self.log
                    .line(self.recorder, &format!("heal: node {node} continued"));
            }
            Heal::Network => {
                self.proxy.set(Faults::default());
                self.log.line(self.recorder, "heal: network whole");
            }
        }
    }

    /// Undoes whatever may be left: every member continued and running, the network whole.
    pub async fn heal_all(&self) {
        self.proxy.set(Faults::default());
        for &node in &self.cluster.members {
            self.cluster.signal(node, libc::SIGCONT);
            if let Err(e) = self.cluster.start(node).await {
                self.log
                    .line(self.recorder, &format!("final heal: node {node}: {e}"));
            }
        }
        self.log.line(
            self.recorder,
            "final heal: every node running, network whole",
        );
    }
}

fn outcome(answer: &Result<String, ChaosError>) -> String {
    match answer {
        Ok(_) => "done".into(),
        Err(e) => format!("refused ({e})"),
    }
}

/// The members that cannot reach a majority both ways under `faults`.
pub fn cut_off(members: &[NodeId], faults: &Faults) -> Vec<NodeId> {
    let linked = |x: NodeId, y: NodeId| {
        x == y || (!faults.blocked.contains(&(x, y)) && !faults.blocked.contains(&(y, x)))
    };
    members
        .iter()
        .copied()
        .filter(|&x| members.iter().filter(|&&y| linked(x, y)).count() <= members.len() / 2)
        .collect()
}

/// A partition of `members` that leaves a majority connected, with its description:
/// one node isolated, the leader in a minority, the leader in a majority, a ring of
/// overlapping majorities (five nodes or more), or one node that can send but not hear
/// (or hear but not send).
pub fn partition(members: &[NodeId], leader: NodeId, rng: &mut StdRng) -> (Faults, String) {
    let mut faults = Faults::default();
    let n = members.len();
    let minority = (n - 1) / 2;
    let others: Vec<NodeId> = members.iter().copied().filter(|&m| m != leader).collect();
    let shapes = if n >= 5 { 5 } else { 4 };
    let (a, b, shape): (Vec<NodeId>, Vec<NodeId>, String) = match rng.random_range(0..shapes) {
        0 => {
            let node = *members.choose(rng).expect("members");
            let rest = members.iter().copied().filter(|&m| m != node).collect();
            (vec![node], rest, format!("node {node} isolated"))
        }
        1 => {
            let (with, without) = others.split_at(minority.saturating_sub(1));
            let mut side = vec![leader];
            side.extend_from_slice(with);
            let text = format!("leader {leader} in a minority {side:?} | {without:?}");
            (side, without.to_vec(), text)
        }
        2 => {
            let (with, without) = others.split_at(n - minority - 1);
            let mut side = vec![leader];
            side.extend_from_slice(with);
            let text = format!("leader {leader} in a majority {side:?} | {without:?}");
            (side, without.to_vec(), text)
        }
        3 => {
            let node = *members.choose(rng).expect("members");
            let rest: Vec<NodeId> = members.iter().copied().filter(|&m| m != node).collect();
            let deaf = rng.random_bool(0.5);
            for &other in &rest {
                let link = if deaf { (other, node) } else { (node, other) };
                faults.blocked.insert(link);
            }
            let text = if deaf {
                format!("one way: node {node} hears no one")
            } else {
                format!("one way: no one hears node {node}")
            };
            return (faults, text);
        }
        _ => {
            // Each node sees the `reach` nearest on either side: with itself, a majority,
            // but no two nodes far apart see the same majority.
            let reach = (n / 2).div_ceil(2);
            for (i, &x) in members.iter().enumerate() {
                for (j, &y) in members.iter().enumerate() {
                    let distance = i.abs_diff(j).min(n - i.abs_diff(j));
                    if distance > reach {
                        faults.blocked.insert((x, y));
                    }
                }
            }
            let text = format!("ring {members:?}: each node sees {reach} on either side");
            return (faults, text);
        }
    };
    faults.cut(&a, &b);
    (faults, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_leaves_a_majority_that_can_elect_a_leader() {
        for n in 3..=7u64 {
            let members: Vec<NodeId> = (1..=n).collect();
            for seed in 0..200 {
                let mut rng = StdRng::seed_from_u64(seed);
                let leader = members[seed as usize % members.len()];
                let (faults, shape) = partition(&members, leader, &mut rng);
                assert!(!faults.blocked.is_empty(), "{shape}");
                // Some node sees a majority both ways: a leader can be elected there.
                let cut = cut_off(&members, &faults);
                assert!(cut.len() < members.len(), "{n} nodes: {shape}");
                if shape.contains("in a minority") {
                    assert!(cut.contains(&leader), "{n} nodes: {shape}");
                }
                if shape.contains("isolated") {
                    assert_eq!(cut.len(), 1, "{n} nodes: {shape}");
                }
            }
        }
    }

    #[test]
    fn fault_names_round_trip_and_unknown_ones_are_refused() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        let error = "flood".parse::<FaultKind>().unwrap_err();
        assert!(error.contains("kill,pause,lease,partition"), "{error}");
    }
}
