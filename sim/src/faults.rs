//! The fault schedule: which fault, when, on whom, all drawn from the
//! seed. Every fault is undone by the schedule itself (a repair, a
//! restart, the removed voter added back) or at the latest by
//! [`Faults::heal`], which ends the fault phase.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::cluster::{host_name, Control, NodeSlot, SharedRef};

/// Fault kinds, as counted in the report.
pub const KINDS: [&str; 10] = [
    "partition-minority-majority",
    "partition-leader-isolated",
    "partition-one-way",
    "delay",
    "loss",
    "crash-restart",
    "crash-lose-unsynced",
    "transfer-leader",
    "membership-change",
    "pause-between-faults",
];

/// The base link latency, restored after a delay fault.
pub const BASE_LATENCY: Duration = Duration::from_millis(5);

/// Something the schedule must do later.
#[derive(Debug, Clone)]
enum Undo {
    /// Repair every link.
    RepairAll,
    /// Back to the base latency.
    RestoreLatency,
    /// Stop losing messages.
    NoLoss,
    /// Restart a crashed node.
    Restart(u64),
    /// Make every node a voter again.
    AllVoters,
}

/// The fault schedule of one run.
pub struct Faults {
    rng: StdRng,
    ids: Vec<u64>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    undo: Vec<(u64, Undo)>,
    down: BTreeSet<u64>,
    partitioned: bool,
    voters_changed: bool,
    /// When the heal phase last asked for every node as voter.
    voters_sent_ms: u64,
    next_at_ms: u64,
}

/// The leader among running nodes (highest term), if any.
pub fn leader(shared: &SharedRef) -> Option<(u64, u64)> {
    let sh = shared.lock();
    sh.nodes
        .iter()
        .filter_map(|(&id, n)| {
            let m = n.raft.metrics().borrow_watched().clone();
            (m.state == ServerState::Leader).then_some((m.current_term, id))
        })
        .max()
        .map(|(term, id)| (id, term))
}

impl Faults {
    /// A schedule over nodes `ids`, drawing from `rng`.
    pub fn new(rng: StdRng, ids: Vec<u64>) -> Faults {
        Faults {
            rng,
            ids,
            counts: BTreeMap::new(),
            undo: Vec::new(),
            down: BTreeSet::new(),
            partitioned: false,
            voters_changed: false,
            voters_sent_ms: 0,
            next_at_ms: 500,
        }
    }

    fn count(&mut self, kind: &'static str, shared: &SharedRef, now: u64, args: &[u64]) {
        *self.counts.entry(kind).or_default() += 1;
        shared.lock().trace.event(now, kind, args);
    }

    fn later(&mut self, now: u64, min_ms: u64, max_ms: u64, u: Undo) {
        let at = now + self.rng.gen_range(min_ms..=max_ms);
        self.undo.push((at, u));
    }

    /// Runs what is due at `now` and maybe injects a new fault.
    pub fn tick(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        shared: &SharedRef,
        slots: &[std::sync::Arc<NodeSlot>],
        now: u64,
    ) {
        let due: Vec<Undo> = {
            let (due, keep): (Vec<_>, Vec<_>) = self.undo.drain(..).partition(|(at, _)| *at <= now);
            self.undo = keep;
            due.into_iter().map(|(_, u)| u).collect()
        };
        for u in due {
            self.apply(u, sim, shared, now);
        }
        if now < self.next_at_ms {
            return;
        }
        self.next_at_ms = now + self.rng.gen_range(100..800);
        self.inject(sim, shared, slots, now);
    }

    fn apply(&mut self, u: Undo, sim: &mut turmoil::Sim<'_>, shared: &SharedRef, now: u64) {
        match u {
            Undo::RepairAll => {
                for &a in &self.ids {
                    for &b in &self.ids {
                        if a != b {
                            sim.repair_oneway(host_name(a), host_name(b));
                        }
                    }
                }
                self.partitioned = false;
                shared.lock().trace.event(now, "repair", &[]);
            }
            Undo::RestoreLatency => {
                sim.set_max_message_latency(BASE_LATENCY);
                shared.lock().trace.event(now, "latency-restored", &[]);
            }
            Undo::NoLoss => {
                sim.set_fail_rate(0.0);
                shared.lock().trace.event(now, "loss-stopped", &[]);
            }
            Undo::Restart(id) => {
                sim.bounce(host_name(id));
                self.down.remove(&id);
                shared.lock().trace.event(now, "restart", &[id]);
            }
            Undo::AllVoters => {
                let all: BTreeSet<u64> = self.ids.iter().copied().collect();
                match leader(shared) {
                    Some((l, _)) => {
                        if let Some(tx) = shared.lock().controls.get(&l) {
                            let _ = tx.send(Control::SetVoters(all));
                        }
                        self.voters_changed = false;
                    }
                    // No leader now: try again shortly.
                    None => self.undo.push((now + 200, Undo::AllVoters)),
                }
            }
        }
    }

    fn crash(
        &mut self,
        id: u64,
        lose_unsynced: bool,
        sim: &mut turmoil::Sim<'_>,
        shared: &SharedRef,
        slots: &[std::sync::Arc<NodeSlot>],
        now: u64,
    ) {
        {
            let mut sh = shared.lock();
            sh.max_applied();
            sh.nodes.remove(&id);
            sh.controls.remove(&id);
        }
        sim.crash(host_name(id));
        let slot = &slots[(id - 1) as usize];
        let mut lost = 0;
        for disk in [&slot.log_disk, &slot.tsdb_disk] {
            let pending = disk.pending();
            let keep = if lose_unsynced {
                self.rng.gen_range(0..=pending)
            } else {
                pending
            };
            lost += disk.crash(keep);
        }
        self.down.insert(id);
        let kind = if lose_unsynced {
            "crash-lose-unsynced"
        } else {
            "crash-restart"
        };
        self.count(kind, shared, now, &[id, lost as u64]);
        self.later(now, 200, 3_000, Undo::Restart(id));
    }

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>, shared: &SharedRef, slots: &[std::sync::Arc<NodeSlot>], now: u64) {
        let n = self.ids.len();
        let majority = n / 2 + 1;
        let up: Vec<u64> = self.ids.iter().copied().filter(|i| !self.down.contains(i)).collect();
        match self.rng.gen_range(0..100) {
            0..=14 if !self.partitioned => {
                let mut ids = self.ids.clone();
                ids.shuffle(&mut self.rng);
                let cut = self.rng.gen_range(1..=n - majority);
                let (minority, rest) = ids.split_at(cut);
                for &a in minority {
                    for &b in rest {
                        sim.partition(host_name(a), host_name(b));
                    }
                }
                self.partitioned = true;
                self.count("partition-minority-majority", shared, now, minority);
                self.later(now, 300, 3_000, Undo::RepairAll);
            }
            15..=27 if !self.partitioned => {
                let Some((l, _)) = leader(shared) else { return };
                for &b in &self.ids {
                    if b != l {
                        sim.partition(host_name(l), host_name(b));
                    }
                }
                self.partitioned = true;
                self.count("partition-leader-isolated", shared, now, &[l]);
                self.later(now, 300, 3_000, Undo::RepairAll);
            }
            28..=37 if !self.partitioned => {
                let a = *self.ids.choose(&mut self.rng).expect("nodes");
                let mut pairs = Vec::new();
                for &b in &self.ids {
                    if b != a && self.rng.gen_bool(0.7) {
                        // Messages from `a` to `b` are dropped; `b` still reaches `a`.
                        sim.partition_oneway(host_name(a), host_name(b));
                        pairs.push(b);
                    }
                }
                self.partitioned = true;
                pairs.insert(0, a);
                self.count("partition-one-way", shared, now, &pairs);
                self.later(now, 300, 3_000, Undo::RepairAll);
            }
            38..=49 => {
                let ms = self.rng.gen_range(20..300);
                sim.set_max_message_latency(Duration::from_millis(ms));
                self.count("delay", shared, now, &[ms]);
                self.later(now, 300, 2_000, Undo::RestoreLatency);
            }
            50..=57 => {
                let per_mille = self.rng.gen_range(1..20);
                sim.set_fail_rate(per_mille as f64 / 1000.0);
                self.count("loss", shared, now, &[per_mille]);
                self.later(now, 200, 1_500, Undo::NoLoss);
            }
            58..=71 if up.len() == n || (up.len() > majority && self.rng.gen_bool(0.3)) => {
                let id = *up.choose(&mut self.rng).expect("a running node");
                let lose = self.rng.gen_bool(0.5);
                self.crash(id, lose, sim, shared, slots, now);
            }
            72..=85 => {
                let Some((l, _)) = leader(shared) else { return };
                let others: Vec<u64> = up.iter().copied().filter(|&i| i != l).collect();
                let Some(&to) = others.choose(&mut self.rng) else {
                    return;
                };
                if let Some(tx) = shared.lock().controls.get(&l) {
                    let _ = tx.send(Control::TransferLeader(to));
                }
                self.count("transfer-leader", shared, now, &[l, to]);
            }
            86..=95 if n >= 5 && !self.voters_changed => {
                let Some((l, _)) = leader(shared) else { return };
                let others: Vec<u64> = self.ids.iter().copied().filter(|&i| i != l).collect();
                let Some(&out) = others.choose(&mut self.rng) else {
                    return;
                };
                let voters: BTreeSet<u64> = self.ids.iter().copied().filter(|&i| i != out).collect();
                if let Some(tx) = shared.lock().controls.get(&l) {
                    let _ = tx.send(Control::SetVoters(voters));
                }
                self.voters_changed = true;
                self.count("membership-change", shared, now, &[l, out]);
                self.later(now, 500, 3_000, Undo::AllVoters);
            }
            _ => self.count("pause-between-faults", shared, now, &[]),
        }
    }

    /// Ends the fault phase: repairs every link, restores latency and
    /// delivery, restarts crashed nodes, and asks for every node as voter.
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>, shared: &SharedRef, now: u64) {
        let pending: Vec<Undo> = self.undo.drain(..).map(|(_, u)| u).collect();
        for u in pending {
            if !matches!(u, Undo::AllVoters) {
                self.apply(u, sim, shared, now);
            }
        }
        self.apply(Undo::RepairAll, sim, shared, now);
        self.apply(Undo::RestoreLatency, sim, shared, now);
        self.apply(Undo::NoLoss, sim, shared, now);
        for id in std::mem::take(&mut self.down) {
            self.apply(Undo::Restart(id), sim, shared, now);
        }
        self.voters_changed = true;
    }

    /// During the heal phase: keeps asking the leader to make every node a
    /// voter until the membership says so.
    pub fn heal_membership(&mut self, shared: &SharedRef, now: u64) -> bool {
        let all: BTreeSet<u64> = self.ids.iter().copied().collect();
        let Some((l, _)) = leader(shared) else { return false };
        let voters: BTreeSet<u64> = {
            let sh = shared.lock();
            let Some(node) = sh.nodes.get(&l) else { return false };
            let m = node.raft_metrics();
            m.membership_config.membership().voter_ids().collect()
        };
        if voters == all {
            return true;
        }
        if self.voters_changed || now >= self.voters_sent_ms + 500 {
            self.voters_changed = false;
            self.voters_sent_ms = now;
            if let Some(tx) = shared.lock().controls.get(&l) {
                let _ = tx.send(Control::SetVoters(all));
            }
        }
        false
    }
}
