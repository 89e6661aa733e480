//! Progress of backup, verify and restore: an `indicatif` bar (bytes,
//! series, rate, time left) when stderr is a terminal, plain log lines every
//! few seconds when it is not (CI logs, pipes, systemd).
//!
//! Also a reader and a writer that count the content passing through and a
//! small incremental parser of the export record stream that counts series
//! as their records go by. Nothing here changes the data.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Interval between plain progress lines when stderr is not a terminal.
pub const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(2);

/// A progress display.
pub struct Progress {
    what: String,
    bar: Option<ProgressBar>,
    total_bytes: u64,
    total_series: u64,
    bytes: u64,
    series: u64,
    started: Instant,
    last_line: Instant,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl Progress {
    /// Starts showing progress of `what` towards `total_bytes` of content
    /// and `total_series` series (0 when unknown).
    pub fn new(what: &str, total_bytes: u64, total_series: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total_bytes);
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_prefix(what.to_string());
            b
        });
        let now = Instant::now();
        Progress {
            what: what.to_string(),
            bar,
            total_bytes,
            total_series,
            bytes: 0,
            series: 0,
            started: now,
            last_line: now,
        }
    }

    /// True when a bar is shown (stderr is a terminal).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Records progress: content bytes and series done so far.
    pub fn update(&mut self, bytes: u64, series: u64) {
        self.bytes = bytes;
        self.series = series;
        if let Some(b) = &self.bar {
            b.set_position(bytes.min(self.total_bytes));
            b.set_message(format!("series {series}/{}", self.total_series));
        } else if self.last_line.elapsed() >= PLAIN_LINE_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.bytes as f64 / secs;
        let left = if rate > 0.0 && self.total_bytes > self.bytes {
            format!(", about {:.0} s left", (self.total_bytes - self.bytes) as f64 / rate)
        } else {
            String::new()
        };
        let pct = if self.total_bytes > 0 {
            100.0 * self.bytes as f64 / self.total_bytes as f64
        } else {
            100.0
        };
        format!(
            "{}: {:.1} MiB of {:.1} MiB ({pct:.0}%), series {}/{}, {:.1} MiB/s{left}",
            self.what,
            mib(self.bytes),
            mib(self.total_bytes),
            self.series,
            self.total_series,
            mib(rate as u64)
        )
    }

    /// Ends the display with a final line.
    pub fn finish(&mut self, done: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("{}: {done} in {:.1} s", self.what, self.started.elapsed().as_secs_f64());
    }

    /// Seconds since the start.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
}

/// Counts series in an export record stream fed to it in pieces (the
/// stream's layout is `tsdb::Store::export`'s: `u8 tag, u32 BE length,
/// bytes`; tag 1 names a tree, 2 is a key, 3 a value, 0 ends). A series is
/// a key starting with `s` in the `tsdb` tree.
#[derive(Default)]
pub struct SeriesCounter {
    /// Series seen.
    pub series: u64,
    state: State,
    in_main_tree: bool,
}

#[derive(Default)]
enum State {
    #[default]
    Tag,
    Len {
        tag: u8,
        got: usize,
        buf: [u8; 4],
    },
    Body {
        tag: u8,
        left: u64,
        first: bool,
        name: Vec<u8>,
    },
    End,
}

impl SeriesCounter {
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            match &mut self.state {
                State::End => return,
                State::Tag => {
                    let tag = b[0];
                    b = &b[1..];
                    self.state = if tag == 0 {
                        State::End
                    } else {
                        State::Len {
                            tag,
                            got: 0,
                            buf: [0; 4],
                        }
                    };
                }
                State::Len { tag, got, buf } => {
                    let n = (4 - *got).min(b.len());
                    buf[*got..*got + n].copy_from_slice(&b[..n]);
                    *got += n;
                    b = &b[n..];
                    if *got == 4 {
                        let left = u64::from(u32::from_be_bytes(*buf));
                        let tag = *tag;
                        self.state = State::Body {
                            tag,
                            left,
                            first: true,
                            name: Vec::new(),
                        };
                        self.body_done_if_empty();
                    }
                }
                State::Body { tag, left, first, name } => {
                    let n = (*left as usize).min(b.len());
                    if *tag == 1 && name.len() < 16 {
                        name.extend_from_slice(&b[..n.min(16)]);
                    }
                    if *tag == 2 && *first && n > 0 && self.in_main_tree && b[0] == b's' {
                        self.series += 1;
                    }
                    *first = false;
                    *left -= n as u64;
                    b = &b[n..];
                    self.body_done_if_empty();
                }
            }
        }
    }

    fn body_done_if_empty(&mut self) {
        if let State::Body { tag, left: 0, name, .. } = &self.state {
            if *tag == 1 {
                self.in_main_tree = name == b"tsdb";
            }
            self.state = State::Tag;
        }
    }
}

/// A reader that reports the content read through it to a [`Progress`].
pub struct CountingReader<'a, R> {
    inner: R,
    progress: &'a mut Progress,
    counter: SeriesCounter,
    bytes: u64,
}

impl<'a, R: Read> CountingReader<'a, R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: &'a mut Progress) -> Self {
        CountingReader {
            inner,
            progress,
            counter: SeriesCounter::default(),
            bytes: 0,
        }
    }

    /// Content bytes and series read so far.
    pub fn done(&self) -> (u64, u64) {
        (self.bytes, self.counter.series)
    }
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.feed(&buf[..n]);
        self.bytes += n as u64;
        self.progress.update(self.bytes, self.counter.series);
        Ok(n)
    }
}

/// A writer that reports the content written through it to a [`Progress`].
pub struct CountingWriter<'a, W> {
    inner: W,
    progress: &'a mut Progress,
    counter: SeriesCounter,
    bytes: u64,
}

impl<'a, W: Write> CountingWriter<'a, W> {
    /// Wraps `inner`.
    pub fn new(inner: W, progress: &'a mut Progress) -> Self {
        CountingWriter {
            inner,
            progress,
            counter: SeriesCounter::default(),
            bytes: 0,
        }
    }

    /// Content bytes and series written so far.
    pub fn done(&self) -> (u64, u64) {
        (self.bytes, self.counter.series)
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counter.feed(&buf[..n]);
        self.bytes += n as u64;
        self.progress.update(self.bytes, self.counter.series);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }

    #[test]
    fn counts_series_keys_of_the_main_tree_fed_byte_by_byte() {
        let mut s = Vec::new();
        rec(&mut s, 1, b"tsdb");
        for k in [&b"m"[..], b"s\0\0\0\x01", b"s\0\0\0\x02", b"x\0"] {
            rec(&mut s, 2, k);
            rec(&mut s, 3, b"value");
        }
        rec(&mut s, 1, b"chunks-0000000000000001");
        rec(&mut s, 2, b"s");
        rec(&mut s, 3, b"");
        s.push(0);
        let mut c = SeriesCounter::default();
        for b in &s {
            c.feed(std::slice::from_ref(b));
        }
        assert_eq!(c.series, 2);
        let mut c = SeriesCounter::default();
        c.feed(&s);
        assert_eq!(c.series, 2);
    }
}
