//! Recording and alerting rules on a three-node cluster: the leader
//! evaluates, results go through the log to every replica, alerts go
//! pending then firing on the group's grid, and a leader killed while an
//! alert is pending does not restart its `for` timer (the next leader
//! restores `activeAt` from `ALERTS_FOR_STATE`).

mod common;

use std::time::Duration;

use common::cluster::{Cluster, RaftTiming};
use common::rules::{first_firing_ms, high_load, prometheus_config, rfc3339_ms, write_load};
use common::{api_get, now_ms, wait_until, TestDir};

/// Long enough for a three-node cluster on a busy two-core machine to
/// elect a leader, evaluate and replicate.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn start(for_s: i64) -> (Cluster, Vec<String>) {
    let dir = TestDir::new();
    let args = prometheus_config(dir.path(), for_s, "");
    let c = Cluster::start_in(dir, 3, RaftTiming::default(), "", args.clone());
    (c, args)
}

#[test]
fn recording_results_reach_every_replica_and_alerts_fire_on_schedule() {
    let for_s = 6;
    let (c, _) = start(for_s);
    let leader = c.wait_leader(&c.ids(), STEP_TIMEOUT).leader_id.expect("a leader");
    write_load(&c, leader);
    for id in c.ids() {
        let addr = c.node(id).http_addr.clone();
        wait_until(&format!("job:test_load:sum on node {id}"), STEP_TIMEOUT, || {
            let d = api_get(&addr, "/api/v1/query", &[("query", "job:test_load:sum")]);
            match d["result"][0]["value"][1].as_str() {
                Some("20") => Ok(()),
                _ => Err(format!("got {d}")),
            }
        });
    }
    // Pending first, asked on a follower (relayed to the leader).
    let follower = c.ids().into_iter().find(|i| *i != leader).expect("a follower");
    let faddr = c.node(follower).http_addr.clone();
    let pending = wait_until("HighLoad pending", STEP_TIMEOUT, || high_load(&faddr));
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["annotations"]["summary"], "load of a is 20");
    assert_eq!(pending["value"], "2e+01");
    let active_at = rfc3339_ms(&pending["activeAt"]);
    let rules = api_get(&faddr, "/api/v1/rules", &[]);
    let group = &rules["groups"][0];
    assert_eq!(group["name"], "load");
    assert_eq!(group["interval"], 1.0);
    assert_eq!(group["rules"][0]["type"], "recording");
    assert_eq!(group["rules"][0]["health"], "ok", "{rules}");
    let alert_rule = &group["rules"][1];
    assert_eq!(alert_rule["type"], "alerting");
    assert_eq!(alert_rule["duration"], for_s as f64);
    assert!(
        alert_rule["state"] == "pending" || alert_rule["state"] == "firing",
        "{rules}"
    );
    let only_alerts = api_get(&faddr, "/api/v1/rules", &[("type", "alert")]);
    assert_eq!(only_alerts["groups"][0]["rules"].as_array().map(Vec::len), Some(1));
    // Then firing, at the first grid point `for` after activeAt, on every replica.
    let firing = wait_until("HighLoad firing", STEP_TIMEOUT, || {
        let a = high_load(&faddr)?;
        if a["state"] == "firing" {
            Ok(a)
        } else {
            Err(format!("still {a}"))
        }
    });
    assert_eq!(rfc3339_ms(&firing["activeAt"]), active_at, "activeAt kept: {firing}");
    for id in c.ids() {
        let addr = c.node(id).http_addr.clone();
        let fired = wait_until(&format!("firing ALERTS on node {id}"), STEP_TIMEOUT, || {
            first_firing_ms(&addr)
        });
        assert_eq!(
            fired,
            active_at + for_s * 1000,
            "node {id}: fired at {fired}, activeAt {active_at}"
        );
    }
}

#[test]
fn a_pending_alert_keeps_its_active_at_when_the_leader_is_killed() {
    let for_s = 15;
    let (mut c, _) = start(for_s);
    let leader = c.wait_leader(&c.ids(), STEP_TIMEOUT).leader_id.expect("a leader");
    write_load(&c, leader);
    let laddr = c.node(leader).http_addr.clone();
    let pending = wait_until("HighLoad pending on the leader", STEP_TIMEOUT, || high_load(&laddr));
    let active_at = rfc3339_ms(&pending["activeAt"]);
    // Let the for-state reach the log a few times, then kill the leader
    // well before `for` ends.
    wait_until("two evaluations after activeAt", STEP_TIMEOUT, || {
        if now_ms() >= active_at + 2_500 {
            Ok(())
        } else {
            Err("waiting".to_string())
        }
    });
    assert!(
        now_ms() < active_at + for_s * 1000 - 5_000,
        "the test was too slow to kill while pending"
    );
    c.node_mut(leader).kill9();
    let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let new_leader = c.wait_leader(&rest, STEP_TIMEOUT).leader_id.expect("a new leader");
    let naddr = c.node(new_leader).http_addr.clone();
    let restored = wait_until("HighLoad on the new leader", STEP_TIMEOUT, || high_load(&naddr));
    assert_eq!(
        rfc3339_ms(&restored["activeAt"]),
        active_at,
        "the new leader restarted the for timer: {restored}"
    );
    let fired = wait_until("HighLoad firing after the failover", STEP_TIMEOUT, || {
        first_firing_ms(&naddr)
    });
    assert_eq!(
        fired,
        active_at + for_s * 1000,
        "fired at {fired}, activeAt {active_at}: not on the original schedule"
    );
    let firing = high_load(&naddr).expect("firing alert");
    assert_eq!(firing["state"], "firing");
    assert_eq!(rfc3339_ms(&firing["activeAt"]), active_at);
}

#[test]
fn a_reload_applies_new_rules_and_a_bad_rule_file_keeps_the_old_ones() {
    let (c, args) = start(60);
    let leader = c.wait_leader(&c.ids(), STEP_TIMEOUT).leader_id.expect("a leader");
    // args: --prometheus-config <dir>/prometheus.yml, beside rules.yml.
    let rules_file = std::path::Path::new(&args[1])
        .parent()
        .expect("config directory")
        .join("rules.yml");
    let names = |addr: &str| -> Vec<String> {
        let d = api_get(addr, "/api/v1/rules", &[]);
        d["groups"][0]["rules"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let laddr = c.node(leader).http_addr.clone();
    assert_eq!(names(&laddr), vec!["job:test_load:sum", "HighLoad"]);
    let reload_all = |c: &Cluster| {
        for id in c.ids() {
            let r = c.node(id).request("POST", "/-/reload", &[], b"");
            assert_eq!(r.status, 200, "reload on node {id}: {}", r.text());
        }
    };
    // A new rule: every node loads it, the leader evaluates it.
    let text = std::fs::read_to_string(&rules_file).expect("read rules");
    let added = text.replace(
        "    rules:\n",
        "    rules:\n      - record: test:one\n        expr: vector(1)\n",
    );
    std::fs::write(&rules_file, &added).expect("write rules");
    reload_all(&c);
    wait_until("the new rule on the leader", STEP_TIMEOUT, || {
        let n = names(&laddr);
        if n.first().map(String::as_str) == Some("test:one") {
            Ok(())
        } else {
            Err(format!("rules {n:?}"))
        }
    });
    wait_until("test:one evaluated", STEP_TIMEOUT, || {
        let d = api_get(&laddr, "/api/v1/query", &[("query", "test:one")]);
        d["result"][0]["value"][1]
            .as_str()
            .filter(|v| *v == "1")
            .map(|_| ())
            .ok_or(format!("{d}"))
    });
    // A broken rule file: refused, the rules in force stay.
    std::fs::write(
        &rules_file,
        "groups: [{name: x, rules: [{record: 'bad name', expr: up}]}]",
    )
    .expect("write");
    reload_all(&c);
    wait_until(
        "the refusal in /metrics",
        STEP_TIMEOUT,
        || match common::cluster::node_metric(&laddr, "promraft_rule_files_last_reload_successful")? {
            0.0 => Ok(()),
            v => Err(format!("promraft_rule_files_last_reload_successful {v}")),
        },
    );
    assert_eq!(names(&laddr), vec!["test:one", "job:test_load:sum", "HighLoad"]);
}
