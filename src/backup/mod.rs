//! Backups, restore, and data in and out in Prometheus formats.
//!
//! - [`format`]: the backup file (header, compressed and optionally
//!   encrypted frames, checksums); [`crypto`]: keys and the cipher.
//! - [`source`]: the node side: a consistent checkpoint at one applied
//!   index, spooled and written as a backup (HTTP endpoint, admin snapshot).
//! - [`restore`]: builds the data directory of a new cluster's first node.
//! - [`cli`]: `promraft backup`, `backup verify`, `restore`;
//!   [`progress`]: the progress bar or plain progress lines.
//! - [`openmetrics`]: OpenMetrics export of a range and text-format import
//!   (through remote write, so through the log).
//!
//! It reads the TSDB only through `Db::export`/`Db::import` and never
//! touches a running node's files directly.

pub mod cli;
pub mod crypto;
pub mod format;
pub mod openmetrics;
pub mod progress;
pub mod restore;
pub mod source;

use std::io;

/// Errors of backup, verify and restore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not start like a backup.
    #[error("not a promraft backup: {0}")]
    NotABackup(String),
    /// Written by a newer promraft.
    #[error("backup format version {found} is newer than this promraft supports ({supported}); use a newer promraft")]
    NewerVersion {
        /// Version in the file.
        found: u32,
        /// Newest version this binary reads.
        supported: u32,
    },
    /// The file ends too early.
    #[error("backup is truncated: it ends inside the {what} (after {offset} bytes); the file is incomplete")]
    Truncated {
        /// The part being read.
        what: String,
        /// Bytes read before the end.
        offset: u64,
    },
    /// A checksum does not match.
    #[error("checksum mismatch in the {what}: the backup file is damaged")]
    Checksum {
        /// Which part.
        what: String,
    },
    /// An encrypted backup was opened without a key.
    #[error("the backup is encrypted: give --key-file or --passphrase-env")]
    KeyRequired,
    /// The key does not match the backup's key check.
    #[error("wrong key: this key (or passphrase) is not the one the backup was encrypted with")]
    WrongKey,
    /// A frame failed authentication although the key is right.
    #[error(
        "frame {frame} failed authentication: the backup was modified (or its frames reordered) after it was written"
    )]
    Tampered {
        /// Frame number.
        frame: u64,
    },
    /// Structurally invalid content.
    #[error("corrupt backup: {0}")]
    Corrupt(String),
    /// The header is unusable.
    #[error("backup header: {0}")]
    Header(String),
    /// A key could not be loaded or used.
    #[error("key: {0}")]
    Key(String),
    /// Writing a file failed (disk full shows here).
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Other I/O.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The TSDB refused the content.
    #[error("tsdb: {0}")]
    Tsdb(crate::tsdb::Error),
    /// The node could not produce a backup.
    #[error("{0}")]
    Source(String),
    /// Restore target is in use.
    #[error("data directory {dir} is not empty (it holds {entry}); restore only into a new directory, or pass --force to replace promraft's data in it")]
    DataDirNotEmpty {
        /// The directory.
        dir: String,
        /// One entry found in it.
        entry: String,
    },
    /// Restore failed for another reason.
    #[error("restore: {0}")]
    Restore(String),
    /// Talking to a node failed.
    #[error("{0}")]
    Http(String),
}

impl Error {
    /// Wraps the error for a [`std::io::Read`] or [`std::io::Write`] signature.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io(e) => e,
            e => io::Error::other(e),
        }
    }

    /// Unwraps an error that went through [`Error::into_io`].
    pub fn from_io(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|r| r.is::<Error>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(b) = inner.downcast::<Error>() {
                    return *b;
                }
            }
            return Error::Corrupt("error lost in unwrapping".into());
        }
        Error::Io(e)
    }

    /// Unwraps a TSDB error, recovering a backup error that the TSDB saw
    /// as an I/O error of its reader.
    pub fn from_tsdb(e: crate::tsdb::Error) -> Error {
        match e {
            crate::tsdb::Error::Io(io) => Error::from_io(io),
            e => Error::Tsdb(e),
        }
    }
}
