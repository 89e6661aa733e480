//! Raft: the replicated log in front of the TSDB.
//!
//! Owns openraft's type configuration, the log entry payload ([`Command`]),
//! the sled log store, the state machine that applies entries to the TSDB
//! and checkpoints it as openraft snapshots, and the network to peers. It
//! does not parse HTTP or PromQL.

pub mod command;
pub mod entry_format;
pub mod ha_replicas;
pub mod legacy;
pub mod log_store;
pub mod record;
pub mod rpc_decode;
pub mod runtime;
pub mod state_machine;
pub mod transport;

#[cfg(test)]
mod storage_conformance;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use command::{Command, CommandResponse};

/// How other nodes reach this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the Raft (gRPC) listener, `host:port`.
    pub raft_addr: String,
    /// Address of the HTTP API, `host:port`.
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// promraft's openraft type configuration. Standard leader ids: at
    /// most one leader per term, and a log id is (term, index).
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = NodeInfo,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<Self::LeaderId>,
        Entry = openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>,
        AsyncRuntime = runtime::SeededRuntime,
);

/// A node id.
pub type NodeId = u64;
/// The openraft handle.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Membership with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with our snapshot data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, state_machine::SnapshotData>;
