//! The commands a shard's Raft log carries and what applying them answers.

use serde::{Deserialize, Serialize};

use crate::descriptor::{Epoch, MergeError, ShardDescriptor, ShardId, SplitError};
use crate::meta::{NodeRecord, ShardRecord};

/// One change to one user key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    Put {
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// One key and its value in an [`ShardRequest::Ingest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
}

/// One Raft entry: requests that arrived together, applied in order and each on its own
/// (one refused request does not stop the others). Carrying many requests in one entry
/// is what makes concurrent writers cheap: openraft's cost is per entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<ShardRequest>,
}

impl Proposal {
    /// About how many bytes the proposal takes: the keys and values it carries, plus a
    /// little per request.
    pub fn approximate_bytes(&self) -> usize {
        self.requests
            .iter()
            .map(ShardRequest::approximate_bytes)
            .sum()
    }
}

impl ShardRequest {
    /// About how many bytes the request takes in a log entry: the keys and values it
    /// carries, plus a little.
    pub fn approximate_bytes(&self) -> usize {
        let mutation = |m: &Mutation| match m {
            Mutation::Put { key, value } => key.len() + value.len() + 4,
            Mutation::Delete { key } => key.len() + 2,
        };
        let value = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        16 + match self {
            ShardRequest::Write { mutations, .. } => mutations.iter().map(mutation).sum(),
            ShardRequest::CompareAndSwap {
                key, expected, new, ..
            } => key.len() + value(expected) + value(new),
            ShardRequest::Ingest { pairs, .. } => pairs
                .iter()
                .map(|pair| pair.key.len() + pair.value.len() + 4)
                .sum(),
            _ => 256,
        }
    }
}

/// A command proposed to a shard's group. Data commands carry the epoch they were routed
/// with; it is checked again when the command is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Applies every mutation or none.
    Write {
        epoch: Epoch,
        mutations: Vec<Mutation>,
    },
    /// Puts every pair, as one file of sorted keys that each replica builds and ingests
    /// into its store: the bulk path. The keys are strictly ascending; a request that is
    /// not changes nothing. Always an entry of its own (see the proposer).
    Ingest { epoch: Epoch, pairs: Vec<KeyValue> },
    /// Sets `key` to `new` (`None` deletes it) only if its value is `expected` (`None`:
    /// absent).
    CompareAndSwap {
        epoch: Epoch,
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        #[serde(with = "crate::bytes::option")]
        expected: Option<Vec<u8>>,
        #[serde(with = "crate::bytes::option")]
        new: Option<Vec<u8>>,
    },
    /// Splits the shard at `at`: it keeps `[start, at)`, and shard `new_shard_id` takes
    /// `[at, end)` with the same members.
    Split {
        #[serde(with = "crate::bytes")]
        at: Vec<u8>,
        new_shard_id: ShardId,
        expected_epoch: Epoch,
    },
    /// Freezes this shard (the right neighbour of `into`) for a merge into `into`: no
    /// writes or splits until the merge commits or rolls back.
    PrepareMerge {
        into: ShardDescriptor,
        expected_epoch: Epoch,
    },
    /// Extends this shard over `source`, its right neighbour frozen for the merge. Applied
    /// on a replica only once the same node's replica of `source` has applied up to the
    /// PrepareMerge: the data it takes over is then complete on that node.
    CommitMerge {
        source: ShardDescriptor,
        expected_epoch: Epoch,
    },
    /// Moves this shard (the left one) one version on, so the CommitMerge of `source`,
    /// frozen for a merge into it, can never apply; answers this shard's descriptor, which
    /// covers `source` when the merge committed first. Proposed before a RollbackMerge.
    FenceMerge { source: ShardDescriptor },
    /// Unfreezes this shard after a merge into `into` that did not commit. Proposed only
    /// once a FenceMerge in `into` answered without the range of this shard.
    RollbackMerge { into: ShardId },
    /// Records shards and nodes in the meta shard's routing table and node directory;
    /// a shard record older than what the table holds for its range is dropped.
    Report {
        shards: Vec<ShardRecord>,
        nodes: Vec<NodeRecord>,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// The command took effect (also the answer to blank and membership entries).
    Applied,
    /// The outcome of a compare-and-swap and the value the key had before it.
    CompareAndSwap {
        swapped: bool,
        #[serde(with = "crate::bytes::option")]
        previous: Option<Vec<u8>>,
    },
    /// The split took effect: the shrunk parent and the new shard.
    Split {
        left: ShardDescriptor,
        right: ShardDescriptor,
    },
    /// A merge step took effect; the shard's descriptor after it.
    Merge(ShardDescriptor),
    /// The command was refused when applied and changed nothing.
    Rejected(Rejection),
}

/// Why an applied command changed nothing. Each carries what the proposer needs to
/// re-route at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("epoch mismatch: shard {} is now at {:?}", current.id, current.epoch)]
    EpochMismatch { current: ShardDescriptor },
    #[error("key is not in shard {} (range changed)", current.id)]
    KeyNotInShard {
        key: Vec<u8>,
        current: ShardDescriptor,
    },
    #[error("split refused: {0}")]
    Split(SplitError),
    #[error("merge step refused: {0}")]
    Merge(MergeError),
    #[error("shard {} is frozen for a merge into shard {}", current.id, current.merging.map_or(0, |m| m.into))]
    Frozen { current: ShardDescriptor },
    #[error("ingested keys must be strictly ascending; key {at} is not above the one before")]
    IngestOrder { at: usize },
    #[error("only the meta shard keeps reports; shard {shard} is not it")]
    NotMetaShard { shard: ShardId },
}
