//! Restore: builds the data directory of the first node of a new cluster
//! from a backup, like `etcdutl snapshot restore`.
//!
//! The TSDB is imported into a fresh sled database and its checkpoint meta
//! is rewritten to carry the backup's applied log id with a membership of
//! only the new node. The Raft log is left empty with `last_purged` set to
//! that log id and a vote in the backup's term for the new node, so
//! openraft starts with the state machine at the backup's index, an empty
//! log after it, and elects the node (term + 1) as the only voter. Nodes
//! added later catch up by snapshot, since the log before that index does
//! not exist. Everything is built in a staging directory and moved into
//! place at the end, so a failed restore leaves no half-made data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftLogStorage;

use super::crypto::KeySource;
use super::format::{BackupReader, Header};
use super::progress::{CountingReader, Progress};
use super::Error;
use crate::kv::{Kv, SledKv, SledOptions};
use crate::raft::log_store::LogStore;
use crate::raft::{NodeInfo, StoredMembership, Vote};
use crate::tsdb::{Db, Digest, HeadOptions};

/// Entries of a data dir that belong to promraft (what `--force` removes).
pub const DATA_DIR_ENTRIES: &[&str] = &["tsdb", "log", "snapshots", super::source::BACKUP_DIR, STAGING];

/// Staging directory inside the target data dir.
const STAGING: &str = ".restore-staging";

/// What to restore and as which node.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup file.
    pub input: PathBuf,
    /// Key for an encrypted backup.
    pub key: Option<KeySource>,
    /// Data directory to create.
    pub data_dir: PathBuf,
    /// Id of the new node.
    pub node_id: u64,
    /// Its HTTP address.
    pub http_addr: String,
    /// Its Raft address.
    pub raft_addr: String,
    /// Replace promraft's data in a non-empty directory.
    pub force: bool,
}

/// What a restore produced.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup's header.
    pub header: Header,
    /// Digest of the restored TSDB (compare with the source's at the
    /// backup's index).
    pub digest: Digest,
}

/// Refuses a data dir that holds anything, unless `force`, in which case
/// promraft's own entries in it are removed.
fn prepare_data_dir(dir: &Path, force: bool) -> Result<(), Error> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        if let Some(first) = names.first() {
            if !force {
                return Err(Error::DataDirNotEmpty {
                    dir: dir.display().to_string(),
                    entry: first.clone(),
                });
            }
            for n in DATA_DIR_ENTRIES {
                let p = dir.join(n);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else if p.exists() {
                    std::fs::remove_file(&p)?;
                }
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn open_sled(path: &Path) -> Result<Arc<SledKv>, Error> {
    let opts = SledOptions {
        high_throughput: true,
        ..SledOptions::default()
    };
    SledKv::open(path, opts)
        .map(Arc::new)
        .map_err(|e| Error::Restore(format!("opening {}: {e}", path.display())))
}

/// Imports the backup into `staging/tsdb`, rewriting its Raft state for a
/// one-member cluster. Returns the header, the applied log id and the digest.
fn import_tsdb(opts: &RestoreOptions, staging: &Path) -> Result<(Header, crate::raft::LogId, Digest), Error> {
    let f = std::fs::File::open(&opts.input)
        .map_err(|e| Error::Restore(format!("opening {}: {e}", opts.input.display())))?;
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, f), opts.key.as_ref())?;
    let header = reader.header().clone();
    let mut progress = Progress::new("restore", header.content_bytes, header.series);
    let sled = open_sled(&staging.join("tsdb"))?;
    let (db, _) = Db::open_kv(sled.clone(), HeadOptions::default()).map_err(Error::from_tsdb)?;
    let upper = {
        let mut counting = CountingReader::new(&mut reader, &mut progress);
        // The index is set again when the restored node opens its TSDB.
        let upper = db.import(&mut counting, |_| 0).map_err(Error::from_tsdb)?;
        let (bytes, series) = counting.done();
        progress.update(bytes, series);
        upper
    };
    // The export ends with its own end record; the backup's end frame and
    // whole-file checksum follow and must be checked before trusting it.
    reader.drain()?;
    let upper = upper.ok_or_else(|| Error::Corrupt("backup holds no checkpoint".into()))?;
    let kept = crate::raft::state_machine::decode_upper(&upper).map_err(|e| Error::Corrupt(e.to_string()))?;
    let applied = kept
        .applied
        .ok_or_else(|| Error::Corrupt("backup's checkpoint has no applied index".into()))?;
    if applied.index != header.applied_index {
        return Err(Error::Corrupt(format!(
            "header says index {} but the checkpoint is at {}",
            header.applied_index, applied.index
        )));
    }
    let me = NodeInfo {
        raft_addr: opts.raft_addr.clone(),
        http_addr: opts.http_addr.clone(),
    };
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([opts.node_id])],
        BTreeMap::from([(opts.node_id, me)]),
    )
    .map_err(|e| Error::Restore(format!("membership: {e}")))?;
    let stored = StoredMembership::new(Some(applied), membership);
    // The HA replicas elected when the backup was taken stay elected.
    db.checkpoint(crate::raft::state_machine::encode_upper(
        Some(applied),
        stored,
        &kept.ha,
    ))
    .map_err(Error::from_tsdb)?;
    let digest = db.digest().map_err(Error::from_tsdb)?;
    if digest.series != header.series {
        return Err(Error::Corrupt(format!(
            "restored {} series but the header says {}",
            digest.series, header.series
        )));
    }
    progress.finish(&format!(
        "{} series, {} samples at index {}",
        digest.series, digest.samples, header.applied_index
    ));
    drop(db);
    sled.flush()
        .map_err(|e| Error::Restore(format!("flushing the TSDB: {e}")))?;
    Ok((header, applied, digest))
}

/// Writes the Raft state: an empty log purged up to `applied`, and a vote
/// for this node in `applied`'s term.
async fn init_log(staging: &Path, node_id: u64, applied: crate::raft::LogId) -> Result<(), Error> {
    let sled = open_sled(&staging.join("log"))?;
    let mut log = LogStore::open_kv(sled.clone()).map_err(|e| Error::Restore(format!("opening the log: {e}")))?;
    let vote = Vote::new(applied.leader_id.term, node_id);
    log.save_vote(&vote)
        .await
        .map_err(|e| Error::Restore(format!("writing the vote: {e}")))?;
    log.purge(applied)
        .await
        .map_err(|e| Error::Restore(format!("writing the purge point: {e}")))?;
    sled.flush()
        .map_err(|e| Error::Restore(format!("flushing the log: {e}")))?;
    Ok(())
}

/// Restores a backup into a new data directory.
pub async fn restore(opts: RestoreOptions) -> Result<RestoreReport, Error> {
    if opts.node_id == 0 {
        return Err(Error::Restore("--node-id must be a positive integer".into()));
    }
    prepare_data_dir(&opts.data_dir, opts.force)?;
    let staging = opts.data_dir.join(STAGING);
    let res = async {
        std::fs::create_dir_all(&staging)?;
        let o = opts.clone();
        let st = staging.clone();
        let (header, applied, digest) = tokio::task::spawn_blocking(move || import_tsdb(&o, &st))
            .await
            .map_err(|e| Error::Restore(format!("restore task: {e}")))??;
        init_log(&staging, opts.node_id, applied).await?;
        for part in ["tsdb", "log"] {
            std::fs::rename(staging.join(part), opts.data_dir.join(part))?;
        }
        std::fs::remove_dir_all(&staging)?;
        if let Ok(d) = std::fs::File::open(&opts.data_dir) {
            let _ = d.sync_all();
        }
        Ok(RestoreReport { header, digest })
    }
    .await;
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    res
}
