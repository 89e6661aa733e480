//! Data in and out in Prometheus's formats, and the Prometheus-shaped admin
//! API, with the real binary:
//! - `promraft export` writes OpenMetrics that Debian's `promtool tsdb
//!   create-blocks-from openmetrics` accepts, and `promtool tsdb dump` of
//!   the blocks holds exactly the samples promraft returns for the same
//!   selector and range (skipped with a message when `promtool` is missing,
//!   a failure then if `PROMRAFT_REQUIRE_PEERS=1`);
//! - `promraft import` of Prometheus text and OpenMetrics files lands on
//!   every replica through the log, with remote write's rejections;
//! - `POST /api/v1/admin/tsdb/snapshot` writes a valid backup file and
//!   `POST /api/v1/admin/tsdb/delete_series` deletes on every replica alike,
//!   also after a restart, and refuses partial ranges.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod backup_support;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use backup_support::*;
use common::cluster::*;
use common::*;
use promraft::backup::openmetrics::{parse_line, TextFormat};

const FILE: &str = "backup_openmetrics";

/// Parses `promtool tsdb dump` output: `{__name__="m", a="b"} value ts_ms`.
fn parse_dump(out: &str) -> BTreeMap<LabelSet, Vec<(i64, f64)>> {
    let mut m: BTreeMap<LabelSet, Vec<(i64, f64)>> = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        // A dummy name in front makes the line Prometheus text.
        let s = parse_line(&format!("dump{line}"), TextFormat::Prometheus)
            .unwrap_or_else(|e| panic!("unexpected promtool line {line:?}: {e}"))
            .expect("a sample");
        let mut labels = s.labels.clone();
        let dummy = labels
            .iter()
            .position(|l| l == &("__name__".to_string(), "dump".to_string()));
        labels.remove(dummy.expect("the dummy name"));
        let ls: LabelSet = labels.into_iter().collect();
        m.entry(ls).or_default().push((s.t_ms.expect("a timestamp"), s.value));
    }
    m
}

#[test]
fn export_is_accepted_by_promtool_with_the_same_samples() {
    let name = "export_is_accepted_by_promtool_with_the_same_samples";
    let Some(promtool) = peer("promtool", name) else {
        return;
    };
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("n"));
    node.wait_ready(READY_TIMEOUT);
    let base = (now_ms() - 3_600_000) / 1000 * 1000;
    write_grid(&node, "om_metric", 30, base, 120, 15_000);
    write_grid(&node, "om_other", 5, base, 10, 15_000);
    // Label values that need escaping, odd values, a millisecond timestamp.
    node.write_ok(&write_request(vec![series(
        &[("__name__", "om_metric"), ("path", "C:\\dir \"x\"\nend")],
        &[(base + 1, -0.0), (base + 2_500, 1e-300), (base + 7_777, 12345678.25)],
    )]));
    let (start, end) = (base + 300_000, base + 1_500_000);
    let out = dir.path().join("export.om");
    promraft_ok(
        &[
            "export",
            "--addr",
            &node.http_addr,
            "--out",
            &out.display().to_string(),
            "--match",
            "{__name__=\"om_metric\"}",
            "--start",
            &secs(start),
            "--end",
            &secs(end),
        ],
        &[],
    );
    let blocks = dir.path().join("blocks");
    let created = run_command(
        Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&out)
            .arg(&blocks),
        BACKUP_CLI_TIMEOUT,
    );
    assert!(
        created.status.success(),
        "promtool refused the export: {}\n{}\nrepro: {}",
        created.stdout,
        created.stderr,
        repro(FILE, name)
    );
    // promtool 2.42's dump wants a WAL directory even for blocks only.
    std::fs::create_dir_all(blocks.join("wal")).expect("mkdir wal");
    let dumped = run_command(
        Command::new(&promtool).args(["tsdb", "dump"]).arg(&blocks),
        BACKUP_CLI_TIMEOUT,
    );
    assert!(dumped.status.success(), "promtool tsdb dump: {}", dumped.stderr);
    let got = parse_dump(&dumped.stdout);
    let want = node.raw_samples("{__name__=\"om_metric\"}", start, end);
    assert_eq!(got.len(), want.len(), "series in promtool's blocks vs promraft");
    assert_eq!(
        got.len(),
        30,
        "the partial first-range series has no sample in the range? got {}",
        got.len()
    );
    for (labels, samples) in &want {
        let g = got
            .get(labels)
            .unwrap_or_else(|| panic!("promtool lacks series {labels:?}"));
        let g: Vec<(i64, u64)> = g.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        let w: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(g, w, "samples of {labels:?} differ");
    }
    // The whole range includes the escaped series and its odd values.
    promraft_ok(
        &[
            "export",
            "--addr",
            &node.http_addr,
            "--out",
            &dir.path().join("all.om").display().to_string(),
        ],
        &[],
    );
    let blocks2 = dir.path().join("blocks2");
    let created = run_command(
        Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(dir.path().join("all.om"))
            .arg(&blocks2),
        BACKUP_CLI_TIMEOUT,
    );
    assert!(
        created.status.success(),
        "promtool refused the full export: {}",
        created.stderr
    );
    std::fs::create_dir_all(blocks2.join("wal")).expect("mkdir wal");
    let dumped = run_command(
        Command::new(&promtool).args(["tsdb", "dump"]).arg(&blocks2),
        BACKUP_CLI_TIMEOUT,
    );
    assert!(
        dumped.status.success(),
        "promtool tsdb dump of the full export's blocks failed ({}): {}",
        dumped.status,
        dumped.stderr
    );
    let got = parse_dump(&dumped.stdout);
    let want = node.raw_samples("{__name__=~\"om_.*\"}", base, base + 3_600_000);
    let bits = |m: &BTreeMap<LabelSet, Vec<(i64, f64)>>| -> BTreeMap<LabelSet, Vec<(i64, u64)>> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|&(t, x)| (t, x.to_bits())).collect()))
            .collect()
    };
    assert_eq!(bits(&got), bits(&want), "full export through promtool differs");
}

fn import(addr: &str, file: &Path, extra: &[&str]) -> String {
    let f = file.display().to_string();
    let mut args = vec!["import", "--addr", addr, "--in", &f];
    args.extend_from_slice(extra);
    promraft_ok(&args, &[])
}

#[test]
fn import_text_files_through_the_log() {
    let c = Cluster::start(3, RaftTiming::default(), "");
    let ids = c.ids();
    let leader = c.wait_leader(&ids, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let follower = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let t0 = (now_ms() - 3_600_000) / 1000 * 1000;
    let prom = c.dir().join("in.prom");
    let mut text = String::from("# HELP imp_requests_total Requests.\n# TYPE imp_requests_total counter\n");
    for k in 0..50 {
        text.push_str(&format!(
            "imp_requests_total{{code=\"200\",path=\"/a\\\"b\"}} {} {}\n",
            k * 3,
            t0 + k * 10_000
        ));
        text.push_str(&format!(
            "imp_requests_total{{code=\"500\"}} {} {}\n",
            k,
            t0 + k * 10_000
        ));
    }
    std::fs::write(&prom, &text).expect("write");
    let om = c.dir().join("in.om");
    let mut text = String::from("# TYPE imp_temp gauge\n");
    for k in 0..20 {
        text.push_str(&format!(
            "imp_temp{{room=\"x\"}} {}.5 {}.{:03} # {{trace_id=\"t\"}} 1\n",
            k,
            (t0 + k * 5_000) / 1000,
            0
        ));
    }
    text.push_str("# EOF\n");
    std::fs::write(&om, &text).expect("write");
    let addr = c.node(follower).http_addr.clone();
    let out = import(&addr, &prom, &["--batch-samples", "17"]);
    assert!(out.contains("imported 100 samples"), "import output: {out}");
    let out = import(&addr, &om, &[]);
    assert!(
        out.contains("imported 20 samples") && out.contains("Openmetrics"),
        "import output: {out}"
    );
    let d = c.wait_converged(&ids, CONVERGE_TIMEOUT);
    assert_eq!((d.series, d.samples), (3, 120), "digest after import: {d:?}");
    for &id in &ids {
        let got = c
            .node(id)
            .raw_samples("imp_requests_total{code=\"200\"}", t0, t0 + 600_000);
        let s = got.get(&label_set_of(&[
            ("__name__", "imp_requests_total"),
            ("code", "200"),
            ("path", "/a\"b"),
        ]));
        let want: Vec<(i64, f64)> = (0..50).map(|k| (t0 + k * 10_000, (k * 3) as f64)).collect();
        assert_eq!(s, Some(&want), "node {id}: imported series differs: {got:?}");
        let temp = c.node(id).raw_samples("imp_temp", t0, t0 + 600_000);
        let want: Vec<(i64, f64)> = (0..20).map(|k| (t0 + k * 5_000, k as f64 + 0.5)).collect();
        assert_eq!(
            temp.values().next(),
            Some(&want),
            "node {id}: OpenMetrics import differs"
        );
    }
    // Same rules as remote write: an older sample is out of order.
    let late = c.dir().join("late.prom");
    std::fs::write(&late, format!("imp_requests_total{{code=\"500\"}} 1 {}\n", t0 - 1)).expect("write");
    let out = import(&addr, &late, &[]);
    assert!(
        out.contains("out of order"),
        "an out-of-order sample must be rejected like remote write: {out}"
    );
    // ...and left out of storage: the content is what it was, and the
    // series holds exactly its 50 samples on every replica.
    let after = c.wait_converged(&ids, CONVERGE_TIMEOUT);
    assert_eq!(
        (&after.digest, after.series, after.samples),
        (&d.digest, 3, 120),
        "the refused out-of-order import changed the content: before {d:?}, after {after:?}"
    );
    for &id in &ids {
        let got = c
            .node(id)
            .raw_samples("imp_requests_total{code=\"500\"}", t0 - 60_000, t0 + 600_000);
        let want: Vec<(i64, f64)> = (0..50).map(|k| (t0 + k * 10_000, k as f64)).collect();
        assert_eq!(
            got.values().collect::<Vec<_>>(),
            vec![&want],
            "node {id}: the out-of-order sample at {} must not be stored: {got:?}",
            t0 - 1
        );
    }
}

#[test]
fn admin_snapshot_and_delete_series_on_every_replica() {
    let name = "admin_snapshot_and_delete_series_on_every_replica";
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let ids = c.ids();
    let leader = c.wait_leader(&ids, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let follower = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let base = now_ms() - 3_600_000;
    write_grid(c.node(leader), "keep_me", 20, base, 150, 10_000);
    write_grid(c.node(leader), "delete_me", 20, base, 150, 10_000);
    c.wait_converged(&ids, CONVERGE_TIMEOUT);

    // Snapshot, Prometheus-shaped, through a follower.
    let r = c
        .node(follower)
        .request("POST", "/api/v1/admin/tsdb/snapshot", &[], b"");
    let data = r.api_data("snapshot");
    let snap_name = data["name"].as_str().expect("a name").to_string();
    let snap = c.node(follower).data_dir.join("backups").join(&snap_name);
    let v = promraft_ok(&["backup", "verify", &snap.display().to_string()], &[]);
    assert!(v.contains("series 40"), "snapshot {snap_name}: {v}");

    // A range that cuts series is refused (partial deletes unsupported).
    let r = c.node(follower).post_form(
        "/api/v1/admin/tsdb/delete_series",
        &[
            ("match[]", "delete_me"),
            ("start", &secs(base + 100_000)),
            ("end", &secs(base + 200_000)),
        ],
    );
    assert_eq!(r.status, 400, "partial delete: {}", r.text());
    // A whole-series delete through a follower: 204, then gone everywhere.
    let r = c.node(follower).post_form(
        "/api/v1/admin/tsdb/delete_series",
        &[("match[]", "delete_me{g=~\"1|2\"}")],
    );
    assert_eq!(
        r.status,
        204,
        "delete_series: {} {}\nrepro: {}",
        r.status,
        r.text(),
        repro(FILE, name)
    );
    let d = c.wait_converged(&ids, CONVERGE_TIMEOUT);
    assert_eq!(d.series, 32, "8 of 40 series deleted on every replica: {d:?}");
    // Exactly the grid written, less the deleted series: keep_me whole,
    // delete_me without g=1 and g=2, every sample with its value.
    let keep_want = grid_samples("keep_me", 20, base, 150, 10_000, |_| true);
    let delete_want = grid_samples("delete_me", 20, base, 150, 10_000, |i| !matches!(i % 5, 1 | 2));
    assert_eq!(delete_want.len(), 12);
    for &id in &ids {
        let keep = c.node(id).raw_samples("keep_me", base, base + 2_000_000);
        assert_eq!(keep, keep_want, "node {id}: keep_me differs from what was written");
        let left = c.node(id).raw_samples("delete_me", base, base + 2_000_000);
        assert_eq!(
            left, delete_want,
            "node {id}: delete_me should hold exactly the series with g other than 1 and 2"
        );
    }
    // The delete survives a checkpoint and a restart.
    c.node_mut(follower).stop(STOP_TIMEOUT).expect("stop");
    c.node_mut(follower).restart();
    c.node_mut(follower).wait_ready(READY_TIMEOUT);
    let again = c.wait_converged(&ids, CONVERGE_TIMEOUT);
    assert_eq!((again.digest, again.series), (d.digest, 32), "after a restart");
}
