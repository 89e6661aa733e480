//! A deterministic node_exporter-like workload for the benchmarks.
//!
//! This file owns the series a benchmark writes: their labels, their metric
//! metadata, and the value of every series at every instant, all derived
//! from `(seed, series index, time)` alone, so any process can regenerate
//! exactly what another one wrote and check it. It must not do I/O, keep
//! state between calls, or use a random source other than its own hash.
//!
//! The series mimic hosts running node_exporter (`instance="host-NNN:9100"`,
//! `job="node"`): counters (CPU seconds per cpu and mode, network and disk
//! bytes, ...), gauges (memory, load, filesystem, ...) and two classic
//! histograms per host (`http_request_duration_seconds`, with `_bucket`
//! series up to `le="+Inf"`, `_sum` and `_count`). Hosts are added until the
//! requested series count is reached, so series `i` is the same whatever the
//! count, and any count from a few hundred up holds every kind.

use crate::prompb::{MetricMetadata, MetricType};
use crate::tsdb::labels::Labels;

/// Counters are counted from this instant (2020-09-13, in seconds) plus a
/// per-series uptime, so values have realistic magnitudes for timestamps
/// from 2020 on.
const COUNTER_EPOCH_S: f64 = 1_600_000_000.0;

/// Seconds in a day: the period of the daily load pattern.
const DAY_S: f64 = 86_400.0;

/// Spacing of the value-noise knots for counters. Not a divisor of common
/// scrape intervals, so consecutive increments differ.
const COUNTER_KNOT_S: f64 = 10.0;

/// Upper bounds of the classic histogram buckets (client_golang's defaults);
/// `+Inf` follows.
const HISTOGRAM_BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// CPU modes as node_exporter reports them, with each mode's share of the
/// busy time (idle takes the rest).
const CPU_MODES: [(&str, f64); 8] = [
    ("idle", 0.0),
    ("iowait", 0.05),
    ("irq", 0.01),
    ("nice", 0.01),
    ("softirq", 0.03),
    ("steal", 0.05),
    ("system", 0.25),
    ("user", 0.60),
];

/// The metric families: name, type, help, unit.
const FAMILIES: [(&str, MetricType, &str, &str); 26] = [
    (
        "node_cpu_seconds_total",
        MetricType::Counter,
        "Seconds the CPUs spent in each mode.",
        "seconds",
    ),
    (
        "node_network_receive_bytes_total",
        MetricType::Counter,
        "Network device statistic receive_bytes.",
        "bytes",
    ),
    (
        "node_network_transmit_bytes_total",
        MetricType::Counter,
        "Network device statistic transmit_bytes.",
        "bytes",
    ),
    (
        "node_network_receive_packets_total",
        MetricType::Counter,
        "Network device statistic receive_packets.",
        "",
    ),
    (
        "node_network_transmit_packets_total",
        MetricType::Counter,
        "Network device statistic transmit_packets.",
        "",
    ),
    (
        "node_disk_read_bytes_total",
        MetricType::Counter,
        "The total number of bytes read successfully.",
        "bytes",
    ),
    (
        "node_disk_written_bytes_total",
        MetricType::Counter,
        "The total number of bytes written successfully.",
        "bytes",
    ),
    (
        "node_disk_io_time_seconds_total",
        MetricType::Counter,
        "Total seconds spent doing I/Os.",
        "seconds",
    ),
    (
        "node_disk_reads_completed_total",
        MetricType::Counter,
        "The total number of reads completed successfully.",
        "",
    ),
    (
        "node_context_switches_total",
        MetricType::Counter,
        "Total number of context switches.",
        "",
    ),
    (
        "node_intr_total",
        MetricType::Counter,
        "Total number of interrupts serviced.",
        "",
    ),
    ("node_forks_total", MetricType::Counter, "Total number of forks.", ""),
    (
        "node_memory_MemTotal_bytes",
        MetricType::Gauge,
        "Memory information field MemTotal_bytes.",
        "bytes",
    ),
    (
        "node_memory_MemAvailable_bytes",
        MetricType::Gauge,
        "Memory information field MemAvailable_bytes.",
        "bytes",
    ),
    (
        "node_memory_Cached_bytes",
        MetricType::Gauge,
        "Memory information field Cached_bytes.",
        "bytes",
    ),
    (
        "node_memory_Buffers_bytes",
        MetricType::Gauge,
        "Memory information field Buffers_bytes.",
        "bytes",
    ),
    ("node_load1", MetricType::Gauge, "1m load average.", ""),
    ("node_load5", MetricType::Gauge, "5m load average.", ""),
    ("node_load15", MetricType::Gauge, "15m load average.", ""),
    (
        "node_filesystem_avail_bytes",
        MetricType::Gauge,
        "Filesystem space available to non-root users in bytes.",
        "bytes",
    ),
    (
        "node_filesystem_size_bytes",
        MetricType::Gauge,
        "Filesystem size in bytes.",
        "bytes",
    ),
    (
        "node_filefd_allocated",
        MetricType::Gauge,
        "File descriptor statistics: allocated.",
        "",
    ),
    (
        "node_procs_running",
        MetricType::Gauge,
        "Number of processes in runnable state.",
        "",
    ),
    (
        "node_procs_blocked",
        MetricType::Gauge,
        "Number of processes blocked waiting for I/O to complete.",
        "",
    ),
    (
        "node_boot_time_seconds",
        MetricType::Gauge,
        "Node boot time, in unixtime.",
        "seconds",
    ),
    (
        "http_request_duration_seconds",
        MetricType::Histogram,
        "A histogram of latencies for requests to the exporter.",
        "seconds",
    ),
];

/// Index of a family in [`FAMILIES`] by name; only called with names from
/// that table.
fn family(name: &str) -> u8 {
    FAMILIES.iter().position(|f| f.0 == name).unwrap_or(0) as u8
}

/// A deterministic set of node_exporter-like series.
#[derive(Debug, Clone)]
pub struct Workload {
    seed: u64,
    series: Vec<Series>,
    histograms: Vec<HistogramModel>,
}

#[derive(Debug, Clone)]
struct Series {
    labels: Labels,
    family: u8,
    model: Model,
}

#[derive(Debug, Clone)]
enum Model {
    Counter(Counter),
    Gauge(Gauge),
    /// Cumulative count of buckets `0..=upto` of a histogram.
    Bucket {
        hist: u32,
        upto: u8,
    },
    Sum {
        hist: u32,
    },
    Count {
        hist: u32,
    },
}

/// A monotone counter: a base rate, a slow daily swing and value noise, with
/// slopes bounded so that the sum never decreases.
#[derive(Debug, Clone)]
struct Counter {
    key: u64,
    /// Mean increase per second.
    rate: f64,
    /// Seconds of uptime at [`COUNTER_EPOCH_S`].
    uptime_s: f64,
    /// Phase of the daily swing, radians.
    phase: f64,
    /// Resolution of the value (1 for integer counters).
    quantum: f64,
}

impl Counter {
    fn value(&self, t_ms: i64) -> f64 {
        let rate = self.rate;
        let elapsed = t_ms as f64 / 1000.0 - COUNTER_EPOCH_S + self.uptime_s;
        // Slope of each term: base `rate`, swing at most 0.3 * rate, noise at
        // most 0.5 * rate; so the total slope is at least 0.2 * rate > 0.
        let omega = std::f64::consts::TAU / DAY_S;
        let swing_amp = 0.3 * rate / omega;
        let swing = swing_amp * (1.0 + (omega * elapsed + self.phase).sin());
        let noise = 0.5 * rate * COUNTER_KNOT_S * value_noise(self.key, elapsed / COUNTER_KNOT_S);
        let v = (rate * elapsed + swing + noise).max(0.0);
        (v / self.quantum).floor() * self.quantum
    }
}

/// A gauge wandering around a level: daily swing plus two octaves of value
/// noise, clamped to a range and rounded to a resolution.
#[derive(Debug, Clone)]
struct Gauge {
    key: u64,
    level: f64,
    /// Amplitude of the daily swing.
    swing: f64,
    /// Amplitude of the noise.
    noise: f64,
    /// Spacing of the fine noise knots, seconds (the coarse ones are 8x).
    knot_s: f64,
    phase: f64,
    min: f64,
    max: f64,
    quantum: f64,
}

impl Gauge {
    fn constant(v: f64) -> Self {
        Gauge {
            key: 0,
            level: v,
            swing: 0.0,
            noise: 0.0,
            knot_s: 1.0,
            phase: 0.0,
            min: v,
            max: v,
            quantum: 0.0,
        }
    }

    fn value(&self, t_ms: i64) -> f64 {
        let t = t_ms as f64 / 1000.0;
        let mut v = self.level;
        if self.swing != 0.0 {
            v += self.swing * (std::f64::consts::TAU * t / DAY_S + self.phase).sin();
        }
        if self.noise != 0.0 {
            let fine = value_noise(self.key, t / self.knot_s);
            let coarse = value_noise(self.key ^ 0xc0a5_5e00, t / (8.0 * self.knot_s));
            v += self.noise * (0.35 * (2.0 * fine - 1.0) + 0.65 * (2.0 * coarse - 1.0));
        }
        v = v.clamp(self.min, self.max);
        if self.quantum > 0.0 {
            v = (v / self.quantum).round() * self.quantum;
        }
        v
    }
}

/// A classic histogram as one independent integer counter per bucket
/// (observations falling in that bucket alone), so cumulative buckets are
/// sums of monotone non-negative counters: monotone in time, non-decreasing
/// in `le`, and the `+Inf` bucket equals `_count` exactly.
#[derive(Debug, Clone)]
struct HistogramModel {
    /// One per bound, then the `+Inf` overflow.
    buckets: Vec<Counter>,
    /// A typical observed value for each bucket, for `_sum`.
    typical: Vec<f64>,
}

impl HistogramModel {
    fn cumulative(&self, upto: usize, t_ms: i64) -> f64 {
        self.buckets.iter().take(upto + 1).map(|c| c.value(t_ms)).sum()
    }

    fn sum(&self, t_ms: i64) -> f64 {
        self.buckets
            .iter()
            .zip(&self.typical)
            .map(|(c, v)| c.value(t_ms) * v)
            .sum()
    }
}

impl Workload {
    /// Builds `series` series from `seed`. Series `i` depends only on
    /// `(seed, i)`: a larger count adds series, it does not change earlier ones.
    pub fn new(series: usize, seed: u64) -> Self {
        let mut w = Workload {
            seed,
            series: Vec::with_capacity(series),
            histograms: Vec::new(),
        };
        let mut host = 0u64;
        while w.series.len() < series {
            w.add_host(host, series);
            host += 1;
        }
        w
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The seed the workload was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Labels of series `i`. Panics if `i >= series_count()`.
    pub fn labels(&self, i: usize) -> &Labels {
        &self.series[i].labels
    }

    /// The type of the family series `i` belongs to (`Counter`, `Gauge` or
    /// `Histogram`). Panics if `i >= series_count()`.
    pub fn metric_type(&self, i: usize) -> MetricType {
        FAMILIES[usize::from(self.series[i].family)].1
    }

    /// Value of series `i` at `t_ms` (milliseconds since the Unix epoch):
    /// counters never decrease and grow by varying amounts, gauges wander
    /// within realistic bounds, histogram buckets are cumulative and agree
    /// with `_count`. Deterministic in `(seed, i, t_ms)`. Panics if
    /// `i >= series_count()`.
    pub fn sample(&self, i: usize, t_ms: i64) -> f64 {
        match &self.series[i].model {
            Model::Counter(c) => c.value(t_ms),
            Model::Gauge(g) => g.value(t_ms),
            Model::Bucket { hist, upto } => self.histograms[*hist as usize].cumulative(usize::from(*upto), t_ms),
            Model::Count { hist } => {
                let h = &self.histograms[*hist as usize];
                h.cumulative(h.buckets.len() - 1, t_ms)
            }
            Model::Sum { hist } => self.histograms[*hist as usize].sum(t_ms),
        }
    }

    /// Where in each scrape interval the host of series `i` is scraped, in
    /// `[0, interval_ms)`: Prometheus spreads targets over the interval by a
    /// hash of the target, and all series of one target share a timestamp.
    pub fn scrape_offset_ms(&self, i: usize, interval_ms: i64) -> i64 {
        if interval_ms <= 1 {
            return 0;
        }
        let host = self.series[i].labels.get("instance");
        let h = mix(self.seed ^ xxhash_rust::xxh3::xxh3_64(host.as_bytes()));
        (h % interval_ms as u64) as i64
    }

    /// Metadata of every family present in the workload, as a scraping
    /// Prometheus would send it.
    pub fn metadata(&self) -> Vec<MetricMetadata> {
        let mut present = [false; FAMILIES.len()];
        for s in &self.series {
            present[usize::from(s.family)] = true;
        }
        FAMILIES
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|((name, kind, help, unit), _)| MetricMetadata {
                r#type: *kind as i32,
                metric_family_name: name.to_string(),
                help: help.to_string(),
                unit: unit.to_string(),
            })
            .collect()
    }

    /// Appends the series of one host, stopping at `limit` series in all.
    // One host's series are listed in one place on purpose: the order of the
    // draws from `r` and of `next_k` fixes the workload, and scattering it over
    // helpers would make a changed workload easy to miss.
    #[allow(clippy::too_many_lines)]
    fn add_host(&mut self, host: u64, limit: usize) {
        let hkey = mix(self.seed ^ mix(host.wrapping_add(1)));
        let mut r = Rng(hkey);
        let instance = format!("host-{host:03}:9100");
        let ncpu: u32 = 2 << (r.next() % 3);
        let busy = r.range(0.05, 0.6);
        let push = |w: &mut Workload, name: &str, extra: &[(&str, &str)], model: Model| {
            if w.series.len() >= limit {
                return;
            }
            let mut pairs: Vec<(&str, &str)> = vec![("__name__", name), ("instance", &instance), ("job", "node")];
            pairs.extend_from_slice(extra);
            let fam = name
                .strip_suffix("_bucket")
                .or(name.strip_suffix("_sum"))
                .or(name.strip_suffix("_count"));
            let fam = match fam {
                Some(f) if FAMILIES.iter().any(|x| x.0 == f && x.1 == MetricType::Histogram) => f,
                _ => name,
            };
            w.series.push(Series {
                labels: Labels::from_pairs(pairs),
                family: family(fam),
                model,
            });
        };
        // Each series gets its own key from the host key and its position.
        let key = |k: u64| mix(hkey ^ mix(k.wrapping_mul(0x9e37_79b9)));
        let counter = |k: u64, rate: f64, quantum: f64| {
            let mut cr = Rng(key(k));
            Counter {
                key: key(k),
                rate,
                uptime_s: cr.range(3_600.0, 90.0 * DAY_S),
                phase: cr.range(0.0, std::f64::consts::TAU),
                quantum,
            }
        };
        let mut k = 0u64;
        let mut next_k = || {
            k += 1;
            k
        };

        for cpu in 0..ncpu {
            let cpu = cpu.to_string();
            for (mode, share) in CPU_MODES {
                let rate = if mode == "idle" { 1.0 - busy } else { busy * share };
                let kk = next_k();
                let rate = rate * Rng(key(kk)).range(0.8, 1.2);
                push(
                    self,
                    "node_cpu_seconds_total",
                    &[("cpu", &cpu), ("mode", mode)],
                    Model::Counter(counter(kk, rate, 0.01)),
                );
            }
        }
        for device in ["eth0", "lo"] {
            let scale = if device == "lo" { 0.01 } else { 1.0 };
            let rx = scale * r.log_range(1e4, 1e7);
            let tx = scale * r.log_range(1e4, 1e7);
            let size = r.range(300.0, 1400.0);
            for (name, rate) in [
                ("node_network_receive_bytes_total", rx),
                ("node_network_transmit_bytes_total", tx),
                ("node_network_receive_packets_total", rx / size),
                ("node_network_transmit_packets_total", tx / size),
            ] {
                let kk = next_k();
                push(
                    self,
                    name,
                    &[("device", device)],
                    Model::Counter(counter(kk, rate, 1.0)),
                );
            }
        }
        for device in ["nvme0n1", "sda"] {
            let read = r.log_range(1e3, 1e6);
            let written = r.log_range(1e4, 1e6);
            for (name, rate, quantum) in [
                ("node_disk_read_bytes_total", read, 1.0),
                ("node_disk_written_bytes_total", written, 1.0),
                ("node_disk_io_time_seconds_total", r.range(0.005, 0.3), 0.001),
                ("node_disk_reads_completed_total", read / 4096.0, 1.0),
            ] {
                let kk = next_k();
                push(
                    self,
                    name,
                    &[("device", device)],
                    Model::Counter(counter(kk, rate, quantum)),
                );
            }
        }
        for (name, lo, hi) in [
            ("node_context_switches_total", 1e3, 1e5),
            ("node_intr_total", 1e3, 5e4),
            ("node_forks_total", 0.5, 50.0),
        ] {
            let rate = r.log_range(lo, hi);
            let kk = next_k();
            push(self, name, &[], Model::Counter(counter(kk, rate, 1.0)));
        }

        let mem_total = f64::from(1u32 << (2 + r.next() % 7)) * 1_073_741_824.0;
        let gauge = |k: u64, level: f64, swing: f64, noise: f64, knot_s: f64, min: f64, max: f64, quantum: f64| {
            let mut gr = Rng(key(k));
            Model::Gauge(Gauge {
                key: key(k),
                level,
                swing,
                noise,
                knot_s,
                phase: gr.range(0.0, std::f64::consts::TAU),
                min,
                max,
                quantum,
            })
        };
        let avail = r.range(0.3, 0.8);
        let page = 4096.0;
        let mem = [
            ("node_memory_MemTotal_bytes", Model::Gauge(Gauge::constant(mem_total))),
            (
                "node_memory_MemAvailable_bytes",
                gauge(
                    next_k(),
                    avail * mem_total,
                    0.05 * mem_total,
                    0.08 * mem_total,
                    30.0,
                    0.02 * mem_total,
                    mem_total,
                    page,
                ),
            ),
            (
                "node_memory_Cached_bytes",
                gauge(
                    next_k(),
                    0.3 * mem_total,
                    0.02 * mem_total,
                    0.03 * mem_total,
                    120.0,
                    0.0,
                    mem_total,
                    page,
                ),
            ),
            (
                "node_memory_Buffers_bytes",
                gauge(
                    next_k(),
                    0.02 * mem_total,
                    0.0,
                    0.005 * mem_total,
                    120.0,
                    0.0,
                    mem_total,
                    page,
                ),
            ),
        ];
        for (name, model) in mem {
            push(self, name, &[], model);
        }
        let load = busy * f64::from(ncpu);
        for (name, knot) in [("node_load1", 20.0), ("node_load5", 100.0), ("node_load15", 300.0)] {
            let kk = next_k();
            let model = gauge(kk, load, 0.4 * load, 0.5 * load, knot, 0.0, 4.0 * f64::from(ncpu), 0.01);
            push(self, name, &[], model);
        }
        for (device, fstype, mountpoint) in [("/dev/nvme0n1p1", "ext4", "/"), ("/dev/sda1", "xfs", "/data")] {
            let size = (r.log_range(2e10, 2e12) / page).round() * page;
            let free = r.range(0.1, 0.9);
            let labels = [("device", device), ("fstype", fstype), ("mountpoint", mountpoint)];
            let kk = next_k();
            let model = gauge(kk, free * size, 0.0, 0.02 * size, 600.0, 0.0, size, page);
            push(self, "node_filesystem_avail_bytes", &labels, model);
            push(
                self,
                "node_filesystem_size_bytes",
                &labels,
                Model::Gauge(Gauge::constant(size)),
            );
        }
        let fds = r.range(500.0, 20_000.0);
        let kk = next_k();
        push(
            self,
            "node_filefd_allocated",
            &[],
            gauge(kk, fds, 0.1 * fds, 0.05 * fds, 60.0, 0.0, 1e6, 1.0),
        );
        let cpus = f64::from(ncpu);
        let kk = next_k();
        push(
            self,
            "node_procs_running",
            &[],
            gauge(kk, 1.0 + load, 0.0, cpus, 15.0, 1.0, 4.0 * cpus, 1.0),
        );
        let kk = next_k();
        push(
            self,
            "node_procs_blocked",
            &[],
            gauge(kk, 0.0, 0.0, 2.0, 15.0, 0.0, cpus, 1.0),
        );
        let boot = (COUNTER_EPOCH_S - r.range(3_600.0, 90.0 * DAY_S)).floor();
        push(self, "node_boot_time_seconds", &[], Model::Gauge(Gauge::constant(boot)));

        for handler in ["/metrics", "/probe"] {
            let rate = r.log_range(0.05, 50.0);
            let median = r.log_range(0.003, 0.3);
            let hist = self.histograms.len() as u32;
            let mut buckets = Vec::with_capacity(HISTOGRAM_BOUNDS.len() + 1);
            let mut typical = Vec::with_capacity(HISTOGRAM_BOUNDS.len() + 1);
            let mut below = 0.0;
            let mut lower = 0.0;
            for upper in HISTOGRAM_BOUNDS.iter().copied().chain([f64::INFINITY]) {
                let cdf = if upper.is_finite() {
                    log_logistic_cdf(upper, median)
                } else {
                    1.0
                };
                let kk = next_k();
                buckets.push(counter(kk, rate * (cdf - below), 1.0));
                typical.push(if upper.is_finite() {
                    (lower + upper) / 2.0
                } else {
                    2.0 * lower
                });
                below = cdf;
                lower = upper;
            }
            self.histograms.push(HistogramModel { buckets, typical });
            for (b, upper) in HISTOGRAM_BOUNDS
                .iter()
                .map(|u| u.to_string())
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                let model = Model::Bucket { hist, upto: b as u8 };
                push(
                    self,
                    "http_request_duration_seconds_bucket",
                    &[("handler", handler), ("le", &upper)],
                    model,
                );
            }
            push(
                self,
                "http_request_duration_seconds_sum",
                &[("handler", handler)],
                Model::Sum { hist },
            );
            push(
                self,
                "http_request_duration_seconds_count",
                &[("handler", handler)],
                Model::Count { hist },
            );
        }
    }
}

/// Latencies follow a log-logistic distribution (shape 2) around `median`.
fn log_logistic_cdf(x: f64, median: f64) -> f64 {
    1.0 / (1.0 + (x / median).powi(-2))
}

/// splitmix64's finalizer: a good 64-bit mix of its input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth noise in `[0, 1]`: random values at integer `x`, linearly
/// interpolated between them, so its slope is at most 1 per unit of `x`.
fn value_noise(key: u64, x: f64) -> f64 {
    let k = x.floor();
    let frac = x - k;
    let k = k as i64 as u64;
    let a = unit(mix(key ^ mix(k)));
    let b = unit(mix(key ^ mix(k.wrapping_add(1))));
    a + (b - a) * frac
}

/// splitmix64 as a sequence generator, for per-host parameters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * unit(self.next())
    }

    /// Log-uniform in `[lo, hi)`: rates spread over orders of magnitude.
    fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * unit(self.next())).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    const T0: i64 = 1_750_000_000_000;
    const STEP: i64 = 15_000;

    #[test]
    fn deterministic_and_prefix_stable() {
        let a = Workload::new(700, 7);
        let b = Workload::new(700, 7);
        let c = Workload::new(300, 7);
        let d = Workload::new(700, 8);
        assert_eq!(a.series_count(), 700);
        assert_eq!(c.series_count(), 300);
        for i in 0..300 {
            assert_eq!(a.labels(i), b.labels(i));
            assert_eq!(a.labels(i), c.labels(i));
            for t in [T0, T0 + 12_345, T0 + 86_400_000] {
                assert_eq!(a.sample(i, t).to_bits(), b.sample(i, t).to_bits());
                assert_eq!(a.sample(i, t).to_bits(), c.sample(i, t).to_bits());
            }
        }
        let differs = (0..300).filter(|&i| a.sample(i, T0) != d.sample(i, T0)).count();
        assert!(
            differs > 200,
            "another seed gives other values ({differs} of 300 differ)"
        );
    }

    #[test]
    fn labels_are_unique_valid_and_realistic() {
        let w = Workload::new(2000, 1);
        let mut seen = HashSet::new();
        for i in 0..w.series_count() {
            let l = w.labels(i);
            let pairs: Vec<(&str, &str)> = l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
            Labels::validate_wire(&pairs).expect("valid labels");
            assert_eq!(l.get("job"), "node");
            assert!(l.get("instance").starts_with("host-") && l.get("instance").ends_with(":9100"));
            assert!(seen.insert(l.clone()), "duplicate series {l}");
        }
        assert_eq!(
            w.labels(0).to_string(),
            "node_cpu_seconds_total{cpu=\"0\", instance=\"host-000:9100\", job=\"node\", mode=\"idle\"}"
        );
        let kinds: HashSet<_> = (0..w.series_count()).map(|i| w.metric_type(i)).collect();
        assert_eq!(kinds.len(), 3, "counters, gauges and histograms: {kinds:?}");
        let names: HashSet<_> = w.metadata().into_iter().map(|m| m.metric_family_name).collect();
        assert_eq!(names.len(), FAMILIES.len());
        for i in 0..w.series_count() {
            let n = w.labels(i).metric_name();
            assert!(
                names.contains(n) || names.iter().any(|f| n.starts_with(f.as_str())),
                "{n} has metadata"
            );
        }
    }

    #[test]
    fn counters_are_monotone_with_varied_increments() {
        let w = Workload::new(600, 3);
        let mut checked = 0;
        for i in 0..w.series_count() {
            if w.metric_type(i) != MetricType::Counter {
                continue;
            }
            checked += 1;
            let first = w.sample(i, T0);
            let mut prev = first;
            let mut increments = HashSet::new();
            for k in 1..1000 {
                let v = w.sample(i, T0 + k * STEP);
                assert!(v >= prev, "{} decreased at step {k}: {prev} -> {v}", w.labels(i));
                increments.insert((v - prev).to_bits());
                prev = v;
            }
            assert!(prev > 0.0);
            // Counters that grow by a few units per step (irq seconds, idle links)
            // mostly repeat the same few increments, as real ones do.
            let mean_increment = (prev - first) / 999.0;
            assert!(
                increments.len() > 5 || mean_increment < 10.0,
                "{} grows too regularly",
                w.labels(i)
            );
        }
        assert!(checked > 100);
    }

    #[test]
    fn gauges_wander_within_bounds() {
        let w = Workload::new(600, 4);
        let mut moving = 0;
        for i in 0..w.series_count() {
            if w.metric_type(i) != MetricType::Gauge {
                continue;
            }
            let vals: Vec<f64> = (0..500).map(|k| w.sample(i, T0 + k * STEP)).collect();
            assert!(vals.iter().all(|v| v.is_finite() && *v >= 0.0), "{}", w.labels(i));
            if vals.iter().any(|v| *v != vals[0]) {
                moving += 1;
            }
            if w.labels(i).metric_name() == "node_memory_MemAvailable_bytes" {
                assert!(vals.iter().all(|v| v % 4096.0 == 0.0));
            }
        }
        assert!(moving > 20);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_match_count() {
        let w = Workload::new(1000, 5);
        // (instance, handler) -> (le -> series, count series, sum series)
        // (buckets by le, _count series, _sum series)
        type Parts = (Vec<(f64, usize)>, Option<usize>, Option<usize>);
        let mut hists: BTreeMap<(String, String), Parts> = BTreeMap::new();
        for i in 0..w.series_count() {
            let l = w.labels(i);
            let key = (l.get("instance").to_string(), l.get("handler").to_string());
            match l.metric_name() {
                "http_request_duration_seconds_bucket" => {
                    let le = if l.get("le") == "+Inf" {
                        f64::INFINITY
                    } else {
                        l.get("le").parse().expect("le")
                    };
                    hists.entry(key).or_default().0.push((le, i));
                }
                "http_request_duration_seconds_count" => hists.entry(key).or_default().1 = Some(i),
                "http_request_duration_seconds_sum" => hists.entry(key).or_default().2 = Some(i),
                _ => {}
            }
        }
        let complete: Vec<_> = hists
            .values()
            .filter(|h| h.0.len() == 12 && h.1.is_some() && h.2.is_some())
            .collect();
        assert!(complete.len() >= 10);
        for (buckets, count, sum) in complete {
            let mut buckets = buckets.clone();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.last().is_some_and(|b| b.0.is_infinite()), "has +Inf");
            let (count, sum) = (count.expect("count"), sum.expect("sum"));
            let mut prev_row: Option<Vec<f64>> = None;
            let mut prev_sum = 0.0;
            for k in 0..300 {
                let t = T0 + k * STEP;
                let row: Vec<f64> = buckets.iter().map(|&(_, i)| w.sample(i, t)).collect();
                assert!(row.windows(2).all(|p| p[0] <= p[1]), "cumulative in le: {row:?}");
                assert_eq!(row.last().copied(), Some(w.sample(count, t)), "+Inf equals _count");
                assert!(row.iter().all(|v| v.fract() == 0.0), "integer counts");
                if let Some(prev) = &prev_row {
                    assert!(prev.iter().zip(&row).all(|(a, b)| a <= b), "monotone in time");
                }
                let s = w.sample(sum, t);
                assert!(s >= prev_sum);
                prev_sum = s;
                prev_row = Some(row);
            }
        }
    }

    #[test]
    fn scrape_offsets_are_per_host_and_within_the_interval() {
        let w = Workload::new(500, 9);
        for i in 0..w.series_count() {
            let o = w.scrape_offset_ms(i, STEP);
            assert!((0..STEP).contains(&o));
            if i > 0 && w.labels(i).get("instance") == w.labels(i - 1).get("instance") {
                assert_eq!(o, w.scrape_offset_ms(i - 1, STEP));
            }
        }
        assert_eq!(w.scrape_offset_ms(0, 1), 0);
    }
}
