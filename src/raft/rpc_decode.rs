//! The decoding a node does on every Raft RPC it receives, as one function
//! that takes the request's protobuf bytes, for fuzzing and tests.
//!
//! The server (`transport::server`) decodes in its handlers, where tonic
//! has already turned the bytes into a message; this file repeats the two
//! steps without a server or a Raft (the prost decode tonic does, then the
//! transport's own bincode decode with its limits) so that a fuzzer can feed
//! them arbitrary bytes. It owns no format and decides nothing: the formats
//! are the transport's and `command`'s, and every error is theirs.

use prost::Message;

use super::transport::proto::{self, snapshot_chunk::Kind};
use super::transport::{decode, Error};
use super::{LogId, SnapshotMeta, TypeConfig, Vote};
use crate::tsdb::AppendRequest;

/// Which request a body is, i.e. which RPC of `promraft.raft.v1.Raft` it
/// was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `AppendEntries` (a `RaftRequest` holding openraft's request).
    AppendEntries,
    /// `Vote`.
    Vote,
    /// `PreVote`.
    PreVote,
    /// `TransferLeader`.
    TransferLeader,
    /// One message of an `InstallSnapshot` stream.
    SnapshotChunk,
    /// `ForwardWrite` (a follower's batch of client writes).
    ForwardWrite,
    /// A `ReadIndexReply` (the only reply a node decodes beyond openraft's).
    ReadIndexReply,
}

impl Rpc {
    /// Every RPC, in a fixed order (a fuzzer picks one by index).
    pub const ALL: [Rpc; 7] = [
        Rpc::AppendEntries,
        Rpc::Vote,
        Rpc::PreVote,
        Rpc::TransferLeader,
        Rpc::SnapshotChunk,
        Rpc::ForwardWrite,
        Rpc::ReadIndexReply,
    ];
}

fn malformed(what: &str, e: prost::DecodeError) -> Error {
    Error::Malformed(format!("{what}: {e}"))
}

/// Decodes `body`, the protobuf bytes of a request to `rpc`, the way the
/// receiving node does, down to the openraft or promraft value it would
/// act on; returns how many values were decoded. For fuzzing and tests:
/// the server decodes in its handlers and does not call this.
pub fn decode_rpc(rpc: Rpc, body: &[u8]) -> Result<usize, Error> {
    match rpc {
        Rpc::AppendEntries | Rpc::Vote | Rpc::PreVote | Rpc::TransferLeader => {
            let r = proto::RaftRequest::decode(body).map_err(|e| malformed("raft request", e))?;
            match rpc {
                Rpc::AppendEntries => {
                    let a: openraft::raft::AppendEntriesRequest<TypeConfig> =
                        decode(r.format, &r.data, "append entries")?;
                    Ok(1 + a.entries.len())
                }
                Rpc::Vote => {
                    let _: openraft::raft::VoteRequest<TypeConfig> = decode(r.format, &r.data, "vote")?;
                    Ok(1)
                }
                Rpc::PreVote => {
                    let _: openraft::raft::VoteRequest<TypeConfig> = decode(r.format, &r.data, "pre-vote")?;
                    Ok(1)
                }
                _ => {
                    let _: openraft::raft::TransferLeaderRequest<TypeConfig> =
                        decode(r.format, &r.data, "transfer leader")?;
                    Ok(1)
                }
            }
        }
        Rpc::SnapshotChunk => {
            let c = proto::SnapshotChunk::decode(body).map_err(|e| malformed("snapshot chunk", e))?;
            match c.kind {
                Some(Kind::Header(h)) => {
                    let _: Vote = decode(h.format, &h.vote, "snapshot vote")?;
                    let _: SnapshotMeta = decode(h.format, &h.meta, "snapshot meta")?;
                    Ok(2)
                }
                Some(Kind::Data(_) | Kind::Trailer(_)) => Ok(1),
                None => Err(Error::Malformed("snapshot message without a kind".into())),
            }
        }
        Rpc::ForwardWrite => {
            let r = proto::ForwardWriteRequest::decode(body).map_err(|e| malformed("forward write", e))?;
            let reqs: Vec<AppendRequest> = decode(r.format, &r.requests, "forwarded write")?;
            Ok(reqs.len())
        }
        Rpc::ReadIndexReply => {
            let r = proto::ReadIndexReply::decode(body).map_err(|e| malformed("read index reply", e))?;
            let _: LogId = decode(r.format, &r.log_id, "read log id")?;
            Ok(1)
        }
    }
}
