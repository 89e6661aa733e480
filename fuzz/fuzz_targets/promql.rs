//! PromQL parse and evaluation (`promql::Engine`) over a small fixed data
//! set (fuzz/src/lib.rs: 10 series of 40 samples at 15 s).
//!
//! The first byte picks the query: bit 0 instant or range; bits 1-3 the
//! number of range steps (1-8); bits 4-5 the step (1 s, 15 s, 60 s, 5 m).
//! The rest, if UTF-8, is the expression. The cost of a legitimate but
//! heavy query is bounded three ways: the range is at most 8 steps, the
//! engine's samples limit is 50,000, and its timeout is 250 ms (a
//! `QueryError::Timeout`, not a fuzzer timeout; the runs use
//! `-timeout=10`).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use promraft::promql::{Engine, EngineOptions, QueryOpts};
use promraft_fuzz::{promql_storage, DATA_SAMPLES, DATA_START_MS, DATA_STEP_MS};

/// Longest expression evaluated; the API's own limit is larger, but long
/// inputs only slow the fuzzer down.
const QUERY_BYTES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(expr) = std::str::from_utf8(rest) else { return };
    if expr.len() > QUERY_BYTES_MAX {
        return;
    }
    let engine = Engine::new(EngineOptions {
        lookback_delta_ms: 5 * 60_000,
        samples_max: 50_000,
        timeout: Duration::from_millis(250),
    });
    let storage = promql_storage();
    let steps = i64::from((mode >> 1) & 0b111) + 1;
    let step_ms = [1_000, 15_000, 60_000, 300_000][usize::from((mode >> 4) & 0b11)];
    let end_ms = DATA_START_MS + DATA_SAMPLES * DATA_STEP_MS;
    if mode & 1 == 0 {
        let _ = engine.instant_query(storage, expr, end_ms, QueryOpts::default());
    } else {
        let start_ms = end_ms - (steps - 1) * step_ms;
        let _ = engine.range_query(storage, expr, start_ms, end_ms, step_ms, QueryOpts::default());
    }
});
