//! The time-series database of one replica.
//!
//! Owns labels and matchers, the Gorilla XOR chunk codec, the head (series,
//! open chunks, postings), persistence of completed chunks and checkpoints in
//! sled, the querier, retention and the content digest. It knows nothing of
//! Raft, HTTP or PromQL: the state machine calls [`Db::apply`] with batches
//! in log order and [`Db::checkpoint`] when openraft asks for a snapshot.
//!
//! # Units
//!
//! Every integer that holds a time is in milliseconds and its name ends in
//! `_ms`. The rest of the name says whether it is an instant (milliseconds
//! since the Unix epoch: `t_ms`, `mint_ms`/`maxt_ms` for the ends of a
//! closed range, `first_t_ms`, `max_t_ms`, `min_valid_t_ms`, `cutoff_ms`) or
//! a span (`ooo_window_ms`, `t_delta_ms`, `delta_ms`). Sample tuples are
//! `(t_ms, value)`. The chunk codec's bit-level helpers keep short names
//! (`dod`, the delta of deltas) where their function's comment gives the
//! unit. Units never appear in serialized names: those stay as they are.

pub mod bstream;
pub mod chunk;
mod db;
pub mod head;
pub mod labels;
pub mod matcher;
pub mod postings;
mod store;
pub mod symbols;

pub use db::{AppendResult, Db, DbStatus, DeleteResult, Digest, SeriesData, Writer};
pub use head::{HeadOptions, Reject};
pub use labels::{Label, Labels};
pub use matcher::{MatchOp, Matcher};
pub use store::ExportSummary;

use serde::{Deserialize, Serialize};

/// Errors of the TSDB.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes read back from disk are not what was written.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A query would load more samples than allowed.
    #[error("query would load more than {limit} samples; narrow the selector or time range")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// A file could not be read or written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Metric metadata as remote write carries it and `/api/v1/metadata` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Metric family name.
    pub metric_family_name: String,
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`, `stateset` or `unknown`.
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit.
    pub unit: String,
}

/// One series' samples in an append request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSamples {
    /// Validated labels.
    pub labels: Labels,
    /// Samples `(t_ms, value)` in the order the sender gave them.
    pub samples: Vec<(i64, f64)>,
}

/// What one client request asks to append.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// Series with samples.
    pub series: Vec<SeriesSamples>,
    /// Metadata to record.
    pub metadata: Vec<Metadata>,
}

impl AppendRequest {
    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}
