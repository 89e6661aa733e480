//! A rule group: its rules in order, its evaluation grid, and one
//! evaluation of all its rules (recording rules' series, alerting rules'
//! `ALERTS` series, stale markers for series that ended, and the alerts
//! to notify).
//!
//! Pure apart from the [`Querier`] it is handed: it never writes (the
//! caller sends [`GroupOutput::samples`] through the log) and never reads
//! a clock (the caller passes the evaluation time).

use std::collections::{BTreeMap, BTreeSet};

use super::alerting::{Alert, AlertingRule, EvalContext, LabelMap, OutSample};
use super::file::GroupDef;
use super::template::{TemplateData, TemplateQuery};

/// How a group's rules read the replica.
pub trait Querier {
    /// The value of `expr` at `ts_ms` as an instant vector (a scalar is
    /// one sample with no labels).
    fn query(&self, expr: &str, ts_ms: i64) -> Result<Vec<(LabelMap, f64)>, String>;
    /// `activeAt` (ms) of the alerts of `alertname` as its
    /// `ALERTS_FOR_STATE` series last recorded them before `ts_ms`.
    fn for_state(&self, alertname: &str, ts_ms: i64) -> Result<BTreeMap<LabelMap, i64>, String>;
    /// The `query` template function at `ts_ms`.
    fn template_query(&self, ts_ms: i64) -> Option<TemplateQuery>;
}

/// A rule's health, as `/api/v1/rules` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleHealth {
    /// The last evaluation's error; `None` when it succeeded.
    pub last_error: Option<String>,
    /// When it was last evaluated (ms); `None`: never (health "unknown").
    pub last_eval_ms: Option<i64>,
    /// How long its last evaluation took, seconds.
    pub eval_seconds: f64,
}

impl RuleHealth {
    /// `ok`, `err` or `unknown`.
    pub fn health(&self) -> &'static str {
        match (&self.last_eval_ms, &self.last_error) {
            (None, _) => "unknown",
            (_, Some(_)) => "err",
            _ => "ok",
        }
    }
}

/// A recording rule.
#[derive(Debug, Clone)]
pub struct RecordingRule {
    /// The output metric name.
    pub name: String,
    /// The expression.
    pub expr: String,
    /// Labels set on every output series.
    pub labels: LabelMap,
}

/// A rule of either kind, with its health.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// `record:`
    Recording(RecordingRule),
    /// `alert:`
    Alerting(AlertingRule),
}

/// A rule and its health.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule.
    pub kind: RuleKind,
    /// How its last evaluation went.
    pub health: RuleHealth,
}

/// What one group evaluation produced.
#[derive(Debug, Clone, Default)]
pub struct GroupOutput {
    /// Samples to write at the evaluation time (stale markers included).
    pub samples: Vec<OutSample>,
    /// Alerts to notify, with the expression of their rule.
    pub alerts: Vec<(String, Alert)>,
    /// Rules whose evaluation failed.
    pub failures: u64,
}

/// What every group evaluation shares.
pub struct GroupContext<'a> {
    /// `global.external_labels` (for `$externalLabels`).
    pub external_labels: &'a LabelMap,
    /// The node's external URL (for `$externalURL`).
    pub external_url: &'a str,
    /// How often a firing alert is sent again, ms.
    pub resend_delay_ms: i64,
}

/// A group of rules with its state.
#[derive(Debug, Clone)]
pub struct Group {
    /// The file it came from.
    pub file: String,
    /// Its name.
    pub name: String,
    /// Evaluation interval, ms (at least 1).
    pub interval_ms: i64,
    /// Series / alert limit per rule (0: none).
    pub limit: usize,
    /// The rules in order.
    pub rules: Vec<Rule>,
    /// When the group was last evaluated (ms).
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took, seconds.
    pub eval_seconds: f64,
    /// Evaluations skipped because the previous one ran late.
    pub iterations_missed: u64,
    /// Evaluations done.
    pub iterations: u64,
    /// Series written by the previous evaluation (for stale markers).
    prev_series: BTreeSet<LabelMap>,
    /// Whether alert timers were restored from `ALERTS_FOR_STATE`.
    restored: bool,
}

impl Group {
    /// A fresh group (no alerts, nothing restored yet) from its definition.
    pub fn new(file: &str, def: &GroupDef, default_interval_ms: i64) -> Group {
        let ms = |d: Option<std::time::Duration>| d.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let rules = def
            .rules
            .iter()
            .map(|r| {
                let kind = match (&r.record, &r.alert) {
                    (Some(name), _) => RuleKind::Recording(RecordingRule {
                        name: name.clone(),
                        expr: r.expr.clone(),
                        labels: r.labels.clone(),
                    }),
                    (None, alert) => RuleKind::Alerting(AlertingRule::new(
                        alert.as_deref().unwrap_or(""),
                        &r.expr,
                        ms(r.for_),
                        ms(r.keep_firing_for),
                        r.labels.clone(),
                        r.annotations.clone(),
                    )),
                };
                Rule {
                    kind,
                    health: RuleHealth::default(),
                }
            })
            .collect();
        Group {
            file: file.to_string(),
            name: def.name.clone(),
            interval_ms: def.interval.map_or(default_interval_ms, |d| ms(Some(d))).max(1),
            limit: def.limit,
            rules,
            last_eval_ms: None,
            eval_seconds: 0.0,
            iterations_missed: 0,
            iterations: 0,
            prev_series: BTreeSet::new(),
            restored: false,
        }
    }

    /// Where in its interval this group evaluates: a hash of its file and
    /// name, the same on every node, so that a new leader keeps the grid.
    /// Whole seconds when the interval is, so that `ALERTS_FOR_STATE`
    /// (whole seconds) holds `activeAt` exactly.
    pub fn offset_ms(&self) -> i64 {
        let h = xxhash_rust::xxh3::xxh3_64(format!("{}\u{ff}{}", self.file, self.name).as_bytes());
        let modulo = |m: i64| i64::try_from(h % m.max(1).unsigned_abs()).unwrap_or(0);
        if self.interval_ms % 1000 == 0 {
            modulo(self.interval_ms / 1000) * 1000
        } else {
            modulo(self.interval_ms)
        }
    }

    /// The latest evaluation time on the grid at or before `now_ms`.
    pub fn eval_ts(&self, now_ms: i64) -> i64 {
        let off = self.offset_ms();
        let adj = now_ms - off;
        adj - adj.rem_euclid(self.interval_ms) + off
    }

    /// Evaluates every rule at `ts_ms`. The first evaluation of a fresh
    /// group restores alert timers from `ALERTS_FOR_STATE`.
    pub fn evaluate(&mut self, ts_ms: i64, q: &dyn Querier, cx: &GroupContext<'_>) -> GroupOutput {
        let started = std::time::Instant::now();
        let mut out = GroupOutput::default();
        let tq = q.template_query(ts_ms);
        let expand = |t: &str, d: &TemplateData<'_>| -> String {
            let d = TemplateData {
                external_url: cx.external_url,
                ..d.clone()
            };
            super::template::expand(t, &d, tq.clone()).unwrap_or_else(|e| format!("<error expanding template: {e}>"))
        };
        let restore = !self.restored;
        for rule in &mut self.rules {
            let rule_started = std::time::Instant::now();
            let res = match &mut rule.kind {
                RuleKind::Recording(r) => q.query(&r.expr, ts_ms).and_then(|v| record(r, v, self.limit)),
                RuleKind::Alerting(a) => {
                    let res = eval_alerting(a, ts_ms, q, restore, &expand, cx, self.interval_ms, self.limit);
                    let sent = a.alerts_to_send(ts_ms, cx.resend_delay_ms, self.interval_ms);
                    out.alerts.extend(sent.into_iter().map(|al| (a.expr.clone(), al)));
                    res
                }
            };
            rule.health.last_eval_ms = Some(ts_ms);
            rule.health.eval_seconds = rule_started.elapsed().as_secs_f64();
            match res {
                Ok(samples) => {
                    rule.health.last_error = None;
                    out.samples.extend(samples);
                }
                Err(e) => {
                    out.failures += 1;
                    rule.health.last_error = Some(e);
                }
            }
        }
        self.restored = true;
        self.finish(ts_ms, &mut out, started);
        out
    }

    /// Stale markers for the series the previous evaluation wrote and this
    /// one did not, and the group's own bookkeeping.
    fn finish(&mut self, ts_ms: i64, out: &mut GroupOutput, started: std::time::Instant) {
        let now: BTreeSet<LabelMap> = out.samples.iter().map(|(l, _)| l.clone()).collect();
        let stale = crate::promql::storage::stale_marker();
        out.samples
            .extend(self.prev_series.difference(&now).map(|l| (l.clone(), stale)));
        self.prev_series = now;
        self.last_eval_ms = Some(ts_ms);
        self.eval_seconds = started.elapsed().as_secs_f64();
        self.iterations += 1;
    }
}

#[allow(clippy::too_many_arguments)]
fn eval_alerting(
    a: &mut AlertingRule,
    ts_ms: i64,
    q: &dyn Querier,
    restore: bool,
    expand: &dyn Fn(&str, &TemplateData<'_>) -> String,
    cx: &GroupContext<'_>,
    interval_ms: i64,
    limit: usize,
) -> Result<Vec<OutSample>, String> {
    let result = q.query(&a.expr, ts_ms)?;
    // Only rules with a timer have anything to restore (`for` or
    // `keep_firing_for`); a failed read restores nothing, as in Prometheus.
    let restored = if restore && (a.hold_ms > 0 || a.keep_firing_for_ms > 0) {
        q.for_state(&a.name, ts_ms).unwrap_or_else(|e| {
            tracing::warn!(alert = %a.name, error = %e, "could not restore alert state from ALERTS_FOR_STATE");
            BTreeMap::new()
        })
    } else {
        BTreeMap::new()
    };
    let ecx = EvalContext {
        ts_ms,
        interval_ms,
        expand,
        external_labels: cx.external_labels,
        restore: restore.then_some(&restored),
        limit,
    };
    a.eval(&result, &ecx)
}

/// A recording rule's output: the result relabelled with the record name
/// and the rule's labels.
fn record(r: &RecordingRule, result: Vec<(LabelMap, f64)>, limit: usize) -> Result<Vec<OutSample>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(result.len());
    for (mut labels, v) in result {
        labels.insert("__name__".into(), r.name.clone());
        for (k, val) in &r.labels {
            if val.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), val.clone());
            }
        }
        if !seen.insert(labels.clone()) {
            return Err("vector contains metrics with the same labelset after applying rule labels".into());
        }
        out.push((labels, v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!("exceeded limit {limit} with {} series", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::RuleFile;

    /// A querier over a fixed answer per expression.
    struct Fixed(BTreeMap<String, Vec<(LabelMap, f64)>>);

    impl Querier for Fixed {
        fn query(&self, expr: &str, _ts_ms: i64) -> Result<Vec<(LabelMap, f64)>, String> {
            self.0.get(expr).cloned().ok_or_else(|| format!("no answer for {expr}"))
        }
        fn for_state(&self, _alertname: &str, _ts_ms: i64) -> Result<BTreeMap<LabelMap, i64>, String> {
            Ok(BTreeMap::new())
        }
        fn template_query(&self, _ts_ms: i64) -> Option<TemplateQuery> {
            None
        }
    }

    fn lm(pairs: &[(&str, &str)]) -> LabelMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn group(text: &str) -> Group {
        let f = RuleFile::parse("rules.yml", text).expect("valid rules");
        Group::new("rules.yml", &f.groups[0], 60_000)
    }

    const CX: GroupContext<'static> = GroupContext {
        external_labels: &BTreeMap::new(),
        external_url: "",
        resend_delay_ms: 60_000,
    };

    #[test]
    fn recording_rules_relabel_and_stale_markers_end_vanished_series() {
        let mut g = group("groups: [{name: g, rules: [{record: 'job:x:sum', expr: x, labels: {team: a}}]}]");
        let two = vec![(lm(&[("job", "a")]), 1.0), (lm(&[("job", "b")]), 2.0)];
        let q = Fixed(BTreeMap::from([("x".to_string(), two)]));
        let out = g.evaluate(60_000, &q, &CX);
        assert_eq!(out.samples.len(), 2);
        assert_eq!(
            out.samples[0].0,
            lm(&[("__name__", "job:x:sum"), ("job", "a"), ("team", "a")])
        );
        let q = Fixed(BTreeMap::from([("x".to_string(), vec![(lm(&[("job", "a")]), 3.0)])]));
        let out = g.evaluate(120_000, &q, &CX);
        assert_eq!(out.samples.len(), 2, "one value and one stale marker");
        let stale = out
            .samples
            .iter()
            .find(|(l, _)| l["job"] == "b")
            .expect("marker for job b");
        assert!(crate::promql::storage::is_stale_marker(stale.1));
        assert_eq!(g.rules[0].health.health(), "ok");
    }

    #[test]
    fn a_failing_rule_is_reported_and_the_others_still_run() {
        let mut g = group("groups: [{name: g, rules: [{record: a, expr: missing}, {record: b, expr: x}]}]");
        let q = Fixed(BTreeMap::from([("x".to_string(), vec![(lm(&[]), 1.0)])]));
        let out = g.evaluate(0, &q, &CX);
        assert_eq!(out.failures, 1);
        assert_eq!(g.rules[0].health.health(), "err");
        assert_eq!(out.samples, vec![(lm(&[("__name__", "b")]), 1.0)]);
    }

    #[test]
    fn the_grid_is_the_same_for_every_node_and_whole_seconds() {
        let g = group("groups: [{name: g, interval: 15s, rules: []}]");
        let off = g.offset_ms();
        assert!((0..15_000).contains(&off) && off % 1000 == 0, "offset {off}");
        for now in [0, 1, 14_999, 15_000, 1_700_000_123_456] {
            let ts = g.eval_ts(now);
            assert!(ts <= now && now - ts < 15_000, "{ts} for {now}");
            assert_eq!((ts - off).rem_euclid(15_000), 0);
        }
        assert_eq!(group("groups: [{name: g, interval: 15s, rules: []}]").offset_ms(), off);
    }

    #[test]
    fn alerts_to_notify_carry_their_expression() {
        let mut g = group("groups: [{name: g, rules: [{alert: A, expr: 'up == 0'}]}]");
        let q = Fixed(BTreeMap::from([(
            "up == 0".to_string(),
            vec![(lm(&[("job", "a")]), 0.0)],
        )]));
        let out = g.evaluate(0, &q, &CX);
        assert_eq!(out.alerts.len(), 1);
        assert_eq!(out.alerts[0].0, "up == 0");
        assert_eq!(out.alerts[0].1.labels, lm(&[("alertname", "A"), ("job", "a")]));
    }
}
