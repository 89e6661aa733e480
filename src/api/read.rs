//! Series, label and metadata endpoints, answered from the local replica.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::params::Params;
use super::{success, ApiError, AppState};

fn range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = p.time("start", i64::MIN)?;
    let end = p.time("end", i64::MAX)?;
    if end < start {
        return Err(ApiError::bad_data("end timestamp must not be before start time"));
    }
    Ok((start, end))
}

/// `GET|POST /api/v1/series`
pub async fn series(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &body).await {
        return e.into_response();
    }
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let sets = p.matchers()?;
        if sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (start, end) = range(&p)?;
        let limit = p.limit()?;
        // Ask for one more than the limit to know whether to warn.
        let found = node.db.series(&sets, start, end, if limit > 0 { limit + 1 } else { 0 });
        let mut warnings = Vec::new();
        let shown = if limit > 0 && found.len() > limit {
            warnings.push("results truncated due to limit".to_string());
            &found[..limit]
        } else {
            &found[..]
        };
        let data: Vec<BTreeMap<&str, &str>> = shown
            .iter()
            .map(|l| l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect())
            .collect();
        Ok(success(data, &warnings))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/labels`
pub async fn labels(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &body).await {
        return e.into_response();
    }
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let sets = p.matchers()?;
        let (start, end) = range(&p)?;
        let limit = p.limit()?;
        let mut names = node
            .db
            .label_names(&sets, start, end, if limit > 0 { limit + 1 } else { 0 });
        let mut warnings = Vec::new();
        if limit > 0 && names.len() > limit {
            names.truncate(limit);
            warnings.push("results truncated due to limit".to_string());
        }
        Ok(success(names, &warnings))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/label/<name>/values`
pub async fn label_values(
    State(node): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &Bytes::new()).await {
        return e.into_response();
    }
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &Bytes::new())?;
        // Prometheus 3 accepts UTF-8 names encoded as `U__...`; plain names
        // must be valid label names.
        if !crate::tsdb::labels::is_valid_label_name(&name) {
            return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
        }
        let sets = p.matchers()?;
        let (start, end) = range(&p)?;
        let limit = p.limit()?;
        let mut values = node
            .db
            .label_values(&name, &sets, start, end, if limit > 0 { limit + 1 } else { 0 });
        let mut warnings = Vec::new();
        if limit > 0 && values.len() > limit {
            values.truncate(limit);
            warnings.push("results truncated due to limit".to_string());
        }
        Ok(success(values, &warnings))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    help: &'a str,
    unit: &'a str,
}

/// `GET /api/v1/metadata` (`limit`, `limit_per_metric`, `metric`).
pub async fn metadata(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &Bytes::new()).await {
        return e.into_response();
    }
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &Bytes::new())?;
        let limit: i64 = match p.get("limit") {
            None | Some("") => -1,
            Some(s) => s
                .parse()
                .map_err(|_| ApiError::bad_data(format!("invalid parameter \"limit\": {s:?}")))?,
        };
        let metric = p.get("metric").unwrap_or("");
        let head = node.db.head();
        let mut names: Vec<&String> = head
            .metadata()
            .keys()
            .filter(|n| metric.is_empty() || n.as_str() == metric)
            .collect();
        names.sort();
        if limit >= 0 {
            names.truncate(limit as usize);
        }
        let data: BTreeMap<&str, Vec<MetadataOut>> = names
            .into_iter()
            .filter_map(|n| head.metadata().get(n).map(|m| (n.as_str(), m)))
            .map(|(n, m)| {
                (
                    n,
                    vec![MetadataOut {
                        kind: &m.kind,
                        help: &m.help,
                        unit: &m.unit,
                    }],
                )
            })
            .collect();
        Ok(success(data, &[]))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
