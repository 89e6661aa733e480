//! The short sweep run by `cargo test --workspace --release`, and the
//! determinism check (same seed, same history).

use promraft_sim::run::replay_command;
use promraft_sim::{run_seed, RunOptions, RunReport};

/// Seeds of the short sweep (about a minute on CI's two cores); override
/// with `PROMRAFT_SIM_SEEDS`.
const SWEEP_SEEDS: u64 = 150;

fn seeds() -> u64 {
    std::env::var("PROMRAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SWEEP_SEEDS)
}

fn describe(r: &RunReport) -> String {
    let mut s = format!("seed {} failed:\n", r.seed);
    for v in &r.violations {
        s += &format!("  {} at {} ms: {}\n", v.invariant, v.at_ms, v.detail);
    }
    s += "  last events:\n";
    for e in &r.trace_tail {
        s += &format!("    {e}\n");
    }
    s += &format!("  replay: {}\n", replay_command(r.seed));
    s
}

#[test]
fn short_sweep_keeps_every_invariant() {
    let opts = RunOptions::default();
    let n = seeds();
    let mut failures = Vec::new();
    let mut faults = std::collections::BTreeMap::new();
    for seed in 0..n {
        let r = run_seed(seed, &opts);
        for (k, v) in &r.faults {
            *faults.entry(*k).or_insert(0u64) += v;
        }
        if !r.passed() {
            failures.push(describe(&r));
        }
    }
    println!("{n} seeds; faults by kind: {faults:?}");
    assert!(
        faults.values().sum::<u64>() > n,
        "the sweep must inject faults, got {faults:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Seeds run twice by the determinism check.
const DETERMINISM_SEEDS: u64 = 4;

#[test]
#[cfg_attr(
    not(tokio_unstable),
    ignore = "needs RUSTFLAGS=\"--cfg tokio_unstable\" (tokio's scheduler is seeded only then)"
)]
fn same_seed_gives_the_same_history() {
    let opts = RunOptions::default();
    let mut hashes = Vec::new();
    for seed in 1000..1000 + DETERMINISM_SEEDS {
        let a = run_seed(seed, &opts);
        let b = run_seed(seed, &opts);
        assert_eq!(
            (a.trace_hash, a.trace_events),
            (b.trace_hash, b.trace_events),
            "seed {seed} gave two histories; replay: {}",
            replay_command(seed)
        );
        hashes.push(a.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(
        hashes.len() as u64,
        DETERMINISM_SEEDS,
        "different seeds must give different histories"
    );
}
