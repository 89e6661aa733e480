//! Membership and leadership changes with the real binary and the
//! `promraft cluster` CLI:
//! - a fourth node started with `--initial-cluster` (not the lowest id, so
//!   it waits to be contacted) joins with `add-learner` then `promote`
//!   while writes go on, and ends with every acknowledged sample;
//! - `remove` takes a node out (three voters again) and `transfer-leader`
//!   hands leadership to a named node;
//! - a node that was down while the leader checkpointed and purged the log
//!   past its position rejoins by snapshot and ends with the same digest.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "cluster_membership";

/// How long node 4, started but not yet added, is watched to stay
/// uninitialized.
const WAITING_WATCHED: Duration = Duration::from_secs(1);

/// How long followers may take to learn a membership change (they apply
/// the membership entry from the log).
const MEMBERSHIP_VISIBLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until every node of `asked` shows `voters` as the voter set and no
/// other member.
fn wait_membership(c: &Cluster, asked: &[u64], voters: &BTreeSet<u64>) {
    wait_until(
        &format!("nodes {asked:?} to show exactly the voters {voters:?}"),
        MEMBERSHIP_VISIBLE_TIMEOUT,
        || {
            for &id in asked {
                let v = cluster_status(&c.node(id).http_addr).map_err(|e| format!("node {id}: {e}"))?;
                if &v.voters() != voters || &v.member_ids() != voters {
                    return Err(format!(
                        "node {id} shows voters {:?}, members {:?}",
                        v.voters(),
                        v.member_ids()
                    ));
                }
            }
            Ok(())
        },
    );
}

fn check_all_replicas(c: &Cluster, ids: &[u64], oracle: &Oracle, metric: &str, name: &str) {
    for &id in ids {
        let context = format!("repro: {}", repro(FILE, name));
        oracle.assert_replica(&format!("node {id}"), &c.node(id).http_addr, metric, &context);
    }
}

#[test]
fn grow_to_four_then_remove_and_transfer_leadership() {
    let name = "grow_to_four_then_remove_and_transfer_leadership";
    let metric = "promraft_membership_test";
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let originals = c.ids();
    let leader = c
        .wait_leader(&originals, CLUSTER_READY_TIMEOUT)
        .leader_id
        .expect("a leader");
    let follower = *originals.iter().find(|&&id| id != leader).expect("a follower");

    // Writes to every node go on during the membership changes.
    let spec = WriterSpec::small(metric, 2, now_ms() - 3_600_000);
    let load = WriteLoad::start(&spec, originals.iter().map(|&id| c.targets(&[id])).collect());
    load.wait_more_acks(100, Duration::from_secs(30));

    // Node 4 lists every member and itself; not being the lowest id, it
    // must wait to be contacted instead of initializing a cluster.
    let n4 = plan_node(4);
    let ic4 = format!("{},4={}", c.initial_cluster, n4.raft_addr);
    c.spawn_node(&n4, &ic4);
    // It answers (within the readiness deadline), and for a further
    // WAITING_WATCHED it keeps showing no leader and term 0.
    let first_answer = poll_until(READY_TIMEOUT, || cluster_status(&n4.http_addr)).unwrap_or_else(|e| {
        panic!(
            "node 4 never answered /api/v1/status/cluster: {e}\nrepro: {}",
            repro(FILE, name)
        )
    });
    let mut answers = vec![first_answer];
    let watching_since = Instant::now();
    while watching_since.elapsed() < WAITING_WATCHED {
        std::thread::sleep(Duration::from_millis(100));
        answers.push(cluster_status(&n4.http_addr).unwrap_or_else(|e| {
            panic!(
                "node 4 stopped answering while it waits: {e}\nrepro: {}",
                repro(FILE, name)
            )
        }));
    }
    for v in &answers {
        assert!(
            v.leader_id.is_none() && v.term == 0,
            "node 4, not yet added, should wait uninitialized; it shows leader {:?} in term {}\nrepro: {}",
            v.leader_id,
            v.term,
            repro(FILE, name)
        );
    }
    println!("node 4 waited uninitialized over {} status answers", answers.len());

    // add-learner through a follower (it relays to the leader).
    let follower_addr = c.node(follower).http_addr.clone();
    let out = c.cli_ok(&[
        "add-learner",
        "--addr",
        &follower_addr,
        "--node-id",
        "4",
        "--raft-addr",
        &n4.raft_addr,
        "--http-addr",
        &n4.http_addr,
    ]);
    println!("add-learner: {}", out.trim());
    let leader_addr = c.node(leader).http_addr.clone();
    let v = cluster_status(&leader_addr).expect("status from the leader");
    let m4 = v
        .members
        .iter()
        .find(|m| m.id == 4)
        .unwrap_or_else(|| panic!("node 4 missing after add-learner: {v:?}"));
    assert!(!m4.voter, "node 4 should be a learner before promote: {m4:?}");
    assert_eq!(m4.http_addr, n4.http_addr);
    assert_eq!(m4.raft_addr, n4.raft_addr);
    // Adding it again with the same addresses is a no-op.
    let again = c.cli_ok(&[
        "add-learner",
        "--addr",
        &leader_addr,
        "--node-id",
        "4",
        "--raft-addr",
        &n4.raft_addr,
        "--http-addr",
        &n4.http_addr,
    ]);
    println!("add-learner again: {}", again.trim());
    assert_eq!(
        again.trim(),
        "node 4 is already a member with these addresses",
        "adding node 4 again with the same addresses should be a no-op\nrepro: {}",
        repro(FILE, name)
    );
    let after = cluster_status(&leader_addr).expect("status from the leader");
    let shape = |v: &ClusterView| -> Vec<(u64, bool, String, String)> {
        v.members
            .iter()
            .map(|m| (m.id, m.voter, m.raft_addr.clone(), m.http_addr.clone()))
            .collect()
    };
    assert_eq!(
        shape(&after),
        shape(&v),
        "the membership changed on a second add-learner with the same addresses\nrepro: {}",
        repro(FILE, name)
    );

    let out = c.cli_ok(&["promote", "--addr", &n4.http_addr, "--node-id", "4"]);
    println!("promote: {}", out.trim());
    let four: BTreeSet<u64> = [1, 2, 3, 4].into();
    let all4 = c.ids();
    c.node_mut(4).wait_ready(READY_TIMEOUT);
    wait_membership(&c, &all4, &four);
    let table = c.cli_ok(&["status", "--addr", &n4.http_addr]);
    println!("{table}");
    for id in 1..=4 {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&id.to_string()) && l.contains("voter")),
            "`promraft cluster status` should list node {id} as a voter:\n{table}"
        );
    }
    load.wait_more_acks(100, Duration::from_secs(30));
    let results = load.stop();
    let oracle = merged_oracle(&results);
    let d = c.wait_converged(&all4, CONVERGE_TIMEOUT);
    println!(
        "four voters converged at index {} ({} samples acknowledged, {} stored)",
        d.applied_index,
        oracle.acked_samples(),
        d.samples
    );
    check_all_replicas(&c, &all4, &oracle, metric, name);

    // Remove a follower among the originals (asking node 4), then stop it.
    let leader = c
        .wait_leader(&all4, Duration::from_secs(10))
        .leader_id
        .expect("a leader");
    let victim = *originals
        .iter()
        .find(|&&id| id != leader)
        .expect("a follower to remove");
    let out = c.cli_ok(&["remove", "--addr", &n4.http_addr, "--node-id", &victim.to_string()]);
    println!("remove {victim}: {}", out.trim());
    let remaining: Vec<u64> = all4.iter().copied().filter(|&id| id != victim).collect();
    let three: BTreeSet<u64> = remaining.iter().copied().collect();
    wait_membership(&c, &remaining, &three);
    c.node_mut(victim)
        .stop(STOP_TIMEOUT)
        .unwrap_or_else(|e| panic!("stopping removed node {victim}: {e}"));
    c.forget(victim);

    // Writes on every remaining node still commit.
    let t = now_ms() - 1_800_000;
    let mut oracle2 = Oracle::default();
    for (i, &id) in remaining.iter().enumerate() {
        let ls = label_set_of(&[("__name__", metric), ("writer", "after-remove"), ("s", "0")]);
        let ti = t + i as i64;
        c.node(id).write_ok(&write_request(vec![series(
            &[("__name__", metric), ("writer", "after-remove"), ("s", "0")],
            &[(ti, i as f64)],
        )]));
        oracle2.record(&[(ls, ti, i as f64)], true);
    }

    // Leadership to a named node: node 4 unless it already leads.
    let leader = c
        .wait_leader(&remaining, Duration::from_secs(10))
        .leader_id
        .expect("a leader");
    let target = if leader != 4 {
        4
    } else {
        *remaining.iter().find(|&&id| id != 4).expect("another voter")
    };
    let asked = *remaining.iter().find(|&&id| id != target).expect("a node to ask");
    let started = Instant::now();
    let out = c.cli_ok(&[
        "transfer-leader",
        "--addr",
        &c.node(asked).http_addr.clone(),
        "--node-id",
        &target.to_string(),
    ]);
    let v = c.wait_leader(&remaining, Duration::from_secs(10));
    println!(
        "transfer-leader {leader} -> {target} (asked node {asked}): {} in {} ms; now term {}",
        out.trim(),
        started.elapsed().as_millis(),
        v.term
    );
    assert_eq!(
        v.leader_id,
        Some(target),
        "after transfer-leader to node {target}, every node should name it leader\nrepro: {}",
        repro(FILE, name)
    );
    for (i, &id) in remaining.iter().enumerate() {
        let ls = label_set_of(&[("__name__", metric), ("writer", "after-transfer"), ("s", "0")]);
        let ti = t + 100 + i as i64;
        c.node(id).write_ok(&write_request(vec![series(
            &[("__name__", metric), ("writer", "after-transfer"), ("s", "0")],
            &[(ti, i as f64)],
        )]));
        oracle2.record(&[(ls, ti, i as f64)], true);
    }
    let mut oracle = oracle;
    oracle.merge(&oracle2);
    c.wait_converged(&remaining, CONVERGE_TIMEOUT);
    check_all_replicas(&c, &remaining, &oracle, metric, name);
}

#[test]
fn node_down_past_log_purge_rejoins_by_snapshot() {
    let name = "node_down_past_log_purge_rejoins_by_snapshot";
    let metric = "promraft_snapshot_rejoin_test";
    let storage = "storage:\n  checkpoint_interval: 1s\n  checkpoint_entries: 50\n  log_entries_kept: 10\n";
    let mut c = Cluster::start(3, RaftTiming::default(), storage);
    let all = c.ids();
    let leader = c.wait_leader(&all, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let victim = *all.iter().find(|&&id| id != leader).expect("a follower");
    let survivors: Vec<u64> = all.iter().copied().filter(|&id| id != victim).collect();

    let spec = WriterSpec::small(metric, 3, now_ms() - 3_600_000);
    let load = WriteLoad::start(&spec, all.iter().map(|&id| c.targets(&[id])).collect());
    load.wait_more_acks(100, Duration::from_secs(30));
    c.node_mut(victim).kill9();
    let leader_addr = c.node(leader).http_addr.clone();
    // What the victim had, as the leader knows it.
    let matched = cluster_status(&leader_addr)
        .expect("leader status")
        .members
        .iter()
        .find(|m| m.id == victim)
        .map(|m| m.last_log_index)
        .expect("victim still a member");

    // Keep writing until the leader's log no longer holds what the victim
    // needs next.
    let purged = poll_until(Duration::from_secs(60), || {
        let last = node_metric(&leader_addr, "promraft_raft_last_log_index")?;
        let entries = node_metric(&leader_addr, "promraft_raft_log_entries")?;
        let first = last - entries + 1.0;
        if first > matched as f64 + 1.0 {
            Ok((first as u64, last as u64))
        } else {
            Err(format!(
                "leader log holds {first}..={last}; victim {victim} needs {}",
                matched + 1
            ))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "the leader never purged its log past the down node's position within 60 s: {e}\n{}repro: {}",
            c.describe(),
            repro(FILE, name)
        )
    });
    println!(
        "leader {leader} log now {}..={} while node {victim} stopped at {matched}",
        purged.0, purged.1
    );
    load.wait_more_acks(50, Duration::from_secs(30));
    let results = load.stop();
    let oracle = merged_oracle(&results);
    let before = c.wait_converged(&survivors, CONVERGE_TIMEOUT);

    let log_before = std::fs::read_to_string(c.node(victim).log_path())
        .unwrap_or_default()
        .len();
    c.node_mut(victim).restart();
    c.node_mut(victim).wait_ready(READY_TIMEOUT);
    let d = c.wait_converged(&all, CONVERGE_TIMEOUT);
    println!(
        "node {victim} rejoined: all at index {} (survivors were at {}), {} series, {} samples",
        d.applied_index, before.applied_index, d.series, d.samples
    );
    let log = std::fs::read_to_string(c.node(victim).log_path()).unwrap_or_default();
    assert!(
        log[log_before..].contains("snapshot received; installing"),
        "node {victim} should have caught up by installing a snapshot (the log it needed was purged); its log since \
         the restart does not say so:\n{}\nrepro: {}",
        c.node(victim).log_tail(LOG_TAIL_LINES),
        repro(FILE, name)
    );
    check_all_replicas(&c, &all, &oracle, metric, name);
}
