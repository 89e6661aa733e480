//! At most one leader per term — in the form openraft gives it to promraft.
//!
//! promraft runs openraft's default leader ids (`leader_id_adv`): a leader
//! is identified by (term, node id), and a node may grant a vote to a
//! greater (term, node id) within the term it already voted in. So one term
//! can see several leaders one after another, each with a greater node id
//! (the sweep finds this: seeds 51, 109, 390 of 0..500), and that is safe:
//! entries carry the full leader id. What must never happen is a vote going
//! backwards: in one term, a leader with a smaller node id after a greater
//! one, or the same leader id elected twice by different quorums (which
//! would mean a node voted twice, e.g. after losing an unsynced vote).
//! Checked here: within a term, leaders appear in strictly increasing node
//! id order (a deposed leader may still claim the term until it hears of
//! its successor). With standard leader ids (`leader_id_std`) that is exactly
//! "at most one leader per term".

use std::collections::BTreeMap;

use super::Violation;

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "one_leader_per_term";

/// Leaders seen, by term, in the order they appeared.
#[derive(Default)]
pub struct Leaders {
    by_term: BTreeMap<u64, Vec<u64>>,
}

impl Leaders {
    /// Records that `node` leads in `term`. Returns `Ok(true)` the first
    /// time this leader of this term is seen; a violation if a leader with a
    /// greater node id already led the term.
    pub fn observe(&mut self, node: u64, term: u64, at_ms: u64) -> Result<bool, Violation> {
        let seen = self.by_term.entry(term).or_default();
        // A leader of the term seen before may still claim it: a deposed
        // leader that has not heard of its successor yet.
        if seen.contains(&node) {
            return Ok(false);
        }
        match seen.iter().max() {
            Some(&greatest) if greatest > node => Err(Violation {
                invariant: NAME,
                at_ms,
                detail: format!(
                    "node {node} became leader of term {term} after node {greatest} led it (leaders of the term so far: {seen:?})"
                ),
            }),
            _ => {
                seen.push(node);
                Ok(true)
            }
        }
    }

    /// Terms that had a leader.
    pub fn terms(&self) -> usize {
        self.by_term.len()
    }

    /// Terms that had more than one leader (allowed by openraft's leader ids).
    pub fn shared_terms(&self) -> usize {
        self.by_term.values().filter(|l| l.len() > 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_may_pass_to_greater_ids_only() {
        let mut l = Leaders::default();
        assert!(l.observe(2, 8, 0).unwrap());
        assert!(!l.observe(2, 8, 1).unwrap());
        assert!(l.observe(3, 8, 2).unwrap());
        assert!(
            !l.observe(2, 8, 3).unwrap(),
            "a deposed leader may still claim its term"
        );
        assert!(
            l.observe(1, 8, 3).is_err(),
            "a smaller id after a greater one in the same term"
        );
        assert!(l.observe(1, 9, 4).unwrap());
        assert_eq!(l.shared_terms(), 1);
    }
}
