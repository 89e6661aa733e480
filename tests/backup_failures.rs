//! Backup failure cases, each with the real binary:
//! - disk full while writing a backup: a clear error and no file left
//!   (a small tmpfs when this runs as root and may mount, else a file-size
//!   limit set with `setrlimit` in the child, never a silent skip);
//! - a truncated file, a file from a newer format version, a wrong key and
//!   a modified byte (with and without a forged checksum) are each reported
//!   as such by `verify` and `restore`, and restore leaves nothing behind;
//! - restore into a non-empty data directory is refused unless forced;
//! - a backup of format version 1 (tests/fixtures, written by the code
//!   before the nonce change) still verifies and restores with all its
//!   samples, and a key file readable by group or others is refused;
//! - a backup while the leader fails over: from a follower, its stream
//!   held in the middle until a new leader is elected, it completes; from
//!   the leader that is killed mid-stream (a relay on 127.0.0.1 holds the
//!   stream at half, so the kill lands in the middle every time) it fails
//!   clearly and leaves no file.

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod backup_support;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backup_support::*;
use common::cluster::*;
use common::*;

const FILE: &str = "backup_failures";

/// A node with some data and a backup of it (plain and encrypted).
struct Fixture {
    dir: TestDir,
    node: TestNode,
    plain: PathBuf,
    encrypted: PathBuf,
    key: PathBuf,
}

fn fixture() -> Fixture {
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("src"));
    node.wait_ready(READY_TIMEOUT);
    write_grid(&node, "bkf", 100, now_ms() - 3_600_000, 250, 10_000);
    let plain = dir.path().join("plain.prbackup");
    let encrypted = dir.path().join("enc.prbackup");
    let key = dir.path().join("key");
    write_key_file(&key, "11".repeat(32));
    promraft_ok(
        &[
            "backup",
            "--addr",
            &node.http_addr,
            "--out",
            &plain.display().to_string(),
        ],
        &[],
    );
    promraft_ok(
        &[
            "backup",
            "--addr",
            &node.http_addr,
            "--out",
            &encrypted.display().to_string(),
            "--encrypt-key-file",
            &key.display().to_string(),
        ],
        &[],
    );
    Fixture {
        dir,
        node,
        plain,
        encrypted,
        key,
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `verify` and `restore` of `file` both fail with a message containing
/// `expect`, and restore leaves the target directory empty.
fn refused(fx: &Fixture, file: &Path, key: &[&str], expect: &str) {
    let f = s(file);
    let mut args = vec!["backup", "verify", &f];
    args.extend_from_slice(key);
    let err = promraft_fails(&args, &[]);
    assert!(err.contains(expect), "verify of {f}: expected {expect:?} in {err:?}");
    let target = fx.dir.path().join(format!(
        "restore-{}",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let t = s(&target);
    let mut args = vec![
        "restore",
        "--in",
        &f,
        "--data-dir",
        &t,
        "--node-id",
        "9",
        "--http-addr",
        "127.0.0.1:1",
        "--raft-addr",
        "127.0.0.1:2",
    ];
    args.extend_from_slice(key);
    let err = promraft_fails(&args, &[]);
    assert!(err.contains(expect), "restore of {f}: expected {expect:?} in {err:?}");
    let left: Vec<_> = std::fs::read_dir(&target)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed restore left {left:?} in {t}");
}

#[test]
fn damaged_files_wrong_keys_and_newer_versions_are_named() {
    let fx = fixture();
    let plain = std::fs::read(&fx.plain).expect("read backup");
    let k = s(&fx.key);
    let key = ["--key-file", k.as_str()];

    // A backup that ends early (what an interrupted copy leaves).
    let truncated = fx.dir.path().join("truncated.prbackup");
    std::fs::write(&truncated, &plain[..plain.len() * 2 / 3]).expect("write");
    refused(&fx, &truncated, &[], "truncated");
    let no_end = fx.dir.path().join("noend.prbackup");
    std::fs::write(&no_end, &plain[..plain.len() - 8]).expect("write");
    refused(&fx, &no_end, &[], "truncated");

    // A newer format version.
    let mut newer = plain.clone();
    newer[8..12].copy_from_slice(&3u32.to_be_bytes());
    let newer_path = fx.dir.path().join("newer.prbackup");
    std::fs::write(&newer_path, &newer).expect("write");
    refused(&fx, &newer_path, &[], "format version 3 is newer");

    // A flipped byte in the middle of the data.
    let mut flipped = plain.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let flipped_path = fx.dir.path().join("flipped.prbackup");
    std::fs::write(&flipped_path, &flipped).expect("write");
    refused(&fx, &flipped_path, &[], "checksum mismatch");

    // Encrypted: no key, a wrong key, a modified byte whose frame checksum
    // was forged to match (only the cipher can tell).
    refused(&fx, &fx.encrypted, &[], "is encrypted");
    let wrong = fx.dir.path().join("wrong-key");
    write_key_file(&wrong, [7u8; 32]);
    let w = s(&wrong);
    refused(&fx, &fx.encrypted, &["--key-file", &w], "wrong key");
    let enc = std::fs::read(&fx.encrypted).expect("read");
    let header_len = u32::from_be_bytes(enc[12..16].try_into().expect("4 bytes")) as usize;
    let frame0 = 16 + header_len + 4;
    let stored_len = u32::from_be_bytes(enc[frame0 + 1..frame0 + 5].try_into().expect("4 bytes")) as usize;
    let mut forged = enc.clone();
    forged[frame0 + 5 + stored_len / 2] ^= 0x01;
    let crc = crc32fast::hash(&forged[frame0..frame0 + 5 + stored_len]);
    forged[frame0 + 5 + stored_len..frame0 + 9 + stored_len].copy_from_slice(&crc.to_be_bytes());
    let forged_path = fx.dir.path().join("forged.prbackup");
    std::fs::write(&forged_path, &forged).expect("write");
    refused(&fx, &forged_path, &key, "failed authentication");
    // The untouched encrypted file is fine with the right key.
    promraft_ok(&["backup", "verify", &s(&fx.encrypted), "--key-file", &k], &[]);
}

/// The key of tests/fixtures/backup-v1-key-file.prbackup.
const FIXTURE_V1_KEY_HEX: &str = "2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b";

#[test]
fn version_1_backup_restores_and_a_shared_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures");
    let backup = fixtures.join("backup-v1-key-file.prbackup");
    let b = s(&backup);
    let key = dir.path().join("key");
    write_key_file(&key, FIXTURE_V1_KEY_HEX);
    let k = s(&key);

    // A key file that group or others may read is refused, by name, mode and fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = promraft_fails(&["backup", "verify", &b, "--key-file", &k], &[]);
    assert!(
        err.contains(&k) && err.contains("0644") && err.contains("chmod 600"),
        "expected the file, its mode and `chmod 600` in: {err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let out = promraft_ok(&["backup", "verify", &b, "--key-file", &k], &[]);
    assert!(
        out.contains("format version 1") && out.contains("series 3, samples 30") && out.contains("chacha20poly1305"),
        "verify of the version 1 fixture: {out}"
    );
    let data = dir.path().join("restored");
    let (http, raft) = (free_addr(), free_addr());
    let d = s(&data);
    promraft_ok(
        &[
            "restore",
            "--in",
            &b,
            "--data-dir",
            &d,
            "--node-id",
            "1",
            "--http-addr",
            &http,
            "--raft-addr",
            &raft,
            "--key-file",
            &k,
        ],
        &[],
    );
    // The fixture's samples are from when it was written; a long retention
    // keeps them whatever today's date.
    let mut node = TestNode::start_with(1, &data, http, raft, &["--retention", "36500d"]);
    node.wait_ready(READY_TIMEOUT);
    let mut want: std::collections::BTreeMap<LabelSet, Vec<(i64, f64)>> = Default::default();
    let text = std::fs::read_to_string(fixtures.join("backup-v1-content.om")).expect("read fixture content");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // fixture_metric{series="a"} 0 1796663571
        let (name_labels, rest) = line.split_once(' ').expect("sample line");
        let (v, t) = rest.split_once(' ').expect("value and timestamp");
        let series = name_labels.split('"').nth(1).expect("series label");
        want.entry(label_set_of(&[("__name__", "fixture_metric"), ("series", series)]))
            .or_default()
            .push((t.parse::<i64>().expect("timestamp") * 1000, v.parse().expect("value")));
    }
    let (from, to) = want
        .values()
        .flatten()
        .fold((i64::MAX, i64::MIN), |(a, b), (t, _)| (a.min(*t), b.max(*t)));
    let got = node.raw_samples("fixture_metric", from, to);
    assert_eq!(
        got, want,
        "the restored version 1 backup must hold exactly the fixture's samples"
    );
    node.stop(STOP_TIMEOUT).expect("stop the restored node");
}

#[test]
fn restore_into_a_non_empty_directory_needs_force() {
    let fx = fixture();
    let target = fx.dir.path().join("busy");
    std::fs::create_dir_all(target.join("tsdb")).expect("mkdir");
    std::fs::write(target.join("tsdb").join("old"), b"old data").expect("write");
    let (f, t) = (s(&fx.plain), s(&target));
    let base = [
        "restore",
        "--in",
        &f,
        "--data-dir",
        &t,
        "--node-id",
        "4",
        "--http-addr",
        "127.0.0.1:1",
        "--raft-addr",
        "127.0.0.1:2",
    ];
    let err = promraft_fails(&base, &[]);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "expected a refusal naming --force: {err}"
    );
    assert!(
        target.join("tsdb").join("old").exists(),
        "a refused restore must not touch the directory"
    );
    let mut forced = base.to_vec();
    forced.push("--force");
    promraft_ok(&forced, &[]);
    assert!(
        !target.join("tsdb").join("old").exists(),
        "--force replaces promraft's data"
    );
    assert!(target.join("log").is_dir() && target.join("tsdb").is_dir());
}

/// Mounts a tmpfs of `size` at `at` when running as root and mounting
/// works; the guard unmounts it.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        // Lets the file-size-limit path be exercised on a root machine too.
        if std::env::var("PROMRAFT_TEST_NO_MOUNT").is_ok_and(|v| v == "1") {
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_while_writing_a_backup_is_clear_and_leaves_no_file() {
    let name = "disk_full_while_writing_a_backup_is_clear_and_leaves_no_file";
    let fx = fixture();
    let size = std::fs::metadata(&fx.plain).expect("stat").len();
    assert!(
        size > 16 * 1024,
        "the fixture backup is too small ({size} bytes) to fill a small disk"
    );
    let mnt = fx.dir.path().join("small-disk");
    let tmpfs = Tmpfs::mount(&mnt, "8k");
    let (out_path, mut cmd) = match &tmpfs {
        Some(_) => {
            eprintln!("{name}: using an 8 KiB tmpfs at {}", mnt.display());
            (mnt.join("full.prbackup"), Command::new(PROMRAFT_BIN))
        }
        None => {
            eprintln!("{name}: not root or mount failed; using RLIMIT_FSIZE = 8 KiB in the child");
            let d = fx.dir.path().join("limited");
            std::fs::create_dir_all(&d).expect("mkdir");
            let p = d.join("limited.prbackup");
            let mut c = Command::new(PROMRAFT_BIN);
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: 8 * 1024,
                        rlim_max: 8 * 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Without this the kernel kills the process with SIGXFSZ
                    // instead of failing the write with EFBIG.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
            (p, c)
        }
    };
    cmd.args(["backup", "--addr", &fx.node.http_addr, "--out", &s(&out_path)])
        .env("RUST_BACKTRACE", "0");
    let out = run_command(&mut cmd, BACKUP_CLI_TIMEOUT);
    assert!(
        !out.status.success(),
        "backup onto a full disk succeeded?\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let expect = if tmpfs.is_some() {
        "No space left on device"
    } else {
        "File too large"
    };
    assert!(
        out.stderr.contains(expect) && out.stderr.contains("writing"),
        "expected a clear `writing <file>: {expect}` error, got: {}\nrepro: {}",
        out.stderr,
        repro(FILE, name)
    );
    let dir = out_path.parent().expect("parent");
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("prbackup"))
        .collect();
    assert!(left.is_empty(), "a failed backup left {left:?} in {}", dir.display());
    drop(tmpfs);
    // The node is unharmed and a backup elsewhere still works.
    promraft_ok(
        &[
            "backup",
            "--addr",
            &fx.node.http_addr,
            "--out",
            &s(&fx.dir.path().join("after.prbackup")),
        ],
        &[],
    );
}

/// What a [`GatedProxy`] does with the node's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    /// Relays at most this many bytes of each answer, then waits.
    PauseAt(u64),
    /// Relays everything.
    Open,
    /// Closes both connections now: what the node had not delivered yet is
    /// lost, as when its machine dies (a killed process's kernel would
    /// still deliver what it had buffered, so the kill alone cannot make
    /// sure the stream is cut).
    Cut,
}

/// A TCP relay on 127.0.0.1 between `promraft backup` and a node, which
/// holds the node's answer at a byte count the test chooses: so the test
/// knows the stream is in the middle when it kills a node, instead of
/// racing the socket buffers.
struct GatedProxy {
    addr: String,
    /// Bytes of the answer relayed to the client so far.
    relayed: Arc<AtomicU64>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

impl GatedProxy {
    fn start(upstream: &str, gate: Gate) -> GatedProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let relayed = Arc::new(AtomicU64::new(0));
        let gate = Arc::new((Mutex::new(gate), Condvar::new()));
        let (upstream, r, g) = (upstream.to_string(), relayed.clone(), gate.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(node) = TcpStream::connect(&upstream) else {
                    return;
                };
                let (r, g) = (r.clone(), g.clone());
                std::thread::spawn(move || relay(client, node, &r, &g));
            }
        });
        GatedProxy { addr, relayed, gate }
    }

    fn set(&self, gate: Gate) {
        *self.gate.0.lock().expect("gate lock") = gate;
        self.gate.1.notify_all();
    }

    fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::SeqCst)
    }
}

/// Relays the request as it comes and the answer as the gate allows.
fn relay(client: TcpStream, node: TcpStream, relayed: &AtomicU64, gate: &(Mutex<Gate>, Condvar)) {
    let (mut client_r, mut node_w) = (client.try_clone().expect("clone"), node.try_clone().expect("clone"));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut node_w);
    });
    let (mut node_r, mut client_w) = (node, client);
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let allowed = {
            let mut g = gate.0.lock().expect("gate lock");
            loop {
                match *g {
                    Gate::Cut => {
                        let _ = node_r.shutdown(Shutdown::Both);
                        let _ = client_w.shutdown(Shutdown::Both);
                        return;
                    }
                    Gate::Open => break buf.len(),
                    Gate::PauseAt(n) if sent < n => break buf.len().min((n - sent) as usize),
                    Gate::PauseAt(_) => g = gate.1.wait(g).expect("gate wait"),
                }
            }
        };
        let n = match node_r.read(&mut buf[..allowed]) {
            Ok(0) | Err(_) => {
                let _ = client_w.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if client_w.write_all(&buf[..n]).is_err() {
            return;
        }
        sent += n as u64;
        relayed.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Starts `promraft backup --addr <addr> --out <out>` on a thread.
fn backup_in_background(addr: &str, out: &Path) -> std::thread::JoinHandle<CommandOutput> {
    let mut cmd = Command::new(PROMRAFT_BIN);
    cmd.args(["backup", "--addr", addr, "--out", &s(out)])
        .env("RUST_BACKTRACE", "0");
    std::thread::spawn(move || run_command(&mut cmd, BACKUP_CLI_TIMEOUT))
}

/// Waits until `proxy` has relayed `n` bytes (and holds the rest).
fn wait_relayed(proxy: &GatedProxy, n: u64, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        let got = proxy.relayed();
        if got >= n {
            Ok(())
        } else {
            Err(format!("{got} of {n} bytes relayed"))
        }
    });
}

#[test]
fn backup_during_leader_failover_completes_or_fails_clearly() {
    let name = "backup_during_leader_failover_completes_or_fails_clearly";
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let ids = c.ids();
    let view = c.wait_leader(&ids, CLUSTER_READY_TIMEOUT);
    let (leader, term_before) = (view.leader_id.expect("a leader"), view.term);
    let follower = *ids.iter().find(|&&id| id != leader).expect("a follower");
    write_grid(c.node(leader), "bk_fo", 300, now_ms() - 3_600_000, 200, 10_000);
    c.wait_converged(&ids, CONVERGE_TIMEOUT);

    // The size of a whole backup of this content (every replica holds the
    // same at the same index): the streams below are held at half of it.
    let whole = c.dir().join("whole.prbackup");
    promraft_ok(
        &["backup", "--addr", &c.node(follower).http_addr, "--out", &s(&whole)],
        &[],
    );
    let size = std::fs::metadata(&whole).expect("the whole backup").len();
    let half = size / 2;
    assert!(
        half > 16 * 1024,
        "the backup ({size} bytes) is too small to be cut in the middle"
    );

    // From the leader: held at half, the leader is killed, the rest is lost.
    let from_leader = c.dir().join("from-leader.prbackup");
    let partial = PathBuf::from(format!("{}.partial", from_leader.display()));
    let to_leader = GatedProxy::start(&c.node(leader).http_addr, Gate::PauseAt(half));
    let leader_backup = backup_in_background(&to_leader.addr, &from_leader);
    wait_relayed(&to_leader, half, "half of the leader's backup stream");
    wait_until(
        "the backup from the leader to start writing",
        Duration::from_secs(60),
        || {
            if partial.exists() {
                Ok(())
            } else {
                Err(format!("{} does not exist yet", partial.display()))
            }
        },
    );

    // From a follower, held at half across the whole failover.
    let from_follower = c.dir().join("from-follower.prbackup");
    let to_follower = GatedProxy::start(&c.node(follower).http_addr, Gate::PauseAt(half));
    let follower_backup = backup_in_background(&to_follower.addr, &from_follower);
    wait_relayed(&to_follower, half, "half of the follower's backup stream");

    c.node_mut(leader).kill9();
    to_leader.set(Gate::Cut);
    let out = leader_backup.join().expect("backup thread");
    assert!(
        !out.status.success() && out.stderr.contains("failed"),
        "a backup cut after {} of {size} bytes by the leader's death must fail clearly; status {}, stdout: {}, \
         stderr: {}\nrepro: {}",
        to_leader.relayed(),
        out.status,
        out.stdout,
        out.stderr,
        repro(FILE, name)
    );
    assert!(
        !from_leader.exists() && !partial.exists(),
        "a failed backup must leave no file (found {} or {})\nrepro: {}",
        from_leader.display(),
        partial.display(),
        repro(FILE, name)
    );
    eprintln!(
        "{name}: the backup cut by the leader's death failed: {}",
        out.stderr.trim()
    );

    // The survivors elect a new leader while the follower's stream waits.
    let survivors: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let new_view = c.wait_leader(&survivors, Duration::from_secs(30));
    assert!(
        new_view.term > term_before && new_view.leader_id != Some(leader),
        "a new leader in a later term: {new_view:?}"
    );
    assert!(
        !follower_backup.is_finished(),
        "the follower's backup must still be in progress when the new leader is elected"
    );
    to_follower.set(Gate::Open);
    let out = follower_backup.join().expect("backup thread");
    assert!(
        out.status.success(),
        "the backup from follower {follower}, streaming across the failover, must complete: {} {}\nrepro: {}",
        out.stdout,
        out.stderr,
        repro(FILE, name)
    );
    let v = promraft_ok(&["backup", "verify", &s(&from_follower)], &[]);
    assert!(
        v.contains("series 300"),
        "backup from the follower during failover: {}\n{v}",
        out.stdout
    );
}
