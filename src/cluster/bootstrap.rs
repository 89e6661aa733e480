//! Starting a cluster from `--initial-cluster`.
//!
//! Every listed node starts with the same list; the one with the lowest id
//! initializes the cluster, exactly once, after it has reached every listed
//! node and seen that none of them already belongs to a cluster. The others
//! wait to be contacted by the leader. A node that already holds Raft state
//! ignores the list, so restarts with the same flags never re-initialize.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::raft::transport::peer::PeerClients;
use crate::raft::{NodeInfo, Raft};

/// How long to wait for one peer's answer while bootstrapping.
const BOOTSTRAP_RPC_DEADLINE: Duration = Duration::from_secs(2);
/// Pause between bootstrap attempts.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(300);

/// What bootstrapping needs of a node: its id and addresses, the Raft
/// handle, and clients to its peers.
pub struct Bootstrap {
    /// This node's id.
    pub node_id: u64,
    /// This node's addresses.
    pub me: NodeInfo,
    /// The Raft handle.
    pub raft: Raft,
    /// Clients to peers.
    pub peers: Arc<PeerClients>,
}

/// Runs until the cluster is initialized (by this node or another).
/// `members` is the parsed `initial_cluster` (see
/// [`crate::config::InitialCluster`]).
pub async fn bootstrap(node: Bootstrap, members: BTreeMap<u64, String>) {
    let me = node.node_id;
    let lowest = members.keys().next().copied().unwrap_or(me);
    loop {
        let term = node.raft.metrics().borrow_watched().current_term;
        if node.raft.is_initialized().await.unwrap_or(false) || term > 0 {
            return;
        }
        if me != lowest {
            // The lowest id initializes; wait until a leader contacts us.
            tokio::time::sleep(BOOTSTRAP_RETRY).await;
            continue;
        }
        match survey(&node, &members).await {
            Ok(Some(infos)) => match node.raft.initialize(infos).await {
                Ok(()) => {
                    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialized the cluster");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "initialize failed; retrying"),
            },
            Ok(None) => {
                tracing::info!("a listed node already belongs to a cluster; not initializing");
                return;
            }
            Err(e) => tracing::debug!(%e, "waiting for every listed node before initializing"),
        }
        tokio::time::sleep(BOOTSTRAP_RETRY).await;
    }
}

/// Why a listed node could not be surveyed yet (retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SurveyError(String);

/// Asks every listed node for its addresses. `Ok(None)` when one of them
/// is already in a cluster.
async fn survey(
    node: &Bootstrap,
    members: &BTreeMap<u64, String>,
) -> Result<Option<BTreeMap<u64, NodeInfo>>, SurveyError> {
    let mut infos = BTreeMap::new();
    for (&id, addr) in members {
        if id == node.node_id {
            infos.insert(id, node.me.clone());
            continue;
        }
        let mut c = node.peers.get(addr).map_err(|e| SurveyError(e.to_string()))?;
        let st = c
            .node_info(BOOTSTRAP_RPC_DEADLINE)
            .await
            .map_err(|e| SurveyError(format!("node {id} at {addr}: {e}")))?;
        if st.id != id {
            return Err(SurveyError(format!(
                "{addr} answers as node {}, but the list says node {id}",
                st.id
            )));
        }
        if st.term > 0 || st.leader_id.is_some() {
            return Ok(None);
        }
        infos.insert(
            id,
            NodeInfo {
                raft_addr: addr.clone(),
                http_addr: st.http_addr,
            },
        );
    }
    Ok(Some(infos))
}
