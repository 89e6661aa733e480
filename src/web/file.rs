//! Prometheus's web configuration file (the exporter-toolkit format that
//! `prometheus --web.config.file` reads), plus promraft's `promraft_roles`.
//!
//! Parsing is strict as in Prometheus: an unknown key is an error. Every
//! key Prometheus 2.x accepts is either honoured or refused with a message
//! that names it and says why, so a file that works for a Prometheus server
//! works here unchanged unless it asks for something rustls cannot do
//! (TLS 1.0/1.1 as the *only* versions, CBC cipher suites, P-521,
//! email or URI entries in `client_allowed_sans`).
//!
//! This file reads the files the configuration names (certificates, keys,
//! CAs) and never touches a socket (its tests do, on 127.0.0.1). Nothing here panics on file content.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::auth::Role;

/// Largest web configuration file read, bytes: a file with thousands of
/// users is still a few hundred KiB; more is not a configuration.
pub const WEB_CONFIG_FILE_BYTES_MAX: u64 = 4 << 20;

/// Largest certificate, key or CA file read, bytes: a CA bundle of every
/// public root is about 250 KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 4 << 20;

/// Why a web configuration cannot be used. The text names the key or file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("web config {path}: {reason}")]
pub struct WebConfigError {
    /// The web configuration file.
    pub path: String,
    /// What is wrong, naming the key.
    pub reason: String,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    promraft_roles: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    /// Inline PEM certificate (newer exporter-toolkit versions).
    #[serde(default)]
    cert: String,
    /// Inline PEM key.
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_auth_type: String,
    #[serde(default)]
    client_ca_file: String,
    /// Inline PEM client CA.
    #[serde(default)]
    client_ca: String,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    #[serde(default)]
    min_version: String,
    #[serde(default)]
    max_version: String,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The settings a web configuration file describes, ready to serve with.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The TLS server configuration; `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// PEM CA bundle named by `client_ca_file` (or inline `client_ca`), if
    /// any: a default trust root for node-to-node calls.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Serve HTTP/2 (`http_server_config.http2`, default true).
    pub http2: bool,
    /// Headers added to every response.
    pub headers: Vec<(String, String)>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Roles of the users that have an entry.
    pub roles: BTreeMap<String, BTreeSet<Role>>,
    /// Notes for the log: settings that were adjusted (TLS 1.0 as a
    /// minimum served as TLS 1.2, ignored keys).
    pub notes: Vec<String>,
    /// Files the configuration names, so a change in any of them reloads.
    pub files: Vec<PathBuf>,
}

impl WebSettings {
    /// No file: plain HTTP, no authentication, HTTP/2 on.
    pub fn open() -> WebSettings {
        WebSettings {
            tls: None,
            client_ca_pem: None,
            http2: true,
            headers: Vec::new(),
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            notes: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// The response headers Prometheus lets a web configuration set, with the
/// values it allows (empty: any value). Exact spelling, as Prometheus
/// compares them.
pub const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads and checks a web configuration file. Relative file names in it
/// are resolved against the file's directory, as Prometheus does.
pub fn load(path: &Path) -> Result<WebSettings, WebConfigError> {
    let fail = |reason: String| WebConfigError {
        path: path.display().to_string(),
        reason,
    };
    let text = read_capped(path, WEB_CONFIG_FILE_BYTES_MAX).map_err(fail)?;
    let text = String::from_utf8(text).map_err(|_| fail("the file is not UTF-8".into()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(fail)
}

/// Parses the text of a web configuration file; `dir` resolves relative
/// file names.
pub fn parse(text: &str, dir: &Path) -> Result<WebSettings, String> {
    // An empty file is a valid configuration that changes nothing.
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut s = WebSettings::open();
    if let Some(h) = raw.http_server_config {
        s.http2 = h.http2.unwrap_or(true);
        for (name, value) in h.headers {
            let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "http_server_config.headers: header {name:?} cannot be configured (allowed: {})",
                    names.join(", ")
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config.headers: {name} must be one of {allowed:?}, not {value:?}"
                ));
            }
            if axum::http::HeaderValue::from_str(&value).is_err() {
                return Err(format!(
                    "http_server_config.headers: {name} value {value:?} is not a valid header value"
                ));
            }
            s.headers.push((name, value));
        }
    }
    for (user, hash) in &raw.basic_auth_users {
        if user.contains(':') {
            return Err(format!(
                "basic_auth_users: user name {user:?} contains ':' (basic auth cannot carry it)"
            ));
        }
        if !is_bcrypt_hash(hash) {
            return Err(format!(
                "basic_auth_users.{user}: not a bcrypt hash (expected $2a$, $2b$ or $2y$ and 60 characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            ));
        }
    }
    s.users = raw.basic_auth_users;
    for (user, names) in raw.promraft_roles {
        if !s.users.contains_key(&user) {
            return Err(format!(
                "promraft_roles.{user}: no such user in basic_auth_users (roles apply to authenticated users)"
            ));
        }
        let mut set = BTreeSet::new();
        for n in &names {
            let role: Role = n
                .parse()
                .map_err(|_| format!("promraft_roles.{user}: unknown role {n:?} (roles are read, write, admin)"))?;
            set.insert(role);
        }
        s.roles.insert(user, set);
    }
    if let Some(t) = raw.tls_server_config {
        tls(&t, dir, &mut s)?;
    }
    Ok(s)
}

fn is_bcrypt_hash(h: &str) -> bool {
    h.len() == 60 && (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
}

/// Reads at most `max` bytes of a file; more is an error naming the limit.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!("{} is larger than the limit of {max} bytes", path.display()));
    }
    Ok(buf)
}

/// A PEM source: a file (relative to the config's directory) or inline text.
fn pem(key: &str, file: &str, inline: &str, dir: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Vec<u8>>, String> {
    match (file.is_empty(), inline.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Err(format!(
            "tls_server_config: both {key}_file and {key} are set; give one"
        )),
        (false, true) => {
            let p = dir.join(file);
            files.push(p.clone());
            read_capped(&p, PEM_FILE_BYTES_MAX)
                .map(Some)
                .map_err(|e| format!("tls_server_config.{key}_file: {e}"))
        }
        (true, false) => Ok(Some(inline.as_bytes().to_vec())),
    }
}

/// The TLS versions by their Go names.
fn version(key: &str, v: &str) -> Result<u8, String> {
    match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        _ => Err(format!(
            "tls_server_config.{key}: unknown TLS version {v:?} (TLS10, TLS11, TLS12, TLS13)"
        )),
    }
}

/// Go's names of the TLS 1.2 and 1.3 AEAD suites rustls implements.
fn suite_by_go_name(name: &str) -> Option<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// The certificate chain and key of `tls_server_config`.
type CertAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn cert_and_key(t: &RawTls, dir: &Path, files: &mut Vec<PathBuf>) -> Result<CertAndKey, String> {
    let cert = pem("cert", &t.cert_file, &t.cert, dir, files)?;
    let key = pem("key", &t.key_file, &t.key, dir, files)?;
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err("tls_server_config: cert_file (or cert) and key_file (or key) are both required".into());
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: not a PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err("tls_server_config.cert_file: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("tls_server_config.key_file: no PEM private key: {e}"))?;
    Ok((chain, key))
}

/// The protocol versions of `min_version`/`max_version`, and a note when
/// a minimum below TLS 1.2 is raised to it.
fn versions(t: &RawTls) -> Result<(Vec<&'static rustls::SupportedProtocolVersion>, Option<String>), String> {
    let min = if t.min_version.is_empty() {
        12
    } else {
        version("min_version", &t.min_version)?
    };
    let max = if t.max_version.is_empty() {
        13
    } else {
        version("max_version", &t.max_version)?
    };
    if max < 12 {
        return Err(format!(
            "tls_server_config.max_version: {} is not served (promraft speaks TLS 1.2 and 1.3 only)",
            t.max_version
        ));
    }
    if min > max {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let note = (min < 12).then(|| {
        format!(
            "tls_server_config.min_version {} served as TLS12: TLS 1.0 and 1.1 are not implemented",
            t.min_version
        )
    });
    let mut v: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        v.push(&rustls::version::TLS13);
    }
    Ok((v, note))
}

/// The ring provider restricted to `cipher_suites` and `curve_preferences`.
fn provider(t: &RawTls) -> Result<CryptoProvider, String> {
    // ring is the one provider built in (aws-lc-rs needs a C toolchain of
    // its own); rustls deprecates it only for lacking post-quantum key
    // exchange.
    #[allow(deprecated)]
    let mut provider: CryptoProvider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        for name in &t.cipher_suites {
            let Some(suite) = suite_by_go_name(name) else {
                return Err(format!(
                    "tls_server_config.cipher_suites: {name:?} is unknown or not supported (promraft implements the ECDHE AES-GCM and ChaCha20-Poly1305 suites only)"
                ));
            };
            chosen.push(suite);
        }
        // As in Go, the list restricts TLS 1.2; TLS 1.3's suites stay
        // enabled unless the list names some of them.
        if !chosen.iter().any(|c| matches!(c, SupportedCipherSuite::Tls13(_))) {
            chosen.extend(
                provider
                    .cipher_suites
                    .iter()
                    .filter(|c| matches!(c, SupportedCipherSuite::Tls13(_)))
                    .copied(),
            );
        }
        provider.cipher_suites = chosen;
    }
    if !t.curve_preferences.is_empty() {
        use rustls::crypto::ring::kx_group;
        let mut groups = Vec::new();
        for c in &t.curve_preferences {
            groups.push(match c.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                _ => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: {c:?} is unknown or not supported (X25519, CurveP256, CurveP384)"
                    ))
                }
            });
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// Accepts any client certificate without checking who signed it: Go's
/// `RequestClientCert` (a certificate is asked for, none is required) and
/// `RequireAnyClientCert` (one is required), as Prometheus's
/// exporter-toolkit serves them.
///
/// These modes authenticate nobody by themselves: anyone can make a
/// self-signed certificate. The client still proves it holds the
/// certificate's key (the handshake signature is verified), but the
/// identity in the certificate is not checked against anything, so
/// `basic_auth_users` and `promraft_roles` are what admit a request.
#[derive(Debug)]
struct AnyClientCert {
    /// `RequireAnyClientCert`: a handshake without a certificate fails.
    mandatory: bool,
    /// The provider's signature algorithms, for the handshake signature.
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Not verified, but it must still be a certificate (Go parses it too).
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the CA check of the wrapped verifier
/// accepts a client's chain, its leaf certificate must carry one of the
/// listed DNS names or IP addresses as a Subject Alternative Name.
///
/// A listed DNS name is also accepted from a leaf with a wildcard SAN that
/// covers it (rustls-webpki's name matching), where Go compares the
/// strings exactly. A client without a certificate under
/// `VerifyClientCertIfGiven` is not checked (it has no SAN to check).
#[derive(Debug)]
struct AllowedSans {
    /// The CA check (rustls' `WebPkiClientVerifier`).
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The allowed names, parsed at load.
    allowed: Vec<rustls_pki_types::ServerName<'static>>,
}

impl rustls::server::danger::ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let leaf = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if self
            .allowed
            .iter()
            .any(|name| leaf.verify_is_valid_for_subject_name(name).is_ok())
        {
            return Ok(verified);
        }
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(SanRefused)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A verified client certificate carried none of `client_allowed_sans`.
#[derive(thiserror::Error)]
#[error("the client certificate carries none of tls_server_config.client_allowed_sans")]
struct SanRefused;

// rustls shows an `OtherError` with `Debug`: make that the message.
impl std::fmt::Debug for SanRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Parses `client_allowed_sans`: DNS names and IP addresses.
fn allowed_sans(list: &[String]) -> Result<Vec<rustls_pki_types::ServerName<'static>>, String> {
    list.iter()
        .map(|s| {
            if s.contains('*') || s.contains('@') || (s.contains(':') && s.parse::<std::net::IpAddr>().is_err()) {
                return Err(format!(
                    "tls_server_config.client_allowed_sans: {s:?} is not supported: promraft matches DNS names and IP addresses only (no wildcards, email addresses or URIs)"
                ));
            }
            rustls_pki_types::ServerName::try_from(s.clone()).map_err(|e| {
                format!("tls_server_config.client_allowed_sans: {s:?} is neither a DNS name nor an IP address: {e}")
            })
        })
        .collect()
}

/// The client certificate policy of `client_auth_type`, the client CA and
/// `client_allowed_sans`.
fn client_verifier(
    auth_type: &str,
    client_ca: Option<&[u8]>,
    sans: &[String],
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let roots = |pem: &[u8]| -> Result<Arc<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("tls_server_config.client_ca_file: not a PEM certificate: {e}"))?;
            store
                .add(c)
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
        }
        if store.is_empty() {
            return Err("tls_server_config.client_ca_file: no certificate in the file".into());
        }
        Ok(Arc::new(store))
    };
    let built = |b: rustls::server::ClientCertVerifierBuilder| -> Result<_, String> {
        let inner = b
            .build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
        if sans.is_empty() {
            return Ok(Some(inner));
        }
        let v: Arc<dyn rustls::server::danger::ClientCertVerifier> = Arc::new(AllowedSans {
            inner,
            allowed: allowed_sans(sans)?,
        });
        Ok(Some(v))
    };
    let unverified = matches!(auth_type, "NoClientCert" | "RequestClientCert" | "RequireAnyClientCert");
    if !sans.is_empty() && unverified {
        return Err(format!(
            "tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven (with client_ca_file), not {auth_type}: the SANs of a certificate nobody verified prove nothing"
        ));
    }
    let any = |mandatory: bool| -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    match (auth_type, client_ca) {
        ("NoClientCert", None) => Ok(None),
        ("NoClientCert", Some(_)) => Err(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert (set RequireAndVerifyClientCert or VerifyClientCertIfGiven)"
                .into(),
        ),
        // As in Go, a client CA with these modes verifies nothing.
        ("RequestClientCert", _) => Ok(Some(any(false))),
        ("RequireAnyClientCert", _) => Ok(Some(any(true))),
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            Err(format!("tls_server_config.client_auth_type {auth_type} needs client_ca_file"))
        }
        ("VerifyClientCertIfGiven", Some(ca)) => {
            built(WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone()).allow_unauthenticated())
        }
        ("RequireAndVerifyClientCert", Some(ca)) => {
            built(WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone()))
        }
        (other, _) => Err(format!(
            "tls_server_config.client_auth_type: unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        )),
    }
}

/// Builds the rustls server configuration from `tls_server_config`.
fn tls(t: &RawTls, dir: &Path, s: &mut WebSettings) -> Result<(), String> {
    let mut files = Vec::new();
    let (chain, key) = cert_and_key(t, dir, &mut files)?;
    let (versions, note) = versions(t)?;
    s.notes.extend(note);
    let provider = Arc::new(provider(t)?);
    let client_ca = pem("client_ca", &t.client_ca_file, &t.client_ca, dir, &mut files)?;
    let auth_type = if t.client_auth_type.is_empty() {
        "NoClientCert"
    } else {
        t.client_auth_type.as_str()
    };
    let verifier = client_verifier(auth_type, client_ca.as_deref(), &t.client_allowed_sans, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not make a usable pair: {e}"))?;
    cfg.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    cfg.alpn_protocols = if s.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    s.tls = Some(Arc::new(cfg));
    s.client_ca_pem = client_ca;
    s.files = files;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    fn err(text: &str) -> String {
        parse(text, Path::new(".")).unwrap_err()
    }

    #[test]
    fn an_empty_file_is_plain_http() {
        let s = parse("", Path::new(".")).unwrap();
        assert!(s.tls.is_none() && s.users.is_empty() && s.http2);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        assert!(err("bogus: 1\n").contains("bogus"));
        assert!(err("tls_server_config:\n  cert_fiel: x\n").contains("cert_fiel"));
    }

    #[test]
    fn headers_follow_prometheus_rules() {
        assert!(err("http_server_config:\n  headers:\n    Foo: bar\n").contains("\"Foo\" cannot be configured"));
        assert!(err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").contains("X-Frame-Options"));
        let s = parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=3\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(s.headers.len(), 2);
        assert!(!s.http2);
    }

    #[test]
    fn users_and_roles_are_checked() {
        let ok = format!("basic_auth_users:\n  alice: {HASH}\npromraft_roles:\n  alice: [read, admin]\n");
        let s = parse(&ok, Path::new(".")).unwrap();
        assert_eq!(s.roles["alice"], BTreeSet::from([Role::Read, Role::Admin]));
        assert!(err("basic_auth_users:\n  alice: plain\n").contains("not a bcrypt hash"));
        let bad_role = format!("basic_auth_users:\n  alice: {HASH}\npromraft_roles:\n  alice: [root]\n");
        assert!(err(&bad_role).contains("unknown role \"root\""));
        let no_user = format!("basic_auth_users:\n  alice: {HASH}\npromraft_roles:\n  bob: [read]\n");
        assert!(err(&no_user).contains("promraft_roles.bob"));
    }

    #[test]
    fn tls_errors_name_the_key() {
        assert!(err("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n").contains("cert_file"));
        assert!(err("tls_server_config: {}\n").contains("required"));
    }

    #[test]
    fn go_suite_names_map_to_rustls() {
        assert!(suite_by_go_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").is_some());
        assert!(suite_by_go_name("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256").is_some());
        assert!(suite_by_go_name("TLS_RSA_WITH_AES_128_CBC_SHA").is_none());
    }

    /// A CA that signs leaf certificates for the handshake tests.
    struct Ca(rcgen::CertifiedIssuer<'static, rcgen::KeyPair>);

    impl Ca {
        fn new(name: &str) -> Ca {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            Ca(rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap())
        }

        /// A client certificate with these SANs: (chain, key).
        fn client(&self, sans: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
            let mut p = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.0).unwrap();
            (
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
        }
    }

    /// A directory with `server.crt`/`server.key` (self-signed, for
    /// `localhost`) and `ca.crt`, and the server certificate for clients.
    fn server_files(ca: &Ca) -> (tempfile::TempDir, CertificateDer<'static>) {
        let dir = tempfile::tempdir().unwrap();
        let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("server.crt"), server.cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.0.pem()).unwrap();
        (dir, server.cert.der().clone())
    }

    #[allow(deprecated)] // see crate::client::ring_provider
    fn ring() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    /// A client that presents one certificate and key, matching or not.
    #[derive(Debug)]
    struct Presents(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for Presents {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    /// One real TLS handshake over loopback TCP between the server
    /// configuration of `yaml` and a client presenting `client_cert` (or
    /// none); returns the server's verdict (the client finishes first in
    /// TLS 1.3, so only the server side tells).
    fn handshake(
        yaml: &str,
        dir: &Path,
        server_cert: &CertificateDer<'static>,
        client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<(), String> {
        use std::net::{TcpListener, TcpStream};
        let deadline = Some(std::time::Duration::from_secs(10));
        let server_cfg = parse(yaml, dir)?.tls.expect("a TLS configuration");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || -> Result<(), String> {
            let (mut tcp, _) = listener.accept().map_err(|e| e.to_string())?;
            tcp.set_read_timeout(deadline).unwrap();
            let mut conn = rustls::ServerConnection::new(server_cfg).map_err(|e| e.to_string())?;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let mut roots = RootCertStore::empty();
        roots.add(server_cert.clone()).unwrap();
        let provider = Arc::new(ring());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client_cfg = match client_cert {
            // Through a resolver: rustls would refuse a key that does not
            // match the certificate in `with_client_auth_cert`.
            Some((chain, key)) => {
                let key = provider.key_provider.load_private_key(key).unwrap();
                builder.with_client_cert_resolver(Arc::new(Presents(Arc::new(rustls::sign::CertifiedKey::new(
                    chain, key,
                )))))
            }
            None => builder.with_no_client_auth(),
        };
        let mut conn = rustls::ClientConnection::new(Arc::new(client_cfg), "localhost".try_into().unwrap()).unwrap();
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(deadline).unwrap();
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                break;
            }
        }
        // Flush the client's last flight, then close.
        let _ = conn.complete_io(&mut tcp);
        drop(tcp);
        server.join().unwrap()
    }

    const SERVER: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

    #[test]
    fn require_any_client_cert_needs_a_certificate_but_verifies_no_chain() {
        let ca = Ca::new("clients CA");
        let (dir, server_cert) = server_files(&ca);
        let yaml = format!("{SERVER}  client_auth_type: RequireAnyClientCert\n");
        let e = handshake(&yaml, dir.path(), &server_cert, None).unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        let own = rcgen::generate_simple_self_signed(vec!["anyone".into()]).unwrap();
        let own = (
            vec![own.cert.der().clone()],
            PrivateKeyDer::try_from(own.signing_key.serialize_der()).unwrap(),
        );
        handshake(&yaml, dir.path(), &server_cert, Some(own)).unwrap();
    }

    #[test]
    fn require_any_client_cert_checks_the_key_is_held() {
        // A client that presents someone else's certificate with its own key
        // fails the handshake signature check.
        let ca = Ca::new("clients CA");
        let (dir, server_cert) = server_files(&ca);
        let yaml = format!("{SERVER}  client_auth_type: RequireAnyClientCert\n");
        let (chain, _) = ca.client(&["alice"]);
        let (_, other_key) = ca.client(&["mallory"]);
        let e = handshake(&yaml, dir.path(), &server_cert, Some((chain, other_key))).unwrap_err();
        assert!(e.contains("BadSignature"), "{e}");
    }

    #[test]
    fn request_client_cert_accepts_with_and_without_a_certificate() {
        let ca = Ca::new("clients CA");
        let (dir, server_cert) = server_files(&ca);
        let yaml = format!("{SERVER}  client_auth_type: RequestClientCert\n");
        handshake(&yaml, dir.path(), &server_cert, None).unwrap();
        let own = rcgen::generate_simple_self_signed(vec!["anyone".into()]).unwrap();
        let own = (
            vec![own.cert.der().clone()],
            PrivateKeyDer::try_from(own.signing_key.serialize_der()).unwrap(),
        );
        handshake(&yaml, dir.path(), &server_cert, Some(own)).unwrap();
    }

    #[test]
    fn client_allowed_sans_admits_only_listed_names() {
        let ca = Ca::new("clients CA");
        let (dir, server_cert) = server_files(&ca);
        let yaml = format!(
            "{SERVER}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [alice.example, 10.0.0.7]\n"
        );
        handshake(&yaml, dir.path(), &server_cert, Some(ca.client(&["alice.example"]))).unwrap();
        handshake(&yaml, dir.path(), &server_cert, Some(ca.client(&["10.0.0.7"]))).unwrap();
        let e = handshake(&yaml, dir.path(), &server_cert, Some(ca.client(&["bob.example"]))).unwrap_err();
        assert!(e.contains("client_allowed_sans"), "{e}");
        // Another CA's certificate with an allowed SAN is still refused.
        let e = handshake(
            &yaml,
            dir.path(),
            &server_cert,
            Some(Ca::new("other CA").client(&["alice.example"])),
        )
        .unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        // VerifyClientCertIfGiven: no certificate, nothing to check.
        let if_given = yaml.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven");
        handshake(&if_given, dir.path(), &server_cert, None).unwrap();
        let e = handshake(&if_given, dir.path(), &server_cert, Some(ca.client(&["bob.example"]))).unwrap_err();
        assert!(e.contains("client_allowed_sans"), "{e}");
    }

    #[test]
    fn client_allowed_sans_is_refused_where_nothing_is_verified() {
        let ca = Ca::new("clients CA");
        let (dir, _) = server_files(&ca);
        for mode in ["NoClientCert", "RequestClientCert", "RequireAnyClientCert"] {
            let yaml = format!("{SERVER}  client_auth_type: {mode}\n  client_allowed_sans: [alice.example]\n");
            let e = parse(&yaml, dir.path()).unwrap_err();
            assert!(e.contains("client_allowed_sans needs client_auth_type"), "{e}");
        }
        let bad = |san: &str| {
            let yaml = format!(
                "{SERVER}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [{san:?}]\n"
            );
            parse(&yaml, dir.path()).unwrap_err()
        };
        assert!(bad("*.example").contains("no wildcards"));
        assert!(bad("ops@example.org").contains("email"));
        assert!(bad("spiffe://example.org/x").contains("URIs"));
        assert!(bad("not a name").contains("neither a DNS name nor an IP address"));
    }
}
