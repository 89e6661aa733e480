//! The seam between the PromQL engine and whatever holds the samples.
//!
//! This file owns the [`Storage`] trait the engine reads through, the
//! [`SeriesSamples`] it returns, and [`MemStorage`], a simple in-memory
//! implementation for tests and the conformance suite, and [`TsdbStorage`],
//! the local replica (the query API and rule evaluation read through it).
//! It must not know
//! anything about query evaluation: the engine asks for raw samples in a
//! closed time range and does all windowing itself.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::tsdb::labels::Labels;
use crate::tsdb::matcher::Matcher;

/// Bit pattern of Prometheus's stale marker: a NaN that ends a series for
/// the lookback of instant selectors.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True if `v` is exactly the stale-marker NaN (an ordinary NaN is a value).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The stale marker as an `f64`.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// A storage failure, carried up to the query API as an `internal` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage error: {message}")]
pub struct StorageError {
    /// What went wrong, for the operator.
    pub message: String,
    /// True when the storage refused because the query would load more
    /// samples than allowed (reported as Prometheus's execution error).
    pub too_many_samples: bool,
}

impl StorageError {
    /// Builds an error from any message.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            too_many_samples: false,
        }
    }

    /// The storage's samples limit was reached.
    pub fn too_many_samples(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            too_many_samples: true,
        }
    }
}

/// One series and its samples in the requested range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series identity, including `__name__`.
    pub labels: Labels,
    /// `(timestamp ms, value)` pairs sorted by timestamp, stale markers included.
    pub samples: Vec<(i64, f64)>,
}

/// Read access to samples, as the engine needs it.
pub trait Storage: Send + Sync {
    /// Every series matching all `matchers` that has samples in [mint_ms, maxt_ms] (inclusive, ms
    /// since the epoch), with those samples sorted by timestamp.
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Result<Vec<SeriesSamples>, StorageError>;
}

/// An in-memory [`Storage`]: a map from label set to sorted samples. Meant for
/// tests and small tools, not for production data volumes (every select scans
/// every series).
#[derive(Debug, Default)]
pub struct MemStorage {
    series: RwLock<BTreeMap<Labels, Vec<(i64, f64)>>>,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample, keeping the series sorted; a sample at an existing
    /// timestamp replaces the old one (the test loader relies on that).
    pub fn add(&self, labels: &Labels, t_ms: i64, v: f64) {
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let samples = map.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t_ms, |s| s.0) {
            Ok(i) => samples[i].1 = v,
            Err(i) => samples.insert(i, (t_ms, v)),
        }
    }

    /// Adds many samples of one series at once.
    pub fn add_series(&self, labels: &Labels, samples: &[(i64, f64)]) {
        for &(t_ms, v) in samples {
            self.add(labels, t_ms, v);
        }
    }

    /// Removes every series.
    pub fn clear(&self) {
        self.series.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Storage for MemStorage {
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Result<Vec<SeriesSamples>, StorageError> {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (labels, samples) in map.iter() {
            if !matchers.iter().all(|m| m.matches(labels.get(&m.name))) {
                continue;
            }
            let lo = samples.partition_point(|s| s.0 < mint_ms);
            let hi = samples.partition_point(|s| s.0 <= maxt_ms);
            if lo < hi {
                out.push(SeriesSamples {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        Ok(out)
    }
}

/// The TSDB seen through the engine's storage interface.
pub struct TsdbStorage {
    /// The replica.
    pub db: std::sync::Arc<crate::tsdb::Db>,
    /// Most samples one query may load.
    pub samples_max: usize,
}

impl Storage for TsdbStorage {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<SeriesSamples>, StorageError> {
        let series = self
            .db
            .select(matchers, mint, maxt, self.samples_max)
            .map_err(|e| match e {
                crate::tsdb::Error::TooManySamples { limit } => StorageError::too_many_samples(format!(
                    "query execution (the limit is {limit} samples; narrow the selector or the time range)"
                )),
                e => StorageError::new(e.to_string()),
            })?;
        Ok(series
            .into_iter()
            .map(|s| SeriesSamples {
                labels: s.labels,
                samples: s.samples,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::matcher::MatchOp;

    #[test]
    fn select_filters_by_matchers_and_inclusive_range() {
        let s = MemStorage::new();
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        s.add_series(&a, &[(0, 1.0), (10, 2.0), (20, 3.0)]);
        s.add_series(&b, &[(30, 1.0)]);
        let m = [Matcher::equal("__name__", "up")];
        let got = s.select(&m, 10, 20).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(10, 2.0), (20, 3.0)]);
        let m = [Matcher::new(MatchOp::Regex, "job", "a|b").expect("regex")];
        assert_eq!(s.select(&m, 0, 100).expect("select").len(), 2);
    }

    #[test]
    fn stale_marker_is_recognised_only_by_bits() {
        assert!(is_stale_marker(stale_marker()));
        assert!(!is_stale_marker(f64::NAN));
    }
}
