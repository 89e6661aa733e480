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
