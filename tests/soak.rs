//! Soak: a three-node cluster under saturating remote write with dashboard
//! queries running, and what a user would see of it: leader changes,
//! non-2xx answers, acknowledged samples per second and write latency.
//! Figures are printed, not asserted; what is asserted is that the load
//! got through and that the replicas agree afterwards.
//!
//! By default a short run (20 s). The full one (docs/benchmarks.md):
//!
//! ```text
//! PROMRAFT_SOAK_SECS=600 cargo test --release --test soak -- --nocapture
//! ```
//!
//! The load is the one that used to cost elections: one sender to node 1,
//! 100,000 series, one sample per series per request, 5,000 samples per
//! request, 4 connections (`promraft bench write`'s workers, every failed
//! attempt counted by status); meanwhile two query threads run range
//! queries of the kind a dashboard refreshes against nodes 2 and 3, and a
//! monitor reads every node's term and leader every 100 ms.

// A test here is one scenario read top to bottom; split into helpers it
// would scatter the story, so long test functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "soak";
/// Series the sender writes (node_exporter-like, `bench::workload`).
const SERIES: usize = 100_000;
/// Series (one sample each) per request.
const BATCH_SERIES: usize = 5_000;
/// Sender connections.
const CONNECTIONS: usize = 4;
/// Default run length; `PROMRAFT_SOAK_SECS` overrides it.
const DEFAULT_SECS: u64 = 20;
/// How often the monitor reads every node's view of the cluster.
const MONITOR_EVERY: Duration = Duration::from_millis(100);

/// Dashboard-like range queries (the workload's metric names).
const QUERIES: &[&str] = &[
    "sum by (mode) (rate(node_cpu_seconds_total[1m]))",
    "topk(5, rate(node_network_receive_bytes_total[1m]))",
    "sum(node_filesystem_avail_bytes) by (mountpoint)",
    "max(node_procs_running)",
];

fn soak_secs() -> u64 {
    std::env::var("PROMRAFT_SOAK_SECS").map_or(DEFAULT_SECS, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("PROMRAFT_SOAK_SECS={v:?} is not a number: {e}"))
    })
}

/// What the monitor saw: every (node, term, leader) change, in order.
#[derive(Default)]
struct Seen {
    views: BTreeMap<u64, (u64, Option<u64>)>,
    changes: Vec<String>,
    max_term: u64,
    unanswered: u64,
}

#[test]
fn saturating_ingest_with_queries_keeps_its_leader() {
    let name = "saturating_ingest_with_queries_keeps_its_leader";
    let secs = soak_secs();
    let raft = RaftTiming::default();
    let mut c = Cluster::start(3, raft, "");
    let all = c.ids();
    let view = c.wait_leader(&all, CLUSTER_READY_TIMEOUT);
    let first_leader = view.leader_id.expect("a leader");
    let term_before = view.term;
    let stop = Arc::new(AtomicBool::new(false));

    // The monitor.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let monitor = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let addrs: Vec<(u64, String)> = c.targets(&all);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (id, addr) in &addrs {
                    let v = cluster_status(addr);
                    let mut s = seen.lock().expect("monitor lock");
                    match v {
                        Ok(v) => {
                            s.max_term = s.max_term.max(v.term);
                            let now = (v.term, v.leader_id);
                            if let Some(before) = s.views.insert(*id, now).filter(|b| *b != now) {
                                s.changes.push(format!(
                                    "node {id}: term {} leader {:?} -> term {} leader {:?}",
                                    before.0, before.1, now.0, now.1
                                ));
                            }
                        }
                        Err(_) => s.unanswered += 1,
                    }
                }
                std::thread::sleep(MONITOR_EVERY);
            }
        })
    };

    // The dashboards.
    let queries = Arc::new(Mutex::new((0u64, BTreeMap::<u16, u64>::new(), Vec::<Duration>::new())));
    let query_threads: Vec<_> = [2u64, 3]
        .iter()
        .map(|&id| {
            let (stop, queries) = (stop.clone(), queries.clone());
            let addr = c.node(id).http_addr.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let end = now_ms();
                    let (start_s, end_s) = (common::secs(end - 3_600_000), common::secs(end));
                    let params = [
                        ("query", QUERIES[i % QUERIES.len()]),
                        ("start", start_s.as_str()),
                        ("end", end_s.as_str()),
                        ("step", "60"),
                    ];
                    i += 1;
                    let target = with_query("/api/v1/query_range", &params);
                    let t0 = Instant::now();
                    let r = http_request(&addr, "GET", &target, &[], b"");
                    let took = t0.elapsed();
                    let mut q = queries.lock().expect("query lock");
                    q.0 += 1;
                    match r {
                        Ok(r) if r.status == 200 => q.2.push(took),
                        Ok(r) => *q.1.entry(r.status).or_default() += 1,
                        Err(_) => *q.1.entry(0).or_default() += 1,
                    }
                    drop(q);
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();

    // The sender, for `secs` of wall time over a history longer than that.
    let url = format!("http://{}/api/v1/write", c.node(1).http_addr);
    let args = promraft::bench::write::WriteBenchArgs {
        url,
        series: SERIES,
        interval: Duration::from_secs(15),
        // Ten days up to now: inside the default retention (15 d), so that
        // the leader's retention entries (every minute) cut nothing the
        // writer still sends; from 30 days ago every write past the first
        // minute was out of bounds.
        duration: Duration::from_secs(10 * 86_400),
        concurrency: CONNECTIONS,
        start: None,
        batch_series: BATCH_SERIES,
        seed: 1,
        timeout: Duration::from_secs(30),
        max_retries: 8,
        run_for: Some(Duration::from_secs(secs)),
        client: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the sender");
    let report = rt
        .block_on(promraft::bench::write::run(args))
        .expect("the write benchmark runs");
    stop.store(true, Ordering::Relaxed);
    monitor.join().expect("monitor thread");
    for t in query_threads {
        t.join().expect("query thread");
    }

    let end_view = c.wait_leader(&all, Duration::from_secs(30));
    let seen = seen.lock().expect("monitor lock");
    let q = queries.lock().expect("query lock");
    let mut qlat = q.2.clone();
    qlat.sort();
    let non_2xx: u64 = report.errors_by_status.values().sum();
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{} ms", d.as_millis()));
    println!("==== soak: {secs} s, three nodes, {SERIES} series, {BATCH_SERIES} samples per request, {CONNECTIONS} connections to node 1, queries on nodes 2 and 3 ====");
    println!(
        "leader changes: {} (term {term_before} -> {}, highest term seen {}; leader {first_leader} -> {:?})",
        end_view.term - term_before,
        end_view.term,
        seen.max_term,
        end_view.leader_id
    );
    for ch in &seen.changes {
        println!("  {ch}");
    }
    println!(
        "writes: {} requests acknowledged, non-2xx attempts {non_2xx} {:?}, transport errors {}, retries {}, samples failed {}",
        report.requests, report.errors_by_status, report.transport_errors, report.retries, report.samples_failed
    );
    println!(
        "acknowledged samples/s: {:.0} ({} samples in {:.1} s)",
        report.samples_per_sec,
        report.samples_acked,
        report.elapsed.as_secs_f64()
    );
    println!(
        "write latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.latency_p50_ms, report.latency_p99_ms, report.latency_max_ms
    );
    println!(
        "queries: {} sent, non-2xx {:?}, latency p50 {}, p99 {}, max {}; monitor reads unanswered: {}",
        q.0,
        q.1,
        ms(percentile(&qlat, 50.0)),
        ms(percentile(&qlat, 99.0)),
        ms(qlat.last().copied()),
        seen.unanswered
    );
    if let Some(e) = &report.last_error {
        println!("last write error: {e}");
    }
    println!("rerun: PROMRAFT_SOAK_SECS=600 cargo test --release --test {FILE} -- --nocapture");

    assert!(
        report.samples_acked > 0,
        "no write was acknowledged in {secs} s: {report}\n{}\nrepro: {}",
        c.describe(),
        repro(FILE, name)
    );
    assert_eq!(
        report.samples_failed,
        0,
        "writes failed for good (retries exhausted or refused): {report}\nrepro: {}",
        repro(FILE, name)
    );
    // Every replica holds the same data once the load stops.
    let d = c.wait_converged(&all, Duration::from_secs(120));
    println!("replicas converged: {} series, {} samples", d.series, d.samples);
    assert!(
        d.samples >= report.samples_acked,
        "{d:?} holds fewer samples than were acknowledged: {report}"
    );
}
