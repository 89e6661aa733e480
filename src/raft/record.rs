//! The version marker of promraft's stored Raft records other than log
//! entries (those have their own, `entry_format`): the vote, the commit
//! index and purge point of the log store, and the Raft state kept with a
//! checkpoint. Layouts and the rule are in docs/format/log-entry.md and
//! docs/format/checkpoint.md.
//!
//! A versioned record is [`RECORD_VERSION_MARKER`], the version byte, then
//! bincode. Records written before versions existed carry no marker: they
//! begin with a bincode varint or an `Option` tag, whose first byte is
//! never 255, and are openraft's advanced leader ids ([`super::legacy`]).

use std::io;

/// First byte of a versioned record.
pub const RECORD_VERSION_MARKER: u8 = 0xFF;

/// The record format this build writes: version 2, standard leader ids
/// (the same number as the log entries that changed with them).
pub const RECORD_FORMAT_VERSION: u8 = 2;

/// The body of a stored record, by the layout it has.
#[derive(Debug)]
pub enum Body<'a> {
    /// Written by this format version: standard leader ids.
    Current(&'a [u8]),
    /// Written before records carried a version: advanced leader ids.
    Legacy(&'a [u8]),
}

/// Prefixes bincode `body` with the marker and this build's version.
pub fn versioned(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(RECORD_VERSION_MARKER);
    out.push(RECORD_FORMAT_VERSION);
    out.extend_from_slice(body);
    out
}

/// Tells the layout of a stored record; refuses a newer version.
pub fn body<'a>(b: &'a [u8], what: &str) -> io::Result<Body<'a>> {
    match b.first() {
        Some(&RECORD_VERSION_MARKER) => match b.get(1) {
            Some(&RECORD_FORMAT_VERSION) => Ok(Body::Current(&b[2..])),
            Some(&v) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{what}: record format version {v} is not this build's {RECORD_FORMAT_VERSION}; \
                     upgrade promraft to read it"
                ),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: record ends after its version marker"),
            )),
        },
        _ => Ok(Body::Legacy(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_told_apart() {
        let v = versioned(&[1, 2, 3]);
        assert!(matches!(body(&v, "t").unwrap(), Body::Current(&[1, 2, 3])));
        assert!(matches!(body(&[1, 2], "t").unwrap(), Body::Legacy(&[1, 2])));
        assert!(matches!(body(&[], "t").unwrap(), Body::Legacy(&[])));
        assert!(body(&[RECORD_VERSION_MARKER], "t").is_err());
        let err = body(&[RECORD_VERSION_MARKER, RECORD_FORMAT_VERSION + 1], "t").unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }
}
