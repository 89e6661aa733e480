//! Label sets: the identity of a series.
//!
//! A [`Labels`] is a list of name/value pairs sorted by name with unique names,
//! exactly as Prometheus defines a series identity. This file owns building,
//! validating and hashing label sets; it does not intern or index them (the
//! head does that).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Longest label name or value accepted, in bytes. Prometheus itself has no
/// hard limit; this one keeps a single hostile label from bloating every
/// index entry it touches.
pub const LABEL_LENGTH_MAX: usize = 4096;

/// Most labels one series may carry. Real exporters stay far below this; a
/// request past it is almost certainly broken or hostile.
pub const LABELS_PER_SERIES_MAX: usize = 128;

/// One name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    /// The label name, `[a-zA-Z_][a-zA-Z0-9_]*` (or UTF-8 when validation allows it).
    pub name: String,
    /// The label value, any UTF-8.
    pub value: String,
}

/// A series identity: labels sorted by name, names unique, no empty values.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Labels(Vec<Label>);

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No labels at all, or no `__name__`.
    #[error("series has no labels")]
    Empty,
    /// A name that is empty or not `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name {0:?}")]
    InvalidName(String),
    /// The same name twice.
    #[error("duplicate label name {0:?}")]
    DuplicateName(String),
    /// Names not in ascending order (remote write requires sorted labels).
    #[error("labels are not sorted by name: {0:?} comes after {1:?}")]
    Unsorted(String, String),
    /// Too many labels.
    #[error("series has {0} labels, more than the limit of {LABELS_PER_SERIES_MAX}")]
    TooMany(usize),
    /// A name or value longer than [`LABEL_LENGTH_MAX`].
    #[error("label {0:?} is {1} bytes long, more than the limit of {LABEL_LENGTH_MAX}")]
    TooLong(String, usize),
}

/// True if `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return false,
    }
    bytes[1..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// True if `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':' => {}
        _ => return false,
    }
    bytes[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

impl Labels {
    /// The empty label set (used for aggregation results, never stored).
    pub fn empty() -> Self {
        Labels(Vec::new())
    }

    /// Builds a label set from pairs in any order; sorts them and drops pairs
    /// with an empty value (Prometheus treats an empty value as absent). Later
    /// duplicates of a name win, so this never fails: use [`Labels::validate`]
    /// for input from the network.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.into(),
                value: v.into(),
            })
            .filter(|l| !l.value.is_empty())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        // Keep the last of equal names.
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        Labels(out)
    }

    /// Wraps labels that the caller guarantees are sorted, unique and
    /// non-empty (for example read back from our own storage).
    pub fn from_sorted_unchecked(v: Vec<Label>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name), "labels not sorted");
        Labels(v)
    }

    /// Validates labels as they arrived from a remote-write sender: sorted
    /// by name, no duplicates, valid names, within the limits. Empty values
    /// are allowed here and dropped by the caller.
    pub fn validate_wire(pairs: &[(&str, &str)]) -> Result<(), LabelError> {
        if pairs.is_empty() {
            return Err(LabelError::Empty);
        }
        if pairs.len() > LABELS_PER_SERIES_MAX {
            return Err(LabelError::TooMany(pairs.len()));
        }
        let mut prev: Option<&str> = None;
        for (name, value) in pairs {
            if name.len() > LABEL_LENGTH_MAX {
                return Err(LabelError::TooLong(truncate_for_error(name), name.len()));
            }
            if value.len() > LABEL_LENGTH_MAX {
                return Err(LabelError::TooLong(truncate_for_error(name), value.len()));
            }
            let valid = if *name == METRIC_NAME {
                true
            } else {
                is_valid_label_name(name)
            };
            if !valid {
                return Err(LabelError::InvalidName(truncate_for_error(name)));
            }
            if *name == METRIC_NAME && !is_valid_metric_name(value) {
                return Err(LabelError::InvalidName(format!(
                    "__name__={}",
                    truncate_for_error(value)
                )));
            }
            if let Some(p) = prev {
                if p == *name {
                    return Err(LabelError::DuplicateName(name.to_string()));
                }
                if p > *name {
                    return Err(LabelError::Unsorted(name.to_string(), p.to_string()));
                }
            }
            prev = Some(name);
        }
        Ok(())
    }

    /// The value of `name`, or `""` if absent (Prometheus semantics).
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => &self.0[i].value,
            Err(_) => "",
        }
    }

    /// True if a label with this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).is_ok()
    }

    /// The metric name (`__name__`), or `""`.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(
                i,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }

    /// A copy without the metric name.
    pub fn without_metric_name(&self) -> Labels {
        Labels(self.0.iter().filter(|l| l.name != METRIC_NAME).cloned().collect())
    }

    /// Keeps only the named labels (`by (...)`).
    pub fn keep_only(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|l| names.contains(&l.name)).cloned().collect())
    }

    /// Drops the named labels (`without (...)`).
    pub fn drop_names(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|l| !names.contains(&l.name)).cloned().collect())
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a slice.
    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// Consumes the set into its sorted vector.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// A stable 64-bit hash of the label set (xxh3 over names and values with
    /// separators), the same on every node and every run.
    pub fn stable_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for l in &self.0 {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }
}

impl fmt::Display for Labels {
    /// Prometheus's text form: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        write!(f, "{name}{{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        write!(f, "}}")
    }
}

fn truncate_for_error(s: &str) -> String {
    const SHOWN_MAX: usize = 64;
    if s.len() <= SHOWN_MAX {
        return s.to_string();
    }
    let mut end = SHOWN_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_and_drops_empty_values() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.as_slice()[0].name, "a");
        assert_eq!(l.get("b"), "2");
        assert_eq!(l.get("c"), "");
    }

    #[test]
    fn wire_validation_reports_each_problem() {
        assert_eq!(Labels::validate_wire(&[]), Err(LabelError::Empty));
        assert!(matches!(
            Labels::validate_wire(&[("b", "1"), ("a", "1")]),
            Err(LabelError::Unsorted(..))
        ));
        assert!(matches!(
            Labels::validate_wire(&[("a", "1"), ("a", "2")]),
            Err(LabelError::DuplicateName(..))
        ));
        assert!(matches!(
            Labels::validate_wire(&[("1a", "1")]),
            Err(LabelError::InvalidName(..))
        ));
        assert!(matches!(
            Labels::validate_wire(&[("", "1")]),
            Err(LabelError::InvalidName(..))
        ));
        assert!(matches!(
            Labels::validate_wire(&[("__name__", "a-b")]),
            Err(LabelError::InvalidName(..))
        ));
        assert!(Labels::validate_wire(&[("__name__", "up"), ("job", "x")]).is_ok());
        let many: Vec<(String, String)> = (0..200).map(|i| (format!("l{i:03}"), "v".to_string())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(Labels::validate_wire(&refs), Err(LabelError::TooMany(200)));
    }

    #[test]
    fn display_matches_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
    }

    #[test]
    fn stable_hash_separates_boundaries() {
        let a = Labels::from_pairs([("a", "bc")]);
        let b = Labels::from_pairs([("ab", "c")]);
        assert_ne!(a.stable_hash(), b.stable_hash());
    }
}
