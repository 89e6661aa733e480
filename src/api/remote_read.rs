//! `POST /api/v1/read`: Prometheus remote read, answered from the local
//! replica, so that Prometheus (`remote_read`), Thanos' sidecar and other
//! readers can query promraft's data.
//!
//! The request is a snappy-compressed `prometheus.ReadRequest`. The answer
//! takes the first response type the client accepts:
//! - `SAMPLES`: one snappy-compressed `ReadResponse`, raw samples per series;
//! - `STREAMED_XOR_CHUNKS`: `ChunkedReadResponse` frames, each
//!   `uvarint length, CRC-32C (Castagnoli) of the message as u32 BE,
//!   message`, at most [`FRAME_BYTES_MAX`] bytes of chunks per frame, with
//!   the series' samples in Prometheus's XOR chunks of at most
//!   [`CHUNK_SAMPLES_MAX`] samples (docs/format/chunk.md).
//!
//! Limits: the compressed and decoded request sizes below, one of the
//! `query.concurrency_max` query slots, and `query.samples_max` samples over
//! all queries of a request. Errors are plain text with the reason, as
//! Prometheus answers. Never panics on input.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;

use super::AppState;
use crate::prompb;
use crate::tsdb::chunk::XorChunk;
use crate::tsdb::{MatchOp, Matcher, SeriesData};

/// Largest compressed request body, bytes: a read request is a few
/// selectors; 1 MiB is thousands of them.
pub const READ_BODY_BYTES_MAX: usize = 1 << 20;

/// Largest decoded request, bytes.
pub const READ_DECODED_BYTES_MAX: usize = 8 << 20;

/// Chunk bytes per streamed frame, at most (Prometheus's default
/// `--storage.remote.read-max-bytes-in-frame`); a series with more is split
/// over frames.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// Samples per streamed chunk (what Prometheus's head cuts at).
pub const CHUNK_SAMPLES_MAX: usize = 120;

/// Content type of a streamed answer.
const STREAMED_CONTENT_TYPE: &str = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

fn plain(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// The remote-read handler.
pub async fn remote_read(State(node): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Err(e) = super::read_barrier(&node, None, &headers, &Bytes::new()).await {
        return plain(e.status, e.message);
    }
    let bytes = match axum::body::to_bytes(body, READ_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(_) => {
            let msg = format!("remote read request exceeds the limit of {READ_BODY_BYTES_MAX} bytes");
            return plain(StatusCode::PAYLOAD_TOO_LARGE, msg);
        }
    };
    let req = match decode_request(&bytes) {
        Ok(r) => r,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
    };
    let queries = match req.queries.iter().map(compile).collect::<Result<Vec<_>, _>>() {
        Ok(q) => q,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
    };
    let timeout = node.query.timeout;
    let Ok(Ok(_permit)) = tokio::time::timeout(timeout, node.query_slots.clone().acquire_owned()).await else {
        let msg = format!(
            "timed out waiting for one of {} query slots",
            node.query.concurrency_max
        );
        return plain(StatusCode::SERVICE_UNAVAILABLE, msg);
    };
    let (db, samples_max) = (node.db.clone(), node.query.samples_max);
    let selected = tokio::task::spawn_blocking(move || {
        let mut left = samples_max;
        let mut out = Vec::with_capacity(queries.len());
        for (matchers, start, end) in &queries {
            let series = db.select(matchers, *start, *end, left)?;
            left = left.saturating_sub(series.iter().map(|s| s.samples.len()).sum());
            out.push(series);
        }
        Ok::<_, crate::tsdb::Error>(out)
    })
    .await;
    let selected = match selected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return plain(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match response_type(&req) {
        prompb::ResponseType::Samples => samples_response(selected),
        prompb::ResponseType::StreamedXorChunks => (
            [(header::CONTENT_TYPE, STREAMED_CONTENT_TYPE)],
            streamed_body(&selected),
        )
            .into_response(),
    }
}

/// Decodes a snappy-compressed `ReadRequest` within the limits.
fn decode_request(bytes: &[u8]) -> Result<prompb::ReadRequest, String> {
    let len = snap::raw::decompress_len(bytes).map_err(|e| format!("remote read request is not snappy: {e}"))?;
    if len > READ_DECODED_BYTES_MAX {
        return Err(format!(
            "remote read request decodes to {len} bytes, over the limit of {READ_DECODED_BYTES_MAX}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(bytes)
        .map_err(|e| format!("remote read request is not snappy: {e}"))?;
    prompb::ReadRequest::decode(raw.as_slice()).map_err(|e| format!("remote read request is not a ReadRequest: {e}"))
}

/// The first accepted response type (all are supported), `SAMPLES` when
/// the client names none.
fn response_type(req: &prompb::ReadRequest) -> prompb::ResponseType {
    req.accepted_response_types
        .iter()
        .find_map(|t| prompb::ResponseType::try_from(*t).ok())
        .unwrap_or(prompb::ResponseType::Samples)
}

/// A query's matchers and range.
fn compile(q: &prompb::Query) -> Result<(Vec<Matcher>, i64, i64), String> {
    if q.matchers.is_empty() {
        return Err("a remote read query needs at least one matcher".into());
    }
    let matchers = q
        .matchers
        .iter()
        .map(|m| {
            let op = match prompb::MatcherType::try_from(m.r#type) {
                Ok(prompb::MatcherType::Eq) => MatchOp::Equal,
                Ok(prompb::MatcherType::Neq) => MatchOp::NotEqual,
                Ok(prompb::MatcherType::Re) => MatchOp::Regex,
                Ok(prompb::MatcherType::Nre) => MatchOp::NotRegex,
                Err(_) => return Err(format!("unknown matcher type {} for label {:?}", m.r#type, m.name)),
            };
            Matcher::new(op, &m.name, &m.value).map_err(|e| format!("matcher on {:?}: {e}", m.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((matchers, q.start_timestamp_ms, q.end_timestamp_ms))
}

fn labels_of(s: &SeriesData) -> Vec<prompb::Label> {
    s.labels
        .iter()
        .map(|l| prompb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// The `SAMPLES` answer: one snappy-compressed `ReadResponse`.
fn samples_response(selected: Vec<Vec<SeriesData>>) -> Response {
    let results = selected
        .into_iter()
        .map(|series| prompb::QueryResult {
            timeseries: series
                .iter()
                .map(|s| prompb::TimeSeries {
                    labels: labels_of(s),
                    samples: s
                        .samples
                        .iter()
                        .map(|&(timestamp, value)| prompb::Sample { value, timestamp })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let raw = prompb::ReadResponse { results }.encode_to_vec();
    match snap::raw::Encoder::new().compress_vec(&raw) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/x-protobuf"),
                (header::CONTENT_ENCODING, "snappy"),
            ],
            body,
        )
            .into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The `STREAMED_XOR_CHUNKS` answer: frames of series with XOR chunks, in
/// query order.
pub fn streamed_body(selected: &[Vec<SeriesData>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, series) in selected.iter().enumerate() {
        let mut frame = prompb::ChunkedReadResponse {
            chunked_series: Vec::new(),
            query_index: index as i64,
        };
        let mut frame_bytes = 0usize;
        for s in series {
            let mut current = prompb::ChunkedSeries {
                labels: labels_of(s),
                chunks: Vec::new(),
            };
            for part in s.samples.chunks(CHUNK_SAMPLES_MAX) {
                let chunk = xor_chunk(part);
                frame_bytes += chunk.data.len();
                current.chunks.push(chunk);
                if frame_bytes >= FRAME_BYTES_MAX {
                    // The rest of the series goes on in the next frame.
                    let labels = current.labels.clone();
                    frame.chunked_series.push(std::mem::replace(
                        &mut current,
                        prompb::ChunkedSeries {
                            labels,
                            chunks: Vec::new(),
                        },
                    ));
                    write_frame(&frame, &mut out);
                    frame.chunked_series.clear();
                    frame_bytes = 0;
                }
            }
            if !current.chunks.is_empty() {
                frame.chunked_series.push(current);
            }
        }
        if !frame.chunked_series.is_empty() {
            write_frame(&frame, &mut out);
        }
    }
    out
}

/// Samples (sorted by time, at most [`CHUNK_SAMPLES_MAX`]) as one XOR chunk.
fn xor_chunk(samples: &[(i64, f64)]) -> prompb::Chunk {
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, v);
    }
    prompb::Chunk {
        min_time_ms: samples.first().map_or(0, |s| s.0),
        max_time_ms: samples.last().map_or(0, |s| s.0),
        r#type: prompb::ChunkEncoding::Xor as i32,
        data: c.bytes().to_vec(),
    }
}

/// Appends one frame: uvarint length, CRC-32C as u32 BE, the message.
fn write_frame(msg: &prompb::ChunkedReadResponse, out: &mut Vec<u8>) {
    let data = msg.encode_to_vec();
    prost::encoding::encode_varint(data.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(&data).to_be_bytes());
    out.extend_from_slice(&data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::Labels;

    fn decode(bytes: &[u8]) -> Vec<(i64, f64)> {
        crate::tsdb::chunk::iter_bytes(bytes).collect::<Result<_, _>>().unwrap()
    }

    fn series(name: &str, n: i64) -> SeriesData {
        SeriesData {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: (0..n).map(|i| (1_000 * i, i as f64)).collect(),
        }
    }

    /// Reads frames back: checks every length and checksum.
    fn frames(mut b: &[u8]) -> Vec<prompb::ChunkedReadResponse> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = prost::encoding::decode_varint(&mut b).unwrap() as usize;
            let crc = u32::from_be_bytes(b[..4].try_into().unwrap());
            let data = &b[4..4 + len];
            assert_eq!(crc32c::crc32c(data), crc);
            out.push(prompb::ChunkedReadResponse::decode(data).unwrap());
            b = &b[4 + len..];
        }
        out
    }

    #[test]
    fn streamed_chunks_hold_every_sample_in_order() {
        let selected = vec![vec![series("a", 250), series("b", 1)], vec![], vec![series("c", 3)]];
        let f = frames(&streamed_body(&selected));
        assert_eq!(f.iter().map(|f| f.query_index).collect::<Vec<_>>(), vec![0, 2]);
        let a = &f[0].chunked_series[0];
        assert_eq!(a.chunks.len(), 3, "250 samples in chunks of 120");
        let mut got = Vec::new();
        for c in &a.chunks {
            let decoded = decode(&c.data);
            assert_eq!(
                (c.min_time_ms, c.max_time_ms),
                (decoded[0].0, decoded[decoded.len() - 1].0)
            );
            got.extend(decoded);
        }
        assert_eq!(got, selected[0][0].samples);
    }

    #[test]
    fn a_large_series_is_split_over_frames() {
        let big = SeriesData {
            labels: Labels::from_pairs([("__name__", "big")]),
            // Random-looking values: about 8 bytes a sample.
            samples: (0..300_000)
                .map(|i| {
                    (
                        i,
                        f64::from_bits(0x4000_0000_0000_0000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12),
                    )
                })
                .collect(),
        };
        let f = frames(&streamed_body(&[vec![big.clone()]]));
        assert!(f.len() > 1, "{} frames", f.len());
        let n: usize = f
            .iter()
            .flat_map(|f| &f.chunked_series)
            .flat_map(|s| &s.chunks)
            .map(|c| decode(&c.data).len())
            .sum();
        assert_eq!(n, big.samples.len());
    }

    #[test]
    fn requests_are_checked() {
        assert!(decode_request(b"not snappy at all").is_err());
        let q = prompb::Query {
            matchers: vec![prompb::LabelMatcher {
                r#type: 7,
                name: "a".into(),
                value: "b".into(),
            }],
            ..Default::default()
        };
        assert!(compile(&q).unwrap_err().contains("unknown matcher type 7"));
        assert!(compile(&prompb::Query::default())
            .unwrap_err()
            .contains("at least one matcher"));
    }
}
