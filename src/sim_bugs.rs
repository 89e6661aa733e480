//! Deliberate bugs for the simulator to find (cargo feature `sim-bugs`,
//! off by default, never in a normal build).
//!
//! Each bug is a small, realistic mistake in the write, read or storage
//! path. The simulator switches one on at run time and checks that its
//! sweep reports the seed that exposes it; with none switched on the
//! feature changes nothing.

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
}

impl Bug {
    /// Every bug, for the simulator's command line.
    pub const ALL: [Bug; 4] = [
        Bug::AckBeforeCommit,
        Bug::ReadWithoutReadIndexWait,
        Bug::AppendWithoutFsync,
        Bug::VoteWithoutFsync,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::ReadWithoutReadIndexWait => "read-without-read-index-wait",
            Bug::AppendWithoutFsync => "append-without-fsync",
            Bug::VoteWithoutFsync => "vote-without-fsync",
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
