//! The clients: one per node host, writing batches of unique samples and
//! reading at both consistency levels through the functions the HTTP API
//! calls (`cluster::routing::write`, `read_barrier` + `Db::select`).
//!
//! Each client writes only its own series, one operation at a time, with
//! timestamps that grow over the whole run, so no acknowledged write can be
//! rejected as out of order; reads cover every client's series.

use std::sync::Arc;
use std::time::Duration;

use promraft::cluster::routing::{self, Consistency};
use promraft::node::Node;
use rand::rngs::StdRng;
use rand::Rng;

use crate::cluster::{now_ms, SharedRef};
use crate::invariants::{acked_not_lost, linearizable_read, no_duplicate_or_phantom, select_all};
use crate::oracle::Outcome;

/// Series per client.
pub const SERIES_PER_CLIENT: u32 = 3;

/// Runs the client of node `id` until its host crashes or the run ends.
pub async fn client(id: u64, node: Arc<Node>, shared: SharedRef, mut rng: StdRng) {
    loop {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
        if !shared.lock().clients_on {
            return;
        }
        match rng.gen_range(0..100) {
            0..=59 => write(id, &node, &shared, &mut rng).await,
            60..=79 => read(id, &node, &shared, Consistency::Linearizable).await,
            _ => read(id, &node, &shared, Consistency::Local).await,
        }
    }
}

async fn write(id: u64, node: &Node, shared: &SharedRef, rng: &mut StdRng) {
    let n = rng.gen_range(1..=SERIES_PER_CLIENT);
    let first = rng.gen_range(0..SERIES_PER_CLIENT);
    let series: Vec<_> = (0..n).map(|i| (id, (first + i) % SERIES_PER_CLIENT)).collect();
    let op = {
        let mut sh = shared.lock();
        let op = sh.oracle.begin_write(id, &series, now_ms());
        sh.trace.event(now_ms(), "write", &[id, op.id]);
        op
    };
    let res = routing::write(&node.router, op.request()).await;
    let mut sh = shared.lock();
    let at = now_ms();
    match res {
        Ok(r) => {
            let bound_index = sh.max_applied();
            if let Some(v) = acked_not_lost::check_ack(op.id, op.samples.len(), &r, at) {
                sh.violations.push(v);
            }
            sh.trace
                .event(at, "write-acked", &[id, op.id, r.appended, r.duplicates, bound_index]);
            sh.oracle.finish_write(op.id, Outcome::Acked { bound_index, at_ms: at });
        }
        Err(_) => {
            sh.trace.event(at, "write-failed", &[id, op.id]);
            sh.oracle.finish_write(op.id, Outcome::Failed);
        }
    }
}

async fn read(id: u64, node: &Node, shared: &SharedRef, level: Consistency) {
    let start = now_ms();
    let required = match level {
        Consistency::Linearizable => linearizable_read::required(&shared.lock().oracle),
        Consistency::Local => 0,
    };
    let barrier = routing::read_barrier(&node.router, level).await;
    let applied_at_read = node.applied_index();
    let data = barrier.map_err(|e| e.to_string()).and_then(|()| select_all(node));
    let mut sh = shared.lock();
    let at = now_ms();
    let lin = u64::from(level == Consistency::Linearizable);
    let data = match data {
        Ok(d) => d,
        Err(_) => {
            sh.oracle.counts.reads_failed += 1;
            sh.trace.event(at, "read-failed", &[id, lin]);
            return;
        }
    };
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    sh.trace.event(at, "read", &[id, lin, samples as u64, applied_at_read]);
    let who = format!("{level:?} read on node {id}");
    let mut found = no_duplicate_or_phantom::check(&sh.oracle, &who, &data, at);
    if level == Consistency::Linearizable {
        sh.oracle.counts.reads_linearizable += 1;
        found.extend(linearizable_read::check(id, start, &sh.oracle, required, &data, at));
    } else {
        sh.oracle.counts.reads_local += 1;
    }
    sh.violations.extend(found);
}
