//! How one Raft log entry is stored: a checksum, a format version, and the
//! entry in the crate's one bincode configuration ([`crate::codec`]). The
//! byte layout and the version rule are in docs/format/log-entry.md.
//!
//! This file owns the bytes of one stored entry and nothing else: not the
//! trees, not durability (that is `log_store`), not the payload's own
//! encoding (`command`). It must not panic on any input.
//!
//! Versions: 1 (and entries without a version) hold openraft's advanced
//! leader ids, a log id of (term, node id, index); 2 holds standard leader
//! ids, (term, index). Version 1 entries decode through [`super::legacy`].
//!
//! Version rule: [`ENTRY_FORMAT_VERSION`] is the layout this build writes.
//! A build decodes every version up to its own, including entries written
//! before versions existed (no marker: read as version 1, the layout they
//! have), and refuses a newer one with an error that says so, instead of
//! misreading it. A change to the entry's encoding (its fields, openraft's
//! entry type, the bincode configuration) bumps the version and keeps a
//! decoder for every older one.

use std::io;

use super::command::ENTRY_DECODED_BYTES_MAX;
use super::{legacy, Entry};

/// First byte of a versioned entry (after the checksum). A legacy entry
/// starts with its log id's term as a bincode varint, whose first byte is
/// below 251 or one of the length markers 251..=254, never 255; so the
/// marker tells the two apart without ambiguity.
pub const ENTRY_VERSION_MARKER: u8 = 0xFF;

/// The entry format this build writes: the marker, then this byte, then
/// bincode of the openraft entry (log id with a standard leader id,
/// payload).
pub const ENTRY_FORMAT_VERSION: u8 = 2;

/// The first format: advanced leader ids (and, without a marker, the
/// layout of entries written before versions existed).
pub const ENTRY_FORMAT_V1: u8 = 1;

/// Bytes before the bincode body of a versioned entry: checksum, marker,
/// version.
const HEADER_BYTES: usize = 4 + 2;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Encodes an entry as stored: CRC32 of the rest, the version marker, the
/// version, then bincode.
pub fn encode_entry(e: &Entry) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; 4];
    out.push(ENTRY_VERSION_MARKER);
    out.push(ENTRY_FORMAT_VERSION);
    crate::codec::encode_into_std_write(e, &mut out).map_err(|e| io::Error::other(e.to_string()))?;
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(out.len() > HEADER_BYTES, "an entry body is never empty");
    Ok(out)
}

/// Decodes a stored entry of any version this build knows, checking its
/// CRC first.
pub fn decode_entry(b: &[u8]) -> io::Result<Entry> {
    if b.len() < 4 {
        return Err(invalid("log entry shorter than its checksum".into()));
    }
    let want = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let got = crc32fast::hash(&b[4..]);
    if want != got {
        return Err(invalid(format!(
            "log entry checksum mismatch: stored {want:08x}, computed {got:08x}"
        )));
    }
    let (body, current) = match b.get(4) {
        Some(&ENTRY_VERSION_MARKER) => match b.get(5) {
            Some(&ENTRY_FORMAT_VERSION) => (&b[HEADER_BYTES..], true),
            Some(&ENTRY_FORMAT_V1) => (&b[HEADER_BYTES..], false),
            Some(&v) if v < ENTRY_FORMAT_V1 => {
                return Err(invalid(format!("log entry format version {v} does not exist")))
            }
            Some(&v) => {
                return Err(invalid(format!(
                    "log entry format version {v} is newer than this build's {ENTRY_FORMAT_VERSION}; \
                     upgrade promraft to read this log"
                )))
            }
            None => return Err(invalid("log entry ends after its version marker".into())),
        },
        // Written before entries carried a version: the version 1 layout.
        _ => (&b[4..], false),
    };
    // Limited: an unlimited decoder allocates whatever a length prefix in
    // the entry says before reading it (a panic or an abort on corrupt bytes
    // that pass the CRC).
    if current {
        let (e, _) = crate::codec::decode_from_slice_limited::<Entry, ENTRY_DECODED_BYTES_MAX>(body)
            .map_err(|e| invalid(format!("log entry: {e}")))?;
        return Ok(e);
    }
    let (e, _) = crate::codec::decode_from_slice_limited::<legacy::Entry, ENTRY_DECODED_BYTES_MAX>(body)
        .map_err(|e| invalid(format!("log entry (format version 1): {e}")))?;
    Ok(legacy::entry(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;
    use openraft::entry::RaftEntry;

    fn entries() -> Vec<Entry> {
        let log_id = |term: u64, index: u64| openraft::testing::log_id::<crate::raft::TypeConfig>(term, 1, index);
        vec![
            Entry::new_blank(log_id(1, 1)),
            Entry::new_normal(log_id(250, 2), Command::Retention { cutoff_ms: -5 }),
            Entry::new_normal(
                log_id(u64::MAX, u64::MAX),
                Command::Write {
                    payload: vec![0xFF; 300],
                },
            ),
        ]
    }

    /// An entry as earlier builds held it: the same term and index, with
    /// the advanced leader id of node 1.
    fn as_legacy(e: &Entry) -> legacy::Entry {
        let leader = legacy::LeaderId {
            term: e.log_id.leader_id.term,
            node_id: 1,
        };
        legacy::Entry {
            log_id: legacy::LogId::new(leader, e.log_id.index),
            payload: e.payload.clone(),
        }
    }

    /// The layouts earlier builds wrote: CRC then bincode (before versions
    /// existed), or CRC, marker, version 1, bincode; both with advanced
    /// leader ids.
    fn legacy_bytes(e: &legacy::Entry, marker: bool) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        if marker {
            out.extend([ENTRY_VERSION_MARKER, ENTRY_FORMAT_V1]);
        }
        crate::codec::encode_into_std_write(e, &mut out).unwrap();
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn current_and_legacy_entries_decode() {
        for e in entries() {
            let b = encode_entry(&e).unwrap();
            assert_eq!(&b[4..6], &[ENTRY_VERSION_MARKER, ENTRY_FORMAT_VERSION]);
            assert_eq!(decode_entry(&b).unwrap(), e);
            let old = legacy_bytes(&as_legacy(&e), false);
            assert_ne!(
                old[4], ENTRY_VERSION_MARKER,
                "a legacy entry never starts with the marker"
            );
            assert_eq!(
                decode_entry(&old).unwrap(),
                e,
                "an entry without a version still decodes, to the standard leader id"
            );
            let v1 = legacy_bytes(&as_legacy(&e), true);
            assert_eq!(decode_entry(&v1).unwrap(), e, "a version 1 entry still decodes");
            assert_ne!(v1, b, "version 2 changed the bytes");
        }
    }

    /// Bytes a version 1 build wrote, spelled out: a blank entry at term 3,
    /// leader node 2, index 7 (CRC, marker, version 1, then bincode varints
    /// term, node id, index, and the payload tag of a blank entry).
    #[test]
    fn version_1_bytes_decode() {
        let body = [ENTRY_VERSION_MARKER, ENTRY_FORMAT_V1, 3, 2, 7, 0];
        let mut b = crc32fast::hash(&body).to_be_bytes().to_vec();
        b.extend(body);
        let e = decode_entry(&b).unwrap();
        assert_eq!(
            e,
            Entry::new_blank(openraft::testing::log_id::<crate::raft::TypeConfig>(3, 2, 7))
        );
    }

    #[test]
    fn newer_versions_and_damage_are_refused() {
        let e = &entries()[1];
        let mut b = encode_entry(e).unwrap();
        b[5] = ENTRY_FORMAT_VERSION + 1;
        let crc = crc32fast::hash(&b[4..]);
        b[..4].copy_from_slice(&crc.to_be_bytes());
        let err = decode_entry(&b).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
        let mut b = encode_entry(e).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(decode_entry(&b).unwrap_err().to_string().contains("checksum"));
        assert!(decode_entry(&[1, 2]).is_err());
        let mut marker_only = vec![0u8; 4];
        marker_only.push(ENTRY_VERSION_MARKER);
        let crc = crc32fast::hash(&marker_only[4..]);
        marker_only[..4].copy_from_slice(&crc.to_be_bytes());
        assert!(decode_entry(&marker_only).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_entry(&b);
        }
    }
}
