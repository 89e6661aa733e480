//! Remote write decode: a `POST /api/v1/write` body through snappy, the
//! protobuf pre-scan, prost and per-series validation
//! (`api::remote_write`). The first byte picks the mode: even, the rest is
//! the body as sent; odd, the rest is protobuf that the target compresses
//! first, so mutations reach the protobuf decoder and validation instead
//! of stopping at snappy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promraft::api::remote_write::{decode, validate};

/// The body limit the target decodes with (the default of
/// `write.body_bytes_max` is larger; fuzz inputs are far below either).
const BODY_BYTES_MAX: usize = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    if let Ok(req) = decode(&body, BODY_BYTES_MAX) {
        let _ = validate(req);
    }
});
