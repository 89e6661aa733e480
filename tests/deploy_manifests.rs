//! The deployment files checked offline, without a cluster: the Kubernetes
//! manifests against the API's schemas (`kubernetes-validate`, from PyPI,
//! which ships them) and against what promraft needs of them (quorum, peer
//! discovery, probes, start in any order); the Compose file with Compose's
//! own parser; the systemd unit with `systemd-analyze verify`; the config
//! files each of them carries with promraft's own config loader.
//!
//! The tools are peers: without one, its check prints a skip; with
//! `PROMRAFT_REQUIRE_PEERS=1` (as `.ci/run` sets) it fails instead. The
//! checks of promraft's own needs always run.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use promraft::config::Config;
use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The manifests kubectl applies (every YAML file but the kustomization).
fn k8s_manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    v.sort();
    v
}

/// Every document of every manifest, by `Kind/name`.
fn k8s_objects() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for path in k8s_manifests() {
        let text = std::fs::read_to_string(&path).expect("read manifest");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if v.is_null() {
                continue;
            }
            let key = format!("{}/{}", s(&v["kind"]), s(&v["metadata"]["name"]));
            assert!(out.insert(key.clone(), v).is_none(), "{key} defined twice");
        }
    }
    out
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn require_peers() -> bool {
    std::env::var("PROMRAFT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skips (or, under `PROMRAFT_REQUIRE_PEERS=1`, fails) with `why`.
fn skip(test: &str, why: &str) {
    if require_peers() {
        panic!("PROMRAFT_REQUIRE_PEERS=1 but {why}");
    }
    eprintln!("SKIP {test}: {why} (set PROMRAFT_REQUIRE_PEERS=1 to make this a failure)");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------
// Kubernetes

/// The oldest Kubernetes version the manifests are checked against besides
/// the validator's newest: policy/v1 PodDisruptionBudget needs 1.21, and
/// 1.25 is the oldest release whose schemas still ship everything used.
const OLDEST_KUBERNETES: &str = "1.25.0";

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let Some(validator) = which("kubernetes-validate") else {
        return skip(
            "kubernetes_manifests_validate_against_the_api_schemas",
            "kubernetes-validate is not installed (pip install kubernetes-validate)",
        );
    };
    let files = k8s_manifests();
    assert!(files.len() >= 4, "manifests: {files:?}");
    for version in [None, Some(OLDEST_KUBERNETES)] {
        let mut cmd = Command::new(&validator);
        cmd.args(["--strict", "--quiet"]);
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        cmd.args(&files);
        let (ok, out) = run(&mut cmd);
        assert!(
            ok && !out.contains("ERROR"),
            "kubernetes-validate (version {version:?}) rejects the manifests:\n{out}"
        );
    }
    // The validator does reject a broken manifest (it is not a no-op): a
    // misspelt field and a string where an integer belongs.
    let dir = tempfile::tempdir().expect("temp dir");
    let sts = std::fs::read_to_string(k8s_dir().join("statefulset.yaml")).expect("statefulset.yaml");
    for (what, broken) in [
        ("misspelt field", sts.replacen("serviceName:", "servceName:", 1)),
        ("wrong type", sts.replacen("replicas: 3", "replicas: three", 1)),
    ] {
        assert_ne!(broken, sts, "the {what} edit applies");
        let p = dir.path().join("broken.yaml");
        std::fs::write(&p, broken).expect("write broken manifest");
        let (ok, out) = run(Command::new(&validator).args(["--strict", "--quiet"]).arg(&p));
        assert!(!ok, "kubernetes-validate accepted a manifest with a {what}:\n{out}");
    }
}

#[test]
fn kubernetes_statefulset_keeps_a_quorum_and_starts_in_any_order() {
    let objs = k8s_objects();
    let sts = &objs["StatefulSet/promraft"];
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(3), "three voters");
    // OrderedReady would wait forever for promraft-0 to be ready, which
    // needs a leader, which needs a second pod.
    assert_eq!(s(&spec["podManagementPolicy"]), "Parallel", "pods must start together");

    // Peer discovery: the headless service names every pod, ready or not.
    let peers = &objs[&format!("Service/{}", s(&spec["serviceName"]))];
    assert_eq!(s(&peers["spec"]["clusterIP"]), "None", "the peer service is headless");
    assert_eq!(
        peers["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "peers resolve before they are ready"
    );
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], pod_labels);
    assert_eq!(&peers["spec"]["selector"], pod_labels);
    let client = &objs["Service/promraft"];
    assert!(
        client["spec"]["clusterIP"].as_str() != Some("None"),
        "the client service load-balances"
    );
    assert_eq!(&client["spec"]["selector"], pod_labels);

    // The budget keeps two of three up: a quorum.
    let pdb = &objs["PodDisruptionBudget/promraft"];
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);

    // Probes and storage.
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/-/ready");
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/-/healthy");
    let claim = s(&spec["volumeClaimTemplates"][0]["metadata"]["name"]);
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let data_mount = mounts
        .iter()
        .find(|m| s(&m["name"]) == claim)
        .expect("the claim is mounted");
    assert_eq!(s(&data_mount["mountPath"]), "/var/lib/promraft");
    // Non-root, as the image's user.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(10001));
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("USER 10001:10001"), "the image's user is 10001");

    // The config file the ConfigMap mounts is a valid promraft config, and
    // its data_dir is the volume.
    let cm = &objs["ConfigMap/promraft-config"];
    let file: Config = serde_yaml::from_str(s(&cm["data"]["promraft.yaml"])).expect("ConfigMap promraft.yaml parses");
    assert_eq!(file.data_dir, PathBuf::from("/var/lib/promraft"));

    // Each pod's start: run the container's own bash script with a pod's
    // environment (Kubernetes expands $(VAR) in env values first), with the
    // final exec replaced by printing the environment, then load the config
    // the node would load and validate it: the id comes from the ordinal,
    // the node is in the member list under its own name, ids are 1..=3.
    let script = s(&c["args"][0]);
    assert!(script.contains("exec /usr/local/bin/promraft serve"), "{script}");
    let script = script.replace("exec /usr/local/bin/promraft serve", "env");
    let env_list = c["env"].as_sequence().expect("env");
    let mut all_members = BTreeSet::new();
    for ordinal in 0..3u64 {
        let namespace = "monitoring";
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("POD_NAMESPACE".into(), namespace.into());
        for e in env_list {
            if let Some(v) = e["value"].as_str() {
                let mut v = v.to_string();
                for (k, val) in vars.clone() {
                    v = v.replace(&format!("$({k})"), &val);
                }
                vars.insert(s(&e["name"]).to_string(), v);
            }
        }
        let hostname = format!("promraft-{ordinal}");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(&script)
            .env_clear()
            .env("HOSTNAME", &hostname)
            .env("PATH", "/usr/bin:/bin");
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "the start script fails for {hostname}: {out}");
        let env: BTreeMap<String, String> = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = file.clone();
        config.apply_env(|k| env.get(k).cloned()).expect("environment applies");
        config.validate().unwrap_or_else(|e| panic!("{hostname}: {e}"));
        assert_eq!(config.node_id, ordinal + 1, "{hostname} is node {}", ordinal + 1);
        let me = format!("{hostname}.promraft-peers.{namespace}.svc.cluster.local");
        assert_eq!(config.raft_addr, format!("{me}:9190"));
        assert_eq!(config.http_addr, format!("{me}:9090"));
        let members = config.initial_cluster.members().clone();
        assert!(!members.is_empty(), "{hostname} has a member list");
        assert_eq!(
            members.get(&config.node_id),
            Some(&config.raft_addr),
            "{hostname} is listed under its own address"
        );
        all_members.insert(members);
    }
    assert_eq!(all_members.len(), 1, "every pod starts with the same member list");
    let members = all_members.into_iter().next().expect("one list");
    assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).expect("kustomization.yaml");
    let v: Value = serde_yaml::from_str(&text).expect("kustomization parses");
    let listed: BTreeSet<String> = v["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    let present: BTreeSet<String> = k8s_manifests()
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
}

// ---------------------------------------------------------------------------
// Compose

/// The Compose file with its YAML merge keys applied.
fn compose_file() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/compose.yaml")).expect("compose.yaml");
    let mut v: Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    v.apply_merge().expect("merge keys");
    v
}

#[test]
fn compose_file_is_a_three_node_cluster() {
    let v = compose_file();
    let mut lists = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for n in 1..=3u64 {
        let name = format!("promraft-{n}");
        let svc = &v["services"][name.as_str()];
        assert_eq!(s(&svc["restart"]), "on-failure", "{name} restarts on failure");
        let env = &svc["environment"];
        let get = |k: &str| env[k].as_str().map(str::to_string);
        let mut config: Config = serde_yaml::from_str(
            &std::fs::read_to_string(repo().join("deploy/docker/promraft.yaml")).expect("image config"),
        )
        .expect("the image's config parses");
        config.apply_env(get).expect("environment applies");
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.node_id, n);
        assert_eq!(
            config.raft_addr,
            format!("{name}:9190"),
            "{name} advertises its service name"
        );
        assert_eq!(config.http_addr, format!("{name}:9090"));
        // Inside its own container the name means 0.0.0.0 (see compose.yaml).
        let hosts: Vec<&str> = svc["extra_hosts"]
            .as_sequence()
            .expect("extra_hosts")
            .iter()
            .map(s)
            .collect();
        assert_eq!(hosts, vec![format!("{name}:0.0.0.0").as_str()]);
        // A named volume of its own on the data directory.
        let vol = s(&svc["volumes"][0]);
        let (volume, path) = vol.split_once(':').expect("volume:path");
        assert_eq!(path, "/var/lib/promraft");
        assert_eq!(volume, name);
        assert!(v["volumes"].get(volume).is_some(), "{volume} is a named volume");
        ids.insert(config.node_id);
        lists.insert(config.initial_cluster.to_string());
    }
    assert_eq!(ids.len(), 3);
    assert_eq!(lists.len(), 1, "one member list");
    assert!(
        v["services"]["prometheus"]["profiles"]
            .as_sequence()
            .is_some_and(|p| !p.is_empty()),
        "Prometheus is optional"
    );
}

#[test]
fn compose_file_is_valid_for_compose() {
    // `docker` may be missing altogether (no Docker on this machine): then
    // only Compose v1's `docker-compose`, which parses the file without an
    // engine, can check it; `.ci/run` installs it.
    let compose: Vec<&str> = if which("docker").is_some() && run(Command::new("docker").args(["compose", "version"])).0
    {
        vec!["docker", "compose"]
    } else if which("docker-compose").is_some() {
        vec!["docker-compose"]
    } else {
        return skip(
            "compose_file_is_valid_for_compose",
            "neither `docker compose` nor `docker-compose` is installed",
        );
    };
    for profile in [None, Some("prometheus")] {
        let mut cmd = Command::new(compose[0]);
        cmd.args(&compose[1..])
            .arg("-f")
            .arg(repo().join("deploy/compose.yaml"));
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        cmd.args(["config", "-q"]);
        let (ok, out) = run(&mut cmd);
        assert!(ok, "compose rejects deploy/compose.yaml (profile {profile:?}):\n{out}");
    }
}

// ---------------------------------------------------------------------------
// The image, systemd and the config files

#[test]
fn dockerfile_builds_offline_and_online() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    let pos = |needle: &str| {
        froms
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {froms:?}"))
    };
    // The legacy builder builds every stage up to --target: the offline
    // target must come before the stage that pulls the Rust image.
    assert!(pos("AS prebuilt") < pos("${RUST_IMAGE}"), "{froms:?}");
    assert!(
        froms[0].contains("${BASE_IMAGE}"),
        "the runtime base is a build argument: {froms:?}"
    );
    assert!(text.contains("ARG BASE_IMAGE=debian:bookworm-slim"));
    assert!(text.contains("HEALTHCHECK"));
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("RUN --mount")),
        "the legacy builder cannot run RUN --mount"
    );
    let base = std::fs::read_to_string(repo().join("deploy/docker/build-base.sh")).expect("build-base.sh");
    assert!(base.contains("promraft-base:bookworm"));
    let image: Config = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/docker/promraft.yaml")).expect("image config"),
    )
    .expect("the image's config parses");
    image
        .validate()
        .expect("the image's config is valid as it is (one node)");
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/promraft.service")).expect("promraft.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/promraft serve --config /etc/promraft/promraft.yaml"));
    assert!(unit.contains("Restart=on-failure"));
    assert!(unit.contains("StateDirectory=promraft"));
    // `promraft cluster` and `promraft backup` need the admin API.
    assert!(unit.contains("Environment=PROMRAFT_WEB_ENABLE_ADMIN_API=true"));
    let Some(analyze) = which("systemd-analyze") else {
        return skip(
            "systemd_unit_verifies",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
    };
    // verify checks that ExecStart's program exists: point it at the binary
    // under test, in a copy of the unit.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("promraft.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/promraft", env!("CARGO_BIN_EXE_promraft")),
    )
    .expect("write unit");
    let (ok, out) = run(Command::new(analyze).arg("verify").arg(&copy));
    // verify exits 0 on unknown keys and bad values, printing warnings: any
    // output about the unit is a failure.
    let about_unit: Vec<&str> = out.lines().filter(|l| l.contains("promraft.service")).collect();
    assert!(ok && about_unit.is_empty(), "systemd-analyze verify:\n{out}");
}

#[test]
fn the_example_config_documents_every_option() {
    // Every option of the config (the defaults, serialized) is named in the
    // example file with a comment above it.
    let text = std::fs::read_to_string(repo().join("deploy/promraft.example.yaml")).expect("example");
    let defaults: Value = serde_yaml::to_value(Config::default()).expect("serialize defaults");
    let mut missing = Vec::new();
    fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
        if let Some(m) = v.as_mapping() {
            for (k, v) in m {
                let k = format!("{prefix}{}", k.as_str().expect("string key"));
                if v.is_mapping() {
                    keys(&format!("{k}."), v, out);
                } else {
                    out.push(k);
                }
            }
        }
    }
    let mut all = Vec::new();
    keys("", &defaults, &mut all);
    let lines: Vec<&str> = text.lines().collect();
    for key in &all {
        let leaf = key.rsplit('.').next().expect("leaf");
        let Some(i) = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{leaf}:")))
        else {
            missing.push(format!("{key}: not in the file"));
            continue;
        };
        // A comment directly above it, or above a group of options it belongs to.
        let documented = lines[..i]
            .iter()
            .rev()
            .take_while(|l| !l.trim().is_empty())
            .any(|l| l.trim_start().starts_with('#'));
        if !documented {
            missing.push(format!("{key}: no comment"));
        }
    }
    assert!(missing.is_empty(), "deploy/promraft.example.yaml: {missing:?}");
    // The environment variables are documented there too.
    for (var, _) in promraft::config::ENV_VARS {
        assert!(
            text.contains(var),
            "deploy/promraft.example.yaml does not mention {var}"
        );
    }
}

/// Seconds of a Compose or systemd duration (`45s`, `45`, `1min 30s`).
fn duration_secs(text: &str) -> u64 {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return n;
    }
    let mut total = 0;
    for part in text.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
        total += match &part[digits.len()..] {
            "s" | "sec" => n,
            "m" | "min" => n * 60,
            other => panic!("unit {other:?} in duration {text:?}"),
        };
    }
    total
}

#[test]
fn stop_timeouts_cover_the_handover_and_the_graceful_stop() {
    // What a node may take from SIGTERM to exit with the shipped config:
    // handover, drain, the last writes, checkpoint and Raft shutdown.
    let need = promraft::node::stop_time_max(&Config::default()).as_secs();
    let handover = promraft::cluster::handover::HANDOVER_TIMEOUT.as_secs();
    assert!(need > handover, "the stop time includes the handover");

    // Kubernetes: the preStop pause, then SIGTERM; SIGKILL after the
    // grace period, which counts from the start of the pause.
    let objs = k8s_objects();
    let pod = &objs["StatefulSet/promraft"]["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = &pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"];
    let pause: u64 = match pre_stop.as_sequence().map(|c| c.iter().map(s).collect::<Vec<_>>()) {
        Some(c) if c.len() == 2 && c[0].ends_with("sleep") => c[1].parse().expect("preStop sleep seconds"),
        other => panic!("preStop should be a sleep, got {other:?}"),
    };
    assert!(
        grace >= pause + need,
        "terminationGracePeriodSeconds {grace} should cover the preStop pause {pause} s and the stop ({need} s)"
    );

    // systemd: SIGTERM, SIGKILL after TimeoutStopSec.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/promraft.service")).expect("promraft.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing from the unit"))
            .to_string()
    };
    assert_eq!(value("KillSignal"), "SIGTERM");
    let timeout = duration_secs(&value("TimeoutStopSec"));
    assert!(
        timeout >= need,
        "TimeoutStopSec {timeout} should cover the stop ({need} s)"
    );

    // Compose: SIGTERM (no stop_signal), SIGKILL after stop_grace_period.
    let v = compose_file();
    for n in 1..=3 {
        let svc = &v["services"][format!("promraft-{n}").as_str()];
        assert!(svc.get("stop_signal").is_none(), "promraft-{n} is stopped with SIGTERM");
        let grace = duration_secs(s(&svc["stop_grace_period"]));
        assert!(
            grace >= need,
            "promraft-{n}'s stop_grace_period {grace} s should cover the stop ({need} s)"
        );
    }
}
