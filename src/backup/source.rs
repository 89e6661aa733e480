//! The node side of a backup: pick a consistent point, spool it, describe
//! it, and write it out as a backup file.
//!
//! The consistent point is a checkpoint: the node asks openraft for a
//! snapshot and waits until the snapshot covers at least the index it had
//! applied when the request came in; `Db::export` then writes exactly one
//! checkpoint (it holds the checkpoint lock), whose meta carries the applied
//! log id and membership. The export goes to a spool file first, as for Raft
//! snapshots: streaming it straight to a slow client would hold the
//! checkpoint lock, and with it the node's checkpoints, for as long as the
//! client takes. Writes continue meanwhile; they land after the backup's
//! index. This file does not parse HTTP.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crypto::KeySource;
use super::format::{BackupWriter, Header, Member, FORMAT_VERSION};
use super::Error;
use crate::raft::state_machine::Applied;
use crate::raft::Raft;
use crate::tsdb::{Db, ExportSummary};

/// What a backup needs of a node: its id, data directory, Raft handle (to
/// ask for a checkpoint), TSDB and applied index.
#[derive(Clone)]
pub struct BackupSource {
    /// This node's id (written into the header).
    pub node_id: u64,
    /// The data directory; backups go under [`BACKUP_DIR`] in it.
    pub data_dir: PathBuf,
    /// The Raft handle.
    pub raft: Raft,
    /// The local TSDB replica.
    pub db: Arc<Db>,
    /// Applied index, updated by the state machine.
    pub applied: tokio::sync::watch::Receiver<Applied>,
}

/// Directory under the data dir for spooled exports and admin snapshots.
pub const BACKUP_DIR: &str = "backups";

/// File name prefix of a spooled export.
const SPOOL_PREFIX: &str = "spool-";

/// How long a backup may wait for the checkpoint that covers its index.
/// Checkpointing a large head takes seconds; a minute means something is
/// wrong (disk, or a node that cannot apply).
pub const CHECKPOINT_WAIT: Duration = Duration::from_secs(60);

/// How often the snapshot is asked for again while waiting (a trigger that
/// arrives while another snapshot is being built is dropped by openraft).
const TRIGGER_RETRY: Duration = Duration::from_secs(1);

/// A spooled checkpoint with its header, ready to be written out. The spool
/// file is deleted when this is dropped.
pub struct Prepared {
    /// What the backup holds.
    pub header: Header,
    spool: PathBuf,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool);
    }
}

/// The backup directory of a data dir, created if missing.
pub fn backup_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    let d = data_dir.join(BACKUP_DIR);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Removes spool files left by other (dead) processes.
fn remove_stale_spools(dir: &Path) {
    let mine = format!("{SPOOL_PREFIX}{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(SPOOL_PREFIX) && !name.starts_with(&mine) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Identifies a membership: xxh3-64 of the sorted voter ids and Raft
/// addresses. promraft keeps no cluster id of its own yet, so this names
/// the cluster's membership at the backup's index, not its history.
pub fn cluster_id(members: &[Member]) -> String {
    let mut v: Vec<String> = members
        .iter()
        .filter(|m| m.voter)
        .map(|m| format!("{}={}", m.id, m.raft_addr))
        .collect();
    v.sort();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(v.join(",").as_bytes()))
}

/// Builds the header fields that come from the checkpoint's content.
pub fn header_from_summary(node_id: u64, s: &ExportSummary, content_bytes: u64) -> Result<Header, Error> {
    let kept = crate::raft::state_machine::decode_upper(&s.upper).map_err(|e| Error::Corrupt(e.to_string()))?;
    let (applied, membership) = (kept.applied, kept.membership);
    let applied = applied.ok_or_else(|| Error::Source("the checkpoint has no applied index".into()))?;
    let m = membership.membership();
    let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
    let members: Vec<Member> = m
        .nodes()
        .map(|(&id, n)| Member {
            id,
            raft_addr: n.raft_addr.clone(),
            http_addr: n.http_addr.clone(),
            voter: voters.contains(&id),
        })
        .collect();
    Ok(Header {
        format_version: FORMAT_VERSION,
        created_unix_ms: chrono::Utc::now().timestamp_millis(),
        promraft_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster_id: cluster_id(&members),
        node_id,
        applied_term: applied.leader_id.term,
        // Standard leader ids: a committed log id keeps only its term.
        applied_leader: 0,
        applied_index: applied.index,
        members,
        min_time_ms: s.min_time_ms,
        max_time_ms: s.max_time_ms,
        series: s.series,
        samples: s.samples,
        chunks: s.chunks,
        records: s.records,
        content_bytes,
        compression: "snappy".into(),
        encryption: None,
    })
}

/// Exports the node's latest checkpoint into a spool file in `dir` and
/// summarizes it. Blocking.
pub fn spool_checkpoint(db: &Db, dir: &Path, node_id: u64) -> Result<Prepared, Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    remove_stale_spools(dir);
    let spool = dir.join(format!(
        "{SPOOL_PREFIX}{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let write_err = |e: std::io::Error| Error::Write {
        path: spool.display().to_string(),
        source: e,
    };
    let f = std::fs::File::create(&spool).map_err(write_err)?;
    // From here on the spool is removed on every path: `Prepared` owns it.
    let mut prepared = Prepared {
        header: header_placeholder(),
        spool: spool.clone(),
    };
    let mut w = BufWriter::with_capacity(1 << 20, f);
    db.export(&mut w).map_err(|e| match e {
        crate::tsdb::Error::Io(io) => write_err(io),
        e => Error::Tsdb(e),
    })?;
    w.flush().map_err(write_err)?;
    drop(w);
    let content_bytes = std::fs::metadata(&spool)?.len();
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(&spool)?);
    let summary = Db::summarize_export(&mut r).map_err(Error::from_tsdb)?;
    prepared.header = header_from_summary(node_id, &summary, content_bytes)?;
    Ok(prepared)
}

fn header_placeholder() -> Header {
    Header {
        format_version: FORMAT_VERSION,
        created_unix_ms: 0,
        promraft_version: String::new(),
        cluster_id: String::new(),
        node_id: 0,
        applied_term: 0,
        applied_leader: 0,
        applied_index: 0,
        members: Vec::new(),
        min_time_ms: None,
        max_time_ms: None,
        series: 0,
        samples: 0,
        chunks: 0,
        records: 0,
        content_bytes: 0,
        compression: "snappy".into(),
        encryption: None,
    }
}

/// Takes a consistent checkpoint on `node` at or after the index it has
/// applied now, and spools it.
pub async fn prepare(node: &BackupSource) -> Result<Prepared, Error> {
    use openraft::async_runtime::WatchReceiver;
    let target = node.applied.borrow().index;
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    let mut last_trigger: Option<Instant> = None;
    loop {
        // No snapshot at all is not one at index 0: a node that has not
        // checkpointed yet (just initialized) has nothing to export, and
        // its export would hold no checkpoint meta.
        let snap = node.raft.metrics().borrow_watched().snapshot.map(|l| l.index);
        if snap.is_some_and(|s| s >= target) && last_trigger.is_some() {
            break;
        }
        if last_trigger.is_none_or(|t| t.elapsed() >= TRIGGER_RETRY) {
            node.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| Error::Source(format!("asking for a checkpoint: {e}")))?;
            last_trigger = Some(Instant::now());
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Error::Source(format!(
                "no checkpoint covering index {target} within {CHECKPOINT_WAIT:?} (latest covers {})",
                snap.map_or_else(|| "nothing yet".to_string(), |s| s.to_string())
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = node.db.clone();
    let dir = backup_dir(&node.data_dir)?;
    let node_id = node.node_id;
    let prepared = tokio::task::spawn_blocking(move || spool_checkpoint(&db, &dir, node_id))
        .await
        .map_err(|e| Error::Source(format!("backup task: {e}")))??;
    if prepared.header.applied_index < target {
        return Err(Error::Source(format!(
            "the exported checkpoint is at index {}, before the requested {target}",
            prepared.header.applied_index
        )));
    }
    Ok(prepared)
}

impl Prepared {
    /// Writes the backup file to `out`; returns the file's size. Blocking.
    pub fn write_to<W: Write>(&self, out: W, key: Option<&KeySource>) -> Result<(W, u64), Error> {
        let mut w = BackupWriter::new(out, self.header.clone(), key)?;
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(&self.spool)?);
        std::io::copy(&mut r, &mut w).map_err(Error::from_io)?;
        w.finish()
    }
}

/// Writes a backup of `node` into its backup directory as
/// `<UTC time>-<index>.prbackup` (the admin snapshot endpoint); returns the
/// file name.
pub async fn snapshot_to_dir(node: &BackupSource) -> Result<String, Error> {
    let prepared = prepare(node).await?;
    let dir = backup_dir(&node.data_dir)?;
    let name = format!(
        "{}-{:016x}.prbackup",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        prepared.header.applied_index
    );
    let path = dir.join(&name);
    tokio::task::spawn_blocking(move || write_file_atomically(&prepared, &path, None))
        .await
        .map_err(|e| Error::Source(format!("backup task: {e}")))??;
    Ok(name)
}

/// Writes `prepared` to `path` through `<path>.partial`, fsynced and
/// renamed; the partial file is removed on failure.
pub fn write_file_atomically(prepared: &Prepared, path: &Path, key: Option<&KeySource>) -> Result<u64, Error> {
    let partial = partial_path(path);
    let res = (|| {
        let werr = |e: std::io::Error| Error::Write {
            path: partial.display().to_string(),
            source: e,
        };
        let f = std::fs::File::create(&partial).map_err(werr)?;
        let (w, size) = prepared
            .write_to(BufWriter::with_capacity(1 << 20, f), key)
            .map_err(|e| match e {
                Error::Io(io) => werr(io),
                e => e,
            })?;
        let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&partial, path).map_err(werr)?;
        Ok(size)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    res
}

/// `<path>.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{AppendRequest, HeadOptions, Labels, MatchOp, Matcher, SeriesSamples};

    fn db() -> Db {
        let s = std::sync::Arc::new(crate::kv::SledKv::temporary().unwrap());
        Db::open_kv(
            s,
            HeadOptions {
                ooo_window_ms: 10_000,
                ..Default::default()
            },
        )
        .unwrap()
        .0
    }

    fn write(db: &Db, series: usize, from: i64, n: i64) {
        let req = AppendRequest {
            series: (0..series)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]),
                    samples: (from..from + n).map(|k| (k * 1000, (k * i as i64) as f64)).collect(),
                })
                .collect(),
            metadata: vec![],
        };
        db.apply(&req);
    }

    /// The summary of an export agrees with the digest of the same data,
    /// across chunk cuts, out-of-order samples, retention and deletes.
    #[test]
    fn export_summary_matches_the_digest() {
        let db = db();
        let upper = crate::raft::state_machine::encode_upper(None, Default::default(), &Default::default());
        write(&db, 20, 0, 300);
        db.checkpoint(upper.clone()).unwrap();
        write(&db, 25, 300, 130);
        // Out-of-order samples within the window, then retention and a delete.
        write(&db, 3, 425, 1);
        db.apply_retention(50_000);
        let m = Matcher::new(MatchOp::Equal, "i", "3").unwrap();
        db.delete_series(&[vec![m]], i64::MIN, i64::MAX);
        db.checkpoint(upper).unwrap();
        let mut out = Vec::new();
        db.export(&mut out).unwrap();
        let s = Db::summarize_export(&mut out.as_slice()).unwrap();
        let d = db.digest().unwrap();
        assert_eq!(
            (s.series, s.samples),
            (d.series, d.samples),
            "summary {s:?} vs digest {d:?}"
        );
        assert!(s.chunks > 0);
        assert_eq!(s.max_time_ms, Some(429_000));
        // A damaged byte inside a block is found.
        let at = out.len() - 100;
        out[at] ^= 1;
        assert!(Db::summarize_export(&mut out.as_slice()).is_err());
    }
}
