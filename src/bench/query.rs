//! `promraft bench query`: query latency against any Prometheus-compatible
//! HTTP API (promraft or Prometheus itself), so both are measured by the
//! same client in the same run.
//!
//! Each query runs `--warmup` times unmeasured, then `--runs` times; the
//! report gives the median and p90 wall time of the full HTTP round trip,
//! and checks every answer was `"status":"success"`.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

/// Arguments of `promraft bench query`.
#[derive(Debug, Clone, Args)]
pub struct QueryBenchArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:9090 (or https:// with
    /// the TLS options).
    #[arg(long)]
    pub url: String,
    /// TLS and basic auth towards the server.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    /// Instant queries to time (repeat the flag).
    #[arg(long = "query")]
    pub queries: Vec<String>,
    /// Range queries to time over [--start, --end] at --step (repeat the flag).
    #[arg(long = "range-query")]
    pub range_queries: Vec<String>,
    /// Evaluation time of instant queries and end of range queries, Unix seconds (default: newest sample + 1s via `time()` of the server is not used; pass it).
    #[arg(long)]
    pub time: f64,
    /// Length of range queries, seconds.
    #[arg(long, default_value_t = 7200.0)]
    pub range_seconds: f64,
    /// Step of range queries, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub step: f64,
    /// Measured runs per query.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Unmeasured runs per query first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
}

/// Latency of one query.
#[derive(Debug, Clone)]
pub struct QueryTiming {
    /// The query (prefixed `range:` for range queries).
    pub query: String,
    /// Median, ms.
    pub median_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// Result size in bytes of the last answer.
    pub response_bytes: usize,
}

async fn time_one(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
    a: &QueryBenchArgs,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::with_capacity(a.runs);
    let mut size = 0;
    for i in 0..(a.warmup + a.runs) {
        let started = Instant::now();
        let resp = crate::client::send(url, client.post(url).form(form)).await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() || !body.starts_with(br#"{"status":"success""#) {
            bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        size = body.len();
        if i >= a.warmup {
            times.push(took.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|x, y| x.total_cmp(y));
    Ok((times, size))
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

/// Runs the benchmark and prints one line per query.
pub async fn run(a: QueryBenchArgs) -> anyhow::Result<Vec<QueryTiming>> {
    let client = a.client.http_client(|b| b.timeout(Duration::from_secs(300)))?;
    let base = a.client.base_url(&a.url)?;
    let mut out = Vec::new();
    for q in &a.queries {
        let form = [("query", q.clone()), ("time", format!("{:.3}", a.time))];
        let (t, size) = time_one(&client, &format!("{base}/api/v1/query"), &form, &a).await?;
        out.push(QueryTiming {
            query: q.clone(),
            median_ms: pct(&t, 0.5),
            p90_ms: pct(&t, 0.9),
            response_bytes: size,
        });
    }
    for q in &a.range_queries {
        let form = [
            ("query", q.clone()),
            ("start", format!("{:.3}", a.time - a.range_seconds)),
            ("end", format!("{:.3}", a.time)),
            ("step", format!("{}", a.step)),
        ];
        let (t, size) = time_one(&client, &format!("{base}/api/v1/query_range"), &form, &a).await?;
        out.push(QueryTiming {
            query: format!("range: {q}"),
            median_ms: pct(&t, 0.5),
            p90_ms: pct(&t, 0.9),
            response_bytes: size,
        });
    }
    for t in &out {
        println!(
            "query\t{}\tmedian_ms={:.2}\tp90_ms={:.2}\tbytes={}",
            t.query, t.median_ms, t.p90_ms, t.response_bytes
        );
    }
    Ok(out)
}
