//! The web settings in force, their reload, and the HTTP edge's metrics.
//!
//! [`WebState::watch`] polls the web configuration file, and every file it
//! names, every [`RELOAD_POLL_INTERVAL_MS`]; when their contents change it
//! loads the file again. A file that fails to load leaves the settings in
//! force, logs why, and sets `promraft_web_config_last_reload_successful`
//! to 0 until a later version loads. New connections (and so new TLS
//! handshakes) and every request use the settings current when they start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::auth::AuthCache;
use super::file::{self, WebConfigError, WebSettings};

/// How often the web configuration and its files are checked for changes,
/// ms: certificates rotated by cert-manager or an operator take effect
/// within two seconds, for a few small file reads per poll.
pub const RELOAD_POLL_INTERVAL_MS: u64 = 2_000;

/// Shared state of the HTTP edge.
pub struct WebState {
    path: Option<PathBuf>,
    current: RwLock<Arc<WebSettings>>,
    /// Successful credential checks (see [`super::auth`]).
    pub cache: Mutex<AuthCache>,
    fingerprint: Mutex<u128>,
    reload_ok: AtomicBool,
    reload_success_unix_s: AtomicI64,
    /// Connections being served.
    pub connections_open: AtomicU64,
    /// Connections refused because `web.connections_max` were open.
    pub connections_refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// Requests refused with 401.
    pub auth_failures: AtomicU64,
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A hash of the config file's and its named files' contents (missing
/// files hash as such), so any change is seen.
fn fingerprint(path: &Path, files: &[PathBuf]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in std::iter::once(path).chain(files.iter().map(PathBuf::as_path)) {
        match std::fs::read(p) {
            Ok(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(_) => h.update(b"missing"),
        }
    }
    h.digest128()
}

impl WebState {
    /// Loads `path` (if any). A bad file at start is an error: the node
    /// does not start with a configuration it cannot honour.
    pub fn load(path: Option<&Path>) -> Result<Arc<WebState>, WebConfigError> {
        let settings = match path {
            Some(p) => file::load(p)?,
            None => WebSettings::open(),
        };
        for n in &settings.notes {
            tracing::warn!("{n}");
        }
        let fp = path.map(|p| fingerprint(p, &settings.files)).unwrap_or(0);
        Ok(Arc::new(WebState {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(settings)),
            cache: Mutex::new(AuthCache::default()),
            fingerprint: Mutex::new(fp),
            reload_ok: AtomicBool::new(true),
            reload_success_unix_s: AtomicI64::new(now_unix_s()),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        }))
    }

    /// The settings in force.
    pub fn current(&self) -> Arc<WebSettings> {
        self.current.read().clone()
    }

    /// Loads the file again if it or a file it names changed. Returns
    /// whether the settings changed.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let files = self.current().files.clone();
        let mut fp = fingerprint(path, &files);
        if fp == *self.fingerprint.lock() {
            return false;
        }
        match file::load(path) {
            Ok(s) => {
                // The new file may name other files: remember those.
                fp = fingerprint(path, &s.files);
                for n in &s.notes {
                    tracing::warn!("{n}");
                }
                *self.current.write() = Arc::new(s);
                *self.fingerprint.lock() = fp;
                self.reload_ok.store(true, Ordering::Relaxed);
                self.reload_success_unix_s.store(now_unix_s(), Ordering::Relaxed);
                tracing::info!(file = %path.display(), "web config reloaded");
                true
            }
            Err(e) => {
                // Remember this version so the failure is logged once, not
                // every poll; a later edit is tried again.
                *self.fingerprint.lock() = fp;
                self.reload_ok.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "web config reload failed; the previous configuration stays in force");
                false
            }
        }
    }

    /// Polls for changes until the process ends.
    pub fn watch(self: &Arc<Self>) {
        if self.path.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(RELOAD_POLL_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let m = me.clone();
                // File reads block; keep them off the async threads.
                let _ = tokio::task::spawn_blocking(move || m.reload_if_changed()).await;
            }
        });
    }

    /// The edge's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        };
        gauge(
            out,
            "promraft_web_config_last_reload_successful",
            "Whether the last web config reload attempt succeeded (1) or failed (0).",
            i64::from(self.reload_ok.load(Ordering::Relaxed)),
        );
        gauge(
            out,
            "promraft_web_config_last_reload_success_timestamp_seconds",
            "Time of the last successful web config load.",
            self.reload_success_unix_s.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "promraft_http_connections_open",
            "HTTP connections being served.",
            self.connections_open.load(Ordering::Relaxed) as i64,
        );
        counter(
            out,
            "promraft_http_connections_refused_total",
            "Connections refused because web.connections_max were open.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        counter(
            out,
            "promraft_http_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            self.tls_handshake_failures.load(Ordering::Relaxed),
        );
        counter(
            out,
            "promraft_http_auth_failures_total",
            "Requests refused with 401 (missing or wrong credentials).",
            self.auth_failures.load(Ordering::Relaxed),
        );
    }

    /// A client for node-to-node HTTP calls (relays to the leader): https
    /// trusting `peer_ca_file`, else the web config's client CA, else the
    /// system roots, when this node serves TLS; plain http otherwise.
    /// Returns the client and the URL scheme.
    pub fn peer_client(
        &self,
        peer_ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<(reqwest::Client, &'static str), String> {
        let s = self.current();
        let mut b = reqwest::Client::builder().timeout(timeout);
        if s.tls.is_none() {
            return b.build().map(|c| (c, "http")).map_err(|e| e.to_string());
        }
        let pem = match peer_ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("web.peer_ca_file {}: {e}", p.display()))?),
            None => s.client_ca_pem.clone(),
        };
        if let Some(pem) = pem {
            for c in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("peer CA: {e}"))? {
                b = b.add_root_certificate(c);
            }
        }
        b.build().map(|c| (c, "https")).map_err(|e| e.to_string())
    }
}
