//! Multi-node harness for the cluster tests: a [`Cluster`] of real
//! `promraft serve` processes on loopback, its status and convergence
//! checks, the `promraft cluster ...` CLI, and a [`WriteLoad`] of writer
//! threads that record what was acknowledged so the tests can check every
//! replica against it ([`Oracle`]).
//!
//! It builds on the single-node harness in `common` ([`TestNode`],
//! [`TestDir`], the HTTP client): every process is a [`TestNode`] and is
//! killed by its own pid when the cluster drops, also when a test panics,
//! and a panicking test prints the tail of every node's log.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::{
    http_request, label_set_of, parse_matrix, parse_vector, run_command, secs, series, with_query, write_request,
    CommandOutput, Digest, HttpResponse, LabelSet, TestDir, TestNode, LOG_TAIL_LINES, POLL_INTERVAL, PROMRAFT_BIN,
    READY_TIMEOUT, REMOTE_WRITE_HEADERS,
};

/// How long the cluster may take to elect its first leader and have every
/// node ready.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long replicas may take to reach the same applied index once writes
/// stop (a restarted node replays its log or installs a snapshot first).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of one `promraft cluster ...` command. `add-learner` waits for
/// the learner to catch up.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------
// Configuration

/// Raft timing of a test cluster. The product defaults, written into the
/// config file explicitly so a test knows the election timeout it measures
/// against.
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    /// `raft.heartbeat_interval_ms`.
    pub heartbeat_ms: u64,
    /// `raft.election_timeout_min_ms`.
    pub election_min_ms: u64,
    /// `raft.election_timeout_max_ms`.
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 30,
            election_min_ms: 100,
            election_max_ms: 150,
        }
    }
}

impl RaftTiming {
    /// The longest election timeout, the unit failover is measured in.
    pub fn election_max(&self) -> Duration {
        Duration::from_millis(self.election_max_ms)
    }
}

/// The YAML config file of a test cluster: the raft section from `raft`,
/// then `extra` (other sections, e.g. `query:` or `storage:`) verbatim.
pub fn config_yaml(raft: RaftTiming, extra: &str) -> String {
    format!(
        "raft:\n  heartbeat_interval_ms: {}\n  election_timeout_min_ms: {}\n  election_timeout_max_ms: {}\n{extra}\n",
        raft.heartbeat_ms, raft.election_min_ms, raft.election_max_ms
    )
}

// ---------------------------------------------------------------------------
// /api/v1/status/cluster

/// One member as `/api/v1/status/cluster` shows it (the documented shape).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Raft address.
    pub raft_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// leader, follower, candidate, learner or unknown.
    pub role: String,
    /// Voter or learner.
    pub voter: bool,
    /// Answered the asking node just now.
    pub reachable: bool,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Entries behind the leader (leader's view only).
    pub replication_lag: Option<u64>,
}

/// `/api/v1/status/cluster` `data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: u64,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// Its term.
    pub term: u64,
    /// The committed index it knows.
    pub commit_index: u64,
    /// Every member.
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// Ids of the voters.
    pub fn voters(&self) -> BTreeSet<u64> {
        self.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
    }

    /// Ids of every member, voters and learners.
    pub fn member_ids(&self) -> BTreeSet<u64> {
        self.members.iter().map(|m| m.id).collect()
    }
}

/// Asks the node at `http_addr` for its view of the cluster.
pub fn cluster_status(http_addr: &str) -> Result<ClusterView, String> {
    let r = http_request(http_addr, "GET", "/api/v1/status/cluster", &[], b"").map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.text().trim()));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("not JSON ({e}): {}", r.text()))?;
    if v["status"] != "success" {
        return Err(format!("status is not success: {v}"));
    }
    serde_json::from_value(v["data"].clone()).map_err(|e| format!("unexpected shape ({e}): {}", v["data"]))
}

/// `/api/v1/status/digest` of the node at `http_addr`, without panicking.
pub fn try_digest(http_addr: &str) -> Result<Digest, String> {
    let r = http_request(http_addr, "GET", "/api/v1/status/digest", &[], b"").map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {}: {}", r.status, r.text().trim()));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("not JSON ({e}): {}", r.text()))?;
    let d = &v["data"];
    let field = |k: &str| d[k].as_u64().ok_or_else(|| format!("{k} missing in {d}"));
    Ok(Digest {
        digest: d["digest"]
            .as_str()
            .ok_or_else(|| format!("digest missing in {d}"))?
            .to_string(),
        series: field("series")?,
        samples: field("samples")?,
        applied_index: field("appliedIndex")?,
    })
}

// ---------------------------------------------------------------------------
// Queries

/// Every raw sample of the series matching `selector` with timestamps in
/// `[from_ms, to_ms]`, read from the node at `http_addr` with the given
/// extra parameters (e.g. `consistency=local`). Errors carry the status and
/// body.
pub fn query_raw(
    http_addr: &str,
    selector: &str,
    from_ms: i64,
    to_ms: i64,
    extra: &[(&str, &str)],
) -> Result<BTreeMap<LabelSet, Vec<(i64, f64)>>, String> {
    let query = format!("{selector}[{}ms]", to_ms - from_ms + 1);
    let time = secs(to_ms);
    let mut params = vec![("query", query.as_str()), ("time", time.as_str())];
    params.extend_from_slice(extra);
    let data = query_data(http_addr, "/api/v1/query", &params, &[])?;
    if data["resultType"] != "matrix" {
        return Err(format!("query {query}: expected a matrix, got {data}"));
    }
    Ok(parse_matrix(&data["result"]))
}

/// An instant vector by label set: `(timestamp ms, value)` per series.
pub type Vector = BTreeMap<LabelSet, (i64, f64)>;

/// The instant vector of `query` at `time_ms` from the node at `http_addr`,
/// with the whole response (for its headers).
pub fn query_vector(
    http_addr: &str,
    query: &str,
    time_ms: i64,
    extra: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<(Vector, HttpResponse), String> {
    let time = secs(time_ms);
    let mut params = vec![("query", query), ("time", time.as_str())];
    params.extend_from_slice(extra);
    let target = with_query("/api/v1/query", &params);
    let r = http_request(http_addr, "GET", &target, headers, b"").map_err(|e| format!("GET {target}: {e}"))?;
    let data = api_data_of(&r, &target)?;
    if data["resultType"] != "vector" {
        return Err(format!("query {query}: expected a vector, got {data}"));
    }
    Ok((parse_vector(&data["result"]), r))
}

/// `data` of a Prometheus API GET, or the status and body as the error.
pub fn query_data(
    http_addr: &str,
    path: &str,
    params: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<Value, String> {
    let target = with_query(path, params);
    let r = http_request(http_addr, "GET", &target, headers, b"").map_err(|e| format!("GET {target}: {e}"))?;
    api_data_of(&r, &target)
}

fn api_data_of(r: &HttpResponse, what: &str) -> Result<Value, String> {
    if r.status != 200 {
        return Err(format!("{what}: HTTP {}: {}", r.status, r.text().trim()));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{what}: not JSON ({e}): {}", r.text()))?;
    if v["status"] != "success" {
        return Err(format!("{what}: status is not success: {v}"));
    }
    Ok(v["data"].clone())
}

// ---------------------------------------------------------------------------
// The cluster

/// Addresses of one planned node.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    /// Node id.
    pub id: u64,
    /// `--http-addr`.
    pub http_addr: String,
    /// `--raft-addr`.
    pub raft_addr: String,
}

/// A cluster of `promraft serve` processes sharing one config file.
///
/// Field order matters: the nodes drop (and, in a failing test, print their
/// log tails) before the directory, which is kept when the test fails.
pub struct Cluster {
    /// The nodes by id (removed nodes too, until [`Cluster::forget`]).
    pub nodes: BTreeMap<u64, TestNode>,
    /// The config file every node gets with `--config`.
    pub config_path: PathBuf,
    /// Raft timing written into the config file.
    pub raft: RaftTiming,
    /// The `--initial-cluster` value of the original members.
    pub initial_cluster: String,
    /// Flags every node gets after `--config` and `--initial-cluster`
    /// (e.g. `--raft-tls-*`).
    pub node_args: Vec<String>,
    dir: TestDir,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) with `--initial-cluster` listing all of
    /// them and the config file built from `raft` and `extra_yaml`, then
    /// waits until every node is ready (knows the leader, applied what it
    /// knows committed).
    pub fn start(n: u64, raft: RaftTiming, extra_yaml: &str) -> Cluster {
        Self::start_in(TestDir::new(), n, raft, extra_yaml, Vec::new())
    }

    /// [`Cluster::start`] in a given directory, with `node_args` given to
    /// every node (kept for nodes spawned later).
    pub fn start_in(dir: TestDir, n: u64, raft: RaftTiming, extra_yaml: &str, node_args: Vec<String>) -> Cluster {
        let config_path = dir.path().join("promraft.yaml");
        std::fs::write(&config_path, config_yaml(raft, extra_yaml)).expect("write the cluster config file");
        let addrs: Vec<NodeAddrs> = (1..=n).map(plan_node).collect();
        let initial_cluster = initial_cluster_of(&addrs);
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            config_path,
            raft,
            initial_cluster: initial_cluster.clone(),
            node_args,
            dir,
        };
        for a in &addrs {
            cluster.spawn_node(a, &initial_cluster);
        }
        cluster.wait_all_ready();
        cluster
    }

    /// Spawns one node of this cluster (sharing its config file) with the
    /// given `--initial-cluster`, without waiting for it.
    pub fn spawn_node(&mut self, a: &NodeAddrs, initial_cluster: &str) -> &mut TestNode {
        let data_dir = self.dir.path().join(format!("node{}", a.id));
        let config = self.config_path.display().to_string();
        let mut args = vec!["--config", config.as_str(), "--initial-cluster", initial_cluster];
        args.extend(self.node_args.iter().map(String::as_str));
        let node = TestNode::start_with(a.id, &data_dir, a.http_addr.clone(), a.raft_addr.clone(), &args);
        assert!(self.nodes.insert(a.id, node).is_none(), "node {} started twice", a.id);
        self.nodes.get_mut(&a.id).expect("just inserted")
    }

    /// The test directory (data directories and logs of every node).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Node `id`, mutable (kill, restart, stop).
    pub fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Ids of every node started.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes whose process runs.
    pub fn running_ids(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, n)| n.is_running().then_some(*id))
            .collect()
    }

    /// `(id, http addr)` of the given nodes.
    pub fn targets(&self, ids: &[u64]) -> Vec<(u64, String)> {
        ids.iter().map(|&id| (id, self.node(id).http_addr.clone())).collect()
    }

    /// Drops node `id` from the cluster object (its process is killed if it
    /// still runs). For nodes removed from the membership.
    pub fn forget(&mut self, id: u64) {
        self.nodes.remove(&id);
    }

    /// Waits until every running node is ready.
    pub fn wait_all_ready(&mut self) {
        let ids = self.running_ids();
        for id in ids {
            self.node_mut(id).wait_ready(CLUSTER_READY_TIMEOUT.max(READY_TIMEOUT));
        }
    }

    /// Waits until every node of `among` names the same leader, that leader
    /// is one of `among` and says it leads; returns the leader's view.
    pub fn wait_leader(&self, among: &[u64], timeout: Duration) -> ClusterView {
        super::wait_until(
            &format!("nodes {among:?} to agree on a leader among them"),
            timeout,
            || {
                let mut views = Vec::new();
                for &id in among {
                    let v = cluster_status(&self.node(id).http_addr).map_err(|e| format!("node {id}: {e}"))?;
                    views.push(v);
                }
                let leaders: BTreeSet<Option<u64>> = views.iter().map(|v| v.leader_id).collect();
                let summary = views
                    .iter()
                    .map(|v| format!("node {} sees leader {:?} in term {}", v.node_id, v.leader_id, v.term))
                    .collect::<Vec<_>>()
                    .join("; ");
                match leaders.into_iter().collect::<Vec<_>>()[..] {
                    [Some(l)] if among.contains(&l) => {
                        let v = views
                            .into_iter()
                            .find(|v| v.node_id == l)
                            .expect("leader is among the asked");
                        let me = v.members.iter().find(|m| m.id == l).map(|m| m.role.clone());
                        if me.as_deref() == Some("leader") {
                            Ok(v)
                        } else {
                            Err(format!("node {l} is named leader but its role is {me:?}; {summary}"))
                        }
                    }
                    _ => Err(summary),
                }
            },
        )
    }

    /// Waits until the nodes of `among` report the same applied index and
    /// returns their (equal) digest. Two replicas at the same applied index
    /// with different digests have diverged: that fails at once.
    pub fn wait_converged(&self, among: &[u64], timeout: Duration) -> Digest {
        let deadline = Instant::now() + timeout;
        loop {
            let digests: Result<Vec<(u64, Digest)>, String> = among
                .iter()
                .map(|&id| {
                    try_digest(&self.node(id).http_addr)
                        .map(|d| (id, d))
                        .map_err(|e| format!("node {id}: {e}"))
                })
                .collect();
            let last = match digests {
                Ok(ds) => {
                    let indexes: BTreeSet<u64> = ds.iter().map(|(_, d)| d.applied_index).collect();
                    if indexes.len() == 1 {
                        let first = &ds[0].1;
                        let diverged: Vec<String> = ds
                            .iter()
                            .filter(|(_, d)| d != first)
                            .map(|(id, d)| format!("node {id}: {d:?}"))
                            .collect();
                        assert!(
                            diverged.is_empty(),
                            "replicas at the same applied index {} differ: node {} has {first:?}, but {}",
                            first.applied_index,
                            ds[0].0,
                            diverged.join(", ")
                        );
                        return first.clone();
                    }
                    ds.iter()
                        .map(|(id, d)| format!("node {id} at index {}", d.applied_index))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("nodes {among:?} did not reach the same applied index within {timeout:?}; last: {last}");
            }
            std::thread::sleep(POLL_INTERVAL * 4);
        }
    }

    /// Runs `promraft cluster <args>` to completion.
    pub fn cli(&self, args: &[&str]) -> CommandOutput {
        let mut cmd = Command::new(PROMRAFT_BIN);
        cmd.arg("cluster").args(args).env("NO_COLOR", "1");
        run_command(&mut cmd, CLI_TIMEOUT)
    }

    /// Runs `promraft cluster <args>` and asserts it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`promraft cluster {}` failed ({}): stdout {:?}, stderr {:?}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// One line per node: id, addresses, whether it runs, the command that
    /// starts it by hand. For failure messages.
    pub fn describe(&mut self) -> String {
        let mut out = format!(
            "cluster in {} (config {}):\n",
            self.dir().display(),
            self.config_path.display()
        );
        for (id, n) in self.nodes.iter_mut() {
            let running = n.is_running();
            out.push_str(&format!(
                "  node {id}: http {} raft {} {}; {}\n",
                n.http_addr,
                n.raft_addr,
                if running { "running" } else { "not running" },
                n.command_line()
            ));
        }
        out
    }

    /// The tail of every node's log, for a diagnosis printed without panicking.
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|(id, n)| format!("----- node {id} log tail:\n{}\n", n.log_tail(LOG_TAIL_LINES)))
            .collect()
    }
}

/// Fresh loopback addresses for node `id`.
pub fn plan_node(id: u64) -> NodeAddrs {
    NodeAddrs {
        id,
        http_addr: super::free_addr(),
        raft_addr: super::free_addr(),
    }
}

/// `1=raft,2=raft,...`.
pub fn initial_cluster_of(addrs: &[NodeAddrs]) -> String {
    addrs
        .iter()
        .map(|a| format!("{}={}", a.id, a.raft_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// A metric in `/metrics` of the node at `http_addr`.
pub fn node_metric(http_addr: &str, name: &str) -> Result<f64, String> {
    let r = http_request(http_addr, "GET", "/metrics", &[], b"").map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("/metrics: HTTP {}", r.status));
    }
    super::metric_sum(&r.text(), name).ok_or_else(|| format!("{name} missing from /metrics"))
}

// ---------------------------------------------------------------------------
// Writers and the oracle

/// What a test knows about what it sent: acknowledged samples must be on
/// every replica with their exact values, samples of unacknowledged
/// requests may or may not be, nothing else may be, and no timestamp twice.
#[derive(Debug, Default, Clone)]
pub struct Oracle {
    /// Samples of requests answered 204.
    pub acked: BTreeMap<LabelSet, BTreeMap<i64, f64>>,
    /// Samples of every request sent.
    pub sent: BTreeMap<LabelSet, BTreeMap<i64, f64>>,
}

impl Oracle {
    /// Records one request's samples.
    pub fn record(&mut self, samples: &[(LabelSet, i64, f64)], acked: bool) {
        for (ls, t, v) in samples {
            self.sent.entry(ls.clone()).or_default().insert(*t, *v);
            if acked {
                self.acked.entry(ls.clone()).or_default().insert(*t, *v);
            }
        }
    }

    /// Adds everything `other` knows.
    pub fn merge(&mut self, other: &Oracle) {
        for (ls, m) in &other.acked {
            self.acked.entry(ls.clone()).or_default().extend(m);
        }
        for (ls, m) in &other.sent {
            self.sent.entry(ls.clone()).or_default().extend(m);
        }
    }

    /// Acknowledged samples in all.
    pub fn acked_samples(&self) -> usize {
        self.acked.values().map(BTreeMap::len).sum()
    }

    /// Smallest and largest timestamp sent.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let min = self.sent.values().filter_map(|m| m.keys().next()).min()?;
        let max = self.sent.values().filter_map(|m| m.keys().next_back()).max()?;
        Some((*min, *max))
    }

    /// Compares what a replica stores for the series this oracle knows with
    /// what was sent; one line per discrepancy.
    pub fn check(&self, stored: &BTreeMap<LabelSet, Vec<(i64, f64)>>) -> Vec<String> {
        let mut problems = Vec::new();
        for (ls, points) in stored {
            let Some(sent) = self.sent.get(ls) else {
                problems.push(format!(
                    "series never written is stored: {ls:?} ({} samples)",
                    points.len()
                ));
                continue;
            };
            for w in points.windows(2) {
                if w[1].0 <= w[0].0 {
                    problems.push(format!("{ls:?}: timestamp {} stored twice or out of order", w[1].0));
                }
            }
            for (t, v) in points {
                match sent.get(t) {
                    None => problems.push(format!("{ls:?} @{t} = {v}: stored but never sent")),
                    Some(s) if s.to_bits() != v.to_bits() => {
                        problems.push(format!("{ls:?} @{t}: sent {s}, stored {v}"))
                    }
                    Some(_) => {}
                }
            }
        }
        for (ls, want) in &self.acked {
            let got: BTreeMap<i64, f64> = stored.get(ls).map(|v| v.iter().copied().collect()).unwrap_or_default();
            for (t, v) in want {
                match got.get(t) {
                    None => problems.push(format!("acknowledged sample missing: {ls:?} @{t} = {v}")),
                    Some(g) if g.to_bits() != v.to_bits() => problems.push(format!(
                        "acknowledged sample changed: {ls:?} @{t}: sent {v}, stored {g}"
                    )),
                    Some(_) => {}
                }
            }
        }
        problems
    }

    /// Reads every series of `metric` from the replica at `http_addr` with
    /// `consistency=local` and checks it, twice: the raw samples (exact
    /// values, no duplicate, nothing unsent, every acknowledged sample) and
    /// `count_over_time` per series against the number of distinct stored
    /// timestamps. Returns the problems found.
    pub fn check_replica(&self, http_addr: &str, metric: &str) -> Result<Vec<String>, String> {
        let Some((from, to)) = self.time_range() else {
            return Ok(Vec::new());
        };
        let selector = format!("{{__name__=\"{metric}\"}}");
        let local = [("consistency", "local")];
        let stored = query_raw(http_addr, &selector, from, to, &local)?;
        let mut problems = self.check(&stored);
        let count_q = format!("count_over_time({selector}[{}ms])", to - from + 1);
        let (counts, _) = query_vector(http_addr, &count_q, to, &local, &[])?;
        for (ls, points) in &stored {
            let distinct: BTreeSet<i64> = points.iter().map(|p| p.0).collect();
            let mut key = ls.clone();
            key.remove("__name__");
            match counts.get(&key) {
                Some((_, c)) if *c as usize == distinct.len() && distinct.len() == points.len() => {}
                other => problems.push(format!(
                    "{ls:?}: count_over_time says {other:?}, raw query returned {} samples at {} distinct timestamps",
                    points.len(),
                    distinct.len()
                )),
            }
        }
        Ok(problems)
    }

    /// Asserts that the replica at `http_addr` (`who`, for the message)
    /// holds exactly what was acknowledged ([`Oracle::check_replica`]);
    /// `context` ends the failure message (a repro line, a cluster view).
    pub fn assert_replica(&self, who: &str, http_addr: &str, metric: &str, context: &str) {
        let problems = self
            .check_replica(http_addr, metric)
            .unwrap_or_else(|e| panic!("reading {who}: {e}"));
        assert!(
            problems.is_empty(),
            "{who} does not hold exactly what was acknowledged ({} problems), first ones:\n{}\n{context}",
            problems.len(),
            problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
        );
    }
}

/// One write attempt, as the writer saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Writer number.
    pub writer: usize,
    /// Node id written to.
    pub target: u64,
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer (or the error) came.
    pub done: Instant,
    /// HTTP status, `None` when the exchange failed (connection refused...).
    pub status: Option<u16>,
}

impl Attempt {
    /// Answered 204.
    pub fn acked(&self) -> bool {
        self.status == Some(204)
    }
}

/// How a writer behaves.
#[derive(Debug, Clone)]
pub struct WriterSpec {
    /// Metric name of every series it writes.
    pub metric: String,
    /// Series per request (`s="0"`.. under label `writer="w<n>"`).
    pub series: usize,
    /// Samples per series per request.
    pub samples: usize,
    /// Timestamp of the first sample; later ones follow 1 ms apart.
    pub base_ms: i64,
    /// Attempts per request before moving on to the next one. A retry
    /// resends the same samples, as a remote-write sender does.
    pub attempts: usize,
    /// Pause after a failed attempt.
    pub backoff: Duration,
}

impl WriterSpec {
    /// One sample per series, `series` series, three attempts, 10 ms backoff.
    pub fn small(metric: &str, series: usize, base_ms: i64) -> WriterSpec {
        WriterSpec {
            metric: metric.to_string(),
            series,
            samples: 1,
            base_ms,
            attempts: 3,
            backoff: Duration::from_millis(10),
        }
    }
}

/// What one writer did.
#[derive(Debug, Clone, Default)]
pub struct WriterResult {
    /// Writer number.
    pub writer: usize,
    /// What it sent and what was acknowledged.
    pub oracle: Oracle,
    /// Requests acknowledged.
    pub requests_acked: usize,
    /// Requests given up on after every attempt failed.
    pub requests_failed: usize,
    /// Answers that are neither 204 nor 503 (bugs): `node: status body`.
    pub unexpected: Vec<String>,
}

/// Writer threads writing continuously until stopped; each writes its own
/// series at increasing timestamps to its list of nodes (rotating on every
/// attempt), and records every attempt. Dropping the load stops and joins
/// the threads.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    handles: Vec<JoinHandle<WriterResult>>,
}

impl WriteLoad {
    /// Starts one writer per entry of `targets` (the nodes that writer
    /// sends to, as `(id, http addr)`), all following `spec`.
    pub fn start(spec: &WriterSpec, targets: Vec<Vec<(u64, String)>>) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let handles = targets
            .into_iter()
            .enumerate()
            .map(|(w, t)| {
                let (spec, stop, attempts) = (spec.clone(), stop.clone(), attempts.clone());
                std::thread::Builder::new()
                    .name(format!("writer-{w}"))
                    .spawn(move || run_writer(w, &spec, &t, &stop, &attempts))
                    .expect("spawn a writer thread")
            })
            .collect();
        WriteLoad {
            stop,
            attempts,
            handles,
        }
    }

    /// Every attempt so far, in completion order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("attempts lock").clone()
    }

    /// The first acknowledged attempt sent at or after `t` to a node other
    /// than `excluded`.
    pub fn first_ack_sent_after(&self, t: Instant, excluded: Option<u64>) -> Option<Attempt> {
        self.attempts
            .lock()
            .expect("attempts lock")
            .iter()
            .filter(|a| a.acked() && a.sent >= t && Some(a.target) != excluded)
            .min_by_key(|a| a.done)
            .cloned()
    }

    /// Acknowledged attempts so far.
    pub fn acked(&self) -> usize {
        self.attempts
            .lock()
            .expect("attempts lock")
            .iter()
            .filter(|a| a.acked())
            .count()
    }

    /// Waits until `n` more attempts than now were acknowledged, at most
    /// `timeout`.
    pub fn wait_more_acks(&self, n: usize, timeout: Duration) {
        let start = self.acked();
        super::wait_until(&format!("{n} more acknowledged writes"), timeout, || {
            let now = self.acked();
            if now >= start + n {
                Ok(())
            } else {
                Err(format!("{} acknowledged since", now - start))
            }
        });
    }

    /// Stops the writers and returns what each did.
    pub fn stop(mut self) -> Vec<WriterResult> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.handles)
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in std::mem::take(&mut self.handles) {
            let _ = h.join();
        }
    }
}

/// The label set of series `s` of writer `w`.
pub fn writer_series(metric: &str, w: usize, s: usize) -> LabelSet {
    label_set_of(&[
        ("__name__", metric),
        ("writer", &format!("w{w}")),
        ("s", &s.to_string()),
    ])
}

/// The value writer `w` sends for series `s` at request `seq`, sample `k`:
/// an integer, exact through JSON, distinct per sample.
pub fn writer_value(seq: u64, s: usize, k: usize) -> f64 {
    (seq * 100_000 + (s as u64) * 100 + k as u64) as f64
}

/// One request of a writer: its samples (for the oracle) and the body.
pub fn writer_request(spec: &WriterSpec, w: usize, seq: u64) -> (Vec<(LabelSet, i64, f64)>, Vec<u8>) {
    let mut samples = Vec::with_capacity(spec.series * spec.samples);
    let mut ts = Vec::with_capacity(spec.series);
    for s in 0..spec.series {
        let ls = writer_series(&spec.metric, w, s);
        let points: Vec<(i64, f64)> = (0..spec.samples)
            .map(|k| {
                (
                    spec.base_ms + (seq * spec.samples as u64 + k as u64) as i64,
                    writer_value(seq, s, k),
                )
            })
            .collect();
        for &(t, v) in &points {
            samples.push((ls.clone(), t, v));
        }
        let pairs: Vec<(&str, &str)> = ls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ts.push(series(&pairs, &points));
    }
    (samples, super::encode_write(&write_request(ts)))
}

fn run_writer(
    w: usize,
    spec: &WriterSpec,
    targets: &[(u64, String)],
    stop: &AtomicBool,
    attempts: &Mutex<Vec<Attempt>>,
) -> WriterResult {
    let mut res = WriterResult {
        writer: w,
        ..Default::default()
    };
    let mut rr = w;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let (samples, body) = writer_request(spec, w, seq);
        seq += 1;
        let mut acked = false;
        for attempt in 0..spec.attempts.max(1) {
            if attempt > 0 && stop.load(Ordering::SeqCst) {
                break;
            }
            let (id, addr) = &targets[rr % targets.len()];
            rr += 1;
            let sent = Instant::now();
            let r = http_request(addr, "POST", "/api/v1/write", REMOTE_WRITE_HEADERS, &body);
            let done = Instant::now();
            let status = r.as_ref().ok().map(|r| r.status);
            attempts.lock().expect("attempts lock").push(Attempt {
                writer: w,
                target: *id,
                sent,
                done,
                status,
            });
            match r {
                Ok(r) if r.status == 204 => {
                    acked = true;
                    break;
                }
                Ok(r) if r.status == 503 => {}
                Ok(r) => {
                    res.unexpected
                        .push(format!("node {id}: HTTP {}: {}", r.status, r.text().trim()));
                    break;
                }
                Err(_) => {}
            }
            std::thread::sleep(spec.backoff);
        }
        res.oracle.record(&samples, acked);
        if acked {
            res.requests_acked += 1;
        } else {
            res.requests_failed += 1;
        }
    }
    res
}

/// Merges the oracles of several writers.
pub fn merged_oracle(results: &[WriterResult]) -> Oracle {
    let mut o = Oracle::default();
    for r in results {
        o.merge(&r.oracle);
    }
    o
}

/// `p`-th percentile (0..=100) of `xs` by nearest rank; `None` if empty.
pub fn percentile(xs: &[Duration], p: f64) -> Option<Duration> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}
