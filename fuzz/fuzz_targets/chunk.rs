//! Chunk decode (`tsdb::chunk`): the checksummed frame, the Gorilla XOR
//! payload through both decoders (`XorChunk::from_bytes`, `iter_bytes`),
//! and a round trip: samples that decode must encode and decode again to
//! the same timestamps and value bits.
//!
//! The first byte picks the mode: even, the rest is a payload; odd, the
//! rest is frames laid end to end whose CRCs the target repairs first.
//! (promraft has no block format beyond the store's block of frames,
//! which the checkpoint target covers.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use promraft::tsdb::chunk::{iter_bytes, split_frame, XorChunk};

fn payload(bytes: &[u8]) {
    let streamed: Vec<Result<(i64, u64), String>> = iter_bytes(bytes)
        .map(|r| r.map(|(t, v)| (t, v.to_bits())).map_err(|e| e.to_string()))
        .collect();
    let Ok(chunk) = XorChunk::from_bytes(bytes.to_vec()) else {
        return;
    };
    let samples: Vec<(i64, u64)> = chunk
        .iter()
        .map(|r| r.map(|(t, v)| (t, v.to_bits())))
        .collect::<Result<_, _>>()
        .expect("a chunk that from_bytes accepted decodes");
    assert_eq!(samples.len(), chunk.num_samples());
    let streamed: Vec<(i64, u64)> = streamed
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("iter_bytes agrees with from_bytes");
    assert_eq!(streamed, samples, "iter_bytes and from_bytes disagree");
    let mut again = XorChunk::new();
    for &(t, v) in &samples {
        again.append(t, f64::from_bits(v));
    }
    let back: Vec<(i64, u64)> = again
        .iter()
        .map(|r| r.map(|(t, v)| (t, v.to_bits())))
        .collect::<Result<_, _>>()
        .expect("a chunk we encoded decodes");
    assert_eq!(back, samples, "re-encoding changed the samples");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        payload(rest);
        return;
    }
    let mut buf = rest.to_vec();
    promraft_fuzz::repair_frames(&mut buf, 0);
    let mut b = buf.as_slice();
    while let Ok((p, after)) = split_frame(b) {
        payload(p);
        b = after;
    }
});
