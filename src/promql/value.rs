//! Query results as the API sees them, and the step-aligned series the
//! evaluator passes between expression nodes.
//!
//! This file owns the public [`Value`] / [`QueryResult`] types and the
//! internal [`StepSeries`] / [`Grid`] representation. It does no evaluation.

use crate::tsdb::labels::Labels;

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels.
    pub labels: Labels,
    /// Evaluation timestamp in milliseconds since the epoch.
    pub t_ms: i64,
    /// The value.
    pub v: f64,
}

/// One series of a range result (a matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Series labels.
    pub labels: Labels,
    /// `(timestamp ms, value)` pairs sorted by timestamp.
    pub points: Vec<(i64, f64)>,
}

/// The value of a query: Prometheus's four result types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A single number at time `t_ms`.
    Scalar {
        /// Timestamp in milliseconds since the epoch.
        t_ms: i64,
        /// The number.
        v: f64,
    },
    /// A string at time `t_ms`.
    String {
        /// Timestamp in milliseconds since the epoch.
        t_ms: i64,
        /// The string.
        s: String,
    },
    /// An instant vector, in the order the engine produced it (which matters
    /// after `sort`, `topk` and friends).
    Vector(Vec<Sample>),
    /// A range result or a range-vector selector, series sorted by labels.
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus's `resultType` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// A finished query: its value plus annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The result.
    pub value: Value,
    /// Warning annotations (`PromQL warning: ...`).
    pub warnings: Vec<String>,
    /// Info annotations (`PromQL info: ...`), reported separately as Prometheus does.
    pub infos: Vec<String>,
}

/// The evaluation time grid: `n` instants `start_ms, start_ms + step_ms, ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    /// First instant (ms since the epoch).
    pub start_ms: i64,
    /// Distance between instants (ms); at least 1.
    pub step_ms: i64,
    /// Number of instants.
    pub n: usize,
}

impl Grid {
    /// The grid from `start_ms` to `end_ms` inclusive.
    pub fn new(start_ms: i64, end_ms: i64, step_ms: i64) -> Self {
        let step_ms = step_ms.max(1);
        let n = if end_ms < start_ms {
            0
        } else {
            ((end_ms - start_ms) / step_ms) as usize + 1
        };
        Grid { start_ms, step_ms, n }
    }

    /// The `i`-th instant (ms since the epoch).
    #[inline]
    pub fn t_ms(&self, i: usize) -> i64 {
        self.start_ms + self.step_ms * i as i64
    }
}

/// One series evaluated over a [`Grid`]: a value or nothing at each instant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepSeries {
    /// Labels, still including `__name__` when `drop_name` is set: Prometheus 3
    /// drops the name lazily so that `label_replace` and `by (__name__)` can
    /// still see it.
    pub labels: Labels,
    /// The metric name must be removed before the result leaves the engine.
    pub drop_name: bool,
    /// One slot per grid instant.
    pub vals: Vec<Option<f64>>,
}

impl StepSeries {
    /// A series with no values yet.
    pub fn empty(labels: Labels, drop_name: bool, n: usize) -> Self {
        StepSeries {
            labels,
            drop_name,
            vals: vec![None; n],
        }
    }

    /// True if the series has at least one value.
    pub fn has_any(&self) -> bool {
        self.vals.iter().any(Option::is_some)
    }

    /// Number of values present.
    pub fn count(&self) -> usize {
        self.vals.iter().filter(|v| v.is_some()).count()
    }
}

/// A series with raw samples, the input of range-vector functions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RangeSeries {
    /// Labels as selected (or as produced by a subquery).
    pub labels: Labels,
    /// Carried over from a subquery's inner expression.
    pub drop_name: bool,
    /// Samples `(t_ms, value)` sorted by time, stale markers removed.
    pub samples: Vec<(i64, f64)>,
}
