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

use crate::node::Node;
use crate::raft::NodeInfo;

/// How long to wait for one peer's answer while bootstrapping.
const BOOTSTRAP_RPC_DEADLINE: Duration = Duration::from_secs(2);
/// Pause between bootstrap attempts.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(300);

/// Parses `1=host:port,2=host:port,...` (Raft addresses).
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not id=host:port (expected e.g. 1=10.0.0.1:9190)"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} in {part:?} is not a node id (a positive integer)"))?;
        if id == 0 {
            return Err(format!("node id 0 in {part:?} is not allowed (ids start at 1)"));
        }
        let addr = addr.trim();
        if !addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(format!("{addr:?} in {part:?} is not host:port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(out)
}

/// Runs until the cluster is initialized (by this node or another).
pub async fn bootstrap(node: Arc<Node>, members: BTreeMap<u64, String>) {
    let me = node.config.node_id;
    let lowest = members.keys().next().copied().unwrap_or(me);
    loop {
        if node.raft.is_initialized().await.unwrap_or(false) || node.raft_metrics().current_term > 0 {
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

/// Asks every listed node for its addresses. `Ok(None)` when one of them
/// is already in a cluster.
async fn survey(node: &Node, members: &BTreeMap<u64, String>) -> Result<Option<BTreeMap<u64, NodeInfo>>, String> {
    let mut infos = BTreeMap::new();
    for (&id, addr) in members {
        if id == node.config.node_id {
            infos.insert(id, node.me.clone());
            continue;
        }
        let mut c = node.peers.get(addr).map_err(|e| e.to_string())?;
        let st = c
            .node_info(BOOTSTRAP_RPC_DEADLINE)
            .await
            .map_err(|e| format!("node {id} at {addr}: {e}"))?;
        if st.id != id {
            return Err(format!("{addr} answers as node {}, but the list says node {id}", st.id));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_reasons() {
        let m = parse_initial_cluster("1=127.0.0.1:1, 2=h:2,3=[::1]:3").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "[::1]:3");
        assert!(parse_initial_cluster("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_initial_cluster("x=a:1").unwrap_err().contains("node id"));
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=a").is_err());
        assert!(parse_initial_cluster("").is_err());
    }
}
