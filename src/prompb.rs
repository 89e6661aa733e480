//! Prometheus remote-write 1.0 and remote-read protobuf messages.
//!
//! Hand-written `prost` structs whose field numbers follow Prometheus's
//! `prompb/remote.proto` and `prompb/types.proto` (package `prometheus`), so
//! there is no `.proto` compile step in the build. This file owns the wire
//! shape only: it must not validate, interpret or store anything (that is
//! `remote_write.rs` and the TSDB), and field numbers here must never be
//! changed, since they are the protocol.
//!
//! Native histograms are decoded as [`OpaqueHistogram`], a message with no
//! fields: prost skips their contents, so a request that carries them still
//! decodes and the receiver can count them, without allocating their bucket
//! arrays. The full [`Histogram`] message is here for senders and tests.

/// A remote-write request (`prometheus.WriteRequest`). Field 2 is reserved
/// upstream (Cortex used it for the request source) and is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series, each with its labels and samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (type, help, unit), sent by Prometheus
    /// periodically, independently of the samples.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series and its data points (`prometheus.TimeSeries`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// The series identity; senders must send them sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples, in time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars attached to the series.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples: counted, never decoded (see the module doc).
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<OpaqueHistogram>,
}

/// One label pair (`prometheus.Label`). Both fields are proto3 `string`, so
/// prost refuses a message whose bytes are not UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value; an empty value means the label is absent.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One float sample (`prometheus.Sample`).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// The value; NaN with the stale-marker bit pattern marks a stale series,
    /// so the bits must be kept as they are.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// An exemplar (`prometheus.Exemplar`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Exemplar labels (for example a trace id); may be empty.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// A native histogram sample with its contents skipped: prost ignores the
/// fields of a message it does not declare, so this decodes any valid
/// `prometheus.Histogram` and costs no memory (it is zero-sized).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct OpaqueHistogram {}

/// A native histogram (`prometheus.Histogram`), integer or float flavour.
/// Not used by the receive path (which uses [`OpaqueHistogram`]); kept with
/// the real field numbers for senders, tests and future native support.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Count of observations, integer or float.
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    /// Sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// Bucket schema: -4..=8 are base-2 exponential schemas.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// Width of the zero bucket.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Count in the zero bucket, integer or float.
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    /// Spans of populated negative buckets.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket counts as deltas to the previous bucket (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative bucket counts as absolute values (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Spans of populated positive buckets.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket counts as deltas to the previous bucket (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive bucket counts as absolute values (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// Counter-reset hint, a [`histogram::ResetHint`].
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Bucket bounds of a custom-buckets histogram (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// The oneofs and enum nested in [`Histogram`].
pub mod histogram {
    /// Count of observations.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        /// Integer histogram count.
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        /// Float histogram count.
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    /// Count in the zero bucket.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        /// Integer histogram zero count.
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        /// Float histogram zero count.
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    /// Whether a counter reset happened before this histogram.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        /// Unknown: the receiver must detect resets itself.
        Unknown = 0,
        /// A reset happened.
        Yes = 1,
        /// No reset happened.
        No = 2,
        /// A gauge histogram, where resets do not apply.
        Gauge = 3,
    }
}

/// A run of consecutive buckets (`prometheus.BucketSpan`).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or start index for the first one.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Number of consecutive buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// Metadata of one metric family (`prometheus.MetricMetadata`). Field 3 is
/// unused upstream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetricMetadata {
    /// The family type, a [`MetricType`]; unknown numbers decode as-is.
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    /// Family name, without `_bucket`/`_sum`/`_count` suffixes for histograms.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The `# HELP` text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit, for example `seconds`; often empty.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Metric family types (`prometheus.MetricMetadata.MetricType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Untyped.
    Unknown = 0,
    /// Monotone counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Histogram (classic or native).
    Histogram = 3,
    /// Gauge histogram.
    Gaugehistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info (OpenMetrics).
    Info = 6,
    /// Stateset (OpenMetrics).
    Stateset = 7,
}

impl MetricType {
    /// The type as Prometheus's `/api/v1/metadata` spells it.
    pub fn as_prometheus_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Gaugehistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::Stateset => "stateset",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    // Bytes written by hand from the field numbers in types.proto, so a typo
    // in a tag above cannot hide behind a symmetric encode/decode round trip.
    #[test]
    fn field_numbers_match_the_spec() {
        let s = Sample {
            value: 1.0,
            timestamp: 5,
        };
        // field 1, wire type 1 (fixed64) = 0x09; field 2, varint = 0x10.
        let mut want = vec![0x09];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 5]);
        assert_eq!(s.encode_to_vec(), want);

        let l = Label {
            name: "a".into(),
            value: "b".into(),
        };
        assert_eq!(l.encode_to_vec(), vec![0x0a, 1, b'a', 0x12, 1, b'b']);

        let m = MetricMetadata {
            r#type: MetricType::Gauge as i32,
            metric_family_name: "x".into(),
            help: "h".into(),
            unit: "u".into(),
        };
        assert_eq!(
            m.encode_to_vec(),
            vec![0x08, 2, 0x12, 1, b'x', 0x22, 1, b'h', 0x2a, 1, b'u']
        );

        let ts = TimeSeries {
            labels: vec![l.clone()],
            samples: vec![],
            exemplars: vec![],
            histograms: vec![],
        };
        let wr = WriteRequest {
            timeseries: vec![ts],
            metadata: vec![m],
        };
        let bytes = wr.encode_to_vec();
        assert_eq!(bytes[0], 0x0a, "timeseries is field 1");
        assert_eq!(bytes[2], 0x0a, "labels is field 1 of TimeSeries");
        assert_eq!(bytes[2 + 1 + 1 + 6], 0x1a, "metadata is field 3");
    }

    #[test]
    fn histograms_are_skipped_but_counted() {
        let h = Histogram {
            count: Some(histogram::Count::CountInt(3)),
            sum: 1.5,
            schema: 3,
            positive_spans: vec![BucketSpan { offset: -2, length: 2 }],
            positive_deltas: vec![1, 1],
            reset_hint: histogram::ResetHint::No as i32,
            timestamp: 1000,
            ..Default::default()
        };
        // TimeSeries with field 4 holding a full histogram.
        let mut ts = TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "h".into(),
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let hb = h.encode_to_vec();
        ts.push(0x22);
        ts.push(hb.len() as u8);
        ts.extend_from_slice(&hb);
        let got = TimeSeries::decode(&ts[..]).expect("decodes");
        assert_eq!(got.histograms.len(), 1);
        assert_eq!(Histogram::decode(&hb[..]).expect("decodes"), h);
    }
}

/// A remote-read request (`prometheus.ReadRequest`), sent snappy-compressed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    /// The queries, answered in order.
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// Response types the client accepts, in its order of preference;
    /// empty means `SAMPLES`.
    #[prost(enumeration = "ResponseType", repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// A remote-read response type (`prometheus.ReadRequest.ResponseType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseType {
    /// One snappy-compressed [`ReadResponse`] with raw samples.
    Samples = 0,
    /// A stream of [`ChunkedReadResponse`] frames with XOR chunks.
    StreamedXorChunks = 1,
}

/// One remote-read query (`prometheus.Query`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// Start of the range, ms, inclusive.
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// End of the range, ms, inclusive.
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    /// The series selector.
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
    /// Hints (step, function, grouping): read and ignored.
    #[prost(message, optional, tag = "4")]
    pub hints: Option<ReadHints>,
}

/// A label matcher (`prometheus.LabelMatcher`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    /// `EQ`, `NEQ`, `RE` or `NRE`.
    #[prost(enumeration = "MatcherType", tag = "1")]
    pub r#type: i32,
    /// Label name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Value or regex.
    #[prost(string, tag = "3")]
    pub value: String,
}

/// The operator of a [`LabelMatcher`] (`prometheus.LabelMatcher.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MatcherType {
    /// `=`
    Eq = 0,
    /// `!=`
    Neq = 1,
    /// `=~`
    Re = 2,
    /// `!~`
    Nre = 3,
}

/// Query hints (`prometheus.ReadHints`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadHints {
    /// Query step, ms.
    #[prost(int64, tag = "1")]
    pub step_ms: i64,
    /// The function around the selector.
    #[prost(string, tag = "2")]
    pub func: String,
    /// Start, ms.
    #[prost(int64, tag = "3")]
    pub start_ms: i64,
    /// End, ms.
    #[prost(int64, tag = "4")]
    pub end_ms: i64,
    /// Grouping labels.
    #[prost(string, repeated, tag = "5")]
    pub grouping: Vec<String>,
    /// `by` or `without`.
    #[prost(bool, tag = "6")]
    pub by: bool,
    /// The range of the selector, ms.
    #[prost(int64, tag = "7")]
    pub range_ms: i64,
}

/// A `SAMPLES` remote-read response (`prometheus.ReadResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadResponse {
    /// One result per query, in order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// The series of one query (`prometheus.QueryResult`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    /// Series with their samples in the query's range.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// One frame of a `STREAMED_XOR_CHUNKS` response
/// (`prometheus.ChunkedReadResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedReadResponse {
    /// Series, each with all or part of its chunks.
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    /// Which query of the request this frame answers.
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

/// A series and chunks of it (`prometheus.ChunkedSeries`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkedSeries {
    /// The series' labels, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Chunks in time order, not overlapping.
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// One chunk (`prometheus.Chunk`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// First sample's timestamp, ms.
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    /// Last sample's timestamp, ms.
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// Encoding: 1 is XOR.
    #[prost(enumeration = "ChunkEncoding", tag = "3")]
    pub r#type: i32,
    /// The chunk's bytes (docs/format/chunk.md: Prometheus's XOR chunk).
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// A chunk's encoding (`prometheus.Chunk.Encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChunkEncoding {
    /// Unknown.
    Unknown = 0,
    /// Gorilla XOR floats.
    Xor = 1,
}
