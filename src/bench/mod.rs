//! Benchmarks behind `promraft bench ...`: synthetic workloads, the
//! remote-write load generator, and in-process micro-benchmarks.
//!
//! `write` drives a running server over its public HTTP API only, so it
//! measures promraft and Prometheus alike; `head` drives the TSDB's apply
//! path in-process to measure the ceiling of one core; `rules` times one
//! evaluation of a group of many recording rules.

pub mod chunk;
pub mod head;
pub mod query;
pub mod rules;
pub mod workload;
pub mod write;
