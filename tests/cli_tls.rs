//! The client commands against a real node that serves TLS and basic auth
//! (`--web.config.file`): `promraft healthcheck`, `cluster status`,
//! `import`, `export` and `backup` succeed with `--tls-ca-file`,
//! `--basic-auth-user` and the password from the environment or a file,
//! and fail with a message naming the cause and the fix without them (no or
//! the wrong CA, no password, a wrong password); with mutual TLS, a client
//! certificate from `--tls-cert-file`/`--tls-key-file` gets through and its
//! absence is explained.
//!
//! Certificates are made with rcgen in the test's directory.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tls::Ca;
use common::*;

/// Time for a node to start answering.
const READY: Duration = Duration::from_secs(30);
/// Longest a client command may run (a backup of a small node is quick).
const COMMAND_MAX: Duration = Duration::from_secs(60);
/// The password of the test's users.
const PASSWORD: &str = "s3cret pass";

/// Runs `promraft <args>` with `password` (or none) in
/// PROMRAFT_BASIC_AUTH_PASSWORD.
fn promraft(args: &[&str], password: Option<&str>) -> CommandOutput {
    let mut cmd = Command::new(PROMRAFT_BIN);
    cmd.args(args).env_remove("PROMRAFT_BASIC_AUTH_PASSWORD");
    if let Some(p) = password {
        cmd.env("PROMRAFT_BASIC_AUTH_PASSWORD", p);
    }
    run_command(&mut cmd, COMMAND_MAX)
}

fn succeeds(what: &str, out: &CommandOutput) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}\n{}",
        out.status,
        out.stdout,
        out.stderr,
        repro(
            "cli_tls",
            "client_commands_speak_tls_and_basic_auth_and_explain_failures"
        )
    );
}

fn fails_saying(what: &str, out: &CommandOutput, needle: &str) {
    assert!(
        !out.status.success(),
        "{what} succeeded but should have failed\nstdout: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains(needle),
        "{what}: expected the error to say {needle:?}, got:\n{}",
        out.stderr
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

// One node and every command against it, in order: a node per case would
// multiply the test's time for no extra coverage.
#[allow(clippy::too_many_lines)]
#[test]
fn client_commands_speak_tls_and_basic_auth_and_explain_failures() {
    let dir = TestDir::new();
    let d = dir.path();
    let ca = Ca::new("promraft test CA");
    let ca_file = ca.write_ca(&d.join("ca.crt"));
    ca.issue(d, "server", false);
    let other_ca = Ca::new("another CA").write_ca(&d.join("other-ca.crt"));
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let web = d.join("web.yaml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  ops: {hash}\n  alice: {hash}\n\
             promraft_roles:\n  ops: [read, write, admin]\n  alice: [read]\n"
        ),
    )
    .expect("write web config");
    let pw_file = d.join("password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).expect("write password file");
    let mut node = TestNode::start_with(
        1,
        &d.join("node1"),
        free_addr(),
        free_addr(),
        &["--web.config.file", s(&web)],
    );
    let addr = node.http_addr.clone();
    let https = format!("https://{addr}");
    let tls = ["--tls-ca-file", s(&ca_file)];
    let ops = ["--basic-auth-user", "ops"];

    // healthcheck over TLS: the health paths are open without credentials.
    wait_until("healthcheck over TLS answers 200 on /-/ready", READY, || {
        let out = promraft(
            &["healthcheck", "--addr", &https, tls[0], tls[1], "--path", "/-/ready"],
            None,
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}\nnode log:\n{}", out.stderr, node.log_tail(20)))
        }
    });
    // A bare host:port with --tls-ca-file means https.
    succeeds(
        "healthcheck host:port",
        &promraft(&["healthcheck", "--addr", &addr, tls[0], tls[1]], None),
    );
    // Credentials reach a protected path; a wrong password is a 401 named as such.
    let query = "/api/v1/query?query=1";
    succeeds(
        "healthcheck with credentials",
        &promraft(
            &[
                "healthcheck",
                "--addr",
                &addr,
                tls[0],
                tls[1],
                ops[0],
                ops[1],
                "--path",
                query,
            ],
            Some(PASSWORD),
        ),
    );
    fails_saying(
        "healthcheck with a wrong password",
        &promraft(
            &[
                "healthcheck",
                "--addr",
                &addr,
                tls[0],
                tls[1],
                ops[0],
                ops[1],
                "--path",
                query,
            ],
            Some("wrong"),
        ),
        "wrong credentials: check --basic-auth-user and PROMRAFT_BASIC_AUTH_PASSWORD",
    );
    fails_saying(
        "healthcheck trusting another CA",
        &promraft(&["healthcheck", "--addr", &https, "--tls-ca-file", s(&other_ca)], None),
        "the server's certificate is not signed by --tls-ca-file",
    );
    fails_saying(
        "healthcheck without a CA (system roots)",
        &promraft(&["healthcheck", "--addr", &https], None),
        "the server's certificate is not signed by --tls-ca-file",
    );

    // cluster status.
    let out = promraft(
        &["cluster", "status", "--addr", &addr, tls[0], tls[1], ops[0], ops[1]],
        Some(PASSWORD),
    );
    succeeds("cluster status", &out);
    assert!(out.stdout.contains("leader 1"), "cluster status: {}", out.stdout);
    fails_saying(
        "cluster status without --tls-ca-file",
        &promraft(&["cluster", "status", "--addr", &https, ops[0], ops[1]], Some(PASSWORD)),
        "the server's certificate is not signed by --tls-ca-file",
    );
    fails_saying(
        "cluster status with another CA",
        &promraft(
            &[
                "cluster",
                "status",
                "--addr",
                &addr,
                "--tls-ca-file",
                s(&other_ca),
                ops[0],
                ops[1],
            ],
            Some(PASSWORD),
        ),
        "the server's certificate is not signed by --tls-ca-file",
    );
    fails_saying(
        "cluster status without a password",
        &promraft(
            &["cluster", "status", "--addr", &addr, tls[0], tls[1], ops[0], ops[1]],
            None,
        ),
        "needs a password: set PROMRAFT_BASIC_AUTH_PASSWORD or pass --basic-auth-password-file",
    );
    fails_saying(
        "cluster status with a wrong password",
        &promraft(
            &["cluster", "status", "--addr", &addr, tls[0], tls[1], ops[0], ops[1]],
            Some("nope"),
        ),
        "wrong credentials: check --basic-auth-user and PROMRAFT_BASIC_AUTH_PASSWORD",
    );
    fails_saying(
        "cluster status without credentials",
        &promraft(&["cluster", "status", "--addr", &addr, tls[0], tls[1]], None),
        "401 wrong credentials",
    );

    // import (write role), with the password from a file.
    let t_s = now_ms() / 1000 - 60;
    let input = d.join("in.om");
    std::fs::write(
        &input,
        format!(
            "# TYPE cli_tls_metric gauge\ncli_tls_metric{{job=\"a\"}} 1 {t_s}\ncli_tls_metric{{job=\"b\"}} 2 {t_s}\n# EOF\n"
        ),
    )
    .expect("write import file");
    let pw = ["--basic-auth-password-file", s(&pw_file)];
    succeeds(
        "import",
        &promraft(
            &[
                "import",
                "--addr",
                &addr,
                "--in",
                s(&input),
                tls[0],
                tls[1],
                ops[0],
                ops[1],
                pw[0],
                pw[1],
            ],
            None,
        ),
    );
    fails_saying(
        "import with a wrong password",
        &promraft(
            &[
                "import",
                "--addr",
                &addr,
                "--in",
                s(&input),
                tls[0],
                tls[1],
                ops[0],
                ops[1],
            ],
            Some("nope"),
        ),
        "wrong credentials",
    );
    fails_saying(
        "import by a read-only user",
        &promraft(
            &[
                "import",
                "--addr",
                &addr,
                "--in",
                s(&input),
                tls[0],
                tls[1],
                "--basic-auth-user",
                "alice",
            ],
            Some(PASSWORD),
        ),
        "403 forbidden",
    );

    // export (admin role): the imported samples come back.
    let exported = d.join("out.om");
    let out = promraft(
        &[
            "export",
            "--addr",
            &addr,
            "--out",
            s(&exported),
            "--match",
            "cli_tls_metric",
            tls[0],
            tls[1],
            ops[0],
            ops[1],
        ],
        Some(PASSWORD),
    );
    succeeds("export", &out);
    let text = std::fs::read_to_string(&exported).expect("read export");
    assert!(
        text.contains("cli_tls_metric{job=\"a\"} 1") && text.contains("cli_tls_metric{job=\"b\"} 2"),
        "export misses the imported samples:\n{text}"
    );
    fails_saying(
        "export without a CA",
        &promraft(
            &["export", "--addr", &https, "--out", s(&d.join("x.om")), ops[0], ops[1]],
            Some(PASSWORD),
        ),
        "not signed by --tls-ca-file",
    );

    // backup (admin role) to a file, which verifies.
    let backup = d.join("node.backup");
    succeeds(
        "backup",
        &promraft(
            &[
                "backup",
                "--addr",
                &addr,
                "--out",
                s(&backup),
                tls[0],
                tls[1],
                ops[0],
                ops[1],
            ],
            Some(PASSWORD),
        ),
    );
    succeeds("backup verify", &promraft(&["backup", "verify", s(&backup)], None));
    let refused = d.join("refused.backup");
    fails_saying(
        "backup with a wrong password",
        &promraft(
            &[
                "backup",
                "--addr",
                &addr,
                "--out",
                s(&refused),
                tls[0],
                tls[1],
                ops[0],
                ops[1],
            ],
            Some("nope"),
        ),
        "wrong credentials: check --basic-auth-user and PROMRAFT_BASIC_AUTH_PASSWORD",
    );
    fails_saying(
        "backup trusting another CA",
        &promraft(
            &[
                "backup",
                "--addr",
                &addr,
                "--out",
                s(&refused),
                "--tls-ca-file",
                s(&other_ca),
                ops[0],
                ops[1],
            ],
            Some(PASSWORD),
        ),
        "not signed by --tls-ca-file",
    );
    assert!(!refused.exists(), "a refused backup left a file");

    node.stop(Duration::from_secs(40)).expect("node stops");
}

#[allow(clippy::too_many_lines)]
#[test]
fn client_certificates_get_through_mutual_tls() {
    let dir = TestDir::new();
    let d = dir.path();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let ca_file = ca.write_ca(&d.join("ca.crt"));
    clients.write_ca(&d.join("clients.crt"));
    ca.issue(d, "server", false);
    let (cc, ck) = clients.issue(d, "client", true);
    let web = d.join("web.yaml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    )
    .expect("write web config");
    let mut node = TestNode::start_with(
        1,
        &d.join("node1"),
        free_addr(),
        free_addr(),
        &["--web.config.file", s(&web)],
    );
    let addr = node.http_addr.clone();
    let with_cert = [
        "--tls-ca-file",
        s(&ca_file),
        "--tls-cert-file",
        s(&cc),
        "--tls-key-file",
        s(&ck),
    ];
    wait_until("healthcheck with a client certificate answers 200", READY, || {
        let mut args = vec!["healthcheck", "--addr", addr.as_str()];
        args.extend(with_cert);
        let out = promraft(&args, None);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}\nnode log:\n{}", out.stderr, node.log_tail(20)))
        }
    });
    let mut status = vec!["cluster", "status", "--addr", addr.as_str()];
    status.extend(with_cert);
    succeeds("cluster status with a client certificate", &promraft(&status, None));
    fails_saying(
        "cluster status without a client certificate",
        &promraft(
            &["cluster", "status", "--addr", &addr, "--tls-ca-file", s(&ca_file)],
            None,
        ),
        "--tls-cert-file",
    );
    fails_saying(
        "healthcheck without a client certificate",
        &promraft(&["healthcheck", "--addr", &addr, "--tls-ca-file", s(&ca_file)], None),
        "--tls-cert-file",
    );
    // A key that is not the certificate's is refused before connecting.
    let (_, other_key) = clients.issue(d, "other", true);
    fails_saying(
        "a mismatched key",
        &promraft(
            &[
                "cluster",
                "status",
                "--addr",
                &addr,
                "--tls-ca-file",
                s(&ca_file),
                "--tls-cert-file",
                s(&cc),
                "--tls-key-file",
                s(&other_key),
            ],
            None,
        ),
        "--tls-key-file",
    );
    node.stop(Duration::from_secs(40)).expect("node stops");
}
