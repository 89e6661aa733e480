//! Test support, in test builds only: an in-memory [`Kv`] whose I/O is
//! inline, so tests can run the log store, the state machine and the TSDB
//! store over the seam's non-sled side without a disk, and the proptest
//! case count.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::kv::{BatchOp, Kv, KvBytes, KvIter, KvPair, KvTree};

/// Cases per property test: `default` (kept small so the suite stays fast
/// in CI), or `PROPTEST_CASES` when set, for a longer run.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An in-memory [`Kv`] whose I/O is inline, for running the suite over the
/// seam's other side. Everything is durable at once (no crash is modelled:
/// the simulator's store does that).
#[derive(Default)]
pub struct MemKv {
    trees: Mutex<BTreeMap<String, Arc<MemTree>>>,
}

#[derive(Default)]
struct MemTree {
    map: Mutex<BTreeMap<Vec<u8>, KvBytes>>,
}

impl Kv for MemKv {
    fn open_tree(&self, name: &str) -> io::Result<Arc<dyn KvTree>> {
        Ok(self.trees.lock().entry(name.to_string()).or_default().clone())
    }

    fn tree_names(&self) -> Vec<String> {
        self.trees.lock().keys().cloned().collect()
    }

    fn drop_tree(&self, name: &str) -> io::Result<()> {
        self.trees.lock().remove(name);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn inline_io(&self) -> bool {
        true
    }
}

impl MemTree {
    fn collect(&self, keep: impl Fn(&[u8]) -> bool) -> KvIter<'_> {
        let pairs: Vec<io::Result<KvPair>> = self
            .map
            .lock()
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| Ok((KvBytes::from(k.as_slice()), v.clone())))
            .collect();
        Box::new(pairs.into_iter())
    }
}

impl KvTree for MemTree {
    fn get(&self, key: &[u8]) -> io::Result<Option<KvBytes>> {
        Ok(self.map.lock().get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: KvBytes) -> io::Result<()> {
        self.map.lock().insert(key.to_vec(), value);
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> io::Result<()> {
        self.map.lock().remove(key);
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        self.map.lock().clear();
        Ok(())
    }

    fn apply_batch(&self, ops: Vec<BatchOp>) -> io::Result<()> {
        let mut m = self.map.lock();
        for (k, v) in ops {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }

    fn range(&self, from: &[u8], to_inclusive: Option<&[u8]>) -> KvIter<'_> {
        self.collect(|k| k >= from && to_inclusive.is_none_or(|to| k <= to))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.collect(|k| k.starts_with(prefix))
    }

    fn last(&self) -> io::Result<Option<KvPair>> {
        Ok(self
            .map
            .lock()
            .iter()
            .next_back()
            .map(|(k, v)| (KvBytes::from(k.as_slice()), v.clone())))
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }
}
