//! `promraft-sim`: runs a sweep of seeds and reports seeds/s, faults by
//! kind, and every failing seed with the command that replays it.
//!
//! `cargo run --release -p promraft-sim -- --seeds N [--from S] [--bug NAME]`

use std::collections::BTreeMap;
use std::time::Instant;

use promraft_sim::run::replay_command;
use promraft_sim::{run_seed, RunOptions, RunReport};

fn usage() -> ! {
    eprintln!("usage: promraft-sim [--seeds N] [--from S] [--bug NAME] [--verbose]");
    std::process::exit(2)
}

fn main() {
    let mut seeds = 20u64;
    let mut from = 0u64;
    let mut verbose = false;
    let mut bugs: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{what} needs a number");
                usage()
            })
        };
        match a.as_str() {
            "--seeds" => seeds = num("--seeds"),
            "--from" => from = num("--from"),
            "--verbose" | "-v" => verbose = true,
            "--bug" => bugs.push(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if verbose {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    set_bugs(&bugs);
    if !cfg!(tokio_unstable) {
        eprintln!("note: built without --cfg tokio_unstable: tokio's scheduling is not seeded, so a seed may not replay exactly");
    }
    let opts = RunOptions::default();
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failed: Vec<RunReport> = Vec::new();
    let (mut acked, mut reads) = (0u64, 0u64);
    for seed in from..from + seeds {
        let r = run_seed(seed, &opts);
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
        acked += r.ops.writes_acked;
        reads += r.ops.reads_linearizable + r.ops.reads_local;
        println!(
            "seed {seed}: {} nodes, {} ms simulated, {} writes acked, {} failed, {} unknown, {} reads, {} terms, trace {:016x}: {}",
            r.nodes,
            r.sim_ms,
            r.ops.writes_acked,
            r.ops.writes_failed,
            r.writes_unknown,
            r.ops.reads_linearizable + r.ops.reads_local,
            r.terms,
            r.trace_hash,
            if r.passed() { "ok" } else { "FAILED" }
        );
        if !r.passed() {
            print_failure(&r);
            failed.push(r);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("\n{seeds} seeds in {secs:.1} s: {:.2} seeds/s", seeds as f64 / secs);
    println!("writes acknowledged: {acked}, reads checked: {reads}");
    println!("faults injected by kind:");
    for (k, v) in &faults {
        println!("  {k:<30} {v}");
    }
    if failed.is_empty() {
        println!("no failing seed");
    } else {
        println!("{} failing seeds:", failed.len());
        for r in &failed {
            println!(
                "  seed {}: {}  (replay: {})",
                r.seed,
                r.violations[0].detail,
                replay_command(r.seed)
            );
        }
        std::process::exit(1);
    }
}

/// Prints a failed seed's breaches, its last events and the replay command.
fn print_failure(r: &RunReport) {
    for v in &r.violations {
        println!("  violation of {} at {} ms: {}", v.invariant, v.at_ms, v.detail);
    }
    println!("  last events:");
    for e in &r.trace_tail {
        println!("    {e}");
    }
    println!("  replay: {}", replay_command(r.seed));
}

#[cfg(feature = "sim-bugs")]
fn set_bugs(names: &[String]) {
    use promraft::sim_bugs::{set, Bug};
    let bugs: Vec<Bug> = names
        .iter()
        .map(|n| {
            *Bug::ALL.iter().find(|b| b.name() == n).unwrap_or_else(|| {
                eprintln!("unknown bug {n:?}; known: {:?}", Bug::ALL.map(Bug::name));
                usage()
            })
        })
        .collect();
    set(&bugs);
}

#[cfg(not(feature = "sim-bugs"))]
fn set_bugs(names: &[String]) {
    if !names.is_empty() {
        eprintln!("--bug needs the sim-bugs feature: cargo run --release -p promraft-sim --features sim-bugs -- ...");
        usage()
    }
}
