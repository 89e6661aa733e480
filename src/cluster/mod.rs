//! Cluster-level behaviour around Raft: the group-commit write batcher,
//! routing of writes to the leader and read consistency, and bootstrapping
//! a cluster from `--initial-cluster`.

pub mod batcher;
pub mod bootstrap;
pub mod routing;
