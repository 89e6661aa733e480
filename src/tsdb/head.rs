//! The head: every series in memory with its open chunk, the postings index,
//! and the append rules.
//!
//! Everything here is a pure function of the sequence of batches applied:
//! series ids, chunk cuts and rejections depend on the log only, never on the
//! clock, so two replicas at the same applied index hold identical heads.
//! The head does no I/O: closed chunks stay in memory (as `pending`) until a
//! checkpoint collects them with [`Head::checkpoint_delta`] and the store
//! persists them; the head then drops the bytes and keeps only where they
//! live.

use std::collections::HashMap;
use std::sync::Arc;

use super::chunk::{XorChunk, CHUNK_SAMPLES_TARGET};
use super::labels::{Label, Labels};
use super::postings::{Postings, SeriesId};
use super::symbols::{Sym, Symbols};
use super::Metadata;

/// Why a sample was not appended. The names follow Prometheus's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Older than the series' newest sample and outside the out-of-order window.
    OutOfOrder,
    /// Same timestamp as an existing sample but another value.
    DuplicateTimestamp,
    /// Older than the retention cut-off: it would be deleted at once.
    OutOfBounds,
}

impl Reject {
    /// Every reason, for metrics.
    pub const ALL: [Reject; 3] = [Reject::OutOfOrder, Reject::DuplicateTimestamp, Reject::OutOfBounds];

    /// The reason as Prometheus words it.
    pub fn message(self) -> &'static str {
        match self {
            Reject::OutOfOrder => "out of order sample",
            Reject::DuplicateTimestamp => "duplicate sample for timestamp",
            Reject::OutOfBounds => "out of bounds",
        }
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Reject::OutOfOrder => "out_of_order",
            Reject::DuplicateTimestamp => "duplicate_timestamp",
            Reject::OutOfBounds => "out_of_bounds",
        }
    }
}

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// A new sample.
    New,
    /// The same timestamp and value were already there: nothing changed.
    Duplicate,
}

/// Where a closed chunk's bytes are.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    /// First sample time.
    pub mint: i64,
    /// Last sample time.
    pub maxt: i64,
    /// Per-series chunk number, increasing, never reused.
    pub seq: u32,
    /// True for a chunk of out-of-order samples (may overlap others).
    pub ooo: bool,
    /// The bytes while not yet checkpointed; `None` once in the store.
    pub pending: Option<Arc<[u8]>>,
    /// Where the store keeps it, once checkpointed.
    pub loc: Option<ChunkLoc>,
}

/// A chunk's place in a stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Block id.
    pub block: u64,
    /// Byte offset of the chunk's frame in the block.
    pub offset: u32,
    /// Frame length.
    pub len: u32,
}

/// Shards of the open-series state: a checkpoint rewrites only the shards
/// holding a series that changed, each as one value.
pub const OPEN_STATE_SHARDS: u32 = 64;

/// A series' interned labels.
type SeriesLabels = Box<[(Sym, Sym)]>;

/// One series in memory.
pub struct MemSeries {
    /// Interned labels, sorted by name.
    pub labels: Box<[(Sym, Sym)]>,
    /// Closed chunks, in seq order.
    pub closed: Vec<ChunkMeta>,
    /// The chunk being appended to.
    pub open: Option<XorChunk>,
    /// Out-of-order samples not yet cut into a chunk, sorted by time.
    pub ooo: Vec<(i64, f64)>,
    /// Newest in-order timestamp, `i64::MIN` for none.
    pub max_t: i64,
    /// Bits of the value at `max_t`.
    pub last_bits: u64,
    /// Next chunk seq.
    pub next_seq: u32,
    /// Open chunk or ooo buffer changed since the last checkpoint.
    pub dirty: bool,
}

impl MemSeries {
    /// Oldest sample time held (any chunk), or `i64::MAX` when empty.
    pub fn min_time(&self) -> i64 {
        let mut t = self.closed.iter().map(|c| c.mint).min().unwrap_or(i64::MAX);
        if let Some(o) = self.open.as_ref().and_then(XorChunk::first_t) {
            t = t.min(o);
        }
        if let Some(&(o, _)) = self.ooo.first() {
            t = t.min(o);
        }
        t
    }

    /// Newest sample time held, or `i64::MIN` when empty.
    pub fn max_time(&self) -> i64 {
        let mut t = self.max_t;
        for c in &self.closed {
            t = t.max(c.maxt);
        }
        if let Some(&(o, _)) = self.ooo.last() {
            t = t.max(o);
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.as_ref().is_none_or(|c| c.num_samples() == 0) && self.ooo.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.labels.len() * 8
            + self.closed.capacity() * std::mem::size_of::<ChunkMeta>()
            + self
                .closed
                .iter()
                .filter_map(|c| c.pending.as_ref())
                .map(|b| b.len() + 16)
                .sum::<usize>()
            + self.open.as_ref().map_or(0, XorChunk::heap_bytes)
            + self.ooo.capacity() * 16
    }
}

/// Tunables of the head.
#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// How far behind a series' newest sample an older sample is still
    /// accepted (Prometheus's `out_of_order_time_window`); 0 disables.
    pub ooo_window_ms: i64,
    /// Samples per chunk before it is cut.
    pub chunk_samples: usize,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            ooo_window_ms: 0,
            chunk_samples: CHUNK_SAMPLES_TARGET,
        }
    }
}

/// Counters of what apply did; they restart from zero with the process.
#[derive(Debug, Default, Clone)]
pub struct HeadStats {
    /// Samples appended.
    pub samples_appended: u64,
    /// Samples that were exact duplicates (no-ops).
    pub samples_duplicate: u64,
    /// Rejected samples by reason.
    pub rejected: HashMap<Reject, u64>,
    /// Series created.
    pub series_created: u64,
    /// Series removed by retention.
    pub series_removed: u64,
    /// Chunks cut.
    pub chunks_cut: u64,
}

/// One series' encoded open state.
pub type EncodedOpenState = (SeriesId, Vec<u8>);

/// What changed since the last checkpoint, for the store to persist.
#[derive(Default)]
pub struct CheckpointDelta {
    /// New series with their labels.
    pub new_series: Vec<(SeriesId, Labels)>,
    /// Closed chunks to write: series, meta (with `pending` set).
    pub new_chunks: Vec<(SeriesId, ChunkMeta)>,
    /// Blocks none of whose chunks are still live (retention).
    pub deleted_blocks: Vec<u64>,
    /// Series to delete.
    pub deleted_series: Vec<SeriesId>,
    /// Open-state shards to rewrite whole: shard, then every series in it
    /// that has open state.
    pub open_shards: Vec<(u32, Vec<EncodedOpenState>)>,
    /// Next series id.
    pub next_series_id: SeriesId,
    /// Lowest timestamp accepted (retention).
    pub min_valid_t: i64,
    /// Metric metadata, when it changed.
    pub metadata: Option<Vec<Metadata>>,
}

/// The head.
pub struct Head {
    opts: HeadOptions,
    symbols: Symbols,
    series: Vec<Option<MemSeries>>,
    /// label-set hash → series id; collisions go to `collisions`.
    by_hash: HashMap<u64, SeriesId>,
    collisions: HashMap<u64, Vec<SeriesId>>,
    postings: Postings,
    live_series: usize,
    min_valid_t: i64,
    metadata: HashMap<String, Metadata>,
    metadata_dirty: bool,
    stats: HeadStats,
    // Checkpoint bookkeeping.
    new_series: Vec<SeriesId>,
    new_chunks: Vec<(SeriesId, u32)>,
    /// Live chunks per stored block.
    block_refs: HashMap<u64, u32>,
    deleted_blocks: Vec<u64>,
    deleted_series: Vec<SeriesId>,
    dirty_series: Vec<SeriesId>,
}

impl Head {
    /// An empty head.
    pub fn new(opts: HeadOptions) -> Self {
        Head {
            opts,
            symbols: Symbols::default(),
            series: Vec::new(),
            by_hash: HashMap::new(),
            collisions: HashMap::new(),
            postings: Postings::default(),
            live_series: 0,
            min_valid_t: i64::MIN,
            metadata: HashMap::new(),
            metadata_dirty: false,
            stats: HeadStats::default(),
            new_series: Vec::new(),
            new_chunks: Vec::new(),
            block_refs: HashMap::new(),
            deleted_blocks: Vec::new(),
            deleted_series: Vec::new(),
            dirty_series: Vec::new(),
        }
    }

    /// Options in force.
    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    /// Counters.
    pub fn stats(&self) -> &HeadStats {
        &self.stats
    }

    /// Live series count.
    pub fn num_series(&self) -> usize {
        self.live_series
    }

    /// The id the next new series gets.
    pub fn next_series_id(&self) -> SeriesId {
        self.series.len() as SeriesId
    }

    /// Lowest timestamp accepted.
    pub fn min_valid_t(&self) -> i64 {
        self.min_valid_t
    }

    /// The symbol table.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// The postings index.
    pub fn postings(&self) -> &Postings {
        &self.postings
    }

    /// A series by id.
    pub fn series(&self, id: SeriesId) -> Option<&MemSeries> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    /// Resolves a series' labels to strings.
    pub fn labels_of(&self, s: &MemSeries) -> Labels {
        Labels::from_sorted_unchecked(
            s.labels
                .iter()
                .map(|&(n, v)| Label {
                    name: self.symbols.resolve(n).to_string(),
                    value: self.symbols.resolve(v).to_string(),
                })
                .collect(),
        )
    }

    /// Metric metadata by family name.
    pub fn metadata(&self) -> &HashMap<String, Metadata> {
        &self.metadata
    }

    /// Records metadata (latest wins, as in Prometheus).
    pub fn set_metadata(&mut self, m: Metadata) {
        if self.metadata.get(&m.metric_family_name) != Some(&m) {
            self.metadata.insert(m.metric_family_name.clone(), m);
            self.metadata_dirty = true;
        }
    }

    /// Finds the series with exactly these labels.
    pub fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        let h = labels.stable_hash();
        let matches = |id: SeriesId| self.series(id).is_some_and(|s| self.same_labels(s, labels));
        if let Some(&id) = self.by_hash.get(&h) {
            if matches(id) {
                return Some(id);
            }
        }
        self.collisions
            .get(&h)
            .and_then(|ids| ids.iter().copied().find(|&id| matches(id)))
    }

    fn same_labels(&self, s: &MemSeries, labels: &Labels) -> bool {
        s.labels.len() == labels.len()
            && s.labels
                .iter()
                .zip(labels.iter())
                .all(|(&(n, v), l)| self.symbols.resolve(n) == l.name && self.symbols.resolve(v) == l.value)
    }

    /// The series for `labels`, created if new.
    pub fn get_or_create(&mut self, labels: &Labels) -> SeriesId {
        if let Some(id) = self.lookup(labels) {
            return id;
        }
        let id = self.series.len() as SeriesId;
        let syms: Box<[(Sym, Sym)]> = labels
            .iter()
            .map(|l| (self.symbols.intern(&l.name), self.symbols.intern(&l.value)))
            .collect();
        self.postings.add(id, &syms);
        self.series.push(Some(MemSeries {
            labels: syms,
            closed: Vec::new(),
            open: None,
            ooo: Vec::new(),
            max_t: i64::MIN,
            last_bits: 0,
            next_seq: 0,
            dirty: false,
        }));
        let h = labels.stable_hash();
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(h) {
            e.insert(id);
        } else {
            self.collisions.entry(h).or_default().push(id);
        }
        self.live_series += 1;
        self.stats.series_created += 1;
        self.new_series.push(id);
        id
    }

    /// Appends one sample with Prometheus's rules (DESIGN decision 3).
    pub fn append(&mut self, id: SeriesId, t: i64, v: f64) -> Result<Appended, Reject> {
        let result = self.append_inner(id, t, v);
        match result {
            Ok(Appended::New) => self.stats.samples_appended += 1,
            Ok(Appended::Duplicate) => self.stats.samples_duplicate += 1,
            Err(r) => *self.stats.rejected.entry(r).or_default() += 1,
        }
        result
    }

    fn append_inner(&mut self, id: SeriesId, t: i64, v: f64) -> Result<Appended, Reject> {
        if t < self.min_valid_t {
            return Err(Reject::OutOfBounds);
        }
        let chunk_samples = self.opts.chunk_samples;
        let ooo_window = self.opts.ooo_window_ms;
        let Some(s) = self.series.get_mut(id as usize).and_then(Option::as_mut) else {
            // Ids come from get_or_create in the same apply: a miss is a bug.
            panic!("append to unknown series {id}");
        };
        let bits = v.to_bits();
        if s.max_t == i64::MIN || t > s.max_t {
            if s.open.as_ref().is_some_and(|c| c.num_samples() >= chunk_samples) {
                let full = s.open.take().expect("checked above");
                Self::close_chunk(s, full, false, id, &mut self.new_chunks);
                self.stats.chunks_cut += 1;
            }
            s.open.get_or_insert_with(XorChunk::new).append(t, v);
            s.max_t = t;
            s.last_bits = bits;
            Self::mark_dirty(s, id, &mut self.dirty_series);
            return Ok(Appended::New);
        }
        // The deliberate bug `ApplyTwice` (see crate::sim_bugs): an exact
        // duplicate of the newest sample is appended again.
        #[cfg(feature = "sim-bugs")]
        if t == s.max_t && bits == s.last_bits && crate::sim_bugs::enabled(crate::sim_bugs::Bug::ApplyTwice) {
            s.open.get_or_insert_with(XorChunk::new).append(t, v);
            Self::mark_dirty(s, id, &mut self.dirty_series);
            return Ok(Appended::New);
        }
        if t == s.max_t {
            return if bits == s.last_bits {
                Ok(Appended::Duplicate)
            } else {
                Err(Reject::DuplicateTimestamp)
            };
        }
        // A sender retrying a batch after a failover resends samples that
        // are already stored: recognise those in the open chunk as exact
        // duplicates (no-ops) instead of out-of-order rejections.
        if let Some(open) = s.open.as_ref().filter(|c| c.first_t().is_some_and(|f| f <= t)) {
            for (ts, val) in open.iter().flatten() {
                if ts == t {
                    return if val.to_bits() == bits {
                        Ok(Appended::Duplicate)
                    } else {
                        Err(Reject::DuplicateTimestamp)
                    };
                }
                if ts > t {
                    break;
                }
            }
        }
        if ooo_window <= 0 || t < s.max_t.saturating_sub(ooo_window) {
            return Err(Reject::OutOfOrder);
        }
        match s.ooo.binary_search_by_key(&t, |&(ts, _)| ts) {
            Ok(i) if s.ooo[i].1.to_bits() == bits => return Ok(Appended::Duplicate),
            Ok(_) => return Err(Reject::DuplicateTimestamp),
            Err(i) => s.ooo.insert(i, (t, v)),
        }
        if s.ooo.len() >= chunk_samples {
            let mut c = XorChunk::new();
            for &(ts, val) in &s.ooo {
                c.append(ts, val);
            }
            s.ooo = Vec::new();
            Self::close_chunk(s, c, true, id, &mut self.new_chunks);
            self.stats.chunks_cut += 1;
        }
        Self::mark_dirty(s, id, &mut self.dirty_series);
        Ok(Appended::New)
    }

    fn mark_dirty(s: &mut MemSeries, id: SeriesId, dirty: &mut Vec<SeriesId>) {
        if !s.dirty {
            s.dirty = true;
            dirty.push(id);
        }
    }

    fn close_chunk(s: &mut MemSeries, mut c: XorChunk, ooo: bool, id: SeriesId, new_chunks: &mut Vec<(SeriesId, u32)>) {
        c.shrink_to_fit();
        let (Some(mint), Some(maxt)) = (c.first_t(), c.last_t()) else {
            return;
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        s.closed.push(ChunkMeta {
            mint,
            maxt,
            seq,
            ooo,
            pending: Some(Arc::from(c.bytes())),
            loc: None,
        });
        new_chunks.push((id, seq));
    }

    /// Applies a retention cut-off: drops every chunk that ends before it and
    /// every series left empty; later appends before it are out of bounds.
    pub fn apply_retention(&mut self, cutoff_ms: i64) {
        if cutoff_ms <= self.min_valid_t {
            return;
        }
        self.min_valid_t = cutoff_ms;
        let mut emptied = Vec::new();
        for (idx, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else { continue };
            let id = idx as SeriesId;
            let before = s.closed.len();
            s.closed.retain(|c| {
                let keep = c.maxt >= cutoff_ms;
                if let (false, Some(loc)) = (keep, c.loc) {
                    if let Some(n) = self.block_refs.get_mut(&loc.block) {
                        *n -= 1;
                        if *n == 0 {
                            self.block_refs.remove(&loc.block);
                            self.deleted_blocks.push(loc.block);
                        }
                    }
                }
                keep
            });
            if s.closed.len() != before {
                // A dropped pending chunk was never written; forget it.
                self.new_chunks
                    .retain(|&(sid, seq)| sid != id || s.closed.iter().any(|c| c.seq == seq));
            }
            if s.open
                .as_ref()
                .and_then(XorChunk::last_t)
                .is_some_and(|t| t < cutoff_ms)
            {
                s.open = None;
                Self::mark_dirty(s, id, &mut self.dirty_series);
            }
            if s.ooo.first().is_some_and(|&(t, _)| t < cutoff_ms) {
                s.ooo.retain(|&(t, _)| t >= cutoff_ms);
                Self::mark_dirty(s, id, &mut self.dirty_series);
            }
            if s.is_empty() {
                emptied.push(id);
            }
        }
        if emptied.is_empty() {
            return;
        }
        let removed: Vec<(SeriesId, SeriesLabels)> = emptied
            .iter()
            .filter_map(|&id| self.series[id as usize].take().map(|s| (id, s.labels)))
            .collect();
        let labels_by_id: HashMap<SeriesId, Vec<(Sym, Sym)>> =
            removed.iter().map(|(id, l)| (*id, l.to_vec())).collect();
        self.postings
            .remove(&emptied, |id| labels_by_id.get(&id).cloned().unwrap_or_default());
        for (id, syms) in &removed {
            self.forget_series(*id, syms);
        }
    }

    /// Drops a removed series from the label-hash index and the checkpoint
    /// bookkeeping (its postings are removed by the caller).
    fn forget_series(&mut self, id: SeriesId, syms: &[(Sym, Sym)]) {
        let labels = Labels::from_sorted_unchecked(
            syms.iter()
                .map(|&(n, v)| Label {
                    name: self.symbols.resolve(n).to_string(),
                    value: self.symbols.resolve(v).to_string(),
                })
                .collect(),
        );
        let h = labels.stable_hash();
        if self.by_hash.get(&h) == Some(&id) {
            self.by_hash.remove(&h);
            if let Some(mut rest) = self.collisions.remove(&h) {
                if let Some(first) = rest.pop() {
                    self.by_hash.insert(h, first);
                }
                if !rest.is_empty() {
                    self.collisions.insert(h, rest);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&h) {
            list.retain(|x| *x != id);
            if list.is_empty() {
                self.collisions.remove(&h);
            }
        }
        self.deleted_series.push(id);
        self.new_series.retain(|x| *x != id);
        self.live_series -= 1;
        self.stats.series_removed += 1;
    }

    /// Collects what changed since the last checkpoint. The head is not
    /// changed: call [`Head::checkpoint_done`] once the delta is durable.
    pub fn checkpoint_delta(&self) -> CheckpointDelta {
        let mut d = CheckpointDelta {
            next_series_id: self.next_series_id(),
            min_valid_t: self.min_valid_t,
            ..Default::default()
        };
        for &id in &self.new_series {
            if let Some(s) = self.series(id) {
                d.new_series.push((id, self.labels_of(s)));
            }
        }
        for &(id, seq) in &self.new_chunks {
            if let Some(c) = self.series(id).and_then(|s| s.closed.iter().find(|c| c.seq == seq)) {
                d.new_chunks.push((id, c.clone()));
            }
        }
        d.deleted_blocks = self.deleted_blocks.clone();
        d.deleted_series = self.deleted_series.clone();
        let mut shards: Vec<u32> = self
            .dirty_series
            .iter()
            .chain(self.deleted_series.iter())
            .map(|id| id % OPEN_STATE_SHARDS)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            let states = (shard..self.series.len() as u32)
                .step_by(OPEN_STATE_SHARDS as usize)
                .filter_map(|id| self.series(id).and_then(encode_open_state).map(|st| (id, st)))
                .collect();
            d.open_shards.push((shard, states));
        }
        if self.metadata_dirty {
            let mut m: Vec<Metadata> = self.metadata.values().cloned().collect();
            m.sort_by(|a, b| a.metric_family_name.cmp(&b.metric_family_name));
            d.metadata = Some(m);
        }
        d
    }

    /// Marks everything in the last delta as persisted: pending chunk bytes
    /// are dropped from memory (the store has them now).
    pub fn checkpoint_done(&mut self, locs: &[(SeriesId, u32, ChunkLoc)]) {
        for &(id, seq, loc) in locs {
            if let Some(c) = self
                .series
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.closed.iter_mut().find(|c| c.seq == seq))
            {
                c.loc = Some(loc);
                *self.block_refs.entry(loc.block).or_default() += 1;
            }
        }
        for (id, seq) in std::mem::take(&mut self.new_chunks) {
            if let Some(c) = self
                .series
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.closed.iter_mut().find(|c| c.seq == seq))
            {
                c.pending = None;
            }
        }
        for id in std::mem::take(&mut self.dirty_series) {
            if let Some(s) = self.series.get_mut(id as usize).and_then(Option::as_mut) {
                s.dirty = false;
            }
        }
        self.new_series.clear();
        self.deleted_blocks.clear();
        self.deleted_series.clear();
        self.metadata_dirty = false;
    }

    /// Restores a series read from the store (startup). Ids are restored as
    /// they were; gaps (deleted series) stay empty.
    pub fn restore_series(
        &mut self,
        id: SeriesId,
        labels: &Labels,
        closed: Vec<ChunkMeta>,
        open: Option<&[u8]>,
    ) -> Result<(), super::Error> {
        let idx = id as usize;
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, || None);
        }
        let syms: Box<[(Sym, Sym)]> = labels
            .iter()
            .map(|l| (self.symbols.intern(&l.name), self.symbols.intern(&l.value)))
            .collect();
        let (open_chunk, ooo) = match open {
            Some(b) => decode_open_state(b)?,
            None => (None, Vec::new()),
        };
        // An open state carries the newest in-order sample; a series without
        // one never had an in-order sample (see `apply_retention`).
        let (max_t, last_bits) = open.and_then(open_state_last).unwrap_or((i64::MIN, 0));
        let next_seq = closed.iter().map(|c| c.seq + 1).max().unwrap_or(0);
        // Persisted chunks carry no bytes in memory.
        let closed: Vec<ChunkMeta> = closed
            .into_iter()
            .map(|mut c| {
                c.pending = None;
                c
            })
            .collect();
        for loc in closed.iter().filter_map(|c| c.loc) {
            *self.block_refs.entry(loc.block).or_default() += 1;
        }
        self.postings_add_restored(id, &syms);
        self.series[idx] = Some(MemSeries {
            labels: syms,
            closed,
            open: open_chunk,
            ooo,
            max_t,
            last_bits,
            next_seq,
            dirty: false,
        });
        let h = labels.stable_hash();
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(h) {
            e.insert(id);
        } else {
            self.collisions.entry(h).or_default().push(id);
        }
        self.live_series += 1;
        Ok(())
    }

    fn postings_add_restored(&mut self, id: SeriesId, syms: &[(Sym, Sym)]) {
        self.postings.add(id, syms);
    }

    /// Sets restored global state (startup).
    pub fn restore_globals(&mut self, next_series_id: SeriesId, min_valid_t: i64, metadata: Vec<Metadata>) {
        if self.series.len() < next_series_id as usize {
            self.series.resize_with(next_series_id as usize, || None);
        }
        self.min_valid_t = min_valid_t;
        self.metadata = metadata
            .into_iter()
            .map(|m| (m.metric_family_name.clone(), m))
            .collect();
    }

    /// Approximate heap bytes of the head, for `/api/v1/status/tsdb` and
    /// the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.symbols.heap_bytes()
            + self.postings.heap_bytes()
            + self.series.capacity() * std::mem::size_of::<Option<MemSeries>>()
            + self.series.iter().flatten().map(MemSeries::heap_bytes).sum::<usize>()
            + self.by_hash.capacity() * 16
    }

    /// Iterates over live series.
    pub fn iter_series(&self) -> impl Iterator<Item = (SeriesId, &MemSeries)> + '_ {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as SeriesId, s)))
    }
}

impl Head {
    /// Removes whole series (an admin delete, applied from the log like
    /// retention): their chunks stop counting towards their blocks, unsaved
    /// chunks are forgotten, and the series leave the index. The next
    /// checkpoint deletes their labels and drops blocks left without live
    /// chunks. Returns how many series were removed.
    pub fn delete_series(&mut self, ids: &[SeriesId]) -> u64 {
        let mut removed = 0;
        for &id in ids {
            let Some(s) = self.series.get_mut(id as usize).and_then(Option::take) else {
                continue;
            };
            for c in &s.closed {
                if let Some(loc) = c.loc {
                    if let Some(n) = self.block_refs.get_mut(&loc.block) {
                        *n -= 1;
                        if *n == 0 {
                            self.block_refs.remove(&loc.block);
                            self.deleted_blocks.push(loc.block);
                        }
                    }
                }
            }
            self.new_chunks.retain(|&(sid, _)| sid != id);
            let syms = s.labels.to_vec();
            self.postings.remove(&[id], |_| syms.clone());
            self.forget_series(id, &syms);
            removed += 1;
        }
        removed
    }
}

/// Open state layout: `[u32 BE open chunk len][open chunk bytes][u32 BE ooo count]([i64 BE t][u64 BE v bits])*[i64 BE max_t][u64 BE last value bits]`.
fn encode_open_state(s: &MemSeries) -> Option<Vec<u8>> {
    let open: &[u8] = s.open.as_ref().map_or(&[], XorChunk::bytes);
    if open.is_empty() && s.ooo.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(8 + open.len() + s.ooo.len() * 16 + 8);
    out.extend_from_slice(&(open.len() as u32).to_be_bytes());
    out.extend_from_slice(open);
    out.extend_from_slice(&(s.ooo.len() as u32).to_be_bytes());
    for &(t, v) in &s.ooo {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    // The last in-order sample's value is needed for duplicate detection
    // when the open chunk was just cut and is empty.
    out.extend_from_slice(&s.max_t.to_be_bytes());
    out.extend_from_slice(&s.last_bits.to_be_bytes());
    Some(out)
}

type OpenState = (Option<XorChunk>, Vec<(i64, f64)>);

fn decode_open_state(b: &[u8]) -> Result<OpenState, super::Error> {
    let corrupt = |what: &str| super::Error::Corrupt(format!("open series state: {what}"));
    let mut r = b;
    let mut take = |n: usize| -> Result<&[u8], super::Error> {
        if r.len() < n {
            return Err(corrupt("truncated"));
        }
        let (a, rest) = r.split_at(n);
        r = rest;
        Ok(a)
    };
    let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let open_bytes = take(len)?.to_vec();
    let open = if open_bytes.is_empty() {
        None
    } else {
        Some(XorChunk::from_bytes(open_bytes).map_err(|e| corrupt(&e.to_string()))?)
    };
    let n = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let mut ooo = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let t = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
        let v = f64::from_bits(u64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
        ooo.push((t, v));
    }
    Ok((open, ooo))
}

/// Decodes an encoded open state (the open chunk and the out-of-order
/// samples), for readers of checkpoint exports outside the head.
pub fn decode_open_state_pub(b: &[u8]) -> Result<OpenState, super::Error> {
    decode_open_state(b)
}

/// Reads the trailing `(max_t, last_bits)` of an encoded open state.
pub fn open_state_last(b: &[u8]) -> Option<(i64, u64)> {
    if b.len() < 16 {
        return None;
    }
    let tail = &b[b.len() - 16..];
    Some((
        i64::from_be_bytes(tail[..8].try_into().ok()?),
        u64::from_be_bytes(tail[8..].try_into().ok()?),
    ))
}
