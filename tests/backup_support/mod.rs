//! Helpers shared by the backup tests: running `promraft backup`,
//! `verify`, `restore`, `export` and `import` as child processes, writing a
//! grid of samples, and restoring a backup into a running node.
//!
//! Builds on the harness in `tests/common` (nodes, HTTP, waits) and adds
//! nothing that changes it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Deadline of one backup, verify, restore, export or import command.
pub const BACKUP_CLI_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `promraft <args>` with extra environment variables.
pub fn promraft(args: &[&str], env: &[(&str, &str)]) -> CommandOutput {
    let mut cmd = Command::new(PROMRAFT_BIN);
    cmd.args(args).env("NO_COLOR", "1").env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(&mut cmd, BACKUP_CLI_TIMEOUT)
}

/// Runs `promraft <args>` and asserts success; returns stdout.
pub fn promraft_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = promraft(args, env);
    assert!(
        out.status.success(),
        "`promraft {}` failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs `promraft <args>`, asserts it fails, and returns stderr.
pub fn promraft_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = promraft(args, env);
    assert!(
        !out.status.success(),
        "`promraft {}` should have failed but succeeded:\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stderr
}

/// Writes a backup key file private to its owner (mode 0600): promraft
/// refuses a key file that group or others may read.
pub fn write_key_file(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write key file {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
}

/// The value the grid writes for series `i` at step `k`.
pub fn grid_value(i: usize, k: usize) -> f64 {
    (k * 7 + i) as f64 * 0.5
}

/// Writes `series` series of `metric` (label `i`, and `g` = i % 5) with
/// `steps` samples each, `step_ms` apart from `from_ms`; each request holds
/// one step of every series.
pub fn write_grid(node: &TestNode, metric: &str, series: usize, from_ms: i64, steps: usize, step_ms: i64) {
    for k in 0..steps {
        let ts: Vec<_> = (0..series)
            .map(|i| {
                let (is, gs) = (i.to_string(), (i % 5).to_string());
                crate::common::series(
                    &[("__name__", metric), ("i", &is), ("g", &gs)],
                    &[(from_ms + k as i64 * step_ms, grid_value(i, k))],
                )
            })
            .collect();
        node.write_ok(&write_request(ts));
    }
}

/// The samples [`write_grid`] writes, by series, for the series `i` that
/// `keep` accepts (as [`TestNode::raw_samples`] returns them).
pub fn grid_samples(
    metric: &str,
    series: usize,
    from_ms: i64,
    steps: usize,
    step_ms: i64,
    keep: impl Fn(usize) -> bool,
) -> std::collections::BTreeMap<LabelSet, Vec<(i64, f64)>> {
    (0..series)
        .filter(|&i| keep(i))
        .map(|i| {
            let (is, gs) = (i.to_string(), (i % 5).to_string());
            let labels = label_set_of(&[("__name__", metric), ("i", &is), ("g", &gs)]);
            let samples = (0..steps)
                .map(|k| (from_ms + k as i64 * step_ms, grid_value(i, k)))
                .collect();
            (labels, samples)
        })
        .collect()
}

/// Restores `backup` into `data_dir` as node `id` and starts it; waits
/// until it is ready. Returns the node and `restore`'s stdout.
pub fn restore_and_start(
    backup: &Path,
    data_dir: &Path,
    id: u64,
    key_args: &[&str],
    env: &[(&str, &str)],
) -> (TestNode, String) {
    let (http, raft) = (free_addr(), free_addr());
    let b = backup.display().to_string();
    let d = data_dir.display().to_string();
    let ids = id.to_string();
    let mut args = vec![
        "restore",
        "--in",
        &b,
        "--data-dir",
        &d,
        "--node-id",
        &ids,
        "--http-addr",
        &http,
        "--raft-addr",
        &raft,
    ];
    args.extend_from_slice(key_args);
    let out = promraft_ok(&args, env);
    let mut node = TestNode::start_with(id, data_dir, http.clone(), raft.clone(), &[]);
    node.wait_ready(READY_TIMEOUT);
    (node, out)
}

/// The applied index that `promraft backup` reports on stdout.
pub fn backup_index(stdout: &str) -> u64 {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "index")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no `index N` in backup output {stdout:?}"))
}
