//! At most one leader per term, literally.
//!
//! promraft runs openraft's standard leader ids (`leader_id_std`): a node
//! votes for at most one candidate per term, and keeps that vote durably
//! before answering, so a term has at most one leader. A leader seen again
//! in its own term is fine (a deposed leader may still claim the term until
//! it hears of the next one); a second node leading a term it already had a
//! leader for is a breach.

use std::collections::BTreeMap;

use super::Violation;

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "one_leader_per_term";

/// The leader seen for each term.
#[derive(Default)]
pub struct Leaders {
    by_term: BTreeMap<u64, u64>,
}

impl Leaders {
    /// Records that `node` leads in `term`. Returns `Ok(true)` the first
    /// time the term's leader is seen; a violation if another node already
    /// led the term.
    pub fn observe(&mut self, node: u64, term: u64, at_ms: u64) -> Result<bool, Violation> {
        match self.by_term.get(&term) {
            None => {
                self.by_term.insert(term, node);
                Ok(true)
            }
            Some(&leader) if leader == node => Ok(false),
            Some(&leader) => Err(Violation {
                invariant: NAME,
                at_ms,
                detail: format!("node {node} became leader of term {term}, which node {leader} already led"),
            }),
        }
    }

    /// Terms that had a leader.
    pub fn terms(&self) -> usize {
        self.by_term.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_has_one_leader() {
        let mut l = Leaders::default();
        assert!(l.observe(2, 8, 0).unwrap());
        assert!(!l.observe(2, 8, 1).unwrap(), "the same leader seen again");
        let v = l.observe(3, 8, 2).unwrap_err();
        assert_eq!(v.invariant, NAME);
        assert!(l.observe(1, 8, 3).is_err(), "a smaller id is a breach as well");
        assert!(l.observe(1, 9, 4).unwrap(), "a new term, a new leader");
        assert_eq!(l.terms(), 2);
    }
}
