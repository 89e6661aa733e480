//! The simulated disk: an in-memory [`Kv`] that survives its host's crash
//! with what was fsynced, plus a seed-chosen prefix of what was not.
//!
//! Every write is applied to the live trees at once (reads see it) and
//! queued as pending; [`Kv::flush`] makes the queue durable. A crash
//! ([`Disk::crash`]) keeps the durable trees and the first `keep` pending
//! writes, in order, and drops the rest: sled's guarantee (a prefix of the
//! writes since the last flush survives), exercised at its worst.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use promraft::kv::{BatchOp, Kv, KvBytes, KvIter, KvPair, KvTree};

type Tree = BTreeMap<Vec<u8>, KvBytes>;

/// One write, as queued until the next flush.
#[derive(Clone)]
enum Write {
    Put(String, Vec<u8>, KvBytes),
    Del(String, Vec<u8>),
    Clear(String),
    Batch(String, Vec<BatchOp>),
    CreateTree(String),
    DropTree(String),
}

#[derive(Default)]
struct State {
    live: BTreeMap<String, Tree>,
    durable: BTreeMap<String, Tree>,
    pending: Vec<Write>,
    flushes: u64,
    /// Trees cleared so far, by name.
    clears: BTreeMap<String, u64>,
}

fn apply(trees: &mut BTreeMap<String, Tree>, w: &Write) {
    match w {
        Write::Put(t, k, v) => {
            trees.entry(t.clone()).or_default().insert(k.clone(), v.clone());
        }
        Write::Del(t, k) => {
            trees.entry(t.clone()).or_default().remove(k);
        }
        Write::Clear(t) => {
            trees.entry(t.clone()).or_default().clear();
        }
        Write::Batch(t, ops) => {
            let tree = trees.entry(t.clone()).or_default();
            for (k, v) in ops {
                match v {
                    Some(v) => tree.insert(k.clone(), v.clone()),
                    None => tree.remove(k),
                };
            }
        }
        Write::CreateTree(t) => {
            trees.entry(t.clone()).or_default();
        }
        Write::DropTree(t) => {
            trees.remove(t);
        }
    }
}

/// One node's disk. Clones share it; it outlives the node's host.
#[derive(Clone, Default)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

impl Disk {
    /// A fresh, empty disk.
    pub fn new() -> Disk {
        Disk::default()
    }

    fn write(&self, w: Write) {
        let mut st = self.state.lock();
        if let Write::Clear(t) = &w {
            *st.clears.entry(t.clone()).or_default() += 1;
        }
        apply(&mut st.live, &w);
        st.pending.push(w);
    }

    /// The host crashed: keep the fsynced state and the first `keep`
    /// writes since; returns how many unsynced writes were lost.
    pub fn crash(&self, keep: usize) -> usize {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.pending);
        let keep = keep.min(pending.len());
        for w in &pending[..keep] {
            apply(&mut st.durable, w);
        }
        st.live = st.durable.clone();
        pending.len() - keep
    }

    /// Writes not yet fsynced.
    pub fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// fsyncs so far.
    pub fn flushes(&self) -> u64 {
        self.state.lock().flushes
    }

    /// How often tree `name` was cleared so far (crashes included). On a
    /// TSDB disk, clearing its main tree is what a snapshot import does
    /// first, and nothing else clears it: so this counts the snapshots a
    /// node began to install.
    pub fn clears(&self, name: &str) -> u64 {
        self.state.lock().clears.get(name).copied().unwrap_or(0)
    }
}

impl Kv for Disk {
    fn open_tree(&self, name: &str) -> io::Result<Arc<dyn KvTree>> {
        if !self.state.lock().live.contains_key(name) {
            self.write(Write::CreateTree(name.to_string()));
        }
        Ok(Arc::new(DiskTree {
            disk: self.clone(),
            name: name.to_string(),
        }))
    }

    fn tree_names(&self) -> Vec<String> {
        self.state.lock().live.keys().cloned().collect()
    }

    fn drop_tree(&self, name: &str) -> io::Result<()> {
        self.write(Write::DropTree(name.to_string()));
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.pending);
        for w in &pending {
            apply(&mut st.durable, w);
        }
        st.flushes += 1;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        let st = self.state.lock();
        st.durable
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn inline_io(&self) -> bool {
        true
    }
}

/// A tree of a [`Disk`]. Reads copy what they return, so no lock is held
/// across an iterator.
struct DiskTree {
    disk: Disk,
    name: String,
}

impl DiskTree {
    fn collect(&self, f: impl Fn(&[u8]) -> bool, stop: impl Fn(&[u8]) -> bool, from: &[u8]) -> Vec<KvPair> {
        let st = self.disk.state.lock();
        let Some(t) = st.live.get(&self.name) else {
            return Vec::new();
        };
        t.range(from.to_vec()..)
            .take_while(|(k, _)| !stop(k))
            .filter(|(k, _)| f(k))
            .map(|(k, v)| (KvBytes::from(k.as_slice()), v.clone()))
            .collect()
    }
}

fn iter(v: Vec<KvPair>) -> KvIter<'static> {
    Box::new(v.into_iter().map(Ok))
}

impl KvTree for DiskTree {
    fn get(&self, key: &[u8]) -> io::Result<Option<KvBytes>> {
        Ok(self
            .disk
            .state
            .lock()
            .live
            .get(&self.name)
            .and_then(|t| t.get(key).cloned()))
    }

    fn insert(&self, key: &[u8], value: KvBytes) -> io::Result<()> {
        self.disk.write(Write::Put(self.name.clone(), key.to_vec(), value));
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> io::Result<()> {
        self.disk.write(Write::Del(self.name.clone(), key.to_vec()));
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        self.disk.write(Write::Clear(self.name.clone()));
        Ok(())
    }

    fn apply_batch(&self, ops: Vec<BatchOp>) -> io::Result<()> {
        self.disk.write(Write::Batch(self.name.clone(), ops));
        Ok(())
    }

    fn range(&self, from: &[u8], to_inclusive: Option<&[u8]>) -> KvIter<'_> {
        let to = to_inclusive.map(<[u8]>::to_vec);
        iter(self.collect(|_| true, |k| to.as_ref().is_some_and(|to| k > to.as_slice()), from))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        iter(self.collect(|_| true, |k| !k.starts_with(prefix), prefix))
    }

    fn last(&self) -> io::Result<Option<KvPair>> {
        let st = self.disk.state.lock();
        Ok(st
            .live
            .get(&self.name)
            .and_then(|t| t.iter().next_back())
            .map(|(k, v)| (KvBytes::from(k.as_slice()), v.clone())))
    }

    fn len(&self) -> usize {
        self.disk.state.lock().live.get(&self.name).map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_flushed_and_a_prefix_of_the_rest() {
        let d = Disk::new();
        let t = d.open_tree("t").unwrap();
        t.insert(b"a", KvBytes::from(&b"1"[..])).unwrap();
        d.flush().unwrap();
        t.insert(b"b", KvBytes::from(&b"2"[..])).unwrap();
        t.insert(b"c", KvBytes::from(&b"3"[..])).unwrap();
        assert_eq!(t.len(), 3, "writes are visible before a flush");
        assert_eq!(d.crash(1), 1);
        let t = d.open_tree("t").unwrap();
        let keys: Vec<Vec<u8>> = t.scan_prefix(b"").map(|r| r.unwrap().0.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(d.crash(0), 0, "nothing pending after a crash");
        let r: Vec<_> = t.range(b"a", Some(b"a")).collect();
        assert_eq!(r.len(), 1);
    }
}
