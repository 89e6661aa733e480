//! Data in and out in Prometheus's text formats.
//!
//! Out: [`write_openmetrics`] writes the series matching a selector in a
//! time range as OpenMetrics text (`promtool tsdb create-blocks-from
//! openmetrics` accepts it): series grouped by metric name, samples in time
//! order, timestamps in seconds, `# EOF` at the end. `promraft export`
//! downloads it from `GET /api/v1/admin/tsdb/export`.
//!
//! In: [`parse_line`] reads OpenMetrics or Prometheus text exposition
//! lines, and `promraft import` sends the samples through remote write, so
//! they go through the log with exactly remote write's validation and
//! append rules (out-of-order and duplicate rejections included).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use prost::Message;

use super::Error;
use crate::client::ClientArgs;
use crate::prompb;
use crate::tsdb::{Db, Labels, MatchOp, Matcher};

/// Samples read from the TSDB for one series at most when exporting; a
/// series with more in the range is refused (narrow the range).
pub const EXPORT_SERIES_SAMPLES_MAX: usize = 50_000_000;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Series written.
    pub series: u64,
    /// Samples written.
    pub samples: u64,
    /// Series skipped because they have no valid metric name.
    pub skipped: u64,
}

/// Appends `v` escaped as a label value of the text formats.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus's text formats write it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Milliseconds as OpenMetrics seconds (`1700000000.123`).
pub fn format_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

/// `name{a="b",...}` of a series.
fn series_text(l: &Labels) -> String {
    let mut s = l.metric_name().to_string();
    let rest: Vec<_> = l
        .iter()
        .filter(|x| x.name != crate::tsdb::labels::METRIC_NAME)
        .collect();
    if !rest.is_empty() {
        s.push('{');
        for (i, x) in rest.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&x.name);
            s.push_str("=\"");
            escape_label_value(&x.value, &mut s);
            s.push('"');
        }
        s.push('}');
    }
    s
}

/// Writes the series matching any of `sets` (all when empty) with their
/// samples in `[mint, maxt]` as OpenMetrics text. Reads one series at a
/// time, so memory is bounded by the largest series. Blocking.
pub fn write_openmetrics(
    db: &Db,
    sets: &[Vec<Matcher>],
    mint: i64,
    maxt: i64,
    w: &mut impl Write,
) -> Result<ExportStats, Error> {
    let mut all = db.series(sets, mint, maxt, 0);
    // OpenMetrics keeps a metric family's samples together.
    all.sort_by(|a, b| a.metric_name().cmp(b.metric_name()).then_with(|| a.cmp(b)));
    let mut st = ExportStats::default();
    let mut line = String::with_capacity(256);
    for labels in all {
        if !crate::tsdb::labels::is_valid_metric_name(labels.metric_name()) {
            st.skipped += 1;
            continue;
        }
        let matchers: Vec<Matcher> = labels
            .iter()
            .map(|l| Matcher::new(MatchOp::Equal, &l.name, &l.value).map_err(|e| Error::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?;
        let found = db
            .select(&matchers, mint, maxt, EXPORT_SERIES_SAMPLES_MAX)
            .map_err(Error::from_tsdb)?;
        let Some(data) = found.into_iter().find(|s| s.labels == labels) else {
            continue;
        };
        let name = series_text(&labels);
        for (t, v) in &data.samples {
            line.clear();
            line.push_str(&name);
            line.push(' ');
            line.push_str(&format_value(*v));
            line.push(' ');
            line.push_str(&format_seconds(*t));
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        st.series += 1;
        st.samples += data.samples.len() as u64;
    }
    w.write_all(b"# EOF\n")?;
    w.flush()?;
    Ok(st)
}

/// Text format of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextFormat {
    /// OpenMetrics 1.0: timestamps in seconds, `# EOF` at the end.
    Openmetrics,
    /// Prometheus text exposition 0.0.4: timestamps in milliseconds.
    Prometheus,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    /// Labels including `__name__`, as written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
    /// Timestamp in ms, if the line has one.
    pub t_ms: Option<i64>,
}

/// Why a line of text exposition was refused. Each variant carries the
/// line (or the field) it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextLineError {
    /// The line does not start with a metric name.
    #[error("no metric name at the start of {0:?}")]
    NoName(String),
    /// A label name is missing or malformed.
    #[error("bad label name in {0:?}")]
    LabelName(String),
    /// A label name without `=`.
    #[error("expected '=' in {0:?}")]
    NoEquals(String),
    /// A label value without its opening quote.
    #[error("expected '\"' in {0:?}")]
    NoQuote(String),
    /// A label value without its closing quote.
    #[error("unterminated label value in {0:?}")]
    UnterminatedValue(String),
    /// A backslash at the end of the line.
    #[error("unterminated escape in {0:?}")]
    UnterminatedEscape(String),
    /// A name and labels but no value.
    #[error("no value in {0:?}")]
    NoValue(String),
    /// A value that is not a float, `NaN` or an infinity.
    #[error("invalid value {0:?}")]
    Value(String),
    /// More fields after the timestamp.
    #[error("unexpected text after the timestamp in {0:?}")]
    TrailingText(String),
    /// A Prometheus-format timestamp that is not integer milliseconds.
    #[error("invalid timestamp {0:?} (milliseconds expected)")]
    TimestampMs(String),
    /// An OpenMetrics timestamp that is not a number of seconds.
    #[error("invalid timestamp {0:?} (seconds expected)")]
    TimestampSecs(String),
    /// An OpenMetrics timestamp that is not finite.
    #[error("invalid timestamp {0:?}")]
    TimestampNotFinite(String),
}

fn parse_name(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == ':') || (i == 0 && c.is_ascii_digit()))
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

fn parse_value(s: &str) -> Result<f64, TextLineError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|_| TextLineError::Value(s.to_string())),
    }
}

/// Parses one line; `None` for blank lines and comments (`# HELP`,
/// `# TYPE`, `# UNIT`, `# EOF`).
pub fn parse_line(line: &str, format: TextFormat) -> Result<Option<TextSample>, TextLineError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let (name, mut rest) = parse_name(t);
    if name.is_empty() {
        return Err(TextLineError::NoName(line.to_string()));
    }
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, line, &mut labels)?;
    }
    // Exemplars (OpenMetrics) follow " # "; they are not stored.
    let rest = rest.split(" # ").next().unwrap_or("");
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or_else(|| TextLineError::NoValue(line.to_string()))?)?;
    let t_ms = fields.next().map(|ts| parse_timestamp(ts, format)).transpose()?;
    if fields.next().is_some() {
        return Err(TextLineError::TrailingText(line.to_string()));
    }
    labels.sort();
    Ok(Some(TextSample { labels, value, t_ms }))
}

/// Parses `name="value", ...}` (the text after `{`) into `labels`; returns
/// the text after the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    line: &str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, TextLineError> {
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok(r);
        }
        let (ln, r) = parse_name(rest);
        if ln.is_empty() {
            return Err(TextLineError::LabelName(line.to_string()));
        }
        let r = r
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| TextLineError::NoEquals(line.to_string()))?;
        let r = r
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| TextLineError::NoQuote(line.to_string()))?;
        let (value, r) = parse_quoted(r, line)?;
        labels.push((ln.to_string(), value));
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
    }
}

/// Parses a label value up to its closing quote (the text after the opening
/// one), undoing the text format's escapes; returns the value and the text
/// after the quote.
fn parse_quoted<'a>(mut r: &'a str, line: &str) -> Result<(String, &'a str), TextLineError> {
    let mut value = String::new();
    loop {
        let mut chars = r.chars();
        match chars.next() {
            None => return Err(TextLineError::UnterminatedValue(line.to_string())),
            Some('"') => return Ok((value, chars.as_str())),
            Some('\\') => match chars.next() {
                Some('n') => value.push('\n'),
                Some('\\') => value.push('\\'),
                Some('"') => value.push('"'),
                Some(c) => {
                    value.push('\\');
                    value.push(c)
                }
                None => return Err(TextLineError::UnterminatedEscape(line.to_string())),
            },
            Some(c) => value.push(c),
        }
        r = chars.as_str();
    }
}

/// A sample's timestamp: milliseconds in the Prometheus text format,
/// seconds (possibly fractional) in OpenMetrics.
fn parse_timestamp(ts: &str, format: TextFormat) -> Result<i64, TextLineError> {
    match format {
        TextFormat::Prometheus => ts
            .parse::<i64>()
            .map_err(|_| TextLineError::TimestampMs(ts.to_string())),
        TextFormat::Openmetrics => {
            let s: f64 = ts.parse().map_err(|_| TextLineError::TimestampSecs(ts.to_string()))?;
            if !s.is_finite() {
                return Err(TextLineError::TimestampNotFinite(ts.to_string()));
            }
            Ok((s * 1000.0).round() as i64)
        }
    }
}

/// `promraft export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// HTTP address of any node, host:port (or a URL).
    #[arg(long)]
    pub addr: String,
    /// File to write (OpenMetrics text).
    #[arg(long)]
    pub out: PathBuf,
    /// TLS and basic auth towards the node.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Series selector; repeat for several (default: every series).
    #[arg(long = "match")]
    pub matchers: Vec<String>,
    /// Start of the range (RFC 3339 or Unix seconds; default: the oldest sample).
    #[arg(long)]
    pub start: Option<String>,
    /// End of the range (RFC 3339 or Unix seconds; default: the newest sample).
    #[arg(long)]
    pub end: Option<String>,
}

/// `promraft import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// HTTP address of any node, host:port (or a URL).
    #[arg(long)]
    pub addr: String,
    /// Text file to import.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// TLS and basic auth towards the node.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Format of the file (default: OpenMetrics if it has a `# EOF` line, else Prometheus text).
    #[arg(long, value_enum)]
    pub format: Option<TextFormat>,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 5_000)]
    pub batch_samples: usize,
    /// Timestamp (ms since the epoch) for lines without one (default: now).
    #[arg(long)]
    pub default_timestamp_ms: Option<i64>,
}

/// `promraft export`: downloads an OpenMetrics export to a file.
pub async fn run_export(a: ExportArgs) -> anyhow::Result<()> {
    let mut params: Vec<(&str, &str)> = a.matchers.iter().map(|m| ("match[]", m.as_str())).collect();
    if let Some(s) = &a.start {
        params.push(("start", s));
    }
    if let Some(e) = &a.end {
        params.push(("end", e));
    }
    let url = format!("{}/api/v1/admin/tsdb/export", a.client.base_url(&a.addr)?);
    let client = a.client.http_client(|b| b.connect_timeout(Duration::from_secs(10)))?;
    let mut resp = crate::client::send(&url, client.get(&url).query(&params)).await?;
    let partial = super::source::partial_path(&a.out);
    let res: anyhow::Result<u64> = async {
        let mut f = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut n = 0u64;
        let mut last = Vec::new();
        while let Some(b) = resp.chunk().await.context("download failed")? {
            f.write_all(&b)
                .with_context(|| format!("writing {}", partial.display()))?;
            n += b.len() as u64;
            last = b[b.len().saturating_sub(16)..].to_vec();
        }
        if !String::from_utf8_lossy(&last).ends_with("# EOF\n") {
            bail!("the export ended early (no `# EOF` line after {n} bytes)");
        }
        f.sync_all()?;
        std::fs::rename(&partial, &a.out)?;
        Ok(n)
    }
    .await;
    match res {
        Ok(n) => {
            println!("exported {n} bytes of OpenMetrics text to {}", a.out.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Samples of one import batch by label set.
type Batch = BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

/// What an import did.
#[derive(Debug, Default)]
struct ImportStats {
    lines: u64,
    samples: u64,
    requests: u64,
    rejected_requests: u64,
    first_rejection: Option<String>,
}

/// Attempts per remote-write request on 5xx/429/connection errors.
const IMPORT_ATTEMPTS_MAX: u32 = 10;

async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    batch: &mut Batch,
    st: &mut ImportStats,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut req = prompb::WriteRequest::default();
    for (labels, mut samples) in std::mem::take(batch) {
        samples.sort_by_key(|s| s.0);
        req.timeseries.push(prompb::TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| prompb::Label { name, value })
                .collect(),
            samples: samples
                .into_iter()
                .map(|(timestamp, value)| prompb::Sample { value, timestamp })
                .collect(),
            ..Default::default()
        });
    }
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=IMPORT_ATTEMPTS_MAX {
        let r = client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone())
            .send()
            .await;
        let retry = match r {
            Ok(resp) if resp.status().is_success() => {
                st.requests += 1;
                return Ok(());
            }
            Ok(resp) if resp.status().as_u16() == 400 => {
                st.requests += 1;
                st.rejected_requests += 1;
                let msg = resp.text().await.unwrap_or_default();
                if st.first_rejection.is_none() {
                    st.first_rejection = Some(msg.trim().to_string());
                }
                return Ok(());
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                // Credentials and roles do not get better with retries.
                if let Some(e) = crate::client::explain_status(url, status, &text) {
                    return Err(e.into());
                }
                format!("HTTP {status}: {}", text.trim())
            }
            Err(e) => {
                let e = crate::client::explain_request(url, &e);
                if e.to_string().contains("TLS handshake failed") {
                    return Err(e.into());
                }
                e.to_string()
            }
        };
        if attempt == IMPORT_ATTEMPTS_MAX {
            bail!("remote write to {url} failed {IMPORT_ATTEMPTS_MAX} times; last: {retry}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Ok(())
}

/// `promraft import`: reads a text exposition file and sends it through
/// remote write.
pub async fn run_import(a: ImportArgs) -> anyhow::Result<()> {
    let format = match a.format {
        Some(f) => f,
        None => {
            let f = std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
            let has_eof = BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.trim() == "# EOF");
            if has_eof {
                TextFormat::Openmetrics
            } else {
                TextFormat::Prometheus
            }
        }
    };
    let now = a
        .default_timestamp_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let url = format!("{}/api/v1/write", a.client.base_url(&a.addr)?);
    let client = a.client.http_client(|b| b.timeout(Duration::from_secs(60)))?;
    let f = std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let mut st = ImportStats::default();
    let mut batch: Batch = BTreeMap::new();
    let mut in_batch = 0usize;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", a.input.display()))?;
        st.lines += 1;
        let Some(s) = parse_line(&line, format).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))? else {
            continue;
        };
        batch
            .entry(s.labels)
            .or_default()
            .push((s.t_ms.unwrap_or(now), s.value));
        st.samples += 1;
        in_batch += 1;
        if in_batch >= a.batch_samples.max(1) {
            send_batch(&client, &url, &mut batch, &mut st).await?;
            in_batch = 0;
        }
    }
    send_batch(&client, &url, &mut batch, &mut st).await?;
    println!(
        "imported {} samples from {} lines of {} in {} remote-write requests ({:?} format)",
        st.samples,
        st.lines,
        a.input.display(),
        st.requests,
        format
    );
    if let Some(r) = st.first_rejection {
        println!(
            "{} requests had rejected samples (the valid ones were kept); first reason: {r}",
            st.rejected_requests
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        let s = parse_line(
            r#"up{job="a\"b",instance="x\\y\n"} 1.5 1700000000123"#,
            TextFormat::Prometheus,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.value, 1.5);
        assert_eq!(s.t_ms, Some(1_700_000_000_123));
        assert!(s.labels.contains(&("job".into(), "a\"b".into())));
        assert!(s.labels.contains(&("instance".into(), "x\\y\n".into())));
        let s = parse_line("foo_total 3 1700000000.5 # {trace_id=\"x\"} 1", TextFormat::Openmetrics)
            .unwrap()
            .unwrap();
        assert_eq!((s.value, s.t_ms), (3.0, Some(1_700_000_000_500)));
        assert!(parse_line("# TYPE foo counter", TextFormat::Openmetrics)
            .unwrap()
            .is_none());
        assert!(parse_line("x NaN", TextFormat::Prometheus)
            .unwrap()
            .unwrap()
            .value
            .is_nan());
        assert!(parse_line("x{a=\"b\" 1", TextFormat::Prometheus).is_err());
        assert!(parse_line("x 1 2 3", TextFormat::Prometheus).is_err());
    }

    #[test]
    fn export_line_round_trips_through_the_parser() {
        let l = Labels::from_pairs([("__name__", "m"), ("a", "q\"\\\n")]);
        let text = format!("{} {} {}", series_text(&l), format_value(-0.25), format_seconds(-1500));
        let s = parse_line(&text, TextFormat::Openmetrics).unwrap().unwrap();
        assert_eq!(
            s.labels,
            vec![
                ("__name__".to_string(), "m".to_string()),
                ("a".into(), "q\"\\\n".into())
            ]
        );
        assert_eq!((s.value, s.t_ms), (-0.25, Some(-1500)));
    }
}
