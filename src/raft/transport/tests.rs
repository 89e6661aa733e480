//! Clusters of in-process nodes talking over the real gRPC transport on
//! 127.0.0.1 ephemeral ports, each with its own sled store in a temporary
//! directory. Every wait has a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::{oneshot, watch};

use super::client::GrpcNetwork;
use super::connector::TcpConnector;
use super::peer::PeerClient;
use super::server::{raft_service, serve, ForwardedWriteError, ForwardedWrites, RaftNodeInfo};
use super::snapshot;
use super::Error;
use crate::kv::{SledKv, SledOptions};
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{Applied, StateMachine};
use crate::raft::{Command, NodeId, NodeInfo, Raft};
use crate::tsdb::{AppendRequest, AppendResult, Db, HeadOptions, Labels, SeriesSamples};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// A [`ForwardedWrites`] that proposes each forwarded batch as one entry.
struct DirectWrites {
    raft: Raft,
}

impl ForwardedWrites for DirectWrites {
    fn submit(&self, reqs: Vec<AppendRequest>) -> BoxFuture<'static, Result<Vec<AppendResult>, ForwardedWriteError>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            let cmd = Command::write(&reqs).map_err(|e| ForwardedWriteError(e.to_string()))?;
            let resp = raft
                .client_write(cmd)
                .await
                .map_err(|e| ForwardedWriteError(e.to_string()))?;
            Ok(resp.data.results)
        })
    }
}

struct TestNode {
    id: NodeId,
    raft: Raft,
    db: Arc<Db>,
    info: NodeInfo,
    stop_server: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    dir: tempfile::TempDir,
}

fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "promraft-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            install_snapshot_timeout: 5_000,
            // Snapshots only when a test asks, and then purge everything
            // they cover, so a late node can only catch up by snapshot.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .expect("valid test config"),
    )
}

impl TestNode {
    /// Opens storage like `node.rs` does, starts Raft with the gRPC
    /// network and serves the Raft service on an ephemeral port.
    async fn start(id: NodeId, snapshot_chunk_bytes: usize) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let sled_db = Arc::new(SledKv::open(&dir.path().join("db"), SledOptions::default()).expect("sled"));
        let (db, _) = Db::open_kv(sled_db.clone(), HeadOptions::default()).expect("tsdb");
        let db = Arc::new(db);
        let log = LogStore::open_kv(sled_db).expect("log store");
        let (applied_tx, _) = watch::channel(Applied::default());
        let sm = StateMachine::new(db.clone(), Arc::new(applied_tx), Default::default(), Default::default())
            .expect("state machine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let info = NodeInfo {
            raft_addr: listener.local_addr().expect("local addr").to_string(),
            http_addr: "127.0.0.1:0".into(),
        };
        let net = GrpcNetwork::new(id, db.clone(), dir.path())
            .expect("network")
            .with_snapshot_chunk_bytes(snapshot_chunk_bytes);
        let raft = Raft::new(id, raft_config(), net, log, sm).await.expect("raft");
        let svc = raft_service(
            raft.clone(),
            dir.path(),
            db.inline_io(),
            Arc::new(DirectWrites { raft: raft.clone() }),
            Arc::new(RaftNodeInfo::new(raft.clone(), info.clone())),
            Default::default(),
        )
        .expect("service");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, svc, async {
            let _ = stop_rx.await;
        }));
        TestNode {
            id,
            raft,
            db,
            info,
            stop_server: Some(stop_tx),
            server,
            dir,
        }
    }

    fn client(&self) -> PeerClient {
        PeerClient::new(&TcpConnector, &self.info.raft_addr).expect("client")
    }

    fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
    }

    async fn stop(mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(WAIT, self.server).await;
    }
}

/// A request with `series` series of `samples` samples each; `round`
/// shifts timestamps so successive rounds append in order.
fn batch(round: i64, series: usize, samples: i64) -> AppendRequest {
    AppendRequest {
        series: (0..series)
            .map(|s| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", "transport_test"),
                    ("series", &format!("s{s:04}")),
                    ("padding", "a label value long enough to give the snapshot some bulk"),
                ]),
                samples: (0..samples)
                    .map(|i| {
                        let t = round * 1_000_000 + i * 1_000;
                        (t, (t as f64).sin() * s as f64)
                    })
                    .collect(),
            })
            .collect(),
        metadata: vec![],
    }
}

async fn write(raft: &Raft, req: AppendRequest) -> u64 {
    let cmd = Command::write(std::slice::from_ref(&req)).expect("encode");
    let resp = tokio::time::timeout(WAIT, raft.client_write(cmd))
        .await
        .expect("write within the deadline")
        .expect("write committed");
    assert_eq!(resp.data.results[0].rejected(), 0, "{:?}", resp.data.results);
    resp.log_id.index
}

async fn wait_applied(node: &TestNode, index: u64) {
    node.raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(index), format!("node {} applies {index}", node.id))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "node {} did not apply index {index} within {WAIT:?} (applied {}): {e}",
                node.id,
                node.applied_index()
            )
        });
}

async fn wait_leader(nodes: &[&TestNode]) -> NodeId {
    let m = nodes[0]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader within the deadline");
    let leader = m.current_leader.expect("checked above");
    // A new leader accepts writes only once a quorum has acknowledged it
    // (its lease); before that openraft answers LeaseExpired.
    let leader_node = nodes
        .iter()
        .find(|n| n.id == leader)
        .expect("the leader is one of the nodes");
    leader_node
        .raft
        .wait(Some(WAIT))
        .leader_with_quorum_acked(None, "the leader's lease")
        .await
        .expect("a quorum acknowledges the leader");
    for n in nodes {
        n.raft
            .wait(Some(WAIT))
            .current_leader(leader, format!("node {} knows leader {leader}", n.id))
            .await
            .expect("every node knows the leader");
    }
    leader
}

fn assert_same_digest(nodes: &[&TestNode]) {
    let want = nodes[0].db.digest().expect("digest");
    assert!(want.samples > 0, "the cluster holds data");
    for n in &nodes[1..] {
        let got = n.db.digest().expect("digest");
        assert_eq!(
            got,
            want,
            "node {} differs from node {} at applied {} / {}",
            n.id,
            nodes[0].id,
            n.applied_index(),
            nodes[0].applied_index()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_grpc() {
    let nodes = [
        TestNode::start(1, super::SNAPSHOT_CHUNK_BYTES).await,
        TestNode::start(2, super::SNAPSHOT_CHUNK_BYTES).await,
        TestNode::start(3, super::SNAPSHOT_CHUNK_BYTES).await,
    ];
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info.clone())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    let all: Vec<&TestNode> = nodes.iter().collect();
    let leader_id = wait_leader(&all).await;
    let leader = nodes.iter().find(|n| n.id == leader_id).expect("leader is a member");
    let follower = nodes.iter().find(|n| n.id != leader_id).expect("a follower");

    let mut last = 0;
    for round in 0..5 {
        last = write(&leader.raft, batch(round, 20, 10)).await;
    }
    for n in &nodes {
        wait_applied(n, last).await;
    }
    assert_same_digest(&all);

    // promraft's own RPCs: a write forwarded to the leader, the read index,
    // node info, and a follower refusing what only a leader may answer.
    let results = leader
        .client()
        .forward_write(&[batch(10, 5, 3), batch(11, 5, 3)], WAIT)
        .await
        .expect("forwarded write");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].appended, 15, "{results:?}");
    let ri = leader.client().read_index(WAIT).await.expect("read index");
    assert_eq!(ri.leader_id, leader_id);
    assert!(ri.index() > last, "the read index {ri:?} covers the forwarded write");
    for n in &nodes {
        wait_applied(n, ri.index()).await;
    }
    assert_same_digest(&all);
    match follower.client().forward_write(&[batch(12, 1, 1)], WAIT).await {
        Err(Error::NotLeader { leader: Some(l) }) => assert_eq!(l, leader_id),
        other => panic!("a follower must refuse a forwarded write with the leader's id, got {other:?}"),
    }
    match follower.client().read_index(WAIT).await {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, Some(leader_id)),
        other => panic!("a follower must refuse a read index, got {other:?}"),
    }
    let st = follower.client().node_info(WAIT).await.expect("node info");
    assert_eq!(st.id, follower.id);
    assert_eq!(st.raft_addr, follower.info.raft_addr);
    assert_eq!(st.role, "follower");
    assert_eq!(st.leader_id, Some(leader_id));
    assert!(st.applied_index >= ri.index());

    // Leader transfer goes through the TransferLeader RPC.
    let to = follower.id;
    leader.raft.trigger().transfer_leader(to).await.expect("transfer");
    follower
        .raft
        .wait(Some(WAIT))
        .current_leader(to, "leadership moves to the chosen follower")
        .await
        .expect("leader transferred");

    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_node_catches_up_by_snapshot() {
    // Small chunks, so the snapshot crosses the wire in many messages.
    let chunk_bytes = 4096;
    let n1 = TestNode::start(1, chunk_bytes).await;
    n1.raft
        .initialize(BTreeMap::from([(1, n1.info.clone())]))
        .await
        .expect("initialize");
    wait_leader(&[&n1]).await;
    let mut last = 0;
    for round in 0..4 {
        last = write(&n1.raft, batch(round, 50, 30)).await;
    }
    n1.raft.trigger().snapshot().await.expect("trigger snapshot");
    let m = n1
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last) && m.purged.is_some_and(|p| p.index >= last),
            "snapshot taken and log purged",
        )
        .await
        .expect("snapshot and purge within the deadline");
    let snap = m.snapshot.expect("checked above");

    // Spooling checks that the checkpoint is the snapshot asked for.
    let spool = snapshot::snapshot_dir(n1.dir.path()).expect("dir");
    let f = snapshot::spool_checkpoint(n1.db.clone(), &spool, Some(snap))
        .await
        .expect("spool the current checkpoint");
    assert!(
        std::fs::metadata(f.path()).expect("spool file").len() > 4 * chunk_bytes as u64,
        "the export spans several chunks"
    );
    drop(f);
    match snapshot::spool_checkpoint(n1.db.clone(), &spool, None).await {
        Err(Error::SnapshotReplaced { found, .. }) => assert_eq!(found, Some(snap)),
        other => panic!("a replaced checkpoint must be refused, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(&spool).expect("dir").count(),
        0,
        "spool files are deleted"
    );

    // Node 2 joins with an empty log: the leader has purged everything, so
    // only a snapshot can bring it up to date.
    let n2 = TestNode::start(2, chunk_bytes).await;
    tokio::time::timeout(WAIT, n1.raft.add_learner(2, n2.info.clone(), true))
        .await
        .expect("learner added within the deadline")
        .expect("learner added");
    wait_applied(&n2, last).await;
    let m2 = n2.raft.metrics().borrow_watched().clone();
    assert!(
        m2.snapshot.is_some_and(|s| s.index >= snap.index),
        "node 2 installed the snapshot: {:?}",
        m2.snapshot
    );
    assert_same_digest(&[&n1, &n2]);

    // The new node is a full member afterwards.
    tokio::time::timeout(WAIT, n1.raft.change_membership(BTreeSet::from([1, 2]), false))
        .await
        .expect("membership change within the deadline")
        .expect("membership changed");
    let last = write(&n1.raft, batch(9, 50, 5)).await;
    wait_applied(&n2, last).await;
    assert_same_digest(&[&n1, &n2]);
    let leftovers: Vec<_> = std::fs::read_dir(snapshot::snapshot_dir(n2.dir.path()).expect("dir"))
        .expect("dir")
        .collect();
    assert!(
        leftovers.is_empty(),
        "received snapshot files are removed: {leftovers:?}"
    );

    n2.stop().await;
    n1.stop().await;
}

#[tokio::test]
async fn dead_and_silent_peers_fail_within_the_deadline() {
    use openraft::error::RPCError;
    use openraft::network::v2::RaftNetworkV2;
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::raft::VoteRequest;

    let dir = tempfile::tempdir().expect("temp dir");
    let sled_db = Arc::new(SledKv::open(&dir.path().join("db"), SledOptions::default()).expect("sled"));
    let (db, _) = Db::open_kv(sled_db, HeadOptions::default()).expect("tsdb");
    let mut net = GrpcNetwork::new(1, Arc::new(db), dir.path()).expect("network");
    let vote = || VoteRequest::new(crate::raft::Vote::new(1, 1), None);
    let peer = |addr: String| NodeInfo {
        raft_addr: addr,
        http_addr: String::new(),
    };

    // Nothing listens: the peer is unreachable, so openraft backs off.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let mut c = net.new_client(2, &peer(dead_addr)).await;
    match c.vote(vote(), RPCOption::new(Duration::from_secs(2))).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("a closed port must be Unreachable, got {other:?}"),
    }

    // A peer that accepts TCP and never answers: the deadline ends the call.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut c = net.new_client(3, &peer(silent_addr)).await;
    let started = std::time::Instant::now();
    let ttl = Duration::from_millis(400);
    match c.vote(vote(), RPCOption::new(ttl)).await {
        Err(RPCError::Timeout(t)) => assert_eq!(t.target, 3),
        other => panic!("a silent peer must time out, got {other:?}"),
    }
    assert!(
        started.elapsed() < ttl + Duration::from_millis(500),
        "the call ended at the soft deadline, took {:?}",
        started.elapsed()
    );
    accept.abort();

    // A bad address fails every call without panicking.
    let mut c = net.new_client(4, &peer("no port here/".into())).await;
    assert!(matches!(
        c.vote(vote(), RPCOption::new(ttl)).await,
        Err(RPCError::Unreachable(_))
    ));
}
