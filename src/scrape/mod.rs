//! Scraping: the leader scrapes every target of `scrape_configs`, once.
//!
//! [`spawn`] starts the manager, a duty every node runs. On every node it
//! computes the targets from the configuration in force (static and file
//! SD, relabeled) for the API; on the node that leads and holds its lease
//! (`cluster::routing::leader_holds_lease`) it also runs one loop per target
//! (`scrape::run`), and it stops them all as soon as that no longer holds.
//! Samples go through the log (`cluster::routing::write`), never straight
//! into the TSDB, so every replica stores the same scrapes. Each target
//! scrapes on a grid fixed by a hash of its labels, the same on every node,
//! so a new leader continues the grid of the old one.
//!
//! This module must not decide leadership itself; it follows Raft's.

pub mod discovery;
pub mod fetch;
pub mod parse;
pub mod run;
pub mod status;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::cluster::routing::{leader_holds_lease, Router};
use crate::promcfg::{LoadedConfig, PromConfigState};
use crate::tsdb::Labels;
use discovery::FileSd;
use run::{target_loop, Job, Stop};
use status::{Pool, ScrapeStatus};
use target::{targets_of, Target};

/// How often the manager checks leadership and discovery: a new leader
/// starts scraping within this after it holds its lease, and a deposed
/// one stops within it.
pub const SYNC_TICK: Duration = Duration::from_millis(100);

/// How often file SD files are re-read (whatever `refresh_interval`
/// says; reading a few small files every 2 s costs nothing and picks
/// changes up faster than Prometheus's 5m default).
pub const FILE_SD_POLL: Duration = Duration::from_secs(2);

/// A running loop.
struct Running {
    target: Target,
    digest: String,
    stop: watch::Sender<Option<Stop>>,
}

/// Starts the scrape manager of a node.
pub fn spawn(router: Router, config: Arc<PromConfigState>, status: Arc<ScrapeStatus>) {
    tokio::spawn(async move {
        let mut cfg_rx = config.subscribe();
        let mut file_sd = FileSd::default();
        let mut jobs: BTreeMap<String, Arc<Job>> = BTreeMap::new();
        let mut targets: Vec<(Arc<Job>, Target)> = Vec::new();
        let mut running: HashMap<(String, Labels), Running> = HashMap::new();
        let mut tick = tokio::time::interval(SYNC_TICK);
        let mut last_discovery = tokio::time::Instant::now() - FILE_SD_POLL;
        let mut digest = String::new();
        loop {
            tick.tick().await;
            let loaded = cfg_rx.borrow_and_update().clone();
            let changed = loaded.as_ref().map(|c| c.digest.clone()).unwrap_or_default() != digest;
            if changed || last_discovery.elapsed() >= FILE_SD_POLL {
                last_discovery = tokio::time::Instant::now();
                if changed {
                    digest = loaded.as_ref().map(|c| c.digest.clone()).unwrap_or_default();
                    jobs = build_jobs(loaded.as_deref());
                }
                targets = discover(&jobs, &mut file_sd, &status);
            }
            let m = router.raft.metrics().borrow_watched().clone();
            let leading = m.current_leader == Some(router.node_id) && leader_holds_lease(&router);
            if leading {
                reconcile(&router, &status, &targets, &digest, &mut running);
            } else if !running.is_empty() {
                for (_, r) in running.drain() {
                    let _ = r.stop.send(Some(Stop::Handover));
                }
                status.clear_health();
            }
        }
    });
}

fn build_jobs(loaded: Option<&LoadedConfig>) -> BTreeMap<String, Arc<Job>> {
    let mut jobs = BTreeMap::new();
    for c in loaded.map(|l| l.config.scrape_configs.as_slice()).unwrap_or_default() {
        match fetch::client(c) {
            Ok(client) => {
                jobs.insert(
                    c.job_name.clone(),
                    Arc::new(Job {
                        config: c.clone(),
                        client,
                    }),
                );
            }
            Err(e) => tracing::error!(job = %c.job_name, error = %e, "scrape job not started"),
        }
    }
    jobs
}

fn discover(jobs: &BTreeMap<String, Arc<Job>>, file_sd: &mut FileSd, status: &ScrapeStatus) -> Vec<(Arc<Job>, Target)> {
    let mut pools = BTreeMap::new();
    let mut out = Vec::new();
    for (name, job) in jobs {
        let mut groups = job.config.static_configs.clone();
        for sd in &job.config.file_sd_configs {
            groups.extend(file_sd.groups(sd));
        }
        let t = targets_of(&job.config, &groups);
        out.extend(t.active.iter().cloned().map(|t| (job.clone(), t)));
        pools.insert(
            name.clone(),
            Pool {
                active: t.active,
                dropped: t.dropped,
            },
        );
    }
    status.set_pools(pools);
    out
}

/// Starts loops for new targets, stops those of removed ones (with
/// staleness markers) and restarts those whose configuration changed.
fn reconcile(
    router: &Router,
    status: &Arc<ScrapeStatus>,
    targets: &[(Arc<Job>, Target)],
    digest: &str,
    running: &mut HashMap<(String, Labels), Running>,
) {
    let wanted: HashMap<(String, Labels), &(Arc<Job>, Target)> = targets
        .iter()
        .map(|jt| ((jt.1.job.clone(), jt.1.labels.clone()), jt))
        .collect();
    running.retain(|key, r| {
        let keep = wanted
            .get(key)
            .is_some_and(|(_, t)| *t == r.target && r.digest == digest);
        if !keep {
            let why = if wanted.contains_key(key) {
                Stop::Handover
            } else {
                Stop::Removed
            };
            let _ = r.stop.send(Some(why));
        }
        keep
    });
    for (key, (job, target)) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(target_loop(
            router.clone(),
            status.clone(),
            job.clone(),
            target.clone(),
            rx,
        ));
        running.insert(
            key,
            Running {
                target: target.clone(),
                digest: digest.to_string(),
                stop: tx,
            },
        );
    }
}
