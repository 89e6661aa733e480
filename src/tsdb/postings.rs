//! The postings index: for every label pair, the sorted ids of the series
//! that carry it.
//!
//! Series ids are assigned in increasing order, so appending keeps every list
//! sorted without a sort. Selection by matchers follows Prometheus: matchers
//! that cannot match an absent label intersect, those that can subtract, and
//! a selection with no narrowing matcher starts from every series.

use std::collections::HashMap;

use super::matcher::Matcher;
use super::symbols::{Sym, Symbols};

/// A series id.
pub type SeriesId = u32;

/// Label pair to sorted series ids.
#[derive(Default)]
pub struct Postings {
    by_name: HashMap<Sym, HashMap<Sym, Vec<SeriesId>>>,
    /// Every live series id, sorted.
    all: Vec<SeriesId>,
}

impl Postings {
    /// Adds a new series. `id` must be larger than every id added before.
    pub fn add(&mut self, id: SeriesId, labels: &[(Sym, Sym)]) {
        debug_assert!(
            self.all.last().is_none_or(|&last| last < id),
            "series ids must increase"
        );
        self.all.push(id);
        for &(n, v) in labels {
            self.by_name.entry(n).or_default().entry(v).or_default().push(id);
        }
    }

    /// Removes series (retention). `ids` must be sorted.
    pub fn remove(&mut self, ids: &[SeriesId], labels_of: impl Fn(SeriesId) -> Vec<(Sym, Sym)>) {
        if ids.is_empty() {
            return;
        }
        self.all.retain(|id| ids.binary_search(id).is_err());
        for &id in ids {
            for (n, v) in labels_of(id) {
                if let Some(values) = self.by_name.get_mut(&n) {
                    if let Some(list) = values.get_mut(&v) {
                        if let Ok(pos) = list.binary_search(&id) {
                            list.remove(pos);
                        }
                        if list.is_empty() {
                            values.remove(&v);
                        }
                    }
                    if values.is_empty() {
                        self.by_name.remove(&n);
                    }
                }
            }
        }
    }

    /// Every live series.
    pub fn all(&self) -> &[SeriesId] {
        &self.all
    }

    /// The label names in use (symbols).
    pub fn names(&self) -> impl Iterator<Item = Sym> + '_ {
        self.by_name.keys().copied()
    }

    /// The values in use for a label name, with their postings.
    pub fn values(&self, name: Sym) -> impl Iterator<Item = (Sym, &[SeriesId])> + '_ {
        self.by_name
            .get(&name)
            .into_iter()
            .flat_map(|m| m.iter().map(|(v, l)| (*v, l.as_slice())))
    }

    /// The series matching every matcher, sorted.
    pub fn select(&self, symbols: &Symbols, matchers: &[Matcher]) -> Vec<SeriesId> {
        let mut result: Option<Vec<SeriesId>> = None;
        let mut subtract: Vec<Vec<SeriesId>> = Vec::new();
        // Narrowing matchers first: they make the working set small early.
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let list = self.union_matching(symbols, m, true);
            result = Some(match result {
                None => list,
                Some(r) => intersect(&r, &list),
            });
            if result.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        for m in matchers.iter().filter(|m| m.matches_empty()) {
            // Series lacking the label match; so do those whose value
            // matches. Subtract the ones whose value does not.
            subtract.push(self.union_matching(symbols, m, false));
        }
        let mut out = result.unwrap_or_else(|| self.all.clone());
        for s in subtract {
            if !s.is_empty() {
                out = difference(&out, &s);
            }
        }
        out
    }

    /// Union of the postings of every value of `m.name` for which
    /// `m.matches(value) == want`.
    fn union_matching(&self, symbols: &Symbols, m: &Matcher, want: bool) -> Vec<SeriesId> {
        let Some(name) = symbols.lookup(&m.name) else {
            return Vec::new();
        };
        let Some(values) = self.by_name.get(&name) else {
            return Vec::new();
        };
        if want {
            if let Some(literals) = m.set_literals() {
                let lists: Vec<&[SeriesId]> = literals
                    .iter()
                    .filter_map(|l| symbols.lookup(l))
                    .filter_map(|s| values.get(&s))
                    .map(Vec::as_slice)
                    .collect();
                return union_many(&lists);
            }
            if m.op == super::matcher::MatchOp::Equal {
                return symbols
                    .lookup(&m.value)
                    .and_then(|s| values.get(&s))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        let lists: Vec<&[SeriesId]> = values
            .iter()
            .filter(|(v, _)| m.matches(symbols.resolve(**v)) == want)
            .map(|(_, l)| l.as_slice())
            .collect();
        union_many(&lists)
    }

    /// Approximate heap bytes, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let mut n = self.all.capacity() * 4 + self.by_name.capacity() * 56;
        for values in self.by_name.values() {
            n += values.capacity() * 40;
            n += values.values().map(|l| l.capacity() * 4).sum::<usize>();
        }
        n
    }
}

/// Sorted intersection.
pub fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Sorted difference `a \ b`.
pub fn difference(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let mut j = 0;
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j < b.len() && b[j] == x {
            continue;
        }
        out.push(x);
    }
    out
}

/// Sorted union of many sorted lists.
pub fn union_many(lists: &[&[SeriesId]]) -> Vec<SeriesId> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists[0].to_vec(),
        _ => {
            let mut out: Vec<SeriesId> = lists.iter().flat_map(|l| l.iter().copied()).collect();
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::matcher::{MatchOp, Matcher};
    use proptest::prelude::*;

    fn index(series: &[&[(&str, &str)]]) -> (Symbols, Postings) {
        let mut sy = Symbols::default();
        let mut p = Postings::default();
        for (i, s) in series.iter().enumerate() {
            let l: Vec<(Sym, Sym)> = s.iter().map(|(n, v)| (sy.intern(n), sy.intern(v))).collect();
            p.add(i as SeriesId, &l);
        }
        (sy, p)
    }

    #[test]
    fn select_follows_prometheus_semantics() {
        let (sy, p) = index(&[
            &[("__name__", "up"), ("job", "a")],
            &[("__name__", "up"), ("job", "b")],
            &[("__name__", "up")],
            &[("__name__", "down"), ("job", "a")],
        ]);
        let sel = |ms: Vec<Matcher>| p.select(&sy, &ms);
        assert_eq!(sel(vec![Matcher::equal("__name__", "up")]), vec![0, 1, 2]);
        assert_eq!(
            sel(vec![Matcher::equal("__name__", "up"), Matcher::equal("job", "a")]),
            vec![0]
        );
        assert_eq!(
            sel(vec![
                Matcher::equal("__name__", "up"),
                Matcher::new(MatchOp::NotEqual, "job", "a").unwrap()
            ]),
            vec![1, 2]
        );
        assert_eq!(
            sel(vec![Matcher::equal("__name__", "up"), Matcher::equal("job", "")]),
            vec![2]
        );
        assert_eq!(
            sel(vec![Matcher::new(MatchOp::Regex, "job", "a|b").unwrap()]),
            vec![0, 1, 3]
        );
        assert_eq!(
            sel(vec![Matcher::new(MatchOp::Regex, "job", ".+").unwrap()]),
            vec![0, 1, 3]
        );
        assert_eq!(
            sel(vec![Matcher::new(MatchOp::NotRegex, "job", "a").unwrap()]),
            vec![1, 2]
        );
        assert_eq!(sel(vec![Matcher::equal("nope", "x")]), Vec::<SeriesId>::new());
    }

    proptest! {
        /// The index agrees with a brute-force scan for random series and matchers.
        #[test]
        fn select_matches_brute_force(
            series in proptest::collection::vec(proptest::collection::btree_map("[abc]", "[xyz]{0,2}", 0..3), 0..30),
            ms in proptest::collection::vec(("[abc]", 0..4u8, "[xyz.*|]{0,3}"), 1..3),
        ) {
            let owned: Vec<Vec<(String, String)>> = series.iter().map(|m| m.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
            let refs: Vec<Vec<(&str, &str)>> = owned.iter().map(|s| s.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()).collect();
            let slices: Vec<&[(&str, &str)]> = refs.iter().map(|v| v.as_slice()).collect();
            let (sy, p) = index(&slices);
            let mut matchers = Vec::new();
            for (name, op, value) in ms {
                let op = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex][op as usize];
                match Matcher::new(op, name, value) { Ok(m) => matchers.push(m), Err(_) => return Ok(()) }
            }
            let got = p.select(&sy, &matchers);
            let want: Vec<SeriesId> = owned.iter().enumerate().filter(|(_, s)| matchers.iter().all(|m| {
                let v = s.iter().find(|(n, _)| *n == m.name).map(|(_, v)| v.as_str()).unwrap_or("");
                m.matches(v)
            })).map(|(i, _)| i as SeriesId).collect();
            prop_assert_eq!(got, want);
        }
    }
}
