//! `promraft backup`, `promraft backup verify` and `promraft restore`.
//!
//! `backup` downloads the stream of `GET /api/v1/admin/backup` from any
//! node, checking every frame as it arrives, and writes the file (encrypted
//! when a key is given) through `<out>.partial`, fsynced and renamed only
//! once the whole stream has been checked; any failure removes the partial
//! file. The key never leaves the client.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};

use super::crypto::KeySource;
use super::format::{BackupReader, BackupWriter, Header, Kdf};
use super::progress::{CountingReader, Progress};
use super::restore::{restore, RestoreOptions};
use super::source::partial_path;
use super::Error;
use crate::client::ClientArgs;
use crate::tsdb::Db;

/// How long the download may sit without receiving a byte. The node spools
/// its checkpoint before the first byte; that takes seconds for large heads.
pub const DOWNLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Chunks buffered between the network and the file writer.
const DOWNLOAD_CHANNEL_CHUNKS: usize = 16;

/// Key options shared by the commands.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyArgs {
    /// File with the 32-byte key (raw, or 64 hex digits).
    #[arg(long, visible_alias = "encrypt-key-file", conflicts_with = "passphrase_env")]
    pub key_file: Option<PathBuf>,
    /// Name of an environment variable holding a passphrase (stretched with Argon2id).
    #[arg(long)]
    pub passphrase_env: Option<String>,
}

impl KeyArgs {
    /// The key source, if any.
    pub fn source(&self) -> Result<Option<KeySource>, Error> {
        match (&self.key_file, &self.passphrase_env) {
            (Some(p), _) => Ok(Some(KeySource::from_key_file(p)?)),
            (None, Some(v)) => Ok(Some(KeySource::from_env(v)?)),
            (None, None) => Ok(None),
        }
    }
}

/// `promraft backup --addr <node> --out <file>` or `promraft backup verify <file>`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    /// `verify`.
    #[command(subcommand)]
    pub command: Option<BackupCmd>,
    /// HTTP address of any node, host:port (or a URL).
    #[arg(long, required = true)]
    pub addr: Option<String>,
    /// The backup file to write.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Encrypt with this key (`--encrypt-key-file`) or passphrase.
    #[command(flatten)]
    pub key: KeyArgs,
    /// TLS and basic auth towards the node.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Limit the download to this many bytes per second (0: no limit), to
    /// spare the node's network and disk.
    #[arg(long, default_value_t = 0)]
    pub max_rate: u64,
}

/// Subcommands of `backup`.
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Check every checksum of a backup and print what it holds, without restoring.
    Verify(VerifyArgs),
}

/// `promraft backup verify <file>`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Key of an encrypted backup.
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `promraft restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Key of an encrypted backup.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Data directory of the new node (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Id of the new node.
    #[arg(long)]
    pub node_id: u64,
    /// HTTP address the new node will serve on, host:port.
    #[arg(long)]
    pub http_addr: String,
    /// Raft address the new node will listen on, host:port.
    #[arg(long)]
    pub raft_addr: String,
    /// Restore into a non-empty directory, replacing promraft's data in it.
    #[arg(long)]
    pub force: bool,
}

fn time_str(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map_or_else(
        || "-".to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// Human-readable description of a header.
pub fn describe(h: &Header) -> String {
    let members: Vec<String> = h
        .members
        .iter()
        .map(|m| {
            format!(
                "{} ({}, raft {}, http {})",
                m.id,
                if m.voter { "voter" } else { "learner" },
                m.raft_addr,
                m.http_addr
            )
        })
        .collect();
    let enc = match &h.encryption {
        None => "none".to_string(),
        Some(e) => match &e.kdf {
            Kdf::RawKey => format!("{} with a key file", e.cipher),
            Kdf::Argon2id { m_kib, t, p, .. } => {
                format!("{} with a passphrase (argon2id m={m_kib} KiB t={t} p={p})", e.cipher)
            }
        },
    };
    format!(
        "  format version {}, written by promraft {} at {}\n  cluster {}, node {}, applied index {} (term {}, leader {})\n  members: {}\n  time range: {} .. {}\n  series {}, samples {}, chunks {}, records {}\n  content {} bytes, compression {}, encryption {}",
        h.format_version,
        h.promraft_version,
        time_str(Some(h.created_unix_ms)),
        h.cluster_id,
        h.node_id,
        h.applied_index,
        h.applied_term,
        h.applied_leader,
        members.join("; "),
        time_str(h.min_time_ms),
        time_str(h.max_time_ms),
        h.series,
        h.samples,
        h.chunks,
        h.records,
        h.content_bytes,
        h.compression,
        enc
    )
}

/// Why the backup download stopped part way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (after {received} bytes from {addr})")]
pub struct DownloadError {
    /// The transfer error.
    pub reason: String,
    /// Bytes received before it.
    pub received: u64,
    /// The node downloaded from.
    pub addr: String,
}

/// Reads the network chunks the download task forwards.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, DownloadError>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(format!("download failed: {e}"))),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Writes what arrives on `input` (a backup stream) to `out` through a
/// partial file, re-encoding with `key`. Blocking.
fn write_download(input: impl Read, out: &Path, key: Option<&KeySource>) -> Result<(Header, u64, f64), Error> {
    let partial = partial_path(out);
    let res = (|| {
        let werr = |e: std::io::Error| Error::Write {
            path: partial.display().to_string(),
            source: e,
        };
        let mut reader = BackupReader::open(input, None)?;
        let header = reader.header().clone();
        let mut progress = Progress::new("backup", header.content_bytes, header.series);
        let f = std::fs::File::create(&partial).map_err(werr)?;
        let mut w =
            BackupWriter::new(BufWriter::with_capacity(1 << 20, f), header.clone(), key).map_err(|e| match e {
                Error::Io(io) => werr(io),
                e => e,
            })?;
        let header = w.header().clone();
        let mut counting = CountingReader::new(&mut reader, &mut progress);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = counting.read(&mut buf).map_err(Error::from_io)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).map_err(|e| match Error::from_io(e) {
                Error::Io(io) => werr(io),
                e => e,
            })?;
        }
        let (bytes, series) = counting.done();
        if !reader.is_done() {
            return Err(Error::Truncated {
                what: "download".into(),
                offset: bytes,
            });
        }
        let (bw, size) = w.finish().map_err(|e| match e {
            Error::Io(io) => werr(io),
            e => e,
        })?;
        let f = bw.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&partial, out).map_err(werr)?;
        progress.update(bytes, series);
        let secs = progress.elapsed_secs();
        progress.finish(&format!("{} bytes of content, {} series", bytes, series));
        Ok((header, size, secs))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    res
}

/// `promraft backup ...`.
pub async fn run_backup(a: BackupArgs) -> anyhow::Result<()> {
    match a.command {
        Some(BackupCmd::Verify(v)) => return run_verify(v).await,
        None => {}
    }
    let (Some(addr), Some(out)) = (a.addr, a.out) else {
        bail!("--addr and --out are required")
    };
    let key = a.key.source()?;
    if out.exists() {
        bail!(
            "{} exists; choose another --out (a backup never overwrites a file)",
            out.display()
        );
    }
    let url = format!("{}/api/v1/admin/backup", a.client.base_url(&addr)?);
    // Rates are of the whole command: the node's checkpoint and spool, the
    // transfer and the local write.
    let command_started = Instant::now();
    let client = a.client.http_client(|b| {
        b.connect_timeout(Duration::from_secs(10))
            .read_timeout(DOWNLOAD_IDLE_TIMEOUT)
    })?;
    let mut resp = crate::client::send(&url, client.get(&url)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(DOWNLOAD_CHANNEL_CHUNKS);
    let out2 = out.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_download(ChannelReader { rx, cur: Bytes::new() }, &out2, key.as_ref())
    });
    pump_download(&mut resp, tx, a.max_rate, &addr).await;
    let (header, size, _stream_secs) = writer
        .await
        .context("backup writer task")?
        .with_context(|| format!("backup from {addr} failed; no file was written at {}", out.display()))?;
    let encrypted = a.key.key_file.is_some() || a.key.passphrase_env.is_some();
    print_backup_summary(&header, &out, size, encrypted, command_started);
    Ok(())
}

/// Moves the response body to the writer task, at most `max_rate` bytes per
/// second (0: unlimited). A transfer error is handed on to the writer, which
/// then fails the backup with it; the channel closes when this returns.
async fn pump_download(
    resp: &mut reqwest::Response,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, DownloadError>>,
    max_rate: u64,
    addr: &str,
) {
    let started = Instant::now();
    let mut received = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => {
                received += b.len() as u64;
                if tx.send(Ok(b)).await.is_err() {
                    break; // the writer stopped; its error says why
                }
                if max_rate > 0 {
                    let due = Duration::from_secs_f64(received as f64 / max_rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let err = DownloadError {
                    reason: e.to_string(),
                    received,
                    addr: addr.to_string(),
                };
                let _ = tx.send(Err(err)).await;
                break;
            }
        }
    }
}

/// What `promraft backup` prints once the file is written.
fn print_backup_summary(header: &Header, out: &Path, size: u64, encrypted: bool, command_started: Instant) {
    println!(
        "backup of node {} at index {} written to {} ({} bytes{})",
        header.node_id,
        header.applied_index,
        out.display(),
        size,
        if encrypted { ", encrypted" } else { "" }
    );
    println!("{}", describe(header));
    let secs = command_started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "  rate: {:.1} MB/s of content, {:.0} samples/s, {:.2} s in all",
        header.content_bytes as f64 / 1e6 / secs,
        header.samples as f64 / secs,
        secs
    );
}

/// Checks a backup file completely; returns its header. Blocking.
pub fn verify_file(file: &Path, key: Option<&KeySource>) -> Result<Header, Error> {
    let f = std::fs::File::open(file).map_err(|e| Error::Http(format!("opening {}: {e}", file.display())))?;
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, f), key)?;
    let header = reader.header().clone();
    let mut progress = Progress::new("verify", header.content_bytes, header.series);
    let summary = {
        let mut counting = CountingReader::new(&mut reader, &mut progress);
        let s = Db::summarize_export(&mut counting).map_err(Error::from_tsdb)?;
        let (bytes, series) = counting.done();
        progress.update(bytes, series);
        s
    };
    reader.drain()?;
    let mismatch =
        |what: &str, h: String, c: String| Error::Corrupt(format!("header says {what} {h} but the content holds {c}"));
    if summary.series != header.series {
        return Err(mismatch(
            "series",
            header.series.to_string(),
            summary.series.to_string(),
        ));
    }
    if summary.samples != header.samples {
        return Err(mismatch(
            "samples",
            header.samples.to_string(),
            summary.samples.to_string(),
        ));
    }
    if summary.chunks != header.chunks || summary.records != header.records {
        return Err(mismatch(
            "chunks/records",
            format!("{}/{}", header.chunks, header.records),
            format!("{}/{}", summary.chunks, summary.records),
        ));
    }
    if (summary.min_time_ms, summary.max_time_ms) != (header.min_time_ms, header.max_time_ms) {
        return Err(mismatch(
            "time range",
            format!("{:?}", (header.min_time_ms, header.max_time_ms)),
            format!("{:?}", (summary.min_time_ms, summary.max_time_ms)),
        ));
    }
    let applied = crate::raft::state_machine::decode_upper(&summary.upper)
        .map_err(|e| Error::Corrupt(e.to_string()))?
        .applied;
    if applied.map(|l| l.index) != Some(header.applied_index) {
        return Err(mismatch(
            "applied index",
            header.applied_index.to_string(),
            format!("{applied:?}"),
        ));
    }
    progress.finish("every checksum matches");
    Ok(header)
}

/// `promraft backup verify`.
pub async fn run_verify(a: VerifyArgs) -> anyhow::Result<()> {
    let key = a.key.source()?;
    let file = a.file.clone();
    let header = tokio::task::spawn_blocking(move || verify_file(&file, key.as_ref()))
        .await
        .context("verify task")?
        .with_context(|| format!("backup {} is NOT valid", a.file.display()))?;
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    println!("backup {}: OK ({} bytes)", a.file.display(), size);
    println!("{}", describe(&header));
    Ok(())
}

/// `promraft restore`.
pub async fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let key = a.key.source()?;
    let opts = RestoreOptions {
        input: a.input.clone(),
        key,
        data_dir: a.data_dir.clone(),
        node_id: a.node_id,
        http_addr: a.http_addr.clone(),
        raft_addr: a.raft_addr.clone(),
        force: a.force,
    };
    let started = Instant::now();
    let report = restore(opts)
        .await
        .with_context(|| format!("restoring {}", a.input.display()))?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let h = &report.header;
    println!(
        "restored {} into {} as node {} (a one-member cluster at index {})",
        a.input.display(),
        a.data_dir.display(),
        a.node_id,
        h.applied_index
    );
    println!("{}", describe(h));
    println!(
        "  digest {} ({} series, {} samples)",
        report.digest.digest, report.digest.series, report.digest.samples
    );
    println!(
        "  rate: {:.1} MB/s of content, {:.0} samples/s, {:.2} s in all",
        h.content_bytes as f64 / 1e6 / secs,
        h.samples as f64 / secs,
        secs
    );
    println!(
        "next: promraft serve --node-id {} --data-dir {} --http-addr {} --raft-addr {}; then add nodes with `promraft cluster add-learner` and `promote` (they catch up by snapshot)",
        a.node_id,
        a.data_dir.display(),
        a.http_addr,
        a.raft_addr
    );
    Ok(())
}
