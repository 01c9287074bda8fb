//! Which shard groups a node runs follows from the descriptors in its store: applying a
//! split stores the new shard's descriptor, applying a merge deletes the absorbed one's.

use std::collections::BTreeSet;

use crate::descriptor::{ShardDescriptor, ShardId};

/// What a node changes so that it hosts exactly the shards its store holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostingChanges {
    /// Shards stored but not hosted: created by a split applied here.
    pub start: Vec<ShardId>,
    /// Shards hosted but no longer stored: absorbed by a merge applied here. Their data
    /// stays, under the shard that absorbed it.
    pub retire: Vec<ShardId>,
}

/// Compares the hosted shards with the `stored` descriptors.
pub fn hosting_changes(
    hosted: impl IntoIterator<Item = ShardId>,
    stored: &[ShardDescriptor],
) -> HostingChanges {
    let hosted: BTreeSet<ShardId> = hosted.into_iter().collect();
    let stored: BTreeSet<ShardId> = stored.iter().map(|d| d.id).collect();
    HostingChanges {
        start: stored.difference(&hosted).copied().collect(),
        retire: hosted.difference(&stored).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_what_a_split_stored_and_retires_what_a_merge_deleted() {
        let stored = [
            ShardDescriptor::whole_keyspace(1, vec![]),
            ShardDescriptor::whole_keyspace(3, vec![]),
        ];
        let changes = hosting_changes([1, 2], &stored);
        assert_eq!(
            changes,
            HostingChanges {
                start: vec![3],
                retire: vec![2]
            }
        );
        assert_eq!(hosting_changes([1, 3], &stored), HostingChanges::default());
    }
}
