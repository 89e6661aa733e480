//! Persistence of the head in one sled tree.
//!
//! The tree holds exactly the state of the last checkpoint: every change is
//! written by [`Store::write_checkpoint`] as one atomic sled batch and then
//! flushed, so a crash leaves either the old or the new checkpoint, never a
//! mix. Between checkpoints the tree is not touched; the Raft log, replayed
//! after the checkpoint's applied index, restores the rest.
//!
//! Closed chunks are written in blocks: every chunk a checkpoint persists
//! goes into a block value of up to [`BLOCK_BYTES_TARGET`] (sled stores such
//! values as files of their own, without per-entry overhead), with a small
//! index value beside it. Startup reads the indexes, never the blocks.
//!
//! Key layout (see docs/format/checkpoint.md):
//! `m` checkpoint meta · `d` metadata · `s`+id labels · `b`+block chunk
//! frames · `x`+block chunk index · `H`+shard open series state.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::chunk;
use super::head::{CheckpointDelta, ChunkLoc, ChunkMeta, Head, OPEN_STATE_SHARDS};
use super::labels::{Label, Labels};
use super::postings::SeriesId;
use super::{Error, Metadata};
use crate::kv::{BatchOp, Kv, KvTree};

const KEY_META: &[u8] = b"m";
const KEY_METADATA: &[u8] = b"d";
const P_SERIES: u8 = b's';
/// The key of the single value in a block tree.
const BLOCK_VALUE_KEY: &[u8] = b"b";
const P_INDEX: u8 = b'x';
const P_OPEN: u8 = b'H';

/// Target size of one chunk block. Large enough that per-value overhead
/// vanishes, small enough that reading one chunk of a cold block is cheap.
pub const BLOCK_BYTES_TARGET: usize = 512 * 1024;

const BLOCK_MAGIC: &[u8; 4] = b"PRB1";
const INDEX_MAGIC: &[u8; 4] = b"PRX1";

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
    pub min_valid_t_ms: i64,
    /// Id the next chunk block gets.
    pub next_block_id: u64,
}

/// Most bytes one bincode record of the store (checkpoint meta, metadata,
/// a series' labels) may make decoding allocate. Without a limit bincode
/// allocates whatever a length prefix says before reading the bytes, so a
/// corrupt length aborted the process on a failed allocation; no record
/// can exceed what an export accepts for one record anyway.
const RECORD_DECODED_BYTES_MAX: usize = EXPORT_RECORD_BYTES_MAX;

/// Decodes one stored record, within [`RECORD_DECODED_BYTES_MAX`].
fn decode_record<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<(T, usize), crate::codec::DecodeError> {
    crate::codec::decode_from_slice_limited::<T, RECORD_DECODED_BYTES_MAX>(v)
}

/// Decodes the checkpoint meta record and refuses a newer layout.
fn decode_meta(v: &[u8]) -> Result<CheckpointMeta, Error> {
    let (m, _): (CheckpointMeta, usize) =
        decode_record(v).map_err(|e| Error::Corrupt(format!("checkpoint meta: {e}")))?;
    if m.version > CHECKPOINT_FORMAT_VERSION {
        return Err(Error::Corrupt(format!(
            "checkpoint format version {} is newer than this binary supports ({CHECKPOINT_FORMAT_VERSION})",
            m.version
        )));
    }
    Ok(m)
}

/// The checkpoint's removed blocks and series and its new series, as batch
/// operations.
fn push_series_changes(delta: &CheckpointDelta, batch: &mut Vec<BatchOp>) {
    for &block in &delta.deleted_blocks {
        batch.push((block_key(P_INDEX, block), None));
    }
    for &id in &delta.deleted_series {
        batch.push((key(P_SERIES, id, None), None));
    }
    for (id, labels) in &delta.new_series {
        batch.push((key(P_SERIES, *id, None), Some(encode_labels(labels).into())));
    }
}

/// The checkpoint's open chunks, metadata and meta record (with `upper`,
/// the Raft state, and the next free block id), as batch operations.
fn push_state(
    delta: &CheckpointDelta,
    upper: Vec<u8>,
    next_block_id: u64,
    batch: &mut Vec<BatchOp>,
) -> Result<(), Error> {
    for (shard, states) in &delta.open_shards {
        let k = [P_OPEN, *shard as u8];
        if states.is_empty() {
            batch.push((k.to_vec(), None));
        } else {
            batch.push((k.to_vec(), Some(encode_open_shard(states).into())));
        }
    }
    if let Some(m) = &delta.metadata {
        let v = crate::codec::encode_to_vec(m).map_err(|e| Error::Corrupt(e.to_string()))?;
        batch.push((KEY_METADATA.to_vec(), Some(v.into())));
    }
    let meta = CheckpointMeta {
        version: CHECKPOINT_FORMAT_VERSION,
        upper,
        next_series_id: delta.next_series_id,
        min_valid_t_ms: delta.min_valid_t_ms,
        next_block_id,
    };
    let v = crate::codec::encode_to_vec(&meta).map_err(|e| Error::Corrupt(e.to_string()))?;
    batch.push((KEY_META.to_vec(), Some(v.into())));
    Ok(())
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

/// The persisted side of the TSDB, on a [`Kv`] (sled in production).
#[derive(Clone)]
pub struct Store {
    tree: std::sync::Arc<dyn KvTree>,
    db: std::sync::Arc<dyn Kv>,
    /// Open chunk-block trees by block id.
    blocks: std::sync::Arc<parking_lot::RwLock<HashMap<u64, std::sync::Arc<dyn KvTree>>>>,
}

/// Prefix of the names of the trees that hold one chunk block each.
const BLOCK_TREE_PREFIX: &str = "chunks-";

fn block_tree_name(block: u64) -> String {
    format!("{BLOCK_TREE_PREFIX}{block:016x}")
}

impl Store {
    /// Opens the `tsdb` tree of `db`.
    pub fn open(db: std::sync::Arc<dyn Kv>) -> Result<Self, Error> {
        Ok(Store {
            tree: db.open_tree("tsdb")?,
            db,
            blocks: Default::default(),
        })
    }

    /// True when the store's I/O runs inline ([`Kv::inline_io`]).
    pub fn inline_io(&self) -> bool {
        self.db.inline_io()
    }

    fn block_tree(&self, block: u64) -> Result<std::sync::Arc<dyn KvTree>, Error> {
        if let Some(t) = self.blocks.read().get(&block) {
            return Ok(t.clone());
        }
        let t = self.db.open_tree(&block_tree_name(block))?;
        self.blocks.write().insert(block, t.clone());
        Ok(t)
    }

    /// Ids of every block tree present.
    fn block_trees(&self) -> Vec<u64> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| n.strip_prefix(BLOCK_TREE_PREFIX).map(str::to_string))
            .filter_map(|hex| u64::from_str_radix(&hex, 16).ok())
            .collect()
    }

    fn drop_block(&self, block: u64) -> Result<(), Error> {
        self.blocks.write().remove(&block);
        self.db.drop_tree(&block_tree_name(block))?;
        Ok(())
    }

    /// The checkpoint meta, if any checkpoint was ever written.
    pub fn meta(&self) -> Result<Option<CheckpointMeta>, Error> {
        let Some(v) = self.tree.get(KEY_META)? else {
            return Ok(None);
        };
        decode_meta(&v).map(Some)
    }

    /// Loads the last checkpoint into `head`; returns its meta.
    pub fn load(&self, head: &mut Head) -> Result<Option<CheckpointMeta>, Error> {
        let Some(meta) = self.meta()? else { return Ok(None) };
        let metadata: Vec<Metadata> = match self.tree.get(KEY_METADATA)? {
            Some(v) => {
                decode_record(&v)
                    .map_err(|e| Error::Corrupt(format!("metadata: {e}")))?
                    .0
            }
            None => Vec::new(),
        };
        let mut chunks: HashMap<SeriesId, Vec<ChunkMeta>> = HashMap::new();
        let mut referenced = std::collections::HashSet::new();
        for kv in self.tree.scan_prefix(&[P_INDEX]) {
            let (k, v) = kv?;
            let block = block_id(&k)?;
            referenced.insert(block);
            for e in decode_index(&v)? {
                if e.maxt_ms < meta.min_valid_t_ms {
                    continue; // expired; the block goes once all of it has
                }
                chunks.entry(e.series).or_default().push(ChunkMeta {
                    mint_ms: e.mint_ms,
                    maxt_ms: e.maxt_ms,
                    seq: e.seq,
                    ooo: e.ooo,
                    pending: None,
                    loc: Some(ChunkLoc {
                        block,
                        offset: e.offset,
                        len: e.len,
                    }),
                });
            }
        }
        // A crash after a block tree was written but before the checkpoint
        // that references it leaves an orphan: nothing points at it, drop it.
        for block in self.block_trees() {
            if !referenced.contains(&block) {
                self.drop_block(block)?;
            }
        }
        let mut opens: HashMap<SeriesId, Vec<u8>> = HashMap::new();
        for kv in self.tree.scan_prefix(&[P_OPEN]) {
            let (_, v) = kv?;
            for (id, state) in decode_open_shard(&v)? {
                opens.insert(id, state);
            }
        }
        for kv in self.tree.scan_prefix(&[P_SERIES]) {
            let (k, v) = kv?;
            let (id, _) = parse_id(&k)?;
            let labels = decode_labels(&v)?;
            let mut closed = chunks.remove(&id).unwrap_or_default();
            closed.sort_by_key(|c| c.seq);
            head.restore_series(id, &labels, closed, opens.get(&id).map(Vec::as_slice))?;
        }
        head.restore_globals(meta.next_series_id, meta.min_valid_t_ms, metadata);
        Ok(Some(meta))
    }

    /// Writes a checkpoint atomically and waits until it is on disk.
    /// Returns where each new chunk went.
    pub fn write_checkpoint(
        &self,
        delta: &CheckpointDelta,
        upper: Vec<u8>,
    ) -> Result<Vec<(SeriesId, u32, ChunkLoc)>, Error> {
        let mut batch: Vec<BatchOp> = Vec::new();
        let mut next_block_id = self.meta()?.map_or(0, |m| m.next_block_id);
        push_series_changes(delta, &mut batch);
        let mut locs = Vec::with_capacity(delta.new_chunks.len());
        let mut block = Vec::with_capacity(BLOCK_BYTES_TARGET + 4096);
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut flush_block =
            |block: &mut Vec<u8>, entries: &mut Vec<IndexEntry>, batch: &mut Vec<BatchOp>| -> Result<(), Error> {
                if entries.is_empty() {
                    return Ok(());
                }
                let id = next_block_id;
                next_block_id += 1;
                for e in entries.iter() {
                    locs.push((
                        e.series,
                        e.seq,
                        ChunkLoc {
                            block: id,
                            offset: e.offset,
                            len: e.len,
                        },
                    ));
                }
                // Each block is the only value of a tree of its own, written once:
                // sled then keeps it as one file and never rewrites it, where a
                // shared tree would rewrite every neighbouring block on each insert.
                self.block_tree(id)?.insert(BLOCK_VALUE_KEY, block.as_slice().into())?;
                batch.push((block_key(P_INDEX, id), Some(encode_index(entries).into())));
                block.clear();
                entries.clear();
                Ok(())
            };
        for (id, c) in &delta.new_chunks {
            let Some(bytes) = c.pending.as_ref() else { continue };
            if block.is_empty() {
                block.extend_from_slice(BLOCK_MAGIC);
            }
            let offset = block.len();
            chunk::encode_frame(bytes, &mut block);
            // Paired assertion: what goes to disk must read back.
            debug_assert!(chunk::decode_frame(&block[offset..]).is_ok());
            entries.push(IndexEntry {
                series: *id,
                seq: c.seq,
                mint_ms: c.mint_ms,
                maxt_ms: c.maxt_ms,
                ooo: c.ooo,
                offset: offset as u32,
                len: (block.len() - offset) as u32,
            });
            if block.len() >= BLOCK_BYTES_TARGET {
                flush_block(&mut block, &mut entries, &mut batch)?;
            }
        }
        flush_block(&mut block, &mut entries, &mut batch)?;
        push_state(delta, upper, next_block_id, &mut batch)?;
        // One flush covers the block trees and the batch; sled recovers a
        // prefix of writes in order, so the batch never survives without
        // the blocks it references.
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        for &block in &delta.deleted_blocks {
            self.drop_block(block)?;
        }
        Ok(locs)
    }

    /// Reads one persisted chunk, checking its CRC. `None` when its block
    /// was deleted (retention) since the caller looked it up.
    pub fn read_chunk(&self, loc: ChunkLoc) -> Result<Option<Vec<u8>>, Error> {
        if !self.blocks.read().contains_key(&loc.block)
            && !self.db.tree_names().iter().any(|n| *n == block_tree_name(loc.block))
        {
            return Ok(None);
        }
        let Some(block) = self.block_tree(loc.block)?.get(BLOCK_VALUE_KEY)? else {
            return Ok(None);
        };
        let (start, end) = (loc.offset as usize, loc.offset as usize + loc.len as usize);
        let frame = block.get(start..end).ok_or_else(|| {
            Error::Corrupt(format!(
                "chunk at {start}..{end} outside block {} of {} bytes",
                loc.block,
                block.len()
            ))
        })?;
        let payload =
            chunk::decode_frame(frame).map_err(|e| Error::Corrupt(format!("chunk in block {}: {e}", loc.block)))?;
        Ok(Some(payload.to_vec()))
    }

    /// Bytes on disk of the whole sled database (log included).
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.db.size_on_disk())
    }

    /// Writes the whole checkpoint (the main tree and every block tree) as
    /// records `[u8 tag][u32 BE len][bytes]...`: tag 1 starts a tree (its
    /// name), tag 2 is a key followed by its value (tag 3), tag 0 ends.
    /// Used for Raft snapshots and backups; the caller holds the checkpoint
    /// lock so nothing changes meanwhile.
    pub fn export(&self, w: &mut impl Write) -> Result<u64, Error> {
        fn rec(w: &mut impl Write, tag: u8, b: &[u8]) -> std::io::Result<()> {
            w.write_all(&[tag])?;
            w.write_all(&(b.len() as u32).to_be_bytes())?;
            w.write_all(b)
        }
        let mut n = 0u64;
        let mut trees = vec![(b"tsdb".to_vec(), self.tree.clone())];
        for block in self.block_trees() {
            trees.push((block_tree_name(block).into_bytes(), self.block_tree(block)?));
        }
        for (name, tree) in trees {
            rec(w, 1, &name)?;
            for kv in tree.scan_prefix(&[]) {
                let (k, v) = kv?;
                rec(w, 2, &k)?;
                rec(w, 3, &v)?;
                n += 1;
            }
        }
        w.write_all(&[0])?;
        Ok(n)
    }

    /// Replaces the whole checkpoint with an export, then flushes.
    pub fn import(&self, r: &mut impl Read) -> Result<u64, Error> {
        // Remove the checkpoint meta first: a crash during the import then
        // leaves no checkpoint at all (the node restarts empty and Raft sends
        // the snapshot again), never a half-imported one that looks whole.
        self.tree.remove(KEY_META)?;
        self.db.flush()?;
        for block in self.block_trees() {
            self.drop_block(block)?;
        }
        self.tree.clear()?;
        let mut meta: Option<Vec<u8>> = None;
        let mut n = 0u64;
        let mut tree: Option<std::sync::Arc<dyn KvTree>> = None;
        let mut tree_is_main = false;
        loop {
            match read_export_record(r)? {
                (0, _) => break,
                (1, name) => {
                    tree_is_main = name == b"tsdb";
                    tree = Some(if tree_is_main {
                        self.tree.clone()
                    } else {
                        let hex = std::str::from_utf8(&name)
                            .ok()
                            .and_then(|n| n.strip_prefix(BLOCK_TREE_PREFIX))
                            .ok_or_else(|| {
                                Error::Corrupt(format!(
                                    "snapshot names unknown tree {:?}",
                                    String::from_utf8_lossy(&name)
                                ))
                            })?;
                        let id =
                            u64::from_str_radix(hex, 16).map_err(|_| Error::Corrupt("bad block tree name".into()))?;
                        self.block_tree(id)?
                    });
                }
                (2, k) => {
                    let (tag, v) = read_export_record(r)?;
                    if tag != 3 {
                        return Err(Error::Corrupt(format!(
                            "snapshot: expected a value record, got tag {tag}"
                        )));
                    }
                    let t = tree
                        .as_ref()
                        .ok_or_else(|| Error::Corrupt("snapshot record before any tree".into()))?;
                    if k == KEY_META && tree_is_main {
                        meta = Some(v);
                    } else {
                        t.insert(&k, v.into())?;
                    }
                    n += 1;
                }
                (tag, _) => return Err(Error::Corrupt(format!("snapshot: unknown record tag {tag}"))),
            }
        }
        self.db.flush()?;
        let meta = meta.ok_or_else(|| Error::Corrupt("snapshot holds no checkpoint meta".into()))?;
        self.tree.insert(KEY_META, meta.into())?;
        self.db.flush()?;
        Ok(n)
    }
}

/// Largest record accepted from an export stream: far above any block,
/// shard or label set we write.
const EXPORT_RECORD_BYTES_MAX: usize = 256 << 20;

/// Reads one `[u8 tag][u32 BE len][bytes]` record of an export stream
/// (tag 0, the end, has no length or bytes).
fn read_export_record(r: &mut impl Read) -> Result<(u8, Vec<u8>), Error> {
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    if tag[0] == 0 {
        return Ok((0, Vec::new()));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > EXPORT_RECORD_BYTES_MAX {
        return Err(Error::Corrupt(format!(
            "export record of {len} bytes exceeds {EXPORT_RECORD_BYTES_MAX}"
        )));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    Ok((tag[0], b))
}

fn block_key(prefix: u8, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&block.to_be_bytes());
    k
}

fn block_id(k: &[u8]) -> Result<u64, Error> {
    k.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt(format!("bad block key {k:?}")))
}

/// One chunk in a block index.
struct IndexEntry {
    series: SeriesId,
    seq: u32,
    mint_ms: i64,
    maxt_ms: i64,
    ooo: bool,
    offset: u32,
    len: u32,
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_uvarint(b: &mut &[u8]) -> Result<u64, Error> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b
            .split_first()
            .ok_or_else(|| Error::Corrupt("truncated varint".into()))?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(Error::Corrupt("varint longer than 10 bytes".into()))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Index layout: magic, count, then per chunk (series, seq, mint_ms as a
/// zig-zag delta from the previous entry's mint_ms, maxt_ms - mint_ms, flags, frame
/// length) as varints; offsets follow from the lengths. Ends with a CRC32.
fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * 14);
    out.extend_from_slice(INDEX_MAGIC);
    put_uvarint(&mut out, entries.len() as u64);
    let mut prev_mint_ms = 0i64;
    for e in entries {
        put_uvarint(&mut out, u64::from(e.series));
        put_uvarint(&mut out, u64::from(e.seq));
        put_uvarint(&mut out, zigzag(e.mint_ms.wrapping_sub(prev_mint_ms)));
        put_uvarint(&mut out, e.maxt_ms.wrapping_sub(e.mint_ms) as u64);
        out.push(u8::from(e.ooo));
        put_uvarint(&mut out, u64::from(e.len));
        prev_mint_ms = e.mint_ms;
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_index(v: &[u8]) -> Result<Vec<IndexEntry>, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("chunk index: {what}"));
    if v.len() < 8 || &v[..4] != INDEX_MAGIC {
        return Err(corrupt("bad magic"));
    }
    let (body, crc) = v.split_at(v.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut b = &body[4..];
    let n = get_uvarint(&mut b)? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    let (mut prev_mint_ms, mut offset) = (0i64, BLOCK_MAGIC.len() as u64);
    for _ in 0..n {
        let series = SeriesId::try_from(get_uvarint(&mut b)?).map_err(|_| corrupt("series id"))?;
        let seq = u32::try_from(get_uvarint(&mut b)?).map_err(|_| corrupt("seq"))?;
        let mint_ms = prev_mint_ms.wrapping_add(unzigzag(get_uvarint(&mut b)?));
        let maxt_ms = mint_ms.wrapping_add(get_uvarint(&mut b)? as i64);
        let (&flags, rest) = b.split_first().ok_or_else(|| corrupt("truncated"))?;
        b = rest;
        let len = u32::try_from(get_uvarint(&mut b)?).map_err(|_| corrupt("length"))?;
        let off = u32::try_from(offset).map_err(|_| corrupt("offset"))?;
        out.push(IndexEntry {
            series,
            seq,
            mint_ms,
            maxt_ms,
            ooo: flags == 1,
            offset: off,
            len,
        });
        offset += u64::from(len);
        prev_mint_ms = mint_ms;
    }
    Ok(out)
}

/// Open-state shard layout: `([u32 BE series][u32 BE len][state])*`.
fn encode_open_shard(states: &[(SeriesId, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(states.iter().map(|(_, s)| s.len() + 8).sum::<usize>() + 4);
    for (id, st) in states {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(st.len() as u32).to_be_bytes());
        out.extend_from_slice(st);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_open_shard(v: &[u8]) -> Result<Vec<(SeriesId, Vec<u8>)>, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("open state shard: {what}"));
    if v.len() < 4 {
        return Err(corrupt("truncated"));
    }
    let (mut b, crc) = v.split_at(v.len() - 4);
    if crc32fast::hash(b).to_be_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 8 {
            return Err(corrupt("truncated entry"));
        }
        let id = SeriesId::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
        let st = b.get(8..8 + len).ok_or_else(|| corrupt("truncated state"))?;
        out.push((id, st.to_vec()));
        b = &b[8 + len..];
    }
    Ok(out)
}

const _: () = assert!(OPEN_STATE_SHARDS <= 256, "shard ids are one byte");

fn encode_labels(l: &Labels) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    crate::codec::encode_to_vec(&pairs).expect("encoding strings to a Vec cannot fail")
}

fn decode_labels(b: &[u8]) -> Result<Labels, Error> {
    let (pairs, _): (Vec<(String, String)>, usize) =
        decode_record(b).map_err(|e| Error::Corrupt(format!("series labels: {e}")))?;
    let v: Vec<Label> = pairs.into_iter().map(|(name, value)| Label { name, value }).collect();
    if !v.windows(2).all(|w| w[0].name < w[1].name) {
        return Err(Error::Corrupt("series labels not sorted".into()));
    }
    Ok(Labels::from_sorted_unchecked(v))
}

/// What an export stream holds, computed by reading it once
/// ([`summarize_export`]); backups carry it in their header and `verify`
/// recomputes it to check the content against the header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// Series (label sets) stored.
    pub series: u64,
    /// Samples stored: in live persisted chunks, open chunks and
    /// out-of-order buffers (before de-duplication of overlaps).
    pub samples: u64,
    /// Live persisted chunks.
    pub chunks: u64,
    /// Oldest sample time (ms), `None` when there is no sample.
    pub min_time_ms: Option<i64>,
    /// Newest sample time (ms), `None` when there is no sample.
    pub max_time_ms: Option<i64>,
    /// Key/value records in the stream.
    pub records: u64,
    /// The upper-layer state of the checkpoint (Raft applied log id and membership).
    pub upper: Vec<u8>,
}

/// Widens the summary's time range to cover `lo_ms..=hi_ms`.
fn widen(out: &mut ExportSummary, lo_ms: i64, hi_ms: i64) {
    out.min_time_ms = Some(out.min_time_ms.map_or(lo_ms, |m| m.min(lo_ms)));
    out.max_time_ms = Some(out.max_time_ms.map_or(hi_ms, |m| m.max(hi_ms)));
}

/// The tree an export's tree record names: `None` for the main tree, the
/// block id for a block's tree.
fn export_tree(name: &[u8]) -> Result<Option<u64>, Error> {
    if name == b"tsdb" {
        return Ok(None);
    }
    let hex = std::str::from_utf8(name)
        .ok()
        .and_then(|n| n.strip_prefix(BLOCK_TREE_PREFIX))
        .ok_or_else(|| Error::Corrupt(format!("export names unknown tree {:?}", String::from_utf8_lossy(name))))?;
    let id = u64::from_str_radix(hex, 16).map_err(|_| Error::Corrupt("bad block tree name".into()))?;
    Ok(Some(id))
}

/// Checks every live chunk frame (`live`: offset, length, time range) of
/// block `id`'s bytes and counts its samples.
fn summarize_block(out: &mut ExportSummary, live: &[(u32, u32, i64, i64)], id: u64, v: &[u8]) -> Result<(), Error> {
    for &(offset, len, mint_ms, maxt_ms) in live {
        let (start, end) = (offset as usize, offset as usize + len as usize);
        let frame = v.get(start..end).ok_or_else(|| {
            Error::Corrupt(format!(
                "chunk at {start}..{end} outside block {id} of {} bytes",
                v.len()
            ))
        })?;
        let payload = chunk::decode_frame(frame).map_err(|e| Error::Corrupt(format!("chunk in block {id}: {e}")))?;
        let n = payload
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| Error::Corrupt(format!("empty chunk in block {id}")))?;
        out.samples += u64::from(n);
        out.chunks += 1;
        widen(out, mint_ms, maxt_ms);
    }
    Ok(())
}

/// Summarizes one record of the main tree other than the meta: a series,
/// a block's chunk index (keeping the chunks at or after `floor_ms` of series
/// present), or a shard of open chunks.
fn summarize_main(
    out: &mut ExportSummary,
    series_ids: &mut std::collections::HashSet<SeriesId>,
    index: &mut HashMap<u64, Vec<(u32, u32, i64, i64)>>,
    floor_ms: i64,
    k: &[u8],
    v: &[u8],
) -> Result<(), Error> {
    match k.first() {
        Some(&P_SERIES) => {
            decode_labels(v)?;
            series_ids.insert(parse_id(k)?.0);
            out.series += 1;
        }
        Some(&P_INDEX) => {
            let block = block_id(k)?;
            let live: Vec<_> = decode_index(v)?
                .into_iter()
                .filter(|e| e.maxt_ms >= floor_ms && series_ids.contains(&e.series))
                .map(|e| (e.offset, e.len, e.mint_ms, e.maxt_ms))
                .collect();
            index.insert(block, live);
        }
        Some(&P_OPEN) => {
            for (_, st) in decode_open_shard(v)? {
                let (open, ooo) = super::head::decode_open_state_pub(&st)?;
                if let Some(c) = open {
                    if let (Some(lo_ms), Some(hi_ms)) = (c.first_t_ms(), c.last_t_ms()) {
                        widen(out, lo_ms, hi_ms);
                    }
                    out.samples += c.num_samples() as u64;
                }
                if let (Some(&(lo_ms, _)), Some(&(hi_ms, _))) = (ooo.first(), ooo.last()) {
                    widen(out, lo_ms, hi_ms);
                }
                out.samples += ooo.len() as u64;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads a whole export stream (as [`Store::export`] writes it) without
/// storing it and says what it holds. Every record, chunk index, open-state
/// shard and live chunk frame is decoded and its checksum checked, so a
/// stream that passes is one that [`Store::import`] and a later load accept.
///
/// Memory: the live chunk positions of every block (about 24 bytes per chunk).
pub fn summarize_export(r: &mut impl Read) -> Result<ExportSummary, Error> {
    let mut out = ExportSummary::default();
    let mut meta: Option<CheckpointMeta> = None;
    // Series present: chunks of series deleted since their block was
    // written stay listed in the block's index but are not loaded.
    let mut series_ids = std::collections::HashSet::new();
    // Block id -> (offset, len) of the chunks the index lists, with their time range.
    let mut index: HashMap<u64, Vec<(u32, u32, i64, i64)>> = HashMap::new();
    // `None` before the first tree, `Some(None)` in the main tree,
    // `Some(Some(id))` in the tree of block `id`.
    let mut tree: Option<Option<u64>> = None;
    let mut block_seen = std::collections::HashSet::new();
    loop {
        let (tag, k) = read_export_record(r)?;
        match tag {
            0 => break,
            1 => {
                let t = export_tree(&k)?;
                if let Some(id) = t {
                    block_seen.insert(id);
                }
                tree = Some(t);
            }
            2 => {
                let (vtag, v) = read_export_record(r)?;
                if vtag != 3 {
                    return Err(Error::Corrupt(format!(
                        "export: expected a value record, got tag {vtag}"
                    )));
                }
                out.records += 1;
                match tree.ok_or_else(|| Error::Corrupt("export record before any tree".into()))? {
                    Some(id) => summarize_block(&mut out, index.get(&id).map(Vec::as_slice).unwrap_or(&[]), id, &v)?,
                    None => {
                        if k == KEY_META {
                            meta = Some(decode_meta(&v)?);
                            continue;
                        }
                        let floor_ms = meta.as_ref().map_or(i64::MIN, |m| m.min_valid_t_ms);
                        summarize_main(&mut out, &mut series_ids, &mut index, floor_ms, &k, &v)?;
                    }
                }
            }
            other => return Err(Error::Corrupt(format!("export: unknown record tag {other}"))),
        }
    }
    let meta = meta.ok_or_else(|| Error::Corrupt("export holds no checkpoint meta".into()))?;
    for block in index.keys() {
        if !block_seen.contains(block) && index.get(block).is_some_and(|v| !v.is_empty()) {
            return Err(Error::Corrupt(format!(
                "chunk index names block {block}, which the export lacks"
            )));
        }
    }
    out.upper = meta.upper;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{proptest_cases, MemKv};
    use crate::tsdb::{AppendRequest, Db, HeadOptions, SeriesSamples};

    /// bincode's varint marker for "a u64 follows", then `n` little-endian.
    fn varint_u64(n: u64) -> Vec<u8> {
        [&[253u8][..], &n.to_le_bytes()].concat()
    }

    /// An export of a small TSDB with closed, open and out-of-order data.
    fn export() -> &'static [u8] {
        static EXPORT: OnceLock<Vec<u8>> = OnceLock::new();
        EXPORT.get_or_init(|| {
            let opts = HeadOptions {
                ooo_window_ms: 1000,
                chunk_samples: 4,
            };
            let (db, _) = Db::open_kv(Arc::new(MemKv::default()), opts).unwrap();
            for name in ["a", "b"] {
                db.apply(&AppendRequest {
                    series: vec![SeriesSamples {
                        labels: Labels::from_pairs([("__name__", name)]),
                        samples: (0..10).map(|i| (i * 100, i as f64)).chain([(850, 8.5)]).collect(),
                    }],
                    metadata: vec![],
                });
            }
            db.checkpoint(b"upper".to_vec()).unwrap();
            let mut out = Vec::new();
            db.export(&mut out).unwrap();
            out
        })
    }

    #[test]
    fn export_summary_reads_back_what_was_stored() {
        let s = summarize_export(&mut &export()[..]).unwrap();
        assert_eq!((s.series, s.samples), (2, 22));
        assert_eq!((s.min_time_ms, s.max_time_ms), (Some(0), Some(900)));
        assert_eq!(s.upper, b"upper");
    }

    /// A length prefix saying more bytes than any record holds is an error
    /// before anything is allocated: past `isize::MAX` bincode's unlimited
    /// decoder panicked ("capacity overflow"), below it it asked the
    /// allocator for the whole length and the process aborted.
    #[test]
    fn huge_length_prefixes_are_errors_not_allocations() {
        for n in [u64::MAX, 1 << 40, (RECORD_DECODED_BYTES_MAX as u64) + 1] {
            // One label pair whose name claims `n` bytes.
            let labels = [&[1u8][..], &varint_u64(n)].concat();
            assert!(decode_labels(&labels).is_err(), "labels with a name of {n} bytes");
            // Version 1, then an upper-layer state claiming `n` bytes.
            let meta = [&[1u8][..], &varint_u64(n)].concat();
            assert!(
                decode_meta(&meta).is_err(),
                "checkpoint meta with {n} bytes of upper state"
            );
        }
    }

    #[test]
    fn meta_of_a_newer_layout_is_refused() {
        let m = CheckpointMeta {
            version: CHECKPOINT_FORMAT_VERSION + 1,
            upper: vec![],
            next_series_id: 0,
            min_valid_t_ms: 0,
            next_block_id: 0,
        };
        let b = crate::codec::encode_to_vec(&m).unwrap();
        let e = decode_meta(&b).unwrap_err().to_string();
        assert!(e.contains("newer than this binary supports"), "{e}");
    }

    #[test]
    fn index_and_open_shard_round_trip() {
        let entries = vec![
            IndexEntry {
                series: 3,
                seq: 0,
                mint_ms: -5,
                maxt_ms: 10,
                ooo: false,
                offset: 4,
                len: 20,
            },
            IndexEntry {
                series: 1,
                seq: 7,
                mint_ms: i64::MIN,
                maxt_ms: i64::MAX,
                ooo: true,
                offset: 24,
                len: 9,
            },
        ];
        let back = decode_index(&encode_index(&entries)).unwrap();
        let key = |e: &IndexEntry| (e.series, e.seq, e.mint_ms, e.maxt_ms, e.ooo, e.offset, e.len);
        assert_eq!(
            back.iter().map(key).collect::<Vec<_>>(),
            entries.iter().map(key).collect::<Vec<_>>()
        );
        let states = vec![(1, vec![1, 2, 3]), (65, vec![])];
        assert_eq!(decode_open_shard(&encode_open_shard(&states)).unwrap(), states);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

        /// Arbitrary bytes never panic any decoder of the store's records or
        /// of an export stream.
        #[test]
        fn record_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_index(&bytes);
            let _ = decode_open_shard(&bytes);
            let _ = decode_labels(&bytes);
            let _ = decode_meta(&bytes);
            let _ = parse_id(&bytes);
            let _ = block_id(&bytes);
            let _ = summarize_export(&mut bytes.as_slice());
        }

        /// Arbitrary bodies behind a valid magic and CRC reach the varint and
        /// entry parsing of an index and a shard: still no panic.
        #[test]
        fn checksummed_records_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let with_crc = |mut v: Vec<u8>| {
                let crc = crc32fast::hash(&v);
                v.extend_from_slice(&crc.to_be_bytes());
                v
            };
            let _ = decode_index(&with_crc([&INDEX_MAGIC[..], &body].concat()));
            if let Ok(states) = decode_open_shard(&with_crc(body.clone())) {
                for (_, st) in states {
                    let _ = super::super::head::decode_open_state_pub(&st);
                }
            }
        }

        /// A damaged export (flipped bits, cut short) never panics the
        /// summary, which checks every record and checksum in it.
        #[test]
        fn damaged_exports_never_panic(
            flips in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut b = export().to_vec();
            for f in &flips {
                let bit = f.index(b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
            if truncate {
                b.truncate(cut.index(b.len()));
            }
            let r = summarize_export(&mut b.as_slice());
            if flips.is_empty() && !truncate {
                prop_assert!(r.is_ok());
            }
        }
    }
}
