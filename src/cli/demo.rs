//! `promraft demo`: a local three-node cluster as three child processes on
//! loopback, fed with the nodes' own metrics, stopped cleanly on Ctrl-C.
//!
//! The demo is a user of the product like any other: it starts `promraft
//! serve` processes, scrapes their `/metrics` and sends the samples over
//! remote write to whichever node is up, so killing a node (even the
//! leader) shows failover with no gap in the data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use prost::Message;

use crate::prompb;

/// Nodes in the demo cluster.
const DEMO_NODES: u64 = 3;
/// How often the demo scrapes and writes.
const FEED_INTERVAL: Duration = Duration::from_secs(5);

/// Arguments of `promraft demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the three nodes' data and logs (kept between runs).
    #[arg(long, default_value = "promraft-demo")]
    pub data_dir: PathBuf,
    /// First HTTP port; the nodes use this and the next two. If taken, free
    /// ports are picked.
    #[arg(long, default_value_t = 9091)]
    pub http_port: u16,
    /// First Raft port; the nodes use this and the next two.
    #[arg(long, default_value_t = 9191)]
    pub raft_port: u16,
    /// Delete the data directory first.
    #[arg(long)]
    pub fresh: bool,
}

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn ports(first: u16) -> anyhow::Result<Vec<u16>> {
    let wanted: Vec<u16> = (0..DEMO_NODES as u16).map(|i| first.saturating_add(i)).collect();
    if wanted.iter().all(|p| port_free(*p)) {
        return Ok(wanted);
    }
    (0..DEMO_NODES).map(|_| free_port()).collect()
}

/// Parses the Prometheus text exposition format (what `/metrics` serves)
/// into label sets and values; comments and malformed lines are skipped.
pub fn parse_exposition(text: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_end, mut labels) = match line.find(['{', ' ']) {
            Some(i) => (i, Vec::new()),
            None => continue,
        };
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            let Some((parsed, after)) = parse_labels(&rest[1..]) else {
                continue;
            };
            labels = parsed;
            rest = after;
        }
        let mut fields = rest.split_whitespace();
        let Some(v) = fields.next() else { continue };
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => match v.parse() {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        labels.push(("__name__".to_string(), name.to_string()));
        out.push((labels, value));
    }
    out
}

fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((name, value));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

fn remote_write_body(samples: &[(Vec<(String, String)>, f64)], instance: &str, t_ms: i64) -> Vec<u8> {
    let timeseries = samples
        .iter()
        .map(|(labels, v)| {
            let mut l: Vec<prompb::Label> = labels
                .iter()
                .map(|(n, v)| prompb::Label {
                    name: n.clone(),
                    value: v.clone(),
                })
                .chain([
                    prompb::Label {
                        name: "instance".into(),
                        value: instance.to_string(),
                    },
                    prompb::Label {
                        name: "job".into(),
                        value: "promraft".into(),
                    },
                ])
                .collect();
            l.sort_by(|a, b| a.name.cmp(&b.name));
            l.dedup_by(|a, b| a.name == b.name);
            prompb::TimeSeries {
                labels: l,
                samples: vec![prompb::Sample {
                    value: *v,
                    timestamp: t_ms,
                }],
                ..Default::default()
            }
        })
        .collect();
    let req = prompb::WriteRequest {
        timeseries,
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

struct DemoNode {
    id: u64,
    http: String,
    child: Child,
}

fn terminate(nodes: &mut [DemoNode]) {
    for n in nodes.iter() {
        // SAFETY: kill(2) on a pid we spawned; errors (already gone) are fine.
        unsafe { libc::kill(n.child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in nodes.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = n.child.try_wait() {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    if a.fresh {
        let _ = std::fs::remove_dir_all(&a.data_dir);
    }
    std::fs::create_dir_all(&a.data_dir).with_context(|| format!("creating {}", a.data_dir.display()))?;
    let mut nodes = spawn_nodes(&a)?;
    let leader = match wait_for_leader(&nodes).await {
        Some(l) => l,
        None => {
            terminate(&mut nodes);
            bail!("no leader after 30 s; see the logs in {}", a.data_dir.display());
        }
    };
    print_banner(&a, &nodes, leader);
    feed_until_ctrl_c(&nodes, leader).await?;
    println!("\nstopping the three nodes...");
    terminate(&mut nodes);
    println!(
        "stopped. Data kept in {} (run with --fresh to start over).",
        a.data_dir.display()
    );
    Ok(())
}

/// Starts the three `promraft serve` children, each logging to its own file.
fn spawn_nodes(a: &DemoArgs) -> anyhow::Result<Vec<DemoNode>> {
    let exe = std::env::current_exe().context("finding the promraft binary")?;
    let http_ports = ports(a.http_port)?;
    let raft_ports = ports(a.raft_port)?;
    let initial: Vec<String> = (1..=DEMO_NODES)
        .map(|i| format!("{i}=127.0.0.1:{}", raft_ports[i as usize - 1]))
        .collect();
    let initial = initial.join(",");
    let mut nodes = Vec::new();
    for i in 1..=DEMO_NODES {
        let dir = a.data_dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(a.data_dir.join(format!("node-{i}.log")))?;
        let http = format!("127.0.0.1:{}", http_ports[i as usize - 1]);
        let child = Command::new(&exe)
            .args(["serve", "--node-id", &i.to_string(), "--data-dir"])
            .arg(&dir)
            .args([
                "--http-addr",
                &http,
                "--raft-addr",
                &format!("127.0.0.1:{}", raft_ports[i as usize - 1]),
            ])
            .args(["--initial-cluster", &initial])
            // The demo shows membership changes and backups.
            .arg("--web.enable-admin-api")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {i}"));
        match child {
            Ok(child) => nodes.push(DemoNode { id: i, http, child }),
            Err(e) => {
                terminate(&mut nodes);
                return Err(e);
            }
        }
    }
    Ok(nodes)
}

/// The leader's id, once the first node reports one (within 30 s).
async fn wait_for_leader(nodes: &[DemoNode]) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = super::cluster::fetch_status(&super::cluster::AddrArg::plain(&nodes[0].http)).await {
            if s.leader_id.is_some() {
                return s.leader_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// What the demo prints once the cluster is up: the nodes and what to try.
fn print_banner(a: &DemoArgs, nodes: &[DemoNode], leader: u64) {
    println!(
        "promraft demo: a three-node cluster on loopback (data in {})\n",
        a.data_dir.display()
    );
    for n in nodes {
        println!(
            "  node {}  pid {:>7}  http://{}  (log: {}/node-{}.log){}",
            n.id,
            n.child.id(),
            n.http,
            a.data_dir.display(),
            n.id,
            if n.id == leader { "  <- leader" } else { "" }
        );
    }
    let any = &nodes[0].http;
    let leader_pid = nodes.iter().find(|n| n.id == leader).map_or(0, |n| n.child.id());
    println!(
        "\nIt is fed with the nodes' own metrics every {} s. Try:",
        FEED_INTERVAL.as_secs()
    );
    println!("  curl -s 'http://{any}/api/v1/query?query=promraft_raft_is_leader'");
    println!(
        "  curl -s 'http://{}/api/v1/query?query=up&consistency=linearizable'",
        nodes[2].http
    );
    println!("  promraft cluster status --addr {any}");
    println!("  kill -9 {leader_pid}        # the leader: the survivors elect a new one and keep taking writes");
    println!("  Grafana / promtool: point them at http://{any}\n");
    println!("Ctrl-C stops all three nodes.");
}

/// Every `FEED_INTERVAL`, scrapes each node's `/metrics` and remote-writes
/// it to the nodes in turn (skipping those that are down), and reports
/// leader changes; returns on Ctrl-C.
async fn feed_until_ctrl_c(nodes: &[DemoNode], leader: u64) -> anyhow::Result<()> {
    let client = crate::client::ClientArgs::default().http_client(|b| b.timeout(Duration::from_secs(3)))?;
    let mut tick = tokio::time::interval(FEED_INTERVAL);
    let mut last_leader = Some(leader);
    let mut next_target = 0usize;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        for n in nodes {
            let Ok(resp) = client.get(format!("http://{}/metrics", n.http)).send().await else {
                continue;
            };
            let Ok(text) = resp.text().await else { continue };
            let body = remote_write_body(&parse_exposition(&text), &n.http, now);
            for attempt in 0..nodes.len() {
                let target = &nodes[(next_target + attempt) % nodes.len()].http;
                let sent = client
                    .post(format!("http://{target}/api/v1/write"))
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body.clone())
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
            }
            next_target = (next_target + 1) % nodes.len();
        }
        for n in nodes {
            if let Ok(s) = super::cluster::fetch_status(&super::cluster::AddrArg::plain(&n.http)).await {
                if s.leader_id != last_leader {
                    if let Some(l) = s.leader_id {
                        println!("leader is now node {l}");
                    }
                    last_leader = s.leader_id;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let text = "# HELP x y\n# TYPE x counter\nx 1\ny{a=\"b\",c=\"d\\\"e\"} 2.5\nz{le=\"+Inf\"} +Inf\nbad line\n";
        let p = parse_exposition(text);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].1, 1.0);
        assert_eq!(p[1].0[1], ("c".to_string(), "d\"e".to_string()));
        assert!(p[2].1.is_infinite());
    }
}
