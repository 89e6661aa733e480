//! The notifier: sends alerts to every configured Alertmanager through its
//! v2 API (`POST /api/v2/alerts`), as Prometheus's notifier does.
//!
//! It owns a bounded queue (the oldest alerts are dropped and counted
//! when it overflows), batching, the HTTP sends with timeout and retries
//! with backoff, external labels and alert relabelling, and its metrics.
//! It knows nothing of rules or Raft: the rule evaluator hands it alerts,
//! and only the leader's evaluator does.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Alerts held waiting for a send, as Prometheus's default
/// (`--alertmanager.notification-queue-capacity`): enough for a storm of
/// many thousand alerts, bounded so an unreachable Alertmanager cannot
/// grow memory without end.
pub const QUEUE_CAPACITY_DEFAULT: usize = 10_000;

/// Alerts per request, as Prometheus (`maxBatchSize`): Alertmanager
/// takes them in one request cheaply, and a request stays small.
pub const BATCH_ALERTS_MAX: usize = 64;

/// How long one request to one Alertmanager may take (Prometheus's
/// default `timeout` of an `alertmanagers` entry).
pub const SEND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Attempts per batch and Alertmanager: a restarting Alertmanager gets a
/// few chances before the batch is given up (firing alerts are sent again
/// every `resend_delay` anyway).
pub const SEND_ATTEMPTS_MAX: u32 = 3;

/// Pause before the second attempt; doubled before each later one.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(250);

/// Label names and values of an alert.
pub type LabelMap = BTreeMap<String, String>;

/// Rewrites an alert's labels (`alert_relabel_configs`); `None` drops it.
pub type Relabel = Arc<dyn Fn(LabelMap) -> Option<LabelMap> + Send + Sync>;

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmAlert {
    /// Labels (identify the alert).
    pub labels: LabelMap,
    /// Annotations.
    pub annotations: LabelMap,
    /// When it started firing, RFC 3339.
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it ends (resolved) or expires unless resent, RFC 3339.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// Link back to the expression.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Milliseconds since the epoch as Go's RFC 3339 (`...T12:00:00.123Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Per-Alertmanager counters.
#[derive(Debug, Default)]
struct AmCounters {
    sent: AtomicU64,
    errors: AtomicU64,
}

/// What the notifier does with alerts besides sending them.
#[derive(Clone, Default)]
pub struct NotifierOptions {
    /// Queue bound (alerts); 0 means [`QUEUE_CAPACITY_DEFAULT`].
    pub queue_capacity: usize,
    /// Added to every alert's labels where it has none of that name.
    pub external_labels: LabelMap,
    /// `alert_relabel_configs`, applied after the external labels.
    pub relabel: Option<Relabel>,
    /// Per-request timeout; zero means [`SEND_TIMEOUT_DEFAULT`].
    pub timeout: Duration,
}

/// The notifier of one node.
pub struct Notifier {
    queue: parking_lot::Mutex<VecDeque<AmAlert>>,
    wake: tokio::sync::Notify,
    opts: parking_lot::RwLock<NotifierOptions>,
    /// Alertmanager URLs (`.../api/v2/alerts`) with their counters.
    ams: parking_lot::RwLock<Vec<(String, Arc<AmCounters>)>>,
    dropped: AtomicU64,
}

impl Notifier {
    /// A notifier with no Alertmanagers yet.
    pub fn new(opts: NotifierOptions) -> Arc<Notifier> {
        Arc::new(Notifier {
            queue: parking_lot::Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            opts: parking_lot::RwLock::new(opts),
            ams: parking_lot::RwLock::new(Vec::new()),
            dropped: AtomicU64::new(0),
        })
    }

    /// Replaces the options (a configuration reload).
    pub fn set_options(&self, opts: NotifierOptions) {
        *self.opts.write() = opts;
    }

    /// Replaces the Alertmanagers; each URL is the full endpoint
    /// (`http://host:9093/api/v2/alerts`). Counters of kept ones survive.
    pub fn set_alertmanagers(&self, urls: &[String]) {
        let mut ams = self.ams.write();
        let old = std::mem::take(&mut *ams);
        for u in urls {
            let c = old
                .iter()
                .find(|(o, _)| o == u)
                .map_or_else(Arc::default, |(_, c)| c.clone());
            ams.push((u.clone(), c));
        }
    }

    /// The Alertmanagers alerts go to.
    pub fn alertmanagers(&self) -> Vec<String> {
        self.ams.read().iter().map(|(u, _)| u.clone()).collect()
    }

    fn capacity(&self) -> usize {
        match self.opts.read().queue_capacity {
            0 => QUEUE_CAPACITY_DEFAULT,
            n => n,
        }
    }

    /// Queues alerts for sending: external labels added, relabelled
    /// (dropped ones vanish), the oldest queued dropped past the capacity.
    pub fn send(&self, alerts: Vec<AmAlert>) {
        let opts = self.opts.read().clone();
        let mut ready = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            for (k, v) in &opts.external_labels {
                a.labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if let Some(r) = &opts.relabel {
                match r(std::mem::take(&mut a.labels)) {
                    Some(l) if !l.is_empty() => a.labels = l,
                    _ => continue,
                }
            }
            ready.push(a);
        }
        if ready.is_empty() {
            return;
        }
        let cap = self.capacity();
        let mut q = self.queue.lock();
        q.extend(ready);
        let over = q.len().saturating_sub(cap);
        if over > 0 {
            q.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Takes the next batch (at most [`BATCH_ALERTS_MAX`]) off the queue.
    pub fn next_batch(&self) -> Vec<AmAlert> {
        let mut q = self.queue.lock();
        let n = q.len().min(BATCH_ALERTS_MAX);
        q.drain(..n).collect()
    }

    /// Alerts waiting.
    pub fn queue_length(&self) -> usize {
        self.queue.lock().len()
    }

    /// Sends queued alerts until the notifier is dropped elsewhere (runs
    /// as a task; it holds a weak handle so a stopped node frees it).
    pub async fn run(this: std::sync::Weak<Notifier>, client: reqwest::Client) {
        loop {
            let Some(n) = this.upgrade() else { return };
            let batch = n.next_batch();
            if batch.is_empty() {
                // Waking at least once a second lets the task notice that
                // its node is gone.
                let _ = tokio::time::timeout(Duration::from_secs(1), n.wake.notified()).await;
                continue;
            }
            n.send_all(&client, &batch).await;
        }
    }

    /// Sends one batch to every Alertmanager at once; counts a batch no
    /// Alertmanager took as dropped, as Prometheus does.
    async fn send_all(&self, client: &reqwest::Client, batch: &[AmAlert]) {
        let ams = self.ams.read().clone();
        let timeout = match self.opts.read().timeout {
            d if d.is_zero() => SEND_TIMEOUT_DEFAULT,
            d => d,
        };
        let Ok(body) = serde_json::to_vec(batch) else { return };
        let sends = ams.iter().map(|(url, c)| {
            let body = body.clone();
            async move {
                let ok = post_with_retries(client, url, body, timeout).await;
                match &ok {
                    Ok(()) => c.sent.fetch_add(batch.len() as u64, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(alertmanager = %url, error = %e, alerts = batch.len(), "error sending alerts");
                        c.errors.fetch_add(batch.len() as u64, Ordering::Relaxed)
                    }
                };
                ok.is_ok()
            }
        });
        let any = futures::future::join_all(sends).await.into_iter().any(|ok| ok);
        if !any {
            self.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }

    /// Writes the notifier's series in the exposition format.
    pub fn render_metrics(&self, out: &mut String) {
        let ams = self.ams.read().clone();
        for (name, help, pick) in [
            (
                "promraft_notifications_sent_total",
                "Alerts sent to each Alertmanager.",
                (|c: &AmCounters| c.sent.load(Ordering::Relaxed)) as fn(&AmCounters) -> u64,
            ),
            (
                "promraft_notifications_errors_total",
                "Alerts that failed to reach each Alertmanager after all retries.",
                |c: &AmCounters| c.errors.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (url, c) in &ams {
                let _ = writeln!(out, "{name}{{alertmanager=\"{}\"}} {}", escape(url), pick(c));
            }
        }
        let m = crate::metrics::counter;
        m(
            out,
            "promraft_notifications_dropped_total",
            "Alerts dropped: queue overflow, or no Alertmanager took them.",
            self.dropped.load(Ordering::Relaxed),
        );
        let g = crate::metrics::gauge;
        g(
            out,
            "promraft_notifications_queue_length",
            "Alerts waiting to be sent.",
            self.queue_length() as f64,
        );
        g(
            out,
            "promraft_notifications_queue_capacity",
            "Capacity of the alert queue.",
            self.capacity() as f64,
        );
        g(
            out,
            "promraft_notifications_alertmanagers_discovered",
            "Alertmanagers alerts are sent to.",
            ams.len() as f64,
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer (connection, timeout).
    #[error("{0}")]
    Transport(String),
    /// Alertmanager answered with an error status.
    #[error("bad response status {0}")]
    Status(u16),
}

async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), SendError> {
    let mut backoff = RETRY_BACKOFF_FIRST;
    let mut last = SendError::Transport("not sent".into());
    for attempt in 1..=SEND_ATTEMPTS_MAX {
        let res = client
            .post(url)
            .header("Content-Type", "application/json")
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => return Ok(()),
            // A 4xx is a bad request: sending it again changes nothing.
            Ok(r) if r.status().is_client_error() => return Err(SendError::Status(r.status().as_u16())),
            Ok(r) => last = SendError::Status(r.status().as_u16()),
            Err(e) => last = SendError::Transport(e.to_string()),
        }
        if attempt < SEND_ATTEMPTS_MAX {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> AmAlert {
        AmAlert {
            labels: LabelMap::from([("alertname".into(), format!("A{i}"))]),
            annotations: LabelMap::new(),
            starts_at: rfc3339_ms(0),
            ends_at: rfc3339_ms(1),
            generator_url: String::new(),
        }
    }

    #[test]
    fn the_queue_drops_the_oldest_past_its_capacity_and_batches_by_64() {
        let n = Notifier::new(NotifierOptions {
            queue_capacity: 100,
            ..Default::default()
        });
        n.send((0..150).map(alert).collect());
        assert_eq!(n.queue_length(), 100);
        assert_eq!(n.dropped.load(Ordering::Relaxed), 50);
        let first = n.next_batch();
        assert_eq!(first.len(), BATCH_ALERTS_MAX);
        assert_eq!(first[0].labels["alertname"], "A50", "the oldest were dropped");
        assert_eq!(n.next_batch().len(), 100 - BATCH_ALERTS_MAX);
        assert!(n.next_batch().is_empty());
    }

    #[test]
    fn external_labels_and_relabelling_apply_before_queueing() {
        let relabel: Relabel = Arc::new(|mut l: LabelMap| {
            if l.get("alertname").is_some_and(|a| a == "A1") {
                return None;
            }
            l.insert("relabelled".into(), "yes".into());
            Some(l)
        });
        let n = Notifier::new(NotifierOptions {
            external_labels: LabelMap::from([("cluster".into(), "eu".into()), ("alertname".into(), "x".into())]),
            relabel: Some(relabel),
            ..Default::default()
        });
        n.send(vec![alert(0), alert(1)]);
        let b = n.next_batch();
        assert_eq!(b.len(), 1, "A1 was dropped by relabelling");
        assert_eq!(b[0].labels["cluster"], "eu");
        assert_eq!(
            b[0].labels["alertname"], "A0",
            "an alert's own label wins over an external one"
        );
        assert_eq!(b[0].labels["relabelled"], "yes");
    }

    #[test]
    fn alerts_serialize_as_the_v2_api_takes_them() {
        let json = serde_json::to_value(vec![alert(0)]).expect("json");
        assert_eq!(json[0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(json[0]["endsAt"], "1970-01-01T00:00:00.001Z");
        assert!(json[0].get("generatorURL").is_some());
        assert_eq!(rfc3339_ms(1_700_000_000_500), "2023-11-14T22:13:20.500Z");
    }

    #[tokio::test]
    async fn every_alertmanager_gets_the_batch_and_failures_are_counted() {
        let (url_ok, hits) = sink(200).await;
        let (url_bad, bad_hits) = sink(500).await;
        let n = Notifier::new(NotifierOptions {
            timeout: Duration::from_secs(2),
            ..Default::default()
        });
        n.set_alertmanagers(&[url_ok, url_bad]);
        n.send(vec![alert(0)]);
        let batch = n.next_batch();
        n.send_all(&reqwest::Client::new(), &batch).await;
        assert_eq!(hits.load(Ordering::Relaxed), 1);
        assert_eq!(
            bad_hits.load(Ordering::Relaxed),
            u64::from(SEND_ATTEMPTS_MAX),
            "5xx is retried"
        );
        let mut m = String::new();
        n.render_metrics(&mut m);
        assert!(m.contains("promraft_notifications_errors_total{alertmanager=\""), "{m}");
        assert!(m.contains("promraft_notifications_alertmanagers_discovered 2"), "{m}");
        assert!(
            m.contains("promraft_notifications_dropped_total 0"),
            "one Alertmanager took it: {m}"
        );
    }

    /// A tiny HTTP server answering every request with `status`, counting them.
    async fn sink(status: u16) -> (String, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::post(move || {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}/api/v2/alerts"), hits)
    }
}
