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
use crate::raft::command::{self, DecodedCache, ENTRY_PAYLOAD_BYTES_MAX, ENTRY_REQUESTS_BYTES_MAX};
use crate::raft::{Command, Raft, TypeConfig};
use crate::tsdb::{AppendRequest, AppendResult, Labels, SeriesSamples};
use openraft::impls::ProgressResponder;

/// Why a write was not committed. Every variant but [`CommitError::TooLarge`]
/// is retryable by the sender.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// No leader, not the leader, no quorum, or commit timed out.
    #[error("cannot commit: {0}")]
    Unavailable(String),
    /// The queue of pending writes is full.
    #[error("too many writes pending ({0} requests queued); retry later")]
    Overloaded(usize),
    /// Part of the request cannot fit in any log entry; nothing of the
    /// request was committed. Not retryable.
    #[error("cannot commit: {0}")]
    TooLarge(#[from] EntryTooLarge),
}

struct Job {
    req: AppendRequest,
    /// [`command::request_bytes_bound`] of `req`.
    bytes: usize,
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

/// Why one series cannot fit in a log entry even with a single sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its labels take {labels_bytes} bytes; with one sample it needs {needed} bytes of a log entry, \
     more than the limit of {limit} bytes (log entries are at most {ENTRY_PAYLOAD_BYTES_MAX} bytes)"
)]
pub struct SeriesTooLarge {
    /// Encoded size of the labels.
    pub labels_bytes: usize,
    /// Entry bytes the series needs with one sample, framing included.
    pub needed: usize,
    /// The budget of one entry's requests.
    pub limit: usize,
}

/// Why a request cannot be put into log entries at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryTooLarge {
    /// A series whose labels alone (nearly) fill an entry.
    #[error("series {series}: {reason}")]
    Series {
        /// The series' metric name and label count.
        series: String,
        /// Sizes and limit.
        reason: SeriesTooLarge,
    },
    /// A metadata entry (help text, unit) larger than an entry.
    #[error(
        "metadata of {family:?} needs {needed} bytes of a log entry, more than the limit of {limit} bytes \
         (log entries are at most {ENTRY_PAYLOAD_BYTES_MAX} bytes)"
    )]
    Metadata {
        /// The metric family name, cut to 128 bytes.
        family: String,
        /// Entry bytes the metadata needs, framing included.
        needed: usize,
        /// The budget of one entry's requests.
        limit: usize,
    },
}

/// Checks that a series with `labels` fits in an entry of `bytes_max`
/// request bytes with at least one sample.
pub fn check_series_fits(labels: &Labels, bytes_max: usize) -> Result<(), SeriesTooLarge> {
    let labels_bytes = command::labels_bytes(labels);
    let needed = command::REQUEST_FRAMING_BYTES_MAX + command::series_bytes_bound(labels_bytes, 1);
    if needed > bytes_max {
        return Err(SeriesTooLarge {
            labels_bytes,
            needed,
            limit: bytes_max,
        });
    }
    Ok(())
}

/// The start of `s`, at most `max` bytes, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Refuses a request of which some series or metadata entry fits in no
/// entry of `bytes_max` request bytes.
fn check_fits(req: &AppendRequest, bytes_max: usize) -> Result<(), EntryTooLarge> {
    for m in &req.metadata {
        let needed = command::REQUEST_FRAMING_BYTES_MAX + command::metadata_bytes(m);
        if needed > bytes_max {
            return Err(EntryTooLarge::Metadata {
                family: prefix(&m.metric_family_name, 128).to_string(),
                needed,
                limit: bytes_max,
            });
        }
    }
    for s in &req.series {
        check_series_fits(&s.labels, bytes_max).map_err(|reason| EntryTooLarge::Series {
            series: format!("{}{{{} labels}}", prefix(s.labels.metric_name(), 128), s.labels.len()),
            reason,
        })?;
    }
    Ok(())
}

/// Most samples of a series whose labels take `labels_bytes` that fit in
/// `budget` bytes (by [`command::series_bytes_bound`]).
fn samples_fitting(budget: usize, labels_bytes: usize) -> usize {
    let Some(left) = budget.checked_sub(labels_bytes + 1) else {
        return 0;
    };
    let mut n = left / command::SAMPLE_BYTES_MAX;
    while n > 0 && command::series_bytes_bound(labels_bytes, n) > budget {
        n -= 1;
    }
    n
}

/// One part of a request being built, with its running sizes.
struct Part {
    req: AppendRequest,
    samples: usize,
    bytes: usize,
}

impl Part {
    fn new() -> Part {
        Part {
            req: AppendRequest::default(),
            samples: 0,
            bytes: command::REQUEST_FRAMING_BYTES_MAX,
        }
    }

    fn is_empty(&self) -> bool {
        self.req.series.is_empty() && self.req.metadata.is_empty()
    }
}

/// Splits a request into parts of at most `series_max` series, about
/// `samples_max` samples and at most `bytes_max` bytes by
/// [`command::request_bytes_bound`] (a series too long for one part is cut
/// into several, in order). Metadata comes first, split the same way.
///
/// A request with a series or metadata entry that fits in no part is
/// refused whole, before anything of it is queued.
pub fn split_request(
    req: AppendRequest,
    series_max: usize,
    samples_max: usize,
    bytes_max: usize,
) -> Result<Vec<AppendRequest>, EntryTooLarge> {
    check_fits(&req, bytes_max)?;
    let mut parts = Vec::new();
    let mut cur = Part::new();
    for m in req.metadata {
        let b = command::metadata_bytes(&m);
        if cur.bytes + b > bytes_max {
            parts.push(std::mem::replace(&mut cur, Part::new()).req);
        }
        cur.bytes += b;
        cur.req.metadata.push(m);
    }
    for s in req.series {
        let mut samples = s.samples;
        let labels = s.labels;
        let labels_bytes = command::labels_bytes(&labels);
        loop {
            let by_bytes = samples_fitting(bytes_max.saturating_sub(cur.bytes), labels_bytes);
            let room = samples_max.saturating_sub(cur.samples).min(by_bytes);
            let full = cur.req.series.len() >= series_max
                || (cur.samples >= samples_max && !cur.req.series.is_empty())
                || (room == 0 && !samples.is_empty())
                || by_bytes == 0;
            if full && !cur.is_empty() {
                parts.push(std::mem::replace(&mut cur, Part::new()).req);
                continue;
            }
            // A fresh part always has room for one sample (`check_fits`).
            let room = room.max(1);
            if samples.len() <= room {
                cur.samples += samples.len();
                cur.bytes += command::series_bytes_bound(labels_bytes, samples.len());
                cur.req.series.push(SeriesSamples { labels, samples });
                break;
            }
            let rest = samples.split_off(room);
            cur.samples += samples.len();
            cur.bytes += command::series_bytes_bound(labels_bytes, samples.len());
            cur.req.series.push(SeriesSamples {
                labels: labels.clone(),
                samples,
            });
            samples = rest;
        }
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(cur.req);
    }
    Ok(parts)
}

/// The size of a queued request: series, samples and
/// [`command::request_bytes_bound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSize {
    /// Series.
    pub series: usize,
    /// Samples.
    pub samples: usize,
    /// Upper bound of its encoded bytes.
    pub bytes: usize,
}

/// Takes requests off the front of `queue` while they fit in one entry:
/// at least one, then more while the sums stay within the bounds.
pub fn take_batch<T>(
    queue: &mut VecDeque<T>,
    size: impl Fn(&T) -> JobSize,
    series_max: usize,
    samples_max: usize,
    bytes_max: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    let (mut series, mut samples, mut bytes) = (0, 0, 0);
    while let Some(front) = queue.front() {
        let sz = size(front);
        if !out.is_empty()
            && (series + sz.series > series_max || samples + sz.samples > samples_max || bytes + sz.bytes > bytes_max)
        {
            break;
        }
        series += sz.series;
        samples += sz.samples;
        bytes += sz.bytes;
        let Some(j) = queue.pop_front() else { break };
        out.push(j);
    }
    out
}

fn job_size(j: &Job) -> JobSize {
    JobSize {
        series: j.req.series.len(),
        samples: j.req.num_samples(),
        bytes: j.bytes,
    }
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
        let parts = split_request(req, self.series_max, self.samples_max, ENTRY_REQUESTS_BYTES_MAX)?;
        let mut waits = Vec::with_capacity(parts.len());
        for part in parts {
            let (done, rx) = oneshot::channel();
            let bytes = command::request_bytes_bound(&part);
            self.tx.try_send(Job { req: part, bytes, done }).map_err(|e| match e {
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
        let jobs = take_batch(
            &mut queue,
            job_size,
            cfg.entry_series_max,
            cfg.entry_samples_max,
            ENTRY_REQUESTS_BYTES_MAX,
        );
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
            // The bounds above keep every entry within the limit; an
            // encoding failure here is a bug, answered, never written.
            tracing::error!(error = %e, "write entry not encoded");
            fail(dones, CommitError::Unavailable(e.to_string()));
            return None;
        }
    };
    metrics.batch_samples.observe(samples as f64);
    let key = match &cmd {
        Command::Write { payload } => {
            metrics
                .entry_payload_bytes_max
                .fetch_max(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            decoded.insert(payload, Arc::new(reqs))
        }
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
    use crate::tsdb::Metadata;

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
        let parts = split_request(req(5, 3), 2, 100, ENTRY_REQUESTS_BYTES_MAX).unwrap();
        assert_eq!(parts.iter().map(|p| p.series.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let parts = split_request(req(1, 10), 10, 4, ENTRY_REQUESTS_BYTES_MAX).unwrap();
        assert_eq!(parts.iter().map(|p| p.num_samples()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let ts: Vec<i64> = parts
            .iter()
            .flat_map(|p| p.series[0].samples.iter().map(|s| s.0))
            .collect();
        assert_eq!(ts, (0..10).collect::<Vec<_>>());
        assert_eq!(
            split_request(AppendRequest::default(), 1, 1, ENTRY_REQUESTS_BYTES_MAX)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn take_batch_coalesces_within_bounds() {
        let mut q: VecDeque<(usize, usize)> = [(1, 10), (1, 10), (1, 100), (1, 1)].into_iter().collect();
        let size = |x: &(usize, usize)| JobSize {
            series: x.0,
            samples: x.1,
            bytes: 0,
        };
        let b = take_batch(&mut q, size, 10, 50, 1);
        assert_eq!(b.len(), 2);
        let b = take_batch(&mut q, size, 10, 50, 1);
        assert_eq!(b, vec![(1, 100)], "an oversized job still goes alone");
        assert_eq!(q.len(), 1);
    }

    /// A series whose labels take `label_bytes` bytes (one big label).
    fn big_series(i: usize, label_bytes: usize, samples: usize) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([("__name__", format!("m{i}")), ("big", "x".repeat(label_bytes))]),
            samples: (0..samples as i64)
                .map(|t| (1_700_000_000_000 + t * 15_000, t as f64 * 0.5))
                .collect(),
        }
    }

    fn payload_len(parts: &[AppendRequest]) -> usize {
        match Command::write(parts) {
            Ok(Command::Write { payload }) => payload.len(),
            other => panic!("not a write payload: {other:?}"),
        }
    }

    #[test]
    fn split_bounds_parts_by_bytes() {
        // 40 series of 4 KiB of labels: 160 KiB in all, more than one entry.
        let r = AppendRequest {
            series: (0..40).map(|i| big_series(i, 4_000, 3)).collect(),
            metadata: vec![],
        };
        let total = command::request_bytes_bound(&r);
        assert!(total > ENTRY_REQUESTS_BYTES_MAX, "{total}");
        let want_samples = r.num_samples();
        let parts = split_request(r.clone(), 1_000, 1_000_000, ENTRY_REQUESTS_BYTES_MAX).unwrap();
        assert!(parts.len() >= 2, "{} parts", parts.len());
        for p in &parts {
            assert!(command::request_bytes_bound(p) <= ENTRY_REQUESTS_BYTES_MAX);
            assert!(payload_len(std::slice::from_ref(p)) <= ENTRY_PAYLOAD_BYTES_MAX);
        }
        let flat: Vec<SeriesSamples> = parts.into_iter().flat_map(|p| p.series).collect();
        assert_eq!(flat.iter().map(|s| s.samples.len()).sum::<usize>(), want_samples);
        assert_eq!(flat, r.series, "same series and samples, same order");
    }

    #[test]
    fn split_cuts_a_long_series_by_bytes() {
        // One series of 20 000 samples (340 KiB of samples) in a 10 KiB budget.
        let r = AppendRequest {
            series: vec![big_series(0, 1_000, 20_000)],
            metadata: vec![],
        };
        let parts = split_request(r.clone(), 1_000, 1_000_000, 10_000).unwrap();
        assert!(parts.len() > 30, "{} parts", parts.len());
        for p in &parts {
            let b = command::request_bytes_bound(p);
            assert!(b <= 10_000, "{b}");
            // Full parts: the budget is used, not wasted.
            assert!(p.series.len() == 1);
        }
        let ts: Vec<i64> = parts
            .iter()
            .flat_map(|p| p.series[0].samples.iter().map(|s| s.0))
            .collect();
        assert_eq!(ts, r.series[0].samples.iter().map(|s| s.0).collect::<Vec<_>>());
        assert!(command::request_bytes_bound(&parts[0]) > 10_000 - 2 * command::SAMPLE_BYTES_MAX);
    }

    #[test]
    fn split_refuses_a_series_that_fits_no_entry_and_queues_nothing() {
        let ok = big_series(0, 10, 5);
        let huge = big_series(1, ENTRY_REQUESTS_BYTES_MAX, 1);
        let r = AppendRequest {
            series: vec![ok, huge],
            metadata: vec![],
        };
        let e = split_request(r, 1_000, 1_000_000, ENTRY_REQUESTS_BYTES_MAX).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, EntryTooLarge::Series { .. }), "{msg}");
        assert!(msg.contains("series m1{2 labels}"), "{msg}");
        assert!(
            msg.contains(&format!("more than the limit of {ENTRY_REQUESTS_BYTES_MAX} bytes")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("at most {ENTRY_PAYLOAD_BYTES_MAX} bytes")),
            "{msg}"
        );
        // Just fitting: labels plus one sample equal to the budget.
        let s = big_series(0, 1, 1);
        let needed =
            command::REQUEST_FRAMING_BYTES_MAX + command::series_bytes_bound(command::labels_bytes(&s.labels), 1);
        assert!(check_series_fits(&s.labels, needed).is_ok());
        assert!(check_series_fits(&s.labels, needed - 1).is_err());
    }

    #[test]
    fn split_bounds_metadata_by_bytes() {
        let meta = |i: usize, help: usize| Metadata {
            metric_family_name: format!("m{i}"),
            kind: "gauge".into(),
            help: "h".repeat(help),
            unit: String::new(),
        };
        let r = AppendRequest {
            series: vec![big_series(0, 10, 2)],
            metadata: (0..10).map(|i| meta(i, 3_000)).collect(),
        };
        let parts = split_request(r.clone(), 1_000, 1_000_000, 10_000).unwrap();
        assert!(parts.len() >= 3, "{} parts", parts.len());
        assert!(parts.iter().all(|p| command::request_bytes_bound(p) <= 10_000));
        let metas: Vec<Metadata> = parts.iter().flat_map(|p| p.metadata.clone()).collect();
        assert_eq!(metas, r.metadata);
        assert_eq!(parts.iter().map(AppendRequest::num_samples).sum::<usize>(), 2);
        let too_big = AppendRequest {
            series: vec![],
            metadata: vec![meta(0, 20_000)],
        };
        let e = split_request(too_big, 1_000, 1_000_000, 10_000).unwrap_err();
        assert!(matches!(e, EntryTooLarge::Metadata { .. }), "{e}");
    }

    #[test]
    fn take_batch_bounds_by_bytes() {
        let mut q: VecDeque<usize> = [40_000, 40_000, 40_000, 200_000].into_iter().collect();
        let size = |b: &usize| JobSize {
            series: 1,
            samples: 1,
            bytes: *b,
        };
        assert_eq!(take_batch(&mut q, size, 100, 100, ENTRY_REQUESTS_BYTES_MAX).len(), 2);
        assert_eq!(take_batch(&mut q, size, 100, 100, ENTRY_REQUESTS_BYTES_MAX).len(), 1);
        assert_eq!(
            take_batch(&mut q, size, 100, 100, ENTRY_REQUESTS_BYTES_MAX),
            vec![200_000]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_support::proptest_cases(64)))]

        /// Whatever the label and sample sizes, the parts of a request and
        /// any batch of them that take_batch forms encode (with the real
        /// encoder) within the entry limit, and keep every sample in order.
        #[test]
        fn split_and_batch_stay_under_the_entry_limit(
            shapes in proptest::collection::vec((0usize..20_000, 0usize..3_000), 1..40),
            series_max in 1usize..50,
            samples_max in 1usize..5_000,
        ) {
            let r = AppendRequest {
                series: shapes.iter().enumerate().map(|(i, (lb, n))| big_series(i, *lb, *n)).collect(),
                metadata: vec![],
            };
            let parts = split_request(r.clone(), series_max, samples_max, ENTRY_REQUESTS_BYTES_MAX).unwrap();
            let mut q: VecDeque<AppendRequest> = parts.clone().into_iter().collect();
            let size = |p: &AppendRequest| JobSize {
                series: p.series.len(),
                samples: p.num_samples(),
                bytes: command::request_bytes_bound(p),
            };
            while !q.is_empty() {
                let batch = take_batch(&mut q, size, series_max, samples_max, ENTRY_REQUESTS_BYTES_MAX);
                let len = payload_len(&batch);
                proptest::prop_assert!(len <= ENTRY_PAYLOAD_BYTES_MAX, "{} bytes", len);
            }
            let got: Vec<(i64, f64)> = parts.iter().flat_map(|p| p.series.iter().flat_map(|s| s.samples.clone())).collect();
            let want: Vec<(i64, f64)> = r.series.iter().flat_map(|s| s.samples.clone()).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
