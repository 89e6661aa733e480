//! Alerts reach a real Alertmanager HA pair (Debian's
//! `prometheus-alertmanager`, two instances in one gossip cluster) with a
//! webhook receiver, across two promraft leader kills: one while the
//! alert is pending, one while it fires. The receiver gets exactly one
//! notification, whose `startsAt` is the original schedule.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{node_metric, Cluster, RaftTiming};
use common::rules::{high_load, prometheus_config, rfc3339_ms, write_load};
use common::{free_port, now_ms, peer, wait_until, Proc, TestDir};
use serde_json::Value;

/// Generous: elections, evaluations, Alertmanager's group_wait and gossip.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Alertmanager's `--cluster.peer-timeout` here: the second instance of
/// the pair waits this long for the first's notification to be gossiped
/// before it would send one itself.
const AM_PEER_TIMEOUT_S: u64 = 2;

/// How long the test watches for a duplicate notification after an
/// event: several peer timeouts, group_wait and a promraft resend.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(12);

/// A webhook receiver: counts POSTs and keeps their JSON bodies.
struct Webhook {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("address").to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        // The thread ends with the test process; it only answers on 127.0.0.1.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(&stream);
                let mut len = 0usize;
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().expect("bodies lock").push(v);
                    }
                }
                let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Webhook { addr, bodies }
    }

    fn received(&self) -> Vec<Value> {
        self.bodies.lock().expect("bodies lock").clone()
    }
}

/// Starts the two Alertmanagers of one gossip cluster; returns their
/// processes and web addresses.
fn start_alertmanagers(bin: &std::path::Path, dir: &std::path::Path, hook: &str) -> (Vec<Proc>, Vec<String>) {
    let cfg = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 5m\n  repeat_interval: 4h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook}/hook\n        send_resolved: false\n"
    );
    let cfg_path = dir.join("alertmanager.yml");
    std::fs::write(&cfg_path, cfg).expect("write the Alertmanager config");
    let gossip: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut procs = Vec::new();
    let mut webs = Vec::new();
    for i in 0..2 {
        let web = format!("127.0.0.1:{}", free_port());
        let storage = dir.join(format!("am{i}"));
        std::fs::create_dir_all(&storage).expect("Alertmanager storage");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={web}"))
            .arg(format!("--cluster.listen-address={}", gossip[i]))
            .arg(format!("--cluster.advertise-address={}", gossip[i]))
            .arg(format!("--cluster.peer={}", gossip[1 - i]))
            .arg(format!("--cluster.peer-timeout={AM_PEER_TIMEOUT_S}s"))
            .arg("--cluster.pushpull-interval=2s");
        procs.push(Proc::spawn(
            &format!("alertmanager {i}"),
            &mut cmd,
            &dir.join(format!("am{i}.log")),
        ));
        webs.push(web);
    }
    for w in &webs {
        wait_until(&format!("Alertmanager {w} ready"), STEP_TIMEOUT, || {
            common::http_request(w, "GET", "/-/ready", &[], b"")
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    if r.status == 200 {
                        Ok(())
                    } else {
                        Err(format!("status {}", r.status))
                    }
                })
        });
    }
    (procs, webs)
}

/// The notifications for HighLoad the receiver got.
fn notifications(hook: &Webhook) -> Vec<Value> {
    hook.received()
        .into_iter()
        .filter(|b| {
            b["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["labels"]["alertname"] == "HighLoad"))
        })
        .collect()
}

fn leader_of(c: &Cluster, among: &[u64]) -> u64 {
    c.wait_leader(among, STEP_TIMEOUT).leader_id.expect("a leader")
}

#[test]
fn one_notification_with_the_original_start_across_two_leader_kills() {
    let test = "one_notification_with_the_original_start_across_two_leader_kills";
    let Some(am_bin) = peer("prometheus-alertmanager", test) else {
        return;
    };
    let dir = TestDir::new();
    let hook = Webhook::start();
    let (_ams, am_webs) = start_alertmanagers(&am_bin, dir.path(), &hook.addr);
    let for_s = 10;
    let targets = am_webs.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", ");
    let alerting = format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{targets}]\n");
    let args = prometheus_config(dir.path(), for_s, &alerting);
    let mut c = Cluster::start_in(TestDir::new(), 3, RaftTiming::default(), "", args);
    let ams = common::api_get(&c.node(1).http_addr, "/api/v1/alertmanagers", &[]);
    assert_eq!(ams["activeAlertmanagers"].as_array().map(Vec::len), Some(2), "{ams}");

    // Kill 1: while the alert is pending.
    let leader = leader_of(&c, &c.ids());
    write_load(&c, leader);
    let laddr = c.node(leader).http_addr.clone();
    let pending = wait_until("HighLoad pending", STEP_TIMEOUT, || high_load(&laddr));
    let active_at = rfc3339_ms(&pending["activeAt"]);
    assert!(
        now_ms() < active_at + for_s * 1000 - 3_000,
        "too slow to kill while pending"
    );
    c.node_mut(leader).kill9();
    let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let second = leader_of(&c, &rest);
    c.node_mut(leader).restart();
    c.wait_all_ready();

    let first = wait_until("the first notification", STEP_TIMEOUT, || {
        match notifications(&hook).first() {
            Some(n) => Ok(n.clone()),
            None => Err(format!("nothing yet; the receiver got {:?}", hook.received())),
        }
    });
    let starts = rfc3339_ms(&first["alerts"][0]["startsAt"]);
    assert_eq!(
        starts,
        active_at + for_s * 1000,
        "startsAt is not the original schedule: {first}"
    );

    // Kill 2: while it fires. The next leader resends it with the same
    // labels and startsAt; Alertmanager takes it as the same alert.
    let saddr = c.node(second).http_addr.clone();
    let firing = high_load(&saddr).expect("firing on the second leader");
    assert_eq!(firing["state"], "firing");
    c.node_mut(second).kill9();
    let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != second).collect();
    let third = leader_of(&c, &rest);
    let taddr = c.node(third).http_addr.clone();
    let again = wait_until("HighLoad firing on the third leader", STEP_TIMEOUT, || {
        let a = high_load(&taddr)?;
        (a["state"] == "firing").then_some(a.clone()).ok_or(format!("{a}"))
    });
    assert_eq!(rfc3339_ms(&again["activeAt"]), active_at);
    wait_until("the third leader resent the alert", STEP_TIMEOUT, || match node_metric(
        &taddr,
        "promraft_notifications_sent_total",
    )? {
        v if v > 0.0 => Ok(()),
        v => Err(format!("sent {v}")),
    });
    // Watch for a duplicate for a bounded window: nothing may arrive.
    let watched = Instant::now();
    while watched.elapsed() < DUPLICATE_WINDOW {
        std::thread::sleep(common::POLL_INTERVAL * 8);
    }
    let all = notifications(&hook);
    assert_eq!(all.len(), 1, "the receiver got {} notifications: {all:?}", all.len());
}
