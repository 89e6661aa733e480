//! A linearizable read observes every write acknowledged before it began.

use std::collections::HashSet;

use promraft::tsdb::SeriesData;

use super::Violation;
use crate::oracle::{key_of, Oracle, Outcome, SeriesKey};

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "linearizable_read";

/// The samples a read starting now must see: those of every write
/// acknowledged so far.
pub fn required(oracle: &Oracle) -> Vec<(u64, SeriesKey, i64)> {
    oracle
        .writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Acked { .. }))
        .flat_map(|w| w.samples.iter().map(move |&(k, t, _)| (w.id, k, t)))
        .collect()
}

/// Checks a linearizable read served by `node`, started at `start_ms`.
pub fn check(
    node: u64,
    start_ms: u64,
    required: &[(u64, SeriesKey, i64)],
    data: &[SeriesData],
    at_ms: u64,
) -> Option<Violation> {
    let got: HashSet<(SeriesKey, i64)> = data
        .iter()
        .filter_map(|s| key_of(&s.labels).map(|k| (k, s)))
        .flat_map(|(k, s)| s.samples.iter().map(move |&(t, _)| (k, t)))
        .collect();
    let missing = required.iter().find(|(_, k, t)| !got.contains(&(*k, *t)))?;
    Some(Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "linearizable read on node {node} started at {start_ms} ms misses {:?}@{} of write {}, acknowledged before it began",
            missing.1, missing.2, missing.0
        ),
    })
}
