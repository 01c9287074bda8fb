//! The empty replica a node hosts before its shard's leader fills it (which groups a node
//! runs otherwise follows from its stored descriptors: see `hanse_shard::hosting`).

use hanse_shard::{NodeId, ShardDescriptor, ShardId};
use hanse_storage::codec::{self, StateKey};
use hanse_storage::{Batch, Cf, Store};
use openraft::{LogId, Vote};

/// Why a node does not host an empty replica for a leader to fill.
#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    #[error(
        "this node still holds shard {local} over part of shard {shard}'s range (a split or \
         merge it has not applied yet); try again once it has caught up"
    )]
    Overlaps { shard: ShardId, local: ShardId },
    #[error(transparent)]
    Storage(#[from] hanse_storage::Error),
}

/// The leader that adds an empty replica to its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedBy {
    pub term: u64,
    pub node: NodeId,
    /// The last entry of that leader's log when it added the replica. The replica has
    /// promised nothing yet, and a node down since before its old replica was removed
    /// may still count this one in the membership it last saw: were the empty replica to
    /// vote for that node's stale log, the two could elect a leader missing committed
    /// entries. So it never votes for a candidate whose log ends before this one.
    pub last_log: Option<LogId<u64>>,
}

/// Stores `descriptor` as the placeholder of a replica about to be added to its shard
/// (its leader's snapshot replaces it), unless one is stored already. Refused while
/// another shard here overlaps its range: that one is a lagging replica whose own log
/// will still split or merge it, and two shards must never serve the same keys here.
///
/// `added_by` is the leader adding it. The empty replica starts out knowing that leader,
/// so it refuses what a deposed leader of an older term still sends (an old snapshot,
/// from before splits whose new shards may be on this node), and it never votes for a
/// candidate whose log ends before that leader's did (see [`AddedBy::last_log`]).
pub fn store_placeholder(
    store: &dyn Store,
    descriptor: &ShardDescriptor,
    added_by: Option<AddedBy>,
) -> Result<(), PlaceholderError> {
    let stored = store.load_descriptors()?;
    if stored.iter().any(|d| d.id == descriptor.id) {
        return Ok(());
    }
    if let Some(local) = stored
        .iter()
        .find(|d| d.overlaps(&descriptor.start, &descriptor.end))
    {
        return Err(PlaceholderError::Overlaps {
            shard: descriptor.id,
            local: local.id,
        });
    }
    let mut batch = Batch::default();
    batch.put_descriptor(descriptor);
    if let Some(leader) = added_by {
        batch.put(
            Cf::RaftState,
            codec::state_key(descriptor.id, StateKey::Vote),
            codec::encode(&Vote::new_committed(leader.term, leader.node)),
        );
        batch.put(
            Cf::RaftState,
            codec::state_key(descriptor.id, StateKey::VoteFloor),
            codec::encode(&leader.last_log),
        );
    }
    store.write(batch, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_never_overlaps_a_shard_already_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = hanse_storage::MemStore::new(dir.path());
        let whole = ShardDescriptor::whole_keyspace(1, vec![]);
        let (left, right) = whole.split(b"m", 2, whole.epoch).unwrap();
        store_placeholder(
            &store,
            &whole,
            Some(AddedBy {
                term: 3,
                node: 1,
                last_log: None,
            }),
        )
        .unwrap();
        let vote = store
            .get(Cf::RaftState, &codec::state_key(1, StateKey::Vote))
            .unwrap()
            .unwrap();
        assert_eq!(
            codec::decode::<Vote<u64>>("vote", &vote).unwrap(),
            Vote::new_committed(3, 1)
        );
        assert!(matches!(
            store_placeholder(&store, &right, None),
            Err(PlaceholderError::Overlaps { shard: 2, local: 1 })
        ));
        // Once the split applied here, the new shard is here already: nothing to do.
        let mut batch = Batch::default();
        batch.put_descriptor(&left);
        batch.put_descriptor(&right);
        store.write(batch, true).unwrap();
        store_placeholder(&store, &right, None).unwrap();
        assert_eq!(store.load_descriptors().unwrap(), [left, right]);
    }
}
