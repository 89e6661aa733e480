//! The run's history as structured events, hashed: two runs of one seed
//! must give the same hash (determinism), and the last events are kept to
//! print with a failure. Never raw log text (it carries wall-clock times).

use std::collections::VecDeque;

use xxhash_rust::xxh3::Xxh3;

/// Events kept for printing with a failure (`PROMRAFT_SIM_TAIL` overrides).
const TAIL_EVENTS: usize = 40;

fn tail_events() -> usize {
    std::env::var("PROMRAFT_SIM_TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TAIL_EVENTS)
}

/// The history of one run.
pub struct Trace {
    hash: Xxh3,
    events: u64,
    /// The last events as recorded, formatted only when printed.
    tail: VecDeque<(u64, &'static str, Vec<u64>)>,
    tail_max: usize,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: Xxh3::new(),
            events: 0,
            tail: VecDeque::new(),
            tail_max: tail_events(),
        }
    }
}

impl Trace {
    /// Records an event: its sim time, kind and numbers.
    pub fn event(&mut self, at_ms: u64, kind: &'static str, args: &[u64]) {
        self.hash.update(&at_ms.to_le_bytes());
        self.hash.update(kind.as_bytes());
        self.hash.update(&[0]);
        for a in args {
            self.hash.update(&a.to_le_bytes());
        }
        self.events += 1;
        if self.tail.len() >= self.tail_max {
            self.tail.pop_front();
        }
        self.tail.push_back((at_ms, kind, args.to_vec()));
    }

    /// The hash of everything recorded.
    pub fn hash(&self) -> u64 {
        self.hash.digest()
    }

    /// Events recorded.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The last events, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = String> + '_ {
        self.tail
            .iter()
            .map(|(at_ms, kind, args)| format!("{at_ms:>7} ms {kind} {args:?}"))
    }
}
