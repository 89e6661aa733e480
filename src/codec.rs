//! The one bincode configuration of promraft: every value that promraft
//! persists (log entries, checkpoint metadata, the state machine's saved
//! state) or sends to a peer (the Raft RPC payloads) is encoded and decoded
//! here, so the configuration cannot differ between a writer and a reader.
//!
//! The configuration is bincode 2's `standard()` (little-endian, variable
//! length integers) through its serde API. Changing it changes every
//! on-disk and on-wire format at once: it needs a format version bump
//! (see docs/format/). This module is a leaf: it knows no promraft type.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bincode::error::{DecodeError, EncodeError};

/// The configuration every promraft bincode user shares.
const fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `v` into a new buffer.
pub fn encode_to_vec<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(v, config())
}

/// Appends the encoding of `v` to `w`; returns the bytes written.
pub fn encode_into_std_write<T: Serialize + ?Sized, W: std::io::Write>(v: &T, w: &mut W) -> Result<usize, EncodeError> {
    bincode::serde::encode_into_std_write(v, w, config())
}

/// Decodes a value from the start of `b`; returns it and the bytes used.
/// For bytes from the disk, whose size the caller already bounds.
pub fn decode_from_slice<T: DeserializeOwned>(b: &[u8]) -> Result<(T, usize), DecodeError> {
    bincode::serde::decode_from_slice(b, config())
}

/// Decodes like [`decode_from_slice`], refusing to allocate more than
/// `LIMIT` bytes for the value, so a corrupt or hostile length cannot make
/// the decoder allocate without bound.
pub fn decode_from_slice_limited<T: DeserializeOwned, const LIMIT: usize>(b: &[u8]) -> Result<(T, usize), DecodeError> {
    bincode::serde::decode_from_slice(b, config().with_limit::<LIMIT>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let v = (7u64, "seven".to_string(), vec![1.5f64; 3]);
        let b = encode_to_vec(&v).unwrap();
        let (got, used): ((u64, String, Vec<f64>), usize) = decode_from_slice(&b).unwrap();
        assert_eq!((got, used), (v.clone(), b.len()));
        let mut w = Vec::new();
        assert_eq!(encode_into_std_write(&v, &mut w).unwrap(), b.len());
        assert_eq!(w, b);
        // A vector claiming a million elements is refused under a small limit.
        let big = encode_to_vec(&vec![0u8; 1_000]).unwrap();
        assert!(decode_from_slice_limited::<Vec<u8>, 100>(&big).is_err());
        assert!(decode_from_slice_limited::<Vec<u8>, 2_000>(&big).is_ok());
    }
}
