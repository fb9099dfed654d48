//! Metrics in the Prometheus text exposition format (version 0.0.4).
//!
//! [`Metrics::render`] writes the daemon's state as text: per member I/O
//! (from the heat tracker), errors, health state and capacity; pool
//! counters; repair, scrub and rebalance progress; and per FUSE operation a
//! request counter, an error counter and a latency histogram
//! ([`FuseStats`], fed by the FUSE glue with atomics only). The control
//! socket's `metrics` command returns the text, and `shardfs mount
//! --metrics-listen ADDR` serves it over HTTP at `/metrics` ([`bind_http`],
//! [`spawn_http`]) on a loopback address.
//!
//! Subsystems that want their own families (tiering, when it lands) add a
//! [`Collector`] with [`Metrics::register`] in `daemon.rs`; it is called at
//! the end of every render.

use crate::fs::{Fs, Progress};
use crate::maintenance::Maintenance;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the FUSE latency histogram buckets; a last
/// `+Inf` bucket takes the rest.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// How long the object, stripe and degraded-stripe counts (a scan of the
/// metadata) are reused before they are counted again.
pub const COUNTS_TTL: Duration = Duration::from_secs(60);

macro_rules! fuse_ops {
    ($($v:ident => $n:literal),* $(,)?) => {
        /// A FUSE operation, as counted in [`FuseStats`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op {
            $(
                #[doc = concat!("`", $n, "`")]
                $v,
            )*
        }

        impl Op {
            /// Every operation, in label order.
            pub const ALL: &'static [Op] = &[$(Op::$v),*];

            /// The `op` label value.
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$v => $n,)*
                }
            }
        }
    };
}

fuse_ops! {
    Lookup => "lookup",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Fsyncdir => "fsyncdir",
    Statfs => "statfs",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Access => "access",
    Create => "create",
    Fallocate => "fallocate",
}

/// Counters of one FUSE operation.
#[derive(Debug, Default)]
pub struct OpStats {
    /// Requests answered.
    pub calls: AtomicU64,
    /// Requests answered with an errno.
    pub errors: AtomicU64,
    /// Bytes read or written (read and write only).
    pub bytes: AtomicU64,
    /// Total time, nanoseconds.
    pub sum_ns: AtomicU64,
    /// Requests per latency bucket (not cumulative; the last is `+Inf`).
    pub buckets: [AtomicU64; BUCKETS.len() + 1],
}

impl OpStats {
    /// Record one request that took `ns` nanoseconds.
    pub fn record(&self, ns: u64, failed: bool, bytes: u64) {
        let b = BUCKETS_NS.partition_point(|&ub| ub < ns);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per FUSE operation: requests, errors, bytes and a latency histogram.
/// Lock-free: each request adds to a few atomics.
#[derive(Debug)]
pub struct FuseStats {
    ops: Vec<OpStats>,
}

impl Default for FuseStats {
    fn default() -> Self {
        FuseStats {
            ops: Op::ALL.iter().map(|_| OpStats::default()).collect(),
        }
    }
}

impl FuseStats {
    /// The counters of `op`.
    pub fn op(&self, op: Op) -> &OpStats {
        &self.ops[op as usize]
    }

    /// Start timing a request of `op`; it is recorded when the timer drops.
    pub fn start(&self, op: Op) -> Timer<'_> {
        Timer {
            stats: self.op(op),
            start: Instant::now(),
            failed: false,
            bytes: 0,
        }
    }
}

/// One FUSE request being timed (see [`FuseStats::start`]).
pub struct Timer<'a> {
    stats: &'a OpStats,
    start: Instant,
    failed: bool,
    bytes: u64,
}

impl Timer<'_> {
    /// Pass a result through, noting whether it is an error.
    pub fn check<T, E>(&mut self, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// The request is answered with an errno.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// The request moved `n` bytes.
    pub fn bytes(&mut self, n: u64) {
        self.bytes += n;
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.stats.record(ns, self.failed, self.bytes);
    }
}

/// Metric type, for the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative `_bucket{le=...}`, `_sum` and `_count`.
    Histogram,
}

/// A sample value: integers are written exactly.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    /// an integer
    U(u64),
    /// a float
    F(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::U(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::F(v)
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Num {
        Num::U(v as u64)
    }
}

/// Write a float as the text format wants it.
fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_' || (colon && x == ':'))
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || (colon && x == ':'))
}

/// Text being written in the exposition format: every family's `# HELP`
/// and `# TYPE` lines, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    families: Vec<String>,
}

impl Exposition {
    /// Start family `name`. Each family may be started once, and its
    /// samples must follow before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name, true), "metric name {name:?}");
        debug_assert!(
            !self.families.iter().any(|f| f == name),
            "family {name} twice"
        );
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"));
        self.families.push(name.to_string());
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl Into<Num>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k, false), "label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match v.into() {
            Num::U(u) => {
                let _ = write!(self.out, "{u}");
            }
            Num::F(f) => float(&mut self.out, f),
        }
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, v: impl Into<Num>) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A source of more metric families (e.g. tiering), called at the end of
/// every render. Names should be `shardfs_<subsystem>_*`, each family
/// written once.
pub trait Collector: Send + Sync {
    /// Append families to `out`.
    fn collect(&self, out: &mut Exposition);
}

/// Objects, stripes and degraded stripes ([`Fs::counts`]).
type Counts = (u64, u64, u64);

/// The daemon's metrics: FUSE counters, cached metadata counts, and
/// registered collectors. [`Metrics::render`] reads the rest live.
pub struct Metrics {
    /// Per FUSE operation counters, shared with the FUSE glue.
    pub fuse: Arc<FuseStats>,
    start_time: f64,
    counts: Mutex<Option<(Instant, Counts)>>,
    collectors: Mutex<Vec<Arc<dyn Collector>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            fuse: Arc::default(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            counts: Mutex::new(None),
            collectors: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("fuse", &self.fuse)
            .finish_non_exhaustive()
    }
}

/// Progress fields of one maintenance task, as (family suffix, kind, help,
/// value).
type TaskField = (
    &'static str,
    Kind,
    &'static str,
    fn(&Progress) -> Option<Num>,
);

const TASK_FIELDS: &[TaskField] = &[
    ("running", Kind::Gauge, "1 while a pass runs.", |p| {
        Some(p.running.into())
    }),
    (
        "passes_total",
        Kind::Counter,
        "Passes finished since mount.",
        |p| Some(p.passes.into()),
    ),
    (
        "pass_stripes",
        Kind::Gauge,
        "Stripes in the current (or last) pass.",
        |p| Some(p.stripes_total.into()),
    ),
    (
        "pass_stripes_done",
        Kind::Gauge,
        "Stripes handled so far in the current (or last) pass.",
        |p| Some(p.stripes_done.into()),
    ),
    (
        "pass_bytes",
        Kind::Gauge,
        "Stripe bytes in the current (or last) pass.",
        |p| Some(p.bytes_total.into()),
    ),
    (
        "pass_bytes_done",
        Kind::Gauge,
        "Stripe bytes handled so far in the current (or last) pass.",
        |p| Some(p.bytes_done.into()),
    ),
    (
        "pass_shards",
        Kind::Gauge,
        "Shards rebuilt (repair), found bad (scrub) or moved (rebalance) in the current (or last) pass.",
        |p| Some(p.shards.into()),
    ),
    (
        "pass_repaired_shards",
        Kind::Gauge,
        "Shards repaired after scrub found them bad, in the current (or last) pass.",
        |p| Some(p.repaired.into()),
    ),
    (
        "pass_stripes_failed",
        Kind::Gauge,
        "Stripes that could not be handled or changed meanwhile, in the current (or last) pass.",
        |p| Some(p.stripes_failed.into()),
    ),
    (
        "rate_bytes_per_second",
        Kind::Gauge,
        "Measured rate of the current (or last) pass.",
        |p| Some(p.rate.into()),
    ),
    (
        "rate_limit_bytes_per_second",
        Kind::Gauge,
        "Rate limit (0: none).",
        |p| Some(p.rate_limit.into()),
    ),
    (
        "eta_seconds",
        Kind::Gauge,
        "Estimated seconds left in the running pass.",
        |p| p.eta_secs.map(Num::F),
    ),
    (
        "remaining_stripes",
        Kind::Gauge,
        "Stripes still needing work after the last pass.",
        |p| Some(p.remaining.into()),
    ),
    (
        "last_pass_end_timestamp_seconds",
        Kind::Gauge,
        "Unix time the last full pass ended.",
        |p| p.last_pass_end.map(Num::U),
    ),
];

impl Metrics {
    /// Add a collector, called at the end of every render.
    pub fn register(&self, c: Arc<dyn Collector>) {
        self.collectors.lock().unwrap().push(c);
    }

    /// Objects, stripes and degraded stripes, counted at most every
    /// [`COUNTS_TTL`], with the age of the count.
    fn counts(&self, fs: &Fs) -> Option<(Counts, Duration)> {
        let mut g = self.counts.lock().unwrap();
        if let Some((at, c)) = *g {
            if at.elapsed() < COUNTS_TTL {
                return Some((c, at.elapsed()));
            }
        }
        match fs.counts() {
            Ok(c) => {
                *g = Some((Instant::now(), c));
                Some((c, Duration::ZERO))
            }
            Err(e) => {
                log::warn!("metrics: counting stripes failed: {e}");
                None
            }
        }
    }

    /// The daemon's state in the text format.
    pub fn render(&self, fs: &Fs, maintenance: &Maintenance) -> String {
        let mut x = Exposition::default();
        let pool = &fs.pool;
        pool.refresh_capacity();

        x.family(
            "shardfs_build_info",
            Kind::Gauge,
            "Version of the shardfs daemon (always 1).",
        );
        x.sample(
            "shardfs_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );
        x.single(
            "shardfs_start_time_seconds",
            Kind::Gauge,
            "Unix time the daemon started serving metrics.",
            self.start_time,
        );

        // the pool
        let (k, m) = (pool.sb.k.to_string(), pool.sb.m.to_string());
        x.family(
            "shardfs_pool_info",
            Kind::Gauge,
            "The pool: id, data shards k, parity shards m, shard size, read policy (always 1).",
        );
        x.sample(
            "shardfs_pool_info",
            &[
                ("pool", &pool.sb.pool_id),
                ("k", &k),
                ("m", &m),
                ("shard_size", &pool.sb.shard_size.to_string()),
                ("read_policy", pool.read_policy().name()),
            ],
            1u64,
        );
        let st = &pool.stats;
        for (name, help, v) in [
            (
                "shardfs_pool_bad_shards_total",
                "Shards found missing, unreadable or corrupt on read since mount.",
                &st.bad_shards,
            ),
            (
                "shardfs_pool_reconstructions_total",
                "Stripes decoded with parity because a shard was missing or bad, since mount.",
                &st.reconstructions,
            ),
            (
                "shardfs_pool_parity_reads_by_choice_total",
                "Stripes decoded with parity by choice (busy or slow data shards skipped, none missing), since mount.",
                &st.parity_by_choice,
            ),
            (
                "shardfs_pool_shards_written_total",
                "Shard files written since mount.",
                &st.shards_written,
            ),
            (
                "shardfs_pool_shards_read_total",
                "Shard files read since mount.",
                &st.shards_read,
            ),
            (
                "shardfs_pool_cached_shard_reads_total",
                "Shard reads answered from the page cache on the reader's thread, without a worker hand-off.",
                &st.cached_reads,
            ),
            (
                "shardfs_pool_polled_shard_reads_total",
                "Of the cached shard reads, those whose disk read the reader's probe started and whose bytes it waited for on its own thread.",
                &st.polled_reads,
            ),
            (
                "shardfs_pool_hedged_reads_total",
                "Reads that asked more shards because one was slower than its member's p95.",
                &st.hedges,
            ),
            (
                "shardfs_pool_patches_total",
                "Patches written (small overwrites laid over a stripe instead of rewriting it) since mount.",
                &st.patches,
            ),
            (
                "shardfs_pool_folds_total",
                "Patched stripes rewritten whole (folded) since mount.",
                &st.folds,
            ),
            (
                "shardfs_pool_merged_patches_total",
                "Stripes whose patches were merged into one patch (they carried the most a stripe takes) since mount.",
                &st.merged_patches,
            ),
            (
                "shardfs_pool_full_patch_rewrites_total",
                "Small writes that rewrote their stripe whole because its patches were full and too big to merge, since mount.",
                &st.full_patch_rewrites,
            ),
            (
                "shardfs_fs_budget_flushes_total",
                "Times open files' buffers passed the memory budget and the biggest were written out, since mount.",
                &st.budget_flushes,
            ),
        ] {
            x.single(name, Kind::Counter, help, v.load(Ordering::Relaxed));
        }
        x.single(
            "shardfs_meta_commits_total",
            Kind::Counter,
            "Metadata commits (one log append and fdatasync on each metadata replica), since mount.",
            fs.meta.commits(),
        );
        let (usable, usable_free) = pool.usable_capacity();
        x.single(
            "shardfs_pool_usable_bytes",
            Kind::Gauge,
            "Usable capacity after parity.",
            usable,
        );
        x.single(
            "shardfs_pool_usable_free_bytes",
            Kind::Gauge,
            "Free usable capacity after parity.",
            usable_free,
        );
        x.single(
            "shardfs_fs_buffered_bytes",
            Kind::Gauge,
            "Bytes open files buffer now (stripes, pages, inline contents).",
            fs.buffered_bytes() as u64,
        );
        x.single(
            "shardfs_fs_buffer_budget_bytes",
            Kind::Gauge,
            "Bytes open files may buffer in all (--dirty-budget-mb).",
            fs.dirty_budget() as u64,
        );
        if let Some(((objects, stripes, degraded), age)) = self.counts(fs) {
            x.single(
                "shardfs_pool_objects",
                Kind::Gauge,
                "Objects (inodes), counted at most once a minute.",
                objects,
            );
            x.single(
                "shardfs_pool_stripes",
                Kind::Gauge,
                "Stripes, counted at most once a minute.",
                stripes,
            );
            x.single(
                "shardfs_pool_degraded_stripes",
                Kind::Gauge,
                "Stripes with a shard missing or on a member out of service, counted at most once a minute.",
                degraded,
            );
            x.single(
                "shardfs_pool_counts_age_seconds",
                Kind::Gauge,
                "Age of the object and stripe counts.",
                age.as_secs_f64(),
            );
        }

        // members
        struct Row<'a> {
            index: String,
            m: &'a crate::pool::Member,
            heat: crate::pool::heat::HeatSnapshot,
            health: crate::pool::Health,
            cap: (u64, u64),
            meta: bool,
        }
        let replicas = pool.meta_replicas();
        let rows: Vec<Row> = pool
            .members()
            .iter()
            .map(|m| Row {
                index: m.index.to_string(),
                m,
                heat: m.heat.snapshot(),
                health: m.health(),
                cap: m.capacity(),
                meta: replicas.contains(&m.index),
            })
            .collect();
        x.family(
            "shardfs_member_info",
            Kind::Gauge,
            "A member: path, id and failure domain (always 1).",
        );
        for r in &rows {
            x.sample(
                "shardfs_member_info",
                &[
                    ("member", &r.index),
                    ("path", r.m.path()),
                    ("id", r.m.id()),
                    ("domain", r.m.domain().unwrap_or("")),
                ],
                1u64,
            );
        }
        use crate::pool::Health;
        const STATES: [Health; 6] = [
            Health::Online,
            Health::Suspect,
            Health::Failed,
            Health::Draining,
            Health::Removed,
            Health::Missing,
        ];
        x.family(
            "shardfs_member_state",
            Kind::Gauge,
            "1 for the member's health state (online, suspect, failed, draining, removed, missing), 0 for the others.",
        );
        for r in &rows {
            for s in STATES {
                x.sample(
                    "shardfs_member_state",
                    &[("member", &r.index), ("state", s.name())],
                    r.health == s,
                );
            }
        }
        type Field<'a> = (&'a str, Kind, &'a str, fn(&Row) -> Num);
        let fields: [Field; 12] = [
            (
                "shardfs_member_errors_total",
                Kind::Counter,
                "I/O errors of the member since mount.",
                |r| r.m.errors.load(Ordering::Relaxed).into(),
            ),
            (
                "shardfs_member_ops_total",
                Kind::Counter,
                "Disk operations completed on the member since mount.",
                |r| r.heat.ops_total.into(),
            ),
            (
                "shardfs_member_bytes_total",
                Kind::Counter,
                "Bytes read and written on the member since mount.",
                |r| r.heat.bytes_total.into(),
            ),
            (
                "shardfs_member_inflight",
                Kind::Gauge,
                "Disk operations in flight on the member.",
                |r| r.heat.inflight.into(),
            ),
            (
                "shardfs_member_latency_seconds",
                Kind::Gauge,
                "EWMA of the member's operation latency.",
                |r| (r.heat.latency_ms / 1e3).into(),
            ),
            (
                "shardfs_member_latency_p95_seconds",
                Kind::Gauge,
                "95th percentile of the member's last 256 operation latencies.",
                |r| (r.heat.p95_ms / 1e3).into(),
            ),
            (
                "shardfs_member_queue_depth",
                Kind::Gauge,
                "EWMA of the queue depth seen by operations arriving at the member.",
                |r| r.heat.queue.into(),
            ),
            (
                "shardfs_member_utilisation_ratio",
                Kind::Gauge,
                "Fraction of the last 10 s with an operation in flight on the member.",
                |r| r.heat.util_10s.into(),
            ),
            (
                "shardfs_member_load_seconds",
                Kind::Gauge,
                "Expected wait at the member, which placement and reads steer by.",
                |r| (r.heat.load / 1e3).into(),
            ),
            (
                "shardfs_member_capacity_bytes",
                Kind::Gauge,
                "Size of the member's filesystem.",
                |r| r.cap.0.into(),
            ),
            (
                "shardfs_member_free_bytes",
                Kind::Gauge,
                "Free bytes on the member's filesystem.",
                |r| r.cap.1.into(),
            ),
            (
                "shardfs_member_meta_replica",
                Kind::Gauge,
                "1 if the member is listed to hold a metadata replica.",
                |r| r.meta.into(),
            ),
        ];
        for (name, kind, help, f) in fields {
            x.family(name, kind, help);
            for r in &rows {
                x.sample(name, &[("member", &r.index)], f(r));
            }
        }

        // repair, scrub, rebalance, tier
        let tasks = [
            ("repair", maintenance.repair.snapshot()),
            ("scrub", maintenance.scrub.snapshot()),
            ("rebalance", maintenance.rebalance.snapshot()),
            ("tier", maintenance.tier.snapshot()),
        ];
        for (suffix, kind, help, f) in TASK_FIELDS {
            let name = format!("shardfs_maintenance_{suffix}");
            let vals: Vec<(&str, Num)> = tasks
                .iter()
                .filter_map(|(t, p)| f(p).map(|v| (*t, v)))
                .collect();
            if vals.is_empty() {
                continue;
            }
            x.family(
                &name,
                *kind,
                &format!("{help} Label task: repair, scrub, rebalance or tier."),
            );
            for (t, v) in vals {
                x.sample(&name, &[("task", t)], v);
            }
        }

        // tiering
        x.single(
            "shardfs_tier_moved_shards_total",
            Kind::Counter,
            "Shards moved between member classes by tier passes since mount.",
            fs.tier.moved.load(std::sync::atomic::Ordering::Relaxed),
        );
        let last = fs.tier.last.lock().unwrap().clone();
        x.family(
            "shardfs_tier_objects",
            Kind::Gauge,
            "Objects the last tier pass wanted on each tier. Label tier: hot or cold.",
        );
        x.sample("shardfs_tier_objects", &[("tier", "hot")], last.hot_objects);
        x.sample(
            "shardfs_tier_objects",
            &[("tier", "cold")],
            last.cold_objects,
        );
        x.single(
            "shardfs_tier_pending_shards",
            Kind::Gauge,
            "Shards the last tier pass found on the wrong class with no room on the right one.",
            last.pending_shards,
        );
        // hot replicas and passthrough (counts from memory: the replica
        // records are counted by `shardctl tier status`)
        let r = &fs.replicas;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        x.single(
            "shardfs_passthrough_enabled",
            Kind::Gauge,
            "1 if read-only opens of hot replicated files are served by FUSE passthrough.",
            r.passthrough.load(Ordering::Relaxed) as u64,
        );
        x.single(
            "shardfs_passthrough_opens_total",
            Kind::Counter,
            "Opens served by FUSE passthrough from a replica since mount.",
            ld(&r.passthrough_opens),
        );
        x.family(
            "shardfs_replica_events_total",
            Kind::Counter,
            "Whole-file replicas built, dropped (cold, stale, unwanted or corrupt) and found corrupt since mount. Label event.",
        );
        for (ev, v) in [
            ("built", ld(&r.built)),
            ("dropped", ld(&r.dropped)),
            ("corrupt", ld(&r.corrupt)),
        ] {
            x.sample("shardfs_replica_events_total", &[("event", ev)], v);
        }

        // FUSE
        self.render_fuse(&mut x);

        for c in self.collectors.lock().unwrap().iter() {
            c.collect(&mut x);
        }
        x.finish()
    }

    fn render_fuse(&self, x: &mut Exposition) {
        let f = &self.fuse;
        x.family(
            "shardfs_fuse_requests_total",
            Kind::Counter,
            "FUSE requests answered, by operation.",
        );
        for &op in Op::ALL {
            let v = f.op(op).calls.load(Ordering::Relaxed);
            x.sample("shardfs_fuse_requests_total", &[("op", op.name())], v);
        }
        x.family(
            "shardfs_fuse_errors_total",
            Kind::Counter,
            "FUSE requests answered with an errno (ENOENT of a lookup included), by operation.",
        );
        for &op in Op::ALL {
            let v = f.op(op).errors.load(Ordering::Relaxed);
            x.sample("shardfs_fuse_errors_total", &[("op", op.name())], v);
        }
        x.family(
            "shardfs_fuse_bytes_total",
            Kind::Counter,
            "Bytes returned by FUSE reads and accepted by FUSE writes.",
        );
        for op in [Op::Read, Op::Write] {
            let v = f.op(op).bytes.load(Ordering::Relaxed);
            x.sample("shardfs_fuse_bytes_total", &[("op", op.name())], v);
        }
        let h = "shardfs_fuse_request_duration_seconds";
        x.family(
            h,
            Kind::Histogram,
            "Time from a FUSE request's arrival to its reply, by operation.",
        );
        let (bucket, sum, count) = (
            format!("{h}_bucket"),
            format!("{h}_sum"),
            format!("{h}_count"),
        );
        let mut le = String::new();
        for &op in Op::ALL {
            let s = f.op(op);
            let mut cum = 0u64;
            for (i, b) in s.buckets.iter().enumerate() {
                cum += b.load(Ordering::Relaxed);
                le.clear();
                match BUCKETS.get(i) {
                    Some(&ub) => float(&mut le, ub),
                    None => le.push_str("+Inf"),
                }
                x.sample(&bucket, &[("op", op.name()), ("le", &le)], cum);
            }
            let secs = s.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            x.sample(&sum, &[("op", op.name())], secs);
            x.sample(&count, &[("op", op.name())], cum);
        }
    }
}

/// Check that `addr` is a loopback address and bind it. Metrics carry no
/// authentication, so nothing else is served.
pub fn bind_http(addr: SocketAddr) -> Result<TcpListener, String> {
    if !addr.ip().to_canonical().is_loopback() {
        return Err(format!(
            "--metrics-listen {addr}: metrics are served on a loopback address only \
             (e.g. 127.0.0.1:9108 or [::1]:9108); put a proxy in front to expose them"
        ));
    }
    TcpListener::bind(addr).map_err(|e| format!("--metrics-listen {addr}: {e}"))
}

/// Largest request head read.
const MAX_HEAD: usize = 8192;

/// Connections served at once, each on a thread of its own. At the cap the
/// connection that has waited longest for its request head is closed to
/// make room; only when every one is rendering or sending is a new one
/// answered 503.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// The whole request head must arrive within this long of the connection.
pub const HTTP_HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// The whole response must be taken by the client within this long.
pub const HTTP_WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Connections still reading their head, oldest first, with a handle to
/// close them.
type HttpWaiting = Arc<Mutex<std::collections::BTreeMap<u64, TcpStream>>>;

/// Serve `GET /metrics` with `render()` on `listener`: 404 for other
/// paths, 405 for other methods (HEAD is answered as GET without a body).
/// Each connection has a thread and deadlines of its own (head
/// [`HTTP_HEAD_DEADLINE`], response [`HTTP_WRITE_DEADLINE`]), so a client
/// that connects and sends nothing, or reads slowly, never holds up another
/// scrape; at most [`MAX_HTTP_CONNECTIONS`] are served at once.
pub fn spawn_http<F>(listener: TcpListener, render: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(render);
    let active = Arc::new(AtomicUsize::new(0));
    let waiting: HttpWaiting = Arc::default();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let mut next_id = 0u64;
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                next_id += 1;
                let id = next_id;
                if active.load(Ordering::SeqCst) >= MAX_HTTP_CONNECTIONS {
                    let oldest = crate::guard::panic::lock_or_recover(&waiting).pop_first();
                    match oldest {
                        Some((_, s)) => {
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        }
                        None => {
                            busy(stream);
                            continue;
                        }
                    }
                }
                if active.fetch_add(1, Ordering::SeqCst) >= 2 * MAX_HTTP_CONNECTIONS {
                    // closed connections whose threads have not ended yet
                    active.fetch_sub(1, Ordering::SeqCst);
                    busy(stream);
                    continue;
                }
                let render = render.clone();
                let slots = active.clone();
                let waiting = waiting.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        let r = crate::guard::panic::contain("metrics connection", || {
                            serve_http(stream, id, &*render, &waiting)
                        });
                        if let Ok(Err(e)) = r {
                            log::debug!("metrics: connection: {e}");
                        }
                        crate::guard::panic::lock_or_recover(&waiting).remove(&id);
                        slots.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

/// Answer 503 without waiting on the client.
fn busy(mut s: TcpStream) {
    let _ = s.set_nonblocking(true);
    let _ = s.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Length: 29\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
          too many metrics connections\n",
    );
}

/// Read the request head before `deadline`; None if it is too large.
fn read_head(s: &mut TcpStream, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Some(head));
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

fn serve_http(
    mut s: TcpStream,
    id: u64,
    render: &(dyn Fn() -> String + Send + Sync),
    waiting: &HttpWaiting,
) -> io::Result<()> {
    if let Ok(c) = s.try_clone() {
        crate::guard::panic::lock_or_recover(waiting).insert(id, c);
    }
    let head = read_head(&mut s, Instant::now() + HTTP_HEAD_DEADLINE);
    crate::guard::panic::lock_or_recover(waiting).remove(&id);
    let Some(head) = head? else {
        return respond(&mut s, "431 Request Header Fields Too Large", "", "");
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut s, "400 Bad Request", "", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut s, "400 Bad Request", "", "bad request\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return respond(
            &mut s,
            "404 Not Found",
            "",
            "not found: metrics are at /metrics\n",
        );
    }
    match method {
        "GET" => {
            let body = render();
            respond_typed(&mut s, "200 OK", CONTENT_TYPE, "", &body, true)
        }
        "HEAD" => {
            let body = render();
            respond_typed(&mut s, "200 OK", CONTENT_TYPE, "", &body, false)
        }
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed: use GET\n",
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, extra: &str, body: &str) -> io::Result<()> {
    respond_typed(s, status, "text/plain; charset=utf-8", extra, body, true)
}

fn respond_typed(
    s: &mut TcpStream,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        out.push_str(body);
    }
    // one deadline for the whole response, not one per write
    let deadline = Instant::now() + HTTP_WRITE_DEADLINE;
    let mut buf = out.as_bytes();
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_labels_and_help() {
        let mut x = Exposition::default();
        x.family("a_b", Kind::Gauge, "line\\one\nline two");
        x.sample("a_b", &[("p", "x\"y\\z\nw")], 1.5);
        x.sample("a_b", &[], f64::INFINITY);
        x.sample("a_b", &[("q", "")], f64::NAN);
        let t = x.finish();
        assert_eq!(
            t,
            "# HELP a_b line\\\\one\\nline two\n# TYPE a_b gauge\n\
             a_b{p=\"x\\\"y\\\\z\\nw\"} 1.5\na_b +Inf\na_b{q=\"\"} NaN\n"
        );
    }

    #[test]
    fn histogram_buckets() {
        let s = FuseStats::default();
        let o = s.op(Op::Read);
        o.record(50_000, false, 10); // 50 µs: first bucket
        o.record(100_000, false, 0); // on the bound: first bucket (le is inclusive)
        o.record(100_001, true, 0);
        o.record(20_000_000_000, false, 0); // 20 s: +Inf
        let b: Vec<u64> = o
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(b[0], 2);
        assert_eq!(b[1], 1);
        assert_eq!(b[16], 1);
        assert_eq!(o.calls.load(Ordering::Relaxed), 4);
        assert_eq!(o.errors.load(Ordering::Relaxed), 1);
        assert_eq!(o.bytes.load(Ordering::Relaxed), 10);
        {
            let mut t = s.start(Op::Write);
            let _ = t.check(Err::<(), ()>(()));
            t.bytes(3);
        }
        assert_eq!(s.op(Op::Write).errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.op(Op::Write).bytes.load(Ordering::Relaxed), 3);
        let m = Metrics {
            fuse: Arc::new(s),
            ..Metrics::default()
        };
        let mut x = Exposition::default();
        m.render_fuse(&mut x);
        let t = x.finish();
        assert!(t.contains(
            "shardfs_fuse_request_duration_seconds_bucket{op=\"read\",le=\"0.0001\"} 2\n"
        ));
        assert!(
            t.contains("shardfs_fuse_request_duration_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n")
        );
        assert!(t.contains("shardfs_fuse_request_duration_seconds_count{op=\"read\"} 4\n"));
        assert!(t.contains("shardfs_fuse_errors_total{op=\"read\"} 1\n"));
        assert!(t.contains("shardfs_fuse_bytes_total{op=\"write\"} 3\n"));
    }

    #[test]
    fn only_loopback_binds() {
        assert!(bind_http("0.0.0.0:0".parse().unwrap())
            .unwrap_err()
            .contains("loopback"));
        assert!(bind_http("[::]:0".parse().unwrap()).is_err());
        assert!(bind_http("127.0.0.1:0".parse().unwrap()).is_ok());
    }

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn http_paths_and_methods() {
        let l = bind_http("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        spawn_http(l, || "x_total 1\n".to_string()).unwrap();
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("Content-Length: 10\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nx_total 1\n"), "{r}");
        let r = get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = get(addr, "GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET"),
            "{r}"
        );
        let r = get(addr, "garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    }
}
