//! Backup and TSDB admin endpoints.
//!
//! - `GET|POST /api/v1/admin/backup`: streams a backup file of this node's
//!   replica at a consistent applied index (see `backup::source`).
//! - `POST /api/v1/admin/tsdb/snapshot`: writes such a file into
//!   `<data-dir>/backups/` and answers its name, in Prometheus's shape.
//! - `POST|PUT /api/v1/admin/tsdb/delete_series`: deletes series through the
//!   log, so every replica deletes the same; relayed to the leader.
//! - `GET /api/v1/admin/tsdb/export`: OpenMetrics text of a selector and a
//!   time range.
//!
//! Handlers only parse, stream and map errors; the work is in `backup`.

use std::io::{self, Write};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::params::Params;
use super::{success, ApiError, AppState};
use crate::backup::Error as BackupError;
use crate::raft::command::{Command, MatcherSpec};

/// Backups (streams and snapshots) one node serves at once; each holds a
/// spool file as large as the checkpoint and a blocking thread.
pub const BACKUPS_IN_FLIGHT_MAX: usize = 2;

static BACKUP_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BACKUPS_IN_FLIGHT_MAX);

/// Chunks buffered between a blocking writer and the HTTP response.
const STREAM_CHANNEL_CHUNKS: usize = 8;
/// Bytes gathered before a chunk is handed to the response.
const STREAM_CHUNK_BYTES: usize = 256 * 1024;
/// Deadline for committing a delete through the log.
const DELETE_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking writer whose bytes become an HTTP response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK_BYTES)));
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the body with an error, so the client sees a broken stream
    /// rather than a short one that looks complete.
    fn fail(self, e: String) {
        let _ = self.tx.blocking_send(Err(io::Error::other(e)));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= STREAM_CHUNK_BYTES {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A response body fed by a blocking writer; returns the writer and the body.
fn streamed_body() -> (ChannelWriter, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHANNEL_CHUNKS);
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(STREAM_CHUNK_BYTES),
        },
        Body::from_stream(stream),
    )
}

fn backup_error(e: BackupError) -> ApiError {
    match e {
        BackupError::Source(m) => ApiError::unavailable(m),
        e => ApiError::internal(e.to_string()),
    }
}

/// `GET|POST /api/v1/admin/backup`: the backup file, streamed.
pub async fn backup(State(node): State<AppState>) -> Response {
    let Ok(permit) = BACKUP_SLOTS.try_acquire() else {
        return ApiError::unavailable(format!(
            "{BACKUPS_IN_FLIGHT_MAX} backups are already running on this node; retry later"
        ))
        .into_response();
    };
    let prepared = match crate::backup::source::prepare(&node.backup_source()).await {
        Ok(p) => p,
        Err(e) => return backup_error(e).into_response(),
    };
    let index = prepared.header.applied_index;
    let (mut w, body) = streamed_body();
    let metrics = node.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match prepared.write_to(&mut w, None) {
            Ok(_) => match w.flush() {
                Ok(()) => metrics.backup_succeeded(),
                Err(e) => tracing::warn!(error = %e, "backup stream not finished"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "backup stream failed");
                w.fail(e.to_string());
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"promraft-{}-{index}.prbackup\"", node.id()),
            ),
            (
                header::HeaderName::from_static("x-promraft-backup-index"),
                index.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct SnapshotOut {
    name: String,
}

/// `POST /api/v1/admin/tsdb/snapshot`: writes a backup file into
/// `<data-dir>/backups/` and answers `{"name": ...}`.
pub async fn snapshot(State(node): State<AppState>) -> Response {
    let Ok(_permit) = BACKUP_SLOTS.try_acquire() else {
        return ApiError::unavailable(format!(
            "{BACKUPS_IN_FLIGHT_MAX} backups are already running on this node; retry later"
        ))
        .into_response();
    };
    match crate::backup::source::snapshot_to_dir(&node.backup_source()).await {
        Ok(name) => {
            node.metrics.backup_succeeded();
            success(SnapshotOut { name }, &[])
        }
        Err(e) => backup_error(e).into_response(),
    }
}

/// Relays a request to the leader's HTTP API when this node is not it.
pub(super) async fn relay_to_leader(
    node: &AppState,
    method: reqwest::Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    let m = node.raft_metrics();
    let leader = m.current_leader?;
    if leader == node.id() {
        return None;
    }
    let Some(addr) = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.http_addr.clone())
    else {
        return Some(ApiError::unavailable(format!("leader {leader} has no known HTTP address")).into_response());
    };
    let (client, scheme) = match node.peer_client(DELETE_COMMIT_TIMEOUT) {
        Ok(c) => c,
        Err(e) => return Some(e.into_response()),
    };
    let url = match query {
        Some(q) => format!("{scheme}://{addr}{path}?{q}"),
        None => format!("{scheme}://{addr}{path}"),
    };
    let mut req = client.request(method, &url).body(body.clone());
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        req = req.header("Content-Type", ct);
    }
    // The leader checks the caller's own credentials.
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, a.clone());
    }
    Some(match req.send().await {
        Ok(r) => {
            let code = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let b = r.bytes().await.unwrap_or_default();
            (code, [(header::CONTENT_TYPE, "application/json")], b).into_response()
        }
        Err(e) => ApiError::unavailable(format!("relaying to leader {leader} at {addr}: {e}")).into_response(),
    })
}

/// `POST|PUT /api/v1/admin/tsdb/delete_series?match[]=...&start=...&end=...`:
/// 204 once every matching series is deleted on the leader (followers
/// apply the same log entry). Series with samples outside the range are
/// refused with 400: deleting part of a series is not supported.
pub async fn delete_series(
    State(node): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let p = Params::parse(q.as_deref(), &headers, &body)?;
        let sets = p.matchers()?;
        if sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let start = p.time("start", i64::MIN)?;
        let end = p.time("end", i64::MAX)?;
        if end < start {
            return Err(ApiError::bad_data("end timestamp must not be before start time"));
        }
        if let Some(r) = relay_to_leader(
            &node,
            reqwest::Method::POST,
            "/api/v1/admin/tsdb/delete_series",
            q.as_deref(),
            &headers,
            &body,
        )
        .await
        {
            return Ok(r);
        }
        if node.raft_metrics().current_leader != Some(node.id()) {
            return Err(ApiError::unavailable(
                "no leader is known; retry when the cluster has one",
            ));
        }
        let partial = node.db.series_partly_in(&sets, start, end);
        if let Some(first) = partial.first() {
            return Err(ApiError::bad_data(format!(
                "{} matching series (e.g. {first}) have samples outside the range; deleting part of a series is not supported, widen the range or omit start and end",
                partial.len()
            )));
        }
        let cmd = Command::DeleteSeries {
            selectors: sets.iter().map(|s| s.iter().map(MatcherSpec::of).collect()).collect(),
            start_ms: start,
            end_ms: end,
        };
        match tokio::time::timeout(DELETE_COMMIT_TIMEOUT, node.raft.client_write(cmd)).await {
            Ok(Ok(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
            Ok(Err(e)) => Err(ApiError::unavailable(format!("delete not committed: {e}"))),
            Err(_) => Err(ApiError::unavailable(
                "delete not committed in time; it may still apply",
            )),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/admin/tsdb/export?match[]=...&start=...&end=...`:
/// OpenMetrics text of the matching series (all when no `match[]`).
pub async fn export(State(node): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &Bytes::new()).await {
        return e.into_response();
    }
    let parsed = (|| {
        let p = Params::parse(q.as_deref(), &headers, &Bytes::new())?;
        let sets = p.matchers()?;
        let start = p.time("start", i64::MIN)?;
        let end = p.time("end", i64::MAX)?;
        if end < start {
            return Err(ApiError::bad_data("end timestamp must not be before start time"));
        }
        Ok((sets, start, end))
    })();
    let (sets, start, end) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let db = node.db.clone();
    let (mut w, body) = streamed_body();
    tokio::task::spawn_blocking(move || {
        match crate::backup::openmetrics::write_openmetrics(&db, &sets, start, end, &mut w) {
            Ok(st) => tracing::info!(
                series = st.series,
                samples = st.samples,
                skipped = st.skipped,
                "openmetrics export"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "openmetrics export failed");
                w.fail(e.to_string());
            }
        }
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
