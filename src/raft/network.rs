//! The network to other Raft nodes.
//!
//! A single-node cluster never sends an RPC: openraft replicates only to
//! other members. [`NoPeers`] is the network factory for that case; every
//! call reports the target unreachable, which is the truth for a node that
//! has no transport configured. The gRPC transport for multi-node clusters
//! replaces it.

use std::future::Future;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::OptionalSend;

use super::state_machine::SnapshotData;
use super::{NodeId, NodeInfo, Snapshot, TypeConfig, Vote};

/// Network factory for a node without peers.
#[derive(Clone, Default)]
pub struct NoPeers;

/// Client to a peer that cannot be reached.
pub struct Unconnected {
    target: NodeId,
}

impl Unconnected {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&std::io::Error::other(format!(
            "node {} has no transport to peer {}",
            "self", self.target
        )))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = Unconnected;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Self::Network {
        Unconnected { target }
    }
}

impl RaftNetworkV2<TypeConfig> for Unconnected {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
