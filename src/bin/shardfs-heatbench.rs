//! `shardfs-heatbench`: the seed's physics on one machine. Members are
//! directories that emulate hard disks (120 IOPS, 200 MB/s each, with real
//! queueing); several tenants write files; then a Zipf-skewed random-read
//! load from 16 threads runs once with the naive read policy (data shards
//! first: the baseline, measured in the same run on the same directories)
//! and once heat-aware; then again with one member 10x slower. Prints
//! per-member utilisation and operation spread (max/mean), latency
//! percentiles and throughput, and checks the targets.
//!
//! Reads go through the filesystem layer (`Fs::read`, what the FUSE glue
//! calls), below FUSE so that the kernel's page cache stays out of it.
#![deny(clippy::undocumented_unsafe_blocks)]

use shardfs::fs::{Kind, NewNode, ROOT_INO};
use shardfs::pool::heat::{Limits, Throttled};
use shardfs::pool::{mkfs, MkfsOptions, ReadPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    dir: std::path::PathBuf,
    members: usize,
    iops: f64,
    mbps: f64,
    tenants: usize,
    files: usize,
    shard_kib: u32,
    threads: usize,
    rate: f64,
    secs: f64,
    zipf: f64,
    hedge: bool,
    tiers: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: std::env::temp_dir().join(format!("shardfs-heatbench-{}", std::process::id())),
        members: 12,
        iops: 120.0,
        mbps: 200.0,
        tenants: 4,
        files: 300,
        shard_kib: 64,
        threads: 16,
        rate: 0.0,
        secs: 20.0,
        zipf: 1.1,
        hedge: true,
        tiers: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| {
            s.parse::<f64>()
                .map_err(|_| format!("{k}: bad number {s:?}"))
        };
        match k.as_str() {
            "--dir" => a.dir = v()?.into(),
            "--members" => a.members = num(v()?)? as usize,
            "--iops" => a.iops = num(v()?)?,
            "--mbps" => a.mbps = num(v()?)?,
            "--tenants" => a.tenants = num(v()?)? as usize,
            "--files" => a.files = num(v()?)? as usize,
            "--shard-kib" => a.shard_kib = num(v()?)? as u32,
            "--threads" => a.threads = num(v()?)? as usize,
            "--rate" => a.rate = num(v()?)?,
            "--secs" => a.secs = num(v()?)?,
            "--zipf" => a.zipf = num(v()?)?,
            "--no-hedge" => a.hedge = false,
            "--tiers" => a.tiers = true,
            "-h" | "--help" => {
                println!(
                    "shardfs-heatbench [--dir D] [--members 12] [--iops 120] [--mbps 200] \
                     [--tenants 4] [--files 300 per tenant] [--shard-kib 64] [--threads 16] \
                     [--rate READS_PER_SEC (default 60% of the naive capacity)] [--secs 20] [--zipf 1.1] [--no-hedge] [--tiers: hot (SSD-class) vs cold (HDD-class) tier reads instead]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.members < 6 || a.threads == 0 || a.files == 0 || a.tenants == 0 {
        return Err("need at least 6 members, 1 thread, 1 tenant and 1 file".into());
    }
    Ok(a)
}

/// A new directory or file owned by root.
fn node(kind: Kind) -> NewNode {
    NewNode {
        kind,
        perm: 0o755,
        uid: 0,
        gid: 0,
        rdev: 0,
        target: Vec::new(),
    }
}

/// Zipf sampler over `n` items (rank 0 hottest).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|r| {
                acc += 1.0 / (r as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Each member's emulator, by member index.
type Emulators = Vec<(u16, Arc<Throttled>)>;

struct RunResult {
    reads: usize,
    secs: f64,
    lat: Vec<f64>,
    util: Vec<f64>,
    ops: Vec<f64>,
    hedges: u64,
    errors: usize,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn max_mean(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().copied().fold(0.0, f64::max) / mean.max(f64::MIN_POSITIVE)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shardfs-heatbench: {e}");
            std::process::exit(2);
        }
    };
    let r = if a.tiers { run_tiers(&a) } else { run(&a) };
    if let Err(e) = r {
        eprintln!("shardfs-heatbench: {e}");
        let _ = std::fs::remove_dir_all(&a.dir);
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&a.dir);
}

fn run(a: &Args) -> Result<(), String> {
    let dirs: Vec<_> = (0..a.members)
        .map(|i| a.dir.join(format!("disk{i}")))
        .collect();
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    mkfs(
        &dirs,
        &MkfsOptions {
            shard_size: a.shard_kib * 1024,
            inline_max: 4096,
            ..MkfsOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let hdd = Limits {
        iops: a.iops,
        bytes_per_sec: a.mbps * 1e6,
    };
    // every member emulated; the benchmark keeps each emulator to switch
    // scenarios (and to write the files at full speed)
    let throttles: Arc<Mutex<Emulators>> = Arc::default();
    let opened = {
        let t2 = throttles.clone();
        let wrap = move |i: u16, d: Arc<dyn shardfs::pool::DiskBackend>| {
            let t = Arc::new(Throttled::new(d, hdd));
            t2.lock().unwrap().push((i, t.clone()));
            t as Arc<dyn shardfs::pool::DiskBackend>
        };
        shardfs::daemon::open_pool_wrapped(&dirs, &wrap)?
    };
    let fs = opened.fs.clone();
    let set_all = |l: Option<Limits>| {
        for (_, t) in throttles.lock().unwrap().iter() {
            t.set_limits(l);
        }
    };
    // tenants write their files at full speed (the physics is for reads)
    set_all(None);
    let stripe = 4 * a.shard_kib as usize * 1024;
    let mut files: Vec<u64> = Vec::new();
    for t in 0..a.tenants {
        let b = fs
            .create_node(ROOT_INO, format!("tenant{t}").as_bytes(), node(Kind::Dir))
            .map_err(|e| e.to_string())?;
        for f in 0..a.files {
            let (attr, fh) = fs
                .create_open(b.ino, format!("obj{f}").as_bytes(), node(Kind::File), true)
                .map_err(|e| e.to_string())?;
            let data = vec![(t * 31 + f) as u8 | 1; stripe];
            fs.write(attr.ino, 0, &data).map_err(|e| e.to_string())?;
            fs.flush_handle(fh).map_err(|e| e.to_string())?;
            fs.release(fh).map_err(|e| e.to_string())?;
            files.push(attr.ino);
        }
    }
    fs.sync_all().map_err(|e| e.to_string())?;
    // shuffle so a tenant's hot files are not all written next to each
    // other; ranks interleave tenants
    let mut order: Vec<u64> = Vec::with_capacity(files.len());
    for f in 0..a.files {
        for t in 0..a.tenants {
            order.push(files[t * a.files + f]);
        }
    }
    set_all(Some(hdd));
    fs.pool.set_hedging(a.hedge);
    let capacity = a.members as f64 * a.iops / 4.0; // stripe reads/s, k = 4
    let rate = if a.rate > 0.0 { a.rate } else { 0.6 * capacity };
    println!(
        "shardfs-heatbench: {} members emulating {:.0} IOPS / {:.0} MB/s, 4+2, shard {} KiB; \
         {} tenants x {} files of one stripe ({} KiB); {} threads, Zipf s={} reads of whole files \
         at {:.0}/s (naive capacity about {:.0}/s), {} s per run",
        a.members,
        a.iops,
        a.mbps,
        a.shard_kib,
        a.tenants,
        a.files,
        stripe / 1024,
        a.threads,
        a.zipf,
        rate,
        capacity,
        a.secs
    );
    println!();
    println!(
        "{:<22} {:<9} {:>8} {:>8} {:>8} {:>9} {:>14} {:>13} {:>7} {:>6}",
        "scenario",
        "policy",
        "reads/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "util max/mean",
        "ops max/mean",
        "hedges",
        "errors"
    );
    let zipf = Zipf::new(order.len(), a.zipf);
    let mut results = Vec::new();
    let slow_member = 3u16;
    let mut balanced = 0u64;
    for (scenario, slow) in [("all healthy", false), ("one member 10x slower", true)] {
        for (policy, balance) in [
            (ReadPolicy::Naive, false),
            (ReadPolicy::Heat, false),
            (ReadPolicy::Heat, true),
        ] {
            if balance && !slow {
                // the heat rebalance: hot stripes' shards move from the
                // members serving the most accesses to those serving the
                // fewest (temperatures from the reads so far)
                let task = shardfs::fs::Task::default();
                task.rate_limit.store(0, Ordering::Relaxed);
                balanced = fs
                    .heat_rebalance_pass(&task, (order.len() / 4) as u64)
                    .map_err(|e| e.to_string())?;
            }
            set_all(Some(hdd));
            if slow {
                for (i, t) in throttles.lock().unwrap().iter() {
                    if *i == slow_member {
                        t.set_limits(Some(Limits {
                            iops: hdd.iops / 10.0,
                            bytes_per_sec: hdd.bytes_per_sec / 10.0,
                        }));
                    }
                }
            }
            fs.pool.set_read_policy(policy);
            // let queues from the last run drain
            std::thread::sleep(Duration::from_secs(2));
            let r = load(&fs, &order, &zipf, a, rate, stripe)?;
            let lat = &r.lat;
            println!(
                "{:<22} {:<9} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>14.3} {:>13.3} {:>7} {:>6}",
                scenario,
                if balance { "heat+bal" } else { policy.name() },
                r.reads as f64 / r.secs,
                pct(lat, 0.50),
                pct(lat, 0.99),
                pct(lat, 0.999),
                max_mean(&r.util),
                max_mean(&r.ops),
                r.hedges,
                r.errors
            );
            results.push((slow, policy, balance, r));
        }
    }
    let get = |slow: bool, p: ReadPolicy, bal: bool| {
        &results
            .iter()
            .find(|(s, q, b, _)| *s == slow && *q == p && *b == bal)
            .expect("ran")
            .3
    };
    let hn = get(false, ReadPolicy::Naive, false);
    let hh = get(false, ReadPolicy::Heat, false);
    let hb = get(false, ReadPolicy::Heat, true);
    let sh = get(true, ReadPolicy::Heat, false);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    let u = max_mean(&hh.util);
    println!(
        "target: heat-aware utilisation max/mean <= 1.2 ............ {u:.3} ({}) reads only",
        verdict(u <= 1.2)
    );
    let ub = max_mean(&hb.util);
    println!(
        "        with the heat rebalance ({balanced} shards moved) ........ {ub:.3} ({})",
        verdict(ub <= 1.2)
    );
    let r = pct(&hh.lat, 0.99) / pct(&hn.lat, 0.99);
    println!(
        "target: heat-aware p99 <= 0.5x naive p99 ................... {r:.3}x ({})",
        verdict(r <= 0.5)
    );
    // the slow-member runs come after the heat rebalance: compare with
    // the healthy run on the same layout
    let r2 = pct(&sh.lat, 0.99) / pct(&hb.lat, 0.99);
    println!(
        "target: one slow member, heat-aware p99 <= 2x healthy p99 .. {r2:.3}x ({}) same layout",
        verdict(r2 <= 2.0)
    );
    println!("per-member utilisation, all healthy (naive | heat | heat+bal):");
    for i in 0..a.members {
        println!(
            "  member {i:>2}: {:5.1}% | {:5.1}% | {:5.1}%",
            hn.util[i] * 100.0,
            hh.util[i] * 100.0,
            hb.util[i] * 100.0
        );
    }
    fs.unmount_sync().map_err(|e| e.to_string())?;
    Ok(())
}

/// Open-loop load: reads are scheduled at `rate` per second (Poisson),
/// spread over the threads; latency runs from the scheduled start, so a
/// read that waits for its thread counts its wait (no coordinated omission).
fn load(
    fs: &Arc<shardfs::fs::Fs>,
    order: &[u64],
    zipf: &Zipf,
    a: &Args,
    rate: f64,
    stripe: usize,
) -> Result<RunResult, String> {
    use rand::{Rng, SeedableRng};
    let before: Vec<(u64, u64)> = fs
        .pool
        .members()
        .iter()
        .map(|m| {
            let s = m.heat.snapshot();
            (s.ops_total, 0)
        })
        .collect();
    let busy_before: Vec<u64> = fs
        .pool
        .members()
        .iter()
        .map(|m| m.heat.history().iter().map(|s| s.busy_us).sum())
        .collect();
    let hedges0 = fs.pool.stats.hedges.load(Ordering::Relaxed);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let stop = AtomicBool::new(false);
    let lat = Mutex::new(Vec::new());
    let errors = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..a.threads {
            let (lat, errors, stop) = (&lat, &errors, &stop);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                let per = rate / a.threads as f64;
                let mut next = start;
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let gap: f64 = -(1.0 - rng.random::<f64>()).ln() / per;
                    next += Duration::from_secs_f64(gap);
                    if next >= end {
                        break;
                    }
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    let ino = order[zipf.sample(rng.random::<f64>())];
                    match fs.read(ino, 0, stripe as u32) {
                        Ok(d) if d.len() == stripe => {
                            mine.push(next.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat.lock().unwrap().extend(mine);
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    // wait one second so the last second's busy time is complete
    std::thread::sleep(Duration::from_millis(1100));
    let mut lat = lat.into_inner().unwrap();
    lat.sort_by(f64::total_cmp);
    let ops: Vec<f64> = fs
        .pool
        .members()
        .iter()
        .zip(&before)
        .map(|(m, b)| (m.heat.snapshot().ops_total - b.0) as f64)
        .collect();
    let util: Vec<f64> = fs
        .pool
        .members()
        .iter()
        .zip(&busy_before)
        .map(|(m, b)| {
            let busy: u64 = m.heat.history().iter().map(|s| s.busy_us).sum();
            (busy.saturating_sub(*b)) as f64 / 1e6 / secs
        })
        .collect();
    Ok(RunResult {
        reads: lat.len(),
        secs,
        lat,
        util,
        ops,
        hedges: fs.pool.stats.hedges.load(Ordering::Relaxed) - hedges0,
        errors: errors.into_inner(),
    })
}

/// Hot tier against cold tier: half the members are "ssd" (emulated
/// 20000 IOPS, 1000 MB/s), half "hdd" (the `--iops`/`--mbps` disks). The
/// same files are read by 16 threads (closed loop, uniform) once after a
/// tier pass put them all on the hot class and once on the cold class.
fn run_tiers(a: &Args) -> Result<(), String> {
    use shardfs::fs::{Task, Tier, TierPolicy};
    let dirs: Vec<_> = (0..a.members)
        .map(|i| a.dir.join(format!("disk{i}")))
        .collect();
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    let half = a.members / 2;
    let classes: Vec<String> = (0..a.members)
        .map(|i| if i < half { "ssd" } else { "hdd" }.to_string())
        .collect();
    mkfs(
        &dirs,
        &MkfsOptions {
            shard_size: a.shard_kib * 1024,
            inline_max: 4096,
            classes,
            ..MkfsOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let hdd = Limits {
        iops: a.iops,
        bytes_per_sec: a.mbps * 1e6,
    };
    let ssd = Limits {
        iops: 20_000.0,
        bytes_per_sec: 1000e6,
    };
    let opened = {
        let wrap = move |i: u16, d: Arc<dyn shardfs::pool::DiskBackend>| {
            let l = if (i as usize) < half { ssd } else { hdd };
            Arc::new(Throttled::new(d, l)) as Arc<dyn shardfs::pool::DiskBackend>
        };
        shardfs::daemon::open_pool_wrapped(&dirs, &wrap)?
    };
    let fs = opened.fs.clone();
    fs.set_tier_policy(
        None,
        TierPolicy {
            hot_class: Some("ssd".into()),
            cold_class: Some("hdd".into()),
            ..TierPolicy::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let stripe = 4 * a.shard_kib as usize * 1024;
    let b = fs
        .create_node(ROOT_INO, b"tiers", node(Kind::Dir))
        .map_err(|e| e.to_string())?;
    let n = a.files.max(1);
    let mut files = Vec::new();
    for f in 0..n {
        let (attr, fh) = fs
            .create_open(b.ino, format!("obj{f}").as_bytes(), node(Kind::File), true)
            .map_err(|e| e.to_string())?;
        fs.write(attr.ino, 0, &vec![f as u8 | 1; stripe])
            .map_err(|e| e.to_string())?;
        fs.flush_handle(fh).map_err(|e| e.to_string())?;
        fs.release(fh).map_err(|e| e.to_string())?;
        files.push(attr.ino);
    }
    fs.sync_all().map_err(|e| e.to_string())?;
    println!(
        "shardfs-heatbench --tiers: {} members ({} ssd-class emulating 20000 IOPS / 1000 MB/s, {} hdd-class \
         emulating {:.0} IOPS / {:.0} MB/s), 4+2, {} files of {} KiB, {} threads reading whole files \
         (closed loop), {} s per tier",
        a.members,
        half,
        a.members - half,
        a.iops,
        a.mbps,
        n,
        stripe / 1024,
        a.threads,
        a.secs
    );
    println!();
    println!(
        "{:<6} {:>10} {:>10} {:>8} {:>8} {:>14}",
        "tier", "reads/s", "MB/s", "p50 ms", "p99 ms", "tier move s"
    );
    let task = Task::default();
    task.rate_limit.store(0, Ordering::Relaxed);
    let mut rates = Vec::new();
    for tier in [Tier::Cold, Tier::Hot] {
        let t0 = Instant::now();
        fs.tier_pass(&task, Some(tier)).map_err(|e| e.to_string())?;
        let moved = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(1));
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(a.secs);
        let lat = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..a.threads {
                let (lat, files, fs) = (&lat, &files, &fs);
                s.spawn(move || {
                    use rand::{Rng, SeedableRng};
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                    let mut mine = Vec::new();
                    while Instant::now() < end {
                        let ino = files[rng.random_range(0..files.len())];
                        let t0 = Instant::now();
                        if fs.read(ino, 0, stripe as u32).is_ok() {
                            mine.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    lat.lock().unwrap().extend(mine);
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let mut lat = lat.into_inner().unwrap();
        lat.sort_by(f64::total_cmp);
        let rps = lat.len() as f64 / secs;
        rates.push(rps);
        println!(
            "{:<6} {:>10.1} {:>10.1} {:>8.2} {:>8.2} {:>14.1}",
            if tier == Tier::Hot { "hot" } else { "cold" },
            rps,
            rps * stripe as f64 / 1e6,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            moved
        );
    }
    println!();
    println!(
        "hot tier reads at {:.1}x the cold tier's rate (same files, same run)",
        rates[1] / rates[0].max(f64::MIN_POSITIVE)
    );
    println!("FUSE passthrough for hot files: not implemented (see docs/heat.md)");
    fs.unmount_sync().map_err(|e| e.to_string())?;
    Ok(())
}
