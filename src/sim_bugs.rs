//! Deliberate bugs for the simulator to find (cargo feature `sim-bugs`,
//! off by default, never in a normal build).
//!
//! Each bug is a small, realistic mistake in the write, read, apply or
//! storage path, and names the simulator invariant (a file of
//! `sim/src/invariants/`) that must catch it ([`Bug::invariant`]). The
//! simulator switches one on at run time; `sim/tests/bugs.rs` checks that
//! its sweep reports that very invariant as violated. With none switched on
//! the feature changes nothing.

use std::sync::atomic::{AtomicU32, Ordering};

/// The deliberate bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Bug {
    /// The leader's batcher acknowledges a write as soon as it proposes the
    /// entry, before the entry is committed.
    AckBeforeCommit = 1,
    /// A linearizable read gets the read index but serves the local replica
    /// without waiting until it has applied up to it.
    ReadWithoutReadIndexWait = 2,
    /// The log store reports appended entries flushed without fsyncing
    /// them (only where I/O is inline: the simulator).
    AppendWithoutFsync = 4,
    /// The log store saves a vote without fsyncing it (same scope).
    VoteWithoutFsync = 8,
    /// The state machine skips every fifth write entry (by log index) on
    /// every replica alike, yet answers it as if every sample was stored:
    /// an acknowledged write is lost.
    LoseAckedEntry = 16,
    /// The state machine applies every write request of an entry twice, and
    /// the head appends a sample equal to its series' newest one again
    /// instead of taking it as an exact duplicate (a `>=` for a `>`).
    ApplyTwice = 32,
    /// A replica that decodes a write entry itself (a follower, or any
    /// node replaying its log) creates the entry's new series in reverse
    /// order, while the node whose batcher proposed it uses the batcher's
    /// order: the same samples, but other series ids, so the replicas'
    /// contents differ at the same applied index.
    DivergeApply = 64,
    /// The Raft RPC server answers every vote request it refuses as
    /// granted (the refusal is lost between openraft and the reply): two
    /// candidates of one term can then both win.
    GrantEveryVote = 128,
}

impl Bug {
    /// Every bug, for the simulator's command line.
    pub const ALL: [Bug; 8] = [
        Bug::AckBeforeCommit,
        Bug::ReadWithoutReadIndexWait,
        Bug::AppendWithoutFsync,
        Bug::VoteWithoutFsync,
        Bug::LoseAckedEntry,
        Bug::ApplyTwice,
        Bug::DivergeApply,
        Bug::GrantEveryVote,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::ReadWithoutReadIndexWait => "read-without-read-index-wait",
            Bug::AppendWithoutFsync => "append-without-fsync",
            Bug::VoteWithoutFsync => "vote-without-fsync",
            Bug::LoseAckedEntry => "lose-acked-entry",
            Bug::ApplyTwice => "apply-twice",
            Bug::DivergeApply => "diverge-apply",
            Bug::GrantEveryVote => "grant-every-vote",
        }
    }

    /// The simulator invariant that must catch the bug (the name of its
    /// file in `sim/src/invariants/`, as the simulator reports it).
    pub fn invariant(self) -> &'static str {
        match self {
            // A read right after an early acknowledgement misses the write.
            Bug::AckBeforeCommit => "linearizable_read",
            Bug::ReadWithoutReadIndexWait => "linearizable_read",
            // A crash loses entries the leader counted as replicated: the
            // logs disagree and the replicas never converge.
            Bug::AppendWithoutFsync => "heal",
            // A voter that lost its vote in a crash votes again in the same
            // term, for a smaller node id.
            Bug::VoteWithoutFsync => "one_leader_per_term",
            Bug::LoseAckedEntry => "acked_not_lost",
            Bug::ApplyTwice => "no_duplicate_or_phantom",
            Bug::DivergeApply => "same_digest",
            // A candidate with a smaller id wins a term that a greater id
            // already leads.
            Bug::GrantEveryVote => "one_leader_per_term",
        }
    }
}

static ENABLED: AtomicU32 = AtomicU32::new(0);

/// Switches the bugs in `bugs` on and every other one off.
pub fn set(bugs: &[Bug]) {
    ENABLED.store(bugs.iter().fold(0, |m, b| m | *b as u32), Ordering::SeqCst);
}

/// True when `bug` is switched on.
pub fn enabled(bug: Bug) -> bool {
    ENABLED.load(Ordering::Relaxed) & bug as u32 != 0
}
