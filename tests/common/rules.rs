//! Helpers of the rules and Alertmanager tests: a Prometheus
//! configuration with one rule group, the load that triggers its alert,
//! and readers of `/api/v1/alerts` and the `ALERTS` series.

use std::path::Path;

use serde_json::Value;

use super::cluster::Cluster;
use super::{api_get, now_ms, series, write_request};

/// The rule group's interval: short, so a test sees several evaluations.
const INTERVAL_S: i64 = 1;

/// The Prometheus configuration and rule file of a test, written into
/// `dir`; returns the node flags that load them.
pub fn prometheus_config(dir: &Path, for_s: i64, alerting: &str) -> Vec<String> {
    let rules = format!(
        r#"groups:
  - name: load
    interval: {INTERVAL_S}s
    rules:
      - record: job:test_load:sum
        expr: sum by (job) (test_load)
      - alert: HighLoad
        expr: sum by (job) (test_load) > 10
        for: {for_s}s
        labels:
          severity: page
        annotations:
          summary: "load of {{{{ $labels.job }}}} is {{{{ $value }}}}"
"#
    );
    std::fs::write(dir.join("rules.yml"), rules).expect("write the rule file");
    let cfg = format!(
        "global:\n  evaluation_interval: {INTERVAL_S}s\n  external_labels:\n    cluster: test\nrule_files:\n  - {}\n{alerting}",
        dir.join("rules.yml").display()
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, cfg).expect("write the Prometheus configuration");
    vec!["--prometheus-config".into(), path.display().to_string()]
}

/// Writes `test_load{job="a"} 20` now (visible to rules for the 5 minute
/// lookback, longer than any test here).
pub fn write_load(c: &Cluster, via: u64) {
    let req = write_request(vec![series(
        &[("__name__", "test_load"), ("job", "a"), ("instance", "i1")],
        &[(now_ms(), 20.0)],
    )]);
    c.node(via).write_ok(&req);
}

/// The HighLoad alert as `/api/v1/alerts` on `addr` shows it.
pub fn high_load(addr: &str) -> Result<Value, String> {
    let data = api_get(addr, "/api/v1/alerts", &[]);
    data["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|al| al["labels"]["alertname"] == "HighLoad"))
        .cloned()
        .ok_or_else(|| format!("no HighLoad alert in {data}"))
}

/// Milliseconds of an RFC 3339 time as the API writes it.
pub fn rfc3339_ms(s: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .timestamp_millis()
}

/// The timestamp of the first `ALERTS{alertstate="firing"}` sample of
/// HighLoad on `addr` (stored samples, through a range selector).
pub fn first_firing_ms(addr: &str) -> Result<i64, String> {
    let now = now_ms();
    let query = "ALERTS{alertname=\"HighLoad\",alertstate=\"firing\"}[5m]";
    let data = api_get(addr, "/api/v1/query", &[("query", query), ("time", &super::secs(now))]);
    let m = super::parse_matrix(&data["result"]);
    m.values()
        .next()
        .and_then(|pts| pts.first().map(|p| p.0))
        .ok_or_else(|| format!("no firing ALERTS sample yet on {addr}"))
}
