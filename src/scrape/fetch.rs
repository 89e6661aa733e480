//! One HTTP(S) scrape: the client a job's `basic_auth`, `authorization`
//! and `tls_config` describe, the headers Prometheus sends, the body read
//! under `body_size_limit` (uncompressed bytes), gzip decoded.
//!
//! Owns the HTTP side only; it does not parse the body.

use std::io::Read;
use std::time::Duration;

use crate::promcfg::{HttpClientConfig, ScrapeConfig};

/// The `Accept` header Prometheus 2.42 sends: OpenMetrics first, then the
/// text format.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Largest body read when the job sets no `body_size_limit`: far above
/// any real exporter (node_exporter answers ~100 KiB), it only keeps a
/// broken target from exhausting memory.
pub const BODY_BYTES_DEFAULT_MAX: u64 = 256 << 20;

/// Builds the client of a job. Errors name the file that could not be read.
pub fn client(job: &ScrapeConfig) -> Result<reqwest::Client, String> {
    let h: &HttpClientConfig = &job.http;
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("promraft/", env!("CARGO_PKG_VERSION")))
        .redirect(if h.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        // Decoded here, so that body_size_limit counts uncompressed bytes.
        .no_gzip();
    if !h.enable_http2 {
        b = b.http1_only();
    }
    let t = &h.tls_config;
    if let Some(ca) = &t.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("tls_config.ca_file {ca}: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("tls_config.ca_file {ca}: {e}"))?;
        b = b.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
        let mut pem = std::fs::read(cert).map_err(|e| format!("tls_config.cert_file {cert}: {e}"))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("tls_config.key_file {key}: {e}"))?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("tls_config client certificate: {e}"))?;
        b = b.identity(id);
    }
    if t.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| format!("http client: {e}"))
}

/// The body and its `Content-Type`.
pub struct Fetched {
    /// Uncompressed body.
    pub body: Vec<u8>,
    /// The `Content-Type` header.
    pub content_type: String,
}

/// GETs `url` within `timeout`, reading at most `limit_bytes` (0: the
/// default cap).
pub async fn fetch(
    client: &reqwest::Client,
    job: &ScrapeConfig,
    url: &str,
    timeout: Duration,
    limit_bytes: u64,
) -> Result<Fetched, String> {
    let limit = if limit_bytes == 0 {
        BODY_BYTES_DEFAULT_MAX
    } else {
        limit_bytes
    };
    let mut req = client
        .get(url)
        .timeout(timeout)
        .header("Accept", ACCEPT)
        .header("Accept-Encoding", "gzip")
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout.as_secs_f64()),
        );
    req = authorize(req, &job.http)?;
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let gzip = header("content-encoding").eq_ignore_ascii_case("gzip");
    let mut raw = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        raw.extend_from_slice(&chunk);
        if raw.len() as u64 > limit && !gzip {
            return Err(format!("body size limit exceeded ({limit} bytes)"));
        }
        if raw.len() as u64 > limit.saturating_mul(GZIP_RATIO_MAX) {
            return Err(format!(
                "compressed body larger than the body size limit allows ({limit} bytes)"
            ));
        }
    }
    let body = if gzip { gunzip(&raw, limit)? } else { raw };
    Ok(Fetched { body, content_type })
}

/// Most a compressed body may be before decoding proves it too large:
/// compression never makes text larger, so the uncompressed limit bounds it.
const GZIP_RATIO_MAX: u64 = 1;

fn gunzip(raw: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("body size limit exceeded ({limit} bytes)"));
    }
    Ok(out)
}

fn authorize(req: reqwest::RequestBuilder, h: &HttpClientConfig) -> Result<reqwest::RequestBuilder, String> {
    let read = |f: &str| {
        std::fs::read_to_string(f)
            .map(|s| s.trim_end().to_string())
            .map_err(|e| format!("{f}: {e}"))
    };
    if let Some(b) = &h.basic_auth {
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => p.0.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => String::new(),
        };
        return Ok(req.basic_auth(&b.username, Some(password)));
    }
    if let Some(a) = &h.authorization {
        let cred = match (&a.credentials, &a.credentials_file) {
            (Some(c), _) => c.0.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => String::new(),
        };
        return Ok(req.header("Authorization", format!("{} {cred}", a.kind)));
    }
    Ok(req)
}
