//! HTTP query parameters (`api::params`): the query string and form body
//! as the read endpoints parse them, then every typed parameter: `time`,
//! `start`/`end`/`step` of a range query, the `timeout` and
//! `lookback_delta` durations, `limit`, and `match[]` selectors.
//!
//! The first byte says whether the body is a form; the rest is the query
//! string, then a NUL byte, then the body.
#![no_main]

use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use promraft::api::params::Params;

/// The range limit the API uses (`api::query::RANGE_POINTS_MAX`).
const POINTS_MAX: i64 = promraft::api::query::RANGE_POINTS_MAX;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(query) = std::str::from_utf8(query) else { return };
    let mut headers = HeaderMap::new();
    if mode & 1 == 1 {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let Ok(p) = Params::parse(Some(query), &headers, &Bytes::copy_from_slice(body)) else {
        return;
    };
    let _ = p.time("time", 0);
    let _ = p.range(POINTS_MAX);
    let _ = p.duration_ms("timeout");
    let _ = p.duration_ms("lookback_delta");
    let _ = p.limit();
    let _ = p.matchers();
    let _ = p.first_values();
});
