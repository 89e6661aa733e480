//! A client for promraft's own RPCs to a peer: write forwarding, the
//! leader's read index, node info. openraft's RPCs are in [`super::client`].
//!
//! Every call takes a deadline, sent as the gRPC timeout and enforced
//! locally too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::connector::Connector;
use super::proto;
use super::proto::raft_client::RaftClient;
use super::server::NodeStatus;
use super::{call_with_deadline, decode, encode, raft_client, request, Error, WIRE_FORMAT};
use crate::raft::{LogId, NodeId};
use crate::tsdb::{AppendRequest, AppendResult};

/// The leader's answer to a read-index request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndex {
    /// The read log id: a replica that has applied it may serve a
    /// linearizable read.
    pub log_id: LogId,
    /// The leader that answered.
    pub leader_id: NodeId,
}

impl ReadIndex {
    /// The index to wait for.
    pub fn index(&self) -> u64 {
        self.log_id.index
    }
}

/// A client for promraft's own RPCs to one peer (write forwarding, read
/// index, node info). Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct PeerClient {
    client: RaftClient<Channel>,
}

impl PeerClient {
    /// A client to `addr` (`host:port`), connecting on first use.
    pub fn new(connector: &dyn Connector, addr: &str) -> Result<PeerClient, Error> {
        Ok(PeerClient {
            client: raft_client(connector.channel(addr)?),
        })
    }

    /// Has the leader commit `reqs`; one result per request, in order.
    /// [`Error::NotLeader`] if the peer is not the leader (any more).
    pub async fn forward_write(
        &mut self,
        reqs: &[AppendRequest],
        deadline: Duration,
    ) -> Result<Vec<AppendResult>, Error> {
        let msg = proto::ForwardWriteRequest {
            format: WIRE_FORMAT,
            requests: encode(&reqs)?,
        };
        let reply = call_with_deadline(deadline, self.client.forward_write(request(msg, deadline))).await?;
        let mut results: Vec<AppendResult> = decode(reply.format, &reply.results, "forward write reply")?;
        // Not in the bincode of a result: see `AppendResult::ha_dropped`.
        for (r, d) in results.iter_mut().zip(reply.ha_dropped) {
            r.ha_dropped = d.samples;
            r.ha_note = Some(d.note).filter(|n| !n.is_empty());
        }
        if results.len() != reqs.len() {
            return Err(Error::Malformed(format!(
                "{} results for {} forwarded requests",
                results.len(),
                reqs.len()
            )));
        }
        Ok(results)
    }

    /// The leader's read index (openraft's ReadIndex linearizer: the leader
    /// confirms its leadership with a quorum first).
    pub async fn read_index(&mut self, deadline: Duration) -> Result<ReadIndex, Error> {
        let reply = call_with_deadline(
            deadline,
            self.client.read_index(request(proto::ReadIndexRequest {}, deadline)),
        )
        .await?;
        let log_id: LogId = decode(reply.format, &reply.log_id, "read index reply")?;
        if log_id.index != reply.index {
            return Err(Error::Malformed(format!(
                "read index {} disagrees with its log id {log_id}",
                reply.index
            )));
        }
        Ok(ReadIndex {
            log_id,
            leader_id: reply.leader_id,
        })
    }

    /// The peer's identity, role and applied index.
    pub async fn node_info(&mut self, deadline: Duration) -> Result<NodeStatus, Error> {
        let r = call_with_deadline(
            deadline,
            self.client.node_info(request(proto::NodeInfoRequest {}, deadline)),
        )
        .await?;
        Ok(NodeStatus {
            id: r.id,
            http_addr: r.http_addr,
            raft_addr: r.raft_addr,
            applied_index: r.applied_index,
            role: r.role,
            leader_id: r.leader_id,
            term: r.term,
            prometheus_config_digest: r.prometheus_config_digest,
        })
    }
}

/// Most peers whose clients [`PeerClients`] keeps; past it the cache starts
/// over (a cluster has a handful of members; addresses only churn when
/// members are replaced).
pub const PEER_CLIENTS_MAX: usize = 64;

/// [`PeerClient`]s by address, so callers reuse one connection per peer.
pub struct PeerClients {
    connector: Arc<dyn Connector>,
    clients: parking_lot::Mutex<HashMap<String, PeerClient>>,
}

impl PeerClients {
    /// An empty cache whose connections `connector` makes.
    pub fn new(connector: Arc<dyn Connector>) -> PeerClients {
        PeerClients {
            connector,
            clients: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The client for `addr`, created on first use.
    pub fn get(&self, addr: &str) -> Result<PeerClient, Error> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        if clients.len() >= PEER_CLIENTS_MAX {
            clients.clear();
        }
        let c = PeerClient::new(self.connector.as_ref(), addr)?;
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
