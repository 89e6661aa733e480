//! One alerting rule's state machine: inactive -> pending -> firing, with
//! `for`, `keep_firing_for`, resolved alerts kept for resending, and the
//! `ALERTS` / `ALERTS_FOR_STATE` series it writes.
//!
//! Pure: it takes the query result of one evaluation and the evaluation
//! time, and returns the series to write; it never queries, writes or
//! reads a clock. Transitions follow Prometheus's `AlertingRule.Eval`.

use std::collections::BTreeMap;

use super::template::TemplateData;

/// Label and value map of an alert (sorted, `__name__` never in it).
pub type LabelMap = BTreeMap<String, String>;

/// How long a resolved alert is kept and resent, as Prometheus does
/// (`resolvedRetention`), so Alertmanager hears of the resolution even if
/// a send fails.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// The metric name of the alert series.
pub const ALERTS_METRIC: &str = "ALERTS";
/// The metric name of the series that carries `activeAt`.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Not active (resolved, kept for resending).
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for `for` or longer.
    Firing,
}

impl AlertState {
    /// Prometheus's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Labels: the result's, then the rule's (templated), then `alertname`.
    pub labels: LabelMap,
    /// Annotations, templated.
    pub annotations: LabelMap,
    /// Its state.
    pub state: AlertState,
    /// The value at the last evaluation that returned it.
    pub value: f64,
    /// When it became active (ms since the epoch).
    pub active_at_ms: i64,
    /// When it started firing.
    pub fired_at_ms: Option<i64>,
    /// When it was resolved.
    pub resolved_at_ms: Option<i64>,
    /// When it was last handed to the notifier.
    pub last_sent_at_ms: Option<i64>,
    /// `endsAt` sent for a firing alert: Alertmanager resolves it by
    /// itself after that unless it is sent again.
    pub valid_until_ms: i64,
    /// Since when it is firing only because of `keep_firing_for`.
    pub keep_firing_since_ms: Option<i64>,
}

/// An alerting rule and its alerts.
#[derive(Debug, Clone)]
pub struct AlertingRule {
    /// The alert name.
    pub name: String,
    /// The expression.
    pub expr: String,
    /// `for`, ms.
    pub hold_ms: i64,
    /// `keep_firing_for`, ms.
    pub keep_firing_for_ms: i64,
    /// Rule labels (templates).
    pub labels: LabelMap,
    /// Rule annotations (templates).
    pub annotations: LabelMap,
    /// Active and recently resolved alerts by label set.
    pub active: BTreeMap<LabelMap, Alert>,
}

/// What one evaluation needs besides the query result.
pub struct EvalContext<'a> {
    /// Evaluation time, ms.
    pub ts_ms: i64,
    /// The group's interval, ms (to place `startsAt` on the grid).
    pub interval_ms: i64,
    /// Expands a template for one alert (errors are written into the text).
    pub expand: &'a dyn Fn(&str, &TemplateData<'_>) -> String,
    /// `global.external_labels`.
    pub external_labels: &'a LabelMap,
    /// `activeAt` (ms) by alert labels, read back from `ALERTS_FOR_STATE`
    /// at the first evaluation of a new evaluator; `None` afterwards.
    pub restore: Option<&'a BTreeMap<LabelMap, i64>>,
    /// The group's `limit` (0: none).
    pub limit: usize,
}

/// One output sample: full labels (with `__name__`) and value.
pub type OutSample = (LabelMap, f64);

impl AlertingRule {
    /// A rule with no alerts yet.
    pub fn new(
        name: &str,
        expr: &str,
        hold_ms: i64,
        keep_firing_for_ms: i64,
        labels: LabelMap,
        annotations: LabelMap,
    ) -> Self {
        AlertingRule {
            name: name.to_string(),
            expr: expr.to_string(),
            hold_ms,
            keep_firing_for_ms,
            labels,
            annotations,
            active: BTreeMap::new(),
        }
    }

    /// The alerts of this evaluation's result, keyed by label set
    /// (templates expanded); an error if two results share a label set.
    fn result_alerts(
        &self,
        result: &[(LabelMap, f64)],
        cx: &EvalContext<'_>,
    ) -> Result<BTreeMap<LabelMap, Alert>, String> {
        let mut out = BTreeMap::new();
        for (metric, v) in result {
            let mut base = metric.clone();
            base.remove("__name__");
            let data = TemplateData {
                labels: &base,
                value: *v,
                external_labels: cx.external_labels,
                external_url: "",
            };
            let mut labels = base.clone();
            for (k, t) in &self.labels {
                let val = (cx.expand)(t, &data);
                if val.is_empty() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), val);
                }
            }
            labels.insert("alertname".to_string(), self.name.clone());
            let annotations = self
                .annotations
                .iter()
                .map(|(k, t)| (k.clone(), (cx.expand)(t, &data)))
                .collect();
            if out.contains_key(&labels) {
                return Err("vector contains metrics with the same labelset after applying alert labels".into());
            }
            let alert = Alert {
                labels: labels.clone(),
                annotations,
                state: AlertState::Pending,
                value: *v,
                active_at_ms: cx.ts_ms,
                fired_at_ms: None,
                resolved_at_ms: None,
                last_sent_at_ms: None,
                valid_until_ms: 0,
                keep_firing_since_ms: None,
            };
            out.insert(labels, alert);
        }
        Ok(out)
    }

    /// One evaluation: `result` is the expression's value at `cx.ts_ms`.
    /// Returns the `ALERTS` and `ALERTS_FOR_STATE` samples to write, or
    /// an error (duplicate label sets, `limit` exceeded: then the rule has
    /// no alerts, as in Prometheus).
    pub fn eval(&mut self, result: &[(LabelMap, f64)], cx: &EvalContext<'_>) -> Result<Vec<OutSample>, String> {
        let ts = cx.ts_ms;
        let fresh = match self.result_alerts(result, cx) {
            Ok(f) => f,
            Err(e) => {
                self.active.clear();
                return Err(e);
            }
        };
        for (k, mut a) in fresh.clone() {
            match self.active.get_mut(&k) {
                Some(old) if old.state != AlertState::Inactive => {
                    old.value = a.value;
                    old.annotations = a.annotations;
                }
                _ => {
                    if let Some(at) = cx.restore.and_then(|r| r.get(&k)) {
                        // A new evaluator picks up the previous one's timer.
                        a.active_at_ms = (*at).min(ts);
                    }
                    self.active.insert(k, a);
                }
            }
        }
        let mut out = Vec::new();
        let mut active_count = 0usize;
        let keys: Vec<LabelMap> = self.active.keys().cloned().collect();
        for k in keys {
            let Some(a) = self.active.get_mut(&k) else { continue };
            if !fresh.contains_key(&k) {
                let keep_firing = a.state == AlertState::Firing
                    && self.keep_firing_for_ms > 0
                    && ts - *a.keep_firing_since_ms.get_or_insert(ts) < self.keep_firing_for_ms;
                if a.state == AlertState::Pending || a.resolved_at_ms.is_some_and(|r| ts - r > RESOLVED_RETENTION_MS) {
                    self.active.remove(&k);
                    continue;
                }
                if !keep_firing {
                    if a.state != AlertState::Inactive {
                        a.state = AlertState::Inactive;
                        a.resolved_at_ms = Some(ts);
                    }
                    continue;
                }
            } else {
                a.keep_firing_since_ms = None;
            }
            active_count += 1;
            if a.state == AlertState::Pending && ts - a.active_at_ms >= self.hold_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(fired_at(a.active_at_ms, self.hold_ms, cx.interval_ms, ts));
            }
            out.extend(series_of(a));
        }
        if cx.limit > 0 && active_count > cx.limit {
            self.active.clear();
            return Err(format!("exceeded limit of {} with {active_count} alerts", cx.limit));
        }
        Ok(out)
    }

    /// The alerts to hand to the notifier now: firing ones not sent for
    /// `resend_delay_ms`, and ones resolved since their last send. Marks
    /// them sent and sets their `endsAt` (`valid_until_ms`) to four resend
    /// periods, so that two failed evaluations or sends do not resolve them.
    pub fn alerts_to_send(&mut self, ts_ms: i64, resend_delay_ms: i64, interval_ms: i64) -> Vec<Alert> {
        let delta = resend_delay_ms.max(interval_ms);
        let mut out = Vec::new();
        for a in self.active.values_mut() {
            if !needs_sending(a, ts_ms, resend_delay_ms) {
                continue;
            }
            a.last_sent_at_ms = Some(ts_ms);
            a.valid_until_ms = ts_ms + 4 * delta;
            out.push(a.clone());
        }
        out
    }

    /// The rule's state: the highest of its alerts'.
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }
}

fn needs_sending(a: &Alert, ts_ms: i64, resend_delay_ms: i64) -> bool {
    if a.state == AlertState::Pending {
        return false;
    }
    match (a.resolved_at_ms, a.last_sent_at_ms) {
        (Some(r), Some(s)) if r > s => true,
        (_, None) => true,
        (_, Some(s)) => s + resend_delay_ms < ts_ms,
    }
}

/// When an alert active since `active_at_ms` fired: the first evaluation
/// on the group's grid at least `hold_ms` later. Computed from `activeAt`
/// rather than taken from the clock, so that an evaluator that restored
/// `activeAt` after a failover sends the `startsAt` the previous one sent.
pub fn fired_at(active_at_ms: i64, hold_ms: i64, interval_ms: i64, ts_ms: i64) -> i64 {
    if interval_ms <= 0 || hold_ms <= 0 {
        return active_at_ms.min(ts_ms);
    }
    let steps = (hold_ms + interval_ms - 1) / interval_ms;
    (active_at_ms + steps * interval_ms).min(ts_ms)
}

/// `ALERTS{...,alertstate}` = 1 and `ALERTS_FOR_STATE{...}` = activeAt in
/// whole seconds, for a pending or firing alert.
fn series_of(a: &Alert) -> [OutSample; 2] {
    let mut alerts = a.labels.clone();
    alerts.insert("__name__".into(), ALERTS_METRIC.into());
    alerts.insert("alertstate".into(), a.state.as_str().into());
    let mut for_state = a.labels.clone();
    for_state.insert("__name__".into(), ALERTS_FOR_STATE_METRIC.into());
    [(alerts, 1.0), (for_state, (a.active_at_ms / 1000) as f64)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STEP: i64 = 10_000;

    fn expand(t: &str, d: &TemplateData<'_>) -> String {
        super::super::template::expand(t, d, None).unwrap_or_else(|e| e)
    }

    fn cx<'a>(ts: i64, restore: Option<&'a BTreeMap<LabelMap, i64>>, ext: &'a LabelMap) -> EvalContext<'a> {
        EvalContext {
            ts_ms: ts,
            interval_ms: STEP,
            expand: &expand,
            external_labels: ext,
            restore,
            limit: 0,
        }
    }

    fn result(on: bool) -> Vec<(LabelMap, f64)> {
        if on {
            vec![(
                LabelMap::from([("__name__".into(), "up".into()), ("job".into(), "a".into())]),
                0.0,
            )]
        } else {
            vec![]
        }
    }

    fn rule(hold_steps: i64, keep_steps: i64) -> AlertingRule {
        AlertingRule::new(
            "Down",
            "up == 0",
            hold_steps * STEP,
            keep_steps * STEP,
            LabelMap::from([("severity".into(), "page".into())]),
            LabelMap::from([("summary".into(), "{{ $labels.job }} is down".into())]),
        )
    }

    /// The model: the state after each step, written as the plain rules
    /// of the documentation (pending while the condition held for less
    /// than `for`, firing after, kept firing for `keep_firing_for`).
    fn model(conds: &[bool], hold_steps: usize, keep_steps: usize) -> Vec<AlertState> {
        #[derive(Clone, Copy)]
        enum M {
            Off,
            Pending(usize),
            Firing(Option<usize>),
        }
        let mut m = M::Off;
        let mut out = Vec::new();
        for (i, c) in conds.iter().enumerate() {
            m = match (m, c) {
                (M::Off, true) => M::Pending(i),
                (M::Pending(s), true) => M::Pending(s),
                (M::Firing(_), true) => M::Firing(None),
                (M::Off | M::Pending(_), false) => M::Off,
                (M::Firing(None), false) if keep_steps > 0 => M::Firing(Some(i)),
                (M::Firing(Some(o)), false) if i - o < keep_steps => M::Firing(Some(o)),
                (M::Firing(_), false) => M::Off,
            };
            if let M::Pending(s) = m {
                if i - s >= hold_steps {
                    m = M::Firing(None);
                }
            }
            out.push(match m {
                M::Off => AlertState::Inactive,
                M::Pending(_) => AlertState::Pending,
                M::Firing(_) => AlertState::Firing,
            });
        }
        out
    }

    proptest! {
        #[test]
        fn state_machine_matches_the_model(
            conds in proptest::collection::vec(any::<bool>(), 1..40),
            hold in 0usize..4,
            keep in 0usize..4,
        ) {
            let ext = LabelMap::new();
            let mut r = rule(hold as i64, keep as i64);
            let states = model(&conds, hold, keep);
            for i in 0..conds.len() {
                let out = r.eval(&result(conds[i]), &cx(i as i64 * STEP, None, &ext)).expect("eval");
                let want = states[i];
                prop_assert_eq!(r.state(), want, "step {} of {:?} (for {}, keep_firing_for {})", i, conds, hold, keep);
                let alerts_state = out.iter().find(|(l, _)| l["__name__"] == ALERTS_METRIC).map(|(l, _)| l["alertstate"].clone());
                let want_series = match want { AlertState::Inactive => None, s => Some(s.as_str().to_string()) };
                prop_assert_eq!(alerts_state, want_series);
            }
        }
    }

    #[test]
    fn labels_annotations_and_series_are_prometheus_shaped() {
        let ext = LabelMap::new();
        let mut r = rule(2, 0);
        let out = r.eval(&result(true), &cx(0, None, &ext)).expect("eval");
        let a = r.active.values().next().expect("one alert");
        assert_eq!(a.labels["alertname"], "Down");
        assert_eq!(a.labels["severity"], "page");
        assert!(!a.labels.contains_key("__name__"));
        assert_eq!(a.annotations["summary"], "a is down");
        let names: Vec<_> = out.iter().map(|(l, v)| (l["__name__"].clone(), *v)).collect();
        assert_eq!(
            names,
            vec![("ALERTS".to_string(), 1.0), ("ALERTS_FOR_STATE".to_string(), 0.0)]
        );
    }

    #[test]
    fn a_restored_alert_keeps_its_timer_and_start() {
        let ext = LabelMap::new();
        // The first evaluator saw the alert from t=100 s, for = 3 steps.
        let mut first = rule(3, 0);
        let t0 = 100_000;
        first.eval(&result(true), &cx(t0, None, &ext)).expect("eval");
        first.eval(&result(true), &cx(t0 + STEP, None, &ext)).expect("eval");
        let key = first.active.keys().next().expect("alert").clone();
        // A new evaluator starts two steps later with what the log holds.
        let restore = BTreeMap::from([(key, t0)]);
        let mut second = rule(3, 0);
        second
            .eval(&result(true), &cx(t0 + 2 * STEP, Some(&restore), &ext))
            .expect("eval");
        assert_eq!(second.state(), AlertState::Pending);
        second
            .eval(&result(true), &cx(t0 + 3 * STEP, None, &ext))
            .expect("eval");
        assert_eq!(second.state(), AlertState::Firing, "fires on the original schedule");
        let sent = second.alerts_to_send(t0 + 3 * STEP, 60_000, STEP);
        assert_eq!(sent[0].active_at_ms, t0);
        assert_eq!(sent[0].fired_at_ms, Some(t0 + 3 * STEP));
        // Restored late (missed evaluations), startsAt is still the grid point.
        let mut late = rule(3, 0);
        let restore = BTreeMap::from([(sent[0].labels.clone(), t0)]);
        late.eval(&result(true), &cx(t0 + 7 * STEP, Some(&restore), &ext))
            .expect("eval");
        assert_eq!(
            late.active.values().next().expect("alert").fired_at_ms,
            Some(t0 + 3 * STEP)
        );
    }

    #[test]
    fn resolved_alerts_are_resent_then_dropped_after_retention() {
        let ext = LabelMap::new();
        let mut r = rule(0, 0);
        r.eval(&result(true), &cx(0, None, &ext)).expect("eval");
        assert_eq!(r.alerts_to_send(0, 60_000, STEP).len(), 1, "firing at once with for 0");
        assert!(
            r.alerts_to_send(STEP, 60_000, STEP).is_empty(),
            "not resent before resend_delay"
        );
        assert_eq!(
            r.alerts_to_send(70_000, 60_000, STEP).len(),
            1,
            "resent after resend_delay"
        );
        r.eval(&result(false), &cx(80_000, None, &ext)).expect("eval");
        let sent = r.alerts_to_send(80_000, 60_000, STEP);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].resolved_at_ms, Some(80_000), "the resolution is sent at once");
        r.eval(&result(false), &cx(80_000 + RESOLVED_RETENTION_MS + 1, None, &ext))
            .expect("eval");
        assert!(r.active.is_empty(), "dropped after the resolved retention");
    }

    #[test]
    fn limit_and_duplicate_label_sets_are_errors() {
        let ext = LabelMap::new();
        let mut r = rule(0, 0);
        let two = vec![
            (LabelMap::from([("job".into(), "a".into())]), 0.0),
            (LabelMap::from([("job".into(), "b".into())]), 0.0),
        ];
        let mut c = cx(0, None, &ext);
        c.limit = 1;
        assert!(r
            .eval(&two, &c)
            .expect_err("over the limit")
            .contains("exceeded limit of 1 with 2 alerts"));
        assert!(r.active.is_empty());
        let dup = vec![
            (
                LabelMap::from([("__name__".into(), "x".into()), ("job".into(), "a".into())]),
                0.0,
            ),
            (
                LabelMap::from([("__name__".into(), "y".into()), ("job".into(), "a".into())]),
                0.0,
            ),
        ];
        assert!(r
            .eval(&dup, &cx(0, None, &ext))
            .expect_err("duplicate")
            .contains("same labelset"));
    }
}
