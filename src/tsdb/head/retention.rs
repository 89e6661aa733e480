//! Removing data from the head: retention cut-offs and admin deletes of
//! whole series, both applied from the log.
//!
//! Owns the bookkeeping that keeps the store consistent with what is
//! dropped: live chunks per stored block, blocks left without live chunks,
//! unsaved chunks to forget, series to delete at the next checkpoint. It
//! must not delete anything from disk itself (the next checkpoint does), and
//! must not read a clock: the cut-off comes from the log entry.

use std::collections::HashMap;

use super::Head;
use crate::tsdb::chunk::XorChunk;
use crate::tsdb::labels::{Label, Labels};
use crate::tsdb::postings::SeriesId;
use crate::tsdb::symbols::Sym;

/// A series' interned labels.
type SeriesLabels = Box<[(Sym, Sym)]>;

impl Head {
    /// Applies a retention cut-off: drops every chunk that ends before it and
    /// every series left empty; later appends before it are out of bounds.
    pub fn apply_retention(&mut self, cutoff_ms: i64) {
        if cutoff_ms <= self.min_valid_t_ms {
            return;
        }
        self.min_valid_t_ms = cutoff_ms;
        let mut emptied = Vec::new();
        for (idx, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else { continue };
            let id = idx as SeriesId;
            let before = s.closed.len();
            s.closed.retain(|c| {
                let keep = c.maxt_ms >= cutoff_ms;
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
                .and_then(XorChunk::last_t_ms)
                .is_some_and(|t_ms| t_ms < cutoff_ms)
            {
                s.open = None;
                Self::mark_dirty(s, id, &mut self.dirty_series);
            }
            if s.ooo.first().is_some_and(|&(t_ms, _)| t_ms < cutoff_ms) {
                s.ooo.retain(|&(t_ms, _)| t_ms >= cutoff_ms);
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
    pub(super) fn forget_series(&mut self, id: SeriesId, syms: &[(Sym, Sym)]) {
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

#[cfg(test)]
mod tests {
    use super::super::{Head, HeadOptions};
    use crate::tsdb::Labels;

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)])
    }

    /// A head with chunks of 4 samples, one series `a` at 0, 10, ..., 190.
    fn head_with_chunks() -> (Head, u32) {
        let mut h = Head::new(HeadOptions {
            ooo_window_ms: 0,
            chunk_samples: 4,
        });
        let id = h.get_or_create(&labels("a"));
        for i in 0..20 {
            h.append(id, i * 10, i as f64).unwrap();
        }
        (h, id)
    }

    #[test]
    fn retention_drops_chunks_that_end_before_the_cutoff() {
        let (mut h, id) = head_with_chunks();
        assert_eq!(
            h.series(id).unwrap().closed.len(),
            4,
            "chunks [0,30] [40,70] [80,110] [120,150]"
        );
        h.apply_retention(75);
        let s = h.series(id).unwrap();
        let kept: Vec<(i64, i64)> = s.closed.iter().map(|c| (c.mint_ms, c.maxt_ms)).collect();
        assert_eq!(kept, vec![(80, 110), (120, 150)], "a chunk ending before 75 goes");
        assert_eq!(s.min_time_ms(), 80);
        // Unsaved chunks that were dropped are forgotten by the next checkpoint.
        let d = h.checkpoint_delta();
        let seqs: Vec<u32> = d.new_chunks.iter().map(|(_, c)| c.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(d.min_valid_t_ms, 75);
    }

    #[test]
    fn retention_keeps_a_chunk_that_straddles_the_cutoff() {
        let (mut h, id) = head_with_chunks();
        h.apply_retention(45);
        let s = h.series(id).unwrap();
        assert_eq!(s.closed[0].mint_ms, 40, "[40,70] ends after 45: kept whole");
        assert_eq!(h.num_series(), 1);
    }

    #[test]
    fn retention_never_moves_the_floor_back() {
        let (mut h, id) = head_with_chunks();
        h.apply_retention(100);
        h.apply_retention(50);
        assert_eq!(h.min_valid_t_ms(), 100);
        assert_eq!(h.series(id).unwrap().closed.len(), 2, "[80,110] and [120,150] remain");
    }

    #[test]
    fn retention_removes_emptied_series_and_never_reuses_their_ids() {
        let (mut h, a) = head_with_chunks();
        let b = h.get_or_create(&labels("b"));
        h.append(b, 500, 1.0).unwrap();
        h.checkpoint_done(&[]);
        h.apply_retention(400);
        assert!(h.series(a).is_none(), "every sample of `a` was older than the cutoff");
        assert!(h.lookup(&labels("a")).is_none());
        assert_eq!(h.num_series(), 1);
        assert_eq!(h.stats().series_removed, 1);
        assert_eq!(h.checkpoint_delta().deleted_series, vec![a]);
        assert!(h.postings().all().iter().all(|&id| id != a), "postings forget it");
        // Coming back, the series gets a new id.
        let again = h.get_or_create(&labels("a"));
        assert_eq!(again, 2);
        assert_eq!(h.series(again).unwrap().max_t_ms, i64::MIN, "a new series starts empty");
    }

    #[test]
    fn retention_trims_the_out_of_order_buffer() {
        let mut h = Head::new(HeadOptions {
            ooo_window_ms: 1000,
            chunk_samples: 120,
        });
        let id = h.get_or_create(&labels("a"));
        h.append(id, 1000, 1.0).unwrap();
        h.append(id, 100, 0.1).unwrap();
        h.append(id, 900, 0.9).unwrap();
        h.apply_retention(500);
        assert_eq!(h.series(id).unwrap().ooo, vec![(900, 0.9)]);
    }

    #[test]
    fn delete_series_removes_whole_series_and_releases_their_blocks() {
        let (mut h, a) = head_with_chunks();
        let b = h.get_or_create(&labels("b"));
        h.append(b, 5, 1.0).unwrap();
        // Pretend the checkpoint put every closed chunk of `a` in block 7.
        let locs: Vec<_> = h
            .series(a)
            .unwrap()
            .closed
            .iter()
            .map(|c| {
                (
                    a,
                    c.seq,
                    super::super::ChunkLoc {
                        block: 7,
                        offset: 4,
                        len: 10,
                    },
                )
            })
            .collect();
        h.checkpoint_done(&locs);
        assert_eq!(h.delete_series(&[a, 99]), 1, "an unknown id is skipped");
        assert!(h.series(a).is_none());
        let d = h.checkpoint_delta();
        assert_eq!(d.deleted_blocks, vec![7], "block 7 has no live chunk left");
        assert_eq!(d.deleted_series, vec![a]);
        assert!(h.series(b).is_some());
        assert_eq!(h.delete_series(&[a]), 0, "deleting twice is a no-op");
    }
}
