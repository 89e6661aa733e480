//! Range-vector functions: `rate`, `increase`, the `*_over_time` family,
//! `deriv`, `predict_linear`, and friends.
//!
//! This file owns the math over one window of raw samples and the sliding
//! of those windows across a grid. Windows are left-open `(end_ms -
//! range_ms, end_ms]`; two indices move forward through each series, so
//! every sample is visited a constant number of times however many steps
//! the query has.

use promql_parser::parser::Expr;

use super::engine::{Eval, Evaluator, RangeInput};
use super::value::{Grid, StepSeries};
use super::QueryError;
use crate::tsdb::labels::Labels;

/// One window of raw samples and what a function may read besides them.
struct Window<'a> {
    /// The samples `(t_ms, value)` in `(end_ms - range_ms, end_ms]`, in
    /// time order; never empty.
    samples: &'a [(i64, f64)],
    /// The window's end, ms since the epoch.
    end_ms: i64,
    /// The evaluation time, ms since the epoch: differs from `end_ms` under
    /// `@` and `offset`; `predict_linear` predicts from it.
    eval_t_ms: i64,
    /// The range, ms.
    range_ms: i64,
    /// The function's first and second scalar parameters at this step (NaN
    /// where the function has none).
    params: (f64, f64),
}

/// The value of one range function over one window. `buf` is scratch space
/// reused across windows, so the quantile functions allocate once per call.
type WindowFn = fn(&Window<'_>, &mut Vec<f64>) -> Option<f64>;

/// Every range-vector function but `absent_over_time` (which looks at steps,
/// not windows), by name.
static RANGE_FUNCTIONS: &[(&str, WindowFn)] = &[
    ("rate", |w, _| {
        extrapolated_rate(w.samples, w.end_ms, w.range_ms, true, true)
    }),
    ("increase", |w, _| {
        extrapolated_rate(w.samples, w.end_ms, w.range_ms, true, false)
    }),
    ("delta", |w, _| {
        extrapolated_rate(w.samples, w.end_ms, w.range_ms, false, false)
    }),
    ("irate", |w, _| instant_delta(w.samples, true)),
    ("idelta", |w, _| instant_delta(w.samples, false)),
    ("deriv", |w, _| deriv(w.samples)),
    ("predict_linear", |w, _| {
        predict_linear(w.samples, w.eval_t_ms, w.params.0)
    }),
    ("resets", |w, _| Some(resets(w.samples))),
    ("changes", |w, _| Some(changes(w.samples))),
    ("avg_over_time", |w, _| Some(avg(w.samples.iter().map(|s| s.1)))),
    ("sum_over_time", |w, _| Some(sum_over_time(w.samples))),
    ("count_over_time", |w, _| Some(w.samples.len() as f64)),
    ("present_over_time", |_, _| Some(1.0)),
    ("last_over_time", |w, _| w.samples.last().map(|s| s.1)),
    ("first_over_time", |w, _| w.samples.first().map(|s| s.1)),
    ("ts_of_last_over_time", |w, _| w.samples.last().map(|s| seconds(s.0))),
    ("ts_of_first_over_time", |w, _| w.samples.first().map(|s| seconds(s.0))),
    ("min_over_time", |w, _| extreme(w.samples, |a, b| a < b).map(|s| s.1)),
    ("ts_of_min_over_time", |w, _| {
        extreme(w.samples, |a, b| a < b).map(|s| seconds(s.0))
    }),
    ("max_over_time", |w, _| extreme(w.samples, |a, b| a > b).map(|s| s.1)),
    ("ts_of_max_over_time", |w, _| {
        extreme(w.samples, |a, b| a > b).map(|s| seconds(s.0))
    }),
    ("quantile_over_time", |w, buf| {
        buf.clear();
        buf.extend(w.samples.iter().map(|s| s.1));
        Some(quantile(w.params.0, buf))
    }),
    ("stddev_over_time", |w, _| {
        Some(variance(w.samples.iter().map(|s| s.1)).sqrt())
    }),
    ("stdvar_over_time", |w, _| Some(variance(w.samples.iter().map(|s| s.1)))),
    ("mad_over_time", |w, buf| Some(mad(w.samples, buf))),
    ("double_exponential_smoothing", |w, _| {
        double_exponential_smoothing(w.samples, w.params.0, w.params.1)
    }),
];

/// The window function of range function `name`, if it is one.
fn window_fn(name: &str) -> Option<WindowFn> {
    RANGE_FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Whether `name` is a range-vector function, evaluated by this file.
pub(crate) fn is_range_function(name: &str) -> bool {
    name == "absent_over_time" || window_fn(name).is_some()
}

/// Evaluates a range-vector function call.
pub(crate) fn eval_range_function(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    labels_for_absent: Labels,
    grid: &Grid,
) -> Result<Eval, QueryError> {
    let (matrix_arg, params) = range_params(ev, name, args, grid)?;
    let input = ev.range_input(matrix_arg, grid)?;
    let n = grid.n;
    if name == "absent_over_time" {
        return absent_over_time(ev, &input, labels_for_absent, n);
    }
    let Some(f) = window_fn(name) else {
        return Err(QueryError::BadData(format!(
            "function {name:?} is not a range function"
        )));
    };
    // Only these two return a sample unchanged, so only they keep the name.
    let keeps_name = matches!(name, "last_over_time" | "first_over_time");
    let range_ms = input.range_ms;
    let mut out = Vec::with_capacity(input.series.len());
    let mut buf: Vec<f64> = Vec::new();
    let mut produced = 0usize;
    for s in &input.series {
        ev.check_timeout()?;
        let mut vals = vec![None; n];
        let mut any = false;
        slide(&s.samples, &input.refs_ms, range_ms, |i, w| {
            if w.is_empty() {
                return;
            }
            let p = |k: usize| params.get(k).map(|v| v[i]).unwrap_or(f64::NAN);
            let window = Window {
                samples: w,
                end_ms: input.refs_ms[i],
                eval_t_ms: grid.t_ms(i),
                range_ms,
                params: (p(0), p(1)),
            };
            let v = f(&window, &mut buf);
            if v.is_some() {
                any = true;
            }
            vals[i] = v;
        });
        if any {
            produced += n;
            out.push(StepSeries {
                labels: s.labels.clone(),
                drop_name: s.drop_name || !keeps_name,
                vals,
            });
        }
    }
    ev.release(input.loaded);
    ev.hold(produced)?;
    ev.release(produced);
    if matches!(name, "rate" | "increase") {
        not_a_counter_info(ev, name, &input);
    }
    Ok(Eval::Vector(out))
}

/// The range-vector argument of a call and its scalar parameters evaluated
/// at every step, after the checks Prometheus makes of them.
fn range_params<'x>(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&'x Expr],
    grid: &Grid,
) -> Result<(&'x Expr, Vec<Vec<f64>>), QueryError> {
    // quantile_over_time takes its range vector second; all others first.
    let (matrix_arg, scalar_args): (&Expr, Vec<&Expr>) = if name == "quantile_over_time" {
        (args[1], vec![args[0]])
    } else {
        (args[0], args[1..].to_vec())
    };
    let mut params: Vec<Vec<f64>> = Vec::with_capacity(scalar_args.len());
    for a in &scalar_args {
        params.push(ev.eval_scalar(a, grid)?);
    }
    if name == "double_exponential_smoothing" {
        for (i, what) in [(0usize, "smoothing"), (1, "trend")] {
            for &f in params.get(i).map(|p| p.as_slice()).unwrap_or(&[]) {
                if f <= 0.0 || f >= 1.0 || f.is_nan() {
                    return Err(QueryError::Execution(format!(
                        "invalid {what} factor. Expected: 0 < sf < 1, got: {f:.6}"
                    )));
                }
            }
        }
    }
    if name == "quantile_over_time" {
        if let Some(q) = params[0].iter().find(|q| !(0.0..=1.0).contains(*q)) {
            let pos = ev.position(name, Some(0));
            ev.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
                fmt_go(*q)
            ));
        }
    }
    Ok((matrix_arg, params))
}

/// `absent_over_time`: 1 with the selector's equality labels at the steps
/// whose window holds no sample of any series.
fn absent_over_time(ev: &mut Evaluator<'_>, input: &RangeInput, labels: Labels, n: usize) -> Result<Eval, QueryError> {
    let mut present = vec![false; n];
    for s in &input.series {
        ev.check_timeout()?;
        slide(&s.samples, &input.refs_ms, input.range_ms, |i, w| {
            if !w.is_empty() {
                present[i] = true;
            }
        });
    }
    ev.release(input.loaded);
    let vals: Vec<Option<f64>> = present.iter().map(|p| if *p { None } else { Some(1.0) }).collect();
    let out = if vals.iter().any(Option::is_some) {
        vec![StepSeries {
            labels,
            drop_name: false,
            vals,
        }]
    } else {
        Vec::new()
    };
    Ok(Eval::Vector(out))
}

/// The info annotation Prometheus adds to `rate` and `increase` of a metric
/// whose name does not look like a counter's.
fn not_a_counter_info(ev: &mut Evaluator<'_>, name: &str, input: &RangeInput) {
    let pos = ev.position(name, Some(0));
    for s in &input.series {
        let metric = s.labels.metric_name();
        if !metric.is_empty()
            && !s.drop_name
            && !["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|suf| metric.ends_with(suf))
        {
            ev.info(format!(
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"{metric}\"{pos}"
            ));
        }
    }
}

/// Calls `f(step, window)` for every step, with the window `(ref_ms -
/// range_ms, ref_ms]` of `samples`. Refs must not decrease.
fn slide(samples: &[(i64, f64)], refs_ms: &[i64], range_ms: i64, mut f: impl FnMut(usize, &[(i64, f64)])) {
    let (mut lo, mut hi) = (0usize, 0usize);
    for (i, &ref_ms) in refs_ms.iter().enumerate() {
        while hi < samples.len() && samples[hi].0 <= ref_ms {
            hi += 1;
        }
        while lo < hi && samples[lo].0 <= ref_ms - range_ms {
            lo += 1;
        }
        f(i, &samples[lo..hi]);
    }
}

/// Milliseconds as PromQL's float seconds.
fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// `deriv`: the slope of the least-squares line through the window.
fn deriv(w: &[(i64, f64)]) -> Option<f64> {
    (w.len() >= 2).then(|| linear_regression(w, w[0].0).0)
}

/// `predict_linear`: the least-squares line's value `ahead_s` seconds after
/// the evaluation time.
fn predict_linear(w: &[(i64, f64)], eval_t_ms: i64, ahead_s: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(w, eval_t_ms);
    Some(slope * ahead_s + intercept)
}

/// `resets`: how often the value went down.
fn resets(w: &[(i64, f64)]) -> f64 {
    w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64
}

/// `changes`: how often the value changed (NaN to NaN is no change).
fn changes(w: &[(i64, f64)]) -> f64 {
    w.windows(2)
        .filter(|p| {
            let (a, b) = (p[0].1, p[1].1);
            a != b && !(a.is_nan() && b.is_nan())
        })
        .count() as f64
}

/// `sum_over_time`, with Kahan compensation as Prometheus sums.
fn sum_over_time(w: &[(i64, f64)]) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for s in w {
        (sum, c) = kahan_inc(s.1, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

/// The first sample whose value beats every other by `better`, a NaN losing
/// to any number (the `min`/`max_over_time` rule).
fn extreme(w: &[(i64, f64)], better: fn(f64, f64) -> bool) -> Option<(i64, f64)> {
    let (&first, rest) = w.split_first()?;
    let mut best = first;
    for &s in rest {
        if better(s.1, best.1) || (best.1.is_nan() && !s.1.is_nan()) {
            best = s;
        }
    }
    Some(best)
}

/// `mad_over_time`: the median absolute deviation from the median; NaN if
/// any value is NaN.
fn mad(w: &[(i64, f64)], buf: &mut Vec<f64>) -> f64 {
    if w.iter().any(|s| s.1.is_nan()) {
        return f64::NAN;
    }
    buf.clear();
    buf.extend(w.iter().map(|s| s.1));
    let median = quantile(0.5, buf);
    for v in buf.iter_mut() {
        *v = (*v - median).abs();
    }
    quantile(0.5, buf)
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated
/// to the window edges when the samples stop short of them (but never more
/// than half a sample interval, and for counters never below zero). The
/// window is `(end_ms - range_ms, end_ms]`; the `_s` locals are seconds.
pub(crate) fn extrapolated_rate(
    w: &[(i64, f64)],
    end_ms: i64,
    range_ms: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        // A drop means the counter restarted from zero: add back what was lost.
        let mut prev = 0.0;
        for s in w {
            if s.1 < prev {
                result += prev;
            }
            prev = s.1;
        }
    }
    let start_ms = end_ms - range_ms;
    let sampled_s = (last.0 - first.0) as f64 / 1000.0;
    let avg_gap_s = sampled_s / (w.len() - 1) as f64;
    let threshold_s = avg_gap_s * 1.1;
    let mut to_start_s = (first.0 - start_ms) as f64 / 1000.0;
    let mut to_end_s = (end_ms - last.0) as f64 / 1000.0;
    if to_start_s >= threshold_s {
        to_start_s = avg_gap_s / 2.0;
    }
    if counter && result > 0.0 && first.1 >= 0.0 {
        // Do not extrapolate a counter to below zero.
        let to_zero_s = sampled_s * (first.1 / result);
        if to_zero_s < to_start_s {
            to_start_s = to_zero_s;
        }
    }
    if to_end_s >= threshold_s {
        to_end_s = avg_gap_s / 2.0;
    }
    let mut factor = (sampled_s + to_start_s + to_end_s) / sampled_s;
    if per_second {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples of the window.
fn instant_delta(w: &[(i64, f64)], per_second: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
    let mut v = if per_second && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval_ms = last.0 - prev.0;
    if interval_ms == 0 {
        return None;
    }
    if per_second {
        v /= interval_ms as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares fit of value against time (seconds relative to
/// `intercept_t_ms`, which keeps the numbers small): `(slope, intercept)`.
pub(crate) fn linear_regression(w: &[(i64, f64)], intercept_t_ms: i64) -> (f64, f64) {
    let n = w.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let first_y = w[0].1;
    let mut const_y = true;
    for &(t_ms, y) in w {
        if const_y && y != first_y {
            const_y = false;
        }
        let x = (t_ms - intercept_t_ms) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(y, sy, cy);
        (sxy, cxy) = kahan_inc(x * y, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        // Avoid rounding noise turning a flat line into a tiny slope.
        if first_y.is_finite() {
            return (0.0, first_y);
        }
        return (f64::NAN, first_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov_xy = sxy - sx * sy / n;
    let var_x = sx2 - sx * sx / n;
    let slope = cov_xy / var_x;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// Kahan-Neumaier compensated addition: returns the new sum and compensation.
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running mean with compensated summation that switches to an
/// incremental mean if the plain sum would overflow (Prometheus's `avg`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MeanAcc {
    sum: f64,
    c: f64,
    mean: f64,
    count: f64,
    incremental: bool,
}

impl MeanAcc {
    /// Adds one value.
    #[inline]
    pub fn push(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (ns, nc) = kahan_inc(v, self.sum, self.c);
            if self.count == 1.0 || !ns.is_infinite() {
                self.sum = ns;
                self.c = nc;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        let q = (self.count - 1.0) / self.count;
        (self.mean, self.c) = kahan_inc(v / self.count, q * self.mean, q * self.c);
    }

    /// The mean of the values pushed so far.
    pub fn result(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// The mean of `values` (see [`MeanAcc`]).
pub(crate) fn avg(values: impl Iterator<Item = f64>) -> f64 {
    let mut acc = MeanAcc::default();
    for v in values {
        acc.push(v);
    }
    acc.result()
}

/// Running population variance with a compensated mean.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VarAcc {
    count: f64,
    mean: f64,
    cmean: f64,
    aux: f64,
    caux: f64,
}

impl VarAcc {
    /// Adds one value.
    #[inline]
    pub fn push(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.cmean);
        (self.mean, self.cmean) = kahan_inc(delta / self.count, self.mean, self.cmean);
        (self.aux, self.caux) = kahan_inc(delta * (v - (self.mean + self.cmean)), self.aux, self.caux);
    }

    /// The population variance so far.
    pub fn result(&self) -> f64 {
        (self.aux + self.caux) / self.count
    }
}

/// Population variance of `values` (see [`VarAcc`]).
pub(crate) fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let mut acc = VarAcc::default();
    for v in values {
        acc.push(v);
    }
    acc.result()
}

/// The φ-quantile of `values` by linear interpolation between closest ranks;
/// sorts `values` (NaNs first, as Go's sort does).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Holt's linear smoothing; the last smoothed value.
fn double_exponential_smoothing(w: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = w[0].1;
    let mut b = w[1].1 - w[0].1;
    for (i, &(_, v)) in w.iter().enumerate().skip(1) {
        let x = sf * v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Formats a float as Go's `%v`/`strconv.FormatFloat(f, 'g'...)`-ish text for
/// annotation messages.
pub(crate) fn fmt_go(v: f64) -> String {
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
    fn rate_extrapolates_to_window_edges() {
        // Samples every 60s over a 5m window ending at 300s, counter +10/min.
        let w: Vec<(i64, f64)> = (1..=5).map(|i| (i * 60_000, i as f64 * 10.0)).collect();
        // Sampled 240s, 0s to the end, 60s to the start (under the 66s
        // threshold, and the zero point 240s * 10/40 = 60s is no closer).
        let v = extrapolated_rate(&w, 300_000, 300_000, true, false).expect("value");
        assert!((v - 50.0).abs() < 1e-9, "{v}");
        let r = extrapolated_rate(&w, 300_000, 300_000, true, true).expect("value");
        assert!((r - 50.0 / 300.0).abs() < 1e-12, "{r}");
    }

    #[test]
    fn rate_handles_counter_resets() {
        let w = vec![(0, 5.0), (60_000, 10.0), (120_000, 2.0)];
        // 5 -> 10 (+5), reset, 0 -> 2 (+2): 7 over 120s, extrapolated by 30s each side
        // at the end only (start is capped at the zero point: 120*5/7 > 30).
        let v = extrapolated_rate(&w, 150_000, 180_000, true, false).expect("value");
        assert!((v - 7.0 * 180.0 / 120.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn windows_slide_left_open() {
        let samples = vec![(10, 1.0), (20, 2.0), (30, 3.0)];
        let mut got = Vec::new();
        slide(&samples, &[20, 30, 40], 10, |_, w| got.push(w.len()));
        assert_eq!(got, vec![1, 1, 0]);
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 2.0, 3.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(0.0, &mut v), 1.0);
        assert_eq!(quantile(2.0, &mut v), f64::INFINITY);
    }

    #[test]
    fn deriv_of_a_line() {
        let w: Vec<(i64, f64)> = (0..5).map(|i| (i * 1000, 3.0 * i as f64 + 1.0)).collect();
        let (slope, intercept) = linear_regression(&w, 0);
        assert!((slope - 3.0).abs() < 1e-12 && (intercept - 1.0).abs() < 1e-12);
    }
}
