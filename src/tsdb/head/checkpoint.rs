//! Checkpointing the head: the delta a checkpoint persists, marking it
//! persisted, restoring the head from the store at startup, and the byte
//! layout of a series' open state (docs/format/checkpoint.md).
//!
//! Owns the open-state codec, whose decoder must never panic on bytes read
//! from disk: corrupt input is an [`Error::Corrupt`].
//! It must not write to the store (`store.rs` does, in one atomic batch) nor
//! decide what a checkpoint contains beyond what changed since the last one.

use super::{ChunkLoc, ChunkMeta, Head, MemSeries, OPEN_STATE_SHARDS};
use crate::tsdb::chunk::XorChunk;
use crate::tsdb::labels::Labels;
use crate::tsdb::postings::SeriesId;
use crate::tsdb::symbols::Sym;
use crate::tsdb::{Error, Metadata};

/// One series' encoded open state.
pub type EncodedOpenState = (SeriesId, Vec<u8>);

/// What changed since the last checkpoint, for the store to persist.
#[derive(Default)]
pub struct CheckpointDelta {
    /// New series with their labels.
    pub new_series: Vec<(SeriesId, Labels)>,
    /// Closed chunks to write: series, meta (with `pending` set).
    pub new_chunks: Vec<(SeriesId, ChunkMeta)>,
    /// Blocks none of whose chunks are still live (retention).
    pub deleted_blocks: Vec<u64>,
    /// Series to delete.
    pub deleted_series: Vec<SeriesId>,
    /// Open-state shards to rewrite whole: shard, then every series in it
    /// that has open state.
    pub open_shards: Vec<(u32, Vec<EncodedOpenState>)>,
    /// Next series id.
    pub next_series_id: SeriesId,
    /// Lowest timestamp accepted (retention).
    pub min_valid_t_ms: i64,
    /// Metric metadata, when it changed.
    pub metadata: Option<Vec<Metadata>>,
}

impl Head {
    /// Collects what changed since the last checkpoint. The head is not
    /// changed: call [`Head::checkpoint_done`] once the delta is durable.
    pub fn checkpoint_delta(&self) -> CheckpointDelta {
        let mut d = CheckpointDelta {
            next_series_id: self.next_series_id(),
            min_valid_t_ms: self.min_valid_t_ms,
            ..Default::default()
        };
        for &id in &self.new_series {
            if let Some(s) = self.series(id) {
                d.new_series.push((id, self.labels_of(s)));
            }
        }
        for &(id, seq) in &self.new_chunks {
            if let Some(c) = self.series(id).and_then(|s| s.closed.iter().find(|c| c.seq == seq)) {
                d.new_chunks.push((id, c.clone()));
            }
        }
        d.deleted_blocks = self.deleted_blocks.clone();
        d.deleted_series = self.deleted_series.clone();
        let mut shards: Vec<u32> = self
            .dirty_series
            .iter()
            .chain(self.deleted_series.iter())
            .map(|id| id % OPEN_STATE_SHARDS)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            let states = (shard..self.series.len() as u32)
                .step_by(OPEN_STATE_SHARDS as usize)
                .filter_map(|id| self.series(id).and_then(encode_open_state).map(|st| (id, st)))
                .collect();
            d.open_shards.push((shard, states));
        }
        if self.metadata_dirty {
            let mut m: Vec<Metadata> = self.metadata.values().cloned().collect();
            m.sort_by(|a, b| a.metric_family_name.cmp(&b.metric_family_name));
            d.metadata = Some(m);
        }
        d
    }

    /// Marks everything in the last delta as persisted: pending chunk bytes
    /// are dropped from memory (the store has them now).
    pub fn checkpoint_done(&mut self, locs: &[(SeriesId, u32, ChunkLoc)]) {
        for &(id, seq, loc) in locs {
            if let Some(c) = self
                .series
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.closed.iter_mut().find(|c| c.seq == seq))
            {
                c.loc = Some(loc);
                *self.block_refs.entry(loc.block).or_default() += 1;
            }
        }
        for (id, seq) in std::mem::take(&mut self.new_chunks) {
            if let Some(c) = self
                .series
                .get_mut(id as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.closed.iter_mut().find(|c| c.seq == seq))
            {
                c.pending = None;
            }
        }
        for id in std::mem::take(&mut self.dirty_series) {
            if let Some(s) = self.series.get_mut(id as usize).and_then(Option::as_mut) {
                s.dirty = false;
            }
        }
        self.new_series.clear();
        self.deleted_blocks.clear();
        self.deleted_series.clear();
        self.metadata_dirty = false;
    }

    /// Restores a series read from the store (startup). Ids are restored as
    /// they were; gaps (deleted series) stay empty.
    pub fn restore_series(
        &mut self,
        id: SeriesId,
        labels: &Labels,
        closed: Vec<ChunkMeta>,
        open: Option<&[u8]>,
    ) -> Result<(), Error> {
        let idx = id as usize;
        if self.series.len() <= idx {
            self.series.resize_with(idx + 1, || None);
        }
        let syms: Box<[(Sym, Sym)]> = labels
            .iter()
            .map(|l| (self.symbols.intern(&l.name), self.symbols.intern(&l.value)))
            .collect();
        let (open_chunk, ooo) = match open {
            Some(b) => decode_open_state(b)?,
            None => (None, Vec::new()),
        };
        // An open state carries the newest in-order sample; a series without
        // one never had an in-order sample (see `apply_retention`).
        let (max_t_ms, last_bits) = open.and_then(open_state_last).unwrap_or((i64::MIN, 0));
        let next_seq = closed.iter().map(|c| c.seq + 1).max().unwrap_or(0);
        // Persisted chunks carry no bytes in memory.
        let closed: Vec<ChunkMeta> = closed
            .into_iter()
            .map(|mut c| {
                c.pending = None;
                c
            })
            .collect();
        for loc in closed.iter().filter_map(|c| c.loc) {
            *self.block_refs.entry(loc.block).or_default() += 1;
        }
        self.postings_add_restored(id, &syms);
        self.series[idx] = Some(MemSeries {
            labels: syms,
            closed,
            open: open_chunk,
            ooo,
            max_t_ms,
            last_bits,
            next_seq,
            dirty: false,
        });
        self.index_live(labels.stable_hash(), id);
        Ok(())
    }

    fn postings_add_restored(&mut self, id: SeriesId, syms: &[(Sym, Sym)]) {
        self.postings.add(id, syms);
    }

    /// Sets restored global state (startup).
    pub fn restore_globals(&mut self, next_series_id: SeriesId, min_valid_t_ms: i64, metadata: Vec<Metadata>) {
        if self.series.len() < next_series_id as usize {
            self.series.resize_with(next_series_id as usize, || None);
        }
        self.min_valid_t_ms = min_valid_t_ms;
        self.metadata = metadata
            .into_iter()
            .map(|m| (m.metric_family_name.clone(), m))
            .collect();
    }
}

/// Open state layout: `[u32 BE open chunk len][open chunk bytes][u32 BE ooo count]([i64 BE t_ms][u64 BE v bits])*[i64 BE max_t_ms][u64 BE last value bits]`.
fn encode_open_state(s: &MemSeries) -> Option<Vec<u8>> {
    let open: &[u8] = s.open.as_ref().map_or(&[], XorChunk::bytes);
    if open.is_empty() && s.ooo.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(8 + open.len() + s.ooo.len() * 16 + 8);
    out.extend_from_slice(&(open.len() as u32).to_be_bytes());
    out.extend_from_slice(open);
    out.extend_from_slice(&(s.ooo.len() as u32).to_be_bytes());
    for &(t_ms, v) in &s.ooo {
        out.extend_from_slice(&t_ms.to_be_bytes());
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }
    // The last in-order sample's value is needed for duplicate detection
    // when the open chunk was just cut and is empty.
    out.extend_from_slice(&s.max_t_ms.to_be_bytes());
    out.extend_from_slice(&s.last_bits.to_be_bytes());
    Some(out)
}

type OpenState = (Option<XorChunk>, Vec<(i64, f64)>);

fn decode_open_state(b: &[u8]) -> Result<OpenState, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("open series state: {what}"));
    let mut r = b;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        if r.len() < n {
            return Err(corrupt("truncated"));
        }
        let (a, rest) = r.split_at(n);
        r = rest;
        Ok(a)
    };
    let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let open_bytes = take(len)?.to_vec();
    let open = if open_bytes.is_empty() {
        None
    } else {
        Some(XorChunk::from_bytes(open_bytes).map_err(|e| corrupt(&e.to_string()))?)
    };
    let n = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let mut ooo = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let t_ms = i64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
        let v = f64::from_bits(u64::from_be_bytes(take(8)?.try_into().expect("8 bytes")));
        ooo.push((t_ms, v));
    }
    Ok((open, ooo))
}

/// Decodes an encoded open state (the open chunk and the out-of-order
/// samples), for readers of checkpoint exports outside the head.
pub fn decode_open_state_pub(b: &[u8]) -> Result<OpenState, Error> {
    decode_open_state(b)
}

/// Reads the trailing `(max_t_ms, last_bits)` of an encoded open state.
pub fn open_state_last(b: &[u8]) -> Option<(i64, u64)> {
    if b.len() < 16 {
        return None;
    }
    let tail = &b[b.len() - 16..];
    Some((
        i64::from_be_bytes(tail[..8].try_into().ok()?),
        u64::from_be_bytes(tail[8..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Head, HeadOptions};
    use super::{decode_open_state, encode_open_state, open_state_last};
    use crate::test_support::proptest_cases;
    use crate::tsdb::{AppendRequest, Db, Labels, MatchOp, Matcher, SeriesSamples};

    fn request(name: &str, samples: Vec<(i64, f64)>) -> AppendRequest {
        AppendRequest {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", name)]),
                samples,
            }],
            metadata: vec![crate::tsdb::Metadata {
                metric_family_name: name.into(),
                kind: "gauge".into(),
                help: "help".into(),
                unit: String::new(),
            }],
        }
    }

    fn select_all(db: &Db, name: &str) -> Vec<(i64, u64)> {
        let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
        db.select(&m, i64::MIN, i64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.samples)
            .map(|(t_ms, v)| (t_ms, v.to_bits()))
            .collect()
    }

    /// Checkpoint, reopen on the same sled database: the digest, every
    /// query, the retention floor, the metadata and the append rules
    /// (duplicates of the newest sample) come back the same.
    #[test]
    fn checkpoint_then_reopen_gives_the_same_digest_and_queries() {
        let dir = tempfile::tempdir().unwrap();
        let kv: std::sync::Arc<dyn crate::kv::Kv> =
            std::sync::Arc::new(crate::kv::SledKv::open(dir.path(), Default::default()).unwrap());
        let opts = HeadOptions {
            ooo_window_ms: 20_000,
            chunk_samples: 120,
        };
        let (db, upper) = Db::open_kv(kv.clone(), opts.clone()).unwrap();
        assert_eq!(upper, None, "a fresh store has no checkpoint");
        // Closed chunks, an open chunk, out-of-order samples both cut into a
        // chunk and still buffered, and a series retention removes.
        db.apply(&request(
            "a",
            (0..300).map(|i| (100_000 + i * 1000, i as f64)).collect(),
        ));
        db.apply(&request(
            "a",
            (0..130).map(|i| (390_005 - i * 10, -(i as f64))).collect(),
        ));
        db.apply(&request("b", vec![(1, 1.0), (2, 2.0)]));
        db.apply(&request("c", vec![(50_000, 1.0)]));
        db.checkpoint(b"first".to_vec()).unwrap();
        db.apply_retention(60_000);
        db.apply(&request("a", vec![(400_000, 7.0)]));
        db.checkpoint(b"second".to_vec()).unwrap();
        let digest = db.digest().unwrap();
        let a = select_all(&db, "a");
        assert_eq!(a.len(), 300 + 130 + 1);
        assert!(select_all(&db, "b").is_empty() && select_all(&db, "c").is_empty());
        let status = db.status();
        drop(db);

        let (db, upper) = Db::open_kv(kv.clone(), opts).unwrap();
        assert_eq!(upper.as_deref(), Some(&b"second"[..]));
        assert_eq!(db.digest().unwrap(), digest);
        assert_eq!(select_all(&db, "a"), a);
        let head = db.head();
        assert_eq!(head.min_valid_t_ms(), 60_000);
        assert_eq!(head.num_series(), status.num_series);
        assert_eq!(head.metadata().len(), 3);
        let id = head.lookup(&Labels::from_pairs([("__name__", "a")])).unwrap();
        let s = head.series(id).unwrap();
        assert_eq!((s.max_t_ms, s.last_bits), (400_000, 7.0f64.to_bits()));
        assert!(s.closed.iter().all(|c| c.pending.is_none() && c.loc.is_some()));
        assert!(s.closed.iter().any(|c| c.ooo));
        assert!(!s.ooo.is_empty(), "the buffered out-of-order samples come back");
        drop(head);
        let r = db.apply(&request("a", vec![(400_000, 7.0), (400_000, 8.0), (50_000, 1.0)]));
        assert_eq!((r.duplicates, r.duplicate_timestamp, r.out_of_bounds), (1, 1, 1));
    }

    #[test]
    fn open_state_round_trips() {
        let mut h = Head::new(HeadOptions {
            ooo_window_ms: 100,
            chunk_samples: 120,
        });
        let id = h.get_or_create(&Labels::from_pairs([("__name__", "a")]));
        for t_ms in [1000, 1010, 1020] {
            h.append(id, t_ms, t_ms as f64).unwrap();
        }
        h.append(id, 950, 0.5).unwrap();
        let s = h.series(id).unwrap();
        let b = encode_open_state(s).expect("a series with samples has open state");
        let (open, ooo) = decode_open_state(&b).unwrap();
        assert_eq!(open.unwrap().bytes(), s.open.as_ref().unwrap().bytes());
        assert_eq!(ooo, vec![(950, 0.5)]);
        assert_eq!(open_state_last(&b), Some((1020, 1020f64.to_bits())));
        assert_eq!(open_state_last(&b[..15]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

        /// Arbitrary bytes never panic the open-state decoders.
        #[test]
        fn open_state_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_open_state(&bytes);
            let _ = open_state_last(&bytes);
        }

        /// Arbitrary bytes behind a plausible length prefix reach the chunk
        /// decoder and the out-of-order count: still no panic.
        #[test]
        fn open_state_with_plausible_lengths_never_panics(
            chunk in proptest::collection::vec(any::<u8>(), 0..64),
            ooo_count in any::<u32>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = (chunk.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(&chunk);
            b.extend_from_slice(&ooo_count.to_be_bytes());
            b.extend_from_slice(&rest);
            let _ = decode_open_state(&b);
            let mut h = Head::new(HeadOptions::default());
            let _ = h.restore_series(0, &Labels::from_pairs([("__name__", "a")]), vec![], Some(&b));
        }
    }
}
