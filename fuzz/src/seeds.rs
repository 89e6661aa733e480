//! Writes the starting corpus of every fuzz target: real encodings made by
//! promraft's own encoders (a remote-write request, chunks, a checkpoint
//! export and a backup of a small TSDB, Raft requests and log entries) and
//! a few hand-written PromQL expressions and query strings.
//!
//! A plain binary built with the targets by `cargo fuzz build`; run it as
//! `fuzz/target/<triple>/release/seeds DIR` (docs/fuzzing.md). It writes
//! DIR/<target>/seed-N.

use std::path::Path;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use promraft::backup::format::{BackupWriter, Header};
use promraft::prompb;
use promraft::raft::command::Command;
use promraft::raft::transport::proto;
use promraft::raft::{Entry, TypeConfig};
use promraft::tsdb::chunk::{encode_frame, XorChunk};
use promraft::tsdb::{AppendRequest, Db, HeadOptions, Labels, SeriesSamples};
use prost::Message;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn put(dir: &Path, target: &str, n: usize, mode: u8, body: &[u8]) -> Res<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    let mut b = vec![mode];
    b.extend_from_slice(body);
    std::fs::write(d.join(format!("seed-{n}")), b)?;
    Ok(())
}

fn append_request() -> AppendRequest {
    let series = (0..3)
        .map(|i| SeriesSamples {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "api"), ("instance", ["a", "b", "c"][i])]),
            samples: (0..300)
                .map(|k| (1_700_000_000_000 + k * 15_000, (k % 7) as f64))
                .collect(),
        })
        .collect();
    AppendRequest {
        series,
        metadata: vec![promraft::tsdb::Metadata {
            metric_family_name: "up".into(),
            kind: "gauge".into(),
            help: "Up.".into(),
            unit: String::new(),
        }],
    }
}

fn remote_write(dir: &Path) -> Res<()> {
    let req = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![
                prompb::Label {
                    name: "__name__".into(),
                    value: "up".into(),
                },
                prompb::Label {
                    name: "job".into(),
                    value: "api".into(),
                },
            ],
            samples: vec![
                prompb::Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                },
                prompb::Sample {
                    value: 0.0,
                    timestamp: 1_700_000_015_000,
                },
            ],
            ..Default::default()
        }],
        metadata: vec![prompb::MetricMetadata {
            r#type: 3,
            metric_family_name: "up".into(),
            help: "Up.".into(),
            unit: String::new(),
        }],
    };
    let raw = req.encode_to_vec();
    put(dir, "remote_write", 0, 1, &raw)?;
    put(
        dir,
        "remote_write",
        1,
        0,
        &snap::raw::Encoder::new().compress_vec(&raw)?,
    )?;
    Ok(())
}

fn promql(dir: &Path) -> Res<()> {
    let exprs = [
        "up",
        r#"sum by (job) (rate(http_requests_total{code=~"2.."}[5m]))"#,
        "histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[2m])))",
        "max_over_time(temperature[5m:30s]) - on(room) group_left avg(temperature) by (room)",
        "topk(2, temperature) or absent(nope) * 3 ^ 2",
        r#"label_replace(up, "x", "$1", "instance", "(.*):.*") offset 1m"#,
        "predict_linear(temperature[5m], 60) > bool 20",
        "count_values(\"v\", up) unless on() vector(1) @ end()",
    ];
    for (n, e) in exprs.iter().enumerate() {
        put(dir, "promql", n, (n as u8) << 1 | (n as u8 & 1) | 0x30, e.as_bytes())?;
    }
    Ok(())
}

fn query_params(dir: &Path) -> Res<()> {
    let qs = [
        "query=up&time=1700000000.5&limit=10",
        "query=up&start=2023-11-14T22:13:20Z&end=1700000600&step=15s&timeout=2s&lookback_delta=1m30s",
        "match[]=up{job=~\"a|b\"}&match[]={__name__=\"x\",le!=\"1\"}&start=0&end=1e9",
        "step=0.5&start=-1e10&end=1e10",
    ];
    for (n, q) in qs.iter().enumerate() {
        put(dir, "query_params", n, 0, q.as_bytes())?;
    }
    let mut form = b"query=up".to_vec();
    form.push(0);
    form.extend_from_slice(b"start=1&end=100&step=1m&match%5B%5D=up");
    put(dir, "query_params", qs.len(), 1, &form)?;
    Ok(())
}

fn chunk(dir: &Path) -> Res<()> {
    let mut frames = Vec::new();
    for (n, (step, vals)) in [(15_000i64, 0u32), (1, 1), (60_000, 2)].into_iter().enumerate() {
        let mut c = XorChunk::new();
        for k in 0..120i64 {
            let v = match vals {
                0 => (k % 5) as f64,
                1 => k as f64 * 0.1,
                _ => f64::from_bits(0x7ff0_0000_0000_0002),
            };
            c.append(1_700_000_000_000 + k * step + (k % 3), v);
        }
        put(dir, "chunk", n, 0, c.bytes())?;
        encode_frame(c.bytes(), &mut frames);
    }
    put(dir, "chunk", 3, 1, &frames)?;
    Ok(())
}

fn checkpoint_backup(dir: &Path) -> Res<()> {
    let kv = promraft::kv::SledKv::temporary()?;
    let (db, _) = Db::open_kv(Arc::new(kv), HeadOptions::default())?;
    let mut req = append_request();
    db.apply(&req);
    db.checkpoint(b"upper".to_vec())?;
    // A second checkpoint with open chunks and out-of-order samples.
    for s in &mut req.series {
        s.samples = vec![
            (1_700_000_000_000 + 301 * 15_000, 1.0),
            (1_700_000_000_000 + 299 * 15_000 + 1, 2.0),
        ];
    }
    db.apply(&req);
    db.checkpoint(b"upper".to_vec())?;
    let mut export = Vec::new();
    db.export(&mut export)?;
    put(dir, "checkpoint_backup", 0, 1, &export)?;
    put(dir, "checkpoint_backup", 1, 2, &export)?;
    let summary = Db::summarize_export(&mut export.as_slice())?;
    let header = Header {
        format_version: promraft::backup::format::FORMAT_VERSION,
        created_unix_ms: 1_700_000_000_000,
        promraft_version: "0.1.0".into(),
        cluster_id: "seed".into(),
        node_id: 1,
        applied_term: 1,
        applied_leader: 1,
        applied_index: 10,
        members: Vec::new(),
        min_time_ms: summary.min_time_ms,
        max_time_ms: summary.max_time_ms,
        series: summary.series,
        samples: summary.samples,
        chunks: summary.chunks,
        records: summary.records,
        content_bytes: export.len() as u64,
        compression: "snappy".into(),
        encryption: None,
    };
    let mut w = BackupWriter::new(Vec::new(), header, None)?;
    std::io::Write::write_all(&mut w, &export)?;
    let (file, _) = w.finish()?;
    put(dir, "checkpoint_backup", 2, 3, &file)?;
    put(dir, "checkpoint_backup", 3, 4, &file)?;
    Ok(())
}

fn raft_request(data: Vec<u8>) -> Vec<u8> {
    proto::RaftRequest {
        format: promraft::raft::transport::WIRE_FORMAT,
        data: data.into(),
    }
    .encode_to_vec()
}

fn raft_rpc(dir: &Path) -> Res<()> {
    let log_id = |term: u64, index: u64| openraft::testing::log_id::<TypeConfig>(term, 1, index);
    let write = Command::write(&[append_request()])?;
    let entries: Vec<Entry> = vec![
        Entry::new_blank(log_id(1, 1)),
        Entry::new_normal(
            log_id(2, 2),
            Command::Retention {
                cutoff_ms: 1_700_000_000_000,
            },
        ),
        Entry::new_normal(log_id(2, 3), write.clone()),
    ];
    let vote = promraft::raft::Vote::new(2, 1);
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 1)),
        entries: entries.clone(),
        leader_commit: Some(log_id(1, 1)),
    };
    let enc = |v: &dyn erased::Enc| v.enc();
    put(dir, "raft_rpc", 0, 0, &raft_request(enc(&append)))?;
    let vreq = openraft::raft::VoteRequest::<TypeConfig>::new(vote, Some(log_id(1, 1)));
    put(dir, "raft_rpc", 1, 1, &raft_request(enc(&vreq)))?;
    put(dir, "raft_rpc", 2, 2, &raft_request(enc(&vreq)))?;
    let header = proto::SnapshotChunk {
        kind: Some(proto::snapshot_chunk::Kind::Header(proto::SnapshotHeader {
            format: promraft::raft::transport::WIRE_FORMAT,
            vote: enc(&vote).into(),
            meta: enc(&promraft::raft::SnapshotMeta::default()).into(),
        })),
    };
    put(dir, "raft_rpc", 3, 4, &header.encode_to_vec())?;
    let fw = proto::ForwardWriteRequest {
        format: promraft::raft::transport::WIRE_FORMAT,
        requests: enc(&vec![append_request()]).into(),
    };
    put(dir, "raft_rpc", 4, 5, &fw.encode_to_vec())?;
    for (n, e) in entries.iter().enumerate() {
        let stored = promraft::raft::entry_format::encode_entry(e)?;
        put(dir, "raft_rpc", 5 + n, 7, &stored)?;
        put(dir, "raft_rpc", 8 + n, 8, &stored[4..])?;
    }
    if let Command::Write { payload } = &write {
        put(dir, "raft_rpc", 11, 9, payload)?;
    }
    Ok(())
}

/// Encoding through the transport's bincode configuration, for values of
/// different types in one closure.
mod erased {
    pub trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            promraft::codec::encode_to_vec(self).expect("encoding to a Vec")
        }
    }
}

fn main() -> Res<()> {
    let dir = std::env::args().nth(1).ok_or("usage: seeds DIR")?;
    let dir = Path::new(&dir);
    remote_write(dir)?;
    promql(dir)?;
    query_params(dir)?;
    chunk(dir)?;
    checkpoint_backup(dir)?;
    raft_rpc(dir)?;
    Ok(())
}
