//! Deterministic simulation of a promraft cluster.
//!
//! The real node code ([`promraft::node::Node`]: openraft, the state
//! machine, the TSDB, the write batcher and forwarding, the read barrier)
//! runs on turmoil hosts, over promraft's gRPC transport on turmoil's
//! simulated TCP ([`net`]) and on simulated disks that lose unsynced writes
//! when their host crashes ([`disk`]). One seed drives everything: turmoil's
//! network and tokio's scheduling (with `--cfg tokio_unstable`), openraft's
//! randomness (`promraft::raft::runtime::SeededRuntime`), the workload and
//! the faults ([`faults`]). Clients ([`workload`]) write unique samples and
//! read at both consistency levels through the functions the HTTP API
//! calls, and record every operation in the [`oracle`]; the
//! [`invariants`] are checked during the run and after a heal phase.
//!
//! # Layout
//!
//! - [`run`]: one seed, start to verdict ([`run::run_seed`]).
//! - [`cluster`]: what runs on a node's host.
//! - [`workload`]: the clients. [`oracle`]: what they did.
//! - [`faults`]: the fault schedule. [`trace`]: the structured history.
//! - [`invariants`]: one file per invariant.
//! - [`disk`], [`net`]: the storage and network seams filled for turmoil.

pub mod cluster;
pub mod disk;
pub mod faults;
pub mod invariants;
pub mod net;
pub mod oracle;
pub mod run;
pub mod trace;
pub mod workload;

pub use run::{run_seed, RunOptions, RunReport};
