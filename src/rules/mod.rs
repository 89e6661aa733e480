//! Recording and alerting rules: Prometheus's rule files, evaluated by
//! the leader only, with results written through the Raft log.
//!
//! - [`file`]: rule files, parsed and validated as `promtool check rules` does;
//! - [`template`]: Prometheus's template language for alert labels and annotations;
//! - [`alerting`]: one alerting rule's state machine (pending, firing, resolved);
//! - [`group`]: a group's grid and one evaluation of its rules;
//! - [`querier`]: the local replica through the PromQL engine, for rules;
//! - [`settings`]: what they take from the Prometheus configuration
//!   (`promcfg`), and the task that follows its reloads;
//! - [`manager`]: the leader duty that evaluates every group on its grid,
//!   writes the results through the log and hands alerts to the notifier.
//!
//! This module must not write to the TSDB directly (results go through
//! `cluster::routing::write`), and must not evaluate on a node that does
//! not lead: one evaluator per cluster (DESIGN decision 13).

pub mod alerting;
pub mod file;
pub mod group;
pub mod manager;
pub mod querier;
pub mod settings;
pub mod template;
