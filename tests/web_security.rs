//! The HTTP edge of real nodes: the Prometheus web configuration file (TLS,
//! mutual TLS, basic auth), promraft's roles, the admin API switch, reload
//! without a restart, the abuse limits (slowloris, connection cap), relays
//! between TLS nodes, and real peers: Prometheus 2.42 remote-writing over
//! TLS with basic auth, promtool querying with `--http.config.file`.
//!
//! Certificates are made with rcgen in the test's directory. Tests that
//! need `prometheus` or `promtool` skip with a message when they are not
//! on PATH, unless `PROMRAFT_REQUIRE_PEERS=1`.

// A scenario reads best as one function.
#![allow(clippy::too_many_lines)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::Ca;
use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(30);
/// Longer than a reload poll (2 s) plus a bcrypt check, with room for a
/// loaded machine.
const RELOAD: Duration = Duration::from_secs(20);

fn bcrypt_hash(password: &str) -> String {
    // Cost 4 keeps the test fast; the node accepts any cost.
    bcrypt::hash(password, 4).expect("bcrypt")
}

// ---------------------------------------------------------------------------
// HTTPS client

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Client {
    /// Trusts `ca` (PEM file) and, with `identity`, presents that client
    /// certificate.
    fn new(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Client {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(20));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("read CA");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        if let Some((c, k)) = identity {
            let mut pem = std::fs::read(c).expect("read client cert");
            pem.extend(std::fs::read(k).expect("read client key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("client identity"));
        }
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http: b.build().expect("reqwest client"),
        }
    }

    fn try_send(
        &self,
        method: &str,
        url: &str,
        user: Option<(&str, &str)>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.http.request(m, url);
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        if let Some((ct, b)) = body {
            r = r.header("Content-Type", ct).body(b);
        }
        self.rt.block_on(async {
            let resp = r.send().await.map_err(|e| format!("{method} {url}: {e:?}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.text().await.map_err(|e| format!("{method} {url} body: {e}"))?;
            Ok(Answer { status, headers, body })
        })
    }

    fn send(&self, method: &str, url: &str, user: Option<(&str, &str)>, body: Option<(&str, Vec<u8>)>) -> Answer {
        self.try_send(method, url, user, body).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn write_body(name: &str) -> Vec<u8> {
    encode_write(&write_request(vec![series(
        &[("__name__", name), ("job", "web_security")],
        &[(now_ms(), 1.0)],
    )]))
}

const WRITE_CT: &str = "application/x-protobuf";

/// Polls `url` until it answers 200 (or `timeout`).
fn wait_ok(client: &Client, url: &str, user: Option<(&str, &str)>, node: &TestNode) {
    wait_until(&format!("{url} answers 200"), READY, || {
        match client.try_send("GET", url, user, None) {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("HTTP {}: {}", a.status, a.body)),
            Err(e) => Err(format!("{e}\nlog:\n{}", node.log_tail(20))),
        }
    })
}

fn start_node(dir: &Path, id: u64, args: &[&str]) -> TestNode {
    TestNode::start_with(id, &dir.join(format!("node{id}")), free_addr(), free_addr(), args)
}

// ---------------------------------------------------------------------------
// Roles over TLS

#[test]
fn roles_over_tls_answer_401_403_and_pass_the_right_user() {
    let dir = TestDir::new();
    let ca = Ca::new("promraft test CA");
    ca.write_ca(&dir.path().join("ca.crt"));
    ca.issue(dir.path(), "server", false);
    let h = bcrypt_hash("s3cret");
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  alice: {h}\n  agent: {h}\n  ops: {h}\n  bob: {h}\n\
             promraft_roles:\n  alice: [read]\n  agent: [write]\n  ops: [read, write, admin]\n"
        ),
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let c = Client::new(Some(&dir.path().join("ca.crt")), None);
    let base = format!("https://{}", node.http_addr);
    // Health stays open, without credentials.
    wait_ok(&c, &format!("{base}/-/ready"), None, &node);

    let query = format!("{base}/api/v1/query?query=up");
    let write = format!("{base}/api/v1/write");
    let admin = format!("{base}/api/v1/admin/tsdb/snapshot");
    // 401 without and with wrong credentials, with the challenge.
    for user in [None, Some(("alice", "wrong")), Some(("mallory", "s3cret"))] {
        let a = c.send("GET", &query, user, None);
        assert_eq!(a.status, 401, "{user:?}: {}", a.body);
        assert_eq!(
            a.headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
            Some("Basic")
        );
        // The configured header is on every response, refusals included.
        assert_eq!(
            a.headers.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff")
        );
    }
    let a = c.send("POST", &write, None, Some((WRITE_CT, write_body("w_none"))));
    assert_eq!(a.status, 401);
    let a = c.send("POST", &admin, None, None);
    assert_eq!(a.status, 401);

    // read: alice yes; write and admin no, 403 naming the role.
    assert_eq!(c.send("GET", &query, Some(("alice", "s3cret")), None).status, 200);
    let a = c.send(
        "POST",
        &write,
        Some(("alice", "s3cret")),
        Some((WRITE_CT, write_body("w_alice"))),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["errorType"], "forbidden");
    assert!(a.json()["error"].as_str().unwrap().contains("\"write\""), "{}", a.body);
    let a = c.send("POST", &admin, Some(("alice", "s3cret")), None);
    assert_eq!(a.status, 403);
    assert!(a.json()["error"].as_str().unwrap().contains("\"admin\""), "{}", a.body);

    // write: agent yes, read no.
    let a = c.send(
        "POST",
        &write,
        Some(("agent", "s3cret")),
        Some((WRITE_CT, write_body("w_agent"))),
    );
    assert_eq!(a.status, 204, "{}", a.body);
    let a = c.send("GET", &query, Some(("agent", "s3cret")), None);
    assert_eq!(a.status, 403);
    assert!(a.json()["error"].as_str().unwrap().contains("\"read\""), "{}", a.body);
    // /metrics needs read (text answer off /api/).
    let a = c.send("GET", &format!("{base}/metrics"), Some(("agent", "s3cret")), None);
    assert_eq!(a.status, 403);
    assert!(a.body.contains("\"read\""), "{}", a.body);

    // A user without a roles entry reads and writes, but is no admin.
    assert_eq!(c.send("GET", &query, Some(("bob", "s3cret")), None).status, 200);
    let a = c.send(
        "POST",
        &write,
        Some(("bob", "s3cret")),
        Some((WRITE_CT, write_body("w_bob"))),
    );
    assert_eq!(a.status, 204, "{}", a.body);
    let a = c.send("POST", &admin, Some(("bob", "s3cret")), None);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("\"admin\""), "{}", a.body);

    // admin: ops yes.
    let a = c.send("POST", &admin, Some(("ops", "s3cret")), None);
    assert_eq!(a.status, 200, "{}", a.body);

    // The data written by agent and bob is there.
    let a = c.send(
        "GET",
        &format!("{base}/api/v1/query?query=count(%7Bjob%3D%22web_security%22%7D)"),
        Some(("alice", "s3cret")),
        None,
    );
    assert_eq!(a.json()["data"]["result"][0]["value"][1], "2", "{}", a.body);

    // Plain HTTP to the TLS port gets no API answer.
    let plain = node.try_request("GET", "/api/v1/query?query=up", &[], b"");
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
    // A client that does not trust the CA cannot connect.
    let untrusting = Client::new(None, None);
    assert!(untrusting
        .try_send("GET", &query, Some(("alice", "s3cret")), None)
        .is_err());
    node.stop(Duration::from_secs(40)).expect("node stops");
}

// ---------------------------------------------------------------------------
// The admin switch

#[test]
fn admin_api_is_off_by_default_with_prometheus_answer_and_on_with_the_flag() {
    let dir = TestDir::new();
    let http = free_addr();
    let data = dir.path().join("off");
    std::fs::create_dir_all(&data).unwrap();
    let mut off = Proc::spawn(
        "promraft without the admin API",
        Command::new(PROMRAFT_BIN).args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--http-addr",
            &http,
            "--raft-addr",
            &free_addr(),
        ]),
        &data.join("promraft.log"),
    );
    wait_until("the node without admin API is ready", READY, || {
        http_request(&http, "GET", "/-/ready", &[], b"")
            .map_err(|e| e.to_string())
            .and_then(|r| if r.status == 200 { Ok(()) } else { Err(r.text()) })
    });
    for (method, path) in [
        ("POST", "/api/v1/admin/tsdb/snapshot"),
        ("GET", "/api/v1/admin/backup"),
        ("POST", "/api/v1/admin/tsdb/delete_series?match[]=up"),
        ("POST", "/api/v1/admin/cluster/transfer-leader"),
    ] {
        let r = http_request(&http, method, path, &[("Content-Type", "application/json")], b"{}").unwrap();
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        assert_eq!(
            r.text(),
            r#"{"status":"error","errorType":"unavailable","error":"admin APIs disabled"}"#,
            "{path}"
        );
    }
    // Reads are unaffected.
    assert_eq!(
        http_request(&http, "GET", "/api/v1/query?query=1", &[], b"")
            .unwrap()
            .status,
        200
    );
    off.terminate(Duration::from_secs(40)).expect("node stops");

    // With --web.enable-admin-api (TestNode passes it).
    let mut on = start_node(dir.path(), 1, &[]);
    on.wait_ready(READY);
    let r = on.request("POST", "/api/v1/admin/tsdb/snapshot", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    on.stop(Duration::from_secs(40)).expect("node stops");
}

// ---------------------------------------------------------------------------
// Reload

#[test]
fn web_config_reloads_users_and_certificates_and_keeps_the_old_one_when_broken() {
    let dir = TestDir::new();
    let ca1 = Ca::new("first CA");
    let ca2 = Ca::new("second CA");
    ca1.write_ca(&dir.path().join("ca1.crt"));
    ca2.write_ca(&dir.path().join("ca2.crt"));
    ca1.issue(dir.path(), "server", false);
    let h = bcrypt_hash("pw");
    let web = dir.path().join("web.yaml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    std::fs::write(&web, format!("{tls}basic_auth_users:\n  alice: {h}\n")).unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let c1 = Client::new(Some(&dir.path().join("ca1.crt")), None);
    let c2 = Client::new(Some(&dir.path().join("ca2.crt")), None);
    let base = format!("https://{}", node.http_addr);
    let query = format!("{base}/api/v1/query?query=1");
    wait_ok(&c1, &query, Some(("alice", "pw")), &node);
    assert_eq!(c1.send("GET", &query, Some(("bob", "pw2")), None).status, 401);

    // A new user takes effect without a restart.
    let h2 = bcrypt_hash("pw2");
    std::fs::write(&web, format!("{tls}basic_auth_users:\n  alice: {h}\n  bob: {h2}\n")).unwrap();
    wait_ok(&c1, &query, Some(("bob", "pw2")), &node);

    // The server certificate is rotated (same file names, another CA):
    // new handshakes present it.
    ca2.issue(dir.path(), "server", false);
    wait_until("the rotated certificate is served", RELOAD, || {
        match c2.try_send("GET", &query, Some(("bob", "pw2")), None) {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("HTTP {}", a.status)),
            Err(e) => Err(e),
        }
    });
    let fresh = Client::new(Some(&dir.path().join("ca1.crt")), None);
    assert!(
        fresh.try_send("GET", &query, Some(("bob", "pw2")), None).is_err(),
        "the old certificate is still served"
    );

    // A broken file: the old configuration stays, the failure is reported.
    std::fs::write(&web, format!("{tls}basic_auth_users:\n  carol: not-a-hash\n")).unwrap();
    let metrics = format!("{base}/metrics");
    wait_until("the failed reload is reported", RELOAD, || {
        let a = c2.try_send("GET", &metrics, Some(("alice", "pw")), None)?;
        match metric_sum(&a.body, "promraft_web_config_last_reload_successful") {
            Some(0.0) => Ok(()),
            v => Err(format!("promraft_web_config_last_reload_successful = {v:?}")),
        }
    });
    assert_eq!(
        c2.send("GET", &query, Some(("bob", "pw2")), None).status,
        200,
        "old users still in force"
    );
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(
        log.contains("web config reload failed") && log.contains("not a bcrypt hash"),
        "the log says why: {}",
        node.log_tail(20)
    );
    // Fixed again: success is reported.
    std::fs::write(&web, format!("{tls}basic_auth_users:\n  alice: {h}\n")).unwrap();
    wait_until("the good reload is reported", RELOAD, || {
        let a = c2.try_send("GET", &metrics, Some(("alice", "pw")), None)?;
        match metric_sum(&a.body, "promraft_web_config_last_reload_successful") {
            Some(1.0) => Ok(()),
            v => Err(format!("promraft_web_config_last_reload_successful = {v:?}")),
        }
    });
    assert_eq!(
        c2.send("GET", &query, Some(("bob", "pw2")), None).status,
        401,
        "bob is gone"
    );
    node.stop(Duration::from_secs(40)).expect("node stops");
}

// ---------------------------------------------------------------------------
// Mutual TLS

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = TestDir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let other = Ca::new("some other CA");
    ca.write_ca(&dir.path().join("ca.crt"));
    clients.write_ca(&dir.path().join("clients.crt"));
    ca.issue(dir.path(), "server", false);
    let (cc, ck) = clients.issue(dir.path(), "client", true);
    let (oc, ok) = other.issue(dir.path(), "stranger", true);
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let with = Client::new(Some(&dir.path().join("ca.crt")), Some((&cc, &ck)));
    let url = format!("https://{}/api/v1/query?query=1", node.http_addr);
    wait_ok(&with, &url, None, &node);
    let without = Client::new(Some(&dir.path().join("ca.crt")), None);
    let e = without.try_send("GET", &url, None, None);
    assert!(
        e.is_err(),
        "a client without a certificate got {:?}",
        e.map(|a| a.status)
    );
    let stranger = Client::new(Some(&dir.path().join("ca.crt")), Some((&oc, &ok)));
    let e = stranger.try_send("GET", &url, None, None);
    assert!(
        e.is_err(),
        "a client with another CA's certificate got {:?}",
        e.map(|a| a.status)
    );
    assert_eq!(with.send("GET", &url, None, None).status, 200);
    node.stop(Duration::from_secs(40)).expect("node stops");
}

/// `RequireAnyClientCert` (as in Prometheus): a certificate is required but
/// nobody checks who signed it, so a stranger's certificate gets in.
#[test]
fn require_any_client_cert_admits_any_certificate_but_not_none() {
    let dir = TestDir::new();
    let ca = Ca::new("server CA");
    let other = Ca::new("some other CA");
    ca.write_ca(&dir.path().join("ca.crt"));
    ca.issue(dir.path(), "server", false);
    let (oc, ok) = other.issue(dir.path(), "stranger", true);
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n",
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let stranger = Client::new(Some(&dir.path().join("ca.crt")), Some((&oc, &ok)));
    let url = format!("https://{}/api/v1/query?query=1", node.http_addr);
    wait_ok(&stranger, &url, None, &node);
    let without = Client::new(Some(&dir.path().join("ca.crt")), None);
    let e = without.try_send("GET", &url, None, None);
    assert!(
        e.is_err(),
        "a client without a certificate got {:?}",
        e.map(|a| a.status)
    );
    assert_eq!(stranger.send("GET", &url, None, None).status, 200);
    node.stop(Duration::from_secs(40)).expect("node stops");
}

/// `client_allowed_sans`: of two certificates signed by the trusted client
/// CA, only the one carrying a listed SAN gets in.
#[test]
fn client_allowed_sans_admits_only_a_listed_name() {
    let dir = TestDir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    ca.write_ca(&dir.path().join("ca.crt"));
    clients.write_ca(&dir.path().join("clients.crt"));
    ca.issue(dir.path(), "server", false);
    let (ac, ak) = clients.issue_for(dir.path(), "alice", true, &["alice.example"]);
    let (bc, bk) = clients.issue_for(dir.path(), "bob", true, &["bob.example"]);
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n  client_allowed_sans: [alice.example]\n",
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let alice = Client::new(Some(&dir.path().join("ca.crt")), Some((&ac, &ak)));
    let url = format!("https://{}/api/v1/query?query=1", node.http_addr);
    wait_ok(&alice, &url, None, &node);
    let bob = Client::new(Some(&dir.path().join("ca.crt")), Some((&bc, &bk)));
    let e = bob.try_send("GET", &url, None, None);
    assert!(
        e.is_err(),
        "a certificate without an allowed SAN got {:?}",
        e.map(|a| a.status)
    );
    assert_eq!(alice.send("GET", &url, None, None).status, 200);
    node.stop(Duration::from_secs(40)).expect("node stops");
}

// ---------------------------------------------------------------------------
// Abuse limits

/// Reads until the server closes the connection; returns what it sent, or
/// an error if it is still open at `deadline`.
fn read_until_closed(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("still open; got {:?}", String::from_utf8_lossy(&got)));
        }
        s.set_read_timeout(Some(left)).expect("set a read timeout");
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn slowloris_is_cut_off_and_the_connection_cap_answers_503() {
    let dir = TestDir::new();
    let cfg = dir.path().join("promraft.yaml");
    std::fs::write(
        &cfg,
        "web:\n  header_read_timeout: 2s\n  body_read_timeout: 2s\n  connections_max: 8\nquery:\n  expr_bytes_max: 100\n",
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--config", cfg.to_str().unwrap()]);
    node.wait_ready(READY);

    // A header trickle: one byte every 300 ms. Cut off by the 2 s header
    // timeout, long before the trickle would end (about 20 s).
    let mut slow = TcpStream::connect(&node.http_addr).unwrap();
    let started = Instant::now();
    let request = b"GET /api/v1/query?query=1 HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    let mut served_meanwhile = false;
    for b in request.iter() {
        if slow.write_all(&[*b]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        // Meanwhile the node serves others.
        if !served_meanwhile && started.elapsed() > Duration::from_millis(600) {
            assert_eq!(node.get("/api/v1/query", &[("query", "1")]).status, 200);
            served_meanwhile = true;
        }
        slow.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() > Duration::from_millis(1500) => {
                // Closed (0), reset, or just the 300 ms wait: tell them apart.
                if matches!(slow.read(&mut buf), Ok(0)) {
                    cut = Some(started.elapsed());
                    break;
                }
            }
            _ => {}
        }
    }
    let cut = cut.unwrap_or_else(|| panic!("the trickling client was not cut off ({:?})", started.elapsed()));
    assert!(cut < Duration::from_secs(15), "cut off only after {cut:?}");
    assert!(served_meanwhile, "another client was served while the trickle lasted");
    eprintln!("header trickle cut off after {cut:?} (web.header_read_timeout 2s)");

    // A body trickle: headers at once, then one byte a second; 400 after
    // the 2 s body timeout.
    let mut body = TcpStream::connect(&node.http_addr).unwrap();
    body.write_all(b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nab")
        .unwrap();
    let got = read_until_closed(&mut body, Instant::now() + Duration::from_secs(15)).expect("body trickle answered");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");

    // The query length limit.
    let long = "a".repeat(101);
    let r = node.get("/api/v1/query", &[("query", &long)]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("query.expr_bytes_max"), "{}", r.text());

    // The connection cap: 8 idle connections hold every slot; the 9th is
    // answered 503 naming the limit, at once.
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&node.http_addr).unwrap()).collect();
    let mut extra = TcpStream::connect(&node.http_addr).unwrap();
    let got = read_until_closed(&mut extra, Instant::now() + Duration::from_secs(5)).expect("refused at once");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("web.connections_max is 8"), "{text}");
    drop(idle);
    // Slots free again (the idle connections are closed by the client, or by
    // the header timeout): the node serves.
    wait_until("the node serves after the cap", READY, || {
        node.try_request("GET", "/api/v1/query?query=1", &[], b"")
            .map_err(|e| e.to_string())
            .and_then(|r| if r.status == 200 { Ok(()) } else { Err(r.text()) })
    });
    let m = node.get("/metrics", &[]).text();
    assert!(metric_sum(&m, "promraft_http_connections_refused_total").unwrap_or(0.0) >= 1.0);
    node.stop(Duration::from_secs(40)).expect("node stops");
}

// ---------------------------------------------------------------------------
// Relays between TLS nodes

#[test]
fn a_follower_relays_an_admin_call_to_the_leader_over_tls_with_the_callers_credentials() {
    let dir = TestDir::new();
    let ca = Ca::new("cluster HTTP CA");
    ca.write_ca(&dir.path().join("ca.crt"));
    ca.issue(dir.path(), "server", false);
    let h = bcrypt_hash("pw");
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  ops: {h}\n  bob: {h}\npromraft_roles:\n  ops: [read, admin]\n"
        ),
    )
    .unwrap();
    let cfg = dir.path().join("promraft.yaml");
    std::fs::write(
        &cfg,
        format!("web:\n  peer_ca_file: {}\n", dir.path().join("ca.crt").display()),
    )
    .unwrap();
    let addrs: Vec<(String, String)> = (0..3).map(|_| (free_addr(), free_addr())).collect();
    let initial: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, (_, r))| format!("{}={r}", i + 1))
        .collect();
    let initial = initial.join(",");
    let mut nodes: Vec<TestNode> = addrs
        .iter()
        .enumerate()
        .map(|(i, (h, r))| {
            TestNode::start_with(
                i as u64 + 1,
                &dir.path().join(format!("node{}", i + 1)),
                h.clone(),
                r.clone(),
                &[
                    "--web.config.file",
                    web.to_str().unwrap(),
                    "--config",
                    cfg.to_str().unwrap(),
                    "--initial-cluster",
                    &initial,
                ],
            )
        })
        .collect();
    let c = Client::new(Some(&dir.path().join("ca.crt")), None);
    let ops = Some(("ops", "pw"));
    let status = |n: &TestNode| -> Result<Value, String> {
        let a = c.try_send(
            "GET",
            &format!("https://{}/api/v1/status/cluster", n.http_addr),
            ops,
            None,
        )?;
        if a.status != 200 {
            return Err(format!("HTTP {}: {}", a.status, a.body));
        }
        Ok(a.json()["data"].clone())
    };
    let leader = wait_until("a leader known to every node", Duration::from_secs(60), || {
        let mut seen = None;
        for n in &nodes {
            let l = status(n)?["leaderId"].as_u64().ok_or("no leader yet")?;
            if seen.is_some_and(|s| s != l) {
                return Err("nodes disagree".into());
            }
            seen = Some(l);
        }
        seen.ok_or_else(|| "no nodes".to_string())
    });
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let target = nodes
        .iter()
        .find(|n| n.id != leader && n.id != follower.id)
        .expect("a third node")
        .id;
    let url = format!("https://{}/api/v1/admin/cluster/transfer-leader", follower.http_addr);
    let body = format!("{{\"node_id\":{target}}}");
    // bob may not (403, from the follower itself).
    let a = c.send(
        "POST",
        &url,
        Some(("bob", "pw")),
        Some(("application/json", body.clone().into_bytes())),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // ops may: relayed over https with ops's credentials to the leader.
    let a = c.send("POST", &url, ops, Some(("application/json", body.into_bytes())));
    assert_eq!(a.status, 200, "relayed transfer-leader: {}", a.body);
    wait_until("leadership moved to the target", Duration::from_secs(30), || {
        let l = status(follower)?["leaderId"].as_u64().ok_or("no leader")?;
        if l == target {
            Ok(())
        } else {
            Err(format!("leader is {l}, want {target}"))
        }
    });
    for n in nodes.iter_mut() {
        n.stop(Duration::from_secs(40)).expect("node stops");
    }
}

// ---------------------------------------------------------------------------
// Real peers

#[test]
fn prometheus_remote_writes_over_tls_with_basic_auth_and_promtool_queries() {
    let test = "prometheus_remote_writes_over_tls_with_basic_auth_and_promtool_queries";
    let Some(prometheus) = peer("prometheus", test) else {
        return;
    };
    let Some(promtool) = peer("promtool", test) else { return };
    let dir = TestDir::new();
    let ca = Ca::new("promraft CA");
    let ca_file = dir.path().join("ca.crt");
    ca.write_ca(&ca_file);
    ca.issue(dir.path(), "server", false);
    let web = dir.path().join("web.yaml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prom: {}\n  grafana: {}\npromraft_roles:\n  prom: [write]\n  grafana: [read]\n",
            bcrypt_hash("prom-pw"),
            bcrypt_hash("grafana-pw")
        ),
    )
    .unwrap();
    let mut node = start_node(dir.path(), 1, &["--web.config.file", web.to_str().unwrap()]);
    let c = Client::new(Some(&ca_file), None);
    let base = format!("https://{}", node.http_addr);
    wait_ok(&c, &format!("{base}/-/ready"), None, &node);

    // Prometheus scrapes itself and remote-writes to promraft over TLS.
    let prom_addr = free_addr();
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: prom\n    static_configs:\n      - targets: ['{prom_addr}']\n\
         remote_write:\n  - url: {base}/api/v1/write\n    basic_auth:\n      username: prom\n      password: prom-pw\n    tls_config:\n      ca_file: {}\n    queue_config:\n      batch_send_deadline: 1s\n",
        ca_file.display()
    );
    let mut prom = start_prometheus(&prometheus, dir.path(), "prometheus", &prom_addr, &prom_config);
    let grafana = Some(("grafana", "grafana-pw"));
    let up = format!("{base}/api/v1/query?query=up%7Bjob%3D%22prom%22%7D");
    wait_until(
        "Prometheus's samples arrive in promraft",
        Duration::from_secs(60),
        || {
            let a = c.try_send("GET", &up, grafana, None)?;
            let n = a.json()["data"]["result"].as_array().map(Vec::len).unwrap_or(0);
            if n > 0 {
                Ok(())
            } else {
                Err(format!(
                    "no `up` yet: {}; prometheus log:\n{}",
                    a.body,
                    prom.log_tail(10)
                ))
            }
        },
    );
    // Prometheus's own account: samples sent, none failed.
    let prom_metrics = || -> Result<String, String> {
        let r = http_request(&prom_addr, "GET", "/metrics", &[], b"").map_err(|e| e.to_string())?;
        Ok(r.text())
    };
    let sent_name = "prometheus_remote_storage_samples_total";
    let first = wait_until("Prometheus reports samples sent", Duration::from_secs(30), || {
        let m = prom_metrics()?;
        match metric_sum(&m, sent_name) {
            Some(v) if v > 0.0 => Ok(v),
            v => Err(format!("{sent_name} = {v:?}")),
        }
    });
    wait_until("the sent count grows", Duration::from_secs(30), || {
        let m = prom_metrics()?;
        match metric_sum(&m, sent_name) {
            Some(v) if v > first => Ok(()),
            v => Err(format!("{sent_name} = {v:?}, first {first}")),
        }
    });
    let m = prom_metrics().expect("prometheus /metrics");
    assert_eq!(
        metric_sum(&m, "prometheus_remote_storage_samples_failed_total"),
        Some(0.0),
        "Prometheus reports failed samples"
    );

    // promtool against the TLS + basic-auth node. promtool 2.43 and later
    // take --http.config.file; Debian's 2.42 does not, and then the same
    // credentials go in the URL and the CA in SSL_CERT_FILE (Go's way).
    let help = run_command(
        Command::new(&promtool).args(["query", "instant", "--help"]),
        Duration::from_secs(30),
    );
    let has_http_config = format!("{}{}", help.stdout, help.stderr).contains("--http.config.file");
    let promtool_query = |password: &str| -> CommandOutput {
        let mut cmd = Command::new(&promtool);
        cmd.args(["query", "instant"]);
        if has_http_config {
            let f = dir.path().join(format!("http-{password}.yml"));
            std::fs::write(
                &f,
                format!(
                    "basic_auth:\n  username: grafana\n  password: {password}\ntls_config:\n  ca_file: {}\n",
                    ca_file.display()
                ),
            )
            .unwrap();
            cmd.arg("--http.config.file").arg(&f).arg(&base);
        } else {
            cmd.env("SSL_CERT_FILE", &ca_file)
                .arg(format!("https://grafana:{password}@{}", node.http_addr));
        }
        cmd.arg("up{job=\"prom\"}");
        run_command(&mut cmd, Duration::from_secs(30))
    };
    eprintln!(
        "promtool: {}",
        if has_http_config {
            "--http.config.file"
        } else {
            "no --http.config.file (2.42): URL credentials + SSL_CERT_FILE"
        }
    );
    let out = promtool_query("grafana-pw");
    assert!(out.status.success(), "promtool query failed: {}", out.stderr);
    assert!(out.stdout.contains("up{"), "promtool printed no `up`: {}", out.stdout);
    let out = promtool_query("wrong");
    assert!(
        !out.status.success(),
        "promtool with a wrong password succeeded: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("401") || out.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        out.stderr
    );
    eprintln!("promtool with a wrong password: {}", out.stderr.trim());

    prom.terminate(Duration::from_secs(30)).expect("prometheus stops");
    node.stop(Duration::from_secs(40)).expect("node stops");
}
