//! Raft state as promraft wrote it before it ran openraft's standard leader
//! ids: openraft's "advanced" leader ids (`leader_id_adv`), where a
//! committed leader id, and so every stored log id, is (term, node id).
//! Standard leader ids keep only the term in a committed leader id (a term
//! has at most one leader), and a vote's leader id is (term, voted for).
//!
//! Decoding only: this build reads what earlier builds wrote (log entries
//! up to format version 1, votes, log ids, checkpoint records without a
//! version marker) and maps it to the standard form; it writes the
//! standard form only. The mapping drops the node id of a committed leader
//! id, which the term alone identifies once a quorum granted it.

use openraft::vote::RaftLeaderId;

use super::{Command, NodeId, NodeInfo, TypeConfig};

/// openraft's advanced leader id, as earlier builds stored it.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
/// A log id with an advanced leader id.
pub type LogId = openraft::LogId<LeaderId>;
/// A vote with an advanced leader id.
pub type Vote = openraft::impls::Vote<LeaderId>;
/// A log entry with an advanced leader id (log-entry format version 1).
pub type Entry = openraft::Entry<LeaderId, openraft::EntryPayload<Command, NodeId, NodeInfo>>;
/// A stored membership with an advanced leader id.
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, NodeInfo>;

/// The standard form of an earlier build's log id: same term and index.
pub fn log_id(l: &LogId) -> super::LogId {
    let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(l.leader_id.term, l.leader_id.node_id);
    super::LogId::new(leader.to_committed(), l.index)
}

/// The standard form of an earlier build's vote: the node it voted for in
/// its term, committed or not.
pub fn vote(v: &Vote) -> super::Vote {
    let mut out = super::Vote::new(v.leader_id.term, v.leader_id.node_id);
    out.committed = v.committed;
    out
}

/// The standard form of an earlier build's membership record.
pub fn membership(m: &StoredMembership) -> super::StoredMembership {
    super::StoredMembership::new(m.log_id().as_ref().map(log_id), m.membership().clone())
}

/// The standard form of an earlier build's log entry.
pub fn entry(e: Entry) -> super::Entry {
    super::Entry {
        log_id: log_id(&e.log_id),
        payload: e.payload,
    }
}
