//! Mutual TLS between replicas: the Raft gRPC port (openraft's RPCs,
//! forwarded writes, read-index calls and snapshot streams all travel on
//! it) speaks TLS 1.2/1.3 with ALPN `h2`, and both sides prove who they
//! are with a certificate signed by one CA.
//!
//! Owns loading the three PEM files (`raft.tls.cert_file`, `key_file`,
//! `ca_file`), watching them for changes, the [`TlsConnector`] (the
//! [`Connector`] every outgoing channel is made by) and [`serve_tls`] (the
//! listener loop that does each handshake in a task of its own, with a
//! deadline, so a slow or hostile client never holds up the accept loop or
//! the Raft runtime). It decides nothing about Raft; the simulator keeps
//! its own plaintext connector and listener.
//!
//! Who is checked, and against what:
//! - the server requires a client certificate that chains to `ca_file`
//!   (rustls' `WebPkiClientVerifier`); it does not check the client's name,
//!   since any replica may dial it (as etcd's `--peer-client-cert-auth`);
//! - the client verifies the server's chain against `ca_file` and checks
//!   that the certificate's subject alternative names cover the host of
//!   the address it dialled, the `host:port` of the membership (an IP
//!   address SAN for an IP, a DNS SAN for a name), as etcd does for peers.
//!
//! Reload: the files are polled every [`TLS_RELOAD_INTERVAL`]; when a
//! modification time or length changed, all three are read again and new
//! connections (both directions) use them; established connections keep
//! their session. A new set that does not load (unreadable, not PEM, key
//! not matching the certificate) leaves the old one in use and is logged
//! with the reason; it is tried again at the next change.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Uri};

use super::connector::{Connector, TcpConnector};
use super::proto::raft_server::RaftServer;
use super::server::{serve_with_incoming, RaftService};
use super::{Error, CONNECT_TIMEOUT};

/// How long a TLS handshake may take, either side. A handshake is two
/// round trips and a signature or two: milliseconds on a LAN, a few
/// hundred on a loaded two-core machine; five seconds cuts off a client
/// that opens a connection and says nothing, without failing a slow peer.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the certificate, key and CA files are checked for changes. A
/// `stat` of three files is free; a rotated certificate is in use for new
/// connections within this.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Handshakes the server runs at the same time. Replicas open a few
/// connections each; past this, new connections are closed at once rather
/// than queue CPU work (a handshake flood must not starve Raft).
pub const TLS_HANDSHAKES_IN_FLIGHT_MAX: usize = 64;

/// Completed handshakes waiting for the gRPC server to take them.
pub const TLS_ACCEPTED_QUEUE_MAX: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the
/// next one, so the loop does not spin.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// ALPN protocol both sides offer: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The three files of `raft.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), used as server and as client.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates (PEM) peers' certificates must chain to.
    pub ca_file: PathBuf,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("raft TLS {what} {path}: {reason}")]
    File {
        /// `cert_file`, `key_file` or `ca_file`.
        what: &'static str,
        /// The path as configured.
        path: String,
        /// Why.
        reason: String,
    },
    /// The files were read but do not make a TLS configuration (e.g. the
    /// key does not belong to the certificate).
    #[error("raft TLS configuration from {cert_file} and {key_file}: {reason}")]
    Config {
        /// The certificate file.
        cert_file: String,
        /// The key file.
        key_file: String,
        /// Why.
        reason: String,
    },
}

/// One loaded set of files.
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Modification time and length of each file when it was read.
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// The current TLS configuration of the Raft transport, shared by the
/// server and every client; clones share it.
#[derive(Clone)]
pub struct RaftTls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Arc<Material>>>,
}

fn file_err(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

fn stamp(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [&files.cert_file, &files.key_file, &files.ca_file]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    // Stamp first: a file replaced while it is being read is read again at
    // the next poll.
    let stamp = stamp(files);
    let certs = read_certs("cert_file", &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| file_err("key_file", &files.key_file, e))?;
    let ca = read_certs("ca_file", &files.ca_file)?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c)
            .map_err(|e| file_err("ca_file", &files.ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let config_err = |e: &dyn std::fmt::Display| TlsError::Config {
        cert_file: files.cert_file.display().to_string(),
        key_file: files.key_file.display().to_string(),
        reason: e.to_string(),
    };
    // ring, never aws-lc-rs (the project's rule). rustls 0.23.48 deprecates
    // ring's provider only to say it has no post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| file_err("ca_file", &files.ca_file, e))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| config_err(&e))?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| config_err(&e))?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Material {
        server: Arc::new(server),
        client: Arc::new(client),
        stamp,
    })
}

impl RaftTls {
    /// Reads and checks the three files; the error names the file and why.
    pub fn load(files: TlsFiles) -> Result<RaftTls, TlsError> {
        let m = load(&files)?;
        Ok(RaftTls {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(Arc::new(m))),
        })
    }

    /// The files this configuration comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server side, for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().server.clone()
    }

    /// The client side, for the next outgoing connection.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current.read().client.clone()
    }

    /// Loads the files again if any changed since they were last read.
    /// `Ok(true)`: the new set is in use; `Ok(false)`: nothing changed;
    /// `Err`: they changed but do not load, and the old set stays in use
    /// (and the same change is not retried until the files change again).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        if now == self.current.read().stamp {
            return Ok(false);
        }
        match load(&self.files) {
            Ok(m) => {
                *self.current.write() = Arc::new(m);
                Ok(true)
            }
            Err(e) => {
                // Remember the stamp of the bad set so it is reported once,
                // with the old configuration kept.
                let old = self.current.read().clone();
                *self.current.write() = Arc::new(Material {
                    server: old.server.clone(),
                    client: old.client.clone(),
                    stamp: now,
                });
                Err(e)
            }
        }
    }

    /// Polls the files every [`TLS_RELOAD_INTERVAL`] until the returned
    /// task is aborted, logging each reload and each refused change.
    pub fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TLS_RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = tls.clone();
                // File reads are blocking I/O: off the Raft runtime's threads.
                let r = tokio::task::spawn_blocking(move || t.reload_if_changed()).await;
                match r {
                    Ok(Ok(true)) => tracing::info!(
                        cert_file = %tls.files.cert_file.display(),
                        "raft TLS files changed: new connections use them"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "raft TLS files changed but do not load; the previous certificates stay in use"
                    ),
                    Err(e) => tracing::error!(error = %e, "raft TLS reload task failed"),
                }
            }
        })
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Dials peers over TCP and TLS, presenting this node's certificate and
/// checking the peer's against the CA and the dialled host.
#[derive(Clone)]
pub struct TlsConnector {
    tls: RaftTls,
}

impl TlsConnector {
    /// A connector that uses `tls`'s current files for each connection.
    pub fn new(tls: RaftTls) -> TlsConnector {
        TlsConnector { tls }
    }
}

/// A TLS connection to `addr` verified as `name`, within the deadlines.
async fn connect_tls(
    tls: RaftTls,
    addr: String,
    name: ServerName<'static>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr}: no answer within {CONNECT_TIMEOUT:?}"),
            )
        })??;
    tcp.set_nodelay(true)?;
    let c = tokio_rustls::TlsConnector::from(tls.client_config());
    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, c.connect(name, tcp))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake with {addr}: not done within {TLS_HANDSHAKE_TIMEOUT:?}"),
            )
        })?
}

impl Connector for TlsConnector {
    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        // The endpoint's URI stays http://: TLS is done by the connector
        // below, and tonic speaks HTTP/2 over whatever it returns.
        let endpoint = TcpConnector::endpoint(addr)?;
        let name = ServerName::try_from(host_of(addr).to_string()).map_err(|e| Error::Address {
            addr: addr.to_string(),
            reason: format!("host is not a valid TLS server name: {e}"),
        })?;
        let tls = self.tls.clone();
        let addr = addr.to_string();
        let connect = tower::service_fn(move |_uri: Uri| {
            let fut = connect_tls(tls.clone(), addr.clone(), name.clone());
            async move { Ok::<_, io::Error>(TokioIo::new(fut.await?)) }
        });
        Ok(endpoint.connect_with_connector_lazy(connect))
    }
}

/// An accepted connection after its handshake, as tonic's server takes it.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and runs each handshake in a task of its own
/// (at most [`TLS_HANDSHAKES_IN_FLIGHT_MAX`], each within
/// [`TLS_HANDSHAKE_TIMEOUT`]); connections that complete it go to `tx`.
/// A refused handshake (plaintext, no certificate, another CA) is logged
/// and closed. Returns when `tx`'s receiver is gone.
async fn accept_loop(listener: TcpListener, tls: RaftTls, tx: mpsc::Sender<io::Result<TlsConn>>) {
    let handshakes = Arc::new(Semaphore::new(TLS_HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "raft listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = TLS_HANDSHAKES_IN_FLIGHT_MAX, "raft TLS: too many handshakes in flight; connection closed");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "raft listener: TCP_NODELAY");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => {
                    let _ = tx.send(Ok(TlsConn(s))).await;
                }
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "raft TLS handshake refused"),
                Err(_) => tracing::warn!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "raft TLS handshake timed out"),
            }
        });
    }
}

/// Serves `svc` over mutual TLS on `listener` until `shutdown` completes,
/// reloading the files as they change (see the module doc).
pub async fn serve_tls(
    listener: TcpListener,
    svc: RaftServer<RaftService>,
    shutdown: BoxFuture<'static, ()>,
    tls: RaftTls,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel(TLS_ACCEPTED_QUEUE_MAX);
    let watcher = tls.spawn_watcher();
    let accept = tokio::spawn(accept_loop(listener, tls, tx));
    let incoming = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let r = serve_with_incoming(incoming, svc, shutdown).await;
    accept.abort();
    watcher.abort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:9190"), "127.0.0.1");
        assert_eq!(host_of("promraft-1:9190"), "promraft-1");
        assert_eq!(host_of("[::1]:9190"), "::1");
    }

    #[test]
    fn missing_and_garbage_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let files = TlsFiles {
            cert_file: junk.clone(),
            key_file: d.path().join("missing.key"),
            ca_file: junk.clone(),
        };
        let e = RaftTls::load(files).err().expect("garbage must not load").to_string();
        assert!(e.contains("cert_file") && e.contains("junk.pem"), "{e}");
    }

    /// A CA and a certificate of it for 127.0.0.1, as PEM (ca, cert, key).
    fn pems(name: &str) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    fn write(files: &TlsFiles, (ca, cert, key): &(String, String, String)) {
        std::fs::write(&files.ca_file, ca).unwrap();
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
    }

    #[test]
    fn reload_takes_a_good_change_and_keeps_the_old_set_on_a_bad_one() {
        let d = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert_file: d.path().join("node.crt"),
            key_file: d.path().join("node.key"),
            ca_file: d.path().join("ca.crt"),
        };
        write(&files, &pems("one"));
        let tls = RaftTls::load(files.clone()).unwrap();
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");
        let before = tls.server_config();

        // A certificate replaced by garbage: refused, the old set stays.
        std::fs::write(&files.cert_file, "garbage, and longer than before to change the length").unwrap();
        let e = tls.reload_if_changed().unwrap_err().to_string();
        assert!(e.contains("node.crt"), "{e}");
        assert!(
            Arc::ptr_eq(&before, &tls.server_config()),
            "a bad file replaced the configuration"
        );
        assert!(
            !tls.reload_if_changed().unwrap(),
            "the same bad change is reported once"
        );

        // A key that does not belong to the certificate: refused too.
        let two = pems("two");
        let three = pems("three");
        write(&files, &(two.0.clone(), two.1.clone(), three.2.clone()));
        assert!(tls.reload_if_changed().is_err(), "a mismatched key was taken");
        assert!(Arc::ptr_eq(&before, &tls.server_config()));

        // A good new set is taken.
        write(&files, &two);
        assert!(tls.reload_if_changed().unwrap(), "a good new set was not taken");
        assert!(!Arc::ptr_eq(&before, &tls.server_config()));
    }

    /// The client checks the server's SANs against the host it dialled: a
    /// certificate for 127.0.0.1 only is taken when dialled as 127.0.0.1
    /// and refused when the same server is dialled as `localhost`.
    #[tokio::test]
    async fn the_client_checks_the_dialled_host_against_the_sans() {
        let d = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert_file: d.path().join("node.crt"),
            key_file: d.path().join("node.key"),
            ca_file: d.path().join("ca.crt"),
        };
        write(&files, &pems("one"));
        let tls = RaftTls::load(files).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                if acceptor.accept(tcp).await.is_ok() {
                    accepted += 1;
                }
            }
            accepted
        });
        let by_ip = connect_tls(
            tls.clone(),
            addr.to_string(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .await;
        assert!(by_ip.is_ok(), "dialled as 127.0.0.1: {:?}", by_ip.err());
        let by_name = connect_tls(
            tls.clone(),
            addr.to_string(),
            ServerName::try_from("localhost").unwrap(),
        )
        .await;
        let Err(e) = by_name else {
            panic!("a certificate without a localhost SAN was taken for localhost");
        };
        assert!(e.to_string().contains("not valid for name"), "{e}");
        drop(by_ip);
        assert_eq!(server.await.unwrap(), 1);
    }
}
