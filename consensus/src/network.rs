//! The Raft network of a group whose only voter is this process (embedded mode). openraft
//! never sends to a single voter's peers; should anything try, it gets `Unreachable`.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::{ReplicaNode, TypeConfig};

/// A network that can tell a peer to start an election for its shard now (Raft's
/// `TimeoutNow`): the last step of handing leadership over.
pub trait Campaigner {
    fn timeout_now(
        &self,
        target: u64,
        at: &ReplicaNode,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// Network factory for single-voter groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleVoterNetwork;

/// The connection to a peer a single-voter group cannot have.
#[derive(Debug, Clone, Copy)]
pub struct NoPeer {
    target: u64,
}

impl NoPeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, ReplicaNode, E> {
        let reason = std::io::Error::other(format!(
            "node {} is not reachable: this group runs embedded, without a network",
            self.target
        ));
        RPCError::Unreachable(Unreachable::new(&reason))
    }
}

impl RaftNetworkFactory<TypeConfig> for SingleVoterNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: u64, _node: &ReplicaNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
