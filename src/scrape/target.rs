//! From discovered target groups to scrape targets: the labels Prometheus
//! gives a target before relabeling (`__address__`, `__scheme__`,
//! `__metrics_path__`, `__scrape_interval__`, `__scrape_timeout__`,
//! `__param_*`, `job`), `relabel_configs`, `instance`, and the URL.
//!
//! Pure: owns [`targets_of`]; reads no file and opens no connection.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{format_duration, parse_duration};
use crate::promcfg::relabel::process;
use crate::promcfg::{ScrapeConfig, StaticConfig};
use crate::tsdb::Labels;

/// A target after relabeling.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The job.
    pub job: String,
    /// Labels before relabeling.
    pub discovered: Labels,
    /// Labels every series of the target gets (no `__` labels).
    pub labels: Labels,
    /// The URL scraped.
    pub url: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
}

impl Target {
    /// The target's place in the interval, the same on every node (a hash
    /// of its labels and URL, not a random number), so a new leader scrapes
    /// on the grid the old one used.
    pub fn offset_ms(&self) -> u64 {
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let h = self.labels.stable_hash() ^ xxhash_rust::xxh3::xxh3_64(self.url.as_bytes());
        h % interval_ms
    }
}

/// What discovery and relabeling made of a job's target groups: the active
/// targets, and the discovered label sets that relabeling dropped (or that
/// were invalid, with why).
#[derive(Debug, Default)]
pub struct JobTargets {
    /// Targets to scrape.
    pub active: Vec<Target>,
    /// Dropped, with the labels as discovered.
    pub dropped: Vec<Labels>,
}

/// The targets of `job` from its groups (static and file SD).
pub fn targets_of(job: &ScrapeConfig, groups: &[StaticConfig]) -> JobTargets {
    let mut out = JobTargets::default();
    for g in groups {
        for addr in &g.targets {
            let discovered = discovered_labels(job, g, addr);
            match build(job, &discovered) {
                Some(t) if !out.active.iter().any(|a| a.labels == t.labels) => out.active.push(t),
                Some(_) => {}
                None => out.dropped.push(discovered),
            }
        }
    }
    out
}

fn discovered_labels(job: &ScrapeConfig, g: &StaticConfig, addr: &str) -> Labels {
    let mut m: BTreeMap<String, String> = g.labels.clone();
    m.insert("__address__".into(), addr.to_string());
    let defaults = [
        ("job", job.job_name.clone()),
        ("__scheme__", job.scheme.clone()),
        ("__metrics_path__", job.metrics_path.clone()),
        ("__scrape_interval__", format_duration(job.interval())),
        ("__scrape_timeout__", format_duration(job.timeout())),
    ];
    for (k, v) in defaults {
        m.entry(k.into()).or_insert(v);
    }
    for (k, v) in &job.params {
        if let Some(first) = v.first() {
            m.entry(format!("__param_{k}")).or_insert_with(|| first.clone());
        }
    }
    Labels::from_pairs(m)
}

/// Relabels one discovered set; `None` when dropped or unusable (no
/// address, a bad interval or timeout).
fn build(job: &ScrapeConfig, discovered: &Labels) -> Option<Target> {
    let l = process(discovered, &job.relabel_configs)?;
    let address = l.get("__address__");
    if address.is_empty() || address.contains('/') {
        return None;
    }
    let interval = parse_duration(l.get("__scrape_interval__"))
        .ok()
        .filter(|d| !d.is_zero())?;
    let timeout = parse_duration(l.get("__scrape_timeout__"))
        .ok()
        .filter(|d| *d <= interval)?;
    let url = url_of(job, &l);
    let mut pairs: Vec<(String, String)> = l
        .iter()
        .filter(|x| !x.name.starts_with("__"))
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    if !l.has("instance") {
        pairs.push(("instance".into(), address.to_string()));
    }
    Some(Target {
        job: job.job_name.clone(),
        discovered: discovered.clone(),
        labels: Labels::from_pairs(pairs),
        url,
        interval,
        timeout,
    })
}

/// `scheme://address/path?params`, `__param_*` overriding the first value
/// of the job's `params`.
fn url_of(job: &ScrapeConfig, l: &Labels) -> String {
    let mut params: BTreeMap<String, Vec<String>> = job.params.clone();
    for x in l.iter() {
        if let Some(k) = x.name.strip_prefix("__param_") {
            let v = params.entry(k.to_string()).or_default();
            if v.is_empty() {
                v.push(x.value.clone());
            } else {
                v[0] = x.value.clone();
            }
        }
    }
    let query: Vec<(&str, &str)> = params
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
        .collect();
    let mut url = format!(
        "{}://{}{}",
        l.get("__scheme__"),
        l.get("__address__"),
        l.get("__metrics_path__")
    );
    if !query.is_empty() {
        url.push('?');
        url.push_str(&serde_urlencoded::to_string(&query).unwrap_or_default());
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> ScrapeConfig {
        let c = crate::promcfg::parse(yaml.as_bytes(), std::path::Path::new(".")).expect("parses");
        c.scrape_configs[0].clone()
    }

    #[test]
    fn labels_url_and_instance_as_prometheus_builds_them() {
        let j = job("scrape_configs:\n- job_name: node\n  scrape_interval: 5s\n  params: {module: [a, b]}\n  static_configs:\n  - targets: ['h:9100']\n    labels: {env: prod}\n");
        let t = targets_of(&j, &j.static_configs);
        assert_eq!(t.active.len(), 1);
        let t = &t.active[0];
        assert_eq!(
            t.labels,
            Labels::from_pairs([("env", "prod"), ("instance", "h:9100"), ("job", "node")])
        );
        assert_eq!(t.url, "http://h:9100/metrics?module=a&module=b");
        assert_eq!(t.interval, Duration::from_secs(5));
        assert_eq!(t.discovered.get("__param_module"), "a");
        assert_eq!(t.discovered.get("__scrape_timeout__"), "5s");
        assert!(t.offset_ms() < 5000);
    }

    #[test]
    fn relabeling_drops_and_rewrites_targets() {
        let j = job("scrape_configs:\n- job_name: n\n  static_configs:\n  - targets: ['a:1', 'b:2']\n  relabel_configs:\n  - source_labels: [__address__]\n    regex: 'b:.*'\n    action: drop\n  - source_labels: [__address__]\n    regex: '(.*):1'\n    target_label: instance\n    replacement: '$1'\n  - target_label: __metrics_path__\n    replacement: /probe\n");
        let t = targets_of(&j, &j.static_configs);
        assert_eq!(t.active.len(), 1);
        assert_eq!(t.dropped.len(), 1);
        assert_eq!(t.active[0].labels.get("instance"), "a");
        assert_eq!(t.active[0].url, "http://a:1/probe");
    }
}
