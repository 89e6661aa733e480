//! One validated configuration for a node.
//!
//! Values come from defaults, then an optional YAML file (`--config`), then
//! `PROMRAFT_*` environment variables ([`Config::apply_env`]), then
//! command-line flags. [`Config::validate`] rejects bad values at start with
//! the field's name and the allowed range, so a node never runs half
//! configured. Every option is documented in deploy/promraft.example.yaml.
//!
//! This module is a leaf of the crate map: it holds values and their bounds
//! and calls into no other module of the crate. Durations are
//! [`std::time::Duration`] in memory and Prometheus duration strings (`15d`,
//! `1m`) in the file, so the unit is in the type and in the value; the
//! integer timings of `raft` and `write` carry `_ms` in their names.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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

/// Why a string is not a Prometheus duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses a Prometheus-style duration: `100ms`, `30s`, `5m`, `2h`, `15d`,
/// `1w`, `1y`, or combinations like `1h30m`. Returns milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, DurationError> {
    let s = s.trim();
    let fail = |m: String| Err(DurationError(m));
    if s.is_empty() {
        return fail("empty duration".into());
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
            return fail(format!("{s:?} is not a duration (expected e.g. 30s, 5m, 2h, 15d)"));
        }
        let Ok(n) = s[start..i].parse::<i64>() else {
            return fail(format!("{s:?}: number too large"));
        };
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
            u => return fail(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h, d, w, y)")),
        };
        match n.checked_mul(unit_ms).and_then(|v| total.checked_add(v)) {
            Some(t) => total = t,
            None => return fail(format!("{s:?}: duration too large")),
        }
    }
    Ok(total)
}

/// Parses a Prometheus-style duration (see [`parse_duration_ms`]).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    // parse_duration_ms accepts digits and units only, so the result is
    // never negative.
    parse_duration_ms(s).map(|ms| Duration::from_millis(ms.unsigned_abs()))
}

/// Writes a duration in the largest Prometheus unit that divides it
/// exactly (`15d`, `1m`, `250ms`), as the file spells it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Why an `initial_cluster` list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InitialClusterError(String);

/// The members of a new cluster: node id to Raft address, parsed once from
/// `1=host:port,2=host:port,...`. Empty means a one-member cluster. The
/// file, `PROMRAFT_INITIAL_CLUSTER` and `--initial-cluster` all spell it as
/// that string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialCluster(BTreeMap<u64, String>);

impl InitialCluster {
    /// Parses a non-empty list; a blank string is an error here (use
    /// [`str::parse`] to accept blank as "no list").
    pub fn parse_members(s: &str) -> Result<BTreeMap<u64, String>, InitialClusterError> {
        let fail = |m: String| Err(InitialClusterError(m));
        let mut out = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((id, addr)) = part.split_once('=') else {
                return fail(format!("{part:?} is not id=host:port (expected e.g. 1=10.0.0.1:9190)"));
            };
            let Ok(id) = id.trim().parse::<u64>() else {
                return fail(format!("{id:?} in {part:?} is not a node id (a positive integer)"));
            };
            if id == 0 {
                return fail(format!("node id 0 in {part:?} is not allowed (ids start at 1)"));
            }
            let addr = addr.trim();
            if !is_host_port(addr) {
                return fail(format!("{addr:?} in {part:?} is not host:port"));
            }
            if out.insert(id, addr.to_string()).is_some() {
                return fail(format!("node id {id} is listed twice"));
            }
        }
        if out.is_empty() {
            return fail("the list is empty".into());
        }
        Ok(out)
    }

    /// No list: this node starts a one-member cluster.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Node id to Raft address, in id order.
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.0
    }
}

impl FromStr for InitialCluster {
    type Err = InitialClusterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(InitialCluster::default());
        }
        InitialCluster::parse_members(s).map(InitialCluster)
    }
}

impl fmt::Display for InitialCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (id, addr)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}={addr}")?;
        }
        Ok(())
    }
}

impl Serialize for InitialCluster {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for InitialCluster {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `host:port` with a non-empty host and a valid port.
fn is_host_port(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// The bounds `validate` enforces. Each is used where it is checked and
/// also writes the error text, so the message can never disagree with the
/// check.
pub mod bounds {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    /// `node_id`: ids start at 1 (0 means "no node" to openraft users).
    pub const NODE_ID_MIN: u64 = 1;
    /// `storage.retention`: shorter would drop data before a checkpoint
    /// could even hold it.
    pub const RETENTION_MIN: Duration = Duration::from_secs(60);
    /// `storage.checkpoint_interval`: under a second checkpoints would
    /// compete with apply; over an hour the replay after a crash grows long.
    pub const CHECKPOINT_INTERVAL: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(1), Duration::from_secs(3_600));
    /// `storage.checkpoint_entries`.
    pub const CHECKPOINT_ENTRIES: RangeInclusive<u64> = RangeInclusive::new(10, 10_000_000);
    /// `storage.log_entries_kept`: at most this many.
    pub const LOG_ENTRIES_KEPT_MAX: u64 = 10_000_000;
    /// `storage.cache_bytes`: at least 1 MiB, or sled thrashes.
    pub const CACHE_BYTES_MIN: u64 = 1 << 20;
    /// `raft.heartbeat_interval_ms`.
    pub const HEARTBEAT_INTERVAL_MS: RangeInclusive<u64> = RangeInclusive::new(10, 10_000);
    /// `write.body_bytes_max`. The top is the decoder's own ceiling
    /// ([`WRITE_BODY_BYTES_MAX`]), so a configured limit is always the one
    /// enforced.
    pub const BODY_BYTES: RangeInclusive<usize> = RangeInclusive::new(1024, WRITE_BODY_BYTES_MAX);
    /// `write.entry_samples_max`.
    pub const ENTRY_SAMPLES: RangeInclusive<usize> = RangeInclusive::new(1, 1_000_000);
    /// `write.entry_series_max`.
    pub const ENTRY_SERIES: RangeInclusive<usize> = RangeInclusive::new(1, 100_000);
    /// `write.request_series_max`. The top is the decoder's own ceiling
    /// (`api::remote_write::WRITE_SERIES_MAX`, which bounds what its
    /// pre-scan lets prost allocate), so a configured limit is always the
    /// one enforced.
    pub const REQUEST_SERIES: RangeInclusive<usize> = RangeInclusive::new(1, 100_000);
    /// `write.label_name_bytes_max` and `write.label_value_bytes_max`. The
    /// top is the TSDB's own ceiling (`tsdb::labels::LABEL_LENGTH_MAX`).
    pub const LABEL_BYTES: RangeInclusive<usize> = RangeInclusive::new(1, 4096);
    /// `write.batch_linger_ms`: a second of linger is already a second of
    /// latency on every write.
    pub const BATCH_LINGER_MS: RangeInclusive<u64> = RangeInclusive::new(0, 1_000);
    /// `write.queue_requests_max`.
    pub const QUEUE_REQUESTS: RangeInclusive<usize> = RangeInclusive::new(1, 1_000_000);
    /// `write.entries_in_flight_max`.
    pub const ENTRIES_IN_FLIGHT: RangeInclusive<usize> = RangeInclusive::new(1, 1_024);
    /// `write.commit_timeout_ms`.
    pub const COMMIT_TIMEOUT_MS: RangeInclusive<u64> = RangeInclusive::new(100, 600_000);
    /// `write.leader_wait_ms` (0: a write without a leader fails at once).
    pub const LEADER_WAIT_MS: RangeInclusive<u64> = RangeInclusive::new(0, 60_000);
    /// `query.samples_max`: at least one.
    pub const QUERY_SAMPLES_MIN: usize = 1;
    /// `query.timeout`.
    pub const QUERY_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_millis(1), Duration::from_secs(3_600));
    /// `query.concurrency_max`.
    pub const QUERY_CONCURRENCY: RangeInclusive<usize> = RangeInclusive::new(1, 10_000);
    /// `query.expr_bytes_max`: from a short selector to the largest
    /// request body a node reads.
    pub const QUERY_EXPR_BYTES: RangeInclusive<usize> = RangeInclusive::new(64, 32 << 20);
    /// `web.connections_max`: one connection at least; a million open
    /// sockets is past any file-descriptor limit a node is given.
    pub const WEB_CONNECTIONS: RangeInclusive<usize> = RangeInclusive::new(1, 1_000_000);
    /// `web.header_read_timeout`: a second at least (a real client on a
    /// slow link); ten minutes at most, past which the timeout protects
    /// nothing.
    pub const WEB_HEADER_READ_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(1), Duration::from_secs(600));
    /// `web.body_read_timeout`: as above, up to an hour for a 32 MiB body
    /// on a slow link.
    pub const WEB_BODY_READ_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(1), Duration::from_secs(3_600));
    /// `web.tls_handshake_timeout`.
    pub const WEB_TLS_HANDSHAKE_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(1), Duration::from_secs(600));
    /// `ha_dedup.failover_timeout`: at least a second (a sender flushes
    /// every few seconds, a shorter timeout would flip the elected replica
    /// between two healthy senders), at most a day.
    pub const HA_FAILOVER_TIMEOUT: RangeInclusive<Duration> =
        RangeInclusive::new(Duration::from_secs(1), Duration::from_secs(86_400));
    /// `ha_dedup.clusters_max`: each cluster is a few hundred bytes of
    /// replicated state, kept in every checkpoint.
    pub const HA_CLUSTERS: RangeInclusive<usize> = RangeInclusive::new(1, 100_000);

    /// Largest remote-write body (compressed) any configuration may accept,
    /// bytes. Prometheus's own sender keeps requests to
    /// `max_samples_per_send` (2,000 by default), well under 1 MiB
    /// compressed; 32 MiB leaves room for senders configured with very large
    /// batches while bounding what one request can make a node buffer.
    pub const WRITE_BODY_BYTES_MAX: usize = 32 << 20;
}

pub use bounds::WRITE_BODY_BYTES_MAX;

/// Storage options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// How long samples are kept (`retention`, e.g. `15d`).
    #[serde(with = "duration_serde")]
    pub retention: Duration,
    /// Out-of-order window (`out_of_order_window`, e.g. `10m`; `0s` = off).
    #[serde(with = "duration_serde")]
    pub out_of_order_window: Duration,
    /// How often the head is checkpointed (`checkpoint_interval`).
    #[serde(with = "duration_serde")]
    pub checkpoint_interval: Duration,
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
            retention: Duration::from_secs(15 * 86_400),
            out_of_order_window: Duration::ZERO,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_entries: 20_000,
            log_entries_kept: 1_000,
            cache_bytes: 64 << 20,
        }
    }
}

impl StorageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use bounds::*;
        if self.retention < RETENTION_MIN {
            return Err(below("storage.retention", fd(self.retention), fd(RETENTION_MIN)));
        }
        if self.out_of_order_window > self.retention {
            return Err(invalid(
                "storage.out_of_order_window",
                fd(self.out_of_order_window),
                "must be between 0s and the retention",
            ));
        }
        let ci = &CHECKPOINT_INTERVAL;
        if !ci.contains(&self.checkpoint_interval) {
            let (lo, hi) = (fd(*ci.start()), fd(*ci.end()));
            return Err(outside(
                "storage.checkpoint_interval",
                fd(self.checkpoint_interval),
                lo,
                hi,
            ));
        }
        in_range(
            "storage.checkpoint_entries",
            self.checkpoint_entries,
            &CHECKPOINT_ENTRIES,
        )?;
        if self.log_entries_kept > LOG_ENTRIES_KEPT_MAX {
            let allowed = format!("must be at most {LOG_ENTRIES_KEPT_MAX}");
            return Err(invalid("storage.log_entries_kept", self.log_entries_kept, &allowed));
        }
        if self.cache_bytes < CACHE_BYTES_MIN {
            return Err(below("storage.cache_bytes", self.cache_bytes, CACHE_BYTES_MIN));
        }
        Ok(())
    }
}

/// Raft timing.
///
/// A follower that stops hearing from its leader waits out the leader's
/// lease (openraft ties it to `election_timeout_max_ms`) and then its own
/// randomized election timeout, so a dead leader is replaced
/// `election_timeout_max_ms + [election_timeout_min_ms, election_timeout_max_ms]`
/// after its last heartbeat: 250 to 300 ms with the defaults. A leader
/// that no quorum acknowledged within the same lease acts as deposed (it
/// takes no writes, `cluster::routing::leader_holds_lease`). The defaults
/// are short because Raft's timing path has threads of its own that
/// nothing else runs on (`crate::threads`): a heartbeat every 30 ms arrives
/// on time on a saturated machine (docs/benchmarks.md, the soak).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout, ms.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, ms; also the
    /// leader lease.
    pub election_timeout_max_ms: u64,
    /// Mutual TLS on the Raft port (absent: plaintext).
    pub tls: RaftTlsConfig,
}

/// `raft.tls`: the files of mutual TLS between replicas. All three or none;
/// the files themselves are read and checked when the node starts, and
/// again whenever they change (`raft::transport::tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTlsConfig {
    /// This node's certificate chain (PEM), presented as server and client.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
}

impl RaftTlsConfig {
    /// Whether any of the three files is set.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.ca_file.is_some()
    }

    /// `(cert_file, key_file, ca_file)`, when all three are set (after
    /// [`Config::validate`]: all three or none).
    pub fn files(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        Some((self.cert_file.clone()?, self.key_file.clone()?, self.ca_file.clone()?))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let named = [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("ca_file", &self.ca_file),
        ];
        let set: Vec<&str> = named.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n).collect();
        let missing: Vec<&str> = named.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
        if !set.is_empty() && !missing.is_empty() {
            return Err(invalid(
                "raft.tls",
                format!("{} set", set.join(", ")),
                &format!(
                    "cert_file, key_file and ca_file go together (flags --raft-tls-cert-file, \
                     --raft-tls-key-file, --raft-tls-ca-file); missing: {}",
                    missing.join(", ")
                ),
            ));
        }
        for (name, v) in named {
            if v.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    match name {
                        "cert_file" => "raft.tls.cert_file",
                        "key_file" => "raft.tls.key_file",
                        _ => "raft.tls.ca_file",
                    },
                    "\"\"",
                    "must be a file path",
                ));
            }
        }
        Ok(())
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 30,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 150,
            tls: RaftTlsConfig::default(),
        }
    }
}

impl RaftConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "raft.heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            &bounds::HEARTBEAT_INTERVAL_MS,
        )?;
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                self.election_timeout_min_ms,
                "must be larger than raft.heartbeat_interval_ms",
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                self.election_timeout_max_ms,
                "must be larger than raft.election_timeout_min_ms",
            ));
        }
        self.tls.validate()
    }
}

/// Write path limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteConfig {
    /// Largest compressed remote-write body, bytes (413 past it). The HTTP
    /// layer reads at most this much and the decoder refuses more, with
    /// this same value.
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
    /// How long a write waits for a leader while none can take it (an
    /// election, a dead leader), ms; it is forwarded as soon as one is
    /// known, and answered 503 only past this.
    pub leader_wait_ms: u64,
    /// Most series one remote-write request may carry; a request with more
    /// is refused whole with 413 before it is decoded.
    pub request_series_max: usize,
    /// Longest label name a remote-written series may have, bytes; the
    /// series is dropped (400 naming the label and this limit), the rest
    /// of the request is kept.
    pub label_name_bytes_max: usize,
    /// Longest label value, bytes; same answer as `label_name_bytes_max`.
    pub label_value_bytes_max: usize,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            body_bytes_max: WRITE_BODY_BYTES_MAX,
            entry_samples_max: 4_000,
            entry_series_max: 1_000,
            batch_linger_ms: 0,
            queue_requests_max: 1_024,
            entries_in_flight_max: 32,
            commit_timeout_ms: 10_000,
            leader_wait_ms: 2_000,
            request_series_max: *bounds::REQUEST_SERIES.end(),
            label_name_bytes_max: *bounds::LABEL_BYTES.end(),
            label_value_bytes_max: *bounds::LABEL_BYTES.end(),
        }
    }
}

impl WriteConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use bounds::*;
        in_range("write.body_bytes_max", self.body_bytes_max, &BODY_BYTES)?;
        in_range("write.entry_samples_max", self.entry_samples_max, &ENTRY_SAMPLES)?;
        in_range("write.entry_series_max", self.entry_series_max, &ENTRY_SERIES)?;
        in_range("write.batch_linger_ms", self.batch_linger_ms, &BATCH_LINGER_MS)?;
        in_range("write.queue_requests_max", self.queue_requests_max, &QUEUE_REQUESTS)?;
        in_range(
            "write.entries_in_flight_max",
            self.entries_in_flight_max,
            &ENTRIES_IN_FLIGHT,
        )?;
        in_range("write.commit_timeout_ms", self.commit_timeout_ms, &COMMIT_TIMEOUT_MS)?;
        in_range("write.leader_wait_ms", self.leader_wait_ms, &LEADER_WAIT_MS)?;
        in_range("write.request_series_max", self.request_series_max, &REQUEST_SERIES)?;
        in_range("write.label_name_bytes_max", self.label_name_bytes_max, &LABEL_BYTES)?;
        in_range("write.label_value_bytes_max", self.label_value_bytes_max, &LABEL_BYTES)?;
        Ok(())
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
    pub timeout: Duration,
    /// Queries evaluated at once; more wait, then fail with 503.
    pub concurrency_max: usize,
    /// Default lookback delta.
    #[serde(with = "duration_serde")]
    pub lookback_delta: Duration,
    /// A follower serving `consistency=local` reads fails with 503 if it has
    /// heard from no leader for longer than this.
    #[serde(with = "duration_serde")]
    pub max_staleness: Duration,
    /// Longest PromQL expression accepted, bytes (400 bad_data past it).
    pub expr_bytes_max: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            samples_max: 50_000_000,
            timeout: Duration::from_secs(120),
            concurrency_max: 20,
            lookback_delta: Duration::from_secs(300),
            max_staleness: Duration::from_secs(10),
            // Dashboards generate long queries (regex alternations of many
            // hosts) of tens of KiB; 256 KiB is far past them and still
            // bounds what the parser is handed.
            expr_bytes_max: 256 << 10,
        }
    }
}

impl QueryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use bounds::*;
        if self.samples_max < QUERY_SAMPLES_MIN {
            return Err(below("query.samples_max", self.samples_max, QUERY_SAMPLES_MIN));
        }
        let qt = &QUERY_TIMEOUT;
        if !qt.contains(&self.timeout) {
            return Err(outside(
                "query.timeout",
                fd(self.timeout),
                fd(*qt.start()),
                fd(*qt.end()),
            ));
        }
        in_range("query.concurrency_max", self.concurrency_max, &QUERY_CONCURRENCY)?;
        in_range("query.expr_bytes_max", self.expr_bytes_max, &QUERY_EXPR_BYTES)?;
        for (field, d) in [
            ("query.lookback_delta", self.lookback_delta),
            ("query.max_staleness", self.max_staleness),
        ] {
            // A whole millisecond at least: PromQL and the staleness check
            // count in milliseconds.
            if d.as_millis() == 0 {
                return Err(invalid(field, fd(d), "must be positive"));
            }
        }
        Ok(())
    }
}

/// The HTTP server: admin API switch, abuse limits, and how node-to-node
/// HTTP calls trust the other nodes (docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the admin endpoints (backup, snapshot, delete, cluster
    /// membership); off by default, as in Prometheus.
    pub enable_admin_api: bool,
    /// Connections served at once; past it a new connection is answered
    /// 503 (plain HTTP) or closed (TLS) at once.
    pub connections_max: usize,
    /// Time a client has to send a request's headers (HTTP/1).
    #[serde(with = "duration_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body, from its headers on.
    #[serde(with = "duration_serde")]
    pub body_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    #[serde(with = "duration_serde")]
    pub tls_handshake_timeout: Duration,
    /// PEM file with the CA that signs the other nodes' HTTP certificates,
    /// for requests one node relays to another over https. Unset: the web
    /// config's `client_ca_file`, else the system's roots.
    pub peer_ca_file: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enable_admin_api: false,
            // Each Prometheus remote-writes over up to `max_shards` (50 by
            // default) connections; 4096 serves a fleet of them plus
            // dashboards, at some KiB of memory per idle connection.
            connections_max: 4_096,
            // A client sends its headers in one packet; 30 s (hyper's own
            // default) is generous and still cuts a slowloris off.
            header_read_timeout: Duration::from_secs(30),
            // Prometheus's --web.read-timeout default: 5 minutes to read a
            // whole request.
            body_read_timeout: Duration::from_secs(300),
            // A handshake is two round trips; 10 s covers a lossy link.
            tls_handshake_timeout: Duration::from_secs(10),
            peer_ca_file: None,
        }
    }
}

impl WebConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use bounds::*;
        in_range("web.connections_max", self.connections_max, &WEB_CONNECTIONS)?;
        for (field, d, r) in [
            (
                "web.header_read_timeout",
                self.header_read_timeout,
                &WEB_HEADER_READ_TIMEOUT,
            ),
            ("web.body_read_timeout", self.body_read_timeout, &WEB_BODY_READ_TIMEOUT),
            (
                "web.tls_handshake_timeout",
                self.tls_handshake_timeout,
                &WEB_TLS_HANDSHAKE_TIMEOUT,
            ),
        ] {
            if !r.contains(&d) {
                return Err(outside(field, fd(d), fd(*r.start()), fd(*r.end())));
            }
        }
        Ok(())
    }
}

/// Deduplication of Prometheus HA pairs: of the senders that share a value
/// of `cluster_label`, one (told apart by `replica_label`) is elected and
/// stored, the others' samples are acknowledged and dropped; the next one
/// to send is elected once the elected one has been silent for
/// `failover_timeout`. The defaults are Prometheus's and Mimir's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaDedupConfig {
    /// The external label that names a sender's HA cluster.
    pub cluster_label: String,
    /// The external label that names the replica within the cluster; it is
    /// removed from the elected replica's series.
    pub replica_label: String,
    /// How long the elected replica may send nothing before another is
    /// elected.
    #[serde(with = "duration_serde")]
    pub failover_timeout: Duration,
    /// Clusters tracked at most; samples of a cluster past it are refused.
    pub clusters_max: usize,
}

impl Default for HaDedupConfig {
    fn default() -> Self {
        HaDedupConfig {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            // Mimir's default: longer than a sender's retry backoff, so a
            // replica that is merely slow keeps its election.
            failover_timeout: Duration::from_secs(30),
            // Mimir's default per tenant.
            clusters_max: 100,
        }
    }
}

impl HaDedupConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use bounds::*;
        for (field, name) in [
            ("ha_dedup.cluster_label", &self.cluster_label),
            ("ha_dedup.replica_label", &self.replica_label),
        ] {
            if !is_label_name(name) {
                return Err(invalid(field, name, "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
            }
        }
        if self.cluster_label == self.replica_label {
            return Err(invalid(
                "ha_dedup.replica_label",
                &self.replica_label,
                "must differ from ha_dedup.cluster_label",
            ));
        }
        let r = &HA_FAILOVER_TIMEOUT;
        if !r.contains(&self.failover_timeout) {
            let (lo, hi) = (fd(*r.start()), fd(*r.end()));
            return Err(outside("ha_dedup.failover_timeout", fd(self.failover_timeout), lo, hi));
        }
        in_range("ha_dedup.clusters_max", self.clusters_max, &HA_CLUSTERS)
    }
}

/// Whether `s` is a Prometheus label name (this leaf module cannot use the
/// TSDB's own check).
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    /// addresses), parsed when the file, variable or flag is read. Empty:
    /// a one-member cluster. Ignored once the node holds Raft state.
    pub initial_cluster: InitialCluster,
    /// Storage.
    pub storage: StorageConfig,
    /// Raft timing.
    pub raft: RaftConfig,
    /// Write path.
    pub write: WriteConfig,
    /// Query path.
    pub query: QueryConfig,
    /// Prometheus web configuration file (TLS, basic auth, roles);
    /// unset: plain HTTP without authentication.
    pub web_config_file: Option<PathBuf>,
    /// Prometheus configuration file (`global`, `scrape_configs`,
    /// `rule_files`, `alerting`), read by `promcfg`; unset: promraft
    /// scrapes nothing and evaluates no rules.
    pub prometheus_config: Option<PathBuf>,
    /// HTTP server.
    pub web: WebConfig,
    /// Deduplication of Prometheus HA pairs (`cluster::ha_dedup`); unset:
    /// off, every sender's samples are stored as sent.
    pub ha_dedup: Option<HaDedupConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("data"),
            http_addr: "127.0.0.1:9090".into(),
            raft_addr: "127.0.0.1:9190".into(),
            initial_cluster: InitialCluster::default(),
            storage: StorageConfig::default(),
            raft: RaftConfig::default(),
            write: WriteConfig::default(),
            query: QueryConfig::default(),
            web_config_file: None,
            prometheus_config: None,
            web: WebConfig::default(),
            ha_dedup: None,
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

/// A duration as the error text shows it.
fn fd(d: Duration) -> String {
    format_duration(d)
}

fn below(field: &'static str, value: impl ToString, min: impl fmt::Display) -> ConfigError {
    invalid(field, value, &format!("must be at least {min}"))
}

fn outside(field: &'static str, value: impl ToString, lo: impl fmt::Display, hi: impl fmt::Display) -> ConfigError {
    invalid(field, value, &format!("must be between {lo} and {hi}"))
}

/// Checks `value` against a bound; the message is written from the bound.
fn in_range<T: PartialOrd + fmt::Display>(
    field: &'static str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(outside(field, value, range.start(), range.end()))
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
    ("PROMRAFT_WEB_CONFIG_FILE", "web_config_file"),
    ("PROMRAFT_WEB_ENABLE_ADMIN_API", "web.enable_admin_api"),
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
            self.initial_cluster = v
                .parse()
                .map_err(|e: InitialClusterError| bad("PROMRAFT_INITIAL_CLUSTER", v.clone(), &e.to_string()))?;
        }
        if let Some(v) = get("PROMRAFT_RETENTION") {
            self.storage.retention =
                parse_duration(&v).map_err(|e| bad("PROMRAFT_RETENTION", v.clone(), &e.to_string()))?;
        }
        if let Some(v) = get("PROMRAFT_OUT_OF_ORDER_WINDOW") {
            self.storage.out_of_order_window =
                parse_duration(&v).map_err(|e| bad("PROMRAFT_OUT_OF_ORDER_WINDOW", v.clone(), &e.to_string()))?;
        }
        if let Some(v) = get("PROMRAFT_WEB_CONFIG_FILE") {
            self.web_config_file = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = get("PROMRAFT_WEB_ENABLE_ADMIN_API") {
            self.web.enable_admin_api = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad("PROMRAFT_WEB_ENABLE_ADMIN_API", v, "must be true or false")),
            };
        }
        Ok(())
    }

    /// Checks every value, one section at a time; the error names the field
    /// and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_node()?;
        self.storage.validate()?;
        self.raft.validate()?;
        self.write.validate()?;
        self.query.validate()?;
        self.web.validate()?;
        self.ha_dedup.as_ref().map_or(Ok(()), HaDedupConfig::validate)
    }

    /// The top-level fields: identity, addresses, the member list.
    fn validate_node(&self) -> Result<(), ConfigError> {
        if self.node_id < bounds::NODE_ID_MIN {
            return Err(below("node_id", self.node_id, bounds::NODE_ID_MIN));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "\"\"", "must be a directory path"));
        }
        for (field, addr) in [("http_addr", &self.http_addr), ("raft_addr", &self.raft_addr)] {
            if !is_host_port(addr) {
                return Err(invalid(field, addr, "must be host:port, e.g. 127.0.0.1:9090"));
            }
        }
        let ic = &self.initial_cluster;
        if !ic.is_empty() && !ic.members().contains_key(&self.node_id) {
            let allowed = format!("must list this node's id {}", self.node_id);
            return Err(invalid("initial_cluster", ic, &allowed));
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
        assert_eq!(c.storage.retention, Duration::from_secs(30 * 86_400));
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
    fn initial_cluster_parses_and_rejects_with_reasons() {
        let m = InitialCluster::parse_members("1=127.0.0.1:1, 2=h:2,3=[::1]:3").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "[::1]:3");
        let twice = InitialCluster::parse_members("1=a:1,1=b:2").unwrap_err();
        assert!(twice.to_string().contains("twice"));
        let id = InitialCluster::parse_members("x=a:1").unwrap_err();
        assert!(id.to_string().contains("node id"));
        assert!(InitialCluster::parse_members("0=a:1").is_err());
        assert!(InitialCluster::parse_members("1=a").is_err());
        assert!(InitialCluster::parse_members("").is_err());
        // Blank means "no list" in the file, the variable and the flag.
        assert_eq!("".parse::<InitialCluster>(), Ok(InitialCluster::default()));
        let c: InitialCluster = "2=b:2,1=a:1".parse().unwrap();
        assert_eq!(c.to_string(), "1=a:1,2=b:2");
        let yaml: Config = serde_yaml::from_str("initial_cluster: 1=a:1,2=b:2\n").unwrap();
        assert_eq!(yaml.initial_cluster, c);
        assert!(serde_yaml::from_str::<Config>("initial_cluster: 1=a\n").is_err());
    }

    #[test]
    fn bounds_write_the_error_text() {
        let c = Config {
            write: WriteConfig {
                body_bytes_max: bounds::WRITE_BODY_BYTES_MAX + 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        let want = format!("must be between 1024 and {}", bounds::WRITE_BODY_BYTES_MAX);
        assert!(e.contains("write.body_bytes_max") && e.contains(&want), "{e}");
        let mut c = Config::default();
        c.storage.checkpoint_interval = Duration::from_millis(10);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("10ms") && e.contains("must be between 1s and 1h"), "{e}");
        let mut c = Config::default();
        c.storage.retention = Duration::from_secs(1);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be at least 1m"), "{e}");
    }

    #[test]
    fn yaml_rejects_unknown_fields_and_bad_durations() {
        assert!(serde_yaml::from_str::<Config>("storage:\n  retention: 2d\n").is_ok());
        assert!(serde_yaml::from_str::<Config>("storage:\n  retentoin: 2d\n").is_err());
        assert!(serde_yaml::from_str::<Config>("storage:\n  retention: forever\n").is_err());
    }

    #[test]
    fn raft_tls_is_all_three_files_or_none() {
        let mut c = Config::default();
        c.validate().expect("no TLS is valid");
        c.raft.tls.cert_file = Some("node.crt".into());
        c.raft.tls.key_file = Some("node.key".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("raft.tls") && e.contains("missing: ca_file"), "{e}");
        c.raft.tls.ca_file = Some("ca.crt".into());
        c.validate().expect("all three are valid");
        let y: Config =
            serde_yaml::from_str("raft:\n  tls:\n    cert_file: a\n    key_file: b\n    ca_file: c\n").unwrap();
        assert!(y.raft.tls.files().is_some());
    }
}
