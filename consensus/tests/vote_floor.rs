//! The vote floor of an empty replica its leader added (see `hanse_consensus::AddedBy`).

use std::sync::Arc;

use hanse_consensus::{AddedBy, store_placeholder};
use hanse_shard::ShardDescriptor;
use hanse_storage::Store;
use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Vote};

/// A node that missed its shard's replica changes may still count an empty replica
/// re-added in its place among the voters: the empty replica must not vote for a log
/// that ends before the one of the leader that added it.
#[tokio::test]
async fn an_empty_replica_votes_for_no_log_older_than_its_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(hanse_storage::MemStore::new(dir.path()));
    let replicas = (1..=3)
        .map(|node| hanse_shard::ReplicaDescriptor {
            node,
            region: "r".into(),
            role: hanse_shard::ReplicaRole::Voter,
        })
        .collect();
    let descriptor = ShardDescriptor::whole_keyspace(1, replicas);
    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
    let added_by = AddedBy {
        term: 3,
        node: 1,
        last_log: Some(log_id(3, 40)),
    };
    store_placeholder(store.as_ref(), &descriptor, Some(added_by)).unwrap();
    let options = hanse_consensus::GroupOptions {
        node_id: 3,
        ..Default::default()
    };
    let group =
        hanse_consensus::ShardGroup::start(1, store, &options, hanse_consensus::SingleVoterNetwork)
            .await
            .unwrap();
    // Long after the leader that added it was last heard of (its lease is over).
    tokio::time::sleep(2 * options.election_timeout_max).await;
    let stale = VoteRequest::new(Vote::new(4, 2), Some(log_id(2, 90)));
    assert!(!group.vote(stale).await.unwrap().vote_granted);
    let current = VoteRequest::new(Vote::new(5, 2), Some(log_id(3, 40)));
    assert!(group.vote(current).await.unwrap().vote_granted);
    group.shutdown().await;
}
