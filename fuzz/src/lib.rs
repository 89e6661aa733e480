//! Helpers shared by promraft's fuzz targets: the repair of checksums in
//! fuzzer-made inputs, and the small fixed data set the PromQL target
//! queries.
//!
//! The formats promraft reads from disk carry CRC32 or xxh3 checksums, and
//! a fuzzer that mutates bytes almost never keeps one valid, so it would
//! only ever exercise the checksum test. The `repair_*` functions recompute
//! every checksum of an input after the fuzzer has mutated it, so the
//! decoders behind the checksums see the mutations. They only move bytes;
//! what is decoded, and every verdict on it, is promraft's.

use std::sync::OnceLock;

use promraft::promql::MemStorage;
use promraft::tsdb::Labels;

/// Reads a big-endian u32 at `at`, if the input is long enough.
fn be_u32(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// Repairs a checkpoint export stream (`[u8 tag][u32 BE len][bytes]`
/// records, tag 0 ends it; see docs/format/checkpoint.md): the trailing
/// CRC32 of every chunk index (`x` keys) and open-state shard (`H` keys) of
/// the main tree, and the CRC32 of every chunk frame of a block value
/// (frames laid end to end after the 4-byte block magic). Stops repairing
/// at the first record that runs past the end.
pub fn repair_export(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let mut pos = 0usize;
    let mut key: Vec<u8> = Vec::new();
    while pos < out.len() {
        let tag = out[pos];
        if tag == 0 {
            break;
        }
        let Some(len) = be_u32(&out, pos + 1) else { break };
        let start = pos + 5;
        let Some(end) = start.checked_add(len).filter(|&e| e <= out.len()) else {
            break;
        };
        match tag {
            2 => key = out[start..end].to_vec(),
            3 => {
                let v = &mut out[start..end];
                match key.first() {
                    Some(b'x' | b'H') if v.len() >= 4 => {
                        let n = v.len() - 4;
                        let crc = crc32fast::hash(&v[..n]);
                        v[n..].copy_from_slice(&crc.to_be_bytes());
                    }
                    Some(b'b') => repair_frames(v, 4),
                    _ => {}
                }
            }
            _ => {}
        }
        pos = end;
    }
    out
}

/// Recomputes the CRC32 of chunk frames (`[u8 enc][u32 BE len][payload]
/// [u32 BE crc]`) laid end to end in `buf` from `at`.
pub fn repair_frames(buf: &mut [u8], mut at: usize) {
    while let Some(len) = be_u32(buf, at + 1) {
        let Some(body_end) = (at + 5).checked_add(len) else {
            return;
        };
        if body_end + 4 > buf.len() {
            return;
        }
        let crc = crc32fast::hash(&buf[at..body_end]);
        buf[body_end..body_end + 4].copy_from_slice(&crc.to_be_bytes());
        at = body_end + 4;
    }
}

/// Rebuilds a backup file (docs/format/backup.md) from a fuzzer-mutated
/// one with every checksum right: the header CRC32, each frame's CRC32, the
/// end frame's trailer (frame count, content length and xxh3, recomputed
/// from the data frames that decompress) and the whole-file xxh3. Bytes
/// after the end frame are kept after the file checksum (the reader must
/// refuse them).
pub fn repair_backup(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let Some(header_len) = be_u32(input, 12) else {
        return input.to_vec();
    };
    let Some(header_end) = 16usize.checked_add(header_len).filter(|&e| e <= input.len()) else {
        return input.to_vec();
    };
    out.extend_from_slice(&input[..header_end]);
    out.extend_from_slice(&crc32fast::hash(&input[..header_end]).to_be_bytes());
    let mut pos = (header_end + 4).min(input.len());
    let (mut frames, mut content_bytes) = (0u64, 0u64);
    let mut content = xxhash_rust::xxh3::Xxh3::new();
    while pos + 5 <= input.len() {
        let kind = input[pos];
        let Some(len) = be_u32(input, pos + 1) else { break };
        let Some(end) = (pos + 5).checked_add(len).filter(|&e| e <= input.len()) else {
            break;
        };
        let payload: Vec<u8> = if kind == 2 {
            format!(
                "{{\"data_frames\":{frames},\"content_bytes\":{content_bytes},\"content_xxh3\":\"{:016x}\"}}",
                content.digest()
            )
            .into_bytes()
        } else {
            let p = input[pos + 5..end].to_vec();
            if let Ok(plain) = snap::raw::Decoder::new().decompress_vec(&p) {
                content.update(&plain);
                content_bytes += plain.len() as u64;
            }
            frames += 1;
            p
        };
        let frame_start = out.len();
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        let crc = crc32fast::hash(&out[frame_start..]);
        out.extend_from_slice(&crc.to_be_bytes());
        pos = (end + 4).min(input.len());
        if kind == 2 {
            let file = xxhash_rust::xxh3::xxh3_64(&out);
            out.extend_from_slice(&file.to_be_bytes());
            pos = (pos + 8).min(input.len());
            out.extend_from_slice(&input[pos..]);
            return out;
        }
    }
    out
}

/// Start of the PromQL target's data (ms): a fixed instant, so queries and
/// their results do not depend on the clock.
pub const DATA_START_MS: i64 = 1_700_000_000_000;

/// Interval between the samples of each series (ms), Prometheus' usual
/// scrape interval.
pub const DATA_STEP_MS: i64 = 15_000;

/// Samples per series: 40 at 15 s, ten minutes, enough for rate() windows
/// and subqueries over a few minutes.
pub const DATA_SAMPLES: i64 = 40;

/// The PromQL target's data: a few counters, gauges and one classic
/// histogram, with a reset, a stale marker and a NaN, built once.
pub fn promql_storage() -> &'static MemStorage {
    static S: OnceLock<MemStorage> = OnceLock::new();
    S.get_or_init(|| {
        let s = MemStorage::new();
        let series: [&[(&str, &str)]; 6] = [
            &[("__name__", "up"), ("job", "api"), ("instance", "a:9090")],
            &[("__name__", "up"), ("job", "api"), ("instance", "b:9090")],
            &[("__name__", "http_requests_total"), ("job", "api"), ("code", "200")],
            &[("__name__", "http_requests_total"), ("job", "api"), ("code", "500")],
            &[("__name__", "temperature"), ("room", "x")],
            &[("__name__", "temperature"), ("room", "y")],
        ];
        for (n, pairs) in series.iter().enumerate() {
            let labels = Labels::from_pairs(pairs.iter().copied());
            for i in 0..DATA_SAMPLES {
                let t_ms = DATA_START_MS + i * DATA_STEP_MS;
                let v = match n {
                    0 | 1 => (i % 2) as f64,
                    // A counter with a reset in the middle.
                    2 | 3 => ((i % 25) * (n as i64 + 1)) as f64,
                    4 if i == 20 => f64::NAN,
                    4 if i == 30 => promraft::promql::storage::stale_marker(),
                    _ => 20.0 + (i as f64 / 3.0).sin() * n as f64,
                };
                s.add(&labels, t_ms, v);
            }
        }
        for le in ["0.1", "0.5", "1", "+Inf"] {
            let labels = Labels::from_pairs([("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", le)]);
            let weight = match le {
                "0.1" => 1,
                "0.5" => 3,
                "1" => 4,
                _ => 5,
            };
            for i in 0..DATA_SAMPLES {
                s.add(&labels, DATA_START_MS + i * DATA_STEP_MS, (i * weight) as f64);
            }
        }
        s
    })
}
