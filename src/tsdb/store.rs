//! Persistence of the head in one sled tree.
//!
//! The tree holds exactly the state of the last checkpoint: every change is
//! written by [`Store::write_checkpoint`] as one atomic sled batch and then
//! flushed, so a crash leaves either the old or the new checkpoint, never a
//! mix. Between checkpoints the tree is not touched; the Raft log, replayed
//! after the checkpoint's applied index, restores the rest.
//!
//! Key layout (see docs/format/checkpoint.md):
//! `m` checkpoint meta · `d` metadata · `s`+id labels · `i`+id+seq chunk
//! index · `c`+id+seq chunk frame · `h`+id open state.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::chunk;
use super::head::{CheckpointDelta, ChunkMeta, Head};
use super::labels::{Label, Labels};
use super::postings::SeriesId;
use super::{Error, Metadata};

const KEY_META: &[u8] = b"m";
const KEY_METADATA: &[u8] = b"d";
const P_SERIES: u8 = b's';
const P_INDEX: u8 = b'i';
const P_CHUNK: u8 = b'c';
const P_OPEN: u8 = b'h';

/// Version of the checkpoint layout; a store written by a newer version is refused.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// The checkpoint meta record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version.
    pub version: u32,
    /// Opaque state of the layer above (the Raft applied log id and membership).
    pub upper: Vec<u8>,
    /// Next series id.
    pub next_series_id: SeriesId,
    /// Retention floor.
    pub min_valid_t: i64,
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn key(prefix: u8, id: SeriesId, seq: Option<u32>) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&id.to_be_bytes());
    if let Some(s) = seq {
        k.extend_from_slice(&s.to_be_bytes());
    }
    k
}

fn parse_id(k: &[u8]) -> Result<(SeriesId, Option<u32>), Error> {
    let id = k.get(1..5).ok_or_else(|| Error::Corrupt(format!("short key {k:?}")))?;
    let id = SeriesId::from_be_bytes(id.try_into().expect("4 bytes"));
    let seq = k.get(5..9).map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")));
    Ok((id, seq))
}

/// The sled side of the TSDB.
#[derive(Clone)]
pub struct Store {
    tree: sled::Tree,
    db: sled::Db,
}

impl Store {
    /// Opens the `tsdb` tree of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Ok(Store {
            tree: db.open_tree("tsdb")?,
            db: db.clone(),
        })
    }

    /// The checkpoint meta, if any checkpoint was ever written.
    pub fn meta(&self) -> Result<Option<CheckpointMeta>, Error> {
        let Some(v) = self.tree.get(KEY_META)? else {
            return Ok(None);
        };
        let (m, _): (CheckpointMeta, usize) = bincode::serde::decode_from_slice(&v, bincode_cfg())
            .map_err(|e| Error::Corrupt(format!("checkpoint meta: {e}")))?;
        if m.version > CHECKPOINT_FORMAT_VERSION {
            return Err(Error::Corrupt(format!(
                "checkpoint format version {} is newer than this binary supports ({CHECKPOINT_FORMAT_VERSION})",
                m.version
            )));
        }
        Ok(Some(m))
    }

    /// Loads the last checkpoint into `head`; returns its meta.
    pub fn load(&self, head: &mut Head) -> Result<Option<CheckpointMeta>, Error> {
        let Some(meta) = self.meta()? else { return Ok(None) };
        let metadata: Vec<Metadata> = match self.tree.get(KEY_METADATA)? {
            Some(v) => {
                bincode::serde::decode_from_slice(&v, bincode_cfg())
                    .map_err(|e| Error::Corrupt(format!("metadata: {e}")))?
                    .0
            }
            None => Vec::new(),
        };
        let mut chunks: HashMap<SeriesId, Vec<ChunkMeta>> = HashMap::new();
        for kv in self.tree.scan_prefix([P_INDEX]) {
            let (k, v) = kv?;
            let (id, seq) = parse_id(&k)?;
            let seq = seq.ok_or_else(|| Error::Corrupt("chunk index key without seq".into()))?;
            if v.len() != 17 {
                return Err(Error::Corrupt(format!("chunk index entry of {} bytes", v.len())));
            }
            let mint = i64::from_be_bytes(v[0..8].try_into().expect("8 bytes"));
            let maxt = i64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
            chunks.entry(id).or_default().push(ChunkMeta {
                mint,
                maxt,
                seq,
                ooo: v[16] == 1,
                pending: None,
            });
        }
        let mut opens: HashMap<SeriesId, sled::IVec> = HashMap::new();
        for kv in self.tree.scan_prefix([P_OPEN]) {
            let (k, v) = kv?;
            opens.insert(parse_id(&k)?.0, v);
        }
        for kv in self.tree.scan_prefix([P_SERIES]) {
            let (k, v) = kv?;
            let (id, _) = parse_id(&k)?;
            let labels = decode_labels(&v)?;
            let mut closed = chunks.remove(&id).unwrap_or_default();
            closed.sort_by_key(|c| c.seq);
            head.restore_series(id, &labels, closed, opens.get(&id).map(|v| v.as_ref()))?;
        }
        head.restore_globals(meta.next_series_id, meta.min_valid_t, metadata);
        Ok(Some(meta))
    }

    /// Writes a checkpoint atomically and waits until it is on disk.
    pub fn write_checkpoint(&self, delta: &CheckpointDelta, upper: Vec<u8>) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for &id in &delta.deleted_series {
            for prefix in [P_INDEX, P_CHUNK] {
                for k in self.tree.scan_prefix(key(prefix, id, None)).keys() {
                    batch.remove(k?);
                }
            }
            batch.remove(key(P_SERIES, id, None));
            batch.remove(key(P_OPEN, id, None));
        }
        for &(id, seq) in &delta.deleted_chunks {
            batch.remove(key(P_INDEX, id, Some(seq)));
            batch.remove(key(P_CHUNK, id, Some(seq)));
        }
        for (id, labels) in &delta.new_series {
            batch.insert(key(P_SERIES, *id, None), encode_labels(labels));
        }
        let mut frame = Vec::new();
        for (id, c) in &delta.new_chunks {
            let Some(bytes) = c.pending.as_ref() else { continue };
            let mut idx = Vec::with_capacity(17);
            idx.extend_from_slice(&c.mint.to_be_bytes());
            idx.extend_from_slice(&c.maxt.to_be_bytes());
            idx.push(u8::from(c.ooo));
            batch.insert(key(P_INDEX, *id, Some(c.seq)), idx);
            frame.clear();
            chunk::encode_frame(bytes, &mut frame);
            // Paired assertion: what goes to disk must read back.
            debug_assert!(chunk::decode_frame(&frame).is_ok());
            batch.insert(key(P_CHUNK, *id, Some(c.seq)), frame.as_slice());
        }
        for (id, state) in &delta.open_states {
            match state {
                Some(s) => batch.insert(key(P_OPEN, *id, None), s.as_slice()),
                None => batch.remove(key(P_OPEN, *id, None)),
            }
        }
        if let Some(m) = &delta.metadata {
            let v = bincode::serde::encode_to_vec(m, bincode_cfg()).map_err(|e| Error::Corrupt(e.to_string()))?;
            batch.insert(KEY_METADATA, v);
        }
        let meta = CheckpointMeta {
            version: CHECKPOINT_FORMAT_VERSION,
            upper,
            next_series_id: delta.next_series_id,
            min_valid_t: delta.min_valid_t,
        };
        let v = bincode::serde::encode_to_vec(&meta, bincode_cfg()).map_err(|e| Error::Corrupt(e.to_string()))?;
        batch.insert(KEY_META, v);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Reads one persisted chunk and checks its CRC.
    pub fn read_chunk(&self, id: SeriesId, seq: u32) -> Result<Option<sled::IVec>, Error> {
        Ok(self.tree.get(key(P_CHUNK, id, Some(seq)))?)
    }

    /// Bytes on disk of the whole sled database (log included).
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.db.size_on_disk()?)
    }

    /// Writes every record of the checkpoint as `[u32 BE klen][key][u32 BE vlen][value]`,
    /// ending with a zero klen. Used for Raft snapshots and backups; the
    /// caller holds the checkpoint lock so the tree does not change meanwhile.
    pub fn export(&self, w: &mut impl Write) -> Result<u64, Error> {
        let mut n = 0u64;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            n += 1;
        }
        w.write_all(&0u32.to_be_bytes())?;
        Ok(n)
    }

    /// Replaces the tree's content with an export, atomically, then flushes.
    pub fn import(&self, r: &mut impl Read) -> Result<u64, Error> {
        /// Largest record accepted from an export: far above any chunk, open
        /// state or label set we write.
        const RECORD_BYTES_MAX: usize = 64 << 20;
        let mut batch = sled::Batch::default();
        for k in self.tree.iter().keys() {
            batch.remove(k?);
        }
        let mut n = 0u64;
        let mut len = [0u8; 4];
        loop {
            r.read_exact(&mut len)?;
            let klen = u32::from_be_bytes(len) as usize;
            if klen == 0 {
                break;
            }
            if klen > RECORD_BYTES_MAX {
                return Err(Error::Corrupt(format!(
                    "snapshot key of {klen} bytes exceeds {RECORD_BYTES_MAX}"
                )));
            }
            let mut k = vec![0u8; klen];
            r.read_exact(&mut k)?;
            r.read_exact(&mut len)?;
            let vlen = u32::from_be_bytes(len) as usize;
            if vlen > RECORD_BYTES_MAX {
                return Err(Error::Corrupt(format!(
                    "snapshot value of {vlen} bytes exceeds {RECORD_BYTES_MAX}"
                )));
            }
            let mut v = vec![0u8; vlen];
            r.read_exact(&mut v)?;
            batch.insert(k, v);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(n)
    }
}

fn encode_labels(l: &Labels) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    bincode::serde::encode_to_vec(&pairs, bincode_cfg()).expect("encoding strings to a Vec cannot fail")
}

fn decode_labels(b: &[u8]) -> Result<Labels, Error> {
    let (pairs, _): (Vec<(String, String)>, usize) = bincode::serde::decode_from_slice(b, bincode_cfg())
        .map_err(|e| Error::Corrupt(format!("series labels: {e}")))?;
    let v: Vec<Label> = pairs.into_iter().map(|(name, value)| Label { name, value }).collect();
    if !v.windows(2).all(|w| w[0].name < w[1].name) {
        return Err(Error::Corrupt("series labels not sorted".into()));
    }
    Ok(Labels::from_sorted_unchecked(v))
}
