//! The Raft log in sled: openraft's `RaftLogStorage`.
//!
//! Entries live in the `raft_log` tree under their big-endian index, each
//! value `[u32 BE crc32][bincode entry]` (docs/format/log-entry.md); the
//! vote, the committed id and the last purged id live in `raft_meta`.
//! Durability: `append` inserts the entries and hands the callback to one
//! flusher thread, which fsyncs once for everything queued since its last
//! fsync (group fsync) and only then reports the entries flushed, in order.
//! A vote is fsynced before `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::kv::{Kv, KvTree};

use super::record::{self, Body};
use super::{legacy, Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_CLEAN: &[u8] = b"clean_shutdown";

/// Appends waiting for the flusher; past this `append` blocks, which slows
/// openraft down instead of queueing without bound.
const FLUSH_QUEUE_MAX: usize = 4096;

/// Counters of the log's disk work, for `/metrics`.
#[derive(Default, Debug)]
pub struct LogStats {
    /// fsyncs done by the flusher.
    pub fsyncs: AtomicU64,
    /// Total microseconds spent in those fsyncs.
    pub fsync_micros: AtomicU64,
    /// Entries appended.
    pub entries_appended: AtomicU64,
    /// Bytes appended.
    pub bytes_appended: AtomicU64,
}

/// The log store; clones share everything.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<dyn Kv>,
    log: Arc<dyn KvTree>,
    meta: Arc<dyn KvTree>,
    /// The flusher thread's queue; `None` when the store's I/O is inline
    /// (the simulator), where `append` fsyncs before it returns.
    flusher: Option<std::sync::mpsc::SyncSender<IOFlushed<TypeConfig>>>,
    /// The purger thread's queue (indexes to delete up to); `None` when the
    /// store's I/O is inline, where `purge` deletes before it returns.
    purger: Option<std::sync::mpsc::Sender<u64>>,
    stats: Arc<LogStats>,
}

/// Entries deleted per batch by a purge.
const PURGE_BATCH_ENTRIES: u64 = 256;

/// Pause of the purger thread between two batches: a purge frees a
/// checkpoint's worth of entries (gigabytes under saturation), and deleted
/// at full speed it kept sled's write path, which the Raft core's appends
/// share, busy for hundreds of milliseconds.
const PURGE_BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Deletes the log entries at or below `upto`, from the first one held, by
/// key, in batches: their values are never read (a purge after a
/// checkpoint covers tens of thousands of entries of up to
/// `ENTRY_PAYLOAD_BYTES_MAX` each).
fn delete_upto(log: &dyn KvTree, upto: u64, pause: std::time::Duration) -> io::Result<()> {
    let index = |key: &[u8]| -> io::Result<u64> {
        let b: [u8; 8] = key
            .try_into()
            .map_err(|_| io_err(format!("a log key of {} bytes, not 8", key.len())))?;
        Ok(u64::from_be_bytes(b))
    };
    let (Some((first, _)), Some((last, _))) = (log.range(&[], None).next().transpose()?, log.last()?) else {
        return Ok(());
    };
    // The entries held are contiguous: no key is missing between the two.
    let upto = upto.min(index(&last)?);
    let mut from = index(&first)?;
    while from <= upto {
        let to = upto.min(from.saturating_add(PURGE_BATCH_ENTRIES - 1));
        log.apply_batch((from..=to).map(|i| (i.to_be_bytes().to_vec(), None)).collect())?;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        match to.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

pub use super::entry_format::{decode_entry, encode_entry};

impl LogStore {
    /// Opens the log trees of `db`; starts the flusher thread unless the
    /// store's I/O is inline ([`Kv::inline_io`]).
    pub fn open_kv(db: Arc<dyn Kv>) -> io::Result<Self> {
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let stats = Arc::new(LogStats::default());
        if db.inline_io() {
            return Ok(LogStore {
                db,
                log,
                meta,
                flusher: None,
                purger: None,
                stats,
            });
        }
        let purger = Self::start_purger(log.clone())?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<IOFlushed<TypeConfig>>(FLUSH_QUEUE_MAX);
        let flush_db = db.clone();
        let flush_stats = stats.clone();
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || {
                // Ends when every LogStore clone is dropped.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        waiting.push(more);
                    }
                    let started = Instant::now();
                    let res = flush_db.flush();
                    flush_stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    flush_stats
                        .fsync_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    for cb in waiting {
                        let r = match &res {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::other(e.to_string())),
                        };
                        cb.io_completed(r);
                    }
                }
            })?;
        Ok(LogStore {
            db,
            log,
            meta,
            flusher: Some(tx),
            purger: Some(purger),
            stats,
        })
    }

    /// Starts the thread that deletes purged entries, so that a purge (after
    /// every checkpoint) never holds up the Raft core, which awaits it: a
    /// purge of 21,000 entries read and deleted inline stalled the leader
    /// for over 200 ms, long enough for an election (the soak).
    fn start_purger(log: Arc<dyn KvTree>) -> io::Result<std::sync::mpsc::Sender<u64>> {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || {
                // Ends when every LogStore clone is dropped.
                while let Ok(mut upto) = rx.recv() {
                    while let Ok(more) = rx.try_recv() {
                        upto = upto.max(more);
                    }
                    if let Err(e) = delete_upto(&*log, upto, PURGE_BATCH_PAUSE) {
                        // The entries stay; below the purge point they are
                        // ignored, and the next purge deletes them.
                        tracing::warn!(error = %e, upto, "deleting purged Raft log entries failed");
                    }
                }
            })?;
        Ok(tx)
    }

    /// Disk counters.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// Reads a meta record: this build's format, or one written before
    /// records carried a version (advanced leader ids: `L`, mapped to the
    /// standard form by `from_legacy`).
    fn get_meta<T: serde::de::DeserializeOwned, L: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        from_legacy: impl FnOnce(L) -> T,
    ) -> io::Result<Option<T>> {
        let Some(v) = self.meta.get(key)? else {
            return Ok(None);
        };
        let what = format!("raft meta {key:?}");
        let bad = |e: crate::codec::DecodeError| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"));
        let t = match record::body(&v, &what)? {
            Body::Current(b) => crate::codec::decode_from_slice(b).map_err(bad)?.0,
            Body::Legacy(b) => from_legacy(crate::codec::decode_from_slice(b).map_err(bad)?.0),
        };
        Ok(Some(t))
    }

    /// Writes a meta record in this build's (versioned) format.
    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        let b = crate::codec::encode_to_vec(v).map_err(io_err)?;
        self.meta.insert(key, record::versioned(&b).into())?;
        Ok(())
    }

    /// Records, durably, that the node stopped cleanly: everything,
    /// including the commit index (which `save_committed` does not fsync),
    /// is on disk. Call after Raft has shut down.
    pub fn mark_clean_shutdown(&self) -> io::Result<()> {
        self.put_meta(KEY_CLEAN, &true)?;
        self.db.flush()
    }

    /// True when the last stop was clean ([`LogStore::mark_clean_shutdown`]);
    /// removes the mark durably, so that a crash from now on reads false.
    pub fn take_clean_shutdown(&self) -> io::Result<bool> {
        let clean = self.get_meta(KEY_CLEAN, |b: bool| b)?.unwrap_or(false);
        if clean {
            self.meta.remove(KEY_CLEAN)?;
            self.db.flush()?;
        }
        Ok(clean)
    }

    /// Bytes of the log's sled database on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk()
    }

    /// Number of entries currently in the log.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// True when the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.log.range(&start.to_be_bytes(), None) {
            let (k, v) = kv?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&idx) {
                break;
            }
            let e = decode_entry(&v)?;
            if e.log_id.index != idx {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry under key {idx} has index {}", e.log_id.index),
                ));
            }
            out.push(e);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE, |v: legacy::Vote| legacy::vote(&v))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED, |l: legacy::LogId| legacy::log_id(&l))?;
        let last = match self.log.last()? {
            Some((_, v)) => Some(decode_entry(&v)?.log_id),
            None => None,
        };
        // Entries at or before the purge point are ignored (see `purge`):
        // a crash may keep some whose deletion was not yet on disk while the
        // purge point is, and the log then ends at the purge point.
        let last_log_id = match (last, last_purged_log_id) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_log_id,
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        let db = self.db.clone();
        #[cfg(feature = "sim-bugs")]
        if db.inline_io() && crate::sim_bugs::enabled(crate::sim_bugs::Bug::VoteWithoutFsync) {
            return Ok(());
        }
        crate::kv::run_io(db.inline_io(), move || db.flush()).await?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced on purpose: losing it only means openraft re-learns the
        // commit index from the leader or the next election.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let legacy = |l: Option<legacy::LogId>| l.as_ref().map(legacy::log_id);
        Ok(self.get_meta(KEY_COMMITTED, legacy)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let (mut n, mut bytes) = (0u64, 0u64);
        for e in entries {
            let v = encode_entry(&e)?;
            bytes += v.len() as u64;
            n += 1;
            batch.push((e.log_id.index.to_be_bytes().to_vec(), Some(v.into())));
        }
        self.log.apply_batch(batch)?;
        self.stats.entries_appended.fetch_add(n, Ordering::Relaxed);
        self.stats.bytes_appended.fetch_add(bytes, Ordering::Relaxed);
        let Some(flusher) = &self.flusher else {
            // Inline I/O: fsync now, then report the entries flushed.
            #[cfg(feature = "sim-bugs")]
            if crate::sim_bugs::enabled(crate::sim_bugs::Bug::AppendWithoutFsync) {
                callback.io_completed(Ok(()));
                return Ok(());
            }
            let res = self.db.flush();
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            callback.io_completed(res);
            return Ok(());
        };
        match flusher.try_send(callback) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(callback)) => {
                // The queue is bounded; waiting for room must not block the
                // runtime. openraft awaits each append, so order is kept.
                let flusher = flusher.clone();
                tokio::task::spawn_blocking(move || flusher.send(callback))
                    .await
                    .map_err(io_err)?
                    .map_err(|_| io::Error::other("log flusher thread stopped"))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(io::Error::other("log flusher thread stopped")),
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut batch = Vec::new();
        for kv in self.log.range(&from.to_be_bytes(), None) {
            batch.push((kv?.0.to_vec(), None));
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored
        // from then on, so a crash half-way through deleting is harmless.
        self.put_meta(KEY_PURGED, &log_id)?;
        match &self.purger {
            // A purger that is gone (shutting down) leaves the entries,
            // which are ignored below the purge point.
            Some(purger) => drop(purger.send(log_id.index)),
            None => delete_upto(&*self.log, log_id.index, std::time::Duration::ZERO)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::raft::command::ENTRY_DECODED_BYTES_MAX;
    use crate::raft::Command;
    use crate::test_support::proptest_cases;

    /// A log store written by a build with advanced leader ids (records
    /// without a version marker, version 1 entries) opens: the vote, the
    /// commit index, the purge point and the entries read back in the
    /// standard form, and what this build writes carries the marker.
    #[tokio::test]
    async fn state_written_with_advanced_leader_ids_still_reads() {
        use crate::codec::encode_to_vec;
        let kv: Arc<dyn Kv> = Arc::new(crate::test_support::MemKv::default());
        let (meta, log) = (kv.open_tree("raft_meta").unwrap(), kv.open_tree("raft_log").unwrap());
        let adv = |term: u64, node_id: u64, index: u64| legacy::LogId::new(legacy::LeaderId { term, node_id }, index);
        let vote = legacy::Vote {
            leader_id: legacy::LeaderId { term: 4, node_id: 2 },
            committed: true,
        };
        meta.insert(KEY_VOTE, encode_to_vec(&vote).unwrap().into()).unwrap();
        meta.insert(KEY_PURGED, encode_to_vec(&adv(3, 1, 5)).unwrap().into())
            .unwrap();
        meta.insert(KEY_COMMITTED, encode_to_vec(&Some(adv(4, 2, 7))).unwrap().into())
            .unwrap();
        for (index, marker) in [(6u64, false), (7, true)] {
            let e = legacy::Entry {
                log_id: adv(4, 2, index),
                payload: openraft::EntryPayload::Blank,
            };
            let mut b = vec![0u8; 4];
            if marker {
                b.extend([super::super::entry_format::ENTRY_VERSION_MARKER, 1]);
            }
            b.extend(encode_to_vec(&e).unwrap());
            let crc = crc32fast::hash(&b[4..]);
            b[..4].copy_from_slice(&crc.to_be_bytes());
            log.insert(&index.to_be_bytes(), b.into()).unwrap();
        }
        let mut s = LogStore::open_kv(kv).unwrap();
        let std = |term, node, index| openraft::testing::log_id::<TypeConfig>(term, node, index);
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new_committed(4, 2)));
        assert_eq!(s.read_committed().await.unwrap(), Some(std(4, 2, 7)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(std(3, 1, 5)), Some(std(4, 2, 7)))
        );
        let ids: Vec<LogId> = s
            .try_get_log_entries(6..8)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.log_id)
            .collect();
        assert_eq!(ids, vec![std(4, 2, 6), std(4, 2, 7)]);
        s.save_vote(&Vote::new(5, 3)).await.unwrap();
        assert_eq!(
            &s.meta.get(KEY_VOTE).unwrap().unwrap()[..2],
            &[record::RECORD_VERSION_MARKER, 2]
        );
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(5, 3)));
    }

    /// A crash after the purge point reached the disk but before the
    /// deletion of the entries it covers did: the log state ends at the
    /// purge point, not at an older leftover entry (simulation seeds 216
    /// and 414 found the inverted state: openraft refuses to start on it).
    #[tokio::test]
    async fn leftover_entries_below_the_purge_point_are_ignored() {
        let kv: Arc<dyn Kv> = Arc::new(crate::test_support::MemKv::default());
        let mut s = LogStore::open_kv(kv).unwrap();
        let id = |index| openraft::testing::log_id::<TypeConfig>(2, 1, index);
        let mut batch = Vec::new();
        for index in 1..=5u64 {
            let e = Entry {
                log_id: id(index),
                payload: openraft::EntryPayload::Blank,
            };
            let bytes = super::super::entry_format::encode_entry(&e).unwrap();
            batch.push((index.to_be_bytes().to_vec(), Some(bytes.into())));
        }
        s.log.apply_batch(batch).unwrap();
        s.put_meta(KEY_PURGED, &id(8)).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(id(8)), Some(id(8))));
    }

    fn entry(payload: Vec<u8>) -> Entry {
        Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(3, 1, 7),
            payload: openraft::EntryPayload::Normal(Command::Write { payload }),
        }
    }

    /// CRC over `body`, then `body`: what a stored entry looks like.
    fn with_crc(body: &[u8]) -> Vec<u8> {
        [&crc32fast::hash(body).to_be_bytes()[..], body].concat()
    }

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let e = entry(vec![1, 2, 3]);
        let b = encode_entry(&e).unwrap();
        let back = decode_entry(&b).unwrap();
        assert_eq!(
            (back.log_id, format!("{:?}", back.payload)),
            (e.log_id, format!("{:?}", e.payload))
        );
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode_entry(&d).is_err(), "a flipped byte at {i} must fail the CRC");
        }
        assert!(decode_entry(&b[..3]).is_err());
    }

    /// An entry whose payload length says more than the limit, behind a
    /// valid CRC, is an error, not an allocation of that length.
    #[test]
    fn huge_payload_length_behind_a_valid_crc_is_an_error() {
        let good = encode_entry(&entry(vec![9; 5])).unwrap();
        // The payload length is the byte just before the 5 payload bytes.
        let body = &good[4..];
        let at = body.len() - 6;
        assert_eq!(body[at], 5);
        for n in [u64::MAX, 1 << 40, ENTRY_DECODED_BYTES_MAX as u64 + 1] {
            let mut forged = body[..at].to_vec();
            forged.push(253);
            forged.extend_from_slice(&n.to_le_bytes());
            forged.extend_from_slice(&body[at + 1..]);
            assert!(decode_entry(&with_crc(&forged)).is_err(), "payload of {n} bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

        /// Arbitrary bytes, with or without a valid CRC in front, never
        /// panic the entry decoder.
        #[test]
        fn entry_decoder_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_entry(&body);
            let _ = decode_entry(&with_crc(&body));
        }

        /// A valid entry with its bincode body damaged (and the CRC fixed
        /// up) decodes to an error or to some entry, never a panic.
        #[test]
        fn damaged_entry_behind_a_valid_crc_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..6),
        ) {
            let good = encode_entry(&entry(payload)).unwrap();
            let mut body = good[4..].to_vec();
            for f in &flips {
                let bit = f.index(body.len() * 8);
                body[bit / 8] ^= 1 << (bit % 8);
            }
            let _ = decode_entry(&with_crc(&body));
        }
    }
}
