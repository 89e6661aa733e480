//! No acknowledged sample is ever missing from a replica that has applied
//! past its commit; and an acknowledgement says every sample was stored.

use super::{Held, Replica, Violation};
use crate::oracle::{Oracle, Outcome};
use promraft::tsdb::AppendResult;

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "acked_not_lost";

/// Checks the answer to an acknowledged write of `samples` samples.
pub fn check_ack(op: u64, samples: usize, r: &AppendResult, at_ms: u64) -> Option<Violation> {
    if r.appended + r.duplicates == samples as u64 && r.rejected() == 0 {
        return None;
    }
    Some(Violation {
        invariant: NAME,
        at_ms,
        detail: format!("write {op} of {samples} samples was acknowledged with {r:?}"),
    })
}

/// Checks that `replica` holds every sample of every write acknowledged at
/// or below its applied index.
pub fn check(oracle: &Oracle, replica: &Replica, at_ms: u64) -> Vec<Violation> {
    let held = Held::new(&replica.data);
    let mut out = Vec::new();
    for w in oracle.acked() {
        let Outcome::Acked {
            bound_index,
            at_ms: acked_ms,
        } = w.outcome
        else {
            continue;
        };
        if replica.applied < bound_index {
            continue;
        }
        for &(k, t, v) in &w.samples {
            if held.get(k, t).map(f64::to_bits) != Some(v.to_bits()) {
                out.push(Violation {
                    invariant: NAME,
                    at_ms,
                    detail: format!(
                        "node {} applied {} >= {bound_index} but lacks sample {k:?}@{t}={v} of write {} acknowledged at {acked_ms} ms (holds {:?})",
                        replica.id,
                        replica.applied,
                        w.id,
                        held.get(k, t)
                    ),
                });
                return out;
            }
        }
    }
    out
}
