//! Remote-write 1.0 request decoding and validation.
//!
//! This file owns turning the bytes of a `POST /api/v1/write` body into
//! validated series: snappy block decompression with size limits checked
//! before allocating, an allocation-free pre-scan that bounds how many
//! objects the protobuf decoder may create, the prost decode itself, and
//! per-series label validation. It does no I/O, knows no HTTP framework
//! types, and must not panic on any input: every failure is a
//! [`WriteError`] (the whole request is refused) or a reason in
//! [`Validated::rejected`] (one series is dropped, the rest are kept).

use prost::Message;

use crate::cluster::batcher::check_series_fits;
use crate::prompb;
use crate::raft::command::ENTRY_REQUESTS_BYTES_MAX;
use crate::tsdb::labels::{Label, LabelError, Labels, LABEL_LENGTH_MAX, METRIC_NAME};

/// Largest compressed request body any configuration accepts, in bytes:
/// the ceiling of `write.body_bytes_max` (the reason is on the constant in
/// `config::bounds`). [`decode`] enforces the configured value it is given,
/// the same one the HTTP layer reads the body with.
pub use crate::config::WRITE_BODY_BYTES_MAX;

/// The configured limits a request is checked against (`write.*`), each
/// at most the ceiling the decoder enforces anyway: [`WRITE_BODY_BYTES_MAX`],
/// [`WRITE_SERIES_MAX`], [`LABEL_LENGTH_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `write.body_bytes_max`.
    pub body_bytes_max: usize,
    /// `write.request_series_max`.
    pub series_max: usize,
    /// `write.label_name_bytes_max`.
    pub label_name_bytes_max: usize,
    /// `write.label_value_bytes_max`.
    pub label_value_bytes_max: usize,
}

impl Default for Limits {
    /// The ceilings themselves.
    fn default() -> Self {
        Limits {
            body_bytes_max: WRITE_BODY_BYTES_MAX,
            series_max: WRITE_SERIES_MAX,
            label_name_bytes_max: LABEL_LENGTH_MAX,
            label_value_bytes_max: LABEL_LENGTH_MAX,
        }
    }
}

// The configuration's ceilings are the decoder's: a configured limit can
// only tighten what is enforced here.
const _: () = assert!(*crate::config::bounds::REQUEST_SERIES.end() == WRITE_SERIES_MAX);
const _: () = assert!(*crate::config::bounds::LABEL_BYTES.end() == LABEL_LENGTH_MAX);

/// Characters of an over-long label name shown in the error.
const LABEL_NAME_SHOWN_MAX: usize = 64;

/// Largest snappy-decoded body accepted, in bytes. The decoded size is read
/// from the snappy header and checked before the output buffer is
/// allocated, so a 20-byte body claiming gigabytes costs nothing. Label-heavy
/// protobuf compresses roughly 5-10x; twice the compressed limit covers any
/// realistic request.
pub const WRITE_DECODED_BYTES_MAX: usize = 64 << 20;

// Any body the configuration lets through may announce a decoded size the
// decoder accepts (snappy itself makes a body larger only by a few bytes).
const _: () = assert!(WRITE_DECODED_BYTES_MAX >= WRITE_BODY_BYTES_MAX);

/// Most series (`TimeSeries` entries) in one request. A 2-byte empty series
/// decodes to a ~100-byte struct, so without this bound a hostile 64 MiB
/// body could make the decoder allocate gigabytes.
pub const WRITE_SERIES_MAX: usize = 100_000;

/// Most data points (float samples, native histograms and exemplars
/// together) in one request: fifty times Prometheus's default batch.
pub const WRITE_SAMPLES_MAX: usize = 1_000_000;

/// Most label pairs (of series and of exemplars together) in one request:
/// 20 labels for each of [`WRITE_SERIES_MAX`] series. Bounds the decoder's
/// memory like the limits above (an empty label is 2 bytes on the wire and
/// 48 in memory).
pub const WRITE_LABELS_MAX: usize = 2_000_000;

/// Most metadata entries in one request. Prometheus sends metadata in
/// batches of `max_samples_per_send` too.
pub const WRITE_METADATA_MAX: usize = 100_000;

/// Longest description of a series put into a rejection reason, in bytes, so
/// that a series with thousands of labels does not make a huge error body.
const SERIES_DESCRIPTION_MAX: usize = 256;

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The compressed body is larger than the configured
    /// `write.body_bytes_max` (at most [`WRITE_BODY_BYTES_MAX`]).
    #[error("request body is {size} bytes, more than the limit of {limit} bytes")]
    BodyTooLarge {
        /// Body size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not valid snappy block-format data.
    #[error("invalid snappy block-format body: {0}")]
    Snappy(String),
    /// The snappy header announces more than [`WRITE_DECODED_BYTES_MAX`].
    #[error("snappy-decoded body would be {size} bytes, more than the limit of {limit} bytes")]
    DecodedTooLarge {
        /// Decoded size announced by the snappy header.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The decoded bytes are not a valid `WriteRequest`.
    #[error("invalid protobuf WriteRequest: {0}")]
    Protobuf(String),
    /// More series than [`WRITE_SERIES_MAX`].
    #[error("request has {count} series, more than the limit of {limit}")]
    TooManySeries {
        /// Series in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More samples, histograms and exemplars than [`WRITE_SAMPLES_MAX`].
    #[error("request has {count} samples, histograms and exemplars, more than the limit of {limit}")]
    TooManySamples {
        /// Data points in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More label pairs than [`WRITE_LABELS_MAX`].
    #[error("request has {count} labels, more than the limit of {limit}")]
    TooManyLabels {
        /// Label pairs in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More metadata entries than [`WRITE_METADATA_MAX`].
    #[error("request has {count} metadata entries, more than the limit of {limit}")]
    TooManyMetadata {
        /// Metadata entries in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl WriteError {
    /// The HTTP status to answer with: 413 for size limits, 400 for
    /// malformed bodies. Both are 4xx, so a Prometheus sender drops the batch
    /// instead of retrying it forever.
    pub fn http_status(&self) -> u16 {
        match self {
            WriteError::BodyTooLarge { .. }
            | WriteError::DecodedTooLarge { .. }
            | WriteError::TooManySeries { .. }
            | WriteError::TooManySamples { .. }
            | WriteError::TooManyLabels { .. }
            | WriteError::TooManyMetadata { .. } => 413,
            WriteError::Snappy(_) | WriteError::Protobuf(_) => 400,
        }
    }
}

/// Decodes a remote-write body: snappy block format, then protobuf.
///
/// Every size limit is checked before the memory it guards is allocated:
/// the body length, the decoded length from the snappy header, and the
/// counts of series, samples, labels and metadata from a pre-scan of the
/// protobuf bytes. `body_bytes_max` is `write.body_bytes_max`.
pub fn decode(body: &[u8], body_bytes_max: usize) -> Result<prompb::WriteRequest, WriteError> {
    decode_with(
        body,
        &Limits {
            body_bytes_max,
            ..Limits::default()
        },
    )
}

/// [`decode`] with every configured limit.
pub fn decode_with(body: &[u8], limits: &Limits) -> Result<prompb::WriteRequest, WriteError> {
    let body_bytes_max = limits.body_bytes_max;
    if body.len() > body_bytes_max {
        return Err(WriteError::BodyTooLarge {
            size: body.len(),
            limit: body_bytes_max,
        });
    }
    let size = snap::raw::decompress_len(body).map_err(|e| WriteError::Snappy(e.to_string()))?;
    if size > WRITE_DECODED_BYTES_MAX {
        return Err(WriteError::DecodedTooLarge {
            size,
            limit: WRITE_DECODED_BYTES_MAX,
        });
    }
    let mut raw = vec![0u8; size];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut raw)
        .map_err(|e| WriteError::Snappy(e.to_string()))?;
    raw.truncate(n);

    let counts = scan(&raw)?;
    counts.check(limits.series_max)?;
    prompb::WriteRequest::decode(raw.as_slice()).map_err(|e| WriteError::Protobuf(e.to_string()))
}

/// A series that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSeries {
    /// The identity: sorted, unique, valid, without empty values.
    pub labels: Labels,
    /// `(timestamp ms, value)` in the order the sender sent them.
    pub samples: Vec<(i64, f64)>,
}

/// Metadata of one metric family, as `/api/v1/metadata` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The family name.
    pub metric_family_name: String,
    /// `"counter"`, `"gauge"`, `"histogram"`, `"gaugehistogram"`,
    /// `"summary"`, `"info"`, `"stateset"` or `"unknown"`.
    pub kind: &'static str,
    /// The help text.
    pub help: String,
    /// The unit, often empty.
    pub unit: String,
}

/// The usable part of a request and what was dropped from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validated {
    /// Valid series that carry at least one float sample.
    pub series: Vec<ValidatedSeries>,
    /// Metadata entries with a valid family name.
    pub metadata: Vec<Metadata>,
    /// One reason per series that lost data (dropped for invalid labels, or
    /// stripped of native histograms), in request order. Prometheus answers
    /// such a request with 400 and the first reason, after storing the rest.
    pub rejected: Vec<String>,
    /// Float samples of dropped series.
    pub samples_rejected: usize,
    /// Native histogram samples, all dropped: they are not supported yet.
    pub histograms_rejected: usize,
    /// Exemplars, all ignored: they are not stored. Not an error, as in
    /// Prometheus with exemplar storage disabled.
    pub exemplars_ignored: usize,
}

/// Validates a decoded request series by series. Invalid series are dropped
/// with their reason recorded and their samples counted; valid ones are
/// kept, moving their strings rather than copying them.
pub fn validate(req: prompb::WriteRequest) -> Validated {
    validate_with(req, &Limits::default())
}

/// [`validate`] with the configured label lengths of `limits`.
pub fn validate_with(req: prompb::WriteRequest, limits: &Limits) -> Validated {
    let mut out = Validated {
        series: Vec::with_capacity(req.timeseries.len()),
        ..Validated::default()
    };
    // Reused across series so checking labels allocates nothing per series.
    let mut scratch: Vec<(&str, &str)> = Vec::new();
    for ts in req.timeseries {
        out.exemplars_ignored += ts.exemplars.len();
        out.histograms_rejected += ts.histograms.len();
        let mut scratch_live = recycle(std::mem::take(&mut scratch));
        scratch_live.extend(ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        let checked = check_labels(&scratch_live, limits);
        scratch = recycle(scratch_live);
        if let Err(e) = checked {
            out.samples_rejected += ts.samples.len();
            out.rejected.push(format!("series {}: {e}", describe(&ts.labels)));
            continue;
        }
        if !ts.histograms.is_empty() {
            out.rejected.push(format!(
                "series {}: {} native histogram samples dropped: native histograms are not supported",
                describe(&ts.labels),
                ts.histograms.len()
            ));
        }
        if ts.samples.is_empty() {
            continue;
        }
        let labels = Labels::from_sorted_unchecked(
            ts.labels
                .into_iter()
                .filter(|l| !l.value.is_empty())
                .map(|l| Label {
                    name: l.name,
                    value: l.value,
                })
                .collect(),
        );
        if let Err(e) = check_series_fits(&labels, ENTRY_REQUESTS_BYTES_MAX) {
            out.samples_rejected += ts.samples.len();
            out.rejected.push(format!("series {}: {e}", describe_labels(&labels)));
            continue;
        }
        let samples = ts.samples.into_iter().map(|s| (s.timestamp, s.value)).collect();
        out.series.push(ValidatedSeries { labels, samples });
    }
    for m in req.metadata {
        if !crate::tsdb::labels::is_valid_metric_name(&m.metric_family_name) {
            // Metadata is advisory: a bad entry is dropped, not an error.
            continue;
        }
        let kind = prompb::MetricType::try_from(m.r#type).map_or("unknown", |t| t.as_prometheus_str());
        out.metadata.push(Metadata {
            metric_family_name: m.metric_family_name,
            kind,
            help: m.help,
            unit: m.unit,
        });
    }
    out
}

/// Why one series of a request was dropped for its labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesLabelsError {
    /// The wire rules (names, order, counts, lengths).
    #[error(transparent)]
    Label(#[from] LabelError),
    /// No `__name__`, or an empty one.
    #[error("series has no metric name ({METRIC_NAME} label)")]
    NoMetricName,
    /// A label name or value longer than the configured limit.
    #[error(
        "label {name:?}: {what} is {len} bytes long, more than the limit of {limit} (write.label_{what}_bytes_max)"
    )]
    TooLong {
        /// The label's name, cut for the message.
        name: String,
        /// `name` or `value`.
        what: &'static str,
        /// Its length, bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Wire validation, plus a check the wire rules leave out: a series must
/// have a non-empty `__name__`. Returns the reason for refusing it.
fn check_labels(pairs: &[(&str, &str)], limits: &Limits) -> Result<(), SeriesLabelsError> {
    for (name, value) in pairs {
        let over = if name.len() > limits.label_name_bytes_max {
            Some(("name", name.len(), limits.label_name_bytes_max))
        } else if value.len() > limits.label_value_bytes_max {
            Some(("value", value.len(), limits.label_value_bytes_max))
        } else {
            None
        };
        if let Some((what, len, limit)) = over {
            return Err(SeriesLabelsError::TooLong {
                name: name.chars().take(LABEL_NAME_SHOWN_MAX).collect(),
                what,
                len,
                limit,
            });
        }
    }
    Labels::validate_wire(pairs)?;
    if !pairs.iter().any(|(n, v)| *n == METRIC_NAME && !v.is_empty()) {
        return Err(SeriesLabelsError::NoMetricName);
    }
    Ok(())
}

/// Empties a vector of borrowed pairs and hands back its allocation with a
/// fresh lifetime, so one buffer serves every series of a request. The
/// collect reuses the allocation because the element layout is unchanged.
fn recycle<'b>(mut v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    v.into_iter().map(|_| ("", "")).collect()
}

/// `name{a="b", ...}` for error messages, cut to [`SERIES_DESCRIPTION_MAX`].
fn describe(labels: &[prompb::Label]) -> String {
    describe_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// [`describe`] for a validated label set.
fn describe_labels(labels: &Labels) -> String {
    describe_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

fn describe_pairs<'a>(labels: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let name = labels.clone().find(|(n, _)| *n == METRIC_NAME).map_or("", |(_, v)| v);
    let mut s = String::new();
    s.push_str(name);
    s.push('{');
    let mut first = true;
    for (n, v) in labels.filter(|(n, _)| *n != METRIC_NAME) {
        if s.len() > SERIES_DESCRIPTION_MAX {
            break;
        }
        if !first {
            s.push_str(", ");
        }
        first = false;
        s.push_str(n);
        s.push('=');
        s.push_str(&format!("{v:?}"));
    }
    if s.len() > SERIES_DESCRIPTION_MAX {
        let mut end = SERIES_DESCRIPTION_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s.push('}');
    s
}

/// Object counts found by [`scan`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    series: usize,
    points: usize,
    labels: usize,
    metadata: usize,
}

impl Counts {
    /// Checks the counts against the ceilings, and the series against the
    /// configured `series_max` (at most [`WRITE_SERIES_MAX`]).
    fn check(&self, series_max: usize) -> Result<(), WriteError> {
        let series_max = series_max.min(WRITE_SERIES_MAX);
        if self.series > series_max {
            return Err(WriteError::TooManySeries {
                count: self.series,
                limit: series_max,
            });
        }
        if self.points > WRITE_SAMPLES_MAX {
            return Err(WriteError::TooManySamples {
                count: self.points,
                limit: WRITE_SAMPLES_MAX,
            });
        }
        if self.labels > WRITE_LABELS_MAX {
            return Err(WriteError::TooManyLabels {
                count: self.labels,
                limit: WRITE_LABELS_MAX,
            });
        }
        if self.metadata > WRITE_METADATA_MAX {
            return Err(WriteError::TooManyMetadata {
                count: self.metadata,
                limit: WRITE_METADATA_MAX,
            });
        }
        Ok(())
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_SGROUP: u8 = 3;
const WIRE_EGROUP: u8 = 4;
const WIRE_I32: u8 = 5;

/// Counts series, data points, labels and metadata in an encoded
/// `WriteRequest` without allocating, so the limits hold before prost builds
/// anything. It only descends where it counts and is lenient elsewhere:
/// prost, which runs next, is the real judge of validity, and the scan must
/// never refuse what prost accepts.
fn scan(buf: &[u8]) -> Result<Counts, WriteError> {
    let mut c = Counts::default();
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                c.series += 1;
                scan_series(r.len_delimited()?, &mut c)?;
            }
            (3, WIRE_LEN) => {
                c.metadata += 1;
                r.len_delimited()?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(c)
}

fn scan_series(buf: &[u8], c: &mut Counts) -> Result<(), WriteError> {
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                c.labels += 1;
                r.len_delimited()?;
            }
            (2, WIRE_LEN) | (4, WIRE_LEN) => {
                c.points += 1;
                r.len_delimited()?;
            }
            (3, WIRE_LEN) => {
                c.points += 1;
                let mut e = Reader {
                    buf: r.len_delimited()?,
                    pos: 0,
                };
                while let Some((field, wire)) = e.key()? {
                    if (field, wire) == (1, WIRE_LEN) {
                        c.labels += 1;
                    }
                    e.skip(wire)?;
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

/// A bounds-checked cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(what: &str) -> WriteError {
    WriteError::Protobuf(format!("malformed message: {what}"))
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WriteError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(malformed("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    /// The next field key, or `None` at the end of the buffer.
    fn key(&mut self) -> Result<Option<(u64, u8)>, WriteError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err(malformed("field number 0"));
        }
        Ok(Some((field, (k & 7) as u8)))
    }

    fn advance(&mut self, n: u64) -> Result<&'a [u8], WriteError> {
        let rest = self.buf.len() - self.pos;
        if n > rest as u64 {
            return Err(malformed("field runs past the end of its message"));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], WriteError> {
        let n = self.varint()?;
        self.advance(n)
    }

    /// Skips one value of `wire` type. Groups (proto2 only, never sent by a
    /// remote-write client) are skipped by nesting depth, without recursion.
    fn skip(&mut self, wire: u8) -> Result<(), WriteError> {
        let mut depth: usize = 0;
        let mut wire = wire;
        loop {
            match wire {
                WIRE_VARINT => {
                    self.varint()?;
                }
                WIRE_I64 => {
                    self.advance(8)?;
                }
                WIRE_LEN => {
                    self.len_delimited()?;
                }
                WIRE_I32 => {
                    self.advance(4)?;
                }
                WIRE_SGROUP => depth += 1,
                WIRE_EGROUP => {
                    if depth == 0 {
                        return Err(malformed("unexpected end group"));
                    }
                    depth -= 1;
                }
                _ => return Err(malformed("invalid wire type")),
            }
            if depth == 0 {
                return Ok(());
            }
            match self.key()? {
                Some((_, w)) => wire = w,
                None => return Err(malformed("unterminated group")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Exemplar, Label as PLabel, MetricMetadata, MetricType, Sample, TimeSeries, WriteRequest};

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: pairs
                .iter()
                .map(|(n, v)| PLabel {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
            exemplars: vec![],
            histograms: vec![],
        }
    }

    fn compress(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).expect("compress")
    }

    fn request() -> WriteRequest {
        let mut a = series(
            &[("__name__", "up"), ("instance", "h:9100"), ("job", "node")],
            &[(1000, 1.0), (2000, 0.0)],
        );
        a.exemplars.push(Exemplar {
            labels: vec![PLabel {
                name: "trace_id".into(),
                value: "abc".into(),
            }],
            value: 0.5,
            timestamp: 1500,
        });
        WriteRequest {
            timeseries: vec![
                a,
                series(
                    &[("__name__", "x_total"), ("a", "")],
                    &[(1000, f64::from_bits(0x7ff0000000000002))],
                ),
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "x_total".into(),
                help: "An x.".into(),
                unit: String::new(),
            }],
        }
    }

    #[test]
    fn round_trip_of_a_real_request() {
        let req = request();
        let body = compress(&req.encode_to_vec());
        let got = decode(&body, WRITE_BODY_BYTES_MAX).expect("decodes");
        // Compared as bytes: the stale-marker NaN is not equal to itself.
        assert_eq!(got.encode_to_vec(), req.encode_to_vec());

        let v = validate(got);
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        assert_eq!(v.series.len(), 2);
        assert_eq!(v.series[0].labels.to_string(), "up{instance=\"h:9100\", job=\"node\"}");
        assert_eq!(v.series[0].samples, vec![(1000, 1.0), (2000, 0.0)]);
        // The empty label is dropped and the stale-marker NaN keeps its bits.
        assert_eq!(v.series[1].labels.len(), 1);
        assert_eq!(v.series[1].samples[0].1.to_bits(), 0x7ff0000000000002);
        assert_eq!(v.exemplars_ignored, 1);
        assert_eq!(
            v.metadata,
            vec![Metadata {
                metric_family_name: "x_total".into(),
                kind: "counter",
                help: "An x.".into(),
                unit: "".into()
            }]
        );
    }

    #[test]
    fn configured_limits_refuse_long_labels_and_too_many_series() {
        let limits = Limits {
            series_max: 2,
            label_name_bytes_max: 8,
            label_value_bytes_max: 5,
            ..Limits::default()
        };
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "ok"), ("job", "node")], &[(1, 1.0)]),
                series(&[("__name__", "v"), ("job", "node-exporter")], &[(1, 1.0), (2, 2.0)]),
                series(&[("__name__", "n"), ("a_long_name", "x")], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        // Three series against a limit of two: refused whole, naming it.
        let body = compress(&req.encode_to_vec());
        let err = decode_with(&body, &limits).expect_err("over request_series_max");
        assert_eq!(err, WriteError::TooManySeries { count: 3, limit: 2 });
        assert_eq!(err.http_status(), 413);
        // The label lengths drop one series each, the valid one is kept.
        let v = validate_with(req, &limits);
        assert_eq!(v.series.len(), 1);
        assert_eq!(v.samples_rejected, 3);
        assert_eq!(v.rejected.len(), 2);
        assert!(
            v.rejected[0].contains("value is 13 bytes long, more than the limit of 5 (write.label_value_bytes_max)"),
            "{}",
            v.rejected[0]
        );
        assert!(
            v.rejected[1].contains(
                "\"a_long_name\": name is 11 bytes long, more than the limit of 8 (write.label_name_bytes_max)"
            ),
            "{}",
            v.rejected[1]
        );
        // The defaults are the ceilings: the same request passes.
        assert_eq!(
            validate(decode(&body, WRITE_BODY_BYTES_MAX).expect("decodes"))
                .series
                .len(),
            3
        );
    }

    #[test]
    fn truncated_snappy_is_a_snappy_error() {
        let body = compress(&request().encode_to_vec());
        let err = decode(&body[..body.len() / 2], WRITE_BODY_BYTES_MAX).expect_err("truncated");
        assert!(matches!(err, WriteError::Snappy(_)), "{err}");
        assert_eq!(err.http_status(), 400);
        assert!(matches!(decode(&[], WRITE_BODY_BYTES_MAX), Err(WriteError::Snappy(_))));
    }

    #[test]
    fn garbage_protobuf_is_a_protobuf_error() {
        let err = decode(&compress(&[0xff; 64]), WRITE_BODY_BYTES_MAX).expect_err("garbage");
        assert!(matches!(err, WriteError::Protobuf(_)), "{err}");
        assert_eq!(err.http_status(), 400);
        // A length that runs past the end.
        let err = decode(&compress(&[0x0a, 0x7f, 0x0a]), WRITE_BODY_BYTES_MAX).expect_err("short");
        assert!(matches!(err, WriteError::Protobuf(_)), "{err}");
        // Wrong wire type for a known field: the scan lets it through, prost refuses it.
        let err = decode(&compress(&[0x08, 0x01]), WRITE_BODY_BYTES_MAX).expect_err("wire type");
        assert!(matches!(err, WriteError::Protobuf(_)), "{err}");
    }

    #[test]
    fn invalid_utf8_in_a_label_is_a_protobuf_error() {
        // Label { name = "a", value = [0xff, 0xfe] } inside TimeSeries field 1 inside WriteRequest field 1.
        let label = [0x0a, 1, b'a', 0x12, 2, 0xff, 0xfe];
        let mut ts = vec![0x0a, label.len() as u8];
        ts.extend_from_slice(&label);
        let mut wr = vec![0x0a, ts.len() as u8];
        wr.extend_from_slice(&ts);
        let err = decode(&compress(&wr), WRITE_BODY_BYTES_MAX).expect_err("utf-8");
        assert!(
            matches!(err, WriteError::Protobuf(ref m) if m.contains("UTF-8")),
            "{err}"
        );
    }

    #[test]
    fn unsorted_and_duplicate_labels_drop_the_series() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "a"), ("z", "1"), ("b", "2")], &[(1, 1.0), (2, 2.0)]),
                series(&[("__name__", "a"), ("b", "1"), ("b", "2")], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        let v = validate(req);
        assert!(v.series.is_empty());
        assert_eq!(v.samples_rejected, 3);
        assert_eq!(v.rejected.len(), 2);
        assert!(v.rejected[0].contains("not sorted"), "{}", v.rejected[0]);
        assert!(v.rejected[1].contains("duplicate label name"), "{}", v.rejected[1]);
    }

    #[test]
    fn ten_thousand_labels_on_one_series_are_refused() {
        let names: Vec<String> = (0..10_000).map(|i| format!("l{i:05}")).collect();
        let mut pairs: Vec<(&str, &str)> = vec![("__name__", "wide")];
        pairs.extend(names.iter().map(|n| (n.as_str(), "v")));
        let req = WriteRequest {
            timeseries: vec![series(&pairs, &[(1, 1.0)])],
            metadata: vec![],
        };
        let got = decode(&compress(&req.encode_to_vec()), WRITE_BODY_BYTES_MAX).expect("within request limits");
        let v = validate(got);
        assert!(v.series.is_empty());
        assert_eq!(v.samples_rejected, 1);
        assert!(v.rejected[0].contains("10001 labels"), "{}", v.rejected[0]);
        assert!(
            v.rejected[0].len() < 512,
            "reason is bounded: {} bytes",
            v.rejected[0].len()
        );
    }

    #[test]
    fn missing_metric_name_and_bad_names_are_refused() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("job", "x")], &[(1, 1.0)]),
                series(&[("__name__", ""), ("job", "x")], &[(1, 1.0)]),
                series(&[("__name__", "a"), ("bad-name", "x")], &[(1, 1.0)]),
                series(&[], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        let v = validate(req);
        assert!(v.series.is_empty());
        assert_eq!(v.rejected.len(), 4);
        assert_eq!(v.samples_rejected, 4);
        assert_eq!(
            v.rejected[0],
            "series {job=\"x\"}: series has no metric name (__name__ label)"
        );
    }

    #[test]
    fn a_one_gigabyte_snappy_header_is_refused_before_allocating() {
        // Varint 1 GiB, then a little junk: decompressing would need 1 GiB.
        let mut body = Vec::new();
        let mut n: u64 = 1 << 30;
        while n >= 0x80 {
            body.push((n as u8) | 0x80);
            n >>= 7;
        }
        body.push(n as u8);
        body.extend_from_slice(&[0; 16]);
        let err = decode(&body, WRITE_BODY_BYTES_MAX).expect_err("too large");
        assert_eq!(
            err,
            WriteError::DecodedTooLarge {
                size: 1 << 30,
                limit: WRITE_DECODED_BYTES_MAX
            }
        );
        assert_eq!(err.http_status(), 413);
        assert!(err.to_string().contains(&WRITE_DECODED_BYTES_MAX.to_string()));
    }

    #[test]
    fn body_over_the_limit_is_refused() {
        let body = vec![0u8; WRITE_BODY_BYTES_MAX + 1];
        let err = decode(&body, WRITE_BODY_BYTES_MAX).expect_err("too large");
        assert!(matches!(err, WriteError::BodyTooLarge { .. }));
        assert_eq!(err.http_status(), 413);
    }

    #[test]
    fn object_counts_are_limited_before_decoding() {
        // WRITE_SERIES_MAX + 1 empty series: 2 bytes each on the wire.
        let raw: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], WRITE_SERIES_MAX + 1)
            .flatten()
            .collect();
        let err = decode(&compress(&raw), WRITE_BODY_BYTES_MAX).expect_err("too many series");
        assert_eq!(
            err,
            WriteError::TooManySeries {
                count: WRITE_SERIES_MAX + 1,
                limit: WRITE_SERIES_MAX
            }
        );

        // One series with WRITE_SAMPLES_MAX + 1 empty samples.
        let n = WRITE_SAMPLES_MAX + 1;
        let mut raw = vec![0x0a];
        let mut len = (2 * n) as u64;
        while len >= 0x80 {
            raw.push((len as u8) | 0x80);
            len >>= 7;
        }
        raw.push(len as u8);
        raw.extend(std::iter::repeat_n([0x12, 0x00], n).flatten());
        let err = decode(&compress(&raw), WRITE_BODY_BYTES_MAX).expect_err("too many samples");
        assert_eq!(
            err,
            WriteError::TooManySamples {
                count: n,
                limit: WRITE_SAMPLES_MAX
            }
        );
        assert!(err.to_string().contains("1000000"));
    }

    #[test]
    fn one_bad_and_one_good_series_keeps_the_good_one() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "bad"), ("a", "1"), ("a", "2")], &[(1, 1.0)]),
                series(&[("__name__", "good"), ("a", "1")], &[(1, 1.0), (2, 2.0)]),
            ],
            metadata: vec![],
        };
        let v = validate(decode(&compress(&req.encode_to_vec()), WRITE_BODY_BYTES_MAX).expect("decodes"));
        assert_eq!(v.series.len(), 1);
        assert_eq!(v.series[0].labels.metric_name(), "good");
        assert_eq!(v.series[0].samples.len(), 2);
        assert_eq!(v.samples_rejected, 1);
        assert_eq!(v.rejected.len(), 1);
        assert!(v.rejected[0].starts_with("series bad{"), "{}", v.rejected[0]);
    }

    #[test]
    fn native_histograms_are_counted_and_rejected() {
        let h = prompb::Histogram {
            count: Some(prompb::histogram::Count::CountInt(2)),
            ..Default::default()
        };
        let hb = h.encode_to_vec();
        let mut ts = series(&[("__name__", "h")], &[(1, 1.0)]).encode_to_vec();
        for _ in 0..2 {
            ts.push(0x22);
            ts.push(hb.len() as u8);
            ts.extend_from_slice(&hb);
        }
        let mut wr = vec![0x0a, ts.len() as u8];
        wr.extend_from_slice(&ts);
        let v = validate(decode(&compress(&wr), WRITE_BODY_BYTES_MAX).expect("decodes"));
        assert_eq!(v.histograms_rejected, 2);
        assert_eq!(v.series.len(), 1, "the float samples are kept");
        assert_eq!(v.rejected.len(), 1);
    }

    #[test]
    fn unknown_metadata_type_and_bad_family_names() {
        let req = WriteRequest {
            timeseries: vec![],
            metadata: vec![
                MetricMetadata {
                    r#type: 42,
                    metric_family_name: "a".into(),
                    ..Default::default()
                },
                MetricMetadata {
                    r#type: 7,
                    metric_family_name: "b".into(),
                    ..Default::default()
                },
                MetricMetadata {
                    r#type: 1,
                    metric_family_name: "not valid".into(),
                    ..Default::default()
                },
            ],
        };
        let v = validate(req);
        let kinds: Vec<_> = v
            .metadata
            .iter()
            .map(|m| (m.metric_family_name.as_str(), m.kind))
            .collect();
        assert_eq!(kinds, vec![("a", "unknown"), ("b", "stateset")]);
    }

    /// splitmix64, so the fuzz inputs are the same on every run.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut st = 0x5eed_u64;
        let valid = request().encode_to_vec();
        for round in 0..4000 {
            let len = (next(&mut st) % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut st) as u8).collect();
            // Raw random bytes mostly stop at snappy; compressed ones reach
            // the scan and prost; mutated valid requests reach validation.
            let body = match round % 3 {
                0 => bytes,
                1 => compress(&bytes),
                _ => {
                    bytes = valid.clone();
                    for _ in 0..1 + next(&mut st) % 4 {
                        let i = (next(&mut st) as usize) % bytes.len();
                        bytes[i] ^= 1 << (next(&mut st) % 8);
                    }
                    compress(&bytes)
                }
            };
            if let Ok(req) = decode(&body, WRITE_BODY_BYTES_MAX) {
                let _ = validate(req);
            }
        }
    }

    #[test]
    fn scan_skips_groups_and_unknown_fields() {
        // Unknown fields of every wire type, including a nested group, then one series.
        let mut raw = vec![0x10, 0x05]; // field 2 varint
        raw.extend_from_slice(&[0x19, 0, 0, 0, 0, 0, 0, 0, 0]); // field 3 i64
        raw.extend_from_slice(&[0x2d, 0, 0, 0, 0]); // field 5 i32
        raw.extend_from_slice(&[0x33, 0x3b, 0x08, 0x01, 0x3c, 0x34]); // group 6 { group 7 { 1: 1 } }
        raw.extend_from_slice(&[0x0a, 0x00]); // an empty series
        let c = scan(&raw).expect("scans");
        assert_eq!(c.series, 1);
        assert!(scan(&[0x33]).is_err(), "unterminated group");
        assert!(scan(&[0x34]).is_err(), "stray end group");
        assert!(scan(&[0x07]).is_err(), "wire type 7");
    }
}
