//! One validated configuration for a node.
//!
//! Values come from defaults, then an optional YAML file (`--config`), then
//! `PROMRAFT_*` environment variables ([`Config::apply_env`]), then
//! command-line flags. [`Config::validate`] rejects bad values at start with
//! the field's name and the allowed range, so a node never runs half
//! configured. Every option is documented in deploy/promraft.example.yaml.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A configuration error, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value outside its allowed range.
    #[error("invalid config value for `{field}`: {value} ({allowed})")]
    Invalid {
        /// Field path, e.g. `storage.retention`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Parses a Prometheus-style duration: `100ms`, `30s`, `5m`, `2h`, `15d`,
/// `1w`, `1y`, or combinations like `1h30m`. Returns milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("{s:?} is not a duration (expected e.g. 30s, 5m, 2h, 15d)"));
        }
        let n: i64 = s[start..i].parse().map_err(|_| format!("{s:?}: number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h, d, w, y)")),
        };
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?}: duration too large"))?;
    }
    Ok(total)
}

mod duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{ms}ms"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration_ms(&s).map_err(serde::de::Error::custom)
    }
}

/// Storage options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// How long samples are kept (`retention`, e.g. `15d`).
    #[serde(with = "duration_serde")]
    pub retention: i64,
    /// Out-of-order window (`out_of_order_window`, e.g. `10m`; `0s` = off).
    #[serde(with = "duration_serde")]
    pub out_of_order_window: i64,
    /// How often the head is checkpointed (`checkpoint_interval`).
    #[serde(with = "duration_serde")]
    pub checkpoint_interval: i64,
    /// Checkpoint after this many log entries even before the interval.
    pub checkpoint_entries: u64,
    /// Log entries kept behind a checkpoint, so a briefly lagging follower
    /// catches up from the log instead of a snapshot.
    pub log_entries_kept: u64,
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            retention: 15 * 86_400_000,
            out_of_order_window: 0,
            checkpoint_interval: 60_000,
            checkpoint_entries: 20_000,
            log_entries_kept: 1_000,
            cache_bytes: 64 << 20,
        }
    }
}

/// Raft timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout, ms.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, ms.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        }
    }
}

/// Write path limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteConfig {
    /// Largest compressed remote-write body, bytes (413 past it).
    pub body_bytes_max: usize,
    /// Most samples one log entry carries (group commit bound).
    pub entry_samples_max: usize,
    /// Most series one log entry carries.
    pub entry_series_max: usize,
    /// How long the leader waits for more requests to join a batch, ms.
    pub batch_linger_ms: u64,
    /// Requests queued for the batcher; past it writes get 503.
    pub queue_requests_max: usize,
    /// Log entries proposed and not yet committed, at most.
    pub entries_in_flight_max: usize,
    /// How long a write may wait for commit before 503, ms.
    pub commit_timeout_ms: u64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            body_bytes_max: 32 << 20,
            entry_samples_max: 4_000,
            entry_series_max: 1_000,
            batch_linger_ms: 0,
            queue_requests_max: 1_024,
            entries_in_flight_max: 32,
            commit_timeout_ms: 10_000,
        }
    }
}

/// Query limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Most samples one query may load.
    pub samples_max: usize,
    /// Default and largest query timeout.
    #[serde(with = "duration_serde")]
    pub timeout: i64,
    /// Queries evaluated at once; more wait, then fail with 503.
    pub concurrency_max: usize,
    /// Default lookback delta.
    #[serde(with = "duration_serde")]
    pub lookback_delta: i64,
    /// A follower serving `consistency=local` reads fails with 503 if it has
    /// heard from no leader for longer than this.
    #[serde(with = "duration_serde")]
    pub max_staleness: i64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            samples_max: 50_000_000,
            timeout: 120_000,
            concurrency_max: 20,
            lookback_delta: 300_000,
            max_staleness: 10_000,
        }
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster, > 0.
    pub node_id: u64,
    /// Where sled keeps the log and the TSDB.
    pub data_dir: PathBuf,
    /// HTTP API listen address.
    pub http_addr: String,
    /// Raft listen address (also what peers dial).
    pub raft_addr: String,
    /// Members of a new cluster, `1=host:port,2=host:port,...` (Raft
    /// addresses). Empty: a one-member cluster. Ignored once the node holds
    /// Raft state.
    pub initial_cluster: String,
    /// Storage.
    pub storage: StorageConfig,
    /// Raft timing.
    pub raft: RaftConfig,
    /// Write path.
    pub write: WriteConfig,
    /// Query path.
    pub query: QueryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("data"),
            http_addr: "127.0.0.1:9090".into(),
            raft_addr: "127.0.0.1:9190".into(),
            initial_cluster: String::new(),
            storage: StorageConfig::default(),
            raft: RaftConfig::default(),
            write: WriteConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

fn invalid(field: &'static str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

/// The environment variables [`Config::apply_env`] reads, each overriding
/// one option. `PROMRAFT_CONFIG` (the file, like `--config`) is read by
/// `promraft serve` itself.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PROMRAFT_NODE_ID", "node_id"),
    ("PROMRAFT_DATA_DIR", "data_dir"),
    ("PROMRAFT_HTTP_ADDR", "http_addr"),
    ("PROMRAFT_RAFT_ADDR", "raft_addr"),
    ("PROMRAFT_INITIAL_CLUSTER", "initial_cluster"),
    ("PROMRAFT_RETENTION", "storage.retention"),
    ("PROMRAFT_OUT_OF_ORDER_WINDOW", "storage.out_of_order_window"),
];

impl Config {
    /// Reads a YAML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        serde_yaml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Applies the `PROMRAFT_*` environment variables listed in
    /// [`ENV_VARS`] over the file's values (containers and orchestrators set
    /// per-node values this way; precedence is defaults < file < environment
    /// < flags). `env` looks a variable up; an empty value counts as unset,
    /// so a blank entry in a Compose or Kubernetes file changes nothing.
    /// The error names the variable.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let bad = |field: &'static str, value: String, allowed: &str| invalid(field, value, allowed);
        if let Some(v) = get("PROMRAFT_NODE_ID") {
            self.node_id = v
                .trim()
                .parse()
                .map_err(|_| bad("PROMRAFT_NODE_ID", v, "must be a positive integer"))?;
        }
        if let Some(v) = get("PROMRAFT_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("PROMRAFT_HTTP_ADDR") {
            self.http_addr = v.trim().to_string();
        }
        if let Some(v) = get("PROMRAFT_RAFT_ADDR") {
            self.raft_addr = v.trim().to_string();
        }
        if let Some(v) = get("PROMRAFT_INITIAL_CLUSTER") {
            self.initial_cluster = v.trim().to_string();
        }
        if let Some(v) = get("PROMRAFT_RETENTION") {
            self.storage.retention = parse_duration_ms(&v).map_err(|e| bad("PROMRAFT_RETENTION", v.clone(), &e))?;
        }
        if let Some(v) = get("PROMRAFT_OUT_OF_ORDER_WINDOW") {
            self.storage.out_of_order_window =
                parse_duration_ms(&v).map_err(|e| bad("PROMRAFT_OUT_OF_ORDER_WINDOW", v.clone(), &e))?;
        }
        Ok(())
    }

    /// Checks every value; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", self.node_id, "must be at least 1"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "\"\"", "must be a directory path"));
        }
        for (field, addr) in [("http_addr", &self.http_addr), ("raft_addr", &self.raft_addr)] {
            if addr.parse::<SocketAddr>().is_err()
                && !addr
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Err(invalid(field, addr, "must be host:port, e.g. 127.0.0.1:9090"));
            }
        }
        if !self.initial_cluster.is_empty() {
            let m = crate::cluster::bootstrap::parse_initial_cluster(&self.initial_cluster)
                .map_err(|e| invalid("initial_cluster", &self.initial_cluster, &e))?;
            if !m.contains_key(&self.node_id) {
                return Err(invalid(
                    "initial_cluster",
                    &self.initial_cluster,
                    &format!("must list this node's id {}", self.node_id),
                ));
            }
        }
        let s = &self.storage;
        if s.retention < 60_000 {
            return Err(invalid(
                "storage.retention",
                format!("{}ms", s.retention),
                "must be at least 1m",
            ));
        }
        if s.out_of_order_window < 0 || s.out_of_order_window > s.retention {
            return Err(invalid(
                "storage.out_of_order_window",
                format!("{}ms", s.out_of_order_window),
                "must be between 0s and the retention",
            ));
        }
        if !(1_000..=3_600_000).contains(&s.checkpoint_interval) {
            return Err(invalid(
                "storage.checkpoint_interval",
                format!("{}ms", s.checkpoint_interval),
                "must be between 1s and 1h",
            ));
        }
        if !(10..=10_000_000).contains(&s.checkpoint_entries) {
            return Err(invalid(
                "storage.checkpoint_entries",
                s.checkpoint_entries,
                "must be between 10 and 10000000",
            ));
        }
        if s.log_entries_kept > 10_000_000 {
            return Err(invalid(
                "storage.log_entries_kept",
                s.log_entries_kept,
                "must be at most 10000000",
            ));
        }
        if s.cache_bytes < (1 << 20) {
            return Err(invalid(
                "storage.cache_bytes",
                s.cache_bytes,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        let r = &self.raft;
        if !(10..=10_000).contains(&r.heartbeat_interval_ms) {
            return Err(invalid(
                "raft.heartbeat_interval_ms",
                r.heartbeat_interval_ms,
                "must be between 10 and 10000",
            ));
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                r.election_timeout_min_ms,
                "must be larger than raft.heartbeat_interval_ms",
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                r.election_timeout_max_ms,
                "must be larger than raft.election_timeout_min_ms",
            ));
        }
        let w = &self.write;
        if !(1024..=(1 << 30)).contains(&w.body_bytes_max) {
            return Err(invalid(
                "write.body_bytes_max",
                w.body_bytes_max,
                "must be between 1024 and 1073741824",
            ));
        }
        if !(1..=1_000_000).contains(&w.entry_samples_max) {
            return Err(invalid(
                "write.entry_samples_max",
                w.entry_samples_max,
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=100_000).contains(&w.entry_series_max) {
            return Err(invalid(
                "write.entry_series_max",
                w.entry_series_max,
                "must be between 1 and 100000",
            ));
        }
        if w.batch_linger_ms > 1_000 {
            return Err(invalid(
                "write.batch_linger_ms",
                w.batch_linger_ms,
                "must be between 0 and 1000",
            ));
        }
        if !(1..=1_000_000).contains(&w.queue_requests_max) {
            return Err(invalid(
                "write.queue_requests_max",
                w.queue_requests_max,
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=1_024).contains(&w.entries_in_flight_max) {
            return Err(invalid(
                "write.entries_in_flight_max",
                w.entries_in_flight_max,
                "must be between 1 and 1024",
            ));
        }
        if !(100..=600_000).contains(&w.commit_timeout_ms) {
            return Err(invalid(
                "write.commit_timeout_ms",
                w.commit_timeout_ms,
                "must be between 100 and 600000",
            ));
        }
        let q = &self.query;
        if q.samples_max == 0 {
            return Err(invalid("query.samples_max", q.samples_max, "must be at least 1"));
        }
        if !(1..=3_600_000).contains(&q.timeout) {
            return Err(invalid(
                "query.timeout",
                format!("{}ms", q.timeout),
                "must be between 1ms and 1h",
            ));
        }
        if !(1..=10_000).contains(&q.concurrency_max) {
            return Err(invalid(
                "query.concurrency_max",
                q.concurrency_max,
                "must be between 1 and 10000",
            ));
        }
        if q.lookback_delta <= 0 {
            return Err(invalid(
                "query.lookback_delta",
                format!("{}ms", q.lookback_delta),
                "must be positive",
            ));
        }
        if q.max_staleness <= 0 {
            return Err(invalid(
                "query.max_staleness",
                format!("{}ms", q.max_staleness),
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration_ms("15d"), Ok(15 * 86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("100ms"), Ok(100));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.raft.election_timeout_max_ms = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("raft.election_timeout_max_ms"), "{e}");
        let c = Config {
            http_addr: "nonsense".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("http_addr"));
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let text = include_str!("../deploy/promraft.example.yaml");
        let c: Config = serde_yaml::from_str(text).expect("deploy/promraft.example.yaml parses");
        c.validate().expect("deploy/promraft.example.yaml is valid");
        let d = Config::default();
        assert_eq!(
            serde_yaml::to_string(&c).unwrap(),
            serde_yaml::to_string(&d).unwrap(),
            "the example shows the defaults"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_names_bad_variables() {
        let mut c: Config =
            serde_yaml::from_str("node_id: 7\nhttp_addr: 0.0.0.0:9090\nstorage:\n  retention: 2d\n").unwrap();
        let vars = std::collections::HashMap::from([
            ("PROMRAFT_NODE_ID", "2"),
            ("PROMRAFT_DATA_DIR", "/var/lib/promraft"),
            ("PROMRAFT_RAFT_ADDR", "promraft-2:9190"),
            (
                "PROMRAFT_INITIAL_CLUSTER",
                "1=promraft-1:9190,2=promraft-2:9190,3=promraft-3:9190",
            ),
            ("PROMRAFT_RETENTION", "30d"),
            ("PROMRAFT_HTTP_ADDR", " "),
        ]);
        c.apply_env(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/promraft"));
        assert_eq!(c.raft_addr, "promraft-2:9190");
        assert_eq!(c.storage.retention, 30 * 86_400_000);
        // Blank counts as unset: the file's value stays.
        assert_eq!(c.http_addr, "0.0.0.0:9090");
        c.validate().unwrap();
        // Every variable listed in ENV_VARS is read by the function...
        for (name, _) in ENV_VARS {
            let mut d = Config::default();
            let seen = std::cell::Cell::new(false);
            let _ = d.apply_env(|k| {
                if k == *name {
                    seen.set(true);
                }
                None
            });
            assert!(seen.get(), "{name} is not read");
        }
        // ...and every variable it reads is listed in ENV_VARS.
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        let _ = Config::default().apply_env(|k| {
            asked.borrow_mut().push(k.to_string());
            None
        });
        for k in asked.borrow().iter() {
            assert!(
                ENV_VARS.iter().any(|(name, _)| name == k),
                "{k} is read but not listed in ENV_VARS"
            );
        }
        let e = Config::default()
            .apply_env(|k| (k == "PROMRAFT_NODE_ID").then(|| "two".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("PROMRAFT_NODE_ID"), "{e}");
        let e = Config::default()
            .apply_env(|k| (k == "PROMRAFT_RETENTION").then(|| "forever".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("PROMRAFT_RETENTION"), "{e}");
    }

    #[test]
    fn yaml_rejects_unknown_fields_and_bad_durations() {
        assert!(serde_yaml::from_str::<Config>("storage:\n  retention: 2d\n").is_ok());
        assert!(serde_yaml::from_str::<Config>("storage:\n  retentoin: 2d\n").is_err());
        assert!(serde_yaml::from_str::<Config>("storage:\n  retention: forever\n").is_err());
    }
}
