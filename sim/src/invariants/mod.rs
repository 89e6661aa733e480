//! The invariants, one file each. Each is checked during the run (every
//! check interval, and by the clients as they are answered) and after the
//! heal phase; a breach becomes a [`Violation`] that fails the seed.

pub mod acked_not_lost;
pub mod heal;
pub mod linearizable_read;
pub mod no_duplicate_or_phantom;
pub mod one_leader_per_term;
pub mod same_digest;

use std::sync::Arc;

/// Every invariant's name, in the order of the files.
pub const ALL: [&str; 6] = [
    acked_not_lost::NAME,
    heal::NAME,
    linearizable_read::NAME,
    no_duplicate_or_phantom::NAME,
    one_leader_per_term::NAME,
    same_digest::NAME,
];

/// Not an invariant: a host (a node's code) panicked or failed, which fails
/// the seed as well.
pub const HOST_FAILED: &str = "host";

use promraft::node::Node;
use promraft::tsdb::{Digest, Matcher, SeriesData};

use crate::oracle::{key_of, SeriesKey, METRIC};

/// The simulation's samples of one replica or read, looked up by (series,
/// timestamp): what a map of every (series, timestamp) to its value, the
/// later one stored winning, would answer, without building that map at
/// every check. A series holds its samples sorted by time, so a lookup is
/// a binary search; a series out of order (a bug the checks report) is
/// searched from its end.
pub struct Held<'a> {
    /// Each of our series, in the order returned.
    by_series: std::collections::BTreeMap<SeriesKey, Vec<HeldSeries<'a>>>,
}

/// One series as read: its samples, and whether their timestamps are
/// strictly increasing.
type HeldSeries<'a> = (&'a [(i64, f64)], bool);

impl<'a> Held<'a> {
    /// Indexes `data` (series not of the simulation are left out).
    pub fn new(data: &'a [SeriesData]) -> Held<'a> {
        let mut by_series: std::collections::BTreeMap<SeriesKey, Vec<HeldSeries<'a>>> =
            std::collections::BTreeMap::new();
        for s in data {
            if let Some(k) = key_of(&s.labels) {
                let sorted = s.samples.windows(2).all(|w| w[0].0 < w[1].0);
                by_series.entry(k).or_default().push((&s.samples, sorted));
            }
        }
        Held { by_series }
    }

    /// The value held for series `k` at `t` (the last one stored, if
    /// several).
    pub fn get(&self, k: SeriesKey, t: i64) -> Option<f64> {
        let series = self.by_series.get(&k)?;
        series.iter().rev().find_map(|&(samples, sorted)| {
            if sorted {
                samples
                    .binary_search_by_key(&t, |&(st, _)| st)
                    .ok()
                    .map(|i| samples[i].1)
            } else {
                samples.iter().rev().find(|&&(st, _)| st == t).map(|&(_, v)| v)
            }
        })
    }
}

/// A breached invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which invariant (its file's name, one of [`ALL`]), or [`HOST_FAILED`].
    pub invariant: &'static str,
    /// Sim time, ms.
    pub at_ms: u64,
    /// What was expected and what happened.
    pub detail: String,
}

/// One replica's state at one moment, as the checks read it.
pub struct Replica {
    /// Node id.
    pub id: u64,
    /// Applied index.
    pub applied: u64,
    /// The simulation's series with every sample.
    pub data: Vec<SeriesData>,
    /// The digest of the whole TSDB.
    pub digest: Digest,
}

/// Every series the simulation writes, from `node`'s replica.
pub fn select_all(node: &Node) -> Result<Vec<SeriesData>, String> {
    node.db
        .select(&[Matcher::equal("__name__", METRIC)], i64::MIN, i64::MAX, usize::MAX)
        .map_err(|e| e.to_string())
}

impl Replica {
    /// Reads `node`'s replica. Runs between simulation steps, so nothing
    /// applies meanwhile and data, digest and index agree.
    pub fn capture(id: u64, node: &Arc<Node>) -> Result<Replica, String> {
        let applied = node.applied_index();
        let data = select_all(node)?;
        let digest = node.db.digest().map_err(|e| e.to_string())?;
        Ok(Replica {
            id,
            applied,
            data,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::{labels, Oracle, TS_BASE};

    fn series(key: SeriesKey, samples: &[(i64, f64)]) -> SeriesData {
        SeriesData {
            labels: labels(key),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn held_answers_as_a_map_of_every_sample_would() {
        let data = vec![
            series((1, 0), &[(10, 1.0), (20, 2.0), (30, 3.0)]),
            series((1, 1), &[(30, 5.0), (10, 4.0), (30, 6.0)]),
            series((1, 0), &[(20, 7.0)]),
        ];
        let mut map = std::collections::HashMap::new();
        for s in &data {
            for &(t, v) in &s.samples {
                map.insert((key_of(&s.labels).unwrap(), t), v);
            }
        }
        let held = Held::new(&data);
        for k in [(1, 0), (1, 1), (2, 0)] {
            for t in [0, 10, 15, 20, 30, 40] {
                assert_eq!(held.get(k, t), map.get(&(k, t)).copied(), "{k:?}@{t}");
            }
        }
    }

    #[test]
    fn attempted_finds_each_written_sample_and_nothing_else() {
        let mut o = Oracle::default();
        let a = o.begin_write(1, &[(1, 0), (1, 2)], 0);
        let b = o.begin_write(2, &[(2, 1)], 0);
        for w in [&a, &b] {
            for &(k, t, v) in &w.samples {
                assert_eq!(o.attempted(k, t), Some((v, w.id)));
            }
        }
        let t = a.samples[0].1;
        assert_eq!(o.attempted((1, 1), t), None, "a series the write did not carry");
        assert_eq!(o.attempted((2, 1), t), None, "another write's series");
        for t in [i64::MIN, 0, TS_BASE, TS_BASE + 3, i64::MAX] {
            assert_eq!(o.attempted((1, 0), t), None, "{t}");
        }
    }
}
