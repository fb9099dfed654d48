//! Scale simulator for heat (issue 5): many independent bursty workloads
//! over 10^3 to 10^6 disks of 120 IOPS each, placed with the pool's own
//! [`place`](crate::pool::placement::place).
//!
//! Two experiments:
//!
//! * [`demand`]: the aggregate request rate of `W` independent on/off
//!   workloads (Pareto on and off periods) and its peak-to-mean ratio over
//!   time. No disks involved: this is the decorrelation argument alone.
//! * [`run_disks`]: the same workloads issuing reads and overwrites of
//!   erasure-coded objects (k+m shards) on `D` disks, objects placed either
//!   spread over the whole pool (every stripe picks its own members, heat
//!   steering the choice) or packed onto a small fixed set of disks per
//!   workload; per-disk load is measured every simulated second.
//!
//! Everything is deterministic given the seed (own xoshiro256++ generator,
//! no threads inside one run). The binary `shardfs-heatsim` drives both and
//! draws the plots ([`svg`]); `docs/heat.md` describes the model.

pub mod svg;

use crate::pool::placement::{place, Candidate};

/// xoshiro256++: small, fast, and stable across crate versions (the
/// simulator's output must not change when `rand` does).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded through splitmix64.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Pareto with scale `xm` and shape `alpha` (P(X > x) = (xm/x)^alpha),
    /// capped at [`PERIOD_CAP`].
    pub fn pareto(&mut self, xm: f64, alpha: f64) -> f64 {
        let u = 1.0 - self.f64(); // (0, 1]
        (xm / u.powf(1.0 / alpha)).min(PERIOD_CAP)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.f64();
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Poisson with mean `lambda` (exact below 30, normal approximation
    /// above, where it is within a fraction of a percent).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            0
        } else if lambda < 30.0 {
            let l = (-lambda).exp();
            let mut k = 0;
            let mut p = self.f64();
            while p > l {
                k += 1;
                p *= self.f64();
            }
            k
        } else {
            (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
        }
    }
}

/// Longest on or off period drawn, seconds (keeps the heavy tail finite).
pub const PERIOD_CAP: f64 = 1e7;

/// On and off period distributions of a workload (Pareto, seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnOff {
    /// Shortest on period.
    pub on_min: f64,
    /// Pareto shape of on periods (1 < alpha < 2: finite mean, infinite
    /// variance).
    pub on_alpha: f64,
    /// Shortest off period.
    pub off_min: f64,
    /// Pareto shape of off periods.
    pub off_alpha: f64,
}

impl Default for OnOff {
    /// On 2 s or more, off 8 s or more, both shape 1.5: mean on 6 s, mean
    /// off 24 s, on 20% of the time.
    fn default() -> OnOff {
        OnOff {
            on_min: 2.0,
            on_alpha: 1.5,
            off_min: 8.0,
            off_alpha: 1.5,
        }
    }
}

impl OnOff {
    /// Mean on period.
    pub fn mean_on(&self) -> f64 {
        self.on_alpha * self.on_min / (self.on_alpha - 1.0)
    }
    /// Mean off period.
    pub fn mean_off(&self) -> f64 {
        self.off_alpha * self.off_min / (self.off_alpha - 1.0)
    }
    /// Long-run fraction of time on.
    pub fn duty(&self) -> f64 {
        self.mean_on() / (self.mean_on() + self.mean_off())
    }
}

/// One on/off source, started in its stationary state (so no warm-up is
/// needed): on with probability `duty`, and the time left in the current
/// period drawn from the equilibrium residual-life distribution.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    on: bool,
    left: f64,
}

/// Residual life of a renewal process with Pareto(xm, alpha) periods:
/// uniform on [0, xm] with probability (alpha-1)/alpha, else
/// Pareto(xm, alpha-1).
fn residual(rng: &mut Rng, xm: f64, alpha: f64) -> f64 {
    if rng.f64() < (alpha - 1.0) / alpha {
        rng.f64() * xm
    } else {
        rng.pareto(xm, alpha - 1.0)
    }
}

impl Source {
    /// A source in its stationary state.
    pub fn stationary(p: &OnOff, rng: &mut Rng) -> Source {
        let on = rng.f64() < p.duty();
        let left = if on {
            residual(rng, p.on_min, p.on_alpha)
        } else {
            residual(rng, p.off_min, p.off_alpha)
        };
        Source { on, left }
    }

    /// Advance by `dt` seconds; returns how long of that it was on.
    pub fn advance(&mut self, p: &OnOff, dt: f64, rng: &mut Rng) -> f64 {
        let mut rem = dt;
        let mut on_time = 0.0;
        while rem > 0.0 {
            let step = self.left.min(rem);
            if self.on {
                on_time += step;
            }
            rem -= step;
            self.left -= step;
            if self.left <= 0.0 {
                self.on = !self.on;
                self.left = if self.on {
                    rng.pareto(p.on_min, p.on_alpha)
                } else {
                    rng.pareto(p.off_min, p.off_alpha)
                };
            }
        }
        on_time
    }
}

/// Parameters of the decorrelation experiment.
#[derive(Debug, Clone)]
pub struct DemandParams {
    /// Independent workloads.
    pub workloads: usize,
    /// Simulated seconds.
    pub steps: usize,
    /// Requests per second of a workload while on (its mean, when sizes vary).
    pub rate: f64,
    /// `Some(alpha)`: workload sizes (on-rates) vary, Pareto with this
    /// shape, scaled to mean `rate`; `None`: all equal.
    pub size_alpha: Option<f64>,
    /// On/off periods.
    pub onoff: OnOff,
}

/// What [`demand`] measured.
#[derive(Debug, Clone)]
pub struct DemandResult {
    /// Workloads.
    pub workloads: usize,
    /// Mean aggregate requests per second.
    pub mean: f64,
    /// Highest one-second aggregate.
    pub peak: f64,
    /// `peak / mean`.
    pub peak_over_mean: f64,
    /// 99.9th percentile of the per-second aggregate over the mean.
    pub p999_over_mean: f64,
    /// Standard deviation over mean (coefficient of variation).
    pub cv: f64,
    /// The aggregate, one value per second.
    pub series: Vec<f64>,
}

/// Aggregate demand of independent on/off workloads: each, while on,
/// issues Poisson requests at its rate; the per-second sum is recorded.
pub fn demand(p: &DemandParams, seed: u64) -> DemandResult {
    let mut rng = Rng::new(seed ^ 0xdead_beef);
    let mut srcs: Vec<Source> = (0..p.workloads)
        .map(|_| Source::stationary(&p.onoff, &mut rng))
        .collect();
    let rates: Vec<f64> = (0..p.workloads)
        .map(|_| match p.size_alpha {
            None => p.rate,
            Some(a) => {
                let mean = a / (a - 1.0);
                p.rate * rng.pareto(1.0, a) / mean
            }
        })
        .collect();
    let mut series = Vec::with_capacity(p.steps);
    for _ in 0..p.steps {
        let mut total = 0u64;
        for (s, &r) in srcs.iter_mut().zip(&rates) {
            let on = s.advance(&p.onoff, 1.0, &mut rng);
            if on > 0.0 {
                total += rng.poisson(r * on);
            }
        }
        series.push(total as f64);
    }
    let n = series.len().max(1) as f64;
    let mean = series.iter().sum::<f64>() / n;
    let peak = series.iter().cloned().fold(0.0, f64::max);
    let var = series.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let mut sorted = series.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p999 = sorted
        .get(((sorted.len() as f64 * 0.999) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    let safe = |x: f64| if mean > 0.0 { x / mean } else { f64::INFINITY };
    DemandResult {
        workloads: p.workloads,
        mean,
        peak,
        peak_over_mean: safe(peak),
        p999_over_mean: safe(p999),
        cv: safe(var.sqrt()),
        series,
    }
}

/// How a workload's objects are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// `true`: every stripe placed over the whole pool (a random sample of
    /// it, see [`DiskParams::sample`]); `false`: packed onto the
    /// workload's own [`DiskParams::group`] disks.
    pub wide: bool,
    /// `true`: placement sees each disk's heat and reads go to the k
    /// coolest shards; `false`: placement by free space only and reads go
    /// to the k data shards.
    pub heat: bool,
}

impl Strategy {
    /// Spread wide, heat-aware (what shardfs does).
    pub const SPREAD: Strategy = Strategy {
        wide: true,
        heat: true,
    };
    /// Packed, heat-aware within the group.
    pub const PACKED: Strategy = Strategy {
        wide: false,
        heat: true,
    };
    /// Spread wide, heat-blind.
    pub const SPREAD_BLIND: Strategy = Strategy {
        wide: true,
        heat: false,
    };
    /// Packed, heat-blind.
    pub const PACKED_BLIND: Strategy = Strategy {
        wide: false,
        heat: false,
    };

    /// Short name for tables and legends.
    pub fn name(&self) -> &'static str {
        match (self.wide, self.heat) {
            (true, true) => "spread",
            (false, true) => "packed",
            (true, false) => "spread-blind",
            (false, false) => "packed-blind",
        }
    }
}

/// Parameters of the per-disk load experiment.
#[derive(Debug, Clone)]
pub struct DiskParams {
    /// Disks in the pool.
    pub disks: usize,
    /// Data shards per stripe.
    pub k: usize,
    /// Parity shards per stripe.
    pub m: usize,
    /// Random I/Os per second one disk serves.
    pub iops: f64,
    /// Mean offered load as a fraction of the pool's I/O capacity; sets
    /// the number of workloads.
    pub util: f64,
    /// Requests per second of a workload while on.
    pub on_rate: f64,
    /// Fraction of requests that overwrite an object (new stripe, k+m
    /// shard writes); the rest read one (k shard reads).
    pub write_frac: f64,
    /// Objects per workload.
    pub objects: usize,
    /// Candidates drawn uniformly from the pool for each spread-wide
    /// placement (`place` runs over this sample, not the whole pool).
    pub sample: usize,
    /// Disks per workload when packed (consecutive on a ring, from a
    /// random start).
    pub group: usize,
    /// Measured seconds.
    pub steps: usize,
    /// Seconds simulated before measuring (heat and queues settle).
    pub settle: usize,
    /// On/off periods.
    pub onoff: OnOff,
    /// What heat the heat-aware strategies see.
    pub signal: HeatSignal,
}

/// The load signal heat-aware placement and reads go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatSignal {
    /// Fresh: queued work plus the arrivals of the last second, as a
    /// sliding window (what a daemon that meters every I/O of its pool
    /// knows at any moment).
    Window,
    /// Stale: queued work plus last second's arrival count plus this
    /// second's so far; the window jumps once a second, so every request
    /// of a second sees the same picture of the one before.
    Lagged,
}

impl DiskParams {
    /// Defaults for `disks` disks: 4+2, 120 IOPS, 50% mean utilisation,
    /// 200 requests/s per workload while on, 10% overwrites, 32 objects
    /// per workload, samples and groups of 2(k+m).
    pub fn new(disks: usize) -> DiskParams {
        DiskParams {
            disks,
            k: 4,
            m: 2,
            iops: 120.0,
            util: 0.5,
            on_rate: 200.0,
            write_frac: 0.1,
            objects: 32,
            sample: 12,
            group: 12,
            steps: 60,
            settle: 2,
            onoff: OnOff::default(),
            signal: HeatSignal::Window,
        }
    }

    /// Shard I/Os of an average request.
    pub fn ios_per_request(&self) -> f64 {
        (1.0 - self.write_frac) * self.k as f64 + self.write_frac * (self.k + self.m) as f64
    }

    /// Workloads needed for the target mean utilisation.
    pub fn workloads(&self) -> usize {
        let per_workload = self.on_rate * self.onoff.duty() * self.ios_per_request();
        ((self.util * self.iops * self.disks as f64 / per_workload).round() as usize).max(1)
    }
}

/// What [`run_disks`] measured (per-disk figures are shard I/Os arriving
/// at a disk in one second, the disk's offered load).
#[derive(Debug, Clone)]
pub struct DiskResult {
    /// Strategy.
    pub strategy: Strategy,
    /// Disks.
    pub disks: usize,
    /// Workloads.
    pub workloads: usize,
    /// Objects (stripes).
    pub objects: usize,
    /// Measured seconds.
    pub steps: usize,
    /// Mean per-disk load, IOPS.
    pub mean_iops: f64,
    /// Hottest disk over the mean disk, averaged over seconds.
    pub max_over_mean: f64,
    /// 99th-percentile disk over the mean disk, averaged over seconds.
    pub p99_over_mean: f64,
    /// Highest max/mean of any one second.
    pub worst_max_over_mean: f64,
    /// Fraction of disk-seconds offered more than the disk's IOPS.
    pub overloaded: f64,
    /// Fraction of disk-seconds ending with a queue (backlog carried on).
    pub queued: f64,
    /// Fraction of shard I/Os that arrived at a disk already holding a
    /// second or more of queued work (waited at least a second).
    pub delayed: f64,
    /// Longest backlog at the end of any second, in seconds of work.
    pub max_backlog_s: f64,
    /// Shards stored on the fullest disk over the mean, at the end.
    pub stored_max_over_mean: f64,
    /// Standard deviation over mean of shards stored per disk, at the end.
    pub stored_cv: f64,
    /// Wall time of the initial fill (placing every object), seconds.
    pub fill_secs: f64,
    /// Wall time of the simulated seconds, seconds.
    pub run_secs: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Disk {
    /// Shard I/Os arrived this second.
    cur: u32,
    /// Shard I/Os arrived last second.
    prev: u32,
    /// Work left over from earlier seconds, I/Os.
    backlog: f32,
    /// Shards stored.
    stored: u32,
}

impl Disk {
    /// Heat as the simulator's heat tracker reports it, `t` (0..1) into
    /// the current second: work queued from earlier seconds plus recent
    /// arrivals. A stand-in for the pool's expected wait of a new request;
    /// only the order matters.
    fn heat(&self, signal: HeatSignal, t: f64) -> f64 {
        let recent = match signal {
            // arrivals in the last second: this second's so far and the
            // part of last second's still inside the window
            HeatSignal::Window => self.cur as f64 + self.prev as f64 * (1.0 - t),
            // last second's count, plus this second's so far
            HeatSignal::Lagged => self.cur as f64 + self.prev as f64,
        };
        self.backlog as f64 + recent
    }
}

/// A vector of defaults, backed by transparent huge pages where the
/// kernel offers them: the object table of a 10^6-disk run is hundreds of
/// MB read at random, and with 4 KiB pages nearly every read is a TLB miss.
fn huge_vec<T: Clone + Default>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize;
        let end = start + len * std::mem::size_of::<T>();
        let a = start.next_multiple_of(HUGE);
        if end > a + HUGE {
            let l = (end - a) / HUGE * HUGE;
            // SAFETY: advice on pages of an allocation we own; it changes
            // no contents and failure is harmless.
            unsafe {
                libc::madvise(a as *mut libc::c_void, l, libc::MADV_HUGEPAGE);
            }
        }
    }
    v.resize(len, T::default());
    v
}

struct Sim<'a> {
    p: &'a DiskParams,
    s: Strategy,
    n: usize,
    disks: Vec<Disk>,
    /// Shards of every object: object `o` of workload `w` at
    /// `((w * objects + o) * n)..+n`, data shards first.
    objs: Vec<u32>,
    /// Ring start of each workload's group (packed).
    group_start: Vec<u32>,
    cap: f64,
    cands: Vec<Candidate>,
    pending: std::collections::VecDeque<Req>,
    /// Requests of this second run so far, and in all.
    done: u64,
    total: u64,
    /// Fraction of the current second gone (`done / total`).
    now: f64,
    rng: Rng,
}

/// Most candidates one spread-wide placement samples.
pub const MAX_SAMPLE: usize = 64;
/// Requests between drawing a request and loading its object's shard
/// list, and between that and executing it: the simulator's working set
/// at 10^6 disks is far bigger than the caches, so each request's memory
/// is prefetched while earlier ones run (the order of execution, and so
/// every figure, is unchanged by this).
const LAG: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    /// Initial placement of an object (no I/O counted).
    Fill,
}

#[derive(Clone, Copy)]
struct Req {
    kind: Kind,
    w: u32,
    /// Global object index.
    o: u32,
    /// Disks sampled for a spread-wide placement.
    sample: [u32; MAX_SAMPLE],
}

#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint; it never faults or changes memory.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(x as *const T as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

impl Sim<'_> {
    fn candidate(&self, d: u32) -> Candidate {
        let disk = &self.disks[d as usize];
        Candidate {
            id: d,
            free: (self.cap - disk.stored as f64).max(1.0),
            load: if self.s.heat {
                disk.heat(self.p.signal, self.now)
            } else {
                0.0
            },
            domain: d,
        }
    }

    /// Draw a request (its object, and the sample a placement will use)
    /// and prefetch what it will touch first.
    fn make(&mut self, kind: Kind, w: usize, o: Option<usize>) -> Req {
        let o = o
            .unwrap_or_else(|| w * self.p.objects + self.rng.below(self.p.objects as u64) as usize);
        let mut r = Req {
            kind,
            w: w as u32,
            o: o as u32,
            sample: [0; MAX_SAMPLE],
        };
        if kind != Kind::Fill {
            prefetch(&self.objs[o * self.n]);
        }
        if kind != Kind::Read {
            let d = self.disks.len() as u64;
            if self.s.wide {
                let mut got = 0;
                while got < self.p.sample {
                    let x = self.rng.below(d) as u32;
                    if !r.sample[..got].contains(&x) {
                        r.sample[got] = x;
                        got += 1;
                        prefetch(&self.disks[x as usize]);
                    }
                }
            } else {
                let start = self.group_start[w] as u64;
                for i in 0..self.p.group as u64 {
                    prefetch(&self.disks[((start + i) % d) as usize]);
                }
            }
        }
        r
    }

    /// Second stage: the object's shard list is in cache now; prefetch
    /// its disks.
    fn stage2(&self, r: &Req) {
        if r.kind != Kind::Fill {
            let o = r.o as usize * self.n;
            for &d in &self.objs[o..o + self.n] {
                prefetch(&self.disks[d as usize]);
            }
        }
    }

    /// Queue a request; runs the one drawn 2 x LAG requests earlier.
    fn push(&mut self, r: Req) {
        self.pending.push_back(r);
        let len = self.pending.len();
        if len > LAG {
            let r = self.pending[len - 1 - LAG];
            self.stage2(&r);
        }
        if len > 2 * LAG {
            let r = self.pending.pop_front().expect("queued");
            self.exec(&r);
        }
    }

    /// Run everything queued.
    fn drain(&mut self) {
        while let Some(r) = self.pending.pop_front() {
            self.exec(&r);
        }
    }

    fn exec(&mut self, r: &Req) {
        self.now = (self.done as f64 / self.total.max(1) as f64).min(1.0);
        self.done += 1;
        match r.kind {
            Kind::Read => self.read(r.o as usize),
            Kind::Write | Kind::Fill => self.write(r),
        }
    }

    /// Place a new stripe for request `r` into `out` (n disks).
    fn place_stripe(&mut self, r: &Req, out: &mut [u32]) {
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        if self.s.wide {
            for &x in &r.sample[..self.p.sample] {
                cands.push(self.candidate(x));
            }
        } else {
            let d = self.disks.len() as u64;
            let start = self.group_start[r.w as usize] as u64;
            for i in 0..self.p.group as u64 {
                cands.push(self.candidate(((start + i) % d) as u32));
            }
        }
        let rng = &mut self.rng;
        let mut rand = || rng.f64();
        let picked = place(&cands, self.n, &[], &mut rand);
        debug_assert_eq!(picked.len(), self.n);
        for (slot, &i) in out.iter_mut().zip(&picked) {
            *slot = cands[i].id;
            self.disks[cands[i].id as usize].stored += 1;
        }
        self.cands = cands;
    }

    fn read(&mut self, o: usize) {
        let n = self.n;
        let k = self.p.k;
        let shards = &self.objs[o * n..o * n + n];
        if !self.s.heat {
            for &d in &shards[..k] {
                self.disks[d as usize].cur += 1;
            }
            return;
        }
        // the k coolest of the n shards: skip the m hottest (ties keep
        // data shards first)
        let mut idx: [(f64, u32); 32] = [(0.0, 0); 32];
        for (i, &d) in shards.iter().enumerate() {
            idx[i] = (self.disks[d as usize].heat(self.p.signal, self.now), d);
        }
        let idx = &mut idx[..n];
        // insertion sort, stable, n is small
        for i in 1..n {
            let mut j = i;
            while j > 0 && idx[j].0 < idx[j - 1].0 {
                idx.swap(j, j - 1);
                j -= 1;
            }
        }
        for &(_, d) in &idx[..k] {
            self.disks[d as usize].cur += 1;
        }
    }

    fn write(&mut self, r: &Req) {
        let o = r.o as usize;
        let n = self.n;
        if r.kind == Kind::Write {
            for i in 0..n {
                let d = self.objs[o * n + i] as usize;
                self.disks[d].stored -= 1;
            }
        }
        let mut new = [0u32; 32];
        self.place_stripe(r, &mut new[..n]);
        for (i, &d) in new[..n].iter().enumerate() {
            self.objs[o * n + i] = d;
            if r.kind == Kind::Write {
                self.disks[d as usize].cur += 1;
            }
        }
    }
}

/// Run the per-disk load experiment for one strategy.
///
/// Each simulated second: every workload advances its on/off source and,
/// for the time it was on, issues Poisson(`on_rate` x on-time) requests;
/// the requests of all workloads are interleaved (round robin over the
/// active workloads in a random order) so heat seen by one request
/// includes the others' requests of the same second. A read picks one of
/// the workload's objects uniformly and reads k shards; an overwrite
/// places a new stripe with [`place`] at the current heat and writes its
/// k+m shards. Requests run in order through the second; the heat they
/// see ([`HeatSignal`]) is taken at their moment in it. At the end of the
/// second each disk serves up to `iops`; the rest stays queued.
///
/// The workload side (on/off, request counts, their order, read or
/// overwrite) draws from its own generator, so every strategy sees
/// exactly the same sequence of requests.
pub fn run_disks(p: &DiskParams, s: Strategy, seed: u64) -> DiskResult {
    let n = p.k + p.m;
    assert!(n <= 32, "k+m at most 32");
    assert!(p.disks >= n, "need at least k+m disks");
    let sample = p.sample.clamp(n, p.disks.min(MAX_SAMPLE));
    let group = p.group.clamp(n, p.disks);
    let p = &DiskParams {
        sample,
        group,
        ..p.clone()
    };
    let w_count = p.workloads();
    let mut wrng = Rng::new(seed ^ 0x5eed_0001);
    let mut srcs: Vec<Source> = (0..w_count)
        .map(|_| Source::stationary(&p.onoff, &mut wrng))
        .collect();
    let mut prng = Rng::new(seed ^ 0x5eed_0002 ^ ((s.wide as u64) << 8) ^ ((s.heat as u64) << 9));
    let group_start: Vec<u32> = (0..w_count)
        .map(|_| prng.below(p.disks as u64) as u32)
        .collect();
    let total_objects = w_count * p.objects;
    // capacity in shards: four times the mean fill, so free space weights
    // placement without ever running out
    let cap = 4.0 * (total_objects * n) as f64 / p.disks as f64 + 64.0;
    let mut sim = Sim {
        p,
        s,
        n,
        disks: huge_vec(p.disks),
        objs: huge_vec(total_objects * n),
        group_start,
        cap,
        cands: Vec::with_capacity(sample.max(group)),
        pending: Default::default(),
        done: 0,
        total: 0,
        now: 0.0,
        rng: prng,
    };
    let started = std::time::Instant::now();
    // initial fill: idle pool, placement by free space (heat all zero)
    for w in 0..w_count {
        for o in 0..p.objects {
            let r = sim.make(Kind::Fill, w, Some(w * p.objects + o));
            sim.push(r);
        }
    }
    sim.drain();

    let fill_secs = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let mut active: Vec<(u32, u32)> = Vec::new();
    let mut loads: Vec<f32> = vec![0.0; p.disks];
    let mut r = DiskResult {
        strategy: s,
        disks: p.disks,
        workloads: w_count,
        objects: total_objects,
        steps: p.steps,
        mean_iops: 0.0,
        max_over_mean: 0.0,
        p99_over_mean: 0.0,
        worst_max_over_mean: 0.0,
        overloaded: 0.0,
        queued: 0.0,
        delayed: 0.0,
        max_backlog_s: 0.0,
        stored_max_over_mean: 0.0,
        stored_cv: 0.0,
        fill_secs,
        run_secs: 0.0,
    };
    let mut sum_mean = 0.0;
    let mut overloaded = 0u64;
    let mut queued = 0u64;
    let mut delayed = 0u64;
    let mut arrived = 0u64;
    for t in 0..p.settle + p.steps {
        active.clear();
        for (w, src) in srcs.iter_mut().enumerate() {
            let on = src.advance(&p.onoff, 1.0, &mut wrng);
            if on > 0.0 {
                let reqs = wrng.poisson(p.on_rate * on);
                if reqs > 0 {
                    active.push((w as u32, reqs as u32));
                }
            }
        }
        sim.done = 0;
        sim.total = active.iter().map(|a| a.1 as u64).sum();
        // random order, then round robin until every workload is done
        for i in (1..active.len()).rev() {
            let j = wrng.below(i as u64 + 1) as usize;
            active.swap(i, j);
        }
        while !active.is_empty() {
            let mut i = 0;
            while i < active.len() {
                let w = active[i].0 as usize;
                let kind = if wrng.f64() < p.write_frac {
                    Kind::Write
                } else {
                    Kind::Read
                };
                let r = sim.make(kind, w, None);
                sim.push(r);
                active[i].1 -= 1;
                if active[i].1 == 0 {
                    active.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        sim.drain();
        // serve, measure, roll over
        let measuring = t >= p.settle;
        let mut total = 0u64;
        let mut max = 0u32;
        for (disk, l) in sim.disks.iter_mut().zip(loads.iter_mut()) {
            let a = disk.cur;
            let was = disk.backlog as f64;
            let work = was + a as f64;
            let left = (work - p.iops).max(0.0);
            disk.backlog = left as f32;
            disk.prev = a;
            disk.cur = 0;
            if measuring {
                total += a as u64;
                if was >= p.iops {
                    delayed += a as u64;
                }
                max = max.max(a);
                *l = a as f32;
                if a as f64 > p.iops {
                    overloaded += 1;
                }
                if left > 0.0 {
                    queued += 1;
                    r.max_backlog_s = r.max_backlog_s.max(left / p.iops);
                }
            }
        }
        if measuring {
            let mean = total as f64 / p.disks as f64;
            let at = ((p.disks as f64 * 0.99) as usize).min(p.disks - 1);
            let (_, p99, _) = loads.select_nth_unstable_by(at, |a, b| a.partial_cmp(b).unwrap());
            let p99 = *p99 as f64;
            if mean > 0.0 {
                let mm = max as f64 / mean;
                r.max_over_mean += mm;
                r.p99_over_mean += p99 / mean;
                r.worst_max_over_mean = r.worst_max_over_mean.max(mm);
            }
            sum_mean += mean;
            arrived += total;
        }
    }
    let steps = p.steps.max(1) as f64;
    let disk_steps = steps * p.disks as f64;
    r.mean_iops = sum_mean / steps;
    r.max_over_mean /= steps;
    r.p99_over_mean /= steps;
    r.overloaded = overloaded as f64 / disk_steps;
    r.queued = queued as f64 / disk_steps;
    r.delayed = delayed as f64 / arrived.max(1) as f64;
    let stored: Vec<f64> = sim.disks.iter().map(|d| d.stored as f64).collect();
    let mean = stored.iter().sum::<f64>() / stored.len() as f64;
    let var = stored.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / stored.len() as f64;
    r.stored_max_over_mean = stored.iter().cloned().fold(0.0, f64::max) / mean;
    r.stored_cv = var.sqrt() / mean;
    r.run_secs = started.elapsed().as_secs_f64();
    r
}

/// The `q` quantile of a Poisson distribution with mean `lambda`.
pub fn poisson_quantile(lambda: f64, q: f64) -> f64 {
    let mut p = (-lambda).exp();
    let mut cdf = p;
    let mut k = 0u64;
    while cdf < q && k < 100_000 {
        k += 1;
        p *= lambda / k as f64;
        cdf += p;
    }
    k as f64
}

/// Per-disk load of pure chance: every shard I/O sent to a disk drawn
/// uniformly at random ("balls into bins"), so each disk's load is
/// Poisson with the mean. Returns (median of the hottest of `disks`,
/// 99th percentile), both over the mean.
pub fn random_reference(mean: f64, disks: usize) -> (f64, f64) {
    let max = poisson_quantile(mean, 1.0 - std::f64::consts::LN_2 / disks as f64);
    let p99 = poisson_quantile(mean, 0.99);
    (max / mean, p99 / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_reference() {
        // Poisson(60): p99 = 79 (60 + 2.33 sd of 7.75, rounded up)
        assert_eq!(poisson_quantile(60.0, 0.99), 79.0);
        let (max, p99) = random_reference(60.0, 1_000_000);
        assert!(max > 1.5 && max < 1.8, "{max}");
        assert!((p99 - 79.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn onoff_duty_matches_theory() {
        let p = OnOff::default();
        let mut rng = Rng::new(3);
        let mut on = 0.0;
        let n = 2000;
        let t = 2000;
        for _ in 0..n {
            let mut s = Source::stationary(&p, &mut rng);
            for _ in 0..t {
                on += s.advance(&p, 1.0, &mut rng);
            }
        }
        let duty = on / (n * t) as f64;
        // heavy tails converge slowly; 20% +- a few points
        assert!((duty - p.duty()).abs() < 0.03, "duty {duty}");
    }

    #[test]
    fn poisson_mean() {
        let mut rng = Rng::new(5);
        for lambda in [0.5, 7.0, 200.0] {
            let n = 20_000;
            let s: u64 = (0..n).map(|_| rng.poisson(lambda)).sum();
            let m = s as f64 / n as f64;
            assert!((m - lambda).abs() < 0.05 * lambda, "{lambda}: {m}");
        }
    }

    #[test]
    fn disk_sim_hits_target_utilisation() {
        let mut p = DiskParams::new(600);
        p.steps = 40;
        let r = run_disks(&p, Strategy::SPREAD, 1);
        // 60 IOPS on average per disk, give or take the bursts
        assert!(r.mean_iops > 30.0 && r.mean_iops < 100.0, "{r:?}");
    }
}
