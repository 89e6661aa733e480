//! The Prometheus configuration file over HTTP: `POST /-/reload`,
//! `GET /api/v1/status/config`, and its lines in `/metrics`.
//!
//! Owns only the HTTP shapes; loading and checking are `promcfg`'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{success, AppState};
use crate::metrics::gauge;

/// `POST /-/reload` (admin role): re-reads the file. 200 when the new file
/// is in force; 500 with the reason when it was refused (the old one stays
/// in force), as Prometheus answers.
pub async fn reload(State(node): State<AppState>) -> Response {
    match node.promcfg.reload() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

/// `GET /api/v1/status/config`: `{"yaml": ...}` of the configuration in
/// force (defaults filled in, secrets hidden), plus its digest.
pub async fn status_config(State(node): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Data {
        yaml: String,
        digest: String,
    }
    let data = match node.promcfg.current() {
        Some(c) => Data {
            yaml: c.yaml(),
            digest: c.digest.clone(),
        },
        None => Data {
            yaml: String::new(),
            digest: String::new(),
        },
    };
    success(data, &[])
}

/// The reload outcome and the digest, for `/metrics`.
pub fn render_metrics(out: &mut String, node: &AppState) {
    let p = &node.promcfg;
    gauge(
        out,
        "promraft_config_last_reload_successful",
        "Whether the last load of the Prometheus configuration file succeeded.",
        if p.last_reload_successful() { 1.0 } else { 0.0 },
    );
    gauge(
        out,
        "promraft_config_last_reload_success_timestamp_seconds",
        "When the Prometheus configuration file was last loaded successfully.",
        p.last_success_timestamp_s() as f64,
    );
    out.push_str(
        "# HELP promraft_prometheus_config_info The Prometheus configuration file in force, by SHA-256 digest.\n\
         # TYPE promraft_prometheus_config_info gauge\n",
    );
    out.push_str(&format!(
        "promraft_prometheus_config_info{{digest=\"{}\"}} 1\n",
        p.digest()
    ));
}
