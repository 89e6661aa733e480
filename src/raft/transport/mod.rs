//! The gRPC transport between promraft nodes (proto/raft.proto).
//!
//! Owns the wire: the client side ([`client::GrpcNetwork`], openraft's
//! network factory, and [`peer::PeerClient`] for promraft's own RPCs), the
//! server side ([`server::raft_service`], [`server::serve`]), the streaming
//! of snapshots in both directions ([`snapshot`]), and the one place where
//! errors become gRPC statuses and back ([`Error`]). Connections are made by
//! a [`connector::Connector`], the seam the simulator replaces; with
//! `raft.tls` set they are mutual TLS ([`tls`]) in both directions.
//!
//! It does not decide anything about Raft or writes: openraft decides what
//! to send, the server hands every request to openraft or to the
//! [`server::ForwardedWrites`] handler, and the client maps failures to the
//! openraft errors that make openraft back off or retry.
//!
//! openraft's messages travel as bincode (serde API, standard config) inside
//! `bytes` fields, tagged with [`WIRE_FORMAT`]; the layout is in
//! docs/format/raft-rpc.md.

pub mod client;
pub mod connector;
pub mod peer;
pub mod server;
pub mod snapshot;
pub mod tls;

#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{LogId, NodeId};

/// Code generated from proto/raft.proto.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("promraft.raft.v1");
}

/// Version of the bincode encoding inside the messages. A node refuses
/// other versions with `InvalidArgument` rather than decode garbage; bump it
/// when openraft's or promraft's serialized types change shape. 2: standard
/// leader ids (votes carry `voted_for`, log ids only a term).
pub const WIRE_FORMAT: u32 = 2;

/// Most entries one AppendEntries carries (openraft's `max_payload_entries`,
/// set from this in `node.rs`; 300 is openraft's default).
pub const APPEND_ENTRIES_PER_MESSAGE_MAX: u64 = 300;

/// Largest gRPC message either side encodes or decodes. An AppendEntries
/// carries at most [`APPEND_ENTRIES_PER_MESSAGE_MAX`] entries of at most
/// `ENTRY_PAYLOAD_BYTES_MAX` (96 KiB) each, about 29 MiB; a forwarded write
/// is bounded by the decoded remote-write limit (64 MiB, asserted in
/// `api::write`). 64 MiB leaves room for both and still stops a corrupt
/// length from allocating without bound.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(
    APPEND_ENTRIES_PER_MESSAGE_MAX as usize * crate::raft::command::ENTRY_PAYLOAD_BYTES_MAX < MESSAGE_BYTES_MAX
);

/// Bytes of export data per snapshot message: large enough that framing
/// costs nothing, small enough that a few in flight stay cheap in memory.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Snapshots a node receives at the same time. Only the current leader
/// sends one, and a second concurrent stream means a stale leader; it is
/// refused as busy (`ResourceExhausted`) and its sender backs off.
pub const SNAPSHOT_RECEIVES_MAX: usize = 1;

/// How long a receiver waits for the next snapshot message before it gives
/// up on the stream and deletes what it received. The sender has its own,
/// usually shorter, deadline (openraft's `install_snapshot_timeout`).
pub const SNAPSHOT_RECEIVE_IDLE_MAX: Duration = Duration::from_secs(120);

/// Time allowed to open a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Interval of HTTP/2 pings on an idle connection, so a dead peer is noticed
/// without waiting for the OS's TCP timeouts.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long an HTTP/2 ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent requests the server handles on one connection; openraft sends
/// a handful per peer (replication, heartbeat, votes), forwarded writes and
/// read-index calls come from the batcher and the query path of one node.
pub const SERVER_STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// Streams a peer may reset before the server accepted them, after which
/// h2 drops the whole connection (GOAWAY). A leader resets every
/// AppendEntries or heartbeat that outlives its deadline; under saturation
/// h2's default of 20 was reached and the dropped connection took the
/// heartbeats with it (the soak: an election). Still bounded, against a
/// peer that resets streams on purpose.
pub const SERVER_PENDING_RESETS_MAX: usize = 4096;

/// Response metadata key that carries the leader's id with a "not leader" status.
pub const LEADER_ID_METADATA: &str = "promraft-leader-id";

/// Errors of the transport, on both sides of the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer address cannot be made into a URI.
    #[error("invalid peer address {addr:?}: {reason}")]
    Address {
        /// The address as configured.
        addr: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The peer could not be reached, or the connection broke.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No answer before the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node asked is not the leader.
    #[error("not the leader{}", leader.map(|l| format!("; the leader is node {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader the node knows of.
        leader: Option<NodeId>,
    },
    /// The node cannot serve now (no quorum, Raft stopped, busy); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bytes that do not decode, or a wire format this node does not speak.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The checkpoint openraft asked to send was replaced by a newer one;
    /// openraft retries with the new snapshot.
    #[error("snapshot at {expected:?} was replaced by a checkpoint at {found:?}")]
    SnapshotReplaced {
        /// The snapshot openraft asked for.
        expected: Option<LogId>,
        /// The checkpoint found in the store.
        found: Option<LogId>,
    },
    /// The peer answered with an error this node does not classify.
    #[error("peer error ({code:?}): {message}")]
    Remote {
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// A local file (snapshot spool or received snapshot) failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The local TSDB failed while exporting a snapshot.
    #[error("tsdb: {0}")]
    Tsdb(#[from] crate::tsdb::Error),
}

impl Error {
    /// Maps a status received from a peer (or made by the local channel for
    /// a connection failure). `deadline` is the call's deadline.
    pub fn from_status(status: tonic::Status, deadline: Duration) -> Error {
        use tonic::Code;
        let message = status.message().to_string();
        match status.code() {
            Code::Unavailable => Error::Unreachable(message),
            Code::DeadlineExceeded => Error::Timeout(deadline),
            // tonic enforces the gRPC timeout on both sides and reports it
            // as `Cancelled` with the text of its `TimeoutExpired` error.
            Code::Cancelled if message == tonic::TimeoutExpired(()).to_string() => Error::Timeout(deadline),
            Code::FailedPrecondition if status.metadata().get(LEADER_ID_METADATA).is_some() => {
                let leader = status
                    .metadata()
                    .get(LEADER_ID_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok());
                Error::NotLeader { leader }
            }
            Code::ResourceExhausted => Error::Unavailable(message),
            Code::InvalidArgument => Error::Malformed(message),
            code => Error::Remote { code, message },
        }
    }

    /// True for failures that say nothing about the peer's health and are
    /// worth retrying at once (a reset stream, a replaced snapshot).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::SnapshotReplaced { .. }
                | Error::Remote {
                    code: tonic::Code::Cancelled | tonic::Code::Aborted | tonic::Code::Unknown,
                    ..
                }
        )
    }
}

/// The server's one mapping from errors to gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let msg = e.to_string();
        match e {
            Error::NotLeader { leader } => {
                let mut s = tonic::Status::failed_precondition(msg);
                let v = leader.map_or_else(|| "none".to_string(), |l| l.to_string());
                if let Ok(v) = v.parse() {
                    s.metadata_mut().insert(LEADER_ID_METADATA, v);
                }
                s
            }
            Error::Unreachable(_) | Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Timeout(_) => tonic::Status::deadline_exceeded(msg),
            Error::Malformed(_) | Error::Address { .. } => tonic::Status::invalid_argument(msg),
            Error::SnapshotReplaced { .. } => tonic::Status::aborted(msg),
            Error::Remote { code, .. } => tonic::Status::new(code, msg),
            Error::Io(_) | Error::Tsdb(_) => tonic::Status::internal(msg),
        }
    }
}

/// A generated client with promraft's message size limits.
pub(crate) fn raft_client(
    channel: tonic::transport::Channel,
) -> proto::raft_client::RaftClient<tonic::transport::Channel> {
    proto::raft_client::RaftClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// Runs one unary call with `deadline` on both sides of the wire: as the
/// gRPC timeout the server enforces and as a local timer.
pub(crate) async fn call_with_deadline<T, F>(deadline: Duration, call: F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(deadline, call).await {
        Err(_) => Err(Error::Timeout(deadline)),
        Ok(Err(status)) => Err(Error::from_status(status, deadline)),
        Ok(Ok(resp)) => Ok(resp.into_inner()),
    }
}

/// A request carrying `deadline` as its gRPC timeout.
pub(crate) fn request<T>(msg: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    r
}

/// Encodes a value for a `bytes` field.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Bytes, Error> {
    crate::codec::encode_to_vec(v)
        .map(Bytes::from)
        .map_err(|e| Error::Malformed(format!("encoding: {e}")))
}

/// Decodes a `bytes` field, refusing an unknown wire format and any length
/// past [`MESSAGE_BYTES_MAX`].
pub(crate) fn decode<T: DeserializeOwned>(format: u32, b: &[u8], what: &str) -> Result<T, Error> {
    if format != WIRE_FORMAT {
        return Err(Error::Malformed(format!(
            "{what}: wire format {format}, this node speaks {WIRE_FORMAT}"
        )));
    }
    let (v, used) = crate::codec::decode_from_slice_limited::<_, MESSAGE_BYTES_MAX>(b)
        .map_err(|e| Error::Malformed(format!("{what}: {e}")))?;
    if used != b.len() {
        return Err(Error::Malformed(format!(
            "{what}: {} trailing bytes after the message",
            b.len() - used
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn decode_refuses_other_formats_trailing_bytes_and_garbage() {
        let b = encode(&(7u64, "x".to_string())).unwrap();
        let v: (u64, String) = decode(WIRE_FORMAT, &b, "t").unwrap();
        assert_eq!(v, (7, "x".to_string()));
        assert!(matches!(
            decode::<(u64, String)>(WIRE_FORMAT + 1, &b, "t"),
            Err(Error::Malformed(_))
        ));
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(decode::<(u64, String)>(WIRE_FORMAT, &longer, "t").is_err());
        // A length prefix far past the limit must fail, not allocate.
        assert!(decode::<Vec<u8>>(
            WIRE_FORMAT,
            &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            "t"
        )
        .is_err());
    }

    #[test]
    fn statuses_round_trip_the_errors_callers_act_on() {
        let d = Duration::from_secs(1);
        let back = |e: Error| Error::from_status(tonic::Status::from(e), d);
        assert!(matches!(
            back(Error::NotLeader { leader: Some(3) }),
            Error::NotLeader { leader: Some(3) }
        ));
        assert!(matches!(
            back(Error::NotLeader { leader: None }),
            Error::NotLeader { leader: None }
        ));
        assert!(matches!(back(Error::Unavailable("x".into())), Error::Unreachable(_)));
        assert!(matches!(back(Error::Malformed("x".into())), Error::Malformed(_)));
        assert!(matches!(back(Error::Timeout(d)), Error::Timeout(_)));
        let expired = tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert!(matches!(Error::from_status(expired, d), Error::Timeout(_)));
        assert!(Error::from_status(tonic::Status::cancelled("reset"), d).is_transient());
    }
}
