//! The planner in a running cluster: the [`PlannerActor`] (on the meta shard's leader)
//! takes each round's routing table with the shards' load reports, keeps a sliding window
//! of them, shows the [`Planner`] the cluster as the simulator would ([`frame`]), and turns
//! its decisions back into actions on real shards, keys and nodes ([`LiveAction`]). The
//! node carries those out; the planner never touches Raft.
//!
//! Keys become positions on the simulator's key line by rank: every shard boundary and
//! sampled key gets its own position, in key order, so split points map back to real keys.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use actix::prelude::*;
use hanse_shard::{Epoch, NodeId, ReplicaRole, ShardDescriptor, ShardId};

use crate::decide::{Mode, Planner, Status};
use crate::knobs::WINDOW_ROUNDS;
use crate::stats::summarize_counted;
use crate::vocab::KEY_SPACE;
use crate::vocab::{Action, ClusterAction, Node, Policy, Shard, ShardStats, View};

/// Operations per second a live node serves at full utilisation unless configured (the
/// simulator's node capacity per tick).
pub const NODE_CAPACITY: f64 = 4_000.0;
/// One-way latency the planner assumes between two regions no node has measured (a
/// region whose nodes have not called each other yet, the first seconds after a start).
pub const UNMEASURED_REGION_LATENCY_MS: f64 = 100.0;
/// ... and within a region no two nodes of which have measured each other.
pub const UNMEASURED_LOCAL_LATENCY_MS: f64 = 0.5;
/// Decisions the report keeps.
const DECISIONS_KEPT: usize = 32;

/// A shard's load as its leader last reported it (per second).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveLoad {
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    pub bytes_written_per_sec: f64,
    pub size_bytes: u64,
    /// The key that halves the shard by size.
    pub split_key: Option<Vec<u8>>,
    pub sampled_keys: Vec<(Vec<u8>, u64)>,
    pub origins: Vec<(String, u64)>,
}

impl LiveLoad {
    /// The rates times `factor` (sizes and keys as they are).
    fn scaled(&self, factor: f64) -> LiveLoad {
        LiveLoad {
            reads_per_sec: self.reads_per_sec * factor,
            writes_per_sec: self.writes_per_sec * factor,
            bytes_written_per_sec: self.bytes_written_per_sec * factor,
            origins: self
                .origins
                .iter()
                .map(|(region, n)| (region.clone(), (*n as f64 * factor).round() as u64))
                .collect(),
            ..self.clone()
        }
    }
}

/// One routing-table entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveShard {
    pub descriptor: ShardDescriptor,
    pub leader: Option<NodeId>,
    pub load: LiveLoad,
    /// Left alone by the planner (the meta shard, a shard in a merge).
    pub pinned: bool,
}

/// One live node.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveNode {
    pub id: NodeId,
    pub region: String,
    /// Its measured round trip to each peer it called lately, in ms.
    pub round_trips_ms: Vec<(NodeId, f64)>,
}

/// The one-way latency between two regions the planner works with.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionLatency {
    pub from: String,
    pub to: String,
    pub one_way_ms: f64,
    /// Half the mean of the round trips measured between the regions' nodes; else
    /// assumed ([`UNMEASURED_REGION_LATENCY_MS`]).
    pub measured: bool,
}

/// A decision on the real cluster.
pub type LiveAction = ClusterAction;

/// The cluster as the simulator's policies see it, with the way back to real ids and keys.
pub struct Frame {
    pub nodes: Vec<Node>,
    pub shards: Vec<Shard>,
    pub stats: Vec<ShardStats>,
    pub node_load: Vec<f64>,
    /// One-way latency between the regions (see [`region_latency`]).
    pub region_latency_ms: Vec<Vec<f64>>,
    /// The same, named, and whether each was measured.
    pub region_latency: Vec<RegionLatency>,
    node_ids: Vec<NodeId>,
    shard_ids: Vec<ShardId>,
    /// The real key at each position that stands for one.
    keys: BTreeMap<u64, Vec<u8>>,
    /// Each shard's size-middle key, for splits at a position that is no real key.
    middles: Vec<Option<Vec<u8>>>,
}

impl Frame {
    pub fn view(&self, tick: u64) -> View<'_> {
        View {
            tick,
            nodes: &self.nodes,
            shards: &self.shards,
            stats: &self.stats,
            node_load: &self.node_load,
            region_latency_ms: &self.region_latency_ms,
        }
    }

    /// `action` on the real cluster; `None` where it names no real key or neighbour.
    pub fn live(&self, action: &Action) -> Option<LiveAction> {
        Some(match *action {
            Action::Split { shard, at } => {
                let at = self
                    .keys
                    .get(&at)
                    .cloned()
                    .or_else(|| self.middles[shard].clone())?;
                LiveAction::Split {
                    shard: self.shard_ids[shard],
                    at,
                }
            }
            Action::Merge { shard } => {
                // Neighbours in the frame are neighbours in the cluster only when no
                // pinned shard lies between them.
                let right = self.shards.get(shard + 1)?;
                if self.shards[shard].end != right.start {
                    return None;
                }
                LiveAction::Merge {
                    shard: self.shard_ids[shard],
                }
            }
            Action::TransferLeader { shard, to } => LiveAction::TransferLeader {
                shard: self.shard_ids[shard],
                to: self.node_ids[to],
            },
            Action::MoveReplica { shard, from, to } => LiveAction::MoveReplica {
                shard: self.shard_ids[shard],
                from: self.node_ids[from],
                to: self.node_ids[to],
            },
            Action::AddReplica { shard, node, role } => LiveAction::AddReplica {
                shard: self.shard_ids[shard],
                node: self.node_ids[node],
                role,
            },
            Action::RemoveReplica { shard, node } => LiveAction::RemoveReplica {
                shard: self.shard_ids[shard],
                node: self.node_ids[node],
            },
            Action::SwapRoles {
                shard,
                promote,
                demote,
            } => LiveAction::SwapRoles {
                shard: self.shard_ids[shard],
                promote: self.node_ids[promote],
                demote: self.node_ids[demote],
            },
        })
    }
}

/// The frame of `shards` (in key order) on `nodes`, each shard's load its window's mean;
/// `changed` gives each shard's (last change, last merge) tick.
pub fn frame(
    shards: &[LiveShard],
    nodes: &[LiveNode],
    changed: &dyn Fn(ShardId) -> (u64, Option<u64>),
) -> Frame {
    let mut node_ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    node_ids.sort_unstable();
    node_ids.dedup();
    let regions: Vec<&str> = nodes
        .iter()
        .map(|n| n.region.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let region_of = |id: NodeId| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| regions.iter().position(|r| *r == n.region))
            .unwrap_or(0)
    };
    let sim_nodes: Vec<Node> = node_ids
        .iter()
        .map(|&id| Node {
            region: region_of(id),
            capacity: NODE_CAPACITY,
        })
        .collect();
    let index_of = |id: NodeId| node_ids.iter().position(|&n| n == id);
    let planned: Vec<&LiveShard> = shards
        .iter()
        .filter(|s| !s.pinned && s.leader.and_then(index_of).is_some())
        .collect();
    // Positions: the empty key (the first shard's start) at 0, every other boundary and
    // sampled key spaced evenly in key order, the end of the keyspace at KEY_SPACE.
    let mut all: BTreeSet<&[u8]> = BTreeSet::new();
    for s in &planned {
        all.insert(&s.descriptor.start);
        if !s.descriptor.end.is_empty() {
            all.insert(&s.descriptor.end);
        }
        all.extend(s.load.sampled_keys.iter().map(|(k, _)| k.as_slice()));
    }
    all.remove(&b""[..]);
    let step = KEY_SPACE / (all.len() as u64 + 2);
    let position: HashMap<&[u8], u64> = all
        .iter()
        .enumerate()
        .map(|(rank, key)| (*key, (rank as u64 + 1) * step))
        .collect();
    let at = |key: &[u8]| position.get(key).copied().unwrap_or(0);
    let keys: BTreeMap<u64, Vec<u8>> = position.iter().map(|(k, p)| (*p, k.to_vec())).collect();
    let mut node_ops = vec![0.0; node_ids.len()];
    let mut sim_shards = Vec::new();
    let mut stats = Vec::new();
    for s in &planned {
        let d = &s.descriptor;
        let with_role = |role: ReplicaRole| -> Vec<usize> {
            d.replicas
                .iter()
                .filter(|r| r.role == role)
                .filter_map(|r| index_of(r.node))
                .collect()
        };
        let (replicas, learners) = (
            with_role(ReplicaRole::Voter),
            with_role(ReplicaRole::Learner),
        );
        let leader = s.leader.and_then(index_of).expect("filtered above");
        let load = &s.load;
        node_ops[leader] += load.reads_per_sec + load.writes_per_sec;
        for &r in replicas.iter().chain(&learners).filter(|&&r| r != leader) {
            node_ops[r] += load.writes_per_sec / 2.0;
        }
        let (changed_at, merged_at) = changed(d.id);
        sim_shards.push(Shard {
            start: at(&d.start),
            end: if d.end.is_empty() {
                KEY_SPACE
            } else {
                at(&d.end)
            },
            size_bytes: load.size_bytes as f64,
            replicas,
            leader,
            learners,
            changed_at,
            merged_at,
        });
        let mut origins = vec![0.0; regions.len()];
        for (region, per_sec) in &load.origins {
            if let Some(r) = regions.iter().position(|name| name == region) {
                origins[r] += *per_sec as f64;
            }
        }
        stats.push(ShardStats {
            reads: load.reads_per_sec,
            writes: load.writes_per_sec,
            scans: 0.0,
            bytes_written: load.bytes_written_per_sec,
            sampled: load.sampled_keys.iter().map(|(k, n)| (at(k), *n)).collect(),
            crossing: vec![0; load.sampled_keys.len()],
            origins,
        });
    }
    let region_latency = region_latency(nodes, &regions);
    Frame {
        node_load: node_ops.iter().map(|ops| ops / NODE_CAPACITY).collect(),
        region_latency_ms: region_latency
            .chunks(regions.len().max(1))
            .map(|row| row.iter().map(|pair| pair.one_way_ms).collect())
            .collect(),
        region_latency,
        nodes: sim_nodes,
        middles: planned.iter().map(|s| s.load.split_key.clone()).collect(),
        shard_ids: planned.iter().map(|s| s.descriptor.id).collect(),
        shards: sim_shards,
        stats,
        node_ids,
        keys,
    }
}

/// The one-way latency between every pair of `regions` (row by row): half the mean round
/// trip the nodes of one measured to the nodes of the other, either way; assumed where
/// none was measured.
pub fn region_latency(nodes: &[LiveNode], regions: &[&str]) -> Vec<RegionLatency> {
    let n = regions.len();
    let region_of = |id: NodeId| {
        let node = nodes.iter().find(|node| node.id == id)?;
        regions.iter().position(|r| *r == node.region)
    };
    let (mut sum, mut count) = (vec![0.0; n * n], vec![0u32; n * n]);
    for node in nodes {
        let Some(from) = region_of(node.id) else {
            continue;
        };
        for &(peer, ms) in &node.round_trips_ms {
            if let Some(to) = region_of(peer) {
                for cell in [from * n + to, to * n + from] {
                    sum[cell] += ms / 2.0;
                    count[cell] += 1;
                }
            }
        }
    }
    let mut latency = Vec::with_capacity(n * n);
    for (from, from_name) in regions.iter().enumerate() {
        for (to, to_name) in regions.iter().enumerate() {
            let cell = from * n + to;
            let measured = count[cell] > 0;
            let one_way_ms = match (measured, from == to) {
                (true, _) => sum[cell] / f64::from(count[cell]),
                (false, true) => UNMEASURED_LOCAL_LATENCY_MS,
                (false, false) => UNMEASURED_REGION_LATENCY_MS,
            };
            latency.push(RegionLatency {
                from: from_name.to_string(),
                to: to_name.to_string(),
                one_way_ms,
                measured,
            });
        }
    }
    latency
}

/// The last [`WINDOW_ROUNDS`] reports of each shard, and when each shard last changed.
#[derive(Default)]
struct Window {
    reports: HashMap<ShardId, VecDeque<LiveLoad>>,
    /// Each shard's epoch, range end, the tick it last changed and the tick it last grew
    /// by a merge.
    changes: HashMap<ShardId, (Epoch, Vec<u8>, u64, Option<u64>)>,
}

impl Window {
    /// Takes this round's table; returns it with each shard's load averaged over the window.
    fn observe(&mut self, shards: &[LiveShard], tick: u64) -> Vec<LiveShard> {
        let ids: BTreeSet<ShardId> = shards.iter().map(|s| s.descriptor.id).collect();
        self.reports.retain(|id, _| ids.contains(id));
        self.changes.retain(|id, _| ids.contains(id));
        shards
            .iter()
            .map(|shard| {
                let d = &shard.descriptor;
                let change = self
                    .changes
                    .entry(d.id)
                    .or_insert_with(|| (d.epoch, d.end.clone(), tick, None));
                if change.0 != d.epoch {
                    // A range that reaches further than before took its neighbour in.
                    let grew = d.end.is_empty() && !change.1.is_empty() || d.end > change.1;
                    let merged_at = if grew { Some(tick) } else { change.3 };
                    *change = (d.epoch, d.end.clone(), tick, merged_at);
                    // A changed shard's old load says little about its new range.
                    self.reports.remove(&d.id);
                }
                let reports = self.reports.entry(d.id).or_default();
                reports.push_back(shard.load.clone());
                while reports.len() > WINDOW_ROUNDS {
                    reports.pop_front();
                }
                LiveShard {
                    load: mean(reports),
                    ..shard.clone()
                }
            })
            .collect()
    }

    fn changed(&self, shard: ShardId) -> (u64, Option<u64>) {
        self.changes
            .get(&shard)
            .map_or((0, None), |(_, _, at, merged)| (*at, *merged))
    }
}

/// The mean of `reports`: rates and origins averaged, sampled keys counted together and
/// summarised again, size and middle key the latest.
fn mean(reports: &VecDeque<LiveLoad>) -> LiveLoad {
    let n = reports.len().max(1) as f64;
    let latest = reports.back().cloned().unwrap_or_default();
    let mut origins: BTreeMap<String, u64> = BTreeMap::new();
    for report in reports {
        for (region, per_sec) in &report.origins {
            *origins.entry(region.clone()).or_default() += per_sec;
        }
    }
    let sampled = summarize_counted(
        reports
            .iter()
            .flat_map(|r| r.sampled_keys.iter().cloned())
            .collect(),
    );
    LiveLoad {
        reads_per_sec: reports.iter().map(|r| r.reads_per_sec).sum::<f64>() / n,
        writes_per_sec: reports.iter().map(|r| r.writes_per_sec).sum::<f64>() / n,
        bytes_written_per_sec: reports.iter().map(|r| r.bytes_written_per_sec).sum::<f64>() / n,
        sampled_keys: sampled,
        origins: origins
            .into_iter()
            .map(|(region, total)| (region, (total as f64 / n).round() as u64))
            .collect(),
        ..latest
    }
}

/// One decision as `hanse admin status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDecision {
    pub tick: u64,
    pub policy: String,
    pub action: String,
    /// The features of the shard it acted on (see [`crate::model::features`]).
    pub features: Vec<f32>,
}

/// What the planner did lately.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerReport {
    pub mode: Mode,
    pub ticks: u64,
    /// The policy that decided the last tick.
    pub acting: String,
    /// Why the heuristic stood in for the network in the last tick, if it did.
    pub fallback: Option<String>,
    pub fallback_ticks: u64,
    /// The last decisions, oldest first.
    pub decisions: Vec<LiveDecision>,
    /// Shadow mode: what the network would have done in the last tick.
    pub shadow: Vec<String>,
    /// What the envelope refused in the last tick, and why.
    pub refused: Vec<String>,
    /// The latency between regions the last tick was planned with.
    pub region_latency: Vec<RegionLatency>,
}

/// The planner actor: one per node, asked only on the meta shard's leader.
pub struct PlannerActor {
    planner: Planner,
    /// Live rates times this are in the simulator's units (its nodes' capacity over the
    /// live nodes').
    scale: f64,
    window: Window,
    tick: u64,
    decisions: VecDeque<LiveDecision>,
    shadow: Vec<String>,
    refused: Vec<String>,
    region_latency: Vec<RegionLatency>,
}

impl PlannerActor {
    /// A planner for nodes that serve `node_capacity` operations per second at full load.
    pub fn new(planner: Planner, node_capacity: f64) -> PlannerActor {
        PlannerActor {
            planner,
            scale: NODE_CAPACITY / node_capacity.max(1.0),
            window: Window::default(),
            tick: 0,
            decisions: VecDeque::new(),
            shadow: Vec::new(),
            refused: Vec::new(),
            region_latency: Vec::new(),
        }
    }

    /// Decides on this round's table: the actions to carry out (none in shadow mode).
    pub fn observe(&mut self, shards: &[LiveShard], nodes: &[LiveNode]) -> Vec<LiveAction> {
        self.tick += 1;
        let tick = self.tick;
        let scaled: Vec<LiveShard> = shards
            .iter()
            .map(|s| LiveShard {
                load: s.load.scaled(self.scale),
                ..s.clone()
            })
            .collect();
        let averaged = self.window.observe(&scaled, tick);
        let window = &self.window;
        let frame = frame(&averaged, nodes, &|id| window.changed(id));
        let admitted = self.planner.decide(&frame.view(tick));
        let status: &Status = self.planner.status();
        let named = |action: &Action| {
            frame.live(action).map_or_else(
                || format!("{action:?} (no live equivalent)"),
                |a| a.to_string(),
            )
        };
        for decision in status.recent.iter().filter(|d| d.tick == tick) {
            if self.decisions.len() == DECISIONS_KEPT {
                self.decisions.pop_front();
            }
            self.decisions.push_back(LiveDecision {
                tick,
                policy: decision.policy.clone(),
                action: named(&decision.action),
                features: decision.features.to_vec(),
            });
        }
        self.shadow = status.shadow.iter().map(named).collect();
        self.refused = status
            .refused
            .iter()
            .map(|(action, why)| format!("{}: {why}", named(action)))
            .collect();
        self.region_latency = frame.region_latency.clone();
        // Model and heuristic modes act; shadow mode only records.
        if status.mode == Mode::Shadow {
            Vec::new()
        } else {
            admitted.iter().filter_map(|a| frame.live(a)).collect()
        }
    }

    pub fn report(&self) -> PlannerReport {
        let status = self.planner.status();
        PlannerReport {
            mode: status.mode,
            ticks: self.tick,
            acting: status.acting.clone(),
            fallback: status.fallback.clone(),
            fallback_ticks: status.fallback_ticks,
            decisions: self.decisions.iter().cloned().collect(),
            shadow: self.shadow.clone(),
            refused: self.refused.clone(),
            region_latency: self.region_latency.clone(),
        }
    }
}

impl Actor for PlannerActor {
    type Context = Context<Self>;
}

/// This round's routing table and nodes; answers the actions to carry out.
#[derive(Message)]
#[rtype(result = "Vec<LiveAction>")]
pub struct Observe {
    pub shards: Vec<LiveShard>,
    pub nodes: Vec<LiveNode>,
}

impl Handler<Observe> for PlannerActor {
    type Result = MessageResult<Observe>;

    fn handle(&mut self, msg: Observe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.observe(&msg.shards, &msg.nodes))
    }
}

/// Asks for the planner's [`PlannerReport`].
#[derive(Message)]
#[rtype(result = "PlannerReport")]
pub struct Report;

impl Handler<Report> for PlannerActor {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::sim::policy::LoadSplit;
    use hanse_shard::ReplicaDescriptor;

    const REGIONS: [&str; 3] = ["ap-china", "au-sydney", "eu-hamburg"];

    fn nodes() -> Vec<LiveNode> {
        (1..=3)
            .map(|id| LiveNode {
                id,
                region: REGIONS[id as usize - 1].into(),
                round_trips_ms: Vec::new(),
            })
            .collect()
    }

    fn shard(id: ShardId, start: &[u8], end: &[u8], version: u64, load: LiveLoad) -> LiveShard {
        LiveShard {
            descriptor: ShardDescriptor {
                id,
                start: start.to_vec(),
                end: end.to_vec(),
                epoch: Epoch {
                    version,
                    conf_ver: 1,
                },
                replicas: (1..=3)
                    .map(|node| ReplicaDescriptor {
                        node,
                        region: REGIONS[node as usize - 1].into(),
                        role: ReplicaRole::Voter,
                    })
                    .collect(),
                merging: None,
            },
            leader: Some(1 + id % 3),
            load,
            pinned: false,
        }
    }

    /// A shard under `writes` per second, most of it on `hot` keys.
    fn hot_load(writes: f64, hot: &[&str]) -> LiveLoad {
        LiveLoad {
            writes_per_sec: writes,
            bytes_written_per_sec: writes * 272.0,
            size_bytes: 32 << 20,
            split_key: Some(b"middle".to_vec()),
            sampled_keys: hot.iter().map(|k| (k.as_bytes().to_vec(), 20)).collect(),
            origins: vec![("eu-hamburg".into(), writes as u64)],
            ..LiveLoad::default()
        }
    }

    #[test]
    fn a_learner_is_framed_apart_from_the_voters_and_carries_its_share_of_the_writes() {
        let mut learned = shard(3, b"", b"", 1, hot_load(10.0, &["x"]));
        // Node 3 (Sydney, the recovery region) holds a learner; node 1 leads.
        learned.descriptor.replicas[2].role = ReplicaRole::Learner;
        learned.leader = Some(1);
        let frame = frame(&[learned], &nodes(), &|_| (0, None));
        let framed = &frame.shards[0];
        assert_eq!(
            (framed.replicas.clone(), framed.learners.clone()),
            (vec![0, 1], vec![2])
        );
        assert!((frame.node_load[2] - 5.0 / NODE_CAPACITY).abs() < 1e-12);
    }

    #[test]
    fn the_frame_keeps_key_order_and_maps_decisions_back() {
        let shards = [
            shard(1, b"", b"k", 1, hot_load(10.0, &["c", "f"])),
            LiveShard {
                pinned: true,
                ..shard(2, b"k", b"p", 1, LiveLoad::default())
            },
            shard(3, b"p", b"", 1, hot_load(10.0, &["x"])),
        ];
        let frame = frame(&shards, &nodes(), &|_| (0, None));
        assert_eq!(frame.shards.len(), 2, "the pinned shard is left out");
        let first = &frame.shards[0];
        assert_eq!(first.start, 0);
        let sampled: Vec<u64> = frame.stats[0].sampled.iter().map(|s| s.0).collect();
        assert!(first.start < sampled[0] && sampled[0] < sampled[1] && sampled[1] < first.end);
        assert_eq!(frame.shards[1].end, KEY_SPACE);
        // Regions by name: node 3 (eu-hamburg) is region 2; its requests came from there.
        assert_eq!(frame.nodes[2].region, 2);
        assert_eq!(frame.stats[0].origins, vec![0.0, 0.0, 10.0]);
        // Node 2 leads shard 1 (its 10 writes count whole) and follows shard 3 (its 10
        // writes count half).
        assert!((frame.node_load[1] - 15.0 / NODE_CAPACITY).abs() < 1e-12);

        let split = Action::Split {
            shard: 0,
            at: sampled[1],
        };
        assert_eq!(
            frame.live(&split),
            Some(LiveAction::Split {
                shard: 1,
                at: b"f".to_vec()
            })
        );
        // A position that is no real key: the shard's size-middle key.
        let middle = Action::Split {
            shard: 0,
            at: sampled[0] + 1,
        };
        assert_eq!(
            frame.live(&middle),
            Some(LiveAction::Split {
                shard: 1,
                at: b"middle".to_vec()
            })
        );
        // Shards 1 and 3 are not neighbours: shard 2 lies between them.
        assert_eq!(frame.live(&Action::Merge { shard: 0 }), None);
        assert_eq!(
            frame.live(&Action::TransferLeader { shard: 1, to: 2 }),
            Some(LiveAction::TransferLeader { shard: 3, to: 3 })
        );
        let swap = Action::SwapRoles {
            shard: 1,
            promote: 2,
            demote: 1,
        };
        assert_eq!(
            frame.live(&swap),
            Some(LiveAction::SwapRoles {
                shard: 3,
                promote: 3,
                demote: 2
            })
        );
    }

    #[test]
    fn the_window_averages_and_remembers_changes() {
        let mut window = Window::default();
        let at = |writes: f64| [shard(1, b"", b"k", 1, hot_load(writes, &["c"]))];
        window.observe(&at(10.0), 1);
        let averaged = window.observe(&at(30.0), 2);
        assert_eq!(averaged[0].load.writes_per_sec, 20.0);
        assert_eq!(averaged[0].load.sampled_keys, vec![(b"c".to_vec(), 40)]);
        assert_eq!(window.changed(1), (1, None));
        // A merge: a new epoch and a range that reaches further.
        let merged = [shard(1, b"", b"p", 2, hot_load(50.0, &["c"]))];
        let averaged = window.observe(&merged, 3);
        assert_eq!(
            averaged[0].load.writes_per_sec, 50.0,
            "a changed shard starts afresh"
        );
        assert_eq!(window.changed(1), (3, Some(3)));
        // A split: a new epoch, a shorter range.
        window.observe(&[shard(1, b"", b"f", 3, hot_load(5.0, &["c"]))], 9);
        assert_eq!(window.changed(1), (9, Some(3)));
    }

    #[test]
    fn in_heuristic_mode_the_actor_splits_a_hot_shard_by_the_tuned_rule() {
        let table = [
            shard(1, b"", b"m", 1, hot_load(3_000.0, &["a", "c", "e", "g"])),
            shard(2, b"m", b"", 1, hot_load(5.0, &["x"])),
        ];
        // In model mode without a network the size rule stands in: nothing is too big.
        let mut actor = PlannerActor::new(
            Planner::new(None, Mode::Model, Envelope::default()),
            NODE_CAPACITY,
        );
        for _ in 0..LoadSplit::tuned().detect_ticks {
            assert!(actor.observe(&table, &nodes()).is_empty());
        }
        let report = actor.report();
        assert_eq!(report.fallback.as_deref(), Some("no model is loaded"));
        assert_eq!(report.acting, "size-only");
        let planner = Planner::new(None, Mode::Heuristic, Envelope::default());
        let mut actor = PlannerActor::new(planner, NODE_CAPACITY);
        // The tuned rule waits for three hot ticks in a row.
        let tuned = LoadSplit::tuned();
        for _ in 1..tuned.detect_ticks {
            assert!(actor.observe(&table, &nodes()).is_empty());
        }
        let actions = actor.observe(&table, &nodes());
        assert!(
            actions.iter().any(|a| matches!(
                a,
                LiveAction::Split { shard: 1, at } if [b"c".to_vec(), b"e".to_vec()].contains(at)
            )),
            "{actions:?}"
        );
        let report = actor.report();
        assert_eq!(report.fallback, None);
        assert_eq!(report.acting, "cockroach-tuned");
        assert!(
            report
                .decisions
                .iter()
                .any(|d| d.action.starts_with("split shard 1 at"))
        );
        assert!(
            report
                .decisions
                .iter()
                .all(|d| d.features.len() == crate::net::FEATURES)
        );
    }

    #[test]
    fn load_is_judged_against_the_nodes_capacity() {
        let table = [shard(
            1,
            b"",
            b"",
            1,
            hot_load(300.0, &["a", "c", "e", "g"]),
        )];
        let splits = |capacity: f64| {
            let planner = Planner::new(None, Mode::Heuristic, Envelope::default());
            let mut actor = PlannerActor::new(planner, capacity);
            // The tuned rule waits for 10 hot rounds in a row.
            (0..15).any(|_| !actor.observe(&table, &nodes()).is_empty())
        };
        assert!(!splits(NODE_CAPACITY), "300 of 4,000 per second is not hot");
        assert!(splits(400.0), "300 of 400 per second is");
    }

    #[test]
    fn in_shadow_mode_the_actor_decides_but_nothing_is_carried_out() {
        let mut actor = PlannerActor::new(
            Planner::new(None, Mode::Shadow, Envelope::default()),
            NODE_CAPACITY,
        );
        let table = [shard(
            1,
            b"",
            b"",
            1,
            hot_load(3_000.0, &["a", "c", "e", "g"]),
        )];
        for _ in 0..LoadSplit::tuned().detect_ticks {
            assert!(actor.observe(&table, &nodes()).is_empty());
        }
        let report = actor.report();
        assert_eq!(report.mode, Mode::Shadow);
        assert!(
            !report.decisions.is_empty(),
            "what the heuristic would do is kept"
        );
    }
}
