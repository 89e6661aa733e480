//! The exposition formats a target answers with: Prometheus text 0.0.4 and
//! OpenMetrics 1.0, as flat samples (histograms and summaries as their
//! classic `_bucket`, `_sum`, `_count` series).
//!
//! Owns parsing bytes into [`Scraped`]; never panics on any input (a
//! proptest feeds it arbitrary bytes) and never allocates more than the
//! input's size times a small factor. It does not apply limits or
//! relabeling (`scrape::target_loop` does).

use std::collections::BTreeMap;

/// One parsed sample: metric name and labels (unsorted, as exposed), the
/// value, and the timestamp in milliseconds if the target gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels including `__name__`.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Exposed timestamp, ms.
    pub t_ms: Option<i64>,
}

/// Metadata of one metric family (`# TYPE`, `# HELP`, `# UNIT`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilyMeta {
    /// `counter`, `gauge`, `histogram`, `summary`, `untyped`/`unknown`, ...
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit (OpenMetrics).
    pub unit: String,
}

/// A parsed scrape.
#[derive(Debug, Default)]
pub struct Scraped {
    /// Samples in exposition order.
    pub samples: Vec<Sample>,
    /// Metadata by family name.
    pub meta: BTreeMap<String, FamilyMeta>,
}

/// Which format the body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in ms.
    Text,
    /// `application/openmetrics-text`: timestamps in seconds, `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names (text for anything else, as
    /// Prometheus falls back).
    pub fn from_content_type(ct: &str) -> Format {
        if ct.trim_start().starts_with("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Parses `body`; the error names the line.
pub fn parse(body: &[u8], format: Format) -> Result<Scraped, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut out = Scraped::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let fail = |e: String| format!("line {}: {e}: {:?}", i + 1, truncate(line));
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && rest.trim() == "EOF" {
                break;
            }
            comment(rest, &mut out.meta);
            continue;
        }
        out.samples.push(sample(line, format).map_err(fail)?);
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `# HELP name text`, `# TYPE name kind`, `# UNIT name unit`; other
/// comments are ignored.
fn comment(rest: &str, meta: &mut BTreeMap<String, FamilyMeta>) {
    let rest = rest.trim_start();
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (name, text) = rest.trim_start().split_once(' ').unwrap_or((rest.trim(), ""));
    if name.is_empty() {
        return;
    }
    match word {
        "HELP" => meta.entry(name.to_string()).or_default().help = unescape_help(text),
        "TYPE" => meta.entry(name.to_string()).or_default().kind = text.trim().to_string(),
        "UNIT" => meta.entry(name.to_string()).or_default().unit = text.trim().to_string(),
        _ => {}
    }
}

fn unescape_help(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

fn is_name_byte(b: u8, first: bool) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || (!first && b.is_ascii_digit())
}

/// `name{a="b",...} value [timestamp] [# exemplar]`.
fn sample(line: &str, format: Format) -> Result<Sample, String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && is_name_byte(bytes[i], i == 0) {
        i += 1;
    }
    if i == 0 {
        return Err("expected a metric name".into());
    }
    let mut labels = vec![("__name__".to_string(), line[..i].to_string())];
    if bytes.get(i) == Some(&b'{') {
        i = label_set(line, i + 1, &mut labels)?;
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value".into());
    }
    // An OpenMetrics exemplar follows ` # `; it is not stored.
    let rest = match (format, rest.find(" # ")) {
        (Format::OpenMetrics, Some(p)) => &rest[..p],
        _ => rest,
    };
    let mut parts = rest.split_whitespace();
    let value = parts.next().ok_or("expected a value")?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let t_ms = match parts.next() {
        None => None,
        Some(t) => Some(parse_timestamp(t, format).ok_or_else(|| format!("invalid timestamp {t:?}"))?),
    };
    if parts.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    Ok(Sample { labels, value, t_ms })
}

/// Parses `a="b",c="d"}` from `start`; returns the index after `}`.
fn label_set(line: &str, start: usize, labels: &mut Vec<(String, String)>) -> Result<usize, String> {
    let bytes = line.as_bytes();
    let mut i = start;
    loop {
        while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'}') => return Ok(i + 1),
            None => return Err("unterminated label set".into()),
            _ => {}
        }
        let name_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if name_start == i || bytes[name_start].is_ascii_digit() {
            return Err("invalid label name".into());
        }
        let name = &line[name_start..i];
        if bytes.get(i) != Some(&b'=') || bytes.get(i + 1) != Some(&b'"') {
            return Err(format!("expected =\" after label {name:?}"));
        }
        i += 2;
        let mut value = String::new();
        loop {
            let Some(c) = line[i..].chars().next() else {
                return Err(format!("unterminated value of label {name:?}"));
            };
            i += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    let Some(e) = line[i..].chars().next() else {
                        return Err("dangling escape".into());
                    };
                    i += e.len_utf8();
                    match e {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        other => {
                            value.push('\\');
                            value.push(other);
                        }
                    }
                }
                c => value.push(c),
            }
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        labels.push((name.to_string(), value));
        while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err("expected , or } after a label".into()),
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) => s.parse().ok(),
        _ => None,
    }
}

/// Text format: integer milliseconds. OpenMetrics: seconds, possibly
/// fractional.
fn parse_timestamp(s: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => s.parse().ok(),
        Format::OpenMetrics => {
            let secs: f64 = parse_value(s).filter(|v| v.is_finite())?;
            let ms = (secs * 1000.0).round();
            (ms.abs() < 9.0e15).then_some(ms as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_format_with_labels_escapes_and_timestamps() {
        let body = b"# HELP http_requests_total The total.\n# TYPE http_requests_total counter\n\
            http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
            msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
            metric_without_timestamp_and_labels 12.47\n\
            something_weird{problem=\"division by zero\"} +Inf -3982045\n";
        let s = parse(body, Format::Text).expect("parses");
        assert_eq!(s.samples.len(), 4);
        assert_eq!(s.samples[0].value, 1027.0);
        assert_eq!(s.samples[0].t_ms, Some(1_395_066_363_000));
        assert_eq!(s.samples[1].labels[1].1, "C:\\DIR\\FILE.TXT");
        assert_eq!(s.samples[1].labels[2].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(s.samples[3].value, f64::INFINITY);
        assert_eq!(s.samples[3].t_ms, Some(-3_982_045));
        assert_eq!(s.meta["http_requests_total"].kind, "counter");
        assert_eq!(s.meta["http_requests_total"].help, "The total.");
    }

    #[test]
    fn openmetrics_seconds_exemplars_and_eof() {
        let body = b"# TYPE foo counter\n# UNIT foo seconds\nfoo_total{a=\"1\"} 17.0 1520879607.789 # {trace_id=\"x\"} 1 1520879607.0\n# EOF\nignored 1\n";
        let s = parse(body, Format::OpenMetrics).expect("parses");
        assert_eq!(s.samples.len(), 1);
        assert_eq!(s.samples[0].t_ms, Some(1_520_879_607_789));
        assert_eq!(s.meta["foo"].unit, "seconds");
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        for bad in [
            "foo{a=\"1\" 1",
            "foo 1 2 3",
            "{a=\"1\"} 1",
            "foo{a=1} 1",
            "foo abc",
            "foo{a=\"1\",a=\"2\"} 1",
        ] {
            let e = parse(bad.as_bytes(), Format::Text).expect_err(bad);
            assert!(e.starts_with("line 1"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body, Format::Text);
            let _ = parse(&body, Format::OpenMetrics);
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "[a-z_{}=\",\\\\ #0-9.eE+-]{0,64}") {
            let _ = parse(line.as_bytes(), Format::Text);
            let _ = parse(line.as_bytes(), Format::OpenMetrics);
        }
    }
}
