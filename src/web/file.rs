//! Prometheus's web configuration file (the exporter-toolkit format that
//! `prometheus --web.config.file` reads), plus promraft's `promraft_roles`.
//!
//! Parsing is strict as in Prometheus: an unknown key is an error. Every
//! key Prometheus 2.x accepts is either honoured or refused with a message
//! that names it and says why, so a file that works for a Prometheus server
//! works here unchanged unless it asks for something rustls cannot do
//! (TLS 1.0/1.1 as the *only* versions, CBC cipher suites, P-521).
//!
//! This file reads the files the configuration names (certificates, keys,
//! CAs) and never touches a socket. Nothing here panics on file content.

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

/// Builds the rustls server configuration from `tls_server_config`.
fn tls(t: &RawTls, dir: &Path, s: &mut WebSettings) -> Result<(), String> {
    let mut files = Vec::new();
    let cert = pem("cert", &t.cert_file, &t.cert, dir, &mut files)?;
    let key = pem("key", &t.key_file, &t.key, dir, &mut files)?;
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
    if min < 12 {
        s.notes.push(format!(
            "tls_server_config.min_version {} served as TLS12: TLS 1.0 and 1.1 are not implemented",
            t.min_version
        ));
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }

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
    if !t.client_allowed_sans.is_empty() {
        return Err(
            "tls_server_config.client_allowed_sans is not supported by promraft; restrict clients by their CA (client_ca_file) instead"
                .into(),
        );
    }
    let client_ca = pem("client_ca", &t.client_ca_file, &t.client_ca, dir, &mut files)?;
    let auth_type = if t.client_auth_type.is_empty() {
        "NoClientCert"
    } else {
        t.client_auth_type.as_str()
    };
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
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
    let builder = match (auth_type, &client_ca) {
        ("NoClientCert", None) => builder.with_no_client_auth(),
        ("NoClientCert", Some(_)) => {
            return Err(
                "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert (set RequireAndVerifyClientCert or VerifyClientCertIfGiven)"
                    .into(),
            )
        }
        ("RequestClientCert" | "RequireAnyClientCert", _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth_type} (a client certificate that is not verified) is not supported: it authenticates nobody; use RequireAndVerifyClientCert with client_ca_file"
            ))
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return Err(format!("tls_server_config.client_auth_type {auth_type} needs client_ca_file"))
        }
        ("VerifyClientCertIfGiven", Some(ca)) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        ("RequireAndVerifyClientCert", Some(ca)) => {
            let v = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(v)
        }
        (other, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ))
        }
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
}
