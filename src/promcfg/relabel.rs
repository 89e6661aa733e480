//! Relabeling: Prometheus's `relabel_configs`, `metric_relabel_configs`
//! and `alert_relabel_configs`, applied to a label set.
//!
//! This file owns the rule type (with its defaults and checks) and
//! [`process`], a pure function of the labels and the rules; it does no
//! I/O. Semantics follow Prometheus's documentation: the regex is anchored
//! at both ends, source label values are joined with `separator`, `$1` and
//! `${name}` expand capture groups, an empty replacement result deletes the
//! target label.

use std::collections::BTreeMap;
use std::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tsdb::labels::is_valid_label_name;
use crate::tsdb::Labels;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Set `target_label` to `replacement` (expanded) when the regex
    /// matches the joined source values.
    #[default]
    Replace,
    /// Drop the set unless the regex matches.
    Keep,
    /// Drop the set when the regex matches.
    Drop,
    /// Drop the set unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drop the set when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Set `target_label` to an MD5 hash of the joined values modulo `modulus`.
    HashMod,
    /// Copy every label whose name matches to the name `replacement` gives.
    LabelMap,
    /// Remove every label whose name matches.
    LabelDrop,
    /// Remove every label whose name does not match.
    LabelKeep,
    /// Set `target_label` to the joined values in lower case.
    Lowercase,
    /// Set `target_label` to the joined values in upper case.
    Uppercase,
}

/// A regex as written in the file, compiled anchored (`^(?:re)$`).
#[derive(Clone)]
pub struct RelabelRegex {
    source: String,
    anchored: regex::Regex,
}

/// The regex Prometheus uses when a rule gives none.
pub const DEFAULT_REGEX: &str = "(.*)";

impl RelabelRegex {
    /// Compiles `source` anchored at both ends.
    pub fn new(source: &str) -> Result<RelabelRegex, regex::Error> {
        Ok(RelabelRegex {
            source: source.to_string(),
            anchored: regex::Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    /// The regex as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The anchored, compiled regex.
    pub fn regex(&self) -> &regex::Regex {
        &self.anchored
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        RelabelRegex::new(DEFAULT_REGEX).expect("the default relabel regex compiles")
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for RelabelRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl Serialize for RelabelRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelabelRegex::new(&s).map_err(|e| serde::de::Error::custom(format!("invalid regex {s:?}: {e}")))
    }
}

/// One relabeling rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelabelConfig {
    /// Labels whose values are joined and matched.
    pub source_labels: Vec<String>,
    /// Joins the source values (`;`).
    pub separator: String,
    /// Matched against the joined values (anchored; `(.*)`).
    pub regex: RelabelRegex,
    /// Modulus of `hashmod`.
    pub modulus: u64,
    /// The label written by replace, hashmod, lowercase and uppercase (a
    /// template for replace), compared by keepequal and dropequal.
    pub target_label: String,
    /// Template of the value written (`$1`).
    pub replacement: String,
    /// What to do.
    pub action: Action,
}

/// The separator Prometheus uses when a rule gives none.
pub const DEFAULT_SEPARATOR: &str = ";";
/// The replacement Prometheus uses when a rule gives none.
pub const DEFAULT_REPLACEMENT: &str = "$1";

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.into(),
            regex: RelabelRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.into(),
            action: Action::Replace,
        }
    }
}

impl RelabelConfig {
    /// Checks the fields an action needs or forbids, as Prometheus does at
    /// load; the message names the action and the field.
    pub fn validate(&self) -> Result<(), String> {
        use Action::*;
        let a = self.action;
        let name = serde_yaml::to_string(&a).unwrap_or_default().trim().to_string();
        let needs_target = matches!(a, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual);
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        if matches!(a, Lowercase | Uppercase | HashMod | KeepEqual | DropEqual)
            && !is_valid_label_name(&self.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                self.target_label
            ));
        }
        if a == HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let defaults_only = self.separator == DEFAULT_SEPARATOR
            && self.replacement == DEFAULT_REPLACEMENT
            && self.modulus == 0
            && self.target_label.is_empty()
            && self.source_labels.is_empty();
        if matches!(a, LabelDrop | LabelKeep) && !defaults_only {
            return Err(format!("{name} action requires only 'regex', and no other fields"));
        }
        if matches!(a, KeepEqual | DropEqual)
            && (self.regex.as_str() != DEFAULT_REGEX
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and 'target_label', and no other fields"
            ));
        }
        Ok(())
    }
}

/// Applies `rules` in order; `None` when a rule dropped the set. Labels
/// whose value becomes empty are removed (Prometheus's empty value is an
/// absent label).
pub fn process(labels: &Labels, rules: &[RelabelConfig]) -> Option<Labels> {
    let mut map: BTreeMap<String, String> = labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
    for rule in rules {
        if !apply(&mut map, rule) {
            return None;
        }
    }
    Some(Labels::from_pairs(map))
}

/// One rule; false when the set is dropped.
fn apply(map: &mut BTreeMap<String, String>, rule: &RelabelConfig) -> bool {
    let values: Vec<&str> = rule
        .source_labels
        .iter()
        .map(|n| map.get(n).map_or("", String::as_str))
        .collect();
    let val = values.join(&rule.separator);
    let re = rule.regex.regex();
    match rule.action {
        Action::Keep => return re.is_match(&val),
        Action::Drop => return !re.is_match(&val),
        Action::KeepEqual => return map.get(&rule.target_label).map_or("", String::as_str) == val,
        Action::DropEqual => return map.get(&rule.target_label).map_or("", String::as_str) != val,
        Action::Replace => replace(map, rule, &val),
        Action::Lowercase => set(map, &rule.target_label, val.to_lowercase()),
        Action::Uppercase => set(map, &rule.target_label, val.to_uppercase()),
        Action::HashMod => {
            let m = hash_mod(&val, rule.modulus);
            set(map, &rule.target_label, m.to_string());
        }
        Action::LabelMap => {
            let copies: Vec<(String, String)> = map
                .iter()
                .filter_map(|(n, v)| {
                    let caps = re.captures(n)?;
                    let mut out = String::new();
                    caps.expand(&rule.replacement, &mut out);
                    Some((out, v.clone()))
                })
                .collect();
            for (n, v) in copies {
                set(map, &n, v);
            }
        }
        Action::LabelDrop => map.retain(|n, _| !re.is_match(n)),
        Action::LabelKeep => map.retain(|n, _| re.is_match(n)),
    }
    true
}

/// `replace`: nothing happens when the regex does not match or the
/// expanded target is not a valid label name.
fn replace(map: &mut BTreeMap<String, String>, rule: &RelabelConfig, val: &str) {
    let Some(caps) = rule.regex.regex().captures(val) else {
        return;
    };
    let mut target = String::new();
    caps.expand(&rule.target_label, &mut target);
    if !is_valid_label_name(&target) {
        return;
    }
    let mut res = String::new();
    caps.expand(&rule.replacement, &mut res);
    set(map, &target, res);
}

fn set(map: &mut BTreeMap<String, String>, name: &str, value: String) {
    if value.is_empty() {
        map.remove(name);
    } else {
        map.insert(name.to_string(), value);
    }
}

/// Prometheus's hashmod: the last 8 bytes of the MD5 of `val`, big
/// endian, modulo `modulus` (validated non-zero).
pub fn hash_mod(val: &str, modulus: u64) -> u64 {
    let sum = Md5::digest(val.as_bytes());
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&sum[8..16]);
    u64::from_be_bytes(tail) % modulus.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        let r: Vec<RelabelConfig> = serde_yaml::from_str(yaml).expect("rules parse");
        for x in &r {
            x.validate().expect("rules valid");
        }
        r
    }

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn replace_defaults_copy_the_joined_sources() {
        let r = rules("- source_labels: [a, b]\n  target_label: c\n");
        let out = process(&ls(&[("a", "x"), ("b", "y")]), &r);
        assert_eq!(out, Some(ls(&[("a", "x"), ("b", "y"), ("c", "x;y")])));
    }

    #[test]
    fn replace_expands_groups_and_is_anchored() {
        let r = rules(
            "- source_labels: [__address__]\n  regex: '([^:]+):\\d+'\n  target_label: host\n  replacement: 'h-${1}'\n",
        );
        let out = process(&ls(&[("__address__", "node1:9100")]), &r).expect("kept");
        assert_eq!(out.get("host"), "h-node1");
        // Anchored: a partial match does nothing.
        let r = rules("- source_labels: [a]\n  regex: 'b'\n  target_label: c\n");
        assert_eq!(process(&ls(&[("a", "abc")]), &r), Some(ls(&[("a", "abc")])));
    }

    #[test]
    fn empty_replacement_deletes_and_invalid_target_is_ignored() {
        let r = rules("- source_labels: [a]\n  target_label: b\n  replacement: ''\n");
        assert_eq!(process(&ls(&[("a", "1"), ("b", "2")]), &r), Some(ls(&[("a", "1")])));
        let r = rules("- source_labels: [a]\n  target_label: '${1}'\n");
        assert_eq!(process(&ls(&[("a", "1x")]), &r), Some(ls(&[("a", "1x")])));
    }

    #[test]
    fn keep_drop_and_equal_variants() {
        let keep = rules("- source_labels: [job]\n  regex: 'node|prom'\n  action: keep\n");
        assert!(process(&ls(&[("job", "node")]), &keep).is_some());
        assert!(process(&ls(&[("job", "nodex")]), &keep).is_none());
        let drop = rules("- source_labels: [job]\n  regex: node\n  action: drop\n");
        assert!(process(&ls(&[("job", "node")]), &drop).is_none());
        // A missing source label is the empty string.
        let drop_empty = rules("- source_labels: [missing]\n  regex: ''\n  action: drop\n");
        assert!(process(&ls(&[("job", "x")]), &drop_empty).is_none());
        let ke = rules("- source_labels: [a]\n  target_label: b\n  action: keepequal\n");
        assert!(process(&ls(&[("a", "1"), ("b", "1")]), &ke).is_some());
        assert!(process(&ls(&[("a", "1"), ("b", "2")]), &ke).is_none());
        let de = rules("- source_labels: [a]\n  target_label: b\n  action: dropequal\n");
        assert!(process(&ls(&[("a", "1"), ("b", "1")]), &de).is_none());
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus's documented case: "baz" modulo 1000 hashes to 976.
        assert_eq!(hash_mod("baz", 1000), 976);
        let r = rules("- source_labels: [a]\n  modulus: 1000\n  target_label: shard\n  action: hashmod\n");
        assert_eq!(process(&ls(&[("a", "baz")]), &r).expect("kept").get("shard"), "976");
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_and_case() {
        let r = rules("- regex: '__meta_(.+)'\n  action: labelmap\n");
        let out = process(&ls(&[("__meta_zone", "eu"), ("a", "1")]), &r).expect("kept");
        assert_eq!(out.get("zone"), "eu");
        assert_eq!(out.get("__meta_zone"), "eu");
        let r = rules("- regex: '__meta_.*'\n  action: labeldrop\n");
        assert_eq!(
            process(&ls(&[("__meta_zone", "eu"), ("a", "1")]), &r),
            Some(ls(&[("a", "1")]))
        );
        let r = rules("- regex: 'a|b'\n  action: labelkeep\n");
        assert_eq!(
            process(&ls(&[("a", "1"), ("b", "2"), ("c", "3")]), &r),
            Some(ls(&[("a", "1"), ("b", "2")]))
        );
        let r = rules("- source_labels: [a]\n  target_label: lo\n  action: lowercase\n- source_labels: [a]\n  target_label: up\n  action: uppercase\n");
        let out = process(&ls(&[("a", "MiX")]), &r).expect("kept");
        assert_eq!((out.get("lo"), out.get("up")), ("mix", "MIX"));
    }

    #[test]
    fn invalid_rules_are_refused_at_load() {
        for bad in [
            "- action: replace\n  source_labels: [a]\n",
            "- action: hashmod\n  source_labels: [a]\n  target_label: b\n",
            "- action: labeldrop\n  regex: a\n  source_labels: [a]\n",
            "- action: keepequal\n  source_labels: [a]\n  target_label: b\n  regex: x\n",
            "- action: uppercase\n  source_labels: [a]\n  target_label: '1bad'\n",
        ] {
            let r: Vec<RelabelConfig> = serde_yaml::from_str(bad).expect("parses");
            assert!(r[0].validate().is_err(), "accepted {bad}");
        }
        assert!(serde_yaml::from_str::<Vec<RelabelConfig>>("- regex: '('\n").is_err());
        assert!(serde_yaml::from_str::<Vec<RelabelConfig>>("- action: explode\n").is_err());
    }
}
