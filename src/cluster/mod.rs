//! Cluster-level behaviour around Raft: the group-commit write batcher,
//! routing of writes to the leader and read consistency, bootstrapping
//! a cluster from `--initial-cluster`, and the leadership handover of a
//! node that stops.

pub mod batcher;
pub mod bootstrap;
pub mod handover;
pub mod routing;
