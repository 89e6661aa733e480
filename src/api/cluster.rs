//! Cluster status and membership administration over HTTP.
//!
//! `GET /api/v1/status/cluster` shows every member as this node sees it,
//! asking each for its own state with a short deadline (a member that does
//! not answer is shown unreachable). The admin endpoints change membership
//! and leadership; any node accepts them and relays them to the leader, so
//! a client needs only one address. Joining is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::{success, ApiError, AppState};
use crate::raft::NodeInfo;

/// Deadline for asking one member for its state.
const MEMBER_STATUS_DEADLINE: Duration = Duration::from_millis(500);
/// Deadline for relaying an admin request to the leader.
const RELAY_DEADLINE: Duration = Duration::from_secs(30);

/// One member in `/api/v1/status/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Raft address.
    pub raft_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`.
    pub role: String,
    /// True for a voter, false for a learner.
    pub voter: bool,
    /// Answered the status request just now.
    pub reachable: bool,
    /// Its current term (0 when unreachable).
    pub term: u64,
    /// Its last log index as the leader knows it (matched), or its own.
    pub last_log_index: u64,
    /// Its applied index (0 when unreachable).
    pub applied_index: u64,
    /// Entries it is behind the leader's last log index (leader's view;
    /// `null` when this node is not the leader).
    pub replication_lag: Option<u64>,
    /// SHA-256 of its Prometheus configuration file (empty: none or
    /// unreachable).
    #[serde(default)]
    pub prometheus_config_digest: String,
}

/// The whole view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The node answering.
    pub node_id: u64,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// Its term.
    pub term: u64,
    /// Committed index it knows.
    pub commit_index: u64,
    /// Members, by id.
    pub members: Vec<MemberStatus>,
    /// True when reachable members run Prometheus configuration files
    /// with different digests.
    #[serde(default)]
    pub prometheus_config_mismatch: bool,
}

/// Builds the cluster view of `node`.
pub async fn cluster_status(node: &AppState) -> ClusterStatus {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last_log = m.last_log_index.unwrap_or(0);
    let is_leader = m.current_leader == Some(node.id());
    let mut members = Vec::new();
    for (&id, info) in membership.nodes() {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|l| l.index);
        let mut st = MemberStatus {
            id,
            raft_addr: info.raft_addr.clone(),
            http_addr: info.http_addr.clone(),
            role: "unknown".into(),
            voter: voters.contains(&id),
            reachable: false,
            term: 0,
            last_log_index: 0,
            applied_index: 0,
            replication_lag: None,
            prometheus_config_digest: String::new(),
        };
        if id == node.id() {
            st.reachable = true;
            st.term = m.current_term;
            st.last_log_index = last_log;
            st.applied_index = node.applied_index();
            st.role = crate::raft::transport::server::role_name(m.state).to_string();
            st.prometheus_config_digest = node.promcfg.digest();
        } else if let Ok(mut c) = node.peers.get(&info.raft_addr) {
            if let Ok(s) = c.node_info(MEMBER_STATUS_DEADLINE).await {
                st.reachable = true;
                st.term = s.term;
                st.applied_index = s.applied_index;
                st.role = s.role;
                st.prometheus_config_digest = s.prometheus_config_digest;
            }
        }
        if is_leader {
            let matched = if id == node.id() { Some(last_log) } else { matched };
            st.replication_lag = Some(last_log.saturating_sub(matched.unwrap_or(0)));
            if id != node.id() {
                st.last_log_index = matched.unwrap_or(0);
            }
        }
        members.push(st);
    }
    ClusterStatus {
        node_id: node.id(),
        leader_id: m.current_leader,
        term: m.current_term,
        commit_index: m.local_committed.map_or(0, |l| l.index),
        prometheus_config_mismatch: config_mismatch(&members),
        members,
    }
}

/// Whether the reachable members disagree on their Prometheus
/// configuration file.
fn config_mismatch(members: &[MemberStatus]) -> bool {
    let digests: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.reachable)
        .map(|m| m.prometheus_config_digest.as_str())
        .collect();
    digests.len() > 1
}

/// `GET /api/v1/status/cluster`
pub async fn status(State(node): State<AppState>) -> Response {
    success(cluster_status(&node).await, &[])
}

/// Body of the admin endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminRequest {
    /// The node acted on.
    pub node_id: u64,
    /// Its Raft address (add-learner only).
    #[serde(default)]
    pub raft_addr: String,
    /// Its HTTP address (add-learner only).
    #[serde(default)]
    pub http_addr: String,
}

/// What an admin endpoint did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminOutcome {
    /// Human-readable result.
    pub message: String,
    /// Log index of the membership change, if one was written.
    pub log_index: Option<u64>,
}

/// Relays the request to the leader's HTTP API when this node is not it.
/// The caller's `Authorization` goes along, so the leader checks the same
/// credentials; https when this node serves TLS.
async fn relay_if_follower(node: &AppState, headers: &HeaderMap, path: &str, req: &AdminRequest) -> Option<Response> {
    let m = node.raft_metrics();
    let leader = m.current_leader?;
    if leader == node.id() {
        return None;
    }
    let Some(addr) = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.http_addr.clone())
    else {
        return Some(ApiError::unavailable(format!("leader {leader} has no known HTTP address")).into_response());
    };
    let (client, scheme) = match node.peer_client(RELAY_DEADLINE) {
        Ok(c) => c,
        Err(e) => return Some(e.into_response()),
    };
    let url = format!("{scheme}://{addr}{path}");
    let mut post = client.post(&url).json(req);
    if let Some(a) = headers.get(axum::http::header::AUTHORIZATION) {
        post = post.header(axum::http::header::AUTHORIZATION, a.clone());
    }
    Some(match post.send().await {
        Ok(r) => {
            let code = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = r.bytes().await.unwrap_or_default();
            (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => ApiError::unavailable(format!("relaying to leader {leader} at {addr}: {e}")).into_response(),
    })
}

fn not_leader(node: &AppState) -> Option<ApiError> {
    match node.raft_metrics().current_leader {
        Some(l) if l == node.id() => None,
        Some(l) => Some(ApiError::unavailable(format!("leadership moved to node {l}; retry"))),
        None => Some(ApiError::unavailable(
            "no leader is known; retry when the cluster has one",
        )),
    }
}

fn done(message: String, log_index: Option<u64>) -> Response {
    success(AdminOutcome { message, log_index }, &[])
}

/// `POST /api/v1/admin/cluster/add-learner` `{"node_id":4,"raft_addr":"h:p","http_addr":"h:p"}`
pub async fn add_learner(State(node): State<AppState>, headers: HeaderMap, Json(req): Json<AdminRequest>) -> Response {
    if let Some(r) = relay_if_follower(&node, &headers, "/api/v1/admin/cluster/add-learner", &req).await {
        return r;
    }
    if let Some(e) = not_leader(&node) {
        return e.into_response();
    }
    if req.node_id == 0 || req.raft_addr.is_empty() || req.http_addr.is_empty() {
        return ApiError::bad_data("add-learner needs node_id (> 0), raft_addr and http_addr").into_response();
    }
    let info = NodeInfo {
        raft_addr: req.raft_addr.clone(),
        http_addr: req.http_addr.clone(),
    };
    let membership = node.raft_metrics().membership_config.membership().clone();
    if let Some(existing) = membership.get_node(&req.node_id) {
        if *existing == info {
            return done(
                format!("node {} is already a member with these addresses", req.node_id),
                None,
            );
        }
        return ApiError::bad_data(format!(
            "node {} is already a member with other addresses ({existing}); remove it first",
            req.node_id
        ))
        .into_response();
    }
    match node.raft.add_learner(req.node_id, info, true).await {
        Ok(r) => done(
            format!("node {} added as a learner and caught up", req.node_id),
            Some(r.log_id.index),
        ),
        Err(e) => ApiError::unavailable(format!("add learner: {e}")).into_response(),
    }
}

/// `POST /api/v1/admin/cluster/promote` `{"node_id":4}`: learner to voter.
pub async fn promote(State(node): State<AppState>, headers: HeaderMap, Json(req): Json<AdminRequest>) -> Response {
    if let Some(r) = relay_if_follower(&node, &headers, "/api/v1/admin/cluster/promote", &req).await {
        return r;
    }
    if let Some(e) = not_leader(&node) {
        return e.into_response();
    }
    let membership = node.raft_metrics().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == req.node_id) {
        return done(format!("node {} is already a voter", req.node_id), None);
    }
    if membership.get_node(&req.node_id).is_none() {
        return ApiError::bad_data(format!(
            "node {} is not a member; add it as a learner first",
            req.node_id
        ))
        .into_response();
    }
    match node
        .raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])), false)
        .await
    {
        Ok(r) => done(format!("node {} is now a voter", req.node_id), Some(r.log_id.index)),
        Err(e) => ApiError::unavailable(format!("promote: {e}")).into_response(),
    }
}

/// `POST /api/v1/admin/cluster/remove` `{"node_id":4}`: removes a voter or learner.
pub async fn remove(State(node): State<AppState>, headers: HeaderMap, Json(req): Json<AdminRequest>) -> Response {
    if let Some(r) = relay_if_follower(&node, &headers, "/api/v1/admin/cluster/remove", &req).await {
        return r;
    }
    if let Some(e) = not_leader(&node) {
        return e.into_response();
    }
    let membership = node.raft_metrics().membership_config.membership().clone();
    if membership.get_node(&req.node_id).is_none() {
        return done(format!("node {} is not a member", req.node_id), None);
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if voters.contains(&req.node_id) && voters.len() == 1 {
        return ApiError::bad_data("cannot remove the last voter").into_response();
    }
    let change = if voters.contains(&req.node_id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([req.node_id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([req.node_id]))
    };
    match node.raft.change_membership(change, false).await {
        Ok(r) => done(
            format!(
                "node {} removed; stop its process and delete its data directory",
                req.node_id
            ),
            Some(r.log_id.index),
        ),
        Err(e) => ApiError::unavailable(format!("remove: {e}")).into_response(),
    }
}

/// `POST /api/v1/admin/cluster/transfer-leader` `{"node_id":2}`
pub async fn transfer_leader(
    State(node): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<AdminRequest>,
) -> Response {
    if let Some(r) = relay_if_follower(&node, &headers, "/api/v1/admin/cluster/transfer-leader", &req).await {
        return r;
    }
    if let Some(e) = not_leader(&node) {
        return e.into_response();
    }
    if req.node_id == node.id() {
        return done(format!("node {} already leads", req.node_id), None);
    }
    let membership = node.raft_metrics().membership_config.membership().clone();
    if !membership.voter_ids().any(|v| v == req.node_id) {
        return ApiError::bad_data(format!("node {} is not a voter; only voters can lead", req.node_id))
            .into_response();
    }
    if let Err(e) = node.raft.trigger().transfer_leader(req.node_id).await {
        return ApiError::internal(format!("transfer leader: {e}")).into_response();
    }
    // Wait (bounded) until the target leads, so the caller sees the result.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if node.raft_metrics().current_leader == Some(req.node_id) {
            return done(format!("node {} now leads", req.node_id), None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ApiError::unavailable(format!("node {} did not take over within 5 s", req.node_id)).into_response()
}

/// Fills a `BTreeMap` of member id to HTTP address (for the CLI and demo).
pub fn http_addrs(status: &ClusterStatus) -> BTreeMap<u64, String> {
    status.members.iter().map(|m| (m.id, m.http_addr.clone())).collect()
}

#[cfg(test)]
mod config_digest_tests {
    use super::*;

    fn member(id: u64, reachable: bool, digest: &str) -> MemberStatus {
        MemberStatus {
            id,
            raft_addr: String::new(),
            http_addr: String::new(),
            role: "follower".into(),
            voter: true,
            reachable,
            term: 1,
            last_log_index: 0,
            applied_index: 0,
            replication_lag: None,
            prometheus_config_digest: digest.into(),
        }
    }

    #[test]
    fn a_different_digest_on_a_reachable_member_is_a_mismatch() {
        assert!(!config_mismatch(&[
            member(1, true, "a"),
            member(2, true, "a"),
            member(3, false, "")
        ]));
        assert!(config_mismatch(&[member(1, true, "a"), member(2, true, "b")]));
        assert!(config_mismatch(&[member(1, true, "a"), member(2, true, "")]));
    }
}
