//! A linearizable read observes every write acknowledged before it began.

use promraft::tsdb::SeriesData;

use super::{Held, Violation};
use crate::oracle::Oracle;

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "linearizable_read";

/// What a read starting now must see: the samples of every write
/// acknowledged so far, which are the first this many of
/// [`Oracle::acked_order`] (acknowledgements are only ever appended).
pub fn required(oracle: &Oracle) -> usize {
    oracle.acked_order.len()
}

/// Checks a linearizable read served by `node`, started at `start_ms`,
/// when `required` writes had been acknowledged ([`required`]).
pub fn check(
    node: u64,
    start_ms: u64,
    oracle: &Oracle,
    required: usize,
    data: &[SeriesData],
    at_ms: u64,
) -> Option<Violation> {
    let held = Held::new(data);
    // The first sample missing, of the required write with the smallest id.
    let missing = oracle.acked_order[..required]
        .iter()
        .filter_map(|&id| {
            let w = &oracle.writes[id as usize];
            w.samples
                .iter()
                .find(|&&(k, t, _)| held.get(k, t).is_none())
                .map(|&(k, t, _)| (id, k, t))
        })
        .min_by_key(|&(id, _, _)| id)?;
    Some(Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "linearizable read on node {node} started at {start_ms} ms misses {:?}@{} of write {}, acknowledged before it began",
            missing.1, missing.2, missing.0
        ),
    })
}
