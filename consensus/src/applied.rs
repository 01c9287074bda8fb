//! Each shard's applied index on this node, for an entry that may apply only once another
//! replica here has applied through a point (a merge's target waits for its source).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hanse_shard::ShardId;
use tokio::sync::watch;

/// Shared by the groups of one node (the node's [`crate::GroupOptions`] carry one).
#[derive(Clone, Default)]
pub struct AppliedIndexes {
    shards: Arc<Mutex<HashMap<ShardId, watch::Sender<u64>>>>,
}

impl std::fmt::Debug for AppliedIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedIndexes").finish_non_exhaustive()
    }
}

impl AppliedIndexes {
    fn sender(&self, shard: ShardId) -> watch::Sender<u64> {
        let mut shards = self.shards.lock().expect("applied indexes lock");
        shards
            .entry(shard)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Records that `shard`'s replica here applied through `index`.
    pub(crate) fn publish(&self, shard: ShardId, index: u64) {
        self.sender(shard).send_if_modified(|applied| {
            let grew = index > *applied;
            if grew {
                *applied = index;
            }
            grew
        });
    }

    /// Follows `shard`'s applied index here from now on.
    pub(crate) fn watch(&self, shard: ShardId) -> watch::Receiver<u64> {
        self.sender(shard).subscribe()
    }
}
