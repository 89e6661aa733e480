//! The state machine: applies committed entries to the TSDB on every node
//! and turns TSDB checkpoints into openraft snapshots.
//!
//! A snapshot is a checkpoint: building one writes the head's changes and
//! the applied log id to sled atomically (the log is then purged up to it).
//! The snapshot's data is a reference to that checkpoint
//! ([`SnapshotData::Local`]); the network streams it with [`Db::export`]
//! when a follower needs it, and a received one arrives as a file
//! ([`SnapshotData::File`]) that installing imports.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{FutureExt, Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::command::{Command, DecodedCache};
use super::ha_replicas::HaReplicas;
use super::{CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::threads::Placement;
use crate::tsdb::{Db, Writer};

/// A snapshot's data.
#[derive(Debug)]
pub enum SnapshotData {
    /// The checkpoint in this node's own store.
    Local,
    /// An export received from the leader, in a file.
    File(PathBuf),
}

/// What the state machine keeps with each checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Upper {
    applied: Option<LogId>,
    membership: StoredMembership,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The log id of the last checkpoint stored in `db` (`None` before the
/// first checkpoint). The network uses it to check that an export is the
/// snapshot openraft asked it to send.
pub fn checkpoint_log_id(db: &Db) -> io::Result<Option<LogId>> {
    match db.checkpoint_upper().map_err(io_err)? {
        Some(b) => Ok(decode_upper_record(&b)?.applied),
        None => Ok(None),
    }
}

/// Most bytes decoding the Raft state kept with a checkpoint may allocate:
/// an applied log id and a membership, a few KiB even for a large cluster.
/// Without a limit bincode allocates whatever a corrupt length prefix says
/// (a panic past `isize::MAX`, an abort on the failed allocation below).
const UPPER_DECODED_BYTES_MAX: usize = 1 << 20;

/// The Raft state kept with a checkpoint, as earlier builds wrote it
/// (advanced leader ids, no version marker).
#[derive(Deserialize)]
struct LegacyUpper {
    applied: Option<super::legacy::LogId>,
    membership: super::legacy::StoredMembership,
}

fn decode_upper_record(b: &[u8]) -> io::Result<KeptState> {
    let bad = |e: crate::codec::DecodeError| {
        io::Error::new(io::ErrorKind::InvalidData, format!("checkpoint raft state: {e}"))
    };
    match super::record::body(b, "checkpoint raft state")? {
        super::record::Body::Current(b) => {
            let (upper, used) =
                crate::codec::decode_from_slice_limited::<Upper, UPPER_DECODED_BYTES_MAX>(b).map_err(bad)?;
            // The HA replicas follow as a section of their own: records
            // written before HA dedup end here, and builds from before it
            // read such a record and ignore the section.
            let rest = &b[used..];
            let ha = if rest.is_empty() {
                HaReplicas::default()
            } else {
                let (ha, used) = crate::codec::decode_from_slice_limited::<HaReplicas, HA_DECODED_BYTES_MAX>(rest)
                    .map_err(|e| bad_ha(&e.to_string()))?;
                if used != rest.len() {
                    return Err(bad_ha(&format!("{} bytes after it", rest.len() - used)));
                }
                ha
            };
            Ok(KeptState {
                applied: upper.applied,
                membership: upper.membership,
                ha,
            })
        }
        super::record::Body::Legacy(b) => {
            let (old, _) =
                crate::codec::decode_from_slice_limited::<LegacyUpper, UPPER_DECODED_BYTES_MAX>(b).map_err(bad)?;
            Ok(KeptState {
                applied: old.applied.as_ref().map(super::legacy::log_id),
                membership: super::legacy::membership(&old.membership),
                ha: HaReplicas::default(),
            })
        }
    }
}

fn bad_ha(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("checkpoint raft state: HA replicas: {why}"),
    )
}

/// Most bytes decoding the HA replicas kept with a checkpoint may
/// allocate: `ha_dedup.clusters_max` (at most 100,000) clusters of a few
/// hundred bytes each.
const HA_DECODED_BYTES_MAX: usize = 64 << 20;

/// The state the state machine keeps with a checkpoint, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeptState {
    /// The last applied log id (`None` before any entry).
    pub applied: Option<LogId>,
    /// The membership in force.
    pub membership: StoredMembership,
    /// The elected replica of each HA sender cluster.
    pub ha: HaReplicas,
}

/// Decodes the Raft state kept with a checkpoint: the applied log id, the
/// membership and the HA replicas (for backups and restore).
pub fn decode_upper(b: &[u8]) -> io::Result<KeptState> {
    decode_upper_record(b)
}

/// Encodes the Raft state kept with a checkpoint (restore writes a new one:
/// the backup's applied log id with a one-member membership). Layout in
/// docs/format/checkpoint.md: the versioned record of the applied log id
/// and membership, then the HA replicas.
pub fn encode_upper(applied: Option<LogId>, membership: StoredMembership, ha: &HaReplicas) -> Vec<u8> {
    let mut body = crate::codec::encode_to_vec(&Upper { applied, membership }).expect("encoding to a Vec cannot fail");
    if !ha.is_empty() {
        body.extend(crate::codec::encode_to_vec(ha).expect("encoding to a Vec cannot fail"));
    }
    super::record::versioned(&body)
}

/// Applied progress others can wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Index of the last applied entry (0 for none).
    pub index: u64,
}

/// The state machine. Clones share the TSDB.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Db>,
    applied: Option<LogId>,
    membership: StoredMembership,
    last_checkpoint: Option<SnapshotMeta>,
    applied_tx: Arc<watch::Sender<Applied>>,
    decoded: Arc<DecodedCache>,
    placement: Placement,
    ha: SharedHaReplicas,
}

/// The HA replicas as applied so far, shared between the state machine
/// (the only writer) and the leader's HA dedup and the API (readers).
pub type SharedHaReplicas = Arc<parking_lot::RwLock<HaReplicas>>;

impl StateMachine {
    /// Wraps a TSDB loaded from its last checkpoint.
    pub fn new(
        db: Arc<Db>,
        applied_tx: Arc<watch::Sender<Applied>>,
        decoded: Arc<DecodedCache>,
        placement: Placement,
    ) -> io::Result<Self> {
        let upper = match db.checkpoint_upper().map_err(io_err)? {
            Some(b) => decode_upper_record(&b)?,
            None => KeptState::default(),
        };
        let last_checkpoint = upper.applied.map(|_| SnapshotMeta {
            last_log_id: upper.applied,
            last_membership: upper.membership.clone(),
        });
        let index = upper.applied.map_or(0, |l| l.index);
        db.writer().set_applied_index(index);
        applied_tx.send_replace(Applied { index });
        Ok(StateMachine {
            db,
            applied: upper.applied,
            membership: upper.membership,
            last_checkpoint,
            applied_tx,
            decoded,
            placement,
            ha: Arc::new(parking_lot::RwLock::new(upper.ha)),
        })
    }

    /// The HA replicas this state machine applies to.
    pub fn ha_replicas(&self) -> SharedHaReplicas {
        self.ha.clone()
    }

    fn upper(&self) -> Vec<u8> {
        encode_upper(self.applied, self.membership.clone(), &self.ha.read())
    }

    /// Writes a checkpoint of everything applied so far.
    async fn checkpoint(&mut self) -> io::Result<SnapshotMeta> {
        let db = self.db.clone();
        let upper = self.upper();
        self.placement
            .offload(db.inline_io(), move || db.checkpoint(upper))
            .await?
            .map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        self.last_checkpoint = Some(meta.clone());
        Ok(meta)
    }
}

/// Most entries applied in one trip to a work thread.
const APPLY_BATCH_ENTRIES_MAX: usize = 64;

/// What applying one entry gave: its log id, the membership it carries (if
/// it is a membership entry) and the response for the proposer.
type AppliedEntry = (
    LogId,
    Option<openraft::Membership<u64, super::NodeInfo>>,
    CommandResponse,
);

/// Applies entries in order (a blocking call, see [`apply_command`]). An
/// error stops at the entry that failed: openraft then stops the node.
fn apply_entries(
    db: &Db,
    decoded: &DecodedCache,
    ha: &parking_lot::RwLock<HaReplicas>,
    entries: Vec<Entry>,
) -> io::Result<Vec<AppliedEntry>> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let index = entry.log_id.index;
        // One write lock per entry: readers (the digest) see an entry's
        // changes together with its index, never half of a batch.
        let mut w = db.writer();
        let (response, membership) = match entry.payload {
            EntryPayload::Blank => (CommandResponse::default(), None),
            EntryPayload::Normal(cmd) => (apply_command(&mut w, decoded, ha, index, &cmd)?, None),
            EntryPayload::Membership(m) => (CommandResponse::default(), Some(m)),
        };
        w.set_applied_index(index);
        drop(w);
        out.push((entry.log_id, membership, response));
    }
    Ok(out)
}

/// Applies one command to the TSDB: a blocking call, which the state
/// machine runs through [`Placement::offload`].
fn apply_command(
    db: &mut Writer<'_>,
    decoded: &DecodedCache,
    ha: &parking_lot::RwLock<HaReplicas>,
    index: u64,
    cmd: &Command,
) -> io::Result<CommandResponse> {
    match cmd {
        Command::Write { payload } => {
            let reqs = match decoded.take(payload) {
                Some(r) => r,
                None => {
                    #[allow(unused_mut)]
                    let mut reqs =
                        Command::decode_write(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    #[cfg(feature = "sim-bugs")]
                    if crate::sim_bugs::enabled(crate::sim_bugs::Bug::DivergeApply) {
                        reqs.iter_mut().for_each(|r| r.series.reverse());
                    }
                    Arc::new(reqs)
                }
            };
            #[cfg(feature = "sim-bugs")]
            if let Some(r) = sim_bug_apply(db, index, &reqs) {
                return Ok(r);
            }
            let _ = index;
            Ok(CommandResponse {
                results: reqs.iter().map(|r| db.apply(r)).collect(),
            })
        }
        Command::Retention { cutoff_ms } => {
            db.apply_retention(*cutoff_ms);
            Ok(CommandResponse::default())
        }
        Command::DeleteSeries {
            selectors,
            start_ms,
            end_ms,
        } => {
            // A set that does not compile deletes nothing, on every replica alike.
            let sets: Vec<Vec<crate::tsdb::Matcher>> = selectors
                .iter()
                .filter_map(|set| set.iter().map(|m| m.compile()).collect::<Result<Vec<_>, _>>().ok())
                .filter(|set| !set.is_empty())
                .collect();
            if !sets.is_empty() {
                let r = db.delete_series(&sets, *start_ms, *end_ms);
                tracing::info!(deleted = r.deleted, skipped = r.skipped, "applied delete_series");
            }
            Ok(CommandResponse::default())
        }
        Command::HaElect {
            cluster,
            replica,
            expected,
            at_ms,
        } => {
            if ha.write().elect(cluster, replica, expected.as_deref(), *at_ms) {
                tracing::info!(%cluster, %replica, previous = ?expected, "HA replica elected");
            }
            Ok(CommandResponse::default())
        }
        Command::HaSeen {
            cluster,
            replica,
            at_ms,
        } => {
            ha.write().seen(cluster, replica, *at_ms);
            Ok(CommandResponse::default())
        }
    }
}

/// The deliberate apply bugs that replace the whole answer
/// (`sim_bugs::Bug::LoseAckedEntry`, `Bug::ApplyTwice`); `None` when
/// neither is switched on.
#[cfg(feature = "sim-bugs")]
fn sim_bug_apply(db: &mut Writer<'_>, index: u64, reqs: &[crate::tsdb::AppendRequest]) -> Option<CommandResponse> {
    use crate::sim_bugs::{enabled, Bug};
    if enabled(Bug::LoseAckedEntry) && index.is_multiple_of(5) {
        let results = reqs
            .iter()
            .map(|r| crate::tsdb::AppendResult {
                appended: r.num_samples() as u64,
                ..Default::default()
            })
            .collect();
        return Some(CommandResponse { results });
    }
    if enabled(Bug::ApplyTwice) {
        let results = reqs.iter().map(|r| db.apply(r)).collect();
        for r in reqs {
            db.apply(r);
        }
        return Some(CommandResponse { results });
    }
    None
}

/// Hands openraft a checkpoint that the state machine task already wrote.
pub struct CheckpointBuilder {
    meta: SnapshotMeta,
}

impl RaftSnapshotBuilder<TypeConfig> for CheckpointBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: SnapshotData::Local,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = CheckpointBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Entries that are already there are applied together, in one
        // trip to a work thread (`Placement::offload`): apply is the
        // CPU-heavy part of the Raft path and must not run on Raft's threads.
        while let Some(first) = entries.try_next().await? {
            let mut batch = vec![first];
            while batch.len() < APPLY_BATCH_ENTRIES_MAX {
                match entries.try_next().now_or_never() {
                    Some(Ok(Some(e))) => batch.push(e),
                    Some(Ok(None)) | None => break,
                    Some(Err(e)) => return Err(e),
                }
            }
            let (entries_of_batch, responders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let (db, decoded, ha) = (self.db.clone(), self.decoded.clone(), self.ha.clone());
            let applied = self
                .placement
                .offload(self.db.inline_io(), move || {
                    apply_entries(&db, &decoded, &ha, entries_of_batch)
                })
                .await??;
            for ((log_id, membership, response), responder) in applied.into_iter().zip(responders) {
                if let Some(m) = membership {
                    self.membership = StoredMembership::new(Some(log_id), m);
                }
                self.applied = Some(log_id);
                self.applied_tx.send_replace(Applied { index: log_id.index });
                if let Some(r) = responder {
                    r.send(response);
                }
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        // Checkpoint here, inside the state machine task, so it captures
        // exactly the entries applied so far; the builder then only reports.
        match self.checkpoint().await {
            Ok(meta) => Some(CheckpointBuilder { meta }),
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed");
                None
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Only reached through the default `try_create_snapshot_builder`,
        // which is overridden; keep it correct anyway.
        let meta = match self.checkpoint().await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed");
                SnapshotMeta {
                    last_log_id: None,
                    last_membership: self.membership.clone(),
                }
            }
        };
        CheckpointBuilder { meta }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let SnapshotData::File(path) = snapshot else {
            // Installing our own checkpoint changes nothing.
            return Ok(());
        };
        let db = self.db.clone();
        let p = path.clone();
        let inline = db.inline_io();
        let upper = self
            .placement
            .offload(inline, move || -> Result<Option<Vec<u8>>, io::Error> {
                let f = std::fs::File::open(&p)?;
                let index_of = |upper: Option<&[u8]>| {
                    upper
                        .and_then(|b| decode_upper_record(b).ok())
                        .and_then(|u| u.applied)
                        .map_or(0, |l| l.index)
                };
                db.import(&mut io::BufReader::new(f), index_of).map_err(io_err)
            })
            .await??;
        let _ = std::fs::remove_file(&path);
        let upper = match upper {
            Some(b) => decode_upper_record(&b)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot holds no checkpoint",
                ))
            }
        };
        if upper.applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data is at {:?} but its meta says {:?}",
                    upper.applied, meta.last_log_id
                ),
            ));
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.ha.write() = upper.ha;
        self.last_checkpoint = Some(meta.clone());
        self.applied_tx.send_replace(Applied {
            index: self.applied.map_or(0, |l| l.index),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.last_checkpoint.clone().map(|meta| Snapshot {
            meta,
            snapshot: SnapshotData::Local,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::raft::NodeInfo;
    use crate::test_support::proptest_cases;

    fn membership() -> StoredMembership {
        let nodes = BTreeMap::from([(
            1,
            NodeInfo {
                raft_addr: "a:1".into(),
                http_addr: "a:2".into(),
            },
        )]);
        let m = openraft::Membership::new(vec![BTreeSet::from([1])], nodes).unwrap();
        StoredMembership::new(Some(openraft::testing::log_id::<TypeConfig>(1, 1, 4)), m)
    }

    /// The record earlier builds kept with a checkpoint (advanced leader
    /// ids, no version marker) still decodes, to the standard form.
    #[test]
    fn legacy_upper_decodes() {
        use crate::raft::legacy;
        let adv = |term: u64, node_id: u64, index: u64| legacy::LogId::new(legacy::LeaderId { term, node_id }, index);
        let m = legacy::StoredMembership::new(Some(adv(1, 1, 4)), membership().membership().clone());
        // bincode of a struct is its fields in order, as of this tuple.
        let old = crate::codec::encode_to_vec(&(Some(adv(2, 1, 9)), m)).unwrap();
        assert_ne!(old[0], crate::raft::record::RECORD_VERSION_MARKER);
        let KeptState {
            applied: a,
            membership: m,
            ha,
        } = decode_upper(&old).unwrap();
        assert_eq!(a, Some(openraft::testing::log_id::<TypeConfig>(2, 1, 9)));
        assert_eq!(m, membership());
        assert!(ha.is_empty());
        let new = encode_upper(a, m, &ha);
        assert_eq!(&new[..2], &[crate::raft::record::RECORD_VERSION_MARKER, 2]);
        assert_ne!(new[2..], old[..], "standard leader ids changed the bytes");
    }

    #[test]
    fn upper_round_trips_with_and_without_ha_replicas() {
        let applied = Some(openraft::testing::log_id::<TypeConfig>(2, 1, 9));
        let mut ha = HaReplicas::default();
        let plain = encode_upper(applied, membership(), &ha);
        let k = decode_upper(&plain).unwrap();
        assert_eq!(
            (k.applied, k.membership, k.ha.is_empty()),
            (applied, membership(), true)
        );
        ha.elect("a", "r1", None, 1_700_000_000_000);
        ha.elect("b", "r2", None, 1_700_000_000_001);
        let with = encode_upper(applied, membership(), &ha);
        assert_eq!(
            &with[..plain.len()],
            &plain[..],
            "the HA section only follows the old record"
        );
        let k = decode_upper(&with).unwrap();
        assert_eq!((k.applied, k.membership, k.ha), (applied, membership(), ha));
        let mut trailing = with.clone();
        trailing.push(0);
        assert!(decode_upper(&trailing).is_err(), "bytes after the HA section");
    }

    /// A node address whose length prefix claims more than the limit is an
    /// error, not an allocation of that length.
    #[test]
    fn huge_length_in_the_upper_state_is_an_error() {
        let good = encode_upper(None, membership(), &HaReplicas::default());
        // The last field is the last node's http address, "a:2": its length
        // byte comes just before it.
        let at = good.len() - 4;
        assert_eq!(&good[at..], &[3, b'a', b':', b'2']);
        for n in [u64::MAX, 1 << 40, UPPER_DECODED_BYTES_MAX as u64 + 1] {
            let forged = [&good[..at], &[253], &n.to_le_bytes(), &good[at + 1..]].concat();
            assert!(decode_upper(&forged).is_err(), "an address of {n} bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

        /// Arbitrary bytes, and a valid state with flipped bits, never panic
        /// the decoder of the Raft state kept with a checkpoint.
        #[test]
        fn upper_decoder_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..6),
        ) {
            let _ = decode_upper(&bytes);
            let mut b = encode_upper(Some(openraft::testing::log_id::<TypeConfig>(2, 1, 9)), membership(), &HaReplicas::default());
            for f in &flips {
                let bit = f.index(b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
            let _ = decode_upper(&b);
        }
    }
}
