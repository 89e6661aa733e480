//! The backup file: a checksummed header, then the content (a TSDB export
//! stream) cut into compressed, optionally encrypted frames, then an end
//! frame and a checksum of the whole file. The byte layout is in
//! docs/format/backup.md.
//!
//! [`BackupWriter`] and [`BackupReader`] only move bytes: they know nothing
//! of what the content means (that is `tsdb`'s export format) and do no
//! network or progress reporting. Memory stays bounded by one frame.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::crypto::{Cipher, KeySource};
use super::Error;

/// The first eight bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"PRBACKUP";

/// The format version this binary writes and the newest it reads. 2:
/// XChaCha20-Poly1305 with a 16-byte random nonce prefix per file; 1
/// (still read): ChaCha20-Poly1305 with a 4-byte prefix (`crypto.rs`).
pub const FORMAT_VERSION: u32 = 2;

/// Content bytes per data frame before compression. Big enough that the
/// per-frame overhead (13 bytes, plus 16 when encrypted) vanishes, small
/// enough that reader and writer memory stays at a few MiB.
pub const FRAME_CONTENT_BYTES: usize = 1 << 20;

/// Largest stored frame accepted when reading: snappy's worst case for a
/// full frame plus the cipher's tag, with room to spare. A larger length
/// is damage, never a frame, and must not make the reader allocate.
pub const FRAME_STORED_BYTES_MAX: usize = 2 * FRAME_CONTENT_BYTES + 4096;

/// Largest header accepted when reading.
pub const HEADER_BYTES_MAX: usize = 1 << 20;

/// Frame kind of a data frame.
const KIND_DATA: u8 = 1;
/// Frame kind of the end frame.
const KIND_END: u8 = 2;

/// One member of the cluster as the backup's checkpoint recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Raft address.
    pub raft_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// How the content is encrypted (absent for a plain backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `xchacha20poly1305` (format version 2) or `chacha20poly1305`
    /// (format version 1).
    pub cipher: String,
    /// Where the key comes from.
    pub kdf: Kdf,
    /// First 16 (version 2) or 4 (version 1) bytes of every frame nonce,
    /// hex; random per file.
    pub nonce_prefix: String,
    /// Tag of an empty message sealed with the key (hex): tells a wrong key
    /// from a modified file.
    pub key_check: String,
}

/// Key derivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kdf {
    /// A 32-byte key read from a file.
    RawKey,
    /// Argon2id over a passphrase.
    Argon2id {
        /// Salt, hex (16 bytes, random per file).
        salt: String,
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
    },
}

/// What a backup holds, written before the content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Format version (the same as the file prefix).
    pub format_version: u32,
    /// When the backup was taken, ms since the epoch.
    pub created_unix_ms: i64,
    /// Version of the promraft that wrote it.
    pub promraft_version: String,
    /// Identifies the source cluster's membership at the backup's index (see
    /// docs/format/backup.md for what it is and is not).
    pub cluster_id: String,
    /// Node whose checkpoint this is.
    pub node_id: u64,
    /// Term of the applied log id.
    pub applied_term: u64,
    /// Leader node of the applied log id.
    pub applied_leader: u64,
    /// The applied Raft index the content is exactly at.
    pub applied_index: u64,
    /// Membership at that index.
    pub members: Vec<Member>,
    /// Oldest sample, ms (absent when empty).
    pub min_time_ms: Option<i64>,
    /// Newest sample, ms (absent when empty).
    pub max_time_ms: Option<i64>,
    /// Series.
    pub series: u64,
    /// Samples stored.
    pub samples: u64,
    /// Persisted chunks.
    pub chunks: u64,
    /// Key/value records of the export.
    pub records: u64,
    /// Bytes of content (the uncompressed export stream).
    pub content_bytes: u64,
    /// `snappy` (raw, per frame).
    pub compression: String,
    /// Encryption, if any.
    pub encryption: Option<Encryption>,
}

/// The end frame's payload: what the reader must have seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Trailer {
    data_frames: u64,
    content_bytes: u64,
    /// xxh3-64 of the content, hex.
    content_xxh3: String,
}

/// A writer that hashes everything passing through.
struct Hashing<W> {
    inner: W,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a backup file: the header at creation, content through
/// [`Write`], the end frame and file checksum at [`BackupWriter::finish`].
pub struct BackupWriter<W: Write> {
    header: Header,
    out: Hashing<W>,
    header_bytes: Vec<u8>,
    cipher: Option<Cipher>,
    buf: Vec<u8>,
    frames: u64,
    content_bytes: u64,
    content_hash: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the prefix and `header` (whose `encryption` is filled in here
    /// when `key` is given) and returns the writer for the content.
    pub fn new(out: W, mut header: Header, key: Option<&KeySource>) -> Result<Self, Error> {
        let cipher = match key {
            Some(k) => {
                let (cipher, enc) = Cipher::for_writing(k)?;
                header.encryption = Some(enc);
                Some(cipher)
            }
            None => {
                header.encryption = None;
                None
            }
        };
        header.format_version = FORMAT_VERSION;
        header.compression = "snappy".into();
        let header_bytes = serde_json::to_vec(&header).map_err(|e| Error::Header(e.to_string()))?;
        let mut out = Hashing {
            inner: out,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        };
        let mut prefix = Vec::with_capacity(16 + header_bytes.len() + 4);
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        prefix.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
        prefix.extend_from_slice(&header_bytes);
        let crc = crc32fast::hash(&prefix);
        prefix.extend_from_slice(&crc.to_be_bytes());
        out.write_all(&prefix)?;
        Ok(BackupWriter {
            header,
            out,
            header_bytes,
            cipher,
            buf: Vec::with_capacity(FRAME_CONTENT_BYTES),
            frames: 0,
            content_bytes: 0,
            content_hash: xxhash_rust::xxh3::Xxh3::new(),
        })
    }

    /// Bytes written to the file so far.
    pub fn file_bytes(&self) -> u64 {
        self.out.bytes
    }

    /// The header as written (with the encryption parameters).
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn write_frame(&mut self, kind: u8, plain: &[u8]) -> Result<(), Error> {
        let stored = match &self.cipher {
            Some(c) => c.seal(self.frames, kind, &self.header_bytes, plain)?,
            None => plain.to_vec(),
        };
        let mut frame = Vec::with_capacity(stored.len() + 9);
        frame.push(kind);
        frame.extend_from_slice(&(stored.len() as u32).to_be_bytes());
        frame.extend_from_slice(&stored);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        self.out.write_all(&frame)?;
        self.frames += 1;
        Ok(())
    }

    fn flush_data(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&self.buf)
            .map_err(|e| Error::Corrupt(format!("compressing a frame: {e}")))?;
        self.write_frame(KIND_DATA, &compressed)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the end frame and the file checksum; returns the sink and
    /// the file's size.
    pub fn finish(mut self) -> Result<(W, u64), Error> {
        self.flush_data()?;
        let trailer = Trailer {
            data_frames: self.frames,
            content_bytes: self.content_bytes,
            content_xxh3: format!("{:016x}", self.content_hash.digest()),
        };
        let t = serde_json::to_vec(&trailer).map_err(|e| Error::Header(e.to_string()))?;
        self.write_frame(KIND_END, &t)?;
        let sum = self.out.hash.digest();
        self.out.write_all(&sum.to_be_bytes())?;
        self.out.flush()?;
        let size = self.out.bytes;
        Ok((self.out.inner, size))
    }
}

impl<W: Write> Write for BackupWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = FRAME_CONTENT_BYTES - self.buf.len();
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        self.content_hash.update(&buf[..n]);
        self.content_bytes += n as u64;
        if self.buf.len() >= FRAME_CONTENT_BYTES {
            self.flush_data().map_err(Error::into_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A reader that hashes and counts everything read through it.
struct HashingReader<R> {
    inner: R,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Reads exactly `buf.len()` bytes; a short file is `Truncated`.
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hash.update(buf);
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::Truncated {
                what: what.to_string(),
                offset: self.bytes,
            }),
            Err(e) => Err(Error::Io(e)),
        }
    }
}

/// Reads a backup file: checks the header at open, then yields the content
/// through [`Read`], checking every frame's checksum (and authentication
/// tag) as it goes and, at the end, the trailer and the whole-file
/// checksum. Content is only ever handed out from frames that passed.
pub struct BackupReader<R: Read> {
    input: HashingReader<R>,
    header: Header,
    header_bytes: Vec<u8>,
    cipher: Option<Cipher>,
    frame: Vec<u8>,
    pos: usize,
    frames: u64,
    content_bytes: u64,
    content_hash: xxhash_rust::xxh3::Xxh3,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the prefix and header. An encrypted backup needs
    /// `key`; a wrong key is reported here as [`Error::WrongKey`].
    pub fn open(input: R, key: Option<&KeySource>) -> Result<Self, Error> {
        let mut input = HashingReader {
            inner: input,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        };
        let mut prefix = [0u8; 16];
        input.exact(&mut prefix[..8], "file magic").map_err(|e| match e {
            Error::Truncated { .. } => Error::NotABackup("shorter than the 8-byte magic".into()),
            e => e,
        })?;
        if &prefix[..8] != MAGIC {
            return Err(Error::NotABackup(format!(
                "magic is {:?}, not {:?}",
                &prefix[..8],
                MAGIC
            )));
        }
        input.exact(&mut prefix[8..], "file prefix")?;
        let version = u32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(Error::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(Error::Corrupt("format version 0".into()));
        }
        let len = u32::from_be_bytes(prefix[12..16].try_into().expect("4 bytes")) as usize;
        if len > HEADER_BYTES_MAX {
            return Err(Error::Corrupt(format!(
                "header length {len} exceeds {HEADER_BYTES_MAX}"
            )));
        }
        let mut header_bytes = vec![0u8; len];
        input.exact(&mut header_bytes, "header")?;
        let mut crc = [0u8; 4];
        input.exact(&mut crc, "header checksum")?;
        let mut h = crc32fast::Hasher::new();
        h.update(&prefix);
        h.update(&header_bytes);
        if h.finalize().to_be_bytes() != crc {
            return Err(Error::Checksum { what: "header".into() });
        }
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(|e| Error::Header(format!("header is not valid: {e}")))?;
        if header.compression != "snappy" {
            return Err(Error::Header(format!("unknown compression {:?}", header.compression)));
        }
        let cipher = match (&header.encryption, key) {
            (None, _) => None,
            (Some(_), None) => return Err(Error::KeyRequired),
            (Some(enc), Some(k)) => Some(Cipher::for_reading(k, enc, version)?),
        };
        Ok(BackupReader {
            input,
            header,
            header_bytes,
            cipher,
            frame: Vec::new(),
            pos: 0,
            frames: 0,
            content_bytes: 0,
            content_hash: xxhash_rust::xxh3::Xxh3::new(),
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes of the file read so far.
    pub fn file_bytes(&self) -> u64 {
        self.input.bytes
    }

    /// True once the end frame and the file checksum have been checked.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads the next frame into `self.frame`; returns false at the end.
    fn next_frame(&mut self) -> Result<bool, Error> {
        let index = self.frames;
        let mut head = [0u8; 5];
        self.input.exact(&mut head, &format!("frame {index}"))?;
        let kind = head[0];
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        if kind != KIND_DATA && kind != KIND_END {
            return Err(Error::Corrupt(format!("frame {index} has unknown kind {kind}")));
        }
        if len > FRAME_STORED_BYTES_MAX {
            return Err(Error::Corrupt(format!(
                "frame {index} claims {len} bytes (at most {FRAME_STORED_BYTES_MAX})"
            )));
        }
        let mut stored = vec![0u8; len];
        self.input.exact(&mut stored, &format!("frame {index}"))?;
        let mut crc = [0u8; 4];
        self.input.exact(&mut crc, &format!("checksum of frame {index}"))?;
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(&stored);
        if h.finalize().to_be_bytes() != crc {
            return Err(Error::Checksum {
                what: format!("frame {index}"),
            });
        }
        let plain = match &self.cipher {
            Some(c) => c.open(index, kind, &self.header_bytes, &stored)?,
            None => stored,
        };
        self.frames += 1;
        if kind == KIND_END {
            self.finish_end(&plain)?;
            return Ok(false);
        }
        let n = snap::raw::decompress_len(&plain).map_err(|e| Error::Corrupt(format!("frame {index}: {e}")))?;
        if n > FRAME_CONTENT_BYTES {
            return Err(Error::Corrupt(format!("frame {index} decompresses to {n} bytes")));
        }
        self.frame = snap::raw::Decoder::new()
            .decompress_vec(&plain)
            .map_err(|e| Error::Corrupt(format!("frame {index}: {e}")))?;
        self.content_hash.update(&self.frame);
        self.content_bytes += self.frame.len() as u64;
        self.pos = 0;
        Ok(true)
    }

    fn finish_end(&mut self, plain: &[u8]) -> Result<(), Error> {
        let t: Trailer = serde_json::from_slice(plain).map_err(|e| Error::Corrupt(format!("end frame: {e}")))?;
        let seen = Trailer {
            data_frames: self.frames - 1,
            content_bytes: self.content_bytes,
            content_xxh3: format!("{:016x}", self.content_hash.digest()),
        };
        if t != seen {
            return Err(Error::Checksum {
                what: format!("content (end frame says {t:?}, read {seen:?})"),
            });
        }
        let want = self.input.hash.digest();
        let mut sum = [0u8; 8];
        self.input.exact(&mut sum, "file checksum")?;
        if sum != want.to_be_bytes() {
            return Err(Error::Checksum {
                what: "whole file".into(),
            });
        }
        let mut extra = [0u8; 1];
        loop {
            match self.input.inner.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => return Err(Error::Corrupt("bytes after the end of the backup".into())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.done = true;
        Ok(())
    }

    /// Reads (and checks) everything left, discarding the content.
    pub fn drain(&mut self) -> Result<(), Error> {
        while !self.done {
            self.next_frame()?;
        }
        Ok(())
    }
}

impl<R: Read> Read for BackupReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.frame.len() {
            if self.done || !self.next_frame().map_err(Error::into_io)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            created_unix_ms: 1,
            promraft_version: "test".into(),
            cluster_id: "c".into(),
            node_id: 1,
            applied_term: 1,
            applied_leader: 1,
            applied_index: 7,
            members: vec![],
            min_time_ms: None,
            max_time_ms: None,
            series: 0,
            samples: 0,
            chunks: 0,
            records: 0,
            content_bytes: 0,
            compression: String::new(),
            encryption: None,
        }
    }

    fn write(content: &[u8], key: Option<&KeySource>) -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new(), header(), key).unwrap();
        w.write_all(content).unwrap();
        w.finish().unwrap().0
    }

    fn read(file: &[u8], key: Option<&KeySource>) -> Result<Vec<u8>, Error> {
        let mut r = BackupReader::open(file, key)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(Error::from_io)?;
        assert!(r.is_done());
        Ok(out)
    }

    fn content() -> Vec<u8> {
        (0..(FRAME_CONTENT_BYTES * 2 + 777))
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    #[test]
    fn round_trips_plain_and_encrypted() {
        let c = content();
        assert_eq!(read(&write(&c, None), None).unwrap(), c);
        let key = KeySource::Raw([7u8; 32]);
        let f = write(&c, Some(&key));
        assert_eq!(read(&f, Some(&key)).unwrap(), c);
        assert!(matches!(read(&f, None), Err(Error::KeyRequired)));
        assert!(matches!(
            read(&f, Some(&KeySource::Raw([8u8; 32]))),
            Err(Error::WrongKey)
        ));
    }

    /// A backup of format version 1 written by the code before format
    /// version 2 (tests/fixtures/README.md): still read, with its content.
    #[test]
    fn reads_the_version_1_fixture_written_by_the_old_code() {
        let file = include_bytes!("../../tests/fixtures/backup-v1-key-file.prbackup");
        let key = KeySource::Raw([0x2b; 32]);
        let mut r = BackupReader::open(&file[..], Some(&key)).unwrap();
        assert_eq!(r.header().format_version, 1);
        assert_eq!(r.header().encryption.as_ref().unwrap().cipher, "chacha20poly1305");
        assert_eq!(r.header().samples, 30);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.is_done());
        assert_eq!(out.len() as u64, r.header().content_bytes);
        assert!(matches!(
            BackupReader::open(&file[..], Some(&KeySource::Raw([0x2c; 32]))),
            Err(Error::WrongKey)
        ));
    }

    #[test]
    fn writes_version_2_with_xchacha() {
        let key = KeySource::Raw([7u8; 32]);
        let f = write(b"abc", Some(&key));
        assert_eq!(f[8..12], 2u32.to_be_bytes());
        let r = BackupReader::open(&f[..], Some(&key)).unwrap();
        assert_eq!(r.header().encryption.as_ref().unwrap().cipher, "xchacha20poly1305");
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_an_error() {
        let c: Vec<u8> = (0..5000u32).flat_map(|i| i.to_be_bytes()).collect();
        let key = KeySource::Raw([3u8; 32]);
        for k in [None, Some(&key)] {
            let f = write(&c, k);
            for i in (0..f.len()).step_by(7) {
                let mut bad = f.clone();
                bad[i] ^= 0x10;
                assert!(
                    read(&bad, k).is_err(),
                    "flipping byte {i} of {} went unnoticed",
                    f.len()
                );
            }
            for cut in (0..f.len()).step_by(13) {
                assert!(read(&f[..cut], k).is_err(), "truncation at {cut} went unnoticed");
            }
        }
    }

    #[test]
    fn newer_version_is_refused_by_number() {
        let mut f = write(b"x", None);
        f[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
        match read(&f, None) {
            Err(Error::NewerVersion { found, supported }) => {
                assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION))
            }
            other => panic!("expected NewerVersion, got {other:?}"),
        }
    }

    /// Reads a whole file, as restore and verify do, keeping only whether
    /// it failed.
    fn read_any(file: &[u8], key: Option<&KeySource>) -> bool {
        let Ok(mut r) = BackupReader::open(file, key) else {
            return false;
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).is_ok()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_support::proptest_cases(256)))]

        /// Arbitrary bytes, and a valid file (plain or encrypted) damaged at
        /// random, never panic the reader.
        #[test]
        fn reader_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            flips in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..6),
            encrypted in proptest::prelude::any::<bool>(),
        ) {
            let key = KeySource::Raw([5u8; 32]);
            let k = encrypted.then_some(&key);
            let _ = read_any(&bytes, k);
            let mut f = write(&bytes, k);
            for i in &flips {
                let bit = i.index(f.len() * 8);
                f[bit / 8] ^= 1 << (bit % 8);
            }
            let _ = read_any(&f, k);
        }
    }
}
