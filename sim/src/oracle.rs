//! The client oracle: every write the clients attempted, with its unique
//! samples and what became of it (acknowledged, failed, or unknown because
//! its node crashed or the answer never came), and the reads.
//!
//! A failed write may still have been committed (a commit can outlive its
//! timeout), so only acknowledged writes are certain; every sample of an
//! attempted write may appear, and nothing else may.

use std::collections::BTreeMap;

use promraft::tsdb::{AppendRequest, Labels, SeriesSamples};

/// Name of every series the simulation writes.
pub const METRIC: &str = "sim";

/// Timestamps start here (year 2096), far after any wall-clock retention
/// cut-off a node may propose, so retention never removes a sample.
pub const TS_BASE: i64 = 4_000_000_000_000;

/// A series of the simulation: (client node id, series number).
pub type SeriesKey = (u64, u32);

/// The labels of a series.
pub fn labels(key: SeriesKey) -> Labels {
    Labels::from_pairs([
        ("__name__", METRIC.to_string()),
        ("client", format!("n{}", key.0)),
        ("s", key.1.to_string()),
    ])
}

/// The series a stored label set belongs to, if it is one of ours.
pub fn key_of(l: &Labels) -> Option<SeriesKey> {
    let client = l.get("client").strip_prefix('n')?.parse().ok()?;
    let s = l.get("s").parse().ok()?;
    Some((client, s))
}

/// What became of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not answered yet (or never: its node crashed).
    Pending,
    /// Acknowledged. `bound_index` is at least the index of its entry: the
    /// highest applied index of any node when the answer came.
    Acked {
        /// Upper bound of the entry's log index.
        bound_index: u64,
        /// Sim time of the acknowledgement, ms.
        at_ms: u64,
    },
    /// Answered with an error (it may still have been committed).
    Failed,
}

/// One attempted write.
#[derive(Debug, Clone)]
pub struct WriteOp {
    /// Sequence number.
    pub id: u64,
    /// The node it was sent to.
    pub node: u64,
    /// Its samples.
    pub samples: Vec<(SeriesKey, i64, f64)>,
    /// Sim time it started, ms.
    pub start_ms: u64,
    /// What became of it.
    pub outcome: Outcome,
}

impl WriteOp {
    /// The request the client sends.
    pub fn request(&self) -> AppendRequest {
        let mut by_series: BTreeMap<SeriesKey, Vec<(i64, f64)>> = BTreeMap::new();
        for &(k, t, v) in &self.samples {
            by_series.entry(k).or_default().push((t, v));
        }
        AppendRequest {
            series: by_series
                .into_iter()
                .map(|(k, samples)| SeriesSamples {
                    labels: labels(k),
                    samples,
                })
                .collect(),
            metadata: vec![],
        }
    }
}

/// Counters of client operations.
#[derive(Debug, Clone, Default)]
pub struct OpCounts {
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Writes answered with an error.
    pub writes_failed: u64,
    /// Linearizable reads served (and checked).
    pub reads_linearizable: u64,
    /// Local reads served (and checked).
    pub reads_local: u64,
    /// Reads refused (no leader, barrier timed out...).
    pub reads_failed: u64,
}

/// Every write attempted and every sample it carried.
#[derive(Default)]
pub struct Oracle {
    /// Writes by id.
    pub writes: Vec<WriteOp>,
    /// Ids of the acknowledged writes, in the order they were acknowledged.
    pub acked_order: Vec<u64>,
    /// Operation counters.
    pub counts: OpCounts,
}

impl Oracle {
    /// Registers a new write of `series` (one sample each) from `node`.
    pub fn begin_write(&mut self, node: u64, series: &[SeriesKey], now_ms: u64) -> WriteOp {
        let id = self.writes.len() as u64;
        // The run's next timestamp (strictly increasing over the whole run):
        // write `id` alone is at `TS_BASE + id + 1` (see `attempted`).
        let ts = TS_BASE + 1 + id as i64;
        let samples: Vec<_> = series
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, ts, id as f64 * 8.0 + i as f64 + 0.5))
            .collect();
        let op = WriteOp {
            id,
            node,
            samples,
            start_ms: now_ms,
            outcome: Outcome::Pending,
        };
        self.writes.push(op.clone());
        op
    }

    /// The attempted sample of series `k` at timestamp `t`, if any write
    /// carried one: (value, write id).
    ///
    /// Write `id` is the only one at `TS_BASE + id + 1` (`begin_write`)
    /// and carries at most one sample per series: the lookup is an index,
    /// not a map of every sample.
    pub fn attempted(&self, k: SeriesKey, t: i64) -> Option<(f64, u64)> {
        let id = t.checked_sub(TS_BASE + 1)?;
        let w = self.writes.get(usize::try_from(id).ok()?)?;
        w.samples
            .iter()
            .find(|&&(wk, wt, _)| wk == k && wt == t)
            .map(|&(_, _, v)| (v, w.id))
    }

    /// Records the answer to write `id`.
    pub fn finish_write(&mut self, id: u64, outcome: Outcome) {
        match outcome {
            Outcome::Acked { .. } => {
                self.counts.writes_acked += 1;
                self.acked_order.push(id);
            }
            Outcome::Failed => self.counts.writes_failed += 1,
            Outcome::Pending => {}
        }
        self.writes[id as usize].outcome = outcome;
    }

    /// Writes never answered.
    pub fn unknown(&self) -> u64 {
        self.writes.iter().filter(|w| w.outcome == Outcome::Pending).count() as u64
    }

    /// Acknowledged writes.
    pub fn acked(&self) -> impl Iterator<Item = &WriteOp> {
        self.writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Acked { .. }))
    }
}
