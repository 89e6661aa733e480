//! The client side of openraft's RPCs: the network factory
//! ([`GrpcNetwork`]) and the client to one peer ([`PeerNetwork`]).
//! promraft's own RPCs have their client in [`super::peer`].
//!
//! Every call has a deadline. Unary Raft calls use openraft's soft TTL (3/4
//! of the hard one, so the error is ours, not openraft's abort), plus the
//! transfer time of what they carry ([`rpc_deadline`]): a heartbeat keeps
//! the short deadline, a batch of entries gets time for its bytes. A snapshot
//! stream may take longer than any fixed deadline, so it has an idle one: it
//! fails once no message was accepted by the connection, or no answer came
//! after the last, for the hard TTL (`install_snapshot_timeout`).
//!
//! Failures map to openraft's errors so that openraft backs off from a peer
//! that is down (`Unreachable`) and retries at once after a transient
//! failure (`Network`); see [`Error::is_transient`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::connector::{Connector, TcpConnector};
use super::proto::raft_client::RaftClient;
use super::proto::{self, SnapshotHeader};
use super::snapshot::{self, Progress, ReadFailure, TempFile};
use super::{call_with_deadline, decode, encode, raft_client, request, Error, SNAPSHOT_CHUNK_BYTES, WIRE_FORMAT};
use crate::raft::state_machine::SnapshotData;
use crate::raft::{NodeId, NodeInfo, Snapshot, TypeConfig, Vote};
use crate::tsdb::Db;

/// openraft's network factory over gRPC.
///
/// Holds what the clients need to send snapshots: this node's TSDB (to
/// export its checkpoint) and the directory to spool exports in.
pub struct GrpcNetwork<K: Connector = TcpConnector> {
    id: NodeId,
    db: Arc<Db>,
    spool_dir: PathBuf,
    connector: Arc<K>,
    snapshot_chunk_bytes: usize,
}

impl<K: Connector> Clone for GrpcNetwork<K> {
    fn clone(&self) -> Self {
        GrpcNetwork {
            id: self.id,
            db: self.db.clone(),
            spool_dir: self.spool_dir.clone(),
            connector: self.connector.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
        }
    }
}

impl GrpcNetwork<TcpConnector> {
    /// The network of node `id` over TCP. Creates the snapshot directory in
    /// `data_dir` and removes spool files a previous process left there.
    pub fn new(id: NodeId, db: Arc<Db>, data_dir: &std::path::Path) -> std::io::Result<Self> {
        Self::with_connector(id, db, data_dir, TcpConnector)
    }
}

impl<K: Connector> GrpcNetwork<K> {
    /// The network of node `id` with connections made by `connector`.
    pub fn with_connector(id: NodeId, db: Arc<Db>, data_dir: &std::path::Path, connector: K) -> std::io::Result<Self> {
        let spool_dir = snapshot::snapshot_dir(data_dir)?;
        snapshot::remove_leftovers(&spool_dir, true)?;
        Ok(GrpcNetwork {
            id,
            db,
            spool_dir,
            connector: Arc::new(connector),
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        })
    }

    /// Sets the bytes per snapshot message (tests use small ones to send
    /// many chunks); defaults to [`SNAPSHOT_CHUNK_BYTES`].
    pub fn with_snapshot_chunk_bytes(mut self, bytes: usize) -> Self {
        self.snapshot_chunk_bytes = bytes.clamp(1, SNAPSHOT_CHUNK_BYTES * 8);
        self
    }

    fn client(&self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        let client = self
            .connector
            .channel(&node.raft_addr)
            .map(raft_client)
            .map_err(|e| e.to_string());
        if let Err(e) = &client {
            tracing::warn!(target, addr = %node.raft_addr, error = %e, "cannot create a client for peer");
        }
        PeerNetwork {
            id: self.id,
            target,
            client,
            db: self.db.clone(),
            spool_dir: self.spool_dir.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
        }
    }
}

impl<K: Connector> RaftNetworkFactory<TypeConfig> for GrpcNetwork<K> {
    type Network = PeerNetwork;

    /// Every client has a connection of its own (a lazily connected
    /// channel), so openraft's separate replication, heartbeat and snapshot
    /// clients never share one: megabytes of snapshot data queued on a
    /// connection would delay heartbeats behind HTTP/2 flow control and TCP
    /// buffers.
    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        self.client(target, node)
    }
}

/// Which unary Raft RPC to call.
#[derive(Clone, Copy, Debug)]
enum RaftRpc {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl RaftRpc {
    fn rpc_type(self) -> RPCTypes {
        match self {
            RaftRpc::AppendEntries => RPCTypes::AppendEntries,
            RaftRpc::Vote | RaftRpc::PreVote => RPCTypes::Vote,
            RaftRpc::TransferLeader => RPCTypes::TransferLeader,
        }
    }
}

/// openraft's client to one peer. Connects on first use.
pub struct PeerNetwork {
    id: NodeId,
    target: NodeId,
    /// The client, or why none could be made (a bad address).
    client: Result<RaftClient<Channel>, String>,
    db: Arc<Db>,
    spool_dir: PathBuf,
    snapshot_chunk_bytes: usize,
}

impl PeerNetwork {
    fn client(&self) -> Result<RaftClient<Channel>, Error> {
        self.client.clone().map_err(Error::Unreachable)
    }

    fn rpc_error(&self, e: Error, action: RPCTypes) -> RPCError<TypeConfig> {
        match e {
            Error::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
            e if e.is_transient() => RPCError::Network(NetworkError::new(&e)),
            e => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }

    fn streaming_error(&self, e: Error) -> StreamingError<TypeConfig> {
        match self.rpc_error(e, RPCTypes::InstallSnapshot) {
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::RemoteError(never) => match never.source {},
        }
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: RaftRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let res = async {
            let mut client = self.client()?;
            let msg = proto::RaftRequest {
                format: WIRE_FORMAT,
                data: encode(req)?,
            };
            let deadline = rpc_deadline(option.soft_ttl(), msg.data.len());
            let r = request(msg, deadline);
            let reply = match rpc {
                RaftRpc::AppendEntries => call_with_deadline(deadline, client.append_entries(r)).await?,
                RaftRpc::Vote => call_with_deadline(deadline, client.vote(r)).await?,
                RaftRpc::PreVote => call_with_deadline(deadline, client.pre_vote(r)).await?,
                RaftRpc::TransferLeader => call_with_deadline(deadline, client.transfer_leader(r)).await?,
            };
            decode(reply.format, &reply.data, "raft reply")
        }
        .await;
        res.map_err(|e| {
            tracing::debug!(target = self.target, ?rpc, error = %e, "raft rpc failed");
            self.rpc_error(e, rpc.rpc_type())
        })
    }

    /// Streams `snapshot` and waits for the peer's answer.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        idle_max: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, Error> {
        let mut client = self.client()?;
        let meta = snapshot.meta;
        // The spool file (if any) lives until the stream is done.
        let (_spool, path): (Option<TempFile>, PathBuf) = match snapshot.snapshot {
            SnapshotData::Local => {
                let f = snapshot::spool_checkpoint(self.db.clone(), &self.spool_dir, meta.last_log_id).await?;
                let p = f.path().to_path_buf();
                (Some(f), p)
            }
            SnapshotData::File(p) => (None, p),
        };
        let file = snapshot::SpoolFile::open(&path, self.db.inline_io()).await?;
        let header = SnapshotHeader {
            format: WIRE_FORMAT,
            vote: encode(&vote)?,
            meta: encode(&meta)?,
        };
        let progress = Progress::default();
        let failure = ReadFailure::default();
        let stream = snapshot::outgoing(
            header,
            file,
            self.snapshot_chunk_bytes,
            progress.clone(),
            failure.clone(),
        );
        // No gRPC timeout: a fixed one would cap the snapshot size. The
        // idle deadline below bounds this side, SNAPSHOT_RECEIVE_IDLE_MAX
        // the receiver's.
        let call = client.install_snapshot(tonic::Request::new(stream));
        tokio::pin!(call);
        let reply = loop {
            let idle_until = progress.last() + idle_max;
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep_until(idle_until) => {
                    if progress.last() + idle_max <= tokio::time::Instant::now() {
                        return Err(Error::Timeout(idle_max));
                    }
                }
            }
        };
        if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(Error::Io(e));
        }
        let reply = reply.map_err(|s| Error::from_status(s, idle_max))?.into_inner();
        let resp: SnapshotResponse<TypeConfig> = decode(reply.format, &reply.data, "snapshot reply")?;
        tracing::info!(
            target = self.target,
            last_log_id = ?meta.last_log_id,
            "snapshot sent"
        );
        Ok(resp)
    }
}

/// Slowest transfer rate a healthy peer connection is assumed to sustain
/// for one Raft message, in bytes per second. A heartbeat or vote is a few
/// hundred bytes and keeps openraft's deadline; an AppendEntries that
/// carries entries gets more time per byte it carries, so a large batch
/// on a busy machine is not cut off and resent, while a heartbeat never
/// waits behind it (each has its own call and deadline).
pub const REPLICATION_BYTES_PER_SEC_MIN: u64 = 8 << 20;

/// The deadline of a unary Raft call carrying `bytes`: openraft's soft TTL
/// plus the time the payload takes at [`REPLICATION_BYTES_PER_SEC_MIN`].
pub fn rpc_deadline(soft_ttl: Duration, bytes: usize) -> Duration {
    let transfer_us = (bytes as u64).saturating_mul(1_000_000) / REPLICATION_BYTES_PER_SEC_MIN;
    soft_ttl + Duration::from_micros(transfer_us)
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RaftRpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RaftRpc::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let idle_max = option.hard_ttl();
        let target = self.target;
        let res = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.send_snapshot(vote, snapshot, idle_max) => r,
        };
        res.map_err(|e| {
            tracing::warn!(target, error = %e, "snapshot not sent");
            self.streaming_error(e)
        })
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(RaftRpc::TransferLeader, &req, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_grows_with_the_bytes_a_call_carries() {
        let ttl = Duration::from_millis(22);
        assert_eq!(rpc_deadline(ttl, 0), ttl);
        // A heartbeat-sized message keeps openraft's deadline (to the ms).
        assert!(rpc_deadline(ttl, 300) < ttl + Duration::from_millis(1));
        // A full batch of entries gets a second per REPLICATION_BYTES_PER_SEC_MIN bytes.
        let full = REPLICATION_BYTES_PER_SEC_MIN as usize;
        assert_eq!(rpc_deadline(ttl, full), ttl + Duration::from_secs(1));
        assert_eq!(
            rpc_deadline(ttl, usize::MAX),
            ttl + Duration::from_micros(u64::MAX / REPLICATION_BYTES_PER_SEC_MIN)
        );
    }
}
