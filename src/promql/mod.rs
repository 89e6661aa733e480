//! PromQL: parsing (via `promql-parser`) and our own evaluation engine.
//!
//! # Layout
//! - [`storage`]: the [`Storage`] trait the engine reads samples through, and
//!   the in-memory [`MemStorage`].
//! - [`value`]: result types ([`Value`], [`QueryResult`]) and the
//!   step-aligned series passed between expression nodes.
//! - `engine`: the [`Engine`] entry points, selectors, subqueries, limits.
//! - `functions`: every PromQL function; `rangefn` the range-vector ones.
//! - `aggregate`: `sum`, `topk`, `quantile`, ... with `by`/`without`.
//! - `binary`: arithmetic, comparison and set operators with vector matching.
//! - [`json`]: Prometheus HTTP API JSON for a [`QueryResult`].
//!
//! Evaluation works on a whole time grid at once: an instant query is a grid
//! of one step, a range query a grid of many. Each selector loads its data
//! from storage once for the whole grid and slides windows over it with
//! indices, so a range query costs one storage read per selector.
//!
//! This module does not do HTTP parameter parsing or storage; callers hand it
//! a [`Storage`] and times in milliseconds.
//!
//! # Units
//!
//! Every integer that holds a time is in milliseconds and its name ends in
//! `_ms`; the rest of the name says whether it is an instant (milliseconds
//! since the Unix epoch: `t_ms`, `start_ms`, `end_ms`, `mint_ms`/`maxt_ms`,
//! `ref_ms` for a window's end, `eval_t_ms`) or a span (`step_ms`,
//! `range_ms`, `lookback_ms`, `offset_ms`, `interval_ms`). Sample and point
//! tuples are `(t_ms, value)`. Seconds appear only where PromQL works in
//! them (function results, `predict_linear`'s horizon, the date functions'
//! Unix time): those names end in `_s`. [`std::time::Duration`] is used for
//! settings that are not on the query's time axis (the timeout).

mod aggregate;
mod binary;
mod engine;
mod functions;
pub mod json;
mod rangefn;
pub mod storage;
pub mod value;

use std::time::Duration;

pub use engine::Engine;
pub use storage::{MemStorage, SeriesSamples, Storage, StorageError, TsdbStorage};
pub use value::{QueryResult, Sample, Series, Value};

/// Default lookback of instant selectors: 5 minutes, as in Prometheus.
pub const LOOKBACK_DELTA_MS_DEFAULT: i64 = 300_000;
/// Default limit on samples a query may hold in memory at once (Prometheus's default).
pub const SAMPLES_MAX_DEFAULT: usize = 50_000_000;
/// Default query timeout: 2 minutes, as in Prometheus.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// Step of a subquery written without one (`x[5m:]`): Prometheus uses the
/// global evaluation interval, whose default is one minute.
pub const SUBQUERY_STEP_MS_DEFAULT: i64 = 60_000;
/// Most steps a range query may have; Prometheus refuses more than 11,000
/// points per series for the same reason (bounded result size).
pub const RANGE_STEPS_MAX: i64 = 11_000;

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (ms).
    pub lookback_delta_ms: i64,
    /// The most samples a query may hold loaded at once.
    pub samples_max: usize,
    /// How long one query may run.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: LOOKBACK_DELTA_MS_DEFAULT,
            samples_max: SAMPLES_MAX_DEFAULT,
            timeout: TIMEOUT_DEFAULT,
        }
    }
}

/// Per-query overrides of [`EngineOptions`]; `None` keeps the engine's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOpts {
    /// Lookback delta for this query (ms).
    pub lookback_delta_ms: Option<i64>,
    /// Timeout for this query.
    pub timeout: Option<Duration>,
}

/// Why a query failed. [`QueryError::error_type`] gives the Prometheus API
/// `errorType` for each.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query text or its arguments are invalid (parse errors, bad parameters).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but failed while running (duplicate label sets,
    /// many-to-many matching, invalid function arguments at run time).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout.
    #[error("query timed out in {0}")]
    Timeout(String),
    /// The query would hold more samples than `samples_max`.
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        if e.too_many_samples {
            QueryError::TooManySamples(e.message)
        } else {
            QueryError::Storage(e)
        }
    }
}

impl QueryError {
    /// Prometheus's `errorType` string for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            // Prometheus reports ErrTooManySamples as an execution error.
            QueryError::TooManySamples(_) => "execution",
            QueryError::Storage(_) => "internal",
        }
    }
}
