//! Prometheus HTTP API JSON for query results.
//!
//! This file owns the `data` object of `/api/v1/query` and
//! `/api/v1/query_range` responses: `{"resultType": ..., "result": ...}`,
//! with values as strings formatted exactly as Prometheus does and
//! timestamps as seconds with millisecond precision. The HTTP layer wraps it
//! in `{"status":"success","data":...}` and adds warnings/infos itself.

use std::fmt::Write as _;

use super::value::{QueryResult, Value};
use crate::tsdb::labels::Labels;

/// Appends `s` as a JSON string the way Go's encoding/json (and so
/// Prometheus) writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped too.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a millisecond timestamp as Prometheus writes it: Unix seconds,
/// then, when not whole, a dot and exactly the milliseconds with leading
/// zeros (`1435781451.781`, `1.050`, `7`).
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    let mut t = t_ms as i128;
    if t < 0 {
        out.push('-');
        t = -t;
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// Appends a millisecond time as Go's encoding/json writes the float
/// `t / 1000`: shortest round-trip decimal.
pub fn write_float_seconds(out: &mut String, t_ms: i64) {
    let _ = write!(out, "{}", t_ms as f64 / 1000.0);
}

/// Appends a label set as a JSON object (labels are already sorted).
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &l.name);
        out.push(':');
        write_json_string(out, &l.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t_ms: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t_ms);
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

/// The `data` object of a query response, as JSON text.
pub fn result_data(result: &QueryResult) -> String {
    value_data(&result.value)
}

/// The `data` object for a value, as JSON text, byte for byte what
/// Prometheus writes.
pub fn value_data(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"resultType\":\"");
    out.push_str(value.type_name());
    out.push_str("\",\"result\":");
    match value {
        Value::Scalar { t_ms, v } => {
            // Prometheus writes a scalar's time as a plain float (shortest
            // form), unlike sample times, which always carry milliseconds.
            out.push('[');
            write_float_seconds(&mut out, *t_ms);
            out.push_str(",\"");
            out.push_str(&format_value(*v));
            out.push_str("\"]");
        }
        Value::String { t_ms, s } => {
            out.push('[');
            write_float_seconds(&mut out, *t_ms);
            out.push(',');
            write_json_string(&mut out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.push_str(",\"value\":");
                write_point(&mut out, s.t_ms, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, &(t_ms, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, t_ms, v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// A sample value as Prometheus writes it: shortest round-trip decimal,
/// exponent form below 1e-6 and from 1e21 on (`1e+21`, `1.5e-07`), and
/// `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes `1.5e-7`; Go writes `1.5e-07` (sign always, two digits at least).
        let s = format!("{v:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            let digits = if digits.len() < 2 {
                format!("0{digits}")
            } else {
                digits.to_string()
            };
            return format!("{mant}e{sign}{digits}");
        }
        return s;
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::value::{Sample, Series};

    #[test]
    fn values_are_formatted_like_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(format_value(123456789.0), "123456789");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn vector_and_matrix_shapes() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a<b>")]);
        let r = QueryResult {
            value: Value::Vector(vec![Sample {
                labels: l.clone(),
                t_ms: 1_435_781_451_781,
                v: 1.0,
            }]),
            warnings: vec![],
            infos: vec![],
        };
        assert_eq!(
            result_data(&r),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\u003cb\u003e"},"value":[1435781451.781,"1"]}]}"#
        );
        let m = Value::Matrix(vec![Series {
            labels: l,
            points: vec![(1000, 2.0), (2050, 3.0)],
        }]);
        assert_eq!(
            value_data(&m),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\u003cb\u003e"},"values":[[1,"2"],[2.050,"3"]]}]}"#
        );
        assert_eq!(
            value_data(&Value::Scalar { t_ms: 1500, v: 2.0 }),
            r#"{"resultType":"scalar","result":[1.5,"2"]}"#
        );
        assert_eq!(
            value_data(&Value::Scalar { t_ms: -1500, v: 2.0 }),
            r#"{"resultType":"scalar","result":[-1.5,"2"]}"#
        );
    }

    #[test]
    fn strings_escape_like_go() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\n\u{1}&\u{2028}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001\u0026\u2028é""#);
    }
}
