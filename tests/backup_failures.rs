//! Backup failure cases, each with the real binary:
//! - disk full while writing a backup: a clear error and no file left
//!   (a small tmpfs when this runs as root and may mount, else a file-size
//!   limit set with `setrlimit` in the child, never a silent skip);
//! - a truncated file, a file from a newer format version, a wrong key and
//!   a modified byte (with and without a forged checksum) are each reported
//!   as such by `verify` and `restore`, and restore leaves nothing behind;
//! - restore into a non-empty data directory is refused unless forced;
//! - a backup while the leader fails over: from a follower it completes,
//!   from the leader that is killed mid-stream it fails clearly and leaves
//!   no file.

mod backup_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
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
    std::fs::write(&key, "11".repeat(32)).expect("write key file");
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
    newer[8..12].copy_from_slice(&2u32.to_be_bytes());
    let newer_path = fx.dir.path().join("newer.prbackup");
    std::fs::write(&newer_path, &newer).expect("write");
    refused(&fx, &newer_path, &[], "format version 2 is newer");

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
    std::fs::write(&wrong, [7u8; 32]).expect("write");
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

#[test]
fn backup_during_leader_failover_completes_or_fails_clearly() {
    let name = "backup_during_leader_failover_completes_or_fails_clearly";
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let ids = c.ids();
    let leader = c.wait_leader(&ids, CLUSTER_READY_TIMEOUT).leader_id.expect("a leader");
    let follower = *ids.iter().find(|&&id| id != leader).expect("a follower");
    write_grid(c.node(leader), "bk_fo", 300, now_ms() - 3_600_000, 200, 10_000);
    c.wait_converged(&ids, CONVERGE_TIMEOUT);

    // From the leader, throttled so that the kill lands mid-stream.
    let from_leader = c.dir().join("from-leader.prbackup");
    let partial = PathBuf::from(format!("{}.partial", from_leader.display()));
    let mut cmd = Command::new(PROMRAFT_BIN);
    cmd.args([
        "backup",
        "--addr",
        &c.node(leader).http_addr,
        "--out",
        &s(&from_leader),
        "--max-rate",
        "200000",
    ])
    .env("RUST_BACKTRACE", "0");
    let runner = std::thread::spawn(move || run_command(&mut cmd, BACKUP_CLI_TIMEOUT));
    // The partial file appears once the stream's header has arrived.
    wait_until("the throttled backup to start writing", Duration::from_secs(60), || {
        if partial.exists() {
            Ok(())
        } else {
            Err(format!("{} does not exist yet", partial.display()))
        }
    });
    c.node_mut(leader).kill9();
    let out = runner.join().expect("backup thread");
    eprintln!(
        "{name}: backup from the killed leader {}",
        if out.status.success() { "completed" } else { "failed" }
    );
    if out.status.success() {
        // The whole stream was already in socket buffers when the leader
        // died: then it must be a whole, valid backup.
        promraft_ok(&["backup", "verify", &s(&from_leader)], &[]);
    } else {
        assert!(
            out.stderr.contains("failed") && !from_leader.exists(),
            "a backup cut by the leader's death must fail clearly and leave no file; stderr: {}\nrepro: {}",
            out.stderr,
            repro(FILE, name)
        );
        assert!(
            !PathBuf::from(format!("{}.partial", from_leader.display())).exists(),
            "partial file left"
        );
    }

    // From a follower while the cluster elects a new leader: completes.
    let from_follower = c.dir().join("from-follower.prbackup");
    let out = promraft_ok(
        &[
            "backup",
            "--addr",
            &c.node(follower).http_addr,
            "--out",
            &s(&from_follower),
        ],
        &[],
    );
    let v = promraft_ok(&["backup", "verify", &s(&from_follower)], &[]);
    assert!(
        v.contains("series 300"),
        "backup from the follower during failover: {out}\n{v}"
    );
}
