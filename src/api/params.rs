//! Request parameters as Prometheus reads them: repeated keys from the
//! query string and a form body, times as RFC 3339 or Unix seconds, and
//! series selectors for `match[]`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::HeaderMap;

use super::ApiError;
use crate::tsdb::{MatchOp, Matcher};

/// Largest form body read for read endpoints.
pub const FORM_BYTES_MAX: usize = 1 << 20;

/// Largest duration parameter in float seconds (about 290 years): its
/// milliseconds stay far inside an `i64`, with room to add a time to it.
pub const DURATION_SECONDS_MAX: f64 = 9.2e15;

/// Parameters of one request, from the query string and (for POST) the
/// url-encoded form body.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses the query string and, when the body is a form, the body.
    pub fn parse(query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = match query {
            Some(q) => {
                serde_urlencoded::from_str(q).map_err(|e| ApiError::bad_data(format!("invalid query string: {e}")))?
            }
            None => Vec::new(),
        };
        let is_form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form && !body.is_empty() {
            if body.len() > FORM_BYTES_MAX {
                return Err(ApiError::bad_data(format!(
                    "form body of {} bytes exceeds {FORM_BYTES_MAX}",
                    body.len()
                )));
            }
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| ApiError::bad_data(format!("invalid form body: {e}")))?;
            pairs.extend(form);
        }
        Ok(Params { pairs })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// All pairs as a map of first values (for diagnostics).
    pub fn first_values(&self) -> HashMap<&str, &str> {
        let mut m = HashMap::new();
        for (k, v) in &self.pairs {
            m.entry(k.as_str()).or_insert(v.as_str());
        }
        m
    }

    /// A time parameter, or `default`.
    pub fn time(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(s) => parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}"))),
        }
    }

    /// The `limit` parameter (0 = none).
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(0),
            Some(s) => s.parse::<usize>().map_err(|_| {
                ApiError::bad_data(format!(
                    "invalid parameter \"limit\": {s:?} is not a non-negative integer"
                ))
            }),
        }
    }

    /// A duration parameter: a Prometheus duration (`30s`, `1h30m`) or
    /// float seconds, in milliseconds; `None` when absent or empty.
    pub fn duration_ms(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let Some(s) = self.get(key).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if let Ok(f) = s.parse::<f64>() {
            if !f.is_finite() || !(0.0..=DURATION_SECONDS_MAX).contains(&f) {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"{key}\": cannot parse {s:?} to a valid duration"
                )));
            }
            return Ok(Some((f * 1000.0).round() as i64));
        }
        crate::config::parse_duration_ms(s)
            .map(Some)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}")))
    }

    /// The `start`, `end` and `step` of a range query, in milliseconds,
    /// checked as Prometheus checks them: all present, `end` not before
    /// `start`, a positive step, and fewer than `points_max` steps.
    pub fn range(&self, points_max: i64) -> Result<(i64, i64, i64), ApiError> {
        let time = |key: &str| -> Result<i64, ApiError> {
            let s = self
                .get(key)
                .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{key}\": missing")))?;
            parse_time(s).map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}")))
        };
        let start = time("start")?;
        let end = time("end")?;
        if end < start {
            return Err(ApiError::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        let step = self
            .duration_ms("step")?
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": missing"))?;
        if step <= 0 {
            return Err(ApiError::bad_data("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"));
        }
        // In i128: `end - start` of two valid times can exceed i64 (times
        // reach ±9.2e18 ms).
        if (i128::from(end) - i128::from(start)) / i128::from(step) >= i128::from(points_max) {
            return Err(ApiError::bad_data(format!("exceeded maximum resolution of {points_max} points per timeseries. Try decreasing the query resolution (?step=XX)")));
        }
        Ok((start, end, step))
    }

    /// `match[]` selectors, each a set of matchers (an `or` in a selector
    /// gives several sets).
    pub fn matchers(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        let mut sets = Vec::new();
        for m in self.all("match[]") {
            sets.extend(parse_selector(m)?);
        }
        Ok(sets)
    }
}

/// Why a time parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeParseError {
    /// Neither Unix seconds nor RFC 3339 (or not finite).
    #[error("cannot parse {0:?} to a valid timestamp")]
    Invalid(String),
    /// Seconds whose milliseconds do not fit in an `i64`.
    #[error("timestamp {0:?} out of range")]
    OutOfRange(String),
}

/// Parses a time as Prometheus does: Unix seconds (fractions allowed) or
/// RFC 3339. Returns milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, TimeParseError> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(TimeParseError::Invalid(s.to_string()));
        }
        let ms = (f * 1000.0).round();
        if ms.abs() > 9.2e18 {
            return Err(TimeParseError::OutOfRange(s.to_string()));
        }
        return Ok(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| TimeParseError::Invalid(s.to_string()))
}

/// Parses a series selector (`up{job="x"}`, `{__name__=~"a|b"}`) into
/// matcher sets.
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let expr =
        promql_parser::parser::parse(s).map_err(|e| ApiError::bad_data(format!("invalid match[] {s:?}: {e}")))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(ApiError::bad_data(format!(
            "invalid match[] {s:?}: not a series selector"
        )));
    };
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, ApiError> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal(crate::tsdb::labels::METRIC_NAME, name.clone()));
        }
        for m in ms {
            out.push(convert_matcher(m)?);
        }
        if out.iter().all(|m| m.matches_empty()) {
            return Err(ApiError::bad_data(format!(
                "invalid match[] {s:?}: match[] must contain at least one non-empty matcher"
            )));
        }
        Ok(out)
    };
    if vs.matchers.or_matchers.is_empty() {
        Ok(vec![convert(&vs.matchers.matchers)?])
    } else {
        vs.matchers.or_matchers.iter().map(|set| convert(set)).collect()
    }
}

/// Converts one promql-parser matcher.
pub fn convert_matcher(m: &promql_parser::label::Matcher) -> Result<Matcher, ApiError> {
    use promql_parser::label::MatchOp as P;
    let (op, value) = match &m.op {
        P::Equal => (MatchOp::Equal, m.value.clone()),
        P::NotEqual => (MatchOp::NotEqual, m.value.clone()),
        P::Re(_) => (MatchOp::Regex, m.value.clone()),
        P::NotRe(_) => (MatchOp::NotRegex, m.value.clone()),
    };
    Matcher::new(op, m.name.clone(), value).map_err(|e| ApiError::bad_data(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
    }

    /// Two valid times far apart: `end - start` exceeds an i64 (it wrapped,
    /// or panicked with overflow checks, before the count moved to i128).
    #[test]
    fn a_range_wider_than_i64_is_refused_not_overflowed() {
        let q = "start=-9000000000000000&end=9000000000000000&step=1000000000000";
        let p = Params::parse(Some(q), &HeaderMap::new(), &Bytes::new()).unwrap();
        let e = p.range(11_000).unwrap_err();
        assert!(e.message.contains("exceeded maximum resolution"), "{}", e.message);
        let ok = Params::parse(Some("start=0&end=60&step=15s"), &HeaderMap::new(), &Bytes::new()).unwrap();
        assert_eq!(ok.range(11_000).unwrap(), (0, 60_000, 15_000));
    }

    #[test]
    fn selectors_become_matchers() {
        let sets = parse_selector(r#"up{job=~"a|b"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
        assert!(parse_selector(r#"{job=""}"#).is_err());
        assert!(parse_selector("sum(up)").is_err());
    }
}
