//! What runs on a node's turmoil host: the real [`Node`] on the host's
//! simulated disks and network, one client, and a control task through
//! which the fault schedule asks the node for leadership transfers and
//! membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use promraft::config::Config;
use promraft::node::{Node, NodeIo};
use promraft::raft::runtime::SeededRuntime;
use promraft::raft::transport::server::serve_with_incoming;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::disk::Disk;
use crate::invariants::Violation;
use crate::net::{incoming, SimConnector, RAFT_PORT};
use crate::oracle::Oracle;
use crate::trace::Trace;

/// A request from the fault schedule to a node.
#[derive(Debug, Clone)]
pub enum Control {
    /// Hand leadership to that node.
    TransferLeader(u64),
    /// Make exactly these nodes voters (the others stay learners).
    SetVoters(BTreeSet<u64>),
}

/// State shared by the hosts and the schedule (one thread runs them all).
#[derive(Default)]
pub struct Shared {
    /// Running nodes.
    pub nodes: BTreeMap<u64, Arc<Node>>,
    /// Their control channels.
    pub controls: BTreeMap<u64, mpsc::UnboundedSender<Control>>,
    /// What the clients did.
    pub oracle: Oracle,
    /// The history.
    pub trace: Trace,
    /// Breaches found.
    pub violations: Vec<Violation>,
    /// Starts of each node so far.
    pub starts: BTreeMap<u64, u64>,
    /// False once the run is over: clients stop issuing operations.
    pub clients_on: bool,
    /// The highest applied index seen on any node, crashed ones included.
    pub max_applied_seen: u64,
}

impl Shared {
    /// The highest applied index any node has reached so far. A write's
    /// entry is at or below it once the leader has answered: the leader
    /// applied the entry first (and may have crashed since).
    pub fn max_applied(&mut self) -> u64 {
        let now = self.nodes.values().map(|n| n.applied_index()).max().unwrap_or(0);
        self.max_applied_seen = self.max_applied_seen.max(now);
        self.max_applied_seen
    }
}

/// The simulation's shared state.
pub type SharedRef = Arc<Mutex<Shared>>;

/// Sim time now, ms (inside a host).
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// Everything a node's host needs; it outlives the host's crashes.
pub struct NodeSlot {
    /// Node id.
    pub id: u64,
    /// Ids of all nodes.
    pub all: Vec<u64>,
    /// The run's seed.
    pub seed: u64,
    /// The Raft log's disk.
    pub log_disk: Disk,
    /// The TSDB's disk.
    pub tsdb_disk: Disk,
    /// A real directory for the node's snapshot spool (unused unless a
    /// snapshot is sent).
    pub dir: PathBuf,
    /// The shared state.
    pub shared: SharedRef,
}

/// The TSDB's main tree, which only a snapshot import clears
/// (`tsdb::store`): [`Disk::clears`] of it counts snapshot installs.
pub const TSDB_MAIN_TREE: &str = "tsdb";

/// The host name of node `id`.
pub fn host_name(id: u64) -> String {
    format!("n{id}")
}

/// SplitMix64, to derive seeds.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let z = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Entries a node keeps behind its last checkpoint (`storage.log_entries_kept`).
pub const LOG_ENTRIES_KEPT: u64 = 10;

fn config(slot: &NodeSlot) -> Config {
    let mut c = Config {
        node_id: slot.id,
        data_dir: slot.dir.clone(),
        raft_addr: format!("{}:{RAFT_PORT}", host_name(slot.id)),
        http_addr: format!("{}:9090", host_name(slot.id)),
        initial_cluster: slot
            .all
            .iter()
            .map(|&i| format!("{i}={}:{RAFT_PORT}", host_name(i)))
            .collect::<Vec<_>>()
            .join(",")
            .parse()
            .expect("the simulated member list is valid"),
        ..Config::default()
    };
    // Raft timing stays the production default (`RaftConfig::default`):
    // the safety of linearizable reads and acknowledged writes is checked
    // with the timing that ships.
    c.write.commit_timeout_ms = 2_000;
    // Checkpoint often, so crashes hit checkpoints too, and keep few
    // entries behind a checkpoint: a node that was down or cut off for a
    // while finds the leader's log purged past its own and catches up by
    // a snapshot, streamed through the real transport (spooled to files
    // in the node's data dir).
    c.storage.checkpoint_entries = 50;
    c.storage.checkpoint_interval = std::time::Duration::from_secs(1);
    c.storage.log_entries_kept = LOG_ENTRIES_KEPT;
    c.query.max_staleness = std::time::Duration::from_secs(1);
    c
}

/// Runs node `slot` on the current host until the host crashes.
pub async fn run_node(slot: Arc<NodeSlot>) -> turmoil::Result {
    let start = {
        let mut sh = slot.shared.lock();
        let n = sh.starts.entry(slot.id).or_default();
        *n += 1;
        *n
    };
    let seed = mix(slot.seed, slot.id << 32 | start);
    SeededRuntime::scope(seed, node_main(slot, seed)).await
}

async fn node_main(slot: Arc<NodeSlot>, seed: u64) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", RAFT_PORT)).await?;
    let io = NodeIo {
        tsdb_kv: Arc::new(slot.tsdb_disk.clone()),
        log_kv: Arc::new(slot.log_disk.clone()),
        connector: Arc::new(SimConnector),
        serve: Box::new(move |svc, stop| {
            Box::pin(async move { serve_with_incoming(incoming(listener), svc, stop).await })
        }),
        // One seeded runtime runs every task of every simulated node.
        placement: promraft::threads::Placement::Current,
    };
    let node = Node::start_with(config(&slot), io).await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut sh = slot.shared.lock();
        sh.nodes.insert(slot.id, node.clone());
        sh.controls.insert(slot.id, tx);
        sh.trace
            .event(now_ms(), "node-started", &[slot.id, node.applied_index()]);
    }
    let client_rng = StdRng::seed_from_u64(mix(seed, 7));
    tokio::spawn(SeededRuntime::scope(
        mix(seed, 8),
        crate::workload::client(slot.id, node.clone(), slot.shared.clone(), client_rng),
    ));
    while let Some(c) = rx.recv().await {
        let (kind, res) = match c {
            Control::TransferLeader(to) => (
                "transfer-leader",
                node.raft.trigger().transfer_leader(to).await.map_err(|e| e.to_string()),
            ),
            Control::SetVoters(voters) => (
                "set-voters",
                node.raft
                    .change_membership(voters, true)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
        };
        let mut sh = slot.shared.lock();
        sh.trace.event(now_ms(), kind, &[slot.id, u64::from(res.is_ok())]);
    }
    Ok(())
}
