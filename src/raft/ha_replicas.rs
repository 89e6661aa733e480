//! The replicated state of HA-pair deduplication: which replica of each
//! sender cluster is elected, since when, and when it was last seen.
//!
//! Only the state machine changes it, by applying `Command::HaElect` and
//! `Command::HaSeen` entries, so every replica holds the same elections at
//! the same log position and a promraft failover never changes the elected
//! replica. Applying is a pure function of the entries: times are the
//! proposer's, carried in the entry, never read from a clock here. The
//! decisions (accept, drop, elect) are the leader's, in
//! `cluster::ha_dedup`; this module only records their outcome. It is kept
//! with every checkpoint (`state_machine`'s Raft state record) and travels
//! with snapshots and backups.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The elected replica of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectedReplica {
    /// The replica label's value of the elected sender.
    pub replica: String,
    /// When it was elected, ms since the epoch (the proposing leader's clock).
    pub elected_at_ms: i64,
    /// When the leader last recorded a request from it, ms since the epoch.
    /// Recorded through the log at most every few seconds, so it may lag
    /// the newest request by that much (`cluster::ha_dedup`).
    pub seen_ms: i64,
    /// Elections held for this cluster so far (the first one counts).
    pub elections: u64,
}

/// The elected replica of every cluster, by cluster label value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaReplicas {
    clusters: BTreeMap<String, ElectedReplica>,
}

impl HaReplicas {
    /// The elected replica of `cluster`, if one was ever elected.
    pub fn get(&self, cluster: &str) -> Option<&ElectedReplica> {
        self.clusters.get(cluster)
    }

    /// Clusters with an elected replica.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// True while no cluster was ever seen.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Every cluster and its elected replica, by cluster.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ElectedReplica)> {
        self.clusters.iter()
    }

    /// Applies an election: `replica` becomes the elected one of `cluster`
    /// if the elected one is still `expected` (`None`: none yet). The
    /// condition makes elections proposed concurrently from the same view
    /// settle on the first one committed instead of flipping. Returns
    /// whether the election took place.
    pub fn elect(&mut self, cluster: &str, replica: &str, expected: Option<&str>, at_ms: i64) -> bool {
        let current = self.clusters.get(cluster);
        if current.map(|e| e.replica.as_str()) != expected {
            return false;
        }
        let elections = current.map_or(0, |e| e.elections) + 1;
        self.clusters.insert(
            cluster.to_string(),
            ElectedReplica {
                replica: replica.to_string(),
                elected_at_ms: at_ms,
                seen_ms: at_ms,
                elections,
            },
        );
        true
    }

    /// Applies a sighting: `replica` of `cluster` sent at `at_ms`. Only the
    /// elected replica's sightings count, and time never moves back.
    pub fn seen(&mut self, cluster: &str, replica: &str, at_ms: i64) {
        if let Some(e) = self.clusters.get_mut(cluster) {
            if e.replica == replica {
                e.seen_ms = e.seen_ms.max(at_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_are_conditional_and_counted() {
        let mut s = HaReplicas::default();
        assert!(!s.elect("a", "r1", Some("r0"), 10), "no replica elected yet");
        assert!(s.elect("a", "r1", None, 10));
        assert!(
            !s.elect("a", "r2", None, 11),
            "r1 is elected; a stale view must not win"
        );
        assert_eq!(s.get("a").map(|e| (e.replica.as_str(), e.elections)), Some(("r1", 1)));
        assert!(s.elect("a", "r2", Some("r1"), 20));
        let e = s.get("a").expect("elected");
        assert_eq!(
            (e.replica.as_str(), e.elected_at_ms, e.seen_ms, e.elections),
            ("r2", 20, 20, 2)
        );
    }

    #[test]
    fn only_the_elected_replica_is_seen_and_time_never_goes_back() {
        let mut s = HaReplicas::default();
        s.seen("a", "r1", 5);
        assert!(s.is_empty(), "a sighting elects nobody");
        s.elect("a", "r1", None, 10);
        s.seen("a", "r2", 50);
        assert_eq!(s.get("a").map(|e| e.seen_ms), Some(10));
        s.seen("a", "r1", 40);
        s.seen("a", "r1", 30);
        assert_eq!(s.get("a").map(|e| e.seen_ms), Some(40));
    }
}
