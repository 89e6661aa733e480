//! From the Prometheus configuration file (`promcfg`) to what the rules
//! and the notifier take, and the task that follows its reloads.
//!
//! Owns only the translation: which rule files, which Alertmanager URLs
//! (static and file SD), external labels and `alert_relabel_configs`. It
//! reads file SD files; it never evaluates or sends anything itself.

use std::sync::Arc;
use std::time::Duration;

use super::alerting::LabelMap;
use super::manager::{RuleManager, RulesSettings, RESEND_DELAY_DEFAULT};
use crate::notifier::{Notifier, NotifierOptions, Relabel};
use crate::promcfg::{AlertmanagerConfig, LoadedConfig, StaticConfig};
use crate::tsdb::labels::Labels;

/// How often Alertmanagers listed in `file_sd_configs` files are read
/// again when the entry gives no `refresh_interval` shorter than this.
pub const FILE_SD_REFRESH_MAX: Duration = Duration::from_secs(30);

/// What the rules take from the configuration (`None`: no configuration,
/// no rules).
pub fn rules_settings(c: Option<&LoadedConfig>, external_url: &str) -> RulesSettings {
    let Some(c) = c else {
        return RulesSettings {
            external_url: external_url.to_string(),
            resend_delay: RESEND_DELAY_DEFAULT,
            ..RulesSettings::default()
        };
    };
    RulesSettings {
        rule_files: c.rule_file_paths(),
        evaluation_interval: c.config.global.evaluation_interval.0,
        external_labels: c.config.global.external_labels.clone(),
        external_url: external_url.to_string(),
        resend_delay: RESEND_DELAY_DEFAULT,
    }
}

/// External labels, `alert_relabel_configs` and the send timeout.
pub fn notifier_options(c: Option<&LoadedConfig>) -> NotifierOptions {
    let Some(c) = c else { return NotifierOptions::default() };
    let rules = c.config.alerting.alert_relabel_configs.clone();
    let relabel: Option<Relabel> = (!rules.is_empty()).then(|| {
        let r: Relabel = Arc::new(move |l: LabelMap| {
            crate::promcfg::relabel::process(&Labels::from_pairs(l), &rules)
                .map(|out| out.iter().map(|p| (p.name.clone(), p.value.clone())).collect())
        });
        r
    });
    NotifierOptions {
        queue_capacity: 0,
        external_labels: c.config.global.external_labels.clone(),
        relabel,
        timeout: c
            .config
            .alerting
            .alertmanagers
            .iter()
            .map(|a| a.timeout.0)
            .max()
            .unwrap_or_default(),
    }
}

/// The targets of a file SD file (YAML or JSON: a list of `targets` and
/// `labels`); an unreadable file contributes nothing, as in Prometheus.
fn file_targets(path: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let groups: Vec<StaticConfig> = serde_yaml::from_str(&text).unwrap_or_default();
    groups.into_iter().flat_map(|g| g.targets).collect()
}

fn urls_of(am: &AlertmanagerConfig) -> Vec<String> {
    let prefix = am.path_prefix.trim_matches('/');
    let path = if prefix.is_empty() {
        "/api/v2/alerts".to_string()
    } else {
        format!("/{prefix}/api/v2/alerts")
    };
    let statics = am.static_configs.iter().flat_map(|s| s.targets.iter().cloned());
    let files = am
        .file_sd_configs
        .iter()
        .flat_map(|f| f.files.iter().flat_map(|p| file_targets(p)));
    statics
        .chain(files)
        .map(|t| format!("{}://{t}{path}", am.scheme))
        .collect()
}

/// Every Alertmanager URL of the configuration.
pub fn alertmanager_urls(c: Option<&LoadedConfig>) -> Vec<String> {
    let mut out: Vec<String> = c
        .map(|c| c.config.alerting.alertmanagers.iter().flat_map(urls_of).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Applies every reload of the configuration to the rules and the
/// notifier (the node applied the one in force at its start), and re-reads
/// Alertmanager file SD files between reloads. Ends when the node drops
/// its configuration state.
pub async fn follow(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<LoadedConfig>>>,
    rules: Arc<RuleManager>,
    notifier: Arc<Notifier>,
    external_url: String,
) {
    rx.borrow_and_update();
    loop {
        match tokio::time::timeout(FILE_SD_REFRESH_MAX, rx.changed()).await {
            Ok(Err(_)) => return,
            Ok(Ok(())) => {
                let current = rx.borrow_and_update().clone();
                notifier.set_options(notifier_options(current.as_deref()));
                notifier.set_alertmanagers(&alertmanager_urls(current.as_deref()));
                if let Err(e) = rules.reload(rules_settings(current.as_deref(), &external_url)) {
                    tracing::error!(error = %e, "rule files refused on reload; keeping the rules in force");
                }
            }
            Err(_) => {
                let current = rx.borrow().clone();
                notifier.set_alertmanagers(&alertmanager_urls(current.as_deref()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(yaml: &str, dir: &std::path::Path) -> LoadedConfig {
        LoadedConfig {
            path: dir.join("prometheus.yml"),
            config: crate::promcfg::parse(yaml.as_bytes(), dir).expect("valid configuration"),
            digest: String::new(),
        }
    }

    #[test]
    fn alertmanager_urls_follow_scheme_prefix_and_file_sd() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ams.json"), r#"[{"targets": ["c:9093"]}]"#).expect("write");
        let c = loaded(
            "alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['a:9093', 'b:9093']}]\n    \
             - scheme: https\n      path_prefix: /am/\n      file_sd_configs: [{files: [ams.json]}]\n",
            dir.path(),
        );
        assert_eq!(
            alertmanager_urls(Some(&c)),
            vec![
                "http://a:9093/api/v2/alerts".to_string(),
                "http://b:9093/api/v2/alerts".to_string(),
                "https://c:9093/am/api/v2/alerts".to_string(),
            ]
        );
        assert!(alertmanager_urls(None).is_empty());
    }

    #[test]
    fn external_labels_and_alert_relabeling_reach_the_notifier() {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = loaded(
            "global:\n  external_labels: {cluster: eu}\n  evaluation_interval: 30s\nalerting:\n  \
             alert_relabel_configs:\n    - {source_labels: [severity], regex: debug, action: drop}\n",
            dir.path(),
        );
        let o = notifier_options(Some(&c));
        assert_eq!(o.external_labels["cluster"], "eu");
        let relabel = o.relabel.expect("relabeling configured");
        let debug = LabelMap::from([("alertname".into(), "A".into()), ("severity".into(), "debug".into())]);
        assert!(relabel(debug).is_none(), "dropped by alert_relabel_configs");
        let page = LabelMap::from([("alertname".into(), "A".into()), ("severity".into(), "page".into())]);
        assert_eq!(relabel(page.clone()), Some(page));
        let s = rules_settings(Some(&c), "http://x");
        assert_eq!(s.evaluation_interval, Duration::from_secs(30));
        assert_eq!(s.external_labels["cluster"], "eu");
    }
}
