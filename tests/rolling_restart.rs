//! Rolling restart of a three-node cluster under write load, each node
//! stopped with SIGTERM, restarted and caught up before the next.
//!
//! The writers reach the nodes the way a client behind a load balancer
//! does: the balancer checks `/-/ready` of every node every
//! [`BALANCER_CHECK_INTERVAL`] and sends each request to the next ready
//! node. A stopping node turns not ready at once and keeps answering for a
//! drain period, so the balancer takes it out before its listener closes.
//! The only resend is the one every balancer makes: a connection refused
//! at connect (the request never reached a node) goes to the next ready
//! node. Every other outcome that is not 204 (an HTTP error, a reset, a
//! timeout) is a failed write, and the test requires none.
//!
//! A leader that gets SIGTERM must hand its leadership over before its
//! process exits: the other two nodes name a new leader while the old
//! process still runs, in a term exactly one higher (a transfer, not an
//! election after a timeout: the term rises by one per handover and by
//! nothing else), and the old node's log names the node it handed over
//! to. At the end every replica holds every acknowledged sample and the
//! replicas agree. The write latency during the roll is printed (p50, p99,
//! max), never asserted.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const FILE: &str = "rolling_restart";
const METRIC: &str = "promraft_roll_test";

/// Writer threads: enough to keep requests in flight on every node.
const WRITERS: usize = 4;

/// How often the test's balancer checks `/-/ready` of each node; well
/// inside the node's drain period after a handover (one second).
const BALANCER_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Acknowledged writes to wait for before the roll and after each restart.
const ACKS_PER_PHASE: usize = 200;

/// How long the other nodes may take to name a new leader after the
/// leader's SIGTERM; generous, the figure itself is printed.
const NEW_LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// The nodes the balancer currently sends to, by `/-/ready`.
struct Balancer {
    ready: Arc<Mutex<Vec<(u64, String)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Balancer {
    fn start(nodes: Vec<(u64, String)>) -> Balancer {
        let ready = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (ready.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let now: Vec<(u64, String)> = nodes
                    .iter()
                    .filter(|(_, addr)| http_request(addr, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200))
                    .cloned()
                    .collect();
                *r.lock().expect("balancer lock") = now;
                std::thread::sleep(BALANCER_CHECK_INTERVAL);
            }
        });
        Balancer {
            ready,
            stop,
            handle: Some(handle),
        }
    }

    fn ready(&self) -> Vec<(u64, String)> {
        self.ready.lock().expect("balancer lock").clone()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One request as its writer saw it.
#[derive(Debug, Clone)]
struct Request {
    sent: Instant,
    done: Instant,
    /// The node that answered (or failed).
    node: u64,
    /// `None` when acknowledged; what went wrong otherwise.
    failure: Option<String>,
    /// Connections refused before one was accepted.
    redispatched: usize,
}

/// Sends one request through the balancer: to the next ready node, and on
/// to the next one only when the connection is refused.
fn send_balanced(balancer: &Balancer, rr: &mut usize, body: &[u8]) -> Request {
    let sent = Instant::now();
    let mut redispatched = 0;
    loop {
        let ready = balancer.ready();
        if ready.is_empty() {
            if sent.elapsed() > READY_TIMEOUT {
                return Request {
                    sent,
                    done: Instant::now(),
                    node: 0,
                    failure: Some("no node ready".into()),
                    redispatched,
                };
            }
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        let (id, addr) = &ready[*rr % ready.len()];
        *rr += 1;
        let r = http_request(addr, "POST", "/api/v1/write", REMOTE_WRITE_HEADERS, body);
        let failure = match r {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                redispatched += 1;
                continue;
            }
            Ok(r) if r.status == 204 => None,
            Ok(r) => Some(format!("node {id}: HTTP {}: {}", r.status, r.text().trim())),
            Err(e) => Some(format!("node {id}: {e}")),
        };
        return Request {
            sent,
            done: Instant::now(),
            node: *id,
            failure,
            redispatched,
        };
    }
}

/// What the others saw while a node stopped: the first leader other than
/// the stopping node both named, its term, and when.
#[derive(Debug, Clone)]
struct Takeover {
    leader: u64,
    term: u64,
    at: Instant,
}

/// Polls the nodes at `addrs` until they all name the same leader other
/// than `old`; `None` after `timeout`.
fn watch_takeover(addrs: Vec<String>, old: u64, timeout: Duration) -> JoinHandle<Option<Takeover>> {
    std::thread::spawn(move || {
        poll_until(timeout, || {
            let views: Vec<ClusterView> = addrs.iter().map(|a| cluster_status(a)).collect::<Result<_, _>>()?;
            let leaders: BTreeSet<(Option<u64>, u64)> = views.iter().map(|v| (v.leader_id, v.term)).collect();
            match leaders.into_iter().collect::<Vec<_>>()[..] {
                [(Some(l), term)] if l != old => Ok(Takeover {
                    leader: l,
                    term,
                    at: Instant::now(),
                }),
                ref other => Err(format!("leaders and terms seen: {other:?}")),
            }
        })
        .ok()
    })
}

#[test]
fn rolling_restart_with_sigterm_loses_no_write_and_hands_leadership_over() {
    let name = "rolling_restart_with_sigterm_loses_no_write_and_hands_leadership_over";
    let raft = RaftTiming::default();
    let mut c = Cluster::start(3, raft, "");
    let all = c.ids();
    let first = c.wait_leader(&all, CLUSTER_READY_TIMEOUT);
    let term_start = first.term;

    let balancer = Balancer::start(c.targets(&all));
    let stop = Arc::new(AtomicBool::new(false));
    let requests: Arc<Mutex<Vec<Request>>> = Arc::new(Mutex::new(Vec::new()));
    let balancer = Arc::new(balancer);
    let spec = WriterSpec::small(METRIC, 2, now_ms() - 3_600_000);
    let writers: Vec<JoinHandle<Oracle>> = (0..WRITERS)
        .map(|w| {
            let (spec, stop, requests, balancer) = (spec.clone(), stop.clone(), requests.clone(), balancer.clone());
            std::thread::spawn(move || {
                let mut oracle = Oracle::default();
                let mut rr = w;
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (samples, body) = writer_request(&spec, w, seq);
                    seq += 1;
                    let r = send_balanced(&balancer, &mut rr, &body);
                    oracle.record(&samples, r.failure.is_none());
                    requests.lock().expect("requests lock").push(r);
                }
                oracle
            })
        })
        .collect();
    let acked = |requests: &Mutex<Vec<Request>>| {
        requests
            .lock()
            .expect("requests lock")
            .iter()
            .filter(|r| r.failure.is_none())
            .count()
    };
    let wait_acks = |n: usize| {
        let start = acked(&requests);
        wait_until(
            &format!("{n} more acknowledged writes"),
            Duration::from_secs(60),
            || {
                let now = acked(&requests);
                if now >= start + n {
                    Ok(())
                } else {
                    Err(format!("{} acknowledged since", now - start))
                }
            },
        );
    };
    wait_acks(ACKS_PER_PHASE);

    let roll_start = Instant::now();
    let mut restarted: BTreeSet<u64> = BTreeSet::new();
    let mut handovers = 0u64;
    let mut report = Vec::new();
    for _ in 0..all.len() {
        let view = c.wait_leader(&all, Duration::from_secs(30));
        let leader = view.leader_id.expect("a leader");
        // The leader first whenever it has not been restarted yet, so that
        // the roll hands leadership over as often as it can.
        let victim = if restarted.contains(&leader) {
            *all.iter()
                .find(|id| !restarted.contains(id))
                .expect("a node left to restart")
        } else {
            leader
        };
        let others: Vec<u64> = all.iter().copied().filter(|&id| id != victim).collect();
        let addrs: Vec<String> = others.iter().map(|&id| c.node(id).http_addr.clone()).collect();
        let watcher = (victim == leader).then(|| watch_takeover(addrs, victim, NEW_LEADER_TIMEOUT));
        let term_before = view.term;
        let stopped_at = Instant::now();
        let status = c
            .node_mut(victim)
            .stop(STOP_TIMEOUT)
            .unwrap_or_else(|e| panic!("SIGTERM of node {victim}: {e}\nrepro: {}", repro(FILE, name)));
        let exited_at = Instant::now();
        assert!(
            status.success(),
            "node {victim} should exit 0 after SIGTERM, got {status}\nrepro: {}",
            repro(FILE, name)
        );
        if let Some(watcher) = watcher {
            let t = watcher.join().expect("takeover watcher").unwrap_or_else(|| {
                panic!(
                    "after SIGTERM of leader {victim}, nodes {others:?} named no new leader within {NEW_LEADER_TIMEOUT:?}\n{}repro: {}",
                    c.describe(),
                    repro(FILE, name)
                )
            });
            handovers += 1;
            let log = c.node(victim).log_tail(400);
            let line = format!("handed leadership over to node {} (term {})", t.leader, t.term);
            report.push(format!(
                "leader {victim} -> node {} in term {}: named by both others {} ms after SIGTERM, process exited after {} ms",
                t.leader,
                t.term,
                (t.at - stopped_at).as_millis(),
                (exited_at - stopped_at).as_millis()
            ));
            assert!(
                t.at < exited_at,
                "the leader's successor should be known before the leader's process exits (a handover, not an \
                 election after it died); node {} was named {} ms after the exit\nrepro: {}",
                t.leader,
                (t.at - exited_at).as_millis(),
                repro(FILE, name)
            );
            assert_eq!(
                t.term,
                term_before + 1,
                "a handover raises the term by exactly one (leader {victim} -> {}), term {term_before} -> {}\nrepro: {}",
                t.leader,
                t.term,
                repro(FILE, name)
            );
            assert!(
                log.contains(&line),
                "node {victim}'s log should say {line:?}; its tail:\n{log}\nrepro: {}",
                repro(FILE, name)
            );
        } else {
            report.push(format!(
                "follower {victim}: exited {} ms after SIGTERM",
                (exited_at - stopped_at).as_millis()
            ));
        }
        c.node_mut(victim).restart();
        c.node_mut(victim).wait_ready(READY_TIMEOUT);
        // Caught up: it has applied what the leader had committed once it
        // was back.
        let leader_view = c.wait_leader(&all, Duration::from_secs(30));
        let target = leader_view.commit_index;
        let addr = c.node(victim).http_addr.clone();
        wait_until(
            &format!("node {victim} to apply index {target}"),
            CONVERGE_TIMEOUT,
            || {
                let d = cluster::try_digest(&addr)?;
                if d.applied_index >= target {
                    Ok(())
                } else {
                    Err(format!("applied {}", d.applied_index))
                }
            },
        );
        restarted.insert(victim);
        wait_acks(ACKS_PER_PHASE);
    }
    let roll_end = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let oracles: Vec<Oracle> = writers
        .into_iter()
        .map(|h| h.join().expect("a writer thread panicked"))
        .collect();
    let requests = requests.lock().expect("requests lock").clone();
    let final_view = c.wait_leader(&all, Duration::from_secs(30));

    let during: Vec<&Request> = requests
        .iter()
        .filter(|r| r.sent >= roll_start && r.sent <= roll_end)
        .collect();
    let latencies: Vec<Duration> = during
        .iter()
        .filter(|r| r.failure.is_none())
        .map(|r| r.done - r.sent)
        .collect();
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0));
    for line in &report {
        println!("roll: {line}");
    }
    println!(
        "roll: {} writers, {} requests during the roll ({:.1} s), write latency p50 {} ms, p99 {} ms, max {} ms; \
         {} connections refused and resent; term {term_start} -> {} over {handovers} handover(s)",
        WRITERS,
        during.len(),
        (roll_end - roll_start).as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.iter().max().copied()),
        requests.iter().map(|r| r.redispatched).sum::<usize>(),
        final_view.term
    );

    let failed: Vec<String> = requests
        .iter()
        .filter_map(|r| {
            r.failure.as_ref().map(|f| {
                format!(
                    "{f} (sent {} ms into the roll)",
                    r.sent.saturating_duration_since(roll_start).as_millis()
                )
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "no write may fail during a rolling restart; {} of {} failed, first ones:\n{}\n{}repro: {}",
        failed.len(),
        requests.len(),
        failed.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        c.describe(),
        repro(FILE, name)
    );
    assert!(handovers >= 1, "the roll should have stopped a leader at least once");
    assert_eq!(
        final_view.term,
        term_start + handovers,
        "the term should rise by exactly one per handover and by nothing else ({handovers} handovers)\n{}repro: {}",
        c.describe(),
        repro(FILE, name)
    );
    for id in &all {
        assert!(
            requests.iter().any(|r| r.node == *id && r.failure.is_none()),
            "node {id} acknowledged no write at all"
        );
    }
    let digest = c.wait_converged(&all, CONVERGE_TIMEOUT);
    let mut oracle = Oracle::default();
    for o in &oracles {
        oracle.merge(o);
    }
    println!(
        "roll: replicas converged at index {} with {} series and {} samples; {} samples acknowledged",
        digest.applied_index,
        digest.series,
        digest.samples,
        oracle.acked_samples()
    );
    for &id in &all {
        let context = format!("repro: {}", repro(FILE, name));
        oracle.assert_replica(&format!("node {id}"), &c.node(id).http_addr, METRIC, &context);
    }
}
