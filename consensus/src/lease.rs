//! Leader leases: a leader serves a linearizable read from its applied state, without a
//! round to a quorum, while no other leader can exist.
//!
//! Why that holds: an openraft follower refuses every vote request for `leader_lease`
//! (the longest election timeout) after it last accepted its leader's append or
//! heartbeat, and does not campaign itself before then. So once a quorum accepted
//! requests the leader *sent* at or after time `t`, no other leader can be elected before
//! `t + leader_lease` on the followers' clocks. The leader counts its lease from `t` on
//! its own monotonic clock, for [`LEASE_FRACTION`] of that time: the margin covers clocks
//! that run at different rates. A leader that was paused (SIGSTOP, a long GC-like stall)
//! wakes with its monotonic clock past the lease and asks a quorum again.
//!
//! [`LeaseClock`] keeps, per follower, the sending time of the newest request it accepted
//! under the leader's current vote; [`Leased`] wraps a group's network to record them.
//! A replica that restarts refuses to vote for a lease's time (see
//! [`crate::ShardGroup::vote`]): its memory of the leader it followed is gone, and
//! without the refusal it could help elect a new leader inside the old one's lease.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Membership, Vote};
use std::sync::Arc;
use tokio::time::Instant;

use crate::knobs::LEASE_FRACTION;
use crate::{ReplicaNode, TypeConfig};
use hanse_shard::NodeId;

/// What the followers of one group acknowledged of this replica's leadership.
#[derive(Debug)]
pub struct LeaseClock {
    length: Duration,
    acks: Mutex<Acks>,
}

#[derive(Debug, Default)]
struct Acks {
    /// The vote (term and leader) the sending times are for.
    vote: Option<Vote<NodeId>>,
    /// Per follower, when the newest request it accepted under `vote` was sent.
    sent: BTreeMap<NodeId, Instant>,
    /// Requests sent before this count for nothing (the lease was given up).
    not_before: Option<Instant>,
}

impl LeaseClock {
    /// A clock for leases of [`LEASE_FRACTION`] of `leader_lease`, the time followers
    /// refuse votes after hearing from their leader.
    pub fn new(leader_lease: Duration) -> LeaseClock {
        LeaseClock {
            length: leader_lease.mul_f64(LEASE_FRACTION),
            acks: Mutex::default(),
        }
    }

    /// Follower `node` accepted a request of the leader with `vote`, sent at `sent`.
    pub fn acked(&self, node: NodeId, vote: &Vote<NodeId>, sent: Instant) {
        let mut acks = self.acks.lock().expect("lease lock");
        if acks.not_before.is_some_and(|floor| sent <= floor) {
            return;
        }
        // Only a newer vote replaces the one the times are for (votes are partly ordered).
        match acks.vote.as_ref().map(|current| vote.partial_cmp(current)) {
            Some(Some(std::cmp::Ordering::Equal)) => {}
            None | Some(Some(std::cmp::Ordering::Greater)) => {
                acks.vote = Some(*vote);
                acks.sent.clear();
            }
            Some(_) => return,
        }
        let newest = acks.sent.entry(node).or_insert(sent);
        *newest = (*newest).max(sent);
    }

    /// Gives the lease up: only requests sent from now on count (before a leadership
    /// transfer lets another node campaign).
    pub fn end(&self) {
        let mut acks = self.acks.lock().expect("lease lock");
        acks.sent.clear();
        acks.not_before = Some(Instant::now());
    }

    /// Whether replica `me`, leading with `vote` in `membership`, holds the lease at
    /// `now`: in every configuration of the membership (two in a joint one), a majority
    /// of the voters (`me` among them, at `now`) accepted requests sent less than the
    /// lease's length ago.
    pub fn holds(
        &self,
        me: NodeId,
        vote: &Vote<NodeId>,
        membership: &Membership<NodeId, ReplicaNode>,
        now: Instant,
    ) -> bool {
        let acks = self.acks.lock().expect("lease lock");
        let mine = acks.vote.as_ref() == Some(vote);
        membership.get_joint_config().iter().all(|voters| {
            let mut sent: Vec<Instant> = voters
                .iter()
                .filter_map(|voter| match *voter == me {
                    true => Some(now),
                    false => mine.then(|| acks.sent.get(voter).copied()).flatten(),
                })
                .collect();
            let majority = voters.len() / 2 + 1;
            if sent.len() < majority {
                return false;
            }
            sent.sort_unstable_by(|a, b| b.cmp(a));
            now < sent[majority - 1] + self.length
        })
    }
}

/// A group's network, recording in its [`LeaseClock`] which followers accepted which
/// appends (heartbeats included) and when they were sent.
pub struct Leased<N> {
    inner: N,
    lease: Arc<LeaseClock>,
}

impl<N> Leased<N> {
    pub fn new(inner: N, lease: Arc<LeaseClock>) -> Leased<N> {
        Leased { inner, lease }
    }
}

impl<N: RaftNetworkFactory<TypeConfig>> RaftNetworkFactory<TypeConfig> for Leased<N> {
    type Network = Leased<(NodeId, N::Network)>;

    async fn new_client(&mut self, target: NodeId, node: &ReplicaNode) -> Self::Network {
        let client = self.inner.new_client(target, node).await;
        Leased {
            inner: (target, client),
            lease: self.lease.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ReplicaNode, RaftError<NodeId, E>>>;

impl<P: RaftNetwork<TypeConfig>> RaftNetwork<TypeConfig> for Leased<(NodeId, P)> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let (target, peer) = &mut self.inner;
        let vote = rpc.vote;
        let sent = Instant::now();
        let response = peer.append_entries(rpc, option).await;
        // Any answer but a newer vote means the follower took this leader's word.
        if let Ok(answer) = &response
            && !matches!(answer, AppendEntriesResponse::HigherVote(_))
            && vote.is_committed()
        {
            self.lease.acked(*target, &vote, sent);
        }
        response
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, openraft::error::InstallSnapshotError> {
        self.inner.1.install_snapshot(rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.inner.1.vote(rpc, option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn membership(voters: &[NodeId]) -> Membership<NodeId, ReplicaNode> {
        let nodes: BTreeMap<NodeId, ReplicaNode> = voters
            .iter()
            .map(|&id| (id, ReplicaNode::default()))
            .collect();
        Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
    }

    fn leading(term: u64) -> Vote<NodeId> {
        let mut vote = Vote::new(term, 1);
        vote.commit();
        vote
    }

    #[tokio::test(start_paused = true)]
    async fn a_quorum_of_recent_acks_holds_the_lease_for_its_length_and_no_longer() {
        let clock = LeaseClock::new(Duration::from_millis(1000));
        let three = membership(&[1, 2, 3]);
        let start = Instant::now();
        let vote = leading(5);
        assert!(
            !clock.holds(1, &vote, &three, start),
            "no follower has answered"
        );
        clock.acked(2, &vote, start);
        assert!(clock.holds(1, &vote, &three, start + Duration::from_millis(799)));
        assert!(!clock.holds(1, &vote, &three, start + Duration::from_millis(800)));
        // An older request's answer arriving late does not move the lease back.
        clock.acked(2, &vote, start - Duration::from_millis(500));
        assert!(clock.holds(1, &vote, &three, start + Duration::from_millis(700)));
        // A five-voter group needs two followers: the older of the two newest counts.
        let five = membership(&[1, 2, 3, 4, 5]);
        assert!(!clock.holds(1, &vote, &five, start));
        clock.acked(4, &vote, start + Duration::from_millis(300));
        assert!(clock.holds(1, &vote, &five, start + Duration::from_millis(799)));
        assert!(!clock.holds(1, &vote, &five, start + Duration::from_millis(800)));
    }

    #[tokio::test(start_paused = true)]
    async fn acks_of_another_term_count_for_nothing_and_ending_the_lease_forgets_them() {
        let clock = LeaseClock::new(Duration::from_millis(1000));
        let three = membership(&[1, 2, 3]);
        let now = Instant::now();
        clock.acked(2, &leading(5), now);
        assert!(!clock.holds(1, &leading(6), &three, now));
        // A newer term's acks replace the older ones; an older term's are ignored.
        clock.acked(3, &leading(6), now);
        clock.acked(2, &leading(5), now);
        assert!(clock.holds(1, &leading(6), &three, now));
        assert!(!clock.holds(1, &leading(5), &three, now));
        clock.end();
        assert!(!clock.holds(1, &leading(6), &three, now));
        // Requests sent before the end stay worthless; later ones count again.
        clock.acked(3, &leading(6), now);
        assert!(!clock.holds(1, &leading(6), &three, now));
        tokio::time::advance(Duration::from_millis(10)).await;
        let later = Instant::now();
        clock.acked(3, &leading(6), later);
        assert!(clock.holds(1, &leading(6), &three, later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_voter_always_holds_it_and_a_joint_configuration_needs_both_halves() {
        let clock = LeaseClock::new(Duration::from_millis(1000));
        let now = Instant::now();
        assert!(clock.holds(1, &leading(2), &membership(&[1]), now));
        let nodes: BTreeMap<NodeId, ReplicaNode> =
            (1..=4).map(|id| (id, ReplicaNode::default())).collect();
        let joint = Membership::new(
            vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 3, 4])],
            nodes,
        );
        clock.acked(2, &leading(2), now);
        assert!(!clock.holds(1, &leading(2), &joint, now));
        clock.acked(4, &leading(2), now);
        assert!(clock.holds(1, &leading(2), &joint, now));
    }
}
