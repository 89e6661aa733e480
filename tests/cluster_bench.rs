//! Failover and throughput figures of a three-node cluster, printed, not
//! asserted (beyond every kill being survived and no acknowledged sample
//! being lost).
//!
//! By default a short run: 3 leader kills and 5 s of throughput per setup.
//! The full run:
//!
//! ```text
//! PROMRAFT_FAILOVER_KILLS=20 cargo test --release --test cluster_bench -- --nocapture
//! ```
//!
//! (`PROMRAFT_BENCH_SECS` overrides the throughput duration; it is 10 s
//! when `PROMRAFT_FAILOVER_KILLS` is set.)
//!
//! Figures:
//! - write-unavailability window per kill: from the last write acknowledged
//!   before the SIGKILL of the leader to the first acknowledged after it,
//!   seen by writers sending continuously to every node (p50, p99, max);
//! - election rounds per kill: the term increase between the old and the
//!   new leader, from `/api/v1/status/cluster`;
//! - acknowledged samples per second of the three-node cluster and of a
//!   single node, with the same writers (4 threads, 100 series x 10 samples
//!   per request).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "cluster_bench";
const FAILOVER_METRIC: &str = "promraft_bench_failover";
const THROUGHPUT_METRIC: &str = "promraft_bench_throughput";
/// Writer threads of the throughput runs.
const THROUGHPUT_WRITERS: usize = 4;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

fn throughput_spec(base_ms: i64) -> WriterSpec {
    WriterSpec {
        metric: THROUGHPUT_METRIC.to_string(),
        series: 100,
        samples: 10,
        base_ms,
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

/// Runs the writers against `targets` for `secs`; returns acknowledged
/// samples per second and the results.
fn measure(targets: Vec<Vec<(u64, String)>>, secs: u64) -> (f64, Vec<WriterResult>) {
    let spec = throughput_spec(now_ms() - 3_600_000);
    let load = WriteLoad::start(&spec, targets);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let results = load.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let acked: usize = results.iter().map(|r| r.oracle.acked_samples()).sum();
    (acked as f64 / elapsed, results)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

#[test]
fn failover_window_and_throughput() {
    let name = "failover_window_and_throughput";
    let full = env_u64("PROMRAFT_FAILOVER_KILLS");
    let kills = full.unwrap_or(3);
    let secs = env_u64("PROMRAFT_BENCH_SECS").unwrap_or(if full.is_some() { 10 } else { 5 });
    let raft = RaftTiming::default();
    let mut c = Cluster::start(3, raft, "");
    let all = c.ids();

    // Failover under a continuous small-request load on every node.
    let mut targets: Vec<Vec<(u64, String)>> = all.iter().map(|&id| c.targets(&[id])).collect();
    targets.push(c.targets(&all));
    let load = WriteLoad::start(&WriterSpec::small(FAILOVER_METRIC, 2, now_ms() - 7_200_000), targets);
    let mut windows = Vec::new();
    let mut detect = Vec::new();
    let mut rounds = Vec::new();
    for k in 0..kills {
        let view = c.wait_leader(&all, Duration::from_secs(30));
        let leader = view.leader_id.expect("a leader");
        load.wait_more_acks(50, Duration::from_secs(30));
        let killed_at = Instant::now();
        c.node_mut(leader).kill9();
        let first = poll_until(Duration::from_secs(30), || {
            load.first_ack_sent_after(killed_at, Some(leader))
                .ok_or_else(|| "none yet".to_string())
        })
        .unwrap_or_else(|e| {
            panic!(
                "kill {k}: no write acknowledged within 30 s of killing leader {leader}: {e}\nrepro: {}",
                repro(FILE, name)
            )
        });
        let last_before = load
            .attempts()
            .iter()
            .filter(|a| a.acked() && a.done < killed_at)
            .map(|a| a.done)
            .max()
            .expect("acknowledged writes before the kill");
        let survivors: Vec<u64> = all.iter().copied().filter(|&id| id != leader).collect();
        let new_view = c.wait_leader(&survivors, Duration::from_secs(30));
        let window = first.done - last_before;
        let term_rounds = new_view.term - view.term;
        println!(
            "kill {k}: leader {leader} (term {}) -> leader {:?} (term {}): {} round(s), unavailable {} ms, first 204 \
             {} ms after the kill",
            view.term,
            new_view.leader_id,
            new_view.term,
            term_rounds,
            window.as_millis(),
            (first.done - killed_at).as_millis()
        );
        windows.push(window);
        detect.push(first.done - killed_at);
        rounds.push(term_rounds);
        c.node_mut(leader).restart();
        c.node_mut(leader).wait_ready(READY_TIMEOUT);
    }
    let results = load.stop();
    let oracle = merged_oracle(&results);
    c.wait_converged(&all, CONVERGE_TIMEOUT);
    for &id in &all {
        let problems = oracle
            .check_replica(&c.node(id).http_addr, FAILOVER_METRIC)
            .unwrap_or_else(|e| panic!("reading node {id}: {e}"));
        assert!(
            problems.is_empty(),
            "after {kills} failovers node {id} does not hold exactly what was acknowledged:\n{}\nrepro: {}",
            problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
            repro(FILE, name)
        );
    }
    let unexpected: Vec<&String> = results.iter().flat_map(|r| &r.unexpected).collect();
    assert!(unexpected.is_empty(), "answers other than 204/503: {unexpected:?}");

    // Throughput: the same writers against the cluster, then one node.
    let cluster_targets: Vec<Vec<(u64, String)>> = (0..THROUGHPUT_WRITERS)
        .map(|w| c.targets(&[all[w % all.len()]]))
        .collect();
    let (cluster_rate, cluster_results) = measure(cluster_targets, secs);
    drop(c);

    let dir = TestDir::new();
    let mut single = TestNode::start(1, &dir.path().join("single"));
    single.wait_ready(READY_TIMEOUT);
    let single_targets: Vec<Vec<(u64, String)>> = (0..THROUGHPUT_WRITERS)
        .map(|_| vec![(1, single.http_addr.clone())])
        .collect();
    let (single_rate, single_results) = measure(single_targets, secs);
    single.stop(STOP_TIMEOUT).expect("stop the single node");

    let failed = |rs: &[WriterResult]| rs.iter().map(|r| r.requests_failed).sum::<usize>();
    println!(
        "==== failover benchmark ({kills} leader kills, election timeout {}..{} ms) ====",
        raft.election_min_ms, raft.election_max_ms
    );
    println!(
        "write-unavailability window: p50 {}, p99 {}, max {}",
        ms(percentile(&windows, 50.0)),
        ms(percentile(&windows, 99.0)),
        ms(windows.iter().max().copied())
    );
    println!(
        "kill -> first 204:           p50 {}, p99 {}, max {}",
        ms(percentile(&detect, 50.0)),
        ms(percentile(&detect, 99.0)),
        ms(detect.iter().max().copied())
    );
    println!(
        "election rounds per kill: {rounds:?} (mean {:.2})",
        rounds.iter().sum::<u64>() as f64 / rounds.len().max(1) as f64
    );
    println!(
        "acknowledged samples/s ({THROUGHPUT_WRITERS} writers, 100 series x 10 samples per request, {secs} s): \
         three-node cluster {cluster_rate:.0} ({} requests given up), single node {single_rate:.0} ({} given up), \
         ratio {:.2}",
        failed(&cluster_results),
        failed(&single_results),
        cluster_rate / single_rate.max(1.0)
    );
    println!("rerun: PROMRAFT_FAILOVER_KILLS=20 cargo test --release --test {FILE} -- --nocapture");
}
