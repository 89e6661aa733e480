//! promraft: a Prometheus-compatible time-series database replicated with
//! Raft.
//!
//! # Layout
//!
//! Data flows top to bottom. A module may use the modules its row names and
//! no other; `tests/layering.rs` reads every `crate::` path under `src/`
//! and fails on an arrow this table does not allow (it reads the table
//! from this comment, and checks that `docs/architecture.md` shows the same
//! rows).
//!
//! | module | may use |
//! |---|---|
//! | `cli` | every module |
//! | `bench` | every module |
//! | `api` | `node`, `web`, `backup`, `scrape`, `rules`, `notifier`, `cluster`, `raft`, `promql`, `promcfg`, `tsdb`, `config`, `metrics`, `prompb` |
//! | `web` | nothing |
//! | `node` | `backup`, `scrape`, `rules`, `notifier`, `cluster`, `raft`, `promql`, `promcfg`, `tsdb`, `kv`, `config`, `metrics`, `threads` |
//! | `rules` | `notifier`, `promcfg`, `cluster`, `promql`, `tsdb`, `config`, `metrics` |
//! | `notifier` | `metrics` |
//! | `backup` | `raft`, `tsdb`, `kv`, `prompb`, `client` |
//! | `scrape` | `cluster`, `promcfg`, `tsdb`, `config` |
//! | `cluster` | `raft`, `tsdb`, `config`, `metrics` |
//! | `raft` | `tsdb`, `kv`, `codec`, `threads` |
//! | `promql` | `tsdb` |
//! | `promcfg` | `tsdb`, `config` |
//! | `tsdb` | `kv`, `codec` |
//! | `kv` | nothing |
//! | `config` | nothing |
//! | `metrics` | nothing |
//! | `prompb` | nothing |
//! | `codec` | nothing |
//! | `threads` | nothing |
//! | `client` | nothing |
//! | `sim_bugs` | nothing (any module may use it) |
//! | `test_support` | `kv` (test builds only; any module's tests may use it) |
//!
//! - [`api`]: the axum HTTP server. Remote write in (`api::write`, pure
//!   decoding in `api::remote_write`), the Prometheus HTTP API out
//!   (`api::read`, `api::query`, `api::status`), admin and cluster
//!   endpoints, `/metrics`. Its state is the whole [`node::Node`]; it hands
//!   the layers below only the part they need ([`cluster::routing::Router`],
//!   [`backup::source::BackupSource`], `&Db`).
//! - [`web`]: the HTTP edge: Prometheus's web configuration file (TLS,
//!   basic auth, response headers) with promraft's roles, re-read when it
//!   changes, and the server (accept loop, connection cap, header, body
//!   and handshake timeouts) that `main` runs the API's router on.
//! - [`node`]: wires one node together from a [`config::Config`] and owns
//!   its background duties (checkpoints, retention, the leader watch).
//! - [`backup`]: consistent backup files, verify and restore, OpenMetrics
//!   export and text-format import.
//! - [`scrape`]: the leader scrapes every target of `scrape_configs` once
//!   (static and file SD, relabeling, text and OpenMetrics, staleness),
//!   writing through the log; the targets view of `/api/v1/targets`.
//! - [`cluster`]: behaviour around Raft: the group-commit write batcher,
//!   routing to the leader and read consistency, bootstrap from
//!   `initial_cluster`. It works on narrow handles (`Raft`, `Batcher`,
//!   `PeerClients`), never on the `Node`.
//! - [`raft`]: openraft's type configuration, the log entry payload, the log
//!   store, the state machine that applies entries to the TSDB and turns
//!   checkpoints into snapshots, and the peer network.
//! - [`rules`]: recording and alerting rules: rule files, templates, the
//!   alert state machine, and the leader duty that evaluates every group
//!   and writes its results through the log.
//! - [`notifier`]: sends alerts to Alertmanager (v2 API): bounded queue,
//!   batches, retries, external labels and alert relabeling.
//! - [`promql`]: the PromQL evaluator over the TSDB (parsing by the
//!   `promql-parser` crate).
//! - [`promcfg`]: the Prometheus configuration file (`--prometheus-config`):
//!   `global`, `scrape_configs`, `rule_files`, `alerting`, checked as
//!   Prometheus checks them, unsupported sections refused by name,
//!   reloads, the digest that nodes compare; and relabeling
//!   (`promcfg::relabel`).
//! - [`tsdb`]: one replica's storage: labels and matchers, the Gorilla XOR
//!   chunk codec, the head (series, open chunks, postings), checkpoints, the
//!   querier, retention, the digest.
//! - [`kv`]: the storage seam: the durable key-value store (sled in
//!   production, an in-memory one with crash semantics in `sim/`) under the
//!   Raft log store and the TSDB store. sled is private to it.
//! - Leaves: [`config`] (the validated configuration, values and bounds
//!   only), [`metrics`] (the node's own metrics), [`prompb`] (the
//!   remote-write 1.0 protobuf messages), [`codec`] (the one bincode
//!   configuration every persisted or sent value goes through), [`threads`]
//!   (where a node's work runs: Raft on a runtime of its own, the rest on
//!   lower-priority work threads), [`client`] (how the command-line tools
//!   reach a node: the shared `--tls-*` and `--basic-auth-*` options, the
//!   HTTP client built from them, errors that name the fix).
//! - Tools on top: [`cli`] (client-side commands: cluster administration,
//!   the demo) and [`bench`] (load generators and micro-benchmarks of the
//!   `promraft bench` commands).
//!
//! The binary (`src/main.rs`) is the clap CLI over these.

pub mod api;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod notifier;
pub mod promcfg;
pub mod prompb;
pub mod promql;
pub mod raft;
pub mod rules;
pub mod scrape;
#[cfg(feature = "sim-bugs")]
pub mod sim_bugs;
pub mod threads;
pub mod tsdb;
pub mod web;

#[cfg(test)]
pub(crate) mod test_support;
