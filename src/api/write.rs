//! `POST /api/v1/write`: the remote-write 1.0 receiver.
//!
//! Checks headers and size, decodes and validates (pure, in
//! `remote_write`), commits the valid part through the log, and answers like
//! Prometheus: 204 when everything was stored, 400 with the first reason
//! when anything was rejected (the valid samples are kept), 202 when the
//! samples were copies from an HA replica that is not elected and were
//! dropped (`cluster::ha_dedup`), 413 / 415 for
//! oversized or mislabelled bodies (a remote write 2.0 request among them:
//! see `write_media`), 503 when the node cannot commit.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::{remote_write, write_media};
use crate::cluster::batcher::CommitError;
use crate::tsdb::{AppendRequest, Metadata, SeriesSamples};

// A forwarded write (the decoded request, re-encoded for the leader) fits
// in one Raft RPC message.
const _: () = assert!(remote_write::WRITE_DECODED_BYTES_MAX <= crate::raft::transport::MESSAGE_BYTES_MAX);

/// The header in which a sender names its remote-write protocol version.
const REMOTE_WRITE_VERSION: &str = "x-prometheus-remote-write-version";

fn reply(node: &AppState, code: StatusCode, msg: String) -> Response {
    node.metrics.count_write_response(code.as_u16());
    if code == StatusCode::NO_CONTENT {
        return code.into_response();
    }
    if code.is_server_error() {
        tracing::debug!(code = code.as_u16(), %msg, "remote write not committed");
    }
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// `Retry-After` of a 429 (the leader's write queue is full), seconds: the
/// queue drains in well under a second on a healthy leader.
const OVERLOADED_RETRY_AFTER_SECS: &str = "1";

/// The remote-write handler.
pub async fn remote_write(State(node): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let limits = node.write_limits;
    let limit = limits.body_bytes_max;
    if let Err((code, msg)) = check_headers(&headers, limit) {
        return reply(&node, code, msg);
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(msg) = crate::web::server::body_timeout(&e) {
                return reply(&node, StatusCode::BAD_REQUEST, msg);
            }
            return reply(
                &node,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            );
        }
    };
    let decoded = match remote_write::decode_with(&bytes, &limits) {
        Ok(d) => d,
        Err(e) => {
            let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return reply(&node, code, e.to_string());
        }
    };
    let v = remote_write::validate_with(decoded, &limits);
    node.metrics
        .samples_invalid
        .fetch_add((v.samples_rejected + v.histograms_rejected) as u64, Ordering::Relaxed);
    let mut first_error = v.rejected.first().cloned();
    let mut ha_note = None;
    let req = append_request(v);
    if !req.series.is_empty() || !req.metadata.is_empty() {
        match crate::cluster::routing::write(&node.router, req).await {
            Ok(res) => {
                if first_error.is_none() {
                    first_error = res.first_error;
                }
                ha_note = res.ha_note.filter(|_| res.ha_dropped > 0);
            }
            Err(e @ CommitError::Overloaded(_)) => {
                // Refused before it cost consensus anything: the sender
                // backs off (remote write honours Retry-After) and resends.
                let mut r = reply(&node, StatusCode::TOO_MANY_REQUESTS, e.to_string());
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS),
                );
                return r;
            }
            Err(e @ CommitError::Unavailable(_)) => {
                return reply(&node, StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            // Validation drops such series first; this is the batcher's
            // own refusal (nothing of the request was committed).
            Err(e @ CommitError::TooLarge(_)) => {
                return reply(&node, StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
        }
    }
    match (first_error, ha_note) {
        (Some(msg), _) => reply(&node, StatusCode::BAD_REQUEST, msg),
        // Copies from an HA replica that is not elected: success for the
        // sender (it must not retry them), as Mimir answers.
        (None, Some(note)) => reply(&node, StatusCode::ACCEPTED, note),
        (None, None) => reply(&node, StatusCode::NO_CONTENT, String::new()),
    }
}

/// Refuses a request by its headers alone: a message other than remote
/// write 1.0 (415, see `write_media`), an encoding other than snappy (415),
/// or a declared length past `limit` bytes (413).
fn check_headers(headers: &HeaderMap, limit: usize) -> Result<(), (StatusCode, String)> {
    // A header that is not visible ASCII is kept as a value no check accepts.
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Err(e) = write_media::check(text(header::CONTENT_TYPE.as_str()), text(REMOTE_WRITE_VERSION)) {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()));
    }
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("");
        if !enc.eq_ignore_ascii_case("snappy") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {enc:?}: remote write 1.0 requires snappy"),
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(())
}

/// The valid series and metadata of a decoded request, as the TSDB appends them.
fn append_request(v: remote_write::Validated) -> AppendRequest {
    AppendRequest {
        series: v
            .series
            .into_iter()
            .map(|s| SeriesSamples {
                labels: s.labels,
                samples: s.samples,
            })
            .collect(),
        metadata: v
            .metadata
            .into_iter()
            .map(|m| Metadata {
                metric_family_name: m.metric_family_name,
                kind: m.kind.to_string(),
                help: m.help,
                unit: m.unit,
            })
            .collect(),
    }
}
