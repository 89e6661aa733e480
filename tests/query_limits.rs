//! Query limits: going over the samples limit or the timeout answers a clear
//! Prometheus-style error, and the node keeps serving.

mod common;

use std::time::Duration;

use common::*;

const FILE: &str = "tests/query_limits.rs";

fn node_with_limits(dir: &TestDir) -> TestNode {
    let cfg = dir.path().join("limits.yaml");
    std::fs::write(&cfg, "query:\n  samples_max: 50\n  concurrency_max: 2\n").expect("write config");
    let mut n = TestNode::start_with(
        1,
        &dir.path().join("node"),
        free_addr(),
        free_addr(),
        &["--config", cfg.to_str().expect("utf-8 path")],
    );
    n.wait_ready(Duration::from_secs(30));
    n
}

#[test]
fn a_query_over_the_samples_limit_is_refused_and_the_node_keeps_serving() {
    let dir = TestDir::new();
    let node = node_with_limits(&dir);
    let base = now_ms() - 600_000;
    let samples: Vec<(i64, f64)> = (0..200).map(|i| (base + i * 1000, i as f64)).collect();
    node.write_ok(&write_request(vec![series(
        &[("__name__", "big"), ("job", "x")],
        &samples,
    )]));

    let end = secs(base + 200_000);
    let r = node.get(
        "/api/v1/query",
        &[("query", "count_over_time(big[10m])"), ("time", &end)],
    );
    let v = r.json();
    assert!(
        r.status == 422 && v["errorType"] == "execution" && v["error"].as_str().is_some_and(|e| e.contains("samples")),
        "a query loading 200 samples with query.samples_max=50: expected 422 execution naming the samples limit, \
         got {} {}; reproduce: {}",
        r.status,
        r.text(),
        repro(
            FILE,
            "a_query_over_the_samples_limit_is_refused_and_the_node_keeps_serving"
        )
    );
    // A query within the limit still works on the same node.
    let r = node.get(
        "/api/v1/query",
        &[("query", "count_over_time(big[20s])"), ("time", &end)],
    );
    assert_eq!(r.status, 200, "a small query after the refused one: {}", r.text());
    // Samples every second up to base+199 s; the window (180 s, 200 s] is left-open: 19 samples.
    assert!(
        r.text().contains("\"19\""),
        "expected 19 samples in the window: {}",
        r.text()
    );
}

#[test]
fn a_query_past_its_timeout_fails_with_503_timeout() {
    let dir = TestDir::new();
    let mut n = TestNode::start(1, &dir.path().join("node"));
    n.wait_ready(Duration::from_secs(30));
    let base = now_ms() - 3_600_000;
    let series_list: Vec<_> = (0..200)
        .map(|s| {
            let samples: Vec<(i64, f64)> = (0..240).map(|i| (base + i * 15_000, (s * i) as f64)).collect();
            series(&[("__name__", "load"), ("s", &s.to_string())], &samples)
        })
        .collect();
    n.write_ok(&write_request(series_list));
    // A deliberately heavy query (a 1 ms-step subquery over an hour) with a
    // 1 ms timeout.
    let r = n.get(
        "/api/v1/query",
        &[
            ("query", "max_over_time(sum(rate(load[5m]))[1h:1ms])"),
            ("time", &secs(base + 3_600_000)),
            ("timeout", "1ms"),
        ],
    );
    let v = r.json();
    assert!(
        r.status == 503 && v["errorType"] == "timeout",
        "expected 503 with errorType timeout for a heavy query with timeout=1ms, got {} {}; reproduce: {}",
        r.status,
        r.text(),
        repro(FILE, "a_query_past_its_timeout_fails_with_503_timeout")
    );
    let r = n.get("/api/v1/query", &[("query", "1+1")]);
    assert_eq!(
        r.status,
        200,
        "the node must keep serving after a timed-out query: {}",
        r.text()
    );
}
