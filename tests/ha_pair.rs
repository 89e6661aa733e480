//! Prometheus HA pairs as senders (`ha_dedup`): one elected replica per
//! cluster is stored without its replica label, the others are answered
//! 202 and dropped, the next replica is elected once the elected one is
//! silent past `failover_timeout`, and a promraft failover or restart never
//! changes the elected replica.
//!
//! The first test drives the protocol with hand-made remote-write
//! requests; the second with two real Debian Prometheus servers scraping a
//! real `prometheus-node-exporter` (skipped without them unless
//! `PROMRAFT_REQUIRE_PEERS=1`).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, RaftTiming};
use common::*;
use serde_json::Value;

const FILE: &str = "ha_pair";

/// Failover timeout of the hand-driven test: long enough that the kill of
/// a promraft leader (well under a second) cannot look like a silent
/// replica, short enough to wait out.
const FAILOVER_TIMEOUT_MS: i64 = 3_000;

/// The elected replica of `cluster` and its election count on one node.
fn elected(addr: &str, cluster: &str) -> Option<(String, u64)> {
    let data = api_get(addr, "/api/v1/status/ha_replicas", &[]);
    data["clusters"].as_array()?.iter().find_map(|c| {
        (c["cluster"] == cluster).then(|| {
            (
                c["replica"].as_str().unwrap_or_default().to_string(),
                c["elections"].as_u64().unwrap_or_default(),
            )
        })
    })
}

/// Waits until every node in `addrs` shows `want` as `cluster`'s election.
fn wait_elected(addrs: &[String], cluster: &str, want: (&str, u64)) {
    wait_until(
        &format!("every node to show {want:?} elected for cluster {cluster}"),
        Duration::from_secs(20),
        || {
            for a in addrs {
                let got = elected(a, cluster);
                if got.as_ref().map(|(r, n)| (r.as_str(), *n)) != Some(want) {
                    return Err(format!("{a}: {got:?}"));
                }
            }
            Ok(())
        },
    );
}

/// One sample of the HA pair's series, as `replica` of `cluster` sends it.
fn ha_write(cluster: &str, replica: &str, t_ms: i64, v: f64) -> prompb::WriteRequest {
    write_request(vec![
        series(
            &[
                ("__name__", "ha_metric"),
                ("cluster", cluster),
                ("__replica__", replica),
                ("i", "0"),
            ],
            &[(t_ms, v)],
        ),
        series(
            &[
                ("__name__", "ha_metric"),
                ("cluster", cluster),
                ("__replica__", replica),
                ("i", "1"),
            ],
            &[(t_ms, v * 2.0)],
        ),
    ])
}

fn ha_config(clusters_max: usize) -> String {
    format!(
        "ha_dedup:\n  failover_timeout: {FAILOVER_TIMEOUT_MS}ms\n  clusters_max: {clusters_max}\n\
         storage:\n  checkpoint_interval: 1s\n  checkpoint_entries: 10\n  log_entries_kept: 10\n"
    )
}

#[test]
fn one_replica_is_stored_and_the_next_is_elected_after_the_timeout() {
    const TEST: &str = "one_replica_is_stored_and_the_next_is_elected_after_the_timeout";
    let how = repro(FILE, TEST);
    let mut cluster = Cluster::start(3, RaftTiming::default(), &ha_config(2));
    let leader = cluster.wait_leader(&cluster.ids(), Duration::from_secs(20)).leader_id;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| Some(id) != leader).collect();
    let addr = |c: &Cluster, id: u64| c.node(id).http_addr.clone();
    let all: Vec<String> = cluster.ids().iter().map(|&id| addr(&cluster, id)).collect();
    let t0 = now_ms();

    // The first replica to send is elected; it is stored without its
    // replica label. The other one's copy is answered 202 and dropped,
    // whichever node it reaches.
    let r = cluster.node(followers[0]).write(&ha_write("a", "r1", t0, 1.0));
    assert_eq!(r.status, 204, "r1's first write: {} {}; {how}", r.status, r.text());
    wait_elected(&all, "a", ("r1", 1));
    for (i, id) in cluster.ids().into_iter().enumerate() {
        let r = cluster.node(id).write(&ha_write("a", "r2", t0 + 5 + i as i64, 9.0));
        assert_eq!(
            r.status,
            202,
            "r2's copy via node {id}: {} {}; {how}",
            r.status,
            r.text()
        );
        assert!(r.text().contains("not elected"), "202 body: {}", r.text());
    }
    // Samples without the HA labels pass as they are.
    cluster.node(followers[1]).write_ok(&write_request(vec![series(
        &[("__name__", "plain"), ("cluster", "a")],
        &[(t0, 1.0)],
    )]));
    // The leader applied every acknowledged write before answering; a
    // follower may not have yet.
    let stored =
        cluster
            .node(leader.expect("a leader"))
            .raw_samples(r#"{__name__=~"ha_metric|plain"}"#, t0 - 1, t0 + 1_000);
    let want: BTreeMap<LabelSet, Vec<(i64, f64)>> = BTreeMap::from([
        (
            label_set_of(&[("__name__", "ha_metric"), ("cluster", "a"), ("i", "0")]),
            vec![(t0, 1.0)],
        ),
        (
            label_set_of(&[("__name__", "ha_metric"), ("cluster", "a"), ("i", "1")]),
            vec![(t0, 2.0)],
        ),
        (
            label_set_of(&[("__name__", "plain"), ("cluster", "a")]),
            vec![(t0, 1.0)],
        ),
    ]);
    assert_eq!(stored, want, "one copy, without __replica__; {how}");

    // A second cluster is tracked; a third is past clusters_max (2) and
    // refused with the reason and the limit, nothing of it stored.
    assert_eq!(
        cluster.node(followers[0]).write(&ha_write("b", "x", t0, 1.0)).status,
        204
    );
    let r = cluster.node(followers[0]).write(&ha_write("c", "x", t0, 1.0));
    assert_eq!(r.status, 400, "a third cluster: {}; {how}", r.text());
    assert!(
        r.text().contains("ha_dedup.clusters_max") && r.text().contains("limit of 2"),
        "{}",
        r.text()
    );

    // Kill the promraft leader: the survivors keep r1 elected (one
    // election), r1 keeps being stored and r2 keeps being dropped.
    let old = leader.expect("a leader");
    cluster.node_mut(old).kill9();
    let survivors: Vec<u64> = followers.clone();
    let view = cluster.wait_leader(&survivors, Duration::from_secs(20));
    let survivor_addrs: Vec<String> = survivors.iter().map(|&id| addr(&cluster, id)).collect();
    let mut t = t0 + 1_000;
    let r = cluster.node(survivors[0]).write(&ha_write("a", "r1", t, 1.0));
    assert_eq!(
        r.status,
        204,
        "r1 after the leader kill: {} {}; {how}",
        r.status,
        r.text()
    );
    let r = cluster.node(survivors[1]).write(&ha_write("a", "r2", t + 5, 9.0));
    assert_eq!(
        r.status,
        202,
        "r2 after the leader kill: {} {}; {how}",
        r.status,
        r.text()
    );
    wait_elected(&survivor_addrs, "a", ("r1", 1));
    println!("leader {old} killed; node {:?} leads; r1 still elected", view.leader_id);

    // r1 falls silent; r2 keeps sending every 100 ms and is elected once
    // the timeout has passed, not before.
    let r1_last = Instant::now();
    let elected_after = loop {
        t += 100;
        let r = cluster.node(survivors[1]).write(&ha_write("a", "r2", t, 20.0));
        if r.status == 204 {
            break r1_last.elapsed();
        }
        assert_eq!(
            r.status,
            202,
            "r2 before the failover: {} {}; {how}",
            r.status,
            r.text()
        );
        assert!(r1_last.elapsed() < Duration::from_secs(30), "r2 never elected; {how}");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "r2 elected {} ms after r1's last write (failover_timeout {FAILOVER_TIMEOUT_MS} ms)",
        elected_after.as_millis()
    );
    assert!(
        elected_after >= Duration::from_millis(FAILOVER_TIMEOUT_MS as u64),
        "r2 elected after {elected_after:?}, before the timeout; {how}"
    );
    wait_elected(&survivor_addrs, "a", ("r2", 2));
    // Now r1 is the copy that is dropped.
    let r = cluster.node(survivors[0]).write(&ha_write("a", "r1", t + 1, 1.0));
    assert_eq!(
        r.status,
        202,
        "r1 after r2's election: {} {}; {how}",
        r.status,
        r.text()
    );

    // The dropped copies are counted per cluster on the leaders that
    // dropped them.
    let dropped: f64 = survivor_addrs
        .iter()
        .filter_map(|a| {
            let m = http_request(a, "GET", "/metrics", &[], b"").ok()?.text();
            metric_sum(&m, "promraft_ha_samples_dropped_total")
        })
        .sum();
    assert!(
        dropped >= 4.0,
        "dropped samples counted on the survivors: {dropped}; {how}"
    );

    // The elections survive a restart from a checkpoint whose log entries
    // are purged: write past a checkpoint, restart the old leader.
    for i in 0..30 {
        t += 10;
        let plain = write_request(vec![series(&[("__name__", "filler")], &[(t, f64::from(i))])]);
        cluster.node(survivors[0]).write_ok(&plain);
    }
    std::thread::sleep(Duration::from_millis(1_500));
    for i in 0..30 {
        t += 10;
        let plain = write_request(vec![series(&[("__name__", "filler")], &[(t, f64::from(i))])]);
        cluster.node(survivors[0]).write_ok(&plain);
    }
    cluster.node_mut(old).restart();
    cluster.node_mut(old).wait_ready(READY_TIMEOUT);
    wait_elected(&[addr(&cluster, old)], "a", ("r2", 2));
    wait_elected(&[addr(&cluster, old)], "b", ("x", 1));
    let data: Value = api_get(&addr(&cluster, old), "/api/v1/status/ha_replicas", &[]);
    assert_eq!(data["enabled"], true, "{data}");
    assert_eq!(data["replicaLabel"], "__replica__", "{data}");
    assert_eq!(data["failoverTimeoutSeconds"], 3.0, "{data}");
}

/// A free port on 127.0.0.1 for a peer's listener.
fn peer_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// One Debian Prometheus server of the HA pair: scrapes `target` every
/// second with external labels `{cluster: a, __replica__: replica}` and
/// remote-writes to `write_to`.
fn start_replica(
    prometheus: &std::path::Path,
    dir: &std::path::Path,
    replica: &str,
    target: &str,
    write_to: &str,
) -> (Proc, String) {
    let addr = peer_addr();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  external_labels:
    cluster: a
    __replica__: {replica}
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: http://{write_to}/api/v1/write
    remote_timeout: 10s
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
      max_backoff: 1s
"#
    );
    let p = start_prometheus(prometheus, dir, &format!("prometheus-{replica}"), &addr, &config);
    (p, addr)
}

/// Samples remote write failed to send, per Prometheus's own metrics.
fn failed_samples(prom_addr: &str) -> f64 {
    let m = http_request(prom_addr, "GET", "/metrics", &[], b"")
        .map(|r| r.text())
        .unwrap_or_default();
    metric_sum(&m, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0)
}

/// The sample timestamps of `node_boot_time_seconds{cluster="a"}` (one per
/// scrape of the stored replica) in `[from, to]`.
fn boot_time_stamps(addr: &str, from_ms: i64, to_ms: i64) -> Result<Vec<i64>, String> {
    let data = api_get(
        addr,
        "/api/v1/query",
        &[
            (
                "query",
                &format!(
                    "node_boot_time_seconds{{cluster=\"a\"}}[{}ms]",
                    (to_ms - from_ms).max(1)
                ),
            ),
            ("time", &secs(to_ms)),
        ],
    );
    let m = parse_matrix(&data["result"]);
    if m.len() != 1 {
        return Err(format!("want one series, got {:?}", m.keys().collect::<Vec<_>>()));
    }
    Ok(m.into_values()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.0)
        .collect())
}

#[test]
fn two_prometheus_servers_of_an_ha_pair_are_stored_once() {
    const TEST: &str = "two_prometheus_servers_of_an_ha_pair_are_stored_once";
    let (Some(prometheus), Some(exporter)) = (peer("prometheus", TEST), peer("prometheus-node-exporter", TEST)) else {
        return;
    };
    const TIMEOUT_S: i64 = 10;
    let mut cluster = Cluster::start(
        3,
        RaftTiming::default(),
        &format!("ha_dedup:\n  failover_timeout: {TIMEOUT_S}s\n"),
    );
    let dir = TestDir::new();
    let exporter_addr = peer_addr();
    let mut cmd = Command::new(exporter);
    cmd.arg(format!("--web.listen-address={exporter_addr}"));
    let _exporter = Proc::spawn("node-exporter", &mut cmd, &dir.path().join("node-exporter.log"));

    // Each replica writes to a follower, so that killing the promraft
    // leader does not cut a sender off.
    let leader = cluster
        .wait_leader(&cluster.ids(), Duration::from_secs(20))
        .leader_id
        .expect("a leader");
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    let f_addr: Vec<String> = followers.iter().map(|&id| cluster.node(id).http_addr.clone()).collect();
    let (mut p1, a1) = start_replica(&prometheus, dir.path(), "r1", &exporter_addr, &f_addr[0]);
    let (mut p2, a2) = start_replica(&prometheus, dir.path(), "r2", &exporter_addr, &f_addr[1]);
    let how = format!("logs in {}; reproduce: {}", dir.path().display(), repro(FILE, TEST));

    // Both send; one is elected; one copy without the replica label.
    let (first, _) = wait_until("a replica to be elected", Duration::from_secs(60), || {
        elected(&f_addr[0], "a").ok_or_else(|| "none yet".to_string())
    });
    let start = now_ms();
    wait_until(
        "ten seconds of scrapes from both servers",
        Duration::from_secs(60),
        || {
            let stamps = boot_time_stamps(&f_addr[1], start, now_ms())?;
            if stamps.len() >= 8 {
                Ok(())
            } else {
                Err(format!("{} samples", stamps.len()))
            }
        },
    );
    let now = now_ms();
    let stamps = boot_time_stamps(&f_addr[1], start, now).unwrap_or_else(|e| panic!("{e}; {how}"));
    let span_s = (now - start) as f64 / 1000.0;
    println!(
        "{} samples of node_boot_time_seconds in {span_s:.1} s (one replica scraping every 1 s)",
        stamps.len()
    );
    assert!(
        (stamps.len() as f64) < span_s * 1.5,
        "interleaved copies: {} samples in {span_s} s; {how}",
        stamps.len()
    );
    let with_replica = api_get(&f_addr[0], "/api/v1/series", &[("match[]", r#"{__replica__!=""}"#)]);
    assert_eq!(
        with_replica.as_array().map(Vec::len),
        Some(0),
        "series with __replica__: {with_replica}; {how}"
    );
    // promraft holds exactly the series the elected server holds itself
    // (plus the cluster label): one copy of each.
    let window = [("start", secs(start)), ("end", secs(now - 2_000))];
    let series_of = |addr: &str, selector: &str| -> std::collections::BTreeSet<LabelSet> {
        let mut params = vec![("match[]", selector)];
        params.extend(window.iter().map(|(k, v)| (*k, v.as_str())));
        let data = api_get(addr, "/api/v1/series", &params);
        data.as_array()
            .map(|a| a.iter().map(label_set).collect())
            .unwrap_or_default()
    };
    let ours: std::collections::BTreeSet<LabelSet> = series_of(&f_addr[0], r#"{job="node"}"#)
        .into_iter()
        .map(|mut l| {
            assert_eq!(l.remove("cluster").as_deref(), Some("a"), "{l:?}");
            l
        })
        .collect();
    let elected_addr = if first == "r1" { &a1 } else { &a2 };
    let theirs = series_of(elected_addr, r#"{job="node"}"#);
    println!(
        "{} node_exporter series in promraft, {} in the elected Prometheus",
        ours.len(),
        theirs.len()
    );
    assert!(ours.len() > 100, "node_exporter series stored: {}; {how}", ours.len());
    assert_eq!(
        ours, theirs,
        "promraft's series against the elected server's own; {how}"
    );

    // Kill the promraft leader: the election stays.
    cluster.node_mut(leader).kill9();
    cluster.wait_leader(&followers, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        elected(&f_addr[0], "a"),
        Some((first.clone(), 1)),
        "after the promraft leader kill; {how}"
    );
    assert_eq!(
        elected(&f_addr[1], "a"),
        Some((first.clone(), 1)),
        "after the promraft leader kill; {how}"
    );

    // Neither sender failed a sample so far.
    for a in [&a1, &a2] {
        assert_eq!(
            failed_samples(a),
            0.0,
            "{a} prometheus_remote_storage_samples_failed_total; {how}"
        );
    }

    // Kill the elected Prometheus; the other is elected within the timeout
    // (plus the time its requests take), and the series' gap is reported.
    let (dead, other, other_addr) = if first == "r1" {
        (&mut p1, "r2", &a2)
    } else {
        (&mut p2, "r1", &a1)
    };
    let killed_at = now_ms();
    dead.kill9();
    wait_until(
        "the other replica to be elected",
        Duration::from_secs(TIMEOUT_S as u64 + 20),
        || match elected(&f_addr[0], "a") {
            Some((r, 2)) if r == other => Ok(()),
            e => Err(format!("{e:?}")),
        },
    );
    wait_until("samples of the new replica", Duration::from_secs(20), || {
        let s = boot_time_stamps(&f_addr[0], killed_at - 5_000, now_ms())?;
        if s.last().is_some_and(|&t| t > killed_at + TIMEOUT_S * 1000) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let stamps = boot_time_stamps(&f_addr[0], killed_at - 5_000, now_ms()).unwrap_or_else(|e| panic!("{e}; {how}"));
    let gap_ms = stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    println!("gap across the failover from {first} to {other}: {gap_ms} ms (failover_timeout {TIMEOUT_S} s, scrape interval 1 s)");
    assert!(
        stamps.windows(2).all(|w| w[1] > w[0]),
        "duplicate or unordered timestamps: {stamps:?}; {how}"
    );
    assert!(
        gap_ms <= TIMEOUT_S * 1000 + 1_000,
        "gap {gap_ms} ms > failover_timeout + one interval; {how}"
    );
    assert_eq!(failed_samples(other_addr), 0.0, "{other} failed samples; {how}");
}
