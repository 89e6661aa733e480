//! Rule files in Prometheus's format (`groups:` of recording and alerting
//! rules), read and validated as `promtool check rules` does.
//!
//! This file owns parsing and validation only: it never evaluates a rule,
//! never touches storage, and never panics on a file's content (a rule
//! file is operator input, and a bad one must be refused with a message
//! naming the group and rule, not crash the node).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::tsdb::labels::{is_valid_label_name, is_valid_metric_name};

/// Largest rule file read, in bytes: rule files are written by people and
/// generators of a few thousand rules; past this the file is refused
/// rather than held in memory.
pub const RULE_FILE_BYTES_MAX: u64 = 64 << 20;

/// Why a rule file was refused. Each message names the file, and where it
/// applies the group and the rule, as promtool does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuleFileError {
    /// The file.
    pub file: String,
    /// What is wrong (several problems are joined with "; ").
    pub message: String,
}

/// One rule file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The groups, in file order.
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

/// One group of rules as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    /// Unique within the file.
    pub name: String,
    /// Evaluation interval; `None`: the global `evaluation_interval`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Most series a recording rule or alerts an alerting rule may
    /// produce per evaluation; 0: no limit.
    #[serde(default)]
    pub limit: usize,
    /// The rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// One rule as written: exactly one of `record` and `alert` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// A recording rule's output metric name.
    pub record: Option<String>,
    /// An alerting rule's alert name.
    pub alert: Option<String>,
    /// The PromQL expression.
    #[serde(default)]
    pub expr: String,
    /// How long an alert stays pending before it fires.
    #[serde(default, rename = "for", deserialize_with = "opt_duration")]
    pub for_: Option<Duration>,
    /// How long an alert keeps firing after its condition cleared.
    #[serde(default, deserialize_with = "opt_duration")]
    pub keep_firing_for: Option<Duration>,
    /// Labels added to (or overriding) the result's labels; templated for alerts.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alert annotations, templated.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_prom_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A Prometheus duration (`0`, `90s`, `1h30m`, `250ms`); Prometheus
/// refuses a unit without a number and a number without a unit other
/// than `0`.
pub fn parse_prom_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    crate::config::parse_duration(s).map_err(|e| format!("not a valid duration string: {e}"))
}

impl RuleFile {
    /// Parses and validates `text` (the content of `file`).
    pub fn parse(file: &str, text: &str) -> Result<RuleFile, RuleFileError> {
        let err = |message: String| RuleFileError {
            file: file.to_string(),
            message,
        };
        let parsed: RuleFile = if text.trim().is_empty() {
            RuleFile { groups: Vec::new() }
        } else {
            serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?
        };
        let problems = parsed.validate();
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(err(problems.join("; ")))
        }
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<RuleFile, RuleFileError> {
        let name = path.display().to_string();
        let err = |message: String| RuleFileError {
            file: name.clone(),
            message,
        };
        let size = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
        if size > RULE_FILE_BYTES_MAX {
            return Err(err(format!(
                "{size} bytes, more than the limit of {RULE_FILE_BYTES_MAX} bytes for a rule file"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        RuleFile::parse(&name, &text)
    }

    /// Every problem in the file, empty when it is valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for g in &self.groups {
            if g.name.is_empty() {
                problems.push("Groupname must not be empty".to_string());
            }
            if !seen.insert(g.name.as_str()) {
                problems.push(format!("groupname: {:?} is repeated in the same file", g.name));
            }
            for (i, r) in g.rules.iter().enumerate() {
                for p in r.validate() {
                    problems.push(format!("group {:?}, rule {}, {:?}: {p}", g.name, i + 1, r.name()));
                }
            }
        }
        problems
    }
}

impl RuleDef {
    /// The record or alert name.
    pub fn name(&self) -> &str {
        self.record.as_deref().or(self.alert.as_deref()).unwrap_or("")
    }

    /// Every problem of this rule, in promtool's words where it has them.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match (&self.record, &self.alert) {
            (Some(_), Some(_)) => p.push("only one of 'record' and 'alert' must be set".to_string()),
            (None, None) => p.push("one of 'record' or 'alert' must be set".to_string()),
            (Some(r), None) if r.is_empty() => p.push("field 'record' must be set in rule".to_string()),
            (None, Some(a)) if a.is_empty() => p.push("field 'alert' must be set in rule".to_string()),
            _ => {}
        }
        if self.expr.is_empty() {
            p.push("field 'expr' must be set in rule".to_string());
        } else if let Err(e) = promql_parser::parser::parse(&self.expr) {
            p.push(format!("could not parse expression: {e}"));
        }
        if let Some(r) = &self.record {
            if !self.annotations.is_empty() {
                p.push("invalid field 'annotations' in recording rule".to_string());
            }
            if self.for_.is_some() {
                p.push("invalid field 'for' in recording rule".to_string());
            }
            if self.keep_firing_for.is_some() {
                p.push("invalid field 'keep_firing_for' in recording rule".to_string());
            }
            if !r.is_empty() && !is_valid_metric_name(r) {
                p.push(format!("invalid recording rule name: {r}"));
            }
        }
        for (k, v) in &self.labels {
            if !is_valid_label_name(k) {
                p.push(format!("invalid label name: {k}"));
            }
            if k == "__name__" {
                p.push(format!("invalid label name: {k}"));
            }
            if self.alert.is_some() {
                if let Err(e) = super::template::check(v) {
                    p.push(format!("label {k:?}: {e}"));
                }
            }
        }
        for (k, v) in &self.annotations {
            if !is_valid_label_name(k) {
                p.push(format!("invalid annotation name: {k}"));
            }
            if let Err(e) = super::template::check(v) {
                p.push(format!("annotation {k:?}: {e}"));
            }
        }
        p
    }
}

/// Every group of every file, with the file it came from, in order; the
/// first refused file stops the load (the caller keeps its old rules).
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<(String, GroupDef)>, RuleFileError> {
    let mut out = Vec::new();
    for path in paths {
        let f = RuleFile::load(path)?;
        let name = path.display().to_string();
        out.extend(f.groups.into_iter().map(|g| (name.clone(), g)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> String {
        match RuleFile::parse("t.yml", text) {
            Ok(_) => String::new(),
            Err(e) => e.message,
        }
    }

    #[test]
    fn a_valid_file_parses_with_every_field() {
        let f = RuleFile::parse(
            "t.yml",
            r#"
groups:
  - name: g
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: a}
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} down ({{ $value }})"}
"#,
        )
        .expect("valid file");
        let g = &f.groups[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.limit, 10);
        assert_eq!(g.rules[1].for_, Some(Duration::from_secs(300)));
        assert_eq!(g.rules[1].keep_firing_for, Some(Duration::from_secs(60)));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let cases = [
            ("groups: [{name: a, rules: []}, {name: a, rules: []}]", "is repeated"),
            (
                "groups: [{name: a, rules: [{record: 'a b', expr: up}]}]",
                "invalid recording rule name",
            ),
            (
                "groups: [{name: a, rules: [{record: a, alert: b, expr: up}]}]",
                "only one of",
            ),
            ("groups: [{name: a, rules: [{expr: up}]}]", "one of 'record' or 'alert'"),
            (
                "groups: [{name: a, rules: [{record: a, expr: 'sum('}]}]",
                "could not parse expression",
            ),
            ("groups: [{name: a, rules: [{record: a}]}]", "field 'expr' must be set"),
            (
                "groups: [{name: a, rules: [{record: a, expr: up, for: 1m}]}]",
                "invalid field 'for'",
            ),
            (
                "groups: [{name: a, rules: [{record: a, expr: up, annotations: {a: b}}]}]",
                "invalid field 'annotations'",
            ),
            (
                "groups: [{name: a, rules: [{alert: a, expr: up, labels: {'0x': b}}]}]",
                "invalid label name",
            ),
            (
                "groups: [{name: a, rules: [{alert: a, expr: up, labels: {__name__: b}}]}]",
                "invalid label name",
            ),
            (
                "groups: [{name: a, rules: [{alert: a, expr: up, annotations: {s: '{{ $labels.x '}}]}]",
                "annotation",
            ),
            (
                "groups: [{name: a, rules: [{alert: a, expr: up, for: 5x}]}]",
                "duration",
            ),
            ("groups: [{name: a, unknown: 1, rules: []}]", "unknown field"),
            ("groups: [{name: '', rules: []}]", "must not be empty"),
        ];
        for (text, want) in cases {
            let got = problems(text);
            assert!(
                got.contains(want),
                "{text}: expected a problem with {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn an_empty_file_has_no_groups() {
        assert!(RuleFile::parse("t.yml", "").expect("empty is valid").groups.is_empty());
        assert!(RuleFile::parse("t.yml", "groups: []").expect("valid").groups.is_empty());
    }
}
