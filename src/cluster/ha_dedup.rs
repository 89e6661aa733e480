//! HA-pair deduplication: of the Prometheus servers that scrape the same
//! targets and remote-write the same series (an HA pair, told apart by
//! their external labels), store one.
//!
//! Runs on the leader only, in front of its batcher, for writes it takes
//! itself and writes followers forward to it. Each series that carries both
//! the cluster label and the replica label belongs to that replica of that
//! cluster. For each cluster one replica is elected and recorded in the
//! replicated state (`raft::ha_replicas`, through the log), so every node
//! and every promraft failover agree on it:
//! - series of the elected replica are stored without the replica label;
//! - series of the others are dropped and the request is answered 202, as
//!   Mimir's HA tracker does: the sender counts them as sent and does not
//!   retry;
//! - once the elected replica has sent nothing for `failover_timeout`, the
//!   next replica to send is elected.
//!
//! Series without either label pass unchanged. The decision itself is the
//! pure [`decide`]; this file's I/O is proposing elections and sightings
//! and waiting for them to be applied. An election is applied before the
//! samples it admits are proposed, so a leader never acknowledges samples
//! under an election that a new leader would not know.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::batcher::CommitError;
use crate::config::HaDedupConfig;
use crate::raft::ha_replicas::ElectedReplica;
use crate::raft::state_machine::SharedHaReplicas;
use crate::raft::{Command, Raft};
use crate::tsdb::{AppendRequest, SeriesSamples};

/// What to do with the series of one replica of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The replica is elected: store its series (without the replica label).
    Accept,
    /// Another replica is elected and was heard from within the failover
    /// timeout: drop the series.
    Drop {
        /// The elected replica.
        elected: String,
    },
    /// No replica is elected, or the elected one is silent past the
    /// failover timeout: elect this one first.
    Elect {
        /// The elected replica seen (`None`: none yet), the condition of
        /// the election (`raft::ha_replicas::HaReplicas::elect`).
        expected: Option<String>,
    },
    /// The cluster is new and `clusters_max` clusters are tracked already.
    TooManyClusters,
}

/// Decides for `replica` of a cluster whose elected replica is `elected`.
/// `recent_ms` is the newest request of the elected replica this leader
/// took itself (ahead of the replicated `seen_ms`, which is recorded
/// through the log only now and then); `tracked` is the number of clusters
/// with an elected replica.
pub fn decide(
    elected: Option<&ElectedReplica>,
    recent_ms: Option<i64>,
    replica: &str,
    now_ms: i64,
    cfg: &HaDedupConfig,
    tracked: usize,
) -> Decision {
    let Some(e) = elected else {
        if tracked >= cfg.clusters_max {
            return Decision::TooManyClusters;
        }
        return Decision::Elect { expected: None };
    };
    if e.replica == replica {
        return Decision::Accept;
    }
    let last_ms = recent_ms.map_or(e.seen_ms, |r| r.max(e.seen_ms));
    if now_ms.saturating_sub(last_ms) > duration_ms(cfg.failover_timeout) {
        return Decision::Elect {
            expected: Some(e.replica.clone()),
        };
    }
    Decision::Drop {
        elected: e.replica.clone(),
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wall clock, ms since the epoch: elections and sightings are compared
/// across nodes (a new leader reads its predecessor's), so not a monotonic
/// clock of one process.
fn wall_clock_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, duration_ms)
}

/// How often the elected replica's newest request is recorded through the
/// log: a quarter of the failover timeout, so that a new leader, which
/// knows only the recorded time, never takes a sending replica for a
/// silent one (it lags by at most this, plus a sender's retry backoff,
/// 5 s at most in Prometheus); at most 15 s, Mimir's update timeout.
fn seen_interval(cfg: &HaDedupConfig) -> Duration {
    (cfg.failover_timeout / 4).min(Duration::from_secs(15))
}

/// The gate's final word on one replica of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Store its series without the replica label.
    Accept,
    /// Drop its series; the named replica is elected instead.
    Drop(String),
    /// Refuse its series: the cluster would be one past `clusters_max`.
    Refuse,
}

/// Where `cluster`'s `replica` is among the decided keys.
fn position(decided: &[((String, String), Verdict)], cluster: &str, replica: &str) -> Option<usize> {
    decided.iter().position(|((c, r), _)| c == cluster && r == replica)
}

/// Rounds of decide-then-elect for one replica before giving up: a
/// conditional election lost to a concurrent one is decided again once.
const ELECTION_ROUNDS_MAX: usize = 3;

/// What the gate made of a request.
#[derive(Debug, Default)]
pub struct Admitted {
    /// What is to be committed: series without HA labels, and the elected
    /// replicas' series without the replica label.
    pub req: AppendRequest,
    /// Samples dropped as copies from replicas that are not elected.
    pub dropped: u64,
    /// Which replica is elected instead, for the 202 answer.
    pub note: Option<String>,
    /// Why series of a cluster past `clusters_max` were refused (a 400).
    pub refused: Option<String>,
}

/// The leader's HA dedup. One per node; it acts only on the writes the
/// node commits as leader.
pub struct HaDedup {
    cfg: HaDedupConfig,
    state: SharedHaReplicas,
    raft: Raft,
    commit_timeout: Duration,
    /// Newest request of each cluster's elected replica taken here:
    /// cluster to (replica, ms).
    recent: parking_lot::Mutex<HashMap<String, (String, i64)>>,
    /// Clusters whose sighting is being recorded through the log.
    seen_in_flight: parking_lot::Mutex<HashSet<String>>,
    /// Samples dropped per cluster on this node (metrics).
    dropped: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl HaDedup {
    /// A gate over the replicated `state` that proposes through `raft`,
    /// waiting at most `commit_timeout` for an entry to be applied.
    pub fn new(cfg: HaDedupConfig, state: SharedHaReplicas, raft: Raft, commit_timeout: Duration) -> HaDedup {
        HaDedup {
            cfg,
            state,
            raft,
            commit_timeout,
            recent: parking_lot::Mutex::default(),
            seen_in_flight: parking_lot::Mutex::default(),
            dropped: parking_lot::Mutex::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HaDedupConfig {
        &self.cfg
    }

    /// The HA cluster and replica a series belongs to, if it has both labels.
    fn key_of<'a>(&self, s: &'a SeriesSamples) -> Option<(&'a str, &'a str)> {
        let cluster = s.labels.get(&self.cfg.cluster_label);
        let replica = s.labels.get(&self.cfg.replica_label);
        (!cluster.is_empty() && !replica.is_empty()).then_some((cluster, replica))
    }

    /// Sorts `req`'s series by what their replica's decision says. Elects
    /// (through the log) where [`decide`] says so; fails only when an
    /// election cannot be committed.
    pub async fn admit(self: &Arc<Self>, req: AppendRequest) -> Result<Admitted, CommitError> {
        // A request comes from one sender, so nearly always one key.
        let mut decided: Vec<((String, String), Verdict)> = Vec::with_capacity(1);
        for s in &req.series {
            if let Some((cluster, replica)) = self.key_of(s) {
                if position(&decided, cluster, replica).is_none() {
                    let d = self.decide_electing(cluster, replica).await?;
                    decided.push(((cluster.to_string(), replica.to_string()), d));
                }
            }
        }
        Ok(self.sort(req, &decided))
    }

    /// Builds the admitted request from the decisions of its replicas.
    fn sort(&self, req: AppendRequest, decided: &[((String, String), Verdict)]) -> Admitted {
        let mut out = Admitted {
            req: AppendRequest {
                series: Vec::with_capacity(req.series.len()),
                metadata: req.metadata,
            },
            ..Admitted::default()
        };
        // Samples dropped per decided key, added to the metrics once.
        let mut dropped = vec![0u64; decided.len()];
        for mut s in req.series {
            // `admit` decided every key of the request.
            let Some(i) = self.key_of(&s).and_then(|(c, r)| position(decided, c, r)) else {
                out.req.series.push(s);
                continue;
            };
            let ((cluster, replica), verdict) = &decided[i];
            match verdict {
                Verdict::Accept => {
                    s.labels.remove(&self.cfg.replica_label);
                    out.req.series.push(s);
                }
                Verdict::Drop(elected) => {
                    dropped[i] += s.samples.len() as u64;
                    out.note.get_or_insert_with(|| {
                        format!(
                            "replica {replica:?} of HA cluster {cluster:?} is not elected ({elected:?} is); \
                             its samples were dropped"
                        )
                    });
                }
                Verdict::Refuse => {
                    out.refused.get_or_insert_with(|| {
                        format!(
                            "too many HA clusters: {}={cluster:?} would be one more than the limit of {} \
                             (ha_dedup.clusters_max); its samples were refused",
                            self.cfg.cluster_label, self.cfg.clusters_max
                        )
                    });
                }
            }
        }
        out.dropped = dropped.iter().sum();
        if out.dropped > 0 {
            let mut per_cluster = self.dropped.lock();
            for (((cluster, _), _), n) in decided.iter().zip(dropped).filter(|(_, n)| *n > 0) {
                *per_cluster.entry(cluster.clone()).or_default() += n;
            }
        }
        out
    }

    /// Decides for `replica` of `cluster`, holding an election first where
    /// one is due; records a sighting of the elected replica.
    async fn decide_electing(self: &Arc<Self>, cluster: &str, replica: &str) -> Result<Verdict, CommitError> {
        for _ in 0..ELECTION_ROUNDS_MAX {
            let now_ms = wall_clock_ms();
            let (decision, seen_ms) = {
                let state = self.state.read();
                let elected = state.get(cluster);
                let recent = self.recent_of(cluster, elected);
                let d = decide(elected, recent, replica, now_ms, &self.cfg, state.len());
                (d, elected.map(|e| e.seen_ms))
            };
            match decision {
                Decision::Elect { expected } => self.elect(cluster, replica, expected, now_ms).await?,
                Decision::Accept => {
                    self.recent
                        .lock()
                        .insert(cluster.to_string(), (replica.to_string(), now_ms));
                    if now_ms.saturating_sub(seen_ms.unwrap_or(now_ms)) >= duration_ms(seen_interval(&self.cfg)) {
                        self.record_seen(cluster, replica, now_ms);
                    }
                    return Ok(Verdict::Accept);
                }
                Decision::Drop { elected } => return Ok(Verdict::Drop(elected)),
                Decision::TooManyClusters => return Ok(Verdict::Refuse),
            }
        }
        Err(CommitError::Unavailable(format!(
            "HA cluster {cluster:?}: the elected replica changed {ELECTION_ROUNDS_MAX} times while deciding; retry"
        )))
    }

    /// This leader's newest request of `cluster`'s elected replica.
    fn recent_of(&self, cluster: &str, elected: Option<&ElectedReplica>) -> Option<i64> {
        let e = elected?;
        let recent = self.recent.lock();
        recent.get(cluster).filter(|(r, _)| *r == e.replica).map(|(_, ms)| *ms)
    }

    /// Commits an election and waits until it is applied here.
    async fn elect(
        &self,
        cluster: &str,
        replica: &str,
        expected: Option<String>,
        at_ms: i64,
    ) -> Result<(), CommitError> {
        let cmd = Command::HaElect {
            cluster: cluster.to_string(),
            replica: replica.to_string(),
            expected,
            at_ms,
        };
        match tokio::time::timeout(self.commit_timeout, self.raft.client_write(cmd)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(CommitError::Unavailable(format!(
                "HA cluster {cluster:?}: electing replica {replica:?}: {e}"
            ))),
            Err(_) => Err(CommitError::Unavailable(format!(
                "HA cluster {cluster:?}: electing replica {replica:?} was not committed within {} ms",
                self.commit_timeout.as_millis()
            ))),
        }
    }

    /// Records a sighting of the elected replica through the log, in the
    /// background (one per cluster at a time; a lost one is made up by the
    /// next request).
    fn record_seen(self: &Arc<Self>, cluster: &str, replica: &str, at_ms: i64) {
        if !self.seen_in_flight.lock().insert(cluster.to_string()) {
            return;
        }
        let me = self.clone();
        let cmd = Command::HaSeen {
            cluster: cluster.to_string(),
            replica: replica.to_string(),
            at_ms,
        };
        let cluster = cluster.to_string();
        tokio::spawn(async move {
            if let Ok(Err(e)) = tokio::time::timeout(me.commit_timeout, me.raft.client_write(cmd)).await {
                tracing::debug!(%cluster, error = %e, "HA sighting not recorded");
            }
            me.seen_in_flight.lock().remove(&cluster);
        });
    }

    /// Samples dropped per cluster on this node so far.
    pub fn dropped_samples(&self) -> BTreeMap<String, u64> {
        self.dropped.lock().clone()
    }
}

/// Writes the HA metrics: the replicated elections (the same on every
/// node) and, where this node runs the gate, the samples it dropped.
pub fn render_metrics(out: &mut String, state: &SharedHaReplicas, gate: Option<&HaDedup>) {
    let state = state.read();
    family(
        out,
        "promraft_ha_elected_replica",
        "gauge",
        "The elected replica of each HA sender cluster (1 for the elected one).",
    );
    for (cluster, e) in state.iter() {
        let (c, r) = (escape(cluster), escape(&e.replica));
        let _ = writeln!(out, "promraft_ha_elected_replica{{cluster=\"{c}\",replica=\"{r}\"}} 1");
    }
    family(
        out,
        "promraft_ha_elections_total",
        "counter",
        "Elections of a replica per HA sender cluster, the first one included.",
    );
    for (cluster, e) in state.iter() {
        let c = escape(cluster);
        let _ = writeln!(out, "promraft_ha_elections_total{{cluster=\"{c}\"}} {}", e.elections);
    }
    family(
        out,
        "promraft_ha_elected_replica_seen_timestamp_seconds",
        "gauge",
        "When the elected replica of each HA sender cluster was last recorded as sending.",
    );
    for (cluster, e) in state.iter() {
        let c = escape(cluster);
        let t = e.seen_ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "promraft_ha_elected_replica_seen_timestamp_seconds{{cluster=\"{c}\"}} {t}"
        );
    }
    let Some(gate) = gate else { return };
    family(
        out,
        "promraft_ha_samples_dropped_total",
        "counter",
        "Samples this node dropped as copies from an HA replica that is not elected.",
    );
    for (cluster, n) in gate.dropped_samples() {
        let c = escape(&cluster);
        let _ = writeln!(out, "promraft_ha_samples_dropped_total{{cluster=\"{c}\"}} {n}");
    }
}

/// Writes the `HELP` and `TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value escaped for the text exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HaDedupConfig {
        HaDedupConfig {
            failover_timeout: Duration::from_secs(30),
            clusters_max: 2,
            ..HaDedupConfig::default()
        }
    }

    fn elected(replica: &str, seen_ms: i64) -> ElectedReplica {
        ElectedReplica {
            replica: replica.into(),
            elected_at_ms: 0,
            seen_ms,
            elections: 1,
        }
    }

    #[test]
    fn the_first_sender_is_elected_and_the_elected_one_accepted() {
        let c = cfg();
        assert_eq!(
            decide(None, None, "r1", 1_000, &c, 0),
            Decision::Elect { expected: None }
        );
        let e = elected("r1", 1_000);
        assert_eq!(decide(Some(&e), None, "r1", 500_000, &c, 1), Decision::Accept);
    }

    #[test]
    fn another_replica_is_dropped_until_the_elected_one_is_silent_past_the_timeout() {
        let c = cfg();
        let e = elected("r1", 100_000);
        let drop = Decision::Drop { elected: "r1".into() };
        assert_eq!(
            decide(Some(&e), None, "r2", 130_000, &c, 1),
            drop,
            "exactly the timeout"
        );
        assert_eq!(
            decide(Some(&e), None, "r2", 130_001, &c, 1),
            Decision::Elect {
                expected: Some("r1".into())
            }
        );
        // The leader's own newer sighting counts, an older one does not.
        assert_eq!(decide(Some(&e), Some(120_000), "r2", 140_000, &c, 1), drop);
        assert_eq!(
            decide(Some(&e), Some(90_000), "r2", 140_000, &c, 1),
            Decision::Elect {
                expected: Some("r1".into())
            }
        );
    }

    #[test]
    fn a_cluster_past_the_limit_is_refused_but_known_ones_are_not() {
        let c = cfg();
        assert_eq!(decide(None, None, "r1", 0, &c, 2), Decision::TooManyClusters);
        let e = elected("r1", 0);
        assert_eq!(decide(Some(&e), None, "r1", 0, &c, 2), Decision::Accept);
    }

    #[test]
    fn sightings_are_recorded_well_within_the_timeout() {
        assert_eq!(seen_interval(&cfg()), Duration::from_millis(7_500));
        let long = HaDedupConfig {
            failover_timeout: Duration::from_secs(600),
            ..cfg()
        };
        assert_eq!(seen_interval(&long), Duration::from_secs(15));
    }

    #[test]
    fn metric_label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
