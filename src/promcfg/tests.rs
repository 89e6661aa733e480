//! Parsing and checking against files in `tests/data/promcfg` (the same
//! files `promtool check config` accepts or refuses).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/promcfg")
        .join(name)
}

#[test]
fn a_realistic_file_parses_with_prometheus_defaults() {
    let l = load(&data("good.yml")).expect("good.yml loads");
    let c = &l.config;
    assert_eq!(c.global.scrape_interval.0, Duration::from_secs(15));
    assert_eq!(c.global.external_labels.get("cluster").map(String::as_str), Some("eu1"));
    let node = &c.scrape_configs[0];
    assert_eq!(
        (node.job_name.as_str(), node.interval(), node.timeout()),
        ("node", Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!((node.metrics_path.as_str(), node.scheme.as_str()), ("/metrics", "http"));
    assert!(node.honor_timestamps && !node.honor_labels);
    assert_eq!(node.relabel_configs.len(), 2);
    let files = &c.scrape_configs[1];
    assert_eq!(files.timeout(), Duration::from_secs(5));
    assert_eq!(files.body_size_limit, Some(ByteSize(10 << 20)));
    assert_eq!(files.params.get("module"), Some(&vec!["http_2xx".to_string()]));
    assert!(files.file_sd_configs[0].files[0].ends_with("promcfg/targets/*.json"));
    assert!(files.http.tls_config.insecure_skip_verify);
    assert_eq!(
        files.http.authorization.as_ref().map(|a| a.kind.as_str()),
        Some("Bearer")
    );
    let am = &c.alerting.alertmanagers[0];
    assert_eq!((am.path_prefix.as_str(), am.timeout.0), ("/am", Duration::from_secs(5)));
    assert_eq!(l.digest.len(), 64);
    assert_eq!(l.rule_file_paths(), vec![data("alerts/extra.yml")]);
    // Secrets are not shown.
    let yaml = l.yaml();
    assert!(
        !yaml.contains("s3cret") && !yaml.contains("tok\n") && yaml.contains("<secret>"),
        "{yaml}"
    );
}

#[test]
fn an_empty_file_is_all_defaults() {
    let c = parse(b"", Path::new(".")).expect("empty parses");
    assert_eq!(c.global.scrape_interval.0, Duration::from_secs(60));
    assert_eq!(c.global.scrape_timeout.0, Duration::from_secs(10));
    assert_eq!(c.global.evaluation_interval.0, Duration::from_secs(60));
    let c = parse(
        b"scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n",
        Path::new("."),
    )
    .expect("parses");
    // The global 10s timeout is cut to the job's 5s interval.
    assert_eq!(c.scrape_configs[0].timeout(), Duration::from_secs(5));
}

#[test]
fn unsupported_sections_are_each_named() {
    let e = load(&data("unsupported.yml")).expect_err("refused").to_string();
    for name in [
        "remote_write",
        "remote_read",
        "storage",
        "tracing",
        "scrape_configs[0](job \"k8s\").consul_sd_configs",
        "scrape_configs[1](job \"dns\").dns_sd_configs",
    ] {
        assert!(e.contains(name), "{name} not named in: {e}");
    }
}

#[test]
fn files_promtool_refuses_are_refused() {
    for (file, why) in [
        ("bad_timeout.yml", "scrape timeout greater than scrape interval"),
        ("typo.yml", "scrape_intervall: unknown field"),
        ("duplicate_job.yml", "multiple scrape configs with job name"),
    ] {
        let e = load(&data(file)).expect_err(file).to_string();
        assert!(e.contains(why), "{file}: expected {why:?} in {e}");
    }
    for bad in [
        "global: [1]",
        "scrape_configs:\n- job_name: a\n  scheme: ftp\n",
        "scrape_configs:\n- job_name: a\n  relabel_configs:\n  - action: hashmod\n    target_label: x\n",
        "scrape_configs:\n- job_name: a\n  basic_auth: {username: u}\n  authorization: {credentials: c}\n",
        "global:\n  scrape_interval: 10x\n",
    ] {
        assert!(parse(bad.as_bytes(), Path::new(".")).is_err(), "accepted {bad}");
    }
}

#[test]
fn reload_keeps_the_old_file_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.yml");
    std::fs::write(&path, "global:\n  scrape_interval: 7s\n").expect("write");
    let state = PromConfigState::start(Some(path.clone())).expect("starts");
    let first = state.digest();
    std::fs::write(&path, "remote_write: []\nglobal: {scrape_interval: 9s}\n").expect("write");
    assert!(state.reload().is_err());
    assert!(!state.last_reload_successful());
    assert_eq!(state.digest(), first);
    let c = state.current().expect("config in force");
    assert_eq!(c.config.global.scrape_interval.0, Duration::from_secs(7));
    std::fs::write(&path, "global:\n  scrape_interval: 9s\n").expect("write");
    state.reload().expect("good file reloads");
    assert!(state.last_reload_successful());
    assert_ne!(state.digest(), first);
}
