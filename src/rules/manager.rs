//! The rule manager: the loaded rule groups, and the leader duty that
//! evaluates them.
//!
//! Exactly one node evaluates: the leader that holds its lease. When a
//! node becomes that leader it builds fresh groups from the loaded files
//! and starts one task per group; each evaluates on the group's grid
//! (the same on every node) and sends the results through the Raft log
//! (`cluster::routing::write`), never into the TSDB directly. When the
//! node stops leading, the tasks stop at their next wake-up; alert state
//! lives on in the log (`ALERTS_FOR_STATE`), from which the next leader's
//! fresh groups restore their timers at their first evaluation.
//!
//! Missed evaluations: a new leader evaluates the group's latest grid
//! point at once (the previous leader may or may not have; a repeated
//! sample is a no-op in the TSDB), then keeps to the grid. An evaluation
//! that runs past the next grid point skips the missed points and counts
//! them, as Prometheus does; nothing older is evaluated late.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::alerting::{Alert, LabelMap};
use super::file::{load_all, GroupDef, RuleFileError};
use super::group::{Group, GroupContext};
use super::querier::DbQuerier;
use crate::cluster::routing::{leader_holds_lease, Router};
use crate::notifier::{rfc3339_ms, AmAlert, Notifier};
use crate::tsdb::labels::Labels;
use crate::tsdb::{AppendRequest, SeriesSamples};

/// Prometheus's default `evaluation_interval` when none is configured.
pub const EVALUATION_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);

/// Prometheus's default `--rules.alert.resend-delay`.
pub const RESEND_DELAY_DEFAULT: Duration = Duration::from_secs(60);

/// How often a node that does not evaluate checks whether it now leads,
/// and the longest an evaluator sleeps before checking it still does: a
/// leader change is noticed within this.
pub const LEADERSHIP_POLL: Duration = Duration::from_millis(100);

/// What the rules need from the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesSettings {
    /// `rule_files`, globs already expanded.
    pub rule_files: Vec<std::path::PathBuf>,
    /// `global.evaluation_interval`.
    pub evaluation_interval: Duration,
    /// `global.external_labels`.
    pub external_labels: LabelMap,
    /// The URL alerts link back to (`generatorURL`).
    pub external_url: String,
    /// How often a firing alert is sent again.
    pub resend_delay: Duration,
}

/// Counters of the rule evaluator on this node.
#[derive(Debug, Default)]
struct RuleCounters {
    evaluations: AtomicU64,
    failures: AtomicU64,
    missed: AtomicU64,
    write_errors: AtomicU64,
}

/// The loaded rules and, on the evaluating node, their state.
pub struct RuleManager {
    settings: parking_lot::RwLock<RulesSettings>,
    defs: parking_lot::RwLock<Vec<(String, GroupDef)>>,
    /// The groups being evaluated here (empty unless this node evaluates).
    current: parking_lot::RwLock<Vec<Arc<parking_lot::Mutex<Group>>>>,
    /// Bumped at every reload, so running evaluators restart on new rules.
    generation: AtomicU64,
    /// Whether the last reload of the rule files succeeded.
    last_reload_ok: std::sync::atomic::AtomicBool,
    counters: RuleCounters,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RuleManager {
    /// Loads the rule files of `settings`.
    pub fn load(settings: RulesSettings) -> Result<Arc<RuleManager>, RuleFileError> {
        let defs = load_all(&settings.rule_files)?;
        Ok(Arc::new(RuleManager {
            settings: parking_lot::RwLock::new(settings),
            defs: parking_lot::RwLock::new(defs),
            current: parking_lot::RwLock::new(Vec::new()),
            generation: AtomicU64::new(0),
            last_reload_ok: std::sync::atomic::AtomicBool::new(true),
            counters: RuleCounters::default(),
        }))
    }

    /// Loads new settings and rule files; on an error the old ones stay.
    /// When anything changed, a running evaluator restarts with fresh groups, which restore their
    /// alerts from `ALERTS_FOR_STATE` as after a failover.
    pub fn reload(&self, settings: RulesSettings) -> Result<(), RuleFileError> {
        let loaded = load_all(&settings.rule_files);
        self.last_reload_ok.store(loaded.is_ok(), Ordering::Relaxed);
        let defs = loaded?;
        if *self.defs.read() == defs && *self.settings.read() == settings {
            // Unchanged: the evaluator goes on with its state.
            return Ok(());
        }
        *self.defs.write() = defs;
        *self.settings.write() = settings;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn settings(&self) -> RulesSettings {
        self.settings.read().clone()
    }

    fn fresh_groups(&self) -> Vec<Group> {
        let default_ms = ms(match self.settings.read().evaluation_interval {
            d if d.is_zero() => EVALUATION_INTERVAL_DEFAULT,
            d => d,
        });
        self.defs
            .read()
            .iter()
            .map(|(file, def)| Group::new(file, def, default_ms))
            .collect()
    }

    /// The groups with their state where this node evaluates them, else
    /// as loaded (health unknown).
    pub fn groups(&self) -> Vec<Group> {
        let cur = self.current.read();
        if cur.is_empty() {
            return self.fresh_groups();
        }
        cur.iter().map(|g| g.lock().clone()).collect()
    }

    /// Whether this node evaluates the rules now.
    pub fn evaluating(&self) -> bool {
        !self.current.read().is_empty()
    }

    /// The evaluator's series in the exposition format.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{counter, gauge};
        let c = &self.counters;
        for (name, help, v) in [
            (
                "promraft_rule_evaluations_total",
                "Rule evaluations on this node.",
                &c.evaluations,
            ),
            (
                "promraft_rule_evaluation_failures_total",
                "Rule evaluations that failed on this node.",
                &c.failures,
            ),
            (
                "promraft_rule_group_iterations_missed_total",
                "Group evaluations skipped because an evaluation ran late.",
                &c.missed,
            ),
            (
                "promraft_rule_write_errors_total",
                "Rule results the log did not take.",
                &c.write_errors,
            ),
        ] {
            counter(out, name, help, v.load(Ordering::Relaxed));
        }
        let evaluator = if self.evaluating() { 1.0 } else { 0.0 };
        gauge(
            out,
            "promraft_rule_evaluator",
            "1 if this node evaluates the rules (the leader), else 0.",
            evaluator,
        );
        gauge(
            out,
            "promraft_rule_groups",
            "Rule groups loaded.",
            self.defs.read().len() as f64,
        );
        let ok = if self.last_reload_ok.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        gauge(
            out,
            "promraft_rule_files_last_reload_successful",
            "1 if the rule files were read without error at the last (re)load, else 0 (the previous rules stay).",
            ok,
        );
    }
}

/// What the evaluator needs of the node.
#[derive(Clone)]
pub struct Evaluator {
    /// The rules.
    pub manager: Arc<RuleManager>,
    /// Where results go (the log) and who leads.
    pub router: Router,
    /// The local replica.
    pub querier: DbQuerier,
    /// Where alerts go.
    pub notifier: Arc<Notifier>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The leader's term while this node leads and holds its lease and is not
/// stopping; `None` otherwise.
fn leading_term(router: &Router) -> Option<u64> {
    let m = router.raft.metrics().borrow_watched().clone();
    (m.current_leader == Some(router.node_id) && leader_holds_lease(router) && !router.handover.is_closed())
        .then_some(m.current_term)
}

/// The leader duty: waits until this node leads, evaluates every group
/// while it does, and starts over at every leadership or rules change.
/// Ends when the node dropped its manager (the duty then holds the last
/// handle).
pub async fn run(ev: Evaluator) {
    loop {
        tokio::time::sleep(LEADERSHIP_POLL).await;
        if Arc::strong_count(&ev.manager) == 1 {
            return;
        }
        let m = ev.manager.clone();
        let Some(term) = leading_term(&ev.router) else { continue };
        if !caught_up(&ev.router) {
            // The restore reads ALERTS_FOR_STATE from the local replica:
            // it must hold everything the previous leader committed.
            continue;
        }
        let generation = m.generation.load(Ordering::SeqCst);
        let groups: Vec<_> = m
            .fresh_groups()
            .into_iter()
            .map(|g| Arc::new(parking_lot::Mutex::new(g)))
            .collect();
        *m.current.write() = groups.clone();
        tracing::info!(term, groups = groups.len(), "evaluating rules as the leader");
        let mut tasks = tokio::task::JoinSet::new();
        for g in groups {
            tasks.spawn(group_loop(ev.clone(), g, term, generation));
        }
        while tasks.join_next().await.is_some() {}
        m.current.write().clear();
        tracing::info!(term, "stopped evaluating rules");
    }
}

/// Whether this node has applied every entry it knows committed.
fn caught_up(router: &Router) -> bool {
    let m = router.raft.metrics().borrow_watched().clone();
    m.last_applied.map(|l| l.index) >= m.local_committed.map(|l| l.index)
}

/// Whether the evaluator of `term` and rules `generation` should go on.
fn still_current(ev: &Evaluator, term: u64, generation: u64) -> bool {
    leading_term(&ev.router) == Some(term) && ev.manager.generation.load(Ordering::SeqCst) == generation
}

async fn group_loop(ev: Evaluator, group: Arc<parking_lot::Mutex<Group>>, term: u64, generation: u64) {
    let (interval_ms, mut ts) = {
        let g = group.lock();
        (g.interval_ms, g.eval_ts(now_ms()))
    };
    loop {
        // Sleep until the grid point in slices, so a lost leadership or a
        // reload is noticed within LEADERSHIP_POLL.
        loop {
            if !still_current(&ev, term, generation) {
                return;
            }
            let wait = ts - now_ms();
            if wait <= 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs()).min(LEADERSHIP_POLL)).await;
        }
        evaluate_once(&ev, &group, ts).await;
        let latest = group.lock().eval_ts(now_ms());
        let next = latest + interval_ms;
        let missed = ((next - ts) / interval_ms - 1).max(0);
        if missed > 0 {
            group.lock().iterations_missed += missed.unsigned_abs();
            ev.manager
                .counters
                .missed
                .fetch_add(missed.unsigned_abs(), Ordering::Relaxed);
        }
        ts = next;
    }
}

/// One evaluation of one group at `ts`: the rules on a blocking thread,
/// then the results through the log and the alerts to the notifier.
async fn evaluate_once(ev: &Evaluator, group: &Arc<parking_lot::Mutex<Group>>, ts: i64) {
    let settings = ev.manager.settings();
    let (g, q) = (group.clone(), ev.querier.clone());
    let s = settings.clone();
    let out = tokio::task::spawn_blocking(move || {
        let cx = GroupContext {
            external_labels: &s.external_labels,
            external_url: &s.external_url,
            resend_delay_ms: ms(match s.resend_delay {
                d if d.is_zero() => RESEND_DELAY_DEFAULT,
                d => d,
            }),
        };
        g.lock().evaluate(ts, &q, &cx)
    })
    .await;
    let Ok(out) = out else {
        tracing::error!("rule evaluation task failed");
        return;
    };
    let c = &ev.manager.counters;
    let rules = group.lock().rules.len() as u64;
    c.evaluations.fetch_add(rules, Ordering::Relaxed);
    c.failures.fetch_add(out.failures, Ordering::Relaxed);
    write_samples(ev, ts, out.samples).await;
    if !out.alerts.is_empty() {
        let url = settings.external_url.trim_end_matches('/').to_string();
        ev.notifier
            .send(out.alerts.iter().map(|(expr, a)| am_alert(&url, expr, a)).collect());
    }
}

async fn write_samples(ev: &Evaluator, ts: i64, samples: Vec<(LabelMap, f64)>) {
    if samples.is_empty() {
        return;
    }
    let series = samples
        .into_iter()
        .map(|(l, v)| SeriesSamples {
            labels: Labels::from_pairs(l),
            samples: vec![(ts, v)],
        })
        .collect();
    let req = AppendRequest {
        series,
        metadata: Vec::new(),
    };
    match crate::cluster::routing::write(&ev.router, req).await {
        Ok(r) if r.rejected() > 0 => {
            // A new leader re-evaluating a grid point the old one wrote
            // with other data gets "duplicate timestamp": harmless.
            tracing::debug!(rejected = r.rejected(), first = ?r.first_error, "rule samples rejected");
        }
        Ok(_) => {}
        Err(e) => {
            ev.manager.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "rule results not written");
        }
    }
}

/// An alert as Alertmanager takes it: `startsAt` when it fired, `endsAt`
/// when it was resolved or, while firing, when it expires unless resent.
pub fn am_alert(external_url: &str, expr: &str, a: &Alert) -> AmAlert {
    let starts = a.fired_at_ms.unwrap_or(a.active_at_ms);
    let ends = a.resolved_at_ms.unwrap_or(a.valid_until_ms);
    let q: String = url_encode(expr);
    AmAlert {
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        starts_at: rfc3339_ms(starts),
        ends_at: rfc3339_ms(ends),
        generator_url: format!("{external_url}/graph?g0.expr={q}&g0.tab=1"),
    }
}

/// Query-string encoding as Go's `url.QueryEscape`.
fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}
