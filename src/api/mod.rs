//! The HTTP API: remote write in, the Prometheus HTTP API out, plus health,
//! status and `/metrics`.
//!
//! Handlers parse and validate, call the node, and shape responses exactly
//! as Prometheus does (`{"status":"success","data":...}`, errors with
//! `errorType`). Errors map to status codes in one place ([`ApiError`]).
//! Every response names the node that answered and its applied index in
//! the `X-Promraft-Node` and `X-Promraft-Applied-Index` headers.

pub mod admin;
pub mod cluster;
pub mod federate;
pub mod guard;
pub mod params;
pub mod promconfig;
pub mod query;
pub mod read;
pub mod remote_read;
pub mod remote_write;
pub mod rules;
pub mod status;
pub mod targets;
pub mod write;
pub mod write_media;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use crate::config::QueryConfig;
use crate::node::Node;
use crate::web::state::WebState;

/// Shared state of every handler: the node, and the configuration sections
/// the handlers read, copied at construction (handlers do not reach into
/// the node's whole configuration).
#[derive(Clone)]
pub struct AppState {
    node: Arc<Node>,
    /// The `query` section.
    pub query: Arc<QueryConfig>,
    /// `write.body_bytes_max`, `write.request_series_max` and the label
    /// lengths: what a remote-write request is checked against.
    pub write_limits: remote_write::Limits,
    /// The HTTP edge: web config in force, password cache, metrics.
    pub web: Arc<WebState>,
    /// `web.enable_admin_api`.
    pub enable_admin_api: bool,
    /// `web.peer_ca_file`.
    pub peer_ca_file: Option<std::path::PathBuf>,
}

impl AppState {
    /// The state of `node`'s handlers, behind the edge `web`.
    pub fn new(node: Arc<Node>, web: Arc<WebState>) -> AppState {
        AppState {
            query: Arc::new(node.query_config().clone()),
            write_limits: {
                let w = node.write_config();
                remote_write::Limits {
                    body_bytes_max: w.body_bytes_max,
                    series_max: w.request_series_max,
                    label_name_bytes_max: w.label_name_bytes_max,
                    label_value_bytes_max: w.label_value_bytes_max,
                }
            },
            enable_admin_api: node.web_config().enable_admin_api,
            peer_ca_file: node.web_config().peer_ca_file.clone(),
            web,
            node,
        }
    }

    /// A client for a call to another node's HTTP API (relays to the
    /// leader) and the scheme to use: https when this node serves TLS.
    pub fn peer_client(&self, timeout: std::time::Duration) -> Result<(reqwest::Client, &'static str), ApiError> {
        self.web
            .peer_client(self.peer_ca_file.as_deref(), timeout)
            .map_err(|e| ApiError::internal(format!("client for relaying to the leader: {e}")))
    }
}

impl std::ops::Deref for AppState {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// Header naming the node that answered.
pub const HEADER_NODE: &str = "x-promraft-node";
/// Header with the answering node's applied Raft index.
pub const HEADER_APPLIED: &str = "x-promraft-applied-index";

/// An API error in Prometheus's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Prometheus `errorType`.
    pub error_type: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// 400 bad_data.
    pub fn bad_data(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: msg.into(),
        }
    }
    /// 422 execution.
    pub fn execution(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_type: "execution",
            message: msg.into(),
        }
    }
    /// 503 unavailable.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: msg.into(),
        }
    }
    /// 500 internal.
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: msg.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: "error",
            error_type: self.error_type,
            error: &self.message,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()
    }
}

/// A successful API response: `{"status":"success","data":...}` plus warnings.
pub fn success<T: Serialize>(data: T, warnings: &[String]) -> Response {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        status: &'static str,
        data: T,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        warnings: &'a [String],
    }
    match serde_json::to_vec(&Ok {
        status: "success",
        data,
        warnings,
    }) {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            escape_html(json),
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("encoding response: {e}")).into_response(),
    }
}

/// A successful response around `data` that is already JSON text.
pub fn success_raw(data: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":[");
        for (i, w) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::promql::json::write_json_string(&mut out, w);
        }
        out.push(']');
    }
    out.push('}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 in serialized JSON as Go's
/// encoding/json does, so responses match Prometheus byte for byte. In
/// JSON text these can only occur inside strings, so a byte-level pass is
/// exact.
pub fn escape_html(json: Vec<u8>) -> Vec<u8> {
    if !json.iter().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2)) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if json.get(i + 1) == Some(&0x80) && matches!(json.get(i + 2), Some(0xA8 | 0xA9)) => {
                out.extend_from_slice(if json[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

async fn stamp(State(node): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let handler = match path.as_str() {
        "/api/v1/write" => "write",
        "/api/v1/query" => "query",
        "/api/v1/query_range" => "query_range",
        "/api/v1/series" => "series",
        "/api/v1/labels" => "labels",
        "/api/v1/metadata" => "metadata",
        p if p.starts_with("/api/v1/label/") => "label_values",
        _ => "other",
    };
    node.metrics.observe_http(handler, started.elapsed());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&node.id().to_string()) {
        h.insert(HEADER_NODE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&node.applied_index().to_string()) {
        h.insert(HEADER_APPLIED, v);
    }
    resp
}

/// Header a client may use instead of the `consistency` parameter.
pub const HEADER_CONSISTENCY: &str = "x-promraft-consistency";

/// Applies the read consistency the caller asked for (`consistency=` in the
/// query string or form, or the `X-Promraft-Consistency` header) before a
/// read is served from the local replica.
pub async fn read_barrier(
    node: &AppState,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: &axum::body::Bytes,
) -> Result<(), ApiError> {
    let p = params::Params::parse(query, headers, body)?;
    let level = p
        .get("consistency")
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(HEADER_CONSISTENCY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let level: crate::cluster::routing::Consistency = level
        .parse()
        .map_err(|e: crate::cluster::routing::UnknownConsistency| ApiError::bad_data(e.to_string()))?;
    crate::cluster::routing::read_barrier(&node.router, level)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

/// The router with every endpoint, behind the edge `web` (credentials,
/// roles, the admin switch: [`guard`]).
pub fn router(node: Arc<Node>, web: Arc<WebState>) -> Router {
    let node = AppState::new(node, web);
    Router::new()
        .route("/api/v1/write", post(write::remote_write))
        .route("/api/v1/read", post(remote_read::remote_read))
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route(
            "/api/v1/format_query",
            get(query::format_query).post(query::format_query),
        )
        .route("/api/v1/parse_query", get(query::parse_query).post(query::parse_query))
        .route("/api/v1/series", get(read::series).post(read::series))
        .route("/api/v1/labels", get(read::labels).post(read::labels))
        .route("/api/v1/label/{name}/values", get(read::label_values))
        .route("/api/v1/metadata", get(read::metadata))
        .route("/api/v1/rules", get(rules::rules))
        .route("/api/v1/alerts", get(rules::alerts))
        .route("/api/v1/alertmanagers", get(rules::alertmanagers))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .route("/api/v1/status/digest", get(status::digest))
        .route("/api/v1/status/cluster", get(cluster::status))
        .route("/api/v1/status/ha_replicas", get(status::ha_replicas))
        .route("/api/v1/status/config", get(promconfig::status_config))
        .route("/api/v1/targets", get(targets::targets))
        .route("/api/v1/targets/metadata", get(targets::metadata))
        .route("/api/v1/scrape_pools", get(targets::scrape_pools))
        .route("/-/reload", post(promconfig::reload).put(promconfig::reload))
        .route("/api/v1/admin/cluster/add-learner", post(cluster::add_learner))
        .route("/api/v1/admin/cluster/promote", post(cluster::promote))
        .route("/api/v1/admin/cluster/remove", post(cluster::remove))
        .route("/api/v1/admin/cluster/transfer-leader", post(cluster::transfer_leader))
        .route("/api/v1/admin/backup", get(admin::backup).post(admin::backup))
        .route("/api/v1/admin/tsdb/snapshot", post(admin::snapshot))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(admin::delete_series).put(admin::delete_series),
        )
        .route("/api/v1/admin/tsdb/export", get(admin::export))
        .route("/-/healthy", get(status::healthy).head(status::healthy))
        .route("/-/ready", get(status::ready).head(status::ready))
        .route("/metrics", get(status::metrics))
        .route("/federate", get(federate::federate).post(federate::federate))
        .layer(axum::middleware::from_fn_with_state(node.clone(), stamp))
        .layer(axum::middleware::from_fn_with_state(node.clone(), guard::guard))
        .with_state(node)
}
