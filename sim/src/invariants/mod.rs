//! The invariants, one file each. Each is checked during the run (every
//! check interval, and by the clients as they are answered) and after the
//! heal phase; a breach becomes a [`Violation`] that fails the seed.

pub mod acked_not_lost;
pub mod heal;
pub mod linearizable_read;
pub mod no_duplicate_or_phantom;
pub mod one_leader_per_term;
pub mod same_digest;

use std::sync::Arc;

/// Every invariant's name, in the order of the files.
pub const ALL: [&str; 6] = [
    acked_not_lost::NAME,
    heal::NAME,
    linearizable_read::NAME,
    no_duplicate_or_phantom::NAME,
    one_leader_per_term::NAME,
    same_digest::NAME,
];

/// Not an invariant: a host (a node's code) panicked or failed, which fails
/// the seed as well.
pub const HOST_FAILED: &str = "host";

use promraft::node::Node;
use promraft::tsdb::{Digest, Matcher, SeriesData};

use crate::oracle::METRIC;

/// A breached invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which invariant (its file's name, one of [`ALL`]), or [`HOST_FAILED`].
    pub invariant: &'static str,
    /// Sim time, ms.
    pub at_ms: u64,
    /// What was expected and what happened.
    pub detail: String,
}

/// One replica's state at one moment, as the checks read it.
pub struct Replica {
    /// Node id.
    pub id: u64,
    /// Applied index.
    pub applied: u64,
    /// The simulation's series with every sample.
    pub data: Vec<SeriesData>,
    /// The digest of the whole TSDB.
    pub digest: Digest,
}

/// Every series the simulation writes, from `node`'s replica.
pub fn select_all(node: &Node) -> Result<Vec<SeriesData>, String> {
    node.db
        .select(&[Matcher::equal("__name__", METRIC)], i64::MIN, i64::MAX, usize::MAX)
        .map_err(|e| e.to_string())
}

impl Replica {
    /// Reads `node`'s replica. Runs between simulation steps, so nothing
    /// applies meanwhile and data, digest and index agree.
    pub fn capture(id: u64, node: &Arc<Node>) -> Result<Replica, String> {
        let applied = node.applied_index();
        let data = select_all(node)?;
        let digest = node.db.digest().map_err(|e| e.to_string())?;
        Ok(Replica {
            id,
            applied,
            data,
            digest,
        })
    }
}
