//! Cluster-level behaviour around Raft: the group-commit write batcher,
//! routing of writes to the leader and read consistency, bootstrapping
//! a cluster from `--initial-cluster`, the leadership handover of a node
//! that stops, and the leader's deduplication of Prometheus HA pairs.

pub mod batcher;
pub mod bootstrap;
pub mod ha_dedup;
pub mod handover;
pub mod routing;
