//! promraft: a Prometheus-compatible time-series database replicated with
//! Raft.
//!
//! # Layout
//!
//! Data flows top to bottom; each layer only calls the ones below it.
//!
//! - [`api`]: the axum HTTP server. Remote write in (`api::write`, with the
//!   wire format in `prompb` and pure decoding in `api::remote_write`),
//!   the Prometheus HTTP API out (`api::read`, `api::status`), `/metrics`.
//! - [`cluster`]: behaviour around Raft: the group-commit write batcher.
//! - [`raft`]: openraft's type configuration, the log entry payload, the sled
//!   log store, the state machine that applies entries to the TSDB and turns
//!   checkpoints into snapshots, and the peer network.
//! - [`promql`]: the PromQL evaluator over the TSDB (parsing by the
//!   `promql-parser` crate).
//! - [`tsdb`]: one replica's storage: labels and matchers, the Gorilla XOR
//!   chunk codec, the head (series, open chunks, postings), checkpoints in
//!   sled, the querier, retention, the digest.
//! - [`kv`]: the storage seam: the durable key-value store (sled in
//!   production, an in-memory one with crash semantics in `sim/`) under the
//!   Raft log store and the TSDB store.
//! - [`node`]: wires one node together from a [`config::Config`].
//! - [`config`]: the validated configuration; [`metrics`]: the node's own
//!   metrics; [`bench`]: load generators and micro-benchmarks used by the
//!   `promraft bench` commands.
//!
//! - [`cli`]: client-side commands (cluster administration, the demo).
//! - [`backup`]: consistent backup files, verify and restore, OpenMetrics
//!   export and text-format import.
//!
//! The binary (`src/main.rs`) is the clap CLI over these.

pub mod api;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod prompb;
pub mod promql;
pub mod raft;
#[cfg(feature = "sim-bugs")]
pub mod sim_bugs;
pub mod tsdb;
