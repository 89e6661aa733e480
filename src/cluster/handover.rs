//! Graceful leadership handover when a node is asked to stop.
//!
//! A leader that is stopped on purpose hands its leadership to the most
//! caught-up voter before it goes, so the cluster does not sit out an
//! election timeout: openraft's leader transfer makes the target campaign
//! at once, with a term one higher.
//!
//! The order is what keeps writes from failing:
//! 1. the [`HandoverGate`] closes: no new write is proposed on this node;
//!    routing holds a write that arrives now until another leader is known
//!    and forwards it there ([`write_elsewhere`]);
//! 2. writes already handed to this node's batcher finish (they commit
//!    normally, this node still leads);
//! 3. the most caught-up voter ([`most_caught_up`], pure) is chosen and,
//!    once it has this node's whole log, asked to take over;
//! 4. this node waits until its metrics name another leader.
//!
//! Every wait is bounded by one deadline ([`HANDOVER_TIMEOUT`]); a node
//! whose handover times out stops anyway and the others elect a leader as
//! after a crash. This module decides and waits; it never stops Raft itself
//! (`node::Node::shutdown` does, afterwards).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;

use super::batcher::CommitError;
use super::routing::{forward, Router};
use crate::raft::{LogId, Raft};
use crate::tsdb::{AppendRequest, AppendResult};

/// How long a stopping leader works at handing over: finishing the writes
/// it holds, its target catching up, and the target's election. A transfer
/// between caught-up voters takes one vote round trip, so this is mostly
/// slack for a loaded machine; the deployment files size their stop
/// timeouts from it (`deploy/`).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Interval between checks of the local write count: the writes waited for
/// are commits of a few milliseconds each.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Closed when the node starts stopping: from then on no write is proposed
/// on this node. Counts the writes that passed it and are still in this
/// node's batcher, so the handover can wait for them. Clones share the
/// state (the node holds one, its router another).
#[derive(Clone, Debug, Default)]
pub struct HandoverGate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    closed: AtomicBool,
    local_writes: AtomicUsize,
}

/// A write that passed the gate; dropping it marks the write finished.
#[derive(Debug)]
pub struct LocalWrite(Arc<GateState>);

impl Drop for LocalWrite {
    fn drop(&mut self) {
        self.0.local_writes.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HandoverGate {
    /// Lets a write be proposed on this node, or `None` once the gate is
    /// closed. The count is raised before the gate is checked, so a write
    /// either sees the gate closed or is seen by [`HandoverGate::local_writes`].
    pub fn enter(&self) -> Option<LocalWrite> {
        self.0.local_writes.fetch_add(1, Ordering::SeqCst);
        let guard = LocalWrite(self.0.clone());
        if self.0.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// Closes the gate (for good: a stopping node never reopens it).
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the node is stopping.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Writes that passed the gate and have not finished.
    pub fn local_writes(&self) -> usize {
        self.0.local_writes.load(Ordering::SeqCst)
    }
}

/// What a stopping node did about its leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// It did not lead: nothing to hand over.
    NotLeader,
    /// It is the only voter: there is nobody to hand over to.
    Alone,
    /// The chosen voter took over.
    HandedOver {
        /// The new leader.
        to: u64,
        /// Its term.
        term: u64,
        /// From the start of the handover until the new leader was known.
        elapsed: Duration,
    },
    /// Another voter than the chosen one leads now (the chosen one failed
    /// to campaign and another's election timer ran out).
    OtherLeader {
        /// The node asked to take over.
        asked: u64,
        /// The node that leads now.
        leader: u64,
        /// Its term.
        term: u64,
        /// From the start of the handover until the new leader was known.
        elapsed: Duration,
    },
    /// No other leader was known within [`HANDOVER_TIMEOUT`].
    TimedOut {
        /// The node asked to take over, if one was asked.
        asked: Option<u64>,
        /// What went wrong last.
        reason: String,
    },
}

/// The voter (other than `me`) whose replicated log reaches furthest, by
/// the leader's replication metrics; ties go to the lowest id. `None` when
/// no other voter exists. A voter the leader has no progress for counts as
/// having nothing.
pub fn most_caught_up(replication: &BTreeMap<u64, Option<LogId>>, voters: &BTreeSet<u64>, me: u64) -> Option<u64> {
    voters
        .iter()
        .copied()
        .filter(|&v| v != me)
        .map(|v| (replication.get(&v).cloned().flatten(), v))
        // Furthest log first, then the lowest id.
        .max_by(|(la, a), (lb, b)| la.cmp(lb).then(b.cmp(a)))
        .map(|(_, v)| v)
}

/// Hands leadership over if this node leads (see the module header).
/// Closes `gate` first, whatever the node's role, and turns off this
/// node's own election timer: a stopping node must not campaign again.
pub async fn hand_over(raft: &Raft, me: u64, gate: &HandoverGate) -> HandoverOutcome {
    let started = Instant::now();
    let deadline = started + HANDOVER_TIMEOUT;
    gate.close();
    raft.runtime_config().elect(false);
    let m = raft.metrics().borrow_watched().clone();
    if m.current_leader != Some(me) {
        return HandoverOutcome::NotLeader;
    }
    let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
    if voters.iter().all(|&v| v == me) {
        return HandoverOutcome::Alone;
    }
    // Writes that were proposed here before the gate closed commit here:
    // a transfer would leave them without an answer.
    while gate.local_writes() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let m = raft.metrics().borrow_watched().clone();
    let replication = m.replication.clone().unwrap_or_default();
    let Some(target) = most_caught_up(&replication, &voters, me) else {
        return HandoverOutcome::Alone;
    };
    // The target refuses to campaign while its log is behind this one's;
    // give it the time to catch up first.
    let last = m.last_log_index;
    let caught_up = raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten());
                matched.map(|l| l.index) >= last || m.current_leader != Some(me)
            },
            "the handover target has this node's log",
        )
        .await;
    if let Err(e) = caught_up {
        return HandoverOutcome::TimedOut {
            asked: None,
            reason: format!("node {target} did not catch up with index {last:?}: {e}"),
        };
    }
    transfer(raft, me, target, started, deadline).await
}

/// Asks `target` to take over and waits (until `deadline`) for another
/// leader than `me` to be known.
async fn transfer(raft: &Raft, me: u64, target: u64, started: Instant, deadline: Instant) -> HandoverOutcome {
    if let Err(e) = raft.trigger().transfer_leader(target).await {
        return HandoverOutcome::TimedOut {
            asked: Some(target),
            reason: format!("transfer_leader: {e}"),
        };
    }
    let led_elsewhere = raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(|m| m.current_leader.is_some_and(|l| l != me), "another node leads")
        .await;
    match led_elsewhere {
        Ok(m) => {
            let leader = m.current_leader.unwrap_or(target);
            let (term, elapsed) = (m.current_term, started.elapsed());
            if leader == target {
                HandoverOutcome::HandedOver {
                    to: target,
                    term,
                    elapsed,
                }
            } else {
                HandoverOutcome::OtherLeader {
                    asked: target,
                    leader,
                    term,
                    elapsed,
                }
            }
        }
        Err(e) => HandoverOutcome::TimedOut {
            asked: Some(target),
            reason: e.to_string(),
        },
    }
}

/// Commits a write through another node while this one stops: waits
/// (within [`HANDOVER_TIMEOUT`]) until a leader other than this node is
/// known, then forwards the write to it.
pub async fn write_elsewhere(node: &Router, req: AppendRequest) -> Result<AppendResult, CommitError> {
    let me = node.node_id;
    let waited = node
        .raft
        .wait(Some(HANDOVER_TIMEOUT))
        .metrics(|m| m.current_leader.is_some_and(|l| l != me), "another node leads")
        .await;
    match waited.ok().and_then(|m| m.current_leader) {
        Some(_) => forward(node, req).await,
        None => Err(CommitError::Unavailable(format!(
            "node {me} is stopping and no other leader was known within {} ms",
            HANDOVER_TIMEOUT.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<crate::raft::TypeConfig>(term, 1, index)
    }

    #[test]
    fn the_furthest_voter_is_chosen_and_ties_go_to_the_lowest_id() {
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        let rep = BTreeMap::from([
            (1, Some(log_id(2, 10))),
            (2, Some(log_id(2, 7))),
            (3, Some(log_id(2, 9))),
        ]);
        assert_eq!(most_caught_up(&rep, &voters, 1), Some(3));
        let tie = BTreeMap::from([(2, Some(log_id(2, 9))), (3, Some(log_id(2, 9)))]);
        assert_eq!(most_caught_up(&tie, &voters, 1), Some(2));
        // A voter without progress counts as having nothing; a learner
        // (not a voter) is never chosen however far it is.
        let rep = BTreeMap::from([(2, None), (3, Some(log_id(1, 1))), (4, Some(log_id(3, 99)))]);
        assert_eq!(most_caught_up(&rep, &voters, 1), Some(3));
        assert_eq!(most_caught_up(&BTreeMap::new(), &voters, 1), Some(2));
        assert_eq!(most_caught_up(&rep, &[1].into(), 1), None);
    }

    #[test]
    fn the_gate_counts_writes_until_it_closes() {
        let g = HandoverGate::default();
        let a = g.enter().expect("open gate");
        let b = g.enter().expect("open gate");
        assert_eq!(g.local_writes(), 2);
        drop(a);
        g.close();
        assert!(g.enter().is_none(), "a closed gate lets no write in");
        assert_eq!(g.local_writes(), 1, "a refused write is not counted");
        drop(b);
        assert_eq!(g.local_writes(), 0);
        assert!(g.is_closed());
    }
}
