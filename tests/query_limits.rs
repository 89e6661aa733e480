//! Query limits: going over the samples limit, the timeout or the
//! concurrency limit answers a clear Prometheus-style error, and the node
//! keeps serving.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `query.concurrency_max` of [`node_with_limits`].
const CONCURRENCY_MAX: usize = 2;

const FILE: &str = "query_limits";

fn node_with_limits(dir: &TestDir) -> TestNode {
    node_with_config(dir, "query:\n  samples_max: 50\n")
}

fn node_with_config(dir: &TestDir, yaml: &str) -> TestNode {
    let cfg = dir.path().join("limits.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
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
    // Samples every second up to base+199 s; the window (180 s, 200 s] is
    // left-open: 19 samples, in one series without its name.
    let v = r.json();
    let result = v["data"]["result"].as_array().expect("a result array");
    assert_eq!(v["data"]["resultType"], "vector", "{v}");
    assert_eq!(result.len(), 1, "one series expected: {v}");
    assert_eq!(result[0]["metric"], serde_json::json!({"job": "x"}), "{v}");
    assert_eq!(
        result[0]["value"][1], "19",
        "expected 19 samples in the window (180 s, 200 s]: {v}"
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
    // A deliberately heavy query (a 1 ms-step subquery over three hours) with a
    // 1 ms timeout.
    let r = n.get(
        "/api/v1/query",
        &[
            ("query", "max_over_time(sum(rate(load[5m]))[3h:1ms])"),
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

/// A query that keeps a slot for `timeout`: it runs until its timeout (a
/// 1 ms-step subquery over three hours), which comes long before it holds
/// [`CONCURRENCY_SAMPLES_MAX`] samples.
fn heavy_query(addr: String, time: String, timeout: &str) -> std::thread::JoinHandle<HttpResponse> {
    let target = with_query(
        "/api/v1/query",
        &[
            ("query", "max_over_time(sum(rate(load[5m]))[3h:1ms])"),
            ("time", time.as_str()),
            ("timeout", timeout),
        ],
    );
    std::thread::spawn(move || http_request(&addr, "GET", &target, &[], b"").expect("heavy query"))
}

/// `promraft_queries_limited_total` of the node.
fn queries_limited(node: &TestNode) -> f64 {
    let r = node.get("/metrics", &[]);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("promraft_queries_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no promraft_queries_limited_total in /metrics:\n{}", r.text()))
}

#[test]
fn queries_over_concurrency_max_wait_and_time_out_with_503() {
    let name = "queries_over_concurrency_max_wait_and_time_out_with_503";
    let dir = TestDir::new();
    let node = node_with_config(
        &dir,
        &format!("query:\n  concurrency_max: {CONCURRENCY_MAX}\n  samples_max: {CONCURRENCY_SAMPLES_MAX}\n"),
    );
    let base = now_ms() - 3_600_000;
    let series_list: Vec<_> = (0..20)
        .map(|s| {
            let samples: Vec<(i64, f64)> = (0..240).map(|i| (base + i * 15_000, (s * i) as f64)).collect();
            series(&[("__name__", "load"), ("s", &s.to_string())], &samples)
        })
        .collect();
    node.write_ok(&write_request(series_list));
    let time = secs(base + 3_600_000);
    // A quick query with a short timeout, to probe for a free slot.
    let probe = || {
        node.get(
            "/api/v1/query",
            &[("query", "count(load)"), ("time", &time), ("timeout", "300ms")],
        )
    };
    let limited_before = queries_limited(&node);

    // One slot of two taken: other queries still run.
    let held = HEAVY_QUERY_HOLDS;
    let first = heavy_query(node.http_addr.clone(), time.clone(), &format!("{}ms", held.as_millis()));
    let started = Instant::now();
    for _ in 0..5 {
        let r = probe();
        assert_eq!(
            r.status,
            200,
            "with one of {CONCURRENCY_MAX} slots taken a query must run: {}\nrepro: {}",
            r.text(),
            repro(FILE, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !first.is_finished(),
        "the heavy query ended within {} ms; it must hold its slot for {} ms",
        started.elapsed().as_millis(),
        held.as_millis()
    );

    // Both slots taken: a query waits for one, past its timeout, and is
    // refused with 503 timeout naming the slots.
    let second = heavy_query(node.http_addr.clone(), time.clone(), &format!("{}ms", held.as_millis()));
    let refused = poll_until(held / 2, || {
        let r = probe();
        match r.status {
            503 => Ok(r),
            200 => Err("a probe still found a free slot".to_string()),
            other => panic!("probe: expected 200 or 503, got {other}: {}", r.text()),
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "with {CONCURRENCY_MAX} heavy queries running, no probe was refused within {} ms: {e}\nrepro: {}",
            (held / 2).as_millis(),
            repro(FILE, name)
        )
    });
    assert!(
        !first.is_finished() && !second.is_finished(),
        "the refusal must come while both heavy queries hold their slots"
    );
    let v = refused.json();
    assert_eq!(v["errorType"], "timeout", "{v}");
    assert_eq!(
        v["error"],
        format!("query timed out waiting for one of {CONCURRENCY_MAX} query slots"),
        "{v}"
    );
    assert!(
        queries_limited(&node) > limited_before,
        "promraft_queries_limited_total must count the refused query"
    );

    // The heavy queries end at their own timeout; then the slots are free.
    for h in [first, second] {
        let r = h.join().expect("heavy query thread");
        assert_eq!(r.status, 503, "a heavy query past its timeout: {}", r.text());
        assert_eq!(r.json()["errorType"], "timeout", "{}", r.text());
    }
    let r = probe();
    assert_eq!(r.status, 200, "the slots are free again: {}", r.text());
}

/// How long each heavy query holds its slot (its timeout): long enough for
/// the probes above, which take milliseconds each, to run while it does.
const HEAVY_QUERY_HOLDS: Duration = Duration::from_secs(4);

/// `query.samples_max` of the concurrency test: four times the default.
/// The heavy query holds the default 50 million after about 8 s on a
/// two-core machine, so only a machine about eight times as fast would
/// reach this within its 4 s timeout; it ends by the timeout.
const CONCURRENCY_SAMPLES_MAX: u64 = 200_000_000;
