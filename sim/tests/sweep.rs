//! The short sweep run by `cargo test --workspace --release`, and the
//! determinism check (same seed, same history). Both run the
//! `promraft-sim` program, which runs each seed in a fresh process.

use std::process::Command;

/// Seeds of the short sweep (about a minute on CI's two cores); override
/// with `PROMRAFT_SIM_SEEDS`.
const SWEEP_SEEDS: u64 = 150;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promraft-sim"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run promraft-sim");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn short_sweep_keeps_every_invariant() {
    let n: u64 = std::env::var("PROMRAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SWEEP_SEEDS);
    let (ok, out) = run(sim().args(["--seeds", &n.to_string(), "--from", "0"]));
    let summary: Vec<&str> = out.lines().skip_while(|l| !l.contains("seeds/s")).collect();
    println!("{}", summary.join("\n"));
    assert!(ok, "the sweep of {n} seeds failed:\n{out}");
    assert!(
        out.contains("crash-lose-unsynced") && out.contains("partition-leader-isolated"),
        "the sweep must inject faults:\n{out}"
    );
    // The simulated nodes purge their logs, so a node that was down or cut
    // off long enough catches up by a snapshot from the leader: over the
    // sweep's seeds, some must have been sent and installed.
    let installs: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("snapshots installed: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the sweep printed no snapshot count:\n{out}"));
    assert!(installs > 0, "no seed of the {n} installed a snapshot:\n{out}");
}

/// The `RESULT` line's trace hash of one seed run in its own process, and
/// the snapshots its nodes installed.
fn trace_of(seed: u64) -> (String, u64) {
    let (_, out) = run(sim().args(["--one", &seed.to_string()]));
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("seed {seed} printed no result:\n{out}"));
    let f: Vec<&str> = line.split(' ').collect();
    let installs = f.get(9).and_then(|n| n.parse().ok()).expect("a snapshot count");
    (f[3].to_string(), installs)
}

/// Seeds run twice by the determinism check.
const DETERMINISM_SEEDS: u64 = 4;

/// Set by the README's test command (`scripts/test`) where it builds with
/// `--cfg tokio_unstable`: then a build without the flag fails the
/// determinism check instead of skipping it.
const REQUIRE_TOKIO_UNSTABLE: &str = "PROMRAFT_SIM_REQUIRE_TOKIO_UNSTABLE";

#[test]
fn same_seed_gives_the_same_history() {
    if !cfg!(tokio_unstable) {
        let why = "this build lacks RUSTFLAGS=\"--cfg tokio_unstable\" (tokio's scheduler is seeded only then)";
        assert!(
            std::env::var(REQUIRE_TOKIO_UNSTABLE).as_deref() != Ok("1"),
            "{REQUIRE_TOKIO_UNSTABLE}=1 but {why}; run: RUSTFLAGS=\"--cfg tokio_unstable\" CARGO_TARGET_DIR=target-sim \
             cargo test --release -p promraft-sim --test sweep same_seed_gives_the_same_history"
        );
        println!("SKIP same_seed_gives_the_same_history: {why}; scripts/test runs it with the flag ({REQUIRE_TOKIO_UNSTABLE}=1)");
        return;
    }
    let mut hashes = Vec::new();
    let mut installs = 0;
    for seed in 1000..1000 + DETERMINISM_SEEDS {
        let (a, b) = (trace_of(seed), trace_of(seed));
        assert_eq!(
            a,
            b,
            "seed {seed} gave two histories; replay: {}",
            promraft_sim::run::replay_command(seed)
        );
        installs += a.1;
        hashes.push(a.0);
    }
    // Snapshot transfer (file spools, streamed) must replay too.
    assert!(installs > 0, "no seed of the determinism check installed a snapshot");
    hashes.sort();
    hashes.dedup();
    assert_eq!(
        hashes.len() as u64,
        DETERMINISM_SEEDS,
        "different seeds must give different histories"
    );
}
