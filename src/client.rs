//! How the command-line tools reach a node's HTTP API: the shared client
//! options (`--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`,
//! `--basic-auth-user`, the password from `PROMRAFT_BASIC_AUTH_PASSWORD` or
//! `--basic-auth-password-file`), the one place that turns them into an
//! HTTP client (async [`reqwest::Client`] for the commands, a blocking
//! rustls stream for `promraft healthcheck`), and the messages that turn a
//! failed connection or a 401 into its cause and its fix.
//!
//! A leaf: it knows no other promraft module, so every tool (`cli`,
//! `backup`, `bench`, the binary) can use it. It does not decide what a
//! command sends, and it never reads a password from the command line
//! (flags show up in `ps` and in shell history).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Environment variable holding the basic-auth password.
pub const PASSWORD_ENV: &str = "PROMRAFT_BASIC_AUTH_PASSWORD";

/// Largest password file read: a password, not a document; a bigger file is
/// the wrong file.
pub const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

/// Largest status line `healthcheck` reads before giving up on the answer.
pub const STATUS_LINE_BYTES_MAX: usize = 1024;

/// Options shared by every command that talks to a node. Flatten it into
/// the command's clap arguments.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// CA certificate(s) (PEM) that signed the node's certificate; only
    /// these are trusted. Given without a scheme, --addr then means https.
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that require one (mutual TLS);
    /// needs --tls-key-file.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Basic-auth user. The password comes from PROMRAFT_BASIC_AUTH_PASSWORD
    /// or --basic-auth-password-file, never from the command line.
    #[arg(long, value_name = "USER")]
    pub basic_auth_user: Option<String>,
    /// File holding the basic-auth password (one line; a trailing newline is
    /// ignored). Takes precedence over PROMRAFT_BASIC_AUTH_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "basic_auth_user")]
    pub basic_auth_password_file: Option<PathBuf>,
}

/// Why a client could not be built, or a request failed, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file could not be read or holds no usable PEM.
    #[error("{flag} {path}: {reason}")]
    TlsFile {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A user was given but no password.
    #[error("--basic-auth-user {user} needs a password: set {PASSWORD_ENV} or pass --basic-auth-password-file FILE")]
    NoPassword {
        /// The user.
        user: String,
    },
    /// The password file could not be read.
    #[error("--basic-auth-password-file {path}: {reason}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The address is not host:port or an http(s) URL.
    #[error("invalid --addr {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed, or the request did not get through.
    #[error("{0}")]
    Request(String),
    /// The node refused the credentials (401) or the role (403).
    #[error("{0}")]
    Refused(String),
}

impl ClientArgs {
    /// True when any TLS option is given: a bare host:port then means https.
    pub fn wants_tls(&self) -> bool {
        self.tls_ca_file.is_some() || self.tls_cert_file.is_some()
    }

    /// The base URL of `addr` without a trailing slash: `addr` itself when
    /// it has an http or https scheme, else https when a TLS option is
    /// given and http otherwise.
    pub fn base_url(&self, addr: &str) -> Result<String, ClientError> {
        let bad = |reason: &str| ClientError::Address {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let url = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else if addr.contains("://") {
            return Err(bad("only http:// and https:// URLs are supported"));
        } else {
            let scheme = if self.wants_tls() { "https" } else { "http" };
            format!("{scheme}://{}", addr.trim_end_matches('/'))
        };
        if url.starts_with("http://") && self.wants_tls() {
            return Err(bad(
                "an http:// URL with TLS options: use https:// (or drop the TLS options)",
            ));
        }
        Ok(url)
    }

    /// The basic-auth credentials, if a user is given: the password from
    /// --basic-auth-password-file, else from PROMRAFT_BASIC_AUTH_PASSWORD.
    pub fn credentials(&self) -> Result<Option<(String, String)>, ClientError> {
        self.credentials_with(|k| std::env::var(k).ok())
    }

    /// [`Self::credentials`] with the environment as a function (tests).
    pub fn credentials_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(String, String)>, ClientError> {
        let Some(user) = &self.basic_auth_user else {
            return Ok(None);
        };
        if let Some(path) = &self.basic_auth_password_file {
            return Ok(Some((user.clone(), read_password_file(path)?)));
        }
        match env(PASSWORD_ENV) {
            Some(p) => Ok(Some((user.clone(), p))),
            None => Err(ClientError::NoPassword { user: user.clone() }),
        }
    }

    /// The rustls configuration these options ask for (ring provider): the
    /// CA file's certificates as the only roots (else the system's), and
    /// the client certificate when one is given.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let provider = Arc::new(ring_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.tls_ca_file {
            Some(path) => {
                for c in read_certs("--tls-ca-file", path)? {
                    roots
                        .add(c)
                        .map_err(|e| tls_file("--tls-ca-file", path, &format!("not a usable CA certificate: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Request(format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("--tls-cert-file", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_file("--tls-key-file", key, &format!("no PEM private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| tls_file("--tls-key-file", key, &format!("does not match --tls-cert-file: {e}")))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// An async HTTP client for these options, with `configure` applied to
    /// the builder (timeouts). Every request it sends carries the
    /// basic-auth header when a user is given.
    pub fn http_client(
        &self,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, ClientError> {
        let mut b = reqwest::Client::builder();
        if self.wants_tls() {
            b = b.use_preconfigured_tls(self.tls_config()?);
        }
        if let Some((user, password)) = self.credentials()? {
            let mut value =
                reqwest::header::HeaderValue::from_str(&basic_auth_value(&user, &password)).map_err(|_| {
                    ClientError::Request("the basic-auth user or password holds a byte not allowed in a header".into())
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            b = b.default_headers(headers);
        }
        configure(b)
            .build()
            .map_err(|e| ClientError::Request(format!("HTTP client setup: {e}")))
    }
}

/// rustls's ring provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange (its replacement is aws-lc-rs, which this
/// project does not build); its algorithms are the ones rustls has always
/// defaulted to.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn tls_file(flag: &'static str, path: &Path, reason: &str) -> ClientError {
    ClientError::TlsFile {
        flag,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file(flag, path, &format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_file(flag, path, &format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_file(
            flag,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_password_file(path: &Path) -> Result<String, ClientError> {
    let err = |reason: String| ClientError::PasswordFile {
        path: path.display().to_string(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut s = String::new();
    f.take(PASSWORD_FILE_BYTES_MAX + 1)
        .read_to_string(&mut s)
        .map_err(|e| err(e.to_string()))?;
    if s.len() as u64 > PASSWORD_FILE_BYTES_MAX {
        return Err(err(format!(
            "longer than {PASSWORD_FILE_BYTES_MAX} bytes; is it the right file?"
        )));
    }
    let p = s
        .strip_suffix('\n')
        .map_or(s.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    if p.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(p.to_string())
}

/// The value of an `Authorization` header for basic auth (RFC 7617).
pub fn basic_auth_value(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The cause of a TLS failure and its fix, when `e` (or its source chain)
/// is one: an untrusted server certificate, a name mismatch, a refused
/// client certificate, or a plaintext server.
pub fn explain_tls(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t) = tls {
            return Some(describe_tls(t));
        }
        // Clients that wrap the rustls error in a type of their own (hyper's
        // connect error) still show its text.
        let text = err.to_string();
        if let Some(m) = describe_tls_text(&text) {
            return Some(m);
        }
        cur = err.source();
    }
    None
}

/// [`describe_tls`] for a rustls error known only by its text.
fn describe_tls_text(text: &str) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let known = [
        (
            "invalid peer certificate: UnknownIssuer",
            E::InvalidCertificate(C::UnknownIssuer),
        ),
        (
            "invalid peer certificate: BadSignature",
            E::InvalidCertificate(C::BadSignature),
        ),
        (
            "invalid peer certificate: NotValidForName",
            E::InvalidCertificate(C::NotValidForName),
        ),
        ("invalid peer certificate: Expired", E::InvalidCertificate(C::Expired)),
        (
            "received fatal alert: CertificateRequired",
            E::AlertReceived(A::CertificateRequired),
        ),
        (
            "received fatal alert: BadCertificate",
            E::AlertReceived(A::BadCertificate),
        ),
        ("received fatal alert: UnknownCA", E::AlertReceived(A::UnknownCA)),
        (
            "InvalidContentType",
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ),
        (
            "received corrupt message",
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ),
    ];
    known
        .into_iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, e)| describe_tls(&e))
}

fn describe_tls(t: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as E};
    match t {
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "TLS handshake failed: the server's certificate is not signed by --tls-ca-file (or by a system CA when none is given); pass the CA that signed the node's certificate".into()
        }
        E::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            "TLS handshake failed: the server's certificate does not name the host in --addr; connect with a name or address the certificate lists".into()
        }
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "TLS handshake failed: the server's certificate has expired".into()
        }
        E::InvalidCertificate(c) => format!("TLS handshake failed: the server's certificate is not accepted ({c:?})"),
        E::AlertReceived(a) => format!(
            "TLS handshake failed: the node refused the connection ({a:?}); if it requires a client certificate, pass --tls-cert-file and --tls-key-file signed by its client CA"
        ),
        E::InvalidMessage(_) => "TLS handshake failed: the node does not speak TLS on this port; use http:// (and no TLS options), or enable TLS on the node".into(),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// Describes a failed request to `url`: the TLS cause and fix when there
/// is one, else the error with its sources.
pub fn explain_request(url: &str, e: &reqwest::Error) -> ClientError {
    if let Some(m) = explain_tls(e) {
        return ClientError::Request(format!("{url}: {m}"));
    }
    let mut msg = format!("{url}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    if url.starts_with("http://") && msg.contains("connection closed before message completed") {
        msg.push_str(" (if the node serves TLS, use https:// or --tls-ca-file)");
    }
    ClientError::Request(msg)
}

/// The fix for a 401 or 403 answer from `url`, `None` for other statuses.
/// `body` is the answer's text (a 403 names the role needed).
pub fn explain_status(url: &str, status: u16, body: &str) -> Option<ClientError> {
    match status {
        401 => Some(ClientError::Refused(format!(
            "{url}: 401 wrong credentials: check --basic-auth-user and {PASSWORD_ENV} (or --basic-auth-password-file)"
        ))),
        403 => Some(ClientError::Refused(format!(
            "{url}: 403 forbidden: {}; use a user with that role",
            body.trim()
        ))),
        _ => None,
    }
}

/// Sends `req` and returns the answer when it is a success; otherwise an
/// error saying why: a transport or TLS failure, a 401 or 403 with its
/// fix, or the status and the node's message.
pub async fn send(url: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
    let resp = req.send().await.map_err(|e| explain_request(url, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(explain_status(url, status.as_u16(), &body)
        .unwrap_or_else(|| ClientError::Request(format!("{url} answered {status}: {}", error_message(&body)))))
}

/// The `error` field of a Prometheus API error answer, else the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// One blocking HTTP/1.0 GET of `path` on `addr` (host:port or an http(s)
/// URL), over rustls when the URL is https or a TLS option is given;
/// returns the status code. No async runtime: `promraft healthcheck` runs
/// this every few seconds.
pub fn blocking_get_status(args: &ClientArgs, addr: &str, path: &str, timeout: Duration) -> Result<u16, ClientError> {
    let base = args.base_url(addr)?;
    let (tls, hostport) = match base.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => (false, base.as_str()),
    };
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let req_err = |what: &str, e: &dyn std::fmt::Display| ClientError::Request(format!("{what} {hostport}: {e}"));
    let sock = hostport
        .to_socket_addrs()
        .map_err(|e| req_err("resolve", &e))?
        .next()
        .ok_or_else(|| ClientError::Request(format!("{hostport} resolves to no address")))?;
    let tcp = TcpStream::connect_timeout(&sock, timeout).map_err(|e| req_err("connect", &e))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| req_err("connect", &e))?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| req_err("connect", &e))?;
    let auth = match args.credentials()? {
        Some((u, p)) => format!("Authorization: {}\r\n", basic_auth_value(&u, &p)),
        None => String::new(),
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{auth}Connection: close\r\n\r\n");
    let head = if tls {
        let host = host_of(hostport);
        let name = ServerName::try_from(host.to_string()).map_err(|e| ClientError::Address {
            addr: addr.to_string(),
            reason: format!("{host:?} is not a host name or address: {e}"),
        })?;
        let conn = rustls::ClientConnection::new(Arc::new(args.tls_config()?), name)
            .map_err(|e| ClientError::Request(format!("TLS setup: {e}")))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        exchange(&mut s, &request).map_err(|e| io_explained(hostport, &e))?
    } else {
        let mut s = tcp;
        exchange(&mut s, &request).map_err(|e| io_explained(hostport, &e))?
    };
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Request(format!("{hostport}{path} answered {line:?}, not an HTTP status line")))
}

fn io_explained(hostport: &str, e: &std::io::Error) -> ClientError {
    match explain_tls(e) {
        Some(m) => ClientError::Request(format!("{hostport}: {m}")),
        None => ClientError::Request(format!("{hostport}: {e}")),
    }
}

/// The host of `host:port` (brackets of an IPv6 address removed).
fn host_of(hostport: &str) -> &str {
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Writes the request and reads until the status line is complete.
fn exchange(s: &mut (impl Read + Write), request: &str) -> std::io::Result<Vec<u8>> {
    s.write_all(request.as_bytes())?;
    s.flush()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < STATUS_LINE_BYTES_MAX {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ClientArgs {
        ClientArgs::default()
    }

    #[test]
    fn base_url_keeps_urls_and_picks_the_scheme() {
        assert_eq!(args().base_url("127.0.0.1:9090").unwrap(), "http://127.0.0.1:9090");
        assert_eq!(args().base_url("https://n:1/").unwrap(), "https://n:1");
        let tls = ClientArgs {
            tls_ca_file: Some("ca.pem".into()),
            ..args()
        };
        assert_eq!(tls.base_url("n:1").unwrap(), "https://n:1");
        assert!(
            tls.base_url("http://n:1").is_err(),
            "http with TLS options must be refused"
        );
        assert!(args().base_url("ftp://n:1").is_err());
    }

    #[test]
    fn base64_matches_rfc_7617() {
        assert_eq!(
            basic_auth_value("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn password_comes_from_the_file_or_the_environment() {
        let no_env = |_: &str| None;
        assert_eq!(args().credentials_with(no_env).unwrap(), None);
        let user = ClientArgs {
            basic_auth_user: Some("alice".into()),
            ..args()
        };
        let e = user.credentials_with(no_env).unwrap_err().to_string();
        assert!(
            e.contains(PASSWORD_ENV) && e.contains("--basic-auth-password-file"),
            "{e}"
        );
        let env = |k: &str| (k == PASSWORD_ENV).then(|| "s3cret".to_string());
        assert_eq!(
            user.credentials_with(env).unwrap(),
            Some(("alice".into(), "s3cret".into()))
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let with_file = ClientArgs {
            basic_auth_password_file: Some(f.clone()),
            ..user.clone()
        };
        assert_eq!(
            with_file.credentials_with(env).unwrap(),
            Some(("alice".into(), "from-file".into())),
            "the file wins over the environment"
        );
        std::fs::write(&f, "").unwrap();
        assert!(with_file
            .credentials_with(env)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let a = ClientArgs {
            tls_ca_file: Some(not_pem),
            ..args()
        };
        let e = a.tls_config().unwrap_err().to_string();
        assert!(
            e.starts_with("--tls-ca-file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let missing = ClientArgs {
            tls_ca_file: Some(dir.path().join("absent.pem")),
            ..args()
        };
        let e = missing.tls_config().unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn status_401_says_which_flags_to_check() {
        let e = explain_status("https://n:1/x", 401, "").unwrap().to_string();
        assert!(
            e.contains("wrong credentials: check --basic-auth-user and PROMRAFT_BASIC_AUTH_PASSWORD"),
            "{e}"
        );
        assert!(explain_status("u", 500, "").is_none());
    }

    /// A one-connection TLS server on a thread (rustls, blocking) that
    /// answers `200` to whatever it reads; returns its address.
    fn tls_server(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let chain = vec![cert.cert.der().clone()];
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let h = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 1024];
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        (addr, h)
    }

    #[test]
    fn blocking_get_speaks_tls_and_names_an_untrusted_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let good = ClientArgs {
            tls_ca_file: Some(ca),
            ..args()
        };
        let (addr, h) = tls_server(&cert);
        let status = blocking_get_status(&good, &addr, "/-/healthy", Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200);
        h.join().unwrap();

        // Trusting another CA: the handshake fails and says why.
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let other_ca = dir.path().join("other.pem");
        std::fs::write(&other_ca, other.cert.pem()).unwrap();
        let wrong = ClientArgs {
            tls_ca_file: Some(other_ca),
            ..args()
        };
        let (addr, h) = tls_server(&cert);
        let e = blocking_get_status(&wrong, &addr, "/-/healthy", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the server's certificate is not signed by --tls-ca-file"),
            "{e}"
        );
        h.join().unwrap();
    }
}
