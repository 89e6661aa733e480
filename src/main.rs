//! The `promraft` command line: `serve` runs a node, `bench` runs the load
//! generators and micro-benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use promraft::config::Config;
use promraft::node::Node;

/// glibc's malloc spends a third of the write path's CPU consolidating
/// memory freed on other threads (requests are decoded on HTTP threads and
/// dropped on the apply thread); mimalloc's per-thread free lists do not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "promraft",
    version,
    about = "A Prometheus-compatible time-series database replicated with Raft"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node. With no cluster flags, a node initializes itself as a
    /// one-member cluster on its first start and simply restarts afterwards.
    Serve(ServeArgs),
    /// Start a local three-node cluster (three child processes on loopback)
    /// fed with its own metrics; Ctrl-C stops it.
    Demo(promraft::cli::demo::DemoArgs),
    /// Inspect and change the cluster through any node's HTTP address.
    #[command(subcommand)]
    Cluster(promraft::cli::cluster::ClusterCmd),
    /// Benchmarks and load generators (figures are printed, not asserted).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Exit 0 if the node's HTTP API answers 200 on a health path, 1
    /// otherwise: the container health check (the image has no curl).
    Healthcheck(HealthcheckArgs),
    /// Write a consistent backup of the cluster from any node; `backup verify` checks one.
    Backup(promraft::backup::cli::BackupArgs),
    /// Create the data directory of a new cluster's first node from a backup.
    Restore(promraft::backup::cli::RestoreArgs),
    /// Export series in a time range as OpenMetrics text (for promtool and Prometheus).
    Export(promraft::backup::openmetrics::ExportArgs),
    /// Import an OpenMetrics or Prometheus text file through remote write (backfill).
    Import(promraft::backup::openmetrics::ImportArgs),
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The node's HTTP address, host:port or an http(s) URL. Default: the http_addr that
    /// `promraft serve` would use from $PROMRAFT_CONFIG and the PROMRAFT_*
    /// variables (an unspecified host such as 0.0.0.0 means loopback).
    #[arg(long)]
    addr: Option<String>,
    /// The path to ask: /-/healthy (the process serves) or /-/ready (it
    /// knows a leader and has applied what was committed).
    #[arg(long, default_value = "/-/healthy")]
    path: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
    /// TLS and basic auth towards the node.
    #[command(flatten)]
    client: promraft::client::ClientArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// This node's id: a positive integer, unique within the cluster.
    #[arg(long)]
    node_id: Option<u64>,
    /// Directory for the Raft log and the TSDB (created if missing). Only
    /// one process may use it at a time.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API (remote write, queries, /metrics), host:port.
    #[arg(long)]
    http_addr: Option<String>,
    /// Address other nodes use to reach this node's Raft service, host:port.
    #[arg(long)]
    raft_addr: Option<String>,
    /// YAML configuration file (default: $PROMRAFT_CONFIG, if set);
    /// PROMRAFT_* environment variables override it, and flags given on the
    /// command line override both. Every option is documented in
    /// deploy/promraft.example.yaml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// How long samples are kept, e.g. 15d, 12h (overrides storage.retention).
    #[arg(long)]
    retention: Option<String>,
    /// Accept samples up to this much older than a series' newest sample,
    /// e.g. 10m; 0s disables (overrides storage.out_of_order_window).
    #[arg(long)]
    out_of_order_window: Option<String>,
    /// Members of a new cluster: 1=host:port,2=host:port,3=host:port (Raft
    /// addresses; this node must be listed). Used only on the first start;
    /// a node that holds state ignores it.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Prometheus web configuration file: TLS, basic auth, response
    /// headers, and promraft's roles (overrides web_config_file; see
    /// docs/security.md). Re-read when it changes.
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
    /// Prometheus configuration file: global, scrape_configs, rule_files,
    /// alerting (overrides prometheus_config). Re-read on SIGHUP and
    /// POST /-/reload.
    #[arg(long)]
    prometheus_config: Option<PathBuf>,
    /// Serve the admin endpoints (backup, snapshot, delete_series, export,
    /// cluster membership); overrides web.enable_admin_api. Off by
    /// default, as in Prometheus.
    #[arg(long = "web.enable-admin-api")]
    web_enable_admin_api: bool,
    /// Log filter, e.g. info, debug, promraft=debug.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Mutual TLS on the Raft port: this node's certificate (PEM), used as
    /// server and client (overrides raft.tls.cert_file; all three
    /// --raft-tls-* or none).
    #[arg(long)]
    raft_tls_cert_file: Option<PathBuf>,
    /// The private key of --raft-tls-cert-file (PEM; overrides raft.tls.key_file).
    #[arg(long)]
    raft_tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to
    /// (overrides raft.tls.ca_file).
    #[arg(long)]
    raft_tls_ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Encode and decode node_exporter-like data with the XOR chunk codec.
    Chunk {
        /// Samples to encode.
        #[arg(long, default_value_t = 1_000_000)]
        samples: usize,
    },
    /// Head appends per second on one core, plus memory per series.
    Head(promraft::bench::head::HeadBenchArgs),
    /// Send node_exporter-like series over remote write to any receiver.
    Write(promraft::bench::write::WriteBenchArgs),
    /// Time PromQL queries against any Prometheus-compatible HTTP API.
    Query(promraft::bench::query::QueryBenchArgs),
    /// Time one evaluation of a group of many recording rules, in-process.
    Rules(promraft::bench::rules::RulesBenchArgs),
}

/// Defaults < file (`--config`, else `$PROMRAFT_CONFIG`) < `PROMRAFT_*`
/// environment variables: what `serve` starts from before its flags, and
/// what `healthcheck` reads to find the node.
fn config_from_file_and_env(flag: Option<&PathBuf>) -> anyhow::Result<Config> {
    let path = flag.cloned().or_else(|| {
        std::env::var_os("PROMRAFT_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let mut c = match &path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    c.apply_env(|k| std::env::var(k).ok())?;
    Ok(c)
}

fn build_config(a: ServeArgs) -> anyhow::Result<(Config, String)> {
    let mut c = config_from_file_and_env(a.config.as_ref())?;
    if let Some(v) = a.node_id {
        c.node_id = v;
    }
    if let Some(v) = a.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = a.http_addr {
        c.http_addr = v;
    }
    if let Some(v) = a.raft_addr {
        c.raft_addr = v;
    }
    if let Some(v) = a.initial_cluster {
        c.initial_cluster = v
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid --initial-cluster: {e}"))?;
    }
    if let Some(v) = a.retention {
        c.storage.retention =
            promraft::config::parse_duration(&v).map_err(|e| anyhow::anyhow!("invalid --retention: {e}"))?;
    }
    if let Some(v) = a.out_of_order_window {
        c.storage.out_of_order_window =
            promraft::config::parse_duration(&v).map_err(|e| anyhow::anyhow!("invalid --out-of-order-window: {e}"))?;
    }
    if let Some(v) = a.raft_tls_cert_file {
        c.raft.tls.cert_file = Some(v);
    }
    if let Some(v) = a.raft_tls_key_file {
        c.raft.tls.key_file = Some(v);
    }
    if let Some(v) = a.raft_tls_ca_file {
        c.raft.tls.ca_file = Some(v);
    }
    if let Some(v) = a.web_config_file {
        c.web_config_file = Some(v);
    }
    if let Some(v) = a.prometheus_config {
        c.prometheus_config = Some(v);
    }
    if a.web_enable_admin_api {
        c.web.enable_admin_api = true;
    }
    c.validate()?;
    Ok((c, a.log_level))
}

async fn serve(a: ServeArgs, placement: promraft::threads::Placement) -> anyhow::Result<()> {
    let (config, log_level) = build_config(a)?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log_level).context("invalid --log-level")?)
        .with_writer(std::io::stderr)
        .init();
    // A web config that cannot be honoured stops the start, before any
    // port is bound.
    let web = promraft::web::state::WebState::load(config.web_config_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen on http_addr {}", config.http_addr))?;
    let limits = promraft::web::server::Limits {
        connections_max: config.web.connections_max,
        header_read_timeout: config.web.header_read_timeout,
        body_read_timeout: config.web.body_read_timeout,
        tls_handshake_timeout: config.web.tls_handshake_timeout,
    };
    let node = Node::start(config, placement).await?;
    web.watch();
    spawn_reload_on_sighup(node.promcfg.clone())?;
    tracing::info!(
        node_id = node.config.node_id,
        http = %node.config.http_addr,
        tls = web.current().tls.is_some(),
        admin_api = node.config.web.enable_admin_api,
        "serving"
    );
    let app = promraft::api::router(node.clone(), web.clone());
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut http = tokio::spawn(promraft::web::server::serve(listener, app, web, limits, async {
        let _ = http_stopped.await;
    }));
    tokio::select! {
        r = &mut http => {
            r.context("HTTP server task")?;
            anyhow::bail!("HTTP server stopped");
        }
        s = stop_signal() => s?,
    }
    // The HTTP API keeps serving through the handover and the drain: writes
    // that arrive meanwhile are forwarded to the new leader.
    let outcome = node.hand_over().await;
    tracing::info!(
        ?outcome,
        drain_ms = promraft::node::SHUTDOWN_DRAIN.as_millis() as u64,
        "draining: not ready, still serving"
    );
    tokio::time::sleep(promraft::node::SHUTDOWN_DRAIN).await;
    let _ = stop_http.send(());
    // Requests in progress finish; the listener is closed.
    http.await.context("HTTP server task")?;
    if tokio::time::timeout(promraft::node::SHUTDOWN_TIMEOUT, node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = promraft::node::SHUTDOWN_TIMEOUT.as_secs(),
            "checkpoint and Raft shutdown did not finish in time"
        );
    }
    Ok(())
}

/// Re-reads the Prometheus configuration file on each SIGHUP, as
/// Prometheus does (a refused file is logged by `promcfg` and the one in
/// force stays).
fn spawn_reload_on_sighup(state: std::sync::Arc<promraft::promcfg::PromConfigState>) -> anyhow::Result<()> {
    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = state.reload();
        }
    });
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop signal: handing over, then draining and shutting down");
    Ok(())
}

/// `promraft healthcheck`: one HTTP/1.0 GET with blocking std I/O (and
/// rustls for https; no async runtime), so it is cheap to run every few
/// seconds.
fn healthcheck(a: HealthcheckArgs) -> anyhow::Result<()> {
    let addr = match a.addr {
        Some(a) => a,
        None => config_from_file_and_env(None)?.http_addr,
    };
    // A node listening on every address is reached on loopback.
    let (scheme, hostport) = match addr.split_once("://") {
        Some((s, rest)) => (format!("{s}://"), rest.to_string()),
        None => (String::new(), addr.clone()),
    };
    let target = match hostport.rsplit_once(':') {
        Some(("0.0.0.0" | "" | "[::]", port)) => format!("{scheme}127.0.0.1:{port}"),
        _ => format!("{scheme}{hostport}"),
    };
    let timeout = Duration::from_secs(a.timeout_secs.max(1));
    let status = promraft::client::blocking_get_status(&a.client, &target, &a.path, timeout)?;
    if status == 200 {
        println!("{target}{} 200", a.path);
        Ok(())
    } else if let Some(e) = promraft::client::explain_status(&format!("{target}{}", a.path), status, "") {
        Err(e.into())
    } else {
        anyhow::bail!("{target}{} answered {status}", a.path)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Healthcheck(a) = cli.command {
        return healthcheck(a);
    }
    // Raft's runtime first, from this thread of normal priority; the work
    // runtime's threads then lower theirs (see promraft::threads).
    let runtimes = promraft::threads::Runtimes::build()?;
    let rt = &runtimes.work;
    match cli.command {
        Cmd::Serve(a) => rt.block_on(serve(a, runtimes.placement())),
        Cmd::Demo(a) => rt.block_on(promraft::cli::demo::run(a)),
        Cmd::Cluster(c) => rt.block_on(promraft::cli::cluster::run(c)),
        Cmd::Backup(a) => rt.block_on(promraft::backup::cli::run_backup(a)),
        Cmd::Restore(a) => rt.block_on(promraft::backup::cli::run_restore(a)),
        Cmd::Export(a) => rt.block_on(promraft::backup::openmetrics::run_export(a)),
        Cmd::Import(a) => rt.block_on(promraft::backup::openmetrics::run_import(a)),
        Cmd::Bench(BenchCmd::Chunk { samples }) => {
            let r = promraft::bench::chunk::bench_chunk(samples);
            println!("{r}");
            Ok(())
        }
        Cmd::Bench(BenchCmd::Head(a)) => {
            promraft::bench::head::run(&a);
            Ok(())
        }
        Cmd::Bench(BenchCmd::Rules(a)) => {
            promraft::bench::rules::run(&a);
            Ok(())
        }
        Cmd::Bench(BenchCmd::Query(a)) => rt.block_on(async {
            promraft::bench::query::run(a).await?;
            Ok(())
        }),
        Cmd::Bench(BenchCmd::Write(a)) => rt.block_on(async {
            promraft::bench::write::run(a).await?;
            Ok(())
        }),
        Cmd::Healthcheck(_) => unreachable!("handled before the runtime starts"),
    }
}
