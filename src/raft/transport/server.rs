//! The server side: the `promraft.raft.v1.Raft` service and the listener
//! loop.
//!
//! Raft RPCs are decoded and handed to openraft as they are; a received
//! snapshot is collected into a file and installed through openraft
//! (`install_full_snapshot`), which has the state machine import it.
//! Forwarded writes go to a [`ForwardedWrites`] handler (the leader's
//! batcher), node information comes from a [`NodeInfoSource`]. The server
//! decides nothing itself beyond refusing what is malformed or over a limit.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::Stream;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Response, Status, Streaming};

use super::proto::raft_server::{Raft as RaftRpc, RaftServer};
use super::proto::snapshot_chunk::Kind;
use super::proto::{self, SnapshotChunk};
use super::snapshot::{self, Incoming};
use super::{
    decode, encode, Error, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MESSAGE_BYTES_MAX, SERVER_PENDING_RESETS_MAX,
    SERVER_STREAMS_PER_CONNECTION_MAX, SNAPSHOT_RECEIVES_MAX, SNAPSHOT_RECEIVE_IDLE_MAX, WIRE_FORMAT,
};
use crate::raft::state_machine::SnapshotData;
use crate::raft::{NodeId, NodeInfo, Raft, Snapshot, SnapshotMeta, Vote};
use crate::tsdb::{AppendRequest, AppendResult};

/// Commits writes that a follower forwarded to this node (the leader).
///
/// promraft's write batcher implements it; the server only decodes and
/// encodes. An `Err` is a retryable failure (no quorum, overloaded, lost
/// leadership) and reaches the follower as `Unavailable`.
pub trait ForwardedWrites: Send + Sync + 'static {
    /// Commits `reqs` and answers one result per request, in order.
    fn submit(&self, reqs: Vec<AppendRequest>) -> BoxFuture<'static, Result<Vec<AppendResult>, ForwardedWriteError>>;

    /// Whether this node passes forwarded writes on to the leader even
    /// though it does not lead (a stopping node does, for the followers
    /// that still take it for the leader); otherwise a node that does not
    /// lead refuses them with the leader it knows.
    fn relays(&self) -> bool {
        false
    }
}

/// Why the leader did not commit a forwarded write (its batcher's reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForwardedWriteError(pub String);

/// Who a node is and how far it is, for the `NodeInfo` RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// HTTP API address.
    pub http_addr: String,
    /// Raft (gRPC) address.
    pub raft_addr: String,
    /// Index of the last entry applied to the local TSDB.
    pub applied_index: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// SHA-256 of the node's Prometheus configuration file (empty: none).
    pub prometheus_config_digest: String,
}

/// Source of a node's [`NodeStatus`].
pub trait NodeInfoSource: Send + Sync + 'static {
    /// The status now.
    fn status(&self) -> NodeStatus;
}

/// The lower-case name of a Raft role.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// A [`NodeInfoSource`] that reads openraft's metrics.
pub struct RaftNodeInfo {
    raft: Raft,
    info: NodeInfo,
    config_digest: Option<ConfigDigest>,
}

/// Reads the digest of the node's Prometheus configuration file in force.
pub type ConfigDigest = Arc<dyn Fn() -> String + Send + Sync>;

impl RaftNodeInfo {
    /// Reports `raft`'s node with the addresses in `info`.
    pub fn new(raft: Raft, info: NodeInfo) -> Self {
        RaftNodeInfo {
            raft,
            info,
            config_digest: None,
        }
    }

    /// Also reports the digest `digest` reads (so that members can compare
    /// their configuration files).
    pub fn with_config_digest(mut self, digest: ConfigDigest) -> Self {
        self.config_digest = Some(digest);
        self
    }
}

impl NodeInfoSource for RaftNodeInfo {
    fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        NodeStatus {
            id: m.id,
            http_addr: self.info.http_addr.clone(),
            raft_addr: self.info.raft_addr.clone(),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            role: role_name(m.state).to_string(),
            leader_id: m.current_leader,
            term: m.current_term,
            prometheus_config_digest: self.config_digest.as_ref().map(|d| d()).unwrap_or_default(),
        }
    }
}

/// When this node last took an AppendEntries (entries or a heartbeat)
/// from a leader of its term. A follower cut off from its leader keeps
/// naming it (with pre-vote it never raises its term alone), so this, not
/// openraft's `current_leader`, tells how fresh its view is. tokio's clock,
/// so that the simulator's drives it. Clones share the value.
#[derive(Clone, Debug, Default)]
pub struct LeaderContact(Arc<parking_lot::Mutex<Option<tokio::time::Instant>>>);

impl LeaderContact {
    /// A leader was heard from now.
    pub fn heard(&self) {
        *self.0.lock() = Some(tokio::time::Instant::now());
    }

    /// Time since a leader was last heard from; `None` before the first time.
    pub fn age(&self) -> Option<std::time::Duration> {
        self.0.lock().map(|t| t.elapsed())
    }
}

/// The service implementation behind [`raft_service`].
pub struct RaftService {
    raft: Raft,
    snapshot_dir: PathBuf,
    /// Received snapshot files do their I/O inline (see `snapshot::SpoolFile`).
    inline_io: bool,
    writes: Arc<dyn ForwardedWrites>,
    info: Arc<dyn NodeInfoSource>,
    snapshot_receives: Arc<Semaphore>,
    contact: LeaderContact,
}

/// The gRPC service of a node, with promraft's message size limits.
///
/// Received snapshots are collected in `data_dir`/[`snapshot::SNAPSHOT_DIR`];
/// files a previous process left there are removed now, so call this once
/// at start-up, before serving. `inline_io`: the stores' I/O runs inline
/// (the simulator, `Kv::inline_io`), and so does the snapshot files'.
pub fn raft_service(
    raft: Raft,
    data_dir: &Path,
    inline_io: bool,
    writes: Arc<dyn ForwardedWrites>,
    info: Arc<dyn NodeInfoSource>,
    contact: LeaderContact,
) -> std::io::Result<RaftServer<RaftService>> {
    let snapshot_dir = snapshot::snapshot_dir(data_dir)?;
    let removed = snapshot::remove_leftovers(&snapshot_dir, false)?;
    if removed > 0 {
        tracing::info!(removed, "removed partly received snapshots");
    }
    let svc = RaftService {
        raft,
        snapshot_dir,
        inline_io,
        writes,
        info,
        snapshot_receives: Arc::new(Semaphore::new(SNAPSHOT_RECEIVES_MAX)),
        contact,
    };
    Ok(RaftServer::new(svc)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(SERVER_STREAMS_PER_CONNECTION_MAX)
        .http2_max_pending_accept_reset_streams(Some(SERVER_PENDING_RESETS_MAX))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Serves `svc` on `listener` until `shutdown` completes, then drains the
/// connections already accepted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: RaftServer<RaftService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE_INTERVAL));
    serve_with_incoming(incoming, svc, shutdown).await
}

/// Serves `svc` on any stream of connections (the simulator's listener).
pub async fn serve_with_incoming<I, IO, IE>(
    incoming: I,
    svc: RaftServer<RaftService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    server_builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn raft_reply<T: serde::Serialize>(v: &T) -> Result<Response<proto::RaftReply>, Status> {
    Ok(Response::new(proto::RaftReply {
        format: WIRE_FORMAT,
        data: encode(v)?,
    }))
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Error::Unavailable(format!("raft is not running: {e}")).into()
}

/// The next message of a snapshot stream, waiting at most
/// [`SNAPSHOT_RECEIVE_IDLE_MAX`].
async fn next_snapshot_message(stream: &mut Streaming<SnapshotChunk>) -> Result<Kind, Error> {
    match tokio::time::timeout(SNAPSHOT_RECEIVE_IDLE_MAX, stream.message()).await {
        Err(_) => Err(Error::Timeout(SNAPSHOT_RECEIVE_IDLE_MAX)),
        Ok(Err(status)) => Err(Error::from_status(status, SNAPSHOT_RECEIVE_IDLE_MAX)),
        Ok(Ok(None)) => Err(Error::Malformed("snapshot stream ended before its trailer".into())),
        Ok(Ok(Some(SnapshotChunk { kind: None }))) => Err(Error::Malformed("snapshot message without content".into())),
        Ok(Ok(Some(SnapshotChunk { kind: Some(k) }))) => Ok(k),
    }
}

impl RaftService {
    fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Receives a snapshot stream into a file; returns the header's vote
    /// and meta and the file.
    async fn receive_snapshot(
        &self,
        stream: &mut Streaming<SnapshotChunk>,
    ) -> Result<(Vote, SnapshotMeta, snapshot::TempFile), Error> {
        let Kind::Header(h) = next_snapshot_message(stream).await? else {
            return Err(Error::Malformed("snapshot stream must start with a header".into()));
        };
        let vote: Vote = decode(h.format, &h.vote, "snapshot vote")?;
        let meta: SnapshotMeta = decode(h.format, &h.meta, "snapshot meta")?;
        let mut incoming = Incoming::create(&self.snapshot_dir, self.inline_io).await?;
        loop {
            match next_snapshot_message(stream).await? {
                Kind::Data(b) => incoming.write(b).await?,
                Kind::Trailer(t) => return Ok((vote, meta, incoming.finish(&t).await?)),
                Kind::Header(_) => return Err(Error::Malformed("second snapshot header".into())),
            }
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<proto::RaftRequest>) -> Result<Response<proto::RaftReply>, Status> {
        let r = request.into_inner();
        let rpc = decode(r.format, &r.data, "append entries")?;
        let resp = self.raft.append_entries(rpc).await.map_err(fatal)?;
        if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.contact.heard();
        }
        raft_reply(&resp)
    }

    async fn vote(&self, request: Request<proto::RaftRequest>) -> Result<Response<proto::RaftReply>, Status> {
        let r = request.into_inner();
        let rpc: openraft::raft::VoteRequest<crate::raft::TypeConfig> = decode(r.format, &r.data, "vote")?;
        #[cfg(feature = "sim-bugs")]
        let asked = rpc.vote;
        #[allow(unused_mut)]
        let mut resp = self.raft.vote(rpc).await.map_err(fatal)?;
        #[cfg(feature = "sim-bugs")]
        if crate::sim_bugs::enabled(crate::sim_bugs::Bug::GrantEveryVote) && !resp.vote_granted {
            resp.vote = asked;
            resp.vote_granted = true;
        }
        raft_reply(&resp)
    }

    async fn pre_vote(&self, request: Request<proto::RaftRequest>) -> Result<Response<proto::RaftReply>, Status> {
        let r = request.into_inner();
        let rpc = decode(r.format, &r.data, "pre-vote")?;
        let resp = self.raft.pre_vote(rpc).await.map_err(fatal)?;
        raft_reply(&resp)
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::RaftRequest>,
    ) -> Result<Response<proto::RaftReply>, Status> {
        let r = request.into_inner();
        let rpc = decode(r.format, &r.data, "transfer leader")?;
        let resp = self.raft.handle_transfer_leader(rpc).await.map_err(fatal)?;
        raft_reply(&resp)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<proto::RaftReply>, Status> {
        let Ok(_permit) = self.snapshot_receives.clone().try_acquire_owned() else {
            return Err(Error::Unavailable("another snapshot is being received".into()).into());
        };
        let mut stream = request.into_inner();
        let (vote, meta, file) = self.receive_snapshot(&mut stream).await.map_err(|e| {
            tracing::warn!(error = %e, "snapshot not received");
            Status::from(e)
        })?;
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot received; installing");
        // Install in a task of its own: once openraft has the file, the
        // state machine may be importing it, and a sender that gives up must
        // not cancel that half-way. The task removes the file if openraft
        // did not take it (a stale vote or an old snapshot).
        let raft = self.raft.clone();
        let inline = self.inline_io;
        let path = file.keep();
        let task = tokio::spawn(async move {
            let snapshot = Snapshot {
                meta,
                snapshot: SnapshotData::File(path.clone()),
            };
            let res = raft.install_full_snapshot(vote, snapshot).await;
            if path.exists() {
                let p = path.clone();
                let _ = crate::kv::run_io(inline, move || std::fs::remove_file(p)).await;
            }
            res
        });
        let resp = task
            .await
            .map_err(|e| Status::internal(format!("snapshot install task: {e}")))?
            .map_err(fatal)?;
        raft_reply(&resp)
    }

    async fn forward_write(
        &self,
        request: Request<proto::ForwardWriteRequest>,
    ) -> Result<Response<proto::ForwardWriteReply>, Status> {
        if !self.raft.is_leader() && !self.writes.relays() {
            return Err(Error::NotLeader {
                leader: self.current_leader(),
            }
            .into());
        }
        let r = request.into_inner();
        let reqs: Vec<AppendRequest> = decode(r.format, &r.requests, "forwarded write")?;
        let n = reqs.len();
        let results = self.writes.submit(reqs).await.map_err(|e| Error::Unavailable(e.0))?;
        if results.len() != n {
            return Err(Status::internal(format!(
                "write handler answered {} results for {n} requests",
                results.len()
            )));
        }
        let ha_dropped = results
            .iter()
            .map(|r| proto::HaDropped {
                samples: r.ha_dropped,
                note: r.ha_note.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ForwardWriteReply {
            format: WIRE_FORMAT,
            results: encode(&results)?,
            ha_dropped,
        }))
    }

    async fn read_index(
        &self,
        _request: Request<proto::ReadIndexRequest>,
    ) -> Result<Response<proto::ReadIndexReply>, Status> {
        let (read_log_id, _applied) =
            self.raft
                .get_read_log_id(ReadPolicy::ReadIndex)
                .await
                .map_err(|e| -> Status {
                    match e {
                        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                            Error::NotLeader { leader: f.leader_id }.into()
                        }
                        RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => {
                            Error::Unavailable(q.to_string()).into()
                        }
                        RaftError::Fatal(f) => fatal(f),
                    }
                })?;
        let log_id = *read_log_id.log_id();
        Ok(Response::new(proto::ReadIndexReply {
            format: WIRE_FORMAT,
            index: log_id.index,
            log_id: encode(&log_id)?,
            leader_id: *self.raft.node_id(),
        }))
    }

    async fn node_info(
        &self,
        _request: Request<proto::NodeInfoRequest>,
    ) -> Result<Response<proto::NodeInfoReply>, Status> {
        let s = self.info.status();
        Ok(Response::new(proto::NodeInfoReply {
            id: s.id,
            http_addr: s.http_addr,
            raft_addr: s.raft_addr,
            applied_index: s.applied_index,
            role: s.role,
            leader_id: s.leader_id,
            term: s.term,
            prometheus_config_digest: s.prometheus_config_digest,
        }))
    }
}
