//! The HTTP server: an accept loop this module owns, under hyper-util's
//! HTTP/1 + HTTP/2 connection builder.
//!
//! - At most `web.connections_max` connections are served at once. One
//!   past it is answered at once with a 503 naming the limit (plain HTTP)
//!   or closed without a handshake (TLS), and counted.
//! - A TLS handshake runs in the connection's own task with a deadline
//!   (`web.tls_handshake_timeout`), so a slow handshake never holds up
//!   accept. Each handshake uses the TLS settings current when the
//!   connection arrived, so rotated certificates apply to new connections.
//! - HTTP/1 headers must arrive within `web.header_read_timeout` (hyper
//!   closes the connection past it); a request body must arrive within
//!   `web.body_read_timeout` from the request's start (the body then fails
//!   and the handler answers 400).
//! - Shutdown: stop accepting, let requests in flight finish (at most
//!   [`SHUTDOWN_REQUESTS_WAIT_MS`]).
//!
//! It serves whatever router it is given and knows nothing of the API.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use super::state::WebState;

/// How long a refused connection is given to take its 503, ms: it is
/// written without waiting for the request, so only a full socket buffer
/// could delay it.
pub const REFUSAL_WRITE_TIMEOUT_MS: u64 = 1_000;

/// How long accept pauses after an error such as "too many open files",
/// ms: retrying at once would spin a core while the condition lasts.
pub const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// How long shutdown waits for requests in flight, ms: a write waits for
/// its commit up to `write.commit_timeout_ms` (10 s by default); a client
/// trickling a body is not waited for past this.
pub const SHUTDOWN_REQUESTS_WAIT_MS: u64 = 10_000;

/// The limits of [`serve`] (the `web` section of the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `web.connections_max`.
    pub connections_max: usize,
    /// `web.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `web.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `web.tls_handshake_timeout`.
    pub tls_handshake_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the connections' requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    web: Arc<WebState>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let settings = web.current();
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            web.connections_refused.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(stream, settings.tls.is_none(), limits.connections_max));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let web = web.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            web.connections_open.fetch_add(1, Ordering::Relaxed);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Some(limits.header_read_timeout));
            builder.http2().timer(TokioTimer::new());
            let builder = if settings.http2 { builder } else { builder.http1_only() };
            let body_timeout = limits.body_read_timeout;
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let req = req.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_timeout)));
                app.clone().oneshot(req)
            });
            match &settings.tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
                            if let Err(e) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => {
                            web.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            web.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, timeout_ms = limits.tls_handshake_timeout.as_millis() as u64, "TLS handshake timed out");
                        }
                    }
                }
            }
            web.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let wait = Duration::from_millis(SHUTDOWN_REQUESTS_WAIT_MS);
    if tokio::time::timeout(wait, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            wait_ms = SHUTDOWN_REQUESTS_WAIT_MS,
            "requests still in flight at shutdown are dropped"
        );
    }
}

/// Answers a connection past the cap: a 503 on plain HTTP (the client
/// sees why), a bare close on TLS (a handshake would cost what the cap
/// saves).
async fn refuse(mut stream: TcpStream, plain: bool, connections_max: usize) {
    if plain {
        let body = format!("too many open connections: web.connections_max is {connections_max}\n");
        let msg = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_millis(REFUSAL_WRITE_TIMEOUT_MS), async {
            let _ = stream.write_all(msg.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body did not arrive in time.
    #[error("request body not received within web.body_read_timeout ({0} ms)")]
    Timeout(u64),
    /// The connection failed.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// The [`BodyError::Timeout`] somewhere in `e`'s chain of causes, so a
/// handler that reads the body itself can answer 400 for it instead of
/// whatever it answers for other body errors.
pub fn body_timeout(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b @ BodyError::Timeout(_)) = err.downcast_ref::<BodyError>() {
            return Some(b.to_string());
        }
        cur = err.source();
    }
    None
}

/// A request body that fails once `web.body_read_timeout` has passed since
/// the request arrived, so a client trickling its body is cut off.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit_ms: u64,
}

impl DeadlineBody {
    /// Wraps `inner` with a deadline `limit` from now.
    pub fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit_ms: limit.as_millis() as u64,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(f) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(BodyError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyError::Timeout(self.limit_ms))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
