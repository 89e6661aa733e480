//! The node's own metrics and their Prometheus text exposition.
//!
//! A deliberately small registry: counters and fixed-bucket histograms on
//! atomics, so recording on the write and query paths costs a few atomic
//! adds and never allocates. Gauges that mirror state (Raft indexes, head
//! series) are read at scrape time instead of being stored.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets, seconds: 0.5 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// Size buckets (samples per batch).
pub const SIZE_BUCKETS: [f64; 10] = [
    1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 10000.0, 50000.0, 100000.0,
];

/// A cumulative histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self
                .sum_bits
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Writes the histogram's lines; `labels` is `` or `a="b",`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let trimmed = labels.trim_end_matches(',');
        let braces = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{{{trimmed}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// HTTP handlers with a latency histogram.
pub const HANDLERS: [&str; 8] = [
    "write",
    "query",
    "query_range",
    "series",
    "labels",
    "label_values",
    "metadata",
    "other",
];

/// Remote-write outcomes counted by status code.
pub const WRITE_CODES: [u16; 7] = [204, 400, 413, 415, 429, 500, 503];

/// Everything the node records.
pub struct Metrics {
    /// Request latency per handler (index into [`HANDLERS`]).
    pub http_latency: Vec<Histogram>,
    /// Remote-write responses per code (index into [`WRITE_CODES`]).
    pub write_responses: Vec<AtomicU64>,
    /// Samples dropped before the log because their series was invalid.
    pub samples_invalid: AtomicU64,
    /// Samples per log entry proposed.
    pub batch_samples: Histogram,
    /// Largest write entry payload proposed since start, in bytes.
    pub entry_payload_bytes_max: AtomicU64,
    /// Time from proposing an entry to its commit and apply.
    pub commit_latency: Histogram,
    /// Leader changes seen by this node.
    pub leader_changes: AtomicU64,
    /// Queries that failed on a limit.
    pub queries_limited: AtomicU64,
    /// When this node last finished a backup (ms since the epoch; 0: none
    /// since it started).
    pub backup_last_success_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_latency: HANDLERS.iter().map(|_| Histogram::new(&LATENCY_BUCKETS)).collect(),
            write_responses: WRITE_CODES.iter().map(|_| AtomicU64::new(0)).collect(),
            samples_invalid: AtomicU64::new(0),
            batch_samples: Histogram::new(&SIZE_BUCKETS),
            entry_payload_bytes_max: AtomicU64::new(0),
            commit_latency: Histogram::new(&LATENCY_BUCKETS),
            leader_changes: AtomicU64::new(0),
            queries_limited: AtomicU64::new(0),
            backup_last_success_ms: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records a handler's latency.
    pub fn observe_http(&self, handler: &str, d: Duration) {
        let i = HANDLERS
            .iter()
            .position(|h| *h == handler)
            .unwrap_or(HANDLERS.len() - 1);
        self.http_latency[i].observe_duration(d);
    }

    /// Counts a remote-write response.
    pub fn count_write_response(&self, code: u16) {
        let i = WRITE_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(WRITE_CODES.len() - 2);
        self.write_responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the node's own series (gauges are added by the caller).
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP promraft_http_request_duration_seconds HTTP request latency by handler.\n");
        out.push_str("# TYPE promraft_http_request_duration_seconds histogram\n");
        for (h, hist) in HANDLERS.iter().zip(&self.http_latency) {
            hist.render(
                out,
                "promraft_http_request_duration_seconds",
                &format!("handler=\"{h}\","),
            );
        }
        out.push_str("# HELP promraft_remote_write_responses_total Remote-write responses by status code.\n");
        out.push_str("# TYPE promraft_remote_write_responses_total counter\n");
        for (c, n) in WRITE_CODES.iter().zip(&self.write_responses) {
            let _ = writeln!(
                out,
                "promraft_remote_write_responses_total{{code=\"{c}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "promraft_samples_invalid_total",
            "Samples dropped before the log because their series labels were invalid.",
            self.samples_invalid.load(Ordering::Relaxed),
        );
        out.push_str("# HELP promraft_write_batch_samples Samples per proposed log entry (group commit).\n");
        out.push_str("# TYPE promraft_write_batch_samples histogram\n");
        self.batch_samples.render(out, "promraft_write_batch_samples", "");
        gauge(
            out,
            "promraft_write_entry_payload_bytes_max",
            "Largest write log entry payload proposed since start, in bytes (the limit is 98304).",
            self.entry_payload_bytes_max.load(Ordering::Relaxed) as f64,
        );
        out.push_str("# HELP promraft_write_commit_seconds Time from proposing a log entry to its commit and apply.\n");
        out.push_str("# TYPE promraft_write_commit_seconds histogram\n");
        self.commit_latency.render(out, "promraft_write_commit_seconds", "");
        counter(
            out,
            "promraft_raft_leader_changes_total",
            "Leader changes observed by this node.",
            self.leader_changes.load(Ordering::Relaxed),
        );
        counter(
            out,
            "promraft_queries_limited_total",
            "Queries refused or stopped by a limit.",
            self.queries_limited.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "promraft_backup_last_success_timestamp_seconds",
            "When this node last finished a backup (0: none since it started).",
            self.backup_last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
    }

    /// Records a finished backup.
    pub fn backup_succeeded(&self) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.backup_last_success_ms
            .store(u64::try_from(now_ms).unwrap_or(0), Ordering::Relaxed);
    }
}

/// Writes one counter with HELP and TYPE.
pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

/// Writes one gauge with HELP and TYPE.
pub fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Resident memory of this process, bytes (Linux), for `/metrics` and the
/// memory benchmark.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new(&SIZE_BUCKETS);
        h.observe(5.0);
        h.observe(5000.0);
        h.observe(1e9);
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"10\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"10000\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
    }
}
