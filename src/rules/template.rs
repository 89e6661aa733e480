//! Prometheus's template language for alert labels and annotations:
//! Go's text/template (the `gtmpl` crate) with Prometheus's variables
//! (`$labels`, `$value`, `$externalLabels`, `$externalURL`) and its
//! functions (`humanize*`, `toUpper`, `reReplaceAll`, `query`, ...)
//! registered on top.
//!
//! This file owns expansion only. It never reaches storage itself: the
//! `query` function calls the [`TemplateQuery`] the caller installs for
//! the length of one expansion. A template is operator input; a bad one
//! gives an error, never a panic.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, Func, FuncError, Template, Value};

/// What Prometheus puts in front of every template, so that the variables
/// exist (the data is `.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value`).
const PREAMBLE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}\
{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// What gtmpl prints for a missing map key; Go's templates in Prometheus
/// run with `missingkey=zero`, which prints nothing for a missing label.
const NO_VALUE: &str = "<no value>";

/// Longest output of one expansion, in bytes: a label or annotation past
/// this is cut (a `range` over a large query result could otherwise build
/// an alert bigger than Alertmanager accepts).
pub const EXPANSION_BYTES_MAX: usize = 64 << 10;

/// One series a template's `query` returns: labels and value.
pub type QuerySample = (BTreeMap<String, String>, f64);

/// Runs an instant query for the template function `query`, at the
/// evaluation time of the rule being expanded.
pub type TemplateQuery = std::sync::Arc<dyn Fn(&str) -> Result<Vec<QuerySample>, String> + Send + Sync>;

thread_local! {
    /// The query function of the expansion running on this thread.
    static QUERY: RefCell<Option<TemplateQuery>> = const { RefCell::new(None) };
}

/// What a template sees.
#[derive(Debug, Clone)]
pub struct TemplateData<'a> {
    /// The alert's labels (`$labels`).
    pub labels: &'a BTreeMap<String, String>,
    /// The alert's value (`$value`).
    pub value: f64,
    /// `global.external_labels` (`$externalLabels`).
    pub external_labels: &'a BTreeMap<String, String>,
    /// The node's external URL (`$externalURL`).
    pub external_url: &'a str,
}

fn funcs() -> Vec<(&'static str, Func)> {
    vec![
        ("humanize", humanize as Func),
        ("humanize1024", humanize1024),
        ("humanizeDuration", humanize_duration),
        ("humanizePercentage", humanize_percentage),
        ("humanizeTimestamp", humanize_timestamp),
        ("toUpper", to_upper),
        ("toLower", to_lower),
        ("title", title),
        ("reReplaceAll", re_replace_all),
        ("match", re_match),
        ("query", query),
        ("first", first),
        ("value", value),
        ("label", label),
        ("strvalue", strvalue),
        ("args", args),
        ("safeHtml", identity),
        ("stripPort", strip_port),
    ]
}

/// Refuses an action left open at the end of the text (`{{ .x`), which
/// Go reports as "unclosed action" and gtmpl 0.7's lexer loops on
/// forever: inside an action, quoted strings are skipped, then `}}` must
/// come.
fn check_actions_closed(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(open) = text[i..].find("{{").map(|o| o + i) {
        let mut j = open + 2;
        loop {
            match b.get(j) {
                None => return Err("unclosed action".into()),
                Some(b'}') if b.get(j + 1) == Some(&b'}') => break,
                Some(&q @ (b'"' | b'`' | b'\'')) => {
                    j += 1;
                    while let Some(&c) = b.get(j) {
                        if c == b'\\' && q != b'`' {
                            j += 1;
                        } else if c == q {
                            break;
                        }
                        j += 1;
                    }
                    j += 1;
                }
                Some(_) => j += 1,
            }
        }
        i = j + 2;
    }
    Ok(())
}

fn parsed(text: &str) -> Result<Template, String> {
    check_actions_closed(text)?;
    let mut t = Template::default();
    t.add_funcs(&funcs());
    t.parse(format!("{PREAMBLE}{text}")).map_err(|e| e.to_string())?;
    Ok(t)
}

/// Whether `text` parses as a template (promtool's check).
pub fn check(text: &str) -> Result<(), String> {
    parsed(text).map(|_| ())
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(m.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

/// Expands `text` with `data`; `query` answers the template function
/// `query` (None: it fails with an error).
pub fn expand(text: &str, data: &TemplateData<'_>, query: Option<TemplateQuery>) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let t = parsed(text)?;
    let mut dot = HashMap::new();
    dot.insert("Labels".to_string(), string_map(data.labels));
    dot.insert("ExternalLabels".to_string(), string_map(data.external_labels));
    dot.insert("ExternalURL".to_string(), Value::from(data.external_url));
    dot.insert("Value".to_string(), Value::from(data.value));
    let out = with_query(query, || {
        t.render(&Context::from(Value::Object(dot))).map_err(|e| e.to_string())
    });
    let mut s = out?.replace(NO_VALUE, "");
    if s.len() > EXPANSION_BYTES_MAX {
        let mut cut = EXPANSION_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    Ok(s)
}

fn with_query<R>(query: Option<TemplateQuery>, f: impl FnOnce() -> R) -> R {
    /// Takes the query out of the thread-local when the expansion ends,
    /// also on unwind, so no later expansion sees it.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            QUERY.with(|c| c.borrow_mut().take());
        }
    }
    QUERY.with(|c| *c.borrow_mut() = query);
    let _reset = Reset;
    f()
}

fn generic(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn one<'a>(name: &str, a: &'a [Value]) -> Result<&'a Value, FuncError> {
    match a {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.to_string(), 1)),
    }
}

/// A number from a template value, as Prometheus's `convertToFloat`
/// (numbers, and strings holding one).
fn to_f64(v: &Value) -> Result<f64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or_else(|| generic("not a number")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .ok_or_else(|| generic(format!("can't convert {s:?} to float"))),
        other => Err(generic(format!("can't convert {other} to float"))),
    }
}

fn to_str(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        v => v.to_string(),
    }
}

/// Go's `%.4g`: four significant digits, exponent form outside
/// [1e-4, 1e4), trailing zeros removed, exponent with two digits at least.
pub fn go_g4(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{v:.3e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..4).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mant), exp.abs());
    }
    let decimals = usize::try_from(3 - exp).unwrap_or(0);
    trim(&format!("{v:.decimals$}"))
}

fn scaled(mut v: f64, up: &[&str], down: &[&str], base: f64) -> String {
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in up {
            if v.abs() < base {
                break;
            }
            prefix = p;
            v /= base;
        }
    } else {
        for p in down {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= base;
        }
    }
    format!("{}{prefix}", go_g4(v))
}

const SI_UP: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SI_DOWN: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

fn humanize(a: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanize", a)?)?;
    if v == 0.0 || !v.is_finite() {
        return Ok(Value::from(go_g4(v)));
    }
    Ok(Value::from(scaled(v, &SI_UP, &SI_DOWN, 1000.0)))
}

fn humanize1024(a: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanize1024", a)?)?;
    if v.abs() <= 1.0 || !v.is_finite() {
        return Ok(Value::from(go_g4(v)));
    }
    Ok(Value::from(scaled(
        v,
        &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        &[],
        1024.0,
    )))
}

fn humanize_duration(a: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanizeDuration", a)?)?;
    if !v.is_finite() {
        return Ok(Value::from(go_g4(v)));
    }
    if v == 0.0 {
        return Ok(Value::from(format!("{}s", go_g4(v))));
    }
    if v.abs() < 1.0 {
        return Ok(Value::from(format!("{}s", scaled(v, &[], &SI_DOWN, 1000.0))));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let v = v.abs();
    let d = v as i64;
    let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
    let out = if days != 0 {
        format!("{sign}{days}d {h}h {m}m {s}s")
    } else if h != 0 {
        format!("{sign}{h}h {m}m {s}s")
    } else if m != 0 {
        format!("{sign}{m}m {s}s")
    } else {
        format!("{sign}{}s", go_g4(v))
    };
    Ok(Value::from(out))
}

fn humanize_percentage(a: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanizePercentage", a)?)?;
    Ok(Value::from(format!("{}%", go_g4(v * 100.0))))
}

fn humanize_timestamp(a: &[Value]) -> Result<Value, FuncError> {
    let v = to_f64(one("humanizeTimestamp", a)?)?;
    if !v.is_finite() || v.abs() > 1e15 {
        return Err(generic(format!("{v} cannot be represented as a time")));
    }
    // Prometheus goes through model.Time: whole milliseconds, truncated.
    let ms = (v * 1e9) as i64 / 1_000_000;
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| generic(format!("{v} cannot be represented as a time")))?;
    let nanos = u32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    // Go's time.Time String(): fraction only when present, trailing zeros cut.
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    Ok(Value::from(format!(
        "{}{frac} +0000 UTC",
        t.format("%Y-%m-%d %H:%M:%S")
    )))
}

fn to_upper(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(to_str(one("toUpper", a)?).to_uppercase()))
}

fn to_lower(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(to_str(one("toLower", a)?).to_lowercase()))
}

fn title(a: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("title", a)?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    Ok(Value::from(out))
}

/// A regex from a template; Go's RE2 syntax is close to the regex crate's.
fn regex(pattern: &str) -> Result<regex::Regex, FuncError> {
    regex::Regex::new(pattern).map_err(|e| generic(format!("invalid regex {pattern:?}: {e}")))
}

fn re_replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [p, r, s] = a else {
        return Err(FuncError::ExactlyXArgs("reReplaceAll".into(), 3));
    };
    let re = regex(&to_str(p))?;
    // Go's $1 expansion and the regex crate's agree on `$name`/`${name}`.
    Ok(Value::from(re.replace_all(&to_str(s), to_str(r).as_str()).into_owned()))
}

fn re_match(a: &[Value]) -> Result<Value, FuncError> {
    let [p, s] = a else {
        return Err(FuncError::ExactlyXArgs("match".into(), 2));
    };
    Ok(Value::Bool(regex(&to_str(p))?.is_match(&to_str(s))))
}

fn sample_value(labels: &BTreeMap<String, String>, v: f64) -> Value {
    let mut m = HashMap::new();
    m.insert("Labels".to_string(), string_map(labels));
    m.insert("Value".to_string(), Value::from(v));
    Value::Map(m)
}

fn query(a: &[Value]) -> Result<Value, FuncError> {
    let expr = to_str(one("query", a)?);
    let res = QUERY.with(|c| c.borrow().as_ref().map(|q| q(&expr)));
    match res {
        None => Err(generic("query is not available in this template")),
        Some(Err(e)) => Err(generic(format!("query {expr:?}: {e}"))),
        Some(Ok(samples)) => Ok(Value::Array(samples.iter().map(|(l, v)| sample_value(l, *v)).collect())),
    }
}

fn first(a: &[Value]) -> Result<Value, FuncError> {
    match one("first", a)? {
        Value::Array(v) => v
            .first()
            .cloned()
            .ok_or_else(|| generic("first() called on vector with no elements")),
        _ => Err(generic("first() takes a query result")),
    }
}

fn field(name: &str, v: &Value) -> Result<Value, FuncError> {
    match v {
        Value::Map(m) => m
            .get(name)
            .cloned()
            .ok_or_else(|| generic(format!("sample has no {name}"))),
        _ => Err(generic("expected a sample (use first)")),
    }
}

fn value(a: &[Value]) -> Result<Value, FuncError> {
    field("Value", one("value", a)?)
}

fn label(a: &[Value]) -> Result<Value, FuncError> {
    let [name, s] = a else {
        return Err(FuncError::ExactlyXArgs("label".into(), 2));
    };
    let labels = field("Labels", s)?;
    let Value::Map(m) = labels else {
        return Err(generic("sample labels are not a map"));
    };
    Ok(m.get(&to_str(name)).cloned().unwrap_or_else(|| Value::from("")))
}

fn strvalue(a: &[Value]) -> Result<Value, FuncError> {
    let labels = field("Labels", one("strvalue", a)?)?;
    let Value::Map(m) = labels else {
        return Err(generic("sample labels are not a map"));
    };
    Ok(m.get("__value__").cloned().unwrap_or_else(|| Value::from("")))
}

fn args(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Map(
        a.iter()
            .enumerate()
            .map(|(i, v)| (format!("arg{i}"), v.clone()))
            .collect(),
    ))
}

fn identity(a: &[Value]) -> Result<Value, FuncError> {
    one("safeHtml", a).cloned()
}

fn strip_port(a: &[Value]) -> Result<Value, FuncError> {
    let s = to_str(one("stripPort", a)?);
    let host = match s.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.trim_start_matches('[').trim_end_matches(']'),
        _ => &s,
    };
    Ok(Value::from(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("instance".to_string(), "a:9100".to_string()),
            ("job".to_string(), "node".to_string()),
        ]);
        let ext = BTreeMap::from([("cluster".to_string(), "eu".to_string())]);
        let data = TemplateData {
            labels: &labels,
            value,
            external_labels: &ext,
            external_url: "http://promraft:9090",
        };
        let q: TemplateQuery = std::sync::Arc::new(|e: &str| -> Result<Vec<QuerySample>, String> {
            Ok(vec![(BTreeMap::from([("x".to_string(), e.to_string())]), 42.0)])
        });
        expand(text, &data, Some(q)).unwrap_or_else(|e| format!("ERROR {e}"))
    }

    #[test]
    fn variables_and_functions_expand_as_prometheus_does() {
        let cases = [
            ("{{ $labels.instance }} of {{ $labels.job }}", 1.0, "a:9100 of node"),
            ("{{ $labels.missing }}|", 1.0, "|"),
            ("{{ $value }}", 0.5, "0.5"),
            (
                "{{ $externalLabels.cluster }} {{ $externalURL }}",
                1.0,
                "eu http://promraft:9090",
            ),
            ("{{ humanize $value }}", 1234567.0, "1.235M"),
            ("{{ humanize $value }}", 0.0012, "1.2m"),
            ("{{ humanize $value }}", 0.0, "0"),
            ("{{ humanize1024 $value }}", 1048576.0, "1Mi"),
            ("{{ humanizeDuration $value }}", 90061.0, "1d 1h 1m 1s"),
            ("{{ humanizeDuration $value }}", 1.5, "1.5s"),
            ("{{ humanizeDuration $value }}", 0.25, "250ms"),
            ("{{ humanizePercentage $value }}", 0.1234, "12.34%"),
            (
                "{{ humanizeTimestamp $value }}",
                1_435_065_584.128,
                "2015-06-23 13:19:44.128 +0000 UTC",
            ),
            ("{{ printf \"%.2f\" $value }}", 2.0 / 3.0, "0.67"),
            ("{{ toUpper $labels.job }}{{ toLower \"AB\" }}", 1.0, "NODEab"),
            ("{{ title \"hello world\" }}", 1.0, "Hello World"),
            ("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", 1.0, "a"),
            ("{{ if gt $value 1.0 }}big{{ else }}small{{ end }}", 2.0, "big"),
            ("{{ query \"up\" | first | value }}", 1.0, "42"),
            ("{{ query \"up\" | first | label \"x\" }}", 1.0, "up"),
            (
                "{{ range query \"up\" }}{{ .Labels.x }}={{ .Value }};{{ end }}",
                1.0,
                "up=42;",
            ),
            ("plain", 1.0, "plain"),
        ];
        for (text, v, want) in cases {
            assert_eq!(run(text, v), want, "template {text:?} with value {v}");
        }
    }

    #[test]
    fn go_g4_matches_go() {
        for (v, want) in [
            (1234.5, "1234"),
            (12345.0, "1.234e+04"),
            (0.0001234, "0.0001234"),
            (0.00001234, "1.234e-05"),
            (1.0, "1"),
            (100.0, "100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_g4(v), want, "%.4g of {v}");
        }
    }

    #[test]
    fn bad_templates_are_refused_not_panicked_on() {
        assert!(check("{{ $labels.x ").is_err());
        assert!(
            check("{{ .x }} and {{ \"}}\" ").is_err(),
            "a quoted }} does not close an action"
        );
        assert!(check("{{ `}}` }}").is_ok());
        assert!(check("{{ nosuchfunc }}").is_err());
        assert!(check("{{ humanize $value }}").is_ok());
        assert!(run("{{ humanize \"abc\" }}", 1.0).starts_with("ERROR"));
    }
}
