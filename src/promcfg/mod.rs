//! The Prometheus configuration file (`--prometheus-config`): `global`,
//! `scrape_configs`, `rule_files` and `alerting`, parsed as Prometheus
//! parses them, with its defaults, and checked before anything uses it.
//!
//! This module owns reading, checking and reloading the file; it does not
//! scrape, evaluate or send anything (`scrape`, and the rules and alerting
//! modules, subscribe to [`PromConfigState`]). What promraft does not
//! support (remote_write, remote_read, storage, tracing, service discovery
//! other than static and file) is refused with one message naming each
//! such key, so a file never runs half understood. Unknown keys are
//! refused too, as Prometheus refuses them.

pub mod relabel;
mod state;
mod types;

use std::path::{Path, PathBuf};

use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use relabel::{RelabelConfig, RelabelRegex};
pub use state::PromConfigState;
pub use types::*;

/// Largest configuration file read, in bytes: real files are kilobytes;
/// this keeps a wrong path (a log, a disk image) from being read whole.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// Top-level sections and per-job keys that Prometheus knows and promraft
/// does not support (every `*_sd_configs` other than `static_configs` and
/// `file_sd_configs` is refused as well).
const UNSUPPORTED_KEYS: &[&str] = &[
    "remote_write",
    "remote_read",
    "storage",
    "tracing",
    "scrape_config_files",
    "oauth2",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "bearer_token",
    "bearer_token_file",
    "native_histogram_bucket_limit",
];

/// Why a Prometheus configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromConfigError {
    /// The file could not be read.
    #[error("prometheus config {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Not YAML, or a value of the wrong type.
    #[error("prometheus config {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// Sections or keys promraft does not support, or does not know.
    #[error("prometheus config {path}: {}", .items.join("; "))]
    Unsupported {
        /// The file.
        path: String,
        /// One entry per key, naming where it is.
        items: Vec<String>,
    },
    /// A value Prometheus would refuse too.
    #[error("prometheus config {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Which value, and why.
        reason: String,
    },
}

/// A checked configuration, where it came from and its digest.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file.
    pub path: PathBuf,
    /// The parsed configuration, defaults filled in, relative paths
    /// resolved against the file's directory.
    pub config: PromConfig,
    /// SHA-256 of the file's bytes, lower-case hex: equal on every node
    /// that runs the same file.
    pub digest: String,
}

impl LoadedConfig {
    /// The configuration as `/api/v1/status/config` shows it: YAML with
    /// the defaults filled in and secrets as `<secret>`.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.config).unwrap_or_default()
    }

    /// The rule files: `rule_files` globs expanded, sorted, without
    /// duplicates. A glob matching nothing contributes nothing, as in
    /// Prometheus.
    pub fn rule_file_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .config
            .rule_files
            .iter()
            .filter_map(|g| glob::glob(g).ok())
            .flat_map(|paths| paths.filter_map(Result::ok))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, PromConfigError> {
    let shown = path.display().to_string();
    let read_err = |reason: String| PromConfigError::Read {
        path: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
    if meta.len() > FILE_BYTES_MAX {
        return Err(read_err(format!(
            "{} bytes, more than the limit of {FILE_BYTES_MAX}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let config = parse(&bytes, dir).map_err(|e| e.at(&shown))?;
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        config,
        digest: hex(&Sha256::digest(&bytes)),
    })
}

/// A refusal before the file's path is known ([`load`] adds it).
#[derive(Debug)]
pub enum ParseError {
    /// Not YAML or wrong types.
    Parse(String),
    /// Unsupported or unknown keys.
    Unsupported(Vec<String>),
    /// A value Prometheus refuses.
    Invalid(String),
}

impl ParseError {
    fn at(self, path: &str) -> PromConfigError {
        let path = path.to_string();
        match self {
            ParseError::Parse(reason) => PromConfigError::Parse { path, reason },
            ParseError::Unsupported(items) => PromConfigError::Unsupported { path, items },
            ParseError::Invalid(reason) => PromConfigError::Invalid { path, reason },
        }
    }
}

/// Parses and checks the file's bytes; relative paths in it are resolved
/// against `dir`.
pub fn parse(bytes: &[u8], dir: &Path) -> Result<PromConfig, ParseError> {
    let raw: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Mapping(Default::default())
    } else {
        serde_yaml::from_slice(bytes).map_err(|e| ParseError::Parse(e.to_string()))?
    };
    let mut config: PromConfig = serde_yaml::from_value(raw.clone()).map_err(|e| ParseError::Parse(e.to_string()))?;
    // Every key of the file must have landed in a field: a key that did not
    // is unknown to Prometheus or unsupported here.
    let known = serde_yaml::to_value(&config).map_err(|e| ParseError::Parse(e.to_string()))?;
    let mut items = Vec::new();
    unknown_keys(&raw, &known, "", &mut items);
    if !items.is_empty() {
        return Err(ParseError::Unsupported(items));
    }
    // Prometheus: an unset global timeout is the default cut to the
    // global interval.
    if raw
        .get("global")
        .and_then(|g| g.get("scrape_timeout"))
        .is_none_or(Value::is_null)
    {
        let g = &mut config.global;
        g.scrape_timeout.0 = g.scrape_timeout.0.min(g.scrape_interval.0);
    }
    check::resolve(&mut config, dir).map_err(ParseError::Invalid)?;
    Ok(config)
}

/// Collects the keys of `raw` that `known` (the parsed value serialized
/// again) lacks, with their place in the file.
fn unknown_keys(raw: &Value, known: &Value, at: &str, out: &mut Vec<String>) {
    match (raw, known) {
        (Value::Mapping(r), Value::Mapping(k)) => {
            for (key, v) in r {
                let name = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
                let here = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                match k.get(key) {
                    Some(kv) => unknown_keys(v, kv, &here, out),
                    None if v.is_null() => {}
                    None if UNSUPPORTED_KEYS.contains(&name.as_str())
                        || (name.ends_with("_sd_configs") && name != "file_sd_configs") =>
                    {
                        out.push(format!("{here}: not supported by promraft"));
                    }
                    None => out.push(format!("{here}: unknown field")),
                }
            }
        }
        (Value::Sequence(r), Value::Sequence(k)) => {
            for (i, (rv, kv)) in r.iter().zip(k).enumerate() {
                let name = rv
                    .get("job_name")
                    .and_then(Value::as_str)
                    .map_or_else(String::new, |j| format!("(job {j:?})"));
                unknown_keys(rv, kv, &format!("{at}[{i}]{name}"), out);
            }
        }
        _ => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod check;

#[cfg(test)]
mod tests;
