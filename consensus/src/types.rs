//! The openraft type configuration: entries carry [`Proposal`]s of shard commands
//! (`hanse-shard`), answered with one [`ShardResponse`] per command.

use hanse_shard::{Proposal, ReplicaDescriptor, ReplicaRole, ShardResponse};
use openraft::Membership;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Raft types of every shard group.
    pub TypeConfig:
        D = Proposal,
        R = Vec<ShardResponse>,
        NodeId = u64,
        Node = ReplicaNode,
        SnapshotData = crate::SnapshotFile,
);

/// Where a Raft member lives; carried in the group's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    /// The node's advertised gRPC address (empty in embedded mode).
    pub addr: String,
    pub region: String,
}

/// The replica set a group membership describes: every voter (of either configuration
/// while a change is in progress) and every learner, with the region its node reported.
pub fn replicas_of(membership: &Membership<u64, ReplicaNode>) -> Vec<ReplicaDescriptor> {
    let voters: Vec<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(&node, replica)| ReplicaDescriptor {
            node,
            region: replica.region.clone(),
            role: if voters.contains(&node) {
                ReplicaRole::Voter
            } else {
                ReplicaRole::Learner
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_follow_voters_and_learners_of_the_membership() {
        let node = |region: &str| ReplicaNode {
            addr: String::new(),
            region: region.into(),
        };
        let nodes =
            std::collections::BTreeMap::from([(1, node("eu")), (2, node("ap")), (3, node("au"))]);
        let voters = std::collections::BTreeSet::from([1, 2]);
        let membership = Membership::new(vec![voters], nodes);
        let replicas = replicas_of(&membership);
        let roles: Vec<_> = replicas
            .iter()
            .map(|r| (r.node, r.region.as_str(), r.role))
            .collect();
        assert_eq!(
            roles,
            [
                (1, "eu", ReplicaRole::Voter),
                (2, "ap", ReplicaRole::Voter),
                (3, "au", ReplicaRole::Learner)
            ]
        );
    }
}
