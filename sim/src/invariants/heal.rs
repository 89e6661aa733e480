//! After the faults stop (heal phase) the cluster elects a leader, accepts
//! writes, and all replicas converge, within a bounded simulated time.

use super::{Replica, Violation};

/// The invariant's name, as violations and the simulator's `VIOLATED` lines give it.
pub const NAME: &str = "heal";

/// What the heal phase has reached.
#[derive(Debug, Default, Clone)]
pub struct HealState {
    /// A leader is known to every running node.
    pub leader: Option<u64>,
    /// Writes acknowledged since the heal began.
    pub writes_acked: u64,
    /// All replicas are at the same applied index with the same digest,
    /// and each has applied what it knows committed.
    pub converged: bool,
}

impl HealState {
    /// Done when all three hold.
    pub fn done(&self) -> bool {
        self.leader.is_some() && self.writes_acked > 0 && self.converged
    }
}

/// True when the replicas agree (same applied index, same digest).
pub fn converged(replicas: &[Replica]) -> bool {
    replicas
        .windows(2)
        .all(|w| w[0].applied == w[1].applied && w[0].digest == w[1].digest)
}

/// The violation when the deadline passed first.
pub fn timed_out(state: &HealState, heal_ms: u64, at_ms: u64, replicas: &[Replica]) -> Violation {
    let applied: Vec<(u64, u64, String)> = replicas
        .iter()
        .map(|r| (r.id, r.applied, r.digest.digest.clone()))
        .collect();
    Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "not healed within {heal_ms} ms of the faults stopping: leader {:?}, writes acknowledged {}, converged {} (node, applied, digest): {applied:?}",
            state.leader, state.writes_acked, state.converged
        ),
    }
}
