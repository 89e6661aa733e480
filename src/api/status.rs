//! Health, readiness, build and TSDB status, the replica digest and
//! `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::{success, ApiError, AppState};
use crate::metrics::{counter, gauge, resident_memory_bytes};
use crate::node::Node;

/// `GET /-/healthy`: the process is up.
pub async fn healthy() -> Response {
    (StatusCode::OK, "Promraft is Healthy.\n").into_response()
}

/// `GET /-/ready`: the node knows a leader and has applied what it knows
/// to be committed, so it can serve reads and accept writes.
pub async fn ready(State(node): State<AppState>) -> Response {
    if node.is_ready() {
        (StatusCode::OK, "Promraft is Ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: no leader known or log not yet applied\n",
        )
            .into_response()
    }
}

/// `GET /api/v1/status/buildinfo`. `version` is the Prometheus API level
/// promraft implements, which is what Grafana reads to pick features;
/// promraft's own version is in `promraftVersion`.
pub async fn buildinfo() -> Response {
    success(
        json!({
            "version": "3.0.0",
            "revision": env!("CARGO_PKG_VERSION"),
            "branch": "main",
            "buildUser": "promraft",
            "buildDate": "",
            "goVersion": "n/a (promraft is written in Rust)",
            "application": "promraft",
            "promraftVersion": env!("CARGO_PKG_VERSION"),
        }),
        &[],
    )
}

/// `GET /api/v1/status/flags`: this node's configuration in force, each
/// option by its dotted name (promraft's options stand in for Prometheus's
/// command-line flags; most are set in the `--config` file).
pub async fn flags(State(node): State<AppState>) -> Response {
    success(node.flags(), &[])
}

/// `GET /api/v1/status/runtimeinfo`: Prometheus's fields, with the Go
/// runtime's counterparts of this process: tokio's live tasks for
/// `goroutineCount`, the cores it may use for `GOMAXPROCS`.
pub async fn runtimeinfo(State(node): State<AppState>) -> Response {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now = chrono::Utc::now();
    let started = now - chrono::Duration::from_std(node.started.elapsed()).unwrap_or_default();
    let reloaded = chrono::DateTime::from_timestamp(node.promcfg.last_success_timestamp_s(), 0)
        .filter(|_| node.promcfg.current().is_some())
        .unwrap_or(started);
    success(
        json!({
            "startTime": time(started),
            "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
            "reloadConfigSuccess": node.promcfg.last_reload_successful(),
            "lastConfigTime": time(reloaded),
            "corruptionCount": 0,
            "goroutineCount": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            "GOMAXPROCS": std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            "GOMEMLIMIT": i64::MAX,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": crate::config::format_duration(node.storage_retention()),
        }),
        &[],
    )
}

#[derive(Serialize)]
struct NameValue {
    name: String,
    value: usize,
}

fn nv(v: Vec<(String, usize)>) -> Vec<NameValue> {
    v.into_iter().map(|(name, value)| NameValue { name, value }).collect()
}

/// `GET /api/v1/status/tsdb`
pub async fn tsdb(State(node): State<AppState>) -> Response {
    let s = node.db.status();
    let (min, max) = if s.num_series == 0 {
        (i64::MAX, i64::MIN)
    } else {
        (s.min_time_ms, s.max_time_ms)
    };
    success(
        json!({
            "headStats": {
                "numSeries": s.num_series,
                "numLabelPairs": s.series_by_label_pair.len(),
                "chunkCount": 0,
                "minTime": min,
                "maxTime": max,
            },
            "seriesCountByMetricName": nv(s.series_by_metric),
            "labelValueCountByLabelName": nv(s.values_by_label_name),
            "memoryInBytesByLabelName": [],
            "seriesCountByLabelValuePair": nv(s.series_by_label_pair),
        }),
        &[],
    )
}

/// `GET /api/v1/status/digest`: a hash of this replica's content and the
/// applied index it belongs to. Replicas at the same index must agree.
pub async fn digest(State(node): State<AppState>) -> Response {
    let db = node.db.clone();
    // Retried while changes keep landing during the read.
    let res = tokio::task::spawn_blocking(move || db.digest_at(100)).await;
    match res {
        Ok(Ok(Some((d, index)))) => success(
            json!({"digest": d.digest, "series": d.series, "samples": d.samples, "appliedIndex": index}),
            &[],
        ),
        Ok(Ok(None)) => ApiError::unavailable("writes kept changing the data; retry").into_response(),
        Ok(Err(e)) => ApiError::internal(e.to_string()).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// `GET /api/v1/status/ha_replicas`: the elected replica of each HA sender
/// cluster, as this node has applied it (every node answers the same once
/// it has caught up), with the dedup configuration in force here.
pub async fn ha_replicas(State(node): State<AppState>) -> Response {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or_else(String::new, |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let clusters: Vec<serde_json::Value> = node
        .ha_replicas
        .read()
        .iter()
        .map(|(cluster, e)| {
            json!({
                "cluster": cluster,
                "replica": e.replica,
                "electedAt": time(e.elected_at_ms),
                "lastSeenAt": time(e.seen_ms),
                "elections": e.elections,
            })
        })
        .collect();
    let cfg = node.router.ha.as_ref().map(|gate| gate.config());
    success(
        json!({
            "enabled": cfg.is_some(),
            "clusterLabel": cfg.map(|c| c.cluster_label.clone()),
            "replicaLabel": cfg.map(|c| c.replica_label.clone()),
            "failoverTimeoutSeconds": cfg.map(|c| c.failover_timeout.as_secs_f64()),
            "clusters": clusters,
        }),
        &[],
    )
}

/// `GET /metrics`: the node's own metrics in the text exposition format.
pub async fn metrics(State(node): State<AppState>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    tsdb_metrics(&mut out, &node);
    raft_metrics(&mut out, &node);
    log_metrics(&mut out, &node);
    node.metrics.render(&mut out);
    node.web.render_metrics(&mut out);
    crate::cluster::ha_dedup::render_metrics(&mut out, &node.ha_replicas, node.router.ha.as_deref());
    node.rules.render_metrics(&mut out);
    node.notifier.render_metrics(&mut out);
    super::promconfig::render_metrics(&mut out, &node);
    process_metrics(&mut out, &node);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The TSDB's counters and sizes.
fn tsdb_metrics(out: &mut String, node: &Node) {
    let s = node.db.status();
    counter(
        out,
        "promraft_samples_ingested_total",
        "Samples appended to the TSDB by apply.",
        s.samples_appended,
    );
    out.push_str("# HELP promraft_samples_rejected_total Samples rejected by apply, by reason.\n# TYPE promraft_samples_rejected_total counter\n");
    for (r, n) in &s.rejected {
        out.push_str(&format!(
            "promraft_samples_rejected_total{{reason=\"{}\"}} {n}\n",
            r.label()
        ));
    }
    gauge(out, "promraft_head_series", "Series in the head.", s.num_series as f64);
    gauge(
        out,
        "promraft_head_memory_bytes",
        "Approximate heap bytes of the head.",
        s.heap_bytes as f64,
    );
    gauge(
        out,
        "promraft_tsdb_disk_bytes",
        "Bytes of the TSDB database on disk (chunk blocks, index, checkpoint).",
        s.disk_bytes as f64,
    );
}

/// Raft's state as openraft reports it, with replication lag on a leader.
fn raft_metrics(out: &mut String, node: &Node) {
    gauge(
        out,
        "promraft_raft_log_disk_bytes",
        "Bytes of the Raft log database on disk.",
        node.log_disk_bytes() as f64,
    );
    let m = node.raft_metrics();
    gauge(out, "promraft_raft_term", "Current Raft term.", m.current_term as f64);
    gauge(
        out,
        "promraft_raft_is_leader",
        "1 if this node leads and holds its lease (a quorum acknowledged it within raft.election_timeout_max_ms).",
        if m.current_leader == Some(node.id()) && node.holds_lease() {
            1.0
        } else {
            0.0
        },
    );
    gauge(
        out,
        "promraft_raft_leader_lease_expired",
        "1 if Raft still has this node as leader but no quorum acknowledged it within its lease: it takes no writes.",
        if m.current_leader == Some(node.id()) && !node.holds_lease() {
            1.0
        } else {
            0.0
        },
    );
    gauge(
        out,
        "promraft_raft_last_log_index",
        "Index of the last log entry.",
        m.last_log_index.unwrap_or(0) as f64,
    );
    gauge(
        out,
        "promraft_raft_commit_index",
        "Committed log index.",
        m.local_committed.map_or(0, |l| l.index) as f64,
    );
    gauge(
        out,
        "promraft_raft_applied_index",
        "Applied log index.",
        m.last_applied.map_or(0, |l| l.index) as f64,
    );
    gauge(
        out,
        "promraft_raft_snapshot_index",
        "Log index of the last checkpoint.",
        m.snapshot.map_or(0, |l| l.index) as f64,
    );
    gauge(
        out,
        "promraft_raft_log_entries",
        "Entries in the Raft log (not yet purged).",
        node.log_entries() as f64,
    );
    if let Some(repl) = &m.replication {
        out.push_str("# HELP promraft_raft_replication_lag_entries Entries a follower is behind the leader's last log index (leader only).\n# TYPE promraft_raft_replication_lag_entries gauge\n");
        let last = m.last_log_index.unwrap_or(0);
        for (id, matched) in repl {
            let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
            out.push_str(&format!(
                "promraft_raft_replication_lag_entries{{follower=\"{id}\"}} {lag}\n"
            ));
        }
    }
}

/// The Raft log store's disk counters.
fn log_metrics(out: &mut String, node: &Node) {
    let ls = &node.log_stats;
    counter(
        out,
        "promraft_raft_log_fsyncs_total",
        "fsyncs of the Raft log.",
        ls.fsyncs.load(Ordering::Relaxed),
    );
    gauge(
        out,
        "promraft_raft_log_fsync_seconds_total",
        "Seconds spent in Raft log fsyncs.",
        ls.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    counter(
        out,
        "promraft_raft_log_entries_appended_total",
        "Entries appended to the Raft log.",
        ls.entries_appended.load(Ordering::Relaxed),
    );
    counter(
        out,
        "promraft_raft_log_bytes_appended_total",
        "Bytes appended to the Raft log.",
        ls.bytes_appended.load(Ordering::Relaxed),
    );
}

/// The process's memory and uptime.
fn process_metrics(out: &mut String, node: &Node) {
    if let Some(rss) = resident_memory_bytes() {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        );
    }
    gauge(
        out,
        "process_uptime_seconds",
        "Seconds since the node started.",
        node.started.elapsed().as_secs_f64(),
    );
}
