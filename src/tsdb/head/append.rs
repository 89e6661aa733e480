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
            max_t_ms: i64::MIN,
            last_bits: 0,
            next_seq: 0,
            dirty: false,
        }));
        self.index_live(labels.stable_hash(), id);
        self.stats.series_created += 1;
        self.new_series.push(id);
        id
    }

    /// Appends one sample with Prometheus's rules (DESIGN decision 3).
    pub fn append(&mut self, id: SeriesId, t_ms: i64, v: f64) -> Result<Appended, Reject> {
        let result = self.append_inner(id, t_ms, v);
        match result {
            Ok(Appended::New) => self.stats.samples_appended += 1,
            Ok(Appended::Duplicate) => self.stats.samples_duplicate += 1,
            Err(r) => *self.stats.rejected.entry(r).or_default() += 1,
        }
        result
    }

    fn append_inner(&mut self, id: SeriesId, t_ms: i64, v: f64) -> Result<Appended, Reject> {
        if t_ms < self.min_valid_t_ms {
            return Err(Reject::OutOfBounds);
        }
        let chunk_samples = self.opts.chunk_samples;
        let ooo_window_ms = self.opts.ooo_window_ms;
        let Some(s) = self.series.get_mut(id as usize).and_then(Option::as_mut) else {
            // Ids come from get_or_create in the same apply: a miss is a bug.
            panic!("append to unknown series {id}");
        };
        let bits = v.to_bits();
        if s.max_t_ms == i64::MIN || t_ms > s.max_t_ms {
            if s.open.as_ref().is_some_and(|c| c.num_samples() >= chunk_samples) {
                let full = s.open.take().expect("checked above");
                Self::close_chunk(s, full, false, id, &mut self.new_chunks);
                self.stats.chunks_cut += 1;
            }
            s.open.get_or_insert_with(XorChunk::new).append(t_ms, v);
            s.max_t_ms = t_ms;
            s.last_bits = bits;
            Self::mark_dirty(s, id, &mut self.dirty_series);
            return Ok(Appended::New);
        }
        // The deliberate bug `ApplyTwice` (see crate::sim_bugs): an exact
        // duplicate of the newest sample is appended again.
        #[cfg(feature = "sim-bugs")]
        if t_ms == s.max_t_ms && bits == s.last_bits && crate::sim_bugs::enabled(crate::sim_bugs::Bug::ApplyTwice) {
            s.open.get_or_insert_with(XorChunk::new).append(t_ms, v);
            Self::mark_dirty(s, id, &mut self.dirty_series);
            return Ok(Appended::New);
        }
        if t_ms == s.max_t_ms {
            return if bits == s.last_bits {
                Ok(Appended::Duplicate)
            } else {
                Err(Reject::DuplicateTimestamp)
            };
        }
        // A sender retrying a batch after a failover resends samples that
        // are already stored: recognise those in the open chunk as exact
        // duplicates (no-ops) instead of out-of-order rejections.
        if let Some(open) = s.open.as_ref().filter(|c| c.first_t_ms().is_some_and(|f| f <= t_ms)) {
            for (ts_ms, val) in open.iter().flatten() {
                if ts_ms == t_ms {
                    return if val.to_bits() == bits {
                        Ok(Appended::Duplicate)
                    } else {
                        Err(Reject::DuplicateTimestamp)
                    };
                }
                if ts_ms > t_ms {
                    break;
                }
            }
        }
        if ooo_window_ms <= 0 || t_ms < s.max_t_ms.saturating_sub(ooo_window_ms) {
            return Err(Reject::OutOfOrder);
        }
        match s.ooo.binary_search_by_key(&t_ms, |&(ts_ms, _)| ts_ms) {
            Ok(i) if s.ooo[i].1.to_bits() == bits => return Ok(Appended::Duplicate),
            Ok(_) => return Err(Reject::DuplicateTimestamp),
            Err(i) => s.ooo.insert(i, (t_ms, v)),
        }
        if s.ooo.len() >= chunk_samples {
            let mut c = XorChunk::new();
            for &(ts_ms, val) in &s.ooo {
                c.append(ts_ms, val);
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
        let (Some(mint_ms), Some(maxt_ms)) = (c.first_t_ms(), c.last_t_ms()) else {
            return;
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        s.closed.push(ChunkMeta {
            mint_ms,
            maxt_ms,
            seq,
            ooo,
            pending: Some(Arc::from(c.bytes())),
            loc: None,
        });
        new_chunks.push((id, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Appended, Head, HeadOptions, Reject};
    use crate::tsdb::chunk::CHUNK_SAMPLES_TARGET;
    use crate::tsdb::Labels;

    fn head(ooo_window_ms: i64) -> Head {
        Head::new(HeadOptions {
            ooo_window_ms,
            ..HeadOptions::default()
        })
    }

    fn series(h: &mut Head) -> u32 {
        h.get_or_create(&Labels::from_pairs([("__name__", "m"), ("job", "a")]))
    }

    #[test]
    fn same_labels_give_the_same_series_and_ids_follow_creation_order() {
        let mut h = head(0);
        let a = h.get_or_create(&Labels::from_pairs([("__name__", "a")]));
        let b = h.get_or_create(&Labels::from_pairs([("__name__", "b")]));
        assert_eq!((a, b), (0, 1));
        assert_eq!(h.get_or_create(&Labels::from_pairs([("__name__", "a")])), a);
        assert_eq!(h.lookup(&Labels::from_pairs([("__name__", "b")])), Some(b));
        assert_eq!(h.lookup(&Labels::from_pairs([("__name__", "c")])), None);
        assert_eq!((h.num_series(), h.stats().series_created), (2, 2));
    }

    #[test]
    fn chunk_is_cut_at_120_samples() {
        let mut h = head(0);
        let id = series(&mut h);
        for i in 0..CHUNK_SAMPLES_TARGET as i64 {
            assert_eq!(h.append(id, i * 1000, i as f64), Ok(Appended::New));
        }
        let s = h.series(id).unwrap();
        assert!(
            s.closed.is_empty(),
            "a full chunk is cut by the next sample, not before"
        );
        assert_eq!(s.open.as_ref().unwrap().num_samples(), CHUNK_SAMPLES_TARGET);

        assert_eq!(h.append(id, 120_000, 120.0), Ok(Appended::New));
        let s = h.series(id).unwrap();
        assert_eq!(s.closed.len(), 1, "the 121st sample cuts the first chunk");
        let c = &s.closed[0];
        assert_eq!((c.mint_ms, c.maxt_ms, c.seq, c.ooo), (0, 119_000, 0, false));
        assert!(
            c.pending.is_some() && c.loc.is_none(),
            "a cut chunk waits for the checkpoint"
        );
        assert_eq!(s.open.as_ref().unwrap().num_samples(), 1);
        assert_eq!(h.stats().chunks_cut, 1);
        assert_eq!(h.checkpoint_delta().new_chunks.len(), 1);
    }

    #[test]
    fn older_sample_is_out_of_order_without_a_window() {
        let mut h = head(0);
        let id = series(&mut h);
        h.append(id, 1000, 1.0).unwrap();
        h.append(id, 2000, 2.0).unwrap();
        assert_eq!(h.append(id, 1500, 1.5), Err(Reject::OutOfOrder));
        assert_eq!(h.stats().rejected.get(&Reject::OutOfOrder), Some(&1));
        assert_eq!(h.series(id).unwrap().max_t_ms, 2000);
    }

    #[test]
    fn out_of_order_window_accepts_inside_and_rejects_outside() {
        let mut h = head(500);
        let id = series(&mut h);
        h.append(id, 10_000, 1.0).unwrap();
        assert_eq!(
            h.append(id, 9_500, 2.0),
            Ok(Appended::New),
            "exactly at the window's edge"
        );
        assert_eq!(h.append(id, 9_700, 3.0), Ok(Appended::New));
        assert_eq!(
            h.append(id, 9_499, 4.0),
            Err(Reject::OutOfOrder),
            "one ms past the window"
        );
        let s = h.series(id).unwrap();
        assert_eq!(s.ooo, vec![(9_500, 2.0), (9_700, 3.0)], "kept sorted by time");
        assert_eq!(s.max_t_ms, 10_000, "out-of-order samples do not move the newest time");
        assert_eq!(s.min_time_ms(), 9_500);
    }

    #[test]
    fn out_of_order_samples_are_cut_into_ooo_chunks() {
        let mut h = head(1_000_000);
        let id = series(&mut h);
        h.append(id, 1_000_000, 0.0).unwrap();
        // Descending, so that every one lands in the out-of-order buffer.
        for i in 0..CHUNK_SAMPLES_TARGET as i64 {
            assert_eq!(h.append(id, 999_999 - i, i as f64), Ok(Appended::New));
        }
        let s = h.series(id).unwrap();
        assert!(s.ooo.is_empty(), "the buffer is cut once it holds 120 samples");
        assert_eq!(s.closed.len(), 1);
        let c = &s.closed[0];
        assert!(c.ooo);
        assert_eq!(
            (c.mint_ms, c.maxt_ms),
            (999_999 - (CHUNK_SAMPLES_TARGET as i64 - 1), 999_999)
        );
        let samples: Vec<(i64, f64)> = crate::tsdb::chunk::iter_bytes(c.pending.as_ref().unwrap())
            .map(Result::unwrap)
            .collect();
        assert_eq!(samples.len(), CHUNK_SAMPLES_TARGET);
        assert!(
            samples.windows(2).all(|w| w[0].0 < w[1].0),
            "an ooo chunk is sorted by time"
        );
        assert_eq!(
            s.open.as_ref().unwrap().num_samples(),
            1,
            "the in-order chunk is untouched"
        );
    }

    #[test]
    fn exact_duplicate_is_a_noop_and_another_value_is_rejected() {
        let mut h = head(1000);
        let id = series(&mut h);
        h.append(id, 5000, 1.0).unwrap();
        assert_eq!(h.append(id, 5000, 1.0), Ok(Appended::Duplicate));
        assert_eq!(h.append(id, 5000, 2.0), Err(Reject::DuplicateTimestamp));
        // NaN compares by bits: the same NaN is a duplicate.
        h.append(id, 6000, f64::NAN).unwrap();
        assert_eq!(h.append(id, 6000, f64::NAN), Ok(Appended::Duplicate));
        // In the out-of-order buffer too.
        h.append(id, 5500, 3.0).unwrap();
        assert_eq!(h.append(id, 5500, 3.0), Ok(Appended::Duplicate));
        assert_eq!(h.append(id, 5500, 4.0), Err(Reject::DuplicateTimestamp));
        let st = h.stats();
        assert_eq!((st.samples_appended, st.samples_duplicate), (3, 3));
        assert_eq!(st.rejected.get(&Reject::DuplicateTimestamp), Some(&2));
        assert_eq!(h.series(id).unwrap().open.as_ref().unwrap().num_samples(), 2);
    }

    #[test]
    fn resent_sample_in_the_open_chunk_is_a_duplicate_even_without_a_window() {
        let mut h = head(0);
        let id = series(&mut h);
        for i in 0..10 {
            h.append(id, i * 1000, i as f64).unwrap();
        }
        // A retried batch after a failover resends old samples.
        assert_eq!(h.append(id, 3000, 3.0), Ok(Appended::Duplicate));
        assert_eq!(h.append(id, 3000, 3.5), Err(Reject::DuplicateTimestamp));
        assert_eq!(
            h.append(id, 3500, 3.5),
            Err(Reject::OutOfOrder),
            "not in the chunk: out of order"
        );
        assert_eq!(h.series(id).unwrap().open.as_ref().unwrap().num_samples(), 10);
    }

    #[test]
    fn resent_sample_in_a_cut_chunk_is_out_of_order() {
        let mut h = head(0);
        let id = series(&mut h);
        for i in 0..=CHUNK_SAMPLES_TARGET as i64 {
            h.append(id, i * 1000, i as f64).unwrap();
        }
        // Only the open chunk is searched, as in Prometheus.
        assert_eq!(h.append(id, 1000, 1.0), Err(Reject::OutOfOrder));
    }

    #[test]
    fn samples_before_the_retention_floor_are_out_of_bounds() {
        let mut h = head(10_000);
        let id = series(&mut h);
        h.append(id, 1000, 1.0).unwrap();
        h.apply_retention(5000);
        assert_eq!(h.min_valid_t_ms(), 5000);
        let id = series(&mut h);
        assert_eq!(h.append(id, 4999, 1.0), Err(Reject::OutOfBounds));
        assert_eq!(
            h.append(id, 5000, 1.0),
            Ok(Appended::New),
            "the floor itself is accepted"
        );
        assert_eq!(
            h.append(id, 4999, 1.0),
            Err(Reject::OutOfBounds),
            "even inside the ooo window"
        );
        assert_eq!(h.stats().rejected.get(&Reject::OutOfBounds), Some(&2));
    }

    #[test]
    fn metadata_latest_wins_and_only_a_change_is_dirty() {
        let mut h = head(0);
        let m = |help: &str| crate::tsdb::Metadata {
            metric_family_name: "up".into(),
            kind: "gauge".into(),
            help: help.into(),
            unit: String::new(),
        };
        h.set_metadata(m("one"));
        assert_eq!(h.checkpoint_delta().metadata.map(|v| v.len()), Some(1));
        h.checkpoint_done(&[]);
        h.set_metadata(m("one"));
        assert!(
            h.checkpoint_delta().metadata.is_none(),
            "unchanged metadata is not rewritten"
        );
        h.set_metadata(m("two"));
        assert_eq!(h.metadata()["up"].help, "two");
        assert!(h.checkpoint_delta().metadata.is_some());
    }
}
