//! Reading the head: series by id or by labels, label resolution, the
//! symbol table, postings, metadata and iteration over live series.
//!
//! Everything here takes `&self`: it must not change the head. Decoding
//! chunks for a query is the querier's job (`db.rs`), outside the lock.

use std::collections::HashMap;

use super::{Head, MemSeries};
use crate::tsdb::labels::{Label, Labels};
use crate::tsdb::postings::{Postings, SeriesId};
use crate::tsdb::symbols::Symbols;
use crate::tsdb::Metadata;

impl Head {
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

    pub(super) fn same_labels(&self, s: &MemSeries, labels: &Labels) -> bool {
        s.labels.len() == labels.len()
            && s.labels
                .iter()
                .zip(labels.iter())
                .all(|(&(n, v), l)| self.symbols.resolve(n) == l.name && self.symbols.resolve(v) == l.value)
    }

    /// Iterates over live series.
    pub fn iter_series(&self) -> impl Iterator<Item = (SeriesId, &MemSeries)> + '_ {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as SeriesId, s)))
    }
}
