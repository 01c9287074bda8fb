//! A write whose entry a new leader's log replaced is answered "outcome unknown", never
//! "not leader": with five voters, a replica that received the entry before the old
//! leader lost its post can still win an election and commit it (the old leader A
//! replicates entry e to B only; C wins with D and E and replaces e on A, then fails
//! before D and E see its entry; B, whose log ends with e, wins with D and E and commits
//! e). A client that retried after "not leader" would apply the write twice.
//!
//! Node 1 here leads a five-voter group whose peers grant its votes and never answer
//! its appends, so its write stays uncommitted; then a leader of a later term replaces
//! the entry, as C does above.

use std::sync::Arc;
use std::time::Duration;

use hanse_consensus::{GroupOptions, ProposeError, ReplicaNode, ShardGroup, TypeConfig};
use hanse_shard::{Epoch, Mutation, ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardRequest};
use hanse_storage::{Batch, MemStore, Store};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

/// Peers that vote for whoever asks and are unreachable for everything else.
#[derive(Clone, Copy)]
struct VotesOnly;

fn unreachable<E: std::error::Error>() -> RPCError<u64, ReplicaNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no appends here")))
}

impl RaftNetworkFactory<TypeConfig> for VotesOnly {
    type Network = VotesOnly;

    async fn new_client(&mut self, _target: u64, _node: &ReplicaNode) -> VotesOnly {
        VotesOnly
    }
}

impl RaftNetwork<TypeConfig> for VotesOnly {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        Ok(VoteResponse::new(rpc.vote, None, true))
    }
}

#[tokio::test]
async fn a_write_a_new_leader_replaced_is_unknown_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new(dir.path()));
    let replicas: Vec<ReplicaDescriptor> = (1..=5)
        .map(|node| ReplicaDescriptor {
            node,
            region: "r".into(),
            role: ReplicaRole::Voter,
        })
        .collect();
    let descriptor = ShardDescriptor::whole_keyspace(1, replicas);
    let mut batch = Batch::default();
    batch.put_descriptor(&descriptor);
    store.write(batch, true).unwrap();
    let options = GroupOptions {
        node_id: 1,
        ..Default::default()
    };
    let group = ShardGroup::start(1, store, &options, VotesOnly)
        .await
        .unwrap();
    let members = (1..=5)
        .map(|node| {
            let member = ReplicaNode {
                addr: format!("127.0.0.{node}:1"),
                region: "r".into(),
            };
            (node, member)
        })
        .collect();
    group.initialize(members).await.unwrap();
    group.raft.trigger().elect().await.unwrap();
    group
        .raft
        .wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "node 1 leads")
        .await
        .unwrap();

    let write = ShardRequest::Write {
        epoch: Epoch::default(),
        mutations: vec![Mutation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }],
    };
    let writer = group.clone();
    let answer = tokio::spawn(async move { writer.propose(write).await });
    let metrics = group.raft.metrics();
    metrics
        .clone()
        .wait_for(|m| m.last_log_index >= Some(2))
        .await
        .unwrap();
    let (term, base) = {
        let m = metrics.borrow();
        (m.current_term, *m.membership_config.log_id())
    };

    // Node 2 leads a later term and its log holds a different entry after the
    // membership: node 1 must drop its own entries there, the write among them.
    let replacing = Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(term + 1, 2), 1),
        payload: EntryPayload::Blank,
    };
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, 2),
        prev_log_id: base,
        entries: vec![replacing],
        leader_commit: None,
    };
    assert!(
        group
            .raft
            .append_entries(append)
            .await
            .unwrap()
            .is_success()
    );

    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the write is answered")
        .unwrap();
    assert!(
        matches!(answer, Err(ProposeError::OutcomeUnknown { .. })),
        "{answer:?}"
    );
    // A node that knows it does not lead refuses before anything enters its log, and
    // keeps proposing (and refusing) after it did.
    for _ in 0..2 {
        let refused = group
            .propose(ShardRequest::Write {
                epoch: Epoch::default(),
                mutations: Vec::new(),
            })
            .await;
        assert!(
            matches!(
                refused,
                Err(ProposeError::NotLeader {
                    leader: Some(2),
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    group.shutdown().await;
}
