//! Appending to the head: creating series and Prometheus's append rules
//! (out of order, out-of-order window, duplicates, out of bounds, chunk cuts).
//!
//! Owns every decision about where a new sample goes. It must not persist
//! anything (a cut chunk only becomes `pending` for the next checkpoint),
//! read a clock, or depend on anything but the samples applied so far.

use super::{Appended, ChunkMeta, Head, MemSeries, Reject};
use crate::tsdb::chunk::XorChunk;
use crate::tsdb::labels::Labels;
use crate::tsdb::postings::SeriesId;
use crate::tsdb::symbols::Sym;
use crate::tsdb::Metadata;
use std::sync::Arc;

impl Head {
    /// Records metadata (latest wins, as in Prometheus).
    pub fn set_metadata(&mut self, m: Metadata) {
        if self.metadata.get(&m.metric_family_name) != Some(&m) {
            self.metadata.insert(m.metric_family_name.clone(), m);
            self.metadata_dirty = true;
        }
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

    pub(super) fn mark_dirty(s: &mut MemSeries, id: SeriesId, dirty: &mut Vec<SeriesId>) {
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
}
