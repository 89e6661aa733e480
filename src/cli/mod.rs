//! Client-side commands of the `promraft` binary: cluster administration
//! over a node's HTTP API, and the local three-node demo.

pub mod cluster;
pub mod demo;
