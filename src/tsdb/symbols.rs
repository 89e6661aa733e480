//! String interning for label names and values.
//!
//! Series keep their labels as pairs of `u32` symbols so that the thousands of
//! series sharing `job="node"` store that string once. Symbols are assigned in
//! first-use order, which is apply order, so they are deterministic too, but
//! nothing persisted depends on their numbers: storage keeps strings.

use std::collections::HashMap;
use std::sync::Arc;

/// An interned string's number.
pub type Sym = u32;

/// The interner. Strings are never removed: a label value that disappears
/// through retention keeps its slot until restart (bounded by the number of
/// distinct strings ever seen since the last start).
#[derive(Default)]
pub struct Symbols {
    ids: HashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

impl Symbols {
    /// Returns the symbol for `s`, interning it on first use.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = Sym::try_from(self.strings.len()).expect("more than 4 billion distinct label strings");
        let a: Arc<str> = Arc::from(s);
        self.strings.push(a.clone());
        self.ids.insert(a, id);
        id
    }

    /// The symbol of `s` if it was ever interned.
    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    /// The string of a symbol. Symbols come only from `intern`, so an
    /// unknown one is a bug.
    pub fn resolve(&self, sym: Sym) -> &str {
        &self.strings[sym as usize]
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Approximate heap bytes used, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        text + self.strings.capacity() * 16 + self.ids.capacity() * (16 + 4 + 8)
    }
}
