//! Snapshot bytes in motion: spooling a checkpoint to send, cutting it into
//! messages, and collecting received messages into a file to install.
//!
//! The sender exports the checkpoint to a spool file first and streams that
//! file. `Db::export` holds the TSDB's checkpoint lock while it runs, and the
//! state machine takes that lock to checkpoint; exporting straight into the
//! network would stall the leader's checkpoints (and so its apply loop) for
//! as long as the slowest follower takes to download. Local disk is fast and
//! bounded; the network is neither. Memory stays bounded either way: one
//! chunk is read from the file at a time, as the connection accepts it.
//!
//! Both directions keep their files in one directory of the data dir
//! ([`SNAPSHOT_DIR`]); files left by a crash are removed at start-up by
//! [`remove_leftovers`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::proto::{snapshot_chunk::Kind, SnapshotChunk, SnapshotHeader, SnapshotTrailer};
use super::Error;
use crate::raft::state_machine::checkpoint_log_id;
use crate::raft::LogId;
use crate::tsdb::Db;

/// Directory under the data dir that holds snapshots being sent or received.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// File name prefix of a spooled export being sent.
const SEND_PREFIX: &str = "send-";
/// File name prefix of a snapshot being received.
const RECV_PREFIX: &str = "recv-";

/// The snapshot directory of a data dir, created if missing.
pub fn snapshot_dir(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = data_dir.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes files a previous process left in `dir` while sending (`send`) or
/// receiving (`!send`). Call before the transport starts using the directory.
pub fn remove_leftovers(dir: &Path, send: bool) -> io::Result<usize> {
    let prefix = if send { SEND_PREFIX } else { RECV_PREFIX };
    let mut removed = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A unique file name in `dir`: prefix, process id, a process-wide counter.
fn unique_path(dir: &Path, prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{prefix}{}-{n}.tmp", std::process::id()))
}

/// A spool file's reads and writes: each on a blocking thread (production,
/// as `tokio::fs` does it), or on the calling task when `inline` (the
/// simulator, whose stores say so with `inline_io`: its disk is instant
/// there, and a thread finishing at a moment of its own would make a
/// seed's history depend on the machine).
pub struct SpoolFile {
    /// `None` only while an operation has it, or after one was lost.
    file: Option<std::fs::File>,
    inline: bool,
}

impl SpoolFile {
    /// Opens `path` for reading.
    pub async fn open(path: &Path, inline: bool) -> io::Result<SpoolFile> {
        let p = path.to_path_buf();
        let file = crate::kv::run_io(inline, move || std::fs::File::open(p)).await??;
        Ok(SpoolFile {
            file: Some(file),
            inline,
        })
    }

    /// Creates (or truncates) `path` for writing.
    pub async fn create(path: &Path, inline: bool) -> io::Result<SpoolFile> {
        let p = path.to_path_buf();
        let file = crate::kv::run_io(inline, move || std::fs::File::create(p)).await??;
        Ok(SpoolFile {
            file: Some(file),
            inline,
        })
    }

    /// Runs `op` on the file, where this file runs its I/O.
    async fn with<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut std::fs::File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("spool file lost by an earlier failed operation"))?;
        let (f, r) = crate::kv::run_io(self.inline, move || {
            let r = op(&mut f);
            (f, r)
        })
        .await?;
        self.file = Some(f);
        r
    }

    /// Reads up to `n` bytes (fewer only at the end of the file).
    pub async fn read_chunk(&mut self, n: usize) -> io::Result<Bytes> {
        self.with(move |f| {
            let mut buf = BytesMut::zeroed(n);
            let mut filled = 0;
            while filled < n {
                let got = f.read(&mut buf[filled..])?;
                if got == 0 {
                    break;
                }
                filled += got;
            }
            buf.truncate(filled);
            Ok(buf.freeze())
        })
        .await
    }

    /// Appends `data`.
    pub async fn write_all(&mut self, data: Bytes) -> io::Result<()> {
        self.with(move |f| f.write_all(&data)).await
    }
}

/// A file that is deleted when this is dropped (unless kept).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    delete: bool,
}

impl TempFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops deleting the file; the caller owns it from now on.
    pub fn keep(mut self) -> PathBuf {
        self.delete = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.delete {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A writer that fails once `cancelled` is set, so an export running on a
/// blocking thread stops soon after its sender gives up.
struct Cancellable<W> {
    inner: W,
    cancelled: Arc<AtomicBool>,
}

impl<W: Write> Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "snapshot send cancelled"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Sets a flag when dropped: tells the blocking export that nobody waits.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Exports this node's current checkpoint to a spool file in `dir` and
/// checks that it is the checkpoint at `expected` (the snapshot openraft
/// asked to send). If a newer checkpoint replaced it, fails with
/// [`Error::SnapshotReplaced`] so openraft retries with the new snapshot.
///
/// The check reads the checkpoint's log id before and after the export:
/// checkpoints only move forward, so equal ids on both sides mean the export
/// (taken under the checkpoint lock) is that checkpoint.
pub async fn spool_checkpoint(db: Arc<Db>, dir: &Path, expected: Option<LogId>) -> Result<TempFile, Error> {
    let file = TempFile {
        path: unique_path(dir, SEND_PREFIX),
        delete: true,
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let path = file.path.clone();
    let started = Instant::now();
    let inline = db.inline_io();
    let records = crate::kv::run_io(inline, move || -> Result<u64, Error> {
        let check = |found: Option<LogId>| {
            if found == expected {
                Ok(())
            } else {
                Err(Error::SnapshotReplaced { expected, found })
            }
        };
        check(checkpoint_log_id(&db)?)?;
        let f = std::fs::File::create(&path)?;
        let mut w = Cancellable {
            inner: io::BufWriter::with_capacity(256 << 10, f),
            cancelled,
        };
        let records = db.export(&mut w)?;
        w.flush()?;
        check(checkpoint_log_id(&db)?)?;
        Ok(records)
    })
    .await
    .map_err(|e| Error::Io(io::Error::other(format!("snapshot export thread: {e}"))))??;
    tracing::debug!(
        records,
        ms = started.elapsed().as_millis() as u64,
        "spooled checkpoint for sending"
    );
    Ok(file)
}

/// Progress of an outgoing stream, for an idle deadline: the instant the
/// stream last handed a message to the connection. On tokio's clock, which
/// the idle deadline sleeps on (under a simulated or paused clock, a
/// wall-clock instant would put the deadline in the past, and the wait
/// would spin).
#[derive(Clone)]
pub struct Progress {
    base: tokio::time::Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            base: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Progress {
    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the stream last made progress.
    pub fn last(&self) -> tokio::time::Instant {
        self.base + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Where a local read failure of an outgoing stream is left for the caller:
/// the stream can only end early, and the receiver, missing the trailer,
/// refuses it.
pub type ReadFailure = Arc<Mutex<Option<io::Error>>>;

enum SendState {
    Header(SnapshotHeader, SpoolFile),
    Data(SpoolFile),
    Done,
}

/// The messages of a snapshot stream: `header`, the file's bytes in chunks
/// of `chunk_bytes`, and a trailer with their length and CRC. A read error
/// ends the stream early (without trailer) and is stored in `failure`.
pub fn outgoing(
    header: SnapshotHeader,
    file: SpoolFile,
    chunk_bytes: usize,
    progress: Progress,
    failure: ReadFailure,
) -> impl Stream<Item = SnapshotChunk> + Send + 'static {
    let chunk_bytes = chunk_bytes.max(1);
    let crc = crc32fast::Hasher::new();
    futures::stream::unfold(
        (SendState::Header(header, file), crc, 0u64),
        move |(state, mut crc, mut sent)| {
            let progress = progress.clone();
            let failure = failure.clone();
            async move {
                progress.touch();
                match state {
                    SendState::Header(h, f) => Some((
                        SnapshotChunk {
                            kind: Some(Kind::Header(h)),
                        },
                        (SendState::Data(f), crc, sent),
                    )),
                    SendState::Data(mut f) => match f.read_chunk(chunk_bytes).await {
                        Ok(b) if b.is_empty() => {
                            let trailer = SnapshotTrailer {
                                data_bytes: sent,
                                crc32: crc.clone().finalize(),
                            };
                            Some((
                                SnapshotChunk {
                                    kind: Some(Kind::Trailer(trailer)),
                                },
                                (SendState::Done, crc, sent),
                            ))
                        }
                        Ok(b) => {
                            crc.update(&b);
                            sent += b.len() as u64;
                            Some((
                                SnapshotChunk {
                                    kind: Some(Kind::Data(b)),
                                },
                                (SendState::Data(f), crc, sent),
                            ))
                        }
                        Err(e) => {
                            if let Ok(mut slot) = failure.lock() {
                                *slot = Some(e);
                            }
                            None
                        }
                    },
                    SendState::Done => None,
                }
            }
        },
    )
}

/// A snapshot being received into a file in the snapshot directory.
pub struct Incoming {
    file: TempFile,
    out: SpoolFile,
    crc: crc32fast::Hasher,
    data_bytes: u64,
}

impl Incoming {
    /// Creates the file (`inline`: see [`SpoolFile`]).
    pub async fn create(dir: &Path, inline: bool) -> Result<Incoming, Error> {
        let file = TempFile {
            path: unique_path(dir, RECV_PREFIX),
            delete: true,
        };
        let out = SpoolFile::create(file.path(), inline).await?;
        Ok(Incoming {
            file,
            out,
            crc: crc32fast::Hasher::new(),
            data_bytes: 0,
        })
    }

    /// Appends one chunk (each is written as it comes: chunks are large).
    pub async fn write(&mut self, data: Bytes) -> Result<(), Error> {
        self.crc.update(&data);
        self.data_bytes += data.len() as u64;
        self.out.write_all(data).await?;
        Ok(())
    }

    /// Checks the trailer against what arrived and closes the file. The
    /// returned file is still deleted on drop; `keep` it once handed over.
    pub async fn finish(self, trailer: &SnapshotTrailer) -> Result<TempFile, Error> {
        let crc = self.crc.clone().finalize();
        if trailer.data_bytes != self.data_bytes || trailer.crc32 != crc {
            return Err(Error::Malformed(format!(
                "snapshot stream damaged: received {} bytes with crc {crc:08x}, sender says {} bytes with crc {:08x}",
                self.data_bytes, trailer.data_bytes, trailer.crc32
            )));
        }
        // No fsync: the file is read back at once by the import, which
        // makes the result durable in sled; after a crash it is discarded.
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn outgoing_stream_round_trips_through_incoming() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&src, &data).unwrap();
        let f = SpoolFile::open(&src, false).await.unwrap();
        let failure = ReadFailure::default();
        let msgs: Vec<SnapshotChunk> =
            outgoing(SnapshotHeader::default(), f, 4096, Progress::default(), failure.clone())
                .collect()
                .await;
        assert!(failure.lock().unwrap().is_none());
        assert!(matches!(msgs[0].kind, Some(Kind::Header(_))));
        assert_eq!(msgs.len(), 1 + data.len().div_ceil(4096) + 1, "header, chunks, trailer");
        let mut inc = Incoming::create(dir.path(), false).await.unwrap();
        let mut trailer = None;
        for m in &msgs[1..] {
            match &m.kind {
                Some(Kind::Data(b)) => inc.write(b.clone()).await.unwrap(),
                Some(Kind::Trailer(t)) => trailer = Some(*t),
                other => panic!("unexpected message {other:?}"),
            }
        }
        let mut bad = trailer.unwrap();
        bad.crc32 ^= 1;
        let file = inc.finish(&trailer.unwrap()).await.unwrap();
        assert_eq!(std::fs::read(file.path()).unwrap(), data);
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists(), "a received file not kept is deleted");

        let mut inc = Incoming::create(dir.path(), true).await.unwrap();
        inc.write(Bytes::from(data.clone())).await.unwrap();
        assert!(inc.finish(&bad).await.is_err(), "a wrong crc is refused");
        assert_eq!(remove_leftovers(dir.path(), false).unwrap(), 0);
    }
}
