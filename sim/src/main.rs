//! `promraft-sim`: runs a sweep of seeds and reports seeds/s, faults by
//! kind, and every failing seed with the command that replays it.
//!
//! `cargo run --release -p promraft-sim -- --seeds N [--from S] [--bug NAME]`
//!
//! Each seed runs in a fresh child process (`--one SEED`): runs in one
//! process leak a little state from one to the next (see
//! docs/simulation.md), so only a fresh process makes a seed's history
//! depend on the seed alone. `--in-process` runs them here instead.
//!
//! For programs that read the outcome (`sim/tests/`): every invariant a
//! failing seed breached is printed on a line of its own,
//! `VIOLATED seed=<seed> invariant=<name>`, and the exit status tells the
//! outcomes apart: [`EXIT_PASSED`], [`EXIT_USAGE`], [`EXIT_VIOLATED`],
//! [`EXIT_CRASHED`] (a seed's child process died without a verdict; a
//! panic of this process itself exits with Rust's 101).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use promraft_sim::run::replay_command;
use promraft_sim::{run_seed, RunOptions, RunReport};

/// The allocator the node binary runs with (src/main.rs), also faster
/// here: allocation is a good part of a seed's time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status: every seed kept every invariant.
const EXIT_PASSED: i32 = 0;
/// Exit status: the command line was wrong (an unknown flag or bug name).
const EXIT_USAGE: i32 = 2;
/// Exit status: some seed breached an invariant (see the `VIOLATED` lines),
/// and every seed came to a verdict.
const EXIT_VIOLATED: i32 = 3;
/// Exit status: a seed's child process died without a verdict.
const EXIT_CRASHED: i32 = 4;

fn usage() -> ! {
    eprintln!(
        "usage: promraft-sim [--seeds N] [--from S] [--bug NAME] [--stop-at-first-failure] [--stop-at-invariant NAME] [--jobs N] [--in-process] [--verbose]"
    );
    std::process::exit(EXIT_USAGE)
}

/// The machine-readable line of one breached invariant.
fn violated_line(seed: u64, invariant: &str) -> String {
    format!("VIOLATED seed={seed} invariant={invariant}")
}

/// Totals of one seed, as a child process reports them to the sweep.
struct SeedResult {
    seed: u64,
    passed: bool,
    hash: u64,
    acked: u64,
    reads: u64,
    terms: u64,
    snapshot_installs: u64,
    faults: Vec<(String, u64)>,
    /// The invariants breached, in the order first seen.
    violated: Vec<String>,
    /// False when the child died without printing its result.
    verdict: bool,
    output: String,
}

/// The line a child prints last:
/// `RESULT seed passed hash acked reads terms kind=n,... invariant,...|- snapshot_installs`.
fn result_line(r: &RunReport) -> String {
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let violated = r.violated();
    format!(
        "RESULT {} {} {:016x} {} {} {} {} {} {}",
        r.seed,
        u8::from(r.passed()),
        r.trace_hash,
        r.ops.writes_acked,
        r.ops.reads_linearizable + r.ops.reads_local,
        r.terms,
        faults.join(","),
        if violated.is_empty() {
            "-".to_string()
        } else {
            violated.join(",")
        },
        r.snapshot_installs
    )
}

fn parse_result(output: String) -> Option<SeedResult> {
    let line = output.lines().rev().find(|l| l.starts_with("RESULT "))?;
    let f: Vec<&str> = line.split(' ').collect();
    let faults = f
        .get(7)
        .unwrap_or(&"")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    Some(SeedResult {
        seed: f.get(1)?.parse().ok()?,
        passed: *f.get(2)? == "1",
        hash: u64::from_str_radix(f.get(3)?, 16).ok()?,
        acked: f.get(4)?.parse().ok()?,
        reads: f.get(5)?.parse().ok()?,
        terms: f.get(6)?.parse().ok()?,
        snapshot_installs: f.get(9)?.parse().ok()?,
        faults,
        violated: match *f.get(8)? {
            "-" => Vec::new(),
            list => list.split(',').map(str::to_string).collect(),
        },
        verdict: true,
        output,
    })
}

/// Prints one seed's summary line.
fn summary(r: &RunReport) -> String {
    format!(
        "seed {}: {} nodes, {} ms simulated, {} writes acked, {} failed, {} unknown, {} reads, {} terms, {} snapshots installed, trace {:016x}: {}",
        r.seed,
        r.nodes,
        r.sim_ms,
        r.ops.writes_acked,
        r.ops.writes_failed,
        r.writes_unknown,
        r.ops.reads_linearizable + r.ops.reads_local,
        r.terms,
        r.snapshot_installs,
        r.trace_hash,
        if r.passed() { "ok" } else { "FAILED" }
    )
}

/// Runs `seed` in this process and reports it as a [`SeedResult`].
fn run_here(seed: u64, opts: &RunOptions) -> SeedResult {
    let r = run_seed(seed, opts);
    let mut output = summary(&r) + "\n";
    if !r.passed() {
        output += &failure_text(&r);
    }
    output += &result_line(&r);
    parse_result(output).expect("our own result line parses")
}

/// Runs `seed` in a fresh child process, so that its history depends on
/// the seed alone (and the replay command reproduces it exactly).
fn run_child(seed: u64, bugs: &[String]) -> SeedResult {
    let exe = std::env::current_exe().expect("the path of this program");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--one").arg(seed.to_string());
    for b in bugs {
        cmd.arg("--bug").arg(b);
    }
    let out = cmd.output().expect("start a child for one seed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_result(text.clone()).unwrap_or_else(|| SeedResult {
        seed,
        passed: false,
        hash: 0,
        acked: 0,
        reads: 0,
        terms: 0,
        snapshot_installs: 0,
        faults: Vec::new(),
        violated: Vec::new(),
        verdict: false,
        output: format!(
            "seed {seed}: the child process died ({}): {text}{}\n",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn main() {
    let mut seeds = 20u64;
    let mut from = 0u64;
    let mut one: Option<u64> = None;
    let mut verbose = false;
    let mut in_process = false;
    let mut stop_at_first = false;
    // Stop after the first seed that breaches this invariant (the
    // deliberate-bug test looks for the invariant a bug names).
    let mut stop_at_invariant: Option<String> = None;
    let mut bugs: Vec<String> = Vec::new();
    // Seeds run at once, each in its own child process (default: one per core).
    let mut jobs: Option<usize> = None;
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
            "--jobs" | "-j" => jobs = Some(num("--jobs").max(1) as usize),
            "--one" => one = Some(num("--one")),
            "--verbose" | "-v" => verbose = true,
            "--in-process" => in_process = true,
            "--stop-at-first-failure" => stop_at_first = true,
            "--stop-at-invariant" => stop_at_invariant = Some(args.next().unwrap_or_else(|| usage())),
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
    let opts = RunOptions::default();
    if let Some(seed) = one {
        let r = run_seed(seed, &opts);
        println!("{}", summary(&r));
        if !r.passed() {
            print!("{}", failure_text(&r));
        }
        for v in r.violated() {
            println!("{}", violated_line(seed, v));
        }
        println!("{}", result_line(&r));
        std::process::exit(if r.passed() { EXIT_PASSED } else { EXIT_VIOLATED });
    }
    if !cfg!(tokio_unstable) {
        eprintln!("note: built without --cfg tokio_unstable: tokio's scheduling is not seeded, so a seed may not replay exactly");
    }
    let started = Instant::now();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: Vec<SeedResult> = Vec::new();
    let (mut acked, mut reads, mut terms, mut ran, mut installs) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let jobs = if in_process {
        1
    } else {
        jobs.unwrap_or_else(default_jobs)
    };
    let sweep = Sweep::start(from, seeds, jobs, bugs.clone(), in_process.then(|| opts.clone()));
    for r in sweep {
        ran += 1;
        for (k, v) in &r.faults {
            *faults.entry(k.clone()).or_default() += v;
        }
        acked += r.acked;
        reads += r.reads;
        terms += r.terms;
        installs += r.snapshot_installs;
        for l in r
            .output
            .lines()
            .filter(|l| !l.starts_with("RESULT ") && !l.starts_with("VIOLATED "))
        {
            if r.passed && !l.starts_with("seed ") {
                continue;
            }
            println!("{l}");
        }
        let _ = r.hash;
        if !r.passed {
            let wanted = stop_at_invariant.as_ref().is_some_and(|inv| r.violated.contains(inv));
            failed.push(r);
            if stop_at_first || wanted {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\n{ran} seeds in {secs:.1} s: {:.2} seeds/s ({jobs} seeds at a time, {:.2} seeds/s each)",
        ran as f64 / secs,
        ran as f64 / secs / jobs as f64
    );
    println!("snapshots installed: {installs}");
    println!("writes acknowledged: {acked}, reads checked: {reads}, terms with a leader: {terms}");
    println!("faults injected by kind:");
    for (k, v) in &faults {
        println!("  {k:<30} {v}");
    }
    if failed.is_empty() {
        println!("no failing seed");
    } else {
        println!("{} failing seeds:", failed.len());
        for r in &failed {
            let first = r
                .output
                .lines()
                .find(|l| l.starts_with("  violation"))
                .unwrap_or("  (no detail)");
            println!("  seed {}:{}", r.seed, &first[1..]);
            println!("    replay: {}", replay_with_bugs(r.seed, &bugs));
        }
        for r in &failed {
            for v in &r.violated {
                println!("{}", violated_line(r.seed, v));
            }
        }
        let crashed = failed.iter().filter(|r| !r.verdict).count();
        if crashed > 0 {
            println!("{crashed} seeds crashed without a verdict");
            std::process::exit(EXIT_CRASHED);
        }
        std::process::exit(EXIT_VIOLATED);
    }
}

/// One seed at a time per core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A sweep in progress: `jobs` worker threads each run one seed at a time
/// (in a child process, or here with `in_process`), and the results come
/// out in seed order, whatever order they finish in, so the sweep prints
/// and stops exactly as a sequential one would. Dropping it stops the
/// workers after their current seed.
struct Sweep {
    rx: mpsc::Receiver<SeedResult>,
    done: BTreeMap<u64, SeedResult>,
    next: u64,
    end: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Sweep {
    fn start(from: u64, seeds: u64, jobs: usize, bugs: Vec<String>, in_process: Option<RunOptions>) -> Sweep {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let next_seed = Arc::new(AtomicU64::new(from));
        let end = from + seeds;
        let workers = (0..jobs)
            .map(|_| {
                let (tx, stop, next_seed, bugs, opts) = (
                    tx.clone(),
                    stop.clone(),
                    next_seed.clone(),
                    bugs.clone(),
                    in_process.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            break;
                        }
                        let r = match &opts {
                            Some(opts) => run_here(seed, opts),
                            None => run_child(seed, &bugs),
                        };
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Sweep {
            rx,
            done: BTreeMap::new(),
            next: from,
            end,
            stop,
            workers,
        }
    }
}

impl Iterator for Sweep {
    type Item = SeedResult;

    fn next(&mut self) -> Option<SeedResult> {
        if self.next >= self.end {
            return None;
        }
        while !self.done.contains_key(&self.next) {
            let r = self.rx.recv().ok()?;
            self.done.insert(r.seed, r);
        }
        let r = self.done.remove(&self.next);
        self.next += 1;
        r
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Let workers blocked on a send see the channel closed.
        let (_, rx) = mpsc::channel();
        drop(std::mem::replace(&mut self.rx, rx));
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The replay command of `seed`, with the deliberate bugs switched on.
fn replay_with_bugs(seed: u64, bugs: &[String]) -> String {
    if bugs.is_empty() {
        return replay_command(seed);
    }
    let flags: String = bugs.iter().map(|b| format!(" --bug {b}")).collect();
    replay_command(seed).replace("-p promraft-sim --", "-p promraft-sim --features sim-bugs --") + &flags
}

/// A failed seed's breaches, its last events and the replay command.
fn failure_text(r: &RunReport) -> String {
    let mut s = String::new();
    for v in &r.violations {
        s += &format!("  violation of {} at {} ms: {}\n", v.invariant, v.at_ms, v.detail);
    }
    s += "  last events:\n";
    for e in &r.trace_tail {
        s += &format!("    {e}\n");
    }
    s += &format!("  replay: {}\n", replay_command(r.seed));
    s
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
