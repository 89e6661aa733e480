//! Cluster-level behaviour around Raft: the group-commit write batcher and
//! (with more members) forwarding and read consistency.

pub mod batcher;
