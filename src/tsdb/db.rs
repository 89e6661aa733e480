//! The TSDB facade: a head behind a lock plus the store, with apply,
//! checkpoint, query and digest entry points.
//!
//! Apply takes the write lock once per batch; queries take the read lock
//! only long enough to copy out references to the data they need and decode
//! outside it, so a slow query never stalls the write path for long.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::chunk;
use super::head::{Appended, Head, HeadOptions, Reject};
use super::labels::Labels;
use super::matcher::Matcher;
use super::postings::{union_many, SeriesId};
use super::store::Store;
use super::{AppendRequest, Error};

/// What applying one [`AppendRequest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Samples appended.
    pub appended: u64,
    /// Exact duplicates (no-ops).
    pub duplicates: u64,
    /// Rejected: out of order.
    pub out_of_order: u64,
    /// Rejected: same timestamp, other value.
    pub duplicate_timestamp: u64,
    /// Rejected: older than retention.
    pub out_of_bounds: u64,
    /// The first rejection, worded like Prometheus, with the series.
    pub first_error: Option<String>,
    /// Samples the leader dropped before the log as copies sent by an HA
    /// replica that is not the elected one (`cluster::ha_dedup`). Never
    /// set by apply, and not in the bincode encoding: a forwarded write's
    /// reply carries it in a field of its own.
    #[serde(skip)]
    pub ha_dropped: u64,
    /// Which replica is elected instead, for the sender's 202 answer.
    #[serde(skip)]
    pub ha_note: Option<String>,
}

impl AppendResult {
    /// Samples rejected for any reason.
    pub fn rejected(&self) -> u64 {
        self.out_of_order + self.duplicate_timestamp + self.out_of_bounds
    }

    fn count(&mut self, r: Reject) {
        match r {
            Reject::OutOfOrder => self.out_of_order += 1,
            Reject::DuplicateTimestamp => self.duplicate_timestamp += 1,
            Reject::OutOfBounds => self.out_of_bounds += 1,
        }
    }
}

/// A selected series with its samples in the requested range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// Labels.
    pub labels: Labels,
    /// Samples `(t_ms, value)` sorted by time, unique timestamps.
    pub samples: Vec<(i64, f64)>,
}

/// A content digest at an applied index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// xxh3-64 over every series' labels and samples, in hex.
    pub digest: String,
    /// Live series.
    pub series: u64,
    /// Samples held.
    pub samples: u64,
}

/// The head's write lock ([`Db::writer`]): what is changed through one
/// writer, and the index set on it, readers see together.
pub struct Writer<'a>(parking_lot::RwLockWriteGuard<'a, Head>);

impl Writer<'_> {
    /// Applies one request; never fails: rejected samples are counted.
    pub fn apply(&mut self, req: &AppendRequest) -> AppendResult {
        let mut res = AppendResult::default();
        let head = &mut *self.0;
        for m in &req.metadata {
            head.set_metadata(m.clone());
        }
        for s in &req.series {
            let id = head.get_or_create(&s.labels);
            for &(t_ms, v) in &s.samples {
                match head.append(id, t_ms, v) {
                    Ok(Appended::New) => res.appended += 1,
                    Ok(Appended::Duplicate) => res.duplicates += 1,
                    Err(r) => {
                        res.count(r);
                        if res.first_error.is_none() {
                            res.first_error =
                                Some(format!("{} for series {} at timestamp {t_ms}", r.message(), s.labels));
                        }
                    }
                }
            }
        }
        res
    }

    /// Applies a retention cut-off (a log entry of its own).
    pub fn apply_retention(&mut self, cutoff_ms: i64) {
        self.0.apply_retention(cutoff_ms);
    }

    /// Deletes the series matching any matcher set whose samples all lie in
    /// `[mint_ms, maxt_ms]` (an admin delete applied from the log, so every replica
    /// deletes the same). Series with samples outside the range are left
    /// alone and counted in `skipped`: deleting part of a series is not
    /// supported yet.
    pub fn delete_series(&mut self, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64) -> DeleteResult {
        let head = &mut *self.0;
        let ids = Db::matching_ids(head, sets, mint_ms, maxt_ms);
        let (whole, partial): (Vec<SeriesId>, Vec<SeriesId>) = ids.into_iter().partition(|&id| {
            head.series(id)
                .is_some_and(|s| s.min_time_ms() >= mint_ms && s.max_time_ms() <= maxt_ms)
        });
        let deleted = head.delete_series(&whole);
        DeleteResult {
            deleted,
            skipped: partial.len() as u64,
        }
    }

    /// Records that the content is now that of log index `index`.
    pub fn set_applied_index(&mut self, index: u64) {
        self.0.set_applied_index(index);
    }
}

/// What an admin delete did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// Series removed.
    pub deleted: u64,
    /// Matching series left alone because they hold samples outside the range.
    pub skipped: u64,
}

/// Head statistics for `/api/v1/status/tsdb` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct DbStatus {
    /// Live series.
    pub num_series: usize,
    /// Oldest sample (ms since the epoch).
    pub min_time_ms: i64,
    /// Newest sample (ms since the epoch).
    pub max_time_ms: i64,
    /// Approximate heap bytes of the head.
    pub heap_bytes: usize,
    /// Series counts by metric name, largest first (top 10).
    pub series_by_metric: Vec<(String, usize)>,
    /// Series counts by label name (top 10).
    pub series_by_label_name: Vec<(String, usize)>,
    /// Distinct values by label name (top 10).
    pub values_by_label_name: Vec<(String, usize)>,
    /// Series counts by label pair (top 10).
    pub series_by_label_pair: Vec<(String, usize)>,
    /// Samples appended since start.
    pub samples_appended: u64,
    /// Rejected samples by reason since start.
    pub rejected: Vec<(Reject, u64)>,
    /// Bytes of the sled database on disk.
    pub disk_bytes: u64,
}

/// Where a chunk's bytes are, copied out under the read lock.
enum ChunkSource {
    Memory(Arc<[u8]>),
    Stored(super::head::ChunkLoc),
}

struct SeriesPlan {
    id: SeriesId,
    labels: Labels,
    chunks: Vec<ChunkSource>,
    open: Option<Vec<u8>>,
    ooo: Vec<(i64, f64)>,
    overlapping: bool,
}

/// One replica's TSDB.
pub struct Db {
    head: RwLock<Head>,
    store: Store,
    /// Held while a checkpoint is written or an export reads the store, so
    /// an export sees exactly one checkpoint.
    checkpoint_lock: Mutex<()>,
}

impl Db {
    /// Opens the TSDB in a [`crate::kv::Kv`] (sled's [`crate::kv::SledKv`]
    /// in production, the simulator's store in `sim/`) and loads its last
    /// checkpoint. Returns the upper layer's state saved with that
    /// checkpoint.
    pub fn open_kv(db: std::sync::Arc<dyn crate::kv::Kv>, opts: HeadOptions) -> Result<(Db, Option<Vec<u8>>), Error> {
        let store = Store::open(db)?;
        let mut head = Head::new(opts);
        let meta = store.load(&mut head)?;
        Ok((
            Db {
                head: RwLock::new(head),
                store,
                checkpoint_lock: Mutex::new(()),
            },
            meta.map(|m| m.upper),
        ))
    }

    /// Applies one request; never fails: rejected samples are counted.
    pub fn apply(&self, req: &AppendRequest) -> AppendResult {
        self.writer().apply(req)
    }

    /// Applies a retention cut-off (a log entry of its own).
    pub fn apply_retention(&self, cutoff_ms: i64) {
        self.writer().apply_retention(cutoff_ms);
    }

    /// The head's write lock, for changes that must be seen together with
    /// the log index they belong to (one log entry's).
    pub fn writer(&self) -> Writer<'_> {
        Writer(self.head.write())
    }

    /// Persists everything applied so far together with `upper` (the Raft
    /// applied log id and membership), atomically and durably.
    pub fn checkpoint(&self, upper: Vec<u8>) -> Result<(), Error> {
        let _guard = self.checkpoint_lock.lock();
        let delta = self.head.read().checkpoint_delta();
        let locs = self.store.write_checkpoint(&delta, upper)?;
        self.head.write().checkpoint_done(&locs);
        Ok(())
    }

    /// Writes the last checkpoint as an export stream (for Raft snapshots
    /// and backups). The upper-layer state inside tells which index it is.
    pub fn export(&self, w: &mut impl std::io::Write) -> Result<u64, Error> {
        let _guard = self.checkpoint_lock.lock();
        self.store.export(w)
    }

    /// Replaces the whole TSDB with an export and reloads the head; returns
    /// the upper-layer state of the imported checkpoint.
    /// `applied_index` reads the log index out of the imported upper-layer
    /// state; the new head is published with it, under one lock.
    pub fn import(
        &self,
        r: &mut impl std::io::Read,
        applied_index: impl FnOnce(Option<&[u8]>) -> u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let _guard = self.checkpoint_lock.lock();
        let mut head = self.head.write();
        self.store.import(r)?;
        let mut fresh = Head::new(head.options().clone());
        let meta = self.store.load(&mut fresh)?;
        let upper = meta.map(|m| m.upper);
        fresh.set_applied_index(applied_index(upper.as_deref()));
        *head = fresh;
        Ok(upper)
    }

    /// The upper-layer state of the last checkpoint.
    pub fn checkpoint_upper(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.meta()?.map(|m| m.upper))
    }

    /// True when the store's I/O runs inline (the simulator): callers then
    /// checkpoint and import on their own task instead of a thread.
    pub fn inline_io(&self) -> bool {
        self.store.inline_io()
    }

    /// Read access to the head (for status and tests).
    pub fn head(&self) -> parking_lot::RwLockReadGuard<'_, Head> {
        self.head.read()
    }

    fn plan(&self, head: &Head, ids: &[SeriesId], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesPlan> {
        let mut plans = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(s) = head.series(id) else { continue };
            if s.max_time_ms() < mint_ms || s.min_time_ms() > maxt_ms {
                continue;
            }
            let mut chunks = Vec::new();
            let mut overlapping = !s.ooo.is_empty();
            for c in &s.closed {
                if c.maxt_ms < mint_ms || c.mint_ms > maxt_ms {
                    continue;
                }
                overlapping |= c.ooo;
                chunks.push(match (&c.pending, c.loc) {
                    (Some(b), _) => ChunkSource::Memory(b.clone()),
                    (None, Some(loc)) => ChunkSource::Stored(loc),
                    (None, None) => continue,
                });
            }
            let open = s
                .open
                .as_ref()
                .filter(|c| {
                    c.first_t_ms().is_some_and(|t_ms| t_ms <= maxt_ms)
                        && c.last_t_ms().is_some_and(|t_ms| t_ms >= mint_ms)
                })
                .map(|c| c.bytes().to_vec());
            let ooo = s
                .ooo
                .iter()
                .copied()
                .filter(|&(t_ms, _)| t_ms >= mint_ms && t_ms <= maxt_ms)
                .collect();
            plans.push(SeriesPlan {
                id,
                labels: head.labels_of(s),
                chunks,
                open,
                ooo,
                overlapping,
            });
        }
        plans
    }

    fn load(
        &self,
        plan: SeriesPlan,
        mint_ms: i64,
        maxt_ms: i64,
        budget: &mut usize,
        limit: usize,
    ) -> Result<SeriesData, Error> {
        let mut samples = Vec::new();
        let push_chunk = |bytes: &[u8], samples: &mut Vec<(i64, f64)>| -> Result<(), Error> {
            for s in chunk::iter_bytes(bytes) {
                let (t_ms, v) = s.map_err(|e| Error::Corrupt(format!("chunk of series {}: {e}", plan.id)))?;
                if t_ms > maxt_ms {
                    break;
                }
                if t_ms >= mint_ms {
                    samples.push((t_ms, v));
                }
            }
            Ok(())
        };
        for c in &plan.chunks {
            match c {
                ChunkSource::Memory(b) => push_chunk(b, &mut samples)?,
                ChunkSource::Stored(loc) => {
                    // Retention may have deleted it since the plan: skip.
                    let Some(bytes) = self.store.read_chunk(*loc)? else {
                        continue;
                    };
                    push_chunk(&bytes, &mut samples)?;
                }
            }
        }
        if let Some(b) = &plan.open {
            push_chunk(b, &mut samples)?;
        }
        samples.extend_from_slice(&plan.ooo);
        if plan.overlapping {
            // Stable sort keeps in-order samples ahead of out-of-order ones
            // with the same timestamp; dedup keeps the first.
            samples.sort_by_key(|&(t_ms, _)| t_ms);
            samples.dedup_by_key(|&mut (t_ms, _)| t_ms);
        }
        if samples.len() > *budget {
            return Err(Error::TooManySamples { limit });
        }
        *budget -= samples.len();
        Ok(SeriesData {
            labels: plan.labels,
            samples,
        })
    }

    /// Series matching all `matchers` with their samples in `[mint_ms, maxt_ms]`;
    /// fails once more than `samples_max` samples would be loaded.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint_ms: i64,
        maxt_ms: i64,
        samples_max: usize,
    ) -> Result<Vec<SeriesData>, Error> {
        let plans = {
            let head = self.head.read();
            let ids = head.postings().select(head.symbols(), matchers);
            self.plan(&head, &ids, mint_ms, maxt_ms)
        };
        let mut budget = samples_max;
        let mut out = Vec::with_capacity(plans.len());
        for p in plans {
            let s = self.load(p, mint_ms, maxt_ms, &mut budget, samples_max)?;
            if !s.samples.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Ids of series matching any of the matcher sets (all series when
    /// there are none) with data overlapping `[mint_ms, maxt_ms]`.
    fn matching_ids(head: &Head, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesId> {
        let ids = if sets.is_empty() {
            head.postings().all().to_vec()
        } else {
            let lists: Vec<Vec<SeriesId>> = sets
                .iter()
                .map(|ms| head.postings().select(head.symbols(), ms))
                .collect();
            let refs: Vec<&[SeriesId]> = lists.iter().map(Vec::as_slice).collect();
            union_many(&refs)
        };
        ids.into_iter()
            .filter(|&id| {
                head.series(id)
                    .is_some_and(|s| s.max_time_ms() >= mint_ms && s.min_time_ms() <= maxt_ms)
            })
            .collect()
    }

    /// Label sets of the series matching any matcher set, sorted, at most `limit` (0 = no limit).
    pub fn series(&self, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64, limit: usize) -> Vec<Labels> {
        let head = self.head.read();
        let mut out: Vec<Labels> = Self::matching_ids(&head, sets, mint_ms, maxt_ms)
            .into_iter()
            .filter_map(|id| head.series(id).map(|s| head.labels_of(s)))
            .collect();
        out.sort();
        if limit > 0 {
            out.truncate(limit);
        }
        out
    }

    /// Label names in use, sorted.
    pub fn label_names(&self, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64, limit: usize) -> Vec<String> {
        let head = self.head.read();
        let unrestricted = sets.is_empty() && mint_ms == i64::MIN && maxt_ms == i64::MAX;
        let mut names: BTreeSet<&str> = BTreeSet::new();
        if unrestricted {
            names.extend(head.postings().names().map(|s| head.symbols().resolve(s)));
        } else {
            for id in Self::matching_ids(&head, sets, mint_ms, maxt_ms) {
                if let Some(s) = head.series(id) {
                    names.extend(s.labels.iter().map(|&(n, _)| head.symbols().resolve(n)));
                }
            }
        }
        let it = names.into_iter().map(str::to_string);
        if limit > 0 {
            it.take(limit).collect()
        } else {
            it.collect()
        }
    }

    /// Values of one label, sorted.
    pub fn label_values(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        mint_ms: i64,
        maxt_ms: i64,
        limit: usize,
    ) -> Vec<String> {
        let head = self.head.read();
        let Some(name_sym) = head.symbols().lookup(name) else {
            return Vec::new();
        };
        let mut values: BTreeSet<&str> = BTreeSet::new();
        if sets.is_empty() && mint_ms == i64::MIN && maxt_ms == i64::MAX {
            values.extend(head.postings().values(name_sym).map(|(v, _)| head.symbols().resolve(v)));
        } else {
            for id in Self::matching_ids(&head, sets, mint_ms, maxt_ms) {
                if let Some(s) = head.series(id) {
                    if let Some(&(_, v)) = s.labels.iter().find(|&&(n, _)| n == name_sym) {
                        values.insert(head.symbols().resolve(v));
                    }
                }
            }
        }
        let it = values.into_iter().map(str::to_string);
        if limit > 0 {
            it.take(limit).collect()
        } else {
            it.collect()
        }
    }

    /// A digest of every series and sample held.
    pub fn digest(&self) -> Result<Digest, Error> {
        self.digest_once().map(|(d, _)| d)
    }

    /// A digest and the applied index it belongs to
    /// ([`Head::set_applied_index`]), or `None` when every one of
    /// `attempts` saw a change land while it read.
    pub fn digest_at(&self, attempts: usize) -> Result<Option<(Digest, u64)>, Error> {
        for _ in 0..attempts {
            let (d, index) = self.digest_once()?;
            if self.head.read().applied_index() == index {
                return Ok(Some((d, index)));
            }
        }
        Ok(None)
    }

    /// A digest, and the applied index read with the plan. The plan copies
    /// the head's data under the read lock; chunks already stored are read
    /// after it, so a change that lands meanwhile (retention) can only be
    /// told by the index having moved.
    fn digest_once(&self) -> Result<(Digest, u64), Error> {
        let (plans, index) = {
            let head = self.head.read();
            let ids: Vec<SeriesId> = head.iter_series().map(|(id, _)| id).collect();
            (self.plan(&head, &ids, i64::MIN, i64::MAX), head.applied_index())
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let (mut series, mut samples) = (0u64, 0u64);
        let mut budget = usize::MAX;
        for p in plans {
            let id = p.id;
            let s = self.load(p, i64::MIN, i64::MAX, &mut budget, usize::MAX)?;
            h.update(&id.to_be_bytes());
            h.update(&s.labels.stable_hash().to_be_bytes());
            for (t_ms, v) in &s.samples {
                h.update(&t_ms.to_be_bytes());
                h.update(&v.to_bits().to_be_bytes());
            }
            series += 1;
            samples += s.samples.len() as u64;
        }
        let d = Digest {
            digest: format!("{:016x}", h.digest()),
            series,
            samples,
        };
        Ok((d, index))
    }

    /// Deletes the series matching any matcher set whose samples all lie in
    /// `[mint_ms, maxt_ms]` (see [`Writer::delete_series`]).
    pub fn delete_series(&self, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64) -> DeleteResult {
        self.writer().delete_series(sets, mint_ms, maxt_ms)
    }

    /// Labels of the series matching any matcher set that have samples both
    /// inside and outside `[mint_ms, maxt_ms]` (an admin delete leaves those alone).
    pub fn series_partly_in(&self, sets: &[Vec<Matcher>], mint_ms: i64, maxt_ms: i64) -> Vec<Labels> {
        let head = self.head.read();
        Self::matching_ids(&head, sets, mint_ms, maxt_ms)
            .into_iter()
            .filter_map(|id| head.series(id))
            .filter(|s| s.min_time_ms() < mint_ms || s.max_time_ms() > maxt_ms)
            .map(|s| head.labels_of(s))
            .collect()
    }

    /// Reads an export stream (what [`Db::export`] writes) without storing
    /// it, checks every checksum in it, and says what it holds.
    pub fn summarize_export(r: &mut impl std::io::Read) -> Result<super::store::ExportSummary, Error> {
        super::store::summarize_export(r)
    }

    /// Statistics for the status endpoints.
    pub fn status(&self) -> DbStatus {
        let head = self.head.read();
        let sy = head.symbols();
        let (mut min_time_ms, mut max_time_ms) = (i64::MAX, i64::MIN);
        for (_, s) in head.iter_series() {
            min_time_ms = min_time_ms.min(s.min_time_ms());
            max_time_ms = max_time_ms.max(s.max_time_ms());
        }
        let top = |mut v: Vec<(String, usize)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(10);
            v
        };
        let mut by_name: Vec<(String, usize)> = Vec::new();
        let mut values_by_name = Vec::new();
        let mut pairs = Vec::new();
        let mut metric = Vec::new();
        for n in head.postings().names() {
            let name = sy.resolve(n);
            let mut total = 0;
            let mut distinct = 0;
            for (v, list) in head.postings().values(n) {
                total += list.len();
                distinct += 1;
                pairs.push((format!("{}={}", name, sy.resolve(v)), list.len()));
                if name == super::labels::METRIC_NAME {
                    metric.push((sy.resolve(v).to_string(), list.len()));
                }
            }
            by_name.push((name.to_string(), total));
            values_by_name.push((name.to_string(), distinct));
        }
        let stats = head.stats();
        let rejected = Reject::ALL
            .iter()
            .map(|r| (*r, stats.rejected.get(r).copied().unwrap_or(0)))
            .collect();
        DbStatus {
            num_series: head.num_series(),
            min_time_ms,
            max_time_ms,
            heap_bytes: head.heap_bytes(),
            series_by_metric: top(metric),
            series_by_label_name: top(by_name),
            values_by_label_name: top(values_by_name),
            series_by_label_pair: top(pairs),
            samples_appended: stats.samples_appended,
            rejected,
            disk_bytes: self.store.size_on_disk().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_support::MemKv;
    use crate::tsdb::SeriesSamples;

    const ENTRIES: u64 = 3000;
    const REQUESTS_PER_ENTRY: i64 = 4;

    fn open() -> Db {
        let opts = HeadOptions {
            ooo_window_ms: 0,
            chunk_samples: 8,
        };
        Db::open_kv(Arc::new(MemKv::default()), opts).expect("open").0
    }

    /// Log entry `index`: several requests, each applied on its own.
    fn entry(index: u64) -> Vec<AppendRequest> {
        (0..REQUESTS_PER_ENTRY)
            .map(|r| AppendRequest {
                series: vec![SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m"), ("r", &r.to_string())]),
                    samples: vec![(index as i64 * 10, index as f64)],
                }],
                metadata: vec![],
            })
            .collect()
    }

    fn apply_entry(db: &Db, index: u64) {
        let mut w = db.writer();
        for req in entry(index) {
            w.apply(&req);
        }
        w.set_applied_index(index);
    }

    /// A digest read while entries of several requests land (and
    /// checkpoints move chunks to the store) is always the digest of
    /// exactly the entries up to the index it reports: replicas compare
    /// digests at equal indexes, so half an entry would read as divergence.
    #[test]
    fn a_digest_belongs_to_the_index_it_reports() {
        let reference = open();
        let mut want = vec![reference.digest().unwrap()];
        for i in 1..=ENTRIES {
            apply_entry(&reference, i);
            want.push(reference.digest().unwrap());
        }
        let db = Arc::new(open());
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 1..=ENTRIES {
                    apply_entry(&db, i);
                    if i % 500 == 0 {
                        db.checkpoint(b"upper".to_vec()).unwrap();
                    }
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() || seen == 0 {
            if let Some((d, index)) = db.digest_at(100).unwrap() {
                assert_eq!(d, want[index as usize], "digest reported at index {index}");
                seen += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(
            db.digest_at(1).unwrap(),
            Some((want[ENTRIES as usize].clone(), ENTRIES))
        );
    }
}
