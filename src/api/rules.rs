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

/// A float as Go's encoding/json writes it: whole numbers without `.0`.
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
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

/// A rule as `/api/v1/rules` shows it, fields in Prometheus's order.
#[derive(Serialize)]
#[serde(untagged)]
enum ApiRule {
    Alerting {
        state: &'static str,
        name: String,
        query: String,
        #[serde(serialize_with = "go_float")]
        duration: f64,
        #[serde(rename = "keepFiringFor", serialize_with = "go_float")]
        keep_firing_for: f64,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        alerts: Vec<ApiAlert>,
        #[serde(flatten)]
        health: ApiHealth,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Recording {
        name: String,
        query: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        #[serde(flatten)]
        health: ApiHealth,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

/// Health, error and timing of a rule.
#[derive(Serialize)]
struct ApiHealth {
    health: &'static str,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    last_evaluation: String,
}

/// A group as `/api/v1/rules` shows it.
#[derive(Serialize)]
struct ApiGroup {
    name: String,
    file: String,
    rules: Vec<ApiRule>,
    #[serde(serialize_with = "go_float")]
    interval: f64,
    limit: usize,
    #[serde(rename = "evaluationTime", serialize_with = "go_float")]
    evaluation_time: f64,
    #[serde(rename = "lastEvaluation")]
    last_evaluation: String,
}

fn api_health(h: &RuleHealth) -> ApiHealth {
    ApiHealth {
        health: h.health(),
        last_error: h.last_error.clone(),
        evaluation_time: h.eval_seconds,
        last_evaluation: time_or_zero(h.last_eval_ms),
    }
}

fn api_rule(kind: &RuleKind, h: &RuleHealth) -> ApiRule {
    match kind {
        RuleKind::Alerting(a) => ApiRule::Alerting {
            state: a.state().as_str(),
            name: a.name.clone(),
            query: query_text(&a.expr),
            duration: a.hold_ms as f64 / 1000.0,
            keep_firing_for: a.keep_firing_for_ms as f64 / 1000.0,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            alerts: a
                .active
                .values()
                .filter(|al| al.state != AlertState::Inactive)
                .map(api_alert)
                .collect(),
            health: api_health(h),
            kind: "alerting",
        },
        RuleKind::Recording(r) => ApiRule::Recording {
            name: r.name.clone(),
            query: query_text(&r.expr),
            labels: r.labels.clone(),
            health: api_health(h),
            kind: "recording",
        },
    }
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
    let groups: Vec<ApiGroup> = node
        .rules
        .groups()
        .iter()
        .map(|g| ApiGroup {
            name: g.name.clone(),
            file: g.file.clone(),
            rules: g
                .rules
                .iter()
                .filter(|r| match r.kind {
                    RuleKind::Alerting(_) => alerts,
                    RuleKind::Recording(_) => records,
                })
                .map(|r| api_rule(&r.kind, &r.health))
                .collect(),
            interval: g.interval_ms as f64 / 1000.0,
            limit: g.limit,
            evaluation_time: g.eval_seconds,
            last_evaluation: time_or_zero(g.last_eval_ms),
        })
        .collect();
    #[derive(Serialize)]
    struct Groups {
        groups: Vec<ApiGroup>,
    }
    success(Groups { groups }, &[])
}

/// `GET /api/v1/alerts`: pending and firing alerts.
pub async fn alerts(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if let Some(r) = relayed(&node, "/api/v1/alerts", q.as_deref(), &headers).await {
        return r;
    }
    let groups = node.rules.groups();
    let alerts: Vec<ApiAlert> = groups.iter().flat_map(active_alerts).map(api_alert).collect();
    #[derive(Serialize)]
    struct Alerts {
        alerts: Vec<ApiAlert>,
    }
    success(Alerts { alerts }, &[])
}

/// `GET /api/v1/alertmanagers`: where alerts go (the same on every node).
pub async fn alertmanagers(State(node): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Am {
        url: String,
    }
    #[derive(Serialize)]
    struct Ams {
        #[serde(rename = "activeAlertmanagers")]
        active: Vec<Am>,
        #[serde(rename = "droppedAlertmanagers")]
        dropped: Vec<Am>,
    }
    let active = node
        .notifier
        .alertmanagers()
        .into_iter()
        .map(|url| Am { url })
        .collect();
    success(
        Ams {
            active,
            dropped: Vec::new(),
        },
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

    #[test]
    fn rules_serialize_with_prometheus_keys_in_its_order() {
        let f = crate::rules::file::RuleFile::parse(
            "r.yml",
            "groups: [{name: g, rules: [{record: 'x:one', expr: 'vector(1)', labels: {a: b}}, \
             {alert: A, expr: 'vector(1) > 0', for: 1h, labels: {severity: page}}]}]",
        )
        .expect("valid");
        let g = Group::new("r.yml", &f.groups[0], 1000);
        let rec = serde_json::to_string(&api_rule(&g.rules[0].kind, &g.rules[0].health)).expect("json");
        assert_eq!(
            rec,
            r#"{"name":"x:one","query":"vector(1)","labels":{"a":"b"},"health":"unknown","evaluationTime":0,"lastEvaluation":"0001-01-01T00:00:00Z","type":"recording"}"#
        );
        let alert = serde_json::to_string(&api_rule(&g.rules[1].kind, &g.rules[1].health)).expect("json");
        assert_eq!(
            alert,
            r#"{"state":"inactive","name":"A","query":"vector(1) > 0","duration":3600,"keepFiringFor":0,"labels":{"severity":"page"},"annotations":{},"alerts":[],"health":"unknown","evaluationTime":0,"lastEvaluation":"0001-01-01T00:00:00Z","type":"alerting"}"#
        );
    }
}
