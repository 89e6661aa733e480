//! `promraft cluster ...`: membership and leadership changes and the status
//! table, over any node's HTTP admin API (the node relays to the leader).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::api::cluster::{AdminRequest, ClusterStatus};

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

/// The node to talk to.
#[derive(Debug, Args)]
pub struct AddrArg {
    /// HTTP address of any node, host:port (or a URL).
    #[arg(long)]
    pub addr: String,
}

fn base(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn post(addr: &str, path: &str, req: &AdminRequest) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(ADMIN_CALL_DEADLINE).build()?;
    let url = format!("{}{path}", base(addr));
    let resp = client
        .post(&url)
        .json(req)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            body.get("error").and_then(|e| e.as_str()).unwrap_or("(no message)")
        );
    }
    println!("{}", body["data"]["message"].as_str().unwrap_or("done"));
    Ok(())
}

/// Fetches `/api/v1/status/cluster` from `addr`.
pub async fn fetch_status(addr: &str) -> anyhow::Result<ClusterStatus> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let url = format!("{}/api/v1/status/cluster", base(addr));
    let v: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await?;
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
    out
}

/// Runs one cluster command.
pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status(a) => {
            print!("{}", render_status(&fetch_status(&a.addr).await?));
            Ok(())
        }
        ClusterCmd::AddLearner {
            addr,
            node_id,
            raft_addr,
            http_addr,
        } => {
            post(
                &addr.addr,
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
                &addr.addr,
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
                &addr.addr,
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
                &addr.addr,
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
