//! The storage seam: a durable, ordered key-value store with named trees
//! and an explicit fsync, the few operations the Raft log store
//! (`raft::log_store`) and the TSDB store (`tsdb::store`) need.
//!
//! Production uses [`SledKv`] (sled 0.34). The simulator (`sim/`) supplies
//! an in-memory store that keeps what was written since the last
//! [`Kv::flush`] apart and loses it, or part of it, when its host crashes;
//! it answers [`Kv::inline_io`] with `true`, so that callers do the (then
//! instant) disk work inline instead of on threads, which the simulator
//! could not schedule deterministically.
//!
//! Semantics every implementation keeps (sled's): writes are visible to
//! reads at once; [`Kv::flush`] makes every write before it durable; a
//! crash keeps a prefix, in order, of the writes since the last flush; a
//! [`KvTree::apply_batch`] is one write (all or nothing).

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// Bytes stored in a [`Kv`]: cheap to clone, and small values kept inline.
/// It wraps sled's own buffer, so a value read from sled is not copied;
/// sled stays private to this module.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KvBytes(sled::IVec);

impl Deref for KvBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for KvBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for KvBytes {
    fn from(v: Vec<u8>) -> Self {
        KvBytes(sled::IVec::from(v))
    }
}

impl From<&[u8]> for KvBytes {
    fn from(v: &[u8]) -> Self {
        KvBytes(sled::IVec::from(v))
    }
}

impl<const N: usize> From<&[u8; N]> for KvBytes {
    fn from(v: &[u8; N]) -> Self {
        KvBytes(sled::IVec::from(&v[..]))
    }
}

/// A key and its value.
pub type KvPair = (KvBytes, KvBytes);

/// An iterator over pairs in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = io::Result<KvPair>> + 'a>;

/// One change of an atomic batch: `Some` inserts, `None` removes.
pub type BatchOp = (Vec<u8>, Option<KvBytes>);

/// A store of named trees.
pub trait Kv: Send + Sync + 'static {
    /// The tree `name`, created if missing.
    fn open_tree(&self, name: &str) -> io::Result<Arc<dyn KvTree>>;
    /// Names of the trees present (created and not dropped).
    fn tree_names(&self) -> Vec<String>;
    /// Drops a tree and everything in it.
    fn drop_tree(&self, name: &str) -> io::Result<()>;
    /// Makes every write so far durable.
    fn flush(&self) -> io::Result<()>;
    /// Bytes on disk (an estimate is fine).
    fn size_on_disk(&self) -> u64;
    /// True when I/O is instant and must run inline on the calling task
    /// (the simulator); false when it may block and belongs on a thread.
    fn inline_io(&self) -> bool {
        false
    }
}

/// One ordered tree of a [`Kv`].
pub trait KvTree: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> io::Result<Option<KvBytes>>;
    /// Sets `key` to `value`.
    fn insert(&self, key: &[u8], value: KvBytes) -> io::Result<()>;
    /// Removes `key`.
    fn remove(&self, key: &[u8]) -> io::Result<()>;
    /// Removes every key.
    fn clear(&self) -> io::Result<()>;
    /// Applies all `ops` as one atomic write.
    fn apply_batch(&self, ops: Vec<BatchOp>) -> io::Result<()>;
    /// Pairs with `from <= key` (and `key <= to` when given), in order.
    fn range(&self, from: &[u8], to_inclusive: Option<&[u8]>) -> KvIter<'_>;
    /// Pairs whose key starts with `prefix`, in order.
    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_>;
    /// The pair with the greatest key.
    fn last(&self) -> io::Result<Option<KvPair>>;
    /// Number of keys.
    fn len(&self) -> usize;
    /// True when the tree holds no key.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn io_err(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

/// [`Kv`] on a sled database.
#[derive(Clone)]
pub struct SledKv(sled::Db);

/// How [`SledKv::open`] opens a sled database. The default is sled's own
/// (1 GiB page cache, the low-space mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledOptions {
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
    /// sled's high-throughput mode (more space, fewer rewrites): what a
    /// node's write-heavy log and TSDB use.
    pub high_throughput: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            // sled 0.34's default cache capacity.
            cache_bytes: 1 << 30,
            high_throughput: false,
        }
    }
}

impl SledKv {
    /// Opens (or creates) the sled database in `dir`.
    pub fn open(dir: &Path, opts: SledOptions) -> io::Result<SledKv> {
        let mode = if opts.high_throughput {
            sled::Mode::HighThroughput
        } else {
            sled::Mode::LowSpace
        };
        sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .mode(mode)
            .open()
            .map(SledKv)
            .map_err(io_err)
    }

    /// A database that is deleted when dropped (benchmarks and tests).
    pub fn temporary() -> io::Result<SledKv> {
        sled::Config::new().temporary(true).open().map(SledKv).map_err(io_err)
    }
}

impl Kv for SledKv {
    fn open_tree(&self, name: &str) -> io::Result<Arc<dyn KvTree>> {
        Ok(Arc::new(SledTree(self.0.open_tree(name).map_err(io_err)?)))
    }

    fn tree_names(&self) -> Vec<String> {
        self.0
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok().map(str::to_string))
            .collect()
    }

    fn drop_tree(&self, name: &str) -> io::Result<()> {
        self.0.drop_tree(name).map(|_| ()).map_err(io_err)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush().map(|_| ()).map_err(io_err)
    }

    fn size_on_disk(&self) -> u64 {
        self.0.size_on_disk().unwrap_or(0)
    }
}

/// [`KvTree`] on a sled tree.
pub struct SledTree(sled::Tree);

fn sled_iter<'a>(it: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a) -> KvIter<'a> {
    Box::new(it.map(|r| r.map(|(k, v)| (KvBytes(k), KvBytes(v))).map_err(io_err)))
}

impl KvTree for SledTree {
    fn get(&self, key: &[u8]) -> io::Result<Option<KvBytes>> {
        self.0.get(key).map(|v| v.map(KvBytes)).map_err(io_err)
    }

    fn insert(&self, key: &[u8], value: KvBytes) -> io::Result<()> {
        self.0.insert(key, value.0).map(|_| ()).map_err(io_err)
    }

    fn remove(&self, key: &[u8]) -> io::Result<()> {
        self.0.remove(key).map(|_| ()).map_err(io_err)
    }

    fn clear(&self) -> io::Result<()> {
        self.0.clear().map_err(io_err)
    }

    fn apply_batch(&self, ops: Vec<BatchOp>) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v.0),
                None => batch.remove(k),
            }
        }
        self.0.apply_batch(batch).map_err(io_err)
    }

    fn range(&self, from: &[u8], to_inclusive: Option<&[u8]>) -> KvIter<'_> {
        match to_inclusive {
            Some(to) => sled_iter(self.0.range(from.to_vec()..=to.to_vec())),
            None => sled_iter(self.0.range(from.to_vec()..)),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        sled_iter(self.0.scan_prefix(prefix))
    }

    fn last(&self) -> io::Result<Option<KvPair>> {
        self.0
            .last()
            .map(|p| p.map(|(k, v)| (KvBytes(k), KvBytes(v))))
            .map_err(io_err)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Runs `f`, a piece of disk work: on a blocking thread when `inline` is
/// false (production: it may take milliseconds), on the calling task when
/// true (the simulator: instant, and threads would break determinism).
pub async fn run_io<T: Send + 'static>(inline: bool, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if inline {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }
}
