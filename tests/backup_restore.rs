//! Backup and restore end to end with the real binary:
//! - a backup (encrypted with a passphrase) of a node restores into a new
//!   one-member cluster whose digest and query answers equal the source's
//!   at the backup's index; two more nodes then join it by snapshot and
//!   converge to the same digest, and the new cluster takes writes;
//! - a backup taken while writes go on is one consistent cut: every series
//!   holds the same prefix of the writer's requests, at least every request
//!   acknowledged before the backup began, and exactly the values written.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod backup_support;
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_support::*;
use common::cluster::*;
use common::*;

const FILE: &str = "backup_restore";

#[test]
fn restore_equals_source_and_new_nodes_join_by_snapshot() {
    let name = "restore_equals_source_and_new_nodes_join_by_snapshot";
    let dir = TestDir::new();
    let mut src = TestNode::start(1, &dir.path().join("src"));
    src.wait_ready(READY_TIMEOUT);
    let base = now_ms() - 3_600_000;
    // 200 series x 300 samples: chunks are cut (120 samples) and persisted.
    write_grid(&src, "bk_metric", 200, base, 300, 10_000);
    let before = src.digest();
    let end = base + 300 * 10_000;
    let range_params = [
        ("query", "sum by (g) (rate(bk_metric[5m]))"),
        ("start", &secs(base) as &str),
        ("end", &secs(end) as &str),
        ("step", "60"),
    ];
    let range_before = src.api("/api/v1/query_range", &range_params);
    let raw_before = src.raw_samples("bk_metric{g=\"3\"}", base, end);

    let file = dir.path().join("one.prbackup");
    let f = file.display().to_string();
    let env = [("BK_PASS", "correct horse battery staple")];
    let out = promraft(
        &[
            "backup",
            "--addr",
            &src.http_addr,
            "--out",
            &f,
            "--passphrase-env",
            "BK_PASS",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "backup failed: {}\n{}\nrepro: {}",
        out.stdout,
        out.stderr,
        repro(FILE, name)
    );
    assert!(
        backup_index(&out.stdout) >= before.applied_index,
        "backup index before the digest's: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("backup: ") && out.stderr.contains("series"),
        "no plain progress line on a non-terminal stderr: {:?}",
        out.stderr
    );
    let v = promraft_ok(&["backup", "verify", &f, "--passphrase-env", "BK_PASS"], &env);
    assert!(
        v.contains("OK") && v.contains(&format!("series {}", before.series)),
        "verify output: {v}"
    );
    assert!(v.contains(&format!("samples {}", before.samples)), "verify output: {v}");

    let (mut restored, rout) = restore_and_start(
        &file,
        &dir.path().join("r11"),
        11,
        &["--passphrase-env", "BK_PASS"],
        &env,
    );
    assert!(
        rout.contains(&before.digest),
        "restore should print the source digest {}: {rout}",
        before.digest
    );
    let after = restored.digest();
    assert_eq!(
        (&after.digest, after.series, after.samples),
        (&before.digest, before.series, before.samples),
        "restored node differs from the source\nrepro: {}",
        repro(FILE, name)
    );
    assert_eq!(
        restored.api("/api/v1/query_range", &range_params),
        range_before,
        "range query differs"
    );
    assert_eq!(
        restored.raw_samples("bk_metric{g=\"3\"}", base, end),
        raw_before,
        "raw samples differ"
    );
    src.stop(STOP_TIMEOUT).expect("source stops");

    // Two nodes join the restored one and catch up by snapshot (the log
    // before the backup's index does not exist on the new cluster).
    let joiners = [12u64, 13];
    let mut nodes = Vec::new();
    for id in joiners {
        let (http, raft) = (free_addr(), free_addr());
        let ic = format!("11={},{id}={raft}", restored.raft_addr);
        let mut n = TestNode::start_with(
            id,
            &dir.path().join(format!("n{id}")),
            http.clone(),
            raft.clone(),
            &["--initial-cluster", &ic],
        );
        let ids = id.to_string();
        promraft_ok(
            &[
                "cluster",
                "add-learner",
                "--addr",
                &restored.http_addr,
                "--node-id",
                &ids,
                "--raft-addr",
                &raft,
                "--http-addr",
                &http,
            ],
            &[],
        );
        promraft_ok(
            &["cluster", "promote", "--addr", &restored.http_addr, "--node-id", &ids],
            &[],
        );
        n.wait_ready(READY_TIMEOUT);
        nodes.push(n);
    }
    for n in &nodes {
        wait_until(
            &format!("node {} to hold the restored data", n.id),
            CONVERGE_TIMEOUT,
            || {
                let d = try_digest(&n.http_addr)?;
                if d.digest == before.digest {
                    Ok(())
                } else {
                    Err(format!("digest {d:?}"))
                }
            },
        );
        // The exact line the Raft server logs when a snapshot arrives
        // (src/raft/transport/server.rs), as cluster_membership.rs checks it.
        let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains("snapshot received; installing")),
            "node {} should have caught up by snapshot (log line `snapshot received; installing`); log tail:\n{}",
            n.id,
            n.log_tail(40)
        );
    }
    // The new cluster takes writes, and all three replicas agree.
    write_grid(&restored, "bk_after", 10, end, 5, 10_000);
    wait_until("the three replicas to agree after new writes", CONVERGE_TIMEOUT, || {
        let ds: Vec<Digest> = std::iter::once(&restored)
            .chain(nodes.iter())
            .map(|n| try_digest(&n.http_addr))
            .collect::<Result<_, _>>()?;
        if ds
            .iter()
            .all(|d| d.digest == ds[0].digest && d.series == before.series + 10)
        {
            Ok(())
        } else {
            Err(format!("{ds:?}"))
        }
    });
    restored.stop(STOP_TIMEOUT).expect("restored node stops");
}

#[test]
fn online_backup_is_one_consistent_cut() {
    let name = "online_backup_is_one_consistent_cut";
    let dir = TestDir::new();
    let mut src = TestNode::start(1, &dir.path().join("src"));
    src.wait_ready(READY_TIMEOUT);
    let series = 50usize;
    let base = now_ms() - 3_600_000;
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), src.http_addr.clone());
        std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) && k < 20_000 {
                let ts: Vec<_> = (0..series)
                    .map(|i| {
                        let is = i.to_string();
                        common::series(
                            &[("__name__", "bk_live"), ("i", &is)],
                            &[(base + k as i64 * 100, grid_value(i, k))],
                        )
                    })
                    .collect();
                let body = encode_write(&write_request(ts));
                match http_request(&addr, "POST", "/api/v1/write", REMOTE_WRITE_HEADERS, &body) {
                    Ok(r) if r.status == 204 => {
                        k += 1;
                        acked.store(k, Ordering::SeqCst);
                    }
                    other => panic!("write {k} failed: {other:?}"),
                }
            }
        })
    };
    wait_until("some writes acknowledged", Duration::from_secs(30), || {
        let n = acked.load(Ordering::SeqCst);
        if n >= 200 {
            Ok(())
        } else {
            Err(format!("{n} acked"))
        }
    });
    let acked_before = acked.load(Ordering::SeqCst);
    let file = dir.path().join("live.prbackup");
    let f = file.display().to_string();
    let out = promraft_ok(&["backup", "--addr", &src.http_addr, "--out", &f], &[]);
    let acked_after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    assert!(acked_after > acked_before, "writes should continue during the backup");

    let (restored, _) = restore_and_start(&file, &dir.path().join("r"), 5, &[], &[]);
    let got = restored.raw_samples("bk_live", base, base + 20_000 * 100);
    assert_eq!(got.len(), series, "series restored: {}", got.len());
    let counts: std::collections::BTreeSet<usize> = got.values().map(Vec::len).collect();
    assert_eq!(
        counts.len(),
        1,
        "a torn cut: series hold different sample counts {counts:?}\nrepro: {}",
        repro(FILE, name)
    );
    let m = *counts.iter().next().expect("one count");
    assert!(
        m >= acked_before && m <= acked_after + 1,
        "the cut holds {m} requests; {acked_before} were acknowledged before the backup and {acked_after} after it\nbackup: {out}"
    );
    for (labels, samples) in &got {
        let i: usize = labels.get("i").and_then(|v| v.parse().ok()).expect("label i");
        for (k, &(t, v)) in samples.iter().enumerate() {
            assert_eq!(
                (t, v),
                (base + k as i64 * 100, grid_value(i, k)),
                "series {labels:?} sample {k}"
            );
        }
    }
}
