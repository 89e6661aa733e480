//! Bit streams: the MSB-first bit writer and reader under the XOR chunk.
//!
//! This file owns packing bits into bytes and unpacking them again, most
//! significant bit first, the order Prometheus uses. It knows nothing about
//! samples or chunk layout (that is `chunk.rs`). It must never panic on the
//! bytes it is given to read: they may come from disk or the network, so
//! running out of input is an [`EndOfStream`] error, not an index panic.

/// The reader ran out of input before the requested bits were available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bit stream ended before the requested bits")]
pub struct EndOfStream;

/// An append-only bit writer over a growable byte buffer.
///
/// The buffer always holds every bit written so far, padded with zero bits to
/// a whole byte, so [`BitWriter::bytes`] can be handed out at any moment
/// without a flush step. Writing allocates only when the buffer must grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Unwritten low bits in the last byte of `buf` (0..=7). Zero means the
    /// stream is byte-aligned and the next bit starts a new byte.
    free: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer whose buffer can take `bytes` bytes before growing.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            free: 0,
        }
    }

    /// Resumes writing after the first `bit_len` bits of `buf`.
    ///
    /// Bytes past those bits are dropped and the padding bits of the last
    /// byte are cleared, because the writer ORs new bits into that byte.
    /// Returns `None` if `buf` holds fewer than `bit_len` bits.
    pub fn from_vec(mut buf: Vec<u8>, bit_len: usize) -> Option<Self> {
        let whole = bit_len / 8;
        let rem = (bit_len % 8) as u32;
        let needed = whole + usize::from(rem != 0);
        if buf.len() < needed {
            return None;
        }
        buf.truncate(needed);
        if rem != 0 {
            // `needed >= 1` here, so the index is in bounds.
            buf[needed - 1] &= !(0xffu8 >> rem);
        }
        Some(Self {
            buf,
            free: (8 - rem) % 8,
        })
    }

    /// Appends one bit.
    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.buf.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit {
            if let Some(last) = self.buf.last_mut() {
                *last |= 1 << self.free;
            }
        }
    }

    /// Appends the low `n` bits of `value`, most significant first.
    ///
    /// Bits of `value` above `n` are ignored. `n` must be at most 64; a larger
    /// `n` is a programming error and is clamped to 64 (asserted in debug).
    #[inline]
    pub fn write_bits(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64, "write_bits: n = {n} > 64");
        let n = n.min(64);
        if n == 0 {
            return;
        }
        let value = if n == 64 { value } else { value & ((1u64 << n) - 1) };
        let free = self.free;
        if n <= free {
            // Fits in the partly written last byte (`free > 0`, so it exists).
            if let Some(last) = self.buf.last_mut() {
                *last |= (value << (free - n)) as u8;
            }
            self.free = free - n;
            return;
        }
        // The top `free` bits of the value complete the last byte; the other
        // `rest` (1..=64) bits start new bytes.
        let rest = n - free;
        if free > 0 {
            if let Some(last) = self.buf.last_mut() {
                *last |= (value >> rest) as u8;
            }
        }
        // Left-aligning drops the bits already written.
        let aligned = (value << (64 - rest)).to_be_bytes();
        let nbytes = rest.div_ceil(8) as usize;
        let len = self.buf.len();
        if self.buf.capacity() - len >= aligned.len() {
            // A fixed 8-byte copy is a single store; the surplus bytes are
            // cut off again. Only taken when it cannot make the buffer grow.
            self.buf.extend_from_slice(&aligned);
            self.buf.truncate(len + nbytes);
        } else {
            self.buf.extend_from_slice(&aligned[..nbytes]);
        }
        self.free = (8 - rest % 8) % 8;
    }

    /// The bytes written so far; the last byte is zero-padded.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Mutable access to the written bytes, for fixed-size headers that are
    /// rewritten in place (such as a chunk's sample count).
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Number of bits written so far (excluding padding).
    pub fn bit_len(&self) -> usize {
        self.buf.len() * 8 - self.free as usize
    }

    /// Bytes allocated for the buffer (its capacity), for memory accounting.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Releases unused buffer capacity.
    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Gives the buffer back, padding included.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// An MSB-first bit reader over a byte slice.
///
/// Bits are served from a 64-bit register refilled eight bytes at a time
/// where the input allows, so most reads are a shift and a compare. Reading
/// past the end returns [`EndOfStream`]; nothing here can panic on any input.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` not yet loaded into `acc`.
    pos: usize,
    /// Loaded bits, left-aligned: bit 63 is the next bit to read. Below the
    /// `avail` valid bits, `acc` holds either zeros or the true following
    /// bits of the stream, so ORing the next bytes in is always correct.
    acc: u64,
    /// Number of valid bits in `acc` (0..=64).
    avail: u32,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            acc: 0,
            avail: 0,
        }
    }

    /// Loads as many whole bytes into the register as fit.
    #[inline]
    fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..).and_then(|rest| rest.first_chunk::<8>()) {
            let word = u64::from_be_bytes(*word);
            if self.avail == 0 {
                self.acc = word;
                self.avail = 64;
                self.pos += 8;
            } else {
                // Also ORs in the first bits of a byte that does not fit
                // whole; they are the true stream bits, which the invariant
                // on `acc` allows.
                self.acc |= word >> self.avail;
                let bytes = (64 - self.avail) / 8;
                self.pos += bytes as usize;
                self.avail += bytes * 8;
            }
        } else {
            while self.avail <= 56 {
                let Some(&byte) = self.data.get(self.pos) else {
                    break;
                };
                self.acc |= u64::from(byte) << (56 - self.avail);
                self.avail += 8;
                self.pos += 1;
            }
        }
    }

    /// Takes `n` (1..=64, `n <= avail`) bits from the register.
    #[inline]
    fn take(&mut self, n: u32) -> u64 {
        let v = self.acc >> (64 - n);
        self.acc = self.acc.checked_shl(n).unwrap_or(0);
        self.avail -= n;
        v
    }

    /// Reads one bit.
    #[inline]
    pub fn read_bit(&mut self) -> Result<bool, EndOfStream> {
        if self.avail == 0 {
            self.refill();
            if self.avail == 0 {
                return Err(EndOfStream);
            }
        }
        let bit = self.acc >> 63 != 0;
        self.acc <<= 1;
        self.avail -= 1;
        Ok(bit)
    }

    /// Reads `n` bits (at most 64) as the low bits of the result.
    ///
    /// `n > 64` is a programming error and is clamped to 64 (asserted in
    /// debug). On [`EndOfStream`] the reader's position is unspecified.
    #[inline]
    pub fn read_bits(&mut self, n: u32) -> Result<u64, EndOfStream> {
        debug_assert!(n <= 64, "read_bits: n = {n} > 64");
        let n = n.min(64);
        if n == 0 {
            return Ok(0);
        }
        if self.avail < n {
            self.refill();
        }
        if self.avail >= n {
            return Ok(self.take(n));
        }
        // Only reached when the register could not hold all `n` bits after
        // a refill (a 57..=64-bit read straddling a refill) or the input is
        // short: drain what is there, refill from empty, take the rest.
        let hi_n = self.avail;
        let hi = if hi_n == 0 { 0 } else { self.take(hi_n) };
        self.acc = 0;
        self.refill();
        let lo_n = n - hi_n;
        if self.avail < lo_n {
            return Err(EndOfStream);
        }
        // `hi_n < n <= 64`, so the shift is in range.
        Ok((hi << lo_n) | self.take(lo_n))
    }

    /// Buffers at least `n` bits (`n <= 56`) if the input still has them and
    /// returns the buffered bits, left-aligned, with how many are valid.
    ///
    /// Bits below the valid count are unspecified. Together with
    /// [`BitReader::consume`] this lets a decoder parse a prefix code from
    /// one word instead of bit by bit.
    #[inline]
    pub fn peek(&mut self, n: u32) -> (u64, u32) {
        if self.avail < n {
            self.refill();
        }
        (self.acc, self.avail)
    }

    /// Drops the next `n` buffered bits, as returned by [`BitReader::peek`].
    ///
    /// `n` larger than the buffered count is a programming error: it is
    /// clamped (asserted in debug) rather than trusted.
    #[inline]
    pub fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.avail, "consume({n}) with {} bits buffered", self.avail);
        let n = n.min(self.avail);
        self.acc = self.acc.checked_shl(n).unwrap_or(0);
        self.avail -= n;
    }

    /// Number of bits consumed so far.
    pub fn bit_position(&self) -> usize {
        self.pos * 8 - self.avail as usize
    }

    /// Number of bits not yet consumed (padding bits included).
    pub fn bits_left(&self) -> usize {
        self.data.len() * 8 - self.bit_position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_reader_errors() {
        let mut r = BitReader::new(&[]);
        assert_eq!(r.read_bit(), Err(EndOfStream));
        assert_eq!(r.read_bits(1), Err(EndOfStream));
        assert_eq!(r.read_bits(0), Ok(0));
    }

    #[test]
    fn bits_are_msb_first() {
        let mut w = BitWriter::new();
        w.write_bit(true);
        w.write_bits(0b011, 3);
        w.write_bits(0xABCD, 16);
        assert_eq!(w.bit_len(), 20);
        assert_eq!(w.bytes(), &[0b1011_1010, 0b1011_1100, 0b1101_0000]);
        let mut r = BitReader::new(w.bytes());
        assert_eq!(r.read_bit(), Ok(true));
        assert_eq!(r.read_bits(3), Ok(0b011));
        assert_eq!(r.read_bits(16), Ok(0xABCD));
        assert_eq!(r.bit_position(), 20);
        assert_eq!(r.read_bits(4), Ok(0));
        assert_eq!(r.read_bit(), Err(EndOfStream));
    }

    #[test]
    fn full_width_reads_at_every_alignment() {
        for shift in 0..=16u32 {
            let mut w = BitWriter::new();
            w.write_bits(0, shift);
            w.write_bits(u64::MAX - 1, 64);
            w.write_bits(0x0123_4567_89AB_CDEF, 64);
            let mut r = BitReader::new(w.bytes());
            assert_eq!(r.read_bits(shift), Ok(0));
            assert_eq!(r.read_bits(64), Ok(u64::MAX - 1));
            assert_eq!(r.read_bits(64), Ok(0x0123_4567_89AB_CDEF));
        }
    }

    #[test]
    fn truncated_wide_read_errors() {
        let mut r = BitReader::new(&[0xff; 7]);
        assert_eq!(r.read_bits(64), Err(EndOfStream));
        let mut r = BitReader::new(&[0xff; 9]);
        assert_eq!(r.read_bits(3), Ok(7));
        assert_eq!(r.read_bits(64), Ok(u64::MAX));
        assert_eq!(r.read_bits(6), Err(EndOfStream));
    }

    #[test]
    fn writer_resumes_mid_byte() {
        let mut w = BitWriter::new();
        w.write_bits(0b1011, 4);
        let mut buf = w.into_vec();
        buf[0] |= 0b0000_0111; // garbage in the padding must be cleared
        buf.push(0xee); // and bytes past the bits dropped
        let mut w = BitWriter::from_vec(buf, 4).expect("enough bits");
        w.write_bits(0b0110, 4);
        assert_eq!(w.bytes(), &[0b1011_0110]);
        assert!(BitWriter::from_vec(vec![0], 9).is_none());
    }

    #[test]
    fn peek_and_consume() {
        let mut r = BitReader::new(&[0b1011_0000, 0xff]);
        let (acc, avail) = r.peek(4);
        assert_eq!((acc >> 60, avail), (0b1011, 16));
        r.consume(4);
        assert_eq!(r.read_bits(4), Ok(0));
        let (acc, avail) = r.peek(24);
        assert_eq!((acc >> 56, avail), (0xff, 8));
        r.consume(8);
        assert_eq!(r.peek(1).1, 0);
        assert_eq!(r.read_bit(), Err(EndOfStream));
    }

    proptest! {
        #[test]
        fn round_trip(ops in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::new();
            for &(v, n) in &ops {
                if n == 1 { w.write_bit(v & 1 == 1) } else { w.write_bits(v, n) }
            }
            let total: u32 = ops.iter().map(|&(_, n)| n).sum();
            prop_assert_eq!(w.bit_len(), total as usize);
            let mut r = BitReader::new(w.bytes());
            for &(v, n) in &ops {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                if n == 1 {
                    prop_assert_eq!(r.read_bit(), Ok(v & 1 == 1));
                } else {
                    prop_assert_eq!(r.read_bits(n), Ok(v & mask));
                }
            }
            prop_assert_eq!(r.bit_position(), total as usize);
            prop_assert!(r.bits_left() < 8);
        }
    }
}
