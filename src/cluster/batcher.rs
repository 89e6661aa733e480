//! Group commit: the leader coalesces concurrent write requests into one log
//! entry, so Raft costs one round trip and one fsync per batch, not per
//! request.
//!
//! A request is first split into parts that respect the entry bounds
//! ([`split_request`], pure). Parts queue in a bounded channel. The batcher
//! task waits for a free in-flight slot *before* it takes parts off the
//! queue, so while earlier entries are committing, new requests pile up and
//! leave together as the next entry ([`take_batch`], pure).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::WriteConfig;
use crate::metrics::Metrics;
use crate::raft::command::DecodedCache;
use crate::raft::{Command, Raft, TypeConfig};
use crate::tsdb::{AppendRequest, AppendResult, SeriesSamples};
use openraft::impls::ProgressResponder;

/// Why a write was not committed. Every variant is retryable by the sender.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// No leader, not the leader, no quorum, or commit timed out.
    #[error("cannot commit: {0}")]
    Unavailable(String),
    /// The queue of pending writes is full.
    #[error("too many writes pending ({0} requests queued); retry later")]
    Overloaded(usize),
}

struct Job {
    req: AppendRequest,
    done: oneshot::Sender<Result<AppendResult, CommitError>>,
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    series_max: usize,
    samples_max: usize,
    queue_max: usize,
}

/// Splits a request into parts of at most `series_max` series and about
/// `samples_max` samples (a single series longer than that is cut into
/// several parts, in order). Metadata rides with the first part.
pub fn split_request(req: AppendRequest, series_max: usize, samples_max: usize) -> Vec<AppendRequest> {
    let mut parts = Vec::new();
    let mut cur = AppendRequest {
        series: Vec::new(),
        metadata: req.metadata,
    };
    let mut cur_samples = 0;
    for s in req.series {
        let mut samples = s.samples;
        let labels = s.labels;
        loop {
            let room = samples_max.saturating_sub(cur_samples).max(1);
            if cur.series.len() >= series_max || (cur_samples >= samples_max && !cur.series.is_empty()) {
                parts.push(std::mem::take(&mut cur));
                cur_samples = 0;
                continue;
            }
            if samples.len() <= room {
                cur_samples += samples.len();
                cur.series.push(SeriesSamples { labels, samples });
                break;
            }
            let rest = samples.split_off(room);
            cur_samples += samples.len();
            cur.series.push(SeriesSamples {
                labels: labels.clone(),
                samples,
            });
            samples = rest;
        }
    }
    if !cur.series.is_empty() || !cur.metadata.is_empty() || parts.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Takes requests off the front of `queue` while they fit in one entry:
/// at least one, then more while the sums stay within the bounds.
pub fn take_batch<T>(
    queue: &mut VecDeque<T>,
    size: impl Fn(&T) -> (usize, usize),
    series_max: usize,
    samples_max: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    let (mut series, mut samples) = (0, 0);
    while let Some(front) = queue.front() {
        let (se, sa) = size(front);
        if !out.is_empty() && (series + se > series_max || samples + sa > samples_max) {
            break;
        }
        series += se;
        samples += sa;
        out.push(queue.pop_front().expect("front exists"));
    }
    out
}

fn job_size(j: &Job) -> (usize, usize) {
    (j.req.series.len(), j.req.num_samples())
}

impl Batcher {
    /// Starts the batcher task for `raft`.
    pub fn start(raft: Raft, cfg: &WriteConfig, metrics: Arc<Metrics>, decoded: Arc<DecodedCache>) -> Batcher {
        let (tx, rx) = mpsc::channel(cfg.queue_requests_max);
        tokio::spawn(run(raft, rx, cfg.clone(), metrics, decoded));
        Batcher {
            tx,
            series_max: cfg.entry_series_max,
            samples_max: cfg.entry_samples_max,
            queue_max: cfg.queue_requests_max,
        }
    }

    /// Commits `req` through the log; returns what apply did with it.
    pub async fn submit(&self, req: AppendRequest) -> Result<AppendResult, CommitError> {
        let parts = split_request(req, self.series_max, self.samples_max);
        let mut waits = Vec::with_capacity(parts.len());
        for part in parts {
            let (done, rx) = oneshot::channel();
            self.tx.try_send(Job { req: part, done }).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::Overloaded(self.queue_max),
                mpsc::error::TrySendError::Closed(_) => CommitError::Unavailable("node is shutting down".into()),
            })?;
            waits.push(rx);
        }
        let mut total = AppendResult::default();
        for w in waits {
            let r = w
                .await
                .map_err(|_| CommitError::Unavailable("write dropped during shutdown".into()))??;
            total.appended += r.appended;
            total.duplicates += r.duplicates;
            total.out_of_order += r.out_of_order;
            total.duplicate_timestamp += r.duplicate_timestamp;
            total.out_of_bounds += r.out_of_bounds;
            if total.first_error.is_none() {
                total.first_error = r.first_error;
            }
        }
        Ok(total)
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Job>,
    cfg: WriteConfig,
    metrics: Arc<Metrics>,
    decoded: Arc<DecodedCache>,
) {
    let slots = Arc::new(Semaphore::new(cfg.entries_in_flight_max));
    let mut queue: VecDeque<Job> = VecDeque::new();
    let linger = Duration::from_millis(cfg.batch_linger_ms);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        if queue.is_empty() {
            match rx.recv().await {
                Some(j) => queue.push_back(j),
                None => return,
            }
            if !linger.is_zero() {
                let deadline = tokio::time::Instant::now() + linger;
                while let Ok(Some(j)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                    queue.push_back(j);
                    if queue.len() >= cfg.entry_series_max {
                        break;
                    }
                }
            }
        }
        while let Ok(j) = rx.try_recv() {
            queue.push_back(j);
            if queue.len() > cfg.entry_series_max {
                break;
            }
        }
        let jobs = take_batch(&mut queue, job_size, cfg.entry_series_max, cfg.entry_samples_max);
        // Submit in queue order, here in the loop: the parts of one request
        // (and consecutive requests for a series) must reach the log in the
        // order they were queued, or a later part would make an earlier one
        // out of order. Only the wait for commit runs concurrently.
        let Some(proposal) = submit(&raft, jobs, &metrics, &decoded).await else {
            continue;
        };
        let metrics = metrics.clone();
        let decoded = decoded.clone();
        let timeout = Duration::from_millis(cfg.commit_timeout_ms);
        tokio::spawn(async move {
            proposal.finish(timeout, &metrics, &decoded).await;
            drop(permit);
        });
    }
}

/// An entry handed to Raft, waiting for its commit and apply.
struct Proposal {
    rx: openraft::alias::OneshotReceiverOf<TypeConfig, openraft::raft::ClientWriteResult<TypeConfig>>,
    dones: Vec<oneshot::Sender<Result<AppendResult, CommitError>>>,
    key: u128,
    started: Instant,
}

/// Encodes `jobs` into one entry and hands it to Raft (returns once it is
/// queued in Raft, not committed). `None` when it could not be submitted;
/// the jobs' callers have been answered.
async fn submit(raft: &Raft, jobs: Vec<Job>, metrics: &Metrics, decoded: &DecodedCache) -> Option<Proposal> {
    let (reqs, dones): (Vec<AppendRequest>, Vec<_>) = jobs.into_iter().map(|j| (j.req, j.done)).unzip();
    let samples: usize = reqs.iter().map(AppendRequest::num_samples).sum();
    let fail = |dones: Vec<oneshot::Sender<Result<AppendResult, CommitError>>>, e: CommitError| {
        for d in dones {
            let _ = d.send(Err(e.clone()));
        }
    };
    #[cfg(feature = "sim-bugs")]
    let counts: Vec<u64> = reqs.iter().map(|r| r.num_samples() as u64).collect();
    let cmd = match Command::write(&reqs) {
        Ok(c) => c,
        Err(e) => {
            fail(dones, CommitError::Unavailable(e.to_string()));
            return None;
        }
    };
    metrics.batch_samples.observe(samples as f64);
    let key = match &cmd {
        Command::Write { payload } => decoded.insert(payload, Arc::new(reqs)),
        _ => 0,
    };
    let (responder, rx) = ProgressResponder::complete_only();
    #[cfg(feature = "sim-bugs")]
    let dones = if crate::sim_bugs::enabled(crate::sim_bugs::Bug::AckBeforeCommit) {
        for (d, n) in dones.into_iter().zip(counts) {
            let _ = d.send(Ok(AppendResult {
                appended: n,
                ..Default::default()
            }));
        }
        Vec::new()
    } else {
        dones
    };
    let started = Instant::now();
    if let Err(e) = raft.write(cmd).responder(responder).await {
        decoded.forget(key);
        fail(dones, CommitError::Unavailable(e.to_string()));
        return None;
    }
    Some(Proposal {
        rx,
        dones,
        key,
        started,
    })
}

impl Proposal {
    /// Waits (bounded) for the entry's apply and answers every job in it.
    async fn finish(self, timeout: Duration, metrics: &Metrics, decoded: &DecodedCache) {
        let res = tokio::time::timeout(timeout, self.rx).await;
        let err = match res {
            Ok(Ok(Ok(resp))) => {
                metrics.commit_latency.observe_duration(self.started.elapsed());
                let mut results = resp.data.results.into_iter();
                for d in self.dones {
                    let r = results
                        .next()
                        .ok_or_else(|| CommitError::Unavailable("apply returned fewer results than requests".into()));
                    let _ = d.send(r);
                }
                return;
            }
            Ok(Ok(Err(e))) => CommitError::Unavailable(e.to_string()),
            Ok(Err(_)) => CommitError::Unavailable("raft dropped the write (shutting down)".into()),
            Err(_) => CommitError::Unavailable(format!("commit did not finish within {} ms", timeout.as_millis())),
        };
        decoded.forget(self.key);
        for d in self.dones {
            let _ = d.send(Err(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::Labels;

    fn req(series: usize, samples: usize) -> AppendRequest {
        AppendRequest {
            series: (0..series)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", format!("m{i}"))]),
                    samples: (0..samples as i64).map(|t| (t, t as f64)).collect(),
                })
                .collect(),
            metadata: vec![],
        }
    }

    #[test]
    fn split_respects_bounds_and_keeps_order() {
        let parts = split_request(req(5, 3), 2, 100);
        assert_eq!(parts.iter().map(|p| p.series.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let parts = split_request(req(1, 10), 10, 4);
        assert_eq!(parts.iter().map(|p| p.num_samples()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let ts: Vec<i64> = parts
            .iter()
            .flat_map(|p| p.series[0].samples.iter().map(|s| s.0))
            .collect();
        assert_eq!(ts, (0..10).collect::<Vec<_>>());
        assert_eq!(split_request(AppendRequest::default(), 1, 1).len(), 1);
    }

    #[test]
    fn take_batch_coalesces_within_bounds() {
        let mut q: VecDeque<(usize, usize)> = [(1, 10), (1, 10), (1, 100), (1, 1)].into_iter().collect();
        let b = take_batch(&mut q, |x| *x, 10, 50);
        assert_eq!(b.len(), 2);
        let b = take_batch(&mut q, |x| *x, 10, 50);
        assert_eq!(b, vec![(1, 100)], "an oversized job still goes alone");
        assert_eq!(q.len(), 1);
    }
}
