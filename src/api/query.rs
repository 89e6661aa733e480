//! PromQL endpoints: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/format_query`, `/api/v1/parse_query`.
//!
//! Queries run on blocking threads (evaluation is CPU-bound and
//! synchronous), at most `query.concurrency_max` at once; a query waiting
//! longer than its timeout for a slot fails with 503 like a timeout.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::params::Params;
use super::{success, success_raw, ApiError, AppState};
use crate::promql::{self, QueryError, QueryOpts};

/// Most points a range query may return per series, as in Prometheus.
pub const RANGE_POINTS_MAX: i64 = 11_000;

pub use crate::promql::TsdbStorage;

fn query_error(e: QueryError) -> ApiError {
    let (status, t) = match e.error_type() {
        "bad_data" => (StatusCode::BAD_REQUEST, "bad_data"),
        "execution" => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        "timeout" => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError {
        status,
        error_type: t,
        message: e.to_string(),
    }
}

fn opts(node: &AppState, p: &Params) -> Result<(QueryOpts, Duration), ApiError> {
    let max_ms = i64::try_from(node.query.timeout.as_millis()).unwrap_or(i64::MAX);
    let timeout_ms = p.duration_ms("timeout")?.map_or(max_ms, |t| t.min(max_ms)).max(1);
    let lookback = p.duration_ms("lookback_delta")?.filter(|l| *l > 0);
    let timeout = Duration::from_millis(timeout_ms as u64);
    Ok((
        QueryOpts {
            lookback_delta_ms: lookback.or(Some(
                i64::try_from(node.query.lookback_delta.as_millis()).unwrap_or(i64::MAX),
            )),
            timeout: Some(timeout),
        },
        timeout,
    ))
}

enum Kind {
    Instant { time: i64 },
    Range { start: i64, end: i64, step: i64 },
}

async fn run(node: AppState, expr: String, kind: Kind, qopts: QueryOpts, timeout: Duration, limit: usize) -> Response {
    let Ok(permit) = tokio::time::timeout(timeout, node.query_slots.clone().acquire_owned()).await else {
        node.metrics
            .queries_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "timeout",
            message: format!(
                "query timed out waiting for one of {} query slots",
                node.query.concurrency_max
            ),
        }
        .into_response();
    };
    let n = node.clone();
    let res = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let storage = TsdbStorage {
            db: n.db.clone(),
            samples_max: n.query.samples_max,
        };
        match kind {
            Kind::Instant { time } => n.engine.instant_query(&storage, &expr, time, qopts),
            Kind::Range { start, end, step } => n.engine.range_query(&storage, &expr, start, end, step, qopts),
        }
    })
    .await;
    match res {
        Ok(Ok(mut r)) => {
            let mut warnings = std::mem::take(&mut r.warnings);
            if limit > 0 {
                let truncated = match &mut r.value {
                    promql::Value::Vector(v) if v.len() > limit => {
                        v.truncate(limit);
                        true
                    }
                    promql::Value::Matrix(m) if m.len() > limit => {
                        m.truncate(limit);
                        true
                    }
                    _ => false,
                };
                if truncated {
                    warnings.push(format!("results truncated due to limit of {limit} series"));
                }
            }
            success_raw(&promql::json::result_data(&r), &warnings, &r.infos)
        }
        Ok(Err(e)) => {
            if matches!(e, QueryError::Timeout(_) | QueryError::TooManySamples(_)) {
                node.metrics
                    .queries_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            query_error(e).into_response()
        }
        Err(e) => ApiError::internal(format!("query task failed: {e}")).into_response(),
    }
}

/// `GET|POST /api/v1/query`
pub async fn instant(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &body).await {
        return e.into_response();
    }
    let parsed = (|| -> Result<_, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let expr = p
            .get("query")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query must not be empty"))?
            .to_string();
        check_expr_len(&node, &expr)?;
        let time = p.time("time", chrono::Utc::now().timestamp_millis())?;
        let (o, timeout) = opts(&node, &p)?;
        Ok((expr, time, o, timeout, p.limit()?))
    })();
    match parsed {
        Ok((expr, time, o, timeout, limit)) => run(node, expr, Kind::Instant { time }, o, timeout, limit).await,
        Err(e) => e.into_response(),
    }
}

/// `GET|POST /api/v1/query_range`
pub async fn range(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &body).await {
        return e.into_response();
    }
    let parsed = (|| -> Result<_, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let expr = p
            .get("query")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query must not be empty"))?
            .to_string();
        check_expr_len(&node, &expr)?;
        let (start, end, step) = p.range(RANGE_POINTS_MAX)?;
        let (o, timeout) = opts(&node, &p)?;
        Ok((expr, start, end, step, o, timeout, p.limit()?))
    })();
    match parsed {
        Ok((expr, start, end, step, o, timeout, limit)) => {
            run(node, expr, Kind::Range { start, end, step }, o, timeout, limit).await
        }
        Err(e) => e.into_response(),
    }
}

/// 400 bad_data past `query.expr_bytes_max`, before the parser sees it.
fn check_expr_len(node: &AppState, expr: &str) -> Result<(), ApiError> {
    let max = node.query.expr_bytes_max;
    if expr.len() > max {
        return Err(ApiError::bad_data(format!(
            "invalid parameter \"query\": the query is {} bytes, more than the limit of {max} (query.expr_bytes_max)",
            expr.len()
        )));
    }
    Ok(())
}

/// `GET|POST /api/v1/format_query`: the query, pretty-printed.
pub async fn format_query(
    State(node): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let expr = p.get("query").unwrap_or("");
        check_expr_len(&node, expr)?;
        let e = promql_parser::parser::parse(expr)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
        Ok(success(e.prettify(), &[]))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/parse_query`: the query's syntax tree as JSON.
pub async fn parse_query(
    State(node): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let expr = p.get("query").unwrap_or("");
        check_expr_len(&node, expr)?;
        let e = promql_parser::parser::parse(expr)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
        Ok(success(&e, &[]))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
