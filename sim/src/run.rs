//! One seed from start to verdict: build the simulated cluster, run the
//! workload under faults, heal, check the invariants, and report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{host_name, mix, run_node, NodeSlot, Shared, SharedRef};
use crate::disk::Disk;
use crate::faults::{Faults, BASE_LATENCY};
use crate::invariants::heal::{self, HealState};
use crate::invariants::one_leader_per_term::Leaders;
use crate::invariants::same_digest::Digests;
use crate::invariants::{acked_not_lost, no_duplicate_or_phantom, Replica, Violation};
use crate::oracle::OpCounts;

/// How a seed is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Sim time with faults, ms.
    pub fault_ms: u64,
    /// Sim time the heal phase may take at most, ms.
    pub heal_max_ms: u64,
    /// Invariant checks every this many ms of sim time.
    pub check_every_ms: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            fault_ms: 10_000,
            heal_max_ms: 20_000,
            check_every_ms: 250,
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Hash of the structured history (same seed, same hash).
    pub trace_hash: u64,
    /// Events in the history.
    pub trace_events: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Client operations.
    pub ops: OpCounts,
    /// Writes never answered.
    pub writes_unknown: u64,
    /// Terms that had a leader.
    pub terms: usize,
    /// Snapshots the nodes began to install (sent by a leader through the
    /// transport's snapshot stream), counted as imports on their TSDB disks.
    pub snapshot_installs: u64,
    /// Sim time at the end, ms.
    pub sim_ms: u64,
    /// Breaches found (empty: the seed passed).
    pub violations: Vec<Violation>,
    /// The last events of the history, for a failure's message.
    pub trace_tail: Vec<String>,
}

impl RunReport {
    /// True when no invariant was breached.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The distinct invariants breached, in the order they were first seen.
    pub fn violated(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for v in &self.violations {
            if !out.contains(&v.invariant) {
                out.push(v.invariant);
            }
        }
        out
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        replay_command(self.seed)
    }
}

/// The command that replays `seed` exactly.
pub fn replay_command(seed: u64) -> String {
    format!(
        "RUSTFLAGS=\"--cfg tokio_unstable\" CARGO_TARGET_DIR=target-sim cargo run --release -p promraft-sim -- --seeds 1 --from {seed}"
    )
}

/// Captures every running replica (sorted by id).
fn replicas(shared: &SharedRef, now: u64, out: &mut Vec<Violation>) -> Vec<Replica> {
    let sh = shared.lock();
    let mut rs = Vec::new();
    for (&id, node) in &sh.nodes {
        match Replica::capture(id, node) {
            Ok(r) => rs.push(r),
            Err(e) => out.push(Violation {
                invariant: "acked_not_lost",
                at_ms: now,
                detail: format!("node {id}: reading the replica failed: {e}"),
            }),
        }
    }
    rs
}

/// Checks every replica against the oracle and against each other.
fn check_replicas(shared: &SharedRef, digests: &mut Digests, now: u64) -> Vec<Replica> {
    let mut found = Vec::new();
    let rs = replicas(shared, now, &mut found);
    let mut sh = shared.lock();
    for r in &rs {
        found.extend(acked_not_lost::check(&sh.oracle, r, now));
        found.extend(no_duplicate_or_phantom::check(
            &sh.oracle,
            &format!("node {}", r.id),
            &r.data,
            now,
        ));
        found.extend(digests.check(r, now));
        sh.trace.event(
            now,
            "replica",
            &[r.id, r.applied, u64::from_str_radix(&r.digest.digest, 16).unwrap_or(0)],
        );
    }
    sh.violations.extend(found);
    rs
}

/// Records the leaders running nodes claim; checks one per term.
fn observe_leaders(shared: &SharedRef, leaders: &mut Leaders, now: u64) {
    let mut sh = shared.lock();
    sh.max_applied();
    let seen: Vec<(u64, u64)> = sh
        .nodes
        .iter()
        .filter_map(|(&id, n)| {
            let rx = n.raft.metrics();
            let m = rx.borrow_watched();
            (m.state == ServerState::Leader).then_some((id, m.current_term))
        })
        .collect();
    for (id, term) in seen {
        match leaders.observe(id, term, now) {
            Ok(true) => sh.trace.event(now, "leader", &[id, term]),
            Ok(false) => {}
            Err(v) => sh.violations.push(v),
        }
    }
}

/// Runs `seed`.
pub fn run_seed(seed: u64, opts: &RunOptions) -> RunReport {
    let mut rng = StdRng::seed_from_u64(mix(seed, 1));
    let n: u64 = if rng.gen_bool(0.5) { 3 } else { 5 };
    let ids: Vec<u64> = (1..=n).collect();
    let tmp = tempfile::tempdir().expect("a temporary directory for snapshot spools");
    let shared: SharedRef = Arc::new(Mutex::new(Shared {
        clients_on: true,
        ..Default::default()
    }));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(opts.fault_ms + opts.heal_max_ms + 60_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(BASE_LATENCY)
        .rng_seed(seed)
        .build();
    let slots: Vec<Arc<NodeSlot>> = ids
        .iter()
        .map(|&id| {
            Arc::new(NodeSlot {
                id,
                all: ids.clone(),
                seed,
                log_disk: Disk::new(),
                tsdb_disk: Disk::new(),
                dir: tmp.path().join(host_name(id)),
                shared: shared.clone(),
            })
        })
        .collect();
    for slot in &slots {
        let slot = slot.clone();
        sim.host(host_name(slot.id), move || run_node(slot.clone()));
    }
    let mut faults = Faults::new(StdRng::seed_from_u64(mix(seed, 2)), ids.clone());
    let mut leaders = Leaders::default();
    let mut digests = Digests::default();
    let mut heal_state: Option<(u64, u64, HealState)> = None;
    let mut next_check = opts.check_every_ms;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        if now < opts.fault_ms {
            faults.tick(&mut sim, &shared, &slots, now);
        } else if heal_state.is_none() {
            faults.heal(&mut sim, &shared, now);
            let acked = shared.lock().oracle.counts.writes_acked;
            shared.lock().trace.event(now, "heal", &[]);
            heal_state = Some((now, acked, HealState::default()));
        }
        if let Err(e) = sim.step() {
            shared.lock().violations.push(Violation {
                invariant: crate::invariants::HOST_FAILED,
                at_ms: now,
                detail: format!("a host failed (panic or error): {e}"),
            });
            break;
        }
        observe_leaders(&shared, &mut leaders, now);
        if !shared.lock().violations.is_empty() {
            break;
        }
        if now < next_check {
            continue;
        }
        next_check = now + opts.check_every_ms;
        let rs = check_replicas(&shared, &mut digests, now);
        if !shared.lock().violations.is_empty() {
            break;
        }
        if let Some((started, acked_before, st)) = heal_state.as_mut() {
            let members_ok = faults.heal_membership(&shared, now);
            let leader = crate::faults::leader(&shared);
            let (all_up, acked_now, committed_applied) = {
                let sh = shared.lock();
                let committed_applied = sh.nodes.values().all(|n| {
                    let m = n.raft_metrics();
                    m.last_applied.map(|l| l.index) >= m.local_committed.map(|l| l.index)
                });
                (
                    sh.nodes.len() == ids.len(),
                    sh.oracle.counts.writes_acked,
                    committed_applied,
                )
            };
            st.leader = leader.map(|(l, _)| l);
            st.writes_acked = acked_now - *acked_before;
            // Once the healed cluster has taken a write, the clients stop,
            // so that the replicas can be seen converged at one index.
            if st.leader.is_some() && st.writes_acked > 0 && members_ok {
                shared.lock().clients_on = false;
            }
            st.converged = all_up && members_ok && committed_applied && heal::converged(&rs);
            if st.done() {
                break;
            }
            if now >= *started + opts.heal_max_ms {
                let v = heal::timed_out(st, opts.heal_max_ms, now, &rs);
                shared.lock().violations.push(v);
                break;
            }
        }
    }
    shared.lock().clients_on = false;
    let now = sim.elapsed().as_millis() as u64;
    // The run stops at the first breach, which may be one a client or the
    // leader check found between two rounds: check the replicas once more,
    // so that every invariant breached by now is reported, not only the
    // first one.
    if !shared.lock().violations.is_empty() {
        check_replicas(&shared, &mut digests, now);
    }
    let sh = shared.lock();
    RunReport {
        seed,
        nodes: ids.len(),
        trace_hash: sh.trace.hash(),
        trace_events: sh.trace.len(),
        faults: faults.counts.clone(),
        ops: sh.oracle.counts.clone(),
        writes_unknown: sh.oracle.unknown(),
        terms: leaders.terms(),
        snapshot_installs: slots
            .iter()
            .map(|s| s.tsdb_disk.clears(crate::cluster::TSDB_MAIN_TREE))
            .sum(),
        sim_ms: now,
        violations: sh.violations.clone(),
        trace_tail: sh.trace.tail().collect(),
    }
}
