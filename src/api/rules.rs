//! `/api/v1/rules`, `/api/v1/alerts` and `/api/v1/alertmanagers` in
//! Prometheus 2.42's JSON shapes.
//!
//! Rule and alert state lives on the evaluating node, the leader: a
//! follower relays the first two to it (once: a relayed request is served
//! where it lands), and answers from its loaded rules, health unknown,
//! when no leader is known. Read only.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::params::Params;
use super::{success, ApiError, AppState};
use crate::rules::alerting::{Alert, AlertState};
use crate::rules::group::{Group, RuleHealth, RuleKind};

/// Query parameter marking a request relayed from a follower.
const RELAYED_PARAM: &str = "promraft_relayed";

/// Go's zero time, which Prometheus reports for "never evaluated".
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time_or_zero(ms: Option<i64>) -> String {
    ms.map_or_else(|| GO_ZERO_TIME.to_string(), crate::notifier::rfc3339_ms)
}

/// A float as Go's `strconv.FormatFloat(v, 'e', -1, 64)`: `1e+00`, `5.5e-01`.
pub fn go_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

/// One alert as the API shows it.
#[derive(Serialize)]
struct ApiAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: &'static str,
    #[serde(rename = "activeAt", skip_serializing_if = "Option::is_none")]
    active_at: Option<String>,
    #[serde(rename = "keepFiringSince", skip_serializing_if = "Option::is_none")]
    keep_firing_since: Option<String>,
    value: String,
}

fn api_alert(a: &Alert) -> ApiAlert {
    ApiAlert {
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        state: a.state.as_str(),
        active_at: Some(crate::notifier::rfc3339_ms(a.active_at_ms)),
        keep_firing_since: a.keep_firing_since_ms.map(crate::notifier::rfc3339_ms),
        value: go_float_e(a.value),
    }
}

fn active_alerts<'a>(g: &'a Group) -> impl Iterator<Item = &'a Alert> + 'a {
    g.rules.iter().flat_map(|r| match &r.kind {
        RuleKind::Alerting(a) => a
            .active
            .values()
            .filter(|al| al.state != AlertState::Inactive)
            .collect(),
        RuleKind::Recording(_) => Vec::new(),
    })
}

/// The expression as Prometheus prints it (parsed and formatted), or as
/// written if it does not parse.
fn query_text(expr: &str) -> String {
    promql_parser::parser::parse(expr).map_or_else(|_| expr.to_string(), |e| e.to_string())
}

fn health_fields(h: &RuleHealth, v: &mut serde_json::Map<String, serde_json::Value>) {
    v.insert("health".into(), h.health().into());
    if let Some(e) = &h.last_error {
        v.insert("lastError".into(), e.clone().into());
    }
    v.insert("evaluationTime".into(), h.eval_seconds.into());
    v.insert("lastEvaluation".into(), time_or_zero(h.last_eval_ms).into());
}

fn rule_json(kind: &RuleKind, h: &RuleHealth) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    match kind {
        RuleKind::Alerting(a) => {
            v.insert("state".into(), a.state().as_str().into());
            v.insert("name".into(), a.name.clone().into());
            v.insert("query".into(), query_text(&a.expr).into());
            v.insert("duration".into(), (a.hold_ms as f64 / 1000.0).into());
            v.insert("keepFiringFor".into(), (a.keep_firing_for_ms as f64 / 1000.0).into());
            v.insert("labels".into(), serde_json::json!(a.labels));
            v.insert("annotations".into(), serde_json::json!(a.annotations));
            let alerts: Vec<_> = a
                .active
                .values()
                .filter(|al| al.state != AlertState::Inactive)
                .map(api_alert)
                .collect();
            v.insert("alerts".into(), serde_json::json!(alerts));
            health_fields(h, &mut v);
            v.insert("type".into(), "alerting".into());
        }
        RuleKind::Recording(r) => {
            v.insert("name".into(), r.name.clone().into());
            v.insert("query".into(), query_text(&r.expr).into());
            if !r.labels.is_empty() {
                v.insert("labels".into(), serde_json::json!(r.labels));
            }
            health_fields(h, &mut v);
            v.insert("type".into(), "recording".into());
        }
    }
    serde_json::Value::Object(v)
}

/// Relays to the leader unless this node is it, none is known, or the
/// request was relayed already.
async fn relayed(node: &AppState, path: &str, q: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    if q.is_some_and(|q| q.contains(RELAYED_PARAM)) {
        return None;
    }
    let query = match q {
        Some(q) if !q.is_empty() => format!("{q}&{RELAYED_PARAM}=1"),
        _ => format!("{RELAYED_PARAM}=1"),
    };
    super::admin::relay_to_leader(node, reqwest::Method::GET, path, Some(&query), headers, &Bytes::new()).await
}

/// `GET /api/v1/rules[?type=alert|record]`
pub async fn rules(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if let Some(r) = relayed(&node, "/api/v1/rules", q.as_deref(), &headers).await {
        return r;
    }
    let p = match Params::parse(q.as_deref(), &headers, &Bytes::new()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let want = p.get("type").unwrap_or("").to_string();
    let (alerts, records) = match want.as_str() {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return ApiError::bad_data(format!("invalid type parameter {other:?}: use alert or record")).into_response()
        }
    };
    let groups: Vec<serde_json::Value> = node
        .rules
        .groups()
        .iter()
        .map(|g| {
            let rules: Vec<_> = g
                .rules
                .iter()
                .filter(|r| match r.kind {
                    RuleKind::Alerting(_) => alerts,
                    RuleKind::Recording(_) => records,
                })
                .map(|r| rule_json(&r.kind, &r.health))
                .collect();
            serde_json::json!({
                "name": g.name,
                "file": g.file,
                "rules": rules,
                "interval": g.interval_ms as f64 / 1000.0,
                "limit": g.limit,
                "evaluationTime": g.eval_seconds,
                "lastEvaluation": time_or_zero(g.last_eval_ms),
            })
        })
        .collect();
    success(serde_json::json!({ "groups": groups }), &[])
}

/// `GET /api/v1/alerts`: pending and firing alerts.
pub async fn alerts(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if let Some(r) = relayed(&node, "/api/v1/alerts", q.as_deref(), &headers).await {
        return r;
    }
    let groups = node.rules.groups();
    let alerts: Vec<ApiAlert> = groups.iter().flat_map(active_alerts).map(api_alert).collect();
    success(serde_json::json!({ "alerts": alerts }), &[])
}

/// `GET /api/v1/alertmanagers`: where alerts go (the same on every node).
pub async fn alertmanagers(State(node): State<AppState>) -> Response {
    let active: Vec<_> = node
        .notifier
        .alertmanagers()
        .into_iter()
        .map(|url| serde_json::json!({ "url": url }))
        .collect();
    success(
        serde_json::json!({ "activeAlertmanagers": active, "droppedAlertmanagers": [] }),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_go_does() {
        for (v, want) in [
            (1.0, "1e+00"),
            (0.55, "5.5e-01"),
            (1234.0, "1.234e+03"),
            (0.0, "0e+00"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float_e(v), want);
        }
        assert_eq!(time_or_zero(None), GO_ZERO_TIME);
    }
}
