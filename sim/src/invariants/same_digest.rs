//! Replicas at the same applied index have the same digest, whenever each
//! was seen there.

use std::collections::HashMap;

use super::{Replica, Violation};

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "same_digest";

/// Digests seen, by applied index.
#[derive(Default)]
pub struct Digests {
    by_index: HashMap<u64, (u64, String)>,
}

impl Digests {
    /// Records `r` and checks it against any replica seen at its index.
    pub fn check(&mut self, r: &Replica, at_ms: u64) -> Option<Violation> {
        let (node, d) = self
            .by_index
            .entry(r.applied)
            .or_insert_with(|| (r.id, r.digest.digest.clone()));
        if *d == r.digest.digest {
            return None;
        }
        Some(Violation {
            invariant: NAME,
            at_ms,
            detail: format!(
                "at applied index {}: node {} has digest {} but node {node} had {d}",
                r.applied, r.id, r.digest.digest
            ),
        })
    }
}
