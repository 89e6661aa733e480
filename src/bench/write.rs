//! `promraft bench write`: a remote-write load generator.
//!
//! This file owns backfilling a [`Workload`] into any remote-write 1.0
//! receiver (promraft or Prometheus) over HTTP and measuring it: encoding
//! requests, sending them with retries, and reporting acknowledged samples
//! per second, latency percentiles and errors. It must not reach into the
//! server's internals (it only speaks HTTP), and it must keep each series'
//! samples in time order on the wire: samples go out by time then series,
//! and each series belongs to exactly one worker.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use prost::Message;

use super::workload::Workload;
use crate::prompb;

/// Arguments of `promraft bench write`.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteBenchArgs {
    /// Remote-write endpoint, for example http://127.0.0.1:9090/api/v1/write
    /// (or https:// with the TLS options).
    #[arg(long)]
    pub url: String,
    /// Number of series.
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Time between two samples of a series (for example 15s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Span of history to write (for example 2h).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub duration: Duration,
    /// Parallel senders; the series are split into this many disjoint shards.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// First timestamp, RFC 3339 or Unix milliseconds [default: now - duration].
    #[arg(long, value_parser = parse_start)]
    pub start: Option<i64>,
    /// Most series (one sample each) in one request.
    #[arg(long, default_value_t = 2000)]
    pub batch_series: usize,
    /// Seed of the workload; the same seed writes the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of one request after a 5xx, a 429 or a connection error.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Stop sending new requests after this much wall time, written or not
    /// (for a soak: a history longer than the run keeps the load on).
    #[arg(long, value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// TLS and basic auth towards the receiver.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// What a write benchmark measured. Other benchmarks reuse it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBenchReport {
    /// Series written.
    pub series: usize,
    /// Samples in all requests, each counted once however often it was retried.
    pub samples_sent: u64,
    /// Samples in requests answered 2xx.
    pub samples_acked: u64,
    /// Samples in requests that failed for good (4xx, or retries exhausted).
    pub samples_failed: u64,
    /// Requests answered 2xx.
    pub requests: u64,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Failed attempts by HTTP status (each retry attempt counts).
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Failed attempts without an HTTP status (connect, reset, timeout).
    pub transport_errors: u64,
    /// Snappy-compressed bytes of acknowledged requests.
    pub bytes_acked: u64,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// `samples_acked` per second of `elapsed`.
    pub samples_per_sec: f64,
    /// Median latency of acknowledged requests, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile latency of acknowledged requests, milliseconds.
    pub latency_p99_ms: f64,
    /// Slowest acknowledged request, milliseconds.
    pub latency_max_ms: f64,
    /// The last error seen, for diagnosis (status and body, or the transport error).
    pub last_error: Option<String>,
}

impl fmt::Display for WriteBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "series:            {}", self.series)?;
        writeln!(
            f,
            "samples:           {} acknowledged, {} failed, {} sent",
            self.samples_acked, self.samples_failed, self.samples_sent
        )?;
        writeln!(f, "elapsed:           {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "throughput:        {:.0} samples/s acknowledged",
            self.samples_per_sec
        )?;
        writeln!(
            f,
            "requests:          {} acknowledged, {} retries, {:.1} MiB sent",
            self.requests,
            self.retries,
            self.bytes_acked as f64 / 1_048_576.0
        )?;
        writeln!(
            f,
            "latency:           p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_max_ms
        )?;
        let mut errors: Vec<String> = self.errors_by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        if self.transport_errors > 0 {
            errors.push(format!("transport: {}", self.transport_errors));
        }
        if errors.is_empty() {
            errors.push("none".into());
        }
        write!(f, "errors:            {}", errors.join(", "))?;
        if let Some(e) = &self.last_error {
            write!(f, "\nlast error:        {e}")?;
        }
        Ok(())
    }
}

/// Runs the benchmark: writes `duration / interval` samples of each of
/// `series` series, from `start` on, and prints the report to stdout.
pub async fn run(args: WriteBenchArgs) -> anyhow::Result<WriteBenchReport> {
    let plan = Plan::new(&args)?;
    eprintln!(
        "bench write: {} series x {} steps = {} samples from {} ms every {} ms, {} workers, to {}",
        args.series,
        plan.steps,
        args.series as u64 * plan.steps,
        plan.start_ms,
        plan.interval_ms,
        plan.shards.len(),
        args.url
    );
    let client = args
        .client
        .http_client(|b| b.timeout(args.timeout).user_agent("promraft-bench"))
        .context("building the HTTP client")?;
    let workload = Arc::new(Workload::new(args.series, args.seed));
    let labels = Arc::new(encode_all_labels(&workload));
    let mut metadata = Vec::new();
    for m in workload.metadata() {
        put_message(&mut metadata, 0x1a, &m); // WriteRequest field 3
    }
    let metadata = Arc::new(metadata);

    let started = Instant::now();
    let stop_at = args.run_for.map(|d| started + d);
    let mut tasks = Vec::with_capacity(plan.shards.len());
    for shard in plan.shards.clone() {
        let worker = Worker {
            client: client.clone(),
            url: args.url.clone(),
            workload: workload.clone(),
            labels: labels.clone(),
            metadata: metadata.clone(),
            shard,
            start_ms: plan.start_ms,
            interval_ms: plan.interval_ms,
            steps: plan.steps,
            batch_series: args.batch_series,
            max_retries: args.max_retries,
            stop_at,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(t.await.context("a bench worker panicked")?);
    }
    let report = stats.into_report(args.series, started.elapsed());
    println!("{report}");
    Ok(report)
}

/// The checked arguments, in the units the workers use.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    start_ms: i64,
    interval_ms: i64,
    steps: u64,
    shards: Vec<std::ops::Range<usize>>,
}

impl Plan {
    fn new(args: &WriteBenchArgs) -> anyhow::Result<Plan> {
        if !args.url.starts_with("http://") && !args.url.starts_with("https://") {
            bail!("--url must be an http:// or https:// URL, got {:?}", args.url);
        }
        if args.series == 0 {
            bail!("--series must be at least 1");
        }
        if args.concurrency == 0 || args.batch_series == 0 {
            bail!("--concurrency and --batch-series must be at least 1");
        }
        let interval_ms = i64::try_from(args.interval.as_millis()).unwrap_or(i64::MAX);
        if interval_ms == 0 {
            bail!("--interval must be at least 1ms");
        }
        let duration_ms = i64::try_from(args.duration.as_millis()).unwrap_or(i64::MAX);
        let steps = (duration_ms / interval_ms) as u64;
        if steps == 0 {
            bail!("--duration ({duration_ms} ms) is shorter than --interval ({interval_ms} ms): nothing to write");
        }
        let start_ms = match args.start {
            Some(s) => s,
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .context("clock before 1970")?;
                i64::try_from(now.as_millis())
                    .unwrap_or(i64::MAX)
                    .saturating_sub(duration_ms)
            }
        };
        // Contiguous shards, as even as possible; never more than the series.
        let workers = args.concurrency.min(args.series);
        let shards = (0..workers)
            .map(|w| (args.series * w / workers)..(args.series * (w + 1) / workers))
            .collect::<Vec<_>>();
        Ok(Plan {
            start_ms,
            interval_ms,
            steps,
            shards,
        })
    }
}

/// What one worker counted.
#[derive(Debug, Default)]
struct Stats {
    samples_sent: u64,
    samples_acked: u64,
    samples_failed: u64,
    requests: u64,
    retries: u64,
    errors_by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    bytes_acked: u64,
    latencies_us: Vec<u64>,
    last_error: Option<String>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.samples_sent += o.samples_sent;
        self.samples_acked += o.samples_acked;
        self.samples_failed += o.samples_failed;
        self.requests += o.requests;
        self.retries += o.retries;
        for (s, n) in o.errors_by_status {
            *self.errors_by_status.entry(s).or_default() += n;
        }
        self.transport_errors += o.transport_errors;
        self.bytes_acked += o.bytes_acked;
        self.latencies_us.extend(o.latencies_us);
        if o.last_error.is_some() {
            self.last_error = o.last_error;
        }
    }

    fn into_report(mut self, series: usize, elapsed: Duration) -> WriteBenchReport {
        self.latencies_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let secs = elapsed.as_secs_f64();
        WriteBenchReport {
            series,
            samples_sent: self.samples_sent,
            samples_acked: self.samples_acked,
            samples_failed: self.samples_failed,
            requests: self.requests,
            retries: self.retries,
            errors_by_status: self.errors_by_status,
            transport_errors: self.transport_errors,
            bytes_acked: self.bytes_acked,
            elapsed,
            samples_per_sec: if secs > 0.0 {
                self.samples_acked as f64 / secs
            } else {
                0.0
            },
            latency_p50_ms: ms(percentile(&self.latencies_us, 50.0)),
            latency_p99_ms: ms(percentile(&self.latencies_us, 99.0)),
            latency_max_ms: ms(self.latencies_us.last().copied().unwrap_or(0)),
            last_error: self.last_error,
        }
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One sender: owns a shard of series and sends it step by step.
struct Worker {
    client: reqwest::Client,
    url: String,
    workload: Arc<Workload>,
    labels: Arc<Vec<Vec<u8>>>,
    metadata: Arc<Vec<u8>>,
    shard: std::ops::Range<usize>,
    start_ms: i64,
    interval_ms: i64,
    steps: u64,
    batch_series: usize,
    max_retries: u32,
    stop_at: Option<Instant>,
}

impl Worker {
    async fn run(self) -> Stats {
        let mut stats = Stats::default();
        let mut raw = Vec::new();
        let mut encoder = snap::raw::Encoder::new();
        let mut first = true;
        let series: Vec<usize> = self.shard.clone().collect();
        let offsets: Vec<i64> = series
            .iter()
            .map(|&i| self.workload.scrape_offset_ms(i, self.interval_ms))
            .collect();
        for step in 0..self.steps {
            let step_ms = self
                .start_ms
                .saturating_add((step as i64).saturating_mul(self.interval_ms));
            for (chunk, chunk_offsets) in series.chunks(self.batch_series).zip(offsets.chunks(self.batch_series)) {
                if self.stop_at.is_some_and(|t| Instant::now() >= t) {
                    return stats;
                }
                raw.clear();
                for (&i, &offset) in chunk.iter().zip(chunk_offsets) {
                    let t = step_ms.saturating_add(offset);
                    encode_series(&mut raw, &self.labels[i], t, self.workload.sample(i, t));
                }
                if first {
                    // Metadata rides along with the first request, as
                    // concatenated repeated field 3 entries.
                    raw.extend_from_slice(&self.metadata);
                    first = false;
                }
                let body = match encoder.compress_vec(&raw) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => {
                        stats.samples_failed += chunk.len() as u64;
                        stats.last_error = Some(format!("snappy: {e}"));
                        continue;
                    }
                };
                self.send(body, chunk.len() as u64, &mut stats).await;
            }
        }
        stats
    }

    /// Sends one request, retrying 5xx, 429 and transport errors with
    /// exponential backoff; 4xx other than 429 are final, as for Prometheus.
    async fn send(&self, body: bytes::Bytes, samples: u64, stats: &mut Stats) {
        stats.samples_sent += samples;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                stats.retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            let t0 = Instant::now();
            let resp = self
                .client
                .post(&self.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(body.clone())
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    stats.latencies_us.push(t0.elapsed().as_micros() as u64);
                    stats.requests += 1;
                    stats.samples_acked += samples;
                    stats.bytes_acked += body.len() as u64;
                    return;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    *stats.errors_by_status.entry(status).or_default() += 1;
                    let text = r.text().await.unwrap_or_default();
                    stats.last_error = Some(format!("HTTP {status}: {}", text.trim()));
                    if !(status == 429 || (500..600).contains(&status)) {
                        break;
                    }
                }
                Err(e) => {
                    stats.transport_errors += 1;
                    stats.last_error = Some(format!("transport: {e}"));
                }
            }
        }
        stats.samples_failed += samples;
    }
}

/// Each series' labels encoded once as `TimeSeries` field 1 entries, so a
/// request is built by copying bytes rather than re-encoding strings.
fn encode_all_labels(w: &Workload) -> Vec<Vec<u8>> {
    (0..w.series_count())
        .map(|i| {
            let mut buf = Vec::new();
            for l in w.labels(i).iter() {
                let label = prompb::Label {
                    name: l.name.clone(),
                    value: l.value.clone(),
                };
                put_message(&mut buf, 0x0a, &label); // TimeSeries field 1
            }
            buf
        })
        .collect()
}

/// Appends one `WriteRequest.timeseries` entry (field 1) holding the
/// pre-encoded labels and one sample.
fn encode_series(out: &mut Vec<u8>, labels: &[u8], t_ms: i64, value: f64) {
    let sample = prompb::Sample { value, timestamp: t_ms };
    let sample_len = sample.encoded_len();
    // TimeSeries body: labels, then field 2 (samples) = key + length + sample.
    let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
    out.push(0x0a); // field 1, length-delimited
    put_varint(out, series_len as u64);
    out.extend_from_slice(labels);
    out.push(0x12); // field 2, length-delimited
    put_varint(out, sample_len as u64);
    // Encoding into a Vec cannot run out of space.
    let _ = sample.encode(out);
}

/// Appends a length-delimited message field whose one-byte key is `key`.
fn put_message(out: &mut Vec<u8>, key: u8, msg: &impl Message) {
    out.push(key);
    put_varint(out, msg.encoded_len() as u64);
    // Encoding into a Vec cannot run out of space.
    let _ = msg.encode(out);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Why a command-line value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a duration like `15s`, `2h`, `1h30m` or `500ms`.
    #[error(
        "invalid duration {0:?}: expected a number and a unit (ms, s, m, h, d, w, y), for example 15s, 2h or 1h30m"
    )]
    Duration(String),
    /// Neither RFC 3339 nor Unix milliseconds.
    #[error("invalid time {0:?}: expected RFC 3339 (2024-01-02T03:04:05Z) or Unix milliseconds")]
    Time(String),
}

/// Parses a Prometheus-style duration: one or more `<integer><unit>` parts,
/// units `ms`, `s`, `m`, `h`, `d`, `w`, `y` (365 days), as in `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration(s.to_string());
    let b = s.trim().as_bytes();
    if b.is_empty() {
        return Err(err());
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let digits_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if digits_start == unit_start || unit_start == i {
            return Err(err());
        }
        let n: u64 = std::str::from_utf8(&b[digits_start..unit_start])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(err)?;
        let unit_ms: u64 = match &b[unit_start..i] {
            b"ms" => 1,
            b"s" => 1_000,
            b"m" => 60_000,
            b"h" => 3_600_000,
            b"d" => 86_400_000,
            b"w" => 7 * 86_400_000,
            b"y" => 365 * 86_400_000,
            _ => return Err(err()),
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a point in time as Unix milliseconds (an optionally negative
/// integer) or RFC 3339 (`2024-01-02T03:04:05.123+02:00`), to Unix ms.
pub fn parse_start(s: &str) -> Result<i64, ParseError> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse().map_err(|_| ParseError::Time(s.to_string()));
    }
    parse_rfc3339(s).ok_or_else(|| ParseError::Time(s.to_string()))
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        for k in 0..3 {
            frac_ms = frac_ms * 10
                + b.get(start + k)
                    .filter(|_| start + k < i)
                    .map_or(0, |d| i64::from(d - b'0'));
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + frac_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::remote_write;

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("15s"), Ok(15_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("1w"), Ok(604_800_000));
        assert_eq!(ms("1y"), Ok(31_536_000_000));
        assert_eq!(ms("0s"), Ok(0));
        for bad in [
            "",
            "15",
            "s",
            "1.5h",
            "15 s",
            "-1s",
            "1x",
            "h1",
            "99999999999999999999s",
            "9999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ParseError::Duration("x".into()).to_string().contains("15s"));
    }

    #[test]
    fn start_times() {
        assert_eq!(parse_start("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_start("-5"), Ok(-5));
        assert_eq!(parse_start("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_start("2024-02-29T12:34:56Z"), Ok(1_709_210_096_000));
        assert_eq!(parse_start("2024-02-29T12:34:56.7Z"), Ok(1_709_210_096_700));
        assert_eq!(parse_start("2024-02-29T12:34:56.123456789Z"), Ok(1_709_210_096_123));
        assert_eq!(parse_start("2024-02-29T14:34:56+02:00"), Ok(1_709_210_096_000));
        assert_eq!(parse_start("2024-02-29t10:04:56-02:30"), Ok(1_709_210_096_000));
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01",
            "soon",
            "99999999999999999999",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn days_from_civil_agrees_with_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn hand_encoded_requests_decode_as_prost_would() {
        let w = Workload::new(50, 3);
        let labels = encode_all_labels(&w);
        let mut raw = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            encode_series(
                &mut raw,
                l,
                1_700_000_000_000 + i as i64,
                w.sample(i, 1_700_000_000_000),
            );
        }
        for m in w.metadata() {
            put_message(&mut raw, 0x1a, &m);
        }
        let body = snap::raw::Encoder::new().compress_vec(&raw).expect("compress");
        let req = remote_write::decode(&body, remote_write::WRITE_BODY_BYTES_MAX).expect("decodes");
        assert_eq!(req.metadata, w.metadata());
        let v = remote_write::validate(req);
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        assert_eq!(v.series.len(), 50);
        for (i, s) in v.series.iter().enumerate() {
            assert_eq!(&s.labels, w.labels(i));
            assert_eq!(
                s.samples,
                vec![(1_700_000_000_000 + i as i64, w.sample(i, 1_700_000_000_000))]
            );
        }
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    fn args(series: usize, concurrency: usize) -> WriteBenchArgs {
        WriteBenchArgs {
            url: "http://127.0.0.1:1/api/v1/write".into(),
            series,
            interval: Duration::from_secs(15),
            duration: Duration::from_secs(7200),
            concurrency,
            start: Some(0),
            batch_series: 2000,
            seed: 1,
            timeout: Duration::from_secs(1),
            max_retries: 0,
            run_for: None,
            client: Default::default(),
        }
    }

    #[test]
    fn shards_are_disjoint_and_cover_every_series() {
        let p = Plan::new(&args(10, 4)).expect("plan");
        assert_eq!(p.steps, 480);
        assert_eq!(p.shards, vec![0..2, 2..5, 5..7, 7..10]);
        assert_eq!(Plan::new(&args(3, 8)).expect("plan").shards.len(), 3);
        assert!(Plan::new(&WriteBenchArgs {
            url: "ftp://x".into(),
            ..args(1, 1)
        })
        .is_err());
        assert!(Plan::new(&WriteBenchArgs {
            url: "https://x".into(),
            ..args(1, 1)
        })
        .is_ok());
        assert!(Plan::new(&WriteBenchArgs {
            duration: Duration::from_secs(1),
            ..args(1, 1)
        })
        .is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    /// What the fake receiver saw: headers of each request, and each
    /// decoded request in arrival order.
    #[derive(Default)]
    struct Seen {
        headers: Vec<String>,
        requests: Vec<prompb::WriteRequest>,
    }

    /// A minimal HTTP/1.1 remote-write receiver on 127.0.0.1 that answers
    /// the first request 503 and every later one 204.
    async fn fake_receiver() -> (String, Arc<std::sync::Mutex<Seen>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/api/v1/write", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (seen, calls) = (seen2.clone(), calls.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 65536];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                        let reply: &[u8] = if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
                        } else {
                            let req = remote_write::decode(&body, remote_write::WRITE_BODY_BYTES_MAX)
                                .expect("the bench sends valid requests");
                            let mut s = seen.lock().expect("lock");
                            s.headers.push(head);
                            s.requests.push(req);
                            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
                        };
                        if conn.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn sends_every_sample_once_in_order_and_retries_a_503() {
        let (url, seen) = fake_receiver().await;
        let a = WriteBenchArgs {
            url,
            series: 20,
            duration: Duration::from_secs(45),
            concurrency: 2,
            start: Some(1_700_000_000_000),
            batch_series: 4,
            max_retries: 3,
            ..args(20, 2)
        };
        let r = run(a).await.expect("runs");
        assert_eq!(r.samples_acked, 60);
        assert_eq!(r.samples_failed, 0);
        assert_eq!(r.retries, 1);
        assert_eq!(r.errors_by_status.get(&503), Some(&1));
        // 2 workers x 3 steps x 3 requests (10 series in batches of 4).
        assert_eq!(r.requests, 18);

        let seen = seen.lock().expect("lock");
        for h in &seen.headers {
            assert!(h.contains("content-encoding: snappy"), "{h}");
            assert!(h.contains("content-type: application/x-protobuf"), "{h}");
            assert!(h.contains("x-prometheus-remote-write-version: 0.1.0"), "{h}");
            assert!(h.contains("user-agent: promraft-bench"), "{h}");
        }
        let w = Workload::new(20, 1);
        let with_metadata = seen.requests.iter().filter(|r| !r.metadata.is_empty()).count();
        assert_eq!(with_metadata, 2, "the first request of each worker carries metadata");
        let mut per_series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for req in &seen.requests {
            assert!(req.timeseries.len() <= 4);
            for ts in &req.timeseries {
                let labels = crate::tsdb::labels::Labels::from_pairs(
                    ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                );
                let e = per_series.entry(labels.to_string()).or_default();
                e.extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
            }
        }
        assert_eq!(per_series.len(), 20);
        for i in 0..20 {
            let got = &per_series[&w.labels(i).to_string()];
            let offset = w.scrape_offset_ms(i, 15_000);
            let want: Vec<(i64, f64)> = (0..3)
                .map(|k| {
                    let t = 1_700_000_000_000 + k * 15_000 + offset;
                    (t, w.sample(i, t))
                })
                .collect();
            assert_eq!(got, &want, "series {i} arrives once per step, in order");
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_counted_not_fatal() {
        let a = WriteBenchArgs {
            duration: Duration::from_secs(30),
            series: 5,
            ..args(5, 2)
        };
        let r = run(a).await.expect("runs");
        assert_eq!(r.samples_acked, 0);
        assert_eq!(r.samples_failed, 10);
        assert_eq!(r.transport_errors, 4);
        assert!(r.last_error.is_some());
    }

    #[tokio::test]
    async fn run_for_stops_a_long_history_early() {
        let (url, _seen) = fake_receiver().await;
        // Ten years of history at a 1 s interval: never written in full.
        let a = WriteBenchArgs {
            url,
            series: 10,
            interval: Duration::from_secs(1),
            duration: Duration::from_secs(10 * 365 * 86_400),
            batch_series: 10,
            max_retries: 3,
            run_for: Some(Duration::from_millis(300)),
            ..args(10, 1)
        };
        let r = run(a).await.expect("runs");
        assert!(r.samples_acked > 0, "{r}");
        assert!(r.samples_sent < 10 * 10 * 365 * 86_400, "{r}");
        assert!(
            r.elapsed < Duration::from_secs(60),
            "stopped at run_for, not at the end of the history"
        );
    }
}
