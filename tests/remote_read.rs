//! Remote read (`POST /api/v1/read`) on a real node: `SAMPLES` and
//! `STREAMED_XOR_CHUNKS` answers decoded and compared with what was
//! written, bad requests refused with the reason, and a Debian Prometheus
//! 2.42 with `remote_read` pointed at promraft answering queries over
//! promraft's data (skipped without it unless `PROMRAFT_REQUIRE_PEERS=1`).

// A test here is one scenario read top to bottom (set up, act, check every
// outcome); split into helpers it would scatter the story, so long test
// functions are allowed in this file.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use prost::Message;

const FILE: &str = "remote_read";

fn read_request(queries: Vec<prompb::Query>, streamed: bool) -> Vec<u8> {
    let types = if streamed { vec![1, 0] } else { vec![0] };
    let raw = prompb::ReadRequest {
        queries,
        accepted_response_types: types,
    }
    .encode_to_vec();
    snappy(&raw)
}

fn query(matchers: &[(i32, &str, &str)], start: i64, end: i64) -> prompb::Query {
    prompb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers: matchers
            .iter()
            .map(|&(t, n, v)| prompb::LabelMatcher {
                r#type: t,
                name: n.into(),
                value: v.into(),
            })
            .collect(),
        hints: None,
    }
}

type Stored = BTreeMap<LabelSet, Vec<(i64, f64)>>;

fn label_set_of_pb(labels: &[prompb::Label]) -> LabelSet {
    labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

/// The series of each query of a `SAMPLES` answer.
fn decode_samples(body: &[u8]) -> Vec<Stored> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).expect("snappy answer");
    let resp = prompb::ReadResponse::decode(raw.as_slice()).expect("a ReadResponse");
    resp.results
        .iter()
        .map(|r| {
            r.timeseries
                .iter()
                .map(|ts| {
                    (
                        label_set_of_pb(&ts.labels),
                        ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The series of each query of a streamed answer, frames checked.
fn decode_streamed(mut b: &[u8], queries: usize) -> Vec<Stored> {
    let mut out = vec![Stored::new(); queries];
    while !b.is_empty() {
        let len = prost::encoding::decode_varint(&mut b).expect("frame length") as usize;
        let crc = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let data = &b[4..4 + len];
        assert_eq!(crc32c::crc32c(data), crc, "frame checksum");
        let frame = prompb::ChunkedReadResponse::decode(data).expect("a ChunkedReadResponse");
        for s in frame.chunked_series {
            let samples = out[frame.query_index as usize]
                .entry(label_set_of_pb(&s.labels))
                .or_default();
            for c in s.chunks {
                assert_eq!(c.r#type, 1, "XOR chunk");
                let decoded: Vec<(i64, f64)> = promraft::tsdb::chunk::iter_bytes(&c.data)
                    .collect::<Result<_, _>>()
                    .expect("a valid XOR chunk");
                assert_eq!(decoded.first().map(|s| s.0), Some(c.min_time_ms));
                assert_eq!(decoded.last().map(|s| s.0), Some(c.max_time_ms));
                samples.extend(decoded);
            }
        }
        b = &b[4 + len..];
    }
    out
}

#[test]
fn remote_read_answers_samples_and_streamed_chunks_and_prometheus_reads_through_it() {
    const TEST: &str = "remote_read_answers_samples_and_streamed_chunks_and_prometheus_reads_through_it";
    let how = repro(FILE, TEST);
    let dir = TestDir::new();
    let mut node = TestNode::start(1, &dir.path().join("promraft"));
    node.wait_ready(READY_TIMEOUT);
    let t0 = now_ms() - 300_000;
    let a: Vec<(i64, f64)> = (0..300).map(|i| (t0 + i * 1_000, (i as f64) * 0.5)).collect();
    let b = vec![(t0, 1.0), (t0 + 1_000, f64::NAN), (t0 + 2_000, f64::INFINITY)];
    node.write_ok(&write_request(vec![
        series(&[("__name__", "rr_a"), ("job", "j"), ("x", "1")], &a),
        series(&[("__name__", "rr_b"), ("job", "j")], &b),
        series(&[("__name__", "rr_c"), ("job", "k")], &[(t0, 9.0)]),
    ]));
    let la = label_set_of(&[("__name__", "rr_a"), ("job", "j"), ("x", "1")]);
    let lb = label_set_of(&[("__name__", "rr_b"), ("job", "j")]);
    let queries = || {
        vec![
            query(&[(0, "job", "j")], t0, t0 + 299_000),
            query(
                &[(2, "__name__", "rr_a|rr_c"), (1, "job", "k")],
                t0 + 100_000,
                t0 + 149_000,
            ),
        ]
    };
    let want_first: Stored = BTreeMap::from([(la.clone(), a.clone()), (lb.clone(), b.clone())]);
    let want_second: Stored = BTreeMap::from([(la.clone(), a[100..150].to_vec())]);
    let same = |got: &Stored, want: &Stored| {
        got.len() == want.len()
            && got.iter().zip(want).all(|((lg, sg), (lw, sw))| {
                lg == lw
                    && sg.len() == sw.len()
                    && sg
                        .iter()
                        .zip(sw)
                        .all(|(g, w)| g.0 == w.0 && g.1.to_bits() == w.1.to_bits())
            })
    };

    // SAMPLES.
    let headers = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    let r = node.request("POST", "/api/v1/read", &headers, &read_request(queries(), false));
    assert_eq!(r.status, 200, "{}; {how}", r.text());
    assert_eq!(r.header("content-encoding"), Some("snappy"));
    let got = decode_samples(&r.body);
    assert_eq!(got.len(), 2, "{how}");
    assert!(same(&got[0], &want_first), "query 0: {:?}; {how}", got[0]);
    assert!(same(&got[1], &want_second), "query 1: {:?}; {how}", got[1]);

    // STREAMED_XOR_CHUNKS.
    let r = node.request("POST", "/api/v1/read", &headers, &read_request(queries(), true));
    assert_eq!(r.status, 200, "{}; {how}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
    );
    let got = decode_streamed(&r.body, 2);
    assert!(same(&got[0], &want_first), "streamed query 0: {:?}; {how}", got[0]);
    assert!(same(&got[1], &want_second), "streamed query 1: {:?}; {how}", got[1]);

    // Bad requests: the reason, nothing served.
    let r = node.request("POST", "/api/v1/read", &headers, b"garbage");
    assert_eq!(r.status, 400, "{how}");
    assert!(r.text().contains("snappy"), "{}", r.text());
    let r = node.request(
        "POST",
        "/api/v1/read",
        &headers,
        &read_request(vec![query(&[(9, "a", "b")], 0, 1)], false),
    );
    assert_eq!(r.status, 400, "{how}");
    assert!(r.text().contains("unknown matcher type 9"), "{}", r.text());

    // A real Prometheus reads promraft's data through remote_read.
    let Some(prometheus) = peer("prometheus", TEST) else {
        return;
    };
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "remote_read:\n  - url: http://{}/api/v1/read\n    read_recent: true\n",
        node.http_addr
    );
    let _prom = start_prometheus(&prometheus, dir.path(), "prometheus", &prom_addr, &config);
    let range = [
        ("query", "rr_a".to_string()),
        ("start", secs(t0)),
        ("end", secs(t0 + 299_000)),
        ("step", "1".to_string()),
    ];
    let matrix = wait_until("Prometheus to answer over remote read", Duration::from_secs(60), || {
        let params: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let target = with_query("/api/v1/query_range", &params);
        let r = http_request(&prom_addr, "GET", &target, &[], b"").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("{} {}", r.status, r.text()));
        }
        let m = parse_matrix(&r.json()["data"]["result"]);
        if m.is_empty() {
            return Err("no series yet".into());
        }
        Ok(m)
    });
    let points = matrix
        .get(&la)
        .unwrap_or_else(|| panic!("rr_a missing: {matrix:?}; {how}"));
    assert_eq!(points.len(), 300, "one point per second over 300 s; {how}");
    assert!(
        points.iter().zip(&a).all(|(p, s)| p.0 == s.0 && p.1 == s.1),
        "{points:?}; {how}"
    );
    println!(
        "Prometheus answered {} points of rr_a through remote read",
        points.len()
    );
}
