//! `promraft bench rules`: how long one evaluation of a group of many
//! recording rules takes on the evaluating node, in-process.
//!
//! The rules read a TSDB filled with a node_exporter-like workload through
//! the same querier the leader uses (`rules::querier::DbQuerier`); writing
//! the results is the log's cost, measured by `bench write`, and is left
//! out. Figures are printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::workload::Workload;
use crate::kv::{SledKv, SledOptions};
use crate::rules::file::RuleFile;
use crate::rules::group::{Group, GroupContext};
use crate::rules::querier::DbQuerier;
use crate::tsdb::{AppendRequest, Db, HeadOptions, SeriesSamples};

/// Arguments of `promraft bench rules`.
#[derive(Debug, Clone, Args)]
pub struct RulesBenchArgs {
    /// Recording rules in the group.
    #[arg(long, default_value_t = 1_000)]
    pub rules: usize,
    /// Series in the TSDB.
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Evaluations of the whole group to time.
    #[arg(long, default_value_t = 10)]
    pub evaluations: usize,
}

/// The rule file: rule `i` sums one metric family of the workload by job,
/// the usual shape of a recording rule.
fn rule_file(a: &RulesBenchArgs, names: &[String]) -> String {
    let mut out = String::from("groups:\n  - name: bench\n    interval: 15s\n    rules:\n");
    for i in 0..a.rules {
        let metric = &names[i % names.len().max(1)];
        out.push_str(&format!(
            "      - record: bench:rule{i}:sum\n        expr: sum by (job) (rate({metric}[1m]))\n"
        ));
    }
    out
}

/// Runs the benchmark in a temporary sled database and prints the figures.
pub fn run(a: &RulesBenchArgs) -> Vec<Duration> {
    let dir = std::env::temp_dir().join(format!("promraft-bench-rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kv = Arc::new(SledKv::open(&dir, SledOptions::default()).expect("open a temporary sled database"));
    let (db, _) = Db::open_kv(kv, HeadOptions::default()).expect("open an empty TSDB");
    let w = Workload::new(a.series, 1);
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Five minutes of 15 s scrapes, so rate() over 1 m has samples.
    for k in 0..20i64 {
        let t = now_ms - (20 - k) * 15_000;
        let series: Vec<SeriesSamples> = (0..a.series)
            .map(|s| SeriesSamples {
                labels: w.labels(s).clone(),
                samples: vec![(t, w.sample(s, t))],
            })
            .collect();
        db.apply(&AppendRequest {
            series,
            metadata: Vec::new(),
        });
    }
    let names: Vec<String> = {
        let mut n: Vec<String> = (0..a.series).map(|s| w.labels(s).metric_name().to_string()).collect();
        n.sort();
        n.dedup();
        n
    };
    let file = RuleFile::parse("bench.yml", &rule_file(a, &names)).expect("generated rules are valid");
    let mut group = Group::new("bench.yml", &file.groups[0], 15_000);
    let q = DbQuerier {
        db: Arc::new(db),
        engine: crate::promql::Engine::default(),
        samples_max: 50_000_000,
    };
    let labels = Default::default();
    let cx = GroupContext {
        external_labels: &labels,
        external_url: "",
        resend_delay_ms: 60_000,
    };
    let mut times = Vec::with_capacity(a.evaluations);
    let mut samples = 0;
    for _ in 0..a.evaluations {
        let started = Instant::now();
        let out = group.evaluate(now_ms, &q, &cx);
        times.push(started.elapsed());
        samples = out.samples.len();
    }
    times.sort();
    let p = |f: f64| times[((times.len() - 1) as f64 * f) as usize];
    println!(
        "rules: {} recording rules over {} series ({} families): group evaluation p50 {:.1} ms, p99 {:.1} ms, {:.0} us per rule; {samples} output samples",
        a.rules,
        a.series,
        names.len(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        p(0.5).as_secs_f64() * 1e6 / a.rules.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
    times
}
