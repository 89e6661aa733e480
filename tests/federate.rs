//! `/federate` on a real node: the newest sample of each selected series in
//! the text format and in OpenMetrics, and a Debian Prometheus 2.42 that
//! federates from promraft (skipped without it unless
//! `PROMRAFT_REQUIRE_PEERS=1`).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::Duration;

use common::*;

const FILE: &str = "federate";

/// The StaleNaN bit pattern Prometheus writes when a series ends.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The Accept header of Prometheus 2.42's scraper.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn federate_serves_the_newest_samples_and_prometheus_scrapes_them() {
    const TEST: &str = "federate_serves_the_newest_samples_and_prometheus_scrapes_them";
    let how = repro(FILE, TEST);
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("promraft"));
    node.wait_ready(READY_TIMEOUT);
    let now = now_ms();
    let (t1, t2) = (now - 20_000, now - 10_000);
    node.write_ok(&write_request(vec![
        series(
            &[("__name__", "fed_a"), ("job", "j"), ("x", "1")],
            &[(t1, 1.0), (t2, 2.0)],
        ),
        series(
            &[("__name__", "fed_b"), ("job", "j")],
            &[(t1, 5.0), (t2, f64::from_bits(STALE_NAN_BITS))],
        ),
        series(&[("__name__", "fed_old"), ("job", "j")], &[(now - 600_000, 3.0)]),
        series(
            &[("__name__", "fed_c"), ("instance", "i:9"), ("job", "j")],
            &[(t2, 0.5)],
        ),
        series(&[("__name__", "other"), ("job", "k")], &[(t2, 7.0)]),
    ]));

    // Text format: newest sample only, stale and too-old series left out,
    // an empty instance label where there is none, untyped families.
    let r = node.get("/federate", &[("match[]", r#"{job="j"}"#)]);
    assert_eq!(r.status, 200, "{}; {how}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let want = format!(
        "# TYPE fed_a untyped\nfed_a{{instance=\"\",job=\"j\",x=\"1\"}} 2 {t2}\n\
         # TYPE fed_c untyped\nfed_c{{instance=\"i:9\",job=\"j\"}} 0.5 {t2}\n"
    );
    assert_eq!(r.text(), want, "{how}");

    // OpenMetrics for a client that prefers it (Prometheus's scraper), two
    // selectors that overlap give each series once.
    let target = with_query("/federate", &[("match[]", "fed_a"), ("match[]", r#"{x="1"}"#)]);
    let r = node.request("GET", &target, &[("Accept", PROMETHEUS_ACCEPT)], b"");
    assert_eq!(r.status, 200, "{}; {how}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let t2_secs = secs(t2);
    assert_eq!(
        r.text(),
        format!("# TYPE fed_a unknown\nfed_a{{instance=\"\",job=\"j\",x=\"1\"}} 2 {t2_secs}\n# EOF\n"),
        "{how}"
    );

    // No selector: nothing (as Prometheus); a bad one: 400 with the reason.
    let r = node.get("/federate", &[]);
    assert_eq!((r.status, r.text()), (200, String::new()), "{how}");
    let r = node.get("/federate", &[("match[]", "{job=")]);
    assert_eq!(r.status, 400, "{}; {how}", r.text());

    // A real Prometheus federates from promraft.
    let Some(prometheus) = peer("prometheus", TEST) else {
        return;
    };
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"global:
  scrape_interval: 1s
scrape_configs:
  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params:
      "match[]": ['{{job="j"}}']
    static_configs:
      - targets: ["{promraft}"]
"#,
        promraft = node.http_addr
    );
    let _prom = start_prometheus(&prometheus, dir.path(), "prometheus", &prom_addr, &config);
    // Prometheus may not listen or be ready yet: that is a retry.
    let query = |q: &str| -> Result<serde_json::Value, String> {
        let target = with_query("/api/v1/query", &[("query", q), ("time", &secs(now_ms()))]);
        let r = http_request(&prom_addr, "GET", &target, &[], b"").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{} {}", r.status, r.text()));
        }
        Ok(r.json()["data"]["result"].clone())
    };
    let (scraped, result) = wait_until("Prometheus to federate from promraft", Duration::from_secs(60), || {
        let n = parse_vector(&query(r#"scrape_samples_scraped{job="federate"}"#)?)
            .values()
            .next()
            .map(|p| p.1);
        let got = parse_vector(&query(r#"{job="j"}"#)?);
        match n {
            Some(n) if got.len() == 2 => Ok((n, got)),
            other => Err(format!("scraped {other:?}, {} series", got.len())),
        }
    });
    println!("Prometheus scraped {scraped} samples per federation scrape");
    assert_eq!(scraped, 2.0, "fed_a and fed_c only; {how}");
    let a = label_set_of(&[("__name__", "fed_a"), ("job", "j"), ("x", "1")]);
    let c = label_set_of(&[("__name__", "fed_c"), ("instance", "i:9"), ("job", "j")]);
    assert_eq!(result.get(&a).map(|p| p.1), Some(2.0), "{result:?}; {how}");
    assert_eq!(result.get(&c).map(|p| p.1), Some(0.5), "{result:?}; {how}");
}
