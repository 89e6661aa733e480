//! No sample appears twice, and no sample that was never written appears.

use promraft::tsdb::SeriesData;

use super::Violation;
use crate::oracle::{key_of, Oracle};

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "no_duplicate_or_phantom";

/// Checks the simulation's series as `who` (a node, a read) returned them.
pub fn check(oracle: &Oracle, who: &str, data: &[SeriesData], at_ms: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |detail: String| {
        out.push(Violation {
            invariant: NAME,
            at_ms,
            detail,
        })
    };
    let mut seen = std::collections::HashSet::new();
    for s in data {
        let Some(k) = key_of(&s.labels) else {
            v(format!("{who}: series {} was never written", s.labels));
            continue;
        };
        if !seen.insert(k) {
            v(format!("{who}: series {k:?} appears twice"));
        }
        for w in s.samples.windows(2) {
            if w[0].0 >= w[1].0 {
                v(format!(
                    "{who}: series {k:?} has timestamp {} twice or out of order",
                    w[1].0
                ));
            }
        }
        for &(t, val) in &s.samples {
            match oracle.attempted(k, t) {
                Some((want, _)) if want.to_bits() == val.to_bits() => {}
                Some((want, op)) => v(format!("{who}: sample {k:?}@{t} is {val}, but write {op} wrote {want}")),
                None => v(format!("{who}: sample {k:?}@{t}={val} was never written")),
            }
        }
    }
    out
}
