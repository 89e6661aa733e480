//! Read consistency of a three-node cluster, with the real binary on
//! loopback:
//! - a `consistency=linearizable` read on any node sees every write that
//!   another node acknowledged before the read was sent;
//! - a leader cut off from both followers (they are SIGKILLed) never
//!   acknowledges a write, rejects writes and linearizable reads with 503
//!   within a bounded time, and once `query.max_staleness` has passed its
//!   local reads fail with 503 too; so do an isolated follower's.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "cluster_reads";

/// `query.max_staleness` in the minority tests.
const MAX_STALENESS: Duration = Duration::from_secs(2);

/// Longest acceptable answer to a write or a linearizable read on a node
/// that cannot reach a quorum: the commit timeout (10 s by default) plus
/// slack.
const MINORITY_ANSWER_MAX: Duration = Duration::from_secs(15);

/// Write-then-read rounds in the linearizability test.
const LINEARIZABLE_ROUNDS: usize = 300;

fn staleness_yaml() -> String {
    format!("query:\n  max_staleness: {}ms\n", MAX_STALENESS.as_millis())
}

/// One sample of `metric` at `t` = `v`, as a remote-write request.
fn one_sample(metric: &str, t: i64, v: f64) -> prompb::WriteRequest {
    write_request(vec![series(&[("__name__", metric)], &[(t, v)])])
}

#[test]
fn linearizable_read_on_another_node_sees_the_acknowledged_write() {
    let name = "linearizable_read_on_another_node_sees_the_acknowledged_write";
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let all = c.ids();
    let leader = c.wait_leader(&all, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let metric = "promraft_linearizable_probe";
    let base = now_ms() - 3_600_000;
    let started = Instant::now();
    let mut pairs = std::collections::BTreeMap::<(u64, u64), usize>::new();
    for i in 0..LINEARIZABLE_ROUNDS {
        // Every ordered pair of distinct nodes, leader and followers alike.
        let a = all[i % 3];
        let b = all[(i + 1 + (i / 3) % 2) % 3];
        *pairs.entry((a, b)).or_default() += 1;
        let t = base + i as i64 * 1000;
        let r = c.node(a).write(&one_sample(metric, t, i as f64));
        assert_eq!(
            r.status,
            204,
            "round {i}: write to node {a} should be acknowledged; got {} {:?}\n{}repro: {}",
            r.status,
            r.text(),
            c.describe(),
            repro(FILE, name)
        );
        // Half the reads ask with the parameter, half with the header.
        let linearizable = [("consistency", "linearizable")];
        let header = [("X-Promraft-Consistency", "linearizable")];
        let (params, headers) = if i % 2 == 0 {
            (&linearizable[..], &[][..])
        } else {
            (&[][..], &header[..])
        };
        let (vector, resp) = query_vector(&c.node(b).http_addr, metric, t, params, headers).unwrap_or_else(|e| {
            panic!(
                "round {i}: linearizable read on node {b} after a write acknowledged by node {a} failed: {e}\nrepro: {}",
                repro(FILE, name)
            )
        });
        let got: Vec<(i64, f64)> = vector.values().copied().collect();
        assert_eq!(
            got,
            vec![(t, i as f64)],
            "round {i}: node {a} acknowledged {metric} @{t} = {i}, then a linearizable read on node {b} (leader is \
             {leader}) returned {got:?}: a stale read\nrepro: {}",
            repro(FILE, name)
        );
        assert_eq!(
            resp.header("x-promraft-node"),
            Some(b.to_string().as_str()),
            "round {i}: X-Promraft-Node of node {b}'s answer"
        );
        let applied = resp
            .header("x-promraft-applied-index")
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            applied.is_some_and(|a| a > 0),
            "round {i}: X-Promraft-Applied-Index should be a positive index, got {applied:?}"
        );
    }
    println!(
        "linearizable: {LINEARIZABLE_ROUNDS} write-then-read rounds over node pairs {pairs:?} (leader {leader}) in {} ms",
        started.elapsed().as_millis()
    );
}

/// What one request to the minority node got, and how long it took.
#[derive(Debug)]
struct Answer {
    what: String,
    status: Result<u16, String>,
    body: String,
    took: Duration,
}

fn timed(what: String, f: impl FnOnce() -> std::io::Result<HttpResponse>) -> Answer {
    let started = Instant::now();
    let r = f();
    let took = started.elapsed();
    match r {
        Ok(r) => Answer {
            what,
            status: Ok(r.status),
            body: r.text(),
            took,
        },
        Err(e) => Answer {
            what,
            status: Err(e.to_string()),
            body: String::new(),
            took,
        },
    }
}

/// A three-node cluster with some data, every replica at the same index.
fn cluster_with_data(metric: &str) -> (Cluster, u64, i64) {
    let c = Cluster::start(3, RaftTiming::default(), &staleness_yaml());
    let all = c.ids();
    let leader = c.wait_leader(&all, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let t = now_ms() - 60_000;
    for (i, &id) in all.iter().enumerate() {
        c.node(id).write_ok(&one_sample(metric, t + i as i64, i as f64));
    }
    c.wait_converged(&all, CONVERGE_TIMEOUT);
    (c, leader, t)
}

#[test]
fn minority_leader_rejects_writes_and_linearizable_reads() {
    let name = "minority_leader_rejects_writes_and_linearizable_reads";
    let metric = "promraft_minority_probe";
    let (mut c, leader, t) = cluster_with_data(metric);
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    for &f in &followers {
        c.node_mut(f).kill9();
    }
    let addr = c.node(leader).http_addr.clone();

    // Concurrent writes and linearizable reads, so the commit timeouts overlap.
    let mut handles = Vec::new();
    for k in 0..3i64 {
        let addr = addr.clone();
        handles.push(std::thread::spawn(move || {
            let body = encode_write(&one_sample(metric, t + 1_000 + k, 100.0 + k as f64));
            timed(format!("write #{k}"), || {
                http_request(&addr, "POST", "/api/v1/write", REMOTE_WRITE_HEADERS, &body)
            })
        }));
    }
    for (k, how) in ["param", "header"].into_iter().enumerate() {
        let addr = addr.clone();
        handles.push(std::thread::spawn(move || {
            let time = secs(t + 10);
            let mut params = vec![("query", metric), ("time", time.as_str())];
            let mut headers = Vec::new();
            if how == "param" {
                params.push(("consistency", "linearizable"));
            } else {
                headers.push(("X-Promraft-Consistency", "linearizable"));
            }
            let target = with_query("/api/v1/query", &params);
            timed(format!("linearizable read #{k} ({how})"), || {
                http_request(&addr, "GET", &target, &headers, b"")
            })
        }));
    }
    let answers: Vec<Answer> = handles.into_iter().map(|h| h.join().expect("request thread")).collect();
    for a in &answers {
        println!(
            "minority leader {leader}: {} -> {:?} after {} ms: {}",
            a.what,
            a.status,
            a.took.as_millis(),
            a.body.trim()
        );
    }
    for a in &answers {
        assert_eq!(
            a.status,
            Ok(503),
            "{} on leader {leader} cut off from both followers should be rejected with 503 (never acknowledged); \
             got {:?} {:?} after {} ms\n{}repro: {}",
            a.what,
            a.status,
            a.body,
            a.took.as_millis(),
            c.describe(),
            repro(FILE, name)
        );
        assert!(
            a.took < MINORITY_ANSWER_MAX,
            "{} on the cut-off leader took {} ms; expected an answer within {} ms\nrepro: {}",
            a.what,
            a.took.as_millis(),
            MINORITY_ANSWER_MAX.as_millis(),
            repro(FILE, name)
        );
    }
    // Still not acknowledging, sequentially either.
    let a = timed("a later write".into(), || {
        c.node(leader).try_write(&one_sample(metric, t + 2_000, 7.0))
    });
    assert_eq!(
        a.status,
        Ok(503),
        "a later write on the cut-off leader: got {a:?}\nrepro: {}",
        repro(FILE, name)
    );
    assert!(
        a.took < MINORITY_ANSWER_MAX,
        "a later write took {} ms",
        a.took.as_millis()
    );
}

/// How long before the cut a node's staleness clock may start, in the lower
/// bound on when its local reads fail: a leader's clock starts when it sent
/// the last heartbeat a quorum acknowledged, up to one heartbeat interval
/// before the followers died (a follower's when it gives up on a leader,
/// which is later); plus `STALENESS_CLOCK_SLACK`.
fn staleness_clock_lead(raft: RaftTiming) -> Duration {
    Duration::from_millis(raft.heartbeat_ms) + STALENESS_CLOCK_SLACK
}

/// Slack in that lead: a heartbeat sent or answered late on a loaded
/// two-core machine.
const STALENESS_CLOCK_SLACK: Duration = Duration::from_millis(400);

/// The age a 503 local read reports (`... for N ms (max_staleness M ms)`),
/// which the node compared with `query.max_staleness` to refuse it.
fn reported_age(reason: &str) -> Option<Duration> {
    let (before, _) = reason.split_once(" ms (max_staleness")?;
    let n = before.rsplit(' ').next()?;
    n.parse().ok().map(Duration::from_millis)
}

/// Polls local reads on `node` until one fails with 503; returns how long
/// after `since` that happened and the reason given. Panics if a read fails
/// otherwise or none fails within `timeout`.
fn wait_local_read_503(
    c: &Cluster,
    node: u64,
    metric: &str,
    t: i64,
    since: Instant,
    timeout: Duration,
    test: &str,
) -> (Duration, String) {
    let addr = c.node(node).http_addr.clone();
    let time = secs(t + 10);
    let target = with_query(
        "/api/v1/query",
        &[("query", metric), ("time", time.as_str()), ("consistency", "local")],
    );
    let deadline = since + timeout;
    let mut served = 0;
    loop {
        let r =
            http_request(&addr, "GET", &target, &[], b"").unwrap_or_else(|e| panic!("local read on node {node}: {e}"));
        match r.status {
            503 => return (since.elapsed(), r.text()),
            200 => served += 1,
            other => panic!(
                "local read on node {node}: expected 200 or 503, got {other}: {}",
                r.text()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "node {node}, cut off from the other two, still serves local reads {} ms after the cut ({served} reads \
             served); with query.max_staleness = {} ms they should fail with 503\nrepro: {}",
            since.elapsed().as_millis(),
            MAX_STALENESS.as_millis(),
            repro(FILE, test)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn minority_leader_local_reads_fail_after_max_staleness() {
    let name = "minority_leader_local_reads_fail_after_max_staleness";
    let metric = "promraft_minority_local_probe";
    let (mut c, leader, t) = cluster_with_data(metric);
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let cut = Instant::now();
    for &f in &followers {
        c.node_mut(f).kill9();
    }
    let raft = c.raft;
    let bound = MAX_STALENESS + raft.election_max() * 2 + Duration::from_secs(3);
    let (after, reason) = wait_local_read_503(&c, leader, metric, t, cut, bound, name);
    println!(
        "cut-off leader {leader}: local reads fail with 503 {} ms after the cut (max_staleness {} ms): {reason}",
        after.as_millis(),
        MAX_STALENESS.as_millis()
    );
    check_refused_after_max_staleness(after, &reason, raft, name);
}

/// A local read refused at `after` (since the cut) with `reason`: the node
/// reports an age past `query.max_staleness`, and the refusal did not come
/// before max_staleness minus the clock's lead had passed since the cut.
fn check_refused_after_max_staleness(after: Duration, reason: &str, raft: RaftTiming, test: &str) {
    let age = reported_age(reason).unwrap_or_else(|| {
        panic!(
            "the 503 should give the age it compared with max_staleness: {reason}\nrepro: {}",
            repro(FILE, test)
        )
    });
    assert!(
        age > MAX_STALENESS,
        "the node refused a local read at age {} ms, within max_staleness ({} ms): {reason}\nrepro: {}",
        age.as_millis(),
        MAX_STALENESS.as_millis(),
        repro(FILE, test)
    );
    let lead = staleness_clock_lead(raft);
    assert!(
        after + lead >= MAX_STALENESS,
        "local reads failed {} ms after the cut, before max_staleness ({} ms) less the staleness clock's lead \
         ({} ms: one heartbeat + {} ms slack) had passed: {reason}\nrepro: {}",
        after.as_millis(),
        MAX_STALENESS.as_millis(),
        lead.as_millis(),
        STALENESS_CLOCK_SLACK.as_millis(),
        repro(FILE, test)
    );
}

#[test]
fn isolated_follower_local_reads_fail_after_max_staleness() {
    let name = "isolated_follower_local_reads_fail_after_max_staleness";
    let metric = "promraft_isolated_follower_probe";
    let (mut c, leader, t) = cluster_with_data(metric);
    let ids = c.ids();
    let follower = *ids.iter().find(|&&id| id != leader).expect("a follower");
    // Fresh local reads are served while the follower knows the leader.
    let (v, _) = query_vector(
        &c.node(follower).http_addr,
        metric,
        t + 10,
        &[("consistency", "local")],
        &[],
    )
    .unwrap_or_else(|e| panic!("local read on follower {follower} with a healthy cluster: {e}"));
    assert_eq!(v.len(), 1, "local read on follower {follower}: {v:?}");
    let cut = Instant::now();
    for &id in ids.iter().filter(|&&id| id != follower) {
        c.node_mut(id).kill9();
    }
    let bound = MAX_STALENESS + c.raft.election_max() * 2 + Duration::from_secs(3);
    let (after, reason) = wait_local_read_503(&c, follower, metric, t, cut, bound, name);
    println!(
        "isolated follower {follower}: local reads fail with 503 {} ms after the cut (max_staleness {} ms): {reason}",
        after.as_millis(),
        MAX_STALENESS.as_millis()
    );
    check_refused_after_max_staleness(after, &reason, c.raft, name);
    // Writes and linearizable reads are refused as well, and quickly: no
    // leader is known.
    let a = timed("write".into(), || {
        c.node(follower).try_write(&one_sample(metric, t + 5_000, 1.0))
    });
    assert_eq!(a.status, Ok(503), "write on the isolated follower: {a:?}");
    assert!(
        a.took < MINORITY_ANSWER_MAX,
        "write on the isolated follower took {:?}",
        a.took
    );
    let time = secs(t + 10);
    let a = timed("linearizable read".into(), || {
        c.node(follower).try_request(
            "GET",
            &with_query(
                "/api/v1/query",
                &[
                    ("query", metric),
                    ("time", time.as_str()),
                    ("consistency", "linearizable"),
                ],
            ),
            &[],
            b"",
        )
    });
    assert_eq!(a.status, Ok(503), "linearizable read on the isolated follower: {a:?}");
    assert!(
        a.took < MINORITY_ANSWER_MAX,
        "linearizable read on the isolated follower took {:?}",
        a.took
    );
}
