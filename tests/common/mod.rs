//! Harness shared by the integration tests: it runs the real `promraft`
//! binary (and, for the peer tests, other programs) as child processes on
//! ephemeral ports, talks to them with a tiny blocking HTTP/1.1 client, and
//! builds remote-write requests.
//!
//! Rules it keeps so that tests stay honest and leave nothing behind:
//! - every wait is a loop bounded by a deadline ([`wait_until`]); sleeps only
//!   space out polls, they never stand in for a condition;
//! - every child process is killed by its own pid when its guard ([`Proc`])
//!   drops, also when the test panics;
//! - when a test panics while a child is alive, the guard prints the tail of
//!   the child's log, so a failure explains itself.
//!
//! It knows nothing about how many nodes a test runs: a three-node test
//! starts three [`TestNode`]s (with the cluster flags in `extra_args`).
//! Every test binary compiles this module on its own and uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::Value;

pub use promraft::prompb;

/// The binary under test, built by cargo for integration tests.
pub const PROMRAFT_BIN: &str = env!("CARGO_BIN_EXE_promraft");

/// How long one HTTP exchange may take. Generous: the suite runs on two
/// cores next to other builds, and a debug binary is slow.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node may take from spawn to ready. A debug build on a busy
/// two-core machine starts in well under a second; thirty leave room for a
/// machine under heavy load without letting a hung node stall the suite.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERM'd node may take to checkpoint and exit. The node
/// itself gives its shutdown 20 s before giving up.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of a child's log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

/// Interval between polls in [`wait_until`]: short enough that waits end
/// promptly, long enough not to steal a core from the process polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------------
// Ports and time

/// Ports already handed out by this test binary, so two nodes started by
/// parallel tests of one binary never get the same port.
static PORTS_HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free TCP port on 127.0.0.1: bind port 0, read the port, drop the
/// listener. Another process could take it before the child binds it; the
/// kernel hands out ephemeral ports in a random order, so that is rare, and
/// [`TestNode::wait_ready`] then fails with the child's log saying so.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
        let port = listener.local_addr().expect("local address of a bound listener").port();
        drop(listener);
        if PORTS_HANDED_OUT.lock().expect("port registry lock").insert(port) {
            return port;
        }
    }
    panic!("no fresh ephemeral port after 100 tries");
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Milliseconds as the API's Unix seconds with a fraction (`1700000000.123`).
pub fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Polls `probe` until it returns `Ok`, at most `timeout`; panics with
/// `what` and the last error otherwise. Use this for every wait.
pub fn wait_until<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    poll_until(timeout, probe)
        .unwrap_or_else(|last| panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}"))
}

/// Polls `probe` until it returns `Ok`, at most `timeout`; on timeout
/// returns the last error. For waits whose timeout is an expected outcome.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The command that reruns one test, for failure messages.
pub fn repro(test_file: &str, test_name: &str) -> String {
    format!("cargo test --test {test_file} {test_name} -- --exact --nocapture")
}

// ---------------------------------------------------------------------------
// Test directories

/// A temporary directory for one test's data and logs: removed when the test
/// passes, kept (and its path printed) when it fails, so the logs and data
/// of a failed run stay for a post-mortem. Declare it before the nodes that
/// use it, so the nodes drop (and print their logs) first.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    /// A fresh directory under the system temp dir.
    pub fn new() -> TestDir {
        TestDir(Some(
            tempfile::Builder::new()
                .prefix("promraft-test-")
                .tempdir()
                .expect("create a temp dir"),
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("directory present until drop").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("test failed: kept its directory {}", d.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// A child process with its output in a log file. Dropping the guard kills
/// the process (SIGKILL to its own pid) and reaps it; if the thread is
/// panicking, the tail of the log is printed first.
pub struct Proc {
    name: String,
    child: Child,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log_path` (created
    /// if missing; a header line separates runs in the same file).
    pub fn spawn(name: &str, cmd: &mut Command, log_path: &Path) -> Proc {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("open log file {}: {e}", log_path.display()));
        writeln!(log, "===== harness: spawning {name}: {cmd:?}").expect("write the log header");
        let err = log.try_clone().expect("clone the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on a child");
        }
        self.exit
    }

    /// SIGKILL (via `Child::kill`) and reap. No graceful shutdown of any kind.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.exited() {
            return s;
        }
        // An error here means the process is already gone; wait tells.
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for a killed child");
        self.exit = Some(status);
        status
    }

    /// SIGTERM to the process's own pid, then waits for it to exit, at most
    /// `timeout`. On timeout the process is killed and an error returned.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(s) = self.exited() {
            return Ok(s);
        }
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) with the pid of a child we have not reaped yet, so
        // the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            return Err(format!("kill({pid}, SIGTERM): {}", io::Error::last_os_error()));
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let status = self.kill9();
        Err(format!(
            "{} (pid {pid}) did not exit within {timeout:?} of SIGTERM; killed it ({status})",
            self.name
        ))
    }

    /// The last `lines` lines of the log, with terminal colour codes removed.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // No panicking in drop: a failed try_wait counts as "running", and
        // killing an already reaped child only returns an error.
        let was_running = self.exit.is_none() && !matches!(self.child.try_wait(), Ok(Some(_)));
        if was_running {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} (pid {}, {}) log tail, {}:\n{}\n----- end of {} log",
                self.name,
                self.pid(),
                if was_running {
                    "killed by the harness"
                } else {
                    "had exited"
                },
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES),
                self.name
            );
        }
    }
}

/// The last `lines` lines of a log file, without ANSI escape sequences.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut bytes = Vec::new();
    if let Err(e) = File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        return format!("(cannot read {}: {e})", path.display());
    }
    let text = strip_ansi(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a short-lived command printed.
#[derive(Debug)]
pub struct CommandOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a short-lived command to completion, at most `timeout`; on timeout
/// kills it (by its own pid) and panics with what it printed so far.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> CommandOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on a child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    match status {
        Some(status) => CommandOutput { status, stdout, stderr },
        None => panic!("{cmd:?} did not finish within {timeout:?}; stdout: {stdout:?}; stderr: {stderr:?}"),
    }
}

/// The sum of every sample of metric `name` in a text exposition (all label
/// sets), or `None` if the metric is absent.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(after) = rest.strip_prefix('{') {
            after.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // a longer name with this prefix
        };
        if let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// The reference peer `program` (Debian's prometheus, promtool) on `PATH`,
/// or `None` after a message when the test should be skipped; panics
/// instead under `PROMRAFT_REQUIRE_PEERS=1` (as `.ci/run` sets).
pub fn peer(program: &str, test: &str) -> Option<PathBuf> {
    if let Some(p) = which(program) {
        return Some(p);
    }
    let required = std::env::var("PROMRAFT_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{program} is not on PATH and PROMRAFT_REQUIRE_PEERS=1 requires it (Debian: apt-get install prometheus \
         prometheus-node-exporter prometheus-alertmanager)"
    );
    eprintln!("SKIPPED {test}: {program} is not on PATH (set PROMRAFT_REQUIRE_PEERS=1 to make this a failure)");
    None
}

/// Starts the `prometheus` binary with `config`, written to
/// `<dir>/<name>.yml`, its TSDB in `<dir>/<name>-data`, its log in
/// `<dir>/<name>.log`, listening on `addr` (tests that put Prometheus's own
/// address into its config choose it first).
pub fn start_prometheus(prometheus: &Path, dir: &Path, name: &str, addr: &str, config: &str) -> Proc {
    let config_path = dir.join(format!("{name}.yml"));
    std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join(format!("{name}-data")).display()
        ))
        .arg(format!("--web.listen-address={addr}"));
    Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")))
}

/// Finds an executable on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// A promraft node

/// One `promraft serve` process and everything needed to restart it the
/// same way: id, data directory, addresses and extra flags.
pub struct TestNode {
    /// `--node-id`.
    pub id: u64,
    /// `--data-dir`; the log file `promraft.log` lives here too.
    pub data_dir: PathBuf,
    /// `--http-addr`.
    pub http_addr: String,
    /// `--raft-addr`.
    pub raft_addr: String,
    /// Further flags, e.g. cluster membership for multi-node tests.
    pub extra_args: Vec<String>,
    proc: Option<Proc>,
}

impl TestNode {
    /// Starts a node on fresh ephemeral ports. Does not wait for it.
    pub fn start(id: u64, data_dir: &Path) -> TestNode {
        Self::start_with(id, data_dir, free_addr(), free_addr(), &[])
    }

    /// Starts a node with the given addresses and extra flags.
    pub fn start_with(id: u64, data_dir: &Path, http_addr: String, raft_addr: String, extra_args: &[&str]) -> TestNode {
        std::fs::create_dir_all(data_dir).unwrap_or_else(|e| panic!("create {}: {e}", data_dir.display()));
        let mut node = TestNode {
            id,
            data_dir: data_dir.to_path_buf(),
            http_addr,
            raft_addr,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            proc: None,
        };
        node.spawn();
        node
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(PROMRAFT_BIN);
        cmd.arg("serve")
            .arg("--node-id")
            .arg(self.id.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(&self.http_addr)
            .arg("--raft-addr")
            .arg(&self.raft_addr);
        // Tests drive the admin API (membership, backups, deletes); a test
        // of the switch itself passes a --web.enable-admin-api of its own.
        if !self.extra_args.iter().any(|a| a.starts_with("--web.enable-admin-api")) {
            cmd.arg("--web.enable-admin-api");
        }
        cmd.args(&self.extra_args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "node {} is already running", self.id);
        let name = format!("promraft node {}", self.id);
        self.proc = Some(Proc::spawn(&name, &mut self.command(), &self.log_path()));
    }

    /// Starts the process again with the same id, data directory, addresses
    /// and flags. The node must have been stopped or killed.
    pub fn restart(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            assert!(p.exited().is_some(), "restart of node {} while it runs", self.id);
        }
        self.proc = None;
        self.spawn();
    }

    /// The log file of every run of this node.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("promraft.log")
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("node process").pid()
    }

    /// The command line that starts this node by hand, for failure messages.
    pub fn command_line(&self) -> String {
        format!("{:?}", self.command()).replace('"', "")
    }

    /// Polls `/-/ready` until it answers 200, at most `timeout`. Fails at
    /// once, with the log, if the process exits meanwhile.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.as_mut().expect("node process").exited() {
                panic!(
                    "node {} exited ({status}) before it was ready; command: {}\nlog tail:\n{}",
                    self.id,
                    self.command_line(),
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            let last = match http_request(&self.http_addr, "GET", "/-/ready", &[], b"") {
                Ok(r) if r.status == 200 => return,
                Ok(r) => format!("HTTP {}: {}", r.status, r.text().trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "node {} not ready within {timeout:?} (last /-/ready: {last}); command: {}",
                    self.id,
                    self.command_line()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills the process with SIGKILL and reaps it: a crash, nothing flushed.
    pub fn kill9(&mut self) -> ExitStatus {
        self.proc.as_mut().expect("node process").kill9()
    }

    /// Graceful stop: SIGTERM, then waits for the exit, at most `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        self.proc.as_mut().expect("node process").terminate(timeout)
    }

    /// `true` while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    // --- HTTP ---

    /// One request to this node.
    pub fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        http_request(&self.http_addr, method, target, headers, body)
    }

    /// One request to this node; panics if the exchange itself fails.
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        self.try_request(method, target, headers, body)
            .unwrap_or_else(|e| panic!("{method} {target} to node {} ({}): {e}", self.id, self.http_addr))
    }

    /// `GET path?params` with the parameters url-encoded.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> HttpResponse {
        self.request("GET", &with_query(path, params), &[], b"")
    }

    /// `POST path` with the parameters as a url-encoded form body.
    pub fn post_form(&self, path: &str, params: &[(&str, &str)]) -> HttpResponse {
        let body = serde_urlencoded::to_string(params).expect("url-encode form parameters");
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    /// `GET` a Prometheus API endpoint and return `data`, asserting a 200
    /// with `"status":"success"`.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        api_get(&self.http_addr, path, params)
    }

    /// Sends a remote-write request, encoded as a well-behaved sender does.
    pub fn try_write(&self, req: &prompb::WriteRequest) -> io::Result<HttpResponse> {
        self.try_request("POST", "/api/v1/write", REMOTE_WRITE_HEADERS, &encode_write(req))
    }

    /// Sends a remote-write request; panics if the exchange fails.
    pub fn write(&self, req: &prompb::WriteRequest) -> HttpResponse {
        self.try_write(req)
            .unwrap_or_else(|e| panic!("remote write to node {} ({}): {e}", self.id, self.http_addr))
    }

    /// Sends a remote-write request and asserts the 204.
    pub fn write_ok(&self, req: &prompb::WriteRequest) {
        let r = self.write(req);
        assert_eq!(
            r.status,
            204,
            "remote write of {} series to node {}: expected 204, got {} with body {:?}",
            req.timeseries.len(),
            self.id,
            r.status,
            r.text()
        );
    }

    /// Every raw sample of the series matching `selector` with timestamps in
    /// `[from_ms, to_ms]`, by label set (an instant query of a range
    /// selector, which returns stored samples unchanged).
    pub fn raw_samples(&self, selector: &str, from_ms: i64, to_ms: i64) -> BTreeMap<LabelSet, Vec<(i64, f64)>> {
        // A range selector covers (t - range, t]; one extra millisecond
        // brings `from_ms` in.
        let query = format!("{selector}[{}ms]", to_ms - from_ms + 1);
        let data = self.api("/api/v1/query", &[("query", &query), ("time", &secs(to_ms))]);
        assert_eq!(
            data["resultType"], "matrix",
            "query {query}: expected a matrix, got {data}"
        );
        parse_matrix(&data["result"])
    }

    /// The node's `/api/v1/status/digest` data.
    pub fn digest(&self) -> Digest {
        let d = self.api("/api/v1/status/digest", &[]);
        Digest {
            digest: d["digest"].as_str().expect("digest is a string").to_string(),
            series: d["series"].as_u64().expect("series is a number"),
            samples: d["samples"].as_u64().expect("samples is a number"),
            applied_index: d["appliedIndex"].as_u64().expect("appliedIndex is a number"),
        }
    }
}

/// `/api/v1/status/digest`: a hash of the replica and the index it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Hash of the replica's content.
    pub digest: String,
    /// Series held.
    pub series: u64,
    /// Samples held.
    pub samples: u64,
    /// The applied Raft index the hash belongs to.
    pub applied_index: u64,
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client

/// A response, with its body already de-chunked.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// `data` of a successful Prometheus API response; panics otherwise.
    pub fn api_data(&self, what: &str) -> Value {
        assert_eq!(
            self.status,
            200,
            "{what}: expected 200, got {} with body {:?}",
            self.status,
            self.text()
        );
        let v = self.json();
        assert_eq!(v["status"], "success", "{what}: expected status success, got {v}");
        v["data"].clone()
    }
}

/// `path?k=v&...` with url-encoding; just `path` without parameters.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(params).expect("url-encode query parameters")
    )
}

/// `GET` a Prometheus API endpoint of any server (promraft or Prometheus)
/// and return `data`, asserting a 200 with `"status":"success"`.
pub fn api_get(addr: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let target = with_query(path, params);
    let r = http_request(addr, "GET", &target, &[], b"").unwrap_or_else(|e| panic!("GET {target} from {addr}: {e}"));
    r.api_data(&format!("GET {target} from {addr}"))
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`).
/// `Content-Length` is added unless `headers` sets it or
/// `Transfer-Encoding`.
pub fn http_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = connect(addr)?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let sets = |h: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(h));
    if !sets("content-length") && !sets("transfer-encoding") && (method != "GET" || !body.is_empty()) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(&mut stream)
}

/// A TCP connection with [`HTTP_TIMEOUT`] on connect, reads and writes.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address for {addr}")))?;
    let stream = TcpStream::connect_timeout(&sa, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one response: status line, headers, then a body delimited by
/// `Content-Length`, chunked encoding, or the end of the connection.
pub fn read_response(stream: &mut impl Read) -> io::Result<HttpResponse> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(bad(format!(
                "connection closed before the response head ({} bytes read)",
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = buf[head_end + 4..].to_vec();
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(bad(format!("body cut at {} of {len} bytes", body.len())));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if chunked {
        loop {
            if let Some(decoded) = dechunk(&body).map_err(bad)? {
                body = decoded;
                break;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(bad("connection closed inside a chunked body".into()));
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 204 && status != 304 {
        stream.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

/// Decodes a complete chunked body; `Ok(None)` if more bytes are needed.
fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = raw[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&raw[pos..pos + eol]).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        pos += eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[pos..pos + size]);
        pos += size + 2;
    }
}

// ---------------------------------------------------------------------------
// Remote write

/// Headers a remote-write 1.0 sender sends.
pub const REMOTE_WRITE_HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ("User-Agent", "promraft-integration-tests"),
];

/// Labels sorted by name, as remote write requires.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<prompb::Label> {
    let mut out: Vec<prompb::Label> = pairs
        .iter()
        .map(|(n, v)| prompb::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A series with its labels (`__name__` included in `pairs`) sorted.
pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> prompb::TimeSeries {
    prompb::TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

/// A request of `timeseries` and no metadata.
pub fn write_request(timeseries: Vec<prompb::TimeSeries>) -> prompb::WriteRequest {
    prompb::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
}

/// snappy block format, as remote write uses.
pub fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("snappy-compress a test body")
}

/// A remote-write body: protobuf, then snappy.
pub fn encode_write(req: &prompb::WriteRequest) -> Vec<u8> {
    snappy(&req.encode_to_vec())
}

// ---------------------------------------------------------------------------
// Prometheus API results

/// A series identity as the JSON API shows it.
pub type LabelSet = BTreeMap<String, String>;

/// A label set from a JSON object of strings.
pub fn label_set(v: &Value) -> LabelSet {
    v.as_object()
        .unwrap_or_else(|| panic!("expected a label object, got {v}"))
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_else(|| panic!("label {k} is not a string: {v}"));
            (k.clone(), v.to_string())
        })
        .collect()
}

/// A label set from pairs.
pub fn label_set_of(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `[<unix seconds>, "<value>"]` as `(ms, value)`, checking the JSON types
/// Prometheus uses: a number for the time, a string for the value.
pub fn parse_point(p: &Value) -> (i64, f64) {
    let arr = p
        .as_array()
        .filter(|a| a.len() == 2)
        .unwrap_or_else(|| panic!("expected [time, \"value\"], got {p}"));
    let t = arr[0]
        .as_f64()
        .unwrap_or_else(|| panic!("time must be a JSON number, got {}", arr[0]));
    let v = arr[1]
        .as_str()
        .unwrap_or_else(|| panic!("value must be a JSON string, got {}", arr[1]));
    let v: f64 = v.parse().unwrap_or_else(|e| panic!("value {v:?} is not a float: {e}"));
    ((t * 1000.0).round() as i64, v)
}

/// A matrix result (`[{"metric":{...},"values":[...]}]`) by label set.
pub fn parse_matrix(result: &Value) -> BTreeMap<LabelSet, Vec<(i64, f64)>> {
    let mut out = BTreeMap::new();
    for s in result
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {result}"))
    {
        let points = s["values"]
            .as_array()
            .unwrap_or_else(|| panic!("series without \"values\": {s}"))
            .iter()
            .map(parse_point)
            .collect();
        let prev = out.insert(label_set(&s["metric"]), points);
        assert!(prev.is_none(), "series {} appears twice in a matrix", s["metric"]);
    }
    out
}

/// A vector result (`[{"metric":{...},"value":[t,"v"]}]`) by label set.
pub fn parse_vector(result: &Value) -> BTreeMap<LabelSet, (i64, f64)> {
    let mut out = BTreeMap::new();
    for s in result
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {result}"))
    {
        let prev = out.insert(label_set(&s["metric"]), parse_point(&s["value"]));
        assert!(prev.is_none(), "series {} appears twice in a vector", s["metric"]);
    }
    out
}
pub mod cluster;
pub mod rules;
pub mod tls;
