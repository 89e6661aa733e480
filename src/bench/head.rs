//! `promraft bench head`: appends per second into the head on one core, and
//! memory per active series, for a node_exporter-like workload.
//!
//! The head is driven directly (no Raft, no HTTP) through the same
//! `Db::apply` the state machine calls, so the figure is the ceiling the
//! apply path can reach on one core.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::workload::Workload;
use crate::kv::{Kv, SledKv, SledOptions};
use crate::tsdb::{AppendRequest, Db, HeadOptions, SeriesSamples};

/// Arguments of `promraft bench head`.
#[derive(Debug, Clone, Args)]
pub struct HeadBenchArgs {
    /// Active series.
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Scrapes to append per series (2 h at 15 s = 480).
    #[arg(long, default_value_t = 480)]
    pub scrapes: usize,
    /// Scrape interval, ms.
    #[arg(long, default_value_t = 15_000)]
    pub interval_ms: i64,
    /// Series per apply call (one remote-write request's worth).
    #[arg(long, default_value_t = 2_000)]
    pub batch_series: usize,
}

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct HeadBenchReport {
    /// Samples appended.
    pub samples: u64,
    /// Appends per second (one thread).
    pub appends_per_sec: f64,
    /// Appends per second counting only samples to existing series (after the first scrape).
    pub steady_appends_per_sec: f64,
    /// Head heap bytes per series, as the head accounts them.
    pub head_bytes_per_series: f64,
    /// Encoded chunk bytes per sample (the codec's share).
    pub chunk_bytes_per_sample: f64,
    /// Checkpoint bytes on disk per sample after a final checkpoint.
    pub disk_bytes_per_sample: f64,
}

/// Runs the benchmark in a temporary sled database.
pub fn run(a: &HeadBenchArgs) -> HeadBenchReport {
    let dir = std::env::temp_dir().join(format!("promraft-bench-head-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sled_db = Arc::new(SledKv::open(&dir, SledOptions::default()).expect("open a temporary sled database"));
    let (db, _) = Db::open_kv(sled_db.clone(), HeadOptions::default()).expect("open an empty TSDB");
    let w = Workload::new(a.series, 1);
    let start_ms = 1_700_000_000_000i64;
    // Pre-build the requests so the timing covers apply only.
    let mut requests: Vec<AppendRequest> = Vec::new();
    for scrape in 0..a.scrapes {
        let t = start_ms + scrape as i64 * a.interval_ms;
        for lo in (0..a.series).step_by(a.batch_series.max(1)) {
            let hi = (lo + a.batch_series).min(a.series);
            requests.push(AppendRequest {
                series: (lo..hi)
                    .map(|i| SeriesSamples {
                        labels: w.labels(i).clone(),
                        samples: vec![(t, w.sample(i, t))],
                    })
                    .collect(),
                metadata: Vec::new(),
            });
        }
    }
    let first_scrape_requests = a.series.div_ceil(a.batch_series.max(1));
    let started = Instant::now();
    let mut steady_started = started;
    let mut samples = 0u64;
    for (i, r) in requests.iter().enumerate() {
        if i == first_scrape_requests {
            steady_started = Instant::now();
        }
        samples += db.apply(r).appended;
    }
    let total = started.elapsed().as_secs_f64();
    let steady = steady_started.elapsed().as_secs_f64();
    let steady_samples = samples.saturating_sub(a.series as u64);
    let head_bytes = db.head().heap_bytes() as f64;
    let chunk_bytes: usize = db
        .head()
        .iter_series()
        .map(|(_, s)| {
            s.closed
                .iter()
                .filter_map(|c| c.pending.as_ref())
                .map(|b| b.len())
                .sum::<usize>()
                + s.open.as_ref().map_or(0, |c| c.bytes().len())
        })
        .sum();
    db.checkpoint(Vec::new()).expect("checkpoint");
    let disk = sled_db.size_on_disk() as f64;
    drop(db);
    drop(sled_db);
    let _ = std::fs::remove_dir_all(&dir);
    let r = HeadBenchReport {
        samples,
        appends_per_sec: samples as f64 / total,
        steady_appends_per_sec: steady_samples as f64 / steady,
        head_bytes_per_series: head_bytes / a.series as f64,
        chunk_bytes_per_sample: chunk_bytes as f64 / samples.max(1) as f64,
        disk_bytes_per_sample: disk / samples.max(1) as f64,
    };
    println!(
        "head bench: {} series x {} scrapes = {} samples\n  appends/s (one core, incl. series creation): {:.0}\n  appends/s (steady state): {:.0}\n  head heap bytes/series: {:.0}\n  chunk bytes/sample: {:.3}\n  sled bytes on disk/sample after checkpoint: {:.3}",
        a.series, a.scrapes, r.samples, r.appends_per_sec, r.steady_appends_per_sec, r.head_bytes_per_series, r.chunk_bytes_per_sample, r.disk_bytes_per_sample
    );
    r
}
