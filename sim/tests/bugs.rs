//! The sweep finds promraft's deliberate bugs (feature `sim-bugs`):
//! `RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target-sim cargo test --release -p promraft-sim --features sim-bugs --test bugs -- --nocapture`.
#![cfg(feature = "sim-bugs")]

use std::process::Command;

/// The sweep's default seeds: each bug must be found within them.
const BUG_SEEDS: u64 = 100;

/// Runs the sweep with `bug` switched on; the first failing seed's lines.
fn first_failure(bug: &str) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_promraft-sim"))
        .args([
            "--seeds",
            &BUG_SEEDS.to_string(),
            "--from",
            "0",
            "--stop-at-first-failure",
            "--bug",
            bug,
        ])
        .output()
        .expect("run promraft-sim");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return None;
    }
    let failing: Vec<&str> = text.lines().skip_while(|l| !l.ends_with("failing seeds:")).collect();
    Some(failing.join("\n"))
}

#[test]
fn sweep_finds_each_deliberate_bug() {
    let mut missed = Vec::new();
    for bug in [
        "ack-before-commit",
        "read-without-read-index-wait",
        "append-without-fsync",
    ] {
        match first_failure(bug) {
            Some(found) => println!("{bug}: {found}"),
            None => missed.push(bug),
        }
    }
    assert!(missed.is_empty(), "the sweep of {BUG_SEEDS} seeds missed {missed:?}");
}
