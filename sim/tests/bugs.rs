//! The sweep finds promraft's deliberate bugs (feature `sim-bugs`):
//! `RUSTFLAGS="--cfg tokio_unstable" cargo test --release -p promraft-sim --features sim-bugs --test bugs`.
//!
//! One test walks the bugs in turn: the switch is process-wide, so they
//! must not run at the same time as each other or as the clean sweep
//! (which lives in another test binary).
#![cfg(feature = "sim-bugs")]

use promraft::sim_bugs::{self, Bug};
use promraft_sim::{run_seed, RunOptions};

/// The sweep's default seeds: each bug must be found within them.
const BUG_SEEDS: u64 = 100;

#[test]
fn sweep_finds_each_deliberate_bug() {
    let opts = RunOptions::default();
    let mut missed = Vec::new();
    for bug in [
        Bug::AckBeforeCommit,
        Bug::ReadWithoutReadIndexWait,
        Bug::AppendWithoutFsync,
    ] {
        sim_bugs::set(&[bug]);
        let found = (0..BUG_SEEDS).find_map(|seed| {
            let r = run_seed(seed, &opts);
            (!r.passed()).then(|| (seed, r.violations[0].invariant, r.violations[0].detail.clone()))
        });
        match found {
            Some((seed, inv, detail)) => println!("{}: found by seed {seed} ({inv}: {detail})", bug.name()),
            None => missed.push(bug.name()),
        }
    }
    sim_bugs::set(&[]);
    assert!(missed.is_empty(), "the sweep of {BUG_SEEDS} seeds missed {missed:?}");
}
