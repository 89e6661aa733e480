//! The Prometheus configuration file as serde types, with Prometheus's
//! defaults.
//!
//! This file owns the shapes and the defaults only; loading, the checks
//! that need the whole file (unknown keys, unsupported sections, timeouts
//! against intervals) and defaults inherited from `global` live in
//! `promcfg::load`. Secrets read from the file serialize as `<secret>`, as
//! Prometheus shows them in `/api/v1/status/config`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::relabel::RelabelConfig;

/// A Prometheus duration (`15s`, `1m`, `1h30m`), shown as Prometheus
/// writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PromDuration(pub Duration);

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::config::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "0" || s == "0s" {
            return Ok(PromDuration(Duration::ZERO));
        }
        crate::config::parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// A byte size as Prometheus writes it (`0`, `512`, `10MB`, `1GiB`; every
/// unit is base 2 there, `1KB` is 1024 bytes). 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `n` with an optional unit B, KB, MB, GB, TB (or KiB, MiB,
    /// GiB, TiB), all base 2.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n: u64 = s[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a size (expected e.g. 0, 512, 10MB, 1GiB)"))?;
        let shift = match &s[digits..] {
            "" | "B" => 0,
            "KB" | "KiB" => 10,
            "MB" | "MiB" => 20,
            "GB" | "GiB" => 30,
            "TB" | "TiB" => 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?} (use B, KB, MB, GB, TB)")),
        };
        n.checked_shl(shift)
            .filter(|v| v >> shift == n)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}B", self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A password or token from the file: kept, never shown.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

/// Prometheus's default `scrape_interval` and `evaluation_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Prometheus's default `scrape_timeout`.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Prometheus's default `refresh_interval` of `file_sd_configs`.
pub const DEFAULT_FILE_SD_REFRESH: Duration = Duration::from_secs(300);
/// Prometheus's default Alertmanager `timeout`.
pub const DEFAULT_ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PromConfig {
    /// Defaults for every job and rule group.
    pub global: GlobalConfig,
    /// Rule file globs, resolved against the file's directory.
    pub rule_files: Vec<String>,
    /// Scrape jobs.
    pub scrape_configs: Vec<ScrapeConfig>,
    /// Where alerts go.
    pub alerting: AlertingConfig,
}

/// The `global` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalConfig {
    /// Default scrape interval (1m).
    pub scrape_interval: PromDuration,
    /// Default scrape timeout (10s); at most `scrape_interval`.
    pub scrape_timeout: PromDuration,
    /// Default rule evaluation interval (1m).
    pub evaluation_interval: PromDuration,
    /// Labels added to alerts sent to Alertmanager (and, in Prometheus, to
    /// federation and remote write).
    pub external_labels: BTreeMap<String, String>,
    /// Default uncompressed body size limit of a scrape (0: none).
    pub body_size_limit: ByteSize,
    /// Default most samples per scrape (0: none).
    pub sample_limit: u64,
    /// Default most targets per job (0: none).
    pub target_limit: u64,
    /// Default most labels per scraped series (0: none).
    pub label_limit: u64,
    /// Default longest label name in bytes (0: none).
    pub label_name_length_limit: u64,
    /// Default longest label value in bytes (0: none).
    pub label_value_length_limit: u64,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: PromDuration(DEFAULT_INTERVAL),
            scrape_timeout: PromDuration(DEFAULT_SCRAPE_TIMEOUT),
            evaluation_interval: PromDuration(DEFAULT_INTERVAL),
            external_labels: BTreeMap::new(),
            body_size_limit: ByteSize(0),
            sample_limit: 0,
            target_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
        }
    }
}

/// `basic_auth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (or `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the password, re-read at each request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

/// `authorization`: an `Authorization: <type> <credentials>` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Authorization {
    /// The scheme, `Bearer` by default.
    #[serde(rename = "type")]
    pub kind: String,
    /// The credentials (or `credentials_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Secret>,
    /// File holding the credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            kind: "Bearer".into(),
            credentials: None,
            credentials_file: None,
        }
    }
}

/// `tls_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// CA certificates (PEM) to verify the server with; unset: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate (PEM), with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Server name to verify instead of the target's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Lowest TLS version (`TLS12`, `TLS13`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// How to reach an HTTP endpoint: the options Prometheus shares between
/// scrape jobs and Alertmanagers (OAuth2 and proxies are not supported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpClientConfig {
    /// Basic authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// An Authorization header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// TLS settings.
    pub tls_config: TlsConfig,
    /// Follow 3xx redirects (default true).
    pub follow_redirects: bool,
    /// Allow HTTP/2 (default true).
    pub enable_http2: bool,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            basic_auth: None,
            authorization: None,
            tls_config: TlsConfig::default(),
            follow_redirects: true,
            enable_http2: true,
        }
    }
}

/// One `static_configs` entry: targets and labels shared by them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StaticConfig {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Labels given to every target of this entry.
    pub labels: BTreeMap<String, String>,
}

/// One `file_sd_configs` entry: files (JSON or YAML lists of static
/// configs, globs allowed in the last path element) re-read every
/// `refresh_interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileSdConfig {
    /// Paths or globs, resolved against the configuration file's directory.
    pub files: Vec<String>,
    /// How often to re-read (5m); promraft also polls modification times
    /// every few seconds (`scrape::discovery`).
    pub refresh_interval: PromDuration,
}

impl Default for FileSdConfig {
    fn default() -> Self {
        FileSdConfig {
            files: Vec::new(),
            refresh_interval: PromDuration(DEFAULT_FILE_SD_REFRESH),
        }
    }
}

/// One scrape job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrapeConfig {
    /// The job's name, unique in the file; the `job` label.
    pub job_name: String,
    /// On a clash keep the scraped labels (else they get `exported_`).
    pub honor_labels: bool,
    /// Keep the timestamps the target exposes (default true).
    pub honor_timestamps: bool,
    /// URL query parameters.
    pub params: BTreeMap<String, Vec<String>>,
    /// Scrape interval; the global one when unset.
    pub scrape_interval: Option<PromDuration>,
    /// Scrape timeout; the global one (at most the interval) when unset.
    pub scrape_timeout: Option<PromDuration>,
    /// Path of the metrics endpoint (`/metrics`).
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Uncompressed body size limit (global when unset).
    pub body_size_limit: Option<ByteSize>,
    /// Most samples per scrape after metric relabeling (global when unset).
    pub sample_limit: Option<u64>,
    /// Most targets after relabeling (global when unset).
    pub target_limit: Option<u64>,
    /// Most labels per series (global when unset).
    pub label_limit: Option<u64>,
    /// Longest label name (global when unset).
    pub label_name_length_limit: Option<u64>,
    /// Longest label value (global when unset).
    pub label_value_length_limit: Option<u64>,
    /// Targets listed in the file.
    pub static_configs: Vec<StaticConfig>,
    /// Targets listed in watched files.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Relabeling of targets before the scrape.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Relabeling of scraped series before they are stored.
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Authentication and TLS.
    #[serde(flatten)]
    pub http: HttpClientConfig,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            job_name: String::new(),
            honor_labels: false,
            honor_timestamps: true,
            params: BTreeMap::new(),
            scrape_interval: None,
            scrape_timeout: None,
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            body_size_limit: None,
            sample_limit: None,
            target_limit: None,
            label_limit: None,
            label_name_length_limit: None,
            label_value_length_limit: None,
            static_configs: Vec::new(),
            file_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            http: HttpClientConfig::default(),
        }
    }
}

impl ScrapeConfig {
    /// The interval in force (filled from `global` by `promcfg::load`).
    pub fn interval(&self) -> Duration {
        self.scrape_interval.map_or(DEFAULT_INTERVAL, |d| d.0)
    }

    /// The timeout in force (filled from `global` by `promcfg::load`).
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout.map_or(DEFAULT_SCRAPE_TIMEOUT, |d| d.0)
    }
}

/// The `alerting` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertingConfig {
    /// Relabeling of alerts before they are sent.
    pub alert_relabel_configs: Vec<RelabelConfig>,
    /// Where alerts are sent.
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

/// One `alertmanagers` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertmanagerConfig {
    /// Alertmanagers listed in the file.
    pub static_configs: Vec<StaticConfig>,
    /// Alertmanagers listed in watched files.
    pub file_sd_configs: Vec<FileSdConfig>,
    /// `http` or `https`.
    pub scheme: String,
    /// Prefix of the API path (`/`).
    pub path_prefix: String,
    /// Timeout of one push (10s).
    pub timeout: PromDuration,
    /// Alertmanager API version: only `v2` (Alertmanager dropped v1).
    pub api_version: String,
    /// Relabeling of the discovered Alertmanagers.
    pub relabel_configs: Vec<RelabelConfig>,
    /// Authentication and TLS.
    #[serde(flatten)]
    pub http: HttpClientConfig,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            static_configs: Vec::new(),
            file_sd_configs: Vec::new(),
            scheme: "http".into(),
            path_prefix: "/".into(),
            timeout: PromDuration(DEFAULT_ALERTMANAGER_TIMEOUT),
            api_version: "v2".into(),
            relabel_configs: Vec::new(),
            http: HttpClientConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_are_base_2_as_in_prometheus() {
        assert_eq!(ByteSize::parse("0"), Ok(ByteSize(0)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10 << 20)));
        assert_eq!(ByteSize::parse("1KiB"), Ok(ByteSize(1024)));
        assert!(ByteSize::parse("10 parsecs").is_err());
        assert!(ByteSize::parse("99999999999999TB").is_err());
    }
}
