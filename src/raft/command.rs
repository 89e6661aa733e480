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
    pub fn compile(&self) -> Result<crate::tsdb::Matcher, String> {
        use crate::tsdb::MatchOp;
        let op = match self.op.as_str() {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Regex,
            "!~" => MatchOp::NotRegex,
            other => return Err(format!("unknown matcher operator {other:?}")),
        };
        crate::tsdb::Matcher::new(op, &self.name, &self.value).map_err(|e| e.to_string())
    }
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
}

impl Command {
    /// Encodes requests into one write command.
    pub fn write(requests: &[AppendRequest]) -> Result<Command, CodecError> {
        let raw = crate::codec::encode_to_vec(requests).map_err(|e| CodecError::Encode(e.to_string()))?;
        let payload = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_support::proptest_cases(256)))]

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
