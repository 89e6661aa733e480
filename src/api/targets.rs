//! `/api/v1/targets`, `/api/v1/scrape_pools` and `/api/v1/targets/metadata`
//! in Prometheus 2.42's JSON shapes.
//!
//! Every node answers from its own view: the targets it computed from its
//! configuration (the same on every node that runs the same file). Health,
//! last scrape and metadata come from the scrapes this node made, so only
//! the leader shows `up`/`down`; a follower shows `unknown`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::params::{parse_selector, Params};
use super::{success, ApiError, AppState};
use crate::config::format_duration;
use crate::scrape::target::Target;
use crate::tsdb::{Labels, Matcher};

fn map(l: &Labels) -> BTreeMap<&str, &str> {
    l.iter().map(|x| (x.name.as_str(), x.value.as_str())).collect()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

fn active(node: &AppState, t: &Target) -> Value {
    let h = node.scrape.health(t);
    let (health, last_error, last_scrape, duration) = match &h {
        Some(h) => (
            if h.up { "up" } else { "down" },
            h.last_error.as_str(),
            rfc3339(h.last_scrape_ms),
            h.last_duration_s,
        ),
        None => ("unknown", "", "0001-01-01T00:00:00Z".to_string(), 0.0),
    };
    json!({
        "discoveredLabels": map(&t.discovered),
        "labels": map(&t.labels),
        "scrapePool": t.job,
        "scrapeUrl": t.url,
        "globalUrl": t.url,
        "lastError": last_error,
        "lastScrape": last_scrape,
        "lastScrapeDuration": duration,
        "health": health,
        "scrapeInterval": format_duration(t.interval),
        "scrapeTimeout": format_duration(t.timeout),
    })
}

/// `GET /api/v1/targets?state=active|dropped|any&scrapePool=job`.
pub async fn targets(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let p = match Params::parse(q.as_deref(), &headers, &Bytes::new()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let state = p.get("state").unwrap_or("any").to_ascii_lowercase();
    let pool = p.get("scrapePool").unwrap_or("");
    let pools = node.scrape.pools();
    let chosen = pools.iter().filter(|(name, _)| pool.is_empty() || *name == pool);
    let mut act = Vec::new();
    let mut dropped = Vec::new();
    for (_, p) in chosen {
        if state == "active" || state == "any" || state.is_empty() {
            act.extend(p.active.iter().map(|t| active(&node, t)));
        }
        if state == "dropped" || state == "any" || state.is_empty() {
            dropped.extend(p.dropped.iter().map(|l| json!({ "discoveredLabels": map(l) })));
        }
    }
    success(json!({ "activeTargets": act, "droppedTargets": dropped }), &[])
}

/// `GET /api/v1/scrape_pools`.
pub async fn scrape_pools(State(node): State<AppState>) -> Response {
    let names: Vec<String> = node.scrape.pools().into_keys().collect();
    success(json!({ "scrapePools": names }), &[])
}

/// `GET /api/v1/targets/metadata?match_target=...&metric=...&limit=...`.
pub async fn metadata(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let run = || -> Result<Response, ApiError> {
        let p = Params::parse(q.as_deref(), &headers, &Bytes::new())?;
        let limit: usize = match p.get("limit") {
            None | Some("") => usize::MAX,
            Some(s) => s
                .parse::<i64>()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .map_err(|_| ApiError::bad_data(format!("invalid parameter \"limit\": {s:?}")))?,
        };
        let metric = p.get("metric").unwrap_or("");
        let sets: Vec<Vec<Matcher>> = match p.get("match_target") {
            None | Some("") => vec![Vec::new()],
            Some(s) => parse_selector(s)?,
        };
        let mut out = Vec::new();
        for pool in node.scrape.pools().values() {
            for t in &pool.active {
                let matched = sets
                    .iter()
                    .any(|ms| ms.iter().all(|m| m.matches(t.labels.get(&m.name))));
                let Some(h) = node.scrape.health(t).filter(|_| matched) else {
                    continue;
                };
                for (name, m) in h.meta.iter().filter(|(n, _)| metric.is_empty() || n.as_str() == metric) {
                    out.push(json!({
                        "target": map(&t.labels),
                        "metric": name,
                        "type": m.kind,
                        "help": m.help,
                        "unit": m.unit,
                    }));
                }
            }
        }
        out.truncate(limit);
        Ok(success(out, &[]))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
