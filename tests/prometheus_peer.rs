//! promraft against the real Prometheus tools: a Prometheus server that
//! scrapes itself and remote-writes everything to promraft, and `promtool`
//! querying promraft's HTTP API.
//!
//! The programs come from `PATH` (Debian's `prometheus` and `promtool`,
//! 2.42). Without them the tests print why and pass, unless
//! `PROMRAFT_REQUIRE_PEERS=1`, which makes a missing program a failure (set
//! it in CI, where the programs are installed on purpose).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;

const FILE: &str = "prometheus_peer";

/// How long Prometheus may take to start, scrape itself a few times and
/// push the samples through remote write. With a 1 s scrape interval and a
/// 200 ms batch deadline this takes a few seconds.
const PEER_TIMEOUT: Duration = Duration::from_secs(40);

/// Scrapes Prometheus must have done before the comparison.
const SCRAPES_MIN: f64 = 5.0;

/// Samples Prometheus must have sent before the comparison (its own metrics
/// are several hundred series, so this is about two scrapes' worth).
const SAMPLES_SENT_MIN: f64 = 1_000.0;

/// Window before the cut-off whose samples are compared, ms. Not a whole
/// number of scrape intervals, so neither edge falls on a scrape.
const COMPARE_WINDOW_MS: i64 = 3_500;

/// The newest timestamp among `up` samples of the last minute on a server.
fn newest_up_ms(addr: &str) -> Option<i64> {
    let now = now_ms();
    let data = api_get(
        addr,
        "/api/v1/query",
        &[("query", r#"up{job="prometheus"}[1m]"#), ("time", &secs(now))],
    );
    parse_matrix(&data["result"])
        .values()
        .filter_map(|points| points.last().map(|p| p.0))
        .max()
}

/// Series matching `{job="prometheus"}` on a server, optionally in a window.
fn job_series(addr: &str, window: Option<(i64, i64)>) -> BTreeSet<LabelSet> {
    let (start, end) = window.map_or((String::new(), String::new()), |(s, e)| (secs(s), secs(e)));
    let mut params = vec![("match[]", r#"{job="prometheus"}"#)];
    if window.is_some() {
        params.push(("start", &start));
        params.push(("end", &end));
    }
    api_get(addr, "/api/v1/series", &params)
        .as_array()
        .unwrap_or_else(|| panic!("series from {addr}: expected an array"))
        .iter()
        .map(label_set)
        .collect()
}

/// Raw samples of `{job="prometheus"}` in `(t - window, t]`, values as bits
/// so that NaN compares equal to NaN.
fn job_samples(addr: &str, t_ms: i64) -> BTreeMap<LabelSet, Vec<(i64, u64)>> {
    let query = format!(r#"{{job="prometheus"}}[{COMPARE_WINDOW_MS}ms]"#);
    let data = api_get(addr, "/api/v1/query", &[("query", &query), ("time", &secs(t_ms))]);
    parse_matrix(&data["result"])
        .into_iter()
        .map(|(ls, points)| (ls, points.into_iter().map(|(t, v)| (t, v.to_bits())).collect()))
        .collect()
}

/// Prometheus's own metrics page.
fn prometheus_metrics(addr: &str) -> String {
    let r = http_request(addr, "GET", "/metrics", &[], b"").unwrap_or_else(|e| panic!("GET /metrics from {addr}: {e}"));
    assert_eq!(r.status, 200, "Prometheus /metrics: {}", r.status);
    r.text()
}

/// The first of `names` present in `exposition`, summed over label sets.
fn first_metric(exposition: &str, names: &[&str]) -> Option<(String, f64)> {
    names
        .iter()
        .find_map(|n| metric_sum(exposition, n).map(|v| (n.to_string(), v)))
}

/// Every line about remote storage, for failure messages.
fn remote_storage_lines(exposition: &str) -> String {
    exposition
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_") && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

const SENT_NAMES: &[&str] = &[
    "prometheus_remote_storage_samples_total",
    "prometheus_remote_storage_succeeded_samples_total",
];
const FAILED_NAMES: &[&str] = &[
    "prometheus_remote_storage_samples_failed_total",
    "prometheus_remote_storage_failed_samples_total",
];

#[test]
fn prometheus_remote_writes_its_own_series_to_promraft() {
    const TEST: &str = "prometheus_remote_writes_its_own_series_to_promraft";
    let Some(prometheus) = peer("prometheus", TEST) else {
        return;
    };
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("promraft"));
    node.wait_ready(READY_TIMEOUT);

    let prom_addr = free_addr();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{prom_addr}"]
remote_write:
  - url: http://{promraft}/api/v1/write
    remote_timeout: 10s
    queue_config:
      # One shard sends in log order, so once promraft has a sample of one
      # scrape it has every earlier one (the cut-off below relies on it).
      min_shards: 1
      max_shards: 1
      max_samples_per_send: 2000
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 1s
"#,
        promraft = node.http_addr
    );
    let mut prom = start_prometheus(&prometheus, dir.path(), "prometheus", &prom_addr, &config);
    let how = format!(
        "prometheus log: {}; promraft log: {}; reproduce: {}",
        prom.log_path().display(),
        node.log_path().display(),
        repro(FILE, TEST)
    );

    // Prometheus is up, has scraped itself several times and sent samples.
    let sent = wait_until(
        "Prometheus to scrape itself and remote-write to promraft",
        PEER_TIMEOUT,
        || {
            if let Some(status) = prom.exited() {
                panic!("prometheus exited ({status}); {how}");
            }
            let m = http_request(&prom_addr, "GET", "/metrics", &[], b"").map_err(|e| e.to_string())?;
            let sent = first_metric(&m.text(), SENT_NAMES).map_or(0.0, |(_, v)| v);
            let q = with_query(
                "/api/v1/query",
                &[("query", r#"count_over_time(up{job="prometheus"}[1m])"#)],
            );
            let r = http_request(&prom_addr, "GET", &q, &[], b"").map_err(|e| e.to_string())?;
            if r.status != 200 {
                // 503 until Prometheus is ready.
                return Err(format!("Prometheus answers {} {:?}", r.status, r.text()));
            }
            let scrapes: f64 = parse_vector(&r.json()["data"]["result"]).values().map(|p| p.1).sum();
            if sent >= SAMPLES_SENT_MIN && scrapes >= SCRAPES_MIN {
                Ok(sent)
            } else {
                Err(format!("{sent} samples sent, {scrapes} scrapes"))
            }
        },
    );

    // The cut-off: Prometheus's newest scrape. Wait until promraft has a
    // later `up` sample; with one shard, everything up to the cut-off has
    // then reached promraft.
    let cutoff = newest_up_ms(&prom_addr).expect("Prometheus has up samples after several scrapes");
    wait_until(
        "promraft to receive a scrape newer than the cut-off",
        PEER_TIMEOUT,
        || match newest_up_ms(&node.http_addr) {
            Some(t) if t > cutoff => Ok(()),
            other => Err(format!("promraft's newest up sample is {other:?}, cut-off {cutoff}")),
        },
    );

    // Same series: all that Prometheus had by the cut-off are in promraft,
    // and promraft has none that Prometheus does not have.
    let before_cutoff = job_series(&prom_addr, Some((cutoff - COMPARE_WINDOW_MS, cutoff)));
    let in_promraft = job_series(&node.http_addr, None);
    let in_prometheus_now = job_series(&prom_addr, None);
    let missing: Vec<_> = before_cutoff.difference(&in_promraft).collect();
    assert!(
        missing.is_empty(),
        "every series Prometheus had for {{job=\"prometheus\"}} by the cut-off should be in promraft; \
         {} of {} missing, e.g. {:?}; {how}",
        missing.len(),
        before_cutoff.len(),
        &missing[..missing.len().min(5)]
    );
    let unknown: Vec<_> = in_promraft.difference(&in_prometheus_now).collect();
    assert!(
        unknown.is_empty(),
        "promraft should hold only series Prometheus has; {} unknown, e.g. {:?}; {how}",
        unknown.len(),
        &unknown[..unknown.len().min(5)]
    );

    // Same samples, exactly, in a window before the cut-off.
    let want = job_samples(&prom_addr, cutoff);
    let got = job_samples(&node.http_addr, cutoff);
    assert!(
        want.len() * 2 >= before_cutoff.len(),
        "Prometheus should have samples before the cut-off for most of its {} series, has them for {}; {how}",
        before_cutoff.len(),
        want.len()
    );
    if got != want {
        let differ: Vec<String> = want
            .iter()
            .filter(|(ls, w)| got.get(*ls) != Some(*w))
            .take(5)
            .map(|(ls, w)| format!("{ls:?}: Prometheus {w:?}, promraft {:?}", got.get(ls)))
            .collect();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        panic!(
            "raw samples of {{job=\"prometheus\"}} in the {COMPARE_WINDOW_MS} ms before the cut-off should be \
             identical; {} series differ, {extra} only in promraft; first: {differ:#?}; {how}",
            want.iter().filter(|(ls, w)| got.get(*ls) != Some(*w)).count()
        );
    }

    // Metadata went through too (sent every second).
    let prom_meta = api_get(
        &prom_addr,
        "/api/v1/metadata",
        &[("metric", "prometheus_http_requests_total")],
    );
    let want_meta = &prom_meta["prometheus_http_requests_total"][0];
    assert!(
        want_meta.is_object(),
        "Prometheus has metadata for its own counter: {prom_meta}"
    );
    wait_until("promraft to receive metadata", PEER_TIMEOUT, || {
        let m = node.api("/api/v1/metadata", &[("metric", "prometheus_http_requests_total")]);
        let got = &m["prometheus_http_requests_total"][0];
        if got == want_meta {
            Ok(())
        } else {
            Err(format!("promraft has {m}, Prometheus {prom_meta}"))
        }
    });

    // Nothing was refused.
    let metrics = prometheus_metrics(&prom_addr);
    let (failed_name, failed) = first_metric(&metrics, FAILED_NAMES).unwrap_or_else(|| {
        panic!(
            "none of {FAILED_NAMES:?} in Prometheus's /metrics; remote storage metrics:\n{}",
            remote_storage_lines(&metrics)
        )
    });
    assert_eq!(
        failed,
        0.0,
        "Prometheus counted {failed} failed samples ({failed_name}); every sample should be accepted. \
         Remote storage metrics:\n{}\n{how}",
        remote_storage_lines(&metrics)
    );
    eprintln!(
        "{sent} samples sent before the comparison; {} series and {} samples compared; {failed_name} = 0; retried: {:?}",
        before_cutoff.len(),
        want.values().map(Vec::len).sum::<usize>(),
        metric_sum(&metrics, "prometheus_remote_storage_samples_retried_total")
            .or_else(|| metric_sum(&metrics, "prometheus_remote_storage_retried_samples_total"))
    );

    let status = prom
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "prometheus should exit cleanly on SIGTERM, got {status}; {how}"
    );
}

/// Parses promtool's text output of a vector: `metric{a="b", c="d"} => 1 @[1700000000.5]`.
fn parse_promtool_vector(out: &str) -> BTreeMap<String, (String, String)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (metric, rest) = l
                .split_once(" => ")
                .unwrap_or_else(|| panic!("unexpected promtool line {l:?}"));
            let (value, at) = rest
                .split_once(" @[")
                .unwrap_or_else(|| panic!("unexpected promtool line {l:?}"));
            (
                metric.to_string(),
                (value.to_string(), at.trim_end_matches(']').to_string()),
            )
        })
        .collect()
}

/// Parses promtool's text output of a matrix: a `metric =>` line, then one
/// `value @[time]` line per point.
fn parse_promtool_matrix(out: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut result: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(metric) = l.strip_suffix(" =>") {
            current = Some(metric.to_string());
            result.entry(metric.to_string()).or_default();
            continue;
        }
        let (value, at) = l
            .split_once(" @[")
            .unwrap_or_else(|| panic!("unexpected promtool line {l:?}"));
        let metric = current
            .as_ref()
            .unwrap_or_else(|| panic!("point before any series: {l:?}"));
        result
            .get_mut(metric)
            .expect("series entry")
            .push((value.to_string(), at.trim_end_matches(']').to_string()));
    }
    result
}

#[test]
fn promtool_queries_promraft() {
    const TEST: &str = "promtool_queries_promraft";
    let Some(promtool) = peer("promtool", TEST) else {
        return;
    };
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("promraft"));
    node.wait_ready(READY_TIMEOUT);
    // Eleven seconds of `up` for two targets; b comes up half way.
    let t0 = (now_ms() - 60_000) / 1000 * 1000;
    let b_value = |i: i64| if i < 5 { 0.0 } else { 1.0 };
    let points = |f: &dyn Fn(i64) -> f64| (0..=10).map(|i| (t0 + i * 1000, f(i))).collect::<Vec<_>>();
    node.write_ok(&write_request(vec![
        series(
            &[("__name__", "up"), ("instance", "a:9100"), ("job", "node")],
            &points(&|_| 1.0),
        ),
        series(
            &[("__name__", "up"), ("instance", "b:9100"), ("job", "node")],
            &points(&b_value),
        ),
    ]));
    let server = format!("http://{}", node.http_addr);
    let a = r#"up{instance="a:9100", job="node"}"#;
    let b = r#"up{instance="b:9100", job="node"}"#;
    let run = |args: &[&str]| {
        let out = run_command(Command::new(&promtool).args(args), Duration::from_secs(30));
        assert!(
            out.status.success(),
            "promtool {args:?} failed ({}): stdout {:?}, stderr {:?}; reproduce: {}",
            out.status,
            out.stdout,
            out.stderr,
            repro(FILE, TEST)
        );
        out.stdout
    };

    // Instant query at the newest sample (promtool POSTs a form).
    let t_end = t0 + 10_000;
    let out = run(&["query", "instant", &format!("--time={}", secs(t_end)), &server, "up"]);
    let got = parse_promtool_vector(&out);
    let at = (t_end / 1000).to_string();
    let want = BTreeMap::from([
        (a.to_string(), ("1".to_string(), at.clone())),
        (b.to_string(), ("1".to_string(), at.clone())),
    ]);
    assert_eq!(got, want, "promtool query instant ... up; output was:\n{out}");

    // Instant query at the current time (no --time): within the lookback.
    let out = run(&["query", "instant", &server, "up == 1"]);
    let got = parse_promtool_vector(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [a, b],
        "promtool query instant (now) 'up == 1'; output was:\n{out}"
    );

    // Range query over the eleven seconds, step 1s.
    let out = run(&[
        "query",
        "range",
        &format!("--start={}", secs(t0)),
        &format!("--end={}", secs(t_end)),
        "--step=1s",
        &server,
        "up",
    ]);
    let got = parse_promtool_matrix(&out);
    let expect = |f: &dyn Fn(i64) -> f64| -> Vec<(String, String)> {
        (0..=10)
            .map(|i| (f(i).to_string(), ((t0 + i * 1000) / 1000).to_string()))
            .collect()
    };
    let want = BTreeMap::from([(a.to_string(), expect(&|_| 1.0)), (b.to_string(), expect(&b_value))]);
    assert_eq!(got, want, "promtool query range --step=1s ... up; output was:\n{out}");
}
