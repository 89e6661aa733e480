//! A running node: storage, Raft, the write batcher and background duties,
//! wired together from one [`Config`].
//!
//! Start-up order matters: the TSDB loads its checkpoint before openraft
//! starts, so openraft's view of what is applied matches the store; the
//! log after the checkpoint is then replayed by openraft itself.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::backup::source::BackupSource;
use crate::cluster::batcher::Batcher;
use crate::cluster::bootstrap::{bootstrap, Bootstrap};
use crate::cluster::ha_dedup::HaDedup;
use crate::cluster::handover::{hand_over, write_elsewhere, HandoverGate, HandoverOutcome};
use crate::cluster::routing::{LeaderLost, Router};
use crate::config::Config;
use crate::kv::{Kv, SledKv, SledOptions};
use crate::metrics::Metrics;
use crate::notifier::Notifier;
use crate::promcfg::PromConfigState;
use crate::raft::log_store::{LogStats, LogStore};
use crate::raft::state_machine::{Applied, SharedHaReplicas, StateMachine};
use crate::raft::transport::client::GrpcNetwork;
use crate::raft::transport::connector::{Connector, TcpConnector};
use crate::raft::transport::peer::PeerClients;
use crate::raft::transport::proto::raft_server::RaftServer;
use crate::raft::transport::server::{
    raft_service, serve, ForwardedWriteError, ForwardedWrites, LeaderContact, RaftNodeInfo, RaftService,
};
use crate::raft::transport::tls::{serve_tls, RaftTls, TlsConnector, TlsFiles};
use crate::raft::{Command, NodeInfo, Raft};
use crate::rules::manager::{Evaluator, RuleManager};
use crate::rules::querier::DbQuerier;
use crate::rules::settings::{alertmanager_urls, notifier_options, rules_settings};
use crate::threads::Placement;
use crate::tsdb::{Db, HeadOptions};

/// sled cache of the Raft log: only the tail that followers and apply
/// still read is hot.
const LOG_CACHE_BYTES: u64 = 16 << 20;

/// How long a stopping node keeps answering HTTP after its handover while
/// `/-/ready` says 503, so that load balancers checking readiness stop
/// sending to it before its listener closes (one check a second or more
/// often). Kubernetes takes a terminating pod out of its services by
/// itself; the StatefulSet's preStop pause covers that propagation.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// Bound on [`Node::shutdown`] after the HTTP server stopped (the checkpoint
/// alone may take up to [`CHECKPOINT_WAIT`]).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`Node::shutdown`] waits for its final checkpoint.
pub const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

/// The longest a node takes to stop after SIGTERM: the handover, the
/// drain, the longest write still in progress (`write.commit_timeout_ms`),
/// then checkpoint and Raft shutdown. The stop timeouts in `deploy/` are
/// sized from it (`tests/deploy_manifests.rs` checks them).
pub fn stop_time_max(config: &Config) -> Duration {
    crate::cluster::handover::HANDOVER_TIMEOUT
        + SHUTDOWN_DRAIN
        + Duration::from_millis(config.write.commit_timeout_ms)
        + SHUTDOWN_TIMEOUT
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be opened (in use by another process, unreadable...).
    #[error("data directory {dir}: {reason}")]
    DataDir {
        /// The directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// Raft failed to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
    /// A rule file was refused.
    #[error("rules: {0}")]
    Rules(#[from] crate::rules::file::RuleFileError),
    /// The Prometheus configuration file was refused.
    #[error(transparent)]
    PromConfig(#[from] crate::promcfg::PromConfigError),
}

/// Everything a node runs.
pub struct Node {
    /// Configuration in force.
    pub config: Config,
    /// The Raft handle.
    pub raft: Raft,
    /// The local TSDB replica.
    pub db: Arc<Db>,
    /// Group-commit batcher for writes.
    pub batcher: Batcher,
    /// The node's own metrics.
    pub metrics: Arc<Metrics>,
    /// The elected replica of each HA sender cluster, as applied here.
    pub ha_replicas: SharedHaReplicas,
    /// Log disk counters.
    pub log_stats: Arc<LogStats>,
    /// Applied index, updated by the state machine.
    pub applied: watch::Receiver<Applied>,
    /// When the node started.
    pub started: Instant,
    /// The PromQL engine.
    pub engine: crate::promql::Engine,
    /// This node's addresses.
    pub me: NodeInfo,
    /// Clients to peers' promraft RPCs (forwarding, read index, info).
    pub peers: Arc<PeerClients>,
    /// Where writes and reads go (the leader, the consistency barrier):
    /// the narrow handle `cluster::routing` works on.
    pub router: Router,
    /// When this node last lost sight of a leader (`None` while it knows one).
    leader_lost: LeaderLost,
    /// Closed once the node starts stopping (`cluster::handover`).
    handover: HandoverGate,
    /// What the handover did, once it ran (it runs once per process).
    handover_outcome: tokio::sync::OnceCell<HandoverOutcome>,
    /// Stops the Raft RPC server.
    stop_rpc: tokio::sync::watch::Sender<bool>,
    /// Query slots (`query.concurrency_max`).
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// Recording and alerting rules (evaluated while this node leads).
    pub rules: Arc<RuleManager>,
    /// Sends alerts to Alertmanager.
    pub notifier: Arc<Notifier>,
    /// The Prometheus configuration file in force (`--prometheus-config`).
    pub promcfg: Arc<PromConfigState>,
    /// Targets and their last scrapes (`scrape`).
    pub scrape: Arc<crate::scrape::status::ScrapeStatus>,
    log: LogStore,
}

/// Serves the Raft gRPC service until the given future completes.
pub type ServeRpc = Box<
    dyn FnOnce(
            RaftServer<RaftService>,
            BoxFuture<'static, ()>,
        ) -> BoxFuture<'static, Result<(), tonic::transport::Error>>
        + Send,
>;

/// What a node runs on: its two stores and its network. [`Node::start`]
/// opens sled and TCP; the simulator fills it with its own and calls
/// [`Node::start_with`], so both run the same node code.
pub struct NodeIo {
    /// The TSDB's store.
    pub tsdb_kv: Arc<dyn Kv>,
    /// The Raft log's store.
    pub log_kv: Arc<dyn Kv>,
    /// Opens connections to peers.
    pub connector: Arc<dyn Connector>,
    /// Runs the Raft RPC server on the node's listener.
    pub serve: ServeRpc,
    /// Where Raft's tasks and the CPU-heavy work run (`crate::threads`).
    pub placement: Placement,
}

impl Node {
    /// Opens storage, starts Raft and, on a node's first start without
    /// cluster flags, initializes a one-member cluster.
    /// Raft runs where `placement` says (`promraft serve`: on a runtime of
    /// its own, see `crate::threads`).
    pub async fn start(config: Config, placement: Placement) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let dir_err = |e: &dyn std::fmt::Display| StartError::DataDir {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| dir_err(&e))?;
        // The log and the TSDB live in separate sled databases: the log's
        // churn (append, purge) then never inflates the TSDB's files, and
        // their fsyncs do not wait on each other.
        let sled_opts = |cache_bytes| SledOptions {
            cache_bytes,
            high_throughput: true,
        };
        let tsdb_sled =
            SledKv::open(&dir.join("tsdb"), sled_opts(config.storage.cache_bytes)).map_err(|e| dir_err(&e))?;
        let log_sled = SledKv::open(&dir.join("log"), sled_opts(LOG_CACHE_BYTES)).map_err(|e| dir_err(&e))?;
        // The listener belongs to the runtime that serves it: Raft's.
        let raft_addr = config.raft_addr.clone();
        let rpc_listener = placement
            .on_raft(async move { tokio::net::TcpListener::bind(raft_addr).await })
            .await
            .map_err(|e| StartError::Raft(format!("cannot listen on raft_addr {}: {e}", config.raft_addr)))?;
        // Mutual TLS on the Raft port when configured: the files are read
        // and checked now, so a bad one stops the start with its path.
        let (connector, serve): (Arc<dyn Connector>, ServeRpc) = match config.raft.tls.files() {
            Some((cert_file, key_file, ca_file)) => {
                let files = TlsFiles {
                    cert_file,
                    key_file,
                    ca_file,
                };
                let tls = RaftTls::load(files).map_err(|e| StartError::Raft(e.to_string()))?;
                (
                    Arc::new(TlsConnector::new(tls.clone())),
                    Box::new(move |svc, stop| Box::pin(async move { serve_tls(rpc_listener, svc, stop, tls).await })),
                )
            }
            None => (
                Arc::new(TcpConnector),
                Box::new(move |svc, stop| Box::pin(async move { serve(rpc_listener, svc, stop).await })),
            ),
        };
        let io = NodeIo {
            tsdb_kv: Arc::new(tsdb_sled),
            log_kv: Arc::new(log_sled),
            connector,
            serve,
            placement,
        };
        Self::start_with(config, io).await
    }

    /// Starts a node on the given stores and network (see [`NodeIo`]).
    pub async fn start_with(config: Config, io: NodeIo) -> Result<Arc<Node>, StartError> {
        config.validate()?;
        // A Prometheus configuration that cannot be honoured stops the
        // start before anything is opened.
        let promcfg = PromConfigState::start(config.prometheus_config.clone())?;
        let dir = config.data_dir.clone();
        let dir_err = |e: &dyn std::fmt::Display| StartError::DataDir {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| dir_err(&e))?;
        let db = open_tsdb(&config, io.tsdb_kv).map_err(|e| dir_err(&e))?;
        let log = LogStore::open_kv(io.log_kv).map_err(|e| dir_err(&e))?;
        let clean_shutdown = log.take_clean_shutdown().map_err(|e| dir_err(&e))?;
        let (applied_tx, applied_rx) = watch::channel(Applied::default());
        let decoded = Arc::new(crate::raft::command::DecodedCache::default());
        let sm = StateMachine::new(db.clone(), Arc::new(applied_tx), decoded.clone(), io.placement.clone())
            .map_err(|e| dir_err(&e))?;
        let ha_replicas = sm.ha_replicas();

        let rc = raft_config(&config, clean_shutdown)?;
        let network = GrpcNetwork::with_connector(config.node_id, db.clone(), &dir, io.connector.clone())
            .map_err(|e| dir_err(&e))?;
        // openraft spawns its core, replication and state machine tasks on
        // the runtime that creates it.
        let raft = io
            .placement
            .on_raft(Raft::new(config.node_id, Arc::new(rc), network, log.clone(), sm))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let me = node_info(&config);
        let initialized = initialize_alone(&raft, &config, &me).await?;

        let metrics = Arc::new(Metrics::default());
        let batcher = Batcher::start(raft.clone(), &config.write, metrics.clone(), decoded);
        let (stop_rpc, stop_rx) = tokio::sync::watch::channel(false);
        let peers = Arc::new(PeerClients::new(io.connector));
        let leader_lost = LeaderLost::new();
        let handover = HandoverGate::default();
        let mut router = router(&config, &raft, &batcher, &peers, &applied_rx, &leader_lost, &handover);
        router.ha = ha_gate(&config, &ha_replicas, &raft, router.commit_timeout);
        let (rules, notifier) = rules_and_notifier(&config, &promcfg)?;
        let node = Arc::new(Node {
            rules,
            notifier,
            me: me.clone(),
            peers,
            router,
            leader_lost,
            handover,
            handover_outcome: tokio::sync::OnceCell::new(),
            stop_rpc,
            log_stats: log.stats(),
            raft,
            db,
            batcher,
            metrics,
            ha_replicas,
            applied: applied_rx,
            started: Instant::now(),
            engine: query_engine(&config),
            query_slots: Arc::new(tokio::sync::Semaphore::new(config.query.concurrency_max)),
            promcfg,
            scrape: Arc::default(),
            config,
            log,
        });
        let svc = node.raft_service(&dir, me).map_err(|e| dir_err(&e))?;
        spawn_rpc_server(&io.placement, io.serve, svc, stop_rx);
        if !initialized && !node.config.initial_cluster.is_empty() {
            node.spawn_bootstrap();
        }
        node.spawn_duties();
        Ok(node)
    }

    /// The Raft gRPC service of this node: openraft's RPCs, forwarded
    /// writes (to the batcher, or on to the leader while stopping) and
    /// node info.
    fn raft_service(&self, dir: &std::path::Path, me: NodeInfo) -> std::io::Result<RaftServer<RaftService>> {
        let writes: Arc<dyn ForwardedWrites> = Arc::new(LeaderWrites(self.router.clone()));
        raft_service(
            self.raft.clone(),
            dir,
            self.db.inline_io(),
            writes,
            Arc::new(RaftNodeInfo::new(self.raft.clone(), me).with_config_digest({
                let p = self.promcfg.clone();
                Arc::new(move || p.digest())
            })),
            self.router.leader_contact.clone(),
        )
    }

    /// Forms the cluster of `initial_cluster` in the background (see
    /// `cluster::bootstrap`).
    fn spawn_bootstrap(&self) {
        let members = self.config.initial_cluster.members().clone();
        let handle = Bootstrap {
            node_id: self.id(),
            me: self.me.clone(),
            raft: self.raft.clone(),
            peers: self.peers.clone(),
        };
        tokio::spawn(bootstrap(handle, members));
    }

    /// The `query` section of this node's configuration.
    pub fn query_config(&self) -> &crate::config::QueryConfig {
        &self.config.query
    }

    /// The `write` section of this node's configuration.
    pub fn write_config(&self) -> &crate::config::WriteConfig {
        &self.config.write
    }

    /// The `web` section of this node's configuration.
    pub fn web_config(&self) -> &crate::config::WebConfig {
        &self.config.web
    }

    /// `storage.retention`.
    pub fn storage_retention(&self) -> Duration {
        self.config.storage.retention
    }

    /// The configuration in force as `/api/v1/status/flags` shows
    /// Prometheus's flags: each option's dotted name (`storage.retention`)
    /// and its value as text (durations as `15d`, lists comma-separated,
    /// unset options empty).
    pub fn flags(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(v) = serde_json::to_value(&self.config) {
            flatten_flags("", &v, &mut out);
        }
        out
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.node_id
    }

    /// The narrow handle a backup works on.
    pub fn backup_source(&self) -> BackupSource {
        BackupSource {
            node_id: self.id(),
            data_dir: self.config.data_dir.clone(),
            raft: self.raft.clone(),
            db: self.db.clone(),
            applied: self.applied.clone(),
        }
    }

    /// The applied index.
    pub fn applied_index(&self) -> u64 {
        self.applied.borrow().index
    }

    /// A copy of openraft's current metrics.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Bytes of the Raft log's database on disk.
    pub fn log_disk_bytes(&self) -> u64 {
        self.log.size_on_disk()
    }

    /// Entries in the Raft log (not yet purged).
    pub fn log_entries(&self) -> usize {
        self.log.len()
    }

    /// For a leader, whether it holds its lease
    /// ([`crate::cluster::routing::leader_holds_lease`]).
    pub fn holds_lease(&self) -> bool {
        crate::cluster::routing::leader_holds_lease(&self.router)
    }

    /// True once this node knows a leader and has applied what it
    /// committed, until it starts stopping (so that load balancers stop
    /// sending to it while it still answers).
    pub fn is_ready(&self) -> bool {
        if self.handover.is_closed() {
            return false;
        }
        let m = self.raft_metrics();
        // A leader is fresh while a quorum acknowledges it; a follower while
        // its leader's AppendEntries keep arriving (cut off, it still names
        // the leader: with pre-vote it never raises its term alone).
        let fresh = if m.current_leader == Some(self.id()) {
            crate::cluster::routing::leader_acked_within(&self.router, self.router.max_staleness)
        } else {
            self.router
                .leader_contact
                .age()
                .is_none_or(|age| age <= self.router.max_staleness)
        };
        fresh && m.current_leader.is_some() && m.last_applied.map(|l| l.index) >= m.local_committed.map(|l| l.index)
    }

    fn spawn_duties(self: &Arc<Self>) {
        // Scraping and rules exist only with a Prometheus configuration
        // (a reload re-reads the same file, so a node started without one
        // never gets one): without it, none of their timers run.
        if self.promcfg.current().is_some() {
            // The leader scrapes (DESIGN decision 13); every node computes
            // the targets for the API.
            crate::scrape::spawn(self.router.clone(), self.promcfg.clone(), self.scrape.clone());
            self.spawn_rules();
        }
        // Periodic checkpoints: bound the log replay after a crash.
        let node = Arc::downgrade(self);
        let every = self.config.storage.checkpoint_interval;
        let parts = u32::try_from(CHECKPOINT_STAGGER_PARTS).unwrap_or(u32::MAX);
        let offset = every / parts * u32::try_from(self.id() % CHECKPOINT_STAGGER_PARTS).unwrap_or(0);
        tokio::spawn(async move {
            // Staggered like the entry-count trigger (`checkpoint_stagger`).
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(n) = node.upgrade() else { return };
                let m = n.raft_metrics();
                if m.last_applied.map(|l| l.index) > m.snapshot.map(|l| l.index) {
                    let _ = n.raft.trigger().snapshot().await;
                }
            }
        });
        // Retention: the leader proposes a cut-off; every replica applies it
        // at the same log position, so deletes are identical everywhere.
        let node = Arc::downgrade(self);
        let retention_ms = duration_ms(self.config.storage.retention);
        let every = (self.config.storage.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // The first tick fires at once; a restart must not write an entry.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(n) = node.upgrade() else { return };
                if !n.raft.is_leader() {
                    continue;
                }
                let now = chrono::Utc::now().timestamp_millis();
                let cmd = Command::Retention {
                    cutoff_ms: now - retention_ms,
                };
                if let Err(e) = n.raft.client_write(cmd).await {
                    tracing::warn!(error = %e, "retention entry not committed");
                }
            }
        });
        // Count leader changes.
        let node = Arc::downgrade(self);
        let mut rx = self.raft.metrics();
        tokio::spawn(async move {
            let mut leader = rx.borrow_watched().current_leader;
            while rx.changed().await.is_ok() {
                let Some(n) = node.upgrade() else { return };
                let now = rx.borrow_and_update().current_leader;
                if now != leader {
                    if now.is_some() {
                        n.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
                        n.leader_lost.found();
                    } else {
                        n.leader_lost.lost();
                    }
                    leader = now;
                }
            }
        });
    }

    /// Rule evaluation (a leader duty: `rules::manager`) and the
    /// notifier's sender.
    fn spawn_rules(&self) {
        let ev = Evaluator {
            manager: self.rules.clone(),
            router: self.router.clone(),
            querier: DbQuerier {
                db: self.db.clone(),
                engine: self.engine.clone(),
                samples_max: self.config.query.samples_max,
            },
            notifier: self.notifier.clone(),
        };
        tokio::spawn(crate::rules::manager::run(ev));
        tokio::spawn(Notifier::run(Arc::downgrade(&self.notifier), reqwest::Client::new()));
        tokio::spawn(crate::rules::settings::follow(
            self.promcfg.subscribe(),
            self.rules.clone(),
            self.notifier.clone(),
            external_url(&self.config),
        ));
    }

    /// When this node last lost sight of a leader; `None` while it knows one.
    pub fn leader_lost_at(&self) -> Option<tokio::time::Instant> {
        self.leader_lost.at()
    }

    /// Starts stopping: the node turns not ready, proposes no more writes
    /// of its own (it forwards them to the next leader) and, if it leads,
    /// hands its leadership to the most caught-up voter, waiting at most
    /// `cluster::handover::HANDOVER_TIMEOUT`. Runs once; later calls
    /// return the first outcome. The node keeps serving afterwards, as a
    /// follower, until [`Node::shutdown`].
    pub async fn hand_over(&self) -> HandoverOutcome {
        self.handover_outcome
            .get_or_init(|| async {
                let outcome = hand_over(&self.raft, self.id(), &self.handover).await;
                log_handover(self.id(), &outcome);
                outcome
            })
            .await
            .clone()
    }

    /// Graceful shutdown: hands leadership over ([`Node::hand_over`], if
    /// not done already), checkpoints and stops Raft.
    pub async fn shutdown(&self) {
        self.hand_over().await;
        let _ = self.raft.trigger().snapshot().await;
        let target = self.applied_index();
        let deadline = Instant::now() + CHECKPOINT_WAIT;
        while Instant::now() < deadline {
            let snap = self.raft_metrics().snapshot.map_or(0, |l| l.index);
            if snap >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.raft.shutdown().await.is_ok() {
            if let Err(e) = self.log.mark_clean_shutdown() {
                tracing::warn!(error = %e, "could not record the clean shutdown");
            }
        }
        let _ = self.stop_rpc.send(true);
    }
}

/// Milliseconds of a configured duration, as the TSDB and PromQL count
/// time (validated bounds keep every configured duration far below
/// `i64::MAX` ms).
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Says what a stopping node did about its leadership.
fn log_handover(me: u64, outcome: &HandoverOutcome) {
    match outcome {
        HandoverOutcome::NotLeader => tracing::info!(node_id = me, "stopping as a follower: nothing to hand over"),
        HandoverOutcome::Alone => tracing::info!(node_id = me, "stopping as the only voter: nothing to hand over"),
        HandoverOutcome::HandedOver { to, term, elapsed } => tracing::info!(
            node_id = me,
            to,
            term,
            ms = elapsed.as_millis() as u64,
            "handed leadership over to node {to} (term {term}) in {} ms",
            elapsed.as_millis()
        ),
        HandoverOutcome::OtherLeader {
            asked,
            leader,
            term,
            elapsed,
        } => tracing::warn!(
            node_id = me,
            asked,
            leader,
            term,
            ms = elapsed.as_millis() as u64,
            "asked node {asked} to take over, but node {leader} leads (term {term}) after {} ms",
            elapsed.as_millis()
        ),
        HandoverOutcome::TimedOut { asked, reason } => tracing::warn!(
            node_id = me,
            asked = ?asked,
            %reason,
            "leadership handover did not complete; stopping anyway (the others elect a leader)"
        ),
    }
}

/// Writes `v`'s leaves into `out` under dotted names below `prefix`.
fn flatten_flags(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    let text = match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_flags(&name, v, out);
            }
            return;
        }
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    out.insert(prefix.to_string(), text);
}

/// How other nodes reach this one.
fn node_info(config: &Config) -> NodeInfo {
    NodeInfo {
        raft_addr: config.raft_addr.clone(),
        http_addr: config.http_addr.clone(),
    }
}

/// The leader's HA-pair dedup, when `ha_dedup` is configured.
fn ha_gate(config: &Config, state: &SharedHaReplicas, raft: &Raft, commit_timeout: Duration) -> Option<Arc<HaDedup>> {
    let cfg = config.ha_dedup.clone()?;
    Some(Arc::new(HaDedup::new(cfg, state.clone(), raft.clone(), commit_timeout)))
}

/// The narrow handle that routes writes to the leader and applies read
/// consistency (`cluster::routing`).
fn router(
    config: &Config,
    raft: &Raft,
    batcher: &Batcher,
    peers: &Arc<PeerClients>,
    applied: &watch::Receiver<Applied>,
    leader_lost: &LeaderLost,
    handover: &HandoverGate,
) -> Router {
    Router {
        node_id: config.node_id,
        raft: raft.clone(),
        batcher: batcher.clone(),
        peers: peers.clone(),
        applied: applied.clone(),
        leader_lost: leader_lost.clone(),
        max_staleness: config.query.max_staleness,
        commit_timeout: Duration::from_millis(config.write.commit_timeout_ms),
        leader_wait: Duration::from_millis(config.write.leader_wait_ms),
        leader_lease: Duration::from_millis(config.raft.election_timeout_max_ms),
        handover: handover.clone(),
        leader_contact: LeaderContact::default(),
        ha: None,
    }
}

/// The rules and the notifier as the Prometheus configuration in force
/// sets them up (`rules::settings`).
fn rules_and_notifier(
    config: &Config,
    promcfg: &PromConfigState,
) -> Result<(Arc<RuleManager>, Arc<Notifier>), StartError> {
    let loaded = promcfg.current();
    let rules = RuleManager::load(rules_settings(loaded.as_deref(), &external_url(config)))?;
    let notifier = Notifier::new(notifier_options(loaded.as_deref()));
    notifier.set_alertmanagers(&alertmanager_urls(loaded.as_deref()));
    Ok((rules, notifier))
}

/// The URL alerts link back to (`generatorURL`): this node's HTTP address.
fn external_url(config: &Config) -> String {
    format!("http://{}", config.http_addr)
}

/// The PromQL engine with the configured query limits.
fn query_engine(config: &Config) -> crate::promql::Engine {
    crate::promql::Engine::new(crate::promql::EngineOptions {
        lookback_delta_ms: duration_ms(config.query.lookback_delta),
        samples_max: config.query.samples_max,
        timeout: config.query.timeout,
    })
}

/// Opens the TSDB and loads its checkpoint.
fn open_tsdb(config: &Config, kv: Arc<dyn Kv>) -> Result<Arc<Db>, crate::tsdb::Error> {
    let opts = HeadOptions {
        ooo_window_ms: duration_ms(config.storage.out_of_order_window),
        ..Default::default()
    };
    let loaded = Instant::now();
    let (db, _) = Db::open_kv(kv, opts)?;
    tracing::info!(
        series = db.head().num_series(),
        ms = loaded.elapsed().as_millis() as u64,
        "loaded checkpoint"
    );
    Ok(Arc::new(db))
}

/// Whether Raft holds state already; on a first start without
/// `initial_cluster`, initializes a one-member cluster first.
async fn initialize_alone(raft: &Raft, config: &Config, me: &NodeInfo) -> Result<bool, StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized && config.initial_cluster.is_empty() {
        raft.initialize(BTreeMap::from([(config.node_id, me.clone())]))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        tracing::info!(node_id = config.node_id, "initialized a one-member cluster");
    }
    Ok(initialized)
}

/// Parts of a checkpoint period by which replicas are staggered.
const CHECKPOINT_STAGGER_PARTS: u64 = 8;

/// How much later than `every` this node takes its checkpoints: a
/// different part of the period on each of up to eight nodes. A checkpoint
/// costs seconds of CPU and disk on a large head; if every replica took it
/// at the same log index (or the same moment), a whole cluster would stall
/// at once, the leader's followers included. Staggered once, they stay
/// apart: each counts from its own last checkpoint.
fn checkpoint_stagger(node_id: u64, every: u64) -> u64 {
    every / CHECKPOINT_STAGGER_PARTS * (node_id % CHECKPOINT_STAGGER_PARTS)
}

/// openraft's configuration for this node. `clean_shutdown` says whether
/// the last run ended in a clean shutdown (see `enable_leader_restore`).
fn raft_config(config: &Config, clean_shutdown: bool) -> Result<openraft::Config, StartError> {
    openraft::Config {
        cluster_name: "promraft".into(),
        heartbeat_interval: config.raft.heartbeat_interval_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            config.storage.checkpoint_entries + checkpoint_stagger(config.node_id, config.storage.checkpoint_entries),
        ),
        max_in_snapshot_log_to_keep: config.storage.log_entries_kept,
        install_snapshot_timeout: 60_000,
        max_payload_entries: crate::raft::transport::APPEND_ENTRIES_PER_MESSAGE_MAX,
        // After a crash, a restarted leader must win a new election.
        // openraft would otherwise restore its leadership at once, with
        // the commit index read back from the log store, which promraft
        // does not fsync (`LogStore::save_committed`), while apply does
        // not flush the TSDB either: after a crash that lost the
        // unsynced commit index, the leader answered linearizable reads
        // with a read index below writes it had already acknowledged
        // (found by the simulation, seed 590; see openraft's
        // `enable_leader_restore`). After a clean shutdown the commit
        // index on disk is exact, and restoring leadership is safe.
        enable_leader_restore: Some(clean_shutdown),
        // A follower first asks whether it would win. Without this, the
        // follower whose timer fires first but whose log is behind (under
        // load the two survivors of a leader kill rarely hold the same log)
        // raises the term on the other one, restarting its election timer:
        // a second round and about 150 ms more per failover.
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))
}

/// Serves the Raft RPC service until `stop` turns true.
fn spawn_rpc_server(
    placement: &Placement,
    serve_rpc: ServeRpc,
    svc: RaftServer<RaftService>,
    mut stop: watch::Receiver<bool>,
) {
    placement.spawn_raft(async move {
        let stop = Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve_rpc(svc, stop).await {
            tracing::error!(error = %e, "raft RPC server stopped");
        }
    });
}

/// Forwarded writes arriving at this node go to its batcher, which commits
/// them if this node leads and refuses them otherwise; once the node is
/// stopping they go on to the next leader (`cluster::handover`), also when
/// a follower that has not heard of the handover yet sends them here.
struct LeaderWrites(Router);

impl ForwardedWrites for LeaderWrites {
    fn submit(
        &self,
        reqs: Vec<crate::tsdb::AppendRequest>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<crate::tsdb::AppendResult>, ForwardedWriteError>> {
        let router = self.0.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                let res = match router.handover.enter() {
                    Some(_local) => crate::cluster::routing::commit_here(&router, r).await,
                    None => write_elsewhere(&router, r).await,
                };
                out.push(res.map_err(|e| ForwardedWriteError(e.to_string()))?);
            }
            Ok(out)
        })
    }

    fn relays(&self) -> bool {
        self.0.handover.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{AppendRequest, Matcher, SeriesSamples};

    /// Samples of the series named `name` in the replica.
    fn stored(node: &Node, name: &str) -> Vec<(crate::tsdb::labels::Labels, Vec<(i64, f64)>)> {
        node.db
            .select(&[Matcher::equal("__name__", name)], 0, i64::MAX, 1_000_000)
            .expect("select")
            .into_iter()
            .map(|s| (s.labels, s.samples))
            .collect()
    }

    async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole rule path on one real node: the leader duty evaluates,
    /// the results come back through the log into the replica, the alert
    /// goes pending then firing with `ALERTS_FOR_STATE` = activeAt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_evaluates_rules_and_writes_results_through_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("rules.yml");
        std::fs::write(
            &rules,
            "groups: [{name: g, interval: 1s, rules: [{record: 'x:sum', expr: 'sum(x)'}, {alert: X, expr: 'sum(x) > 1', for: 2s}]}]",
        )
        .expect("write rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Rules run only on a node with a Prometheus configuration.
        let prometheus = dir.path().join("prometheus.yml");
        let prometheus_yml = format!(
            "global: {{evaluation_interval: 1s}}\nrule_files: [{:?}]\n",
            rules.display().to_string()
        );
        std::fs::write(&prometheus, prometheus_yml).expect("write prometheus.yml");
        let config = Config {
            data_dir: dir.path().join("data"),
            raft_addr: format!("127.0.0.1:{port}"),
            prometheus_config: Some(prometheus),
            ..Config::default()
        };
        let node = Node::start(config, Placement::Current).await.expect("node starts");
        wait_for("leadership", || node.raft.is_leader().then_some(())).await;
        let now = chrono::Utc::now().timestamp_millis();
        let req = AppendRequest {
            series: vec![SeriesSamples {
                labels: crate::tsdb::labels::Labels::from_pairs([("__name__", "x"), ("a", "1")]),
                samples: vec![(now, 5.0)],
            }],
            metadata: Vec::new(),
        };
        crate::cluster::routing::write(&node.router, req).await.expect("write");
        let rec = wait_for("x:sum", || stored(&node, "x:sum").into_iter().next()).await;
        assert_eq!(rec.1[0].1, 5.0);
        let firing = wait_for("a firing ALERTS sample", || {
            stored(&node, "ALERTS")
                .into_iter()
                .find(|(l, _)| l.get("alertstate") == "firing")
        })
        .await;
        let fired_ms = firing.1[0].0;
        let for_state = stored(&node, "ALERTS_FOR_STATE");
        let active_s = for_state[0].1[0].1;
        assert_eq!(
            fired_ms,
            (active_s * 1000.0) as i64 + 2000,
            "fired `for` after activeAt, on the grid"
        );
        let groups = node.rules.groups();
        assert_eq!(groups[0].rules[0].health.health(), "ok");
        assert!(node.rules.evaluating());
        node.shutdown().await;
    }
}
