//! What `/api/v1/targets`, `/api/v1/scrape_pools` and
//! `/api/v1/targets/metadata` show: the targets this node computed from its
//! configuration, and the health its scrape loops (on the leader) recorded.
//!
//! Owns the shared view only; it starts nothing.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use super::parse::FamilyMeta;
use super::target::Target;
use crate::tsdb::Labels;

/// The last scrape of a target.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `up` or `down`.
    pub up: bool,
    /// Why the last scrape failed; empty when it succeeded.
    pub last_error: String,
    /// When the last scrape started, ms since the epoch.
    pub last_scrape_ms: i64,
    /// How long it took, seconds.
    pub last_duration_s: f64,
    /// Metadata the target exposed.
    pub meta: BTreeMap<String, FamilyMeta>,
}

/// One job's targets.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Targets after relabeling.
    pub active: Vec<Target>,
    /// Discovered label sets relabeling dropped.
    pub dropped: Vec<Labels>,
}

/// The shared view.
#[derive(Default)]
pub struct ScrapeStatus {
    pools: Mutex<BTreeMap<String, Pool>>,
    health: Mutex<HashMap<(String, Labels), Health>>,
}

impl ScrapeStatus {
    /// Replaces the targets (after a configuration or file SD change).
    pub fn set_pools(&self, pools: BTreeMap<String, Pool>) {
        let mut h = self.health.lock();
        h.retain(|(job, labels), _| {
            pools
                .get(job)
                .is_some_and(|p| p.active.iter().any(|t| &t.labels == labels))
        });
        *self.pools.lock() = pools;
    }

    /// Every pool.
    pub fn pools(&self) -> BTreeMap<String, Pool> {
        self.pools.lock().clone()
    }

    /// Records a scrape of `target`.
    pub fn record(&self, target: &Target, health: Health) {
        self.health
            .lock()
            .insert((target.job.clone(), target.labels.clone()), health);
    }

    /// The last scrape of `target` on this node, if it scraped it.
    pub fn health(&self, target: &Target) -> Option<Health> {
        self.health
            .lock()
            .get(&(target.job.clone(), target.labels.clone()))
            .cloned()
    }

    /// Forgets every health record (this node stopped scraping).
    pub fn clear_health(&self) {
        self.health.lock().clear();
    }
}
