//! Crash safety of one node, with the real binary: every remote write that
//! was answered 204 must survive a SIGKILL (no graceful shutdown, nothing
//! flushed on the way out), also when writes are in flight at the moment of
//! the kill; and a graceful restart must bring the replica back exactly as
//! it was (same digest at the same applied index).
//!
//! The check is an oracle of what was sent: acknowledged samples must all be
//! there with their exact values, samples of requests whose outcome is
//! unknown (in flight at the kill) may or may not be there, and nothing
//! else may be.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const FILE: &str = "node_crash";

/// Series written in the sequential phase.
const SEQ_SERIES: usize = 300;
/// Requests in the sequential phase; each carries one sample for every
/// series, at its own timestamp, so 9,000 samples in all.
const SEQ_BATCHES: usize = 30;
/// Concurrent writers in the in-flight phase; each owns its series, so no
/// write of one can be out of order because of another.
const WRITERS: usize = 4;
/// Series per writer in the in-flight phase.
const WRITER_SERIES: usize = 100;
/// Acknowledged requests to wait for in the in-flight phase before the kill.
const INFLIGHT_ACKED_BEFORE_KILL: usize = 20;
/// A writer stops after this many requests even if the node never dies, so
/// a broken kill cannot make the test loop forever.
const WRITER_REQUESTS_MAX: usize = 5_000;

/// What the client knows about every sample it sent.
#[derive(Default)]
struct Oracle {
    /// Samples of requests answered 204: they must be stored.
    acked: BTreeMap<LabelSet, BTreeMap<i64, f64>>,
    /// Samples of every request sent, acknowledged or not: nothing else may
    /// be stored.
    sent: BTreeMap<LabelSet, BTreeMap<i64, f64>>,
    /// Requests whose outcome is unknown (the connection failed).
    unknown_requests: usize,
}

impl Oracle {
    fn record(&mut self, samples: &[(LabelSet, i64, f64)], acked: bool) {
        for (ls, t, v) in samples {
            self.sent.entry(ls.clone()).or_default().insert(*t, *v);
            if acked {
                self.acked.entry(ls.clone()).or_default().insert(*t, *v);
            }
        }
        if !acked {
            self.unknown_requests += 1;
        }
    }

    fn acked_samples(&self) -> usize {
        self.acked.values().map(BTreeMap::len).sum()
    }

    /// Compares what the node stores with what was sent; returns one line
    /// per discrepancy.
    fn check(&self, stored: &BTreeMap<LabelSet, Vec<(i64, f64)>>) -> Vec<String> {
        let mut problems = Vec::new();
        for (ls, want) in &self.acked {
            let got: BTreeMap<i64, f64> = stored.get(ls).map(|v| v.iter().copied().collect()).unwrap_or_default();
            for (t, v) in want {
                match got.get(t) {
                    None => problems.push(format!("acknowledged sample missing: {ls:?} @{t} = {v}")),
                    Some(g) if g.to_bits() != v.to_bits() => problems.push(format!(
                        "acknowledged sample changed: {ls:?} @{t}: sent {v}, stored {g}"
                    )),
                    Some(_) => {}
                }
            }
        }
        for (ls, got) in stored {
            let sent = self.sent.get(ls);
            let mut prev = None;
            for &(t, v) in got {
                if prev == Some(t) {
                    problems.push(format!("timestamp stored twice: {ls:?} @{t}"));
                }
                prev = Some(t);
                match sent.and_then(|s| s.get(&t)) {
                    None => problems.push(format!("stored sample never sent: {ls:?} @{t} = {v}")),
                    Some(s) if s.to_bits() != v.to_bits() => problems.push(format!(
                        "stored value differs from the one sent: {ls:?} @{t}: sent {s}, stored {v}"
                    )),
                    Some(_) => {}
                }
            }
        }
        problems
    }
}

/// One request: one sample at `t_ms` for each of `n` series of `metric`,
/// with values unique per (series, batch) so a stale or shifted value shows.
fn batch(
    metric: &str,
    writer: usize,
    n: usize,
    b: usize,
    t_ms: i64,
) -> (prompb::WriteRequest, Vec<(LabelSet, i64, f64)>) {
    let mut ts = Vec::with_capacity(n);
    let mut samples = Vec::with_capacity(n);
    for s in 0..n {
        let (w, sid) = (writer.to_string(), format!("{s:04}"));
        let pairs = [("__name__", metric), ("writer", w.as_str()), ("series", sid.as_str())];
        let v = (s * 100_000 + b) as f64 + 0.25;
        ts.push(series(&pairs, &[(t_ms, v)]));
        samples.push((label_set_of(&pairs), t_ms, v));
    }
    (write_request(ts), samples)
}

fn report(problems: &[String], what: &str, node: &TestNode, test: &str) -> String {
    let shown: Vec<&str> = problems.iter().take(15).map(String::as_str).collect();
    format!(
        "{what}: expected every acknowledged sample stored exactly and nothing unsent, found {} problems; first ones:\n  {}\nnode log: {}\nreproduce: {}",
        problems.len(),
        shown.join("\n  "),
        node.log_path().display(),
        repro(FILE, test)
    )
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    const TEST: &str = "acknowledged_writes_survive_sigkill";
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("node1"));
    node.wait_ready(READY_TIMEOUT);
    // Whole seconds an hour back: well inside retention, clear of the present.
    let base = (now_ms() - 3_600_000) / 1000 * 1000;
    let mut oracle = Oracle::default();

    // Phase 1: sequential writes, SIGKILL right after the last 204.
    let started = Instant::now();
    for b in 0..SEQ_BATCHES {
        let (req, samples) = batch("crash_seq", 0, SEQ_SERIES, b, base + b as i64 * 1000);
        let r = node.write(&req);
        assert_eq!(
            r.status,
            204,
            "batch {b}: expected 204, got {} {:?}; reproduce: {}",
            r.status,
            r.text(),
            repro(FILE, TEST)
        );
        oracle.record(&samples, true);
    }
    let kill_status = node.kill9();
    eprintln!(
        "phase 1: {} samples in {SEQ_BATCHES} acknowledged requests in {:?}, then SIGKILL ({kill_status})",
        oracle.acked_samples(),
        started.elapsed()
    );
    assert!(
        !kill_status.success(),
        "the node should have died of SIGKILL, but it exited with {kill_status}"
    );

    node.restart();
    node.wait_ready(READY_TIMEOUT);
    let series = node.api("/api/v1/series", &[("match[]", "crash_seq")]);
    assert_eq!(
        series.as_array().map(Vec::len),
        Some(SEQ_SERIES),
        "after the first crash: expected {SEQ_SERIES} series of crash_seq, got {series}; reproduce: {}",
        repro(FILE, TEST)
    );
    let stored = node.raw_samples("crash_seq", base, base + 3_600_000);
    let problems = oracle.check(&stored);
    assert!(
        problems.is_empty(),
        "{}",
        report(&problems, "after the first crash", &node, TEST)
    );

    // Phase 2: concurrent writers, SIGKILL while their requests are in flight.
    let oracle = Arc::new(Mutex::new(oracle));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    // When each request that got no answer (its connection failed) was sent.
    let unanswered_sent_at = Arc::new(Mutex::new(Vec::<Instant>::new()));
    // Writers inside a request right now (sent, not yet answered): the kill
    // waits for some, so that it lands while requests are in flight.
    let in_request = Arc::new(AtomicUsize::new(0));
    let base2 = base + 1_200_000;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, oracle, acked, stop, unexpected, unanswered_sent_at, in_request) = (
                node.http_addr.clone(),
                oracle.clone(),
                acked.clone(),
                stop.clone(),
                unexpected.clone(),
                unanswered_sent_at.clone(),
                in_request.clone(),
            );
            std::thread::spawn(move || {
                for b in 0..WRITER_REQUESTS_MAX {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (req, samples) = batch("crash_inflight", w + 1, WRITER_SERIES, b, base2 + b as i64 * 1000);
                    let body = encode_write(&req);
                    let sent_at = Instant::now();
                    in_request.fetch_add(1, Ordering::SeqCst);
                    let answer = http_request(&addr, "POST", "/api/v1/write", REMOTE_WRITE_HEADERS, &body);
                    in_request.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Ok(r) if r.status == 204 => {
                            oracle.lock().expect("oracle lock").record(&samples, true);
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            // Not stored as far as the client knows, but it
                            // may have been: treat as unknown, and report it,
                            // since a live node should not refuse these.
                            oracle.lock().expect("oracle lock").record(&samples, false);
                            unexpected.lock().expect("lock").push(format!(
                                "writer {w} batch {b}: HTTP {} {:?}",
                                r.status,
                                r.text()
                            ));
                        }
                        Err(_) => {
                            // Connection refused or reset: the node is gone.
                            oracle.lock().expect("oracle lock").record(&samples, false);
                            unanswered_sent_at.lock().expect("lock").push(sent_at);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_until("in-flight phase acknowledgements", Duration::from_secs(60), || {
        let n = acked.load(Ordering::SeqCst);
        if n >= INFLIGHT_ACKED_BEFORE_KILL {
            Ok(())
        } else {
            Err(format!("{n} of {INFLIGHT_ACKED_BEFORE_KILL} requests acknowledged"))
        }
    });
    // Each writer spends most of its time inside a request, but not all of
    // it: kill only once all but one of them are (bounded wait).
    let busy = WRITERS - 1;
    let gate_deadline = Instant::now() + Duration::from_secs(10);
    while in_request.load(Ordering::SeqCst) < busy && Instant::now() < gate_deadline {
        std::hint::spin_loop();
    }
    node.kill9();
    // Taken once the process is reaped (its sockets closed): a request sent
    // before this and never answered went to the node while it lived or
    // died, however quickly the requests in flight at the signal itself
    // were answered (on a quiet machine they can all finish, and the
    // writers send new ones, in the microseconds before the signal lands).
    let kill_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread panicked");
    }
    // The phase is about requests in flight at the kill: sent before it and
    // never answered. The writers send back to back, so each is almost
    // always inside a request; if none was, the phase proved nothing.
    let in_flight = unanswered_sent_at
        .lock()
        .expect("lock")
        .iter()
        .filter(|&&t| t < kill_at)
        .count();
    assert!(
        in_flight >= 1,
        "no request was in flight at the SIGKILL (none sent before the node was reaped went unanswered), so the \
         in-flight phase checked nothing; unanswered requests sent {:?} µs relative to the reaping, other answers \
         {:?}; reproduce: {}",
        unanswered_sent_at
            .lock()
            .expect("lock")
            .iter()
            .map(|t| t.saturating_duration_since(kill_at).as_micros() as i64
                - kill_at.saturating_duration_since(*t).as_micros() as i64)
            .collect::<Vec<_>>(),
        unexpected.lock().expect("lock"),
        repro(FILE, TEST)
    );
    let unexpected = unexpected.lock().expect("lock").clone();
    assert!(
        unexpected.is_empty(),
        "while the node was up, every write should have been answered 204; got: {unexpected:?}"
    );
    let oracle = Arc::try_unwrap(oracle)
        .ok()
        .expect("writers joined")
        .into_inner()
        .expect("oracle lock");
    eprintln!(
        "phase 2: {} requests acknowledged, {} with unknown outcome at the SIGKILL ({in_flight} sent before it)",
        acked.load(Ordering::SeqCst),
        oracle.unknown_requests
    );

    node.restart();
    node.wait_ready(READY_TIMEOUT);
    let mut stored = node.raw_samples("crash_seq", base, base + 3_600_000);
    stored.extend(node.raw_samples("crash_inflight", base, base + 3_600_000));
    let problems = oracle.check(&stored);
    assert!(
        problems.is_empty(),
        "{}",
        report(&problems, "after the second crash", &node, TEST)
    );

    // The node still takes writes after two crashes, appending after what it
    // recovered (a later timestamp for every series written before).
    let (req, _) = batch("crash_seq", 0, SEQ_SERIES, SEQ_BATCHES, base + 3_000_000);
    node.write_ok(&req);
}

/// Starts a node, writes 50 series x 10 samples, and returns it with the
/// digest it reports once every write is acknowledged.
fn node_with_data(dir: &std::path::Path) -> (TestNode, Digest) {
    let mut node = TestNode::start(1, &dir.join("node1"));
    node.wait_ready(READY_TIMEOUT);
    let base = (now_ms() - 1_800_000) / 1000 * 1000;
    for b in 0..10 {
        let (req, _) = batch("restart_metric", 0, 50, b, base + b as i64 * 15_000);
        node.write_ok(&req);
    }
    let digest = node.digest();
    assert_eq!(
        (digest.series, digest.samples),
        (50, 500),
        "digest before the restart: expected 50 series and 500 samples, got {digest:?}"
    );
    (node, digest)
}

/// SIGTERM, assert a clean exit, start again and wait until ready.
fn graceful_restart(node: &mut TestNode) {
    let status = node.stop(STOP_TIMEOUT).unwrap_or_else(|e| panic!("graceful stop: {e}"));
    assert!(
        status.success(),
        "SIGTERM should end the node cleanly, it exited with {status}"
    );
    node.restart();
    node.wait_ready(READY_TIMEOUT);
}

#[test]
fn digest_is_unchanged_by_a_graceful_restart() {
    const TEST: &str = "digest_is_unchanged_by_a_graceful_restart";
    let dir = TestDir::new();
    let (mut node, before) = node_with_data(dir.path());
    graceful_restart(&mut node);
    let after = node.digest();
    assert_eq!(
        (&after.digest, after.series, after.samples),
        (&before.digest, before.series, before.samples),
        "/api/v1/status/digest after a graceful restart should describe the same content as before it \
         (before: {before:?}, after: {after:?}); reproduce: {}",
        repro(FILE, TEST)
    );
    assert!(
        after.applied_index >= before.applied_index,
        "the applied index went back over a graceful restart: before {before:?}, after {after:?}"
    );
}

/// The stricter half of the check above: with no client writes, a graceful
/// restart leaves the applied index where it was. (It once moved: the
/// retention duty's first tick was immediate, so a node leading at
/// start-up proposed a `Retention` entry at once.) The test waits two
/// seconds for the index to move, so such an entry cannot slip by because
/// the digest request came first.
#[test]
fn applied_index_is_unchanged_by_a_graceful_restart() {
    const TEST: &str = "applied_index_is_unchanged_by_a_graceful_restart";
    let dir = TestDir::new();
    let (mut node, before) = node_with_data(dir.path());
    graceful_restart(&mut node);
    let moved = poll_until(Duration::from_secs(2), || {
        let now = node.digest();
        if now.applied_index != before.applied_index {
            Ok(now)
        } else {
            Err(format!("still {}", now.applied_index))
        }
    });
    if let Ok(after) = moved {
        panic!(
            "with no writes, the applied index should be the same after a graceful restart as before it; \
             before: {before:?}, after: {after:?}; log: {}; reproduce: {}",
            node.log_path().display(),
            repro(FILE, TEST)
        );
    }
}
