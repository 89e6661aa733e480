//! Label matchers: `=`, `!=`, `=~`, `!~` with Prometheus semantics.
//!
//! Regexes are fully anchored (`^(?:re)$`) and match the whole value, and a
//! matcher that matches the empty string also selects series that lack the
//! label. This file owns matching a single value; selecting series by
//! matchers is the postings index's job.

use regex::Regex;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// The literal value or the regex source as written.
    pub value: String,
    re: Option<Regex>,
}

/// A regex that did not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid regex {pattern:?} in matcher for {name:?}: {reason}")]
pub struct MatcherError {
    /// Label name.
    pub name: String,
    /// Pattern.
    pub pattern: String,
    /// Compiler message.
    pub reason: String,
}

/// Most bytes a compiled matcher regex may take; bounds memory for hostile
/// patterns such as `(a{1000}){1000}`.
pub const MATCHER_REGEX_SIZE_MAX: usize = 1 << 20;

impl Matcher {
    /// Builds a matcher, compiling and anchoring the regex for `=~`/`!~`.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?s:{value})$"))
                    .size_limit(MATCHER_REGEX_SIZE_MAX)
                    .build()
                    .map_err(|e| MatcherError {
                        name: name.clone(),
                        pattern: value.clone(),
                        reason: e.to_string(),
                    })?,
            ),
            _ => None,
        };
        Ok(Matcher { name, op, value, re })
    }

    /// Shorthand for an `=` matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// True if `value` (the empty string for an absent label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// True if this matcher selects series that lack the label entirely.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For a regex that is a plain alternation of literals (`a|b|c`), the
    /// literals; the postings index then does exact lookups instead of
    /// scanning every value of the label.
    pub fn set_literals(&self) -> Option<Vec<String>> {
        if self.op != MatchOp::Regex {
            return None;
        }
        let special = |c: char| "\\.+*?()[]{}^$".contains(c);
        if self.value.chars().any(special) {
            return None;
        }
        Some(self.value.split('|').map(str::to_string).collect())
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored() {
        let m = Matcher::new(MatchOp::Regex, "job", "node").unwrap();
        assert!(m.matches("node"));
        assert!(!m.matches("node_exporter"));
        assert!(!m.matches("anode"));
        let m = Matcher::new(MatchOp::Regex, "job", "no.*").unwrap();
        assert!(m.matches("node_exporter"));
        let m = Matcher::new(MatchOp::NotRegex, "job", "a|b").unwrap();
        assert!(!m.matches("a"));
        assert!(m.matches("ab"));
        assert!(m.matches_empty());
    }

    #[test]
    fn dot_matches_newline_like_prometheus() {
        let m = Matcher::new(MatchOp::Regex, "x", "a.b").unwrap();
        assert!(m.matches("a\nb"));
    }

    #[test]
    fn literal_sets() {
        let m = Matcher::new(MatchOp::Regex, "x", "a|bb|c").unwrap();
        assert_eq!(m.set_literals(), Some(vec!["a".into(), "bb".into(), "c".into()]));
        assert_eq!(Matcher::new(MatchOp::Regex, "x", "a.*").unwrap().set_literals(), None);
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(Matcher::new(MatchOp::Regex, "x", "(").is_err());
    }
}
