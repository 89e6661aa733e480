//! Where a request goes: writes to the leader (forwarded over gRPC when this
//! node is a follower), reads served locally after the consistency barrier
//! the caller asked for.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ReadPolicy;
use tokio::sync::watch;
use tokio::time::Instant;

use super::batcher::{Batcher, CommitError};
use super::ha_dedup::HaDedup;
use super::handover::{write_elsewhere, HandoverGate};
use crate::raft::state_machine::Applied;
use crate::raft::transport::peer::{PeerClient, PeerClients};
use crate::raft::transport::server::LeaderContact;
use crate::raft::transport::Error as RpcError;
use crate::raft::Raft;
use crate::tsdb::{AppendRequest, AppendResult};

/// When this node last lost sight of a leader (`None` while it knows one).
/// tokio's clock, so that the simulator's clock drives it. Clones share
/// the value: the node's leader watch sets it, routing reads it.
#[derive(Clone, Debug)]
pub struct LeaderLost(Arc<parking_lot::Mutex<Option<Instant>>>);

impl LeaderLost {
    /// Starts as "lost now": a node knows no leader until it hears one.
    pub fn new() -> LeaderLost {
        LeaderLost(Arc::new(parking_lot::Mutex::new(Some(Instant::now()))))
    }

    /// A leader is known again.
    pub fn found(&self) {
        *self.0.lock() = None;
    }

    /// The leader was lost now.
    pub fn lost(&self) {
        *self.0.lock() = Some(Instant::now());
    }

    /// When the leader was lost; `None` while one is known.
    pub fn at(&self) -> Option<Instant> {
        *self.0.lock()
    }
}

impl Default for LeaderLost {
    fn default() -> Self {
        LeaderLost::new()
    }
}

/// What routing needs of a node, and nothing more: its id, the Raft handle,
/// the batcher, clients to peers, the applied index, the leader watch and
/// two limits from the configuration.
#[derive(Clone)]
pub struct Router {
    /// This node's id.
    pub node_id: u64,
    /// The Raft handle.
    pub raft: Raft,
    /// The group-commit batcher (used while this node leads).
    pub batcher: Batcher,
    /// Clients to peers (forwarding, read index).
    pub peers: Arc<PeerClients>,
    /// Applied index, updated by the state machine.
    pub applied: watch::Receiver<Applied>,
    /// When this node last lost sight of a leader.
    pub leader_lost: LeaderLost,
    /// `query.max_staleness`.
    pub max_staleness: Duration,
    /// `write.commit_timeout_ms`, also the deadline of a linearizable read.
    pub commit_timeout: Duration,
    /// `write.leader_wait_ms`: how long a write waits for a leader.
    pub leader_wait: Duration,
    /// The leader lease, `raft.election_timeout_max_ms` (openraft's): a
    /// leader that no quorum acknowledged within it takes no more writes,
    /// since the others may elect a new leader from then on.
    pub leader_lease: Duration,
    /// Closed while the node stops: writes then go to the next leader
    /// (`cluster::handover`).
    pub handover: HandoverGate,
    /// When a leader's AppendEntries last arrived (`raft::transport::server`).
    pub leader_contact: LeaderContact,
    /// HA-pair deduplication, when configured (`ha_dedup`): writes this
    /// node commits as leader pass through it.
    pub ha: Option<Arc<HaDedup>>,
}

/// Read consistency levels (DESIGN decision 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Serve the local replica now (503 when no leader was heard from
    /// within `query.max_staleness`).
    #[default]
    Local,
    /// Get a read index from the leader, wait until applied, then serve.
    Linearizable,
}

/// A consistency level other than `local` or `linearizable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency {0:?} (use local or linearizable)")]
pub struct UnknownConsistency(pub String);

impl FromStr for Consistency {
    type Err = UnknownConsistency;
    fn from_str(s: &str) -> Result<Self, UnknownConsistency> {
        match s {
            "" | "local" => Ok(Consistency::Local),
            "linearizable" => Ok(Consistency::Linearizable),
            other => Err(UnknownConsistency(other.to_string())),
        }
    }
}

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No leader, stale, or the barrier did not complete in time.
    #[error("{0}")]
    Unavailable(String),
}

fn raft_metrics(raft: &Raft) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
    raft.metrics().borrow_watched().clone()
}

fn leader_addr(node: &Router, leader: u64) -> Option<String> {
    let m = raft_metrics(&node.raft);
    m.membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.raft_addr.clone())
}

/// Why no client to the leader could be had.
#[derive(Debug, thiserror::Error)]
enum LeaderClientError {
    /// The leader is not in the membership this node knows.
    #[error("leader {0} has no known address")]
    NoAddress(u64),
    /// The peer client could not be made.
    #[error(transparent)]
    Client(#[from] RpcError),
}

/// A client to the leader `leader`: its address from the membership, then
/// the peer client for it.
fn leader_client(node: &Router, leader: u64) -> Result<PeerClient, LeaderClientError> {
    let addr = leader_addr(node, leader).ok_or(LeaderClientError::NoAddress(leader))?;
    Ok(node.peers.get(&addr)?)
}

/// For a leader: whether a quorum acknowledged it within `within`
/// (always true for a one-voter cluster). An isolated openraft leader keeps
/// believing it leads; this is how it finds out.
pub fn leader_acked_within(node: &Router, within: Duration) -> bool {
    let m = raft_metrics(&node.raft);
    let me = node.node_id;
    let alone = m.membership_config.membership().voter_ids().all(|v| v == me);
    alone || quorum_ack_age_ms(&m).is_some_and(|ms| u128::from(ms) <= within.as_millis())
}

/// For a leader: whether it holds its lease (a quorum acknowledged it
/// within `leader_lease`). Past the lease the others may elect a new leader
/// at any moment, so the node acts as deposed: it takes no writes (they
/// wait for the next leader) and reports itself as not leading
/// (`promraft_raft_is_leader` 0) although openraft has not stepped it down.
pub fn leader_holds_lease(node: &Router) -> bool {
    leader_acked_within(node, node.leader_lease)
}

/// Milliseconds since a quorum last acknowledged this leader, measured now
/// (not when the metrics were last published).
fn quorum_ack_age_ms(m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> Option<u64> {
    use openraft::async_runtime::Instant as _;
    m.last_quorum_acked.as_ref().map(|t| (**t).elapsed().as_millis() as u64)
}

/// Pause between attempts while no leader can take a write (a leader
/// change wakes the wait earlier).
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// openraft's metrics watch, read for the current leader.
type Leaders = openraft::type_config::alias::WatchReceiverOf<crate::raft::TypeConfig, RaftMetrics>;

/// openraft's metrics of promraft's type configuration.
type RaftMetrics = openraft::RaftMetrics<crate::raft::TypeConfig>;

/// Why one attempt to hand a write to the leader failed; the request is
/// still ours and may go to the next leader.
struct NotTaken(CommitError);

/// Commits `req` through the leader; returns what apply did with it.
///
/// While no leader can take it (an election, a leader that just died, a
/// leader that lost its quorum) the write waits, up to `leader_wait`, and
/// goes to the next leader as soon as one is known: the sender sees
/// latency, not an error. Only a write handed to this node's own batcher
/// is not retried (it may be in the log already); a forwarded write that
/// the leader did not answer may be resent, which is safe: a sample sent
/// twice is a duplicate, a no-op (`tsdb::head`).
pub async fn write(node: &Router, req: AppendRequest) -> Result<AppendResult, CommitError> {
    if node.handover.is_closed() {
        return write_elsewhere(node, req).await;
    }
    route(node, req, true).await
}

/// Commits `req` on this node, the leader: through the HA dedup when it is
/// configured, then the batcher. Followers' forwarded writes come here too.
pub async fn commit_here(node: &Router, req: AppendRequest) -> Result<AppendResult, CommitError> {
    let Some(ha) = &node.ha else {
        return node.batcher.submit(req).await;
    };
    let admitted = ha.admit(req).await?;
    let mut res = if admitted.req.series.is_empty() && admitted.req.metadata.is_empty() {
        AppendResult::default()
    } else {
        node.batcher.submit(admitted.req).await?
    };
    res.ha_dropped = admitted.dropped;
    res.ha_note = admitted.note;
    if res.first_error.is_none() {
        res.first_error = admitted.refused;
    }
    Ok(res)
}

/// Forwards `req` to the leader, never to this node's own batcher (a
/// stopping node hands its writes on), waiting for one up to `leader_wait`
/// as [`write`] does.
pub(super) async fn forward(node: &Router, req: AppendRequest) -> Result<AppendResult, CommitError> {
    route(node, req, false).await
}

/// [`write`]'s loop: `local` says whether this node may commit the write
/// itself when it leads.
async fn route(node: &Router, req: AppendRequest, local: bool) -> Result<AppendResult, CommitError> {
    let give_up = Instant::now() + node.leader_wait;
    let mut leaders = node.raft.metrics();
    loop {
        let leader = leaders.borrow_watched().current_leader;
        let failed = match leader {
            Some(l) if l == node.node_id => {
                // Counted until answered, so that a handover waits for it.
                match node.handover.enter().filter(|_| local) {
                    Some(_local) if leader_holds_lease(node) => return commit_here(node, req).await,
                    Some(_) => NotTaken(CommitError::Unavailable(format!(
                        "node {l} leads but no quorum has acknowledged it within its lease ({} ms); \
                         no leader with a quorum is known",
                        node.leader_lease.as_millis()
                    ))),
                    None => NotTaken(CommitError::Unavailable(format!(
                        "node {l} is handing its leadership over; no other leader is known yet"
                    ))),
                }
            }
            Some(l) => match forward_once(node, l, &req, &mut leaders).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            },
            None => NotTaken(CommitError::Unavailable(
                "no leader is known (election in progress or no quorum)".into(),
            )),
        };
        let now = Instant::now();
        if now >= give_up {
            return Err(failed.0);
        }
        // Wake at a leader change, or after a pause (a leader that is known
        // but cannot take writes yet: one elected a moment ago takes them
        // once a quorum has acknowledged it).
        let _ = tokio::time::timeout_at(
            give_up.min(now + WRITE_RETRY_PAUSE),
            leader_change(&mut leaders, leader),
        )
        .await;
    }
}

/// Waits until the current leader is no longer `seen`; forever once Raft
/// has stopped (the caller bounds the wait).
async fn leader_change(leaders: &mut Leaders, seen: Option<u64>) {
    while leaders.borrow_watched().current_leader == seen {
        if leaders.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Forwards `req` to leader `l`. Gives up early when this node learns of
/// another leader meanwhile (the one asked may be dead or cut off).
async fn forward_once(
    node: &Router,
    l: u64,
    req: &AppendRequest,
    leaders: &mut Leaders,
) -> Result<AppendResult, NotTaken> {
    let unavailable = |msg: String| NotTaken(CommitError::Unavailable(msg));
    let mut c = leader_client(node, l).map_err(|e| unavailable(e.to_string()))?;
    let call = c.forward_write(std::slice::from_ref(req), node.commit_timeout);
    let leader_changed = leader_change(leaders, Some(l));
    let mut res = tokio::select! {
        r = call => r.map_err(|e| unavailable(format!("forwarding to leader {l}: {e}")))?,
        _ = leader_changed => return Err(unavailable(format!("leader {l} was replaced while a write was forwarded to it"))),
    };
    res.pop().ok_or_else(|| unavailable("leader returned no result".into()))
}

/// Waits until this node may serve a read at `level`.
pub async fn read_barrier(node: &Router, level: Consistency) -> Result<(), ReadError> {
    let m = raft_metrics(&node.raft);
    match level {
        Consistency::Local => local_barrier(node, &m),
        Consistency::Linearizable => linearizable_barrier(node, &m).await,
    }
}

/// `local`: serve at once, unless this node has been without a leader (or,
/// leading, without a quorum's acknowledgement) for over `max_staleness`.
fn local_barrier(node: &Router, m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> Result<(), ReadError> {
    let max = node.max_staleness;
    let me = node.node_id;
    if m.current_leader == Some(me) {
        // A leader cut off from its followers still believes it
        // leads; what tells is how long ago a quorum acknowledged it.
        let alone = m.membership_config.membership().voter_ids().all(|v| v == me);
        return match quorum_ack_age_ms(m) {
            _ if alone => Ok(()),
            Some(ms) if u128::from(ms) <= max.as_millis() => Ok(()),
            other => Err(ReadError::Unavailable(format!(
                "node {me} leads but no quorum has acknowledged it for {} (max_staleness {} ms); \
                 retry on another node or later",
                other.map_or("ever".to_string(), |ms| format!("{ms} ms")),
                max.as_millis()
            ))),
        };
    }
    if let Some(l) = m.current_leader {
        // A follower cut off from its leader still names it; what tells is
        // how long ago the leader's AppendEntries last arrived.
        return match node.leader_contact.age() {
            Some(age) if age > max => Err(ReadError::Unavailable(format!(
                "node {me} has not heard from leader {l} for {} ms (max_staleness {} ms); retry on another node or later",
                age.as_millis(),
                max.as_millis()
            ))),
            _ => Ok(()),
        };
    }
    match node.leader_lost.at().map(|t| t.elapsed()) {
        Some(age) if age <= max => Ok(()),
        age => Err(ReadError::Unavailable(format!(
            "node {} has heard from no leader for {} (max_staleness {} ms); retry on another node or later",
            node.node_id,
            age.map_or("an unknown time".to_string(), |a| format!("{} ms", a.as_millis())),
            max.as_millis()
        ))),
    }
}

/// `linearizable`: get a read index from the leader (this node or over
/// RPC), then wait until the local replica has applied it.
async fn linearizable_barrier(
    node: &Router,
    m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
) -> Result<(), ReadError> {
    let deadline = Instant::now() + node.commit_timeout;
    let index = match m.current_leader {
        Some(l) if l == node.node_id => {
            let fut = node.raft.get_read_log_id(ReadPolicy::ReadIndex);
            let (read, _) = tokio::time::timeout_at(deadline, fut)
                .await
                .map_err(|_| ReadError::Unavailable("read index: leader could not confirm leadership in time".into()))?
                .map_err(|e| ReadError::Unavailable(format!("read index: {e}")))?;
            read.log_id().index
        }
        Some(l) => {
            let mut c = leader_client(node, l).map_err(|e| ReadError::Unavailable(e.to_string()))?;
            let left = deadline.saturating_duration_since(Instant::now());
            c.read_index(left)
                .await
                .map_err(|e: RpcError| ReadError::Unavailable(format!("read index from leader {l}: {e}")))?
                .index()
        }
        None => {
            return Err(ReadError::Unavailable(
                "no leader is known; a linearizable read needs one".into(),
            ))
        }
    };
    #[cfg(feature = "sim-bugs")]
    if crate::sim_bugs::enabled(crate::sim_bugs::Bug::ReadWithoutReadIndexWait) {
        let _ = index;
        return Ok(());
    }
    let mut applied = node.applied.clone();
    let reached =
        tokio::time::timeout_at(deadline, async { applied.wait_for(|a| a.index >= index).await.is_ok() }).await;
    match reached {
        Ok(true) => Ok(()),
        _ => Err(ReadError::Unavailable(format!(
            "local replica did not apply up to the read index {index} in time (applied {})",
            node.applied.borrow().index
        ))),
    }
}
