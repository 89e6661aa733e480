//! The loop of one target: scrape on its grid, turn the body into series
//! (target labels, `honor_labels`, `honor_timestamps`,
//! `metric_relabel_configs`, limits), add the report series and staleness
//! markers, and write it all through the log.
//!
//! Owns one target's schedule and its last series set; it never writes to
//! the TSDB directly (`cluster::routing::write` only). A write that fails
//! (no leader for `write.leader_wait_ms`) is dropped, not retried: by the
//! next scrape it would be a late copy of data the next scrape replaces.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::fetch::{fetch, Fetched};
use super::parse::{parse, Format, Scraped};
use super::status::{Health, ScrapeStatus};
use super::target::Target;
use crate::cluster::routing::{write, Router};
use crate::promcfg::relabel::process;
use crate::promcfg::ScrapeConfig;
use crate::tsdb::{AppendRequest, Labels, Metadata, SeriesSamples};

/// Prometheus's staleness marker, a NaN no computation produces.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A job as its loops need it.
pub struct Job {
    /// The job's configuration.
    pub config: ScrapeConfig,
    /// Its HTTP client.
    pub client: reqwest::Client,
}

/// Why a loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The target is gone: its series get staleness markers.
    Removed,
    /// Leadership lost or the loop is replaced: the next scraper continues
    /// the series.
    Handover,
}

/// Runs until `stop` says why.
pub async fn target_loop(
    router: Router,
    status: Arc<ScrapeStatus>,
    job: Arc<Job>,
    target: Target,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let interval_ms = i64::try_from(target.interval.as_millis()).unwrap_or(i64::MAX).max(1);
    let offset_ms = i64::try_from(target.offset_ms()).unwrap_or(0);
    // Start with the latest grid point: a new leader fills the slot the
    // old one may have missed (a duplicate timestamp is refused by apply,
    // never stored twice).
    let mut next = grid_at_or_before(now_ms(), interval_ms, offset_ms);
    let mut state = LoopState::default();
    loop {
        let wait = Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        let stopped = *stop.borrow();
        if let Some(why) = stopped {
            if why == Stop::Removed {
                let t = now_ms();
                let mut stale = state.stale_all(t);
                // The report series end with the target too.
                report(&mut stale, &target, t, false, 0.0, &Counts::zero());
                let first_report = stale.series.len() - REPORT_SERIES;
                for s in &mut stale.series[first_report..] {
                    s.samples = vec![(t, f64::from_bits(STALE_NAN_BITS))];
                }
                if !stale.series.is_empty() {
                    let _ = write(&router, stale).await;
                }
            }
            return;
        }
        let req = scrape_once(&job, &target, next, &mut state, &status).await;
        if let Err(e) = write(&router, req).await {
            tracing::warn!(job = %target.job, url = %target.url, error = %e, "scraped samples not written; dropped");
        }
        next += interval_ms;
        // Fell behind (a slow write): skip to the grid, never scrape twice
        // for one slot.
        next = next.max(grid_at_or_before(now_ms(), interval_ms, offset_ms));
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The latest `t <= now` with `t = k * interval + offset`.
pub fn grid_at_or_before(now: i64, interval: i64, offset: i64) -> i64 {
    (now - offset).div_euclid(interval) * interval + offset
}

/// What a loop remembers between scrapes.
#[derive(Default)]
pub struct LoopState {
    /// Series of the last successful scrape (for staleness).
    last: HashSet<Labels>,
    /// Metadata already written (sent once per loop, not every scrape).
    meta_sent: bool,
}

impl LoopState {
    /// Staleness markers for every series of the last scrape.
    fn stale_all(&mut self, t_ms: i64) -> AppendRequest {
        let series = self
            .last
            .drain()
            .map(|labels| SeriesSamples {
                labels,
                samples: vec![(t_ms, f64::from_bits(STALE_NAN_BITS))],
            })
            .collect();
        AppendRequest {
            series,
            metadata: Vec::new(),
        }
    }
}

/// Counts of one scrape for the report series.
struct Counts {
    scraped: usize,
    post_relabel: usize,
    added: usize,
}

impl Counts {
    fn zero() -> Counts {
        Counts {
            scraped: 0,
            post_relabel: 0,
            added: 0,
        }
    }
}

/// How many report series [`report`] writes.
const REPORT_SERIES: usize = 5;

async fn scrape_once(
    job: &Job,
    target: &Target,
    t_ms: i64,
    state: &mut LoopState,
    status: &ScrapeStatus,
) -> AppendRequest {
    let started = Instant::now();
    let c = &job.config;
    let limit = c.body_size_limit.map_or(0, |b| b.0);
    let result = fetch(&job.client, c, &target.url, target.timeout, limit)
        .await
        .and_then(|Fetched { body, content_type }| parse(&body, Format::from_content_type(&content_type)))
        .and_then(|scraped| series_of(c, target, scraped, t_ms));
    let duration_s = started.elapsed().as_secs_f64();
    let (mut req, counts, health) = match result {
        Ok((mut req, scraped, post, meta)) => {
            let now: HashSet<Labels> = req.series.iter().map(|s| s.labels.clone()).collect();
            let added = now.difference(&state.last).count();
            for gone in state.last.difference(&now) {
                req.series.push(SeriesSamples {
                    labels: gone.clone(),
                    samples: vec![(t_ms, f64::from_bits(STALE_NAN_BITS))],
                });
            }
            state.last = now;
            if std::mem::replace(&mut state.meta_sent, true) {
                req.metadata.clear();
            }
            let health = Health {
                up: true,
                last_error: String::new(),
                last_scrape_ms: t_ms,
                last_duration_s: duration_s,
                meta,
            };
            (
                req,
                Counts {
                    scraped,
                    post_relabel: post,
                    added,
                },
                health,
            )
        }
        Err(e) => {
            let health = Health {
                up: false,
                last_error: e,
                last_scrape_ms: t_ms,
                last_duration_s: duration_s,
                meta: Default::default(),
            };
            (state.stale_all(t_ms), Counts::zero(), health)
        }
    };
    report(&mut req, target, t_ms, health.up, duration_s, &counts);
    status.record(target, health);
    req
}

/// The report series Prometheus writes for every scrape.
fn report(req: &mut AppendRequest, target: &Target, t_ms: i64, up: bool, duration_s: f64, c: &Counts) {
    let values: [(&str, f64); REPORT_SERIES] = [
        ("up", if up { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", duration_s),
        ("scrape_samples_scraped", c.scraped as f64),
        ("scrape_samples_post_metric_relabeling", c.post_relabel as f64),
        ("scrape_series_added", c.added as f64),
    ];
    for (name, v) in values {
        let mut labels = target.labels.clone();
        labels.set("__name__", name);
        req.series.push(SeriesSamples {
            labels,
            samples: vec![(t_ms, v)],
        });
    }
}

/// The scraped samples as series: (request, samples scraped, samples
/// after metric relabeling, metadata). A limit exceeded fails the whole
/// scrape, as in Prometheus.
type Series = (
    AppendRequest,
    usize,
    usize,
    std::collections::BTreeMap<String, super::parse::FamilyMeta>,
);

fn series_of(c: &ScrapeConfig, target: &Target, scraped: Scraped, t_ms: i64) -> Result<Series, String> {
    let total = scraped.samples.len();
    let mut seen = HashSet::new();
    let mut req = AppendRequest::default();
    for s in scraped.samples {
        let labels = merge(&target.labels, s.labels, c.honor_labels);
        let Some(labels) = process(&labels, &c.metric_relabel_configs) else {
            continue;
        };
        check_label_limits(c, &labels)?;
        if !seen.insert(labels.clone()) {
            continue;
        }
        let t = match (c.honor_timestamps, s.t_ms) {
            (true, Some(t)) => t,
            _ => t_ms,
        };
        req.series.push(SeriesSamples {
            labels,
            samples: vec![(t, s.value)],
        });
    }
    let post = req.series.len();
    let sample_limit = c.sample_limit.unwrap_or(0);
    if sample_limit > 0 && post as u64 > sample_limit {
        return Err(format!("sample limit exceeded ({post} samples, limit {sample_limit})"));
    }
    req.metadata = scraped
        .meta
        .iter()
        .map(|(name, m)| Metadata {
            metric_family_name: name.clone(),
            kind: m.kind.clone(),
            help: m.help.clone(),
            unit: m.unit.clone(),
        })
        .collect();
    Ok((req, total, post, scraped.meta))
}

fn check_label_limits(c: &ScrapeConfig, l: &Labels) -> Result<(), String> {
    let limit = c.label_limit.unwrap_or(0);
    if limit > 0 && l.len() as u64 > limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {limit})",
            l.metric_name(),
            l.len()
        ));
    }
    let name_max = c.label_name_length_limit.unwrap_or(0);
    let value_max = c.label_value_length_limit.unwrap_or(0);
    for x in l.iter() {
        if name_max > 0 && x.name.len() as u64 > name_max {
            return Err(format!(
                "label_name_length_limit exceeded (label {:?}, limit {name_max})",
                x.name
            ));
        }
        if value_max > 0 && x.value.len() as u64 > value_max {
            return Err(format!(
                "label_value_length_limit exceeded (label {:?}, limit {value_max})",
                x.name
            ));
        }
    }
    Ok(())
}

/// Target labels onto scraped labels: with `honor_labels` the scraped
/// value wins; without, a clashing scraped label is kept as
/// `exported_<name>` (repeatedly, if that clashes too).
fn merge(target: &Labels, scraped: Vec<(String, String)>, honor: bool) -> Labels {
    let mut out: std::collections::BTreeMap<String, String> = scraped.into_iter().collect();
    for t in target.iter() {
        match out.get(&t.name) {
            Some(v) if honor && !v.is_empty() => {}
            Some(_) if !honor => {
                let mut name = format!("exported_{}", t.name);
                while out.contains_key(&name) {
                    name = format!("exported_{name}");
                }
                if let Some(v) = out.remove(&t.name) {
                    out.insert(name, v);
                }
                out.insert(t.name.clone(), t.value.clone());
            }
            _ => {
                out.insert(t.name.clone(), t.value.clone());
            }
        }
    }
    Labels::from_pairs(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn clashes_become_exported_unless_honored() {
        let target = Labels::from_pairs([("job", "node"), ("instance", "h:1")]);
        let scraped = lp(&[("__name__", "m"), ("job", "other")]);
        let l = merge(&target, scraped.clone(), false);
        assert_eq!((l.get("job"), l.get("exported_job")), ("node", "other"));
        let l = merge(&target, scraped, true);
        assert_eq!(
            (l.get("job"), l.get("instance"), l.has("exported_job")),
            ("other", "h:1", false)
        );
    }

    #[test]
    fn the_grid_is_the_same_wherever_it_is_computed() {
        assert_eq!(grid_at_or_before(10_500, 1000, 300), 10_300);
        assert_eq!(grid_at_or_before(10_300, 1000, 300), 10_300);
        assert_eq!(grid_at_or_before(10_299, 1000, 300), 9_300);
    }
}
