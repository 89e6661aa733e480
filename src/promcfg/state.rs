//! The configuration in force and its reloads.
//!
//! Owns which [`LoadedConfig`] is current, the reload outcome that
//! `/metrics` reports, and the watch that consumers (scraping, rules)
//! follow. A failed reload keeps the configuration in force.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::{load, LoadedConfig, PromConfigError};

/// The Prometheus configuration of a node: `None` inside while the node
/// runs without `--prometheus-config`.
pub struct PromConfigState {
    path: Option<PathBuf>,
    current: watch::Sender<Option<Arc<LoadedConfig>>>,
    last_reload_ok: AtomicBool,
    last_success_s: AtomicI64,
}

impl PromConfigState {
    /// Loads `path` (a refusal stops the start); `None`: no configuration.
    pub fn start(path: Option<PathBuf>) -> Result<Arc<PromConfigState>, PromConfigError> {
        let loaded = path.as_deref().map(load).transpose()?.map(Arc::new);
        Ok(Arc::new(PromConfigState {
            path,
            current: watch::channel(loaded).0,
            last_reload_ok: AtomicBool::new(true),
            last_success_s: AtomicI64::new(chrono::Utc::now().timestamp()),
        }))
    }

    /// The configuration in force.
    pub fn current(&self) -> Option<Arc<LoadedConfig>> {
        self.current.borrow().clone()
    }

    /// Follows the configuration in force (each reload sends the new one,
    /// even when unchanged).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<LoadedConfig>>> {
        self.current.subscribe()
    }

    /// Re-reads the file. On a refusal the old configuration stays in
    /// force; the error is logged here and returned for the caller to show.
    pub fn reload(&self) -> Result<(), PromConfigError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match load(path) {
            Ok(c) => {
                tracing::info!(file = %path.display(), digest = %c.digest, "prometheus config reloaded");
                self.current.send_replace(Some(Arc::new(c)));
                self.last_reload_ok.store(true, Ordering::Relaxed);
                self.last_success_s
                    .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "prometheus config reload failed; keeping the configuration in force");
                self.last_reload_ok.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Whether the last reload (or the start) succeeded.
    pub fn last_reload_successful(&self) -> bool {
        self.last_reload_ok.load(Ordering::Relaxed)
    }

    /// Unix seconds of the last successful load.
    pub fn last_success_timestamp_s(&self) -> i64 {
        self.last_success_s.load(Ordering::Relaxed)
    }

    /// The digest of the configuration in force; empty without one.
    pub fn digest(&self) -> String {
        self.current().map(|c| c.digest.clone()).unwrap_or_default()
    }
}
