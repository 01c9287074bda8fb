//! The planner's vocabulary: what a policy sees of a cluster (simulated or live) and what
//! it may do. The simulator, the policies, the network and the live planner all speak it,
//! and none of them owns it.

use std::fmt;

use hanse_shard::{NodeId, ReplicaRole, ShardId};

/// Keys of the simulated and the live key space as policies see them: points of
/// `[0, KEY_SPACE)` (the live planner maps real keys onto it in order).
pub const KEY_SPACE: u64 = 1 << 32;

/// Distinct sampled keys a shard reports per tick (the most frequent of its sample).
pub use crate::knobs::SAMPLED_KEYS;

/// A node of the simulated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub region: usize,
    /// Operations it serves per tick at full utilisation.
    pub capacity: f64,
}

/// A shard of the simulated cluster: keys `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub start: u64,
    pub end: u64,
    pub size_bytes: f64,
    /// Node indices of its voters; the leader is one of them.
    pub replicas: Vec<usize>,
    pub leader: usize,
    /// Node indices of its learners: they receive its writes and may serve reads within
    /// a staleness bound, but never vote or lead.
    pub learners: Vec<usize>,
    /// The tick of its last split or merge.
    pub changed_at: u64,
    /// The tick of its last merge, if any.
    pub merged_at: Option<u64>,
}

impl Shard {
    /// Its voters were the learner on `promote` to vote in place of the voter on `demote`.
    pub fn voters_swapped(&self, promote: usize, demote: usize) -> Vec<usize> {
        self.replicas
            .iter()
            .map(|&v| if v == demote { promote } else { v })
            .collect()
    }
}

/// A shard's load over the last tick, as its leader would report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    pub reads: f64,
    pub writes: f64,
    pub scans: f64,
    pub bytes_written: f64,
    /// Accessed keys with their counts, at most [`SAMPLED_KEYS`], for split points.
    pub sampled: Vec<(u64, u64)>,
    /// Requests whose range crossed each sampled key, aligned with `sampled`.
    pub crossing: Vec<u64>,
    /// Requests per origin region.
    pub origins: Vec<f64>,
}

impl ShardStats {
    pub fn ops(&self) -> f64 {
        self.reads + self.writes + self.scans
    }
}

/// What a policy may do. Policies in the simulator name shards and nodes by their index
/// in the [`View`] and split keys by their point in [`KEY_SPACE`]; on a real cluster the
/// same actions name ids and real keys ([`ClusterAction`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Action<S = usize, N = usize, K = u64> {
    /// Split `shard` at `at`.
    Split {
        shard: S,
        at: K,
    },
    /// Merge `shard` with its right neighbour (they need the same replicas).
    Merge {
        shard: S,
    },
    TransferLeader {
        shard: S,
        to: N,
    },
    /// Move the replica on node `from` to node `to` (not yet a replica): add it, then
    /// remove the old one.
    MoveReplica {
        shard: S,
        from: N,
        to: N,
    },
    /// Add a replica on `node` (a step toward a merge partner's replica set).
    AddReplica {
        shard: S,
        node: N,
        role: ReplicaRole,
    },
    /// Remove the replica on `node`.
    RemoveReplica {
        shard: S,
        node: N,
    },
    /// The learner on `promote` becomes a voter and the voter on `demote` (not the
    /// leader) a learner: the same replicas, the write quorum among other regions.
    SwapRoles {
        shard: S,
        promote: N,
        demote: N,
    },
}

/// An action on a real cluster: shards and nodes by id, split keys as bytes.
pub type ClusterAction = Action<ShardId, NodeId, Vec<u8>>;

impl<S: Copy, N, K> Action<S, N, K> {
    /// The shard the action changes.
    pub fn shard(&self) -> S {
        match self {
            Action::Split { shard, .. }
            | Action::Merge { shard }
            | Action::TransferLeader { shard, .. }
            | Action::MoveReplica { shard, .. }
            | Action::AddReplica { shard, .. }
            | Action::RemoveReplica { shard, .. }
            | Action::SwapRoles { shard, .. } => *shard,
        }
    }
}

impl fmt::Display for ClusterAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Split { shard, at } => {
                write!(
                    f,
                    "split shard {shard} at {:?}",
                    String::from_utf8_lossy(at)
                )
            }
            Action::Merge { shard } => write!(f, "merge shard {shard} with its right neighbour"),
            Action::TransferLeader { shard, to } => {
                write!(f, "move shard {shard}'s leader to node {to}")
            }
            Action::MoveReplica { shard, from, to } => {
                write!(
                    f,
                    "move shard {shard}'s replica from node {from} to node {to}"
                )
            }
            Action::AddReplica { shard, node, role } => {
                write!(f, "add a {role:?} replica of shard {shard} on node {node}")
            }
            Action::RemoveReplica { shard, node } => {
                write!(f, "remove shard {shard}'s replica on node {node}")
            }
            Action::SwapRoles {
                shard,
                promote,
                demote,
            } => write!(
                f,
                "make shard {shard}'s learner on node {promote} a voter and its voter on node {demote} a learner"
            ),
        }
    }
}

/// What a policy sees each tick.
pub struct View<'a> {
    pub tick: u64,
    pub nodes: &'a [Node],
    pub shards: &'a [Shard],
    /// Aligned with `shards`.
    pub stats: &'a [ShardStats],
    /// Each node's utilisation over the last tick (load / capacity).
    pub node_load: &'a [f64],
    /// One-way latency in ms between regions (`[from][to]`).
    pub region_latency_ms: &'a [Vec<f64>],
}

/// A planner policy under simulation.
pub trait Policy {
    fn name(&self) -> String;
    fn decide(&mut self, view: &View) -> Vec<Action>;
}

/// A closure as a policy (for tests that watch or steer a run tick by tick).
#[cfg(test)]
pub(crate) struct FnPolicy<'a>(pub &'a mut dyn FnMut(&View) -> Vec<Action>);

#[cfg(test)]
impl Policy for FnPolicy<'_> {
    fn name(&self) -> String {
        "closure".into()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        (self.0)(view)
    }
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        (**self).decide(view)
    }
}
