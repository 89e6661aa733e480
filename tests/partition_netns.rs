//! Network partitions of a three-node cluster of real processes, each in a
//! network namespace of its own that the test creates.
//!
//! Topology (every address exists only inside the test's namespaces):
//! - a bridge namespace whose bridge joins the three nodes' Raft links
//!   (`10.201.0.<id>/24`, the nodes' `raft_addr`);
//! - a client namespace with one point-to-point link to each node
//!   (`10.202.<id>.1` on the client's side, `10.202.<id>.2`, the node's
//!   `http_addr`, on the node's). The test's own thread, and the writer
//!   threads it starts, join the client namespace (`setns(2)` moves one
//!   thread), so the test talks to a node even while that node is cut off
//!   from the other two.
//!
//! A cut is `ip link set <raft link> down` inside the node's namespace; a
//! heal sets it up again. With writers pinned to every node (one request
//! at a time, no resend), the test isolates the leader and shows that
//! (a) no write sent to it after the cut and answered before the heal is
//! acknowledged, (b) it steps down within its lease
//! (`raft.election_timeout_max_ms`; `promraft_raft_is_leader` 0, no more
//! writes taken) and reports that it cannot serve (`/-/ready` 503) within
//! `query.max_staleness`, each plus slack (the times are printed), (c) the
//! other two elect a leader and acknowledge writes (times printed); then
//! it isolates a follower and shows (d) that it acknowledges nothing
//! while cut off; after each heal (e) all three reach the same applied
//! index and digest, and every replica holds every acknowledged sample
//! exactly once.
//!
//! It needs root (namespaces) and `ip` (Debian's `iproute2`). Without them
//! it prints why and passes, unless `PROMRAFT_REQUIRE_NETNS=1` (set by
//! `.ci/run`), which makes that a failure. The namespaces and processes
//! are removed by their own names and pids on every path (drop guards).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "partition_netns";
const METRIC: &str = "promraft_partition_test";

/// `query.max_staleness` of the test cluster: how long a leader without a
/// quorum's acknowledgement keeps saying it can serve. Shorter than the
/// default (10 s) so the test does not sit idle.
const MAX_STALENESS: Duration = Duration::from_secs(2);

/// Added to [`MAX_STALENESS`] for the isolated leader's step-down: a
/// readiness poll, and the last acknowledgement having come up to one
/// heartbeat before the cut, on a loaded two-core machine.
const STEP_DOWN_SLACK: Duration = Duration::from_secs(3);

/// Added to the leader lease (`raft.election_timeout_max_ms`) for the
/// isolated leader to stop reporting itself leader: a `/metrics` poll, and
/// the last acknowledgement having been sent up to one heartbeat before
/// the cut, on a loaded two-core machine.
const LEASE_SLACK: Duration = Duration::from_secs(1);

/// How long the majority may take to elect a leader and acknowledge a
/// write; generous (the figure is printed, `cluster_failover` bounds it).
const MAJORITY_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the majority must acknowledge while a node is cut off.
const ACKS_WHILE_CUT: usize = 100;

/// `write.commit_timeout_ms` of the test cluster, also the deadline of a
/// forwarded write: a write forwarded to a leader that is cut off is
/// answered 503 after this. Shorter than the default (10 s) so that a
/// writer pinned to a cut-off node gets answers while the cut lasts.
const COMMIT_TIMEOUT_MS: u64 = 2000;

/// Answers to writes sent to a cut-off node that the test waits for
/// before it heals (so that checks (a) and (d) look at real answers).
const MINORITY_ANSWERS: usize = 3;

/// How long a timed `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `ip <args>`; the error carries what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = run_command(Command::new("ip").args(args), IP_TIMEOUT);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {} {}", args.join(" "), out.status, out.stderr.trim()))
    }
}

/// The test's namespaces: created in [`NetLab::create`], deleted by name
/// on drop (which also removes their links and the bridge).
struct NetLab {
    tag: String,
    created: Vec<String>,
}

impl NetLab {
    fn ns(&self, what: &str) -> String {
        format!("{}{what}", self.tag)
    }

    /// The namespace of node `id`.
    fn node_ns(&self, id: u64) -> String {
        self.ns(&format!("n{id}"))
    }

    fn create(ids: &[u64]) -> Result<NetLab, String> {
        if which("ip").is_none() {
            return Err("`ip` is not installed (Debian package iproute2)".into());
        }
        // The test process's pid makes the names unique on the machine.
        let mut lab = NetLab {
            tag: format!("promraft{}", std::process::id()),
            created: Vec::new(),
        };
        let (br, cl) = (lab.ns("br"), lab.ns("cl"));
        let mut all = vec![br.clone(), cl.clone()];
        all.extend(ids.iter().map(|&id| lab.node_ns(id)));
        for ns in &all {
            ip(&["netns", "add", ns])?;
            lab.created.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &br, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for &id in ids {
            let n = lab.node_ns(id);
            let (r, rb, h, c) = (format!("r{id}"), format!("rb{id}"), format!("h{id}"), format!("c{id}"));
            // The Raft link, on the bridge.
            ip(&[
                "-n", &br, "link", "add", "name", &rb, "type", "veth", "peer", "name", &r, "netns", &n,
            ])?;
            ip(&["-n", &br, "link", "set", &rb, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &rb, "up"])?;
            ip(&["-n", &n, "addr", "add", &format!("10.201.0.{id}/24"), "dev", &r])?;
            ip(&["-n", &n, "link", "set", &r, "up"])?;
            // The client's link, straight to the node.
            ip(&[
                "-n", &cl, "link", "add", "name", &c, "type", "veth", "peer", "name", &h, "netns", &n,
            ])?;
            ip(&["-n", &cl, "addr", "add", &format!("10.202.{id}.1/30"), "dev", &c])?;
            ip(&["-n", &cl, "link", "set", &c, "up"])?;
            ip(&["-n", &n, "addr", "add", &format!("10.202.{id}.2/30"), "dev", &h])?;
            ip(&["-n", &n, "link", "set", &h, "up"])?;
        }
        Ok(lab)
    }

    /// Moves the calling thread (and the threads it starts from now on)
    /// into the client namespace.
    fn enter_client(&self) -> Result<(), String> {
        let path = Path::new("/run/netns").join(self.ns("cl"));
        let f = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: setns(2) on a namespace file descriptor that stays open
        // for the call; it changes the calling thread's network namespace
        // only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!(
                "setns into {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Restores node `id`'s Raft link; returns the instant just before,
    /// the earliest moment at which a write held during the cut could have
    /// gone through (an instant taken after `ip` returns would count writes
    /// answered while it ran as answered during the cut).
    fn heal(&self, id: u64) -> Instant {
        let before = Instant::now();
        self.set_raft_link(id, true);
        before
    }

    /// Cuts node `id`'s Raft link (or restores it).
    fn set_raft_link(&self, id: u64, up: bool) {
        let n = self.node_ns(id);
        ip(&[
            "-n",
            &n,
            "link",
            "set",
            &format!("r{id}"),
            if up { "up" } else { "down" },
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// The lab, or `None` (after saying why) where namespaces cannot be made.
fn lab_or_skip(ids: &[u64]) -> Option<NetLab> {
    match NetLab::create(ids) {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var("PROMRAFT_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("PROMRAFT_REQUIRE_NETNS=1 but the network namespaces cannot be created: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIP {FILE}: cannot create network namespaces ({e}); it needs root and iproute2 \
                 (PROMRAFT_REQUIRE_NETNS=1 makes this a failure)"
            );
            None
        }
    }
}

/// One node: its process runs in its own namespace (`ip netns exec` execs
/// promraft, so the pid is promraft's own).
struct NetNode {
    id: u64,
    http_addr: String,
    proc: Proc,
}

fn spawn_node(lab: &NetLab, dir: &Path, config: &Path, id: u64, initial_cluster: &str) -> NetNode {
    let data_dir = dir.join(format!("node{id}"));
    std::fs::create_dir_all(&data_dir).expect("create a data directory");
    let http_addr = format!("10.202.{id}.2:9090");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.node_ns(id), PROMRAFT_BIN, "serve"])
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--http-addr")
        .arg(&http_addr)
        .arg("--raft-addr")
        .arg(format!("10.201.0.{id}:9190"))
        .arg("--config")
        .arg(config)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    let proc = Proc::spawn(&format!("promraft node {id}"), &mut cmd, &data_dir.join("promraft.log"));
    NetNode { id, http_addr, proc }
}

/// Waits until the nodes at `addrs` all name the same leader, one of
/// `among`, in the same term; returns `(leader, term)`.
fn agreed_leader(addrs: &[String], among: &[u64]) -> Result<(u64, u64), String> {
    let views: Vec<ClusterView> = addrs.iter().map(|a| cluster_status(a)).collect::<Result<_, _>>()?;
    let seen: BTreeSet<(Option<u64>, u64)> = views.iter().map(|v| (v.leader_id, v.term)).collect();
    match seen.into_iter().collect::<Vec<_>>()[..] {
        [(Some(l), term)] if among.contains(&l) => Ok((l, term)),
        ref other => Err(format!("leaders and terms seen: {other:?}")),
    }
}

/// Whether the node at `addr` says it leads, and its term, from its own
/// `/metrics` (it asks no other node, so it answers at once even when cut
/// off).
fn leads(addr: &str) -> Result<(bool, u64), String> {
    let r = http_request(addr, "GET", "/metrics", &[], b"").map_err(|e| e.to_string())?;
    let text = r.text();
    let get = |name: &str| metric_sum(&text, name).ok_or_else(|| format!("{name} missing from /metrics"));
    Ok((
        get("promraft_raft_is_leader")? == 1.0,
        get("promraft_raft_term")? as u64,
    ))
}

/// Waits until every replica has the same applied index and digest.
fn wait_converged(addrs: &[String]) -> Digest {
    wait_until("the replicas to converge", CONVERGE_TIMEOUT, || {
        let ds: Vec<Digest> = addrs.iter().map(|a| try_digest(a)).collect::<Result<_, _>>()?;
        let indexes: BTreeSet<u64> = ds.iter().map(|d| d.applied_index).collect();
        if indexes.len() > 1 {
            return Err(format!("applied indexes {indexes:?}"));
        }
        let digests: BTreeSet<&str> = ds.iter().map(|d| d.digest.as_str()).collect();
        assert_eq!(
            digests.len(),
            1,
            "replicas at the same applied index disagree: {ds:?}\nrepro: {}",
            repro(FILE, "partitions")
        );
        Ok(ds[0].clone())
    })
}

/// Waits until `node` has answered [`MINORITY_ANSWERS`] writes sent to it
/// since `cut`, so that the check of what it acknowledged while cut off
/// looks at real answers. Each answer may take the write hold
/// (`write.leader_wait_ms`) plus the commit deadline.
fn wait_for_answers(load: &WriteLoad, node: u64, cut: Instant, who: &str) {
    wait_until(
        &format!("writes sent to {who} (node {node}) to be answered"),
        Duration::from_secs(30),
        || {
            let n = answered_within(&load.attempts(), node, cut, Instant::now()).len();
            if n >= MINORITY_ANSWERS {
                Ok(())
            } else {
                Err(format!("{n} answered"))
            }
        },
    );
}

/// Attempts to `node` sent in `[from, to)` and answered before `to`.
fn answered_within(attempts: &[Attempt], node: u64, from: Instant, to: Instant) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.target == node && a.sent >= from && a.sent < to && a.done < to)
        .collect()
}

#[test]
fn partitions() {
    let name = "partitions";
    let ids = [1u64, 2, 3];
    let Some(lab) = lab_or_skip(&ids) else { return };
    lab.enter_client().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new();
    let raft = RaftTiming::default();
    let config = dir.path().join("promraft.yaml");
    let extra = format!(
        "query:\n  max_staleness: {}ms\nwrite:\n  commit_timeout_ms: {COMMIT_TIMEOUT_MS}\n",
        MAX_STALENESS.as_millis()
    );
    std::fs::write(&config, config_yaml(raft, &extra)).expect("write the config file");
    let initial_cluster = ids
        .iter()
        .map(|id| format!("{id}=10.201.0.{id}:9190"))
        .collect::<Vec<_>>()
        .join(",");
    // Declared after the lab and the directory: the processes are killed
    // (by pid) before the namespaces go, and their logs print first.
    let mut nodes: Vec<NetNode> = ids
        .iter()
        .map(|&id| spawn_node(&lab, dir.path(), &config, id, &initial_cluster))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.http_addr.clone()).collect();
    let addr_of = |id: u64| format!("10.202.{id}.2:9090");
    for n in &mut nodes {
        let addr = n.http_addr.clone();
        let proc = &mut n.proc;
        wait_until(&format!("node {} ready", n.id), CLUSTER_READY_TIMEOUT, || {
            if let Some(s) = proc.exited() {
                panic!("node exited before it was ready: {s}");
            }
            match http_request(&addr, "GET", "/-/ready", &[], b"") {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        });
    }
    let (leader, term0) = wait_until("a leader", CLUSTER_READY_TIMEOUT, || agreed_leader(&addrs, &ids));
    println!("partition: three nodes in their own namespaces; leader {leader} in term {term0}");

    // One writer pinned to each node, one request at a time, no resend.
    let mut spec = WriterSpec::small(METRIC, 2, now_ms() - 3_600_000);
    spec.attempts = 1;
    let load = WriteLoad::start(&spec, ids.iter().map(|&id| vec![(id, addr_of(id))]).collect());
    load.wait_more_acks(ACKS_WHILE_CUT, Duration::from_secs(30));

    // --- Isolate the leader.
    let majority: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    lab.set_raft_link(leader, false);
    let cut = Instant::now();
    let mut deposed = None;
    let mut not_ready = None;
    let mut new_leader = None;
    let mut first_majority_ack = None;
    let deadline = cut + MAX_STALENESS + STEP_DOWN_SLACK + MAJORITY_TIMEOUT;
    while (deposed.is_none() || not_ready.is_none() || new_leader.is_none() || first_majority_ack.is_none())
        && Instant::now() < deadline
    {
        if deposed.is_none() && leads(&addr_of(leader)).is_ok_and(|(l, _)| !l) {
            deposed = Some(cut.elapsed());
        }
        if not_ready.is_none()
            && http_request(&addr_of(leader), "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status != 200)
        {
            not_ready = Some(cut.elapsed());
        }
        if new_leader.is_none() {
            for &id in &majority {
                if let Ok((true, term)) = leads(&addr_of(id)) {
                    new_leader = Some((id, term, cut.elapsed()));
                }
            }
        }
        if first_majority_ack.is_none() {
            first_majority_ack = load
                .attempts()
                .iter()
                .filter(|a| a.acked() && a.sent >= cut && a.target != leader)
                .map(|a| a.done - cut)
                .min();
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let (new_leader_id, new_term, elected_after) = new_leader.unwrap_or_else(|| {
        panic!(
            "nodes {majority:?} elected no leader within {MAJORITY_TIMEOUT:?} of isolating leader {leader}\nrepro: {}",
            repro(FILE, name)
        )
    });
    let first_majority_ack = first_majority_ack.unwrap_or_else(|| {
        panic!(
            "the majority acknowledged no write after the cut\nrepro: {}",
            repro(FILE, name)
        )
    });
    let deposed = deposed.unwrap_or_else(|| {
        panic!(
            "isolated leader {leader} still reports promraft_raft_is_leader 1 {:?} after the cut\nrepro: {}",
            cut.elapsed(),
            repro(FILE, name)
        )
    });
    let stepped_down = not_ready.unwrap_or_else(|| {
        panic!(
            "isolated leader {leader} still says it is ready {:?} after the cut\nrepro: {}",
            cut.elapsed(),
            repro(FILE, name)
        )
    });
    load.wait_more_acks(ACKS_WHILE_CUT, Duration::from_secs(30));
    wait_for_answers(&load, leader, cut, "the isolated leader");
    let healed = lab.heal(leader);
    let attempts = load.attempts();
    let to_isolated = answered_within(&attempts, leader, cut, healed);
    let acked_by_isolated: Vec<&&Attempt> = to_isolated.iter().filter(|a| a.acked()).collect();
    println!(
        "partition: leader {leader} cut off; it stopped reporting itself leader {} ms after the cut (lease {} ms); \
         /-/ready 503 after {} ms (max_staleness {} ms); nodes {majority:?} elected node {new_leader_id} \
         (term {term0} -> {new_term}) after {} ms and acknowledged a write after {} ms; the isolated leader \
         answered {} writes sent to it while cut off, {} acknowledged",
        deposed.as_millis(),
        raft.election_max().as_millis(),
        stepped_down.as_millis(),
        MAX_STALENESS.as_millis(),
        elected_after.as_millis(),
        first_majority_ack.as_millis(),
        to_isolated.len(),
        acked_by_isolated.len()
    );
    assert!(
        acked_by_isolated.is_empty(),
        "(a) the isolated leader {leader} acknowledged writes sent after the cut: {acked_by_isolated:?}\nrepro: {}",
        repro(FILE, name)
    );
    assert!(
        deposed < raft.election_max() + LEASE_SLACK,
        "(b) the isolated leader should step down within its lease {} ms (+ {} ms slack); it took {} ms\nrepro: {}",
        raft.election_max().as_millis(),
        LEASE_SLACK.as_millis(),
        deposed.as_millis(),
        repro(FILE, name)
    );
    assert!(
        stepped_down < MAX_STALENESS + STEP_DOWN_SLACK,
        "(b) the isolated leader should report that it cannot serve within max_staleness {} ms + {} ms slack; \
         it took {} ms\nrepro: {}",
        MAX_STALENESS.as_millis(),
        STEP_DOWN_SLACK.as_millis(),
        stepped_down.as_millis(),
        repro(FILE, name)
    );
    assert!(
        majority.contains(&new_leader_id) && new_term > term0,
        "(c) a new leader among the majority"
    );

    // After the heal the old leader rejoins and takes writes again (it
    // forwards them to the leader now).
    let (after_heal, _) = wait_until("one leader for all three after the heal", MAJORITY_TIMEOUT, || {
        agreed_leader(&addrs, &ids)
    });
    wait_until(
        &format!("node {leader} to acknowledge a write after the heal"),
        Duration::from_secs(30),
        || {
            load.attempts()
                .iter()
                .find(|a| a.acked() && a.target == leader && a.sent >= healed)
                .map(|_| ())
                .ok_or_else(|| "none yet".to_string())
        },
    );
    let digest = wait_converged(&addrs);
    println!(
        "partition: healed; leader {after_heal}; replicas converged at index {} ({} series, {} samples)",
        digest.applied_index, digest.series, digest.samples
    );

    // --- Isolate a follower: a minority of one never acknowledges a write.
    let follower = *ids.iter().find(|&&id| id != after_heal).expect("a follower");
    lab.set_raft_link(follower, false);
    let cut2 = Instant::now();
    load.wait_more_acks(ACKS_WHILE_CUT, Duration::from_secs(30));
    // Long enough for the cut-off follower's own election attempts, and
    // for it to have answered writes sent to it after the cut (each waits
    // up to the forwarding deadline, write.commit_timeout_ms).
    std::thread::sleep(raft.election_max() * 4);
    wait_for_answers(&load, follower, cut2, &format!("the cut-off follower {follower}"));
    let healed2 = lab.heal(follower);
    let attempts = load.attempts();
    let to_minority = answered_within(&attempts, follower, cut2, healed2);
    let acked_by_minority: Vec<&&Attempt> = to_minority.iter().filter(|a| a.acked()).collect();
    println!(
        "partition: follower {follower} cut off for {} ms; it answered {} writes meanwhile, {} acknowledged",
        (healed2 - cut2).as_millis(),
        to_minority.len(),
        acked_by_minority.len()
    );
    assert!(
        !to_minority.is_empty(),
        "the cut-off follower {follower} answered no write at all while cut off (the check would be empty)"
    );
    assert!(
        acked_by_minority.is_empty(),
        "(d) the cut-off follower {follower} acknowledged writes: {acked_by_minority:?}\nrepro: {}",
        repro(FILE, name)
    );
    wait_until(
        "one leader for all three after the second heal",
        MAJORITY_TIMEOUT,
        || agreed_leader(&addrs, &ids),
    );
    load.wait_more_acks(ACKS_WHILE_CUT, Duration::from_secs(30));
    let results = load.stop();

    // --- (e) Convergence, and no acknowledged write lost.
    let digest = wait_converged(&addrs);
    let oracle = merged_oracle(&results);
    println!(
        "partition: replicas converged at index {} ({} series, {} samples); {} samples acknowledged",
        digest.applied_index,
        digest.series,
        digest.samples,
        oracle.acked_samples()
    );
    let unexpected: Vec<&String> = results.iter().flat_map(|r| &r.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "every write answer should be 204 or 503; got {unexpected:?}\nrepro: {}",
        repro(FILE, name)
    );
    for addr in &addrs {
        let problems = oracle
            .check_replica(addr, METRIC)
            .unwrap_or_else(|e| panic!("reading {addr}: {e}"));
        assert!(
            problems.is_empty(),
            "(e) the replica at {addr} does not hold exactly what was acknowledged ({} problems), first ones:\n{}\nrepro: {}",
            problems.len(),
            problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
            repro(FILE, name)
        );
    }
    for n in &mut nodes {
        assert!(n.proc.exited().is_none(), "node {} exited during the test", n.id);
    }
}
