//! The Gorilla XOR chunk: Prometheus' compressed encoding of float samples.
//!
//! This file owns the chunk byte format (appending, decoding, reopening an
//! encoded chunk for appending) and the checksummed frame a chunk is stored
//! in. The layout is described in `docs/format/chunk.md` and is bit-for-bit
//! the one Prometheus writes, so chunks can be exchanged with it. It must not
//! decide when chunks are cut or where they live (the head and the storage
//! layer do that), and it must never panic or loop forever on bytes from
//! disk or the network: corrupt input is a [`ChunkError`].

use crate::tsdb::bstream::{BitReader, BitWriter, EndOfStream};

/// Samples per chunk at which the head cuts a new chunk.
///
/// Prometheus' choice: at a 15 s scrape interval 120 samples are 30 minutes.
/// That is enough for the XOR encoding to amortise the uncompressed first
/// sample (past ~120 samples the bytes per sample barely drop), while keeping
/// small both the samples a query must decode to reach one point (chunks are
/// only readable from the start) and the work lost with an unflushed chunk.
pub const CHUNK_SAMPLES_TARGET: usize = 120;

/// Most samples one chunk can hold: the header counts them in a `u16`.
pub const CHUNK_SAMPLES_MAX: usize = u16::MAX as usize;

/// Bytes of the sample-count header that starts every chunk.
pub const CHUNK_HEADER_LEN: usize = 2;

/// Encoding byte of a frame holding an XOR chunk (Prometheus' `EncXOR`).
pub const ENCODING_XOR: u8 = 1;

/// Bytes a frame adds around its payload: encoding, length, CRC.
pub const FRAME_OVERHEAD: usize = 1 + 4 + 4;

/// Buffer capacity of a new chunk (as in Prometheus). Slowly moving series
/// fill a whole chunk in this or one doubling; busier ones grow by doubling,
/// and the head shrinks cut chunks to fit.
const INITIAL_CAPACITY: usize = 128;

/// Leading-zero count meaning "no XOR window yet", which forces the first
/// non-zero XOR to spell out its window (control bits `11`).
const NO_WINDOW: u8 = 0xff;

/// Everything that can be wrong with an encoded chunk or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The input ended before the data its header promised.
    #[error("chunk data truncated")]
    Truncated,
    /// The input is structurally invalid.
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
    /// A frame's stored CRC does not match its contents.
    #[error("chunk checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the frame.
        expected: u32,
        /// The CRC computed over the frame's contents.
        actual: u32,
    },
    /// A frame names an encoding this build does not know.
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
}

impl From<EndOfStream> for ChunkError {
    fn from(_: EndOfStream) -> Self {
        ChunkError::Truncated
    }
}

/// Whether `x` fits the `nbits`-bit delta-of-delta bucket.
///
/// Prometheus' range is `[-(2^(n-1) - 1), 2^(n-1)]`, one off from the usual
/// two's complement range, and its decoder reads `2^(n-1)` back as positive;
/// the same range is used here so both sides agree on every chunk.
#[inline]
fn dod_fits(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// An appendable XOR chunk of float samples.
///
/// The encoded bytes are always complete ([`XorChunk::bytes`] can be read,
/// framed or persisted after any append), and the fields below are the
/// appender's state, which [`XorChunk::from_bytes`] restores by decoding.
#[derive(Debug, Clone)]
pub struct XorChunk {
    /// Header and sample bits.
    w: BitWriter,
    num: u16,
    /// Timestamp of the first sample (ms since the epoch).
    first_t_ms: i64,
    /// Last timestamp appended (ms since the epoch).
    last_t_ms: i64,
    /// Last timestamp delta in ms (wrapping, as Prometheus' `uint64` arithmetic).
    t_delta_ms: i64,
    /// Bits of the last value appended.
    v: u64,
    /// Current XOR window: leading zeros (or [`NO_WINDOW`]) and trailing zeros.
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk (just the zero sample-count header).
    pub fn new() -> Self {
        let mut w = BitWriter::with_capacity(INITIAL_CAPACITY);
        w.write_bits(0, 16);
        Self {
            w,
            num: 0,
            first_t_ms: 0,
            last_t_ms: 0,
            t_delta_ms: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Appends a sample.
    ///
    /// The caller keeps timestamps non-decreasing, but any `i64` sequence is
    /// encoded losslessly (deltas wrap exactly as in Prometheus). `t_ms` is in
    /// milliseconds since the epoch; the locals `delta_ms` (from the previous
    /// timestamp) and `dod` (the delta of deltas) are spans in ms. The value is
    /// stored by its bits, so NaN payloads such as the stale marker survive.
    ///
    /// # Panics
    /// If the chunk already holds [`CHUNK_SAMPLES_MAX`] samples (check
    /// [`XorChunk::is_full`]); the head cuts chunks long before that.
    pub fn append(&mut self, t_ms: i64, v: f64) {
        assert!(
            self.num < u16::MAX,
            "XorChunk::append on a full chunk ({CHUNK_SAMPLES_MAX} samples)"
        );
        let v = v.to_bits();
        match self.num {
            0 => {
                write_varint(&mut self.w, t_ms);
                self.w.write_bits(v, 64);
                self.first_t_ms = t_ms;
            }
            1 => {
                let delta_ms = t_ms.wrapping_sub(self.last_t_ms);
                write_uvarint(&mut self.w, delta_ms as u64);
                self.write_value(v);
                self.t_delta_ms = delta_ms;
            }
            _ => {
                let delta_ms = t_ms.wrapping_sub(self.last_t_ms);
                let dod = delta_ms.wrapping_sub(self.t_delta_ms);
                // Bucket prefix and payload are combined into one write.
                if dod == 0 {
                    self.w.write_bit(false);
                } else if dod_fits(dod, 14) {
                    self.w.write_bits((0b10 << 14) | (dod as u64 & 0x3fff), 16);
                } else if dod_fits(dod, 17) {
                    self.w.write_bits((0b110 << 17) | (dod as u64 & 0x1_ffff), 20);
                } else if dod_fits(dod, 20) {
                    self.w.write_bits((0b1110 << 20) | (dod as u64 & 0xf_ffff), 24);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                self.write_value(v);
                self.t_delta_ms = delta_ms;
            }
        }
        self.last_t_ms = t_ms;
        self.v = v;
        self.num += 1;
        let count = self.num.to_be_bytes();
        if let Some(header) = self.w.bytes_mut().first_chunk_mut::<2>() {
            *header = count;
        }
    }

    /// Writes the XOR of `v` with the previous value.
    #[inline]
    fn write_value(&mut self, v: u64) {
        let delta = v ^ self.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        // `delta != 0`, so both counts are at most 63.
        let leading = (delta.leading_zeros() as u8).min(31); // 5 bits hold at most 31
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            // The meaningful bits fit the previous window: '10' + window.
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            let bits = delta >> self.trailing;
            if sig <= 62 {
                self.w.write_bits((0b10 << sig) | bits, sig + 2);
            } else {
                self.w.write_bits(0b10, 2);
                self.w.write_bits(bits, sig);
            }
        } else {
            self.leading = leading;
            self.trailing = trailing;
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            // 64 significant bits do not fit 6 bits; they are written as 0,
            // which is otherwise impossible (a zero XOR takes the '0' path).
            let head = (0b11 << 11) | (u64::from(leading) << 6) | u64::from(sig & 0x3f);
            self.w.write_bits(head, 13);
            self.w.write_bits(delta >> trailing, sig);
        }
    }

    /// Number of samples in the chunk.
    pub fn num_samples(&self) -> usize {
        usize::from(self.num)
    }

    /// Whether the chunk can take no more samples.
    pub fn is_full(&self) -> bool {
        self.num == u16::MAX
    }

    /// Timestamp of the first sample, if any.
    pub fn first_t_ms(&self) -> Option<i64> {
        (self.num > 0).then_some(self.first_t_ms)
    }

    /// Timestamp of the last sample, if any.
    pub fn last_t_ms(&self) -> Option<i64> {
        (self.num > 0).then_some(self.last_t_ms)
    }

    /// Value of the last sample, if any (bit-exact).
    pub fn last_v(&self) -> Option<f64> {
        (self.num > 0).then_some(f64::from_bits(self.v))
    }

    /// The encoded chunk: sample-count header and sample bits.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Reopens an encoded chunk for appending.
    ///
    /// Decodes every sample to rebuild the appender state and rejects bytes
    /// that a writer could not have produced: data missing, bytes past the
    /// last sample, or non-zero padding bits (which appending would corrupt).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ChunkError> {
        let mut d = Decoder::new(&bytes)?;
        let num = d.remaining;
        let mut first_t_ms = 0;
        for i in 0..num {
            let (t_ms, _) = d.next_sample()?;
            if i == 0 {
                first_t_ms = t_ms;
            }
        }
        let bit_len = d.r.bit_position();
        if bytes.len() > bit_len.div_ceil(8) {
            return Err(ChunkError::Corrupt(format!(
                "{} bytes after the last of {num} samples",
                bytes.len() - bit_len.div_ceil(8)
            )));
        }
        // Fewer than 8 bits are left here, checked just above.
        if d.r.read_bits(d.r.bits_left() as u32)? != 0 {
            return Err(ChunkError::Corrupt("non-zero padding after the last sample".into()));
        }
        let Decoder {
            t_ms: last_t_ms,
            t_delta_ms,
            v,
            leading,
            trailing,
            ..
        } = d;
        let w = BitWriter::from_vec(bytes, bit_len).ok_or(ChunkError::Truncated)?;
        Ok(Self {
            w,
            num,
            first_t_ms,
            last_t_ms,
            t_delta_ms,
            v,
            leading,
            trailing,
        })
    }

    /// Iterates over the samples.
    pub fn iter(&self) -> ChunkIter<'_> {
        iter_bytes(self.bytes())
    }

    /// Heap bytes held by the chunk (its buffer capacity), for memory
    /// accounting; add `size_of::<XorChunk>()` for the inline part.
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }

    /// Releases unused buffer capacity, e.g. once the head has cut the chunk.
    pub fn shrink_to_fit(&mut self) {
        self.w.shrink_to_fit();
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = Result<(i64, f64), ChunkError>;
    type IntoIter = ChunkIter<'a>;

    fn into_iter(self) -> ChunkIter<'a> {
        self.iter()
    }
}

/// Writes `x` as a zig-zag varint (Go's `binary.PutVarint`).
fn write_varint(w: &mut BitWriter, x: i64) {
    write_uvarint(w, ((x << 1) ^ (x >> 63)) as u64);
}

/// Writes `x` as an unsigned LEB128 varint (Go's `binary.PutUvarint`).
fn write_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_bits((x & 0x7f) | 0x80, 8);
        x >>= 7;
    }
    w.write_bits(x, 8);
}

/// Decoding state shared by [`ChunkIter`] and [`XorChunk::from_bytes`].
#[derive(Debug, Clone)]
struct Decoder<'a> {
    r: BitReader<'a>,
    /// Samples still to decode.
    remaining: u16,
    /// Samples decoded so far.
    read: u16,
    /// Timestamp of the last sample decoded (ms since the epoch).
    t_ms: i64,
    /// Its delta from the one before (ms).
    t_delta_ms: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let mut r = BitReader::new(bytes);
        let remaining = r.read_bits(16)? as u16;
        Ok(Self {
            r,
            remaining,
            read: 0,
            t_ms: 0,
            t_delta_ms: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        })
    }

    /// Decodes the next sample; the caller checks `remaining` first. Every
    /// read is bounded, so a corrupt chunk costs at most `remaining` calls.
    #[inline]
    fn next_sample(&mut self) -> Result<(i64, u64), ChunkError> {
        match self.read {
            0 => {
                self.t_ms = read_varint(&mut self.r)?;
                self.v = self.r.read_bits(64)?;
            }
            1 => {
                self.t_delta_ms = read_uvarint(&mut self.r)? as i64;
                self.t_ms = self.t_ms.wrapping_add(self.t_delta_ms);
                self.read_value()?;
            }
            _ => {
                let dod = self.read_dod()?;
                self.t_delta_ms = self.t_delta_ms.wrapping_add(dod);
                self.t_ms = self.t_ms.wrapping_add(self.t_delta_ms);
                self.read_value()?;
            }
        }
        self.read = self.read.saturating_add(1);
        self.remaining = self.remaining.saturating_sub(1);
        Ok((self.t_ms, self.v))
    }

    /// Reads a timestamp delta-of-delta in ms (sample 3 on).
    #[inline]
    fn read_dod(&mut self) -> Result<i64, ChunkError> {
        // Fast path: the prefix and a 14/17/20-bit payload are at most 24
        // bits, so parse them from one buffered word.
        let (acc, avail) = self.r.peek(24);
        if avail >= 24 {
            let (size, used) = match (!acc).leading_zeros() {
                0 => {
                    self.r.consume(1);
                    return Ok(0);
                }
                1 => (14, 16),
                2 => (17, 20),
                3 => (20, 24),
                _ => {
                    self.r.consume(4);
                    return Ok(self.r.read_bits(64)? as i64);
                }
            };
            self.r.consume(used);
            return Ok(dod_from_bits((acc >> (64 - used)) & ((1 << size) - 1), size));
        }
        if !self.r.read_bit()? {
            return Ok(0);
        }
        let size = if !self.r.read_bit()? {
            14
        } else if !self.r.read_bit()? {
            17
        } else if !self.r.read_bit()? {
            20
        } else {
            return Ok(self.r.read_bits(64)? as i64);
        };
        Ok(dod_from_bits(self.r.read_bits(size)?, size))
    }

    /// Reads an XOR-encoded value into `self.v` (sample 2 on).
    #[inline]
    fn read_value(&mut self) -> Result<(), ChunkError> {
        // Fast path: parse the control bits (and a new window's 11-bit
        // header) from one buffered word.
        let (acc, avail) = self.r.peek(13);
        if avail >= 13 {
            let (control, sig) = match acc >> 62 {
                0 | 1 => {
                    self.r.consume(1);
                    return Ok(());
                }
                2 => {
                    if self.leading == NO_WINDOW {
                        // See the slow path below.
                        self.leading = 0;
                        self.trailing = 0;
                    }
                    (2, 64 - u32::from(self.leading) - u32::from(self.trailing))
                }
                _ => (13, self.set_window((acc >> 51) & 0x7ff)?),
            };
            // The meaningful bits are usually in the word already.
            let bits = if avail >= control + sig {
                self.r.consume(control + sig);
                (acc << control) >> (64 - sig)
            } else {
                self.r.consume(control);
                self.r.read_bits(sig)?
            };
            self.v ^= bits << self.trailing;
            return Ok(());
        }
        if !self.r.read_bit()? {
            return Ok(());
        }
        let sig = if !self.r.read_bit()? {
            if self.leading == NO_WINDOW {
                // Reusing a window before any was set: Prometheus' reader
                // starts from the full window (0 leading, 0 trailing), and
                // its appender, reopened on a chunk whose values never
                // changed, writes exactly this. Accept it the same way.
                self.leading = 0;
                self.trailing = 0;
            }
            64 - u32::from(self.leading) - u32::from(self.trailing)
        } else {
            let head = self.r.read_bits(11)?;
            self.set_window(head)?
        };
        let bits = self.r.read_bits(sig)?;
        self.v ^= bits << self.trailing;
        Ok(())
    }

    /// Sets the XOR window from its 11-bit header (5 bits leading zeros, 6
    /// bits significant-bit count with 0 meaning 64); returns the count.
    #[inline]
    fn set_window(&mut self, head: u64) -> Result<u32, ChunkError> {
        let leading = (head >> 6) as u32 & 0x1f;
        let sig = match (head & 0x3f) as u32 {
            0 => 64,
            n => n,
        };
        if leading + sig > 64 {
            return Err(ChunkError::Corrupt(format!(
                "XOR window {leading}+{sig} exceeds 64 bits"
            )));
        }
        self.leading = leading as u8;
        self.trailing = (64 - leading - sig) as u8;
        Ok(sig)
    }
}

/// Sign-extends a `size`-bit delta-of-delta payload, the inverse of
/// `dod_fits`: only payloads above 2^(size-1) are negative.
#[inline]
fn dod_from_bits(bits: u64, size: u32) -> i64 {
    let dod = bits as i64;
    if bits > 1 << (size - 1) {
        dod - (1 << size)
    } else {
        dod
    }
}

/// Reads a zig-zag varint (Go's `binary.ReadVarint`).
fn read_varint(r: &mut BitReader<'_>) -> Result<i64, ChunkError> {
    let ux = read_uvarint(r)?;
    Ok(((ux >> 1) as i64) ^ -((ux & 1) as i64))
}

/// Reads an unsigned varint (Go's `binary.ReadUvarint`, which accepts
/// non-minimal encodings and rejects anything past 64 bits).
fn read_uvarint(r: &mut BitReader<'_>) -> Result<u64, ChunkError> {
    let mut x = 0u64;
    for i in 0..10 {
        let b = r.read_bits(8)?;
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(ChunkError::Corrupt("varint overflows 64 bits".into()));
            }
            return Ok(x | (b << (7 * i)));
        }
        x |= (b & 0x7f) << (7 * i);
    }
    Err(ChunkError::Corrupt("varint longer than 10 bytes".into()))
}

/// Iterator over the samples of an encoded chunk.
///
/// Yields `Ok((t_ms, v))` per sample. On corrupt or truncated data it yields one
/// `Err` and then stops, so it always ends after at most `count + 1` items,
/// where the count is the header's (at most 65 535). It does not allocate
/// except to describe an error.
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    state: Result<Decoder<'a>, Option<ChunkError>>,
}

/// Iterates over the samples of the encoded chunk `bytes`.
///
/// Only the bits the header's sample count needs are read; use
/// [`XorChunk::from_bytes`] to also reject trailing garbage.
pub fn iter_bytes(bytes: &[u8]) -> ChunkIter<'_> {
    ChunkIter {
        state: Decoder::new(bytes).map_err(Some),
    }
}

impl ChunkIter<'_> {
    /// Samples still to come according to the header (0 after an error).
    pub fn remaining(&self) -> usize {
        match &self.state {
            Ok(d) => usize::from(d.remaining),
            Err(_) => 0,
        }
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.state {
            Ok(d) => {
                if d.remaining == 0 {
                    return None;
                }
                match d.next_sample() {
                    Ok((t_ms, v)) => Some(Ok((t_ms, f64::from_bits(v)))),
                    Err(e) => {
                        self.state = Err(None);
                        Some(Err(e))
                    }
                }
            }
            Err(e) => e.take().map(Err),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.state {
            // An error replaces the sample it was found in, so the count is
            // exact unless the data turns out corrupt, which can only end the
            // iteration early.
            Ok(d) => (usize::from(d.remaining.min(1)), Some(usize::from(d.remaining))),
            Err(e) => {
                let n = usize::from(e.is_some());
                (n, Some(n))
            }
        }
    }
}

impl std::iter::FusedIterator for ChunkIter<'_> {}

/// Frames a chunk for persistence, appending to `out`:
/// `[u8 encoding = 1][u32 BE payload length][payload][u32 BE CRC32]`, where
/// the CRC (IEEE, as `crc32fast` computes it) covers encoding, length and
/// payload.
///
/// # Panics
/// If the payload is 4 GiB or more, which no chunk can be (at most 65 535
/// samples of at most 145 bits each).
pub fn encode_frame(chunk_bytes: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(chunk_bytes.len()).expect("chunk payload under 4 GiB");
    out.reserve(FRAME_OVERHEAD + chunk_bytes.len());
    let start = out.len();
    out.push(ENCODING_XOR);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(chunk_bytes);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Checks one whole frame and returns its chunk payload.
///
/// The frame must be exactly one frame long; use [`split_frame`] to read
/// frames laid end to end.
pub fn decode_frame(frame: &[u8]) -> Result<&[u8], ChunkError> {
    let (payload, rest) = split_frame(frame)?;
    if !rest.is_empty() {
        return Err(ChunkError::Corrupt(format!("{} bytes after the frame", rest.len())));
    }
    Ok(payload)
}

/// Checks the frame at the start of `buf` and returns its payload and the
/// bytes after the frame.
///
/// The CRC is checked before the encoding byte, so any damage inside the
/// frame's extent reads as a checksum mismatch.
pub fn split_frame(buf: &[u8]) -> Result<(&[u8], &[u8]), ChunkError> {
    let Some((head, rest)) = buf.split_first_chunk::<5>() else {
        return Err(ChunkError::Truncated);
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() < len || rest.len() - len < 4 {
        return Err(ChunkError::Truncated);
    }
    let (payload, rest) = rest.split_at(len);
    let (stored, rest) = rest.split_at(4);
    let expected = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(head);
    hasher.update(payload);
    let actual = hasher.finalize();
    if expected != actual {
        return Err(ChunkError::ChecksumMismatch { expected, actual });
    }
    if head[0] != ENCODING_XOR {
        return Err(ChunkError::UnknownEncoding(head[0]));
    }
    Ok((payload, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Prometheus' stale marker: a NaN with a payload that must survive.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn encode(samples: &[(i64, u64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t_ms, v) in samples {
            c.append(t_ms, f64::from_bits(v));
        }
        c
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(i64, u64)>, ChunkError> {
        iter_bytes(bytes)
            .map(|s| s.map(|(t_ms, v)| (t_ms, v.to_bits())))
            .collect()
    }

    /// Asserts every way of reading `samples` back agrees with them.
    fn check_round_trip(samples: &[(i64, u64)]) {
        let c = encode(samples);
        assert_eq!(c.num_samples(), samples.len());
        assert_eq!(decode(c.bytes()), Ok(samples.to_vec()));
        assert_eq!(c.first_t_ms(), samples.first().map(|s| s.0));
        assert_eq!(c.last_t_ms(), samples.last().map(|s| s.0));
        assert_eq!(c.last_v().map(f64::to_bits), samples.last().map(|s| s.1));
        let reopened = XorChunk::from_bytes(c.bytes().to_vec()).expect("valid chunk reopens");
        assert_eq!(reopened.bytes(), c.bytes());
        assert_eq!(reopened.first_t_ms(), c.first_t_ms());
        assert_eq!(reopened.last_t_ms(), c.last_t_ms());
        assert_eq!(reopened.last_v().map(f64::to_bits), c.last_v().map(f64::to_bits));
    }

    #[test]
    fn empty_chunk() {
        let c = XorChunk::new();
        assert_eq!(c.bytes(), &[0, 0]);
        assert_eq!(c.num_samples(), 0);
        assert_eq!(c.first_t_ms(), None);
        assert_eq!(c.last_v(), None);
        assert_eq!(c.iter().count(), 0);
        assert!(XorChunk::from_bytes(vec![0, 0]).is_ok());
        assert!(XorChunk::from_bytes(vec![0, 0, 0]).is_err());
        assert_eq!(decode(&[]), Err(ChunkError::Truncated));
        assert_eq!(decode(&[0]), Err(ChunkError::Truncated));
    }

    /// A hand-checked encoding, so the format cannot drift while staying
    /// self-consistent.
    #[test]
    fn known_bytes() {
        let c = encode(&[
            (1000, 1.0f64.to_bits()),
            (16000, 1.0f64.to_bits()),
            (31000, 2.0f64.to_bits()),
        ]);
        let mut want = vec![0x00, 0x03, 0xd0, 0x0f]; // count 3; varint zigzag(1000) = 2000
        want.extend_from_slice(&1.0f64.to_be_bytes());
        want.extend_from_slice(&[0x98, 0x75]); // uvarint 15000
                                               // Sample 2 value: '0' (same). Sample 3: dod '0', XOR 1.0^2.0 =
                                               // 0x7ff0000000000000: '11', leading 1 (00001), sig 11 (001011),
                                               // bits 11111111111.
                                               // Bits: 0 0 11 00001 001011 11111111111 -> 0011 0000 1001 0111
                                               // 1111 1111 11(pad 000000)
        want.extend_from_slice(&[0x30, 0x97, 0xff, 0xc0]);
        assert_eq!(c.bytes(), &want[..]);
        check_round_trip(&[
            (1000, 1.0f64.to_bits()),
            (16000, 1.0f64.to_bits()),
            (31000, 2.0f64.to_bits()),
        ]);
    }

    #[test]
    fn special_values_round_trip_bit_exact() {
        let vals = [
            STALE_NAN,
            f64::NAN.to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            0,
            1 << 63,
            1,
            u64::MAX,
        ];
        let samples: Vec<_> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 15_000, v)).collect();
        check_round_trip(&samples);
    }

    #[test]
    fn dod_bucket_edges() {
        // Each dod sits on or next to a bucket edge; dods are applied to a
        // regular 15 s series.
        let mut edges = vec![0i64];
        for bits in [14u32, 17, 20] {
            let half = 1i64 << (bits - 1);
            edges.extend_from_slice(&[half, half + 1, -(half - 1), -half, -half - 1]);
        }
        edges.extend_from_slice(&[i64::MAX, i64::MIN, 1, -1]);
        let mut samples = vec![(0i64, 0u64), (15_000, 0)];
        let mut delta_ms = 15_000i64;
        for (i, &dod) in edges.iter().enumerate() {
            delta_ms = delta_ms.wrapping_add(dod);
            let t_ms = samples[samples.len() - 1].0.wrapping_add(delta_ms);
            samples.push((t_ms, i as u64));
        }
        check_round_trip(&samples);
    }

    /// The bucket and payload each dod gets, checked against Prometheus'
    /// asymmetric ranges rather than against our own decoder.
    #[test]
    fn dod_bucket_choice_matches_prometheus() {
        let cases: [(i64, u32, u64, u32); 9] = [
            (1, 2, 0b10, 14),
            (8192, 2, 0b10, 14),
            (-8191, 2, 0b10, 14),
            (-8192, 3, 0b110, 17),
            (8193, 3, 0b110, 17),
            (65536, 3, 0b110, 17),
            (-65536, 4, 0b1110, 20),
            (524288, 4, 0b1110, 20),
            (-524288, 4, 0b1111, 64),
        ];
        for (dod, prefix_len, prefix, size) in cases {
            let c = encode(&[(0, 0), (1000, 0), (2000 + dod, 0)]);
            let mut r = BitReader::new(c.bytes());
            // Header, varint 0, value, varint 1000, value '0'.
            for n in [16, 8, 64, 16, 1] {
                r.read_bits(n).expect("in range");
            }
            assert_eq!(r.read_bits(prefix_len), Ok(prefix), "dod {dod}");
            let mask = if size == 64 { u64::MAX } else { (1 << size) - 1 };
            assert_eq!(r.read_bits(size), Ok(dod as u64 & mask), "dod {dod}");
        }
    }

    #[test]
    fn extreme_timestamps() {
        check_round_trip(&[
            (i64::MIN, 1),
            (i64::MAX, 2),
            (i64::MIN, 3),
            (0, 4),
            (i64::MAX, 5),
            (i64::MAX, 6),
        ]);
        check_round_trip(&[(i64::MAX, 0)]);
        check_round_trip(&[(-5, 0), (-5, 0), (-5, 0), (-4, 1)]);
    }

    #[test]
    fn full_chunk() {
        let mut c = XorChunk::new();
        let mut samples = Vec::with_capacity(CHUNK_SAMPLES_MAX);
        for i in 0..CHUNK_SAMPLES_MAX as i64 {
            let s = (i * 15_000 + (i * 7919) % 5, ((i * 31) % 1000) as f64);
            c.append(s.0, s.1);
            samples.push((s.0, s.1.to_bits()));
        }
        assert!(c.is_full());
        assert_eq!(decode(c.bytes()), Ok(samples));
        let reopened = XorChunk::from_bytes(c.bytes().to_vec()).expect("reopens");
        assert!(reopened.is_full());
    }

    #[test]
    #[should_panic(expected = "full chunk")]
    fn append_past_max_panics() {
        let mut c = XorChunk::new();
        for i in 0..=CHUNK_SAMPLES_MAX as i64 {
            c.append(i, 0.0);
        }
    }

    #[test]
    fn from_bytes_rejects_garbage_after_samples() {
        // The chunk of `known_bytes`, whose last byte has 6 padding bits.
        let c = encode(&[
            (1000, 1.0f64.to_bits()),
            (16000, 1.0f64.to_bits()),
            (31000, 2.0f64.to_bits()),
        ]);
        let mut extra = c.bytes().to_vec();
        extra.push(0);
        assert!(matches!(XorChunk::from_bytes(extra), Err(ChunkError::Corrupt(_))));
        let mut padded = c.bytes().to_vec();
        *padded.last_mut().expect("non-empty") |= 1;
        assert!(decode(&padded).is_ok(), "padding is not read");
        assert!(matches!(XorChunk::from_bytes(padded), Err(ChunkError::Corrupt(_))));
    }

    /// '10' before any '11' means the full 64-bit window, as Prometheus
    /// reads it (its appender writes this after reopening a chunk whose
    /// values never changed).
    #[test]
    fn window_reuse_before_any_window_is_full_width() {
        // count 3; t0 = 0; v0 = 0; delta 1; '10' + the 64 bits of 1.0;
        // then dod '0' and '10' + 64 bits again (window stays full).
        let two = 2.0f64.to_bits() ^ 1.0f64.to_bits();
        let mut w = BitWriter::new();
        for b in [0u64, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] {
            w.write_bits(b, 8);
        }
        w.write_bits(0b10, 2);
        w.write_bits(1.0f64.to_bits(), 64);
        w.write_bit(false);
        w.write_bits(0b10, 2);
        w.write_bits(two, 64);
        let want = vec![(0, 0), (1, 1.0f64.to_bits()), (2, 2.0f64.to_bits())];
        assert_eq!(decode(w.bytes()), Ok(want.clone()));
        let mut c = XorChunk::from_bytes(w.bytes().to_vec()).expect("reopens");
        c.append(3, 3.0);
        let mut want = want;
        want.push((3, 3.0f64.to_bits()));
        assert_eq!(decode(c.bytes()), Ok(want));
    }

    #[test]
    fn heap_bytes_and_shrink() {
        let mut c = encode(&[(0, 0), (15_000, 1)]);
        assert!(c.heap_bytes() >= c.bytes().len());
        let before = c.heap_bytes();
        c.shrink_to_fit();
        assert!(c.heap_bytes() >= c.bytes().len() && c.heap_bytes() < before);
        c.append(30_000, 2.0);
        assert_eq!(decode(c.bytes()).map(|s| s.len()), Ok(3));
    }

    #[test]
    fn frame_round_trip_and_errors() {
        let c = encode(&[(0, 0), (15_000, 1), (30_001, STALE_NAN)]);
        let mut frame = vec![];
        encode_frame(c.bytes(), &mut frame);
        assert_eq!(frame.len(), c.bytes().len() + FRAME_OVERHEAD);
        assert_eq!(decode_frame(&frame), Ok(c.bytes()));
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (p, rest) = split_frame(&two).expect("first frame");
        assert_eq!(p, c.bytes());
        assert_eq!(decode_frame(rest), Ok(c.bytes()));
        assert!(matches!(decode_frame(&two), Err(ChunkError::Corrupt(_))));

        // An unknown encoding with a valid CRC is reported as such.
        let mut other = frame.clone();
        other[0] = 7;
        let body = other.len() - 4;
        let crc = crc32fast::hash(&other[..body]);
        other[body..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_frame(&other), Err(ChunkError::UnknownEncoding(7)));
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_frame_errors() {
        let samples: Vec<(i64, u64)> = (0..CHUNK_SAMPLES_TARGET as i64)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 15_000 + i % 3,
                    (100.0 + (i * i) as f64 * 0.25).to_bits(),
                )
            })
            .collect();
        let c = encode(&samples);
        let mut frame = vec![];
        encode_frame(c.bytes(), &mut frame);
        for cut in 0..frame.len() {
            assert!(decode_frame(&frame[..cut]).is_err(), "frame cut to {cut} bytes decoded");
        }
        for cut in 0..c.bytes().len() {
            let cut_bytes = &c.bytes()[..cut];
            assert!(decode(cut_bytes).is_err(), "chunk cut to {cut} bytes decoded");
            assert!(XorChunk::from_bytes(cut_bytes.to_vec()).is_err());
        }
        // Every single bit flip: detected, and a flip past the length field
        // is detected by the CRC itself.
        let mut damaged = frame.clone();
        for bit in 0..frame.len() * 8 {
            damaged[bit / 8] ^= 1 << (bit % 8);
            let res = decode_frame(&damaged);
            assert!(res.is_err(), "flip of bit {bit} undetected");
            if !(8..40).contains(&bit) {
                assert!(
                    matches!(res, Err(ChunkError::ChecksumMismatch { .. })),
                    "bit {bit}: {res:?}"
                );
            }
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
        // Every single bit flip of the bare chunk: decoding may succeed with
        // other samples, but must not panic, and must stop.
        let mut damaged = c.bytes().to_vec();
        for bit in 0..damaged.len() * 8 {
            damaged[bit / 8] ^= 1 << (bit % 8);
            let n = iter_bytes(&damaged).take(CHUNK_SAMPLES_MAX + 2).count();
            assert!(n <= CHUNK_SAMPLES_MAX + 1);
            let _ = XorChunk::from_bytes(damaged.clone());
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
    }

    /// How the next timestamp is made from the previous one and the last delta.
    #[derive(Debug, Clone)]
    enum Step {
        Same,
        Regular(i64),
        Small(i64),
        Any(i64),
        Extreme(bool),
    }

    /// How the next value is made from the previous one.
    #[derive(Debug, Clone)]
    enum Val {
        Repeat,
        Bits(u64),
        Special(u64),
        FlipLow(u64),
        Counter(u32),
        Gauge(f64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => Just(Step::Same),
            6 => (-5i64..=5).prop_map(Step::Regular),
            3 => (-100_000i64..=1_100_000).prop_map(Step::Small),
            1 => any::<i64>().prop_map(Step::Any),
            1 => any::<bool>().prop_map(Step::Extreme),
        ]
    }

    fn val() -> impl Strategy<Value = Val> {
        prop_oneof![
            4 => Just(Val::Repeat),
            2 => any::<u64>().prop_map(Val::Bits),
            2 => prop_oneof![
                Just(STALE_NAN),
                Just(f64::NAN.to_bits()),
                Just(f64::INFINITY.to_bits()),
                Just(f64::NEG_INFINITY.to_bits()),
                Just(0u64),
                Just(1u64 << 63),
                Just(u64::MAX),
            ]
            .prop_map(Val::Special),
            3 => (0u64..1 << 20).prop_map(Val::FlipLow),
            3 => (0u32..10_000).prop_map(Val::Counter),
            2 => (-1e3f64..1e3).prop_map(Val::Gauge),
        ]
    }

    fn samples(max: usize) -> impl Strategy<Value = Vec<(i64, u64)>> {
        (any::<i64>(), proptest::collection::vec((step(), val()), 0..max)).prop_map(|(start_ms, ops)| {
            let mut out: Vec<(i64, u64)> = Vec::with_capacity(ops.len());
            let (mut t_ms, mut v) = (start_ms, 0u64);
            for (s, x) in ops {
                if !out.is_empty() {
                    match s {
                        Step::Same => {}
                        Step::Regular(j) => t_ms = t_ms.wrapping_add(15_000 + j),
                        Step::Small(d) => t_ms = t_ms.wrapping_add(d),
                        Step::Any(d) => t_ms = t_ms.wrapping_add(d),
                        Step::Extreme(max) => t_ms = if max { i64::MAX } else { i64::MIN },
                    }
                }
                v = match x {
                    Val::Repeat => v,
                    Val::Bits(b) | Val::Special(b) => b,
                    Val::FlipLow(m) => v ^ m,
                    Val::Counter(inc) => (f64::from_bits(v).abs().min(1e15) + f64::from(inc)).to_bits(),
                    Val::Gauge(d) => (f64::from_bits(v) + d).to_bits(),
                };
                out.push((t_ms, v));
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Encoding then decoding gives back the model, and a chunk reopened
        /// at any point and appended to is byte-identical to one built in a
        /// single go.
        #[test]
        fn matches_model(model in samples(400), split in any::<prop::sample::Index>()) {
            let c = encode(&model);
            prop_assert_eq!(c.num_samples(), model.len());
            prop_assert_eq!(decode(c.bytes()), Ok(model.clone()));
            prop_assert_eq!(c.first_t_ms(), model.first().map(|s| s.0));
            prop_assert_eq!(c.last_t_ms(), model.last().map(|s| s.0));
            prop_assert_eq!(c.last_v().map(f64::to_bits), model.last().map(|s| s.1));

            let k = if model.is_empty() { 0 } else { split.index(model.len() + 1) };
            let mut reopened = XorChunk::from_bytes(encode(&model[..k]).bytes().to_vec())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for &(t_ms, v) in &model[k..] {
                reopened.append(t_ms, f64::from_bits(v));
            }
            prop_assert_eq!(reopened.bytes(), c.bytes());
            prop_assert_eq!(reopened.first_t_ms(), c.first_t_ms());

            let mut frame = vec![];
            encode_frame(c.bytes(), &mut frame);
            prop_assert_eq!(decode_frame(&frame), Ok(c.bytes()));
        }

        /// Random damage never panics or runs away; a damaged frame is
        /// always rejected.
        #[test]
        fn damage_never_panics(
            model in samples(150),
            flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let c = encode(&model);
            let mut bytes = c.bytes().to_vec();
            for f in &flips {
                let bit = f.index(bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            let n = iter_bytes(&bytes).take(CHUNK_SAMPLES_MAX + 2).count();
            prop_assert!(n <= CHUNK_SAMPLES_MAX + 1);
            if let Some(mut reopened) = XorChunk::from_bytes(bytes.clone()).ok().filter(|c| !c.is_full()) {
                // A reopened chunk must keep working.
                reopened.append(reopened.last_t_ms().unwrap_or(0), 1.5);
                prop_assert!(decode(reopened.bytes()).is_ok());
            }

            let mut frame = vec![];
            encode_frame(c.bytes(), &mut frame);
            let mut seen = std::collections::BTreeSet::new();
            for f in &flips {
                let bit = f.index(frame.len() * 8);
                // An even number of flips of one bit cancels out.
                if !seen.insert(bit) { seen.remove(&bit); }
            }
            for &bit in &seen {
                frame[bit / 8] ^= 1 << (bit % 8);
            }
            prop_assert_eq!(decode_frame(&frame).is_err(), !seen.is_empty());
        }

        /// Arbitrary bytes never panic any decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let n = iter_bytes(&bytes).take(CHUNK_SAMPLES_MAX + 2).count();
            prop_assert!(n <= CHUNK_SAMPLES_MAX + 1);
            let _ = XorChunk::from_bytes(bytes.clone());
            let _ = decode_frame(&bytes);
        }
    }
}
