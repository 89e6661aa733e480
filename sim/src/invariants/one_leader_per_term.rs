//! At most one leader per term.

use std::collections::BTreeMap;

use super::Violation;

const NAME: &str = "one_leader_per_term";

/// Leaders seen, by term.
#[derive(Default)]
pub struct Leaders {
    by_term: BTreeMap<u64, u64>,
}

impl Leaders {
    /// Records that `node` leads in `term`; a violation if another did.
    /// Returns `Ok(true)` the first time a term's leader is seen.
    pub fn observe(&mut self, node: u64, term: u64, at_ms: u64) -> Result<bool, Violation> {
        match self.by_term.get(&term) {
            None => {
                self.by_term.insert(term, node);
                Ok(true)
            }
            Some(&l) if l == node => Ok(false),
            Some(&l) => Err(Violation {
                invariant: NAME,
                at_ms,
                detail: format!("node {node} leads term {term}, which node {l} led"),
            }),
        }
    }

    /// Terms that had a leader.
    pub fn terms(&self) -> usize {
        self.by_term.len()
    }
}
