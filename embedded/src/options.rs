use std::time::Duration;

use hanse_consensus::GroupOptions;
use hanse_shard::limits::Limits;

/// How an embedded [`crate::Db`] stores and checks data. `Options::default()` is what a
/// durable store wants; each field says why its default is what it is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sync the log to disk before a write returns (default: true). Off, an acknowledged
    /// write survives a crash of the process but may be lost if the machine loses power.
    pub sync: bool,
    /// Longest accepted key (default 4 KiB): keys are copied into routing tables and split
    /// commands, so they stay small.
    pub max_key_bytes: usize,
    /// Longest accepted value (default 16 MiB): a value travels in one Raft entry.
    pub max_value_bytes: usize,
    /// The region this embedded node says it is in, recorded in shard descriptors.
    pub region: String,
    /// How long `open` and `split_shard` wait for a shard's group to elect its leader.
    pub leader_wait: Duration,
    /// Raft tuning of every shard group.
    pub raft: GroupOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: true,
            max_key_bytes: hanse_shard::knobs::KEY_BYTES_MAX,
            max_value_bytes: hanse_shard::knobs::VALUE_BYTES_MAX,
            region: "local".to_string(),
            leader_wait: Duration::from_secs(10),
            raft: GroupOptions::default(),
        }
    }
}

impl Options {
    /// The key and value limits these options set.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            key_bytes_max: self.max_key_bytes,
            value_bytes_max: self.max_value_bytes,
        }
    }
}
