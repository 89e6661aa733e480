mod common;
use std::time::{Duration, Instant};
use common::cluster::*;
use common::*;
#[test]
fn probe() {
    let mut c = Cluster::start(3, RaftTiming::default(), "");
    let all = c.ids();
    let leader = c.wait_leader(&all, CLUSTER_READY_TIMEOUT).leader_id.unwrap();
    let mut targets: Vec<Vec<(u64, String)>> = all.iter().map(|&id| c.targets(&[id])).collect();
    targets.push(c.targets(&all));
    let load = WriteLoad::start(&WriterSpec::small("probe", 2, now_ms() - 3_600_000), targets);
    load.wait_more_acks(100, Duration::from_secs(30));
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let k = Instant::now();
    c.node_mut(leader).kill9();
    let first = poll_until(Duration::from_secs(30), || load.first_ack_sent_after(k, Some(leader)).ok_or("x".to_string())).unwrap();
    println!("kill at unix ms {wall}, first ack +{} ms", (first.done - k).as_millis());
    drop(load);
    for id in all { if id != leader {
        let log = std::fs::read_to_string(c.node(id).log_path()).unwrap();
        for l in log.lines().filter(|l| l.contains("vote is changing") || l.contains("leader") && l.contains("establish") || l.contains("election") ) { println!("node {id}: {}", &l[..l.len().min(250)]); }
    }}
}
