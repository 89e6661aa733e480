//! The checks Prometheus makes when it loads a file, and the defaults a
//! job inherits from `global`.
//!
//! Owns [`resolve`]; it reads no file (relative paths are only joined to
//! the configuration file's directory).

use std::collections::BTreeSet;
use std::path::Path;

use super::types::{AlertmanagerConfig, HttpClientConfig, PromConfig, PromDuration, ScrapeConfig};
use super::RelabelConfig;
use crate::tsdb::labels::is_valid_label_name;

/// Fills inherited defaults, resolves relative paths against `dir`, and
/// refuses what Prometheus refuses; the message names the place.
pub fn resolve(c: &mut PromConfig, dir: &Path) -> Result<(), String> {
    let g = &c.global;
    if g.scrape_timeout > g.scrape_interval {
        return Err("global scrape timeout greater than scrape interval".into());
    }
    if g.scrape_interval.0.is_zero() || g.evaluation_interval.0.is_zero() {
        return Err("global scrape_interval and evaluation_interval must be greater than 0s".into());
    }
    for name in g.external_labels.keys() {
        if !is_valid_label_name(name) {
            return Err(format!("global.external_labels: {name:?} is not a valid label name"));
        }
    }
    for f in &mut c.rule_files {
        *f = join(dir, f);
    }
    let mut jobs = BTreeSet::new();
    let global = c.global.clone();
    for s in &mut c.scrape_configs {
        if s.job_name.is_empty() {
            return Err("scrape_configs: job_name is empty".into());
        }
        if !jobs.insert(s.job_name.clone()) {
            return Err(format!("found multiple scrape configs with job name {:?}", s.job_name));
        }
        scrape(s, &global, dir).map_err(|e| format!("scrape config with job name {:?}: {e}", s.job_name))?;
    }
    relabels(&c.alerting.alert_relabel_configs).map_err(|e| format!("alerting.alert_relabel_configs: {e}"))?;
    for (i, am) in c.alerting.alertmanagers.iter_mut().enumerate() {
        alertmanager(am, dir).map_err(|e| format!("alerting.alertmanagers[{i}]: {e}"))?;
    }
    Ok(())
}

fn scrape(s: &mut ScrapeConfig, g: &super::GlobalConfig, dir: &Path) -> Result<(), String> {
    let interval = *s.scrape_interval.get_or_insert(g.scrape_interval);
    if interval.0.is_zero() {
        return Err("scrape_interval must be greater than 0s".into());
    }
    // Prometheus: an unset timeout is the global one, cut to the interval.
    let timeout = *s
        .scrape_timeout
        .get_or_insert(PromDuration(g.scrape_timeout.0.min(interval.0)));
    if timeout > interval {
        return Err("scrape timeout greater than scrape interval".into());
    }
    s.body_size_limit.get_or_insert(g.body_size_limit);
    s.sample_limit.get_or_insert(g.sample_limit);
    s.target_limit.get_or_insert(g.target_limit);
    s.label_limit.get_or_insert(g.label_limit);
    s.label_name_length_limit.get_or_insert(g.label_name_length_limit);
    s.label_value_length_limit.get_or_insert(g.label_value_length_limit);
    scheme(&s.scheme)?;
    if !s.metrics_path.starts_with('/') {
        return Err(format!("metrics_path {:?} must start with /", s.metrics_path));
    }
    for sd in &mut s.file_sd_configs {
        for f in &mut sd.files {
            *f = join(dir, f);
        }
    }
    http(&mut s.http, dir)?;
    relabels(&s.relabel_configs).map_err(|e| format!("relabel_configs: {e}"))?;
    relabels(&s.metric_relabel_configs).map_err(|e| format!("metric_relabel_configs: {e}"))
}

fn alertmanager(am: &mut AlertmanagerConfig, dir: &Path) -> Result<(), String> {
    scheme(&am.scheme)?;
    if am.api_version != "v2" {
        return Err(format!(
            "api_version {:?} is not supported (Alertmanager serves only v2)",
            am.api_version
        ));
    }
    for sd in &mut am.file_sd_configs {
        for f in &mut sd.files {
            *f = join(dir, f);
        }
    }
    http(&mut am.http, dir)?;
    relabels(&am.relabel_configs).map_err(|e| format!("relabel_configs: {e}"))
}

fn scheme(s: &str) -> Result<(), String> {
    match s {
        "http" | "https" => Ok(()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn http(h: &mut HttpClientConfig, dir: &Path) -> Result<(), String> {
    if h.basic_auth.is_some() && h.authorization.is_some() {
        return Err("at most one of basic_auth and authorization must be configured".into());
    }
    if let Some(b) = &mut h.basic_auth {
        if b.password.is_some() && b.password_file.is_some() {
            return Err("at most one of basic_auth password & password_file must be configured".into());
        }
        if let Some(f) = &mut b.password_file {
            *f = join(dir, f);
        }
    }
    if let Some(a) = &mut h.authorization {
        if a.kind.eq_ignore_ascii_case("basic") {
            return Err("authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into());
        }
        if a.credentials.is_some() && a.credentials_file.is_some() {
            return Err("at most one of authorization credentials & credentials_file must be configured".into());
        }
        if let Some(f) = &mut a.credentials_file {
            *f = join(dir, f);
        }
    }
    let t = &mut h.tls_config;
    for f in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file]
        .into_iter()
        .flatten()
    {
        *f = join(dir, f);
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err("tls_config: cert_file and key_file must be given together".into());
    }
    Ok(())
}

fn relabels(rules: &[RelabelConfig]) -> Result<(), String> {
    rules.iter().try_for_each(RelabelConfig::validate)
}

/// `p` when absolute, else `dir/p` (Prometheus resolves every path in the
/// file against the file's directory).
fn join(dir: &Path, p: &str) -> String {
    if p.is_empty() || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        dir.join(p).display().to_string()
    }
}
