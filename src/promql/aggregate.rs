//! Aggregation operators: `sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `quantile`, `count_values`, `topk`, `bottomk`,
//! `limitk`, `limit_ratio`, with `by` / `without`.
//!
//! Group membership depends only on labels, so it is computed once per
//! input series; each step then folds values into per-group accumulators
//! that are reused across steps.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::engine::{Eval, Evaluator};
use super::rangefn::{fmt_go, kahan_inc, quantile, MeanAcc, VarAcc};
use super::value::{Grid, StepSeries};
use super::QueryError;
use crate::tsdb::labels::{is_valid_label_name, Labels, METRIC_NAME};

/// Evaluates an aggregation over the grid.
pub(crate) fn eval_aggregate(ev: &mut Evaluator<'_>, a: &AggregateExpr, grid: &Grid) -> Result<Eval, QueryError> {
    let op = a.op.id();
    let mut param_scalar: Option<Vec<f64>> = None;
    let mut param_string: Option<String> = None;
    if let Some(p) = &a.param {
        match ev.eval(p, grid)? {
            Eval::Scalar(v) => param_scalar = Some(v),
            Eval::String(s) => param_string = Some(s),
            _ => {
                return Err(QueryError::BadData(
                    "aggregation parameter must be a scalar or a string".into(),
                ))
            }
        }
    }
    let series = ev.eval_vector(&a.expr, grid)?;
    let (keys, key_has_name) = group_keys(&series, a.modifier.as_ref());
    // Dense group ids, in order of first appearance.
    let mut ids: HashMap<&Labels, usize> = HashMap::new();
    let mut group_labels: Vec<Labels> = Vec::new();
    let mut gid: Vec<usize> = Vec::with_capacity(series.len());
    for k in &keys {
        let id = *ids.entry(k).or_insert_with(|| {
            group_labels.push(k.clone());
            group_labels.len() - 1
        });
        gid.push(id);
    }
    let groups = group_labels.len();
    let n = grid.n;
    match op {
        token::T_TOPK | token::T_BOTTOMK | token::T_LIMITK | token::T_LIMIT_RATIO => {
            let param = param_scalar.unwrap_or_else(|| vec![f64::NAN; n]);
            select_k(ev, op, &param, series, &gid, groups, n)
        }
        token::T_COUNT_VALUES => {
            let label = param_string.ok_or_else(|| QueryError::BadData("count_values needs a label name".into()))?;
            if !is_valid_label_name(&label) {
                return Err(QueryError::BadData(format!("invalid label name {label:?}")));
            }
            count_values(&label, &series, &gid, &group_labels, n)
        }
        _ => {
            if op == token::T_QUANTILE {
                if let Some(q) = param_scalar
                    .as_ref()
                    .and_then(|p| p.iter().find(|q| !(0.0..=1.0).contains(*q)))
                {
                    let pos = ev.position("quantile", Some(0));
                    ev.warn(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
                        fmt_go(*q)
                    ));
                }
            }
            let mut out: Vec<StepSeries> = group_labels
                .iter()
                .map(|l| StepSeries::empty(l.clone(), false, n))
                .collect();
            if key_has_name {
                // `by (__name__)` keeps the name only if no member had it marked for removal.
                for (s, &g) in series.iter().zip(&gid) {
                    out[g].drop_name |= s.drop_name;
                }
            }
            fold(op, param_scalar.as_deref(), &series, &gid, &mut out, n)?;
            out.retain(StepSeries::has_any);
            Ok(Eval::Vector(out))
        }
    }
}

/// Group key of each series; also whether keys may contain `__name__`.
fn group_keys(series: &[StepSeries], modifier: Option<&LabelModifier>) -> (Vec<Labels>, bool) {
    match modifier {
        None => (vec![Labels::empty(); series.len()], false),
        Some(LabelModifier::Include(names)) => {
            let names = &names.labels;
            (
                series.iter().map(|s| s.labels.keep_only(names)).collect(),
                names.iter().any(|n| n == METRIC_NAME),
            )
        }
        Some(LabelModifier::Exclude(names)) => {
            let names = &names.labels;
            let keys = series
                .iter()
                .map(|s| {
                    let mut l = s.labels.drop_names(names);
                    l.remove(METRIC_NAME);
                    l
                })
                .collect();
            (keys, false)
        }
    }
}

/// Per-group running state for the folding aggregations.
#[derive(Clone, Copy, Default)]
struct Acc {
    count: f64,
    value: f64,
    comp: f64,
    mean: MeanAcc,
    var: VarAcc,
}

/// Folds every step's values into per-group results for the operators whose
/// result is one number per group.
fn fold(
    op: u16,
    param: Option<&[f64]>,
    series: &[StepSeries],
    gid: &[usize],
    out: &mut [StepSeries],
    n: usize,
) -> Result<(), QueryError> {
    let groups = out.len();
    let mut acc = vec![Acc::default(); groups];
    let mut qbuf: Vec<Vec<f64>> = if op == token::T_QUANTILE {
        vec![Vec::new(); groups]
    } else {
        Vec::new()
    };
    for i in 0..n {
        for a in acc.iter_mut() {
            *a = Acc::default();
        }
        for b in qbuf.iter_mut() {
            b.clear();
        }
        for (s, &g) in series.iter().zip(gid) {
            let Some(v) = s.vals[i] else { continue };
            let a = &mut acc[g];
            a.count += 1.0;
            match op {
                token::T_SUM => (a.value, a.comp) = kahan_inc(v, a.value, a.comp),
                token::T_AVG => a.mean.push(v),
                token::T_MAX if a.count == 1.0 || a.value < v || a.value.is_nan() => a.value = v,
                token::T_MIN if a.count == 1.0 || a.value > v || a.value.is_nan() => a.value = v,
                token::T_STDDEV | token::T_STDVAR => a.var.push(v),
                token::T_QUANTILE => qbuf[g].push(v),
                _ => {}
            }
        }
        for (g, a) in acc.iter().enumerate() {
            if a.count == 0.0 {
                continue;
            }
            let v = match op {
                token::T_SUM => {
                    if a.value.is_infinite() {
                        a.value
                    } else {
                        a.value + a.comp
                    }
                }
                token::T_AVG => a.mean.result(),
                token::T_MAX | token::T_MIN => a.value,
                token::T_COUNT => a.count,
                token::T_GROUP => 1.0,
                token::T_STDVAR => a.var.result(),
                token::T_STDDEV => a.var.result().sqrt(),
                token::T_QUANTILE => quantile(param.map(|p| p[i]).unwrap_or(f64::NAN), &mut qbuf[g]),
                _ => return Err(QueryError::BadData(format!("unsupported aggregation operator {op}"))),
            };
            out[g].vals[i] = Some(v);
        }
    }
    Ok(())
}

/// `topk`, `bottomk`, `limitk` and `limit_ratio`: keep whole input series
/// at the steps where they are selected. For an instant query the output
/// order is the selection order (`expect ordered` and the API rely on it).
fn select_k(
    ev: &mut Evaluator<'_>,
    op: u16,
    param: &[f64],
    series: Vec<StepSeries>,
    gid: &[usize],
    groups: usize,
    n: usize,
) -> Result<Eval, QueryError> {
    if param.iter().any(|p| p.is_nan()) {
        let what = if op == token::T_LIMIT_RATIO {
            "Ratio"
        } else {
            "Parameter"
        };
        return Err(QueryError::Execution(format!("{what} value is NaN")));
    }
    let mut sel = Selection::new(series.len(), n);
    if op == token::T_LIMIT_RATIO {
        if param.iter().any(|r| !(-1.0..=1.0).contains(r)) {
            ev.warn("PromQL warning: ratio value should be between -1 and 1".into());
        }
        select_by_ratio(&mut sel, param, &series);
    } else {
        select_by_rank(ev, &mut sel, op, param, &series, gid, groups)?;
    }
    let mut series: Vec<Option<StepSeries>> = series.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(sel.order.len());
    for si in sel.order {
        if let Some(mut s) = series[si].take() {
            s.vals = std::mem::take(&mut sel.vals[si]);
            out.push(s);
        }
    }
    Ok(Eval::Vector(out))
}

/// The values `select_k` keeps, per input series, and the order in which
/// series were first selected.
struct Selection {
    /// Per input series: empty until selected at some step, then one slot per step.
    vals: Vec<Vec<Option<f64>>>,
    order: Vec<usize>,
    steps: usize,
}

impl Selection {
    fn new(series: usize, steps: usize) -> Selection {
        Selection {
            vals: vec![Vec::new(); series],
            order: Vec::new(),
            steps,
        }
    }

    /// Keeps value `v` of series `si` at step `i`.
    fn keep(&mut self, si: usize, i: usize, v: f64) {
        if self.vals[si].is_empty() {
            self.vals[si] = vec![None; self.steps];
            self.order.push(si);
        }
        self.vals[si][i] = Some(v);
    }
}

/// `limit_ratio`: a series is kept where its label hash falls inside the
/// ratio (from the bottom for a positive ratio, from the top for a negative).
fn select_by_ratio(sel: &mut Selection, param: &[f64], series: &[StepSeries]) {
    for (si, s) in series.iter().enumerate() {
        let h = s.labels.stable_hash() as f64 / u64::MAX as f64;
        for (i, v) in s.vals.iter().enumerate() {
            let Some(v) = *v else { continue };
            let r = param[i].clamp(-1.0, 1.0);
            if (r >= 0.0 && h < r) || (r < 0.0 && h >= 1.0 + r) {
                sel.keep(si, i, v);
            }
        }
    }
}

/// `topk`, `bottomk` and `limitk`: at each step, the first k series of each
/// group in rank order (input order for `limitk`).
fn select_by_rank(
    ev: &mut Evaluator<'_>,
    sel: &mut Selection,
    op: u16,
    param: &[f64],
    series: &[StepSeries],
    gid: &[usize],
    groups: usize,
) -> Result<(), QueryError> {
    let mut cand: Vec<Vec<(usize, f64)>> = vec![Vec::new(); groups];
    for (i, &k) in param.iter().enumerate().take(sel.steps) {
        if i % 256 == 0 {
            ev.check_timeout()?;
        }
        if k < 1.0 {
            continue;
        }
        let k = if k >= series.len() as f64 {
            series.len()
        } else {
            k as usize
        };
        for c in cand.iter_mut() {
            c.clear();
        }
        for (si, s) in series.iter().enumerate() {
            if let Some(v) = s.vals[i] {
                cand[gid[si]].push((si, v));
            }
        }
        for c in cand.iter_mut() {
            match op {
                // NaN ranks below everything for topk and above for bottomk.
                token::T_TOPK => c.sort_by(|a, b| cmp_nan_low(b.1, a.1)),
                token::T_BOTTOMK => c.sort_by(|a, b| cmp_nan_high(a.1, b.1)),
                _ => {}
            }
            for &(si, v) in c.iter().take(k) {
                sel.keep(si, i, v);
            }
        }
    }
    Ok(())
}

/// Ascending order with NaN below every number.
fn cmp_nan_low(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Less,
        (false, true) => Greater,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// Ascending order with NaN above every number.
fn cmp_nan_high(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// `count_values`: one output series per group and distinct value.
fn count_values(
    label: &str,
    series: &[StepSeries],
    gid: &[usize],
    group_labels: &[Labels],
    n: usize,
) -> Result<Eval, QueryError> {
    let mut index: HashMap<(usize, String), usize> = HashMap::new();
    let mut out: Vec<StepSeries> = Vec::new();
    for i in 0..n {
        for (s, &g) in series.iter().zip(gid) {
            let Some(v) = s.vals[i] else { continue };
            let text = format_value_plain(v);
            let idx = *index.entry((g, text.clone())).or_insert_with(|| {
                let mut l = group_labels[g].clone();
                l.set(label, &text);
                out.push(StepSeries::empty(l, false, n));
                out.len() - 1
            });
            let slot = &mut out[idx].vals[i];
            *slot = Some(slot.unwrap_or(0.0) + 1.0);
        }
    }
    Ok(Eval::Vector(out))
}

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest
/// round-trip digits, never an exponent.
pub(crate) fn format_value_plain(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_has_no_exponent() {
        assert_eq!(format_value_plain(1e21), "1000000000000000000000");
        assert_eq!(format_value_plain(0.1), "0.1");
        assert_eq!(format_value_plain(f64::INFINITY), "+Inf");
    }

    #[test]
    fn nan_ordering_for_topk_and_bottomk() {
        let mut v = [1.0, f64::NAN, 3.0];
        v.sort_by(|a, b| cmp_nan_low(*b, *a));
        assert_eq!(v[0], 3.0);
        assert!(v[2].is_nan());
        let mut v = [1.0, f64::NAN, 3.0];
        v.sort_by(|a, b| cmp_nan_high(*a, *b));
        assert_eq!(v[0], 1.0);
        assert!(v[2].is_nan());
    }
}
