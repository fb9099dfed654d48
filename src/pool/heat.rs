//! Heat: the load on each member, measured where every I/O passes (a
//! [`Metered`] wrapper around the member's disk), and an HDD emulator
//! ([`Throttled`]) that gives a directory the physics of a spinning disk.
//!
//! Per member: requests in flight, an EWMA of latency and of queue depth,
//! the recent latency distribution (p95, which triggers hedged reads), and
//! per-second buckets of operations, bytes and busy time from which the
//! 10 s and 60 s rates and utilisation, and the load history, are read.

use super::DiskBackend;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds of per-second history kept (for rates and the load picture).
pub const HISTORY_SECS: usize = 600;
/// Latencies kept for the percentile.
const LAT_RING: usize = 256;
/// EWMA weight of a new sample.
const ALPHA: f64 = 0.1;

/// One second of a member's activity.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Unix second.
    pub t: u64,
    /// Operations completed.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Time with at least one request in flight, microseconds.
    pub busy_us: u64,
}

#[derive(Debug)]
struct State {
    inflight: u32,
    busy_since: Option<Instant>,
    ewma_lat_us: f64,
    /// EWMA latency of requests that found the member idle: its service
    /// time, without queueing.
    ewma_service_us: f64,
    ewma_queue: f64,
    lat: VecDeque<u32>,
    p95_us: u32,
    since_p95: u32,
    seconds: VecDeque<Second>,
    ops_total: u64,
    bytes_total: u64,
}

/// The heat of one member.
#[derive(Debug)]
pub struct Heat {
    state: Mutex<State>,
    /// Requests in flight (also in `state`; here for lock-free reads).
    inflight: AtomicU64,
    epoch: Instant,
    epoch_unix: u64,
}

/// What `shardctl heat` shows for a member.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeatSnapshot {
    /// Requests in flight now.
    pub inflight: u64,
    /// EWMA of request latency, ms.
    pub latency_ms: f64,
    /// 95th percentile of the last 256 latencies, ms.
    pub p95_ms: f64,
    /// EWMA of the queue depth seen by arriving requests.
    pub queue: f64,
    /// Operations per second over the last 10 s and 60 s.
    pub iops_10s: f64,
    /// Operations per second over the last 60 s.
    pub iops_60s: f64,
    /// Bytes per second over the last 10 s.
    pub bw_10s: f64,
    /// Bytes per second over the last 60 s.
    pub bw_60s: f64,
    /// Fraction of the last 10 s with a request in flight.
    pub util_10s: f64,
    /// The load placement and reads steer by (expected wait, ms).
    pub load: f64,
    /// Requests completed since mount.
    pub ops_total: u64,
    /// Bytes moved since mount.
    pub bytes_total: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Heat {
    fn default() -> Self {
        Heat {
            state: Mutex::new(State {
                inflight: 0,
                busy_since: None,
                ewma_lat_us: 0.0,
                ewma_service_us: 0.0,
                ewma_queue: 0.0,
                lat: VecDeque::with_capacity(LAT_RING),
                p95_us: 0,
                since_p95: 0,
                seconds: VecDeque::with_capacity(HISTORY_SECS + 1),
                ops_total: 0,
                bytes_total: 0,
            }),
            inflight: AtomicU64::new(0),
            epoch: Instant::now(),
            epoch_unix: unix_now(),
        }
    }
}

impl State {
    /// The bucket of second `t`, creating it (and dropping old ones).
    fn bucket(&mut self, t: u64) -> &mut Second {
        if self.seconds.back().map(|s| s.t) != Some(t) {
            self.seconds.push_back(Second {
                t,
                ..Second::default()
            });
            while self.seconds.len() > HISTORY_SECS {
                self.seconds.pop_front();
            }
        }
        self.seconds.back_mut().expect("just pushed")
    }

    /// Account busy time from `busy_since` up to `now`, split by second.
    fn account_busy(&mut self, now: Instant, epoch: Instant, epoch_unix: u64) {
        let Some(mut from) = self.busy_since else {
            return;
        };
        while from < now {
            let into = from.duration_since(epoch);
            let sec_end = epoch + Duration::from_secs(into.as_secs() + 1);
            let to = sec_end.min(now);
            let t = epoch_unix + into.as_secs();
            self.bucket(t).busy_us += to.duration_since(from).as_micros() as u64;
            from = to;
        }
        self.busy_since = Some(now);
    }
}

/// A request in flight; [`Started::end`] records it.
pub struct Started<'a> {
    heat: &'a Heat,
    start: Instant,
    /// Requests in flight when this one started.
    behind: u32,
    done: bool,
}

impl Started<'_> {
    /// The request completed, moving `bytes`.
    pub fn end(mut self, bytes: u64) {
        self.heat.finish(self.start, self.behind, bytes);
        self.done = true;
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.heat.finish(self.start, self.behind, 0);
        }
    }
}

impl Heat {
    /// A request starts.
    pub fn begin(&self) -> Started<'_> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        s.ewma_queue = s.ewma_queue * (1.0 - ALPHA) + s.inflight as f64 * ALPHA;
        if s.inflight == 0 {
            s.busy_since = Some(now);
        }
        let behind = s.inflight;
        s.inflight += 1;
        self.inflight.store(s.inflight as u64, Ordering::Relaxed);
        Started {
            heat: self,
            start: now,
            behind,
            done: false,
        }
    }

    fn finish(&self, start: Instant, behind: u32, bytes: u64) {
        let now = Instant::now();
        let us = now.duration_since(start).as_micros().min(u32::MAX as u128) as u32;
        let mut s = self.state.lock().unwrap();
        s.account_busy(now, self.epoch, self.epoch_unix);
        s.inflight = s.inflight.saturating_sub(1);
        self.inflight.store(s.inflight as u64, Ordering::Relaxed);
        if s.inflight == 0 {
            s.busy_since = None;
        }
        let ewma = |old: f64| {
            if old == 0.0 {
                us as f64
            } else {
                old * (1.0 - ALPHA) + us as f64 * ALPHA
            }
        };
        s.ewma_lat_us = ewma(s.ewma_lat_us);
        if behind == 0 {
            s.ewma_service_us = ewma(s.ewma_service_us);
        }
        if s.lat.len() == LAT_RING {
            s.lat.pop_front();
        }
        s.lat.push_back(us);
        s.since_p95 += 1;
        if s.since_p95 >= 16 || s.lat.len() < 16 {
            let mut v: Vec<u32> = s.lat.iter().copied().collect();
            v.sort_unstable();
            s.p95_us = v[(v.len() * 95 / 100).min(v.len() - 1)];
            s.since_p95 = 0;
        }
        s.ops_total += 1;
        s.bytes_total += bytes;
        let t = self.epoch_unix + now.duration_since(self.epoch).as_secs();
        let b = s.bucket(t);
        b.ops += 1;
        b.bytes += bytes;
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// True when no request of this member's is in flight.
    pub fn idle(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) == 0
    }

    /// 95th percentile of recent latencies (zero before any request).
    pub fn p95(&self) -> Duration {
        Duration::from_micros(self.state.lock().unwrap().p95_us as u64)
    }

    /// Expected wait of a new request, in ms: (requests in flight + 1)
    /// times the member's service time (the latency of requests that found
    /// it idle; the mean latency until there is one). What placement and
    /// heat-aware reads steer by.
    pub fn load(&self) -> f64 {
        Self::expected_wait(&self.state.lock().unwrap())
    }

    fn expected_wait(s: &State) -> f64 {
        let us = if s.ewma_service_us > 0.0 {
            s.ewma_service_us
        } else if s.ewma_lat_us > 0.0 {
            s.ewma_lat_us
        } else {
            10.0
        };
        (s.inflight as f64 + 1.0) * us / 1000.0
    }

    /// Rates, latency and load now.
    pub fn snapshot(&self) -> HeatSnapshot {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        if s.inflight > 0 {
            s.account_busy(now, self.epoch, self.epoch_unix);
        }
        let cur = self.epoch_unix + now.duration_since(self.epoch).as_secs();
        let window = |secs: u64| -> (f64, f64, f64) {
            // complete seconds before the current one
            let (mut ops, mut bytes, mut busy) = (0u64, 0u64, 0u64);
            for b in s.seconds.iter().filter(|b| b.t < cur && b.t + secs >= cur) {
                ops += b.ops;
                bytes += b.bytes;
                busy += b.busy_us;
            }
            let d = secs as f64;
            (ops as f64 / d, bytes as f64 / d, busy as f64 / 1e6 / d)
        };
        let (iops_10s, bw_10s, util_10s) = window(10);
        let (iops_60s, bw_60s, _) = window(60);
        let lat_ms = s.ewma_lat_us / 1000.0;
        HeatSnapshot {
            inflight: s.inflight as u64,
            latency_ms: lat_ms,
            p95_ms: s.p95_us as f64 / 1000.0,
            queue: s.ewma_queue,
            iops_10s,
            iops_60s,
            bw_10s,
            bw_60s,
            util_10s: util_10s.min(1.0),
            load: Self::expected_wait(&s),
            ops_total: s.ops_total,
            bytes_total: s.bytes_total,
        }
    }

    /// Per-second history, oldest first (complete seconds only).
    pub fn history(&self) -> Vec<Second> {
        let now = Instant::now();
        let cur = self.epoch_unix + now.duration_since(self.epoch).as_secs();
        let mut s = self.state.lock().unwrap();
        if s.inflight > 0 {
            s.account_busy(now, self.epoch, self.epoch_unix);
        }
        s.seconds.iter().copied().filter(|b| b.t < cur).collect()
    }
}

/// A disk whose every call is measured into a [`Heat`].
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn DiskBackend>,
    heat: Arc<Heat>,
}

impl Metered {
    /// Measure `inner` into `heat`.
    pub fn new(inner: Arc<dyn DiskBackend>, heat: Arc<Heat>) -> Self {
        Metered { inner, heat }
    }
}

impl DiskBackend for Metered {
    fn create_atomic<'a>(
        &'a self,
        rel: &str,
    ) -> io::Result<Option<Box<dyn super::AtomicFile + 'a>>> {
        // the catalog: written rarely, in the background; not metered
        self.inner.create_atomic(rel)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_file(rel, parts);
        g.end(parts.iter().map(|p| p.len() as u64).sum());
        r
    }
    fn write_file_durable(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_file_durable(rel, parts);
        g.end(parts.iter().map(|p| p.len() as u64).sum());
        r
    }
    fn write_file_durable_uncached(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_file_durable_uncached(rel, parts);
        g.end(parts.iter().map(|p| p.len() as u64).sum());
        r
    }
    fn write_at_durable(
        &self,
        rel: &str,
        offset: u64,
        parts: &[&[u8]],
        allocate: u64,
    ) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_at_durable(rel, offset, parts, allocate);
        g.end(parts.iter().map(|p| p.len() as u64).sum());
        r
    }
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_at(rel, offset, parts);
        g.end(parts.iter().map(|p| p.len() as u64).sum());
        r
    }
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.write_atomic(rel, data);
        g.end(data.len() as u64);
        r
    }
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        let g = self.heat.begin();
        let r = self.inner.read_file(rel);
        g.end(r.as_ref().map(|v| v.len() as u64).unwrap_or(0));
        r
    }
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let g = self.heat.begin();
        let r = self.inner.read_range(rel, offset, len);
        g.end(r.as_ref().map(|v| v.len() as u64).unwrap_or(0));
        r
    }
    fn read_cached(&self, rel: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        // page-cache hits load no disk: not metered
        self.inner.read_cached(rel, offset, len)
    }
    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.remove_file(rel);
        g.end(0);
        r
    }
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.punch_hole(rel, offset, len);
        g.end(0);
        r
    }
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.inner.list_dir(rel)
    }
    fn create_dir_all(&self, rel: &str) -> io::Result<()> {
        self.inner.create_dir_all(rel)
    }
    fn sync_file(&self, rel: &str) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.sync_file(rel);
        g.end(0);
        r
    }
    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.sync_dir(rel);
        g.end(0);
        r
    }
    fn capacity(&self) -> io::Result<(u64, u64)> {
        self.inner.capacity()
    }
    fn sync_fs(&self) -> io::Result<()> {
        let g = self.heat.begin();
        let r = self.inner.sync_fs();
        g.end(0);
        r
    }
    fn fs_id(&self) -> Option<u64> {
        self.inner.fs_id()
    }
}

/// Limits of an emulated disk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Random operations per second (each data operation costs 1/iops).
    pub iops: f64,
    /// Sequential bytes per second.
    pub bytes_per_sec: f64,
}

impl Limits {
    /// Parse "IOPS:MBPS", e.g. "120:200" (MB = 10^6 bytes).
    pub fn parse(s: &str) -> Result<Limits, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: give IOPS:MB_PER_SEC, e.g. 120:200"))?;
        let iops: f64 = a.trim().parse().map_err(|_| format!("{s:?}: bad IOPS"))?;
        let mbps: f64 = b.trim().parse().map_err(|_| format!("{s:?}: bad MB/s"))?;
        if !(iops > 0.0 && iops.is_finite() && mbps > 0.0 && mbps.is_finite()) {
            return Err(format!("{s:?}: IOPS and MB/s must be positive"));
        }
        Ok(Limits {
            iops,
            bytes_per_sec: mbps * 1e6,
        })
    }

    /// Service time of one operation moving `bytes`.
    pub fn service(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(1.0 / self.iops + bytes as f64 / self.bytes_per_sec)
    }
}

/// An emulated hard disk: one head, so operations queue (FIFO) and each
/// holds the disk for 1/iops plus its bytes at the sequential rate. A
/// caller returns when its operation's service ends; the queue is real:
/// a burst waits behind itself. Metadata-only calls (listing, capacity)
/// are free; syncs cost one operation.
#[derive(Debug)]
pub struct Throttled {
    inner: Arc<dyn DiskBackend>,
    /// None: no emulation (changeable at runtime: benchmarks switch
    /// scenarios without remounting).
    limits: Mutex<Option<Limits>>,
    /// When the head is next free.
    free_at: Mutex<Instant>,
}

impl Throttled {
    /// Emulate `limits` over `inner`.
    pub fn new(inner: Arc<dyn DiskBackend>, limits: Limits) -> Self {
        Throttled {
            inner,
            limits: Mutex::new(Some(limits)),
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Change the emulated limits (None: full speed).
    pub fn set_limits(&self, l: Option<Limits>) {
        *self.limits.lock().unwrap() = l;
    }

    /// Queue for the head, then hold it for the service time of `bytes`.
    fn serve(&self, bytes: usize) {
        let Some(limits) = *self.limits.lock().unwrap() else {
            return;
        };
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(Instant::now());
            *free = start + limits.service(bytes);
            *free
        };
        let now = Instant::now();
        if done > now {
            std::thread::sleep(done - now);
        }
    }
}

impl DiskBackend for Throttled {
    fn create_atomic<'a>(
        &'a self,
        rel: &str,
    ) -> io::Result<Option<Box<dyn super::AtomicFile + 'a>>> {
        // the catalog: written rarely, in the background; not metered
        self.inner.create_atomic(rel)
    }
    fn describe(&self) -> String {
        match *self.limits.lock().unwrap() {
            Some(l) => format!(
                "{} (emulated {:.0} IOPS, {:.0} MB/s)",
                self.inner.describe(),
                l.iops,
                l.bytes_per_sec / 1e6
            ),
            None => self.inner.describe(),
        }
    }
    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
    fn write_file(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.serve(parts.iter().map(|p| p.len()).sum());
        self.inner.write_file(rel, parts)
    }
    fn write_file_durable(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.serve(parts.iter().map(|p| p.len()).sum());
        self.inner.write_file_durable(rel, parts)
    }
    fn write_file_durable_uncached(&self, rel: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.serve(parts.iter().map(|p| p.len()).sum());
        self.inner.write_file_durable_uncached(rel, parts)
    }
    fn write_at_durable(
        &self,
        rel: &str,
        offset: u64,
        parts: &[&[u8]],
        allocate: u64,
    ) -> io::Result<()> {
        self.serve(parts.iter().map(|p| p.len()).sum());
        self.inner.write_at_durable(rel, offset, parts, allocate)
    }
    fn write_at(&self, rel: &str, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        self.serve(parts.iter().map(|p| p.len()).sum());
        self.inner.write_at(rel, offset, parts)
    }
    fn write_atomic(&self, rel: &str, data: &[u8]) -> io::Result<()> {
        self.serve(data.len());
        self.inner.write_atomic(rel, data)
    }
    fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        let r = self.inner.read_file(rel)?;
        self.serve(r.len());
        Ok(r)
    }
    fn read_range(&self, rel: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = self.inner.read_range(rel, offset, len)?;
        self.serve(r.len());
        Ok(r)
    }
    fn remove_file(&self, rel: &str) -> io::Result<()> {
        self.serve(0);
        self.inner.remove_file(rel)
    }
    fn punch_hole(&self, rel: &str, offset: u64, len: u64) -> io::Result<()> {
        self.serve(0);
        self.inner.punch_hole(rel, offset, len)
    }
    fn list_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.inner.list_dir(rel)
    }
    fn create_dir_all(&self, rel: &str) -> io::Result<()> {
        self.inner.create_dir_all(rel)
    }
    fn sync_file(&self, rel: &str) -> io::Result<()> {
        self.serve(0);
        self.inner.sync_file(rel)
    }
    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        self.serve(0);
        self.inner.sync_dir(rel)
    }
    fn capacity(&self) -> io::Result<(u64, u64)> {
        self.inner.capacity()
    }
    fn sync_fs(&self) -> io::Result<()> {
        self.serve(0);
        self.inner.sync_fs()
    }
    fn fs_id(&self) -> Option<u64> {
        self.inner.fs_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::MemDisk;

    #[test]
    fn heat_counts_inflight_latency_and_rates() {
        let h = Heat::default();
        let a = h.begin();
        let b = h.begin();
        assert_eq!(h.inflight(), 2);
        std::thread::sleep(Duration::from_millis(5));
        a.end(100);
        b.end(50);
        assert_eq!(h.inflight(), 0);
        let s = h.snapshot();
        assert!(s.latency_ms >= 4.0, "{s:?}");
        assert!(s.p95_ms >= 4.0, "{s:?}");
        assert!(h.load() > 4.0);
    }

    #[test]
    fn limits_parse_and_refuse_nonsense() {
        assert_eq!(
            Limits::parse("120:200").unwrap(),
            Limits {
                iops: 120.0,
                bytes_per_sec: 200e6
            }
        );
        for bad in ["120", "x:1", "0:5", "5:-1", "inf:1"] {
            assert!(Limits::parse(bad).is_err(), "{bad}");
        }
    }

    /// The emulated caps hold within 10 %: a burst of small reads from
    /// several threads runs at the IOPS cap, large reads at the bandwidth.
    #[test]
    fn emulated_caps_hold_within_ten_percent() {
        let mem: Arc<dyn DiskBackend> = Arc::new(MemDisk::default());
        mem.write_file("small", &[&[7u8; 512]]).unwrap();
        mem.write_file("big", &[&vec![7u8; 1 << 20]]).unwrap();
        let t = Arc::new(Throttled::new(
            mem,
            Limits {
                iops: 400.0,
                bytes_per_sec: 50e6,
            },
        ));
        // IOPS: 120 small reads from 4 threads
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let t = t.clone();
                s.spawn(move || {
                    for _ in 0..30 {
                        t.read_file("small").unwrap();
                    }
                });
            }
        });
        let iops = 120.0 / start.elapsed().as_secs_f64();
        let expect = 1.0
            / Limits {
                iops: 400.0,
                bytes_per_sec: 50e6,
            }
            .service(512)
            .as_secs_f64();
        assert!(
            (iops / expect - 1.0).abs() < 0.10,
            "{iops:.1} IOPS, cap {expect:.1}"
        );
        // bandwidth: 20 reads of 1 MiB
        let start = Instant::now();
        for _ in 0..20 {
            t.read_file("big").unwrap();
        }
        let bw = 20.0 * (1 << 20) as f64 / start.elapsed().as_secs_f64();
        let expect = (1 << 20) as f64
            / Limits {
                iops: 400.0,
                bytes_per_sec: 50e6,
            }
            .service(1 << 20)
            .as_secs_f64();
        assert!(
            (bw / expect - 1.0).abs() < 0.10,
            "{bw:.0} B/s, cap {expect:.0}"
        );
    }
}
