//! The payload of promraft's log entries and what applying one answers.
//!
//! A write entry carries one or more client requests (group commit) encoded
//! with bincode and compressed with snappy, so an entry stays well below the
//! size at which sled starts storing values as separate blobs. The layout is
//! in docs/format/log-entry.md.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tsdb::{AppendRequest, AppendResult};

/// Largest encoded write payload of one entry. sled keeps values up to
/// about 128 KiB inline; past that each value becomes its own file and
/// fsync throughput drops by an order of magnitude (measured, DESIGN.md).
pub const ENTRY_PAYLOAD_BYTES_MAX: usize = 96 * 1024;

/// Largest bincode encoding of the requests of one write entry whose
/// snappy compression is certain to stay within [`ENTRY_PAYLOAD_BYTES_MAX`]
/// whatever the data: snappy's worst case for `n` bytes is
/// `32 + n + n / 6` (`snap::raw::max_compress_len`, checked in a test).
pub const ENTRY_RAW_BYTES_MAX: usize = (ENTRY_PAYLOAD_BYTES_MAX - 32) * 6 / 7;

const _: () = assert!(32 + ENTRY_RAW_BYTES_MAX + ENTRY_RAW_BYTES_MAX / 6 <= ENTRY_PAYLOAD_BYTES_MAX);

/// Most bytes the bincode length prefix of a sequence (or string) takes
/// (a `u64` varint).
pub const LENGTH_PREFIX_BYTES_MAX: usize = 9;

/// Most bytes one `(timestamp, value)` sample takes in a write payload: a
/// zig-zag varint `i64` (9 bytes for any timestamp past 1970-02-19) and a
/// fixed 8-byte `f64`.
pub const SAMPLE_BYTES_MAX: usize = 9 + 8;

/// Bytes of bincode's varint length prefix for `n` (the configuration of
/// `crate::codec`: 1 byte below 251, then a marker byte and 2, 4 or 8).
pub const fn length_prefix_bytes(n: usize) -> usize {
    if n < 251 {
        1
    } else if n <= u16::MAX as usize {
        3
    } else if n <= u32::MAX as usize {
        5
    } else {
        9
    }
}

/// Exact bytes a string takes in a write payload.
pub const fn string_bytes(s: &str) -> usize {
    length_prefix_bytes(s.len()) + s.len()
}

/// Exact bytes a label set takes in a write payload.
pub fn labels_bytes(labels: &crate::tsdb::Labels) -> usize {
    length_prefix_bytes(labels.len())
        + labels
            .iter()
            .map(|l| string_bytes(&l.name) + string_bytes(&l.value))
            .sum::<usize>()
}

/// Upper bound of the bytes a series with labels of `labels_bytes` bytes
/// and `samples` samples takes in a write payload.
pub const fn series_bytes_bound(labels_bytes: usize, samples: usize) -> usize {
    labels_bytes + length_prefix_bytes(samples) + samples * SAMPLE_BYTES_MAX
}

/// Exact bytes one metadata entry takes in a write payload.
pub fn metadata_bytes(m: &crate::tsdb::Metadata) -> usize {
    string_bytes(&m.metric_family_name) + string_bytes(&m.kind) + string_bytes(&m.help) + string_bytes(&m.unit)
}

/// Bytes of an empty request in a write payload, counted generously: the
/// length prefixes of its series and metadata sequences.
pub const REQUEST_FRAMING_BYTES_MAX: usize = 2 * LENGTH_PREFIX_BYTES_MAX;

/// Upper bound of the bytes `req` takes in a write payload.
pub fn request_bytes_bound(req: &AppendRequest) -> usize {
    REQUEST_FRAMING_BYTES_MAX
        + req
            .series
            .iter()
            .map(|s| series_bytes_bound(labels_bytes(&s.labels), s.samples.len()))
            .sum::<usize>()
        + req.metadata.iter().map(metadata_bytes).sum::<usize>()
}

/// The budget of the requests of one entry: [`ENTRY_RAW_BYTES_MAX`] less
/// the length prefix of the sequence of requests. A batch whose
/// [`request_bytes_bound`]s sum to at most this encodes to a payload within
/// [`ENTRY_PAYLOAD_BYTES_MAX`].
pub const ENTRY_REQUESTS_BYTES_MAX: usize = ENTRY_RAW_BYTES_MAX - LENGTH_PREFIX_BYTES_MAX;

/// Largest decoded size of a write payload accepted when reading the log
/// back, so a corrupt length cannot make apply allocate without bound.
pub const ENTRY_DECODED_BYTES_MAX: usize = 64 << 20;

/// One log entry's application payload.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Samples and metadata from one or more client requests.
    Write {
        /// snappy(bincode(Vec<AppendRequest>)).
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Drop everything older than `cutoff_ms` (proposed by the leader).
    Retention {
        /// Cut-off, ms since the epoch.
        cutoff_ms: i64,
    },
    /// Delete the series matching any of `selectors` whose samples all lie
    /// in `[start_ms, end_ms]` (`POST /api/v1/admin/tsdb/delete_series`).
    /// Applied on every replica at the same log position.
    DeleteSeries {
        /// Matcher sets; a series matching all matchers of any set is deleted.
        selectors: Vec<Vec<MatcherSpec>>,
        /// Start of the range, ms since the epoch.
        start_ms: i64,
        /// End of the range, ms since the epoch.
        end_ms: i64,
    },
    /// Elect `replica` as the stored sender of HA cluster `cluster`, if the
    /// elected one is still `expected` (`raft::ha_replicas`). Proposed by
    /// the leader's HA dedup (`cluster::ha_dedup`).
    HaElect {
        /// The cluster label's value.
        cluster: String,
        /// The replica label's value of the sender to elect.
        replica: String,
        /// The elected replica the proposer saw (`None`: none yet).
        expected: Option<String>,
        /// The proposer's time, ms since the epoch.
        at_ms: i64,
    },
    /// The elected replica of `cluster` sent a request at `at_ms`.
    HaSeen {
        /// The cluster label's value.
        cluster: String,
        /// The replica label's value.
        replica: String,
        /// The proposer's time, ms since the epoch.
        at_ms: i64,
    },
}

/// A label matcher as a log entry carries it: plain data, compiled at apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatcherSpec {
    /// Label name.
    pub name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// Value or regex source.
    pub value: String,
}

impl MatcherSpec {
    /// The spec of a compiled matcher.
    pub fn of(m: &crate::tsdb::Matcher) -> MatcherSpec {
        use crate::tsdb::MatchOp;
        let op = match m.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        MatcherSpec {
            name: m.name.clone(),
            op: op.to_string(),
            value: m.value.clone(),
        }
    }

    /// Compiles the matcher. Deterministic: every replica gets the same
    /// answer for the same spec.
    pub fn compile(&self) -> Result<crate::tsdb::Matcher, MatcherSpecError> {
        use crate::tsdb::MatchOp;
        let op = match self.op.as_str() {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Regex,
            "!~" => MatchOp::NotRegex,
            other => return Err(MatcherSpecError::UnknownOperator(other.to_string())),
        };
        crate::tsdb::Matcher::new(op, &self.name, &self.value).map_err(|e| MatcherSpecError::Invalid(e.to_string()))
    }
}

/// Why a [`MatcherSpec`] from the log does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherSpecError {
    /// An operator other than `=`, `!=`, `=~`, `!~`.
    #[error("unknown matcher operator {0:?}")]
    UnknownOperator(String),
    /// The matcher itself (its regex) is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write { payload } => write!(f, "Write({} bytes)", payload.len()),
            Command::Retention { cutoff_ms } => write!(f, "Retention(before {cutoff_ms})"),
            Command::DeleteSeries {
                selectors,
                start_ms,
                end_ms,
            } => {
                write!(f, "DeleteSeries({} selectors, {start_ms}..={end_ms})", selectors.len())
            }
            Command::HaElect {
                cluster,
                replica,
                expected,
                at_ms,
            } => write!(f, "HaElect({cluster:?}: {expected:?} -> {replica:?} at {at_ms})"),
            Command::HaSeen {
                cluster,
                replica,
                at_ms,
            } => write!(f, "HaSeen({cluster:?}: {replica:?} at {at_ms})"),
        }
    }
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// bincode failed.
    #[error("log entry encoding: {0}")]
    Encode(String),
    /// The bytes are not a valid payload.
    #[error("corrupt log entry payload: {0}")]
    Decode(String),
    /// The encoded payload is larger than [`ENTRY_PAYLOAD_BYTES_MAX`] (a
    /// bug in the bounds of whoever built the entry).
    #[error(
        "log entry payload is {bytes} bytes ({raw_bytes} before compression), \
         more than the limit of {ENTRY_PAYLOAD_BYTES_MAX} bytes"
    )]
    TooLarge {
        /// Compressed payload size.
        bytes: usize,
        /// Encoded size before compression.
        raw_bytes: usize,
    },
}

impl Command {
    /// Encodes requests into one write command. A payload over
    /// [`ENTRY_PAYLOAD_BYTES_MAX`] is refused: the batcher bounds what it
    /// puts into one entry, so one over the limit is a bug, answered with
    /// an error rather than written to the log.
    pub fn write(requests: &[AppendRequest]) -> Result<Command, CodecError> {
        let raw = crate::codec::encode_to_vec(requests).map_err(|e| CodecError::Encode(e.to_string()))?;
        let payload = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        if payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(CodecError::TooLarge {
                bytes: payload.len(),
                raw_bytes: raw.len(),
            });
        }
        Ok(Command::Write { payload })
    }

    /// Decodes a write payload.
    pub fn decode_write(payload: &[u8]) -> Result<Vec<AppendRequest>, CodecError> {
        let len = snap::raw::decompress_len(payload).map_err(|e| CodecError::Decode(e.to_string()))?;
        if len > ENTRY_DECODED_BYTES_MAX {
            return Err(CodecError::Decode(format!(
                "{len} bytes decoded exceeds {ENTRY_DECODED_BYTES_MAX}"
            )));
        }
        let raw = snap::raw::Decoder::new()
            .decompress_vec(payload)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        let (reqs, _) = crate::codec::decode_from_slice_limited::<_, ENTRY_DECODED_BYTES_MAX>(&raw)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok(reqs)
    }
}

/// What applying an entry answered: one result per request in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// Per request, in order.
    pub results: Vec<AppendResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::{Labels, SeriesSamples};

    #[test]
    fn write_round_trips_and_rejects_garbage() {
        let req = AppendRequest {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "up")]),
                samples: vec![(1, f64::NAN)],
            }],
            metadata: vec![],
        };
        let Command::Write { payload } = Command::write(std::slice::from_ref(&req)).unwrap() else {
            panic!()
        };
        let back = Command::decode_write(&payload).unwrap();
        assert_eq!(back[0].series[0].labels, req.series[0].labels);
        assert!(back[0].series[0].samples[0].1.is_nan());
        assert!(Command::decode_write(b"\xff\xff\xff\xff\x0fgarbage").is_err());
        assert!(Command::decode_write(&payload[..payload.len() / 2]).is_err());
    }

    #[test]
    fn raw_budget_matches_snappy_worst_case() {
        assert!(snap::raw::max_compress_len(ENTRY_RAW_BYTES_MAX) <= ENTRY_PAYLOAD_BYTES_MAX);
        assert!(snap::raw::max_compress_len(ENTRY_RAW_BYTES_MAX + 8) > ENTRY_PAYLOAD_BYTES_MAX);
        for n in [0usize, 1, 250, 251, 65_535, 65_536, 1 << 32] {
            let len = crate::codec::encode_to_vec(&(n as u64)).unwrap().len();
            assert_eq!(length_prefix_bytes(n), len, "{n}");
        }
    }

    #[test]
    fn encode_refuses_a_payload_over_the_limit() {
        // Incompressible values: 12 000 random-looking samples, ~200 KiB.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let samples = (0..12_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (1_700_000_000_000 + i, f64::from_bits(x))
            })
            .collect();
        let req = AppendRequest {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "up")]),
                samples,
            }],
            metadata: vec![],
        };
        let e = Command::write(&[req]).unwrap_err();
        assert!(matches!(e, CodecError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("more than the limit of 98304 bytes"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_support::proptest_cases(256)))]

        /// The size bounds the batcher splits by are never below what the
        /// real encoder writes (labels, samples, metadata, framing).
        #[test]
        fn request_bytes_bound_covers_the_encoding(
            series in proptest::collection::vec(
                (proptest::collection::vec(("[a-z_]{1,12}", ".{0,300}"), 0..6),
                 proptest::collection::vec((proptest::prelude::any::<i64>(), proptest::prelude::any::<f64>()), 0..300)),
                0..8),
            help in ".{0,400}",
        ) {
            let req = AppendRequest {
                series: series.into_iter().map(|(pairs, samples)| SeriesSamples {
                    labels: Labels::from_pairs(pairs),
                    samples,
                }).collect(),
                metadata: vec![crate::tsdb::Metadata {
                    metric_family_name: "m".into(),
                    kind: "gauge".into(),
                    help,
                    unit: String::new(),
                }],
            };
            let one = crate::codec::encode_to_vec(&req).unwrap().len();
            proptest::prop_assert!(one <= request_bytes_bound(&req));
            let two = crate::codec::encode_to_vec(&vec![req.clone(), req.clone()]).unwrap().len();
            proptest::prop_assert!(two <= LENGTH_PREFIX_BYTES_MAX + 2 * request_bytes_bound(&req));
        }

        /// Arbitrary bytes never panic the payload decoder, neither as they
        /// are nor once snappy-compressed (so they reach bincode).
        #[test]
        fn decode_write_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Command::decode_write(&bytes);
            let compressed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
            let _ = Command::decode_write(&compressed);
        }
    }
}

/// Requests the leader has just encoded into a write payload, kept so that
/// its own apply can skip decoding them again. Keyed by a 128-bit hash of
/// the payload; a miss (followers, restarts, eviction) simply decodes.
/// Apply stays a pure function of the log either way: the cached value is
/// exactly what decoding the payload gives.
#[derive(Default)]
pub struct DecodedCache {
    map: parking_lot::Mutex<std::collections::HashMap<u128, std::sync::Arc<Vec<AppendRequest>>>>,
}

/// Payloads kept in the [`DecodedCache`] at most; past this the oldest are
/// simply decoded again by apply. Far above the entries in flight.
pub const DECODED_CACHE_ENTRIES_MAX: usize = 1024;

impl DecodedCache {
    /// Remembers `reqs` as the decoding of `payload`; returns the key.
    pub fn insert(&self, payload: &[u8], reqs: std::sync::Arc<Vec<AppendRequest>>) -> u128 {
        let key = xxhash_rust::xxh3::xxh3_128(payload);
        let mut m = self.map.lock();
        if m.len() >= DECODED_CACHE_ENTRIES_MAX {
            m.clear();
        }
        m.insert(key, reqs);
        key
    }

    /// Takes the decoding of `payload` if cached.
    pub fn take(&self, payload: &[u8]) -> Option<std::sync::Arc<Vec<AppendRequest>>> {
        self.map.lock().remove(&xxhash_rust::xxh3::xxh3_128(payload))
    }

    /// Forgets a payload that will not be applied (proposal failed).
    pub fn forget(&self, key: u128) {
        self.map.lock().remove(&key);
    }
}
