//! Raft over mutual TLS, with the real binary on loopback:
//! - a partial `--raft-tls-*` set, and a certificate file that is not PEM,
//!   stop `promraft serve` with the missing option or the file's path;
//! - a plaintext gRPC client, and a TLS client whose certificate comes
//!   from another CA, get no Raft RPC through (an AppendEntries with a
//!   higher term fails and the node's term does not move), while the same
//!   RPC from a client with a certificate of the node's CA goes through and
//!   does move it (so the refusals are the certificates', not the test's);
//! - a three-node cluster over mTLS under write load loses its leader to
//!   SIGKILL, elects another and keeps every acknowledged sample;
//! - the certificates of the running cluster are rotated to a new CA (every
//!   node's files replaced in place): each node refuses the old CA's client
//!   certificate without a restart, a node killed and restarted rejoins over
//!   new connections, and the cluster keeps committing writes.
//!
//! Certificates are made here with rcgen: one CA, one certificate with the
//! SANs 127.0.0.1 and localhost for both server and client use, shared by
//! the nodes (all on 127.0.0.1).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::*;
use common::*;
use promraft::raft::transport::connector::Connector;
use promraft::raft::transport::proto::raft_client::RaftClient;
use promraft::raft::transport::proto::{NodeInfoRequest, RaftRequest};
use promraft::raft::transport::tls::{RaftTls, TlsConnector, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

const FILE: &str = "raft_mtls";
const METRIC: &str = "promraft_mtls_test";
/// Written after the rotation (a metric of its own, so its timestamps
/// never meet the first load's).
const METRIC_ROTATED: &str = "promraft_mtls_rotated_test";

/// Deadline of one RPC of the test's own clients.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a rotated set of files may take to be in use: the reload poll
/// (2 s) plus scheduling on a loaded machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Acknowledged writes to wait for in each phase.
const ACKS_PER_PHASE: usize = 300;

/// A test CA.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let pem = params.self_signed(&key).expect("self-sign the CA").pem();
    Ca { params, key, pem }
}

/// A certificate and key (PEM) signed by `ca` for 127.0.0.1 and localhost,
/// usable as server and as client.
fn leaf(ca: &Ca) -> (String, String) {
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, "promraft node");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("leaf key");
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).expect("sign the leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes `contents` to `path` through a temporary file and a rename, as
/// a certificate manager does, so a reader never sees half a file.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Writes a certificate of `ca` (and the CA) into `dir` as node.crt,
/// node.key and ca.crt; returns the files.
fn write_tls(dir: &Path, ca: &Ca) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("mkdir tls");
    let (cert, key) = leaf(ca);
    let files = TlsFiles {
        cert_file: dir.join("node.crt"),
        key_file: dir.join("node.key"),
        ca_file: dir.join("ca.crt"),
    };
    replace_file(&files.cert_file, &cert);
    replace_file(&files.key_file, &key);
    replace_file(&files.ca_file, &ca.pem);
    files
}

/// Files for a client: the certificate and key of one CA, trusting `ca_pem`.
fn client_files(dir: &Path, cert_ca: &Ca, trust_pem: &str) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("mkdir client tls");
    let (cert, key) = leaf(cert_ca);
    let files = TlsFiles {
        cert_file: dir.join("client.crt"),
        key_file: dir.join("client.key"),
        ca_file: dir.join("trust.crt"),
    };
    replace_file(&files.cert_file, &cert);
    replace_file(&files.key_file, &key);
    replace_file(&files.ca_file, trust_pem);
    files
}

fn tls_args(f: &TlsFiles) -> Vec<String> {
    let p = |p: &PathBuf| p.display().to_string();
    vec![
        "--raft-tls-cert-file".into(),
        p(&f.cert_file),
        "--raft-tls-key-file".into(),
        p(&f.key_file),
        "--raft-tls-ca-file".into(),
        p(&f.ca_file),
    ]
}

/// How a test client reaches a node's Raft port.
enum Client {
    /// gRPC without TLS.
    Plain,
    /// promraft's own TLS connector with these files (read once, now).
    Tls(RaftTls),
}

impl Client {
    fn tls(files: &TlsFiles) -> Client {
        Client::Tls(RaftTls::load(files.clone()).expect("client TLS files load"))
    }

    /// A fresh channel (a new connection, so a new handshake) to `addr`.
    fn raft(&self, addr: &str) -> Result<RaftClient<tonic::transport::Channel>, String> {
        let channel = match self {
            Client::Plain => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(RPC_TIMEOUT)
                .connect_lazy(),
            Client::Tls(tls) => TlsConnector::new(tls.clone())
                .channel(addr)
                .map_err(|e| e.to_string())?,
        };
        Ok(RaftClient::new(channel))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `NodeInfo` over a new connection: the node's term, or why it failed.
fn node_info_term(rt: &tokio::runtime::Runtime, client: &Client, addr: &str) -> Result<u64, String> {
    rt.block_on(async {
        let mut c = client.raft(addr)?;
        match tokio::time::timeout(RPC_TIMEOUT, c.node_info(NodeInfoRequest {})).await {
            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
            Ok(Ok(r)) => Ok(r.into_inner().term),
        }
    })
}

/// An AppendEntries (a heartbeat) from a made-up leader 99 of `term`: a
/// node that takes it moves to that term. Ok(()) if the node answered.
fn append_entries_from_stranger(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    addr: &str,
    term: u64,
) -> Result<(), String> {
    let req = openraft::raft::AppendEntriesRequest::<promraft::raft::TypeConfig> {
        vote: promraft::raft::Vote::new_committed(term, 99),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let data = promraft::codec::encode_to_vec(&req).expect("encode append entries");
    rt.block_on(async {
        let mut c = client.raft(addr)?;
        let call = c.append_entries(RaftRequest {
            format: promraft::raft::transport::WIRE_FORMAT,
            data: data.into(),
        });
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
            Ok(Ok(_)) => Ok(()),
        }
    })
}

fn http_term(http_addr: &str) -> u64 {
    cluster_status(http_addr)
        .unwrap_or_else(|e| panic!("cluster status of {http_addr}: {e}"))
        .term
}

/// Deadline of a `promraft serve` expected to refuse its configuration.
const REFUSED_START_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_partial_or_unreadable_tls_configuration_stops_the_start_with_a_reason() {
    let dir = TestDir::new();
    let ca = new_ca("promraft test CA");
    let files = write_tls(&dir.path().join("tls"), &ca);
    let serve = |extra: &[&str]| {
        let data = dir.path().join("data");
        let (http, raft) = (free_addr(), free_addr());
        let mut cmd = std::process::Command::new(PROMRAFT_BIN);
        cmd.args([
            "serve",
            "--node-id",
            "1",
            "--http-addr",
            &http,
            "--raft-addr",
            &raft,
            "--data-dir",
        ])
        .arg(&data)
        .args(extra)
        .env("NO_COLOR", "1");
        let out = run_command(&mut cmd, REFUSED_START_TIMEOUT);
        assert!(!out.status.success(), "serve with {extra:?} started:\n{}", out.stderr);
        out.stderr
    };
    let cert = files.cert_file.display().to_string();
    let key = files.key_file.display().to_string();
    let err = serve(&["--raft-tls-cert-file", &cert, "--raft-tls-key-file", &key]);
    assert!(
        err.contains("raft.tls") && err.contains("missing: ca_file"),
        "partial set: {err}"
    );

    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "this is not a certificate").expect("write junk");
    let junk_s = junk.display().to_string();
    let ca_s = files.ca_file.display().to_string();
    let err = serve(&[
        "--raft-tls-cert-file",
        &junk_s,
        "--raft-tls-key-file",
        &key,
        "--raft-tls-ca-file",
        &ca_s,
    ]);
    assert!(
        err.contains("cert_file") && err.contains(&junk_s),
        "a certificate that is not PEM: {err}"
    );

    let gone = dir.path().join("gone.key").display().to_string();
    let err = serve(&[
        "--raft-tls-cert-file",
        &cert,
        "--raft-tls-key-file",
        &gone,
        "--raft-tls-ca-file",
        &ca_s,
    ]);
    assert!(
        err.contains("key_file") && err.contains(&gone),
        "a missing key file: {err}"
    );
}

#[test]
fn plaintext_and_foreign_ca_clients_get_no_raft_rpc_through() {
    let name = "plaintext_and_foreign_ca_clients_get_no_raft_rpc_through";
    let dir = TestDir::new();
    let ca = new_ca("promraft test CA");
    let other = new_ca("someone else's CA");
    let files = write_tls(&dir.path().join("tls"), &ca);
    let args = tls_args(&files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = TestNode::start_with(1, &dir.path().join("node1"), free_addr(), free_addr(), &args);
    node.wait_ready(READY_TIMEOUT);
    let rt = runtime();
    let term0 = http_term(&node.http_addr);

    // A member's certificate: NodeInfo answers (the client code works).
    let member = Client::tls(&client_files(&dir.path().join("member"), &ca, &ca.pem));
    let info_term = node_info_term(&rt, &member, &node.raft_addr).unwrap_or_else(|e| {
        panic!(
            "a client with the node's CA must get NodeInfo through: {e}\nrepro: {}",
            repro(FILE, name)
        )
    });
    assert_eq!(info_term, term0);

    // Plaintext: refused, and the term has not moved.
    let plain = append_entries_from_stranger(&rt, &Client::Plain, &node.raft_addr, term0 + 5);
    assert!(
        plain.is_err(),
        "a plaintext AppendEntries went through\nrepro: {}",
        repro(FILE, name)
    );
    println!("plaintext client: {}", plain.unwrap_err());
    assert!(
        node_info_term(&rt, &Client::Plain, &node.raft_addr).is_err(),
        "plaintext NodeInfo went through"
    );
    assert_eq!(
        http_term(&node.http_addr),
        term0,
        "a refused plaintext RPC changed the term"
    );

    // A certificate from another CA (the client trusts the node's CA, so
    // only the node's check of the client can refuse it).
    let foreign = Client::tls(&client_files(&dir.path().join("foreign"), &other, &ca.pem));
    let refused = append_entries_from_stranger(&rt, &foreign, &node.raft_addr, term0 + 5);
    assert!(
        refused.is_err(),
        "an AppendEntries with another CA's certificate went through\nrepro: {}",
        repro(FILE, name)
    );
    println!("foreign-CA client: {}", refused.unwrap_err());
    assert!(
        node_info_term(&rt, &foreign, &node.raft_addr).is_err(),
        "foreign-CA NodeInfo went through"
    );
    assert_eq!(
        http_term(&node.http_addr),
        term0,
        "a refused foreign-CA RPC changed the term"
    );

    // The same AppendEntries with a member's certificate is taken: the
    // term moves, so the two refusals above were the certificates' doing.
    append_entries_from_stranger(&rt, &member, &node.raft_addr, term0 + 5)
        .unwrap_or_else(|e| panic!("the member's AppendEntries failed: {e}\nrepro: {}", repro(FILE, name)));
    wait_until(
        "the member's AppendEntries to raise the term",
        Duration::from_secs(10),
        || {
            let t = http_term(&node.http_addr);
            if t >= term0 + 5 {
                Ok(())
            } else {
                Err(format!("term {t}, expected at least {}", term0 + 5))
            }
        },
    );
    node.stop(STOP_TIMEOUT).expect("stop the node");
}

#[test]
fn three_nodes_over_mtls_fail_over_keep_every_write_and_rotate_to_a_new_ca() {
    let name = "three_nodes_over_mtls_fail_over_keep_every_write_and_rotate_to_a_new_ca";
    let tls_dir = TestDir::new();
    let ca_old = new_ca("promraft CA 1");
    let files = write_tls(&tls_dir.path().join("nodes"), &ca_old);
    let raft = RaftTiming::default();
    let mut c = Cluster::start_in(TestDir::new(), 3, raft, "", tls_args(&files));
    let all = c.ids();
    let view = c.wait_leader(&all, CLUSTER_READY_TIMEOUT);
    let leader = view.leader_id.expect("a leader");

    // Writes under load to every node (followers forward to the leader over
    // the same mTLS port), then SIGKILL of the leader.
    let mut targets: Vec<Vec<(u64, String)>> = all.iter().map(|&id| c.targets(&[id])).collect();
    targets.push(c.targets(&all));
    let spec = WriterSpec::small(METRIC, 2, now_ms() - 3_600_000);
    let load = WriteLoad::start(&spec, targets);
    load.wait_more_acks(ACKS_PER_PHASE, Duration::from_secs(60));
    c.node_mut(leader).kill9();
    let survivors: Vec<u64> = all.iter().copied().filter(|&id| id != leader).collect();
    let new_view = c.wait_leader(&survivors, Duration::from_secs(30));
    println!(
        "mtls failover: leader {leader} killed, new leader {:?} in term {}",
        new_view.leader_id, new_view.term
    );
    load.wait_more_acks(ACKS_PER_PHASE, Duration::from_secs(60));
    c.node_mut(leader).restart();
    c.node_mut(leader).wait_ready(READY_TIMEOUT);
    load.wait_more_acks(ACKS_PER_PHASE, Duration::from_secs(60));
    let results = load.stop();
    c.wait_converged(&all, CONVERGE_TIMEOUT);
    let oracle = merged_oracle(&results);
    println!("mtls failover: {} acknowledged samples", oracle.acked_samples());
    assert!(oracle.acked_samples() > 0, "no write was acknowledged");
    for &id in &all {
        oracle.assert_replica(
            &format!("node {id}"),
            &c.node(id).http_addr,
            METRIC,
            "after failover over mTLS",
        );
    }

    // Rotation to a new CA, every node's files replaced in place.
    let rt = runtime();
    let old_client = Client::tls(&client_files(&tls_dir.path().join("old-client"), &ca_old, &ca_old.pem));
    for &id in &all {
        node_info_term(&rt, &old_client, &c.node(id).raft_addr)
            .unwrap_or_else(|e| panic!("before the rotation, node {id} must take the old CA's client: {e}"));
    }
    let ca_new = new_ca("promraft CA 2");
    write_tls(&tls_dir.path().join("nodes"), &ca_new);
    let new_client = Client::tls(&client_files(&tls_dir.path().join("new-client"), &ca_new, &ca_new.pem));
    for &id in &all {
        let addr = c.node(id).raft_addr.clone();
        wait_until(
            &format!("node {id} to use the new CA without a restart"),
            RELOAD_TIMEOUT,
            || match (
                node_info_term(&rt, &old_client, &addr),
                node_info_term(&rt, &new_client, &addr),
            ) {
                (Err(_), Ok(_)) => Ok(()),
                (old, new) => Err(format!("old-CA client: {old:?}, new-CA client: {new:?}")),
            },
        );
    }

    // New connections between the nodes: a follower is killed and
    // restarted (it has only the new files; its peers reconnect to it with
    // their reloaded ones), and writes still commit through every node.
    let leader = c
        .wait_leader(&all, Duration::from_secs(30))
        .leader_id
        .expect("a leader");
    let follower = *all.iter().find(|&&id| id != leader).expect("a follower");
    c.node_mut(follower).kill9();
    c.node_mut(follower).restart();
    c.node_mut(follower).wait_ready(READY_TIMEOUT);
    let mut targets: Vec<Vec<(u64, String)>> = all.iter().map(|&id| c.targets(&[id])).collect();
    targets.push(c.targets(&all));
    let spec = WriterSpec::small(METRIC_ROTATED, 2, now_ms() - 3_600_000);
    let load = WriteLoad::start(&spec, targets);
    load.wait_more_acks(ACKS_PER_PHASE, Duration::from_secs(60));
    let attempts = load.attempts();
    let results2 = load.stop();
    let acked_by_restarted = attempts.iter().filter(|a| a.acked() && a.target == follower).count();
    assert!(
        acked_by_restarted > 0,
        "the restarted node {follower} acknowledged no write after the rotation\n{}\nrepro: {}",
        c.describe(),
        repro(FILE, name)
    );
    c.wait_converged(&all, CONVERGE_TIMEOUT);
    let rotated = merged_oracle(&results2);
    println!(
        "mtls rotation: {} acknowledged samples after it",
        rotated.acked_samples()
    );
    for &id in &all {
        oracle.assert_replica(
            &format!("node {id}"),
            &c.node(id).http_addr,
            METRIC,
            "after the CA rotation",
        );
        rotated.assert_replica(
            &format!("node {id}"),
            &c.node(id).http_addr,
            METRIC_ROTATED,
            "after the CA rotation",
        );
    }
    for &id in &all {
        assert!(
            node_info_term(&rt, &old_client, &c.node(id).raft_addr).is_err(),
            "after the rotation node {id} still takes the old CA's client\nrepro: {}",
            repro(FILE, name)
        );
    }
    for id in c.ids() {
        c.node_mut(id).stop(STOP_TIMEOUT).expect("stop node");
    }
}
