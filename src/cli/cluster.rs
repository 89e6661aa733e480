//! `promraft cluster ...`: membership and leadership changes and the status
//! table, over any node's HTTP admin API (the node relays to the leader).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::api::cluster::{AdminRequest, ClusterStatus};
use crate::client::ClientArgs;

/// Deadline for one admin call (adding a learner waits for it to catch up).
const ADMIN_CALL_DEADLINE: Duration = Duration::from_secs(120);

/// `promraft cluster <command>`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Print every member: role, voter or learner, reachability, term, indexes, lag.
    Status(AddrArg),
    /// Add a node as a learner; it catches up from the log or a snapshot.
    AddLearner {
        /// The node to send the request to (any member: it relays to the leader).
        #[command(flatten)]
        addr: AddrArg,
        /// Id of the new node.
        #[arg(long)]
        node_id: u64,
        /// Its Raft address, host:port.
        #[arg(long)]
        raft_addr: String,
        /// Its HTTP address, host:port.
        #[arg(long)]
        http_addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The node to send the request to (any member: it relays to the leader).
        #[command(flatten)]
        addr: AddrArg,
        /// The learner's id.
        #[arg(long)]
        node_id: u64,
    },
    /// Remove a member (voter or learner).
    Remove {
        /// The node to send the request to (any member: it relays to the leader).
        #[command(flatten)]
        addr: AddrArg,
        /// The member's id.
        #[arg(long)]
        node_id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The node to send the request to (any member: it relays to the leader).
        #[command(flatten)]
        addr: AddrArg,
        /// The voter that should lead.
        #[arg(long)]
        node_id: u64,
    },
}

/// Deadline for reading the cluster status.
const STATUS_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// The node to talk to, and how.
#[derive(Debug, Clone, Args)]
pub struct AddrArg {
    /// HTTP address of any node, host:port (or a URL, http:// or https://).
    #[arg(long)]
    pub addr: String,
    /// TLS and basic auth towards the node.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl AddrArg {
    /// Plain HTTP to `addr`, without credentials.
    pub fn plain(addr: &str) -> AddrArg {
        AddrArg {
            addr: addr.to_string(),
            client: ClientArgs::default(),
        }
    }
}

async fn post(to: &AddrArg, path: &str, req: &AdminRequest) -> anyhow::Result<()> {
    let client = to.client.http_client(|b| b.timeout(ADMIN_CALL_DEADLINE))?;
    let url = format!("{}{path}", to.client.base_url(&to.addr)?);
    let resp = crate::client::send(&url, client.post(&url).json(req)).await?;
    let body: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    println!("{}", body["data"]["message"].as_str().unwrap_or("done"));
    Ok(())
}

/// Fetches `/api/v1/status/cluster` from the node.
pub async fn fetch_status(from: &AddrArg) -> anyhow::Result<ClusterStatus> {
    let client = from.client.http_client(|b| b.timeout(STATUS_CALL_DEADLINE))?;
    let url = format!("{}/api/v1/status/cluster", from.client.base_url(&from.addr)?);
    let v: serde_json::Value = crate::client::send(&url, client.get(&url))
        .await?
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    serde_json::from_value(v["data"].clone()).context("unexpected /api/v1/status/cluster answer")
}

/// Renders the status as a table.
pub fn render_status(s: &ClusterStatus) -> String {
    let mut out = format!(
        "asked node {} · leader {} · term {} · committed {}\n",
        s.node_id,
        s.leader_id.map_or("none".to_string(), |l| l.to_string()),
        s.term,
        s.commit_index
    );
    out.push_str(&format!(
        "{:>4}  {:<10} {:<7} {:<9} {:>5} {:>10} {:>10} {:>6}  {:<22} {:<22}\n",
        "ID", "ROLE", "VOTER", "REACHABLE", "TERM", "LAST LOG", "APPLIED", "LAG", "RAFT ADDR", "HTTP ADDR"
    ));
    for m in &s.members {
        out.push_str(&format!(
            "{:>4}  {:<10} {:<7} {:<9} {:>5} {:>10} {:>10} {:>6}  {:<22} {:<22}\n",
            m.id,
            m.role,
            if m.voter { "voter" } else { "learner" },
            if m.reachable { "yes" } else { "NO" },
            m.term,
            m.last_log_index,
            m.applied_index,
            m.replication_lag.map_or("-".to_string(), |l| l.to_string()),
            m.raft_addr,
            m.http_addr
        ));
    }
    if s.prometheus_config_mismatch {
        out.push_str("WARNING: members run different Prometheus configuration files:\n");
        for m in s.members.iter().filter(|m| m.reachable) {
            out.push_str(&format!("  node {}: digest {}\n", m.id, m.prometheus_config_digest));
        }
    }
    out
}

/// Runs one cluster command.
pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status(a) => {
            print!("{}", render_status(&fetch_status(&a).await?));
            Ok(())
        }
        ClusterCmd::AddLearner {
            addr,
            node_id,
            raft_addr,
            http_addr,
        } => {
            post(
                &addr,
                "/api/v1/admin/cluster/add-learner",
                &AdminRequest {
                    node_id,
                    raft_addr,
                    http_addr,
                },
            )
            .await
        }
        ClusterCmd::Promote { addr, node_id } => {
            post(
                &addr,
                "/api/v1/admin/cluster/promote",
                &AdminRequest {
                    node_id,
                    ..Default::default()
                },
            )
            .await
        }
        ClusterCmd::Remove { addr, node_id } => {
            post(
                &addr,
                "/api/v1/admin/cluster/remove",
                &AdminRequest {
                    node_id,
                    ..Default::default()
                },
            )
            .await
        }
        ClusterCmd::TransferLeader { addr, node_id } => {
            post(
                &addr,
                "/api/v1/admin/cluster/transfer-leader",
                &AdminRequest {
                    node_id,
                    ..Default::default()
                },
            )
            .await
        }
    }
}
