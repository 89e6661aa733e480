//! The evaluator core: query entry points, selectors, subqueries, limits.
//!
//! This file owns turning an expression into values over a time [`Grid`]:
//! it loads each selector's samples once for the whole grid, slides lookback
//! and range windows with indices, enforces the timeout and the samples
//! limit, and applies Prometheus 3's delayed `__name__` removal at the end.
//! Functions, aggregations and binary operators live in their own files and
//! are called from [`Evaluator::eval`].

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector};

use super::storage::{is_stale_marker, SeriesSamples, Storage};
use super::value::{Grid, QueryResult, RangeSeries, Sample, Series, StepSeries, Value};
use super::{EngineOptions, QueryError, QueryOpts, RANGE_STEPS_MAX, SUBQUERY_STEP_MS_DEFAULT};
use crate::tsdb::labels::{Labels, METRIC_NAME};
use crate::tsdb::matcher::{MatchOp, Matcher};

/// The PromQL engine: holds options, evaluates queries against a [`Storage`].
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// An engine with the given options.
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at one instant `time_ms`.
    pub fn instant_query(
        &self,
        storage: &dyn Storage,
        expr: &str,
        time_ms: i64,
        opts: QueryOpts,
    ) -> Result<QueryResult, QueryError> {
        let ast = parse(expr)?;
        let mut ev = self.evaluator(storage, expr, time_ms, time_ms, 0, &opts);
        let grid = Grid::new(time_ms, time_ms, 1);
        let val = ev.eval(&ast, &grid)?;
        let value = match val {
            Eval::Scalar(v) => Value::Scalar {
                t_ms: time_ms,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Eval::String(s) => Value::String { t_ms: time_ms, s },
            Eval::Vector(series) => {
                let series = drop_names(series);
                let mut out = Vec::with_capacity(series.len());
                for s in series {
                    if let Some(Some(v)) = s.vals.first() {
                        out.push(Sample {
                            labels: s.labels,
                            t_ms: time_ms,
                            v: *v,
                        });
                    }
                }
                check_unique_labels(out.iter().map(|s| &s.labels))?;
                Value::Vector(out)
            }
            Eval::Matrix(series) => {
                let mut out: Vec<Series> = series
                    .into_iter()
                    .map(|s| Series {
                        labels: if s.drop_name {
                            s.labels.without_metric_name()
                        } else {
                            s.labels
                        },
                        points: s.samples,
                    })
                    .filter(|s| !s.points.is_empty())
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                check_unique_labels(out.iter().map(|s| &s.labels))?;
                Value::Matrix(out)
            }
        };
        Ok(QueryResult {
            value,
            warnings: ev.warnings,
            infos: ev.infos,
        })
    }

    /// Evaluates `expr` at every `step_ms` from `start_ms` to `end_ms` inclusive.
    pub fn range_query(
        &self,
        storage: &dyn Storage,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        opts: QueryOpts,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        // In i128: the span of two valid times can exceed an i64.
        if (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms) >= i128::from(RANGE_STEPS_MAX) {
            return Err(QueryError::BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                    .into(),
            ));
        }
        let ast = parse(expr)?;
        match ast.value_type() {
            parser::value::ValueType::Vector | parser::value::ValueType::Scalar => {}
            other => {
                return Err(QueryError::BadData(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    value_type_name(other)
                )))
            }
        }
        let mut ev = self.evaluator(storage, expr, start_ms, end_ms, step_ms, &opts);
        let grid = Grid::new(start_ms, end_ms, step_ms);
        let val = ev.eval(&ast, &grid)?;
        let series = match val {
            Eval::Scalar(v) => {
                vec![StepSeries {
                    labels: Labels::empty(),
                    drop_name: false,
                    vals: v.into_iter().map(Some).collect(),
                }]
            }
            Eval::Vector(s) => s,
            Eval::String(_) | Eval::Matrix(_) => {
                return Err(QueryError::BadData(
                    "range query must return a scalar or an instant vector".into(),
                ))
            }
        };
        let series = merge_same_labels(drop_names(series))?;
        let mut out: Vec<Series> = series
            .into_iter()
            .filter_map(|s| {
                let points = timed_points(&s.vals, &grid);
                (!points.is_empty()).then_some(Series {
                    labels: s.labels,
                    points,
                })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryResult {
            value: Value::Matrix(out),
            warnings: ev.warnings,
            infos: ev.infos,
        })
    }

    fn evaluator<'a>(
        &self,
        storage: &'a dyn Storage,
        query: &'a str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        opts: &QueryOpts,
    ) -> Evaluator<'a> {
        let timeout = opts.timeout.unwrap_or(self.opts.timeout);
        Evaluator {
            storage,
            query,
            query_start_ms: start_ms,
            query_end_ms: end_ms,
            query_step_ms: step_ms,
            lookback_ms: opts.lookback_delta_ms.unwrap_or(self.opts.lookback_delta_ms).max(1),
            deadline: Instant::now() + timeout,
            samples_max: self.opts.samples_max,
            samples_cur: 0,
            warnings: Vec::new(),
            infos: Vec::new(),
            range_query: step_ms > 0,
        }
    }
}

/// Parses a query, mapping parser errors to `bad_data`.
fn parse(expr: &str) -> Result<Expr, QueryError> {
    parser::parse(expr).map_err(QueryError::BadData)
}

fn value_type_name(t: parser::value::ValueType) -> &'static str {
    match t {
        parser::value::ValueType::Vector => "instant vector",
        parser::value::ValueType::Scalar => "scalar",
        parser::value::ValueType::Matrix => "range vector",
        parser::value::ValueType::String => "string",
    }
}

/// The value of an expression node over a grid.
#[derive(Debug)]
pub(crate) enum Eval {
    /// One number per grid step.
    Scalar(Vec<f64>),
    /// A string literal.
    String(String),
    /// An instant vector at every step.
    Vector(Vec<StepSeries>),
    /// A range vector; only produced at the top of an instant query.
    Matrix(Vec<RangeSeries>),
}

/// State of one query's evaluation.
pub(crate) struct Evaluator<'a> {
    storage: &'a dyn Storage,
    /// The query text, to give annotations a `(line:col)` position.
    query: &'a str,
    /// Query start (ms since the epoch), for `@ start()`.
    pub query_start_ms: i64,
    /// Query end (ms since the epoch), for `@ end()`; equal to the start
    /// for instant queries.
    pub query_end_ms: i64,
    /// Query step in ms; 0 for instant queries.
    pub query_step_ms: i64,
    /// Lookback delta (ms).
    pub lookback_ms: i64,
    deadline: Instant,
    samples_max: usize,
    samples_cur: usize,
    /// Warning annotations collected so far.
    pub warnings: Vec<String>,
    /// Info annotations collected so far.
    pub infos: Vec<String>,
    /// True for range queries (some annotations depend on it).
    pub range_query: bool,
}

/// Raw data for a range-vector function: series, the window end of every
/// step (ms since the epoch), and the window length (ms).
pub(crate) struct RangeInput {
    pub series: Vec<RangeSeries>,
    pub refs_ms: Vec<i64>,
    pub range_ms: i64,
    /// Samples accounted against the limit; released by [`Evaluator::release`].
    pub loaded: usize,
}

impl RangeInput {
    /// No series: the grid has no step inside the selector's `@` range.
    fn empty(refs_ms: Vec<i64>, range_ms: i64) -> RangeInput {
        RangeInput {
            series: Vec::new(),
            refs_ms,
            range_ms,
            loaded: 0,
        }
    }
}

impl<'a> Evaluator<'a> {
    /// Fails if the query has run out of time. Cheap enough to call per
    /// series; callers in per-step loops call it every few hundred steps.
    pub fn check_timeout(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("query execution".into()));
        }
        Ok(())
    }

    /// Accounts `n` more samples held in memory.
    pub fn hold(&mut self, n: usize) -> Result<(), QueryError> {
        self.samples_cur = self.samples_cur.saturating_add(n);
        if self.samples_cur > self.samples_max {
            return Err(QueryError::TooManySamples("query execution".into()));
        }
        Ok(())
    }

    /// Releases `n` samples accounted by [`Evaluator::hold`].
    pub fn release(&mut self, n: usize) {
        self.samples_cur = self.samples_cur.saturating_sub(n);
    }

    /// Adds a warning once.
    pub fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    /// Adds an info annotation once.
    pub fn info(&mut self, msg: String) {
        if !self.infos.contains(&msg) {
            self.infos.push(msg);
        }
    }

    /// The ` (line:col)` suffix Prometheus puts on annotations, pointing at
    /// the call of `func` (or its argument `arg`). The parser keeps no
    /// positions, so this finds the first call of that name in the text.
    pub fn position(&self, func: &str, arg: Option<usize>) -> String {
        match find_call_position(self.query, func, arg) {
            Some(offset) => {
                let before = &self.query[..offset];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
                format!(" ({line}:{col})")
            }
            None => String::new(),
        }
    }

    /// Evaluates `expr` at every instant of `grid`.
    pub fn eval(&mut self, expr: &Expr, grid: &Grid) -> Result<Eval, QueryError> {
        self.check_timeout()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Eval::Scalar(vec![n.val; grid.n])),
            Expr::StringLiteral(s) => Ok(Eval::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Eval::Scalar(v) => Ok(Eval::Scalar(v.into_iter().map(|x| -x).collect())),
                Eval::Vector(mut series) => {
                    for s in &mut series {
                        s.drop_name = true;
                        for v in s.vals.iter_mut().flatten() {
                            *v = -*v;
                        }
                    }
                    Ok(Eval::Vector(series))
                }
                _ => Err(QueryError::BadData(
                    "unary expression only allowed on scalars and vectors".into(),
                )),
            },
            Expr::Binary(b) => super::binary::eval_binary(self, b, grid),
            Expr::Aggregate(a) => super::aggregate::eval_aggregate(self, a, grid),
            Expr::Call(c) => super::functions::eval_call(self, c, grid),
            Expr::VectorSelector(vs) => Ok(Eval::Vector(self.eval_vector_selector(vs, grid, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                // A bare range vector is only valid as the whole of an instant
                // query; it then shows the raw samples of each window.
                let input = self.range_input(expr, grid)?;
                let ref_ms = input.refs_ms.first().copied().unwrap_or(grid.start_ms);
                let series = input
                    .series
                    .into_iter()
                    .map(|mut s| {
                        s.samples
                            .retain(|&(t_ms, _)| t_ms > ref_ms - input.range_ms && t_ms <= ref_ms);
                        s
                    })
                    .collect();
                self.release(input.loaded);
                Ok(Eval::Matrix(series))
            }
            Expr::Extension(_) => Err(QueryError::BadData("extension expressions are not supported".into())),
        }
    }

    /// Evaluates `expr`, which must be a scalar, into one value per step.
    pub fn eval_scalar(&mut self, expr: &Expr, grid: &Grid) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, grid)? {
            Eval::Scalar(v) => Ok(v),
            _ => Err(QueryError::BadData(format!("expected a scalar expression, got {expr}"))),
        }
    }

    /// Evaluates `expr`, which must be an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr, grid: &Grid) -> Result<Vec<StepSeries>, QueryError> {
        match self.eval(expr, grid)? {
            Eval::Vector(v) => Ok(v),
            _ => Err(QueryError::BadData(format!(
                "expected an instant vector expression, got {expr}"
            ))),
        }
    }

    /// The time in ms an `@` modifier pins evaluation to.
    fn at_ms(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Start => self.query_start_ms,
            AtModifier::End => self.query_end_ms,
            AtModifier::At(time) => system_time_ms(*time),
        }
    }

    /// The reference time (window end) of every grid step for a selector
    /// with these modifiers: the step time or the `@` time, minus the offset
    /// (all ms since the epoch).
    fn refs_ms(&self, at: &Option<AtModifier>, offset: &Option<Offset>, grid: &Grid) -> Vec<i64> {
        let off_ms = offset_ms(offset);
        match at {
            Some(a) => vec![self.at_ms(a) - off_ms; grid.n],
            None => (0..grid.n).map(|i| grid.t_ms(i) - off_ms).collect(),
        }
    }

    /// Loads the series matching a selector with samples in [mint_ms, maxt_ms].
    fn select(&mut self, vs: &VectorSelector, mint_ms: i64, maxt_ms: i64) -> Result<Vec<SeriesSamples>, QueryError> {
        let alternatives = selector_matchers(vs)?;
        if alternatives.len() == 1 {
            return Ok(self.storage.select(&alternatives[0], mint_ms, maxt_ms)?);
        }
        // `{a="1" or b="2"}`: union of the alternatives, each series once.
        let mut seen: HashMap<Labels, ()> = HashMap::new();
        let mut out = Vec::new();
        for ms in &alternatives {
            for s in self.storage.select(ms, mint_ms, maxt_ms)? {
                if seen.insert(s.labels.clone(), ()).is_none() {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Evaluates an instant-vector selector over the grid. With
    /// `want_timestamps` the values are the sample timestamps in seconds
    /// (what `timestamp()` needs).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: &Grid,
        want_timestamps: bool,
    ) -> Result<Vec<StepSeries>, QueryError> {
        if grid.n == 0 {
            return Ok(Vec::new());
        }
        let refs_ms = self.refs_ms(&vs.at, &vs.offset, grid);
        let (lo_ms, hi_ms) = min_max(&refs_ms);
        // Lookback windows are left-open: (ref_ms - lookback_ms, ref_ms].
        let data = self.select(vs, lo_ms - self.lookback_ms + 1, hi_ms)?;
        let loaded: usize = data.iter().map(|s| s.samples.len()).sum();
        self.hold(loaded)?;
        let mut out = Vec::with_capacity(data.len());
        for s in data {
            self.check_timeout()?;
            let samples = &s.samples;
            let mut vals = vec![None; grid.n];
            let mut any = false;
            let mut j = 0usize;
            for (i, &ref_ms) in refs_ms.iter().enumerate() {
                // Refs never decrease (a grid plus a constant offset, or a
                // constant `@`), so one forward-moving index suffices.
                while j < samples.len() && samples[j].0 <= ref_ms {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let (t_ms, v) = samples[j - 1];
                if t_ms > ref_ms - self.lookback_ms && !is_stale_marker(v) {
                    vals[i] = Some(if want_timestamps { t_ms as f64 / 1000.0 } else { v });
                    any = true;
                }
            }
            if any {
                out.push(StepSeries {
                    labels: s.labels,
                    drop_name: false,
                    vals,
                });
            }
        }
        self.release(loaded);
        let kept: usize = out.iter().map(StepSeries::count).sum();
        self.hold(kept)?;
        self.release(kept);
        Ok(out)
    }

    /// Loads the raw samples a range-vector function needs: a matrix
    /// selector's series, or a subquery evaluated on its own grid.
    pub fn range_input(&mut self, expr: &Expr, grid: &Grid) -> Result<RangeInput, QueryError> {
        match expr {
            Expr::Paren(p) => self.range_input(&p.expr, grid),
            Expr::MatrixSelector(ms) => self.matrix_input(ms, grid),
            Expr::Subquery(sq) => self.subquery_input(sq, grid),
            _ => Err(QueryError::BadData(format!("expected a range vector, got {expr}"))),
        }
    }

    /// A matrix selector's raw samples over every window of the grid.
    fn matrix_input(&mut self, ms: &MatrixSelector, grid: &Grid) -> Result<RangeInput, QueryError> {
        let range_ms = ms.range.as_millis() as i64;
        let refs_ms = self.refs_ms(&ms.vs.at, &ms.vs.offset, grid);
        if refs_ms.is_empty() {
            return Ok(RangeInput::empty(refs_ms, range_ms));
        }
        let (lo_ms, hi_ms) = min_max(&refs_ms);
        let data = self.select(&ms.vs, lo_ms - range_ms + 1, hi_ms)?;
        let mut loaded = 0;
        let mut series = Vec::with_capacity(data.len());
        for mut s in data {
            // Stale markers only end lookback; range windows ignore them.
            s.samples.retain(|&(_, v)| !is_stale_marker(v));
            loaded += s.samples.len();
            series.push(RangeSeries {
                labels: s.labels,
                drop_name: false,
                samples: s.samples,
            });
        }
        self.hold(loaded)?;
        Ok(RangeInput {
            series,
            refs_ms,
            range_ms,
            loaded,
        })
    }

    /// A subquery evaluated on its own step-aligned grid, as raw samples.
    fn subquery_input(&mut self, sq: &SubqueryExpr, grid: &Grid) -> Result<RangeInput, QueryError> {
        let range_ms = sq.range.as_millis() as i64;
        let step_ms = sq
            .step
            .map(|d| d.as_millis() as i64)
            .unwrap_or(SUBQUERY_STEP_MS_DEFAULT)
            .max(1);
        let refs_ms = self.refs_ms(&sq.at, &sq.offset, grid);
        if refs_ms.is_empty() {
            return Ok(RangeInput::empty(refs_ms, range_ms));
        }
        let (lo_ms, hi_ms) = min_max(&refs_ms);
        // The inner grid holds the step-aligned instants inside the
        // windows: the first multiple of `step_ms` after `lo_ms - range_ms`,
        // then every `step_ms` up to the last window end.
        let first_ms = lo_ms - range_ms;
        let mut start_ms = step_ms * first_ms.div_euclid(step_ms);
        if start_ms <= first_ms {
            start_ms += step_ms;
        }
        let inner = Grid::new(start_ms, hi_ms, step_ms);
        let stepped = match self.eval(&sq.expr, &inner)? {
            Eval::Vector(v) => v,
            Eval::Scalar(v) => vec![StepSeries {
                labels: Labels::empty(),
                drop_name: false,
                vals: v.into_iter().map(Some).collect(),
            }],
            _ => {
                return Err(QueryError::BadData(
                    "subquery is only allowed on instant vectors".into(),
                ))
            }
        };
        let mut loaded = 0;
        let series: Vec<RangeSeries> = merge_same_labels(stepped)?
            .into_iter()
            .map(|s| {
                let samples = timed_points(&s.vals, &inner);
                loaded += samples.len();
                RangeSeries {
                    labels: s.labels,
                    drop_name: s.drop_name,
                    samples,
                }
            })
            .collect();
        self.hold(loaded)?;
        Ok(RangeInput {
            series,
            refs_ms,
            range_ms,
            loaded,
        })
    }
}

/// Byte offset of the first call `func(` in `query`, or of its argument
/// number `arg`. Skips string literals and nested brackets.
fn find_call_position(query: &str, func: &str, arg: Option<usize>) -> Option<usize> {
    let b = query.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut from = 0;
    let start = loop {
        let i = from + query.get(from..)?.find(func)?;
        let end = i + func.len();
        let mut j = end;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        // Aggregations may put `by (...)` / `without (...)` before the arguments.
        for kw in ["by", "without"] {
            if query[j..].starts_with(kw) && query[j + kw.len()..].trim_start().starts_with('(') {
                j += kw.len();
                while j < b.len() && b[j] != b')' {
                    j += 1;
                }
                j += 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
            }
        }
        if (i == 0 || !is_ident(b[i - 1])) && j < b.len() && b[j] == b'(' && (end >= b.len() || !is_ident(b[end])) {
            break (i, j);
        }
        from = i + 1;
    };
    let Some(want) = arg else { return Some(start.0) };
    let (mut k, mut depth, mut index) = (start.1 + 1, 0i32, 0usize);
    let mut arg_start = k;
    while k < b.len() {
        match b[k] {
            b'"' | b'\'' | b'`' => {
                let q = b[k];
                k += 1;
                while k < b.len() && b[k] != q {
                    if b[k] == b'\\' && q != b'`' {
                        k += 1;
                    }
                    k += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            b')' => break,
            b',' if depth == 0 => {
                if index == want {
                    break;
                }
                index += 1;
                arg_start = k + 1;
            }
            _ => {}
        }
        k += 1;
    }
    if index != want {
        return None;
    }
    while arg_start < b.len() && b[arg_start].is_ascii_whitespace() {
        arg_start += 1;
    }
    Some(arg_start)
}

/// Milliseconds since the epoch, negative before it.
fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// An `offset` in ms (negative offsets look into the future).
fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// The earliest and latest of the window ends `refs_ms` (0 for none).
fn min_max(refs_ms: &[i64]) -> (i64, i64) {
    let lo_ms = refs_ms.iter().copied().min().unwrap_or(0);
    let hi_ms = refs_ms.iter().copied().max().unwrap_or(0);
    (lo_ms, hi_ms)
}

/// Converts a parsed selector into storage matchers; more than one list for
/// the `or` form of label matchers.
fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |list: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, QueryError> {
        let mut out = Vec::with_capacity(list.len() + 1);
        for m in list {
            let op = match m.op {
                ParserMatchOp::Equal => MatchOp::Equal,
                ParserMatchOp::NotEqual => MatchOp::NotEqual,
                ParserMatchOp::Re(_) => MatchOp::Regex,
                ParserMatchOp::NotRe(_) => MatchOp::NotRegex,
            };
            out.push(
                Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| QueryError::BadData(e.to_string()))?,
            );
        }
        if let Some(name) = &vs.name {
            if !out
                .iter()
                .any(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal && m.value == *name)
            {
                out.push(Matcher::equal(METRIC_NAME, name.clone()));
            }
        }
        Ok(out)
    };
    if vs.matchers.or_matchers.is_empty() {
        Ok(vec![convert(&vs.matchers.matchers)?])
    } else {
        vs.matchers.or_matchers.iter().map(|l| convert(l)).collect()
    }
}

/// Removes `__name__` from series marked for it (Prometheus 3 drops the name
/// at the end of evaluation, not where the function ran).
pub(crate) fn drop_names(mut series: Vec<StepSeries>) -> Vec<StepSeries> {
    for s in &mut series {
        if s.drop_name {
            s.labels.remove(METRIC_NAME);
            s.drop_name = false;
        }
    }
    series
}

/// Merges series with identical labels (and drop flags) into one, as long
/// as they never have a value at the same step; a clash is the "same
/// labelset" error. This is how Prometheus assembles range results, where
/// e.g. `label_replace` may map different inputs to one output at different
/// times.
pub(crate) fn merge_same_labels(series: Vec<StepSeries>) -> Result<Vec<StepSeries>, QueryError> {
    // Index by a 64-bit hash (no label clones); equal hashes are then
    // compared in full, so a hash collision cannot merge distinct series.
    let mut index: HashMap<u64, Vec<usize>> = HashMap::with_capacity(series.len());
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        let h = s.labels.stable_hash() ^ u64::from(s.drop_name);
        let slot = index.entry(h).or_default();
        let existing = slot
            .iter()
            .copied()
            .find(|&i| out[i].labels == s.labels && out[i].drop_name == s.drop_name);
        match existing {
            None => {
                slot.push(out.len());
                out.push(s);
            }
            Some(i) => {
                let target = &mut out[i];
                for (dst, v) in target.vals.iter_mut().zip(s.vals) {
                    if v.is_some() {
                        if dst.is_some() {
                            return Err(same_labelset_error());
                        }
                        *dst = v;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The error for two series with equal labels at the same time.
pub(crate) fn same_labelset_error() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".into())
}

fn check_unique_labels<'l>(labels: impl Iterator<Item = &'l Labels>) -> Result<(), QueryError> {
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        if !seen.insert(l) {
            return Err(same_labelset_error());
        }
    }
    Ok(())
}

/// The values present in `vals` with the grid times of their steps.
fn timed_points(vals: &[Option<f64>], grid: &Grid) -> Vec<(i64, f64)> {
    vals.iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (grid.t_ms(i), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::storage::{stale_marker, MemStorage};

    fn store() -> MemStorage {
        let s = MemStorage::new();
        let l = Labels::from_pairs([("__name__", "m")]);
        for i in 0..=10 {
            s.add(&l, i * 60_000, i as f64);
        }
        s
    }

    /// The step count of a range wider than an i64 (two valid times far
    /// apart) is computed without overflow and refused.
    #[test]
    fn a_range_wider_than_i64_is_refused() {
        let e = Engine::default()
            .range_query(
                &store(),
                "1",
                -9_200_000_000_000_000_000,
                9_200_000_000_000_000_000,
                1_000_000_000_000_000,
                QueryOpts::default(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("exceeded maximum resolution"), "{e}");
    }

    fn scalar_of(r: QueryResult) -> Vec<f64> {
        match r.value {
            Value::Vector(v) => v.into_iter().map(|s| s.v).collect(),
            other => panic!("not a vector: {other:?}"),
        }
    }

    #[test]
    fn lookback_is_left_open() {
        let e = Engine::default();
        let s = store();
        // Last sample at 10m; at 15m it is exactly lookback old and excluded.
        let r = e.instant_query(&s, "m", 899_999, QueryOpts::default()).expect("query");
        assert_eq!(scalar_of(r), vec![10.0]);
        let r = e.instant_query(&s, "m", 900_000, QueryOpts::default()).expect("query");
        assert!(scalar_of(r).is_empty());
    }

    #[test]
    fn range_windows_are_left_open() {
        let e = Engine::default();
        let s = store();
        // (4m, 6m] holds the samples at 5m and 6m only.
        let r = e
            .instant_query(&s, "count_over_time(m[2m])", 360_000, QueryOpts::default())
            .expect("query");
        assert_eq!(scalar_of(r), vec![2.0]);
    }

    #[test]
    fn stale_marker_ends_series() {
        let e = Engine::default();
        let s = store();
        let l = Labels::from_pairs([("__name__", "m")]);
        s.add(&l, 11 * 60_000, stale_marker());
        let r = e
            .instant_query(&s, "m", 11 * 60_000 + 1, QueryOpts::default())
            .expect("query");
        assert!(scalar_of(r).is_empty());
    }

    #[test]
    fn subquery_grid_is_step_aligned() {
        let e = Engine::default();
        let s = store();
        // Instants 4m, 5m, 6m fall in (3m30s, 6m30s].
        let r = e
            .instant_query(&s, "count_over_time(m[3m:1m])", 390_000, QueryOpts::default())
            .expect("query");
        assert_eq!(scalar_of(r), vec![3.0]);
    }

    #[test]
    fn samples_limit_is_enforced() {
        let e = Engine::new(EngineOptions {
            samples_max: 3,
            ..EngineOptions::default()
        });
        let s = store();
        let err = e
            .instant_query(&s, "sum_over_time(m[10m])", 600_000, QueryOpts::default())
            .unwrap_err();
        assert_eq!(err.error_type(), "execution");
        assert!(matches!(err, QueryError::TooManySamples(_)));
    }

    #[test]
    fn annotation_positions_point_at_calls_and_arguments() {
        let q = "sum(sort(x)) + histogram_quantile(0.5, foo{a=\",\"})";
        assert_eq!(find_call_position(q, "sort", None), Some(4));
        assert_eq!(find_call_position(q, "histogram_quantile", Some(1)), Some(39));
        assert_eq!(find_call_position(q, "rate", None), None);
    }

    #[test]
    fn parse_errors_are_bad_data() {
        let e = Engine::default();
        let err = e.instant_query(&store(), "sum(", 0, QueryOpts::default()).unwrap_err();
        assert_eq!(err.error_type(), "bad_data");
    }
}
