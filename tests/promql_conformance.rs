//! Runs Prometheus's own PromQL test scripts (`../shared/promql-testdata/*.test`)
//! against promraft's engine over `MemStorage`.
//!
//! The harness parses the promqltest format (`load`, `clear`, `eval ...`,
//! `expect ...`, expected series lines), evaluates every case, and compares
//! results the way promqltest does (relative tolerance 1e-6, NaN equals NaN).
//! Cases that use native histograms are skipped, never counted as passed.
//! A case that fails must be listed in `tests/promql_known_failures.txt`
//! (`<file>:<line>`); a listed case that passes fails the test too, so the
//! list only shrinks.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use promraft::promql::storage::stale_marker;
use promraft::promql::{Engine, EngineOptions, MemStorage, QueryOpts, SeriesSamples, Storage, StorageError, Value};
use promraft::tsdb::labels::Labels;
use promraft::tsdb::matcher::Matcher;

const TESTDATA: &str = match option_env!("PROMQL_TESTDATA") {
    Some(d) => d,
    None => concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/promql-testdata"),
};
/// Beside this file, wherever the crate that compiles it lives.
fn known_failures_path() -> std::path::PathBuf {
    let here = Path::new(file!()).with_file_name("promql_known_failures.txt");
    if here.is_absolute() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(here)
    }
}

/// The test files expected in the data directory (11 in the copy this
/// suite was written against): fewer means the directory moved or shrank,
/// and the test would pass on what is left.
const FILES_MIN: usize = 11;

/// In-scope cases (passed or failed, not skipped) that must run: 823 pass
/// today; the floor leaves room for a few cases the harness may come to
/// skip, and fails a run on an empty or partial data directory.
const CASES_RUN_MIN: usize = 800;

/// Relative error allowed between expected and actual values (promqltest's).
const EPSILON: f64 = 1e-6;

/// `MemStorage` that remembers whether a query touched a native-histogram
/// series, so such cases can be skipped.
struct TrackingStorage {
    mem: MemStorage,
    histogram_series: Vec<Labels>,
    touched_histogram: AtomicBool,
}

impl Storage for TrackingStorage {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<SeriesSamples>, StorageError> {
        if self
            .histogram_series
            .iter()
            .any(|l| matchers.iter().all(|m| m.matches(l.get(&m.name))))
        {
            self.touched_histogram.store(true, Ordering::Relaxed);
        }
        self.mem.select(matchers, mint, maxt)
    }
}

#[derive(Debug, Default)]
struct Expect {
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    warn: Vec<Option<Matcher2>>,
    info: Vec<Option<Matcher2>>,
    no_warn: bool,
    no_info: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
}

#[derive(Debug, Clone)]
enum Matcher2 {
    Exact(String),
    Regex(String),
}

impl Matcher2 {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher2::Exact(e) => e == s,
            Matcher2::Regex(r) => regex::Regex::new(r).map(|re| re.is_match(s)).unwrap_or(false),
        }
    }
}

#[derive(Debug)]
struct ExpectedSeries {
    labels: Labels,
    /// One slot per expected step; `None` is `_`.
    values: Vec<Option<f64>>,
}

#[derive(Debug)]
enum Expected {
    Scalar(f64),
    Series(Vec<ExpectedSeries>),
}

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(String),
    /// Out of scope (native histograms), with the reason.
    Skip(&'static str),
}

fn main_dir_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(TESTDATA)
        .unwrap_or_else(|e| panic!("cannot read test data at {TESTDATA}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    files
}

#[test]
fn promql_conformance() {
    let known_path = known_failures_path();
    let known_file = known_path.display().to_string();
    let known: BTreeSet<String> = std::fs::read_to_string(&known_path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut totals = (0usize, 0usize, 0usize);
    let mut unexpected: Vec<String> = Vec::new();
    let mut failed_ids: BTreeSet<String> = BTreeSet::new();
    let mut seen_ids: BTreeSet<String> = BTreeSet::new();
    let verbose = std::env::var("PROMQL_CONFORMANCE_VERBOSE").is_ok();
    let files = main_dir_files();
    assert!(
        files.len() >= FILES_MIN,
        "expected at least {FILES_MIN} .test files in {TESTDATA}, found {}: {files:?}",
        files.len()
    );
    let mut files_without_cases = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let results = run_file(&text);
        let (mut p, mut f, mut s) = (0, 0, 0);
        for (line, outcome) in results {
            let id = format!("{name}:{line}");
            seen_ids.insert(id.clone());
            match outcome {
                Outcome::Pass => p += 1,
                Outcome::Skip(why) => {
                    s += 1;
                    if verbose {
                        println!("skipped {id}: {why}");
                    }
                }
                Outcome::Fail(why) => {
                    f += 1;
                    failed_ids.insert(id.clone());
                    if !known.contains(&id) {
                        unexpected.push(format!("{id}: {why}"));
                    } else if verbose {
                        println!("known failure {id}: {why}");
                    }
                }
            }
        }
        println!("{name}: {p} passed, {f} failed, {s} skipped");
        if p + f == 0 {
            files_without_cases.push(name.clone());
        }
        totals.0 += p;
        totals.1 += f;
        totals.2 += s;
    }
    let (p, f, s) = totals;
    let pct = if p + f > 0 {
        100.0 * p as f64 / (p + f) as f64
    } else {
        0.0
    };
    println!("promql conformance: {p} passed, {f} failed, {s} skipped");
    println!("promql conformance: {pct:.2}% of in-scope cases pass");
    assert!(
        files_without_cases.is_empty(),
        "no in-scope case ran in {files_without_cases:?} (empty, or the harness skips everything in them)"
    );
    assert!(
        p + f >= CASES_RUN_MIN,
        "only {} in-scope cases ran ({p} passed, {f} failed, {s} skipped); at least {CASES_RUN_MIN} must, \
         from {TESTDATA}",
        p + f
    );
    let mut problems = String::new();
    for u in &unexpected {
        let _ = writeln!(
            problems,
            "unexpected failure (fix it, or add the id to {known_file}): {u}"
        );
    }
    for k in &known {
        if !failed_ids.contains(k) {
            let why = if seen_ids.contains(k) {
                "now passes (or is skipped)"
            } else {
                "is not an eval line"
            };
            let _ = writeln!(problems, "known failure {k} {why}: delete that line from {known_file}");
        }
    }
    assert!(problems.is_empty(), "{problems}");
}

/// Runs every command of one file; returns `(eval line number, outcome)`.
fn run_file(text: &str) -> Vec<(usize, Outcome)> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut storage = TrackingStorage {
        mem: MemStorage::new(),
        histogram_series: Vec::new(),
        touched_histogram: AtomicBool::new(false),
    };
    let engine = Engine::new(EngineOptions::default());
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let mut body = Vec::new();
        let mut j = i + 1;
        while j < lines.len() && !lines[j].is_empty() {
            body.push(lines[j].as_str());
            j += 1;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line.as_str(), ""));
        match cmd {
            "clear" => {
                storage.mem.clear();
                storage.histogram_series.clear();
                // `clear` has no body: the next line may be a command.
                i += 1;
                continue;
            }
            "load" | "load_with_nhcb" => {
                if let Err(e) = load(&mut storage, rest.trim(), &body, cmd == "load_with_nhcb") {
                    panic!("line {}: bad load: {e}", i + 1);
                }
            }
            c if c.starts_with("eval") => {
                let outcome = run_eval(&engine, &storage, line, &body);
                out.push((i + 1, outcome));
            }
            other => panic!("line {}: unknown command {other:?}", i + 1),
        }
        i = j;
    }
    out
}

fn load(storage: &mut TrackingStorage, interval: &str, body: &[&str], nhcb: bool) -> Result<(), String> {
    let step = parse_duration(interval)?;
    for line in body {
        let (labels, rest) = parse_series_desc(line)?;
        let (values, has_histogram) = parse_values(rest)?;
        if has_histogram {
            storage.histogram_series.push(labels.clone());
        }
        if nhcb {
            // load_with_nhcb also creates native histograms from classic ones,
            // named after the classic series without its suffix.
            let name = labels.metric_name();
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    let mut l = labels.clone();
                    l.set("__name__", base);
                    l.remove("le");
                    storage.histogram_series.push(l);
                }
            }
        }
        for (k, v) in values.iter().enumerate() {
            if let Some(v) = v {
                storage.mem.add(&labels, k as i64 * step, *v);
            }
        }
    }
    Ok(())
}

fn run_eval(engine: &Engine, storage: &TrackingStorage, line: &str, body: &[&str]) -> Outcome {
    let mut expect = Expect::default();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    match cmd {
        "eval" => {}
        "eval_fail" => expect.fail = true,
        "eval_warn" => expect.warn.push(None),
        "eval_info" => expect.info.push(None),
        "eval_ordered" => expect.ordered = true,
        other => return Outcome::Fail(format!("unknown eval command {other}")),
    }
    let rest = rest.trim();
    // (start, end, step, query); instant queries have start == end and step 0.
    let (start, end, step, query) = if let Some(r) = rest.strip_prefix("instant at ") {
        let (t, q) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
        match parse_time(t) {
            Ok(t) => (t, t, 0, q.trim()),
            Err(e) => return Outcome::Fail(e),
        }
    } else if let Some(r) = rest.strip_prefix("range from ") {
        let parts: Vec<&str> = r.splitn(6, char::is_whitespace).collect();
        if parts.len() < 6 || parts[1] != "to" || parts[3] != "step" {
            return Outcome::Fail(format!("bad range eval: {line}"));
        }
        match (parse_time(parts[0]), parse_time(parts[2]), parse_duration(parts[4])) {
            (Ok(s), Ok(e), Ok(st)) => (s, e, st, parts[5].trim()),
            _ => return Outcome::Fail(format!("bad range eval: {line}")),
        }
    } else {
        return Outcome::Fail(format!("bad eval: {line}"));
    };
    let mut result_lines = Vec::new();
    for l in body {
        if let Some(e) = l.strip_prefix("expect ") {
            if let Err(err) = parse_expect(e.trim(), &mut expect) {
                return Outcome::Fail(err);
            }
        } else if let Some(m) = l.strip_prefix("expected_fail_message") {
            expect.fail_msg = Some(m.trim().to_string());
        } else if let Some(m) = l.strip_prefix("expected_fail_regexp") {
            expect.fail_regex = Some(m.trim().to_string());
        } else {
            result_lines.push(*l);
        }
    }
    if result_lines.iter().any(|l| l.contains("{{")) {
        return Outcome::Skip("expected result has native histograms");
    }
    let is_range = step > 0;
    let expected = match parse_expected(&result_lines, is_range || expect.range_vector.is_some()) {
        Ok(e) => e,
        Err(e) => return Outcome::Fail(format!("bad expected result: {e}")),
    };
    storage.touched_histogram.store(false, Ordering::Relaxed);
    let res = if is_range {
        engine.range_query(storage, query, start, end, step, QueryOpts::default())
    } else {
        engine.instant_query(storage, query, start, QueryOpts::default())
    };
    if storage.touched_histogram.load(Ordering::Relaxed) {
        return Outcome::Skip("query selects native-histogram series");
    }
    let res = match res {
        Err(e) => {
            if !expect.fail {
                return Outcome::Fail(format!("unexpected error: {e}"));
            }
            let msg = e.to_string();
            if let Some(m) = &expect.fail_msg {
                if *m != msg {
                    return Outcome::Fail(format!("error message {msg:?}, want {m:?}"));
                }
            }
            if let Some(r) = &expect.fail_regex {
                if !Matcher2::Regex(r.clone()).matches(&msg) {
                    return Outcome::Fail(format!("error message {msg:?} does not match {r:?}"));
                }
            }
            return Outcome::Pass;
        }
        Ok(r) => r,
    };
    if expect.fail {
        return Outcome::Fail("expected an error, got a result".into());
    }
    if let Err(e) = check_annotations("warn", &expect.warn, expect.no_warn, &res.warnings) {
        return Outcome::Fail(e);
    }
    if let Err(e) = check_annotations("info", &expect.info, expect.no_info, &res.infos) {
        return Outcome::Fail(e);
    }
    if let Some(want) = &expect.string {
        return match &res.value {
            Value::String { s, .. } if s == want => Outcome::Pass,
            other => Outcome::Fail(format!("want string {want:?}, got {other:?}")),
        };
    }
    if let Err(e) = compare(&res.value, &expected, &expect, start, end, step) {
        return Outcome::Fail(e);
    }
    // Like promqltest, an instant query must give the same answer when run as
    // a range query around the same time (skipped where `@ start()/end()`
    // change meaning with the range, and for ordered results).
    if !is_range
        && !expect.ordered
        && !["start()", "end()", "step()", "range()"]
            .iter()
            .any(|f| query.contains(f))
    {
        if let Value::Vector(_) | Value::Scalar { .. } = res.value {
            let rr = match engine.range_query(
                storage,
                query,
                start - 60_000,
                start + 60_000,
                60_000,
                QueryOpts::default(),
            ) {
                Ok(r) => r,
                Err(e) => return Outcome::Fail(format!("range mode failed: {e}")),
            };
            let mut samples = Vec::new();
            if let Value::Matrix(m) = rr.value {
                for s in m {
                    if let Some(&(_, v)) = s.points.iter().find(|p| p.0 == start) {
                        samples.push(promraft::promql::Sample {
                            labels: s.labels,
                            t_ms: start,
                            v,
                        });
                    }
                }
            }
            let as_value = match (&res.value, samples.first()) {
                (Value::Scalar { .. }, Some(s)) => Value::Scalar { t_ms: start, v: s.v },
                (Value::Scalar { .. }, None) => return Outcome::Fail("range mode lost the scalar".into()),
                _ => Value::Vector(samples),
            };
            if let Err(e) = compare(&as_value, &expected, &Expect::default(), start, end, 0) {
                return Outcome::Fail(format!("range mode: {e}"));
            }
        }
    }
    Outcome::Pass
}

fn check_annotations(kind: &str, want: &[Option<Matcher2>], none: bool, got: &[String]) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {kind} annotations, got {got:?}"));
    }
    for w in want {
        let ok = match w {
            None => !got.is_empty(),
            Some(m) => got.iter().any(|g| m.matches(g)),
        };
        if !ok {
            return Err(format!("expected {kind} annotation {w:?}, got {got:?}"));
        }
    }
    if !want.is_empty() {
        for g in got {
            if !want.iter().any(|w| w.as_ref().is_none_or(|m| m.matches(g))) {
                return Err(format!("unexpected {kind} annotation {g:?}"));
            }
        }
    }
    Ok(())
}

fn parse_expect(e: &str, expect: &mut Expect) -> Result<(), String> {
    let (kind, rest) = e.split_once(char::is_whitespace).unwrap_or((e, ""));
    let rest = rest.trim();
    let matcher = || -> Result<Option<Matcher2>, String> {
        if rest.is_empty() {
            return Ok(None);
        }
        if let Some(m) = rest.strip_prefix("msg:") {
            return Ok(Some(Matcher2::Exact(m.trim().to_string())));
        }
        if let Some(r) = rest.strip_prefix("regex:") {
            return Ok(Some(Matcher2::Regex(r.trim().to_string())));
        }
        Err(format!("bad expect line: {e}"))
    };
    match kind {
        "fail" => {
            expect.fail = true;
            match matcher()? {
                Some(Matcher2::Exact(m)) => expect.fail_msg = Some(m),
                Some(Matcher2::Regex(r)) => expect.fail_regex = Some(r),
                None => {}
            }
        }
        "warn" => expect.warn.push(matcher()?),
        "info" => expect.info.push(matcher()?),
        "no_warn" => expect.no_warn = true,
        "no_info" => expect.no_info = true,
        "ordered" => expect.ordered = true,
        "string" => expect.string = Some(unquote(rest)?),
        "range" => {
            // expect range vector from <s> to <e> step <d>
            let p: Vec<&str> = rest.split_whitespace().collect();
            if p.len() != 7 || p[0] != "vector" || p[1] != "from" || p[3] != "to" || p[5] != "step" {
                return Err(format!("bad expect range line: {e}"));
            }
            expect.range_vector = Some((parse_time(p[2])?, parse_time(p[4])?, parse_duration(p[6])?));
        }
        _ => return Err(format!("unknown expect line: {e}")),
    }
    Ok(())
}

fn parse_expected(lines: &[&str], multi: bool) -> Result<Expected, String> {
    if lines.len() == 1 && !multi {
        if let Some(v) = parse_number(lines[0].trim()) {
            return Ok(Expected::Scalar(v));
        }
    }
    let mut out = Vec::new();
    for l in lines {
        let (labels, rest) = parse_series_desc(l)?;
        let (values, _) = parse_values(rest)?;
        out.push(ExpectedSeries { labels, values });
    }
    Ok(Expected::Series(out))
}

fn almost_equal(a: f64, b: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn compare(got: &Value, want: &Expected, expect: &Expect, start: i64, end: i64, step: i64) -> Result<(), String> {
    match (got, want) {
        (Value::Scalar { v, .. }, Expected::Scalar(w)) => {
            if almost_equal(*v, *w) {
                Ok(())
            } else {
                Err(format!("scalar {v}, want {w}"))
            }
        }
        (Value::Scalar { v, .. }, Expected::Series(s)) => Err(format!("got scalar {v}, want series {s:?}")),
        (Value::Vector(samples), Expected::Series(want)) => {
            if samples.len() != want.len() {
                return Err(format!(
                    "got {} samples, want {}: got {}",
                    samples.len(),
                    want.len(),
                    show_vector(samples)
                ));
            }
            for (k, w) in want.iter().enumerate() {
                let wv = match w.values.as_slice() {
                    [Some(v)] => *v,
                    _ => {
                        return Err(format!(
                            "expected instant line for {} needs exactly one value",
                            w.labels
                        ))
                    }
                };
                let pos = samples.iter().position(|s| s.labels == w.labels);
                let Some(pos) = pos else {
                    return Err(format!("missing series {}; got {}", w.labels, show_vector(samples)));
                };
                if expect.ordered && pos != k {
                    return Err(format!("series {} at position {pos}, want {k}", w.labels));
                }
                if !almost_equal(samples[pos].v, wv) {
                    return Err(format!("series {}: got {}, want {wv}", w.labels, samples[pos].v));
                }
            }
            Ok(())
        }
        (Value::Matrix(series), Expected::Series(want)) => {
            let (start, step) = match expect.range_vector {
                Some((s, _, st)) => (s, st),
                None => (start, step),
            };
            let _ = end;
            if series.len() != want.len() {
                let got: Vec<String> = series.iter().map(|s| format!("{} {:?}", s.labels, s.points)).collect();
                return Err(format!("got {} series, want {}: {got:?}", series.len(), want.len()));
            }
            for w in want {
                let Some(s) = series.iter().find(|s| s.labels == w.labels) else {
                    return Err(format!("missing series {}", w.labels));
                };
                let want_points: Vec<(i64, f64)> = w
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(k, v)| v.map(|v| (start + k as i64 * step, v)))
                    .collect();
                let ok = want_points.len() == s.points.len()
                    && want_points
                        .iter()
                        .zip(&s.points)
                        .all(|(a, b)| a.0 == b.0 && almost_equal(a.1, b.1));
                if !ok {
                    return Err(format!(
                        "series {}: got {:?}, want {:?}",
                        w.labels, s.points, want_points
                    ));
                }
            }
            Ok(())
        }
        (other, w) => Err(format!("got {other:?}, want {w:?}")),
    }
}

fn show_vector(samples: &[promraft::promql::Sample]) -> String {
    samples
        .iter()
        .map(|s| format!("{} {}", s.labels, s.v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `metric{a="b"}` at the start of a line; returns the labels and the rest.
fn parse_series_desc(line: &str) -> Result<(Labels, &str), String> {
    let line = line.trim_start();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
        i += 1;
    }
    let name = &line[..i];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.into()));
    }
    if i < bytes.len() && bytes[i] == b'{' {
        i += 1;
        loop {
            while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t' || bytes[i] == b',') {
                i += 1;
            }
            if i >= bytes.len() {
                return Err(format!("unterminated labels in {line:?}"));
            }
            if bytes[i] == b'}' {
                i += 1;
                break;
            }
            let (lname, next) = if bytes[i] == b'"' {
                let (s, n) = read_quoted(line, i)?;
                (s, n)
            } else {
                let s = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                (line[s..i].to_string(), i)
            };
            i = next;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] != b'=' {
                // A bare quoted name inside braces is the metric name (UTF-8 syntax).
                pairs.push(("__name__".into(), lname));
                continue;
            }
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let (value, next) = read_quoted(line, i)?;
            i = next;
            pairs.push((lname, value));
        }
    }
    if name.is_empty() && pairs.is_empty() && !line.starts_with('{') {
        return Err(format!("bad series description {line:?}"));
    }
    Ok((Labels::from_pairs(pairs), &line[i..]))
}

/// Reads a quoted string starting at byte `i` (which holds the quote).
fn read_quoted(s: &str, i: usize) -> Result<(String, usize), String> {
    let bytes = s.as_bytes();
    let q = *bytes.get(i).ok_or("expected a quoted string")?;
    if q != b'"' && q != b'\'' && q != b'`' {
        return Err(format!("expected a quoted string in {s:?}"));
    }
    let mut out = String::new();
    let mut chars = s[i + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        if c as u32 == q as u32 {
            return Ok((out, i + 1 + k + 1));
        }
        if c == '\\' && q != b'`' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'x')) => {
                    // \xNN: a raw byte; keep it as an escape-free char where valid.
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    let b = u8::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                    out.push(b as char);
                }
                Some((_, other)) => out.push(other),
                None => return Err("dangling escape".into()),
            }
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated string in {s:?}"))
}

fn unquote(s: &str) -> Result<String, String> {
    read_quoted(s.trim(), 0).map(|(v, _)| v)
}

/// Expands a promqltest value list; `None` is a missing sample. Also says
/// whether any native histogram appeared.
fn parse_values(s: &str) -> Result<(Vec<Option<f64>>, bool), String> {
    let mut out = Vec::new();
    let mut has_histogram = false;
    let mut rest = s.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            has_histogram = true;
            // Skip the histogram literal and any expansion suffix up to the next space.
            let end = rest.find("}}").ok_or("unterminated histogram")? + 2;
            let mut tail = &rest[end..];
            while !tail.is_empty() && !tail.starts_with(char::is_whitespace) {
                if tail.starts_with("{{") {
                    let e = tail.find("}}").ok_or("unterminated histogram")? + 2;
                    tail = &tail[e..];
                } else {
                    tail = &tail[tail.chars().next().map(char::len_utf8).unwrap_or(1)..];
                }
            }
            out.push(None);
            rest = tail.trim_start();
            continue;
        }
        let (tok, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        rest = tail.trim_start();
        expand_token(tok, &mut out)?;
    }
    Ok((out, has_histogram))
}

fn expand_token(tok: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if tok == "_" {
        out.push(None);
        return Ok(());
    }
    if tok == "stale" {
        out.push(Some(stale_marker()));
        return Ok(());
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().map_err(|_| format!("bad token {tok:?}"))?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    if let Some(v) = parse_number(tok) {
        out.push(Some(v));
        return Ok(());
    }
    // a+bxn, a-bxn, axn
    let (base, times) = tok.rsplit_once('x').ok_or_else(|| format!("bad value {tok:?}"))?;
    let times: usize = times.parse().map_err(|_| format!("bad repeat count in {tok:?}"))?;
    let bb = base.as_bytes();
    let mut split = None;
    for k in (1..bb.len()).rev() {
        if (bb[k] == b'+' || bb[k] == b'-') && bb[k - 1] != b'e' && bb[k - 1] != b'E' {
            split = Some(k);
            break;
        }
    }
    let (a, b) = match split {
        Some(k) => {
            let a = parse_number(&base[..k]).ok_or_else(|| format!("bad start in {tok:?}"))?;
            let b = parse_number(&base[k + 1..]).ok_or_else(|| format!("bad increment in {tok:?}"))?;
            (a, if bb[k] == b'-' { -b } else { b })
        }
        None => (parse_number(base).ok_or_else(|| format!("bad value in {tok:?}"))?, 0.0),
    };
    if base == "stale" {
        out.extend(std::iter::repeat_n(Some(stale_marker()), times + 1));
        return Ok(());
    }
    for j in 0..=times {
        out.push(Some(a + b * j as f64));
    }
    Ok(())
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    if let Some(h) = s.strip_prefix("0x") {
        let _ = h;
        return None;
    }
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// A Prometheus duration (`1h30m`, `10s53ms`, `1d`) in ms.
fn parse_duration(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return Err("empty duration".into());
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[st..i].parse().map_err(|_| format!("bad duration {s:?}"))?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(format!("bad duration unit in {s:?}")),
        };
        total += n * mult;
    }
    Ok(total)
}

/// An eval time: a duration since 0, or plain seconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<f64>() {
        return Ok((v * 1000.0).round() as i64);
    }
    parse_duration(s)
}

#[test]
fn harness_parses_values() {
    let (v, h) = parse_values("0+1.33x2 _ stale 1x1").expect("parse");
    assert!(!h);
    assert_eq!(v.len(), 7, "{v:?}");
    let (l, rest) = parse_series_desc("http_requests{job=\"a\", b=\"c\"} 0+1x2").expect("desc");
    assert_eq!(l.len(), 3, "{l:?} {rest:?}");
}
