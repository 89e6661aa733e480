//! Scraping end to end: real `prometheus-node-exporter` targets scraped by
//! a three-node cluster through the log, a leader killed mid-scrape, file
//! SD, relabeling, limits, staleness, and the configuration file's refusals
//! and reloads.
//!
//! node_exporter comes from `PATH` (Debian's `prometheus-node-exporter`);
//! without it the tests print why and pass, unless
//! `PROMRAFT_REQUIRE_PEERS=1`.

// A test here is one scenario read top to bottom.
#![allow(clippy::too_many_lines)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "scrape";

/// The scrape interval of every job here, ms.
const INTERVAL_MS: i64 = 1_000;

/// How long a condition on scraped data may take to hold: a few intervals
/// plus the file SD poll (2 s).
const SCRAPE_WAIT: Duration = Duration::from_secs(20);

fn node_exporter(dir: &Path, name: &str) -> Option<(Proc, String)> {
    let bin = peer("prometheus-node-exporter", FILE)?;
    let addr = free_addr();
    let proc = Proc::spawn(
        name,
        std::process::Command::new(bin)
            .arg(format!("--web.listen-address={addr}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.time")
            .arg("--collector.loadavg"),
        &dir.join(format!("{name}.log")),
    );
    wait_until(&format!("{name} to serve /metrics"), Duration::from_secs(10), || {
        http_request(&addr, "GET", "/metrics", &[], b"")
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", r.status))
                }
            })
    });
    Some((proc, addr))
}

/// `promhttp_metric_handler_requests_total{code="200"}` of an exporter:
/// how many scrapes it answered.
fn scrapes_served(addr: &str) -> f64 {
    let r = http_request(addr, "GET", "/metrics", &[], b"").expect("exporter answers");
    r.text()
        .lines()
        .find(|l| l.starts_with("promhttp_metric_handler_requests_total{code=\"200\"}"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("exporter counts its scrapes")
}

fn instant(addr: &str, query: &str) -> Vector {
    query_vector(addr, query, now_ms(), &[], &[])
        .unwrap_or_else(|e| panic!("query {query}: {e}"))
        .0
}

#[test]
fn node_exporters_are_scraped_once_through_the_log_across_a_leader_kill() {
    let dir = TestDir::new();
    let Some((_ne1, ne1)) = node_exporter(dir.path(), "node_exporter_1") else {
        return;
    };
    let Some((_ne2, ne2)) = node_exporter(dir.path(), "node_exporter_2") else {
        return;
    };
    let targets = dir.path().join("targets.json");
    std::fs::write(
        &targets,
        format!(r#"[{{"targets":["{ne2}"],"labels":{{"src":"file"}}}}]"#),
    )
    .expect("write targets");
    let prom = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n\
             - job_name: node\n  static_configs:\n  - targets: ['{ne1}']\n  metric_relabel_configs:\n  - source_labels: [__name__]\n    regex: node_load15\n    action: drop\n\
             - job_name: files\n  file_sd_configs:\n  - files: [targets.json]\n\
             - job_name: limited\n  sample_limit: 1\n  static_configs:\n  - targets: ['{ne2}']\n\
             - job_name: dropped\n  static_configs:\n  - targets: ['{ne2}']\n  relabel_configs:\n  - action: drop\n    source_labels: [__address__]\n    regex: '.*'\n"
        ),
    )
    .expect("write prometheus.yml");
    let extra = format!("prometheus_config: {}\n", prom.display());
    let mut cluster = Cluster::start_in(dir, 3, RaftTiming::default(), &extra, Vec::new());
    let leader = cluster.wait_leader(&[1, 2, 3], Duration::from_secs(20)).node_id;
    let addr = cluster.node(leader).http_addr.clone();

    // up == 1 for the good jobs, 0 for the one over its sample limit.
    wait_until("up for node, files and limited", SCRAPE_WAIT, || {
        let up = instant(&addr, "up");
        let by_job = |job: &str| {
            up.iter()
                .filter(|(l, _)| l.get("job").map(String::as_str) == Some(job))
                .map(|(_, v)| v.1)
                .collect::<Vec<_>>()
        };
        match (
            by_job("node")[..].to_vec(),
            by_job("files")[..].to_vec(),
            by_job("limited")[..].to_vec(),
            by_job("dropped").len(),
        ) {
            (n, f, l, 0) if n == vec![1.0] && f == vec![1.0] && l == vec![0.0] => Ok(()),
            other => Err(format!("up by job (node, files, limited, dropped count): {other:?}")),
        }
    });
    let time = instant(&addr, "node_time_seconds");
    assert_eq!(
        time.len(),
        2,
        "node_time_seconds once per scraped target (node, files): {time:?}"
    );
    assert!(
        instant(&addr, "node_load15").len() == 1,
        "metric relabeling drops node_load15 of job node only"
    );
    let post = instant(&addr, r#"scrape_samples_post_metric_relabeling{job="node"}"#);
    let scraped = instant(&addr, r#"scrape_samples_scraped{job="node"}"#);
    let (p, s) = (
        post.values().next().expect("post").1,
        scraped.values().next().expect("scraped").1,
    );
    assert!(p < s, "metric relabeling dropped samples: post {p} < scraped {s}");
    for name in ["scrape_duration_seconds", "scrape_series_added"] {
        assert_eq!(
            instant(&addr, &format!("{name}{{job=\"node\"}}")).len(),
            1,
            "{name} reported"
        );
    }

    // Exactly one scraper: the exporter of job node serves one scrape per
    // interval, not one per node.
    let (c0, t0) = (scrapes_served(&ne1), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let served = scrapes_served(&ne1) - c0;
    let expected = t0.elapsed().as_secs_f64() * 1000.0 / INTERVAL_MS as f64;
    println!(
        "node_exporter 1 served {served} scrapes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        served <= expected + 2.0,
        "scraped {served} times in {expected:.1} intervals: more than one scraper"
    );

    // The API: targets and pools as Prometheus shows them, on a follower too.
    let t = api_get(&addr, "/api/v1/targets", &[]);
    let active = t["activeTargets"].as_array().expect("activeTargets");
    assert_eq!(active.len(), 3, "node, files, limited: {t}");
    let node_t = active.iter().find(|x| x["scrapePool"] == "node").expect("node target");
    assert_eq!(node_t["health"], "up");
    assert_eq!(node_t["scrapeUrl"], format!("http://{ne1}/metrics"));
    assert_eq!(node_t["labels"]["instance"], ne1.as_str());
    assert_eq!(node_t["discoveredLabels"]["__scrape_interval__"], "1s");
    assert_eq!(t["droppedTargets"].as_array().map(Vec::len), Some(1), "{t}");
    let limited = active.iter().find(|x| x["scrapePool"] == "limited").expect("limited");
    assert!(
        limited["lastError"].as_str().unwrap_or("").contains("sample limit"),
        "{limited}"
    );
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("a follower");
    let pools = api_get(&cluster.node(follower).http_addr, "/api/v1/scrape_pools", &[]);
    assert_eq!(
        pools["scrapePools"],
        serde_json::json!(["dropped", "files", "limited", "node"])
    );
    // Every member reports the same configuration digest over the node-info RPC.
    let st = api_get(&addr, "/api/v1/status/cluster", &[]);
    let digests: Vec<&str> = st["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["prometheusConfigDigest"].as_str().unwrap_or(""))
        .collect();
    assert!(
        digests.len() == 3 && digests.iter().all(|d| d.len() == 64 && *d == digests[0]),
        "{st}"
    );
    assert_eq!(st["prometheusConfigMismatch"], false, "{st}");
    let meta = api_get(&addr, "/api/v1/targets/metadata", &[("metric", "node_time_seconds")]);
    assert_eq!(meta[0]["type"], "gauge", "{meta}");

    // Kill the leader: the gap in a node_exporter series stays within two
    // intervals and no timestamp appears twice.
    let killed_at = now_ms();
    cluster.node_mut(leader).kill9();
    let rest: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    let new_leader = cluster.wait_leader(&rest, Duration::from_secs(20)).node_id;
    let addr = cluster.node(new_leader).http_addr.clone();
    wait_until("scrapes after the failover", SCRAPE_WAIT, || {
        let s = query_raw(&addr, r#"node_time_seconds{job="node"}"#, killed_at, now_ms(), &[])?;
        let n = s.values().next().map_or(0, Vec::len);
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} samples since the kill"))
        }
    });
    let samples = query_raw(
        &addr,
        r#"node_time_seconds{job="node"}"#,
        killed_at - 10_000,
        now_ms(),
        &[],
    )
    .expect("query");
    let points = samples.values().next().expect("series");
    let gap = points.windows(2).map(|w| w[1].0 - w[0].0).max().expect("two points");
    println!("largest gap across the leader kill: {gap} ms (interval {INTERVAL_MS} ms)");
    assert!(
        points.windows(2).all(|w| w[1].0 > w[0].0),
        "a timestamp appears twice: {points:?}"
    );
    assert!(
        gap <= 2 * INTERVAL_MS,
        "gap {gap} ms > two intervals; {}",
        repro(
            FILE,
            "node_exporters_are_scraped_once_through_the_log_across_a_leader_kill"
        )
    );

    // File SD: the target leaves the file; its series go stale.
    std::fs::write(&targets, "[]").expect("empty targets");
    wait_until("file target gone and its series stale", SCRAPE_WAIT, || {
        let up = instant(&addr, r#"up{job="files"}"#);
        let time = instant(&addr, r#"node_time_seconds{job="files"}"#);
        if up.is_empty() && time.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {up:?} {time:?}"))
        }
    });
    let t = api_get(&addr, "/api/v1/targets", &[("state", "active")]);
    assert!(
        t["activeTargets"]
            .as_array()
            .expect("active")
            .iter()
            .all(|x| x["scrapePool"] != "files"),
        "{t}"
    );
}

#[test]
fn a_bad_configuration_is_refused_and_a_bad_reload_keeps_the_old_one() {
    let dir = TestDir::new();
    let prom = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom,
        "remote_write:\n- url: http://x/\nstorage: {}\nscrape_configs:\n- job_name: k\n  kubernetes_sd_configs: [{role: pod}]\n",
    )
    .expect("write");
    let p = prom.display().to_string();
    let mut node = TestNode::start_with(
        1,
        &dir.path().join("bad"),
        free_addr(),
        free_addr(),
        &["--prometheus-config", &p],
    );
    wait_until("the node to refuse its configuration", Duration::from_secs(20), || {
        if node.is_running() {
            Err("still running".into())
        } else {
            Ok(())
        }
    });
    let log = std::fs::read_to_string(node.log_path()).expect("node log");
    for name in ["remote_write", "storage", "kubernetes_sd_configs"] {
        assert!(log.contains(name), "{name} not named in the refusal: {log}");
    }

    std::fs::write(&prom, "global:\n  scrape_interval: 7s\n").expect("write");
    let mut node = TestNode::start_with(
        2,
        &dir.path().join("good"),
        free_addr(),
        free_addr(),
        &["--prometheus-config", &p],
    );
    node.wait_ready(Duration::from_secs(30));
    let before = node.api("/api/v1/status/config", &[]);
    assert!(
        before["yaml"].as_str().expect("yaml").contains("scrape_interval: 7s"),
        "{before}"
    );
    std::fs::write(&prom, "remote_read: []\n").expect("write");
    let r = node.request("POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 500, "a refused reload answers 500: {}", r.text());
    assert!(r.text().contains("remote_read"), "{}", r.text());
    assert_eq!(
        node.api("/api/v1/status/config", &[])["digest"],
        before["digest"],
        "the old file stays in force"
    );
    assert_eq!(
        node_metric(&node.http_addr, "promraft_config_last_reload_successful"),
        Ok(0.0)
    );
    std::fs::write(&prom, "global:\n  scrape_interval: 9s\n").expect("write");
    assert_eq!(node.request("POST", "/-/reload", &[], b"").status, 200);
    let after = node.api("/api/v1/status/config", &[]);
    assert_ne!(after["digest"], before["digest"]);
    assert_eq!(
        node_metric(&node.http_addr, "promraft_config_last_reload_successful"),
        Ok(1.0)
    );
}
