//! The deployment assets, tested for real in containers: the image built
//! the offline way (deploy/docker/build-image.sh: a debootstrapped Debian
//! base, `docker import`ed, plus our release binary), deploy/compose.yaml
//! brought up as a three-node cluster on its own network, and failures made
//! with Docker itself while one writer writes continuously through one node:
//!
//! 1. `docker kill` of the leader's container: writes resume through the
//!    surviving majority while the container is down; it is started again.
//! 2. `docker network disconnect` of a follower: writes go on through the
//!    majority, the isolated node refuses a write (asked from inside its
//!    container, since it has no network) and stops being ready; after
//!    `docker network connect` it catches up.
//! 3. `docker restart` of the leader (graceful stop, then start).
//! 4. A crash of a node other than the one written through (SIGKILL of its
//!    process from the host, as the OOM killer would do it): Docker's
//!    `restart: on-failure` brings it back.
//! 5. The README's replacement of a failed node: killed, removed from the
//!    cluster, its container and volume deleted, an empty node with the
//!    same id started, added as a learner and promoted.
//!
//! Then, with writes stopped, every replica reaches the same applied index
//! and digest, and every replica answers queries holding every acknowledged
//! sample exactly once with its exact value; the refused write is nowhere.
//! When deploy/docker/build-prometheus.sh can build a Prometheus image
//! (Debian's `prometheus` installed), the compose file's optional
//! Prometheus runs too and exactly the `up` series of its four scrape
//! targets must reach promraft through remote write; under
//! `PROMRAFT_REQUIRE_DOCKER=1` or `PROMRAFT_REQUIRE_PEERS=1` that part is
//! required, and a missing `prometheus` or a failed build fails the test.
//!
//! Traffic goes only to ports published on 127.0.0.1 and, for the isolated
//! node, through `docker exec` inside its container. The compose project
//! name is unique per run; its containers, network and volumes, and the
//! test's image tags, are removed when the test ends, also when it fails
//! (the guard's Drop runs `compose down -v`).
//!
//! Without a working Docker (`docker info` fails) or a Compose tool, the
//! test prints a skip; with `PROMRAFT_REQUIRE_DOCKER=1` (as `.ci/run` sets
//! when Docker works) it fails instead.
//!
//! By hand: `cargo test --release --test deploy_compose -- --nocapture`.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

const METRIC: &str = "promraft_deploy_test";
/// The metric of the write sent to the isolated node: it must be refused
/// and so be stored nowhere.
const REFUSED_METRIC: &str = "promraft_deploy_refused";

/// One docker or compose command (up, down, kill, exec...).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// Building the images; the first build of the base runs debootstrap.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// From `compose up` until every node is ready and a leader is known.
const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// A container started again, reconnected or restarted until it is ready.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The first acknowledged write after a failure. Two election timeouts are
/// about 1.2 s; a container on a loaded two-core machine needs more.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledged writes waited for in each phase.
const ACKS_PER_PHASE: usize = 150;
/// Waiting for those.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn require_docker() -> bool {
    std::env::var("PROMRAFT_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

fn require_peers() -> bool {
    std::env::var("PROMRAFT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skips (or, under `PROMRAFT_REQUIRE_DOCKER=1`, fails) with `why`.
fn skip(why: &str) {
    if require_docker() {
        panic!("PROMRAFT_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("SKIP deploy_compose: {why} (set PROMRAFT_REQUIRE_DOCKER=1 to make this a failure)");
}

fn docker(args: &[&str], timeout: Duration) -> CommandOutput {
    run_command(Command::new("docker").args(args), timeout)
}

/// Runs docker and panics with its output unless it succeeded.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args, DOCKER_TIMEOUT);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The Compose command: the v2 plugin (`docker compose`) when present,
/// else v1 (`docker-compose`, as Debian bookworm ships it).
fn compose_program() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&["docker", "compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works(&["docker-compose", "version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running deployment. Dropping it takes everything down (containers,
/// network, volumes) and removes the test's image tags, also on a panic,
/// after printing the tail of every container's log.
struct Deployment {
    compose: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
    images: Vec<String>,
    /// Published HTTP port of each node on 127.0.0.1.
    ports: BTreeMap<u64, u16>,
    /// Container id of each node (stable across kill, restart, reconnect).
    containers: BTreeMap<u64, String>,
    with_prometheus: bool,
    prometheus_port: u16,
}

impl Deployment {
    fn compose_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .args(["-p", &self.project, "-f"])
            .arg(repo().join("deploy/compose.yaml"));
        if self.with_prometheus {
            c.args(["--profile", "prometheus"]);
        }
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn compose(&self, args: &[&str], timeout: Duration) -> CommandOutput {
        run_command(&mut self.compose_cmd(args), timeout)
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args, DOCKER_TIMEOUT);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    fn http(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id])
    }

    fn container(&self, id: u64) -> &str {
        &self.containers[&id]
    }

    /// The network compose made: `<project>_promraft` (v1 and v2 alike).
    fn network(&self) -> String {
        format!("{}_promraft", self.project)
    }

    fn running(&self, id: u64) -> bool {
        docker_ok(&["inspect", "-f", "{{.State.Running}}", self.container(id)]).trim() == "true"
    }

    fn wait_ready(&self, id: u64, timeout: Duration) {
        let addr = self.http(id);
        wait_until(
            &format!("node {id} ({addr}) to answer 200 on /-/ready"),
            timeout,
            || match http_request(&addr, "GET", "/-/ready", &[], b"") {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}: {}", r.status, r.text().trim())),
                Err(e) => Err(e.to_string()),
            },
        );
    }

    /// The leader as node `asked` sees it, with every voter it lists.
    fn leader_seen_by(&self, asked: u64, timeout: Duration) -> ClusterView {
        wait_until(&format!("node {asked} to know a leader"), timeout, || {
            let v = cluster_status(&self.http(asked))?;
            match v.leader_id {
                Some(_) if v.voters().len() == 3 => Ok(v),
                _ => Err(format!("{v:?}")),
            }
        })
    }

    /// One HTTP exchange with node `id` from inside its own container, over
    /// bash's /dev/tcp (the image has no curl): the way to reach a node cut
    /// off from every network. `Ok(None)` when the exchange did not finish
    /// within `timeout` (the client is then killed by its own pid).
    fn exec_http(
        &self,
        id: u64,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Option<HttpResponse>, String> {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let mut child = Command::new("docker")
            .args(["exec", "-i", self.container(id), "bash", "-c"])
            .arg("exec 3<>/dev/tcp/127.0.0.1/9090 && cat >&3 && cat <&3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn docker exec: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&req);
            // Dropping stdin closes it: the in-container `cat` ends.
        });
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            (out, err)
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let _ = writer.join();
        let (out, err) = reader.join().expect("exec reader");
        let Some(status) = status else { return Ok(None) };
        if out.is_empty() {
            return Err(format!("docker exec into node {id} ({status}): no answer; {err}"));
        }
        read_response(&mut &out[..])
            .map(Some)
            .map_err(|e| format!("node {id}: bad answer ({e}): {err}"))
    }

    /// `promraft cluster <args> --addr promraft-<id>:9090` run inside node
    /// `id`'s container, as a user would with `compose exec`; the CLI there
    /// reaches the other nodes by service name.
    fn cluster_cli(&self, id: u64, args: &[&str]) -> String {
        let service = format!("promraft-{id}");
        let addr = format!("{service}:9090");
        let mut a = vec!["exec", "-T", service.as_str(), "promraft", "cluster"];
        a.extend_from_slice(args);
        a.extend(["--addr", addr.as_str()]);
        self.compose_ok(&a)
    }

    /// Applied index and digest of every node, once they all agree.
    fn wait_converged(&self, timeout: Duration) -> Digest {
        wait_until("every replica at the same applied index and digest", timeout, || {
            let ds: Vec<(u64, Digest)> = self
                .ports
                .keys()
                .map(|&id| {
                    try_digest(&self.http(id))
                        .map(|d| (id, d))
                        .map_err(|e| format!("node {id}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let first = &ds[0].1;
            if ds
                .iter()
                .all(|(_, d)| d.applied_index == first.applied_index && d.digest == first.digest)
            {
                Ok(first.clone())
            } else {
                Err(format!("{ds:?}"))
            }
        })
    }

    fn print_logs(&self) {
        let out = self.compose(&["logs", "--no-color", "--tail", "40"], DOCKER_TIMEOUT);
        eprintln!("---- compose logs (tail) ----\n{}{}", out.stdout, out.stderr);
        let ps = self.compose(&["ps"], DOCKER_TIMEOUT);
        eprintln!("---- compose ps ----\n{}", ps.stdout);
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // A disconnected container still belongs to the project: down finds
        // it by label. -v removes the named volumes, --remove-orphans any
        // container of the project the file no longer names.
        let mut down = self.compose_cmd(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        let out = run_command(&mut down, DOCKER_TIMEOUT);
        if !out.status.success() {
            eprintln!("compose down failed: {}{}", out.stdout, out.stderr);
        }
        for image in &self.images {
            let _ = docker(&["image", "rm", "-f", image], DOCKER_TIMEOUT);
        }
        // Whatever down missed (it should miss nothing) is reported, not hidden.
        let label = format!("label=com.docker.compose.project={}", self.project);
        for kind in ["ps -a", "network ls", "volume ls"] {
            let mut args: Vec<&str> = kind.split(' ').collect();
            args.extend(["-q", "--filter", &label]);
            let left = docker(&args, DOCKER_TIMEOUT).stdout;
            if !left.trim().is_empty() {
                eprintln!("left behind after down ({kind}): {left}");
            }
        }
    }
}

/// Prefix of this test's compose project names; the pid of the test process
/// follows it.
const PROJECT_PREFIX: &str = "promraft-deploy-test-";

/// Takes down what an earlier run left behind because it was killed before
/// its guard could run (a panic runs the guard; SIGKILL does not): projects
/// of this test whose process is gone.
fn sweep_stale_projects(compose: &[String]) {
    let label = "label=com.docker.compose.project";
    let fmt = "{{.Label \"com.docker.compose.project\"}}";
    let mut projects = std::collections::BTreeSet::new();
    for args in [
        vec!["ps", "-a", "--filter", label, "--format", fmt],
        vec!["network", "ls", "--filter", label, "--format", fmt],
        vec!["volume", "ls", "--filter", label, "--format", fmt],
    ] {
        projects.extend(docker(&args, DOCKER_TIMEOUT).stdout.lines().map(str::to_string));
    }
    for p in projects {
        let Some(rest) = p.strip_prefix(PROJECT_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // its run is still going (or the pid was reused: leave it)
        }
        eprintln!("removing {p}, left behind by an earlier run that was killed");
        let mut c = Command::new(&compose[0]);
        c.args(&compose[1..])
            .args(["-p", &p, "-f"])
            .arg(repo().join("deploy/compose.yaml"))
            .args([
                "--profile",
                "prometheus",
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "1",
            ]);
        let _ = run_command(&mut c, DOCKER_TIMEOUT);
    }
}

/// Runs one of the deploy/docker build scripts.
fn build(script: &str, tag: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("deploy/docker").join(script)).arg(tag);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_command(&mut cmd, BUILD_TIMEOUT);
    if !out.status.success() {
        return Err(format!("{script} {tag} failed: {}{}", out.stdout, out.stderr));
    }
    eprintln!("built {tag} with {script} in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn compose_cluster_survives_kill_partition_and_restarts() {
    let t0 = Instant::now();
    let info = Command::new("docker")
        .args(["info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !info.is_ok_and(|s| s.success()) {
        return skip("`docker info` fails: no Docker engine here");
    }
    let Some(compose) = compose_program() else {
        return skip("neither `docker compose` nor `docker-compose` works");
    };
    let base_present = docker(&["image", "inspect", "promraft-base:bookworm"], DOCKER_TIMEOUT)
        .status
        .success();
    if !base_present && which("debootstrap").is_none() {
        return skip("no promraft-base:bookworm image and no debootstrap to make one (apt-get install debootstrap)");
    }

    sweep_stale_projects(&compose);
    let unique = format!("{}-{}", std::process::id(), now_ms() % 1_000_000_000);
    let project = format!("{PROJECT_PREFIX}{unique}");
    let image = format!("promraft:deploy-test-{unique}");
    let prom_image = format!("promraft-prometheus:deploy-test-{unique}");
    let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let prometheus_port = free_port();

    // The guard exists before anything is made, so a failure at any step
    // still takes everything down.
    let mut d = Deployment {
        compose,
        project,
        env: vec![
            ("PROMRAFT_IMAGE".into(), image.clone()),
            ("PROMETHEUS_IMAGE".into(), prom_image.clone()),
            ("PROMRAFT_PUBLISH_ADDR".into(), "127.0.0.1".into()),
            ("PROMETHEUS_PORT".into(), prometheus_port.to_string()),
        ],
        images: vec![image.clone()],
        ports: ports.clone(),
        containers: BTreeMap::new(),
        with_prometheus: false,
        prometheus_port,
    };
    for (id, port) in &ports {
        d.env.push((format!("PROMRAFT_{id}_PORT"), port.to_string()));
    }

    // The compose file is valid for this Compose (with and without profile).
    d.compose_ok(&["config", "-q"]);

    // 1. The image, the offline way, from the binary under test.
    build("build-image.sh", &image, &[("PROMRAFT_BINARY", PROMRAFT_BIN)]).unwrap_or_else(|e| panic!("{e}"));
    let user = docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", &image]);
    assert_eq!(user.trim(), "10001:10001", "the image runs as the non-root user");
    let health = docker_ok(&["image", "inspect", "-f", "{{json .Config.Healthcheck.Test}}", &image]);
    assert!(health.contains("healthcheck"), "the image has a health check: {health}");
    // The compose file's optional Prometheus: required whenever the peers
    // or Docker are (`.ci/run` sets both), so a failed build fails the
    // test instead of dropping the sub-check.
    let prometheus_required = require_docker() || require_peers();
    if which("prometheus").is_some() {
        d.images.push(prom_image.clone());
        match build("build-prometheus.sh", &prom_image, &[]) {
            Ok(()) => d.with_prometheus = true,
            Err(e) if prometheus_required => {
                panic!("PROMRAFT_REQUIRE_DOCKER=1 or PROMRAFT_REQUIRE_PEERS=1, but the Prometheus image did not build: {e}")
            }
            Err(e) => eprintln!("no Prometheus in this run (the compose file's optional service): {e}"),
        }
    } else if prometheus_required {
        panic!(
            "PROMRAFT_REQUIRE_DOCKER=1 or PROMRAFT_REQUIRE_PEERS=1, but Debian's `prometheus` is not installed \
             (apt-get install prometheus), so the compose file's Prometheus cannot be built"
        );
    } else {
        eprintln!("no Prometheus in this run: Debian's `prometheus` is not installed");
    }
    let built = t0.elapsed();

    // 2. `compose up` and nothing else: the nodes bootstrap themselves.
    d.compose_ok(&["up", "-d", "--no-build"]);
    for id in 1..=3u64 {
        let cid = d.compose_ok(&["ps", "-q", &format!("promraft-{id}")]);
        d.containers.insert(id, cid.trim().to_string());
    }
    let up_started = Instant::now();
    for id in 1..=3 {
        d.wait_ready(id, UP_TIMEOUT);
    }
    let view = d.leader_seen_by(1, UP_TIMEOUT);
    let leader = view.leader_id.expect("a leader");
    // Docker's own health check (promraft healthcheck in the image) agrees.
    wait_until("every container healthy", UP_TIMEOUT, || {
        let states: Vec<String> = (1..=3)
            .map(|id| {
                docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", d.container(id)])
                    .trim()
                    .to_string()
            })
            .collect();
        if states.iter().all(|s| s == "healthy") {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
    eprintln!(
        "cluster up and ready in {:.1}s, leader {leader}",
        up_started.elapsed().as_secs_f64()
    );

    // The writer writes through one node that is never failed on purpose: a
    // follower at the start.
    let via = (1..=3).find(|&id| id != leader).expect("a follower");
    let spec = WriterSpec::small(METRIC, 4, now_ms());
    let load = WriteLoad::start(&spec, vec![vec![(via, d.http(via))]]);
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // 3. docker kill the leader: writes resume through the other two.
    docker_ok(&["kill", d.container(leader)]);
    // `docker kill` returns once the signal is sent; the leader is dead when
    // Docker says the container stopped. Only writes sent after that count.
    wait_until(&format!("node {leader}'s container to stop"), DOCKER_TIMEOUT, || {
        if d.running(leader) {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
    let killed_at = Instant::now();
    let resumed = wait_until(
        "a write acknowledged after the leader was killed",
        RESUME_TIMEOUT,
        || {
            load.first_ack_sent_after(killed_at, None)
                .ok_or_else(|| "none yet".to_string())
        },
    );
    assert!(
        !d.running(leader),
        "the killed container is still down while writes resume"
    );
    eprintln!(
        "leader {leader} killed: writes resumed after {:.2}s",
        resumed.done.duration_since(killed_at).as_secs_f64()
    );
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);
    let after_kill = d.leader_seen_by(via, RESUME_TIMEOUT);
    assert_ne!(after_kill.leader_id, Some(leader), "the killed node cannot lead");
    docker_ok(&["start", d.container(leader)]);
    d.wait_ready(leader, REJOIN_TIMEOUT);

    // 4. Cut a follower (not the node written through) off the network.
    let view = d.leader_seen_by(via, RESUME_TIMEOUT);
    let now_leader = view.leader_id.expect("a leader");
    let isolated = (1..=3)
        .find(|&id| id != via && id != now_leader)
        .expect("a follower other than the writer's node");
    let network = d.network();
    docker_ok(&["network", "disconnect", &network, d.container(isolated)]);
    let cut_at = Instant::now();
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);
    // The isolated node stops being ready once it has no leader...
    wait_until(
        &format!("isolated node {isolated} to stop being ready"),
        RESUME_TIMEOUT,
        || match d.exec_http(isolated, "GET", "/-/ready", &[], b"", Duration::from_secs(20))? {
            Some(r) if r.status == 503 => Ok(()),
            Some(r) => Err(format!("HTTP {}", r.status)),
            None => Err("no answer".into()),
        },
    );
    // ... and refuses a write (it cannot reach a leader to forward it to).
    let refused = write_request(vec![series(
        &[("__name__", REFUSED_METRIC), ("node", &isolated.to_string())],
        &[(now_ms(), 1.0)],
    )]);
    let answer = d
        .exec_http(
            isolated,
            "POST",
            "/api/v1/write",
            REMOTE_WRITE_HEADERS,
            &encode_write(&refused),
            Duration::from_secs(40),
        )
        .unwrap_or_else(|e| panic!("write to the isolated node: {e}"));
    match &answer {
        Some(r) => assert_eq!(r.status, 503, "the isolated node must refuse the write: {}", r.text()),
        None => panic!("the isolated node gave no answer to a write within 40 s (it must refuse at once)"),
    }
    eprintln!(
        "node {isolated} isolated for {:.1}s: not ready, write refused (503)",
        cut_at.elapsed().as_secs_f64()
    );

    // Reconnect under its service name (a reconnect does not restore the
    // alias compose gave it) and let it converge.
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        &format!("promraft-{isolated}"),
        &network,
        d.container(isolated),
    ]);
    let reconnected_at = Instant::now();
    d.wait_ready(isolated, REJOIN_TIMEOUT);
    let target = cluster_status(&d.http(via)).expect("status").commit_index;
    wait_until(
        &format!("node {isolated} to apply index {target}"),
        REJOIN_TIMEOUT,
        || {
            let v = cluster_status(&d.http(isolated))?;
            let me = v.members.iter().find(|m| m.id == isolated).ok_or("itself missing")?;
            if me.applied_index >= target {
                Ok(())
            } else {
                Err(format!("applied {}", me.applied_index))
            }
        },
    );
    eprintln!(
        "node {isolated} reconnected and caught up in {:.1}s",
        reconnected_at.elapsed().as_secs_f64()
    );
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // 5. docker restart the current leader (graceful stop and start).
    let leader = d.leader_seen_by(via, RESUME_TIMEOUT).leader_id.expect("a leader");
    let restarted_at = Instant::now();
    docker_ok(&["restart", "-t", "10", d.container(leader)]);
    wait_until("a write acknowledged after the restart began", RESUME_TIMEOUT, || {
        load.first_ack_sent_after(restarted_at, None)
            .ok_or_else(|| "none yet".to_string())
    });
    d.wait_ready(leader, REJOIN_TIMEOUT);
    eprintln!(
        "node {leader} restarted and ready in {:.1}s",
        restarted_at.elapsed().as_secs_f64()
    );
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // 6. A crash, not a stop: SIGKILL the node's process from the host (the
    // container's main process, by its pid). `restart: on-failure` must
    // bring it back (docker kill and docker stop count as deliberate and
    // would not).
    let crashed = (1..=3).find(|&id| id != via).expect("a node other than the writer's");
    let restarts = |id: u64| -> u64 {
        docker_ok(&["inspect", "-f", "{{.RestartCount}}", d.container(id)])
            .trim()
            .parse()
            .expect("RestartCount")
    };
    let before = restarts(crashed);
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", d.container(crashed)]);
    let pid: i32 = pid.trim().parse().expect("the container's pid");
    assert!(pid > 0, "node {crashed}'s container has a main process");
    // SAFETY: kill(2) on the pid of the process this test's compose started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
    let crashed_at = Instant::now();
    wait_until(
        &format!("Docker to restart node {crashed} after its crash"),
        REJOIN_TIMEOUT,
        || {
            let n = restarts(crashed);
            if n > before {
                Ok(())
            } else {
                Err(format!("RestartCount {n}"))
            }
        },
    );
    d.wait_ready(crashed, REJOIN_TIMEOUT);
    eprintln!(
        "node {crashed} crashed and was restarted by Docker in {:.1}s",
        crashed_at.elapsed().as_secs_f64()
    );
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // 7. Replace a failed node as the README says: the node's machine is
    // gone (container killed, then removed with its volume); it is removed
    // from the cluster through a live node, a new empty node with the same
    // id is started, added as a learner (it catches up from the log or a
    // snapshot) and promoted. Writes go on meanwhile.
    let failed = (1..=3).find(|&id| id != via).expect("a node other than the writer's");
    let replace_started = Instant::now();
    docker_ok(&["kill", d.container(failed)]);
    let service = format!("promraft-{failed}");
    let cli = |d: &Deployment, args: &[&str]| d.cluster_cli(via, args);
    let out = cli(&d, &["remove", "--node-id", &failed.to_string()]);
    assert!(out.contains("removed"), "{out}");
    d.compose_ok(&["rm", "-s", "-f", &service]);
    docker_ok(&["volume", "rm", &format!("{}_{service}", d.project)]);
    d.compose_ok(&["up", "-d", "--no-build", &service]);
    let cid = d.compose_ok(&["ps", "-q", &service]);
    d.containers.insert(failed, cid.trim().to_string());
    let out = cli(
        &d,
        &[
            "add-learner",
            "--node-id",
            &failed.to_string(),
            "--raft-addr",
            &format!("{service}:9190"),
            "--http-addr",
            &format!("{service}:9090"),
        ],
    );
    assert!(out.contains("learner"), "{out}");
    let out = cli(&d, &["promote", "--node-id", &failed.to_string()]);
    assert!(out.contains("voter"), "{out}");
    d.wait_ready(failed, REJOIN_TIMEOUT);
    let view = d.leader_seen_by(failed, RESUME_TIMEOUT);
    assert_eq!(view.voters().len(), 3, "three voters again: {view:?}");
    eprintln!(
        "node {failed} replaced by an empty node in {:.1}s",
        replace_started.elapsed().as_secs_f64()
    );
    load.wait_more_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // 8. Stop writing, let the replicas converge, check every replica.
    let results = load.stop();
    let unexpected: Vec<&String> = results.iter().flat_map(|r| &r.unexpected).collect();
    assert!(unexpected.is_empty(), "answers other than 204 and 503: {unexpected:?}");
    let oracle = merged_oracle(&results);
    let acked = oracle.acked_samples();
    let requests_acked: usize = results.iter().map(|r| r.requests_acked).sum();
    let requests_failed: usize = results.iter().map(|r| r.requests_failed).sum();

    if d.with_prometheus {
        // Prometheus remote-wrote its scrapes of the nodes into the cluster
        // (through a node that was killed, cut off or restarted meanwhile).
        // Exactly the series of deploy/compose/prometheus.yml's targets:
        // the three nodes (the replaced one under its old name) and itself.
        let want: BTreeSet<LabelSet> = (1..=3)
            .map(|id| {
                label_set_of(&[
                    ("__name__", "up"),
                    ("instance", &format!("promraft-{id}:9090")),
                    ("job", "promraft"),
                ])
            })
            .chain([label_set_of(&[
                ("__name__", "up"),
                ("instance", "localhost:9090"),
                ("job", "prometheus"),
            ])])
            .collect();
        wait_until("Prometheus's `up` series in promraft", PHASE_TIMEOUT, || {
            let (v, _) = query_vector(&d.http(via), "up", now_ms(), &[], &[])?;
            let got: BTreeSet<LabelSet> = v.keys().cloned().collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("expected exactly the `up` series {want:?}, got {got:?}"))
            }
        });
        // It keeps writing; stop it so the replicas can settle.
        d.compose_ok(&["stop", "-t", "5", "prometheus"]);
        eprintln!("Prometheus (port {}) remote-wrote into the cluster", d.prometheus_port);
    }

    let digest = d.wait_converged(Duration::from_secs(60));
    for id in 1..=3 {
        let problems = oracle
            .check_replica(&d.http(id), METRIC)
            .unwrap_or_else(|e| panic!("node {id} does not answer queries: {e}"));
        assert!(
            problems.is_empty(),
            "node {id}: {} problems, first: {:?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
        let (refused_found, _) = query_vector(
            &d.http(id),
            &format!("count_over_time({REFUSED_METRIC}[1h])"),
            now_ms(),
            &[],
            &[],
        )
        .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert!(
            refused_found.is_empty(),
            "node {id} stores the write the isolated node refused: {refused_found:?}"
        );
    }
    assert!(
        requests_acked >= 6 * ACKS_PER_PHASE,
        "only {requests_acked} requests acknowledged"
    );
    eprintln!(
        "deploy_compose: {requests_acked} requests acknowledged ({acked} samples), {requests_failed} given up; \
         3 replicas at index {} with digest {}; every acknowledged sample on every replica once; \
         images built in {:.1}s, whole test {:.1}s",
        digest.applied_index,
        digest.digest,
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
