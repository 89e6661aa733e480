//! The chunk codec micro-benchmark behind `promraft bench chunk`.
//!
//! This file owns generating node_exporter-like samples, timing how fast
//! `chunk.rs` encodes and decodes them, and measuring how small they get. It
//! must not be used by the storage path, and it needs no `rand` dependency:
//! the data comes from a fixed-seed PRNG so every run measures the same bytes.

use std::fmt;
use std::hint::black_box;
use std::time::Instant;

use crate::tsdb::chunk::{XorChunk, CHUNK_SAMPLES_TARGET};

/// Scrape interval of the generated series, in milliseconds.
const SCRAPE_INTERVAL_MS: i64 = 15_000;

/// Timed rounds of encoding and of decoding; the fastest is reported, since
/// on a shared machine the slower rounds measure the neighbours.
const ROUNDS: usize = 3;

/// What [`bench_chunk`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkBenchReport {
    /// Samples encoded and decoded per round.
    pub samples: usize,
    /// Chunks they were cut into (one series per chunk).
    pub chunks: usize,
    /// Nanoseconds per sample to append into fresh chunks (buffer growth included).
    pub encode_ns_per_sample: f64,
    /// Nanoseconds per sample to iterate the chunks.
    pub decode_ns_per_sample: f64,
    /// Encoded chunk bytes (headers included, frames excluded) per sample.
    pub bytes_per_sample: f64,
    /// Whether decoding gave back every generated sample bit-exact.
    pub verified: bool,
}

impl fmt::Display for ChunkBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk codec: {} samples in {} chunks: encode {:.2} ns/sample, decode {:.2} ns/sample, \
             {:.3} bytes/sample{}",
            self.samples,
            self.chunks,
            self.encode_ns_per_sample,
            self.decode_ns_per_sample,
            self.bytes_per_sample,
            if self.verified { "" } else { " (DECODE MISMATCH)" }
        )
    }
}

/// Encodes and decodes `samples` node_exporter-like samples and reports the
/// speed and size per sample.
///
/// The samples form series of [`CHUNK_SAMPLES_TARGET`] samples each (the last
/// one shorter), one chunk per series, as the head would cut them.
pub fn bench_chunk(samples: usize) -> ChunkBenchReport {
    let data = generate(samples, 0x5eed_c0de_f00d_cafe);

    let mut chunks: Vec<XorChunk> = Vec::new();
    let mut encode_ns = u128::MAX;
    for _ in 0..ROUNDS {
        chunks = Vec::with_capacity(data.len());
        let start = Instant::now();
        for series in &data {
            let mut c = XorChunk::new();
            for &(t, v) in series {
                c.append(t, v);
            }
            chunks.push(c);
        }
        encode_ns = encode_ns.min(start.elapsed().as_nanos());
        black_box(&chunks);
    }

    let mut decode_ns = u128::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut acc = 0u64;
        for c in &chunks {
            for s in c.iter() {
                match s {
                    Ok((t, v)) => acc = acc.wrapping_add(t as u64 ^ v.to_bits()),
                    Err(_) => acc = acc.wrapping_add(1),
                }
            }
        }
        decode_ns = decode_ns.min(start.elapsed().as_nanos());
        black_box(acc);
    }

    let verified = chunks.iter().zip(&data).all(|(c, series)| {
        c.iter()
            .map(|s| s.map(|(t, v)| (t, v.to_bits())))
            .eq(series.iter().map(|&(t, v)| Ok((t, v.to_bits()))))
    });
    let bytes: usize = chunks.iter().map(|c| c.bytes().len()).sum();
    let per = |x: f64| if samples == 0 { 0.0 } else { x / samples as f64 };
    ChunkBenchReport {
        samples,
        chunks: chunks.len(),
        encode_ns_per_sample: per(encode_ns as f64),
        decode_ns_per_sample: per(decode_ns as f64),
        bytes_per_sample: per(bytes as f64),
        verified,
    }
}

/// splitmix64: tiny, fast and good enough for synthetic data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shapes of node_exporter series the generator mixes.
#[derive(Clone, Copy)]
enum Kind {
    /// Byte/packet counters: integer increments around a per-series rate.
    IntCounter { rate: f64 },
    /// Error/drop counters: almost always unchanged, occasionally +1.
    RareCounter,
    /// CPU-seconds counters: increments with two decimals, like
    /// `node_cpu_seconds_total`.
    SecondsCounter { busy: f64 },
    /// Memory/filesystem gauges: page-sized random walk in bytes.
    BytesGauge,
    /// Load averages and temperatures: two-decimal random walk.
    FractionGauge,
    /// Durations such as `node_scrape_collector_duration_seconds`: a fresh
    /// full-precision float every scrape, the worst case for XOR.
    DurationGauge,
    /// `*_info` series, sizes, limits: never change.
    Constant,
}

/// `samples` samples split into series of [`CHUNK_SAMPLES_TARGET`].
fn generate(samples: usize, seed: u64) -> Vec<Vec<(i64, f64)>> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(samples.div_ceil(CHUNK_SAMPLES_TARGET));
    let mut left = samples;
    while left > 0 {
        let n = left.min(CHUNK_SAMPLES_TARGET);
        left -= n;
        // Roughly the mix of one node_exporter target: most series are
        // info metrics, limits and error counters that hardly move.
        let kind = match rng.below(100) {
            0..=14 => Kind::IntCounter {
                rate: 10f64.powf(rng.unit() * 7.0),
            },
            15..=34 => Kind::RareCounter,
            35..=41 => Kind::SecondsCounter { busy: rng.unit() },
            42..=51 => Kind::BytesGauge,
            52..=56 => Kind::FractionGauge,
            57..=59 => Kind::DurationGauge,
            _ => Kind::Constant,
        };
        let mut v = match kind {
            Kind::IntCounter { .. } => rng.below(1 << 40) as f64,
            Kind::RareCounter => rng.below(20) as f64,
            Kind::SecondsCounter { .. } => rng.below(10_000_000) as f64 / 100.0,
            Kind::BytesGauge => (rng.below(1 << 22) * 4096) as f64,
            Kind::FractionGauge => rng.below(10_000) as f64 / 100.0,
            Kind::DurationGauge => rng.unit() * 0.1,
            Kind::Constant => [0.0, 1.0, 4096.0, 1.073_741_824e9][rng.below(4) as usize],
        };
        // Scrapes line up on the interval, give or take a few ms (so most
        // delta-of-deltas are small but not zero).
        let base = 1_700_000_000_000 + rng.below(SCRAPE_INTERVAL_MS as u64) as i64;
        let mut series = Vec::with_capacity(n);
        for i in 0..n as i64 {
            let t = base + i * SCRAPE_INTERVAL_MS + rng.below(5) as i64;
            series.push((t, v));
            v = match kind {
                Kind::IntCounter { rate } => v + (rate * (0.5 + rng.unit())).round(),
                Kind::RareCounter => v + if rng.below(50) == 0 { 1.0 } else { 0.0 },
                Kind::SecondsCounter { busy } => {
                    let inc = (15.0 * busy * (0.8 + 0.4 * rng.unit()) * 100.0).round() / 100.0;
                    ((v + inc) * 100.0).round() / 100.0
                }
                Kind::BytesGauge => (v + (rng.below(201) as f64 - 100.0) * 4096.0).max(0.0),
                Kind::FractionGauge => ((v + (rng.below(21) as f64 - 10.0) / 100.0).max(0.0) * 100.0).round() / 100.0,
                Kind::DurationGauge => rng.unit() * 0.1,
                Kind::Constant => v,
            };
        }
        out.push(series);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs_and_verifies() {
        let r = bench_chunk(1_000);
        assert_eq!(r.samples, 1_000);
        assert_eq!(r.chunks, 1_000usize.div_ceil(CHUNK_SAMPLES_TARGET));
        assert!(r.verified);
        assert!(r.bytes_per_sample > 0.1 && r.bytes_per_sample < 16.0, "{r}");
        assert_eq!(bench_chunk(0).chunks, 0);
    }
}
