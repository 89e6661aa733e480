//! The calls Grafana's Prometheus data source makes, against a running node
//! holding data written by remote write, compared with the JSON shapes that
//! Prometheus documents (docs/querying/api.md): the envelope
//! `{"status":"success","data":...}`, instant and range results, series,
//! label names and values (GET and form POST, with `start`/`end` as Grafana
//! sends them), metadata, build info, `limit`, and promraft's own
//! `X-Promraft-Node` / `X-Promraft-Applied-Index` headers.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;

use serde_json::{json, Value};

use common::*;

const FILE: &str = "http_api";

/// Step between the samples of the data set, ms (a 15 s scrape interval).
const STEP_MS: i64 = 15_000;
/// Samples per series.
const POINTS: i64 = 5;

/// A node holding [`dataset`], with the time of its first sample.
struct Fixture {
    node: TestNode,
    _dir: TestDir,
    /// First sample time, ms; whole multiples of the step.
    base: i64,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = TestDir::new();
        let mut node = TestNode::start(1, &dir.path().join("node1"));
        node.wait_ready(READY_TIMEOUT);
        let base = (now_ms() - 600_000) / STEP_MS * STEP_MS;
        node.write_ok(&dataset(base));
        Fixture { node, _dir: dir, base }
    }

    /// The last sample time.
    fn end(&self) -> i64 {
        self.base + (POINTS - 1) * STEP_MS
    }

    /// `start`/`end` covering the data, as Grafana sends them (Unix seconds).
    fn range(&self) -> [(&'static str, String); 2] {
        [("start", secs(self.base - 60_000)), ("end", secs(self.end() + 60_000))]
    }
}

type SeriesDef = (&'static [(&'static str, &'static str)], fn(i64) -> f64);

/// The series of the data set, and each one's value at point `i`.
const SERIES: &[SeriesDef] = &[
    (
        &[
            ("__name__", "http_requests_total"),
            ("instance", "10.0.0.1:8080"),
            ("job", "api"),
            ("method", "GET"),
        ],
        |i| 100.0 + 10.0 * i as f64,
    ),
    (
        &[
            ("__name__", "http_requests_total"),
            ("instance", "10.0.0.1:8080"),
            ("job", "api"),
            ("method", "POST"),
        ],
        |i| 5.0 + i as f64,
    ),
    (
        &[
            ("__name__", "http_requests_total"),
            ("instance", "10.0.0.2:8080"),
            ("job", "web"),
            ("method", "GET"),
        ],
        |i| 7.0 * i as f64,
    ),
    (
        &[
            ("__name__", "node_temperature_celsius"),
            ("instance", "10.0.0.3:9100"),
            ("job", "node"),
            ("sensor", "cpu"),
        ],
        |i| 40.5 + 0.25 * i as f64,
    ),
];

/// Four series over two metrics, five samples each, plus their metadata.
fn dataset(base: i64) -> prompb::WriteRequest {
    let timeseries = SERIES
        .iter()
        .map(|(pairs, f)| {
            let samples: Vec<(i64, f64)> = (0..POINTS).map(|i| (base + i * STEP_MS, f(i))).collect();
            series(pairs, &samples)
        })
        .collect();
    let metadata = vec![
        prompb::MetricMetadata {
            r#type: prompb::MetricType::Counter as i32,
            metric_family_name: "http_requests_total".into(),
            help: "Total HTTP requests.".into(),
            unit: String::new(),
        },
        prompb::MetricMetadata {
            r#type: prompb::MetricType::Gauge as i32,
            metric_family_name: "node_temperature_celsius".into(),
            help: "Temperature of a sensor, <hot> & \"cold\".".into(),
            unit: "celsius".into(),
        },
    ];
    prompb::WriteRequest { timeseries, metadata }
}

fn labels_of(i: usize) -> LabelSet {
    label_set_of(SERIES[i].0)
}

/// Asserts the envelope: 200, JSON content type, `status` success, and
/// no keys besides `status`, `data` and optionally `warnings`/`infos`.
fn envelope(r: &HttpResponse, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: expected 200, got {} {:?}", r.status, r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: expected Content-Type application/json, got {:?}",
        r.header("content-type")
    );
    let v = r.json();
    assert_eq!(v["status"], "success", "{what}: {v}");
    let keys: BTreeSet<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    assert!(
        keys.contains("data") && keys.iter().all(|k| ["status", "data", "warnings", "infos"].contains(k)),
        "{what}: unexpected envelope keys {keys:?} in {v}"
    );
    v
}

/// `data` of a list endpoint as strings, checking it is an array of strings.
fn strings(data: &Value, what: &str) -> Vec<String> {
    data.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {data}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what}: not a string: {s}"))
                .to_string()
        })
        .collect()
}

/// `data` of `/api/v1/series`, checking Prometheus's order (sorted by label set).
fn series_list(data: &Value, what: &str) -> Vec<LabelSet> {
    let list: Vec<LabelSet> = data
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array of label objects, got {data}"))
        .iter()
        .map(label_set)
        .collect();
    let mut sorted = list.clone();
    sorted.sort();
    assert_eq!(
        list, sorted,
        "{what}: series should be sorted by label set like Prometheus"
    );
    list
}

fn truncation_warned(v: &Value, what: &str) {
    let warned = v["warnings"]
        .as_array()
        .is_some_and(|w| w.iter().any(|w| w.as_str().is_some_and(|w| w.contains("truncated"))));
    assert!(
        warned,
        "{what}: a result cut by `limit` should carry a \"truncated\" warning, got {v}"
    );
}

#[test]
fn one_plus_one_is_a_scalar() {
    let f = Fixture::start();
    // With a time: the document Prometheus answers (compared as JSON values;
    // the exact bytes are the subject of the next test).
    let r = f
        .node
        .get("/api/v1/query", &[("query", "1+1"), ("time", "1700000000.5")]);
    let v = envelope(&r, "query=1+1&time=1700000000.5");
    assert_eq!(
        v,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000.5, "2"]}}),
        "query=1+1 at a given time; reproduce: {}",
        repro(FILE, "one_plus_one_is_a_scalar")
    );
    // Without a time (Grafana's `GET /api/v1/query?query=1%2B1` health check):
    // evaluated now; the time is a number, the value a string.
    let before = now_ms();
    let r = f.node.request("GET", "/api/v1/query?query=1%2B1", &[], b"");
    let v = envelope(&r, "query=1%2B1");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 2, "no warnings expected: {v}");
    assert_eq!(v["data"]["resultType"], "scalar", "{v}");
    let (t, value) = parse_point(&v["data"]["result"]);
    assert_eq!(value, 2.0, "{v}");
    assert!(
        (before - 1000..=now_ms() + 1000).contains(&t),
        "without `time` the query should run at the current time; got {t}, now is {}",
        now_ms()
    );
}

/// Prometheus writes a scalar's time with Go's `encoding/json`
/// (`promql.Scalar.MarshalJSON`: `float64(T)/1000`, shortest form), but a
/// vector's or matrix's point times with three fraction digits
/// (`jsonutil.MarshalTimestamp`). The expected bytes below are what
/// Prometheus 2.42 (Debian's `prometheus`) answers; `src/promql/json.rs`
/// promises the same bytes, so a scalar written like a point
/// (`1700000000.500`, equal as a number) fails here.
#[test]
fn scalar_times_are_written_like_prometheus() {
    let f = Fixture::start();
    for (time, want) in [
        (
            "1700000000.5",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"2"]}}"#,
        ),
        (
            "1700000000.05",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.05,"2"]}}"#,
        ),
        (
            "1700000000",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2"]}}"#,
        ),
    ] {
        let r = f.node.get("/api/v1/query", &[("query", "1+1"), ("time", time)]);
        assert_eq!(
            r.text(),
            want,
            "query=1+1&time={time}: expected Prometheus's exact bytes; reproduce: {}",
            repro(FILE, "scalar_times_are_written_like_prometheus")
        );
    }
    // Points keep three digits, as in Prometheus.
    let r = f
        .node
        .get("/api/v1/query", &[("query", "vector(1)"), ("time", "1700000000.5")]);
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.500,"1"]}]}}"#
    );
}

#[test]
fn instant_and_range_queries_by_form_post() {
    let f = Fixture::start();
    // Instant query, form POST (Grafana's default method).
    let r = f.node.post_form(
        "/api/v1/query",
        &[
            ("query", r#"http_requests_total{method="GET"}"#),
            ("time", &secs(f.end())),
        ],
    );
    let v = envelope(&r, "POST /api/v1/query");
    assert_eq!(v["data"]["resultType"], "vector", "{v}");
    let got = parse_vector(&v["data"]["result"]);
    let want = [0, 2]
        .into_iter()
        .map(|i| (labels_of(i), (f.end(), SERIES[i].1(POINTS - 1))))
        .collect();
    assert_eq!(
        got, want,
        "instant query of http_requests_total{{method=\"GET\"}} at the last sample"
    );

    // Range query, form POST, over exactly the sample times.
    let r = f.node.post_form(
        "/api/v1/query_range",
        &[
            ("query", "http_requests_total"),
            ("start", &secs(f.base)),
            ("end", &secs(f.end())),
            ("step", "15s"),
        ],
    );
    let v = envelope(&r, "POST /api/v1/query_range");
    assert_eq!(v["data"]["resultType"], "matrix", "{v}");
    for s in v["data"]["result"].as_array().expect("result array") {
        let keys: BTreeSet<&str> = s
            .as_object()
            .expect("series object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["metric", "values"]), "matrix series shape: {s}");
        for p in s["values"].as_array().expect("values") {
            assert!(
                p[0].is_number() && p[1].is_string(),
                "point [number, \"string\"] expected: {p}"
            );
        }
    }
    let got = parse_matrix(&v["data"]["result"]);
    let want = (0..3)
        .map(|i| {
            let points = (0..POINTS).map(|k| (f.base + k * STEP_MS, SERIES[i].1(k))).collect();
            (labels_of(i), points)
        })
        .collect();
    assert_eq!(got, want, "range query of http_requests_total over its samples");

    // A float step in seconds and a computed expression, as Grafana sends.
    let r = f.node.post_form(
        "/api/v1/query_range",
        &[
            ("query", "sum by (job) (http_requests_total)"),
            ("start", &secs(f.end())),
            ("end", &secs(f.end())),
            ("step", "15.0"),
        ],
    );
    let got = parse_matrix(&envelope(&r, "sum by (job)")["data"]["result"]);
    let last = POINTS - 1;
    let want = [
        (label_set_of(&[("job", "api")]), SERIES[0].1(last) + SERIES[1].1(last)),
        (label_set_of(&[("job", "web")]), SERIES[2].1(last)),
    ]
    .into_iter()
    .map(|(ls, v)| (ls, vec![(f.end(), v)]))
    .collect();
    assert_eq!(got, want, "sum by (job) (http_requests_total) at the last sample");
}

#[test]
fn label_names_and_values() {
    let f = Fixture::start();
    let range = f.range();
    let range: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let v = envelope(&f.node.get("/api/v1/label/__name__/values", &range), "__name__ values");
    assert_eq!(
        strings(&v["data"], "__name__ values"),
        ["http_requests_total", "node_temperature_celsius"],
        "metric names, sorted"
    );
    let v = envelope(&f.node.get("/api/v1/label/job/values", &[]), "job values");
    assert_eq!(strings(&v["data"], "job values"), ["api", "node", "web"]);
    let mut q = range.clone();
    q.push(("match[]", "http_requests_total"));
    let v = envelope(
        &f.node.get("/api/v1/label/instance/values", &q),
        "instance values with match[]",
    );
    assert_eq!(
        strings(&v["data"], "instance values"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    let v = envelope(
        &f.node.get("/api/v1/label/nonexistent/values", &[]),
        "values of an unknown label",
    );
    assert_eq!(
        v["data"],
        json!([]),
        "an unknown label has no values (an empty array, not null)"
    );

    let all = ["__name__", "instance", "job", "method", "sensor"];
    let v = envelope(&f.node.get("/api/v1/labels", &range), "GET labels");
    assert_eq!(strings(&v["data"], "labels"), all, "label names, sorted");
    let v = envelope(&f.node.post_form("/api/v1/labels", &range), "POST labels");
    assert_eq!(strings(&v["data"], "labels"), all, "label names by form POST");
    let mut q = range.clone();
    q.push(("match[]", "node_temperature_celsius"));
    let v = envelope(&f.node.post_form("/api/v1/labels", &q), "POST labels with match[]");
    assert_eq!(strings(&v["data"], "labels"), ["__name__", "instance", "job", "sensor"]);
    // A window with no data has no label names.
    let v = envelope(
        &f.node.get("/api/v1/labels", &[("start", "1000"), ("end", "2000")]),
        "labels in an empty window",
    );
    assert_eq!(v["data"], json!([]), "no data in 1970, so no label names");
}

#[test]
fn series_by_get_and_form_post() {
    let f = Fixture::start();
    let range = f.range();
    let mut q: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    q.push(("match[]", "http_requests_total"));
    q.push(("match[]", r#"{sensor="cpu"}"#));
    let want: Vec<LabelSet> = (0..SERIES.len()).map(labels_of).collect();

    let got = series_list(
        &envelope(&f.node.get("/api/v1/series", &q), "GET series")["data"],
        "GET series",
    );
    assert_eq!(got, want, "GET /api/v1/series with two match[]");
    let got = series_list(
        &envelope(&f.node.post_form("/api/v1/series", &q), "POST series")["data"],
        "POST series",
    );
    assert_eq!(got, want, "POST /api/v1/series with two match[] in the form");

    let got = series_list(
        &f.node.api(
            "/api/v1/series",
            &[("match[]", r#"http_requests_total{job=~"a.*",method!="POST"}"#)],
        ),
        "regex series",
    );
    assert_eq!(
        got,
        vec![labels_of(0)],
        "series matching job=~\"a.*\", method!=\"POST\""
    );
    let got = f.node.api(
        "/api/v1/series",
        &[("match[]", "http_requests_total"), ("start", "1000"), ("end", "2000")],
    );
    assert_eq!(got, json!([]), "no series in a window without data");
}

#[test]
fn limit_on_series_labels_and_values() {
    let f = Fixture::start();
    let v = envelope(
        &f.node
            .get("/api/v1/series", &[("match[]", r#"{job=~".+"}"#), ("limit", "2")]),
        "series limit=2",
    );
    let got = series_list(&v["data"], "series limit=2");
    assert_eq!(got.len(), 2, "series with limit=2: {v}");
    assert!(
        got.iter().all(|ls| (0..SERIES.len()).any(|i| labels_of(i) == *ls)),
        "series with limit=2 returned unknown series: {v}"
    );
    truncation_warned(&v, "series limit=2");

    let v = envelope(&f.node.get("/api/v1/labels", &[("limit", "2")]), "labels limit=2");
    assert_eq!(strings(&v["data"], "labels limit=2"), ["__name__", "instance"], "{v}");
    truncation_warned(&v, "labels limit=2");

    let v = envelope(
        &f.node.get("/api/v1/label/job/values", &[("limit", "1")]),
        "values limit=1",
    );
    assert_eq!(strings(&v["data"], "values limit=1"), ["api"], "{v}");
    truncation_warned(&v, "values limit=1");

    // A limit the result fits in: everything, no warning.
    let v = envelope(
        &f.node.get("/api/v1/label/job/values", &[("limit", "3")]),
        "values limit=3",
    );
    assert_eq!(strings(&v["data"], "values limit=3"), ["api", "node", "web"]);
    assert!(v.get("warnings").is_none(), "no warning when nothing is cut: {v}");

    let r = f.node.get("/api/v1/labels", &[("limit", "-1")]);
    assert_eq!(
        r.status,
        400,
        "limit=-1 should be refused, got {} {:?}",
        r.status,
        r.text()
    );
}

#[test]
fn metadata_from_the_write_request() {
    let f = Fixture::start();
    let v = envelope(&f.node.get("/api/v1/metadata", &[]), "metadata");
    let want = json!({
        "http_requests_total": [{"type": "counter", "help": "Total HTTP requests.", "unit": ""}],
        "node_temperature_celsius": [
            {"type": "gauge", "help": "Temperature of a sensor, <hot> & \"cold\".", "unit": "celsius"}
        ],
    });
    assert_eq!(
        v["data"],
        want,
        "metadata sent with the samples; reproduce: {}",
        repro(FILE, "metadata_from_the_write_request")
    );
    // Go's encoding/json escapes <, > and & in strings, so Prometheus does.
    let raw = f.node.get("/api/v1/metadata", &[]).text();
    assert!(
        raw.contains(r#""Temperature of a sensor, \u003chot\u003e \u0026 \"cold\".""#),
        "<, > and & in help text should be escaped as \\u003c, \\u003e, \\u0026 as Prometheus (Go) does: {raw}"
    );

    let v = f
        .node
        .api("/api/v1/metadata", &[("metric", "node_temperature_celsius")]);
    assert_eq!(v, json!({"node_temperature_celsius": want["node_temperature_celsius"]}));
    let v = f.node.api("/api/v1/metadata", &[("limit", "1")]);
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "metadata limit=1: {v}");
    let v = f.node.api("/api/v1/metadata", &[("metric", "no_such_metric")]);
    assert_eq!(v, json!({}), "metadata of an unknown metric is an empty object");
}

#[test]
fn buildinfo_has_the_documented_fields() {
    let f = Fixture::start();
    let v = envelope(&f.node.get("/api/v1/status/buildinfo", &[]), "buildinfo");
    for key in ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(
            v["data"][key].is_string(),
            "buildinfo should have a string {key:?}: {v}"
        );
    }
    // Grafana parses `version` as semver to pick features.
    let version = v["data"]["version"].as_str().unwrap_or("");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "buildinfo version should be MAJOR.MINOR.PATCH, got {version:?}"
    );
}

#[test]
fn flags_and_runtimeinfo_show_the_configuration_in_force() {
    let f = Fixture::start();
    let before = now_ms();
    let flags = envelope(&f.node.get("/api/v1/status/flags", &[]), "flags");
    let data = &flags["data"];
    assert!(
        data.as_object().is_some_and(|m| m.values().all(Value::is_string)),
        "flags are strings: {flags}"
    );
    assert_eq!(data["storage.retention"], "15d", "{flags}");
    assert_eq!(data["web.enable_admin_api"], "true", "the harness turns it on: {flags}");
    assert_eq!(data["node_id"], "1", "{flags}");
    assert_eq!(data["web_config_file"], "", "unset is empty: {flags}");
    let info = envelope(&f.node.get("/api/v1/status/runtimeinfo", &[]), "runtimeinfo");
    let d = &info["data"];
    for key in [
        "startTime",
        "CWD",
        "lastConfigTime",
        "GOGC",
        "GODEBUG",
        "storageRetention",
    ] {
        assert!(d[key].is_string(), "runtimeinfo should have a string {key:?}: {info}");
    }
    for key in ["corruptionCount", "goroutineCount", "GOMAXPROCS"] {
        assert!(d[key].is_u64(), "runtimeinfo should have a number {key:?}: {info}");
    }
    assert_eq!(d["reloadConfigSuccess"], true, "{info}");
    assert_eq!(d["storageRetention"], "15d", "{info}");
    let started = chrono::DateTime::parse_from_rfc3339(d["startTime"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("startTime is RFC 3339: {e}: {info}"));
    assert!(
        started.timestamp_millis() <= before,
        "started before the request: {info}"
    );
    assert!(d["goroutineCount"].as_u64() > Some(0), "{info}");
}

#[test]
fn every_response_names_the_node_and_its_applied_index() {
    let f = Fixture::start();
    let index = |r: &HttpResponse, what: &str| -> u64 {
        assert_eq!(
            r.header("x-promraft-node"),
            Some("1"),
            "{what}: X-Promraft-Node should be 1"
        );
        r.header("x-promraft-applied-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: X-Promraft-Applied-Index should be an integer: {:?}", r.headers))
    };
    let before = index(&f.node.get("/api/v1/labels", &[]), "GET labels");
    assert!(before > 0, "the data set was written, so something was applied");
    index(&f.node.get("/api/v1/query", &[("query", "sum(")]), "an API error");
    index(&f.node.get("/-/healthy", &[]), "/-/healthy");
    index(&f.node.get("/no/such/path", &[]), "a 404");

    let write = f.node.write(&write_request(vec![series(
        &[("__name__", "late"), ("job", "x")],
        &[(f.end(), 1.0)],
    )]));
    assert_eq!(write.status, 204, "{:?}", write.text());
    let on_write = index(&write, "the write's 204");
    assert!(
        on_write > before,
        "a write is answered after it is applied, so its response should show a later index: {before} then {on_write}"
    );
    let digest = f.node.digest();
    assert!(
        digest.applied_index >= on_write,
        "the digest's applied index {} is behind the one the write reported, {on_write}",
        digest.applied_index
    );
}
