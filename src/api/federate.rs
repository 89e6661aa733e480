//! `GET|POST /federate`: the newest sample of every series that a `match[]`
//! selector picks, for a Prometheus server that scrapes promraft
//! (federation), answered from the local replica.
//!
//! Prometheus's semantics: each series' newest sample within
//! `query.lookback_delta` of now, stale markers left out (the exposition
//! formats cannot carry them), every metric family typed `untyped`
//! (`unknown` in OpenMetrics) since samples carry no type, an empty
//! `instance` label added where a series has none, and no `match[]` at all
//! an empty answer. The format follows the `Accept` header: OpenMetrics 1.0
//! when the client takes it (Prometheus's scraper prefers it), else the
//! text format 0.0.4. Errors are plain text, as Prometheus answers them
//! here. Nothing is written but the answer.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::params::Params;
use super::AppState;
use crate::backup::openmetrics::{escape_label_value, format_seconds, format_value};
use crate::promql::storage::is_stale_marker;
use crate::tsdb::labels::METRIC_NAME;
use crate::tsdb::Labels;

/// The text exposition format's content type.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics 1.0's content type.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition format of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: `# TYPE x untyped`, timestamps in ms.
    Text,
    /// OpenMetrics 1.0: `# TYPE x unknown`, timestamps in seconds, `# EOF`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let om = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';').map(str::trim);
                let media = it.next().unwrap_or_default();
                let refused = it.any(|p| p.replace(' ', "") == "q=0");
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if om {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The federation handler.
pub async fn federate(
    State(node): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plain = |code: StatusCode, msg: String| {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{msg}\n"),
        )
            .into_response()
    };
    if let Err(e) = super::read_barrier(&node, q.as_deref(), &headers, &body).await {
        return plain(e.status, e.message);
    }
    let sets = match Params::parse(q.as_deref(), &headers, &body).and_then(|p| p.matchers()) {
        Ok(s) => s,
        Err(e) => return plain(e.status, e.message),
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lookback_ms = i64::try_from(node.query.lookback_delta.as_millis()).unwrap_or(i64::MAX);
    let (db, samples_max) = (node.db.clone(), node.query.samples_max);
    let newest = tokio::task::spawn_blocking(move || {
        let mut newest: Vec<(Labels, i64, f64)> = Vec::new();
        for set in &sets {
            for s in db.select(set, now_ms.saturating_sub(lookback_ms), now_ms, samples_max)? {
                if let Some(&(t, v)) = s.samples.last() {
                    newest.push((s.labels, t, v));
                }
            }
        }
        Ok::<_, crate::tsdb::Error>(newest)
    })
    .await;
    let mut newest = match newest {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return plain(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Families stay together; a series two selectors both picked once.
    newest.sort_by(|a, b| a.0.metric_name().cmp(b.0.metric_name()).then_with(|| a.0.cmp(&b.0)));
    newest.dedup_by(|a, b| a.0 == b.0);
    let out = exposition(&newest, format);
    ([(header::CONTENT_TYPE, format.content_type())], out).into_response()
}

/// Writes `samples` (sorted by metric name) in `format`: stale markers and
/// nameless series left out, an empty `instance` label added where absent.
pub fn exposition(samples: &[(Labels, i64, f64)], format: Format) -> String {
    let mut out = String::with_capacity(samples.len() * 96);
    let mut family = "";
    for (labels, t_ms, v) in samples {
        let name = labels.metric_name();
        if name.is_empty() || is_stale_marker(*v) {
            continue;
        }
        if name != family {
            let kind = if format == Format::Text { "untyped" } else { "unknown" };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            family = name;
        }
        out.push_str(name);
        out.push('{');
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        // An empty value means an unset label; `instance` goes in its
        // place among the sorted names when the series has none.
        let pairs = labels.iter().filter(|l| l.name != METRIC_NAME && !l.value.is_empty());
        let mut instance_added = labels.has("instance") && !labels.get("instance").is_empty();
        for l in pairs {
            if !instance_added && l.name.as_str() > "instance" {
                sep(&mut out);
                out.push_str("instance=\"\"");
                instance_added = true;
            }
            sep(&mut out);
            out.push_str(&l.name);
            out.push_str("=\"");
            escape_label_value(&l.value, &mut out);
            out.push('"');
        }
        if !instance_added {
            sep(&mut out);
            out.push_str("instance=\"\"");
        }
        let ts = match format {
            Format::Text => t_ms.to_string(),
            Format::OpenMetrics => format_seconds(*t_ms),
        };
        let _ = writeln!(out, "}} {} {ts}", format_value(*v));
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn text_has_untyped_families_ms_timestamps_and_an_instance_label() {
        let samples = vec![
            (l(&[("__name__", "a"), ("job", "j"), ("zone", "z\"1")]), 1_000, 1.5),
            (
                l(&[("__name__", "a"), ("instance", "i:1"), ("job", "j")]),
                2_000,
                f64::INFINITY,
            ),
            (l(&[("__name__", "b")]), 3_000, f64::from_bits(0x7ff0_0000_0000_0002)),
            (l(&[("__name__", "c"), ("a", "x")]), 4_000, -0.25),
        ];
        let want = "# TYPE a untyped\n\
                    a{instance=\"\",job=\"j\",zone=\"z\\\"1\"} 1.5 1000\n\
                    a{instance=\"i:1\",job=\"j\"} +Inf 2000\n\
                    # TYPE c untyped\n\
                    c{a=\"x\",instance=\"\"} -0.25 4000\n";
        assert_eq!(exposition(&samples, Format::Text), want);
    }

    #[test]
    fn openmetrics_has_unknown_families_second_timestamps_and_eof() {
        let samples = vec![(l(&[("__name__", "up"), ("job", "j")]), 1_700_000_000_123, 1.0)];
        let want = "# TYPE up unknown\nup{instance=\"\",job=\"j\"} 1 1700000000.123\n# EOF\n";
        assert_eq!(exposition(&samples, Format::OpenMetrics), want);
    }

    #[test]
    fn openmetrics_only_when_the_client_accepts_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Text
        );
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
