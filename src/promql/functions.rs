//! PromQL functions on instant vectors and scalars, and the dispatch of
//! every function call.
//!
//! This file owns math, time, label, sort, `absent`, `vector`/`scalar` and
//! classic-histogram functions. Range-vector functions are in `rangefn`.
//! Functions that change values mark `__name__` for removal; label and sort
//! functions keep it, as Prometheus 3 does.

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr};

use super::engine::{merge_same_labels, Eval, Evaluator};
use super::rangefn::{eval_range_function, fmt_go, is_range_function};
use super::value::{Grid, StepSeries};
use super::QueryError;
use crate::tsdb::labels::{is_valid_label_name, Labels, METRIC_NAME};

/// How one PromQL function is evaluated: the evaluator, the function's name
/// (some implementations serve several names), its arguments (their number
/// and types were checked by the parser), and the step grid.
type CallFn = for<'e, 'a> fn(&mut Evaluator<'e>, &str, &[&'a Expr], &Grid) -> Result<Eval, QueryError>;

/// Every function of instant vectors and scalars, by name. Range-vector
/// functions are dispatched to `rangefn` before this table is consulted.
static CALLS: &[(&str, CallFn)] = &[
    ("time", |_, _, _, g| {
        Ok(Eval::Scalar((0..g.n).map(|i| g.t_ms(i) as f64 / 1000.0).collect()))
    }),
    // Query-level constants, in seconds (experimental functions).
    ("start", |ev, _, _, g| {
        Ok(constant(ev.query_start_ms as f64 / 1000.0, g))
    }),
    ("end", |ev, _, _, g| Ok(constant(ev.query_end_ms as f64 / 1000.0, g))),
    ("step", |ev, _, _, g| Ok(constant(ev.query_step_ms as f64 / 1000.0, g))),
    ("range", |ev, _, _, g| {
        Ok(constant((ev.query_end_ms - ev.query_start_ms) as f64 / 1000.0, g))
    }),
    ("pi", |_, _, _, g| Ok(constant(std::f64::consts::PI, g))),
    ("min_of", min_max_of),
    ("max_of", min_max_of),
    ("vector", vector),
    ("scalar", scalar),
    ("timestamp", timestamp),
    ("abs", |ev, _, a, g| map_fn(ev, a, g, f64::abs)),
    ("ceil", |ev, _, a, g| map_fn(ev, a, g, f64::ceil)),
    ("floor", |ev, _, a, g| map_fn(ev, a, g, f64::floor)),
    ("exp", |ev, _, a, g| map_fn(ev, a, g, f64::exp)),
    ("ln", |ev, _, a, g| map_fn(ev, a, g, f64::ln)),
    ("log2", |ev, _, a, g| map_fn(ev, a, g, f64::log2)),
    ("log10", |ev, _, a, g| map_fn(ev, a, g, f64::log10)),
    ("sqrt", |ev, _, a, g| map_fn(ev, a, g, f64::sqrt)),
    ("sgn", |ev, _, a, g| map_fn(ev, a, g, sgn)),
    ("sin", |ev, _, a, g| map_fn(ev, a, g, f64::sin)),
    ("cos", |ev, _, a, g| map_fn(ev, a, g, f64::cos)),
    ("tan", |ev, _, a, g| map_fn(ev, a, g, f64::tan)),
    ("asin", |ev, _, a, g| map_fn(ev, a, g, f64::asin)),
    ("acos", |ev, _, a, g| map_fn(ev, a, g, f64::acos)),
    ("atan", |ev, _, a, g| map_fn(ev, a, g, f64::atan)),
    ("sinh", |ev, _, a, g| map_fn(ev, a, g, f64::sinh)),
    ("cosh", |ev, _, a, g| map_fn(ev, a, g, f64::cosh)),
    ("tanh", |ev, _, a, g| map_fn(ev, a, g, f64::tanh)),
    ("asinh", |ev, _, a, g| map_fn(ev, a, g, f64::asinh)),
    ("acosh", |ev, _, a, g| map_fn(ev, a, g, f64::acosh)),
    ("atanh", |ev, _, a, g| map_fn(ev, a, g, f64::atanh)),
    ("deg", |ev, _, a, g| {
        map_fn(ev, a, g, |v| v * 180.0 / std::f64::consts::PI)
    }),
    ("rad", |ev, _, a, g| {
        map_fn(ev, a, g, |v| v * std::f64::consts::PI / 180.0)
    }),
    ("round", round),
    ("clamp", clamp),
    ("clamp_min", clamp_min),
    ("clamp_max", clamp_max),
    ("minute", date_call),
    ("hour", date_call),
    ("day_of_month", date_call),
    ("day_of_week", date_call),
    ("day_of_year", date_call),
    ("days_in_month", date_call),
    ("month", date_call),
    ("year", date_call),
    ("absent", absent),
    ("label_replace", |ev, _, a, g| label_replace(ev, a, g)),
    ("label_join", |ev, _, a, g| label_join(ev, a, g)),
    ("sort", sort_fn),
    ("sort_desc", sort_fn),
    ("sort_by_label", sort_fn),
    ("sort_by_label_desc", sort_fn),
    ("histogram_quantile", |ev, _, a, g| histogram_quantile(ev, a, g)),
    ("histogram_quantiles", |ev, _, a, g| histogram_quantiles(ev, a, g)),
    ("histogram_fraction", |ev, _, a, g| histogram_fraction(ev, a, g)),
    ("histogram_count", native_histogram_only),
    ("histogram_sum", native_histogram_only),
    ("histogram_avg", native_histogram_only),
    ("histogram_stddev", native_histogram_only),
    ("histogram_stdvar", native_histogram_only),
];

/// Evaluates a function call over the grid.
pub(crate) fn eval_call(ev: &mut Evaluator<'_>, call: &Call, grid: &Grid) -> Result<Eval, QueryError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|b| b.as_ref()).collect();
    if is_range_function(name) {
        let absent_labels = if name == "absent_over_time" {
            absent_labels(args[0])
        } else {
            Labels::empty()
        };
        return eval_range_function(ev, name, &args, absent_labels, grid);
    }
    match CALLS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => f(ev, name, &args, grid),
        None => Err(QueryError::BadData(format!("function {name:?} is not supported"))),
    }
}

/// A scalar with the same value at every step.
fn constant(v: f64, grid: &Grid) -> Eval {
    Eval::Scalar(vec![v; grid.n])
}

/// `sgn(v)`: 1, -1, or `v` itself for zeros and NaN.
fn sgn(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    }
}

fn min_max_of(ev: &mut Evaluator<'_>, name: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let a = ev.eval_scalar(args[0], grid)?;
    let b = ev.eval_scalar(args[1], grid)?;
    let f = if name == "min_of" { go_min } else { go_max };
    Ok(Eval::Scalar(a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect()))
}

fn vector(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let v = ev.eval_scalar(args[0], grid)?;
    Ok(Eval::Vector(vec![StepSeries {
        labels: Labels::empty(),
        drop_name: false,
        vals: v.into_iter().map(Some).collect(),
    }]))
}

/// `scalar(v)`: the single element's value at each step, NaN where the
/// vector has none or several.
fn scalar(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let series = ev.eval_vector(args[0], grid)?;
    let mut out = vec![f64::NAN; grid.n];
    let mut counts = vec![0u32; grid.n];
    for s in &series {
        for (i, v) in s.vals.iter().enumerate() {
            if let Some(v) = v {
                counts[i] += 1;
                out[i] = *v;
            }
        }
    }
    for (o, c) in out.iter_mut().zip(counts) {
        if c != 1 {
            *o = f64::NAN;
        }
    }
    Ok(Eval::Scalar(out))
}

/// `timestamp(v)`: a selector's own sample timestamps; for any other
/// expression, the evaluation time of each step.
fn timestamp(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let arg = strip_parens(args[0]);
    let mut series = if let Expr::VectorSelector(vs) = arg {
        ev.eval_vector_selector(vs, grid, true)?
    } else {
        let mut s = ev.eval_vector(arg, grid)?;
        for s in &mut s {
            for (i, v) in s.vals.iter_mut().enumerate() {
                if v.is_some() {
                    *v = Some(grid.t_ms(i) as f64 / 1000.0);
                }
            }
        }
        s
    };
    for s in &mut series {
        s.drop_name = true;
    }
    Ok(Eval::Vector(series))
}

fn round(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let to = if args.len() > 1 {
        ev.eval_scalar(args[1], grid)?
    } else {
        vec![1.0; grid.n]
    };
    map_fn_step(ev, args[0], grid, |i, v| {
        // Rounding half up, like Prometheus (not half to even).
        let inv = 1.0 / to[i];
        Some((v * inv + 0.5).floor() / inv)
    })
}

fn clamp(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let min = ev.eval_scalar(args[1], grid)?;
    let max = ev.eval_scalar(args[2], grid)?;
    map_fn_step(ev, args[0], grid, |i, v| {
        // An empty range yields nothing at that step.
        if max[i] < min[i] {
            None
        } else {
            Some(go_max(min[i], go_min(max[i], v)))
        }
    })
}

fn clamp_min(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let min = ev.eval_scalar(args[1], grid)?;
    map_fn_step(ev, args[0], grid, |i, v| Some(go_max(min[i], v)))
}

fn clamp_max(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let max = ev.eval_scalar(args[1], grid)?;
    map_fn_step(ev, args[0], grid, |i, v| Some(go_min(max[i], v)))
}

/// The date functions: of each sample's value as Unix seconds, or with no
/// argument of each step's time.
fn date_call(ev: &mut Evaluator<'_>, name: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let f = date_fn(name);
    if args.is_empty() {
        let vals = (0..grid.n).map(|i| Some(f(grid.t_ms(i).div_euclid(1000)))).collect();
        return Ok(Eval::Vector(vec![StepSeries {
            labels: Labels::empty(),
            drop_name: false,
            vals,
        }]));
    }
    map_fn(ev, args, grid, |v| f(go_float_to_int(v)))
}

/// `absent(v)`: 1 with the selector's equality labels at the steps where
/// `v` has no element.
fn absent(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let series = ev.eval_vector(args[0], grid)?;
    let mut present = vec![false; grid.n];
    for s in &series {
        for (p, v) in present.iter_mut().zip(&s.vals) {
            *p |= v.is_some();
        }
    }
    let vals: Vec<Option<f64>> = present.iter().map(|p| if *p { None } else { Some(1.0) }).collect();
    if vals.iter().all(Option::is_none) {
        return Ok(Eval::Vector(Vec::new()));
    }
    Ok(Eval::Vector(vec![StepSeries {
        labels: absent_labels(args[0]),
        drop_name: false,
        vals,
    }]))
}

/// The native-histogram functions read native histograms only, which this
/// engine does not hold yet; float samples are ignored, so the result is
/// empty.
fn native_histogram_only(ev: &mut Evaluator<'_>, _: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    ev.eval_vector(args[0], grid)?;
    Ok(Eval::Vector(Vec::new()))
}

/// The expression inside any number of parentheses.
pub(crate) fn strip_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// Go's `math.Max`: NaN if either is NaN (Rust's `f64::max` ignores NaN).
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`, NaN-propagating.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `int64(f)` conversion on amd64: out-of-range and NaN become the
/// minimum int64.
fn go_float_to_int(v: f64) -> i64 {
    if v.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

/// Applies `f` to every value of the vector argument; drops the name.
fn map_fn(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid, f: impl Fn(f64) -> f64) -> Result<Eval, QueryError> {
    map_fn_step(ev, args[0], grid, |_, v| Some(f(v)))
}

/// Like [`map_fn`] with the step index, and able to drop a value.
fn map_fn_step(
    ev: &mut Evaluator<'_>,
    arg: &Expr,
    grid: &Grid,
    f: impl Fn(usize, f64) -> Option<f64>,
) -> Result<Eval, QueryError> {
    let mut series = ev.eval_vector(arg, grid)?;
    for s in &mut series {
        s.drop_name = true;
        for (i, slot) in s.vals.iter_mut().enumerate() {
            if let Some(v) = *slot {
                *slot = f(i, v);
            }
        }
    }
    series.retain(StepSeries::has_any);
    Ok(Eval::Vector(series))
}

/// Labels for `absent(sel)`: the selector's equality matchers, except the
/// name and any label matched more than once.
pub(crate) fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut out = Labels::empty();
    let mut seen: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        let is_eq = matches!(m.op, promql_parser::label::MatchOp::Equal);
        if is_eq && !seen.contains(&m.name.as_str()) {
            out.set(&m.name, &m.value);
        } else {
            out.remove(&m.name);
        }
        seen.push(&m.name);
    }
    out
}

/// Evaluates a string argument (a literal, possibly in parentheses).
fn string_arg(ev: &mut Evaluator<'_>, e: &Expr, grid: &Grid) -> Result<String, QueryError> {
    match ev.eval(e, grid)? {
        Eval::String(s) => Ok(s),
        _ => Err(QueryError::BadData(format!("expected a string argument, got {e}"))),
    }
}

fn label_replace(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let dst = string_arg(ev, args[1], grid)?;
    let repl = string_arg(ev, args[2], grid)?;
    let src = string_arg(ev, args[3], grid)?;
    let re_src = string_arg(ev, args[4], grid)?;
    let re = regex::Regex::new(&format!("^(?s:{re_src})$"))
        .map_err(|e| QueryError::BadData(format!("invalid regular expression in label_replace(): {re_src}: {e}")))?;
    if !is_valid_label_name(&dst) {
        return Err(QueryError::BadData(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut series = ev.eval_vector(args[0], grid)?;
    for s in &mut series {
        let value = s.labels.get(&src).to_string();
        if let Some(caps) = re.captures(&value) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            s.labels.set(&dst, &res);
            if dst == METRIC_NAME {
                // Writing the name explicitly keeps it.
                s.drop_name = false;
            }
        }
    }
    Ok(Eval::Vector(merge_same_labels(series)?))
}

fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let dst = string_arg(ev, args[1], grid)?;
    let sep = string_arg(ev, args[2], grid)?;
    let mut srcs = Vec::with_capacity(args.len().saturating_sub(3));
    for a in &args[3..] {
        srcs.push(string_arg(ev, a, grid)?);
    }
    if !is_valid_label_name(&dst) {
        return Err(QueryError::BadData(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    for s in &srcs {
        if !is_valid_label_name(s) {
            return Err(QueryError::BadData(format!(
                "invalid source label name in label_join(): {s}"
            )));
        }
    }
    let mut series = ev.eval_vector(args[0], grid)?;
    for s in &mut series {
        let joined = srcs.iter().map(|n| s.labels.get(n)).collect::<Vec<_>>().join(&sep);
        s.labels.set(&dst, &joined);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    Ok(Eval::Vector(merge_same_labels(series)?))
}

fn sort_fn(ev: &mut Evaluator<'_>, name: &str, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let mut label_names = Vec::new();
    for a in &args[1..] {
        label_names.push(string_arg(ev, a, grid)?);
    }
    let mut series = ev.eval_vector(args[0], grid)?;
    if ev.range_query {
        // Range results are always ordered by labels.
        let pos = ev.position(name, None);
        ev.warn(format!(
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{pos}"
        ));
        return Ok(Eval::Vector(series));
    }
    let val = |s: &StepSeries| s.vals.first().copied().flatten().unwrap_or(f64::NAN);
    match name {
        "sort" | "sort_desc" => {
            let desc = name == "sort_desc";
            // NaN sorts last either way.
            series.sort_by(|a, b| {
                let (x, y) = (val(a), val(b));
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                }
            });
        }
        _ => {
            let desc = name == "sort_by_label_desc";
            series.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for l in &label_names {
                    ord = natural_cmp(a.labels.get(l), b.labels.get(l));
                    if ord != std::cmp::Ordering::Equal {
                        break;
                    }
                }
                if ord == std::cmp::Ordering::Equal {
                    ord = a.labels.cmp(&b.labels);
                }
                if desc {
                    ord.reverse()
                } else {
                    ord
                }
            });
        }
    }
    Ok(Eval::Vector(series))
}

/// Natural order: runs of digits compare by number, the rest bytewise.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Unix seconds to civil date parts (proleptic Gregorian, UTC).
fn date_fn(name: &str) -> fn(i64) -> f64 {
    match name {
        "minute" => |t_s| (t_s.rem_euclid(3600) / 60) as f64,
        "hour" => |t_s| (t_s.rem_euclid(86_400) / 3600) as f64,
        "day_of_month" => |t_s| civil(t_s).2 as f64,
        "day_of_week" => |t_s| (t_s.div_euclid(86_400) + 4).rem_euclid(7) as f64,
        "day_of_year" => |t_s| {
            let (y, m, d) = civil(t_s);
            (days_before_month(y, m) + d) as f64
        },
        "days_in_month" => |t_s| {
            let (y, m, _) = civil(t_s);
            month_days(y, m) as f64
        },
        "month" => |t_s| civil(t_s).1 as f64,
        _ => |t_s| civil(t_s).0 as f64,
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_before_month(y: i64, m: i64) -> i64 {
    (1..m).map(|k| month_days(y, k)).sum()
}

/// (year, month 1-12, day 1-31) of a Unix time in seconds.
fn civil(t_s: i64) -> (i64, i64, i64) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = t_s.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Classic histogram series grouped by their labels without `le`.
struct BucketGroups {
    /// Output labels of each group.
    labels: Vec<Labels>,
    /// Per group: (series index, upper bound).
    members: Vec<Vec<(usize, f64)>>,
}

/// Groups keep `__name__` (marked for removal): two histograms that differ
/// only in name then collide at the end, the "same labelset" error
/// Prometheus gives. `pos` is the annotation position of the argument.
fn group_buckets(ev: &mut Evaluator<'_>, series: &[StepSeries], pos: &str) -> BucketGroups {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups = BucketGroups {
        labels: Vec::new(),
        members: Vec::new(),
    };
    for (i, s) in series.iter().enumerate() {
        let le = s.labels.get("le");
        let Some(upper) = parse_go_float(le) else {
            ev.warn(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"{le}\" for metric name \"{}\"{pos}",
                s.labels.metric_name()
            ));
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.labels.push(key);
            groups.members.push(Vec::new());
            groups.labels.len() - 1
        });
        groups.members[g].push((i, upper));
    }
    groups
}

/// Parses a float the way Go's `strconv.ParseFloat` accepts it for `le`.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if t != s {
        return None;
    }
    t.parse::<f64>().ok()
}

/// A classic bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub upper: f64,
    pub count: f64,
}

/// Sorts, merges equal bounds, and repairs non-monotonic counts; returns
/// whether counts had to be forced up.
fn prepare_buckets(b: &mut Vec<Bucket>) -> bool {
    b.sort_by(|x, y| x.upper.partial_cmp(&y.upper).unwrap_or(std::cmp::Ordering::Equal));
    // Merge buckets with the same bound.
    let mut out: Vec<Bucket> = Vec::with_capacity(b.len());
    for x in b.iter() {
        match out.last_mut() {
            Some(l) if l.upper == x.upper => l.count += x.count,
            _ => out.push(*x),
        }
    }
    *b = out;
    if b.is_empty() {
        return false;
    }
    // Ignore tiny decreases from float rounding before judging monotonicity.
    let mut prev = b[0].count;
    for x in b.iter_mut().skip(1) {
        let delta = (x.count - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / x.count <= 1e-12 {
            x.count = prev;
        } else {
            prev = x.count;
        }
    }
    let mut forced = false;
    let mut max = b[0].count;
    for x in b.iter_mut().skip(1) {
        if x.count > max {
            max = x.count;
        } else if x.count < max {
            x.count = max;
            forced = true;
        }
    }
    forced
}

/// The φ-quantile of classic buckets, interpolating linearly inside the
/// bucket the rank falls in; also returns whether monotonicity was forced.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|x, y| x.upper.partial_cmp(&y.upper).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    let forced = prepare_buckets(buckets);
    if buckets.len() < 2 {
        return (f64::NAN, false);
    }
    let total = buckets[buckets.len() - 1].count;
    if total == 0.0 {
        return (f64::NAN, false);
    }
    let mut rank = q * total;
    let b = buckets[..buckets.len() - 1].partition_point(|x| x.count < rank);
    if b == buckets.len() - 1 {
        return (buckets[buckets.len() - 2].upper, forced);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, forced);
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (start + (end - start) * (rank / count), forced)
}

/// The fraction of observations in `[lower, upper]` of classic buckets,
/// interpolating linearly inside buckets.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<Bucket>) -> f64 {
    buckets.sort_by(|x, y| x.upper.partial_cmp(&y.upper).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    prepare_buckets(buckets);
    let total = match buckets.last() {
        Some(b) => b.count,
        None => return f64::NAN,
    };
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    // Rank (cumulative count) at value x, interpolating linearly inside the
    // bucket holding x. The first bucket starts at 0 when its bound is
    // positive. A bucket of infinite width cannot be interpolated into: its
    // observations count as sitting at the infinite end.
    let rank_at = |x: f64| -> f64 {
        if x == f64::INFINITY {
            return total;
        }
        let mut prev_upper = f64::NEG_INFINITY;
        let mut prev_count = 0.0;
        for (i, b) in buckets.iter().enumerate() {
            let lo = if i == 0 && b.upper > 0.0 { 0.0 } else { prev_upper };
            if x <= b.upper {
                if x <= lo {
                    return prev_count;
                }
                if lo == f64::NEG_INFINITY {
                    return b.count;
                }
                if b.upper == f64::INFINITY {
                    return prev_count;
                }
                return prev_count + (b.count - prev_count) * (x - lo) / (b.upper - lo);
            }
            prev_upper = b.upper;
            prev_count = b.count;
        }
        total
    };
    (rank_at(upper) - rank_at(lower)) / total
}

fn histogram_quantile(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let q = ev.eval_scalar(args[0], grid)?;
    let series = ev.eval_vector(args[1], grid)?;
    let qpos = ev.position("histogram_quantile", Some(0));
    let pos = ev.position("histogram_quantile", Some(1));
    let groups = group_buckets(ev, &series, &pos);
    Ok(Eval::Vector(quantile_series(
        ev, &q, &series, &groups, None, &qpos, &pos,
    )))
}

/// `histogram_quantiles(v, "label", q1, q2, ...)`: one output series per
/// quantile, told apart by `label`.
fn histogram_quantiles(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let series = ev.eval_vector(args[0], grid)?;
    let label = string_arg(ev, args[1], grid)?;
    if !is_valid_label_name(&label) {
        return Err(QueryError::BadData(format!("invalid label name {label:?}")));
    }
    let pos = ev.position("histogram_quantiles", Some(0));
    let groups = group_buckets(ev, &series, &pos);
    let mut out = Vec::new();
    for (k, a) in args[2..].iter().enumerate() {
        let q = ev.eval_scalar(a, grid)?;
        let qpos = ev.position("histogram_quantiles", Some(k + 2));
        let text = q.first().map(|v| quantile_label(*v)).unwrap_or_default();
        out.extend(quantile_series(
            ev,
            &q,
            &series,
            &groups,
            Some((&label, &text)),
            &qpos,
            &pos,
        ));
    }
    Ok(Eval::Vector(out))
}

/// A quantile as a label value: `0.0`, `0.25`, `1.0`.
fn quantile_label(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        fmt_go(v)
    }
}

/// The quantile `q` (one per step) of every bucket group.
fn quantile_series(
    ev: &mut Evaluator<'_>,
    q: &[f64],
    series: &[StepSeries],
    groups: &BucketGroups,
    extra_label: Option<(&str, &str)>,
    qpos: &str,
    pos: &str,
) -> Vec<StepSeries> {
    if let Some(bad) = q.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        ev.warn(format!(
            "PromQL warning: quantile value should be between 0 and 1, got {}{qpos}",
            fmt_go(*bad)
        ));
    }
    let mut out = Vec::with_capacity(groups.labels.len());
    let mut buf: Vec<Bucket> = Vec::new();
    let mut forced_names: Vec<String> = Vec::new();
    for (g, labels) in groups.labels.iter().enumerate() {
        let mut vals = vec![None; q.len()];
        for (i, slot) in vals.iter_mut().enumerate() {
            buf.clear();
            for &(si, upper) in &groups.members[g] {
                if let Some(c) = series[si].vals[i] {
                    buf.push(Bucket { upper, count: c });
                }
            }
            if buf.is_empty() {
                continue;
            }
            let (v, forced) = bucket_quantile(q[i], &mut buf);
            if forced {
                forced_names.push(labels.metric_name().to_string());
            }
            *slot = Some(v);
        }
        if vals.iter().any(Option::is_some) {
            let mut labels = labels.clone();
            if let Some((name, value)) = extra_label {
                labels.set(name, value);
            }
            out.push(StepSeries {
                labels,
                drop_name: true,
                vals,
            });
        }
    }
    for name in forced_names {
        ev.info(format!(
            "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"{name}\"{pos}"
        ));
    }
    out
}

fn histogram_fraction(ev: &mut Evaluator<'_>, args: &[&Expr], grid: &Grid) -> Result<Eval, QueryError> {
    let lower = ev.eval_scalar(args[0], grid)?;
    let upper = ev.eval_scalar(args[1], grid)?;
    let series = ev.eval_vector(args[2], grid)?;
    let pos = ev.position("histogram_fraction", Some(2));
    let groups = group_buckets(ev, &series, &pos);
    let mut out = Vec::with_capacity(groups.labels.len());
    let mut buf: Vec<Bucket> = Vec::new();
    for (g, labels) in groups.labels.iter().enumerate() {
        let mut vals = vec![None; grid.n];
        for (i, slot) in vals.iter_mut().enumerate() {
            buf.clear();
            for &(si, ub) in &groups.members[g] {
                if let Some(c) = series[si].vals[i] {
                    buf.push(Bucket { upper: ub, count: c });
                }
            }
            if !buf.is_empty() {
                *slot = Some(bucket_fraction(lower[i], upper[i], &mut buf));
            }
        }
        if vals.iter().any(Option::is_some) {
            out.push(StepSeries {
                labels: labels.clone(),
                drop_name: true,
                vals,
            });
        }
    }
    Ok(Eval::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_table_names_each_function_once_and_no_range_function() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in CALLS {
            assert!(
                seen.insert(*name),
                "{name} is in the call table twice: the second entry is unreachable"
            );
            assert!(
                !is_range_function(name),
                "{name} is a range function: eval_call sends it to rangefn before the table"
            );
        }
    }

    fn b(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs.iter().map(|&(upper, count)| Bucket { upper, count }).collect()
    }

    #[test]
    fn histogram_quantile_interpolates_within_bucket() {
        let mut buckets = b(&[(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 20.0)]);
        let (v, forced) = bucket_quantile(0.75, &mut buckets);
        assert!((v - 0.15).abs() < 1e-12, "{v}");
        assert!(!forced);
    }

    #[test]
    fn histogram_quantile_in_top_bucket_returns_second_highest_bound() {
        let mut buckets = b(&[(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, 10.0)]);
        assert_eq!(bucket_quantile(0.99, &mut buckets).0, 2.0);
    }

    #[test]
    fn histogram_quantile_needs_inf_bucket_and_fixes_monotonicity() {
        let mut buckets = b(&[(1.0, 1.0), (2.0, 2.0)]);
        assert!(bucket_quantile(0.5, &mut buckets).0.is_nan());
        let mut buckets = b(&[(1.0, 5.0), (2.0, 3.0), (f64::INFINITY, 10.0)]);
        let (_, forced) = bucket_quantile(0.5, &mut buckets);
        assert!(forced);
    }

    #[test]
    fn fraction_of_classic_buckets() {
        let mut buckets = b(&[(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)]);
        assert!((bucket_fraction(0.0, 1.5, &mut buckets) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29));
        assert_eq!(date_fn("day_of_week")(0), 4.0);
    }

    #[test]
    fn natural_sort() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }
}
