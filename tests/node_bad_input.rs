//! Hostile and malformed input against the real binary: every bad request
//! gets its own 4xx with a reason in the body, and the node keeps serving
//! afterwards (a valid write still gets 204 and everything accepted before
//! is still there, exactly, with nothing from the refused request added).
//!
//! Each test runs its own node, so a failure names one kind of input.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::time::Instant;

use common::*;

const FILE: &str = "node_bad_input";

/// Series in the baseline every test writes first.
const BASELINE_SERIES: usize = 20;

/// One node with some accepted data and a record of everything accepted.
struct Fixture {
    node: TestNode,
    /// After `node`, so the node is killed (and its log printed) first.
    _dir: TestDir,
    test: &'static str,
    /// Whole seconds, half an hour back: inside retention, clear of now.
    base: i64,
    /// Every sample the node acknowledged, by series.
    accepted: BTreeMap<LabelSet, BTreeMap<i64, f64>>,
    /// Offset of the next baseline write from `base`, ms.
    next_ms: i64,
}

impl Fixture {
    fn start(test: &'static str) -> Fixture {
        let dir = TestDir::new();
        let mut node = TestNode::start(1, &dir.path().join("node1"));
        node.wait_ready(READY_TIMEOUT);
        let mut f = Fixture {
            node,
            _dir: dir,
            test,
            base: (now_ms() - 1_800_000) / 1000 * 1000,
            accepted: BTreeMap::new(),
            next_ms: 0,
        };
        for _ in 0..3 {
            f.write_baseline();
        }
        f
    }

    /// One sample for each baseline series at the next timestamp; asserts 204.
    fn write_baseline(&mut self) {
        let t = self.base + self.next_ms;
        self.next_ms += 1000;
        let ts: Vec<_> = (0..BASELINE_SERIES)
            .map(|s| {
                let id = format!("{s:02}");
                series(
                    &[("__name__", "baseline"), ("series", &id)],
                    &[(t, (s * 1000) as f64 + t as f64 / 1e3)],
                )
            })
            .collect();
        self.accept(ts);
    }

    /// Writes `ts`, asserts 204 and records the samples as accepted.
    fn accept(&mut self, ts: Vec<prompb::TimeSeries>) {
        let req = write_request(ts);
        let r = self.node.write(&req);
        assert_eq!(
            r.status,
            204,
            "a valid write should get 204, got {} {:?}; reproduce: {}",
            r.status,
            r.text(),
            repro(FILE, self.test)
        );
        self.record(&req.timeseries);
    }

    /// Records samples the node stored although the request got a 4xx.
    fn record(&mut self, ts: &[prompb::TimeSeries]) {
        for s in ts {
            let ls: LabelSet = s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            let e = self.accepted.entry(ls).or_default();
            for p in &s.samples {
                e.insert(p.timestamp, p.value);
            }
        }
    }

    /// Asserts `r` is a `status` whose body gives `reason` (case-insensitive).
    fn assert_refused(&self, r: &HttpResponse, status: u16, reason: &str, what: &str) {
        let body = r.text();
        assert!(
            r.status == status && body.to_lowercase().contains(&reason.to_lowercase()),
            "{what}: expected HTTP {status} with a body mentioning {reason:?}, got HTTP {} with body {body:?}; reproduce: {}",
            r.status,
            repro(FILE, self.test)
        );
    }

    /// The node still takes a valid write, and holds exactly what was
    /// accepted: nothing lost, nothing from refused requests added.
    fn assert_still_serving(&mut self, after: &str) {
        assert!(self.node.is_running(), "the node exited after {after}");
        self.write_baseline();
        let stored = self
            .node
            .raw_samples(r#"{__name__=~".+"}"#, self.base - 3_600_000, self.base + 3_600_000);
        let stored: BTreeMap<LabelSet, BTreeMap<i64, f64>> = stored
            .into_iter()
            .map(|(ls, v)| (ls, v.into_iter().collect()))
            .collect();
        if stored != self.accepted {
            let missing: Vec<_> = self.accepted.keys().filter(|k| !stored.contains_key(*k)).collect();
            let extra: Vec<_> = stored.keys().filter(|k| !self.accepted.contains_key(*k)).collect();
            let changed: Vec<_> = self
                .accepted
                .iter()
                .filter(|(k, v)| stored.get(*k).is_some_and(|s| s != *v))
                .map(|(k, v)| format!("{k:?}: accepted {v:?}, stored {:?}", stored[k]))
                .collect();
            panic!(
                "after {after}: the node should hold exactly the accepted samples; series missing: {missing:?}; \
                 series never accepted: {extra:?}; series with other samples: {changed:?}; reproduce: {}",
                repro(FILE, self.test)
            );
        }
    }

    /// POSTs `body` to the write endpoint with the given headers.
    fn post_write(&self, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        self.node.request("POST", "/api/v1/write", headers, body)
    }
}

/// A valid request of two series, to corrupt.
fn valid_request(base: i64) -> prompb::WriteRequest {
    write_request(vec![
        series(
            &[("__name__", "victim"), ("job", "a")],
            &[(base, 1.0), (base + 1000, 2.0)],
        ),
        series(&[("__name__", "victim"), ("job", "b")], &[(base, 3.0)]),
    ])
}

#[test]
fn truncated_snappy_is_400() {
    let mut f = Fixture::start("truncated_snappy_is_400");
    let body = encode_write(&valid_request(f.base));
    let r = f.post_write(REMOTE_WRITE_HEADERS, &body[..body.len() / 2]);
    f.assert_refused(&r, 400, "snappy", "a snappy body cut in half");
    f.assert_still_serving("a truncated snappy body");
}

#[test]
fn garbage_protobuf_is_400() {
    let mut f = Fixture::start("garbage_protobuf_is_400");
    // Field 1 (a series) announcing 100 bytes with 20 present, then junk.
    let mut raw = vec![0x0a, 100];
    raw.extend_from_slice(b"this is not a protobuf WriteRequest");
    let r = f.post_write(REMOTE_WRITE_HEADERS, &snappy(&raw));
    f.assert_refused(&r, 400, "protobuf", "valid snappy around garbage protobuf");
    f.assert_still_serving("a garbage protobuf body");
}

/// Size of the oversized body: far past the 32 MiB limit.
const HUGE_BODY_BYTES: usize = 100 << 20;

/// Streams a `HUGE_BODY_BYTES` write body from a second thread while this
/// one reads the response, so the answer is read as soon as the server
/// gives it, however much of the body it has taken by then.
fn send_huge_body(addr: &str, chunked: bool) -> (HttpResponse, usize) {
    let mut stream = connect(addr).expect("connect");
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {HUGE_BODY_BYTES}")
    };
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send the request head");
    let mut writer = stream.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || {
        let piece = vec![0u8; 1 << 20];
        let mut sent = 0;
        while sent < HUGE_BODY_BYTES {
            let res = if chunked {
                writer
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .and_then(|_| writer.write_all(&piece))
                    .and_then(|_| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&piece)
            };
            if res.is_err() {
                // The server closed the connection after answering.
                return sent;
            }
            sent += piece.len();
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
        sent
    });
    let resp = read_response(&mut stream).expect("read the response to the oversized body");
    // Unblock the sender if it is still writing, then collect it.
    let _ = stream.shutdown(Shutdown::Both);
    let sent = sender.join().expect("sender thread");
    (resp, sent)
}

#[test]
fn body_of_100_mb_with_content_length_is_413() {
    let mut f = Fixture::start("body_of_100_mb_with_content_length_is_413");
    let started = Instant::now();
    let (r, sent) = send_huge_body(&f.node.http_addr, false);
    f.assert_refused(
        &r,
        413,
        "exceeds the limit",
        "a 100 MB body announced by Content-Length",
    );
    eprintln!("413 after {:?}, {} MiB of the body sent", started.elapsed(), sent >> 20);
    f.assert_still_serving("a 100 MB body with Content-Length");
}

#[test]
fn body_of_100_mb_chunked_is_413() {
    let mut f = Fixture::start("body_of_100_mb_chunked_is_413");
    let started = Instant::now();
    let (r, sent) = send_huge_body(&f.node.http_addr, true);
    f.assert_refused(
        &r,
        413,
        "exceeds the limit",
        "a 100 MB chunked body (no Content-Length)",
    );
    assert!(
        sent < HUGE_BODY_BYTES,
        "the node should stop reading at its body limit, but it took all {} MiB",
        sent >> 20
    );
    eprintln!("413 after {:?}, {} MiB of the body sent", started.elapsed(), sent >> 20);
    f.assert_still_serving("a 100 MB chunked body");
}

#[test]
fn unsorted_labels_are_400() {
    let mut f = Fixture::start("unsorted_labels_are_400");
    let mut bad = series(&[("__name__", "unsorted"), ("a", "1"), ("b", "2")], &[(f.base, 1.0)]);
    bad.labels.swap(1, 2); // __name__, b, a
    let r = f.node.write(&write_request(vec![bad]));
    f.assert_refused(&r, 400, "not sorted", "a series with labels out of order");
    f.assert_still_serving("a series with unsorted labels");
}

#[test]
fn ten_thousand_labels_on_one_series_is_400() {
    let mut f = Fixture::start("ten_thousand_labels_on_one_series_is_400");
    let names: Vec<String> = (0..10_000).map(|i| format!("l{i:05}")).collect();
    let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    pairs.push(("__name__", "wide"));
    let r = f.node.write(&write_request(vec![series(&pairs, &[(f.base, 1.0)])]));
    f.assert_refused(&r, 400, "labels, more than the limit", "a series with 10,001 labels");
    assert!(
        r.body.len() < 4096,
        "the reason should describe the series briefly, not echo 10,000 labels ({} bytes)",
        r.body.len()
    );
    f.assert_still_serving("a series with 10,000 labels");
}

#[test]
fn invalid_utf8_label_value_is_400() {
    let mut f = Fixture::start("invalid_utf8_label_value_is_400");
    const MARK: &str = "@@not-utf8@@";
    let req = write_request(vec![series(&[("__name__", "utf8"), ("v", MARK)], &[(f.base, 1.0)])]);
    let mut raw = prost::Message::encode_to_vec(&req);
    let at = raw
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("the marker is in the encoding");
    // Same length, so the protobuf framing stays valid; 0xFF never occurs in UTF-8.
    raw[at..at + MARK.len()].fill(0xFF);
    let r = f.post_write(REMOTE_WRITE_HEADERS, &snappy(&raw));
    f.assert_refused(&r, 400, "utf-8", "a label value that is not UTF-8");
    f.assert_still_serving("a label value that is not UTF-8");
}

#[test]
fn wrong_content_type_is_415() {
    let mut f = Fixture::start("wrong_content_type_is_415");
    let body = encode_write(&valid_request(f.base));
    let headers = [("Content-Type", "application/json"), ("Content-Encoding", "snappy")];
    let r = f.post_write(&headers, &body);
    f.assert_refused(&r, 415, "content type", "Content-Type: application/json");
    f.assert_still_serving("a wrong Content-Type");
}

#[test]
fn wrong_content_encoding_is_415() {
    let mut f = Fixture::start("wrong_content_encoding_is_415");
    let body = encode_write(&valid_request(f.base));
    let headers = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")];
    let r = f.post_write(&headers, &body);
    f.assert_refused(&r, 415, "content encoding", "Content-Encoding: gzip");
    f.assert_still_serving("a wrong Content-Encoding");
}

/// A remote write 2.0 request (`io.prometheus.write.v2.Request`) of one
/// series with one sample, encoded by hand from the 2.0 .proto: field 4 the
/// symbols table, field 5 a series of label refs (field 1, packed) and
/// samples (field 2: value, timestamp).
fn remote_write_2_body(base: i64) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(tag: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    let mut raw = Vec::new();
    for sym in ["", "__name__", "rw2_metric", "job", "rw2"] {
        field(0x22, sym.as_bytes(), &mut raw);
    }
    let mut sample = vec![0x09];
    sample.extend_from_slice(&42.0f64.to_le_bytes());
    sample.push(0x10);
    varint(base as u64, &mut sample);
    let mut ts = Vec::new();
    field(0x0a, &[1, 2, 3, 4], &mut ts);
    field(0x12, &sample, &mut ts);
    field(0x2a, &ts, &mut raw);
    snappy(&raw)
}

/// A Prometheus 3 sender configured for remote write 2.0 must be told that
/// nothing was stored (415, which it does not retry), never 204.
#[test]
fn remote_write_2_is_415_not_silently_dropped() {
    let mut f = Fixture::start("remote_write_2_is_415_not_silently_dropped");
    let body = remote_write_2_body(f.base);
    let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    let headers = [
        ("Content-Type", v2),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "2.0.0"),
    ];
    let r = f.post_write(&headers, &body);
    f.assert_refused(&r, 415, "remote write 2.0", "a remote write 2.0 request");
    // The version header alone names 2.0 as well.
    let headers = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "2.0.0"),
    ];
    let r = f.post_write(&headers, &body);
    f.assert_refused(
        &r,
        415,
        "remote write 2.0",
        "a request with X-Prometheus-Remote-Write-Version: 2.0.0",
    );
    let headers = [
        ("Content-Type", "application/x-protobuf;proto=io.example.Unknown"),
        ("Content-Encoding", "snappy"),
    ];
    let r = f.post_write(&headers, &body);
    f.assert_refused(&r, 415, "io.example.Unknown", "an unknown proto= message");
    f.assert_still_serving("remote write 2.0 and unknown-message requests");
}

/// Remote write 1.0 named explicitly, as Prometheus 3 sends it, is stored.
#[test]
fn remote_write_1_named_in_proto_is_stored() {
    let mut f = Fixture::start("remote_write_1_named_in_proto_is_stored");
    let req = valid_request(f.base);
    let headers = [
        ("Content-Type", "application/x-protobuf;proto=prometheus.WriteRequest"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let r = f.post_write(&headers, &encode_write(&req));
    assert_eq!(
        r.status,
        204,
        "remote write 1.0 with proto=prometheus.WriteRequest should get 204, got {} {:?}; reproduce: {}",
        r.status,
        r.text(),
        repro(FILE, f.test)
    );
    f.record(&req.timeseries);
    f.assert_still_serving("a remote write 1.0 request naming its proto");
}

/// A series with samples at `base`, `base+1s`, ... `base+4s`, accepted.
fn accept_history(f: &mut Fixture) -> (Vec<(&'static str, &'static str)>, i64) {
    let pairs = vec![("__name__", "history"), ("job", "h")];
    let samples: Vec<(i64, f64)> = (0..5).map(|i| (f.base + i * 1000, i as f64)).collect();
    f.accept(vec![series(&pairs, &samples)]);
    (pairs, f.base + 4000)
}

#[test]
fn out_of_order_sample_is_400_and_the_rest_is_stored() {
    let mut f = Fixture::start("out_of_order_sample_is_400_and_the_rest_is_stored");
    let (history, newest) = accept_history(&mut f);
    let fresh = series(
        &[("__name__", "fresh"), ("job", "ooo")],
        &[(f.base, 7.0), (f.base + 1000, 8.0)],
    );
    let req = write_request(vec![
        fresh.clone(),
        // Older than the newest sample of its series, at a new timestamp.
        series(&history, &[(newest - 2500, 99.0)]),
    ]);
    let r = f.node.write(&req);
    f.assert_refused(&r, 400, "out of order sample", "a sample older than its series' newest");
    f.record(&[fresh]);
    f.assert_still_serving("an out-of-order sample");
}

#[test]
fn duplicate_timestamp_with_another_value_is_400_and_the_rest_is_stored() {
    let mut f = Fixture::start("duplicate_timestamp_with_another_value_is_400_and_the_rest_is_stored");
    let (history, newest) = accept_history(&mut f);
    let fresh = series(&[("__name__", "fresh"), ("job", "dup")], &[(f.base, 5.0)]);
    let req = write_request(vec![
        series(&history, &[(newest, 1234.5)]),
        fresh.clone(),
        // A later, valid sample of the same series in the same request.
        series(&[("__name__", "history"), ("job", "h")], &[(newest + 1000, 42.0)]),
    ]);
    let r = f.node.write(&req);
    f.assert_refused(
        &r,
        400,
        "duplicate sample for timestamp",
        "a sample at an existing timestamp with another value",
    );
    f.record(&[fresh, series(&history, &[(newest + 1000, 42.0)])]);
    f.assert_still_serving("a duplicate timestamp with another value");
}

#[test]
fn exact_duplicate_resend_is_204_and_stored_once() {
    let mut f = Fixture::start("exact_duplicate_resend_is_204_and_stored_once");
    // One sample per series, as Prometheus's sender batches a scrape: each
    // resent sample is then the newest of its series.
    let req = write_request(vec![
        series(&[("__name__", "resent"), ("job", "a")], &[(f.base, 1.0)]),
        series(&[("__name__", "resent"), ("job", "b")], &[(f.base, 2.5)]),
    ]);
    f.accept(req.timeseries.clone());
    let before = f.node.digest();
    // A sender that did not see the first answer sends the batch again.
    let r = f.node.write(&req);
    assert_eq!(
        r.status,
        204,
        "an exact resend of an accepted batch should get 204, got {} {:?}; reproduce: {}",
        r.status,
        r.text(),
        repro(FILE, f.test)
    );
    let after = f.node.digest();
    assert_eq!(
        (after.series, after.samples, &after.digest),
        (before.series, before.samples, &before.digest),
        "an exact resend must not add samples: digest before {before:?}, after {after:?}"
    );
    f.assert_still_serving("an exact duplicate resend");
}

/// A resend of a batch with several samples per series (a sender retrying
/// after a failover): every sample is already stored with the same value,
/// so the resend is a no-op and succeeds, and the data does not change.
#[test]
fn exact_resend_of_a_multi_sample_batch_changes_nothing() {
    let mut f = Fixture::start("exact_resend_of_a_multi_sample_batch_changes_nothing");
    let req = valid_request(f.base);
    f.accept(req.timeseries.clone());
    let before = f.node.digest();
    let r = f.node.write(&req);
    assert_eq!(
        r.status,
        204,
        "a resend of already stored samples must be a no-op success, got {} {:?}; reproduce: {}",
        r.status,
        r.text(),
        repro(FILE, f.test)
    );
    let after = f.node.digest();
    assert_eq!(
        (after.series, after.samples, &after.digest),
        (before.series, before.samples, &before.digest),
        "a resend must not change the data: digest before {before:?}, after {after:?}"
    );
    f.assert_still_serving("an exact resend of a multi-sample batch");
}

/// Asserts a Prometheus API error: `status`, `"status":"error"`, the
/// `errorType` and a non-empty `error`.
fn assert_api_error(f: &Fixture, r: &HttpResponse, status: u16, error_type: &str, what: &str) {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    let ok = r.status == status
        && v["status"] == "error"
        && v["errorType"] == error_type
        && v["error"].as_str().is_some_and(|e| !e.is_empty());
    assert!(
        ok,
        "{what}: expected HTTP {status} with {{\"status\":\"error\",\"errorType\":\"{error_type}\",\"error\":<reason>}}, \
         got HTTP {} with body {:?}; reproduce: {}",
        r.status,
        r.text(),
        repro(FILE, f.test)
    );
}

#[test]
fn bad_query_parameters_are_400_bad_data() {
    let mut f = Fixture::start("bad_query_parameters_are_400_bad_data");
    let now = secs(f.base);
    let r = f.node.get("/api/v1/query", &[("query", "sum(")]);
    assert_api_error(&f, &r, 400, "bad_data", "query=sum(");
    let r = f.node.post_form("/api/v1/query", &[("query", "sum(")]);
    assert_api_error(&f, &r, 400, "bad_data", "POST query=sum(");
    let r = f.node.get(
        "/api/v1/query_range",
        &[("query", "baseline"), ("start", &now), ("end", &now), ("step", "0")],
    );
    assert_api_error(&f, &r, 400, "bad_data", "query_range with step=0");
    let r = f.node.get("/api/v1/series", &[]);
    assert_api_error(&f, &r, 400, "bad_data", "series without match[]");
    let r = f.node.post_form("/api/v1/series", &[("start", &now)]);
    assert_api_error(&f, &r, 400, "bad_data", "POST series without match[]");
    f.assert_still_serving("bad query parameters");
}

/// A label value of `len` bytes that snappy cannot shrink much (letters
/// from a xorshift stream seeded by `seed`).
fn noisy_value(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// The value of an unlabelled sample line `name value` in a /metrics page.
fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Largest log entry payload, in bytes, the batcher may propose
/// (`ENTRY_PAYLOAD_BYTES_MAX`).
const ENTRY_PAYLOAD_BYTES_MAX: f64 = 98_304.0;

#[test]
fn big_labels_over_many_entries_are_all_stored_and_entries_stay_under_the_limit() {
    let mut f = Fixture::start("big_labels_over_many_entries_are_all_stored_and_entries_stay_under_the_limit");
    // 120 series with 4 KiB of hard-to-compress labels and 20 samples each:
    // about 500 KiB of labels, five or more full entries.
    let ts: Vec<_> = (0..120u64)
        .map(|i| {
            let id = format!("{i:03}");
            let big = noisy_value(i, 4_000);
            let samples: Vec<(i64, f64)> = (0..20)
                .map(|k| (f.base + k * 1000, (i * 100 + k as u64) as f64))
                .collect();
            series(&[("__name__", "big_labels"), ("blob", &big), ("series", &id)], &samples)
        })
        .collect();
    f.accept(ts);
    let page = f.node.get("/metrics", &[]).text();
    let largest = metric_value(&page, "promraft_write_entry_payload_bytes_max").unwrap_or_else(|| {
        panic!(
            "no promraft_write_entry_payload_bytes_max in /metrics; reproduce: {}",
            repro(FILE, f.test)
        )
    });
    assert!(
        largest <= ENTRY_PAYLOAD_BYTES_MAX,
        "a log entry payload of {largest} bytes was proposed, more than {ENTRY_PAYLOAD_BYTES_MAX}; reproduce: {}",
        repro(FILE, f.test)
    );
    assert!(
        largest > ENTRY_PAYLOAD_BYTES_MAX / 2.0,
        "entries of at most {largest} bytes: the request should have filled entries close to the limit; reproduce: {}",
        repro(FILE, f.test)
    );
    f.assert_still_serving("a request of 500 KiB of labels");
}

#[test]
fn series_whose_labels_fill_an_entry_is_400_and_the_rest_is_stored() {
    let mut f = Fixture::start("series_whose_labels_fill_an_entry_is_400_and_the_rest_is_stored");
    // 30 labels of 4000 bytes: each label is within the limits, the series
    // (120 KB of labels) fits in no 96 KiB log entry.
    let values: Vec<(String, String)> = (0..30u64)
        .map(|i| (format!("l{i:02}"), noisy_value(i, 4_000)))
        .collect();
    let mut pairs: Vec<(&str, &str)> = vec![("__name__", "too_wide")];
    pairs.extend(values.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let fresh = series(
        &[("__name__", "fresh"), ("job", "wide")],
        &[(f.base, 1.0), (f.base + 1000, 2.0)],
    );
    let r = f
        .node
        .write(&write_request(vec![series(&pairs, &[(f.base, 1.0)]), fresh.clone()]));
    f.assert_refused(
        &r,
        400,
        "bytes of a log entry, more than the limit of",
        "a series too wide for a log entry",
    );
    assert!(
        r.body.len() < 4096,
        "the reason should describe the series briefly ({} bytes)",
        r.body.len()
    );
    f.record(&[fresh]);
    f.assert_still_serving("a series too wide for a log entry");
}
