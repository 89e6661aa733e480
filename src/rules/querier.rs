//! The local replica seen by rules: instant queries through the PromQL
//! engine, and the `ALERTS_FOR_STATE` read that restores alert timers.
//!
//! Read only; it never writes. It runs on a blocking thread (the engine
//! is synchronous and CPU-bound).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::alerting::{LabelMap, ALERTS_FOR_STATE_METRIC};
use super::group::Querier;
use super::template::{QuerySample, TemplateQuery};
use crate::promql::{Engine, QueryOpts, TsdbStorage, Value};
use crate::tsdb::Db;

/// How far back a new evaluator looks for an alert's `ALERTS_FOR_STATE`,
/// as Prometheus's `--rules.alert.for-outage-tolerance` (1 h): an alert
/// whose state was last written longer ago than this starts afresh.
pub const FOR_OUTAGE_TOLERANCE_MS: i64 = 3_600_000;

/// Instant queries on one replica.
#[derive(Clone)]
pub struct DbQuerier {
    /// The replica.
    pub db: Arc<Db>,
    /// The engine (the node's query limits).
    pub engine: Engine,
    /// Most samples one query may load.
    pub samples_max: usize,
}

fn label_map(l: &crate::tsdb::labels::Labels) -> LabelMap {
    l.iter().map(|p| (p.name.clone(), p.value.clone())).collect()
}

impl DbQuerier {
    fn run(&self, expr: &str, ts_ms: i64, lookback_ms: Option<i64>) -> Result<Vec<(LabelMap, f64)>, String> {
        let storage = TsdbStorage {
            db: self.db.clone(),
            samples_max: self.samples_max,
        };
        let opts = QueryOpts {
            lookback_delta_ms: lookback_ms,
            timeout: None,
        };
        let r = self
            .engine
            .instant_query(&storage, expr, ts_ms, opts)
            .map_err(|e| e.to_string())?;
        match r.value {
            Value::Vector(v) => Ok(v.into_iter().map(|s| (label_map(&s.labels), s.v)).collect()),
            Value::Scalar { v, .. } => Ok(vec![(LabelMap::new(), v)]),
            other => Err(format!(
                "rule result is not a vector or scalar (it is a {})",
                other.type_name()
            )),
        }
    }
}

impl Querier for DbQuerier {
    fn query(&self, expr: &str, ts_ms: i64) -> Result<Vec<(LabelMap, f64)>, String> {
        self.run(expr, ts_ms, None)
    }

    fn for_state(&self, alertname: &str, ts_ms: i64) -> Result<BTreeMap<LabelMap, i64>, String> {
        // The newest sample within the tolerance, before this evaluation
        // (a series ended by a stale marker is not returned).
        let name = alertname.replace('\\', "\\\\").replace('"', "\\\"");
        let expr = format!("{ALERTS_FOR_STATE_METRIC}{{alertname=\"{name}\"}}");
        let found = self.run(&expr, ts_ms - 1, Some(FOR_OUTAGE_TOLERANCE_MS))?;
        Ok(found
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(mut l, v)| {
                l.remove("__name__");
                (l, (v * 1000.0) as i64)
            })
            .collect())
    }

    fn template_query(&self, ts_ms: i64) -> Option<TemplateQuery> {
        let q = self.clone();
        Some(Arc::new(move |expr: &str| -> Result<Vec<QuerySample>, String> {
            q.query(expr, ts_ms)
        }))
    }
}
