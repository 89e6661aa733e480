//! The head and the store against a simple model, in the shape of sled's
//! `prop_tree_matches_btreemap`: random appends, retention cut-offs,
//! checkpoints, clean reopens and crashes (a reopen without a checkpoint)
//! on a [`Db`], compared after every step with a `BTreeMap` per series.
//!
//! The model predicts every append's answer from Prometheus's rules. Where
//! the answer depends on which chunk a sample lives in, which the model
//! does not track (a resent sample counts as a duplicate only in the open
//! chunk, and inside the out-of-order window a sample already in a closed
//! chunk is taken again and hidden by the earlier one on read), both
//! answers are allowed; what queries return must then still match. What
//! queries cannot see, data left below the retention floor, is checked on
//! the head directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use crate::kv::Kv;
use crate::test_support::{proptest_cases, MemKv};
use crate::tsdb::{AppendRequest, AppendResult, Db, HeadOptions, Labels, MatchOp, Matcher, SeriesSamples};

const SERIES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        series: usize,
        t_ms: i64,
        v: u8,
    },
    Retention {
        cutoff_ms: i64,
    },
    Checkpoint,
    /// Checkpoint, close, reopen.
    Reopen,
    /// Close without a checkpoint and reopen: back to the last checkpoint
    /// (a restarted node then replays the log, which is not modelled).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => (0..SERIES, 0i64..400, 0u8..3).prop_map(|(series, t_ms, v)| Op::Append { series, t_ms, v }),
        24 => (0..SERIES, 0i64..8, 0u8..3).prop_map(|(series, d, v)| Op::Append { series, t_ms: 400 + d * 7, v }),
        1 => (0i64..300).prop_map(|cutoff_ms| Op::Retention { cutoff_ms }),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    New,
    Duplicate,
    OutOfOrder,
    DuplicateTimestamp,
    OutOfBounds,
}

fn outcome(r: &AppendResult) -> Outcome {
    match (
        r.appended,
        r.duplicates,
        r.out_of_order,
        r.duplicate_timestamp,
        r.out_of_bounds,
    ) {
        (1, 0, 0, 0, 0) => Outcome::New,
        (0, 1, 0, 0, 0) => Outcome::Duplicate,
        (0, 0, 1, 0, 0) => Outcome::OutOfOrder,
        (0, 0, 0, 1, 0) => Outcome::DuplicateTimestamp,
        (0, 0, 0, 0, 1) => Outcome::OutOfBounds,
        _ => panic!("one sample, one outcome; got {r:?}"),
    }
}

#[derive(Debug, Clone, Default)]
struct ModelSeries {
    /// Newest in-order sample: time and value bits.
    newest: Option<(i64, u64)>,
    /// Every value accepted per timestamp at or after the retention floor,
    /// in order; the first is the one reads return.
    samples: BTreeMap<i64, Vec<u64>>,
}

#[derive(Debug, Clone)]
struct Model {
    floor_ms: i64,
    window_ms: i64,
    series: Vec<ModelSeries>,
}

impl Model {
    fn allowed(&self, series: usize, t_ms: i64, bits: u64) -> Vec<Outcome> {
        use Outcome::*;
        let s = &self.series[series];
        if t_ms < self.floor_ms {
            return vec![OutOfBounds];
        }
        let Some((newest_ms, newest_bits)) = s.newest else {
            return vec![New];
        };
        if t_ms > newest_ms {
            return vec![New];
        }
        if t_ms == newest_ms {
            return vec![if bits == newest_bits {
                Duplicate
            } else {
                DuplicateTimestamp
            }];
        }
        let inside = self.window_ms > 0 && t_ms >= newest_ms.saturating_sub(self.window_ms);
        // Which of the values held for `t_ms` the head compares with depends on
        // the chunk it is in: any of them may answer.
        let mut out = vec![if inside { New } else { OutOfOrder }];
        for &b in s.samples.get(&t_ms).into_iter().flatten() {
            out.push(if b == bits { Duplicate } else { DuplicateTimestamp });
        }
        out
    }

    fn record(&mut self, series: usize, t_ms: i64, bits: u64, got: Outcome) {
        if got != Outcome::New {
            return;
        }
        let s = &mut self.series[series];
        s.samples.entry(t_ms).or_default().push(bits);
        if s.newest.is_none_or(|(newest_ms, _)| t_ms > newest_ms) {
            s.newest = Some((t_ms, bits));
        }
    }

    fn retention(&mut self, cutoff_ms: i64) {
        if cutoff_ms <= self.floor_ms {
            return;
        }
        self.floor_ms = cutoff_ms;
        for s in &mut self.series {
            s.samples.retain(|&t_ms, _| t_ms >= cutoff_ms);
            if s.samples.is_empty() {
                // Nothing at or after the cut-off: the series is removed
                // and comes back as a new one.
                *s = ModelSeries::default();
            }
        }
    }
}

fn labels(series: usize) -> Labels {
    Labels::from_pairs([("__name__", "m".to_string()), ("s", series.to_string())])
}

fn value(v: u8) -> f64 {
    // Two plain values and a NaN, so that NaN duplicates are covered.
    [1.0, 2.5, f64::NAN][v as usize]
}

fn open(kv: &Arc<dyn Kv>, opts: &HeadOptions) -> Db {
    Db::open_kv(kv.clone(), opts.clone()).expect("open the TSDB").0
}

/// What the Db returns for every series from the floor on, against the model.
fn check_reads(db: &Db, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for (i, m) in model.series.iter().enumerate() {
        let matchers = [
            Matcher::new(MatchOp::Equal, "__name__", "m").unwrap(),
            Matcher::new(MatchOp::Equal, "s", i.to_string()).unwrap(),
        ];
        let got: BTreeMap<i64, u64> = db
            .select(&matchers, model.floor_ms, i64::MAX, usize::MAX)
            .expect("select")
            .into_iter()
            .flat_map(|s| s.samples)
            .map(|(t_ms, v)| (t_ms, v.to_bits()))
            .collect();
        let want: BTreeMap<i64, u64> = m.samples.iter().map(|(&t_ms, v)| (t_ms, v[0])).collect();
        prop_assert_eq!(&got, &want, "series {} after step {}", i, step);
    }
    Ok(())
}

/// What the head holds below its retention floor: only closed chunks that
/// straddle it. Queries from the floor on cannot see a leftover below it
/// (say an out-of-order buffer retention forgot to trim), this can.
fn check_floor(db: &Db, step: usize) -> Result<(), TestCaseError> {
    let head = db.head();
    let floor_ms = head.min_valid_t_ms();
    for (id, s) in head.iter_series() {
        prop_assert!(
            s.closed.iter().all(|c| c.maxt_ms >= floor_ms),
            "series {} holds a chunk ending before the floor {} after step {}",
            id,
            floor_ms,
            step
        );
        prop_assert!(
            s.open
                .as_ref()
                .and_then(|c| c.last_t_ms())
                .is_none_or(|t_ms| t_ms >= floor_ms),
            "series {} has an open chunk ending before the floor {} after step {}",
            id,
            floor_ms,
            step
        );
        prop_assert!(
            s.ooo.iter().all(|&(t_ms, _)| t_ms >= floor_ms),
            "series {} buffers an out-of-order sample before the floor {} after step {}",
            id,
            floor_ms,
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    #[test]
    fn db_matches_a_btreemap_model(
        window_ms in prop_oneof![Just(0i64), Just(30), Just(1000)],
        chunk_samples in prop_oneof![Just(2usize), Just(4), Just(120)],
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        let opts = HeadOptions { ooo_window_ms: window_ms, chunk_samples };
        let kv: Arc<dyn Kv> = Arc::new(MemKv::default());
        let mut db = open(&kv, &opts);
        let mut model = Model { floor_ms: i64::MIN, window_ms, series: vec![ModelSeries::default(); SERIES] };
        let mut at_checkpoint = (model.clone(), db.digest().unwrap());
        let upper = b"upper".to_vec();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { series, t_ms, v } => {
                    let v = value(v);
                    let r = db.apply(&AppendRequest {
                        series: vec![SeriesSamples { labels: labels(series), samples: vec![(t_ms, v)] }],
                        metadata: vec![],
                    });
                    let got = outcome(&r);
                    let allowed = model.allowed(series, t_ms, v.to_bits());
                    prop_assert!(
                        allowed.contains(&got),
                        "step {}: append ({}, {}) to series {} answered {:?}, model allows {:?}",
                        step, t_ms, v, series, got, allowed
                    );
                    model.record(series, t_ms, v.to_bits(), got);
                }
                Op::Retention { cutoff_ms } => {
                    db.apply_retention(cutoff_ms);
                    model.retention(cutoff_ms);
                }
                Op::Checkpoint => {
                    db.checkpoint(upper.clone()).unwrap();
                    at_checkpoint = (model.clone(), db.digest().unwrap());
                }
                Op::Reopen => {
                    db.checkpoint(upper.clone()).unwrap();
                    let before = db.digest().unwrap();
                    drop(db);
                    db = open(&kv, &opts);
                    prop_assert_eq!(db.digest().unwrap(), before.clone(), "digest after reopen, step {}", step);
                    prop_assert_eq!(db.checkpoint_upper().unwrap(), Some(upper.clone()));
                    at_checkpoint = (model.clone(), before);
                }
                Op::Crash => {
                    drop(db);
                    db = open(&kv, &opts);
                    model = at_checkpoint.0.clone();
                    prop_assert_eq!(db.digest().unwrap(), at_checkpoint.1.clone(), "digest after crash, step {}", step);
                }
            }
            check_reads(&db, &model, step)?;
            check_floor(&db, step)?;
        }
    }
}
