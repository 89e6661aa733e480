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
//!
//! The head is split by concern, as Prometheus splits `head.go`:
//!
//! - this file owns the types (series, chunk metadata, options, counters,
//!   the [`Head`] itself) and its construction;
//! - [`append`](self::append): series creation and the append rules;
//! - [`read`](self::read): lookups and iteration for queries and status;
//! - [`retention`](self::retention): retention cut-offs and admin deletes;
//! - [`checkpoint`](self::checkpoint): the delta a checkpoint persists, the
//!   open-state byte layout, and restoring from the store.
//!
//! No file here may read a clock, draw a random number or do I/O.

mod append;
mod checkpoint;
mod read;
mod retention;

#[cfg(test)]
mod model_tests;

use std::collections::HashMap;
use std::sync::Arc;

use super::chunk::{XorChunk, CHUNK_SAMPLES_TARGET};
use super::postings::{Postings, SeriesId};
use super::symbols::{Sym, Symbols};
use super::Metadata;

pub use checkpoint::{decode_open_state_pub, open_state_last, CheckpointDelta, EncodedOpenState};

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
    /// First sample time (ms since the epoch).
    pub mint_ms: i64,
    /// Last sample time (ms since the epoch).
    pub maxt_ms: i64,
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

/// One series in memory.
pub struct MemSeries {
    /// Interned labels, sorted by name.
    pub labels: Box<[(Sym, Sym)]>,
    /// Closed chunks, in seq order.
    pub closed: Vec<ChunkMeta>,
    /// The chunk being appended to.
    pub open: Option<XorChunk>,
    /// Out-of-order samples `(t_ms, value)` not yet cut into a chunk, sorted by time.
    pub ooo: Vec<(i64, f64)>,
    /// Newest in-order timestamp, `i64::MIN` for none.
    pub max_t_ms: i64,
    /// Bits of the value at `max_t_ms`.
    pub last_bits: u64,
    /// Next chunk seq.
    pub next_seq: u32,
    /// Open chunk or ooo buffer changed since the last checkpoint.
    pub dirty: bool,
}

impl MemSeries {
    /// Oldest sample time held (any chunk), or `i64::MAX` when empty.
    pub fn min_time_ms(&self) -> i64 {
        let mut t_ms = self.closed.iter().map(|c| c.mint_ms).min().unwrap_or(i64::MAX);
        if let Some(other_ms) = self.open.as_ref().and_then(XorChunk::first_t_ms) {
            t_ms = t_ms.min(other_ms);
        }
        if let Some(&(other_ms, _)) = self.ooo.first() {
            t_ms = t_ms.min(other_ms);
        }
        t_ms
    }

    /// Newest sample time held, or `i64::MIN` when empty.
    pub fn max_time_ms(&self) -> i64 {
        let mut t_ms = self.max_t_ms;
        for c in &self.closed {
            t_ms = t_ms.max(c.maxt_ms);
        }
        if let Some(&(other_ms, _)) = self.ooo.last() {
            t_ms = t_ms.max(other_ms);
        }
        t_ms
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
    min_valid_t_ms: i64,
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
    /// The caller's position of the last change (the Raft applied index),
    /// set under the same lock as the change, so that a reader sees the
    /// content and the index it belongs to together.
    applied_index: u64,
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
            min_valid_t_ms: i64::MIN,
            metadata: HashMap::new(),
            metadata_dirty: false,
            stats: HeadStats::default(),
            new_series: Vec::new(),
            new_chunks: Vec::new(),
            block_refs: HashMap::new(),
            deleted_blocks: Vec::new(),
            deleted_series: Vec::new(),
            dirty_series: Vec::new(),
            applied_index: 0,
        }
    }

    /// The index set by the last [`Head::set_applied_index`] (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Records that the content now is that of log index `index`.
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
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
    pub fn min_valid_t_ms(&self) -> i64 {
        self.min_valid_t_ms
    }

    /// Counts series `id` (whose labels hash to `h`) as live and makes it
    /// findable by its labels: by hash, or among the hash's collisions.
    /// Creation in append and restore from a checkpoint both end here.
    pub(super) fn index_live(&mut self, h: u64, id: SeriesId) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(h) {
            e.insert(id);
        } else {
            self.collisions.entry(h).or_default().push(id);
        }
        self.live_series += 1;
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
}
